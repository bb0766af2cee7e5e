//! The client compatibility matrix: each real client's habits, replayed or run against authgate
//! with the real upstream OpenID provider, from a bare 401 to a tool call and a refresh. Each
//! passing case records itself (`helpers::record_compat`) for the README's compatibility table.

use authgate::oauth::pkce;
use serde_json::{Value, json};

use crate::browser::Browser;
use crate::cimd::{
    CHATGPT_CALLBACK, CHATGPT_CIMD, CLAUDE_CIMD, CLAUDE_CODE_CIMD, CODEX_CIMD, DocHost,
    chatgpt_document, codex_document, spawn_doc_host,
};
use crate::clients::run_client;
use crate::helpers::{Backend, TestApp, record_compat};
use crate::upstream::{Setup, setup, walk};

const CLAUDE_CALLBACK: &str = "https://claude.ai/api/mcp/auth_callback";
const HTTPX: &str = "python-httpx/0.28.1";
/// Claude.ai's registration body as captured in Sep 2026 (client_secret_post, even with `none`
/// advertised).
const CLAUDE_DCR: &str = r#"{"redirect_uris":["https://claude.ai/api/mcp/auth_callback"],"token_endpoint_auth_method":"client_secret_post","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"Claude"}"#;
const INIT_PROBE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"Anthropic/ClaudeAI","version":"1.0.0"}}}"#;

fn verifier() -> (String, String) {
    let v = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let c = pkce::s256(&v);
    (v, c)
}

async fn with_doc_host(backend: Backend) -> (Setup, DocHost) {
    let host = spawn_doc_host().await;
    let ca =
        std::env::temp_dir().join(format!("authgate-ca-{}.pem", uuid::Uuid::new_v4().simple()));
    std::fs::write(&ca, &host.ca_pem).unwrap();
    let addr = host.addr;
    let s = setup(backend, "client_secret_post", true, move |raw| {
        raw.set(
            "AUTHGATE_CIMD_TEST_HOSTS",
            format!("claude.ai={addr},chatgpt.com={addr}"),
        );
        raw.set("AUTHGATE_CIMD_TEST_CA_FILE", ca.display().to_string());
    })
    .await;
    (s, host)
}

/// Claude.ai's discovery: the initialize probe without a token, the metadata pointer from the
/// challenge, then the authorization server's metadata.
async fn claude_discovery(app: &TestApp) -> (Value, Value) {
    let probe = app
        .http
        .post(app.url("/mcp"))
        .header("User-Agent", "Claude-User")
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(INIT_PROBE)
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 401);
    let challenge = probe.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    let prm_url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let prm: Value = app
        .http
        .get(&prm_url)
        .header("User-Agent", HTTPX)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let issuer = prm["authorization_servers"][0].as_str().unwrap();
    let meta: Value = app
        .http
        .get(format!("{issuer}/.well-known/oauth-authorization-server"))
        .header("User-Agent", HTTPX)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta["issuer"], prm["authorization_servers"][0],
        "byte-identical issuer"
    );
    (prm, meta)
}

/// Claude's rule: CIMD only when the server advertises metadata documents AND `none`.
fn claude_uses_cimd(meta: &Value) -> bool {
    meta["client_id_metadata_document_supported"] == true
        && meta["token_endpoint_auth_methods_supported"]
            .as_array()
            .is_some_and(|m| m.contains(&json!("none")))
}

async fn token_call(app: &TestApp, form: &[(&str, &str)]) -> reqwest::Response {
    app.http
        .post(app.url("/token"))
        .header("User-Agent", HTTPX)
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn mcp_call(app: &TestApp, token: &str, body: &str) -> Value {
    let resp = app
        .http
        .post(app.url("/mcp"))
        .bearer_auth(token)
        .header("User-Agent", "Claude-User")
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn tool_call_and_list(app: &TestApp, token: &str) {
    mcp_call(app, token, INIT_PROBE).await;
    let list = mcp_call(
        app,
        token,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(list["result"]["tools"][0]["name"], "whoami");
    let call = mcp_call(app, token, r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}"#).await;
    assert!(
        call["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("ann@example.test")
    );
}

/// The browser part (authgate consent, upstream login) up to Claude's callback; returns the code.
async fn browser_to(
    app: &TestApp,
    client_id: &str,
    redirect_uri: &str,
    challenge: &str,
    resource: Option<&str>,
) -> String {
    let mut url = url::Url::parse(&app.url("/authorize")).unwrap();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri);
        q.append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256");
        q.append_pair("state", "claude-state-1")
            .append_pair("scope", "mcp");
        if let Some(r) = resource {
            q.append_pair("resource", r);
        }
    }
    let back = walk(
        &Browser::new(),
        app,
        url.as_str(),
        redirect_uri.split('?').next().unwrap(),
        "ann@example.test",
    )
    .await
    .unwrap_or_else(|r| panic!("the browser stopped at {} ({})", r.url(), r.status()));
    assert_eq!(
        crate::flow::param(&back, "state").as_deref(),
        Some("claude-state-1")
    );
    assert_eq!(
        crate::flow::param(&back, "iss").as_deref(),
        Some(app.base.as_str())
    );
    crate::flow::param(&back, "code").unwrap()
}

async fn claude_ai_over_dcr(backend: Backend) {
    let s = setup(backend, "client_secret_post", true, |_| {}).await;
    let app = &s.app;
    let (prm, _meta) = claude_discovery(app).await;
    let resource = prm["resource"].as_str().unwrap().to_owned();
    let reg = app
        .http
        .post(app.url("/register"))
        .header("User-Agent", HTTPX)
        .header("Content-Type", "application/json")
        .body(CLAUDE_DCR)
        .send()
        .await
        .unwrap();
    assert_eq!(reg.status(), 201);
    let reg: Value = reg.json().await.unwrap();
    let (id, secret) = (
        reg["client_id"].as_str().unwrap().to_owned(),
        reg["client_secret"].as_str().unwrap().to_owned(),
    );
    assert!(reg["client_secret_expires_at"].is_i64());
    let (v, c) = verifier();
    let code = browser_to(app, &id, CLAUDE_CALLBACK, &c, Some(&resource)).await;
    let tokens: Value = token_call(
        app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &v),
            ("redirect_uri", CLAUDE_CALLBACK),
            ("resource", &resource),
            ("client_id", &id),
            ("client_secret", &secret),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    tool_call_and_list(app, tokens["access_token"].as_str().unwrap()).await;
    // Refresh from one server, then the same refresh from a second server within the grace window.
    let rt = tokens["refresh_token"].as_str().unwrap();
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt),
        ("resource", &resource),
        ("client_id", &id),
        ("client_secret", &secret),
    ];
    let first: Value = token_call(app, &refresh).await.json().await.unwrap();
    let second: Value = token_call(app, &refresh).await.json().await.unwrap();
    assert_eq!(
        first["refresh_token"], second["refresh_token"],
        "the second server gets the same successor"
    );
    tool_call_and_list(app, second["access_token"].as_str().unwrap()).await;
    record_compat("Claude.ai", "DCR, client_secret_post", backend);
}

async fn claude_ai_over_cimd(backend: Backend) {
    let (s, _host) = with_doc_host(backend).await;
    let app = &s.app;
    let (prm, meta) = claude_discovery(app).await;
    assert!(
        claude_uses_cimd(&meta),
        "Claude would fall back to DCR: {meta}"
    );
    let resource = prm["resource"].as_str().unwrap().to_owned();
    let (v, c) = verifier();
    let code = browser_to(app, CLAUDE_CIMD, CLAUDE_CALLBACK, &c, Some(&resource)).await;
    let tokens: Value = token_call(
        app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &v),
            ("redirect_uri", CLAUDE_CALLBACK),
            ("resource", &resource),
            ("client_id", CLAUDE_CIMD),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    tool_call_and_list(app, tokens["access_token"].as_str().unwrap()).await;
    let refreshed = token_call(
        app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("resource", &resource),
            ("client_id", CLAUDE_CIMD),
        ],
    )
    .await;
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.unwrap();
    tool_call_and_list(app, refreshed["access_token"].as_str().unwrap()).await;
    record_compat("Claude.ai", "CIMD", backend);
}

async fn claude_code_over_cimd(backend: Backend) {
    let (s, _host) = with_doc_host(backend).await;
    let app = &s.app;
    let (prm, meta) = claude_discovery(app).await;
    assert!(claude_uses_cimd(&meta));
    let resource = prm["resource"].as_str().unwrap().to_owned();
    // Its document lists the portless http://localhost/callback; it listens on an ephemeral port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redirect = format!("http://localhost:{port}/callback");
    for with_resource in [true, false] {
        let (v, c) = verifier();
        let res = with_resource.then_some(resource.as_str());
        let code = browser_to(app, CLAUDE_CODE_CIMD, &redirect, &c, res).await;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", v.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("client_id", CLAUDE_CODE_CIMD),
        ];
        if let Some(r) = res {
            form.push(("resource", r));
        }
        let tokens: Value = token_call(app, &form).await.json().await.unwrap();
        tool_call_and_list(app, tokens["access_token"].as_str().unwrap()).await;
        let refreshed = token_call(
            app,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
                ("client_id", CLAUDE_CODE_CIMD),
            ],
        )
        .await;
        assert_eq!(refreshed.status(), 200, "with resource: {with_resource}");
    }
    record_compat("Claude Code", "CIMD, loopback port", backend);
}

async fn mcp_remote_over_stdio(backend: Backend) {
    let s = setup(backend, "client_secret_post", true, |_| {}).await;
    let r = run_client(
        "node",
        "remote-client.mjs",
        &s.app.url("/mcp"),
        "whoami",
        "{}",
        &[],
    )
    .await;
    assert!(
        r["call"]
            .as_str()
            .unwrap_or_default()
            .contains("ann@example.test"),
        "{r}"
    );
    record_compat("mcp-remote", "DCR, none", backend);
}

// The reference (clients-2026-12.md) lists these hosts' redirect URIs but not whole bodies:
// the other fields are the documented RFC 7591 ones each host needs (a public client for the
// desktop editors, a confidential one for Copilot Studio), not captures.
const CURSOR_CALLBACK: &str = "cursor://anysphere.cursor-mcp/oauth/callback";
const CURSOR_DCR: &str = r#"{"redirect_uris":["cursor://anysphere.cursor-mcp/oauth/callback","https://www.cursor.com/agents/mcp/oauth/callback","http://localhost:8787/callback"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"Cursor"}"#;
const VSCODE_DCR: &str = r#"{"redirect_uris":["https://insiders.vscode.dev/redirect","https://vscode.dev/redirect","http://127.0.0.1/","http://127.0.0.1:33418/"],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"Visual Studio Code"}"#;
/// Power Platform gives each connector its own path under /redirect/; this one is made up.
const COPILOT_CALLBACK: &str =
    "https://global.consent.azure-apim.net/redirect/cr6a1-5fauthgate-5f0d1e2f3a4b5c6d7e";
const COPILOT_DCR: &str = r#"{"redirect_uris":["https://global.consent.azure-apim.net/redirect/cr6a1-5fauthgate-5f0d1e2f3a4b5c6d7e"],"token_endpoint_auth_method":"client_secret_basic","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"Microsoft Copilot Studio"}"#;

/// A host's DCR registration (its exact body), one authorization through `redirect_uri`, the
/// code exchange by the registered method, a tool call, a refresh and another tool call.
async fn host_over_dcr(
    backend: Backend,
    client: &str,
    registration: &str,
    body: &str,
    redirect_uri: &str,
) {
    let s = setup(backend, "client_secret_post", true, |_| {}).await;
    let app = &s.app;
    let (prm, _meta) = claude_discovery(app).await;
    let resource = prm["resource"].as_str().unwrap().to_owned();
    let reg = app
        .http
        .post(app.url("/register"))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(reg.status(), 201, "{client}: {}", reg.text().await.unwrap());
    let reg: Value = reg.json().await.unwrap();
    let asked: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        reg["token_endpoint_auth_method"], asked["token_endpoint_auth_method"],
        "{client}: the method asked for is the one registered and echoed"
    );
    let id = reg["client_id"].as_str().unwrap().to_owned();
    let secret = reg["client_secret"].as_str().map(str::to_owned);
    let basic = reg["token_endpoint_auth_method"] == "client_secret_basic";
    let token = |form: Vec<(&'static str, String)>| {
        let mut form = form;
        let mut req = app.http.post(app.url("/token"));
        match (&secret, basic) {
            (Some(sec), true) => req = req.basic_auth(&id, Some(sec)),
            (Some(sec), false) => {
                form.push(("client_id", id.clone()));
                form.push(("client_secret", sec.clone()));
            }
            (None, _) => form.push(("client_id", id.clone())),
        }
        req.form(&form).send()
    };
    let (v, c) = verifier();
    let code = browser_to(app, &id, redirect_uri, &c, Some(&resource)).await;
    let tokens = token(vec![
        ("grant_type", "authorization_code".into()),
        ("code", code),
        ("code_verifier", v),
        ("redirect_uri", redirect_uri.to_owned()),
        ("resource", resource.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(tokens.status(), 200, "{client}");
    let tokens: Value = tokens.json().await.unwrap();
    tool_call_and_list(app, tokens["access_token"].as_str().unwrap()).await;
    let refreshed = token(vec![
        ("grant_type", "refresh_token".into()),
        (
            "refresh_token",
            tokens["refresh_token"].as_str().unwrap().to_owned(),
        ),
        ("resource", resource.clone()),
    ])
    .await
    .unwrap();
    assert_eq!(refreshed.status(), 200, "{client}");
    let refreshed: Value = refreshed.json().await.unwrap();
    tool_call_and_list(app, refreshed["access_token"].as_str().unwrap()).await;
    record_compat(client, registration, backend);
}

async fn cursor_over_dcr(backend: Backend) {
    host_over_dcr(
        backend,
        "Cursor",
        "DCR, none, cursor:// scheme",
        CURSOR_DCR,
        CURSOR_CALLBACK,
    )
    .await;
}

async fn vscode_over_dcr(backend: Backend) {
    // 33418 taken: VS Code listens on another port under the portless `http://127.0.0.1/`.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redirect = format!("http://127.0.0.1:{port}/");
    host_over_dcr(
        backend,
        "VS Code",
        "DCR, none, random loopback port",
        VSCODE_DCR,
        &redirect,
    )
    .await;
}

/// One JSON-RPC request to a forwarded `/mcp` (the server answers JSON), in an MCP session.
async fn vscode_call(
    app: &TestApp,
    token: &str,
    session: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url("/mcp"))
        .bearer_auth(token)
        .header("User-Agent", "Visual Studio Code")
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18")
        .body(body.to_owned());
    if let Some(s) = session {
        req = req.header("Mcp-Session-Id", s);
    }
    req.send().await.unwrap()
}

fn tool_call(tool: &str, arguments: Value) -> String {
    json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":tool,"arguments":arguments}})
        .to_string()
}

/// The value of `name="..."` in a challenge.
fn challenge_param(resp: &reqwest::Response, name: &str) -> String {
    let c = resp.headers()["www-authenticate"].to_str().unwrap();
    c.split(&format!("{name}=\""))
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned()
}

/// VS Code's step-up (vscode #269883) on an MCP server whose `headers` tool needs `admin` besides
/// the server's `mcp`: a bare 401, an authorization with the challenge's scope in the system
/// browser, a tool call; then a 403 `insufficient_scope` on `headers`, an authorization with
/// that challenge's scopes in the same browser, which asks only for `admin`, the call, and
/// refreshes of both refresh chains, which are one grant.
async fn vscode_steps_up_on_insufficient_scope(backend: Backend) {
    let (mcp_url, _server) =
        crate::clients::start_mcp_server_with(&[("MCP_JSON_RESPONSE", "1")]).await;
    let s = setup(backend, "client_secret_post", true, move |raw| {
        raw.set("AUTHGATE_MCP_UPSTREAM", mcp_url);
        raw.set("AUTHGATE_SCOPES", "mcp");
        raw.overlay_toml(
            "[[tool]]\nname = \"headers\"\nscopes = [\"admin\"]\n",
            "tools.toml",
        )
        .unwrap();
    })
    .await;
    let app = &s.app;
    let bare = app
        .http
        .post(app.url("/mcp"))
        .header("Content-Type", "application/json")
        .body(INIT_PROBE)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 401);
    let scope = challenge_param(&bare, "scope");
    assert_eq!(scope, "mcp");
    let prm: Value = app
        .http
        .get(challenge_param(&bare, "resource_metadata"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resource = prm["resource"].as_str().unwrap().to_owned();
    let reg = app
        .http
        .post(app.url("/register"))
        .header("Content-Type", "application/json")
        .body(VSCODE_DCR)
        .send()
        .await
        .unwrap();
    assert_eq!(reg.status(), 201);
    let id = reg.json::<Value>().await.unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redirect = format!("http://127.0.0.1:{port}/");
    let browser = Browser::new();
    let authorize = |scope: &str, challenge: &str| {
        let mut url = url::Url::parse(&app.url("/authorize")).unwrap();
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &id)
            .append_pair("redirect_uri", &redirect)
            .append_pair("code_challenge", challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", "vscode-state")
            .append_pair("scope", scope)
            .append_pair("resource", &resource);
        url.to_string()
    };
    let redeem = async |code: String, verifier: String| -> Value {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", verifier.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("resource", resource.as_str()),
            ("client_id", id.as_str()),
        ];
        let resp = token_call(app, &form).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    };
    let (v, c) = verifier();
    let back = walk(
        &browser,
        app,
        &authorize(&scope, &c),
        &redirect,
        "ann@example.test",
    )
    .await
    .unwrap_or_else(|r| panic!("the browser stopped at {}", r.url()));
    let first = redeem(crate::flow::param(&back, "code").unwrap(), v).await;
    assert_eq!(first["scope"], "mcp");
    let at = first["access_token"].as_str().unwrap();
    let init = vscode_call(app, at, None, INIT_PROBE).await;
    assert_eq!(init.status(), 200);
    let session = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let echo = vscode_call(
        app,
        at,
        Some(&session),
        &tool_call("echo", json!({"text": "hi"})),
    )
    .await;
    assert_eq!(echo.status(), 200);
    assert_eq!(
        echo.json::<Value>().await.unwrap()["result"]["content"][0]["text"],
        "hi"
    );

    let refused = vscode_call(app, at, Some(&session), &tool_call("headers", json!({}))).await;
    assert_eq!(refused.status(), 403);
    assert!(challenge_param(&refused, "error") == "insufficient_scope");
    let step_up = challenge_param(&refused, "scope");
    assert_eq!(step_up, "admin mcp", "every scope the call needs");

    let (v, c) = verifier();
    let page = browser.get(&authorize(&step_up, &c)).await;
    assert_eq!(
        page.status(),
        200,
        "the consent page, without a second login"
    );
    let html = page.text().await.unwrap();
    let (asked, allowed) = crate::stepup::consent_lists(&html);
    assert_eq!(
        asked,
        ["use the “admin” permission"],
        "consent only for the new scope"
    );
    assert_eq!(allowed.len(), 1, "mcp is shown as already allowed");
    let request = crate::browser::form_inputs(&html)
        .remove("request")
        .unwrap();
    let approved = crate::flow::decide(&browser, app, &request, "approve").await;
    let back = crate::browser::location(&approved);
    assert!(back.starts_with(&redirect), "{back}");
    let second = redeem(crate::flow::param(&back, "code").unwrap(), v).await;
    assert_eq!(second["scope"], "admin mcp");
    let at = second["access_token"].as_str().unwrap();
    let headers = vscode_call(app, at, Some(&session), &tool_call("headers", json!({}))).await;
    assert_eq!(headers.status(), 200, "the same MCP session goes on");
    let report: Value = serde_json::from_str(
        headers.json::<Value>().await.unwrap()["result"]["content"][0]["text"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(report["authgate"]["scope"], "admin mcp");

    for chain in [&second, &first] {
        let refreshed = token_call(
            app,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", chain["refresh_token"].as_str().unwrap()),
                ("resource", &resource),
                ("client_id", &id),
            ],
        )
        .await;
        assert_eq!(refreshed.status(), 200);
        let refreshed: Value = refreshed.json().await.unwrap();
        assert_eq!(
            refreshed["scope"], "admin mcp",
            "both chains carry the widened scope"
        );
        let at = refreshed["access_token"].as_str().unwrap();
        let call = vscode_call(app, at, Some(&session), &tool_call("headers", json!({}))).await;
        assert_eq!(call.status(), 200);
    }
    let grants = app.store.list_grants(None, Some(&id)).await.unwrap();
    assert_eq!(grants.len(), 1, "one grant");
    record_compat(
        "VS Code",
        "DCR, none, step-up on insufficient_scope",
        backend,
    );
}

async fn copilot_studio_over_dcr(backend: Backend) {
    host_over_dcr(
        backend,
        "Microsoft Copilot Studio",
        "DCR, client_secret_basic",
        COPILOT_DCR,
        COPILOT_CALLBACK,
    )
    .await;
}

/// What ChatGPT (and Codex) require of the server's metadata before they use their stable
/// client id and callback (developers.openai.com/plugins/build/auth): one exact issuer, `iss` on
/// every authorization response, S256, metadata documents; and the method, which they take from
/// the intersection of the server's list and their document's (`private_key_jwt` preferred, as
/// their document's singular field says).
fn openai_client_setup(prm: &Value, meta: &Value, document: &Value) -> &'static str {
    assert_eq!(meta["issuer"], prm["authorization_servers"][0]);
    assert_eq!(
        meta["authorization_response_iss_parameter_supported"], true,
        "without it ChatGPT falls back to a per-connector client id and callback"
    );
    assert!(
        meta["code_challenge_methods_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("S256"))
    );
    assert_eq!(meta["client_id_metadata_document_supported"], true);
    let server = meta["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    let ours = document["token_endpoint_auth_methods_supported"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![document["token_endpoint_auth_method"].clone()]);
    let both: Vec<&Value> = ours.iter().filter(|m| server.contains(m)).collect();
    if both.contains(&&json!("private_key_jwt")) {
        "private_key_jwt"
    } else if both.contains(&&json!("none")) {
        "none"
    } else {
        panic!("no authentication method in common: {server:?} and {ours:?}")
    }
}

async fn chatgpt_over_cimd(backend: Backend) {
    let (s, host) = with_doc_host(backend).await;
    let app = &s.app;
    // ChatGPT signs with a key it publishes at https://chatgpt.com/oauth/jwks.json.
    let key = crate::private_key_jwt::ClientKey::rsa("chatgpt-2026-12");
    host.set_keys(&[&key.jwk]);
    let (prm, meta) = claude_discovery(app).await;
    let method = openai_client_setup(&prm, &meta, &chatgpt_document());
    let resource = prm["resource"].as_str().unwrap().to_owned();
    let (v, c) = verifier();
    let code = browser_to(app, CHATGPT_CIMD, CHATGPT_CALLBACK, &c, Some(&resource)).await;
    // Each request authenticates by the method ChatGPT chose: a fresh assertion each time.
    let signed = |form: &[(&str, &str)]| {
        let mut all: Vec<(String, String)> = form
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        all.push(("client_id".into(), CHATGPT_CIMD.into()));
        if method == "private_key_jwt" {
            all.push((
                "client_assertion_type".into(),
                crate::private_key_jwt::JWT_BEARER.into(),
            ));
            all.push(("client_assertion".into(), key.assertion(app, CHATGPT_CIMD)));
        }
        app.http.post(app.url("/token")).form(&all).send()
    };
    let tokens = signed(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("code_verifier", &v),
        ("redirect_uri", CHATGPT_CALLBACK),
        ("resource", &resource),
    ])
    .await
    .unwrap();
    assert_eq!(tokens.status(), 200);
    let tokens: Value = tokens.json().await.unwrap();
    tool_call_and_list(app, tokens["access_token"].as_str().unwrap()).await;
    // A client that can sign must sign: its refresh token alone (stolen) buys nothing.
    let unsigned = token_call(
        app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("resource", &resource),
            ("client_id", CHATGPT_CIMD),
        ],
    )
    .await;
    assert_eq!(unsigned.status(), 401, "{}", unsigned.text().await.unwrap());
    let refreshed = signed(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ("resource", &resource),
    ])
    .await
    .unwrap();
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.unwrap();
    tool_call_and_list(app, refreshed["access_token"].as_str().unwrap()).await;
    record_compat("ChatGPT", "CIMD, private_key_jwt", backend);
}

/// ChatGPT's registration when the server offers no metadata documents it can use: written from
/// the documented fields (the stable callback, a client secret it keeps, `client_secret_post`
/// which it expects to see echoed), not a capture.
const CHATGPT_DCR: &str = r#"{"redirect_uris":["https://chatgpt.com/connector_platform_oauth_redirect"],"token_endpoint_auth_method":"client_secret_post","grant_types":["authorization_code","refresh_token"],"response_types":["code"],"client_name":"ChatGPT"}"#;

async fn chatgpt_over_dcr(backend: Backend) {
    host_over_dcr(
        backend,
        "ChatGPT",
        "DCR, client_secret_post",
        CHATGPT_DCR,
        CHATGPT_CALLBACK,
    )
    .await;
}

async fn codex_over_cimd(backend: Backend) {
    let (s, _host) = with_doc_host(backend).await;
    let app = &s.app;
    let (prm, meta) = claude_discovery(app).await;
    assert_eq!(openai_client_setup(&prm, &meta, &codex_document()), "none");
    let resource = prm["resource"].as_str().unwrap().to_owned();
    // The document lists the port-less http://127.0.0.1/callback; Codex listens on a port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    let (v, c) = verifier();
    let code = browser_to(app, CODEX_CIMD, &redirect, &c, Some(&resource)).await;
    let tokens = token_call(
        app,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &v),
            ("redirect_uri", &redirect),
            ("resource", &resource),
            ("client_id", CODEX_CIMD),
        ],
    )
    .await;
    assert_eq!(tokens.status(), 200);
    let tokens: Value = tokens.json().await.unwrap();
    tool_call_and_list(app, tokens["access_token"].as_str().unwrap()).await;
    let refreshed = token_call(
        app,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ("resource", &resource),
            ("client_id", CODEX_CIMD),
        ],
    )
    .await;
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.unwrap();
    tool_call_and_list(app, refreshed["access_token"].as_str().unwrap()).await;
    record_compat("Codex", "CIMD, port-less loopback redirect", backend);
}

crate::both_backends!(
    claude_ai_over_dcr,
    claude_ai_over_cimd,
    claude_code_over_cimd,
    mcp_remote_over_stdio,
    cursor_over_dcr,
    vscode_over_dcr,
    copilot_studio_over_dcr,
    chatgpt_over_cimd,
    chatgpt_over_dcr,
    codex_over_cimd,
    vscode_steps_up_on_insufficient_scope,
);
