//! Real MCP clients end to end, with the real upstream OpenID provider: the official TypeScript
//! and Python SDK clients go from a bare 401 through discovery, registration, authgate's consent,
//! the upstream login, the token, `tools/list`, `tools/call` and a refresh, against the built-in
//! server and against a forwarded MCP server (with a tool streaming progress notifications).

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::both_backends;
use crate::helpers::Backend;
use crate::upstream::setup;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/clients");

pub fn require_installed() {
    assert!(
        std::path::Path::new(DIR)
            .join("node_modules/@modelcontextprotocol/sdk")
            .exists(),
        "tests/e2e/clients has no node_modules: run `npm ci` there (scripts/test does it)"
    );
    assert!(
        std::path::Path::new(DIR).join(".venv/bin/python").exists(),
        "tests/e2e/clients has no .venv: see its README (scripts/test does it)"
    );
}

/// The plain MCP server put behind authgate.
pub async fn start_mcp_server() -> (String, Child) {
    start_mcp_server_with(&[]).await
}

/// The same, with some of its `env` options (`MCP_JSON_RESPONSE=1`, ...).
pub async fn start_mcp_server_with(env: &[(&str, &str)]) -> (String, Child) {
    let mut child = Command::new("node")
        .arg("mcp-server.mjs")
        .current_dir(DIR)
        .env("PORT", "0")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed");
    let url = crate::helpers::ready_line(&mut child, "MCP SERVER READY ", "the MCP server").await;
    (url, child)
}

/// Runs one client script; returns its RESULT object (and the whole output on failure).
pub async fn run_client(
    program: &str,
    script: &str,
    mcp_url: &str,
    tool: &str,
    args: &str,
    env: &[(&str, &str)],
) -> Value {
    let mut cmd = Command::new(program);
    cmd.arg(script)
        .arg(mcp_url)
        .arg(tool)
        .arg(args)
        .current_dir(DIR)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .expect("the client did not finish within 120 s")
        .expect("the client could not start");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|r| serde_json::from_str::<Value>(r).ok());
    match result {
        Some(r) if out.status.success() && r["ok"] == true => r,
        _ => panic!("{script} failed ({}):\n{stdout}\n{stderr}", out.status),
    }
}

async fn ts(mcp_url: &str, tool: &str, args: &str, env: &[(&str, &str)]) -> Value {
    run_client("node", "ts-client.mjs", mcp_url, tool, args, env).await
}

async fn py(mcp_url: &str, tool: &str, args: &str, env: &[(&str, &str)]) -> Value {
    run_client(".venv/bin/python", "py_client.py", mcp_url, tool, args, env).await
}

fn assert_refreshed(r: &Value) {
    assert_eq!(r["refreshed"], true, "{r}");
}

async fn sdk_clients_against_the_builtin_server(backend: Backend) {
    require_installed();
    let s = setup(backend, "client_secret_post", false, |_| {}).await;
    let url = s.app.url("/mcp");
    for (name, r) in [
        ("TypeScript SDK", ts(&url, "whoami", "{}", &[]).await),
        ("Python SDK", py(&url, "whoami", "{}", &[]).await),
    ] {
        assert!(
            r["tools"].as_array().unwrap().contains(&"whoami".into()),
            "{r}"
        );
        let who: Value = serde_json::from_str(r["call"].as_str().unwrap()).unwrap();
        assert_eq!(who["email"], "ann@example.test");
        assert_refreshed(&r);
        crate::helpers::record_compat(name, "DCR, none", backend);
    }
}

async fn sdk_clients_through_forwarding_with_streaming(backend: Backend) {
    require_installed();
    let (upstream, _server) = start_mcp_server().await;
    let s = setup(backend, "client_secret_basic", true, move |raw| {
        raw.set("AUTHGATE_MCP_UPSTREAM", upstream)
    })
    .await;
    let url = s.app.url("/mcp");
    let env = [
        ("PROGRESS_TOOL", "slow"),
        ("PROGRESS_ARGS", r#"{"steps":4,"ms":700}"#),
    ];
    for (name, r) in [
        ("TypeScript SDK", ts(&url, "headers", "{}", &env).await),
        ("Python SDK", py(&url, "headers", "{}", &env).await),
    ] {
        let seen: Value = serde_json::from_str(r["call"].as_str().unwrap()).unwrap();
        assert_eq!(seen["authorization"], false, "no token passthrough: {seen}");
        assert_eq!(seen["authgate"]["email"], "ann@example.test");
        assert_eq!(seen["authgate"]["scope"], "mcp");
        let progress: Vec<f64> = r["progress"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(progress.len(), 4, "{r}");
        // Event by event: the first notification arrives long before the last one is sent.
        assert!(
            progress[0] < 1500.0 && progress[3] - progress[0] > 1500.0,
            "buffered? {progress:?}"
        );
        assert_refreshed(&r);
        crate::helpers::record_compat(name, "DCR, none, forwarded with streaming", backend);
    }
}

both_backends!(
    sdk_clients_against_the_builtin_server,
    sdk_clients_through_forwarding_with_streaming,
);
