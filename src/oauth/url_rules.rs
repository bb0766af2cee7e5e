//! Address and URL classification shared by redirect-URI rules and the CIMD fetcher's SSRF guard.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// `localhost` or a loopback IP literal (127.0.0.0/8, ::1): the hosts on which plain http redirect
/// URIs and variable ports are allowed (RFC 8252 §7.3, OAuth 2.1 §8.4.2).
pub fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Is a URL on loopback given as a string (false when it does not parse).
pub fn is_loopback_url(raw: &str) -> bool {
    Url::parse(raw).is_ok_and(|u| is_loopback_host(&u))
}

/// True for any address a server-side fetch must never reach: loopback, private, link-local,
/// shared (CGNAT), multicast, documentation, benchmarking, reserved and unspecified ranges, and
/// IPv6 forms that embed such an IPv4 address.
pub fn is_special_use_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_special_use_v4(v4),
        IpAddr::V6(v6) => is_special_use_v6(v6),
    }
}

fn is_special_use_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..=127).contains(&b)) // 100.64.0.0/10 shared address space
        || (a == 192 && b == 0 && c == 0) // 192.0.0.0/24 IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // 198.18.0.0/15 benchmarking
        || a >= 240 // 240.0.0.0/4 reserved
}

fn is_special_use_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_special_use_v4(v4);
    }
    let seg = ip.segments();
    // 64:ff9b::/96 (NAT64) carries an IPv4 address in its last 32 bits.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        return is_special_use_v4(v4);
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
        || (seg[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (seg[0] & 0xffc0) == 0xfec0 // fec0::/10 site-local (deprecated)
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // 2001:db8::/32 documentation
        || (seg[0] == 0x2001 && seg[1] < 0x0200) // 2001::/23 IETF protocol assignments (Teredo, ORCHID...)
        || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]) // 100::/64 discard
        || seg[0] == 0x2002 // 6to4 embeds an arbitrary IPv4 address
        || (seg[0..6] == [0, 0, 0, 0, 0, 0]) // ::/96 IPv4-compatible (deprecated)
}

/// Does the path of a raw URL string contain a `.` or `..` segment? Checked on the raw string
/// because URL parsing silently resolves them.
pub fn has_dot_segments(raw: &str) -> bool {
    let after_scheme = raw.split_once("://").map_or(raw, |(_, rest)| rest);
    let path_and_more = after_scheme.find('/').map_or("", |i| &after_scheme[i..]);
    let path = path_and_more
        .split(['?', '#'])
        .next()
        .unwrap_or(path_and_more);
    path.split('/').any(|seg| {
        let lower = seg.to_ascii_lowercase();
        matches!(
            lower.as_str(),
            "." | ".." | "%2e" | "%2e%2e" | ".%2e" | "%2e."
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for u in [
            "http://localhost/cb",
            "http://LOCALHOST:1234/cb",
            "http://127.0.0.1/cb",
            "http://127.8.9.1:80/cb",
            "http://[::1]:9/cb",
        ] {
            assert!(is_loopback_url(u), "{u}");
        }
        for u in [
            "http://localhost.example.com/cb",
            "http://10.0.0.1/cb",
            "https://example.com/",
            "nope",
        ] {
            assert!(!is_loopback_url(u), "{u}");
        }
    }

    #[test]
    fn special_use_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "240.0.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "ff02::1",
            "2002:a00:1::",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(is_special_use_ip(ip), "{ip} should be refused");
        }
        for ip in [
            "160.79.104.10",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!is_special_use_ip(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn dot_segments() {
        assert!(has_dot_segments("https://a.example/x/../y"));
        assert!(has_dot_segments("https://a.example/./y"));
        assert!(has_dot_segments("https://a.example/x/%2E%2E/y"));
        assert!(has_dot_segments("https://a.example/x/.."));
        assert!(!has_dot_segments("https://a.example/x/.well-known/y"));
        assert!(!has_dot_segments("https://a.example/x?y=../z"));
        assert!(!has_dot_segments("https://a.example/a.b/c..d"));
    }
}
