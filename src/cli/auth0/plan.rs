//! What `authgate auth0 setup` wants the tenant to look like, derived from the options before any
//! request, and the difference between that and an existing application.

use secrecy::ExposeSecret;
use serde_json::{Map, Value, json};
use url::Url;

use super::api::Client;
use super::{AUTH_METHOD, Auth0Error, SetupOptions};
use crate::config::parse_public_url;

/// authgate only redeems authorization codes upstream; nothing else is granted to its application.
const GRANT_TYPES: [&str; 1] = ["authorization_code"];

/// Everything derived from the options before any request.
pub(super) struct Plan {
    pub(super) domain: String,
    /// `https://{domain}`, or the test stand-in.
    pub(super) base: String,
    pub(super) app_name: String,
    pub(super) connection: String,
    callback: String,
    logout_url: String,
    web_origin: String,
}

impl Plan {
    pub(super) fn new(opts: &SetupOptions) -> Result<Self, Auth0Error> {
        let domain = parse_domain(&opts.domain)?;
        if opts.mgmt_client_id.trim().is_empty()
            || opts.mgmt_client_id.contains(char::is_whitespace)
        {
            return Err(Auth0Error::Options(
                "--client-id (AUTH0_CLIENT_ID) must be a client ID, without spaces".into(),
            ));
        }
        if opts.mgmt_client_secret.expose_secret().trim().is_empty() {
            return Err(Auth0Error::Options(
                "--client-secret (AUTH0_CLIENT_SECRET) is empty".into(),
            ));
        }
        // The server's own rules, so that the callback registered here is one it accepts.
        let (issuer, public_url) = parse_public_url(opts.public_url.trim())
            .map_err(|e| Auth0Error::Options(format!("--public-url: {e}")))?;
        let web_origin = public_url.origin().ascii_serialization();
        let app_name = opts.app_name.trim();
        // Auth0 refuses these in a client name.
        if app_name.is_empty() || app_name.contains(['<', '>']) {
            return Err(Auth0Error::Options(
                "--app-name must be a non-empty name without < or >".into(),
            ));
        }
        let connection = opts.connection.trim();
        if connection.is_empty() || connection.contains(char::is_whitespace) {
            return Err(Auth0Error::Options(
                "--connection must be a connection name such as google-oauth2".into(),
            ));
        }
        let base = match &opts.api_base {
            None => format!("https://{domain}"),
            Some(raw) => parse_api_base(raw)?,
        };
        Ok(Self {
            domain,
            base,
            app_name: app_name.to_owned(),
            connection: connection.to_owned(),
            callback: format!("{issuer}/oauth/callback"),
            logout_url: issuer,
            web_origin,
        })
    }

    pub(super) fn audience(&self) -> String {
        format!("https://{}/api/v2/", self.domain)
    }

    pub(super) fn create_body(&self) -> Value {
        json!({
            "name": self.app_name,
            "app_type": "regular_web",
            "callbacks": [self.callback],
            "allowed_logout_urls": [self.logout_url],
            "web_origins": [self.web_origin],
            "token_endpoint_auth_method": AUTH_METHOD,
            "grant_types": GRANT_TYPES,
            "oidc_conformant": true,
        })
    }

    /// Only the fields of `app` that differ from what authgate needs; arrays are compared as
    /// sets, since their order means nothing to Auth0.
    pub(super) fn patch_body(&self, app: &Client) -> Map<String, Value> {
        let mut patch = Map::new();
        let mut list = |key: &str, have: &Option<Vec<String>>, want: &[&str]| {
            if !same_set(have.as_deref().unwrap_or_default(), want) {
                patch.insert(key.to_owned(), json!(want));
            }
        };
        list("callbacks", &app.callbacks, &[&self.callback]);
        list(
            "allowed_logout_urls",
            &app.allowed_logout_urls,
            &[&self.logout_url],
        );
        list("web_origins", &app.web_origins, &[&self.web_origin]);
        list("grant_types", &app.grant_types, &GRANT_TYPES);
        if app.token_endpoint_auth_method.as_deref() != Some(AUTH_METHOD) {
            patch.insert("token_endpoint_auth_method".into(), json!(AUTH_METHOD));
        }
        // The listing asks Auth0 for regular_web applications only; checked again in case a
        // server ignores that filter.
        if app.app_type.as_deref() != Some("regular_web") {
            patch.insert("app_type".into(), json!("regular_web"));
        }
        patch
    }
}

fn same_set(have: &[String], want: &[&str]) -> bool {
    let mut a: Vec<&str> = have.iter().map(String::as_str).collect();
    let mut b: Vec<&str> = want.to_vec();
    a.sort_unstable();
    a.dedup();
    b.sort_unstable();
    b.dedup();
    a == b
}

fn parse_domain(raw: &str) -> Result<String, Auth0Error> {
    let d = raw.trim();
    let d = d.strip_prefix("https://").unwrap_or(d);
    let d = d.strip_suffix('/').unwrap_or(d).to_ascii_lowercase();
    let valid = d.contains('.')
        && d.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if valid {
        Ok(d)
    } else {
        Err(Auth0Error::Options(format!(
            "--domain (AUTH0_DOMAIN) must be the tenant's domain such as example.eu.auth0.com, not {raw:?}"
        )))
    }
}

/// The test stand-in's origin. Loopback http only, so that this hidden switch can never send the
/// management credentials anywhere else.
fn parse_api_base(raw: &str) -> Result<String, Auth0Error> {
    let refuse = || {
        Auth0Error::Options(format!(
            "--api-base (AUTHGATE_AUTH0_API_BASE) is for tests only and must be http://127.0.0.1:PORT, not {raw:?}"
        ))
    };
    let url = Url::parse(raw.trim()).map_err(|_| refuse())?;
    let loopback_ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    };
    if url.scheme() != "http"
        || !loopback_ip
        || url.path() != "/"
        || url.query().is_some()
        || !url.username().is_empty()
    {
        return Err(refuse());
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn opts() -> SetupOptions {
        SetupOptions::new(
            "Example.EU.auth0.com",
            "m2m",
            SecretString::from("s"),
            "https://mcp.example.com/",
        )
    }

    #[test]
    fn plan_derives_urls() {
        let p = Plan::new(&opts()).unwrap();
        assert_eq!(p.domain, "example.eu.auth0.com");
        assert_eq!(p.base, "https://example.eu.auth0.com");
        assert_eq!(p.audience(), "https://example.eu.auth0.com/api/v2/");
        assert_eq!(p.callback, "https://mcp.example.com/oauth/callback");
        assert_eq!(p.logout_url, "https://mcp.example.com");
        assert_eq!(p.web_origin, "https://mcp.example.com");
        let mut o = opts();
        o.public_url = "https://example.com/gate/".into();
        let p = Plan::new(&o).unwrap();
        assert_eq!(p.callback, "https://example.com/gate/oauth/callback");
        assert_eq!(p.web_origin, "https://example.com");
    }

    #[test]
    fn bad_options_are_refused() {
        for (domain, public, base) in [
            ("example", "https://mcp.example.com", None),
            ("http://example.auth0.com", "https://mcp.example.com", None),
            ("example.auth0.com/path", "https://mcp.example.com", None),
            ("example.auth0.com", "http://mcp.example.com", None),
            ("example.auth0.com", "https://mcp.example.com?x=1", None),
            (
                "example.auth0.com",
                "https://mcp.example.com",
                Some("https://127.0.0.1:1"),
            ),
            (
                "example.auth0.com",
                "https://mcp.example.com",
                Some("http://10.0.0.1:80"),
            ),
            (
                "example.auth0.com",
                "https://mcp.example.com",
                Some("http://localhost:80"),
            ),
            (
                "example.auth0.com",
                "https://mcp.example.com",
                Some("http://127.0.0.1:8/x"),
            ),
        ] {
            let mut o = opts();
            o.domain = domain.into();
            o.public_url = public.into();
            o.api_base = base.map(str::to_owned);
            assert!(
                matches!(Plan::new(&o), Err(Auth0Error::Options(_))),
                "{domain} {public} {base:?}"
            );
        }
        let mut o = opts();
        o.api_base = Some("http://127.0.0.1:4000/".into());
        assert_eq!(Plan::new(&o).unwrap().base, "http://127.0.0.1:4000");
    }

    #[test]
    fn patch_body_lists_only_differences() {
        let p = Plan::new(&opts()).unwrap();
        let app = Client {
            client_id: "c".into(),
            name: Some("authgate".into()),
            app_type: Some("regular_web".into()),
            callbacks: Some(vec!["https://old.example.com/oauth/callback".into()]),
            allowed_logout_urls: Some(vec!["https://mcp.example.com".into()]),
            web_origins: Some(vec!["https://mcp.example.com".into()]),
            token_endpoint_auth_method: Some("client_secret_post".into()),
            grant_types: Some(vec!["authorization_code".into()]),
        };
        let patch = p.patch_body(&app);
        assert_eq!(
            Value::Object(patch),
            json!({"callbacks": ["https://mcp.example.com/oauth/callback"]})
        );
    }
}
