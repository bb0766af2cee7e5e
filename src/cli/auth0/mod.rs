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

mod api;
mod plan;

use std::io::Write;
use std::process::ExitCode;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use self::api::{Api, Connection, CreatedClient, path_id};
use self::plan::Plan;
use crate::clock::Clock;

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
/// Its errors are one line each, printed as they are.
pub(super) async fn command(args: &SetupArgs, clock: &dyn Clock) -> anyhow::Result<ExitCode> {
    let result = match args.options() {
        Ok(opts) => setup(&opts, clock, &mut std::io::stdout()).await,
        Err(e) => Err(e),
    };
    Ok(match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    })
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
    fn line(&mut self, api: &Api<'_>, text: &str) -> Result<(), Auth0Error> {
        writeln!(self.w, "{}", api.scrub(text))?;
        Ok(())
    }

    fn would_send(
        &mut self,
        api: &Api<'_>,
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

/// Runs the setup, printing one line per action and then the settings block to `out`; `clock`
/// tells how long until a rate limit resets.
pub async fn setup(
    opts: &SetupOptions,
    clock: &dyn Clock,
    out: &mut (dyn Write + Send),
) -> Result<SetupReport, Auth0Error> {
    let plan = Plan::new(opts)?;
    let mut api = Api::new(opts, &plan, clock)?;
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
    api: &Api<'_>,
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
    api: &Api<'_>,
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

    #[test]
    fn printable_masks_secrets() {
        let s = printable(&json!({"name": "a", "client_secret": "x", "nested": [{"secret_v": 1}]}));
        assert!(!s.contains("\"x\""));
        assert!(s.contains("[redacted]"));
    }
}
