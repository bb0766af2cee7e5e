//! MCP sessions are bound to the caller they were issued to: another user, the same user through
//! another client, or anyone after the session ended or went idle, gets a 404 JSON-RPC error and
//! nothing reaches the MCP server. End to end with the official TypeScript SDK server (stateful),
//! plus a scripted upstream for the answers a real server rarely gives.

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authgate::oauth::secrets::{Hashed, kind};
use axum::Router;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::both_backends;
use crate::browser::{Browser, location};
use crate::flow::{
    RegisteredClient, approve_and_dev_login, authorize_url, new_pkce, open_consent, param, redeem,
    register_claude,
};
use crate::helpers::{Backend, TestApp, spawn_app_with};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/clients");

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

fn echo(text: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"echo","arguments":{{"text":"{text}"}}}}}}"#
    )
}

/// The TypeScript SDK server from tests/e2e/clients, with its request log (one stderr line per
/// request that reached it).
struct McpServer {
    url: String,
    log: Arc<Mutex<Vec<String>>>,
    _child: Child,
}

impl McpServer {
    async fn start() -> Self {
        assert!(
            std::path::Path::new(DIR)
                .join("node_modules/@modelcontextprotocol/sdk")
                .exists(),
            "tests/e2e/clients has no node_modules: run `npm ci` there (scripts/test does it)"
        );
        let mut child = Command::new("node")
            .arg("mcp-server.mjs")
            .current_dir(DIR)
            .env("PORT", "0")
            .env("MCP_JSON_RESPONSE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed");
        let url =
            crate::helpers::ready_line(&mut child, "MCP SERVER READY ", "the MCP server").await;
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                if line.starts_with("[mcp-server] ") && line.contains(" /mcp ") {
                    sink.lock().unwrap().push(line);
                }
            }
        });
        Self {
            url,
            log,
            _child: child,
        }
    }

    /// The requests it has received, once there are `n` (the log is read asynchronously).
    async fn requests(&self, n: usize) -> Vec<String> {
        for _ in 0..200 {
            let lines = self.log.lock().unwrap().clone();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "the MCP server logged fewer than {n} requests: {:#?}",
            self.log.lock().unwrap()
        );
    }
}

fn sub_of(log_line: &str) -> &str {
    log_line
        .split(' ')
        .find_map(|w| w.strip_prefix("x-authgate-sub="))
        .unwrap()
}

/// An access token for `email`, logged in through the development login, for `client`.
async fn token_as(app: &TestApp, client: &RegisteredClient, email: &str) -> String {
    let browser = Browser::new();
    let pkce = new_pkce();
    let url = authorize_url(app, &client.id, &client.redirect_uri, &pkce, &[]);
    let request = open_consent(&browser, &url).await;
    let done = approve_and_dev_login(&browser, app, &request, email).await;
    assert_eq!(done.status(), 303);
    let code = param(&location(&done), "code").expect("a code");
    let resp = redeem(app, client, &code, &pkce).await;
    assert_eq!(resp.status(), 200);
    let grant: Value = resp.json().await.unwrap();
    grant["access_token"].as_str().unwrap().to_owned()
}

async fn send(
    app: &TestApp,
    method: Method,
    token: &str,
    session: Option<&str>,
    body: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .http
        .request(method, app.url("/mcp"))
        .bearer_auth(token)
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18");
    if let Some(s) = session {
        req = req.header("Mcp-Session-Id", s);
    }
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(b.to_owned());
    }
    req.send().await.unwrap()
}

/// initialize + notifications/initialized: the new session's id.
async fn open_session(app: &TestApp, token: &str) -> String {
    let init = send(app, Method::POST, token, None, Some(INIT)).await;
    assert_eq!(init.status(), 200);
    let sid = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let ready = send(app, Method::POST, token, Some(&sid), Some(INITIALIZED)).await;
    assert_eq!(ready.status(), 202);
    sid
}

async fn echo_works(app: &TestApp, token: &str, sid: &str, text: &str) {
    let resp = send(app, Method::POST, token, Some(sid), Some(&echo(text))).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["result"]["content"][0]["text"], text, "{body}");
}

async fn assert_session_not_found(resp: reqwest::Response, what: &str) {
    assert_eq!(resp.status(), 404, "{what}");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"),
        "{what}"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0", "{what}: {body}");
    assert_eq!(body["id"], Value::Null, "{what}: {body}");
    assert_eq!(body["error"]["code"], -32001, "{what}: {body}");
    assert_eq!(
        body["error"]["message"], "Session not found",
        "{what}: {body}"
    );
}

fn binding_hash(sid: &str) -> Hashed<kind::McpSession> {
    Hashed::of(sid)
}

async fn another_callers_session_is_not_found_and_never_forwarded(backend: Backend) {
    let server = McpServer::start().await;
    let upstream = server.url.clone();
    let app = spawn_app_with(backend, move |raw| {
        raw.set("AUTHGATE_MCP_UPSTREAM", upstream)
    })
    .await;
    let claude = register_claude(&app).await;
    let other_client = register_claude(&app).await;
    let ann = token_as(&app, &claude, "ann@example.com").await;
    let bob = token_as(&app, &claude, "bob@example.com").await;
    let ann_elsewhere = token_as(&app, &other_client, "ann@example.com").await;

    let sid = open_session(&app, &ann).await;
    echo_works(&app, &ann, &sid, "ann-1").await;
    let log = server.requests(3).await;
    let ann_sub = sub_of(&log[0]).to_owned();
    assert!(log[2].contains(&format!("session={sid}")), "{log:#?}");

    for (what, method, token, body) in [
        (
            "another user",
            Method::POST,
            &bob,
            Some(echo("bob").as_str()),
        ),
        ("another user's GET stream", Method::GET, &bob, None),
        ("another user's DELETE", Method::DELETE, &bob, None),
        (
            "the same user through another client",
            Method::POST,
            &ann_elsewhere,
            Some(echo("ann-elsewhere").as_str()),
        ),
    ] {
        let resp = send(&app, method, token, Some(&sid), body).await;
        assert_session_not_found(resp, what).await;
    }
    let invented = send(
        &app,
        Method::POST,
        &ann,
        Some("0f0e0d0c-never-issued"),
        Some(&echo("x")),
    )
    .await;
    assert_session_not_found(invented, "an id authgate never saw issued").await;

    // The owner keeps working, and nothing of the above reached the MCP server.
    echo_works(&app, &ann, &sid, "ann-2").await;
    let log = server.requests(4).await;
    assert_eq!(log.len(), 4, "only the owner's requests arrive: {log:#?}");
    assert!(
        log[3].contains(&format!("session={sid}")) && sub_of(&log[3]) == ann_sub,
        "{log:#?}"
    );

    // Bob, refused, starts his own session, which Ann cannot use either.
    let bob_sid = open_session(&app, &bob).await;
    assert_ne!(bob_sid, sid);
    echo_works(&app, &bob, &bob_sid, "bob-1").await;
    assert_session_not_found(
        send(&app, Method::POST, &ann, Some(&bob_sid), Some(&echo("x"))).await,
        "Ann with Bob's session",
    )
    .await;

    // DELETE by the owner ends the session and its binding.
    let resource = app.url("/mcp");
    let deleted = send(&app, Method::DELETE, &ann, Some(&sid), None).await;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    assert!(
        app.store
            .get_mcp_session(&binding_hash(&sid), &resource)
            .await
            .unwrap()
            .is_none(),
        "the binding is removed"
    );
    let log = server.requests(8).await;
    assert!(log[7].starts_with("[mcp-server] DELETE"), "{log:#?}");
    assert_session_not_found(
        send(&app, Method::POST, &ann, Some(&sid), Some(&echo("x"))).await,
        "the owner after DELETE",
    )
    .await;
    echo_works(&app, &bob, &bob_sid, "bob-2").await;
    let log = server.requests(9).await;
    assert_eq!(log.len(), 9, "{log:#?}");
    assert!(log[8].contains(&format!("session={bob_sid}")), "{log:#?}");
}

async fn idle_sessions_expire_and_are_touched_sparingly(backend: Backend) {
    let server = McpServer::start().await;
    let upstream = server.url.clone();
    let app = spawn_app_with(backend, move |raw| {
        raw.set("AUTHGATE_MCP_UPSTREAM", upstream);
        raw.set("AUTHGATE_MCP_SESSION_TTL", "10m");
    })
    .await;
    let claude = register_claude(&app).await;
    let ann = token_as(&app, &claude, "ann@example.com").await;
    let t0 = app.clock_now();
    let sid = open_session(&app, &ann).await;
    let resource = app.url("/mcp");
    let binding = || async {
        app.store
            .get_mcp_session(&binding_hash(&sid), &resource)
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(binding().await.expires_at, t0 + 600);

    app.clock.advance(500);
    echo_works(&app, &ann, &sid, "at 500").await;
    app.clock.advance(30);
    echo_works(&app, &ann, &sid, "at 530").await;
    let b = binding().await;
    assert_eq!(
        (b.last_used_at, b.expires_at),
        (t0 + 500, t0 + 1100),
        "touched on use, but not again within a minute"
    );
    app.clock.advance(560);
    echo_works(&app, &ann, &sid, "at 1090").await;
    let log = server.requests(5).await;
    app.clock.advance(601);
    assert_session_not_found(
        send(&app, Method::POST, &ann, Some(&sid), Some(&echo("late"))).await,
        "idle for longer than the TTL",
    )
    .await;
    let fresh = open_session(&app, &ann).await;
    echo_works(&app, &ann, &fresh, "new session").await;
    let after = server.requests(8).await;
    assert_eq!(after.len(), 8, "the expired request was not forwarded");
    assert!(after[5].contains("session=-"), "{after:#?}");
    assert_eq!(log[..], after[..5]);
}

async fn database_failure_fails_closed(backend: Backend) {
    let server = McpServer::start().await;
    let upstream = server.url.clone();
    let app = spawn_app_with(backend, move |raw| {
        raw.set("AUTHGATE_MCP_UPSTREAM", upstream)
    })
    .await;
    let claude = register_claude(&app).await;
    let ann = token_as(&app, &claude, "ann@example.com").await;
    let sid = open_session(&app, &ann).await;
    let rename = |from: &'static str, to: &'static str| {
        let url = app.database_url();
        async move {
            let sql = format!("ALTER TABLE {from} RENAME TO {to}");
            match backend {
                Backend::Sqlite => {
                    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&pool)
                        .await
                        .unwrap();
                    pool.close().await;
                }
                Backend::Postgres => {
                    let pool = sqlx::PgPool::connect(&url).await.unwrap();
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&pool)
                        .await
                        .unwrap();
                    pool.close().await;
                }
            }
        }
    };
    rename("mcp_sessions", "mcp_sessions_away").await;
    let resp = send(&app, Method::POST, &ann, Some(&sid), Some(&echo("x"))).await;
    assert_eq!(resp.status(), 503, "the binding cannot be checked");
    let init = send(&app, Method::POST, &ann, None, Some(INIT)).await;
    assert_eq!(init.status(), 503, "a session that cannot be bound");
    assert!(init.headers().get("mcp-session-id").is_none());
    rename("mcp_sessions_away", "mcp_sessions").await;
    echo_works(&app, &ann, &sid, "back").await;
    let log = server.requests(4).await;
    assert_eq!(
        log.len(),
        4,
        "the unchecked request was not forwarded: {log:#?}"
    );
    assert!(log[2].contains("session=-"), "{log:#?}");
}

both_backends!(
    another_callers_session_is_not_found_and_never_forwarded,
    idle_sessions_expire_and_are_touched_sparingly,
    database_failure_fails_closed,
);

// ---- a scripted upstream ----

/// Every session it issues is called `fixed`; `"gone"` gets 404 and `DELETE` gets 405.
#[derive(Default)]
struct Scripted {
    requests: AtomicUsize,
}

async fn scripted(
    State(up): State<Arc<Scripted>>,
    method: Method,
    body: String,
) -> axum::response::Response {
    up.requests.fetch_add(1, Ordering::SeqCst);
    if method == Method::DELETE {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    if body.contains("\"gone\"") {
        return (
            StatusCode::NOT_FOUND,
            [("content-type", "application/json")],
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"Session not found"}}"#,
        )
            .into_response();
    }
    (
        [
            ("content-type", "application/json"),
            ("mcp-session-id", "fixed"),
        ],
        r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
    )
        .into_response()
}

async fn scripted_app(backend: Backend) -> (TestApp, Arc<Scripted>) {
    let up = Arc::new(Scripted::default());
    let router = Router::new()
        .route("/mcp", any(scripted))
        .with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let app = spawn_app_with(backend, move |raw| raw.set("AUTHGATE_MCP_UPSTREAM", url)).await;
    (app, up)
}

async fn the_upstream_ending_a_session_ends_its_binding(backend: Backend) {
    let (app, up) = scripted_app(backend).await;
    let claude = register_claude(&app).await;
    let ann = token_as(&app, &claude, "ann@example.com").await;
    let init = send(&app, Method::POST, &ann, None, Some(INIT)).await;
    assert_eq!(init.headers()["mcp-session-id"], "fixed");

    // A DELETE the upstream refuses (405) leaves the session usable.
    let refused = send(&app, Method::DELETE, &ann, Some("fixed"), None).await;
    assert_eq!(refused.status(), 405);
    let ok = send(&app, Method::POST, &ann, Some("fixed"), Some(&echo("x"))).await;
    assert_eq!(ok.status(), 200);

    let gone = send(&app, Method::POST, &ann, Some("fixed"), Some(&echo("gone"))).await;
    assert_eq!(gone.status(), 404, "the upstream's own 404");
    assert_eq!(up.requests.load(Ordering::SeqCst), 4);
    let after = send(&app, Method::POST, &ann, Some("fixed"), Some(&echo("x"))).await;
    assert_session_not_found(after, "after the upstream ended it").await;
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        4,
        "refused by authgate, not forwarded"
    );
}

async fn an_upstream_reissuing_a_bound_id_to_another_caller_is_refused(backend: Backend) {
    let (app, up) = scripted_app(backend).await;
    let claude = register_claude(&app).await;
    let ann = token_as(&app, &claude, "ann@example.com").await;
    let bob = token_as(&app, &claude, "bob@example.com").await;
    assert_eq!(
        send(&app, Method::POST, &ann, None, Some(INIT))
            .await
            .status(),
        200
    );
    let bob_init = send(&app, Method::POST, &bob, None, Some(INIT)).await;
    assert_eq!(bob_init.status(), 502);
    assert!(
        bob_init.headers().get("mcp-session-id").is_none(),
        "Bob is not handed Ann's session id"
    );
    assert_eq!(
        send(&app, Method::POST, &ann, Some("fixed"), Some(&echo("x")))
            .await
            .status(),
        200,
        "Ann's binding stands"
    );

    let forwarded = up.requests.load(Ordering::SeqCst);
    let twice = app
        .http
        .post(app.url("/mcp"))
        .bearer_auth(&ann)
        .header("Content-Type", "application/json")
        .header("Mcp-Session-Id", "fixed")
        .header("Mcp-Session-Id", "other")
        .body(echo("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400, "two session ids are ambiguous");
    assert_eq!(up.requests.load(Ordering::SeqCst), forwarded);
}

mod scripted_upstream {
    use super::*;
    both_backends!(
        the_upstream_ending_a_session_ends_its_binding,
        an_upstream_reissuing_a_bound_id_to_another_caller_is_refused,
    );
}
