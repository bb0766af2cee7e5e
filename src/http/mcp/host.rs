//! Which `Host` the MCP endpoints answer (DNS-rebinding protection). A page on a rebinding domain
//! reaches authgate with its own name in `Host`, and an MCP client that follows such a page with a
//! valid token (a stored one, a local proxy that injects one) must not be served. Only the public
//! URL's host and port and the operator's `AUTHGATE_ALLOWED_HOSTS` are answered; the check runs
//! before any token work and does not depend on `Origin`, which non-browser callers omit.

use axum::http::{HeaderMap, Uri, header};

use crate::config::Settings;

/// The authority the request was sent to: the one `Host` header, or `:authority` (HTTP/2, or an
/// absolute-form target). Several `Host` headers, or a `Host` that differs from `:authority`, are
/// ambiguous (RFC 9112 §3.2, RFC 9113 §8.3.1) and yield `None`.
pub fn request_authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return None;
    }
    let host = match host {
        Some(v) => Some(v.to_str().ok()?),
        None => None,
    };
    match (uri.authority().map(|a| a.as_str()), host) {
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => None,
        (Some(a), _) => Some(a),
        (None, h) => h,
    }
}

/// Is `authority` (`name` or `name:port`) one this gateway answers as?
pub fn is_allowed(settings: &Settings, authority: &str) -> bool {
    let Some((name, port)) = split(authority) else {
        return false;
    };
    let public = settings.public_url.host_str().unwrap_or_default();
    // Without a port the client used its scheme's default, which a reverse proxy passing
    // `$host` drops: the name is what rebinding forges, so a bare name is compared by name.
    if name.eq_ignore_ascii_case(public) && port.is_none_or(|p| p == settings.public_port()) {
        return true;
    }
    settings
        .allowed_hosts
        .iter()
        .any(|entry| match split(entry) {
            Some((n, None)) => n.eq_ignore_ascii_case(name),
            Some((n, Some(p))) => n.eq_ignore_ascii_case(name) && port == Some(p),
            None => false,
        })
}

/// `name[:port]` with an IPv6 literal in brackets; anything else (user information, a path, an
/// empty name, a port that is not a number) is not an authority.
fn split(authority: &str) -> Option<(&str, Option<u16>)> {
    if authority.is_empty()
        || authority
            .bytes()
            .any(|b| matches!(b, b'@' | b'/' | b'?' | b'#' | b'\\') || b.is_ascii_whitespace())
    {
        return None;
    }
    let (name, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (name, rest) = authority.split_at(end + 1);
        match rest.strip_prefix(':') {
            Some(p) => (name, Some(p)),
            None if rest.is_empty() => (name, None),
            None => return None,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (authority, None),
        }
    };
    if name.is_empty() || (name.contains(':') && !name.starts_with('[')) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;

    fn settings(public: &str, allowed: &str) -> Settings {
        let mut raw = RawConfig::default();
        raw.set("AUTHGATE_PUBLIC_URL", public);
        raw.set("AUTHGATE_UPSTREAM_ISSUER", "https://login.example.invalid/");
        raw.set("AUTHGATE_UPSTREAM_CLIENT_ID", "authgate");
        raw.set("AUTHGATE_UPSTREAM_CLIENT_SECRET", "s");
        raw.set("AUTHGATE_ALLOW_ANY_USER", "true");
        if !allowed.is_empty() {
            raw.set("AUTHGATE_ALLOWED_HOSTS", allowed);
        }
        Settings::from_raw(&raw).unwrap()
    }

    #[test]
    fn public_host_and_port_only() {
        let s = settings("https://mcp.example.com", "");
        for ok in ["mcp.example.com", "MCP.Example.COM", "mcp.example.com:443"] {
            assert!(is_allowed(&s, ok), "{ok}");
        }
        for bad in [
            "evil.example.com",
            "mcp.example.com:8443",
            "mcp.example.com.",
            "mcp.example.com.evil.com",
            "user@mcp.example.com",
            "mcp.example.com/x",
            "mcp.example.com:",
            "mcp.example.com:99999",
            "",
            "127.0.0.1",
            "localhost",
        ] {
            assert!(!is_allowed(&s, bad), "{bad}");
        }
        let local = settings("http://127.0.0.1:8080", "");
        assert!(is_allowed(&local, "127.0.0.1:8080"));
        assert!(!is_allowed(&local, "127.0.0.1:9090"));
        assert!(!is_allowed(&local, "localhost:8080"));
        let v6 = settings("http://[::1]:8080", "");
        assert!(is_allowed(&v6, "[::1]:8080"));
        assert!(!is_allowed(&v6, "[::2]:8080"));
    }

    #[test]
    fn operator_listed_hosts() {
        let s = settings(
            "https://mcp.example.com",
            "mcp.internal, gate.internal:8080",
        );
        assert!(is_allowed(&s, "mcp.internal"));
        assert!(is_allowed(&s, "mcp.internal:9000"), "no port listed: any");
        assert!(is_allowed(&s, "gate.internal:8080"));
        assert!(!is_allowed(&s, "gate.internal:8081"));
        assert!(!is_allowed(&s, "gate.internal"));
        assert!(!is_allowed(&s, "other.internal"));
    }

    #[test]
    fn ambiguous_authorities_are_refused() {
        let uri: Uri = "/mcp".parse().unwrap();
        let mut h = HeaderMap::new();
        assert_eq!(request_authority(&uri, &h), None, "no Host at all");
        h.append(header::HOST, "a.example".parse().unwrap());
        assert_eq!(request_authority(&uri, &h), Some("a.example"));
        h.append(header::HOST, "b.example".parse().unwrap());
        assert_eq!(request_authority(&uri, &h), None, "two Host headers");
        let abs: Uri = "http://a.example/mcp".parse().unwrap();
        let mut one = HeaderMap::new();
        one.insert(header::HOST, "b.example".parse().unwrap());
        assert_eq!(request_authority(&abs, &one), None, ":authority differs");
        assert_eq!(
            request_authority(&abs, &HeaderMap::new()),
            Some("a.example")
        );
    }
}
