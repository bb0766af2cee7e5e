//! Redirect URI rules: what may be registered (RFC 7591, OAuth 2.1 §2.3.1, RFC 8252) and how a
//! requested URI is matched against a registered one (exact, except the port on loopback).

use url::Url;

use super::OAuthError;
use super::url_rules::is_loopback_host;

pub const MAX_REDIRECT_URIS: usize = 20;
const MAX_URI_LEN: usize = 2048;

/// Schemes that must never receive an authorization response, whatever the application type.
const FORBIDDEN_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "file",
    "vbscript",
    "blob",
    "about",
    "filesystem",
    "ftp",
    "ws",
    "wss",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplicationType {
    #[default]
    Web,
    Native,
}

/// Checks one redirect URI offered at registration (or in a metadata document).
pub fn validate_redirect_uri(raw: &str, app_type: ApplicationType) -> Result<(), OAuthError> {
    let bad = |why: &str| OAuthError::invalid_redirect_uri(format!("redirect URI {raw:?} {why}"));
    if raw.len() > MAX_URI_LEN {
        return Err(OAuthError::invalid_redirect_uri(format!(
            "a redirect URI is longer than {MAX_URI_LEN} characters"
        )));
    }
    if raw.contains('*') {
        return Err(bad(
            "contains a wildcard; redirect URIs are matched exactly",
        ));
    }
    if raw.contains('#') {
        return Err(bad("has a fragment, which OAuth forbids"));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("contains whitespace or control characters"));
    }
    let url = Url::parse(raw).map_err(|_| bad("is not an absolute URI"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("contains user information"));
    }
    let scheme = url.scheme();
    if FORBIDDEN_SCHEMES.contains(&scheme) {
        return Err(bad("uses a forbidden scheme"));
    }
    match scheme {
        "https" => {
            if url.host().is_none() {
                return Err(bad("has no host"));
            }
            Ok(())
        }
        "http" if is_loopback_host(&url) => Ok(()),
        "http" => Err(bad(
            "uses http on a non-loopback host; use https (http is allowed only for localhost, 127.0.0.0/8 and [::1])",
        )),
        _ if app_type == ApplicationType::Native => Ok(()),
        _ => Err(bad(
            "uses a custom scheme, which requires \"application_type\": \"native\"",
        )),
    }
}

/// Does `requested` (from /authorize or /token) match the `registered` redirect URI? Exact string
/// comparison, except that for http loopback URIs the port is ignored: native clients such as
/// Claude Code register a portless URI and listen on an ephemeral port.
pub fn redirect_uri_matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(reg), Ok(req)) = (Url::parse(registered), Url::parse(requested)) else {
        return false;
    };
    reg.scheme() == "http"
        && req.scheme() == "http"
        && is_loopback_host(&reg)
        && is_loopback_host(&req)
        && reg.host_str().map(str::to_ascii_lowercase)
            == req.host_str().map(str::to_ascii_lowercase)
        && reg.path() == req.path()
        && reg.query() == req.query()
        && req.fragment().is_none()
        && req.username().is_empty()
        && req.password().is_none()
        && !requested.contains('#')
}

/// The registered URI that `requested` matches, if any.
pub fn find_matching<'a>(registered: &'a [String], requested: &str) -> Option<&'a str> {
    registered
        .iter()
        .map(String::as_str)
        .find(|r| redirect_uri_matches(r, requested))
}

/// Operator restriction on which redirect URIs may be registered (`AUTHGATE_ALLOWED_REDIRECTS`):
/// glob patterns where `*` matches any run of characters. Empty means "allow all that pass the
/// rules above".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedirectAllowlist {
    patterns: Vec<String>,
}

impl RedirectAllowlist {
    pub fn new(patterns: Vec<String>) -> Self {
        Self { patterns }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn allows(&self, uri: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| glob_match(p, uri))
    }
}

fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web(uri: &str) -> Result<(), OAuthError> {
        validate_redirect_uri(uri, ApplicationType::Web)
    }

    #[test]
    fn accepts_https_and_loopback_http() {
        for uri in [
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.com/api/mcp/auth_callback",
            "http://localhost/callback",
            "http://localhost:6274/oauth/callback",
            "http://127.0.0.1:33418/callback",
            "http://[::1]:8080/cb",
            "https://example.com/cb?tenant=1",
        ] {
            assert_eq!(web(uri), Ok(()), "{uri}");
        }
    }

    #[test]
    fn rejects_dangerous_uris() {
        for uri in [
            "http://example.com/cb",
            "https://example.com/cb#frag",
            "https://example.com/cb#",
            "https://*.example.com/cb",
            "https://user:pw@example.com/cb",
            "https://user@example.com/cb",
            "javascript:alert(1)",
            "data:text/html,hi",
            "file:///etc/passwd",
            "myapp://callback",
            "/relative/cb",
            "https://exa mple.com/cb",
        ] {
            let err = web(uri).unwrap_err();
            assert_eq!(
                err.code,
                crate::oauth::ErrorCode::InvalidRedirectUri,
                "{uri}"
            );
        }
    }

    #[test]
    fn custom_schemes_only_for_native() {
        assert!(validate_redirect_uri("claude://claude.ai/cb", ApplicationType::Native).is_ok());
        assert!(validate_redirect_uri("claude://claude.ai/cb", ApplicationType::Web).is_err());
        assert!(
            validate_redirect_uri("javascript:alert(1)", ApplicationType::Native).is_err(),
            "forbidden schemes stay forbidden for native apps"
        );
        assert!(validate_redirect_uri("http://localhost/cb", ApplicationType::Native).is_ok());
    }

    #[test]
    fn matching_is_exact_except_loopback_port() {
        assert!(redirect_uri_matches(
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.ai/api/mcp/auth_callback"
        ));
        assert!(!redirect_uri_matches(
            "https://claude.ai/api/mcp/auth_callback",
            "https://claude.ai/api/mcp/auth_callback/"
        ));
        assert!(!redirect_uri_matches(
            "https://claude.ai/cb",
            "https://claude.ai:8443/cb"
        ));
        assert!(!redirect_uri_matches(
            "https://claude.ai/cb",
            "https://CLAUDE.ai/cb"
        ));
        assert!(redirect_uri_matches(
            "http://localhost/callback",
            "http://localhost:54321/callback"
        ));
        assert!(redirect_uri_matches(
            "http://127.0.0.1:3000/callback",
            "http://127.0.0.1:4000/callback"
        ));
        assert!(!redirect_uri_matches(
            "http://localhost/callback",
            "http://127.0.0.1:54321/callback"
        ));
        assert!(!redirect_uri_matches(
            "http://localhost/callback",
            "http://localhost:54321/other"
        ));
        assert!(!redirect_uri_matches(
            "http://localhost/callback",
            "http://localhost:54321/callback#x"
        ));
        assert!(!redirect_uri_matches(
            "http://localhost/callback",
            "http://evil@localhost:54321/callback"
        ));
        assert!(!redirect_uri_matches(
            "https://localhost/callback",
            "https://localhost:54321/callback"
        ));
    }

    #[test]
    fn allowlist_globs() {
        let list = RedirectAllowlist::new(vec![
            "https://claude.ai/api/mcp/auth_callback".into(),
            "http://localhost:*/callback".into(),
        ]);
        assert!(list.allows("https://claude.ai/api/mcp/auth_callback"));
        assert!(list.allows("http://localhost:1234/callback"));
        assert!(!list.allows("https://evil.example/api/mcp/auth_callback"));
        assert!(!list.allows("http://localhost:1234/callback/x"));
        assert!(RedirectAllowlist::default().allows("https://anything.example/cb"));
    }
}
