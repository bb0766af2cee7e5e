//! Building blocks for authorization flows against the real app: PKCE, the authorize URL, the
//! consent form, the development login, and the token request.

use authgate::oauth::pkce;
use serde_json::Value;

use crate::browser::{Browser, form_inputs, location};
use crate::helpers::Server;

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

/// `POST /register` with a JSON body.
pub async fn register(app: &impl Server, body: Value) -> reqwest::Response {
    app.client()
        .post(app.url("/register"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

pub async fn register_public(app: &impl Server, redirect_uri: &str) -> RegisteredClient {
    let body: Value = register(app, serde_json::json!({"redirect_uris":[redirect_uri],"token_endpoint_auth_method":"none","grant_types":["authorization_code","refresh_token"],"client_name":"Test Client"}))
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

pub async fn register_claude(app: &impl Server) -> RegisteredClient {
    let body: Value = register(
        app,
        serde_json::from_str(crate::helpers::CLAUDE_DCR_BODY).unwrap(),
    )
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
    app: &impl Server,
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
    app: &impl Server,
    request: &str,
    decision: &str,
) -> reqwest::Response {
    browser
        .post_form(
            &app.url("/authorize/consent"),
            &[("request", request), ("decision", decision)],
            Some(app.public()),
        )
        .await
}

/// Approve on the consent page, then log in with the development login as `email`.
/// Returns the final redirect to the client.
pub async fn approve_and_dev_login(
    browser: &Browser,
    app: &impl Server,
    request: &str,
    email: &str,
) -> reqwest::Response {
    let approved = decide(browser, app, request, "approve").await;
    assert_eq!(approved.status(), 303);
    let login_url = location(&approved);
    assert!(
        login_url.starts_with(&format!("{}/dev/login", app.public())),
        "the login page is on the public URL: {login_url}"
    );
    let page = browser.get(&app.local(&login_url)).await;
    assert_eq!(page.status(), 200);
    let state = param(&login_url, "state").unwrap();
    browser
        .post_form(
            &app.url("/dev/login"),
            &[("state", &state), ("email", email)],
            Some(app.public()),
        )
        .await
}

/// The whole browser part with the development login: returns the authorization code.
pub async fn dev_flow(
    app: &impl Server,
    browser: &Browser,
    client: &RegisteredClient,
    pkce: &Pkce,
    extra: &[(&str, &str)],
) -> String {
    let url = authorize_url(app, &client.id, &client.redirect_uri, pkce, extra);
    let request = open_consent(browser, &url).await;
    approve_and_login(app, browser, client, &request).await
}

pub async fn token_request(
    app: &impl Server,
    client: &RegisteredClient,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut all: Vec<(&str, &str)> = form.to_vec();
    all.push(("client_id", &client.id));
    if let Some(s) = &client.secret {
        all.push(("client_secret", s));
    }
    app.client()
        .post(app.url("/token"))
        .form(&all)
        .send()
        .await
        .unwrap()
}

pub async fn redeem(
    app: &impl Server,
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

pub async fn refresh(
    app: &impl Server,
    client: &RegisteredClient,
    token: &str,
) -> reqwest::Response {
    token_request(
        app,
        client,
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

/// Register, log in, redeem: a fresh grant's token response.
pub async fn full_grant(app: &impl Server, client: &RegisteredClient) -> Value {
    let browser = Browser::new();
    let pkce = new_pkce();
    let code = dev_flow(app, &browser, client, &pkce, &[]).await;
    let resp = redeem(app, client, &code, &pkce).await;
    assert_eq!(resp.status(), 200, "code redemption at {}", app.base());
    resp.json().await.unwrap()
}

/// `GET /authorize` for `client`: the consent page's request id.
pub async fn consent_for(
    app: &impl Server,
    browser: &Browser,
    client: &RegisteredClient,
    pkce: &Pkce,
) -> String {
    let url = authorize_url(app, &client.id, &client.redirect_uri, pkce, &[]);
    open_consent(browser, &url).await
}

/// The consent, then the development login as ann@example.com: the code sent to the client.
pub async fn approve_and_login(
    app: &impl Server,
    browser: &Browser,
    client: &RegisteredClient,
    request: &str,
) -> String {
    let done = approve_and_dev_login(browser, app, request, "ann@example.com").await;
    assert_eq!(done.status(), 303, "dev login at {}", app.base());
    let back = location(&done);
    assert!(back.starts_with(&client.redirect_uri), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some("st-123"));
    assert_eq!(param(&back, "iss").as_deref(), Some(app.public()));
    param(&back, "code").expect("a code")
}

/// An MCP `POST` as a load balancer passes it on (`Host` is the public host).
pub async fn mcp_post(app: &impl Server, token: Option<&str>, body: &str) -> reqwest::Response {
    let host = url::Url::parse(app.public()).unwrap();
    let host = match host.port() {
        Some(p) => format!("{}:{p}", host.host_str().unwrap()),
        None => host.host_str().unwrap().to_owned(),
    };
    let mut req = app
        .client()
        .post(app.url("/mcp"))
        .header("Host", host)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18")
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap()
}
