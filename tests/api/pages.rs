//! authgate's pages in real headless Chromium (tests/e2e/browser/pages.mjs, playwright-core on
//! Debian's `chromium`): the consent page (Allow and Deny), the development login, an error page;
//! the redirects back to the client as a browser follows them (CSP included); no sideways
//! scrolling at phone width; screenshots at desktop and phone width left in
//! `target/e2e-artifacts/pages-<backend>/`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::RawQuery;
use axum::response::Html;
use axum::routing::get;
use serde_json::Value;
use tokio::process::Command;

use crate::both_backends;
use crate::flow::{Pkce, RegisteredClient, new_pkce, param, redeem};
use crate::helpers::{Backend, TestApp, spawn_app};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/browser");
const CLIENT_NAME: &str = "Acme Notes";

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

/// Missing Chromium or node_modules fail the test, never skip it.
fn require_installed() {
    let chromium = chromium();
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is not installed at {chromium}: run `apt-get install chromium` (scripts/test does it)"
    );
    assert!(
        Path::new(DIR).join("node_modules/playwright-core").exists(),
        "tests/e2e/browser has no node_modules: run `npm ci` there (scripts/test does it)"
    );
}

/// `<target dir>/e2e-artifacts/pages-<backend>`, emptied: an absolute path.
fn artifacts_dir(backend: Backend) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| manifest.join("target"), |t| manifest.join(t));
    let dir = target.join("e2e-artifacts").join(match backend {
        Backend::Sqlite => "pages-sqlite",
        Backend::Postgres => "pages-postgres",
    });
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The client's redirect URI, served on loopback: records every query string it receives.
async fn start_callback() -> (String, Arc<Mutex<Vec<String>>>) {
    let hits = Arc::new(Mutex::new(Vec::new()));
    let seen = hits.clone();
    let app = Router::new().route(
        "/callback",
        get(move |RawQuery(q): RawQuery| async move {
            seen.lock().unwrap().push(q.unwrap_or_default());
            Html("<!doctype html><title>Connected</title><p>You can close this window.</p>")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/callback"), hits)
}

async fn register(app: &TestApp, redirect_uri: &str) -> RegisteredClient {
    let resp = app
        .register(serde_json::json!({
            "redirect_uris": [redirect_uri],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_name": CLIENT_NAME,
        }))
        .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    RegisteredClient {
        id: body["client_id"].as_str().unwrap().to_owned(),
        secret: None,
        redirect_uri: redirect_uri.to_owned(),
    }
}

fn authorize(
    app: &TestApp,
    client_id: &str,
    redirect_uri: &str,
    pkce: &Pkce,
    state: &str,
) -> String {
    let mut url = url::Url::parse(&app.url("/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("code_challenge", &pkce.challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("scope", "mcp")
        .append_pair("state", state);
    url.to_string()
}

/// Runs pages.mjs; returns its RESULT object, or fails with its whole output.
async fn run_pages(app: &TestApp, urls: [&str; 3], artifacts: &Path) -> Value {
    let mut cmd = Command::new("node");
    cmd.arg("pages.mjs")
        .arg(&app.base)
        .args(urls)
        .arg(artifacts)
        .current_dir(DIR)
        .env("CHROMIUM", chromium())
        .env("CLIENT_NAME", CLIENT_NAME)
        .env("LOGIN_EMAIL", "ann@example.test")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .expect("pages.mjs did not finish within 180 s")
        .expect("node must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result = stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RESULT "))
        .and_then(|r| serde_json::from_str::<Value>(r).ok());
    match result {
        Some(r) if out.status.success() && r["ok"] == true => r,
        Some(r) => panic!(
            "pages.mjs failed ({}): {}\nRESULT {r:#}\nstderr:\n{stderr}",
            out.status,
            serde_json::to_string_pretty(&r["failures"]).unwrap()
        ),
        None => panic!("pages.mjs failed ({}):\n{stdout}\n{stderr}", out.status),
    }
}

async fn consent_and_error_pages_in_chromium(backend: Backend) {
    require_installed();
    let app = spawn_app(backend).await;
    let (redirect_uri, hits) = start_callback().await;
    let client = register(&app, &redirect_uri).await;
    let approve_pkce = new_pkce();
    let deny_pkce = new_pkce();
    let approve = authorize(&app, &client.id, &redirect_uri, &approve_pkce, "st-approve");
    let deny = authorize(&app, &client.id, &redirect_uri, &deny_pkce, "st-deny");
    let error = authorize(
        &app,
        "agc_not-a-registered-client",
        &redirect_uri,
        &new_pkce(),
        "st-error",
    );
    let artifacts = artifacts_dir(backend);

    let r = run_pages(&app, [&approve, &deny, &error], &artifacts).await;
    println!("screenshots in {}\nRESULT {r}", artifacts.display());

    // Every check the script made passed (it exits non-zero otherwise); spot-check the essentials.
    for check in [
        "approve_client_name_in_heading",
        "approve_redirect_host_visible",
        "approve_consent_phone_no_horizontal_scroll",
        "approve_reaches_dev_login",
        "approve_redirect_has_code",
        "deny_redirect_access_denied",
        "error_no_redirect",
        "error_phone_no_horizontal_scroll",
        "no_csp_violations",
    ] {
        assert_eq!(r["checks"][check], true, "{check}: {r:#}");
    }
    let approved = r["approveFinalUrl"].as_str().unwrap();
    assert!(approved.starts_with(&redirect_uri), "{approved}");
    assert_eq!(param(approved, "state").as_deref(), Some("st-approve"));
    assert_eq!(param(approved, "iss").as_deref(), Some(app.base.as_str()));
    let denied = r["denyFinalUrl"].as_str().unwrap();
    assert_eq!(param(denied, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(denied, "state").as_deref(), Some("st-deny"));
    assert_eq!(param(denied, "iss").as_deref(), Some(app.base.as_str()));
    assert!(param(denied, "code").is_none());

    // The client's redirect URI really received both answers, and nothing for the error page.
    let received = hits.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "{received:?}");
    assert!(
        received
            .iter()
            .any(|q| q.contains("state=st-approve") && q.contains("code=")),
        "{received:?}"
    );
    assert!(
        received
            .iter()
            .any(|q| q.contains("state=st-deny") && q.contains("error=access_denied")),
        "{received:?}"
    );
    assert!(
        !received.iter().any(|q| q.contains("st-error")),
        "{received:?}"
    );

    // The code the browser carried back is a working one.
    let code = param(approved, "code").unwrap();
    let token = redeem(&app, &client, &code, &approve_pkce).await;
    assert_eq!(token.status(), 200);
    let token: Value = token.json().await.unwrap();
    assert!(token["access_token"].is_string(), "{token}");

    // The screenshots are there, as PNG files.
    for name in [
        "consent-desktop.png",
        "consent-phone.png",
        "dev-login-desktop.png",
        "dev-login-phone.png",
        "error-desktop.png",
        "error-phone.png",
    ] {
        let path = artifacts.join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 1000,
            "{}",
            path.display()
        );
    }
}

both_backends!(consent_and_error_pages_in_chromium);
