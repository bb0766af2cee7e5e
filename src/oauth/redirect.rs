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

/// Private-use schemes accepted without `application_type: native` unless the operator sets
/// `AUTHGATE_ALLOWED_REDIRECT_SCHEMES`: the desktop MCP hosts register them over plain DCR
/// (Cursor sends `cursor://` next to an https and a loopback URI) and never say `native`.
pub const DEFAULT_PRIVATE_SCHEMES: &[&str] =
    &["cursor", "vscode", "vscode-insiders", "claude", "windsurf"];

/// RFC 8252 §7.1: a reverse domain name (`com.example.app`) names an app its owner controls, so
/// it cannot collide with the web schemes. `+` is refused: it only serves to build look-alikes.
fn is_reverse_dns_scheme(scheme: &str) -> bool {
    let labels: Vec<&str> = scheme.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// `http+x`, `https.evil`, `httpss`: schemes a reader (or a lax parser) takes for the web.
fn looks_like_http(scheme: &str) -> bool {
    scheme.starts_with("http") && scheme != "http" && scheme != "https"
}

/// Checks an entry of `AUTHGATE_ALLOWED_REDIRECT_SCHEMES`; returns it in lower case.
pub fn parse_private_scheme(raw: &str) -> Result<String, String> {
    let s = raw.trim().to_ascii_lowercase();
    let valid = s.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'+' || b == b'-' || b == b'.'
        });
    if !valid {
        return Err(format!("{raw:?} is not a URI scheme"));
    }
    if s == "http" || s == "https" || looks_like_http(&s) || FORBIDDEN_SCHEMES.contains(&s.as_str())
    {
        return Err(format!("{raw:?} cannot be a private-use redirect scheme"));
    }
    Ok(s)
}

/// Checks one redirect URI offered at registration (or in a metadata document). `schemes` are
/// the operator's private-use schemes, accepted from any application type.
pub fn validate_redirect_uri(
    raw: &str,
    app_type: ApplicationType,
    schemes: &[String],
) -> Result<(), OAuthError> {
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
    // The parser lower-cases the scheme, but the stored string is what the browser or the OS
    // is sent to: a scheme written otherwise would be checked as one thing and used as another.
    if raw.split(':').next() != Some(scheme) {
        return Err(bad("must write its scheme in lower case"));
    }
    if FORBIDDEN_SCHEMES.contains(&scheme) {
        return Err(bad("uses a forbidden scheme"));
    }
    if looks_like_http(scheme) {
        return Err(bad("uses a scheme that imitates http"));
    }
    // `https:evil` and `https:/evil` parse as https://evil/, yet the consent page and matching
    // would then speak of a host the registered string does not plainly name.
    if (scheme == "https" || scheme == "http") && !raw[scheme.len()..].starts_with("://") {
        return Err(bad("must be written as scheme://host"));
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
        _ if is_reverse_dns_scheme(scheme) => Ok(()),
        _ if schemes.iter().any(|s| s == scheme) => Ok(()),
        _ => Err(bad(
            "uses a custom scheme that is neither reverse-DNS (com.example.app:/cb), allowed by AUTHGATE_ALLOWED_REDIRECT_SCHEMES, nor registered with \"application_type\": \"native\"",
        )),
    }
}

/// What the consent and account pages name as the receiver of a redirect: the web host, or,
/// for a private-use scheme, the app on this device (its "host" is only a label the app chose,
/// such as `anysphere.cursor-mcp`, and must not pass for a website).
pub fn redirect_target(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {
            u.host_str().map_or_else(|| raw.to_owned(), str::to_owned)
        }
        Ok(u) => format!("an app on this device ({}: links)", u.scheme()),
        Err(_) => raw.to_owned(),
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

/// Operator policy on redirect URIs: `AUTHGATE_ALLOWED_REDIRECTS`, glob patterns where `*`
/// matches any run of characters (empty means "allow all that pass the rules above"), and the
/// private-use schemes of `AUTHGATE_ALLOWED_REDIRECT_SCHEMES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectAllowlist {
    patterns: Vec<String>,
    schemes: Vec<String>,
}

impl Default for RedirectAllowlist {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl RedirectAllowlist {
    pub fn new(patterns: Vec<String>) -> Self {
        Self {
            patterns,
            schemes: DEFAULT_PRIVATE_SCHEMES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }

    /// Replaces the private-use schemes (`AUTHGATE_ALLOWED_REDIRECT_SCHEMES`).
    pub fn with_schemes(mut self, schemes: Vec<String>) -> Self {
        self.schemes = schemes;
        self
    }

    pub fn schemes(&self) -> &[String] {
        &self.schemes
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn allows(&self, uri: &str) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| glob_match(p, uri))
    }
}

/// `*` matches any run of characters (none included); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
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

    fn defaults() -> Vec<String> {
        RedirectAllowlist::default().schemes().to_vec()
    }

    fn web(uri: &str) -> Result<(), OAuthError> {
        validate_redirect_uri(uri, ApplicationType::Web, &defaults())
    }

    fn native(uri: &str) -> Result<(), OAuthError> {
        validate_redirect_uri(uri, ApplicationType::Native, &defaults())
    }

    #[test]
    fn private_use_schemes_without_native() {
        for uri in [
            "cursor://anysphere.cursor-mcp/oauth/callback",
            "vscode://vscode.github-authentication/did-authenticate",
            "vscode-insiders://cb",
            "claude://claude.ai/mcp-auth-callback/sdk",
            "windsurf://codeium.windsurf/cb",
            "com.example.app:/oauth2redirect/example-provider",
            "com.example.app:/cb",
            "io.github.some-app://cb",
        ] {
            assert_eq!(web(uri), Ok(()), "{uri}");
        }
        // Only the operator's list, not any scheme: a listed-by-default one can be withdrawn.
        assert!(validate_redirect_uri("cursor://x/cb", ApplicationType::Web, &[]).is_err());
        assert!(validate_redirect_uri("acme://cb", ApplicationType::Web, &["acme".into()]).is_ok());
    }

    #[test]
    fn look_alikes_refused_even_for_native() {
        for uri in [
            "https:evil",
            "https:/evil.example/cb",
            "http:localhost/cb",
            "https:\\\\evil.example/cb",
            "htTps://evil.example/cb",
            "HTTPS://claude.ai/cb",
            "Cursor://anysphere.cursor-mcp/oauth/callback",
            "http+x://evil.example/cb",
            "https.evil://cb",
            "http.example.com:/cb",
            "httpss://evil.example/cb",
            "JavaScript:alert(1)",
            "data:text/html,hi",
            "file:///etc/passwd",
            "javascript:alert(1)",
        ] {
            assert!(web(uri).is_err(), "web {uri}");
            assert!(native(uri).is_err(), "native {uri}");
        }
        for uri in [
            "com..app:/cb",
            "com.-x.app:/cb",
            "com+x.app:/cb",
            "myapp://cb",
            "a.:/cb",
        ] {
            assert!(web(uri).is_err(), "not reverse-DNS: {uri}");
        }
    }

    #[test]
    fn scheme_setting_entries() {
        assert_eq!(parse_private_scheme(" Cursor "), Ok("cursor".into()));
        for bad in ["https", "http+x", "javascript", "data", "1app", "a b", ""] {
            assert!(parse_private_scheme(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redirect_target_names_apps_not_hosts() {
        assert_eq!(
            redirect_target("cursor://anysphere.cursor-mcp/oauth/callback"),
            "an app on this device (cursor: links)"
        );
        assert_eq!(
            redirect_target("com.example.app:/cb"),
            "an app on this device (com.example.app: links)"
        );
        assert_eq!(redirect_target("https://claude.ai/cb"), "claude.ai");
        assert_eq!(redirect_target("http://127.0.0.1:33418/"), "127.0.0.1");
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
        assert!(native("myapp://claude.ai/cb").is_ok());
        assert!(web("myapp://claude.ai/cb").is_err());
        assert!(
            native("javascript:alert(1)").is_err(),
            "forbidden schemes stay forbidden for native apps"
        );
        assert!(native("http://localhost/cb").is_ok());
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
        // VS Code: a path of `/`, registered with and without its preferred port.
        assert!(redirect_uri_matches(
            "http://127.0.0.1/",
            "http://127.0.0.1:49152/"
        ));
        assert!(redirect_uri_matches(
            "http://127.0.0.1:33418/",
            "http://127.0.0.1:49152/"
        ));
        assert!(!redirect_uri_matches(
            "https://vscode.dev/redirect",
            "https://vscode.dev:8443/redirect"
        ));
        assert!(!redirect_uri_matches(
            "cursor://anysphere.cursor-mcp/oauth/callback",
            "cursor://anysphere.cursor-mcp:1/oauth/callback"
        ));
        assert!(redirect_uri_matches(
            "http://127.0.0.1:3000/callback",
            "http://127.0.0.1:4000/callback"
        ));
        // Codex: its stable document lists the port-less `http://127.0.0.1/callback`; it
        // listens on a port of its own, and its per-server callbacks have a longer path.
        assert!(redirect_uri_matches(
            "http://127.0.0.1/callback",
            "http://127.0.0.1:61234/callback"
        ));
        assert!(!redirect_uri_matches(
            "http://127.0.0.1/callback",
            "http://127.0.0.1:61234/callback/3f2a9c"
        ));
        assert!(!redirect_uri_matches(
            "http://127.0.0.1/callback",
            "http://127.0.0.1:61234/callback?x=1"
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
