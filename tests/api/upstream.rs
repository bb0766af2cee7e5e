//! End to end with a real OpenID provider upstream (npm `oidc-provider`, in tests/e2e/idp),
//! driven by the scripted browser: register, authorize, authgate's consent, upstream login and
//! consent, callback, code, token, refresh, replay, revoke.

use std::process::Stdio;

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::both_backends;
use crate::browser::{Browser, form_action, form_inputs, location};
use crate::flow::{self, RegisteredClient, new_pkce, param, redeem, refresh, register_claude};
use crate::helpers::{Backend, TestApp, ready_line, spawn_app_on};

pub struct Idp {
    pub issuer: String,
    _child: Child,
}

/// Starts the test OpenID provider on a free port, accepting `callback` as its client's
/// redirect URI. Missing dependencies fail the test: run scripts/test (it installs them).
pub async fn start_idp(callback: &str, auth_method: &str, skip_consent: bool) -> Idp {
    start_idp_with(callback, auth_method, skip_consent, &[]).await
}

/// The same, with more `IDP_*` variables (refresh tokens, token lifetimes).
pub async fn start_idp_with(
    callback: &str,
    auth_method: &str,
    skip_consent: bool,
    env: &[(&str, &str)],
) -> Idp {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/idp");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/oidc-provider")
            .exists(),
        "tests/e2e/idp has no node_modules: run `npm ci` there (scripts/test does it)"
    );
    let mut cmd = Command::new("node");
    cmd.arg("idp.mjs")
        .current_dir(dir)
        .env("IDP_PORT", "0")
        .env("IDP_REDIRECT_URIS", callback)
        .env("IDP_CLIENT_AUTH_METHOD", auth_method)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if skip_consent {
        cmd.env("IDP_SKIP_CONSENT", "1");
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd
        .spawn()
        .expect("node must be installed for the end-to-end tests");
    let issuer = ready_line(&mut child, "IDP READY ", "the IdP").await;
    Idp {
        issuer,
        _child: child,
    }
}

pub struct Setup {
    pub app: TestApp,
    pub idp: Idp,
}

pub async fn setup(
    backend: Backend,
    auth_method: &str,
    skip_consent: bool,
    configure: impl FnOnce(&mut authgate::config::RawConfig),
) -> Setup {
    setup_with_idp(backend, auth_method, skip_consent, &[], configure).await
}

/// The same, with more `IDP_*` variables for the provider.
pub async fn setup_with_idp(
    backend: Backend,
    auth_method: &str,
    skip_consent: bool,
    idp_env: &[(&str, &str)],
    configure: impl FnOnce(&mut authgate::config::RawConfig),
) -> Setup {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let idp = start_idp_with(
        &format!("{base}/oauth/callback"),
        auth_method,
        skip_consent,
        idp_env,
    )
    .await;
    let issuer = idp.issuer.clone();
    let method = auth_method.to_owned();
    let app = spawn_app_on(backend, listener, move |raw| {
        raw.set("AUTHGATE_UPSTREAM_ISSUER", issuer);
        raw.set("AUTHGATE_UPSTREAM_CLIENT_ID", "authgate");
        raw.set("AUTHGATE_UPSTREAM_CLIENT_SECRET", "authgate-secret");
        raw.set("AUTHGATE_UPSTREAM_AUTH_METHOD", method);
        raw.set(
            "AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS",
            "connection=google-oauth2",
        );
        raw.set("AUTHGATE_ALLOWED_DOMAINS", "example.test");
        configure(raw);
    })
    .await;
    Setup { app, idp }
}

/// Walks the browser from `url` through every page (authgate's consent: approve; the IdP's login
/// and consent forms) until a redirect leaves for `stop_prefix`; returns that URL or the last
/// response if a page ends the walk.
pub async fn walk(
    browser: &Browser,
    app: &TestApp,
    url: &str,
    stop_prefix: &str,
    login: &str,
) -> Result<String, reqwest::Response> {
    let mut resp = browser.get(url).await;
    for _ in 0..30 {
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            let next = location(&resp);
            if next.starts_with(stop_prefix) {
                return Ok(next);
            }
            resp = browser.get(&next).await;
            continue;
        }
        if status != 200 {
            return Err(resp);
        }
        let page_url = resp.url().to_string();
        let html = resp.text().await.unwrap();
        let action = form_action(&html, &page_url);
        let mut fields = form_inputs(&html);
        // authgate's consent page (or its confirmation of a login that came back without the
        // browser cookie): approve, from its own origin.
        let origin = if fields.contains_key("request") || fields.contains_key("confirm") {
            fields.insert("decision".into(), "approve".into());
            Some(app.base.clone())
        } else {
            if fields.contains_key("login") || html.contains("name=\"login\"") {
                fields.insert("login".into(), login.into());
                fields.insert("password".into(), "pw".into());
            }
            None
        };
        let form: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        resp = browser.post_form(&action, &form, origin.as_deref()).await;
    }
    panic!("too many steps");
}

async fn full_flow(backend: Backend, auth_method: &str, skip_consent: bool) {
    let s = setup(backend, auth_method, skip_consent, |_| {}).await;
    let app = &s.app;
    let client = register_claude(app).await;
    let browser = Browser::new();
    let pkce = new_pkce();
    let url = flow::authorize_url(
        app,
        &client.id,
        &client.redirect_uri,
        &pkce,
        &[("resource", &app.url("/mcp")), ("scope", "mcp")],
    );
    let back = walk(
        &browser,
        app,
        &url,
        &client.redirect_uri,
        "ann@example.test",
    )
    .await
    .unwrap_or_else(|r| panic!("flow stopped at {}", r.url()));
    assert_eq!(param(&back, "state").as_deref(), Some("st-123"));
    assert_eq!(param(&back, "iss").as_deref(), Some(app.base.as_str()));
    let code = param(&back, "code").unwrap();

    let last: Value = reqwest::get(format!("{}/test/last-authorize", s.idp.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        last["connection"], "google-oauth2",
        "extra authorize parameters pass through"
    );
    assert!(
        last.get("resource").is_none(),
        "the MCP client's resource is never forwarded upstream"
    );
    assert_eq!(last["code_challenge_method"], "S256");
    assert!(last["nonce"].is_string() && last["state"].is_string());

    let tokens: Value = redeem(app, &client, &code, &pkce)
        .await
        .json()
        .await
        .unwrap();
    let claims = app
        .state
        .keys
        .verify(
            tokens["access_token"].as_str().unwrap(),
            &app.base,
            &app.url("/mcp"),
            app.clock_now(),
        )
        .unwrap();
    assert_eq!(claims.email.as_deref(), Some("ann@example.test"));
    let rt = tokens["refresh_token"].as_str().unwrap();
    let refreshed: Value = refresh(app, &client, rt).await.json().await.unwrap();
    assert!(refreshed["access_token"].is_string());
    assert_eq!(
        redeem(app, &client, &code, &pkce).await.status(),
        400,
        "code replay refused"
    );
    assert_eq!(
        refresh(app, &client, refreshed["refresh_token"].as_str().unwrap())
            .await
            .status(),
        400,
        "and the grant revoked"
    );

    // A returning user with a session is not sent upstream again.
    let again = browser
        .get(&flow::authorize_url(
            app,
            &client.id,
            &client.redirect_uri,
            &new_pkce(),
            &[],
        ))
        .await;
    assert_eq!(again.status(), 302);
    assert!(param(&location(&again), "code").is_some());
}

async fn full_flow_client_secret_post(backend: Backend) {
    full_flow(backend, "client_secret_post", false).await;
}

async fn full_flow_client_secret_basic_without_upstream_consent(backend: Backend) {
    full_flow(backend, "client_secret_basic", true).await;
}

async fn login_policy_applies_to_upstream_identities(backend: Backend) {
    let s = setup(backend, "client_secret_post", true, |raw| {
        raw.set("AUTHGATE_ALLOWED_EMAILS", "ann@example.com")
    })
    .await;
    let app = &s.app;
    let client = register_claude(app).await;
    for login in ["mallory@evil.example", "unverified-ann@example.test"] {
        let url = flow::authorize_url(app, &client.id, &client.redirect_uri, &new_pkce(), &[]);
        let stopped = walk(&Browser::new(), app, &url, &client.redirect_uri, login)
            .await
            .expect_err("no code for a refused user");
        assert_eq!(stopped.status(), 403, "{login}");
    }
    let url = flow::authorize_url(app, &client.id, &client.redirect_uri, &new_pkce(), &[]);
    assert!(
        walk(
            &Browser::new(),
            app,
            &url,
            &client.redirect_uri,
            "bob@example.test"
        )
        .await
        .is_ok(),
        "listed domain admitted"
    );
}

async fn callback_is_bound_to_the_browser_and_state(backend: Backend) {
    let s = setup(backend, "client_secret_post", true, |_| {}).await;
    let app = &s.app;
    let client = register_claude(app).await;
    let browser = Browser::new();
    let url = flow::authorize_url(app, &client.id, &client.redirect_uri, &new_pkce(), &[]);
    let callback_prefix = app.url("/oauth/callback");
    let callback = walk(&browser, app, &url, &callback_prefix, "ann@example.test")
        .await
        .unwrap();
    // Another browser (one with authgate's cookie of its own) cannot finish this login.
    let other = Browser::new();
    other
        .get(&flow::authorize_url(
            app,
            &client.id,
            &client.redirect_uri,
            &new_pkce(),
            &[],
        ))
        .await;
    let refused = other.get(&callback).await;
    assert_eq!(refused.status(), 400);
    assert!(refused.headers().get("location").is_none());
    // A made-up state goes nowhere.
    let forged = browser
        .get(&format!("{callback_prefix}?state=forged&code=x"))
        .await;
    assert_eq!(forged.status(), 400);
    // A mix-up: an `iss` that is not our upstream.
    let mixed = browser
        .get(&format!("{callback}&iss=https%3A%2F%2Fevil.example"))
        .await;
    assert_eq!(mixed.status(), 400);
    // The real browser finishes, once.
    let done = browser.get(&callback).await;
    assert_eq!(done.status(), 303);
    assert!(param(&location(&done), "code").is_some());
    assert_eq!(
        browser.get(&callback).await.status(),
        400,
        "the callback works once"
    );
}

async fn flow_survives_an_authgate_restart_mid_login(backend: Backend) {
    let s = setup(backend, "client_secret_post", true, |_| {}).await;
    let client = register_claude(&s.app).await;
    let browser = Browser::new();
    let pkce = new_pkce();
    let url = flow::authorize_url(&s.app, &client.id, &client.redirect_uri, &pkce, &[]);
    let callback = walk(
        &browser,
        &s.app,
        &url,
        &s.app.url("/oauth/callback"),
        "ann@example.test",
    )
    .await
    .unwrap();
    let app = s.app.restart().await;
    let done = browser.get(&callback).await;
    assert_eq!(done.status(), 303, "the pending login survived the restart");
    let code = param(&location(&done), "code").unwrap();
    let tokens: Value = redeem(&app, &client, &code, &pkce)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        refresh(&app, &client, tokens["refresh_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
    let _keep: &RegisteredClient = &client;
}

both_backends!(
    full_flow_client_secret_post,
    full_flow_client_secret_basic_without_upstream_consent,
    login_policy_applies_to_upstream_identities,
    callback_is_bound_to_the_browser_and_state,
    flow_survives_an_authgate_restart_mid_login,
);
