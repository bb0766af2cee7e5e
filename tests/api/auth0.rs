//! `authgate auth0 setup` against an in-process stand-in of Auth0's token endpoint and
//! Management API v2: the real API is not reachable from the tests. The stand-in keeps a tenant
//! in memory, records every request it receives, and answers with the request and response
//! shapes Auth0 documents, errors included.
//!
//! The facts the stand-in (and `src/cli/auth0/`) rely on, with the documentation they come from:
//!
//! - "Get Management API Access Tokens for Production" (auth0.com/docs/secure/tokens/
//!   access-tokens/management-api-access-tokens/get-management-api-access-tokens-for-production):
//!   `POST https://{domain}/oauth/token`, `application/x-www-form-urlencoded`, with
//!   `grant_type=client_credentials`, `client_id`, `client_secret` and
//!   `audience=https://{domain}/api/v2/`; the answer is `{access_token, token_type: "Bearer",
//!   expires_in, scope}` where `scope` lists the granted permissions, space-separated (the token
//!   is a JWT whose `scope` claim holds the same list).
//! - Token endpoint errors are OAuth-style `{"error": "access_denied", "error_description":
//!   "Unauthorized"}` with 401 for bad client credentials (auth0/node-auth0 issues #428, #682),
//!   and 403 `access_denied` "Client is not authorized to access \"https://{domain}/api/v2/\".
//!   You need to create a \"client-grant\" ..." when the application has no grant for the
//!   Management API (auth0/auth0-python #173, auth0/ruby-auth0 #610).
//! - Management API errors are `{"statusCode", "error", "message", "errorCode"}`; a token without
//!   the endpoint's scope gets 403 `{"statusCode":403,"error":"Forbidden","message":"Insufficient
//!   scope, expected any of: <scope>","errorCode":"insufficient_scope"}` ("Management API Token
//!   from API Explorer Tab does not Contain Expected Scopes", Auth0 support article); a bad token
//!   gets 401 `"Invalid token"`; an unknown id gets 404 (`inexistent_client`,
//!   `inexistent_connection`).
//! - "Get clients" (`GET /api/v2/clients`): filters `app_type` (comma-separated), `fields` +
//!   `include_fields`, offset pagination with `page` (from 0) and `per_page` (default 50, at most
//!   100), a bare array unless `include_totals=true`. `client_secret` is only returned to
//!   `read:client_keys`; authgate asks for named fields only, so never receives it.
//! - "Create a client" (`POST /api/v2/clients`, scope `create:clients`): body fields `name`
//!   (required, no `<` `>`), `app_type` (`regular_web`), `callbacks`, `allowed_logout_urls`,
//!   `web_origins`, `token_endpoint_auth_method` (`client_secret_post`), `grant_types`,
//!   `oidc_conformant`; answers 201 with the client, including a generated `client_secret`
//!   ("leave client_secret unspecified to allow the generation of a safe secret").
//! - "Update a client" (`PATCH /api/v2/clients/{id}`, scope `update:clients`): same fields, at
//!   least one; arrays are replaced, not merged.
//! - "Get all connections" (`GET /api/v2/connections`, scope `read:connections`): filters `name`
//!   and `strategy`, `fields` + `include_fields`; each connection has `id` (`con_...`), `name`,
//!   `strategy`, `is_domain_connection`.
//! - "Migrate Enabled Client Management to Dedicated Connection Endpoints" (Auth0 deprecations):
//!   the connection's `enabled_clients` property is deprecated on Get/Update a connection; the
//!   current endpoints are "Get enabled clients for a connection" (`GET
//!   /api/v2/connections/{id}/clients`, `take` 1..1000 default 50, `from`, answer `{"clients":
//!   [{"client_id"}], "next"}`, no `next` on the last page) and "Update enabled clients for a
//!   connection" (`PATCH /api/v2/connections/{id}/clients`, body `[{"client_id", "status":
//!   true}]`, 1 to 50 items, changes only the listed clients). The stand-in refuses
//!   `enabled_clients` the way tenants created after the deprecation do.
//! - "Update a connection" (`PATCH /api/v2/connections/{id}`, scope `update:connections`):
//!   `is_domain_connection: true` "promotes to a domain-level connection so that third-party
//!   applications can use it".
//! - Rate limits ("Rate Limit Policy", "Management API Endpoint Rate Limits", and the Auth0
//!   community answer "How to tell if you are approaching the Rate-Limit"): responses carry
//!   `x-ratelimit-limit`, `x-ratelimit-remaining` and `x-ratelimit-reset` ("a UNIX timestamp of
//!   the expected time when the rate limit will reset"); over the limit the answer is 429 with a
//!   `{"statusCode":429,"error":"Too Many Requests","message":...}` body (node-auth0's
//!   `TooManyRequestsErrorBody`). A `Retry-After` header (seconds) is honoured first when
//!   present, as client libraries do (e.g. the auth0_api package); Auth0's pages document only
//!   the `x-ratelimit-*` headers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authgate::cli::auth0::{Auth0Error, SetupArgs, SetupOptions, SetupReport, Step, setup};
use authgate::clock::{Clock, MockClock};
use authgate::config::{RawConfig, Settings};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::T0;

const DOMAIN: &str = "authgate-test.eu.auth0.com";
const M2M_ID: &str = "M2mClientIdOfTheTestTenant000001";
const M2M_SECRET: &str = "m2m-SECRET-never-printed-7f3a9c4e1b";
const PUBLIC_URL: &str = "https://mcp.example.com";
const CALLBACK: &str = "https://mcp.example.com/oauth/callback";
const GOOGLE_ID: &str = "con_G00gle0auth2000001";
const OTHER_APP_ID: &str = "OtherEnabledApp00000000000000001";
/// authgate's application when a test starts with one.
const EXISTING_APP_ID: &str = "ExistingAuthgateApp0000000000001";
const EXISTING_SECRET: &str = "EXISTING-app-secret-never-printed-51d2";

const ALL_SCOPES: [&str; 5] = [
    "read:connections",
    "update:connections",
    "read:clients",
    "create:clients",
    "update:clients",
];

// ---- the stand-in ----

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    query: String,
    body: String,
    authorization: Option<String>,
}

#[derive(Debug, Clone)]
struct Conn {
    id: String,
    name: String,
    strategy: String,
    is_domain_connection: bool,
    enabled: Vec<String>,
}

impl Conn {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "display_name": self.name,
            "strategy": self.strategy,
            "is_domain_connection": self.is_domain_connection,
            "realms": [self.name],
            "options": {},
        })
    }
}

/// The first `count` requests matching `method` and `path` are refused with 429.
#[derive(Debug, Clone)]
struct Throttle {
    method: &'static str,
    path: &'static str,
    count: u32,
    retry_after: Option<u64>,
    reset_in: i64,
}

#[derive(Debug, Default)]
struct Tenant {
    clients: Vec<Value>,
    connections: Vec<Conn>,
    /// What the machine-to-machine application is granted (and its token carries).
    scopes: Vec<String>,
    /// What the API enforces, when it differs from the token's claim (a grant changed since).
    api_scopes: Option<Vec<String>>,
    requests: Vec<Recorded>,
    throttles: Vec<Throttle>,
    token_omits_scope: bool,
    echo_secret_on_token: bool,
    reject_tokens: bool,
    connection_clients_404: bool,
    access_token: String,
    created: u32,
}

type Shared = Arc<Mutex<Tenant>>;

fn regular_web(id: &str, name: &str) -> Value {
    json!({
        "client_id": id,
        "tenant": "authgate-test",
        "name": name,
        "global": false,
        "is_first_party": true,
        "app_type": "regular_web",
        "client_secret": format!("secret-of-{id}"),
        "callbacks": ["https://app.example.org/callback"],
        "allowed_logout_urls": [],
        "web_origins": [],
        "token_endpoint_auth_method": "client_secret_post",
        "grant_types": ["authorization_code", "implicit", "refresh_token", "client_credentials"],
        "oidc_conformant": true,
    })
}

/// authgate's application exactly as the setup wants it.
fn authgate_app(id: &str) -> Value {
    json!({
        "client_id": id,
        "tenant": "authgate-test",
        "name": "authgate",
        "global": false,
        "is_first_party": true,
        "app_type": "regular_web",
        "client_secret": EXISTING_SECRET,
        "callbacks": [CALLBACK],
        "allowed_logout_urls": [PUBLIC_URL],
        "web_origins": [PUBLIC_URL],
        "token_endpoint_auth_method": "client_secret_post",
        "grant_types": ["authorization_code"],
        "oidc_conformant": true,
    })
}

impl Tenant {
    /// A tenant with the usual furniture: the M2M application, a default application, Google
    /// and GitHub connections (Google enabled for another application, not domain level).
    fn new() -> Self {
        Tenant {
            clients: vec![
                json!({"client_id": M2M_ID, "name": "authgate setup (M2M)", "app_type": "non_interactive",
                       "client_secret": M2M_SECRET, "grant_types": ["client_credentials"]}),
                regular_web(OTHER_APP_ID, "Default App"),
            ],
            connections: vec![
                Conn {
                    id: GOOGLE_ID.into(),
                    name: "google-oauth2".into(),
                    strategy: "google-oauth2".into(),
                    is_domain_connection: false,
                    enabled: vec![OTHER_APP_ID.into()],
                },
                Conn {
                    id: "con_G1thub0000000000001".into(),
                    name: "github".into(),
                    strategy: "github".into(),
                    is_domain_connection: false,
                    enabled: vec![],
                },
            ],
            scopes: ALL_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn with_client(mut self, client: Value) -> Self {
        self.clients.push(client);
        self
    }

    fn throttle(mut self, t: Throttle) -> Self {
        self.throttles.push(t);
        self
    }

    /// Google already enabled for `client_id` and promoted to domain level.
    fn google_done_for(mut self, client_id: &str) -> Self {
        let google = self
            .connections
            .iter_mut()
            .find(|c| c.id == GOOGLE_ID)
            .unwrap();
        google.enabled.push(client_id.into());
        google.is_domain_connection = true;
        self
    }

    /// The token claims every scope, but the grant lost `scope` since.
    fn losing_api_scope(mut self, scope: &str) -> Self {
        self.api_scopes = Some(
            ALL_SCOPES
                .iter()
                .filter(|s| **s != scope)
                .map(|s| (*s).to_owned())
                .collect(),
        );
        self
    }

    fn throttled(&mut self, method: &Method, path: &str, now: i64) -> Option<Response> {
        let t = self
            .throttles
            .iter_mut()
            .find(|t| t.method == method.as_str() && t.path == path && t.count > 0)?;
        t.count -= 1;
        let mut resp = if path == "/oauth/token" {
            (
                StatusCode::TOO_MANY_REQUESTS,
                axum::Json(json!({"error": "too_many_requests", "error_description": "Global limit has been reached"})),
            )
                .into_response()
        } else {
            mgmt_error(
                429,
                "Too Many Requests",
                "Global limit has been reached",
                Some("too_many_requests"),
            )
        };
        let h = resp.headers_mut();
        h.insert("x-ratelimit-limit", HeaderValue::from(50));
        h.insert("x-ratelimit-remaining", HeaderValue::from(0));
        h.insert("x-ratelimit-reset", HeaderValue::from(now + t.reset_in));
        if let Some(secs) = t.retry_after {
            h.insert("retry-after", HeaderValue::from(secs));
        }
        Some(resp)
    }

    fn token(&mut self, headers: &HeaderMap, body: &[u8]) -> Response {
        let oauth_error = |status: StatusCode, error: &str, description: &str| {
            (
                status,
                axum::Json(json!({"error": error, "error_description": description})),
            )
                .into_response()
        };
        let form = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let params: HashMap<String, String> = if form {
            serde_urlencoded::from_bytes(body).unwrap_or_default()
        } else {
            serde_json::from_slice(body).unwrap_or_default()
        };
        let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
        if self.echo_secret_on_token {
            let echoed = format!("malformed request (client_secret={})", get("client_secret"));
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &echoed);
        }
        if get("grant_type") != "client_credentials" {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Unsupported grant type",
            );
        }
        if get("client_id") != M2M_ID || get("client_secret") != M2M_SECRET {
            return oauth_error(StatusCode::UNAUTHORIZED, "access_denied", "Unauthorized");
        }
        let audience = format!("https://{DOMAIN}/api/v2/");
        if get("audience") != audience {
            return oauth_error(
                StatusCode::FORBIDDEN,
                "access_denied",
                &format!("Service not found: {}", get("audience")),
            );
        }
        let scope = self.scopes.join(" ");
        let claims = json!({"iss": format!("https://{DOMAIN}/"), "sub": format!("{M2M_ID}@clients"),
                            "aud": audience, "scope": scope, "gty": "client-credentials"});
        self.access_token = format!(
            "{}.{}.stand-in-signature-{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            self.requests.len()
        );
        let mut answer =
            json!({"access_token": self.access_token, "token_type": "Bearer", "expires_in": 86400});
        if !self.token_omits_scope {
            answer["scope"] = json!(scope);
        }
        axum::Json(answer).into_response()
    }

    fn management(
        &mut self,
        method: &Method,
        rest: &[&str],
        query: &HashMap<String, String>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if self.reject_tokens || self.access_token.is_empty() || bearer != Some(&self.access_token)
        {
            let mut body =
                json!({"statusCode": 401, "error": "Unauthorized", "message": "Invalid token"});
            body["attributes"] = json!({"error": "Invalid token"});
            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
        let needed = match (method.as_str(), rest) {
            ("GET", ["clients", ..]) => "read:clients",
            ("POST", ["clients"]) => "create:clients",
            ("PATCH", ["clients", _]) => "update:clients",
            ("GET", ["connections", ..]) => "read:connections",
            ("PATCH", ["connections", ..]) => "update:connections",
            _ => return mgmt_error(404, "Not Found", "Not Found", None),
        };
        let allowed = self.api_scopes.as_ref().unwrap_or(&self.scopes);
        if !allowed.iter().any(|s| s == needed) {
            return mgmt_error(
                403,
                "Forbidden",
                &format!("Insufficient scope, expected any of: {needed}"),
                Some("insufficient_scope"),
            );
        }
        let json_body = || serde_json::from_slice::<Value>(body).ok();
        match (method.as_str(), rest) {
            ("GET", ["clients"]) => self.list_clients(query),
            ("POST", ["clients"]) => self.create_client(json_body()),
            ("PATCH", ["clients", id]) => self.update_client(id, json_body()),
            ("GET", ["connections"]) => self.list_connections(query),
            ("GET", ["connections", id, "clients"]) => self.connection_clients(id, query),
            ("PATCH", ["connections", id, "clients"]) => {
                self.update_connection_clients(id, json_body())
            }
            ("PATCH", ["connections", id]) => self.update_connection(id, json_body()),
            _ => mgmt_error(404, "Not Found", "Not Found", None),
        }
    }

    fn list_clients(&self, q: &HashMap<String, String>) -> Response {
        let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(0);
        let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(50);
        if per_page == 0 || per_page > 100 {
            return mgmt_error(
                400,
                "Bad Request",
                "Query validation error: 'per_page' must be at most 100",
                Some("invalid_query_string"),
            );
        }
        let types: Option<Vec<&str>> = q.get("app_type").map(|t| t.split(',').collect());
        let matching: Vec<&Value> = self
            .clients
            .iter()
            .filter(|c| {
                types
                    .as_ref()
                    .is_none_or(|t| c["app_type"].as_str().is_some_and(|a| t.contains(&a)))
            })
            .collect();
        let items: Vec<Value> = matching
            .iter()
            .skip(page * per_page)
            .take(per_page)
            .map(|c| {
                let mut c = project(c, q);
                // `client_secret` needs read:client_keys, which the setup is never granted here.
                if let Some(m) = c.as_object_mut() {
                    m.remove("client_secret");
                }
                c
            })
            .collect();
        if q.get("include_totals").is_some_and(|v| v == "true") {
            let length = items.len();
            return axum::Json(
                json!({"start": page * per_page, "limit": per_page, "length": length,
                                      "total": matching.len(), "clients": items}),
            )
            .into_response();
        }
        axum::Json(Value::Array(items)).into_response()
    }

    fn create_client(&mut self, body: Option<Value>) -> Response {
        let Some(Value::Object(body)) = body else {
            return mgmt_error(
                400,
                "Bad Request",
                "Payload validation error: 'Expected type object'.",
                Some("invalid_body"),
            );
        };
        if body
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return mgmt_error(
                400,
                "Bad Request",
                "Payload validation error: 'Missing required property: name'.",
                Some("invalid_body"),
            );
        }
        self.created += 1;
        let id = format!("NewAuthgateApp{:018}", self.created);
        let mut client = json!({
            "client_id": id,
            "tenant": "authgate-test",
            "global": false,
            "is_first_party": true,
            "client_secret": new_app_secret(self.created),
            "callbacks": [], "allowed_logout_urls": [], "web_origins": [],
            "grant_types": ["authorization_code", "implicit", "refresh_token", "client_credentials"],
            "token_endpoint_auth_method": "client_secret_post",
            "oidc_conformant": false,
        });
        for (k, v) in body {
            client[k] = v;
        }
        self.clients.push(client.clone());
        (StatusCode::CREATED, axum::Json(client)).into_response()
    }

    fn update_client(&mut self, id: &str, body: Option<Value>) -> Response {
        let Some(client) = self
            .clients
            .iter_mut()
            .find(|c| c["client_id"].as_str() == Some(id))
        else {
            return mgmt_error(
                404,
                "Not Found",
                "The client does not exist",
                Some("inexistent_client"),
            );
        };
        let Some(Value::Object(body)) =
            body.filter(|b| b.as_object().is_some_and(|m| !m.is_empty()))
        else {
            return mgmt_error(
                400,
                "Bad Request",
                "Payload validation error: 'Too few properties defined (0), minimum 1'.",
                Some("invalid_body"),
            );
        };
        for (k, v) in body {
            client[k] = v;
        }
        axum::Json(client.clone()).into_response()
    }

    fn list_connections(&self, q: &HashMap<String, String>) -> Response {
        let list: Vec<Value> = self
            .connections
            .iter()
            .filter(|c| q.get("name").is_none_or(|n| *n == c.name))
            .filter(|c| q.get("strategy").is_none_or(|s| *s == c.strategy))
            .map(|c| project(&c.json(), q))
            .collect();
        axum::Json(Value::Array(list)).into_response()
    }

    fn connection(&mut self, id: &str) -> Option<&mut Conn> {
        let gone = self.connection_clients_404;
        self.connections.iter_mut().find(|c| c.id == id && !gone)
    }

    fn connection_clients(&mut self, id: &str, q: &HashMap<String, String>) -> Response {
        let take: usize = q.get("take").and_then(|t| t.parse().ok()).unwrap_or(50);
        if !(1..=1000).contains(&take) {
            return mgmt_error(
                400,
                "Bad Request",
                "Query validation error: 'take' must be between 1 and 1000",
                Some("invalid_query_string"),
            );
        }
        let from: usize = q.get("from").and_then(|f| f.parse().ok()).unwrap_or(0);
        let Some(conn) = self.connection(id) else {
            return no_connection();
        };
        let page: Vec<Value> = conn
            .enabled
            .iter()
            .skip(from)
            .take(take)
            .map(|c| json!({"client_id": c}))
            .collect();
        let mut answer = json!({"clients": page});
        if from + take < conn.enabled.len() {
            answer["next"] = json!((from + take).to_string());
        }
        axum::Json(answer).into_response()
    }

    fn update_connection_clients(&mut self, id: &str, body: Option<Value>) -> Response {
        let items = match body {
            Some(Value::Array(items)) if (1..=50).contains(&items.len()) => items,
            _ => {
                return mgmt_error(
                    400,
                    "Bad Request",
                    "Payload validation error: 'Array must have between 1 and 50 items'.",
                    Some("invalid_body"),
                );
            }
        };
        let Some(conn) = self.connection(id) else {
            return no_connection();
        };
        for item in items {
            let (Some(client), Some(status)) =
                (item["client_id"].as_str(), item["status"].as_bool())
            else {
                return mgmt_error(
                    400,
                    "Bad Request",
                    "Payload validation error: 'Missing required property: client_id or status'.",
                    Some("invalid_body"),
                );
            };
            conn.enabled.retain(|c| c != client);
            if status {
                conn.enabled.push(client.to_owned());
            }
        }
        StatusCode::NO_CONTENT.into_response()
    }

    fn update_connection(&mut self, id: &str, body: Option<Value>) -> Response {
        let Some(Value::Object(body)) = body else {
            return mgmt_error(
                400,
                "Bad Request",
                "Payload validation error.",
                Some("invalid_body"),
            );
        };
        if body.contains_key("enabled_clients") {
            return mgmt_error(
                400,
                "Bad Request",
                "enabled_clients is deprecated: use PATCH /api/v2/connections/{id}/clients",
                Some("invalid_body"),
            );
        }
        let Some(conn) = self.connection(id) else {
            return no_connection();
        };
        if let Some(v) = body.get("is_domain_connection").and_then(Value::as_bool) {
            conn.is_domain_connection = v;
        }
        axum::Json(conn.json()).into_response()
    }
}

fn no_connection() -> Response {
    mgmt_error(
        404,
        "Not Found",
        "The connection does not exist",
        Some("inexistent_connection"),
    )
}

fn new_app_secret(n: u32) -> String {
    format!("NEW-app-secret-{n:04}-shown-once-Qz81Tk")
}

/// The `fields` / `include_fields` projection of the list endpoints.
fn project(v: &Value, q: &HashMap<String, String>) -> Value {
    let Some(fields) = q.get("fields").filter(|f| !f.is_empty()) else {
        return v.clone();
    };
    let fields: Vec<&str> = fields.split(',').collect();
    let include = q.get("include_fields").is_none_or(|i| i != "false");
    let Some(m) = v.as_object() else {
        return v.clone();
    };
    Value::Object(
        m.iter()
            .filter(|(k, _)| fields.contains(&k.as_str()) == include)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    )
}

fn mgmt_error(status: u16, error: &str, message: &str, code: Option<&str>) -> Response {
    let mut body = json!({"statusCode": status, "error": error, "message": message});
    if let Some(c) = code {
        body["errorCode"] = json!(c);
    }
    (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response()
}

async fn handle(
    State((tenant, clock)): State<(Shared, MockClock)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut t = tenant.lock().unwrap();
    t.requests.push(Recorded {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        body: String::from_utf8_lossy(&body).into_owned(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    if let Some(resp) = t.throttled(&method, uri.path(), clock.now()) {
        return resp;
    }
    let query: HashMap<String, String> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    let segments: Vec<&str> = uri.path().trim_start_matches('/').split('/').collect();
    let mut resp = match (method.as_str(), segments.as_slice()) {
        ("POST", ["oauth", "token"]) => t.token(&headers, &body),
        (_, ["api", "v2", rest @ ..]) => t.management(&method, rest, &query, &headers, &body),
        _ => mgmt_error(404, "Not Found", "Not Found", None),
    };
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from(50));
    h.insert("x-ratelimit-remaining", HeaderValue::from(49));
    h.insert("x-ratelimit-reset", HeaderValue::from(clock.now() + 1));
    resp
}

struct StandIn {
    base: String,
    tenant: Shared,
    /// The time of both the stand-in (its `x-ratelimit-reset`) and the setup.
    clock: MockClock,
}

impl StandIn {
    async fn start(tenant: Tenant) -> StandIn {
        let tenant = Arc::new(Mutex::new(tenant));
        let clock = MockClock::new(T0);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let router = Router::new()
            .fallback(handle)
            .with_state((tenant.clone(), clock.clone()));
        tokio::spawn(async move { axum::serve(listener, router).await });
        StandIn {
            base,
            tenant,
            clock,
        }
    }

    fn options(&self) -> SetupOptions {
        let mut o = SetupOptions::new(DOMAIN, M2M_ID, SecretString::from(M2M_SECRET), PUBLIC_URL);
        o.api_base = Some(self.base.clone());
        o
    }

    async fn run(
        &self,
        configure: impl FnOnce(&mut SetupOptions),
    ) -> (Result<SetupReport, Auth0Error>, String) {
        let mut opts = self.options();
        configure(&mut opts);
        let mut out: Vec<u8> = Vec::new();
        let result = setup(&opts, &self.clock, &mut out).await;
        let text = String::from_utf8(out).unwrap();
        self.assert_no_secret(&text);
        if let Err(e) = &result {
            self.assert_no_secret(&e.to_string());
            assert!(!e.to_string().contains('\n'), "one line: {e}");
        }
        (result, text)
    }

    fn assert_no_secret(&self, text: &str) {
        assert!(
            !text.contains(M2M_SECRET),
            "management secret leaked: {text}"
        );
        assert!(
            !text.contains(EXISTING_SECRET),
            "an existing secret leaked: {text}"
        );
        let token = self.tenant.lock().unwrap().access_token.clone();
        if !token.is_empty() {
            assert!(!text.contains(&token), "access token leaked: {text}");
        }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.tenant.lock().unwrap().requests.clone()
    }

    fn clear_requests(&self) {
        self.tenant.lock().unwrap().requests.clear();
    }

    /// The requests that could change the tenant.
    fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/api/v2/") && r.method != "GET")
            .collect()
    }

    fn count(&self, method: &str, path: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path == path)
            .count()
    }

    fn apps_named(&self, name: &str, app_type: &str) -> Vec<Value> {
        self.tenant
            .lock()
            .unwrap()
            .clients
            .iter()
            .filter(|c| c["name"] == name && c["app_type"] == app_type)
            .cloned()
            .collect()
    }

    fn connection(&self, name: &str) -> Conn {
        self.tenant
            .lock()
            .unwrap()
            .connections
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .unwrap()
    }

    fn state_snapshot(&self) -> String {
        let t = self.tenant.lock().unwrap();
        format!("{:?}{:?}", t.clients, t.connections)
    }
}

/// A stand-in of `tenant` and the setup run against it with the default options.
async fn run_on(tenant: Tenant) -> (StandIn, Result<SetupReport, Auth0Error>, String) {
    let stand = StandIn::start(tenant).await;
    let (result, out) = stand.run(|_| {}).await;
    (stand, result, out)
}

/// [`run_on`] for a setup that must fail: its error and output.
async fn fail_on(tenant: Tenant) -> (StandIn, Auth0Error, String) {
    let (stand, result, out) = run_on(tenant).await;
    match result {
        Ok(report) => panic!("expected an error, got {report:?}: {out}"),
        Err(e) => (stand, e, out),
    }
}

fn setting<'a>(out: &'a str, key: &str) -> Option<&'a str> {
    out.lines().find_map(|l| l.strip_prefix(&format!("{key}=")))
}

// ---- the tests ----

#[tokio::test]
async fn first_run_creates_the_application_enables_and_promotes_the_connection() {
    let (stand, result, out) = run_on(Tenant::new()).await;
    let report = result.unwrap();

    let apps = stand.apps_named("authgate", "regular_web");
    assert_eq!(apps.len(), 1, "{out}");
    let app = &apps[0];
    let id = app["client_id"].as_str().unwrap();
    assert_eq!(app["callbacks"], json!([CALLBACK]));
    assert_eq!(app["allowed_logout_urls"], json!([PUBLIC_URL]));
    assert_eq!(app["web_origins"], json!([PUBLIC_URL]));
    assert_eq!(app["token_endpoint_auth_method"], "client_secret_post");
    assert_eq!(app["grant_types"], json!(["authorization_code"]));
    assert_eq!(app["oidc_conformant"], true);

    let google = stand.connection("google-oauth2");
    assert!(google.is_domain_connection);
    assert!(google.enabled.iter().any(|c| c == id));
    assert!(
        google.enabled.iter().any(|c| c == OTHER_APP_ID),
        "the other application must stay enabled"
    );
    assert!(!stand.connection("github").enabled.iter().any(|c| c == id));

    assert_eq!(report.client_id.as_deref(), Some(id));
    assert!(report.app_created && report.changed());
    assert_eq!(report.app, Step::Changed);
    assert_eq!(report.connection_enabled, Step::Changed);
    assert_eq!(report.domain_connection, Step::Changed);

    assert!(
        out.contains(&format!(
            "created application \"authgate\" (client id {id})"
        )),
        "{out}"
    );
    assert!(
        out.contains("enabled connection google-oauth2 for \"authgate\""),
        "{out}"
    );
    assert!(
        out.contains("promoted connection google-oauth2 to domain level"),
        "{out}"
    );
    assert!(!out.contains("nothing to change"));
    assert_eq!(
        setting(&out, "AUTHGATE_UPSTREAM_ISSUER"),
        Some(format!("https://{DOMAIN}/").as_str())
    );
    assert_eq!(setting(&out, "AUTHGATE_UPSTREAM_CLIENT_ID"), Some(id));
    assert_eq!(
        setting(&out, "AUTHGATE_UPSTREAM_AUTH_METHOD"),
        Some("client_secret_post")
    );
    assert_eq!(
        setting(&out, "AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS"),
        Some("connection=google-oauth2")
    );
    let secret = new_app_secret(1);
    assert_eq!(app["client_secret"], secret.as_str());
    assert_eq!(
        setting(&out, "AUTHGATE_UPSTREAM_CLIENT_SECRET"),
        Some(secret.as_str())
    );
    assert_eq!(
        out.matches(&secret).count(),
        1,
        "the new secret exactly once: {out}"
    );

    // The documented request shapes.
    let requests = stand.requests();
    let token = &requests[0];
    assert_eq!(
        (token.method.as_str(), token.path.as_str()),
        ("POST", "/oauth/token")
    );
    let form: HashMap<String, String> = serde_urlencoded::from_str(&token.body).unwrap();
    assert_eq!(form["grant_type"], "client_credentials");
    assert_eq!(form["client_id"], M2M_ID);
    assert_eq!(form["audience"], format!("https://{DOMAIN}/api/v2/"));
    let bearer = format!("Bearer {}", stand.tenant.lock().unwrap().access_token);
    for r in &requests[1..] {
        assert!(r.path.starts_with("/api/v2/"), "{r:?}");
        assert_eq!(r.authorization.as_deref(), Some(bearer.as_str()), "{r:?}");
        assert!(
            !r.body.contains("enabled_clients"),
            "deprecated property used: {r:?}"
        );
    }
    let writes: Vec<(String, String)> = stand
        .writes()
        .into_iter()
        .map(|r| (r.method, r.path))
        .collect();
    assert_eq!(
        writes,
        vec![
            ("POST".to_owned(), "/api/v2/clients".to_owned()),
            (
                "PATCH".to_owned(),
                format!("/api/v2/connections/{GOOGLE_ID}/clients")
            ),
            (
                "PATCH".to_owned(),
                format!("/api/v2/connections/{GOOGLE_ID}")
            ),
        ]
    );
    let list = requests
        .iter()
        .find(|r| r.method == "GET" && r.path == "/api/v2/clients")
        .unwrap();
    let q: HashMap<String, String> = serde_urlencoded::from_str(&list.query).unwrap();
    assert_eq!(q["app_type"], "regular_web");
    assert!(!q["fields"].contains("client_secret"));
}

#[tokio::test]
async fn second_run_changes_nothing_and_says_so() {
    let (stand, first, _) = run_on(Tenant::new()).await;
    let first = first.unwrap();
    let before = stand.state_snapshot();
    stand.clear_requests();

    let (second, out) = stand.run(|_| {}).await;
    let second = second.unwrap();
    assert!(stand.writes().is_empty(), "{:?}", stand.writes());
    assert_eq!(stand.state_snapshot(), before);
    assert!(!second.changed() && !second.app_created);
    assert_eq!(second.client_id, first.client_id);
    let id = second.client_id.unwrap();
    assert!(
        out.contains(&format!(
            "application \"authgate\" (client id {id}) already up to date"
        )),
        "{out}"
    );
    assert!(
        out.contains("connection google-oauth2 already enabled for \"authgate\""),
        "{out}"
    );
    assert!(
        out.contains("connection google-oauth2 already domain level"),
        "{out}"
    );
    assert!(out.contains("\nnothing to change\n"), "{out}");
    // The secret is never printed again: only where to find it.
    assert!(!out.contains(&new_app_secret(1)), "{out}");
    assert_eq!(setting(&out, "AUTHGATE_UPSTREAM_CLIENT_SECRET"), None);
    assert!(
        out.contains(
            "# AUTHGATE_UPSTREAM_CLIENT_SECRET: not shown; copy it from the Auth0 Dashboard"
        ),
        "{out}"
    );
    assert_eq!(
        setting(&out, "AUTHGATE_UPSTREAM_CLIENT_ID"),
        Some(id.as_str())
    );
}

#[tokio::test]
async fn an_application_with_a_wrong_callback_is_patched_with_only_the_differences() {
    let mut tenant = Tenant::new();
    // Enough applications that authgate's sits on the second page of 100.
    for i in 0..150 {
        tenant = tenant.with_client(regular_web(
            &format!("Filler{i:026}"),
            &format!("App {i:03}"),
        ));
    }
    let mut app = authgate_app(EXISTING_APP_ID);
    app["callbacks"] = json!(["https://old.example.com/oauth/callback"]);
    let mut spa = authgate_app("SpaNamedAuthgate0000000000000001");
    spa["app_type"] = json!("spa");
    let tenant = tenant
        .with_client(app)
        .with_client(spa.clone())
        .google_done_for(EXISTING_APP_ID);
    let (stand, result, out) = run_on(tenant).await;
    let report = result.unwrap();

    let writes = stand.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].method, "PATCH");
    assert_eq!(
        writes[0].path,
        "/api/v2/clients/ExistingAuthgateApp0000000000001"
    );
    let body: Value = serde_json::from_str(&writes[0].body).unwrap();
    assert_eq!(body, json!({"callbacks": [CALLBACK]}));
    let app = &stand.apps_named("authgate", "regular_web")[0];
    assert_eq!(app["callbacks"], json!([CALLBACK]));
    assert_eq!(
        stand.apps_named("authgate", "spa"),
        vec![spa],
        "the SPA is left alone"
    );

    let pages: Vec<String> = stand
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v2/clients")
        .map(|r| {
            serde_urlencoded::from_str::<HashMap<String, String>>(&r.query).unwrap()["page"].clone()
        })
        .collect();
    assert_eq!(pages, ["0", "1"]);

    assert!(!report.app_created);
    assert_eq!(report.app, Step::Changed);
    assert_eq!(report.app_fields, ["callbacks"]);
    assert_eq!(report.connection_enabled, Step::Unchanged);
    assert_eq!(report.domain_connection, Step::Unchanged);
    assert!(out.contains("updated application \"authgate\" (client id ExistingAuthgateApp0000000000001): callbacks"), "{out}");
    assert!(!out.contains("nothing to change"));
    assert_eq!(setting(&out, "AUTHGATE_UPSTREAM_CLIENT_SECRET"), None);
}

#[tokio::test]
async fn dry_run_sends_no_write_and_prints_the_requests() {
    let stand = StandIn::start(Tenant::new()).await;
    let before = stand.state_snapshot();
    let (result, out) = stand.run(|o| o.dry_run = true).await;
    let report = result.unwrap();

    assert!(stand.writes().is_empty(), "{:?}", stand.writes());
    assert!(
        stand
            .requests()
            .iter()
            .all(|r| r.method == "GET" || r.path == "/oauth/token")
    );
    assert_eq!(stand.state_snapshot(), before);
    assert!(!report.changed());
    assert_eq!(report.app, Step::WouldChange);
    assert_eq!(report.connection_enabled, Step::WouldChange);
    assert_eq!(report.domain_connection, Step::WouldChange);
    assert_eq!(report.client_id, None);

    assert!(
        out.contains("create application \"authgate\": would send POST /api/v2/clients"),
        "{out}"
    );
    assert!(out.contains(&format!("      \"{CALLBACK}\"")), "{out}");
    assert!(
        out.contains("\"token_endpoint_auth_method\": \"client_secret_post\""),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "would send PATCH /api/v2/connections/{GOOGLE_ID}/clients"
        )),
        "{out}"
    );
    assert!(
        out.contains("\"client_id\": \"<client id of the new application>\""),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "would send PATCH /api/v2/connections/{GOOGLE_ID}\n"
        )),
        "{out}"
    );
    assert!(out.contains("\"is_domain_connection\": true"), "{out}");
    assert!(
        out.contains("dry run: 3 request(s) not sent; nothing was changed"),
        "{out}"
    );
    assert_eq!(setting(&out, "AUTHGATE_UPSTREAM_CLIENT_ID"), None);
    assert_eq!(setting(&out, "AUTHGATE_UPSTREAM_CLIENT_SECRET"), None);
    assert!(setting(&out, "AUTHGATE_UPSTREAM_ISSUER").is_some());
}

#[tokio::test]
async fn dry_run_of_an_update_prints_only_the_patch() {
    let mut app = authgate_app(EXISTING_APP_ID);
    app["web_origins"] = json!([]);
    app["grant_types"] = json!(["authorization_code", "implicit"]);
    let tenant = Tenant::new()
        .with_client(app)
        .google_done_for(EXISTING_APP_ID);
    let stand = StandIn::start(tenant).await;
    let (result, out) = stand.run(|o| o.dry_run = true).await;
    let report = result.unwrap();
    assert!(stand.writes().is_empty());
    assert_eq!(report.app_fields, ["grant_types", "web_origins"]);
    assert!(out.contains(
        "update application \"authgate\" (client id ExistingAuthgateApp0000000000001): grant_types, web_origins: would send PATCH /api/v2/clients/ExistingAuthgateApp0000000000001"
    ), "{out}");
    assert!(out.contains("dry run: 1 request(s) not sent"), "{out}");
    assert!(!out.contains("/api/v2/connections/"), "{out}");
}

#[tokio::test]
async fn missing_scopes_are_named_exactly() {
    let mut tenant = Tenant::new();
    tenant.scopes = vec![
        "read:clients".into(),
        "read:connections".into(),
        "update:connections".into(),
        "read:users".into(),
    ];
    let (stand, err, out) = fail_on(tenant).await;
    match &err {
        Auth0Error::MissingScopes { missing } => {
            assert_eq!(missing, &["create:clients", "update:clients"]);
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("lacks the scopes create:clients update:clients;"),
        "{msg}"
    );
    assert!(!msg.contains("read:clients"), "{msg}");
    assert!(msg.contains("Machine To Machine Applications"), "{msg}");
    assert!(out.is_empty());
    assert_eq!(stand.requests().len(), 1, "nothing after the token request");
}

#[tokio::test]
async fn scopes_are_read_from_the_token_when_the_response_does_not_list_them() {
    let mut tenant = Tenant::new();
    tenant.token_omits_scope = true;
    let (_, result, _) = run_on(tenant).await;
    assert!(result.unwrap().changed());

    let mut tenant = Tenant::new();
    tenant.token_omits_scope = true;
    tenant.scopes.retain(|s| s != "update:connections");
    let (_, err, _) = fail_on(tenant).await;
    assert!(
        matches!(err, Auth0Error::MissingScopes { missing } if missing == ["update:connections"])
    );
}

#[tokio::test]
async fn bad_management_credentials_give_a_clear_error() {
    let stand = StandIn::start(Tenant::new()).await;
    let wrong = "wrong-management-secret-00c0ffee";
    let (result, out) = stand
        .run(|o| o.mgmt_client_secret = SecretString::from(wrong))
        .await;
    let err = result.unwrap_err();
    assert!(
        matches!(err, Auth0Error::BadCredentials { status: 401, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("rejected the management credentials (401 access_denied: Unauthorized)"),
        "{msg}"
    );
    assert!(msg.contains("AUTH0_CLIENT_SECRET"), "{msg}");
    assert!(!msg.contains(wrong) && !out.contains(wrong));
    assert!(out.is_empty());
    assert_eq!(stand.requests().len(), 1);
}

#[tokio::test]
async fn a_refused_management_token_gives_a_clear_error() {
    let mut tenant = Tenant::new();
    tenant.reject_tokens = true;
    let (_, err, _) = fail_on(tenant).await;
    assert!(matches!(err, Auth0Error::Unauthorized { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("GET /api/v2/clients was refused (401 Unauthorized: Invalid token)"),
        "{msg}"
    );
    assert!(msg.contains("canonical domain"), "{msg}");
}

#[tokio::test]
async fn insufficient_scope_at_the_api_gives_a_clear_error_and_writes_nothing_more() {
    let (stand, err, out) = fail_on(Tenant::new().losing_api_scope("create:clients")).await;
    assert!(matches!(err, Auth0Error::Forbidden { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("POST /api/v2/clients was refused (403 Forbidden: Insufficient scope, expected any of: create:clients (insufficient_scope))"), "{msg}");
    assert!(msg.contains("grant the missing scope"), "{msg}");
    assert_eq!(stand.writes().len(), 1, "only the refused POST");
    assert!(out.is_empty(), "{out}");
}

#[tokio::test]
async fn a_failure_after_creating_the_application_still_prints_its_secret_once() {
    let (stand, err, out) = fail_on(Tenant::new().losing_api_scope("update:connections")).await;
    assert!(matches!(err, Auth0Error::Forbidden { .. }), "{err:?}");
    let secret = new_app_secret(1);
    assert!(out.contains("created application \"authgate\""), "{out}");
    assert!(
        out.contains(
            "the application was created but the setup stopped; run the command again to finish"
        ),
        "{out}"
    );
    assert_eq!(
        setting(&out, "AUTHGATE_UPSTREAM_CLIENT_SECRET"),
        Some(secret.as_str())
    );
    assert_eq!(out.matches(&secret).count(), 1, "{out}");

    // A second run finishes the job without creating another application.
    stand.tenant.lock().unwrap().api_scopes = None;
    stand.clear_requests();
    let (result, out) = stand.run(|_| {}).await;
    let report = result.unwrap();
    assert_eq!(report.app, Step::Unchanged);
    assert_eq!(report.connection_enabled, Step::Changed);
    assert_eq!(report.domain_connection, Step::Changed);
    assert_eq!(stand.count("POST", "/api/v2/clients"), 0);
    assert_eq!(stand.apps_named("authgate", "regular_web").len(), 1);
    assert!(!out.contains(&secret), "{out}");
}

#[tokio::test]
async fn a_missing_connection_is_named_and_nothing_is_written() {
    let mut tenant = Tenant::new();
    tenant.connections.retain(|c| c.name != "google-oauth2");
    let (stand, err, out) = fail_on(tenant).await;
    assert!(
        matches!(&err, Auth0Error::ConnectionNotFound { name, .. } if name == "google-oauth2"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "connection google-oauth2 not found in tenant {DOMAIN}"
        )),
        "{msg}"
    );
    assert!(msg.contains("--connection"), "{msg}");
    assert!(stand.writes().is_empty(), "checked before any write");
    assert!(out.is_empty());

    let stand = StandIn::start(Tenant::new()).await;
    let (result, _) = stand.run(|o| o.connection = "acme-oidc".into()).await;
    assert!(
        result
            .unwrap_err()
            .to_string()
            .contains("connection acme-oidc not found")
    );
    assert!(stand.writes().is_empty());
}

#[tokio::test]
async fn a_connection_answering_404_is_named() {
    let mut tenant = Tenant::new().with_client(authgate_app(EXISTING_APP_ID));
    tenant.connection_clients_404 = true;
    let (stand, err, _) = fail_on(tenant).await;
    let msg = err.to_string();
    assert!(
        matches!(err, Auth0Error::ConnectionNotFound { .. }),
        "{err:?}"
    );
    assert!(msg.contains("connection google-oauth2 not found"), "{msg}");
    assert!(
        msg.contains("The connection does not exist (inexistent_connection)"),
        "{msg}"
    );
    assert!(stand.writes().is_empty());
}

#[tokio::test]
async fn a_429_is_retried_after_retry_after() {
    let tenant = Tenant::new().throttle(Throttle {
        method: "POST",
        path: "/oauth/token",
        count: 1,
        retry_after: Some(1),
        reset_in: 1,
    });
    let stand = StandIn::start(tenant).await;
    let started = Instant::now();
    let (result, out) = stand.run(|_| {}).await;
    assert!(result.unwrap().changed(), "{out}");
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stand.count("POST", "/oauth/token"), 2);
}

#[tokio::test]
async fn a_429_without_retry_after_waits_for_the_rate_limit_reset() {
    let tenant = Tenant::new().throttle(Throttle {
        method: "GET",
        path: "/api/v2/connections",
        count: 1,
        retry_after: None,
        reset_in: 1,
    });
    let (stand, result, out) = run_on(tenant).await;
    assert!(result.unwrap().changed(), "{out}");
    assert_eq!(stand.count("GET", "/api/v2/connections"), 2);
}

#[tokio::test]
async fn rate_limiting_that_outlasts_the_bounds_fails_clearly() {
    // Still refused after three retries.
    let tenant = Tenant::new().throttle(Throttle {
        method: "GET",
        path: "/api/v2/clients",
        count: u32::MAX,
        retry_after: Some(0),
        reset_in: 0,
    });
    let (stand, err, _) = fail_on(tenant).await;
    assert!(matches!(err, Auth0Error::RateLimited { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("still refused after 3 retries; run again later"),
        "{err}"
    );
    assert_eq!(stand.count("GET", "/api/v2/clients"), 4);
    assert!(stand.writes().is_empty());

    // A wait beyond 30 s is not attempted.
    let tenant = Tenant::new().throttle(Throttle {
        method: "POST",
        path: "/oauth/token",
        count: 1,
        retry_after: Some(60),
        reset_in: 60,
    });
    let started = Instant::now();
    let (stand, err, _) = fail_on(tenant).await;
    let msg = err.to_string();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        msg.contains("POST /oauth/token: Auth0 is rate limiting (429): asked to wait 60 s"),
        "{msg}"
    );
    assert_eq!(stand.count("POST", "/oauth/token"), 1);
}

#[tokio::test]
async fn secrets_echoed_by_auth0_are_scrubbed_from_errors() {
    let mut tenant = Tenant::new();
    tenant.echo_secret_on_token = true;
    // `run` asserts that neither the output nor the error holds the secret.
    let (_, err, _) = fail_on(tenant).await;
    let msg = err.to_string();
    assert!(msg.contains("client_secret=[redacted]"), "{msg}");
}

#[tokio::test]
async fn several_applications_of_the_same_name_are_refused() {
    let tenant = Tenant::new()
        .with_client(authgate_app(EXISTING_APP_ID))
        .with_client(authgate_app("ExistingAuthgateApp0000000000002"));
    let (stand, err, _) = fail_on(tenant).await;
    let msg = err.to_string();
    assert!(msg.contains("several regular web applications are named \"authgate\" (ExistingAuthgateApp0000000000001, ExistingAuthgateApp0000000000002)"), "{msg}");
    assert!(stand.writes().is_empty());
}

#[tokio::test]
async fn the_printed_settings_are_accepted_by_authgate() {
    let (_, result, out) = run_on(Tenant::new()).await;
    result.unwrap();
    let mut raw = RawConfig::default();
    raw.set("AUTHGATE_PUBLIC_URL", PUBLIC_URL);
    raw.set("AUTHGATE_ALLOW_ANY_USER", "true");
    for line in out.lines().filter(|l| !l.starts_with('#')) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key: &'static str = match key {
            "AUTHGATE_UPSTREAM_ISSUER" => "AUTHGATE_UPSTREAM_ISSUER",
            "AUTHGATE_UPSTREAM_CLIENT_ID" => "AUTHGATE_UPSTREAM_CLIENT_ID",
            "AUTHGATE_UPSTREAM_CLIENT_SECRET" => "AUTHGATE_UPSTREAM_CLIENT_SECRET",
            "AUTHGATE_UPSTREAM_AUTH_METHOD" => "AUTHGATE_UPSTREAM_AUTH_METHOD",
            "AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS" => "AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS",
            other => panic!("unexpected setting {other}"),
        };
        raw.set(key, value);
    }
    let settings = Settings::from_raw(&raw).unwrap();
    let upstream = settings.upstream.unwrap();
    assert_eq!(upstream.issuer, format!("https://{DOMAIN}/"));
    assert_eq!(
        upstream.callback_url, CALLBACK,
        "the callback registered in Auth0"
    );
    assert!(!upstream.auth_method_basic);
    assert_eq!(
        upstream.authorize_params,
        vec![("connection".to_owned(), "google-oauth2".to_owned())]
    );
}

#[derive(clap::Parser, Debug)]
struct Cli {
    #[command(flatten)]
    setup: SetupArgs,
}

#[test]
fn setup_flags() {
    use clap::{CommandFactory, Parser};
    let secret = "flag-secret-0123456789abcdef";
    let cli = Cli::try_parse_from([
        "authgate",
        "--domain",
        DOMAIN,
        "--client-id",
        M2M_ID,
        "--client-secret",
        secret,
        "--public-url",
        PUBLIC_URL,
    ])
    .unwrap();
    assert!(
        !format!("{cli:?}").contains(secret),
        "Debug shows no secret"
    );
    let opts = cli.setup.options().unwrap();
    assert_eq!(opts.app_name, "authgate");
    assert_eq!(opts.connection, "google-oauth2");
    assert!(!opts.dry_run);
    assert!(!format!("{opts:?}").contains(secret));

    let missing = SetupArgs {
        client_secret: None,
        ..cli.setup.clone()
    };
    assert_eq!(
        missing.options().unwrap_err().to_string(),
        "auth0 setup: --client-secret (or AUTH0_CLIENT_SECRET) is required"
    );
    let elsewhere = SetupArgs {
        api_base: Some("https://evil.example.com".into()),
        ..cli.setup.clone()
    };
    let msg = elsewhere.options().unwrap_err().to_string();
    assert!(
        msg.contains("--api-base (AUTHGATE_AUTH0_API_BASE) is for tests only"),
        "{msg}"
    );
    let plain_http = SetupArgs {
        public_url: Some("http://mcp.example.com".into()),
        ..cli.setup.clone()
    };
    assert!(
        plain_http
            .options()
            .unwrap_err()
            .to_string()
            .contains("--public-url")
    );

    let cli = Cli::try_parse_from([
        "authgate",
        "--domain",
        DOMAIN,
        "--client-id",
        M2M_ID,
        "--client-secret",
        secret,
        "--public-url",
        PUBLIC_URL,
        "--app-name",
        "gate",
        "--connection",
        "github",
        "--dry-run",
        "--api-base",
        "http://127.0.0.1:9",
    ])
    .unwrap();
    let opts = cli.setup.options().unwrap();
    assert_eq!(
        (opts.app_name.as_str(), opts.connection.as_str()),
        ("gate", "github")
    );
    assert!(opts.dry_run);
    assert_eq!(opts.api_base.as_deref(), Some("http://127.0.0.1:9"));

    let help = Cli::command().render_long_help().to_string();
    assert!(help.contains("--client-secret") && help.contains("AUTH0_CLIENT_SECRET"));
    assert!(!help.contains("api-base"), "the test switch is hidden");
}
