//! Building blocks for authorization flows against the real app: PKCE, the authorize URL, the
//! consent form, the development login, and the token request.

use authgate::oauth::pkce;
use serde_json::Value;

use crate::browser::{Browser, form_inputs, location};
use crate::helpers::TestApp;

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn new_pkce() -> Pkce {
    let verifier =
        format!("v{}", uuid::Uuid::new_v4().simple()) + &uuid::Uuid::new_v4().simple().to_string();
    Pkce {
        challenge: pkce::s256(&verifier),
        verifier,
    }
}

pub struct RegisteredClient {
    pub id: String,
    pub secret: Option<String>,
    pub redirect_uri: String,
}

pub async fn register_public(app: &TestApp, redirect_uri: &str) -> RegisteredClient {
    let body: Value = app
        .register(serde_json::json!({"redirect_uris":[redirect_uri],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"client_name":"Test Client"}))
        .await
        .json()
        .await
        .unwrap();
    RegisteredClient {
        id: body["client_id"].as_str().unwrap().to_owned(),
        secret: None,
        redirect_uri: redirect_uri.to_owned(),
    }
}

pub async fn register_claude(app: &TestApp) -> RegisteredClient {
    let body: Value = app
        .register(serde_json::from_str(crate::helpers::CLAUDE_DCR_BODY).unwrap())
        .await
        .json()
        .await
        .unwrap();
    RegisteredClient {
        id: body["client_id"].as_str().unwrap().to_owned(),
        secret: Some(body["client_secret"].as_str().unwrap().to_owned()),
        redirect_uri: "https://claude.ai/api/mcp/auth_callback".to_owned(),
    }
}

pub fn authorize_url(
    app: &TestApp,
    client_id: &str,
    redirect_uri: &str,
    pkce: &Pkce,
    extra: &[(&str, &str)],
) -> String {
    let mut url = url::Url::parse(&app.url("/authorize")).unwrap();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code");
        q.append_pair("client_id", client_id);
        q.append_pair("redirect_uri", redirect_uri);
        q.append_pair("code_challenge", &pkce.challenge);
        q.append_pair("code_challenge_method", "S256");
        q.append_pair("state", "st-123");
        for (k, v) in extra {
            q.append_pair(k, v);
        }
    }
    url.to_string()
}

/// Reads a query parameter of a URL.
pub fn param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// GET the authorize URL and expect the consent page; returns its request id.
pub async fn open_consent(browser: &Browser, url: &str) -> String {
    let resp = browser.get(url).await;
    assert_eq!(resp.status(), 200, "expected the consent page");
    let html = resp.text().await.unwrap();
    form_inputs(&html)
        .remove("request")
        .expect("a request id on the consent page")
}

pub async fn decide(
    browser: &Browser,
    app: &TestApp,
    request: &str,
    decision: &str,
) -> reqwest::Response {
    browser
        .post_form(
            &app.url("/authorize/consent"),
            &[("request", request), ("decision", decision)],
            Some(&app.base),
        )
        .await
}

/// Approve on the consent page, then log in with the development login as `email`.
/// Returns the final redirect to the client.
pub async fn approve_and_dev_login(
    browser: &Browser,
    app: &TestApp,
    request: &str,
    email: &str,
) -> reqwest::Response {
    let approved = decide(browser, app, request, "approve").await;
    assert_eq!(approved.status(), 303);
    let login_url = location(&approved);
    assert!(login_url.starts_with(&app.url("/dev/login")), "{login_url}");
    let page = browser.get(&login_url).await;
    assert_eq!(page.status(), 200);
    let state = param(&login_url, "state").unwrap();
    browser
        .post_form(
            &app.url("/dev/login"),
            &[("state", &state), ("email", email)],
            Some(&app.base),
        )
        .await
}

/// The whole browser part with the development login: returns the authorization code.
pub async fn dev_flow(
    app: &TestApp,
    browser: &Browser,
    client: &RegisteredClient,
    pkce: &Pkce,
    extra: &[(&str, &str)],
) -> String {
    let url = authorize_url(app, &client.id, &client.redirect_uri, pkce, extra);
    let request = open_consent(browser, &url).await;
    let done = approve_and_dev_login(browser, app, &request, "ann@example.com").await;
    assert_eq!(done.status(), 303);
    let back = location(&done);
    assert!(back.starts_with(&client.redirect_uri), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some("st-123"));
    assert_eq!(param(&back, "iss").as_deref(), Some(app.base.as_str()));
    param(&back, "code").expect("a code")
}

pub async fn token_request(
    app: &TestApp,
    client: &RegisteredClient,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut all: Vec<(&str, &str)> = form.to_vec();
    all.push(("client_id", &client.id));
    if let Some(s) = &client.secret {
        all.push(("client_secret", s));
    }
    app.http
        .post(app.url("/token"))
        .form(&all)
        .send()
        .await
        .unwrap()
}

pub async fn redeem(
    app: &TestApp,
    client: &RegisteredClient,
    code: &str,
    pkce: &Pkce,
) -> reqwest::Response {
    token_request(
        app,
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("code_verifier", &pkce.verifier),
            ("redirect_uri", &client.redirect_uri),
        ],
    )
    .await
}

pub async fn refresh(app: &TestApp, client: &RegisteredClient, token: &str) -> reqwest::Response {
    token_request(
        app,
        client,
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

/// Register, log in, redeem: a fresh grant's token response.
pub async fn full_grant(app: &TestApp, client: &RegisteredClient) -> Value {
    let browser = Browser::new();
    let pkce = new_pkce();
    let code = dev_flow(app, &browser, client, &pkce, &[]).await;
    let resp = redeem(app, client, &code, &pkce).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}
