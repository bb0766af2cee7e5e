//! Settings: environment variables, optionally overlaid by a TOML file (`--config FILE`), whose
//! keys are the variable names in lower case without the `AUTHGATE_` prefix (`public_url`,
//! `listen`, `database_url`, ...). A value in the file wins over the environment.
//!
//! `load` reads both into one serde struct, `validate` turns it into [`Settings`], `values` holds
//! the shared syntaxes (durations, sizes, rates, lists). Every failure names the setting in one
//! line and never prints a setting's value (a refused resource path is quoted, never a secret).

mod load;
#[cfg(test)]
mod tests;
mod validate;
mod values;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::domain::identity::{LoginPolicy, SubjectSpace};
use crate::oauth::redirect::RedirectAllowlist;
use crate::oauth::scope::ScopeSet;
use crate::policy::ToolPolicy;

pub use load::{RawConfig, RawEnterpriseIssuer, RawResource, RawTool};
pub use validate::parse_public_url;
pub use values::parse_duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Start-up prints the error as one log line, whatever a parser's message held.
fn err(var: &str, why: impl fmt::Display) -> ConfigError {
    ConfigError(format!("configuration error: {var}: {why}").replace(['\n', '\r'], " "))
}

/// One protected MCP resource: a path under the public URL, where its requests go, and the scopes
/// a token needs for it. Its URI (`<public url><path>`) is the token audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceConfig {
    pub path: String,
    pub uri: String,
    /// `None`: the built-in MCP server answers.
    pub upstream: Option<Url>,
    /// What every token for the resource needs (and what the 401 challenge asks for).
    pub scopes: ScopeSet,
    /// The MCP server receives the user's upstream access token in `X-Authgate-Upstream-Token`
    /// (and may exchange a token for it at `/token`).
    pub upstream_token: bool,
    /// What a client may ask for: `scopes` and those its tool rules need (step-up).
    pub offered: ScopeSet,
    pub tools: ToolPolicy,
}

/// An enterprise identity provider whose ID-JAGs (the jwt-bearer grant, enterprise-managed
/// authorization) authgate accepts: which clients may present them, for which resources, and
/// whose accounts its subjects are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnterpriseIssuer {
    /// Byte for byte the `iss` of its assertions.
    pub issuer: String,
    /// Where its keys are; `None`: from its OpenID discovery document.
    pub jwks_uri: Option<String>,
    pub client_ids: Vec<String>,
    /// The resource URIs (audiences) it may grant access to.
    pub resources: Vec<String>,
    pub subjects: SubjectSpace,
    /// Clients without credentials (`none`) may present its assertions too.
    pub allow_public_clients: bool,
}

/// A rate of `burst` events refilled over `per_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub burst: u32,
    pub per_seconds: u32,
}

/// Per-source limits of the endpoints a flood could hurt (each instance counts on its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub register: RateLimit,
    pub token: RateLimit,
    pub authorize: RateLimit,
    pub revoke: RateLimit,
    pub account: RateLimit,
    pub callback: RateLimit,
}

#[derive(Clone)]
pub struct Settings {
    /// The issuer, byte for byte, with no trailing slash: `https://mcp.example.com`.
    pub issuer: String,
    pub public_url: Url,
    /// No public URL was configured: serving on loopback for local development.
    pub dev_mode: bool,
    pub listen: SocketAddr,
    pub database_url: SecretString,
    /// Every resource's scopes. OpenID clients may ask for the identity scopes on top
    /// ([`Settings::offered_scopes`]).
    pub scopes: ScopeSet,
    pub allowed_redirects: RedirectAllowlist,
    pub rate_limits: RateLimits,
    pub dcr_idle_ttl: i64,
    pub cimd_test_hosts: Vec<(String, SocketAddr)>,
    pub cimd_test_ca_file: Option<PathBuf>,
    /// `None`: the built-in development login (loopback public URL only).
    pub upstream: Option<UpstreamConfig>,
    pub login_policy: LoginPolicy,
    pub access_token_ttl: i64,
    pub refresh_idle_ttl: i64,
    pub refresh_ttl: i64,
    pub refresh_grace: i64,
    pub session_ttl: i64,
    /// The protected MCP resources, the default (`/mcp`) first.
    pub resources: Vec<ResourceConfig>,
    /// Identity providers whose ID-JAGs are accepted; none: the jwt-bearer grant is off.
    pub enterprise_issuers: Vec<EnterpriseIssuer>,
    /// Time allowed for an upstream MCP server to start answering.
    pub mcp_upstream_timeout: i64,
    /// An upstream MCP session unused this long is no longer accepted from its caller.
    pub mcp_session_ttl: i64,
    /// Browser origins allowed to call the MCP endpoints (besides the public URL's own).
    pub allowed_origins: Vec<String>,
    /// Peers whose `X-Forwarded-For` is believed (reverse proxies).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Where Prometheus metrics are served, apart from the public listener.
    pub metrics_listen: Option<SocketAddr>,
    pub log_json: bool,
    /// How long in-flight requests and streams may run on after SIGTERM.
    pub shutdown_timeout: i64,
    /// Client ID Metadata Documents accepted and advertised.
    pub cimd_enabled: bool,
    /// The pinned copies of the well-known hosts' documents stand in when their live fetch
    /// fails.
    pub cimd_fallback: bool,
    /// CORS on the JSON endpoints (off only when a reverse proxy adds it).
    pub cors_enabled: bool,
    /// Encrypts signing keys at rest.
    pub key_sealer: Option<crate::keys::KeySealer>,
    /// Encrypts the users' upstream tokens at rest; set whenever a resource receives them.
    pub upstream_token_sealer: Option<crate::sealing::TokenSealer>,
    /// Confidential clients (MCP servers) allowed to exchange an access token for the user's
    /// upstream one (RFC 8693).
    pub token_exchange_clients: Vec<String>,
    /// `Host` values the MCP endpoints answer besides the public URL's own, lower case:
    /// `name` (any port) or `name:port`.
    pub allowed_hosts: Vec<String>,
    /// Largest request body accepted on the MCP endpoints, in bytes.
    pub mcp_max_body: usize,
    /// Time allowed for any request that is not an MCP stream.
    pub request_timeout: i64,
    /// How long a rotated-in key is published before it signs.
    pub key_publication_delay: i64,
    /// How often each instance checks whether the keys changed. Not a setting: tests shorten it.
    pub key_poll_interval: std::time::Duration,
    /// Audit events older than this many seconds are deleted.
    pub audit_retention: i64,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("issuer", &self.issuer)
            .field("dev_mode", &self.dev_mode)
            .field("listen", &self.listen)
            .field("database_url", &"[redacted]")
            .field("scopes", &self.scopes.to_string())
            .field("allowed_redirects", &self.allowed_redirects)
            .field("rate_limits", &self.rate_limits)
            .field("dcr_idle_ttl", &self.dcr_idle_ttl)
            .field("cimd_test_hosts", &self.cimd_test_hosts)
            .field("upstream", &self.upstream)
            .field("login_policy", &self.login_policy)
            .field("enterprise_issuers", &self.enterprise_issuers)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("key_publication_delay", &self.key_publication_delay)
            .field("token_exchange_clients", &self.token_exchange_clients)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://authgate.db";

impl Settings {
    /// Does any resource hand the user's upstream token to its MCP server?
    pub fn keeps_upstream_tokens(&self) -> bool {
        self.resources.iter().any(|r| r.upstream_token)
    }

    /// The resource a token's audience names, if it receives upstream tokens.
    pub fn upstream_token_resource(&self, audience: &str) -> Option<&ResourceConfig> {
        self.resources
            .iter()
            .find(|r| r.upstream_token && r.uri == audience)
    }

    pub fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        validate::settings(&raw.settings()?)
    }

    /// The public URL's port, given or implied by its scheme.
    pub fn public_port(&self) -> u16 {
        self.public_url.port_or_known_default().unwrap_or(443)
    }

    pub fn database_url(&self) -> &str {
        self.database_url.expose_secret()
    }

    /// `<issuer><path>`: every advertised URL is built here, from the configured public URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    /// Every scope a client may ask for: the resources' and OpenID Connect's.
    pub fn offered_scopes(&self) -> ScopeSet {
        crate::oauth::oidc::offered_scopes(&self.scopes)
    }

    /// The path of the issuer (`""` for a host-only issuer), for path-inserted well-known URLs.
    pub fn issuer_path(&self) -> &str {
        self.public_url.path().trim_end_matches('/')
    }
}

/// authgate's one static client at the upstream OpenID provider.
#[derive(Clone)]
pub struct UpstreamConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: SecretString,
    pub auth_method_basic: bool,
    pub scopes: Vec<String>,
    pub authorize_params: Vec<(String, String)>,
    pub callback_url: String,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("auth_method_basic", &self.auth_method_basic)
            .field("scopes", &self.scopes)
            .field("authorize_params", &self.authorize_params)
            .finish()
    }
}
