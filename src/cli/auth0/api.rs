//! The Auth0 Management API v2 over HTTP, as far as the setup uses it: the client-credentials
//! token and its scope check, the reads and writes, 429 retries, and error bodies turned into
//! one-line messages with the management secret and the token scrubbed out.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;

use super::plan::Plan;
use super::{Auth0Error, REQUIRED_SCOPES, SetupOptions};
use crate::clock::{Clock, Timestamp};
use crate::telemetry::error_chain;

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

// ---- Management API shapes (only the fields used) ----

#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: SecretString,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Client {
    pub(super) client_id: String,
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) app_type: Option<String>,
    #[serde(default)]
    pub(super) callbacks: Option<Vec<String>>,
    #[serde(default)]
    pub(super) allowed_logout_urls: Option<Vec<String>>,
    #[serde(default)]
    pub(super) web_origins: Option<Vec<String>>,
    #[serde(default)]
    pub(super) token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    pub(super) grant_types: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct CreatedClient {
    pub(super) client_id: String,
    #[serde(default)]
    pub(super) client_secret: Option<SecretString>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Connection {
    pub(super) id: String,
    pub(super) name: String,
    #[serde(default)]
    pub(super) is_domain_connection: Option<bool>,
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
pub(super) struct Api<'c> {
    clock: &'c dyn Clock,
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

impl<'c> Api<'c> {
    pub(super) fn new(
        opts: &SetupOptions,
        plan: &Plan,
        clock: &'c dyn Clock,
    ) -> Result<Self, Auth0Error> {
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
            clock,
            http,
            base: plan.base.clone(),
            domain: plan.domain.clone(),
            client_id: opts.mgmt_client_id.clone(),
            secret: opts.mgmt_client_secret.clone(),
            token: None,
        })
    }

    /// Removes the management secret and the token from text that came back from Auth0.
    pub(super) fn scrub(&self, text: &str) -> String {
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
                let wait = retry_wait(resp.headers(), retries, self.clock.now());
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
    pub(super) async fn authenticate(&mut self, audience: &str) -> Result<(), Auth0Error> {
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
    pub(super) async fn call(
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
    pub(super) async fn find_applications(&self, name: &str) -> Result<Vec<Client>, Auth0Error> {
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

    pub(super) async fn find_connection(&self, name: &str) -> Result<Connection, Auth0Error> {
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
    pub(super) async fn connection_enables(
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
    pub(super) fn connection_gone(&self, conn: &Connection, e: Auth0Error) -> Auth0Error {
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
pub(super) fn path_id(id: &str) -> Result<&str, Auth0Error> {
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
fn retry_wait(headers: &reqwest::header::HeaderMap, retries: u32, now: Timestamp) -> Duration {
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
        let now = u64::try_from(now).unwrap_or(0);
        return Duration::from_secs(reset.saturating_sub(now));
    }
    Duration::from_secs(1u64 << retries.min(4))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let now = 1_790_000_000;
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_wait(&h, 0, now), Duration::from_secs(1));
        assert_eq!(retry_wait(&h, 2, now), Duration::from_secs(4));
        h.insert("x-ratelimit-reset", (now + 5).to_string().parse().unwrap());
        assert_eq!(retry_wait(&h, 0, now), Duration::from_secs(5));
        assert_eq!(
            retry_wait(&h, 0, now + 9),
            Duration::ZERO,
            "a reset in the past"
        );
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_wait(&h, 0, now), Duration::from_secs(2));
    }
}
