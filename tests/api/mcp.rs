//! The protected MCP endpoint: the guard (each rule with a request that would pass without it),
//! the built-in server, and streaming forwarding to an upstream MCP server.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use authgate::config::RawResource;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::both_backends;
use crate::flow::{self, RegisteredClient, full_grant, new_pkce, redeem, register_claude};
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#;

async fn mcp_post(app: &TestApp, path: &str, token: Option<&str>, body: &str) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url(path))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18")
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}

fn challenge(resp: &reqwest::Response) -> String {
    resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn token_for(app: &TestApp) -> (RegisteredClient, Value) {
    let client = register_claude(app).await;
    let grant = full_grant(app, &client).await;
    (client, grant)
}

async fn no_token_gets_a_discoverable_challenge_on_every_method(backend: Backend) {
    let app = spawn_app(backend).await;
    for method in [
        reqwest::Method::POST,
        reqwest::Method::GET,
        reqwest::Method::DELETE,
        reqwest::Method::PUT,
    ] {
        let resp = app
            .http
            .request(method.clone(), app.url("/mcp"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{method}");
        let c = challenge(&resp);
        assert!(c.starts_with("Bearer "), "{c}");
        assert!(
            c.contains(&format!(
                "resource_metadata=\"{}\"",
                app.url("/.well-known/oauth-protected-resource/mcp")
            )),
            "{c}"
        );
        assert!(c.contains("scope=\"mcp\""), "{c}");
        assert!(
            !c.contains("error="),
            "no error attribute without a token: {c}"
        );
    }
    let slash = app.http.get(app.url("/mcp/")).send().await.unwrap();
    assert_eq!(slash.status(), 404, "no redirect to /mcp/ and no alias");
    assert!(slash.headers().get("location").is_none());
}

async fn bad_tokens_get_invalid_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, grant) = token_for(&app).await;
    let good = grant["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        mcp_post(&app, "/mcp", Some(&good), INIT).await.status(),
        200,
        "the valid token passes"
    );
    let mut tampered = good.clone();
    tampered.pop();
    tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
    let other = spawn_app(backend).await;
    let (_, foreign) = token_for(&other).await;
    for (what, token) in [
        ("malformed", "not-a-jwt".to_owned()),
        ("tampered", tampered),
        (
            "foreign key and issuer",
            foreign["access_token"].as_str().unwrap().to_owned(),
        ),
    ] {
        let resp = mcp_post(&app, "/mcp", Some(&token), INIT).await;
        assert_eq!(resp.status(), 401, "{what}");
        assert!(
            challenge(&resp).contains("error=\"invalid_token\""),
            "{what}"
        );
    }
    let basic = app
        .http
        .post(app.url("/mcp"))
        .basic_auth("a", Some("b"))
        .body(INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    let in_query = app
        .http
        .post(app.url(&format!("/mcp?access_token={good}")))
        .header("Content-Type", "application/json")
        .body(INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        in_query.status(),
        401,
        "tokens are never taken from the query string"
    );
    app.clock.advance(3600);
    let expired = mcp_post(&app, "/mcp", Some(&good), INIT).await;
    assert_eq!(expired.status(), 401, "expired");
    assert!(challenge(&expired).contains("invalid_token"));
}

async fn revoked_tokens_and_grants_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, grant) = token_for(&app).await;
    let at = grant["access_token"].as_str().unwrap();
    assert_eq!(mcp_post(&app, "/mcp", Some(at), INIT).await.status(), 200);
    let revoked = app
        .http
        .post(app.url("/revoke"))
        .form(&[
            ("token", at),
            ("client_id", &client.id),
            ("client_secret", client.secret.as_deref().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    app.clock
        .advance(authgate::startup::REVOCATION_CACHE_SECONDS);
    assert_eq!(
        mcp_post(&app, "/mcp", Some(at), INIT).await.status(),
        401,
        "revoked by jti"
    );
    // Revoking the grant (refresh-token reuse) kills its access tokens too.
    let grant2 = full_grant(&app, &client).await;
    let at2 = grant2["access_token"].as_str().unwrap();
    let rt2 = grant2["refresh_token"].as_str().unwrap();
    assert_eq!(mcp_post(&app, "/mcp", Some(at2), INIT).await.status(), 200);
    assert_eq!(flow::refresh(&app, &client, rt2).await.status(), 200);
    app.clock.advance(60);
    assert_eq!(
        flow::refresh(&app, &client, rt2).await.status(),
        400,
        "reuse after the grace window"
    );
    assert_eq!(
        mcp_post(&app, "/mcp", Some(at2), INIT).await.status(),
        401,
        "the grant is revoked"
    );
}

fn two_resources(raw: &mut authgate::config::RawConfig) {
    raw.add_resource(RawResource {
        path: Some("/files/mcp".into()),
        upstream: None,
        scopes: vec!["files".into(), "admin".into()],
        ..RawResource::default()
    });
}

async fn tokens_are_bound_to_one_resource_and_its_scopes(backend: Backend) {
    let app = spawn_app_with(backend, two_resources).await;
    let prm: Value = app
        .http
        .get(app.url("/.well-known/oauth-protected-resource/files/mcp"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm["resource"], app.url("/files/mcp"));
    assert_eq!(prm["scopes_supported"], json!(["admin", "files"]));
    let (client, grant) = token_for(&app).await;
    let mcp_token = grant["access_token"].as_str().unwrap();
    let other = mcp_post(&app, "/files/mcp", Some(mcp_token), INIT).await;
    assert_eq!(
        other.status(),
        401,
        "a token for /mcp is refused by /files/mcp"
    );
    assert!(challenge(&other).contains("oauth-protected-resource/files/mcp"));

    let browser = crate::browser::Browser::new();
    let pkce = new_pkce();
    let code = flow::dev_flow(
        &app,
        &browser,
        &client,
        &pkce,
        &[("resource", &app.url("/files/mcp")), ("scope", "files")],
    )
    .await;
    let files: Value = redeem(&app, &client, &code, &pkce)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(files["scope"], "files");
    let resp = mcp_post(&app, "/files/mcp", files["access_token"].as_str(), INIT).await;
    assert_eq!(resp.status(), 403, "insufficient scope");
    let c = challenge(&resp);
    assert!(
        c.contains("error=\"insufficient_scope\"") && c.contains("scope=\"admin files\""),
        "{c}"
    );
    assert_eq!(
        mcp_post(&app, "/mcp", files["access_token"].as_str(), INIT)
            .await
            .status(),
        401,
        "and refused by /mcp"
    );

    let pkce = new_pkce();
    let code = flow::dev_flow(
        &app,
        &crate::browser::Browser::new(),
        &client,
        &pkce,
        &[("resource", &app.url("/files/mcp"))],
    )
    .await;
    let full: Value = redeem(&app, &client, &code, &pkce)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        mcp_post(&app, "/files/mcp", full["access_token"].as_str(), INIT)
            .await
            .status(),
        200
    );
}

async fn browser_origins_are_checked_and_preflights_answered(backend: Backend) {
    let app = spawn_app_with(backend, |raw| {
        raw.set("AUTHGATE_ALLOWED_ORIGINS", "http://localhost:6274")
    })
    .await;
    let (_, grant) = token_for(&app).await;
    let at = grant["access_token"].as_str().unwrap();
    let pre = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/mcp"))
        .header("Origin", "http://localhost:6274")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type, mcp-protocol-version",
        )
        .send()
        .await
        .unwrap();
    assert!(
        pre.status().is_success(),
        "preflight without authentication: {}",
        pre.status()
    );
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "http://localhost:6274"
    );
    assert!(
        pre.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("mcp-session-id")
    );
    let ok = app
        .http
        .post(app.url("/mcp"))
        .bearer_auth(at)
        .header("Origin", "http://localhost:6274")
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let exposed = ok.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("www-authenticate") && exposed.contains("mcp-session-id"));
    let evil = app
        .http
        .post(app.url("/mcp"))
        .bearer_auth(at)
        .header("Origin", "http://evil.example")
        .header("Content-Type", "application/json")
        .body(INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(
        evil.status(),
        403,
        "DNS-rebinding protection: a valid token from a foreign origin"
    );
    let unauth = app
        .http
        .post(app.url("/mcp"))
        .header("Origin", "http://localhost:6274")
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);
    assert_eq!(
        unauth.headers()["access-control-allow-origin"],
        "http://localhost:6274"
    );
    assert!(
        unauth.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("www-authenticate")
    );
}

async fn builtin_server_answers_whoami(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, grant) = token_for(&app).await;
    let at = grant["access_token"].as_str().unwrap();
    let init = mcp_post(&app, "/mcp", Some(at), INIT).await;
    assert_eq!(init.status(), 200);
    let body: Value = init.json().await.unwrap();
    assert!(
        body["result"]["capabilities"]["tools"].is_object(),
        "{body}"
    );
    let list: Value = mcp_post(
        &app,
        "/mcp",
        Some(at),
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(list["result"]["tools"][0]["name"], "whoami");
    let call: Value = mcp_post(&app, "/mcp", Some(at), r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#).await.json().await.unwrap();
    let text = call["result"]["content"][0]["text"].as_str().unwrap();
    let who: Value = serde_json::from_str(text).unwrap();
    assert_eq!(who["email"], "ann@example.com");
    assert_eq!(who["client_id"], client.id.as_str());
    assert_eq!(who["scope"], "mcp");
}

// ---- forwarding ----

#[derive(Default)]
struct Upstream {
    seen: std::sync::Mutex<Vec<HeaderMap>>,
    cancelled: AtomicBool,
}

struct DropFlag(Arc<Upstream>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
    }
}

async fn upstream_mcp(
    State(up): State<Arc<Upstream>>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    up.seen.lock().unwrap().push(headers.clone());
    if body.contains("\"stream\"") {
        // Three SSE events, 400 ms apart.
        let stream = futures::stream::iter(0..3).then(|i| async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            Ok::<_, std::io::Error>(format!("event: message\ndata: {{\"n\":{i}}}\n\n"))
        });
        return (
            [
                ("content-type", "text/event-stream"),
                ("mcp-session-id", "sess-1"),
            ],
            axum::body::Body::from_stream(stream),
        )
            .into_response();
    }
    if body.contains("\"forever\"") {
        let flag = DropFlag(up.clone());
        let stream = futures::stream::unfold(flag, |flag| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok::<_, std::io::Error>("data: tick\n\n".to_owned()), flag))
        });
        return (
            [("content-type", "text/event-stream")],
            axum::body::Body::from_stream(stream),
        )
            .into_response();
    }
    if body.contains("\"slow\"") {
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    (
        [
            ("content-type", "application/json"),
            ("mcp-session-id", "sess-1"),
            ("connection", "x-private"),
            ("x-private", "1"),
        ],
        r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
    )
        .into_response()
}

async fn spawn_upstream() -> (String, Arc<Upstream>) {
    let up = Arc::new(Upstream::default());
    let router = Router::new()
        .route("/mcp", any(upstream_mcp))
        .route("/other", post(|| async { StatusCode::OK }))
        .with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, up)
}

async fn forwarding_passes_identity_not_credentials(backend: Backend) {
    let (url, up) = spawn_upstream().await;
    let app = spawn_app_with(backend, move |raw| raw.set("AUTHGATE_MCP_UPSTREAM", url)).await;
    let (client, grant) = token_for(&app).await;
    let at = grant["access_token"].as_str().unwrap();
    // authgate forwards a session id only once the upstream has issued it to this caller.
    let init = mcp_post(&app, "/mcp", Some(at), INIT).await;
    assert_eq!(init.headers()["mcp-session-id"], "sess-1");
    up.seen.lock().unwrap().clear();
    let resp = app
        .http
        .post(app.url("/mcp?x=1"))
        .bearer_auth(at)
        .header("Content-Type", "application/json")
        .header("Mcp-Session-Id", "sess-1")
        .header("MCP-Protocol-Version", "2025-06-18")
        .header("Last-Event-ID", "ev-9")
        .header("X-Authgate-Sub", "forged-admin")
        .header("X-Authgate-Email", "forged@example.com")
        .header("Cookie", "authgate-session=secret")
        .body(INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["mcp-session-id"],
        "sess-1",
        "response headers pass back"
    );
    assert!(
        resp.headers().get("x-private").is_none(),
        "headers named in Connection are hop-by-hop"
    );
    let seen = up.seen.lock().unwrap().pop().unwrap();
    assert!(seen.get("authorization").is_none(), "no token passthrough");
    assert!(seen.get("cookie").is_none());
    assert_eq!(seen["mcp-session-id"], "sess-1");
    assert_eq!(seen["mcp-protocol-version"], "2025-06-18");
    assert_eq!(seen["last-event-id"], "ev-9");
    assert_eq!(
        seen["x-authgate-email"], "ann@example.com",
        "overwritten, not forged"
    );
    assert_eq!(seen.get_all("x-authgate-sub").iter().count(), 1);
    assert!(seen["x-authgate-sub"].to_str().unwrap().starts_with("ag_"));
    assert_eq!(seen["x-authgate-client-id"], client.id.as_str());
    assert_eq!(seen["x-authgate-scope"], "mcp");
    let unauth = mcp_post(&app, "/mcp", None, INIT).await;
    assert_eq!(unauth.status(), 401);
    assert_eq!(
        up.seen.lock().unwrap().len(),
        0,
        "nothing reaches the upstream without a token"
    );
}

async fn sse_streams_event_by_event(backend: Backend) {
    let (url, _up) = spawn_upstream().await;
    let app = spawn_app_with(backend, move |raw| raw.set("AUTHGATE_MCP_UPSTREAM", url)).await;
    let (_, grant) = token_for(&app).await;
    let start = Instant::now();
    let resp = mcp_post(
        &app,
        "/mcp",
        grant["access_token"].as_str(),
        r#"{"jsonrpc":"2.0","id":1,"method":"stream"}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        arrivals.push(start.elapsed());
    }
    assert!(text.contains("\"n\":0") && text.contains("\"n\":2"));
    assert!(arrivals.len() >= 3, "{arrivals:?}");
    assert!(
        arrivals[0] < Duration::from_millis(350),
        "the first event is not held back: {arrivals:?}"
    );
    assert!(
        *arrivals.last().unwrap() >= Duration::from_millis(750),
        "{arrivals:?}"
    );
}

async fn client_disconnect_cancels_the_upstream_request(backend: Backend) {
    let (url, up) = spawn_upstream().await;
    let app = spawn_app_with(backend, move |raw| raw.set("AUTHGATE_MCP_UPSTREAM", url)).await;
    let (_, grant) = token_for(&app).await;
    let resp = mcp_post(
        &app,
        "/mcp",
        grant["access_token"].as_str(),
        r#"{"jsonrpc":"2.0","id":1,"method":"forever"}"#,
    )
    .await;
    let mut stream = resp.bytes_stream();
    stream.next().await.unwrap().unwrap();
    assert!(!up.cancelled.load(Ordering::SeqCst));
    drop(stream);
    for _ in 0..50 {
        if up.cancelled.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the upstream stream was not cancelled after the client went away");
}

async fn upstream_down_or_slow_is_a_clear_gateway_error(backend: Backend) {
    let (url, _up) = spawn_upstream().await;
    let app = spawn_app_with(backend, move |raw| {
        raw.set("AUTHGATE_MCP_UPSTREAM", url);
        raw.set("AUTHGATE_MCP_UPSTREAM_TIMEOUT", "1s");
    })
    .await;
    let (_, grant) = token_for(&app).await;
    let at = grant["access_token"].as_str().unwrap();
    let start = Instant::now();
    let slow = mcp_post(
        &app,
        "/mcp",
        Some(at),
        r#"{"jsonrpc":"2.0","id":1,"method":"slow"}"#,
    )
    .await;
    assert_eq!(slow.status(), 504);
    assert!(start.elapsed() < Duration::from_secs(4));

    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}/mcp", dead.local_addr().unwrap());
    drop(dead);
    let app2 = spawn_app_with(backend, move |raw| {
        raw.set("AUTHGATE_MCP_UPSTREAM", dead_url)
    })
    .await;
    let (_, grant2) = token_for(&app2).await;
    let down = mcp_post(&app2, "/mcp", grant2["access_token"].as_str(), INIT).await;
    assert_eq!(down.status(), 502);
    let body: Value = down.json().await.unwrap();
    assert_eq!(body["error"], "upstream_unavailable");
    let meta = app2
        .http
        .get(app2.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(meta.status(), 200, "authgate stays healthy");
}

both_backends!(
    no_token_gets_a_discoverable_challenge_on_every_method,
    bad_tokens_get_invalid_token,
    revoked_tokens_and_grants_are_refused,
    tokens_are_bound_to_one_resource_and_its_scopes,
    browser_origins_are_checked_and_preflights_answered,
    builtin_server_answers_whoami,
    forwarding_passes_identity_not_credentials,
    sse_streams_event_by_event,
    client_disconnect_cancels_the_upstream_request,
    upstream_down_or_slow_is_a_clear_gateway_error,
);
