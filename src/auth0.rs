//! `authgate auth0 setup`: prepares an Auth0 tenant for authgate through the Auth0 Management API
//! v2, then prints the `AUTHGATE_UPSTREAM_*` settings to use.
//!
//! From a machine-to-machine application's credentials it obtains a Management API token (client
//! credentials), checks the token's scopes, creates or corrects authgate's own regular web
//! application, enables the chosen connection for it and promotes that connection to domain
//! level. Every read happens before the first write, so a missing connection or a refused read
//! changes nothing; a second run finds nothing to do and says so. With `--dry-run` the writes are
//! printed instead of sent.
//!
//! Secrets: the management secret and the tokens never reach the output or an error (whatever
//! Auth0 echoes back is scrubbed of them); the new application's secret is printed once, only by
//! the run that created it, and an existing application's secret is never even requested.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use url::Url;

use crate::oauth::url_rules::is_loopback_host;

/// What the setup needs of the Management API, in the order a missing one is reported.
pub const REQUIRED_SCOPES: [&str; 5] = [
    "read:connections",
    "update:connections",
    "read:clients",
    "create:clients",
    "update:clients",
];

/// How authgate authenticates to Auth0's token endpoint (`AUTHGATE_UPSTREAM_AUTH_METHOD`).
pub const AUTH_METHOD: &str = "client_secret_post";

/// authgate only redeems authorization codes upstream; nothing else is granted to its application.
const GRANT_TYPES: [&str; 1] = ["authorization_code"];

/// A 429 is retried at most this many times per request...
const MAX_RETRIES: u32 = 3;
/// ...and never after more than this much waiting for that request.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// The largest `per_page` Auth0 accepts for `GET /api/v2/clients`.
const CLIENTS_PER_PAGE: usize = 100;
const CONNECTION_CLIENTS_PER_PAGE: usize = 100;
/// A server that never stops paginating must not keep the command running forever.
const MAX_PAGES: usize = 100;

/// The client fields compared with what authgate needs; asking only for these also keeps an
/// existing application's secret out of the responses.
const CLIENT_FIELDS: &str = "client_id,name,app_type,callbacks,allowed_logout_urls,web_origins,token_endpoint_auth_method,grant_types";
const CONNECTION_FIELDS: &str = "id,name,is_domain_connection";

#[derive(Debug, thiserror::Error)]
pub enum Auth0Error {
    #[error("auth0 setup: {0}")]
    Options(String),
    #[error(
        "auth0 setup: cannot reach {url} ({reason}); check --domain (AUTH0_DOMAIN) and the network"
    )]
    Unreachable { url: String, reason: String },
    #[error(
        "auth0 setup: Auth0 rejected the management credentials ({status} {message}); check --client-id and --client-secret (AUTH0_CLIENT_ID, AUTH0_CLIENT_SECRET): they must be those of a machine-to-machine application of this tenant"
    )]
    BadCredentials { status: u16, message: String },
    #[error(
        "auth0 setup: the machine-to-machine application may not call the Management API (403 {message}); authorize it in the Auth0 Dashboard under Applications > APIs > Auth0 Management API > Machine To Machine Applications, with the scopes {}",
        REQUIRED_SCOPES.join(" ")
    )]
    NotAuthorized { message: String },
    #[error(
        "auth0 setup: the management token lacks the scopes {}; grant them to the machine-to-machine application in the Auth0 Dashboard (Applications > APIs > Auth0 Management API > Machine To Machine Applications) and run again",
        .missing.join(" ")
    )]
    MissingScopes { missing: Vec<String> },
    #[error(
        "auth0 setup: {request} was refused (401 {message}); give --domain as the tenant's canonical domain (TENANT.REGION.auth0.com, not a custom domain) and run again"
    )]
    Unauthorized { request: String, message: String },
    #[error(
        "auth0 setup: {request} was refused (403 {message}); grant the missing scope to the machine-to-machine application (Applications > APIs > Auth0 Management API > Machine To Machine Applications) and run again"
    )]
    Forbidden { request: String, message: String },
    #[error(
        "auth0 setup: connection {name} not found in tenant {domain} ({detail}); create it in the Auth0 Dashboard (Authentication) or name another with --connection"
    )]
    ConnectionNotFound {
        name: String,
        domain: String,
        detail: String,
    },
    #[error("auth0 setup: {request}: not found (404 {message}); check --domain and run again")]
    NotFound { request: String, message: String },
    #[error("auth0 setup: {request}: Auth0 is rate limiting (429): {detail}; run again later")]
    RateLimited { request: String, detail: String },
    #[error("auth0 setup: {request} failed ({status} {message}); {fix}")]
    Api {
        request: String,
        status: u16,
        message: String,
        fix: &'static str,
    },
    #[error(
        "auth0 setup: several regular web applications are named {name:?} ({ids}); rename all but one in the Auth0 Dashboard or choose another name with --app-name"
    )]
    Ambiguous { name: String, ids: String },
    #[error("auth0 setup: unexpected answer to {request}: {reason}")]
    Unexpected { request: String, reason: String },
    #[error("auth0 setup: cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// What to set up. Build it with [`SetupArgs::options`], or directly in tests.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    /// The tenant's canonical domain, e.g. `example.eu.auth0.com`.
    pub domain: String,
    /// A machine-to-machine application authorized for the Management API.
    pub mgmt_client_id: String,
    pub mgmt_client_secret: SecretString,
    /// authgate's public URL (`AUTHGATE_PUBLIC_URL`).
    pub public_url: String,
    /// The name of authgate's application in Auth0.
    pub app_name: String,
    /// The connection people log in with.
    pub connection: String,
    /// Perform the token request and the reads, print the writes instead of sending them.
    pub dry_run: bool,
    /// FOR TESTS ONLY: send every request to this `http://127.0.0.1:PORT` stand-in instead of
    /// `https://{domain}`. Anything but a loopback http origin is refused.
    pub api_base: Option<String>,
}

impl SetupOptions {
    /// The defaults of `--app-name`, `--connection` and `--dry-run`.
    pub fn new(
        domain: impl Into<String>,
        mgmt_client_id: impl Into<String>,
        mgmt_client_secret: SecretString,
        public_url: impl Into<String>,
    ) -> Self {
        Self {
            domain: domain.into(),
            mgmt_client_id: mgmt_client_id.into(),
            mgmt_client_secret,
            public_url: public_url.into(),
            app_name: "authgate".to_owned(),
            connection: "google-oauth2".to_owned(),
            dry_run: false,
            api_base: None,
        }
    }
}

fn parse_secret(raw: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(raw))
}

/// `authgate auth0 setup` flags. Each credential can come from the environment, which keeps the
/// secret out of the process list and the shell history.
#[derive(Debug, Clone, clap::Args)]
pub struct SetupArgs {
    /// The Auth0 tenant's canonical domain, e.g. example.eu.auth0.com (not a custom domain).
    #[arg(long, env = "AUTH0_DOMAIN", value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Client ID of a machine-to-machine application authorized for the Auth0 Management API
    /// with the scopes read:connections update:connections read:clients create:clients
    /// update:clients.
    #[arg(long = "client-id", env = "AUTH0_CLIENT_ID", value_name = "ID")]
    pub client_id: Option<String>,
    /// Its client secret (prefer the environment variable).
    #[arg(
        long = "client-secret",
        env = "AUTH0_CLIENT_SECRET",
        hide_env_values = true,
        value_name = "SECRET",
        value_parser = parse_secret
    )]
    pub client_secret: Option<SecretString>,
    /// authgate's public URL: the application's callback is <URL>/oauth/callback.
    #[arg(long = "public-url", env = "AUTHGATE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// The name of authgate's application in Auth0 (created when missing).
    #[arg(long = "app-name", value_name = "NAME", default_value = "authgate")]
    pub app_name: String,
    /// The connection people log in with: enabled for the application and promoted to domain
    /// level.
    #[arg(long, value_name = "NAME", default_value = "google-oauth2")]
    pub connection: String,
    /// Only read: print the requests that would change the tenant instead of sending them.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// For tests only: a loopback http stand-in of the Auth0 APIs.
    #[arg(long = "api-base", env = "AUTHGATE_AUTH0_API_BASE", hide = true)]
    pub api_base: Option<String>,
}

impl SetupArgs {
    pub fn options(&self) -> Result<SetupOptions, Auth0Error> {
        let missing =
            |flag: &str, env: &str| Auth0Error::Options(format!("{flag} (or {env}) is required"));
        let non_empty = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let domain = non_empty(&self.domain).ok_or_else(|| missing("--domain", "AUTH0_DOMAIN"))?;
        let client_id =
            non_empty(&self.client_id).ok_or_else(|| missing("--client-id", "AUTH0_CLIENT_ID"))?;
        let secret = self
            .client_secret
            .clone()
            .filter(|s| !s.expose_secret().trim().is_empty())
            .ok_or_else(|| missing("--client-secret", "AUTH0_CLIENT_SECRET"))?;
        let public_url = non_empty(&self.public_url)
            .ok_or_else(|| missing("--public-url", "AUTHGATE_PUBLIC_URL"))?;
        let opts = SetupOptions {
            domain,
            mgmt_client_id: client_id,
            mgmt_client_secret: secret,
            public_url,
            app_name: self.app_name.trim().to_owned(),
            connection: self.connection.trim().to_owned(),
            dry_run: self.dry_run,
            api_base: non_empty(&self.api_base),
        };
        Plan::new(&opts)?;
        Ok(opts)
    }
}

/// `authgate auth0 setup` as the command line runs it: the options, then the setup, to stdout.
pub async fn run(args: &SetupArgs) -> Result<SetupReport, Auth0Error> {
    let opts = args.options()?;
    setup(&opts, &mut std::io::stdout()).await
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Already as needed: nothing sent.
    Unchanged,
    /// Changed in the tenant.
    Changed,
    /// A dry run printed the request instead of sending it.
    WouldChange,
}

/// What a setup run did. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupReport {
    /// authgate's application; `None` only when a dry run found none to update.
    pub client_id: Option<String>,
    /// The application was created by this run (or would be, in a dry run).
    pub app_created: bool,
    pub app: Step,
    /// The application fields that differed (all of them for a creation).
    pub app_fields: Vec<String>,
    pub connection_enabled: Step,
    pub domain_connection: Step,
}

impl SetupReport {
    /// Whether this run changed the tenant.
    pub fn changed(&self) -> bool {
        [self.app, self.connection_enabled, self.domain_connection].contains(&Step::Changed)
    }
}

/// Everything derived from the options before any request.
struct Plan {
    domain: String,
    /// `https://{domain}`, or the test stand-in.
    base: String,
    app_name: String,
    connection: String,
    callback: String,
    logout_url: String,
    web_origin: String,
}

impl Plan {
    fn new(opts: &SetupOptions) -> Result<Self, Auth0Error> {
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
        let (issuer, web_origin) = parse_public_url(&opts.public_url)?;
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

    fn audience(&self) -> String {
        format!("https://{}/api/v2/", self.domain)
    }

    fn create_body(&self) -> Value {
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
    fn patch_body(&self, app: &Client) -> Map<String, Value> {
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

/// authgate's issuer (the public URL without its trailing slash) and its origin; the same rules
/// as `AUTHGATE_PUBLIC_URL`.
fn parse_public_url(raw: &str) -> Result<(String, String), Auth0Error> {
    let bad = |why: &str| Auth0Error::Options(format!("--public-url (AUTHGATE_PUBLIC_URL) {why}"));
    let url = Url::parse(raw.trim())
        .map_err(|_| bad("must be an absolute URL such as https://mcp.example.com"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.host().is_none() {
        return Err(bad("must have a host and no user information"));
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&url) => {}
        _ => return Err(bad("must use https (http only on a loopback host)")),
    }
    Ok((
        url.as_str().trim_end_matches('/').to_owned(),
        url.origin().ascii_serialization(),
    ))
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

// ---- Management API shapes (only the fields used) ----

#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: SecretString,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Client {
    client_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    app_type: Option<String>,
    #[serde(default)]
    callbacks: Option<Vec<String>>,
    #[serde(default)]
    allowed_logout_urls: Option<Vec<String>>,
    #[serde(default)]
    web_origins: Option<Vec<String>>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct CreatedClient {
    client_id: String,
    #[serde(default)]
    client_secret: Option<SecretString>,
}

#[derive(Debug, Deserialize)]
struct Connection {
    id: String,
    name: String,
    #[serde(default)]
    is_domain_connection: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct ConnectionClients {
    #[serde(default)]
    clients: Vec<ConnectionClient>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ConnectionClient {
    client_id: String,
}

/// Auth0's error bodies: the Management API's `{statusCode, error, message, errorCode}` and the
/// token endpoint's `{error, error_description}`.
#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "errorCode")]
    error_code: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

/// A one-line description of an error response, e.g. `Forbidden: Insufficient scope, expected
/// any of: create:clients (insufficient_scope)`.
fn describe_error(status: StatusCode, body: &str) -> String {
    let parsed: ErrorBody = serde_json::from_str(body).unwrap_or_default();
    let mut text = match (&parsed.error, &parsed.message, &parsed.error_description) {
        (Some(e), Some(m), _) => format!("{e}: {m}"),
        (Some(e), None, Some(d)) => format!("{e}: {d}"),
        (Some(e), None, None) => e.clone(),
        (None, Some(m), _) => m.clone(),
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    if let Some(code) = &parsed.error_code {
        text.push_str(&format!(" ({code})"));
    }
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    one_line
}

/// The Management API over HTTP, with the token and the 429 handling.
struct Api {
    http: reqwest::Client,
    base: String,
    domain: String,
    client_id: String,
    secret: SecretString,
    token: Option<SecretString>,
}

struct Reply {
    status: StatusCode,
    body: String,
}

impl Api {
    fn new(opts: &SetupOptions, plan: &Plan) -> Result<Self, Auth0Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("authgate/", env!("CARGO_PKG_VERSION")));
        if opts.api_base.is_some() {
            // A proxy from the environment must not intercept the loopback stand-in.
            builder = builder.no_proxy();
        }
        let http = builder.build().map_err(|e| Auth0Error::Unreachable {
            url: plan.base.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            http,
            base: plan.base.clone(),
            domain: plan.domain.clone(),
            client_id: opts.mgmt_client_id.clone(),
            secret: opts.mgmt_client_secret.clone(),
            token: None,
        })
    }

    /// Removes the management secret and the token from text that came back from Auth0.
    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        let secrets = [Some(&self.secret), self.token.as_ref()];
        for s in secrets.into_iter().flatten() {
            let s = s.expose_secret();
            if !s.is_empty() {
                out = out.replace(s, "[redacted]");
            }
        }
        out
    }

    /// Sends a request, waiting and retrying on 429 within the bounds above.
    async fn send(
        &self,
        label: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<Reply, Auth0Error> {
        let mut retries = 0;
        let mut waited = Duration::ZERO;
        loop {
            let resp = build().send().await.map_err(|e| Auth0Error::Unreachable {
                url: self.base.clone(),
                reason: self.scrub(&error_chain(&e)),
            })?;
            let status = resp.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_wait(resp.headers(), retries);
                if retries >= MAX_RETRIES {
                    return Err(Auth0Error::RateLimited {
                        request: label.to_owned(),
                        detail: format!("still refused after {MAX_RETRIES} retries"),
                    });
                }
                if waited + wait > MAX_RETRY_WAIT {
                    return Err(Auth0Error::RateLimited {
                        request: label.to_owned(),
                        detail: format!(
                            "asked to wait {} s, longer than the {} s authgate waits",
                            wait.as_secs(),
                            MAX_RETRY_WAIT.as_secs()
                        ),
                    });
                }
                tokio::time::sleep(wait).await;
                waited += wait;
                retries += 1;
                continue;
            }
            let body = resp.text().await.map_err(|e| Auth0Error::Unreachable {
                url: self.base.clone(),
                reason: self.scrub(&error_chain(&e)),
            })?;
            return Ok(Reply { status, body });
        }
    }

    /// Client credentials at `/oauth/token` for the Management API audience, then the scope
    /// check.
    async fn authenticate(&mut self, audience: &str) -> Result<(), Auth0Error> {
        let label = "POST /oauth/token";
        let url = format!("{}/oauth/token", self.base);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.secret.expose_secret()),
            ("audience", audience),
        ];
        let reply = self
            .send(label, || self.http.post(&url).form(&form))
            .await?;
        if !reply.status.is_success() {
            let message = self.scrub(&describe_error(reply.status, &reply.body));
            return Err(match reply.status.as_u16() {
                400 | 401 => Auth0Error::BadCredentials {
                    status: reply.status.as_u16(),
                    message,
                },
                403 => Auth0Error::NotAuthorized { message },
                404 => Auth0Error::NotFound {
                    request: label.into(),
                    message,
                },
                _ => self.other_error(label, reply.status, message),
            });
        }
        let token: TokenResponse =
            serde_json::from_str(&reply.body).map_err(|_| Auth0Error::Unexpected {
                request: label.into(),
                reason: "the token response is not the documented JSON".into(),
            })?;
        let granted = match &token.scope {
            Some(scope) => scope.split_whitespace().map(str::to_owned).collect(),
            None => jwt_scopes(token.access_token.expose_secret()),
        };
        self.token = Some(token.access_token);
        let missing: Vec<String> = REQUIRED_SCOPES
            .iter()
            .filter(|s| !granted.iter().any(|g| g == *s))
            .map(|s| (*s).to_owned())
            .collect();
        if !missing.is_empty() {
            return Err(Auth0Error::MissingScopes { missing });
        }
        Ok(())
    }

    fn other_error(&self, label: &str, status: StatusCode, message: String) -> Auth0Error {
        Auth0Error::Api {
            request: label.to_owned(),
            status: status.as_u16(),
            message,
            fix: if status.is_server_error() {
                "Auth0 had a problem: run again later"
            } else {
                "see Auth0's message; nothing after this request was changed"
            },
        }
    }

    /// One Management API call; a 2xx answer's body, or the error it maps to.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<String, Auth0Error> {
        let label = format!("{method} {path}");
        let url = format!("{}{path}", self.base);
        let token = self.token.as_ref().map(|t| t.expose_secret()).unwrap_or("");
        let reply = self
            .send(&label, || {
                let mut req = self
                    .http
                    .request(method.clone(), &url)
                    .bearer_auth(token)
                    .query(query);
                if let Some(b) = body {
                    req = req.json(b);
                }
                req
            })
            .await?;
        if reply.status.is_success() {
            return Ok(reply.body);
        }
        let message = self.scrub(&describe_error(reply.status, &reply.body));
        Err(match reply.status.as_u16() {
            401 => Auth0Error::Unauthorized {
                request: label,
                message,
            },
            403 => Auth0Error::Forbidden {
                request: label,
                message,
            },
            404 => Auth0Error::NotFound {
                request: label,
                message,
            },
            _ => self.other_error(&label, reply.status, message),
        })
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, Auth0Error> {
        let body = self.call(Method::GET, path, query, None).await?;
        serde_json::from_str(&body).map_err(|e| Auth0Error::Unexpected {
            request: format!("GET {path}"),
            reason: format!("not the documented JSON ({e})"),
        })
    }

    /// The regular web applications named `name` (paginated: an application may sit on any
    /// page).
    async fn find_applications(&self, name: &str) -> Result<Vec<Client>, Auth0Error> {
        let mut found = Vec::new();
        for page in 0..MAX_PAGES {
            let batch: Vec<Client> = self
                .get(
                    "/api/v2/clients",
                    &[
                        ("app_type", "regular_web".into()),
                        ("fields", CLIENT_FIELDS.into()),
                        ("include_fields", "true".into()),
                        ("page", page.to_string()),
                        ("per_page", CLIENTS_PER_PAGE.to_string()),
                    ],
                )
                .await?;
            let last = batch.len() < CLIENTS_PER_PAGE;
            found.extend(
                batch
                    .into_iter()
                    .filter(|c| c.name.as_deref() == Some(name)),
            );
            if last {
                return Ok(found);
            }
        }
        Err(Auth0Error::Unexpected {
            request: "GET /api/v2/clients".into(),
            reason: format!("more than {} pages of applications", MAX_PAGES),
        })
    }

    async fn find_connection(&self, name: &str) -> Result<Connection, Auth0Error> {
        // Connection names are unique in a tenant, so the name alone finds it, whatever its
        // strategy (a custom social connection need not be called after its strategy).
        let list: Vec<Connection> = self
            .get(
                "/api/v2/connections",
                &[
                    ("name", name.to_owned()),
                    ("fields", CONNECTION_FIELDS.into()),
                    ("include_fields", "true".into()),
                ],
            )
            .await?;
        list.into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Auth0Error::ConnectionNotFound {
                name: name.to_owned(),
                domain: self.domain.clone(),
                detail: "GET /api/v2/connections lists no connection of that name".into(),
            })
    }

    /// Whether `client_id` is among the connection's enabled clients. Read with
    /// `GET /api/v2/connections/{id}/clients` (checkpoint pagination with `take`/`from`/`next`):
    /// Auth0 deprecated the connection's `enabled_clients` property for these endpoints.
    async fn connection_enables(
        &self,
        conn: &Connection,
        client_id: &str,
    ) -> Result<bool, Auth0Error> {
        let path = format!("/api/v2/connections/{}/clients", path_id(&conn.id)?);
        let mut from: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("take", CONNECTION_CLIENTS_PER_PAGE.to_string())];
            if let Some(f) = &from {
                query.push(("from", f.clone()));
            }
            let page: ConnectionClients = self
                .get(&path, &query)
                .await
                .map_err(|e| self.connection_gone(conn, e))?;
            if page.clients.iter().any(|c| c.client_id == client_id) {
                return Ok(true);
            }
            match page.next.filter(|n| !n.is_empty()) {
                Some(n) if !page.clients.is_empty() => from = Some(n),
                _ => return Ok(false),
            }
        }
        Err(Auth0Error::Unexpected {
            request: format!("GET {path}"),
            reason: format!("more than {} pages of enabled clients", MAX_PAGES),
        })
    }

    /// A 404 on a connection found a moment ago: it was deleted meanwhile.
    fn connection_gone(&self, conn: &Connection, e: Auth0Error) -> Auth0Error {
        match e {
            Auth0Error::NotFound { message, .. } => Auth0Error::ConnectionNotFound {
                name: conn.name.clone(),
                domain: self.domain.clone(),
                detail: message,
            },
            other => other,
        }
    }
}

/// Auth0's identifiers are alphanumeric (with `_` or `-`); anything else is refused rather than
/// spliced into a path.
fn path_id(id: &str) -> Result<&str, Auth0Error> {
    if !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(id)
    } else {
        Err(Auth0Error::Unexpected {
            request: "the Management API".into(),
            reason: format!("an identifier with unexpected characters: {id:?}"),
        })
    }
}

/// The `scope` claim of a JWT access token, for a token response without a `scope` member.
fn jwt_scopes(token: &str) -> Vec<String> {
    token
        .split('.')
        .nth(1)
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|claims| {
            claims
                .get("scope")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// How long to wait after a 429: `Retry-After` (seconds), else until `x-ratelimit-reset` (a UNIX
/// time in seconds), else a doubling pause.
fn retry_wait(headers: &reqwest::header::HeaderMap, retries: u32) -> Duration {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(secs) = number("retry-after") {
        return Duration::from_secs(secs);
    }
    if let Some(reset) = number("x-ratelimit-reset") {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return Duration::from_secs(reset.saturating_sub(now));
    }
    Duration::from_secs(1u64 << retries.min(4))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// A request body as printed by a dry run: pretty JSON, any secret-named member masked.
fn printable(body: &Value) -> String {
    fn mask(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        if k.contains("secret") {
                            (k.clone(), json!("[redacted]"))
                        } else {
                            (k.clone(), mask(v))
                        }
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(mask).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string_pretty(&mask(body)).unwrap_or_else(|_| "{}".to_owned())
}

/// Writes and dry-run printing, the management secret and token scrubbed from every line.
struct Out<'a> {
    w: &'a mut (dyn Write + Send),
    dry_run: bool,
    not_sent: usize,
}

impl Out<'_> {
    fn line(&mut self, api: &Api, text: &str) -> Result<(), Auth0Error> {
        writeln!(self.w, "{}", api.scrub(text))?;
        Ok(())
    }

    fn would_send(
        &mut self,
        api: &Api,
        what: &str,
        method: &Method,
        path: &str,
        body: &Value,
    ) -> Result<(), Auth0Error> {
        self.not_sent += 1;
        self.line(api, &format!("{what}: would send {method} {path}"))?;
        for l in printable(body).lines() {
            self.line(api, &format!("    {l}"))?;
        }
        Ok(())
    }
}

/// Runs the setup, printing one line per action and then the settings block to `out`.
pub async fn setup(
    opts: &SetupOptions,
    out: &mut (dyn Write + Send),
) -> Result<SetupReport, Auth0Error> {
    let plan = Plan::new(opts)?;
    let mut api = Api::new(opts, &plan)?;
    api.authenticate(&plan.audience()).await?;

    // Every read first: a missing connection or a refused read must leave the tenant untouched.
    let mut apps = api.find_applications(&plan.app_name).await?;
    if apps.len() > 1 {
        return Err(Auth0Error::Ambiguous {
            name: plan.app_name.clone(),
            ids: apps
                .iter()
                .map(|a| a.client_id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let existing = apps.pop();
    let conn = api.find_connection(&plan.connection).await?;
    path_id(&conn.id)?;
    let already_enabled = match &existing {
        Some(app) => api.connection_enables(&conn, &app.client_id).await?,
        None => false,
    };

    let mut out = Out {
        w: out,
        dry_run: opts.dry_run,
        not_sent: 0,
    };
    let name = &plan.app_name;
    let mut report = SetupReport {
        client_id: None,
        app_created: false,
        app: Step::Unchanged,
        app_fields: Vec::new(),
        connection_enabled: Step::Unchanged,
        domain_connection: Step::Unchanged,
    };
    let done = if opts.dry_run {
        Step::WouldChange
    } else {
        Step::Changed
    };

    let mut new_secret: Option<SecretString> = None;
    match existing {
        None => {
            let body = plan.create_body();
            report.app_created = true;
            report.app = done;
            report.app_fields = body
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            if out.dry_run {
                out.would_send(
                    &api,
                    &format!("create application {name:?}"),
                    &Method::POST,
                    "/api/v2/clients",
                    &body,
                )?;
            } else {
                let created = api
                    .call(Method::POST, "/api/v2/clients", &[], Some(&body))
                    .await?;
                let created: CreatedClient =
                    serde_json::from_str(&created).map_err(|_| Auth0Error::Unexpected {
                        request: "POST /api/v2/clients".into(),
                        reason: "the created application is not the documented JSON".into(),
                    })?;
                out.line(
                    &api,
                    &format!(
                        "created application {name:?} (client id {})",
                        created.client_id
                    ),
                )?;
                report.client_id = Some(created.client_id);
                new_secret = created.client_secret;
            }
        }
        Some(app) => {
            let patch = plan.patch_body(&app);
            report.client_id = Some(app.client_id.clone());
            if patch.is_empty() {
                out.line(
                    &api,
                    &format!(
                        "application {name:?} (client id {}) already up to date",
                        app.client_id
                    ),
                )?;
            } else {
                report.app = done;
                report.app_fields = patch.keys().cloned().collect();
                let path = format!("/api/v2/clients/{}", path_id(&app.client_id)?);
                let body = Value::Object(patch);
                if out.dry_run {
                    out.would_send(
                        &api,
                        &format!(
                            "update application {name:?} (client id {}): {}",
                            app.client_id,
                            report.app_fields.join(", ")
                        ),
                        &Method::PATCH,
                        &path,
                        &body,
                    )?;
                } else {
                    api.call(Method::PATCH, &path, &[], Some(&body)).await?;
                    out.line(
                        &api,
                        &format!(
                            "updated application {name:?} (client id {}): {}",
                            app.client_id,
                            report.app_fields.join(", ")
                        ),
                    )?;
                }
            }
        }
    }

    let finished = connection_steps(
        &api,
        &plan,
        &conn,
        already_enabled,
        done,
        &mut out,
        &mut report,
    )
    .await;
    if finished.is_ok() {
        if out.not_sent > 0 {
            out.line(
                &api,
                &format!(
                    "dry run: {} request(s) not sent; nothing was changed",
                    out.not_sent
                ),
            )?;
        } else if !report.changed() {
            out.line(&api, "nothing to change")?;
        }
    } else if new_secret.is_some() {
        // The new secret exists nowhere else the operator can read it from this output: print
        // the settings before the error, and a second run finishes the connection steps.
        out.line(
            &api,
            "the application was created but the setup stopped; run the command again to finish",
        )?;
    }
    if finished.is_ok() || new_secret.is_some() {
        settings_block(&api, &plan, &report, new_secret.as_ref(), &mut out)?;
    }
    finished.map(|()| report)
}

async fn connection_steps(
    api: &Api,
    plan: &Plan,
    conn: &Connection,
    already_enabled: bool,
    done: Step,
    out: &mut Out<'_>,
    report: &mut SetupReport,
) -> Result<(), Auth0Error> {
    let name = &plan.app_name;
    let cname = &conn.name;
    let id = path_id(&conn.id)?;
    if already_enabled {
        out.line(
            api,
            &format!("connection {cname} already enabled for {name:?}"),
        )?;
    } else {
        report.connection_enabled = done;
        // PATCH /api/v2/connections/{id}/clients changes only the listed clients, where the
        // deprecated `enabled_clients` property replaced the whole list.
        let path = format!("/api/v2/connections/{id}/clients");
        let client_id = report
            .client_id
            .clone()
            .unwrap_or_else(|| "<client id of the new application>".to_owned());
        let body = json!([{ "client_id": client_id, "status": true }]);
        if out.dry_run {
            out.would_send(
                api,
                &format!("enable connection {cname} for {name:?}"),
                &Method::PATCH,
                &path,
                &body,
            )?;
        } else {
            api.call(Method::PATCH, &path, &[], Some(&body))
                .await
                .map_err(|e| api.connection_gone(conn, e))?;
            out.line(api, &format!("enabled connection {cname} for {name:?}"))?;
        }
    }
    if conn.is_domain_connection == Some(true) {
        out.line(api, &format!("connection {cname} already domain level"))?;
    } else {
        report.domain_connection = done;
        let path = format!("/api/v2/connections/{id}");
        let body = json!({ "is_domain_connection": true });
        if out.dry_run {
            out.would_send(
                api,
                &format!("promote connection {cname} to domain level"),
                &Method::PATCH,
                &path,
                &body,
            )?;
        } else {
            api.call(Method::PATCH, &path, &[], Some(&body))
                .await
                .map_err(|e| api.connection_gone(conn, e))?;
            out.line(
                api,
                &format!(
                    "promoted connection {cname} to domain level (is_domain_connection: true)"
                ),
            )?;
        }
    }
    Ok(())
}

/// The `AUTHGATE_UPSTREAM_*` lines, as an env file (comments start with `#`).
fn settings_block(
    api: &Api,
    plan: &Plan,
    report: &SetupReport,
    new_secret: Option<&SecretString>,
    out: &mut Out<'_>,
) -> Result<(), Auth0Error> {
    out.line(api, "")?;
    out.line(
        api,
        &format!("# authgate settings for the Auth0 tenant {}", plan.domain),
    )?;
    // Auth0's issuer is the tenant URL with a trailing slash, exactly as in its discovery
    // document; without the slash the ID token's `iss` would not match.
    out.line(
        api,
        &format!("AUTHGATE_UPSTREAM_ISSUER=https://{}/", plan.domain),
    )?;
    match &report.client_id {
        Some(id) => out.line(api, &format!("AUTHGATE_UPSTREAM_CLIENT_ID={id}"))?,
        None => out.line(
            api,
            "# AUTHGATE_UPSTREAM_CLIENT_ID and AUTHGATE_UPSTREAM_CLIENT_SECRET: known once the application is created (run without --dry-run)",
        )?,
    }
    match new_secret {
        Some(secret) => {
            out.line(
                api,
                "# the new application's secret, shown this once: store it now",
            )?;
            // Written directly: it is the one secret meant for the output.
            writeln!(
                out.w,
                "AUTHGATE_UPSTREAM_CLIENT_SECRET={}",
                secret.expose_secret()
            )?;
        }
        None if report.client_id.is_some() => out.line(
            api,
            &format!(
                "# AUTHGATE_UPSTREAM_CLIENT_SECRET: not shown; copy it from the Auth0 Dashboard, Applications > Applications > {} > Settings > Client Secret",
                plan.app_name
            ),
        )?,
        None => {}
    }
    out.line(api, &format!("AUTHGATE_UPSTREAM_AUTH_METHOD={AUTH_METHOD}"))?;
    out.line(
        api,
        &format!(
            "AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS=connection={}",
            plan.connection
        ),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn error_descriptions_and_scopes() {
        let d = describe_error(
            StatusCode::FORBIDDEN,
            r#"{"statusCode":403,"error":"Forbidden","message":"Insufficient scope, expected any of: create:clients","errorCode":"insufficient_scope"}"#,
        );
        assert_eq!(
            d,
            "Forbidden: Insufficient scope, expected any of: create:clients (insufficient_scope)"
        );
        let d = describe_error(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"access_denied","error_description":"Unauthorized"}"#,
        );
        assert_eq!(d, "access_denied: Unauthorized");
        assert_eq!(
            describe_error(StatusCode::BAD_GATEWAY, "<html>"),
            "Bad Gateway"
        );
        let payload = URL_SAFE_NO_PAD.encode(br#"{"scope":"read:clients create:clients"}"#);
        assert_eq!(
            jwt_scopes(&format!("h.{payload}.s")),
            vec!["read:clients", "create:clients"]
        );
        assert!(jwt_scopes("opaque").is_empty());
    }

    #[test]
    fn retry_wait_prefers_retry_after() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_wait(&h, 0), Duration::from_secs(1));
        assert_eq!(retry_wait(&h, 2), Duration::from_secs(4));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        h.insert("x-ratelimit-reset", (now + 5).to_string().parse().unwrap());
        let w = retry_wait(&h, 0).as_secs();
        assert!((4..=5).contains(&w), "{w}");
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_wait(&h, 0), Duration::from_secs(2));
    }

    #[test]
    fn printable_masks_secrets() {
        let s = printable(&json!({"name": "a", "client_secret": "x", "nested": [{"secret_v": 1}]}));
        assert!(!s.contains("\"x\""));
        assert!(s.contains("[redacted]"));
    }
}
