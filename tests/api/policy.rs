//! Per-tool policy at the gateway, against a scripted MCP server behind authgate: `tools/list`
//! filtered (JSON and SSE, event by event), forbidden calls answered with a JSON-RPC error and
//! step-up with 403 `insufficient_scope`, mirrored headers checked against the body, bodies the
//! policy cannot judge refused, a resource without rules left alone, the built-in server under
//! rules, and the audit rows of tool calls.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authgate::store::{AuditEvent, AuditQuery};
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::any;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::both_backends;
use crate::browser::{Browser, location};
use crate::flow::{self, new_pkce, param, redeem, register_claude};
use crate::helpers::{Backend, TestApp, spawn_app_with};

/// `delete_*` needs the `admin` scope; `payroll` is for `hr.example` people only.
pub const RULES: &str = r#"
[[tool]]
name = "delete_*"
scopes = ["admin"]

[[tool]]
name = "payroll"
allow_domains = ["hr.example"]
"#;

#[derive(Default)]
struct Upstream {
    bodies: Mutex<Vec<String>>,
    /// The `Accept-Encoding` of each request, if any.
    encodings: Mutex<Vec<Option<String>>>,
}

impl Upstream {
    fn seen(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

/// A scripted MCP server: `tools/list` names echo, delete_record and payroll; `tools/call`
/// answers "called <name>". `X-Answer: sse` answers with an SSE stream: a progress notification
/// at once, the answer 400 ms later. `X-Answer: slow` answers JSON after 600 ms. `GET` replays,
/// as a resumed stream may, the answer to a `tools/list` of an earlier request.
async fn upstream_mcp(
    State(up): State<Arc<Upstream>>,
    method: axum::http::Method,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    if method == axum::http::Method::GET {
        let replay = "id: ev-9
data: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{\"tools\":[{\"name\":\"payroll\"},{\"name\":\"echo\"}]}}

";
        return ([("content-type", "text/event-stream")], replay).into_response();
    }
    up.bodies.lock().unwrap().push(body.clone());
    up.encodings.lock().unwrap().push(
        headers
            .get("accept-encoding")
            .map(|v| v.to_str().unwrap().to_owned()),
    );
    let msg: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let result = match msg["method"].as_str() {
        Some("tools/list") => json!({"tools": [
            {"name": "echo", "inputSchema": {"type": "object"}},
            {"name": "delete_record", "inputSchema": {"type": "object"}},
            {"name": "payroll", "inputSchema": {"type": "object"}}
        ], "nextCursor": "page-2"}),
        Some("tools/call") => {
            json!({"content": [{"type": "text", "text": format!("called {}", msg["params"]["name"].as_str().unwrap_or("?"))}]})
        }
        _ => json!({}),
    };
    let answer = json!({"jsonrpc": "2.0", "id": msg["id"], "result": result}).to_string();
    match headers.get("x-answer").and_then(|v| v.to_str().ok()) {
        Some("sse") => {
            let progress = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1,\"tools\":[{\"name\":\"payroll\"}]}}\n\n".to_owned();
            let last = format!("event: message\r\nid: ev-2\r\ndata: {answer}\r\n\r\n");
            let stream =
                futures::stream::iter([progress, last])
                    .enumerate()
                    .then(|(i, e)| async move {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_millis(400)).await;
                        }
                        Ok::<_, std::io::Error>(e)
                    });
            (
                [("content-type", "text/event-stream")],
                axum::body::Body::from_stream(stream),
            )
                .into_response()
        }
        Some("gzip") => (
            [
                ("content-type", "application/json"),
                ("content-encoding", "gzip"),
            ],
            answer,
        )
            .into_response(),
        other => {
            if other == Some("slow") {
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            ([("content-type", "application/json")], answer).into_response()
        }
    }
}

async fn spawn_upstream() -> (String, Arc<Upstream>) {
    let up = Arc::new(Upstream::default());
    let router = Router::new()
        .route("/mcp", any(upstream_mcp))
        .with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, up)
}

/// authgate with `RULES` on `/mcp`, and `/plain/mcp` without rules, both forwarding to one
/// scripted MCP server.
async fn policy_app(backend: Backend) -> (TestApp, Arc<Upstream>) {
    let (url, up) = spawn_upstream().await;
    let toml = format!("{RULES}\n[[resource]]\npath = \"/plain/mcp\"\nupstream = \"{url}\"\n");
    let app = spawn_app_with(backend, move |raw| {
        raw.set("AUTHGATE_MCP_UPSTREAM", url);
        raw.set("AUTHGATE_MCP_MAX_BODY", "64KiB");
        raw.overlay_toml(&toml, "policy.toml").unwrap();
    })
    .await;
    (app, up)
}

/// An access token for `email`, through consent and the development login.
pub async fn token(app: &TestApp, email: &str, extra: &[(&str, &str)]) -> Value {
    let client = register_claude(app).await;
    let browser = Browser::new();
    let pkce = new_pkce();
    let url = flow::authorize_url(app, &client.id, &client.redirect_uri, &pkce, extra);
    let request = flow::open_consent(&browser, &url).await;
    let done = flow::approve_and_dev_login(&browser, app, &request, email).await;
    assert_eq!(done.status(), 303);
    let code = param(&location(&done), "code").expect("a code");
    let resp = redeem(app, &client, &code, &pkce).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn at(grant: &Value) -> &str {
    grant["access_token"].as_str().unwrap()
}

pub async fn mcp(
    app: &TestApp,
    path: &str,
    token: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url(path))
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

fn call_body(id: u32, tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {"text": "secret-argument-123"}}}).to_string()
}

fn names(answer: &Value) -> Vec<String> {
    answer["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

pub async fn audit_rows(app: &TestApp) -> Vec<AuditEvent> {
    app.state.audit.flush().await;
    app.store
        .list_audit_events(&AuditQuery {
            limit: 1000,
            ..AuditQuery::default()
        })
        .await
        .unwrap()
}

async fn tools_list_is_filtered_in_json_and_sse_answers(backend: Backend) {
    let (app, up) = policy_app(backend).await;
    let ann = token(&app, "ann@example.com", &[]).await;
    let json_answer: Value = mcp(&app, "/mcp", at(&ann), LIST, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        names(&json_answer),
        ["echo", "delete_record"],
        "payroll is hidden; delete_record stays (a step-up away)"
    );
    assert_eq!(
        json_answer["result"]["nextCursor"], "page-2",
        "the rest is kept"
    );
    assert_eq!(json_answer["id"], 1);

    let started = Instant::now();
    let resp = mcp(&app, "/mcp", at(&ann), LIST, &[("X-Answer", "sse")]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let mut first_at = None;
    while let Some(chunk) = stream.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        first_at.get_or_insert(started.elapsed());
    }
    assert!(
        first_at.unwrap() < Duration::from_millis(350),
        "the first event is not held back: {first_at:?}"
    );
    let events: Vec<&str> = text
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    assert_eq!(events.len(), 2, "{text}");
    assert!(
        text.starts_with("event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1,\"tools\":[{\"name\":\"payroll\"}]}}\n\n"),
        "other events pass byte for byte: {text}"
    );
    assert!(
        events[1].starts_with("event: message\nid: ev-2\ndata: "),
        "{text}"
    );
    let data: Value = serde_json::from_str(events[1].split("data: ").nth(1).unwrap()).unwrap();
    assert_eq!(names(&data), ["echo", "delete_record"]);

    let replay = app
        .http
        .get(app.url("/mcp"))
        .bearer_auth(at(&ann))
        .header("Accept", "text/event-stream")
        .header("Last-Event-ID", "ev-8")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        replay,
        "id: ev-9\ndata: {\"id\":9,\"jsonrpc\":\"2.0\",\"result\":{\"tools\":[{\"name\":\"echo\"}]}}\n\n",
        "a resumed stream is filtered too"
    );

    let resp = mcp(
        &app,
        "/mcp",
        at(&ann),
        LIST,
        &[("Accept-Encoding", "gzip, br")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        up.encodings.lock().unwrap().last().unwrap(),
        &None,
        "no compressed answer to tools/list is asked for: it could not be filtered"
    );
    let resp = mcp(&app, "/mcp", at(&ann), LIST, &[("X-Answer", "gzip")]).await;
    assert_eq!(
        resp.status(),
        502,
        "an encoded answer is not passed on unfiltered"
    );
    let call = mcp(
        &app,
        "/mcp",
        at(&ann),
        &call_body(1, "echo"),
        &[("Accept-Encoding", "gzip")],
    )
    .await;
    assert_eq!(call.status(), 200);
    assert_eq!(
        up.encodings.lock().unwrap().last().unwrap().as_deref(),
        Some("gzip"),
        "other requests keep theirs"
    );

    let eve = token(&app, "eve@hr.example", &[]).await;
    let eve_list: Value = mcp(&app, "/mcp", at(&eve), LIST, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&eve_list), ["echo", "delete_record", "payroll"]);
    assert_eq!(
        up.seen().len(),
        6,
        "every tools/list (and the call) reached the server"
    );
}

async fn forbidden_calls_get_a_jsonrpc_error_and_never_reach_the_server(backend: Backend) {
    let (app, up) = policy_app(backend).await;
    let ann = token(&app, "ann@example.com", &[("scope", "mcp admin")]).await;
    let resp = mcp(&app, "/mcp", at(&ann), &call_body(7, "payroll"), &[]).await;
    assert_eq!(resp.status(), 200, "a JSON-RPC error answers the call");
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["error"]["code"], -32602);
    assert!(answer.get("result").is_none());
    let notification = r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"payroll"}}"#;
    let resp = mcp(&app, "/mcp", at(&ann), notification, &[]).await;
    assert_eq!(resp.status(), 403, "nothing to answer a notification with");
    let batch = format!("[{},{}]", call_body(1, "echo"), call_body(2, "payroll"));
    let resp = mcp(&app, "/mcp", at(&ann), &batch, &[]).await;
    assert_eq!(
        resp.status(),
        403,
        "a batch with a forbidden call goes nowhere"
    );
    assert_eq!(
        up.seen(),
        Vec::<String>::new(),
        "nothing reached the MCP server"
    );

    let echo: Value = mcp(&app, "/mcp", at(&ann), &call_body(3, "echo"), &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(echo["result"]["content"][0]["text"], "called echo");
    let eve = token(&app, "eve@hr.example", &[]).await;
    let resp = mcp(&app, "/mcp", at(&eve), &call_body(4, "payroll"), &[]).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["result"]["content"][0]["text"], "called payroll");
    assert_eq!(up.seen().len(), 2);
}

async fn missing_scope_gets_a_step_up_challenge(backend: Backend) {
    let (app, up) = policy_app(backend).await;
    let prm: Value = app
        .http
        .get(app.url("/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        prm["scopes_supported"],
        json!(["admin", "mcp"]),
        "admin can be asked for"
    );
    let ann = token(&app, "ann@example.com", &[]).await;
    assert_eq!(ann["scope"], "mcp", "granted only when asked for");
    let resp = mcp(&app, "/mcp", at(&ann), &call_body(1, "delete_record"), &[]).await;
    assert_eq!(resp.status(), 403);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    for part in [
        "Bearer ",
        "error=\"insufficient_scope\"",
        "scope=\"admin mcp\"",
        &format!(
            "resource_metadata=\"{}\"",
            app.url("/.well-known/oauth-protected-resource/mcp")
        ),
    ] {
        assert!(challenge.contains(part), "{part} in {challenge}");
    }
    let batch = format!("[{},{}]", call_body(1, "echo"), call_body(2, "delete_x"));
    let resp = mcp(&app, "/mcp", at(&ann), &batch, &[]).await;
    assert_eq!(resp.status(), 403);
    assert_eq!(up.seen(), Vec::<String>::new());
    let unauth = app
        .http
        .post(app.url("/mcp"))
        .body(LIST)
        .send()
        .await
        .unwrap();
    assert!(
        unauth.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("scope=\"mcp\""),
        "the first challenge asks for what every call needs, not more"
    );

    let admin = token(&app, "ann@example.com", &[("scope", "mcp admin")]).await;
    assert_eq!(admin["scope"], "admin mcp");
    let resp = mcp(
        &app,
        "/mcp",
        at(&admin),
        &call_body(2, "delete_record"),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(
        answer["result"]["content"][0]["text"],
        "called delete_record"
    );
}

async fn mirrored_headers_must_match_the_body(backend: Backend) {
    let (app, up) = policy_app(backend).await;
    let ann = token(&app, "ann@example.com", &[]).await;
    let echo = call_body(5, "echo");
    for headers in [
        vec![("Mcp-Method", "tools/list")],
        vec![("Mcp-Method", "tools/call"), ("Mcp-Name", "payroll")],
        vec![("Mcp-Method", "tools/call")],
        vec![("Mcp-Name", "=?base64?cGF5cm9sbA==?=")],
        vec![("Mcp-Name", "echo"), ("Mcp-Name", "echo")],
    ] {
        let resp = mcp(&app, "/mcp", at(&ann), &echo, &headers).await;
        assert_eq!(resp.status(), 400, "{headers:?}");
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["error"]["code"], -32020, "{headers:?}");
        assert_eq!(answer["id"], 5);
    }
    assert_eq!(up.seen(), Vec::<String>::new());
    for headers in [
        vec![],
        vec![("Mcp-Method", "tools/call"), ("Mcp-Name", "echo")],
        vec![
            ("Mcp-Method", "tools/call"),
            ("Mcp-Name", "=?base64?ZWNobw==?="),
        ],
    ] {
        let resp = mcp(&app, "/mcp", at(&ann), &echo, &headers).await;
        assert_eq!(resp.status(), 200, "{headers:?}");
    }
    assert_eq!(
        up.seen(),
        vec![echo.clone(), echo.clone(), echo],
        "the same bytes"
    );
}

async fn bodies_the_policy_cannot_judge_are_refused(backend: Backend) {
    let (app, up) = policy_app(backend).await;
    let ann = token(&app, "ann@example.com", &[]).await;
    for (body, code) in [
        ("{not json", -32700),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"payroll"}}"#,
            -32700,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"payroll"}}"#,
            -32700,
        ),
        (r#"[]"#, -32600),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":7}}"#,
            -32602,
        ),
    ] {
        let resp = mcp(&app, "/mcp", at(&ann), body, &[]).await;
        assert_eq!(resp.status(), 400, "{body}");
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["error"]["code"], code, "{body}");
    }
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"t":"{}"}}}}}}"#,
        "x".repeat(80 * 1024)
    );
    let resp = mcp(&app, "/mcp", at(&ann), &huge, &[]).await;
    assert_eq!(resp.status(), 413, "over AUTHGATE_MCP_MAX_BODY");
    // Without a Content-Length the limit cuts the body while the policy reads it: still 413.
    // Just over the limit, so that the client has sent it all before the answer comes.
    let over = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"t":"{}"}}}}}}"#,
        "x".repeat(64 * 1024)
    );
    // The answer comes before the body has been read to its end, and the connection then
    // closes; a client can lose the answer to that race, so it tries again.
    let mut status = None;
    for _ in 0..5 {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = over
            .as_bytes()
            .chunks(1024)
            .map(|c| Ok(c.to_vec()))
            .collect();
        let sent = app
            .http
            .post(app.url("/mcp"))
            .bearer_auth(at(&ann))
            .header("Content-Type", "application/json")
            .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
            .send()
            .await;
        if let Ok(resp) = sent {
            status = Some(resp.status());
            break;
        }
    }
    assert_eq!(
        status.map(|s| s.as_u16()),
        Some(413),
        "chunked, over the limit"
    );
    assert_eq!(
        up.seen(),
        Vec::<String>::new(),
        "nothing reached the MCP server"
    );
    let rows = audit_rows(&app).await;
    let malformed = rows
        .iter()
        .filter(|r| r.kind == "policy_refusal" && r.outcome == "malformed")
        .count();
    assert_eq!(malformed, 5, "{rows:#?}");
}

async fn a_resource_without_rules_is_not_read(backend: Backend) {
    let (app, up) = policy_app(backend).await;
    let plain = token(
        &app,
        "ann@example.com",
        &[("resource", &app.url("/plain/mcp"))],
    )
    .await;
    let resp = mcp(
        &app,
        "/plain/mcp",
        at(&plain),
        "{not json",
        &[("Mcp-Method", "tools/list")],
    )
    .await;
    assert_eq!(resp.status(), 200, "forwarded as it came");
    let list: Value = mcp(&app, "/plain/mcp", at(&plain), LIST, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&list), ["echo", "delete_record", "payroll"]);
    let resp = mcp(
        &app,
        "/plain/mcp",
        at(&plain),
        &call_body(1, "payroll"),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(up.seen().len(), 3);
    assert_eq!(up.seen()[0], "{not json");
    let rows = audit_rows(&app).await;
    assert!(
        !rows
            .iter()
            .any(|r| r.kind == "tool_call" || r.kind == "policy_refusal"),
        "{rows:#?}"
    );
}

async fn the_builtin_server_obeys_rules_too(backend: Backend) {
    let app = spawn_app_with(backend, |raw| {
        raw.set("AUTHGATE_UNLISTED_TOOLS", "deny");
        raw.overlay_toml(
            "[[tool]]\nname = \"whoami\"\nallow_users = [\"bob@example.com\"]\n",
            "policy.toml",
        )
        .unwrap();
    })
    .await;
    let ann = token(&app, "ann@example.com", &[]).await;
    let list: Value = mcp(&app, "/mcp", at(&ann), LIST, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["result"]["tools"], json!([]), "{list}");
    let call: Value = mcp(&app, "/mcp", at(&ann), &call_body(2, "whoami"), &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(call["error"]["code"], -32602, "{call}");
    let bob = token(&app, "bob@example.com", &[]).await;
    let call: Value = mcp(&app, "/mcp", at(&bob), &call_body(3, "whoami"), &[])
        .await
        .json()
        .await
        .unwrap();
    assert!(
        call["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("bob@example.com"),
        "{call}"
    );
    let list: Value = mcp(&app, "/mcp", at(&bob), LIST, &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(names(&list), ["whoami"]);
}

async fn tool_calls_are_audited_with_latency_and_never_arguments(backend: Backend) {
    let (app, _up) = policy_app(backend).await;
    let ann = token(&app, "ann@example.com", &[]).await;
    let resp = mcp(
        &app,
        "/mcp",
        at(&ann),
        &call_body(1, "echo"),
        &[("X-Answer", "slow")],
    )
    .await;
    let request_id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let resp = mcp(
        &app,
        "/mcp",
        at(&ann),
        &call_body(2, "echo"),
        &[("X-Answer", "sse")],
    )
    .await;
    let text = resp.text().await.unwrap();
    assert!(text.contains("called echo"), "{text}");
    mcp(&app, "/mcp", at(&ann), &call_body(3, "payroll"), &[]).await;
    mcp(&app, "/mcp", at(&ann), &call_body(4, "delete_record"), &[]).await;
    mcp(
        &app,
        "/mcp",
        at(&ann),
        &call_body(5, "echo"),
        &[("Mcp-Name", "payroll")],
    )
    .await;
    let rows = audit_rows(&app).await;
    let calls: Vec<&AuditEvent> = rows.iter().filter(|r| r.kind == "tool_call").collect();
    let find = |tool: &str, outcome: &str| {
        calls
            .iter()
            .find(|r| r.tool.as_deref() == Some(tool) && r.outcome == outcome)
            .unwrap_or_else(|| panic!("no {tool} {outcome} in {rows:#?}"))
    };
    let slow = calls
        .iter()
        .find(|r| r.request_id.as_deref() == Some(&request_id))
        .unwrap_or_else(|| panic!("no row for request {request_id}: {rows:#?}"));
    assert_eq!(
        (slow.tool.as_deref(), slow.outcome.as_str()),
        (Some("echo"), "ok")
    );
    assert!(slow.latency_ms.unwrap() >= 550, "{slow:?}");
    let streamed = calls
        .iter()
        .filter(|r| r.tool.as_deref() == Some("echo") && r.outcome == "ok")
        .map(|r| r.latency_ms.unwrap())
        .collect::<Vec<_>>();
    assert!(
        streamed.iter().filter(|ms| **ms >= 350).count() == 2,
        "the SSE call's latency runs to its last event: {streamed:?}"
    );
    let forbidden = find("payroll", "forbidden");
    assert_eq!(forbidden.email.as_deref(), Some("ann@example.com"));
    assert!(forbidden.subject.as_deref().unwrap().starts_with("ag_"));
    assert!(forbidden.client_id.is_some());
    assert_eq!(
        forbidden.resource.as_deref(),
        Some(app.url("/mcp").as_str())
    );
    assert_eq!(
        find("delete_record", "step_up").detail.as_deref(),
        Some("needs scope: admin")
    );
    assert!(
        rows.iter()
            .any(|r| r.kind == "policy_refusal" && r.outcome == "mismatch"),
        "{rows:#?}"
    );
    let all = format!("{rows:?}");
    assert!(
        !all.contains("secret-argument-123"),
        "arguments are never stored"
    );
    assert!(!all.contains(at(&ann)), "tokens are never stored");
}

/// The official TypeScript and Python SDK clients, logged in through the real OpenID provider,
/// against the e2e MCP server (SSE answers) behind authgate with `RULES`: the tool list without
/// `payroll`, a JSON-RPC error for `payroll`, step-up to call `delete_record`, progress streamed
/// through the policy layer, a refresh; then the audit rows of it all.
async fn sdk_clients_under_a_tool_policy(backend: Backend) {
    let (upstream, _server) = crate::clients::start_mcp_server().await;
    let s = crate::upstream::setup(backend, "client_secret_post", true, move |raw| {
        raw.set("AUTHGATE_MCP_UPSTREAM", upstream);
        raw.overlay_toml(RULES, "policy.toml").unwrap();
    })
    .await;
    let url = s.app.url("/mcp");
    let env = [
        ("PROGRESS_TOOL", "slow"),
        ("PROGRESS_ARGS", r#"{"steps":3,"ms":700}"#),
        ("FORBIDDEN_TOOL", "payroll"),
        ("STEP_UP_TOOL", "delete_record"),
        ("STEP_UP_ARGS", r#"{"id":"r-42"}"#),
    ];
    let args = r#"{"text":"secret-argument-789"}"#;
    let clients = [
        ("TypeScript SDK", "node", "ts-client.mjs"),
        ("Python SDK", ".venv/bin/python", "py_client.py"),
    ];
    for (name, program, script) in clients {
        let r = crate::clients::run_client(program, script, &url, "echo", args, &env).await;
        assert_eq!(
            r["tools"],
            json!(["echo", "headers", "delete_record", "slow"]),
            "{name}: payroll is not listed: {r}"
        );
        assert_eq!(r["call"], "secret-argument-789");
        assert_eq!(r["forbidden"]["code"], -32602, "{name}: {r}");
        let step = &r["stepUp"];
        assert_eq!(step["call"], "deleted r-42", "{name}: {r}");
        assert_eq!(step["newLogins"], 1, "{name}: one more authorization: {r}");
        assert_eq!(step["scopeBefore"], "mcp", "{name}: {r}");
        assert_eq!(step["scopeAfter"], "admin mcp", "{name}: {r}");
        let progress: Vec<f64> = r["progress"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(progress.len(), 3, "{name}: {r}");
        assert!(
            progress[0] < 1500.0 && progress[2] - progress[0] > 1000.0,
            "{name}: streamed event by event through the policy: {progress:?}"
        );
        assert_eq!(r["refreshed"], true, "{name}: {r}");
        crate::helpers::record_compat(
            name,
            "DCR, tool policy: filtered list, refusal, step-up",
            backend,
        );
    }
    let rows = audit_rows(&s.app).await;
    let count = |tool: &str, outcome: &str| {
        rows.iter()
            .filter(|r| {
                r.kind == "tool_call" && r.tool.as_deref() == Some(tool) && r.outcome == outcome
            })
            .count()
    };
    for (tool, outcome) in [
        ("echo", "ok"),
        ("payroll", "forbidden"),
        ("delete_record", "step_up"),
        ("delete_record", "ok"),
        ("slow", "ok"),
    ] {
        assert!(
            count(tool, outcome) >= 2,
            "{tool} {outcome} for both clients: {rows:#?}"
        );
    }
    let slow = rows
        .iter()
        .filter(|r| r.tool.as_deref() == Some("slow"))
        .filter_map(|r| r.latency_ms)
        .min()
        .unwrap();
    assert!(
        slow >= 2000,
        "the streamed call's latency runs to its end: {slow} ms"
    );
    assert!(
        rows.iter().any(|r| r.kind == "consent"
            && r.outcome == "approved"
            && r.detail.as_deref() == Some("scope: admin mcp")),
        "the step-up was consented to: {rows:#?}"
    );
    assert!(!format!("{rows:?}").contains("secret-argument-789"));
}

both_backends!(
    sdk_clients_under_a_tool_policy,
    tools_list_is_filtered_in_json_and_sse_answers,
    forbidden_calls_get_a_jsonrpc_error_and_never_reach_the_server,
    missing_scope_gets_a_step_up_challenge,
    mirrored_headers_must_match_the_body,
    bodies_the_policy_cannot_judge_are_refused,
    a_resource_without_rules_is_not_read,
    the_builtin_server_obeys_rules_too,
    tool_calls_are_audited_with_latency_and_never_arguments,
);
