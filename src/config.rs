//! Settings: environment variables, optionally overlaid by a TOML file (`--config FILE`), whose
//! keys are the variable names in lower case without the `AUTHGATE_` prefix (`public_url`,
//! `listen`, `database_url`, ...). A value in the file wins over the environment.
//!
//! Every failure names the setting in one line and never prints a secret value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::oauth::identity::LoginPolicy;
use crate::oauth::redirect::{RedirectAllowlist, parse_private_scheme};
use crate::oauth::scope::ScopeSet;
use crate::oauth::url_rules::is_loopback_host;
use crate::upstream::UpstreamConfig;

/// Every variable authgate reads (error messages and logs never print their values).
const VARS: &[&str] = &[
    "AUTHGATE_PUBLIC_URL",
    "AUTHGATE_LISTEN",
    "DATABASE_URL",
    "AUTHGATE_SCOPES",
    "AUTHGATE_ALLOWED_REDIRECTS",
    "AUTHGATE_ALLOWED_REDIRECT_SCHEMES",
    "AUTHGATE_REGISTER_RATE_LIMIT",
    "AUTHGATE_DCR_IDLE_TTL",
    "AUTHGATE_CIMD_TEST_HOSTS",
    "AUTHGATE_CIMD_TEST_CA_FILE",
    "AUTHGATE_UPSTREAM_ISSUER",
    "AUTHGATE_UPSTREAM_CLIENT_ID",
    "AUTHGATE_UPSTREAM_CLIENT_SECRET",
    "AUTHGATE_UPSTREAM_AUTH_METHOD",
    "AUTHGATE_UPSTREAM_SCOPES",
    "AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS",
    "AUTHGATE_ALLOWED_EMAILS",
    "AUTHGATE_ALLOWED_DOMAINS",
    "AUTHGATE_ALLOW_ANY_USER",
    "AUTHGATE_ACCESS_TOKEN_TTL",
    "AUTHGATE_REFRESH_TOKEN_IDLE_TTL",
    "AUTHGATE_REFRESH_TOKEN_TTL",
    "AUTHGATE_REFRESH_GRACE",
    "AUTHGATE_SESSION_TTL",
    "AUTHGATE_MCP_UPSTREAM",
    "AUTHGATE_MCP_UPSTREAM_TIMEOUT",
    "AUTHGATE_MCP_SESSION_TTL",
    "AUTHGATE_ALLOWED_ORIGINS",
    "AUTHGATE_TRUSTED_PROXIES",
    "AUTHGATE_METRICS_LISTEN",
    "AUTHGATE_LOG_FORMAT",
    "AUTHGATE_SHUTDOWN_TIMEOUT",
    "AUTHGATE_CIMD",
    "AUTHGATE_CORS",
    "AUTHGATE_KEY_ENCRYPTION_KEY",
    "AUTHGATE_ALLOWED_HOSTS",
    "AUTHGATE_MCP_MAX_BODY",
    "AUTHGATE_REQUEST_TIMEOUT",
    "AUTHGATE_TOKEN_RATE_LIMIT",
    "AUTHGATE_AUTHORIZE_RATE_LIMIT",
    "AUTHGATE_REVOKE_RATE_LIMIT",
    "AUTHGATE_ACCOUNT_RATE_LIMIT",
    "AUTHGATE_CALLBACK_RATE_LIMIT",
    "AUTHGATE_KEY_PUBLICATION_DELAY",
];

fn toml_key(env: &str) -> String {
    env.strip_prefix("AUTHGATE_")
        .unwrap_or(env)
        .to_ascii_lowercase()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err(var: &str, why: impl fmt::Display) -> ConfigError {
    ConfigError(format!("configuration error: {var}: {why}"))
}

/// The raw values, by environment name, before validation, plus the `[[resource]]` tables of a
/// configuration file.
#[derive(Default)]
pub struct RawConfig(BTreeMap<&'static str, String>, Vec<RawResource>);

#[derive(Debug, Clone, Default)]
pub struct RawResource {
    pub path: Option<String>,
    pub upstream: Option<String>,
    pub scopes: Vec<String>,
}

impl RawConfig {
    /// Reads the known variables from an environment (passed in, so tests need not touch the
    /// process environment).
    pub fn from_env<I: IntoIterator<Item = (String, String)>>(env: I) -> Self {
        let all: BTreeMap<String, String> = env.into_iter().collect();
        let mut raw = BTreeMap::new();
        for var in VARS {
            if let Some(v) = all.get(*var) {
                raw.insert(*var, v.clone());
            }
        }
        Self(raw, Vec::new())
    }

    /// Overlays the values of a TOML document.
    pub fn overlay_toml(&mut self, text: &str, origin: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            err(origin, format!("not valid TOML: {}", e.message()))
        })?;
        for (key, value) in table {
            if key == "resource" {
                self.1.extend(parse_resource_tables(value)?);
                continue;
            }
            let var = VARS
                .iter()
                .find(|v| toml_key(v) == key)
                .ok_or_else(|| err(origin, format!("unknown setting {key:?}")))?;
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => items
                    .into_iter()
                    .map(|i| match i {
                        toml::Value::String(s) => Ok(s),
                        _ => Err(err(&key, "list entries must be strings")),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
                _ => return Err(err(&key, "must be a string, number, boolean or list")),
            };
            self.0.insert(*var, text);
        }
        Ok(())
    }

    pub fn add_resource(&mut self, resource: RawResource) {
        self.1.push(resource);
    }

    pub fn set(&mut self, env: &'static str, value: impl Into<String>) {
        debug_assert!(VARS.contains(&env), "{env} is not in VARS");
        self.0.insert(env, value.into());
    }

    fn get(&self, env: &str) -> Option<&str> {
        // A name missing from VARS would be silently unreadable from the environment.
        debug_assert!(VARS.contains(&env), "{env} is not in VARS");
        self.0
            .get(env)
            .map(String::as_str)
            .filter(|s| !s.trim().is_empty())
    }
}

fn parse_resource_tables(value: toml::Value) -> Result<Vec<RawResource>, ConfigError> {
    let bad = |why: &str| err("[[resource]]", why);
    let toml::Value::Array(items) = value else {
        return Err(bad("must be an array of tables ([[resource]])"));
    };
    items
        .into_iter()
        .map(|item| {
            let toml::Value::Table(t) = item else {
                return Err(bad("each entry must be a table"));
            };
            let mut r = RawResource::default();
            for (k, v) in t {
                match (k.as_str(), v) {
                    ("path", toml::Value::String(s)) => r.path = Some(s),
                    ("upstream", toml::Value::String(s)) => r.upstream = Some(s),
                    ("scopes", toml::Value::Array(list)) => {
                        for s in list {
                            let toml::Value::String(s) = s else {
                                return Err(bad("scopes must be a list of strings"));
                            };
                            r.scopes.push(s);
                        }
                    }
                    (other, _) => {
                        return Err(bad(&format!(
                            "unknown or mistyped key {other:?} (path, upstream, scopes)"
                        )));
                    }
                }
            }
            Ok(r)
        })
        .collect()
}

/// One protected MCP resource: a path under the public URL, where its requests go, and the scopes
/// a token needs for it. Its URI (`<public url><path>`) is the token audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceConfig {
    pub path: String,
    pub uri: String,
    /// `None`: the built-in MCP server answers.
    pub upstream: Option<Url>,
    pub scopes: ScopeSet,
}

/// Paths authgate itself serves, which a resource may not take.
const RESERVED_PATHS: &[&str] = &[
    "/authorize",
    "/token",
    "/register",
    "/revoke",
    "/jwks.json",
    "/oauth",
    "/dev",
    "/.well-known",
    "/healthz",
    "/readyz",
    "/account",
];

fn parse_resource(
    var: &str,
    path: &str,
    upstream: Option<&str>,
    scopes: ScopeSet,
    issuer: &str,
) -> Result<ResourceConfig, ConfigError> {
    if !path.starts_with('/')
        || path.len() < 2
        || path.ends_with('/')
        || path.contains(['?', '#', '*', ' ', '{', '}'])
    {
        return Err(err(
            var,
            format!("path {path:?} must look like /name (no trailing slash)"),
        ));
    }
    if RESERVED_PATHS
        .iter()
        .any(|r| path == *r || path.starts_with(&format!("{r}/")))
    {
        return Err(err(
            var,
            format!("path {path:?} is used by authgate itself"),
        ));
    }
    let upstream = match upstream {
        None => None,
        Some(u) => {
            let url = Url::parse(u.trim())
                .map_err(|_| err(var, "upstream must be an absolute http(s) URL"))?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err(err(var, "upstream must be an absolute http(s) URL"));
            }
            Some(url)
        }
    };
    if scopes.is_empty() {
        return Err(err(var, "a resource needs at least one scope"));
    }
    if scopes.contains("offline_access") {
        return Err(err(var, "offline_access is not a resource scope"));
    }
    Ok(ResourceConfig {
        path: path.to_owned(),
        uri: format!("{issuer}{path}"),
        upstream,
        scopes,
    })
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
    /// CORS on the JSON endpoints (off only when a reverse proxy adds it).
    pub cors_enabled: bool,
    /// Encrypts signing keys at rest.
    pub key_sealer: Option<crate::keys::KeySealer>,
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
            .field("access_token_ttl", &self.access_token_ttl)
            .field("key_publication_delay", &self.key_publication_delay)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://authgate.db";

impl Settings {
    pub fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let listen_raw = raw.get("AUTHGATE_LISTEN").unwrap_or(DEFAULT_LISTEN);
        let listen: SocketAddr = listen_raw.parse().map_err(|_| {
            err(
                "AUTHGATE_LISTEN",
                "must be an address and port such as 127.0.0.1:8080",
            )
        })?;

        let (public_raw, dev_mode) = match raw.get("AUTHGATE_PUBLIC_URL") {
            Some(v) => (v.trim().to_owned(), false),
            None if listen.ip().is_loopback() => (format!("http://{listen}"), true),
            None => {
                return Err(err(
                    "AUTHGATE_PUBLIC_URL",
                    "is required when AUTHGATE_LISTEN is not a loopback address (for example https://mcp.example.com)",
                ));
            }
        };
        let (issuer, public_url) = parse_public_url(&public_raw)?;

        let database_url = raw.get("DATABASE_URL").unwrap_or(DEFAULT_DATABASE_URL);
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(err(
                "DATABASE_URL",
                "must start with sqlite: or postgres:// (value not shown)",
            ));
        }

        let scopes = ScopeSet::parse(
            &raw.get("AUTHGATE_SCOPES")
                .unwrap_or("mcp")
                .replace(',', " "),
        );
        if scopes.is_empty() {
            return Err(err("AUTHGATE_SCOPES", "must list at least one scope"));
        }
        if scopes.contains("offline_access") {
            return Err(err(
                "AUTHGATE_SCOPES",
                "must not contain offline_access: refresh tokens are issued without it",
            ));
        }

        let mut allowed_redirects = RedirectAllowlist::new(
            raw.get("AUTHGATE_ALLOWED_REDIRECTS")
                .map(split_list)
                .unwrap_or_default(),
        );
        if let Some(list) = raw.get("AUTHGATE_ALLOWED_REDIRECT_SCHEMES") {
            let schemes = split_list(list)
                .iter()
                .map(|s| parse_private_scheme(s))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|why| err("AUTHGATE_ALLOWED_REDIRECT_SCHEMES", why))?;
            allowed_redirects = allowed_redirects.with_schemes(schemes);
        }

        // Generous: Claude.ai and ChatGPT reach authgate from a few shared egress addresses, so
        // one address is many users. The limits only hold back floods.
        let rate = |var: &str, default: &str| parse_rate(var, raw.get(var).unwrap_or(default));
        let rate_limits = RateLimits {
            register: rate("AUTHGATE_REGISTER_RATE_LIMIT", "300/min")?,
            token: rate("AUTHGATE_TOKEN_RATE_LIMIT", "1200/min")?,
            authorize: rate("AUTHGATE_AUTHORIZE_RATE_LIMIT", "600/min")?,
            revoke: rate("AUTHGATE_REVOKE_RATE_LIMIT", "600/min")?,
            account: rate("AUTHGATE_ACCOUNT_RATE_LIMIT", "300/min")?,
            callback: rate("AUTHGATE_CALLBACK_RATE_LIMIT", "600/min")?,
        };
        let dcr_idle_ttl = parse_duration(
            "AUTHGATE_DCR_IDLE_TTL",
            raw.get("AUTHGATE_DCR_IDLE_TTL").unwrap_or("24h"),
        )?;

        let mut cimd_test_hosts = Vec::new();
        if let Some(list) = raw.get("AUTHGATE_CIMD_TEST_HOSTS") {
            for entry in split_list(list) {
                let (host, addr) = entry.split_once('=').ok_or_else(|| {
                    err(
                        "AUTHGATE_CIMD_TEST_HOSTS",
                        "entries must look like host=127.0.0.1:8443",
                    )
                })?;
                let addr: SocketAddr = addr.parse().map_err(|_| {
                    err(
                        "AUTHGATE_CIMD_TEST_HOSTS",
                        "entries must look like host=127.0.0.1:8443",
                    )
                })?;
                if !addr.ip().is_loopback() {
                    return Err(err(
                        "AUTHGATE_CIMD_TEST_HOSTS",
                        "may only map a host to a loopback address",
                    ));
                }
                cimd_test_hosts.push((host.to_ascii_lowercase(), addr));
            }
        }

        let upstream = parse_upstream(raw, &issuer, is_loopback_host(&public_url))?;
        let flag = |var: &str| {
            raw.get(var)
                .is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes"))
        };
        let login_policy = LoginPolicy {
            emails: raw
                .get("AUTHGATE_ALLOWED_EMAILS")
                .map(split_list)
                .unwrap_or_default(),
            domains: raw
                .get("AUTHGATE_ALLOWED_DOMAINS")
                .map(|d| {
                    split_list(d)
                        .into_iter()
                        .map(|x| x.trim_start_matches('@').to_owned())
                        .collect()
                })
                .unwrap_or_default(),
            anyone: false,
        };
        let anyone = flag("AUTHGATE_ALLOW_ANY_USER")
            || (upstream.is_none()
                && login_policy.emails.is_empty()
                && login_policy.domains.is_empty());
        if !anyone && login_policy.emails.is_empty() && login_policy.domains.is_empty() {
            return Err(err(
                "AUTHGATE_ALLOWED_EMAILS",
                "name who may log in (or AUTHGATE_ALLOWED_DOMAINS), or set AUTHGATE_ALLOW_ANY_USER=true to admit everyone the upstream provider authenticates",
            ));
        }
        let login_policy = LoginPolicy {
            anyone,
            ..login_policy
        };
        let dur = |var: &str, default: &str| parse_duration(var, raw.get(var).unwrap_or(default));

        let mut resources = vec![parse_resource(
            "AUTHGATE_MCP_UPSTREAM",
            "/mcp",
            raw.get("AUTHGATE_MCP_UPSTREAM"),
            scopes.clone(),
            &issuer,
        )?];
        for r in &raw.1 {
            let path = r
                .path
                .as_deref()
                .ok_or_else(|| err("[[resource]]", "each resource needs a path"))?;
            let own = ScopeSet::from_list(r.scopes.iter().cloned());
            let own = if own.is_empty() { scopes.clone() } else { own };
            let parsed = parse_resource("[[resource]]", path, r.upstream.as_deref(), own, &issuer)?;
            if resources.iter().any(|x| x.path == parsed.path) {
                return Err(err(
                    "[[resource]]",
                    format!("path {path:?} is listed twice"),
                ));
            }
            resources.push(parsed);
        }
        let scopes = ScopeSet::from_list(
            resources
                .iter()
                .flat_map(|r| r.scopes.iter().map(str::to_owned)),
        );
        let mut allowed_origins = Vec::new();
        for o in raw
            .get("AUTHGATE_ALLOWED_ORIGINS")
            .map(split_list)
            .unwrap_or_default()
        {
            let url = Url::parse(&o).map_err(|_| {
                err(
                    "AUTHGATE_ALLOWED_ORIGINS",
                    "entries must be origins such as http://localhost:6274",
                )
            })?;
            if url.host().is_none() || url.path() != "/" || url.query().is_some() {
                return Err(err(
                    "AUTHGATE_ALLOWED_ORIGINS",
                    "entries must be origins such as http://localhost:6274 (no path)",
                ));
            }
            allowed_origins.push(url.origin().ascii_serialization());
        }

        let mut trusted_proxies = Vec::new();
        for p in raw
            .get("AUTHGATE_TRUSTED_PROXIES")
            .map(split_list)
            .unwrap_or_default()
        {
            let net: ipnet::IpNet = match p.parse::<ipnet::IpNet>() {
                Ok(n) => n,
                Err(_) => p
                    .parse::<std::net::IpAddr>()
                    .map(ipnet::IpNet::from)
                    .map_err(|_| {
                        err(
                            "AUTHGATE_TRUSTED_PROXIES",
                            "entries must be addresses or CIDR ranges such as 10.0.0.0/8",
                        )
                    })?,
            };
            trusted_proxies.push(net);
        }
        let metrics_listen = match raw.get("AUTHGATE_METRICS_LISTEN") {
            None => None,
            Some(v) => Some(v.parse::<SocketAddr>().map_err(|_| {
                err(
                    "AUTHGATE_METRICS_LISTEN",
                    "must be an address and port such as 127.0.0.1:9090",
                )
            })?),
        };
        let allowed_hosts = raw
            .get("AUTHGATE_ALLOWED_HOSTS")
            .map(split_list)
            .unwrap_or_default()
            .into_iter()
            .map(|h| parse_allowed_host(&h))
            .collect::<Result<Vec<_>, _>>()?;
        let mcp_max_body = parse_size(
            "AUTHGATE_MCP_MAX_BODY",
            raw.get("AUTHGATE_MCP_MAX_BODY").unwrap_or("4MiB"),
        )?;
        let log_json = match raw.get("AUTHGATE_LOG_FORMAT").unwrap_or("pretty") {
            "json" => true,
            "pretty" => false,
            _ => return Err(err("AUTHGATE_LOG_FORMAT", "must be json or pretty")),
        };

        Ok(Self {
            upstream,
            login_policy,
            access_token_ttl: dur("AUTHGATE_ACCESS_TOKEN_TTL", "1h")?,
            refresh_idle_ttl: dur("AUTHGATE_REFRESH_TOKEN_IDLE_TTL", "30d")?,
            refresh_ttl: dur("AUTHGATE_REFRESH_TOKEN_TTL", "90d")?,
            refresh_grace: dur("AUTHGATE_REFRESH_GRACE", "30s")?,
            session_ttl: dur("AUTHGATE_SESSION_TTL", "12h")?,
            mcp_upstream_timeout: dur("AUTHGATE_MCP_UPSTREAM_TIMEOUT", "300s")?,
            mcp_session_ttl: dur("AUTHGATE_MCP_SESSION_TTL", "24h")?,
            resources,
            allowed_origins,
            trusted_proxies,
            metrics_listen,
            log_json,
            shutdown_timeout: dur("AUTHGATE_SHUTDOWN_TIMEOUT", "30s")?,
            cimd_enabled: parse_bool(raw, "AUTHGATE_CIMD", true)?,
            cors_enabled: parse_bool(raw, "AUTHGATE_CORS", true)?,
            allowed_hosts,
            mcp_max_body,
            request_timeout: dur("AUTHGATE_REQUEST_TIMEOUT", "30s")?,
            key_sealer: raw
                .get("AUTHGATE_KEY_ENCRYPTION_KEY")
                .map(crate::keys::KeySealer::from_setting)
                .transpose()
                .map_err(|_| err("AUTHGATE_KEY_ENCRYPTION_KEY", "must be 32 random bytes in base64 (openssl rand -base64 32); value not shown"))?,
            // Zero is allowed (a single instance needs no publication ahead of use).
            key_publication_delay: match raw.get("AUTHGATE_KEY_PUBLICATION_DELAY").map(str::trim) {
                Some("0") => 0,
                _ => dur("AUTHGATE_KEY_PUBLICATION_DELAY", "120")?,
            },
            key_poll_interval: std::time::Duration::from_secs(crate::keys::POLL_SECONDS),
            issuer,
            public_url,
            dev_mode,
            listen,
            database_url: SecretString::from(database_url.to_owned()),
            scopes,
            allowed_redirects,
            rate_limits,
            dcr_idle_ttl,
            cimd_test_hosts,
            cimd_test_ca_file: raw.get("AUTHGATE_CIMD_TEST_CA_FILE").map(PathBuf::from),
        })
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

    /// The path of the issuer (`""` for a host-only issuer), for path-inserted well-known URLs.
    pub fn issuer_path(&self) -> &str {
        self.public_url.path().trim_end_matches('/')
    }
}

fn parse_upstream(
    raw: &RawConfig,
    issuer: &str,
    public_is_loopback: bool,
) -> Result<Option<UpstreamConfig>, ConfigError> {
    const ISSUER: &str = "AUTHGATE_UPSTREAM_ISSUER";
    let Some(up_issuer) = raw.get(ISSUER).map(str::trim) else {
        if !public_is_loopback {
            return Err(err(
                ISSUER,
                "is required: the built-in development login only runs on a loopback public URL",
            ));
        }
        return Ok(None);
    };
    let url = Url::parse(up_issuer).map_err(|_| {
        err(
            ISSUER,
            "must be an absolute URL (copy it exactly from the provider's discovery document)",
        )
    })?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&url) => {}
        _ => {
            return Err(err(
                ISSUER,
                "must use https (http is accepted only on loopback, for tests)",
            ));
        }
    }
    let client_id = raw.get("AUTHGATE_UPSTREAM_CLIENT_ID").ok_or_else(|| {
        err(
            "AUTHGATE_UPSTREAM_CLIENT_ID",
            "is required with AUTHGATE_UPSTREAM_ISSUER",
        )
    })?;
    let client_secret = raw.get("AUTHGATE_UPSTREAM_CLIENT_SECRET").ok_or_else(|| {
        err(
            "AUTHGATE_UPSTREAM_CLIENT_SECRET",
            "is required with AUTHGATE_UPSTREAM_ISSUER",
        )
    })?;
    let auth_method_basic = match raw
        .get("AUTHGATE_UPSTREAM_AUTH_METHOD")
        .unwrap_or("client_secret_post")
    {
        "client_secret_post" => false,
        "client_secret_basic" => true,
        _ => {
            return Err(err(
                "AUTHGATE_UPSTREAM_AUTH_METHOD",
                "must be client_secret_post or client_secret_basic",
            ));
        }
    };
    let scopes = split_list(
        raw.get("AUTHGATE_UPSTREAM_SCOPES")
            .unwrap_or("openid email profile"),
    );
    if !scopes.iter().any(|s| s == "openid") {
        return Err(err("AUTHGATE_UPSTREAM_SCOPES", "must include openid"));
    }
    let mut authorize_params = Vec::new();
    if let Some(p) = raw.get("AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS") {
        for pair in p.split(['&', ',']).map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                err(
                    "AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS",
                    "must look like connection=google-oauth2&audience=https://api",
                )
            })?;
            const RESERVED: &[&str] = &[
                "client_id",
                "redirect_uri",
                "response_type",
                "state",
                "nonce",
                "code_challenge",
                "code_challenge_method",
                "scope",
                "resource",
            ];
            if RESERVED.contains(&k.trim()) {
                return Err(err(
                    "AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS",
                    format!("may not set {}", k.trim()),
                ));
            }
            authorize_params.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Ok(Some(UpstreamConfig {
        issuer: up_issuer.to_owned(),
        client_id: client_id.to_owned(),
        client_secret: SecretString::from(client_secret.to_owned()),
        auth_method_basic,
        scopes,
        authorize_params,
        callback_url: format!("{issuer}/oauth/callback"),
    }))
}

/// Normalizes the public URL into the issuer string: scheme and host lower case (as `Url` does),
/// no trailing slash, no query, fragment or user information.
pub fn parse_public_url(raw: &str) -> Result<(String, Url), ConfigError> {
    const VAR: &str = "AUTHGATE_PUBLIC_URL";
    let url = Url::parse(raw).map_err(|_| {
        err(
            VAR,
            "must be an absolute URL such as https://mcp.example.com",
        )
    })?;
    if url.query().is_some() || url.fragment().is_some() || raw.contains('#') {
        return Err(err(VAR, "must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(VAR, "must not contain user information"));
    }
    if url.host().is_none() {
        return Err(err(VAR, "must have a host"));
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&url) => {}
        "http" => return Err(err(VAR, "must use https unless the host is loopback")),
        _ => return Err(err(VAR, "must be an https URL")),
    }
    let issuer = url.as_str().trim_end_matches('/').to_owned();
    let normalized =
        Url::parse(&format!("{issuer}/")).map_err(|_| err(VAR, "is not a valid URL"))?;
    Ok((issuer, normalized))
}

fn parse_bool(raw: &RawConfig, var: &str, default: bool) -> Result<bool, ConfigError> {
    match raw.get(var).map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
        Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
        Some(_) => Err(err(var, "must be true or false")),
    }
}

fn split_list(raw: &str) -> Vec<String> {
    raw.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `N/sec`, `N/min` or `N/hour`: N events per period, also the burst.
fn parse_rate(var: &str, raw: &str) -> Result<RateLimit, ConfigError> {
    let bad = || err(var, "must look like 300/min (periods: sec, min, hour)");
    let (n, period) = raw.trim().split_once('/').ok_or_else(bad)?;
    let burst: u32 = n.trim().parse().map_err(|_| bad())?;
    let per_seconds = match period.trim() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        _ => return Err(bad()),
    };
    if burst == 0 {
        return Err(err(var, "must allow at least one request"));
    }
    Ok(RateLimit { burst, per_seconds })
}

/// A `Host` a reverse proxy may pass through: `name` or `name:port`, nothing else.
fn parse_allowed_host(raw: &str) -> Result<String, ConfigError> {
    let lower = raw.trim().to_ascii_lowercase();
    let valid = !lower.contains('@')
        && lower
            .parse::<http::uri::Authority>()
            .is_ok_and(|a| !a.host().is_empty());
    if !valid {
        return Err(err(
            "AUTHGATE_ALLOWED_HOSTS",
            "entries must be host names with an optional port, such as mcp.internal or mcp.internal:8080",
        ));
    }
    Ok(lower)
}

/// A size in bytes: `4194304`, `16KiB`, `4MiB` (also `k`/`kb`, `m`/`mb`, binary units).
fn parse_size(var: &str, raw: &str) -> Result<usize, ConfigError> {
    let raw = raw.trim();
    let bad = || {
        err(
            var,
            "must be a size such as 16KiB, 4MiB or a number of bytes",
        )
    };
    let (digits, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => raw.split_at(i),
        None => (raw, ""),
    };
    let n: usize = digits.parse().map_err(|_| bad())?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).filter(|v| *v > 0).ok_or_else(bad)
}

/// A duration in seconds: `90`, `90s`, `15m`, `24h` or `7d`.
pub fn parse_duration(var: &str, raw: &str) -> Result<i64, ConfigError> {
    let raw = raw.trim();
    let bad = || err(var, "must be a duration such as 3600, 90s, 15m, 24h or 7d");
    let (digits, unit) = match raw.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => raw.split_at(i),
        None => (raw, "s"),
    };
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).filter(|v| *v > 0).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_raw(&RawConfig::from_env(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        ))
    }

    #[test]
    fn defaults_are_a_loopback_dev_server() {
        let s = settings(&[]).unwrap();
        assert!(s.dev_mode);
        assert_eq!(s.issuer, "http://127.0.0.1:8080");
        assert_eq!(s.database_url(), "sqlite://authgate.db");
        assert_eq!(s.scopes.to_string(), "mcp");
    }

    const UPSTREAM: [(&str, &str); 4] = [
        ("AUTHGATE_UPSTREAM_ISSUER", "https://tenant.auth0.example/"),
        ("AUTHGATE_UPSTREAM_CLIENT_ID", "cid"),
        ("AUTHGATE_UPSTREAM_CLIENT_SECRET", "upstream-s3cret"),
        ("AUTHGATE_ALLOW_ANY_USER", "true"),
    ];

    fn with_upstream(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v = UPSTREAM.to_vec();
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn issuer_is_normalized_once() {
        let s = settings(&with_upstream(&[(
            "AUTHGATE_PUBLIC_URL",
            "https://MCP.Example.com/",
        )]))
        .unwrap();
        assert_eq!(s.issuer, "https://mcp.example.com");
        assert_eq!(s.url("/token"), "https://mcp.example.com/token");
        assert_eq!(s.issuer_path(), "");
        let s = settings(&with_upstream(&[(
            "AUTHGATE_PUBLIC_URL",
            "https://example.com/auth/",
        )]))
        .unwrap();
        assert_eq!(s.issuer, "https://example.com/auth");
        assert_eq!(s.issuer_path(), "/auth");
    }

    #[test]
    fn bad_settings_name_the_variable() {
        for (pairs, var) in [
            (
                vec![("AUTHGATE_PUBLIC_URL", "http://mcp.example.com")],
                "AUTHGATE_PUBLIC_URL",
            ),
            (
                vec![("AUTHGATE_PUBLIC_URL", "not a url")],
                "AUTHGATE_PUBLIC_URL",
            ),
            (
                vec![("AUTHGATE_PUBLIC_URL", "https://x.example/?a=b")],
                "AUTHGATE_PUBLIC_URL",
            ),
            (
                vec![("AUTHGATE_LISTEN", "0.0.0.0:80")],
                "AUTHGATE_PUBLIC_URL",
            ),
            (vec![("AUTHGATE_LISTEN", "localhost")], "AUTHGATE_LISTEN"),
            (
                vec![("AUTHGATE_REGISTER_RATE_LIMIT", "fast")],
                "AUTHGATE_REGISTER_RATE_LIMIT",
            ),
            (
                vec![("AUTHGATE_DCR_IDLE_TTL", "soon")],
                "AUTHGATE_DCR_IDLE_TTL",
            ),
            (
                vec![("AUTHGATE_SCOPES", "mcp offline_access")],
                "AUTHGATE_SCOPES",
            ),
            (
                vec![("AUTHGATE_CIMD_TEST_HOSTS", "claude.ai=10.0.0.1:443")],
                "AUTHGATE_CIMD_TEST_HOSTS",
            ),
            (
                vec![("AUTHGATE_PUBLIC_URL", "https://mcp.example.com")],
                "AUTHGATE_UPSTREAM_ISSUER",
            ),
            (
                vec![("AUTHGATE_UPSTREAM_ISSUER", "http://idp.example.com/")],
                "AUTHGATE_UPSTREAM_ISSUER",
            ),
            (
                vec![("AUTHGATE_UPSTREAM_ISSUER", "https://idp.example.com/")],
                "AUTHGATE_UPSTREAM_CLIENT_ID",
            ),
            (
                with_upstream(&[("AUTHGATE_UPSTREAM_AUTH_METHOD", "private_key_jwt")]),
                "AUTHGATE_UPSTREAM_AUTH_METHOD",
            ),
            (
                with_upstream(&[("AUTHGATE_UPSTREAM_SCOPES", "email")]),
                "AUTHGATE_UPSTREAM_SCOPES",
            ),
            (
                with_upstream(&[(
                    "AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS",
                    "redirect_uri=https://evil",
                )]),
                "AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS",
            ),
            (
                with_upstream(&[("AUTHGATE_ACCESS_TOKEN_TTL", "forever")]),
                "AUTHGATE_ACCESS_TOKEN_TTL",
            ),
            (UPSTREAM[..3].to_vec(), "AUTHGATE_ALLOWED_EMAILS"),
            (
                vec![("AUTHGATE_KEY_ENCRYPTION_KEY", "c2hvcnQ=")],
                "AUTHGATE_KEY_ENCRYPTION_KEY",
            ),
            (
                vec![("AUTHGATE_KEY_PUBLICATION_DELAY", "-5")],
                "AUTHGATE_KEY_PUBLICATION_DELAY",
            ),
        ] {
            let e = settings(&pairs).unwrap_err();
            assert!(e.0.contains(var), "{e} should name {var}");
            assert_eq!(e.0.lines().count(), 1);
        }
    }

    #[test]
    fn key_publication_delay_defaults_to_two_minutes_and_may_be_zero() {
        let delay = |v: Option<&str>| {
            let pairs: Vec<(&str, &str)> = v
                .map(|v| vec![("AUTHGATE_KEY_PUBLICATION_DELAY", v)])
                .unwrap_or_default();
            settings(&pairs).unwrap().key_publication_delay
        };
        assert_eq!(delay(None), 120);
        assert_eq!(delay(Some("0")), 0);
        assert_eq!(delay(Some("5m")), 300);
        assert_eq!(delay(Some("45")), 45);
    }

    #[test]
    fn database_url_is_never_printed() {
        let e = settings(&[("DATABASE_URL", "mysql://u:hunter2@h/db")]).unwrap_err();
        assert!(e.0.contains("DATABASE_URL") && !e.0.contains("hunter2"));
        let s = settings(&with_upstream(&[(
            "DATABASE_URL",
            "postgres://u:hunter2@h/db",
        )]))
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s:?}").contains("upstream-s3cret"));
    }

    #[test]
    fn toml_overlays_environment() {
        let mut raw =
            RawConfig::from_env([("AUTHGATE_LISTEN".to_owned(), "127.0.0.1:1".to_owned())]);
        raw.overlay_toml(
            "listen = \"127.0.0.1:2\"\nallowed_redirects = [\"https://a/*\", \"https://b/*\"]\n",
            "f.toml",
        )
        .unwrap();
        let s = Settings::from_raw(&raw).unwrap();
        assert_eq!(s.listen.port(), 2);
        assert!(s.allowed_redirects.allows("https://b/x"));
        assert!(!s.allowed_redirects.allows("https://c/x"));
        let e = raw.overlay_toml("lisen = 1", "f.toml").unwrap_err();
        assert!(e.0.contains("lisen"));
    }

    #[test]
    fn upstream_settings() {
        let s = settings(&with_upstream(&[
            ("AUTHGATE_PUBLIC_URL", "https://mcp.example.com"),
            (
                "AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS",
                "connection=google-oauth2&audience=https://api.example",
            ),
        ]))
        .unwrap();
        let up = s.upstream.unwrap();
        assert_eq!(up.callback_url, "https://mcp.example.com/oauth/callback");
        assert_eq!(up.scopes, ["openid", "email", "profile"]);
        assert_eq!(
            up.authorize_params[0],
            ("connection".to_owned(), "google-oauth2".to_owned())
        );
        assert!(!up.auth_method_basic);
        let dev = settings(&[]).unwrap();
        assert!(dev.upstream.is_none());
        assert!(
            dev.login_policy.anyone,
            "the development login admits anyone unless a list is set"
        );
        let listed = settings(&[("AUTHGATE_ALLOWED_DOMAINS", "@corp.example")]).unwrap();
        assert!(!listed.login_policy.anyone);
        assert_eq!(listed.login_policy.domains, ["corp.example"]);
    }

    #[test]
    fn resources_from_env_and_file() {
        let s = settings(&[("AUTHGATE_MCP_UPSTREAM", "http://127.0.0.1:9000/mcp")]).unwrap();
        assert_eq!(s.resources.len(), 1);
        assert_eq!(s.resources[0].uri, "http://127.0.0.1:8080/mcp");
        assert_eq!(
            s.resources[0].upstream.as_ref().unwrap().as_str(),
            "http://127.0.0.1:9000/mcp"
        );
        let mut raw = RawConfig::default();
        raw.overlay_toml("[[resource]]\npath = \"/github/mcp\"\nupstream = \"http://127.0.0.1:9001/mcp\"\nscopes = [\"github\"]\n", "f.toml").unwrap();
        let s = Settings::from_raw(&raw).unwrap();
        assert_eq!(s.resources.len(), 2);
        assert_eq!(s.resources[1].uri, "http://127.0.0.1:8080/github/mcp");
        assert_eq!(
            s.scopes.to_string(),
            "github mcp",
            "every resource's scopes are offered"
        );
        for bad in [
            "[[resource]]\nupstream = \"http://x/mcp\"\n",
            "[[resource]]\npath = \"/token\"\n",
            "[[resource]]\npath = \"/mcp\"\n",
            "[[resource]]\npath = \"nopath\"\n",
            "[[resource]]\npath = \"/a\"\nupstream = \"ftp://x\"\n",
            "[[resource]]\npath = \"/a\"\ncolour = \"red\"\n",
        ] {
            let mut raw = RawConfig::default();
            let e = raw
                .overlay_toml(bad, "f.toml")
                .and_then(|()| Settings::from_raw(&raw).map(|_| ()));
            assert!(e.unwrap_err().0.contains("resource"), "{bad}");
        }
        let e = settings(&[("AUTHGATE_ALLOWED_ORIGINS", "localhost:6274")]).unwrap_err();
        assert!(e.0.contains("AUTHGATE_ALLOWED_ORIGINS"));
        let s = settings(&[(
            "AUTHGATE_ALLOWED_ORIGINS",
            "http://localhost:6274, https://app.example.com/",
        )])
        .unwrap();
        assert_eq!(
            s.allowed_origins,
            ["http://localhost:6274", "https://app.example.com"]
        );
    }

    #[test]
    fn rates_and_durations() {
        assert_eq!(
            parse_rate("X", "10/sec").unwrap(),
            RateLimit {
                burst: 10,
                per_seconds: 1
            }
        );
        assert_eq!(parse_duration("X", "15m").unwrap(), 900);
        assert_eq!(parse_duration("X", "3600").unwrap(), 3600);
        assert!(parse_duration("X", "0").is_err());
    }

    #[test]
    fn mcp_session_ttl_defaults_to_a_day_idle() {
        assert_eq!(settings(&[]).unwrap().mcp_session_ttl, 86_400);
        let s = settings(&[("AUTHGATE_MCP_SESSION_TTL", "90")]).unwrap();
        assert_eq!(s.mcp_session_ttl, 90);
        let e = settings(&[("AUTHGATE_MCP_SESSION_TTL", "soon")])
            .err()
            .unwrap();
        assert!(e.0.contains("AUTHGATE_MCP_SESSION_TTL"), "{e}");
    }
}
