//! Which headers cross the gateway, each way. Towards the MCP server: none that describe the
//! connection, carry authgate's credentials, or could pass for what authgate itself asserts (the
//! caller's identity, the client's address). Towards the client: none that describe the
//! connection, and no cookies.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};

use super::Caller;
use crate::config::Settings;

pub const SUB: &str = "x-authgate-sub";
pub const EMAIL: &str = "x-authgate-email";
pub const CLIENT_ID: &str = "x-authgate-client-id";
pub const SCOPE: &str = "x-authgate-scope";
/// The user's access token at the upstream provider, for resources that keep it.
pub const UPSTREAM_TOKEN: &str = "x-authgate-upstream-token";

const FORWARDED_FOR: &str = "x-forwarded-for";
const FORWARDED_PROTO: &str = "x-forwarded-proto";
const FORWARDED_HOST: &str = "x-forwarded-host";

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus what must not
/// cross: our bearer token, authgate's own cookies, and the host.
const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "authorization",
    "cookie",
];

/// How the request reached authgate, for the forwarding headers authgate sets.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    /// The TCP peer, when known.
    pub peer: Option<IpAddr>,
    /// The peer is one of `AUTHGATE_TRUSTED_PROXIES`: its forwarding headers are believed.
    pub peer_trusted: bool,
    /// The public URL's scheme, what a client without a trusted proxy in front used.
    pub scheme: &'a str,
    /// The request's `Host`, already checked by the guard.
    pub host: Option<&'a str>,
}

impl<'a> Hop<'a> {
    pub fn of(parts: &'a Parts, settings: &'a Settings) -> Self {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Self {
            peer,
            peer_trusted: peer
                .is_some_and(|ip| settings.trusted_proxies.iter().any(|n| n.contains(&ip))),
            scheme: settings.public_url.scheme(),
            host: super::host::request_authority(&parts.uri, &parts.headers),
        }
    }
}

fn is_forwarding(name: &str) -> bool {
    name == "forwarded" || name == "x-real-ip" || name.starts_with("x-forwarded-")
}

fn listed_in_connection(from: &HeaderMap) -> Vec<String> {
    from.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect()
}

/// The request headers for the MCP server.
pub fn to_upstream(from: &HeaderMap, hop: &Hop<'_>, caller: &Caller) -> HeaderMap {
    let hop_by_hop = listed_in_connection(from);
    let mut to = HeaderMap::new();
    for (name, value) in from {
        let n = name.as_str();
        // CGI/WSGI environs, PHP and some proxies read `_` as `-`, so `X_Authgate_Sub` or
        // `Mcp_Session_Id` would reach such a server as the header authgate sets or checks.
        // No spelling with an underscore crosses (nginx drops them by default too).
        if n.contains('_')
            || n.starts_with("x-authgate-")
            || DROPPED.contains(&n)
            || hop_by_hop.iter().any(|c| c == n)
            || (is_forwarding(n) && !hop.peer_trusted)
            || matches!(n, FORWARDED_FOR | FORWARDED_PROTO | FORWARDED_HOST)
        {
            continue;
        }
        to.append(name.clone(), value.clone());
    }

    let joined = |name: &str| -> Option<String> {
        let values: Vec<&str> = from
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    };
    let believed = |name: &str| hop.peer_trusted.then(|| joined(name)).flatten();
    let forwarded_for = match (believed(FORWARDED_FOR), hop.peer) {
        (Some(chain), Some(peer)) => Some(format!("{chain}, {peer}")),
        (None, Some(peer)) => Some(peer.to_string()),
        (chain, None) => chain,
    };
    let proto = believed(FORWARDED_PROTO).unwrap_or_else(|| hop.scheme.to_owned());
    let host = believed(FORWARDED_HOST).or_else(|| hop.host.map(str::to_owned));
    let identity = [
        (FORWARDED_FOR, forwarded_for.as_deref()),
        (FORWARDED_PROTO, Some(proto.as_str())),
        (FORWARDED_HOST, host.as_deref()),
        (SUB, Some(caller.sub.as_str())),
        (EMAIL, caller.email.as_deref()),
        (CLIENT_ID, Some(caller.client_id.as_str())),
        (SCOPE, Some(caller.scope.as_str())),
    ];
    for (name, value) in identity {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            to.insert(HeaderName::from_static(name), v);
        }
    }
    to
}

/// Adds the user's upstream access token to the headers for the MCP server. Marked sensitive,
/// so that no debug output of the headers shows it. A value that is not a valid header value
/// (never a real token) is left out.
pub fn set_upstream_token(to: &mut HeaderMap, token: &str) -> bool {
    match HeaderValue::from_str(token) {
        Ok(mut v) => {
            v.set_sensitive(true);
            to.insert(HeaderName::from_static(UPSTREAM_TOKEN), v);
            true
        }
        Err(_) => false,
    }
}

/// The response headers for the client.
pub fn to_client(from: &HeaderMap, to: &mut HeaderMap) {
    let hop_by_hop = listed_in_connection(from);
    for (name, value) in from {
        let n = name.as_str();
        if DROPPED.contains(&n) || hop_by_hop.iter().any(|c| c == n) || name == header::SET_COOKIE {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Caller {
        Caller {
            sub: "ag_real".into(),
            email: Some("ann@example.com".into()),
            client_id: "c1".into(),
            scope: "mcp".into(),
            grant_id: "g1".into(),
        }
    }

    fn hop(trusted: bool) -> Hop<'static> {
        Hop {
            peer: Some("10.0.0.5".parse().unwrap()),
            peer_trusted: trusted,
            scheme: "https",
            host: Some("mcp.example.com"),
        }
    }

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn no_spelling_of_an_identity_header_crosses() {
        let from = request(&[
            ("X-Authgate-Sub", "forged"),
            ("x-authgate-sub", "forged2"),
            ("X_Authgate_Sub", "forged3"),
            ("x_authgate-email", "forged@example.com"),
            ("X-AUTHGATE-CLIENT-ID", "forged"),
            ("x-authgate-upstream-token", "forged"),
            ("Mcp_Session_Id", "someone-elses"),
            ("mcp-session-id", "mine"),
        ]);
        let to = to_upstream(&from, &hop(false), &caller());
        assert_eq!(to.get_all(SUB).iter().collect::<Vec<_>>(), ["ag_real"]);
        assert_eq!(to[EMAIL], "ann@example.com");
        assert_eq!(to[CLIENT_ID], "c1");
        assert!(to.get("x-authgate-upstream-token").is_none());
        assert!(to.keys().all(|k| !k.as_str().contains('_')), "{to:?}");
        assert_eq!(to["mcp-session-id"], "mine");
    }

    #[test]
    fn the_upstream_token_is_authgates_own_and_sensitive() {
        let from = request(&[("X-Authgate-Upstream-Token", "forged")]);
        let mut to = to_upstream(&from, &hop(false), &caller());
        assert!(set_upstream_token(&mut to, "ya29.real"));
        assert_eq!(
            to.get_all(UPSTREAM_TOKEN).iter().collect::<Vec<_>>(),
            ["ya29.real"]
        );
        assert!(to[UPSTREAM_TOKEN].is_sensitive());
        assert!(!format!("{to:?}").contains("ya29"));
        assert!(!set_upstream_token(&mut to, "bad\nvalue"));
    }

    #[test]
    fn forwarding_headers_only_from_a_trusted_proxy() {
        let from = request(&[
            ("X-Forwarded-For", "198.51.100.7"),
            ("X-Forwarded-Proto", "http"),
            ("X-Forwarded-Host", "evil.example"),
            ("X-Real-IP", "198.51.100.7"),
            ("Forwarded", "for=198.51.100.7"),
            ("X-Forwarded-Prefix", "/evil"),
            ("X_Forwarded_For", "203.0.113.1"),
        ]);
        let direct = to_upstream(&from, &hop(false), &caller());
        assert_eq!(direct[FORWARDED_FOR], "10.0.0.5");
        assert_eq!(direct[FORWARDED_PROTO], "https");
        assert_eq!(direct[FORWARDED_HOST], "mcp.example.com");
        for gone in ["x-real-ip", "forwarded", "x-forwarded-prefix"] {
            assert!(direct.get(gone).is_none(), "{gone}");
        }
        let proxied = to_upstream(&from, &hop(true), &caller());
        assert_eq!(proxied[FORWARDED_FOR], "198.51.100.7, 10.0.0.5");
        assert_eq!(proxied[FORWARDED_PROTO], "http");
        assert_eq!(proxied[FORWARDED_HOST], "evil.example");
        assert_eq!(proxied["x-real-ip"], "198.51.100.7");
        assert_eq!(proxied["forwarded"], "for=198.51.100.7");
        assert_eq!(proxied.get_all(FORWARDED_FOR).iter().count(), 1);
        assert!(
            proxied.keys().all(|k| !k.as_str().contains('_')),
            "not even a trusted proxy's underscore spellings"
        );
    }

    #[test]
    fn connection_headers_and_credentials_stay() {
        let from = request(&[
            ("Authorization", "Bearer t"),
            ("Cookie", "a=b"),
            ("Connection", "x-private"),
            ("x-private", "1"),
            ("Proxy_Authorization", "Basic x"),
            ("Accept", "application/json"),
        ]);
        let to = to_upstream(&from, &hop(false), &caller());
        for gone in ["authorization", "cookie", "connection", "x-private"] {
            assert!(to.get(gone).is_none(), "{gone}");
        }
        assert_eq!(to["accept"], "application/json");
        let mut back = HeaderMap::new();
        to_client(
            &request(&[("Set-Cookie", "a=b"), ("Mcp-Session-Id", "s")]),
            &mut back,
        );
        assert!(back.get("set-cookie").is_none());
        assert_eq!(back["mcp-session-id"], "s");
    }
}
