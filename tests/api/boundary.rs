//! The gateway's boundary, tried as an attacker would: a forged `Host`, smuggled identity and
//! forwarding headers, oversized bodies, slow clients, floods, and a panicking handler.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{any, get};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::both_backends;
use crate::flow::{full_grant, register_claude};
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with, stub_upstream};

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#;

/// An MCP server stand-in that records the headers of every request it receives.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<HeaderMap>>,
}

impl Recorder {
    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    fn last(&self) -> HeaderMap {
        self.seen.lock().unwrap().last().cloned().unwrap()
    }
}

async fn spawn_recorder() -> (String, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let router = Router::new()
        .route(
            "/mcp",
            any(
                |State(r): State<Arc<Recorder>>, headers: HeaderMap, _body: String| async move {
                    r.seen.lock().unwrap().push(headers);
                    (
                        [("content-type", "application/json")],
                        r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
                    )
                },
            ),
        )
        .with_state(rec.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, rec)
}

async fn token(app: &TestApp) -> String {
    let client = register_claude(app).await;
    full_grant(app, &client).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Writes `request` as is on a new connection and reads the whole answer (the request must ask
/// for `Connection: close`).
async fn raw(app: &TestApp, request: &str) -> String {
    let addr = app.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the server answers and closes")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn host_of(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

async fn mcp_with_host(app: &TestApp, host: &str, token: &str) -> reqwest::Response {
    app.http
        .post(app.url("/mcp"))
        .header("Host", host)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .bearer_auth(token)
        .body(INIT)
        .send()
        .await
        .unwrap()
}

async fn forged_host_is_refused_before_any_token_work(backend: Backend) {
    let (url, rec) = spawn_recorder().await;
    let forwarded = spawn_app_with(backend, move |raw| {
        raw.set("AUTHGATE_MCP_UPSTREAM", url);
        raw.set("AUTHGATE_ALLOWED_HOSTS", "mcp.internal, gate.internal:8080");
    })
    .await;
    let builtin = spawn_app(backend).await;
    for (app, upstream) in [(&forwarded, Some(&rec)), (&builtin, None)] {
        let t = token(app).await;
        let port: u16 = host_of(app).rsplit(':').next().unwrap().parse().unwrap();
        for forged in [
            "evil.example.com".to_owned(),
            format!("evil.example.com:{port}"),
            format!("localhost:{port}"),
            format!("127.0.0.1:{}", port.wrapping_add(1)),
            "gate.internal:8081".to_owned(),
        ] {
            let resp = mcp_with_host(app, &forged, &t).await;
            assert_eq!(resp.status(), 421, "Host {forged}, no Origin");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"], "invalid_host", "{forged}");
            // Refused before the token is looked at: no token at all gets the same answer.
            let no_token = app
                .http
                .post(app.url("/mcp"))
                .header("Host", forged.as_str())
                .body(INIT)
                .send()
                .await
                .unwrap();
            assert_eq!(no_token.status(), 421, "{forged}");
            assert!(no_token.headers().get("www-authenticate").is_none());
        }
        if let Some(rec) = upstream {
            assert_eq!(rec.count(), 0, "nothing forwarded for a forged Host");
        }
        assert_eq!(
            mcp_with_host(app, &host_of(app), &t).await.status(),
            200,
            "the public URL's own host and port"
        );
        if upstream.is_some() {
            for listed in ["mcp.internal", "MCP.internal:9000", "gate.internal:8080"] {
                assert_eq!(
                    mcp_with_host(app, listed, &t).await.status(),
                    200,
                    "AUTHGATE_ALLOWED_HOSTS {listed}"
                );
            }
        }
        // Two Host headers, or none: ambiguous, refused (HTTP/1.1 requires exactly one).
        let host = host_of(app);
        let twice = raw(
            app,
            &format!("POST /mcp HTTP/1.1\r\nHost: {host}\r\nHost: evil.example.com\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{INIT}", INIT.len()),
        )
        .await;
        assert!(
            [400, 421].contains(&status_of(&twice)),
            "two Host headers: {twice}"
        );
        let absolute = raw(
            app,
            &format!("POST http://evil.example.com/mcp HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{INIT}", INIT.len()),
        )
        .await;
        assert!(
            [400, 421].contains(&status_of(&absolute)),
            "absolute-form target for another host: {absolute}"
        );
    }
    assert_eq!(
        rec.count(),
        4,
        "only the allowed hosts' requests were forwarded"
    );
    // Discovery keeps answering from the public URL whatever the Host.
    let prm: Value = builtin
        .http
        .get(builtin.url("/.well-known/oauth-protected-resource/mcp"))
        .header("Host", "evil.example.com")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm["resource"], builtin.url("/mcp"));
}

async fn identity_and_forwarding_headers_cannot_be_smuggled(backend: Backend) {
    let (url, rec) = spawn_recorder().await;
    let app = spawn_app_with(backend, move |raw| raw.set("AUTHGATE_MCP_UPSTREAM", url)).await;
    let t = token(&app).await;
    let host = host_of(&app);
    // Every spelling a folding server would read as authgate's own headers: case variants,
    // duplicates, underscores; and forwarding headers from a peer that is no trusted proxy.
    let forged = [
        "X-Authgate-Sub: forged-1",
        "x-authgate-sub: forged-2",
        "X-AUTHGATE-SUB: forged-3",
        "X_Authgate_Sub: forged-4",
        "x_authgate_sub: forged-5",
        "X-Authgate_Email: forged@example.com",
        "X_AUTHGATE_CLIENT_ID: forged-client",
        "X-Authgate-Scope: admin",
        "X-Authgate-Upstream-Token: forged",
        "X-Forwarded-For: 198.51.100.7",
        "X_Forwarded_For: 198.51.100.8",
        "X-Forwarded-Host: evil.example.com",
        "X-Forwarded-Proto: https",
        "X-Real-IP: 198.51.100.7",
        "Forwarded: for=198.51.100.7;host=evil.example.com",
        "Mcp_Session_Id: someone-elses",
    ]
    .join("\r\n");
    let resp = raw(
        &app,
        &format!("POST /mcp HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {t}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{forged}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{INIT}", INIT.len()),
    )
    .await;
    assert_eq!(status_of(&resp), 200, "{resp}");
    let seen = rec.last();
    let sub = seen.get_all("x-authgate-sub").iter().collect::<Vec<_>>();
    assert_eq!(sub.len(), 1, "{seen:?}");
    assert!(sub[0].to_str().unwrap().starts_with("ag_"), "{seen:?}");
    assert_eq!(seen["x-authgate-email"], "ann@example.com");
    assert_eq!(seen["x-authgate-scope"], "mcp");
    assert!(seen.get("x-authgate-upstream-token").is_none());
    assert!(
        seen.keys().all(|k| !k.as_str().contains('_')),
        "no underscore spelling reaches the MCP server: {seen:?}"
    );
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "authgate's own value");
    assert_eq!(seen.get_all("x-forwarded-for").iter().count(), 1);
    assert_eq!(seen["x-forwarded-proto"], "http", "the public URL's scheme");
    assert_eq!(seen["x-forwarded-host"], host.as_str());
    assert!(seen.get("x-real-ip").is_none());
    assert!(seen.get("forwarded").is_none());
    assert!(seen.get("mcp-session-id").is_none());

    // A trailing space before the colon is not a header name: refused outright, not forwarded.
    let before = rec.count();
    let spaced = raw(
        &app,
        &format!("POST /mcp HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {t}\r\nX-Authgate-Sub : forged\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{INIT}", INIT.len()),
    )
    .await;
    assert_eq!(status_of(&spaced), 400, "{spaced}");
    assert_eq!(rec.count(), before, "nothing forwarded");
}

async fn a_trusted_proxy_forwarding_headers_pass_on(backend: Backend) {
    let (url, rec) = spawn_recorder().await;
    let app = spawn_app_with(backend, move |raw| {
        raw.set("AUTHGATE_MCP_UPSTREAM", url);
        raw.set("AUTHGATE_TRUSTED_PROXIES", "127.0.0.1/32");
    })
    .await;
    let t = token(&app).await;
    let resp = app
        .http
        .post(app.url("/mcp"))
        .bearer_auth(&t)
        .header("Content-Type", "application/json")
        .header("X-Forwarded-For", "198.51.100.7")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "mcp.example.com")
        .header("X-Real-IP", "198.51.100.7")
        .header("X-Authgate-Sub", "forged")
        .body(INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = rec.last();
    assert_eq!(seen["x-forwarded-for"], "198.51.100.7, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-forwarded-host"], "mcp.example.com");
    assert_eq!(seen["x-real-ip"], "198.51.100.7");
    assert!(
        seen["x-authgate-sub"].to_str().unwrap().starts_with("ag_"),
        "not even a trusted proxy sets the identity"
    );
}

async fn bodies_are_bounded_everywhere(backend: Backend) {
    let (url, rec) = spawn_recorder().await;
    let app = spawn_app_with(backend, move |raw| {
        raw.set("AUTHGATE_MCP_UPSTREAM", url);
        raw.set("AUTHGATE_MCP_MAX_BODY", "8KiB");
    })
    .await;
    let t = token(&app).await;
    let big = "a".repeat(17 * 1024);
    for path in ["/token", "/revoke", "/authorize/consent", "/dev/login"] {
        let resp = app
            .http
            .post(app.url(path))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("x={big}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 413, "{path}");
    }
    let padded = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "a".repeat(9 * 1024)
    );
    let resp = app
        .http
        .post(app.url("/mcp"))
        .bearer_auth(&t)
        .header("Content-Type", "application/json")
        .body(padded.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413, "over AUTHGATE_MCP_MAX_BODY");
    assert_eq!(rec.count(), 0, "not forwarded");
    // Without a Content-Length the limit cuts the stream: still 413, not a gateway error.
    let chunks: Vec<Result<String, std::io::Error>> = padded
        .as_bytes()
        .chunks(1024)
        .map(|c| Ok(String::from_utf8(c.to_vec()).unwrap()))
        .collect();
    let resp = app
        .http
        .post(app.url("/mcp"))
        .bearer_auth(&t)
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413, "chunked, over the limit");
    let small = app
        .http
        .post(app.url("/mcp"))
        .bearer_auth(&t)
        .header("Content-Type", "application/json")
        .body(format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
            "a".repeat(7 * 1024)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200, "under the limit: forwarded");
}

async fn slow_requests_time_out(backend: Backend) {
    let app = spawn_app_with(backend, |raw| raw.set("AUTHGATE_REQUEST_TIMEOUT", "1s")).await;
    let host = host_of(&app);
    // A client that announces a body and never sends it.
    let resp = raw(
        &app,
        &format!("POST /token HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\nConnection: close\r\n\r\ngrant_type="),
    )
    .await;
    assert_eq!(status_of(&resp), 408, "{resp}");
}

/// A refusal answered before the request's body arrived: the connection cannot be reused, and
/// the answer says so, so the client's next request (the metadata fetch after a 401) goes on a
/// new connection instead of one the server drops. The Python SDK hit exactly that under load.
async fn a_refusal_before_the_body_closes_the_connection_openly(backend: Backend) {
    let app = spawn_app(backend).await;
    let host = host_of(&app);
    let addr = app.base.trim_start_matches("http://").to_owned();
    for (head, close) in [
        (
            format!(
                "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                INIT.len()
            ),
            true,
        ),
        (
            format!(
                "POST /mcp HTTP/1.1\r\nHost: evil.example\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                INIT.len()
            ),
            true,
        ),
        (format!("GET /mcp HTTP/1.1\r\nHost: {host}\r\n\r\n"), false),
    ] {
        // Only the head: the body is still on its way when the guard answers.
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
        assert!(matches!(status_of(&answer), 401 | 421), "{answer}");
        assert_eq!(
            answer.contains("\r\nconnection: close\r\n"),
            close,
            "{head}: {answer}"
        );
    }
}

async fn floods_get_429_with_retry_after(backend: Backend) {
    let app = spawn_app_with(backend, |raw| {
        stub_upstream(raw);
        for var in [
            "AUTHGATE_TOKEN_RATE_LIMIT",
            "AUTHGATE_AUTHORIZE_RATE_LIMIT",
            "AUTHGATE_REVOKE_RATE_LIMIT",
            "AUTHGATE_ACCOUNT_RATE_LIMIT",
            "AUTHGATE_CALLBACK_RATE_LIMIT",
        ] {
            raw.set(var, "2/min");
        }
    })
    .await;
    let cases: [(&str, reqwest::Method, bool); 5] = [
        ("/token", reqwest::Method::POST, false),
        ("/revoke", reqwest::Method::POST, false),
        ("/authorize?client_id=x", reqwest::Method::GET, true),
        ("/account", reqwest::Method::GET, true),
        ("/oauth/callback?state=x&code=y", reqwest::Method::GET, true),
    ];
    for (path, method, page) in cases {
        let send = || async {
            app.http
                .request(method.clone(), app.url(path))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body("grant_type=refresh_token&refresh_token=x&token=x&client_id=x")
                .send()
                .await
                .unwrap()
        };
        for _ in 0..2 {
            assert_ne!(send().await.status(), 429, "{path}: within the limit");
        }
        let limited = send().await;
        assert_eq!(limited.status(), 429, "{path}");
        let wait: u64 = limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "{path}: Retry-After {wait}");
        let ct = limited.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        if page {
            assert!(ct.starts_with("text/html"), "{path}: {ct}");
        } else {
            assert!(ct.starts_with("application/json"), "{path}: {ct}");
            let body: Value = limited.json().await.unwrap();
            assert_eq!(body["error"], "temporarily_unavailable");
        }
    }
    // Each endpoint has its own buckets: discovery is not limited, /register still has room.
    assert_eq!(
        app.http
            .get(app.url("/.well-known/oauth-authorization-server"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    app.clock.advance(60);
    let again = app
        .http
        .post(app.url("/token"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await
        .unwrap();
    assert_ne!(again.status(), 429, "refilled after the period");
}

async fn a_panicking_handler_answers_500_with_a_request_id(_backend: Backend) {
    async fn boom() -> &'static str {
        panic!("a handler bug")
    }
    let app = spawn_app(_backend).await;
    let router = authgate::http::outer_layers(
        Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" })),
        &app.state.settings,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let http = reqwest::Client::new();
    let resp = http.get(format!("{base}/boom")).send().await.unwrap();
    assert_eq!(resp.status(), 500);
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(!id.is_empty());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "server_error");
    assert!(!body.to_string().contains("a handler bug"), "no panic text");
    // The same client (and pooled connection) goes on.
    let fine = http.get(format!("{base}/fine")).send().await.unwrap();
    assert_eq!(fine.status(), 200);
}

both_backends!(
    forged_host_is_refused_before_any_token_work,
    identity_and_forwarding_headers_cannot_be_smuggled,
    a_trusted_proxy_forwarding_headers_pass_on,
    bodies_are_bounded_everywhere,
    slow_requests_time_out,
    a_refusal_before_the_body_closes_the_connection_openly,
    floods_get_429_with_retry_after,
    a_panicking_handler_answers_500_with_a_request_id,
);
