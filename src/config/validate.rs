//! From `RawSettings` to `Settings`: one function per concern. The checks run in a fixed order, so
//! of several bad settings the same one is always reported.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;
use url::Url;

use super::load::{RawEnterpriseIssuer, RawResource, RawSettings, RawTool};
use super::values::{duration, parse_bool, parse_rate, size, split_list};
use super::{
    ConfigError, DEFAULT_DATABASE_URL, DEFAULT_LISTEN, RateLimits, ResourceConfig, Settings, err,
};
use super::{EnterpriseIssuer, UpstreamConfig};
use crate::domain::identity::{LoginPolicy, SubjectSpace};
use crate::oauth::oidc;
use crate::oauth::redirect::{RedirectAllowlist, parse_private_scheme};
use crate::oauth::scope::ScopeSet;
use crate::oauth::url_rules::is_loopback_host;
use crate::policy::{ToolPolicy, ToolRule, Unlisted};

pub(super) fn settings(r: &RawSettings) -> Result<Settings, ConfigError> {
    let listen = socket_addr("AUTHGATE_LISTEN", r.listen.get().unwrap_or(DEFAULT_LISTEN))?;
    let (issuer, public_url, dev_mode) = public_url(r, listen)?;
    let database_url = database_url(r)?;
    let scopes = default_scopes(r)?;
    let allowed_redirects = allowed_redirects(r)?;
    let rate_limits = rate_limits(r)?;
    let dcr_idle_ttl = duration("AUTHGATE_DCR_IDLE_TTL", &r.dcr_idle_ttl, "24h")?;
    let cimd_test_hosts = cimd_test_hosts(r)?;
    let upstream = upstream(r, &issuer, is_loopback_host(&public_url))?;
    let login_policy = login_policy(r, upstream.is_some())?;
    let resources = resources(r, &scopes, &issuer)?;
    let (upstream_token_sealer, token_exchange_clients) =
        upstream_tokens(r, &resources, upstream.is_some())?;
    let enterprise_issuers = enterprise_issuers(r, &issuer, &resources, upstream.as_ref())?;
    Ok(Settings {
        upstream_token_sealer,
        token_exchange_clients,
        allowed_origins: allowed_origins(r)?,
        trusted_proxies: trusted_proxies(r)?,
        metrics_listen: metrics_listen(r)?,
        allowed_hosts: allowed_hosts(r)?,
        mcp_max_body: size("AUTHGATE_MCP_MAX_BODY", &r.mcp_max_body, "4MiB")?,
        log_json: log_json(r)?,
        access_token_ttl: duration("AUTHGATE_ACCESS_TOKEN_TTL", &r.access_token_ttl, "1h")?,
        refresh_idle_ttl: duration(
            "AUTHGATE_REFRESH_TOKEN_IDLE_TTL",
            &r.refresh_token_idle_ttl,
            "30d",
        )?,
        refresh_ttl: duration("AUTHGATE_REFRESH_TOKEN_TTL", &r.refresh_token_ttl, "90d")?,
        refresh_grace: duration("AUTHGATE_REFRESH_GRACE", &r.refresh_grace, "30s")?,
        session_ttl: duration("AUTHGATE_SESSION_TTL", &r.session_ttl, "12h")?,
        mcp_upstream_timeout: duration(
            "AUTHGATE_MCP_UPSTREAM_TIMEOUT",
            &r.mcp_upstream_timeout,
            "300s",
        )?,
        mcp_session_ttl: duration("AUTHGATE_MCP_SESSION_TTL", &r.mcp_session_ttl, "24h")?,
        shutdown_timeout: duration("AUTHGATE_SHUTDOWN_TIMEOUT", &r.shutdown_timeout, "30s")?,
        cimd_enabled: parse_bool("AUTHGATE_CIMD", &r.cimd, true)?,
        cimd_fallback: parse_bool("AUTHGATE_CIMD_FALLBACK", &r.cimd_fallback, true)?,
        cors_enabled: parse_bool("AUTHGATE_CORS", &r.cors, true)?,
        request_timeout: duration("AUTHGATE_REQUEST_TIMEOUT", &r.request_timeout, "30s")?,
        key_sealer: key_sealer(r)?,
        key_publication_delay: key_publication_delay(r)?,
        key_poll_interval: std::time::Duration::from_secs(crate::keys::POLL_SECONDS),
        audit_retention: duration("AUTHGATE_AUDIT_RETENTION", &r.audit_retention, "90d")?,
        cimd_test_ca_file: r.cimd_test_ca_file.get().map(PathBuf::from),
        issuer,
        public_url,
        dev_mode,
        listen,
        database_url,
        scopes: offered_scopes(&resources),
        allowed_redirects,
        rate_limits,
        dcr_idle_ttl,
        cimd_test_hosts,
        upstream,
        login_policy,
        resources,
        enterprise_issuers,
    })
}

fn socket_addr(var: &str, raw: &str) -> Result<SocketAddr, ConfigError> {
    raw.parse()
        .map_err(|_| err(var, "must be an address and port such as 127.0.0.1:8080"))
}

/// The issuer, the public URL, and whether this is the development mode (no public URL, serving
/// on loopback).
fn public_url(r: &RawSettings, listen: SocketAddr) -> Result<(String, Url, bool), ConfigError> {
    let (raw, dev_mode) = match r.public_url.get() {
        Some(v) => (v.trim().to_owned(), false),
        None if listen.ip().is_loopback() => (format!("http://{listen}"), true),
        None => {
            return Err(err(
                "AUTHGATE_PUBLIC_URL",
                "is required when AUTHGATE_LISTEN is not a loopback address (for example https://mcp.example.com)",
            ));
        }
    };
    let (issuer, url) = parse_public_url(&raw)?;
    Ok((issuer, url, dev_mode))
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

fn database_url(r: &RawSettings) -> Result<SecretString, ConfigError> {
    let url = r.database_url.get().unwrap_or(DEFAULT_DATABASE_URL);
    if !(url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://"))
    {
        return Err(err(
            "DATABASE_URL",
            "must start with sqlite: or postgres:// (value not shown)",
        ));
    }
    Ok(SecretString::from(url.to_owned()))
}

/// `openid` asks for an ID token; as a resource's scope it would hand one to every client.
const OPENID_IS_NOT_A_RESOURCE_SCOPE: &str =
    "openid is OpenID Connect's scope (offered to every client), not a resource scope";

/// The scopes of the default `/mcp` resource (and of `[[resource]]` tables that list none).
fn default_scopes(r: &RawSettings) -> Result<ScopeSet, ConfigError> {
    let scopes = ScopeSet::parse(&r.scopes.get().unwrap_or("mcp").replace(',', " "));
    if scopes.is_empty() {
        return Err(err("AUTHGATE_SCOPES", "must list at least one scope"));
    }
    if scopes.contains("offline_access") {
        return Err(err(
            "AUTHGATE_SCOPES",
            "must not contain offline_access: refresh tokens are issued without it",
        ));
    }
    if scopes.contains(oidc::OPENID) {
        return Err(err("AUTHGATE_SCOPES", OPENID_IS_NOT_A_RESOURCE_SCOPE));
    }
    Ok(scopes)
}

fn allowed_redirects(r: &RawSettings) -> Result<RedirectAllowlist, ConfigError> {
    let allowed = RedirectAllowlist::new(
        r.allowed_redirects
            .get()
            .map(split_list)
            .unwrap_or_default(),
    );
    let Some(list) = r.allowed_redirect_schemes.get() else {
        return Ok(allowed);
    };
    let schemes = split_list(list)
        .iter()
        .map(|s| parse_private_scheme(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|why| err("AUTHGATE_ALLOWED_REDIRECT_SCHEMES", why))?;
    Ok(allowed.with_schemes(schemes))
}

/// Generous: Claude.ai and ChatGPT reach authgate from a few shared egress addresses, so one
/// address is many users. The limits only hold back floods.
fn rate_limits(r: &RawSettings) -> Result<RateLimits, ConfigError> {
    let rate =
        |var: &str, raw: Option<&str>, default: &str| parse_rate(var, raw.unwrap_or(default));
    Ok(RateLimits {
        register: rate(
            "AUTHGATE_REGISTER_RATE_LIMIT",
            r.register_rate_limit.get(),
            "300/min",
        )?,
        token: rate(
            "AUTHGATE_TOKEN_RATE_LIMIT",
            r.token_rate_limit.get(),
            "1200/min",
        )?,
        authorize: rate(
            "AUTHGATE_AUTHORIZE_RATE_LIMIT",
            r.authorize_rate_limit.get(),
            "600/min",
        )?,
        revoke: rate(
            "AUTHGATE_REVOKE_RATE_LIMIT",
            r.revoke_rate_limit.get(),
            "600/min",
        )?,
        account: rate(
            "AUTHGATE_ACCOUNT_RATE_LIMIT",
            r.account_rate_limit.get(),
            "300/min",
        )?,
        callback: rate(
            "AUTHGATE_CALLBACK_RATE_LIMIT",
            r.callback_rate_limit.get(),
            "600/min",
        )?,
    })
}

fn cimd_test_hosts(r: &RawSettings) -> Result<Vec<(String, SocketAddr)>, ConfigError> {
    const VAR: &str = "AUTHGATE_CIMD_TEST_HOSTS";
    let bad = || err(VAR, "entries must look like host=127.0.0.1:8443");
    let mut hosts = Vec::new();
    for entry in r.cimd_test_hosts.get().map(split_list).unwrap_or_default() {
        let (host, addr) = entry.split_once('=').ok_or_else(bad)?;
        let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
        if !addr.ip().is_loopback() {
            return Err(err(VAR, "may only map a host to a loopback address"));
        }
        hosts.push((host.to_ascii_lowercase(), addr));
    }
    Ok(hosts)
}

/// `None`: the built-in development login, which only a loopback public URL may use.
fn upstream(
    r: &RawSettings,
    issuer: &str,
    public_is_loopback: bool,
) -> Result<Option<UpstreamConfig>, ConfigError> {
    const ISSUER: &str = "AUTHGATE_UPSTREAM_ISSUER";
    let Some(up_issuer) = r.upstream_issuer.get().map(str::trim) else {
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
    let required = |var: &str, value: Option<&str>| {
        value
            .map(str::to_owned)
            .ok_or_else(|| err(var, "is required with AUTHGATE_UPSTREAM_ISSUER"))
    };
    Ok(Some(UpstreamConfig {
        issuer: up_issuer.to_owned(),
        client_id: required("AUTHGATE_UPSTREAM_CLIENT_ID", r.upstream_client_id.get())?,
        client_secret: SecretString::from(required(
            "AUTHGATE_UPSTREAM_CLIENT_SECRET",
            r.upstream_client_secret.get(),
        )?),
        auth_method_basic: upstream_auth_method_basic(r)?,
        scopes: upstream_scopes(r)?,
        authorize_params: upstream_authorize_params(r)?,
        callback_url: format!("{issuer}/oauth/callback"),
    }))
}

fn upstream_auth_method_basic(r: &RawSettings) -> Result<bool, ConfigError> {
    match r.upstream_auth_method.get().unwrap_or("client_secret_post") {
        "client_secret_post" => Ok(false),
        "client_secret_basic" => Ok(true),
        _ => Err(err(
            "AUTHGATE_UPSTREAM_AUTH_METHOD",
            "must be client_secret_post or client_secret_basic",
        )),
    }
}

fn upstream_scopes(r: &RawSettings) -> Result<Vec<String>, ConfigError> {
    let scopes = split_list(r.upstream_scopes.get().unwrap_or("openid email profile"));
    if !scopes.iter().any(|s| s == "openid") {
        return Err(err("AUTHGATE_UPSTREAM_SCOPES", "must include openid"));
    }
    Ok(scopes)
}

/// Extra authorize parameters, never one authgate sets itself.
fn upstream_authorize_params(r: &RawSettings) -> Result<Vec<(String, String)>, ConfigError> {
    const VAR: &str = "AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS";
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
    let Some(raw) = r.upstream_authorize_params.get() else {
        return Ok(Vec::new());
    };
    let mut params = Vec::new();
    for pair in raw
        .split(['&', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            err(
                VAR,
                "must look like connection=google-oauth2&audience=https://api",
            )
        })?;
        if RESERVED.contains(&k.trim()) {
            return Err(err(VAR, format!("may not set {}", k.trim())));
        }
        params.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    Ok(params)
}

/// The development login admits anyone unless a list is set; an upstream needs a list or an
/// explicit `AUTHGATE_ALLOW_ANY_USER`.
fn login_policy(r: &RawSettings, has_upstream: bool) -> Result<LoginPolicy, ConfigError> {
    let emails = r.allowed_emails.get().map(split_list).unwrap_or_default();
    let domains: Vec<String> = r
        .allowed_domains
        .get()
        .map(split_list)
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.trim_start_matches('@').to_owned())
        .collect();
    let listed = !emails.is_empty() || !domains.is_empty();
    let allow_any = r
        .allow_any_user
        .get()
        .is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
    let anyone = allow_any || (!has_upstream && !listed);
    if !anyone && !listed {
        return Err(err(
            "AUTHGATE_ALLOWED_EMAILS",
            "name who may log in (or AUTHGATE_ALLOWED_DOMAINS), or set AUTHGATE_ALLOW_ANY_USER=true to admit everyone the upstream provider authenticates",
        ));
    }
    Ok(LoginPolicy {
        emails,
        domains,
        anyone,
    })
}

/// `/mcp` first (with the top-level `[[tool]]` rules), then the `[[resource]]` tables, which take
/// `default_scopes` when they list none.
fn resources(
    r: &RawSettings,
    default_scopes: &ScopeSet,
    issuer: &str,
) -> Result<Vec<ResourceConfig>, ConfigError> {
    const VAR: &str = "[[resource]]";
    let unlisted = unlisted_tools(r)?;
    let mut resources = vec![resource(
        "AUTHGATE_MCP_UPSTREAM",
        "/mcp",
        r.mcp_upstream.get(),
        default_scopes.clone(),
        issuer,
        tool_policy("tool", &r.tool, unlisted)?,
    )?];
    if let Some(first) = resources.first_mut() {
        first.upstream_token =
            upstream_token_delivery("AUTHGATE_MCP_UPSTREAM_TOKEN", r.mcp_upstream_token.get())?;
    }
    for (
        i,
        RawResource {
            path,
            upstream,
            scopes,
            upstream_token,
            tool,
        },
    ) in r.resource.iter().enumerate()
    {
        let path = path
            .as_deref()
            .ok_or_else(|| err(VAR, "each resource needs a path"))?;
        let own = ScopeSet::from_list(scopes.iter().cloned());
        let own = if own.is_empty() {
            default_scopes.clone()
        } else {
            own
        };
        let tools = tool_policy(&format!("resource[{i}].tool"), tool, unlisted)?;
        let mut parsed = resource(VAR, path, upstream.as_deref(), own, issuer, tools)?;
        parsed.upstream_token = upstream_token_delivery(VAR, upstream_token.as_deref())?;
        if resources.iter().any(|x| x.path == parsed.path) {
            return Err(err(VAR, format!("path {path:?} is listed twice")));
        }
        resources.push(parsed);
    }
    Ok(resources)
}

/// Every resource's scopes are offered, those its tool rules need included.
fn offered_scopes(resources: &[ResourceConfig]) -> ScopeSet {
    resources
        .iter()
        .fold(ScopeSet::default(), |all, res| all.union(&res.offered))
}

fn unlisted_tools(r: &RawSettings) -> Result<Unlisted, ConfigError> {
    match r.unlisted_tools.get().map(str::trim) {
        None | Some("allow") => Ok(Unlisted::Allow),
        Some("deny") => Ok(Unlisted::Deny),
        Some(_) => Err(err("AUTHGATE_UNLISTED_TOOLS", "must be allow or deny")),
    }
}

/// The rules of `[[tool]]` tables (named `tool[0]`, `resource[1].tool[0]`, ... in errors).
fn tool_policy(var: &str, raw: &[RawTool], unlisted: Unlisted) -> Result<ToolPolicy, ConfigError> {
    let rules = raw
        .iter()
        .enumerate()
        .map(|(i, t)| tool_rule(&format!("{var}[{i}]"), t))
        .collect::<Result<_, _>>()?;
    Ok(ToolPolicy { rules, unlisted })
}

fn tool_rule(var: &str, t: &RawTool) -> Result<ToolRule, ConfigError> {
    let name = t.name.as_deref().ok_or_else(|| {
        err(
            &format!("{var}.name"),
            "is required (a tool name; * matches any run of characters)",
        )
    })?;
    if name.is_empty()
        || name.len() > 128
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(err(
            &format!("{var}.name"),
            "must be a tool name or a pattern such as delete_* (no spaces, at most 128 characters)",
        ));
    }
    // RFC 6749 scope-token characters.
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
    };
    if !t.scopes.iter().all(|s| token(s)) {
        return Err(err(
            &format!("{var}.scopes"),
            "must be scope names without spaces",
        ));
    }
    if t.scopes.iter().any(|s| s == "offline_access") {
        return Err(err(
            &format!("{var}.scopes"),
            "offline_access is not a tool scope",
        ));
    }
    let user = |u: &str| {
        u.starts_with("ag_") && u.len() > 3
            || u.split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
    };
    if !t
        .allow_users
        .iter()
        .all(|u| user(u.trim()) && !u.trim().contains(char::is_whitespace))
    {
        return Err(err(
            &format!("{var}.allow_users"),
            "must be email addresses or subjects (ag_...)",
        ));
    }
    let domains: Vec<String> = t
        .allow_domains
        .iter()
        .map(|d| d.trim().trim_start_matches('@').to_owned())
        .collect();
    if domains
        .iter()
        .any(|d| d.is_empty() || d.contains(['@', '/', ' ', '*']))
    {
        return Err(err(
            &format!("{var}.allow_domains"),
            "must be email domains such as corp.example",
        ));
    }
    Ok(ToolRule {
        name: name.to_owned(),
        scopes: ScopeSet::from_list(t.scopes.iter().cloned()),
        allow_users: t.allow_users.iter().map(|u| u.trim().to_owned()).collect(),
        allow_domains: domains,
    })
}

/// Paths authgate itself serves, which a resource may not take.
const RESERVED_PATHS: &[&str] = &[
    "/authorize",
    "/token",
    "/register",
    "/revoke",
    "/jwks.json",
    "/userinfo",
    "/oauth",
    "/dev",
    "/.well-known",
    "/healthz",
    "/readyz",
    "/account",
];

fn resource(
    var: &str,
    path: &str,
    upstream: Option<&str>,
    scopes: ScopeSet,
    issuer: &str,
    tools: ToolPolicy,
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
    let upstream = upstream.map(|u| upstream_url(var, u)).transpose()?;
    if scopes.is_empty() {
        return Err(err(var, "a resource needs at least one scope"));
    }
    if scopes.contains("offline_access") {
        return Err(err(var, "offline_access is not a resource scope"));
    }
    if scopes.contains(oidc::OPENID) {
        return Err(err(var, OPENID_IS_NOT_A_RESOURCE_SCOPE));
    }
    Ok(ResourceConfig {
        path: path.to_owned(),
        uri: format!("{issuer}{path}"),
        upstream,
        offered: scopes.union(&tools.scopes()),
        scopes,
        tools,
        upstream_token: false,
    })
}

fn upstream_url(var: &str, raw: &str) -> Result<Url, ConfigError> {
    let bad = || err(var, "upstream must be an absolute http(s) URL");
    let url = Url::parse(raw.trim()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(bad());
    }
    Ok(url)
}

fn allowed_origins(r: &RawSettings) -> Result<Vec<String>, ConfigError> {
    const VAR: &str = "AUTHGATE_ALLOWED_ORIGINS";
    let mut origins = Vec::new();
    for o in r.allowed_origins.get().map(split_list).unwrap_or_default() {
        let url = Url::parse(&o)
            .map_err(|_| err(VAR, "entries must be origins such as http://localhost:6274"))?;
        if url.host().is_none() || url.path() != "/" || url.query().is_some() {
            return Err(err(
                VAR,
                "entries must be origins such as http://localhost:6274 (no path)",
            ));
        }
        origins.push(url.origin().ascii_serialization());
    }
    Ok(origins)
}

fn trusted_proxies(r: &RawSettings) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    r.trusted_proxies
        .get()
        .map(split_list)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    err(
                        "AUTHGATE_TRUSTED_PROXIES",
                        "entries must be addresses or CIDR ranges such as 10.0.0.0/8",
                    )
                })
        })
        .collect()
}

fn metrics_listen(r: &RawSettings) -> Result<Option<SocketAddr>, ConfigError> {
    r.metrics_listen
        .get()
        .map(|v| {
            v.parse().map_err(|_| {
                err(
                    "AUTHGATE_METRICS_LISTEN",
                    "must be an address and port such as 127.0.0.1:9090",
                )
            })
        })
        .transpose()
}

/// `Host` values a reverse proxy may pass through: `name` or `name:port`, nothing else.
fn allowed_hosts(r: &RawSettings) -> Result<Vec<String>, ConfigError> {
    let mut hosts = Vec::new();
    for raw in r.allowed_hosts.get().map(split_list).unwrap_or_default() {
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
        hosts.push(lower);
    }
    Ok(hosts)
}

fn log_json(r: &RawSettings) -> Result<bool, ConfigError> {
    match r.log_format.get().unwrap_or("pretty") {
        "json" => Ok(true),
        "pretty" => Ok(false),
        _ => Err(err("AUTHGATE_LOG_FORMAT", "must be json or pretty")),
    }
}

fn key_sealer(r: &RawSettings) -> Result<Option<crate::keys::KeySealer>, ConfigError> {
    r.key_encryption_key
        .get()
        .map(crate::keys::KeySealer::from_setting)
        .transpose()
        .map_err(|_| {
            err(
                "AUTHGATE_KEY_ENCRYPTION_KEY",
                "must be 32 random bytes in base64 (openssl rand -base64 32); value not shown",
            )
        })
}

/// Zero is allowed (a single instance needs no publication ahead of use).
fn key_publication_delay(r: &RawSettings) -> Result<i64, ConfigError> {
    const VAR: &str = "AUTHGATE_KEY_PUBLICATION_DELAY";
    match r.key_publication_delay.get().map(str::trim) {
        Some("0") => Ok(0),
        _ => duration(VAR, &r.key_publication_delay, "120"),
    }
}

/// `header`: the MCP server receives the user's upstream access token; `none` (the default):
/// it does not.
fn upstream_token_delivery(var: &str, raw: Option<&str>) -> Result<bool, ConfigError> {
    match raw.map(str::trim) {
        None | Some("none") => Ok(false),
        Some("header") => Ok(true),
        Some(_) => Err(err(var, "upstream_token must be header or none")),
    }
}

/// What keeping the users' upstream tokens needs: an MCP server to give them to, an upstream
/// provider to get them from (the development login has none) and the key that seals them.
/// Returns the sealer and the clients allowed to exchange tokens for them.
fn upstream_tokens(
    r: &RawSettings,
    resources: &[ResourceConfig],
    has_upstream: bool,
) -> Result<(Option<crate::sealing::TokenSealer>, Vec<String>), ConfigError> {
    const CLIENTS: &str = "AUTHGATE_TOKEN_EXCHANGE_CLIENTS";
    let clients = r
        .token_exchange_clients
        .get()
        .map(split_list)
        .unwrap_or_default();
    let keeping: Vec<&ResourceConfig> = resources.iter().filter(|res| res.upstream_token).collect();
    if keeping.is_empty() {
        if !clients.is_empty() {
            return Err(err(
                CLIENTS,
                "needs a resource that keeps upstream tokens (upstream_token = \"header\", or AUTHGATE_MCP_UPSTREAM_TOKEN=header)",
            ));
        }
        return Ok((None, clients));
    }
    if let Some(res) = keeping.iter().find(|res| res.upstream.is_none()) {
        let var = if res.path == "/mcp" {
            "AUTHGATE_MCP_UPSTREAM_TOKEN"
        } else {
            "[[resource]]"
        };
        return Err(err(
            var,
            format!(
                "{} has no upstream MCP server to receive the user's upstream token",
                res.path
            ),
        ));
    }
    if !has_upstream {
        return Err(err(
            "AUTHGATE_UPSTREAM_ISSUER",
            "is required when a resource keeps upstream tokens: the development login has none",
        ));
    }
    let Some(kek) = r.key_encryption_key.get() else {
        return Err(err(
            "AUTHGATE_KEY_ENCRYPTION_KEY",
            "is required when a resource keeps upstream tokens: they are stored encrypted with it",
        ));
    };
    let bad_key = || {
        err(
            "AUTHGATE_KEY_ENCRYPTION_KEY",
            "must be 32 random bytes in base64 (openssl rand -base64 32); value not shown",
        )
    };
    let bytes = crate::keys::decode_encryption_key(kek).map_err(|_| bad_key())?;
    let sealer = crate::sealing::TokenSealer::derive(&bytes).map_err(|_| bad_key())?;
    Ok((Some(sealer), clients))
}

/// The `[[enterprise_issuer]]` tables, each error naming the table's index and field.
fn enterprise_issuers(
    r: &RawSettings,
    own_issuer: &str,
    resources: &[ResourceConfig],
    upstream: Option<&UpstreamConfig>,
) -> Result<Vec<EnterpriseIssuer>, ConfigError> {
    let mut issuers: Vec<EnterpriseIssuer> = Vec::new();
    for (i, raw) in r.enterprise_issuer.iter().enumerate() {
        let parsed = enterprise_issuer(
            raw,
            &|field| format!("enterprise_issuer[{i}].{field}"),
            own_issuer,
            resources,
            upstream,
        )?;
        if issuers.iter().any(|e| e.issuer == parsed.issuer) {
            return Err(err(
                &format!("enterprise_issuer[{i}].issuer"),
                "is listed twice",
            ));
        }
        issuers.push(parsed);
    }
    Ok(issuers)
}

fn enterprise_issuer(
    raw: &RawEnterpriseIssuer,
    key: &dyn Fn(&str) -> String,
    own_issuer: &str,
    resources: &[ResourceConfig],
    upstream: Option<&UpstreamConfig>,
) -> Result<EnterpriseIssuer, ConfigError> {
    let issuer = raw
        .issuer
        .as_deref()
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| {
            err(
                &key("issuer"),
                "is required: the identity provider's issuer, exactly as in its assertions' iss",
            )
        })?;
    let https = |raw: &str| {
        Url::parse(raw).ok().filter(|u| {
            u.scheme() == "https"
                && u.host().is_some()
                && u.username().is_empty()
                && u.password().is_none()
                && u.query().is_none()
                && !raw.contains('#')
        })
    };
    if https(issuer).is_none() {
        return Err(err(
            &key("issuer"),
            "must be an https URL without query or fragment (copy it from the provider's discovery document)",
        ));
    }
    if issuer == own_issuer {
        return Err(err(&key("issuer"), "must not be authgate's own issuer"));
    }
    let jwks_uri = match raw.jwks_uri.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(uri) if https(uri).is_some() => Some(uri.to_owned()),
        Some(_) => {
            return Err(err(
                &key("jwks_uri"),
                "must be an https URL (or leave it out to use the issuer's discovery document)",
            ));
        }
    };
    let client_ids: Vec<String> = raw
        .client_ids
        .iter()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    if client_ids.is_empty() {
        return Err(err(
            &key("client_ids"),
            "must list the client_ids that may present this issuer's assertions",
        ));
    }
    let allowed = if raw.resources.is_empty() {
        resources.iter().map(|res| res.uri.clone()).collect()
    } else {
        let mut allowed = Vec::new();
        for entry in &raw.resources {
            let entry = entry.trim();
            let Some(res) = resources
                .iter()
                .find(|res| res.path == entry || res.uri == entry)
            else {
                return Err(err(
                    &key("resources"),
                    format!(
                        "{entry:?} is not a protected resource: use /mcp or a [[resource]] path"
                    ),
                ));
            };
            allowed.push(res.uri.clone());
        }
        allowed
    };
    let subjects = match (raw.same_users_as_upstream, upstream) {
        (false, _) => SubjectSpace::Issuer,
        (true, Some(up)) => SubjectSpace::Upstream {
            upstream_issuer: up.issuer.clone(),
        },
        (true, None) => {
            return Err(err(
                &key("same_users_as_upstream"),
                "needs an upstream provider (AUTHGATE_UPSTREAM_ISSUER) whose users these are",
            ));
        }
    };
    Ok(EnterpriseIssuer {
        issuer: issuer.to_owned(),
        jwks_uri,
        client_ids,
        resources: allowed,
        subjects,
        allow_public_clients: raw.allow_public_clients,
    })
}
