//! The user's upstream tokens for the MCP server behind authgate, against the real test OpenID
//! provider (refresh tokens on, rotated on every use): kept sealed with the grant at the login,
//! sent as `X-Authgate-Upstream-Token`, refreshed once across instances, given up (and the grant
//! revoked) when the provider refuses, deleted with the grant, and exchanged at `/token`
//! (RFC 8693). The MCP server here is scripted: it records the header it receives.

use std::sync::{Arc, Mutex};

use authgate::config::RawResource;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::any;
use serde_json::Value;

use crate::both_backends;
use crate::browser::{Browser, form_inputs, location};
use crate::flow::{self, RegisteredClient, new_pkce, param, redeem, register_claude};
use crate::helpers::{Backend, TestApp};
use crate::upstream::{Idp, Setup, setup_with_idp, walk};
use crate::webview::{approved_elsewhere, confirm};

/// 32 bytes (0, 1, ..., 31) in base64.
pub const KEK: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const USER: &str = "ann@example.test";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
const TOOLS_LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;

/// An MCP server that records the `X-Authgate-Upstream-Token` of every request it receives.
#[derive(Clone)]
pub struct Scripted {
    pub url: String,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl Scripted {
    pub async fn start() -> Self {
        let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let app =
            Router::new()
                .route(
                    "/mcp",
                    any(
                        |State(seen): State<Arc<Mutex<Vec<Option<String>>>>>,
                         headers: HeaderMap| async move {
                            let token = headers
                                .get_all("x-authgate-upstream-token")
                                .iter()
                                .map(|v| v.to_str().unwrap().to_owned())
                                .collect::<Vec<_>>();
                            assert!(token.len() <= 1, "one upstream token header at most");
                            seen.lock().unwrap().push(token.into_iter().next());
                            axum::Json(
                                serde_json::json!({"jsonrpc":"2.0","id":1,"result":{"tools":[]}}),
                            )
                        },
                    ),
                )
                .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, seen }
    }

    /// The upstream tokens of the requests received so far, in order.
    pub fn seen(&self) -> Vec<Option<String>> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> String {
        self.seen()
            .last()
            .cloned()
            .flatten()
            .expect("the last request carried an upstream token")
    }
}

pub struct Gate {
    pub s: Setup,
    pub mcp: Scripted,
}

/// authgate with `/mcp` keeping upstream tokens and `/plain/mcp` not (same MCP server), in
/// front of the test provider issuing rotating refresh tokens and access tokens living
/// `idp_ttl` seconds. authgate's own access tokens live a day, so moving its clock past the
/// upstream token's expiry leaves them valid.
pub async fn gate(
    backend: Backend,
    idp_ttl: &str,
    configure: impl FnOnce(&mut authgate::config::RawConfig),
) -> Gate {
    let mcp = Scripted::start().await;
    let url = mcp.url.clone();
    let s = setup_with_idp(
        backend,
        "client_secret_post",
        false,
        &[
            ("IDP_REFRESH_TOKENS", "1"),
            ("IDP_ACCESS_TOKEN_TTL", idp_ttl),
        ],
        move |raw| {
            raw.set("AUTHGATE_MCP_UPSTREAM", url.clone());
            raw.set("AUTHGATE_MCP_UPSTREAM_TOKEN", "header");
            raw.set("AUTHGATE_KEY_ENCRYPTION_KEY", KEK);
            raw.set(
                "AUTHGATE_UPSTREAM_SCOPES",
                "openid email profile offline_access",
            );
            raw.set(
                "AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS",
                "connection=google-oauth2&prompt=consent",
            );
            raw.set("AUTHGATE_ACCESS_TOKEN_TTL", "1d");
            raw.add_resource(RawResource {
                path: Some("/plain/mcp".into()),
                upstream: Some(url),
                scopes: vec![],
                ..RawResource::default()
            });
            configure(raw);
        },
    )
    .await;
    Gate { s, mcp }
}

/// Logs `USER` in at the provider (from `browser`) for `client` and the resource at `path`, and
/// redeems the code: the token response.
pub async fn login(
    app: &TestApp,
    client: &RegisteredClient,
    browser: &Browser,
    path: &str,
) -> Value {
    let pkce = new_pkce();
    let url = flow::authorize_url(
        app,
        &client.id,
        &client.redirect_uri,
        &pkce,
        &[("resource", &app.url(path))],
    );
    let back = walk(browser, app, &url, &client.redirect_uri, USER)
        .await
        .unwrap_or_else(|r| panic!("the flow stopped at {} ({})", r.url(), r.status()));
    let code = param(&back, "code").expect("a code");
    let resp = redeem(app, client, &code, &pkce).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn access_token(tokens: &Value) -> &str {
    tokens["access_token"].as_str().unwrap()
}

/// A JSON-RPC request to the resource at `path`, reaching any instance as the public URL's host
/// (as through a load balancer).
pub async fn call(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    let public = &app.state.settings.public_url;
    let host = format!(
        "{}:{}",
        public.host_str().unwrap(),
        public.port_or_known_default().unwrap()
    );
    app.http
        .post(app.url(path))
        .header("Host", host)
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(TOOLS_LIST)
        .send()
        .await
        .unwrap()
}

/// The provider's answer to its userinfo endpoint for an access token: what an upstream API
/// checking the token would learn.
pub async fn userinfo(idp: &Idp, token: &str) -> reqwest::StatusCode {
    reqwest::Client::new()
        .get(format!("{}/me", idp.issuer))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
}

/// `(refresh requests, successful ones)` the provider received.
pub async fn refreshes(idp: &Idp) -> (i64, i64) {
    let c: Value = reqwest::get(format!("{}/test/counters", idp.issuer))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    (
        c["refresh"].as_i64().unwrap(),
        c["refresh_ok"].as_i64().unwrap(),
    )
}

pub async fn idp_post(idp: &Idp, path: &str) {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", idp.issuer))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
}

async fn token_rows(app: &TestApp) -> i64 {
    app.count_rows("SELECT COUNT(*) FROM upstream_tokens").await
}

async fn upstream_tokens_are_kept_sealed_and_sent_to_the_mcp_server(backend: Backend) {
    let g = gate(backend, "3600", |_| {}).await;
    let app = &g.s.app;
    let client = register_claude(app).await;
    let tokens = login(app, &client, &Browser::new(), "/mcp").await;
    assert_eq!(token_rows(app).await, 1, "one token set, with the grant");

    // A forged header from the client is replaced by authgate's own.
    let resp = app
        .http
        .post(app.url("/mcp"))
        .bearer_auth(access_token(&tokens))
        .header("Content-Type", "application/json")
        .header("X-Authgate-Upstream-Token", "forged")
        .body(TOOLS_LIST)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let upstream = g.mcp.last();
    assert_ne!(upstream, "forged");
    assert_eq!(
        userinfo(&g.s.idp, &upstream).await,
        200,
        "the header is the user's real access token at the provider"
    );
    assert_eq!(
        userinfo(&g.s.idp, access_token(&tokens)).await,
        401,
        "and not the client's authgate token (no passthrough)"
    );

    // At rest: sealed, never the token itself.
    let quoted = upstream.replace('\'', "''");
    assert_eq!(
        app.count_rows(&format!(
            "SELECT COUNT(*) FROM upstream_tokens WHERE access_sealed LIKE '%{quoted}%' OR refresh_sealed LIKE '%{quoted}%'"
        ))
        .await,
        0
    );
    assert_eq!(
        app.count_rows(
            "SELECT COUNT(*) FROM upstream_tokens WHERE access_sealed LIKE 'sealed1:%' AND refresh_sealed LIKE 'sealed1:%'"
        )
        .await,
        1,
        "both tokens sealed (the provider issued a refresh token)"
    );
    let claims = app
        .state
        .keys
        .verify_signature(access_token(&tokens))
        .unwrap();
    let row = app
        .store
        .get_upstream_tokens(&claims.sid)
        .await
        .unwrap()
        .unwrap();
    let sealer = app.state.settings.upstream_token_sealer.clone().unwrap();
    use authgate::domain::upstream_token::{Part, sealing_context};
    assert_eq!(
        sealer
            .open(
                &sealing_context(&claims.sid, Part::Access),
                &row.access_sealed
            )
            .unwrap(),
        upstream
    );
    assert!(
        sealer
            .open(
                &sealing_context("another-grant", Part::Access),
                &row.access_sealed
            )
            .is_err(),
        "bound to its grant"
    );

    // A resource that does not keep upstream tokens gets none, and its grants keep none.
    let plain = login(app, &client, &Browser::new(), "/plain/mcp").await;
    assert_eq!(
        call(app, "/plain/mcp", access_token(&plain)).await.status(),
        200
    );
    assert_eq!(g.mcp.seen().last(), Some(&None));
    assert_eq!(token_rows(app).await, 1);

    // Turned on later, the grants from before have no upstream tokens: they are revoked, so
    // their clients authorize again (and that login brings tokens).
    let on = app
        .another_instance(|s| s.resources[1].upstream_token = true)
        .await;
    let forwarded = g.mcp.seen().len();
    assert_eq!(
        call(&on, "/plain/mcp", access_token(&plain)).await.status(),
        401
    );
    assert_eq!(g.mcp.seen().len(), forwarded);
    let refresh = flow::refresh(app, &client, plain["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refresh.status(), 400);

    // Under another key-encryption key the stored tokens do not open: the grant is revoked, so
    // its client authorizes again.
    let rekeyed = app
        .another_instance(|s| {
            s.upstream_token_sealer =
                Some(authgate::sealing::TokenSealer::derive(&[1u8; 32]).unwrap());
        })
        .await;
    assert_eq!(
        call(&rekeyed, "/mcp", access_token(&tokens)).await.status(),
        401
    );
    assert_eq!(token_rows(app).await, 0);
    let refresh = flow::refresh(app, &client, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refresh.status(), 400);
}

async fn returning_users_log_in_at_the_provider_again(backend: Backend) {
    let g = gate(backend, "3600", |_| {}).await;
    let app = &g.s.app;
    let client = register_claude(app).await;
    let browser = Browser::new();
    login(app, &client, &browser, "/mcp").await;

    // Approved before and logged in at authgate: still off to the provider (only a login
    // there brings the tokens), not straight back with a code.
    let pkce = new_pkce();
    let url = flow::authorize_url(app, &client.id, &client.redirect_uri, &pkce, &[]);
    let again = browser.get(&url).await;
    assert_eq!(again.status(), 302);
    let next = location(&again);
    assert!(next.starts_with(&g.s.idp.issuer), "{next}");
    assert!(param(&next, "code").is_none());
    let back = walk(&browser, app, &next, &client.redirect_uri, USER)
        .await
        .unwrap_or_else(|r| panic!("stopped at {}", r.url()));
    let code = param(&back, "code").unwrap();
    assert_eq!(redeem(app, &client, &code, &pkce).await.status(), 200);
    assert_eq!(
        token_rows(app).await,
        1,
        "the login continues the person's grant and replaces its token set"
    );

    // The consent page with a session (prompt=consent) also goes to the provider on approval.
    let url = flow::authorize_url(
        app,
        &client.id,
        &client.redirect_uri,
        &new_pkce(),
        &[("prompt", "consent")],
    );
    let request = flow::open_consent(&browser, &url).await;
    let approved = flow::decide(&browser, app, &request, "approve").await;
    assert_eq!(approved.status(), 303);
    assert!(location(&approved).starts_with(&g.s.idp.issuer));

    // prompt=none cannot be answered without a login at the provider.
    let url = flow::authorize_url(
        app,
        &client.id,
        &client.redirect_uri,
        &new_pkce(),
        &[("prompt", "none")],
    );
    let none = browser.get(&url).await;
    assert_eq!(none.status(), 302);
    let answer = location(&none);
    assert!(answer.starts_with(&client.redirect_uri));
    assert_eq!(param(&answer, "error").as_deref(), Some("login_required"));

    // Resources that keep no upstream tokens keep the shortcut.
    let url = flow::authorize_url(
        app,
        &client.id,
        &client.redirect_uri,
        &new_pkce(),
        &[("resource", &app.url("/plain/mcp"))],
    );
    let plain = browser.get(&url).await;
    assert_eq!(plain.status(), 302);
    assert!(param(&location(&plain), "code").is_some());
}

async fn revoking_a_grant_deletes_its_upstream_tokens(backend: Backend) {
    let g = gate(backend, "3600", |_| {}).await;
    let app = &g.s.app;
    let client = register_claude(app).await;

    // RFC 7009 revocation of the refresh token (the grant).
    let first = login(app, &client, &Browser::new(), "/mcp").await;
    assert_eq!(token_rows(app).await, 1);
    let revoke = app
        .http
        .post(app.url("/revoke"))
        .form(&[
            ("token", first["refresh_token"].as_str().unwrap()),
            ("client_id", &client.id),
            ("client_secret", client.secret.as_deref().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    assert_eq!(token_rows(app).await, 0, "gone with the grant, at once");

    // The user's or the operator's revocation (account page, `authgate grants revoke`).
    login(app, &client, &Browser::new(), "/mcp").await;
    assert_eq!(token_rows(app).await, 1);
    let n = app
        .store
        .revoke_grants(Some(USER), None, app.clock_now())
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(token_rows(app).await, 0);

    // A client's deletion.
    login(app, &client, &Browser::new(), "/mcp").await;
    assert_eq!(token_rows(app).await, 1);
    authgate::services::grants::delete_client(&app.store, &client.id, app.clock_now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(token_rows(app).await, 0);

    // A grant at its absolute end goes in the clean-up, with its tokens.
    let client = register_claude(app).await;
    login(app, &client, &Browser::new(), "/mcp").await;
    app.clock.advance(91 * 86_400);
    app.store
        .delete_expired(app.clock_now(), 3600)
        .await
        .unwrap();
    assert_eq!(token_rows(app).await, 0);
}

/// Rows of pending requests holding a login's sealed upstream tokens.
async fn waiting_token_rows(app: &TestApp) -> i64 {
    app.count_rows("SELECT COUNT(*) FROM pending_authorizations WHERE upstream_tokens IS NOT NULL")
        .await
}

/// Approves a request for `/mcp` in one browser and logs in at the provider from a webview that
/// lost authgate's cookie (see webview.rs): the confirmation page's token.
async fn login_in_a_webview(
    app: &TestApp,
    client: &RegisteredClient,
    pkce: &flow::Pkce,
) -> (Browser, String) {
    let resource = app.url("/mcp");
    let (_, _, upstream) = approved_elsewhere(
        app,
        &client.id,
        &client.redirect_uri,
        pkce,
        &[("resource", &resource)],
    )
    .await;
    let webview = Browser::new();
    let callback = walk(&webview, app, &upstream, &app.url("/oauth/callback"), USER)
        .await
        .unwrap_or_else(|r| panic!("the login stopped at {} ({})", r.url(), r.status()));
    let page = webview.get(&callback).await;
    assert_eq!(page.status(), 200, "the confirmation page");
    let token = form_inputs(&page.text().await.unwrap())["confirm"].clone();
    (webview, token)
}

/// A login that came back without the browser cookie waits for its confirmation with the
/// provider's tokens sealed beside it; the confirmed grant keeps them, so the MCP server gets the
/// user's token (without them the resource would refuse the grant and the webview would loop
/// through the login for ever). A denial, or no answer, drops them.
async fn a_webview_that_drops_the_cookie_keeps_the_upstream_tokens(backend: Backend) {
    let g = gate(backend, "3600", |_| {}).await;
    let app = &g.s.app;
    let client = register_claude(app).await;
    let pkce = new_pkce();
    let (webview, token) = login_in_a_webview(app, &client, &pkce).await;
    assert_eq!(token_rows(app).await, 0, "no grant before the confirmation");
    assert_eq!(
        app.count_rows(
            "SELECT COUNT(*) FROM pending_authorizations WHERE status = 'confirm' AND upstream_tokens LIKE 'sealed1:%'"
        )
        .await,
        1,
        "the provider's tokens wait sealed with the request"
    );

    let done = confirm(app, &webview, &token, "approve").await;
    assert_eq!(done.status(), 303);
    let back = location(&done);
    let code = param(&back, "code").unwrap_or_else(|| panic!("a code: {back}"));
    assert_eq!(waiting_token_rows(app).await, 0, "moved to the grant");
    assert_eq!(token_rows(app).await, 1);
    let resp = redeem(app, &client, &code, &pkce).await;
    assert_eq!(resp.status(), 200);
    let tokens: Value = resp.json().await.unwrap();
    assert_eq!(call(app, "/mcp", access_token(&tokens)).await.status(), 200);
    let upstream = g.mcp.last();
    assert_eq!(
        userinfo(&g.s.idp, &upstream).await,
        200,
        "the MCP server got the user's token at the provider"
    );
    let quoted = upstream.replace('\'', "''");
    assert_eq!(
        app.count_rows(&format!(
            "SELECT COUNT(*) FROM pending_authorizations WHERE upstream_tokens LIKE '%{quoted}%'"
        ))
        .await,
        0
    );

    // Denied: nothing kept.
    let (webview, token) = login_in_a_webview(app, &client, &new_pkce()).await;
    assert_eq!(waiting_token_rows(app).await, 1);
    let denied = confirm(app, &webview, &token, "deny").await;
    assert_eq!(denied.status(), 303);
    assert_eq!(
        param(&location(&denied), "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(waiting_token_rows(app).await, 0);
    assert_eq!(token_rows(app).await, 1, "only the confirmed grant's");

    // Never answered: gone with the expired request.
    login_in_a_webview(app, &client, &new_pkce()).await;
    assert_eq!(waiting_token_rows(app).await, 1);
    app.clock.advance(3600);
    app.store
        .delete_expired(app.clock_now(), 3600)
        .await
        .unwrap();
    assert_eq!(waiting_token_rows(app).await, 0);
}

async fn one_refresh_across_instances(backend: Backend) {
    let g = gate(backend, "3600", |_| {}).await;
    let a = &g.s.app;
    let b = a.another_instance(|_| {}).await;
    let client = register_claude(a).await;
    let tokens = login(a, &client, &Browser::new(), "/mcp").await;
    let at = access_token(&tokens);
    assert_eq!(call(a, "/mcp", at).await.status(), 200);
    let first = g.mcp.last();

    // Expired by authgate's clock (shared by both instances); the provider takes a second to
    // answer, so both requests find the token expired while the refresh is under way.
    a.clock.advance(3600);
    idp_post(&g.s.idp, "/test/token-delay?ms=1000").await;
    let (ra, rb) = tokio::join!(call(a, "/mcp", at), call(&b, "/mcp", at));
    idp_post(&g.s.idp, "/test/token-delay?ms=0").await;
    assert_eq!((ra.status().as_u16(), rb.status().as_u16()), (200, 200));
    assert_eq!(refreshes(&g.s.idp).await, (1, 1), "one refresh for both");
    let seen = g.mcp.seen();
    let both = &seen[seen.len() - 2..];
    assert_eq!(both[0], both[1], "both got the refreshed token");
    let second = both[0].clone().unwrap();
    assert_ne!(second, first);
    assert_eq!(userinfo(&g.s.idp, &second).await, 200);

    // The provider rotated the refresh token: the stored one is the new one, so the next
    // refresh works (the old one would be refused and revoke everything at the provider).
    a.clock.advance(3600);
    assert_eq!(call(&b, "/mcp", at).await.status(), 200);
    assert_eq!(refreshes(&g.s.idp).await, (2, 2));
    let third = g.mcp.last();
    assert_ne!(third, second);
    assert_eq!(userinfo(&g.s.idp, &third).await, 200);

    // Due (within the last quarter of its life) but not expired, while another instance holds
    // the lease: the current token is used, without waiting.
    let claims = a.state.keys.verify_signature(at).unwrap();
    a.clock.advance(3400);
    let row = a
        .store
        .get_upstream_tokens(&claims.sid)
        .await
        .unwrap()
        .unwrap();
    let now = a.clock_now();
    assert!(
        a.store
            .lease_upstream_tokens(&claims.sid, row.version, now, now + 30)
            .await
            .unwrap()
    );
    assert_eq!(call(a, "/mcp", at).await.status(), 200);
    assert_eq!(g.mcp.last(), third);
    assert_eq!(refreshes(&g.s.idp).await, (2, 2));
}

async fn a_refused_refresh_sends_the_client_back_to_authorize(backend: Backend) {
    let g = gate(backend, "3600", |_| {}).await;
    let app = &g.s.app;
    let client = register_claude(app).await;
    let tokens = login(app, &client, &Browser::new(), "/mcp").await;
    let at = access_token(&tokens);
    assert_eq!(call(app, "/mcp", at).await.status(), 200);
    let forwarded = g.mcp.seen().len();

    // The user revokes authgate's access at the provider; the token then expires.
    idp_post(&g.s.idp, &format!("/test/revoke-grants?account={USER}")).await;
    app.clock.advance(3600);
    let refused = call(app, "/mcp", at).await;
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(
        challenge.contains(&format!(
            "resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            app.base
        )),
        "{challenge}"
    );
    assert_eq!(g.mcp.seen().len(), forwarded, "nothing forwarded");
    assert_eq!(refreshes(&g.s.idp).await, (1, 0));
    assert_eq!(token_rows(app).await, 0, "the dead tokens are deleted");

    // The grant is revoked, so the client's refresh fails and it authorizes again...
    let refresh = flow::refresh(app, &client, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refresh.status(), 400);
    let body: Value = refresh.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(call(app, "/mcp", at).await.status(), 401);

    // ... which logs in at the provider and brings new tokens.
    let again = login(app, &client, &Browser::new(), "/mcp").await;
    assert_eq!(call(app, "/mcp", access_token(&again)).await.status(), 200);
    assert_eq!(userinfo(&g.s.idp, &g.mcp.last()).await, 200);
}

async fn an_unreachable_provider_keeps_the_tokens(backend: Backend) {
    let g = gate(backend, "3600", |_| {}).await;
    let Gate { s, mcp } = g;
    let Setup { app, idp } = s;
    let client = register_claude(&app).await;
    let tokens = login(&app, &client, &Browser::new(), "/mcp").await;
    let at = access_token(&tokens);
    assert_eq!(call(&app, "/mcp", at).await.status(), 200);
    let first = mcp.last();
    drop(idp);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Due but not expired: the refresh fails, the current token still goes.
    app.clock.advance(3400);
    assert_eq!(call(&app, "/mcp", at).await.status(), 200);
    assert_eq!(mcp.last(), first);
    // Expired: 502, and the tokens and the grant stay for when the provider is back.
    app.clock.advance(200);
    let resp = call(&app, "/mcp", at).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(token_rows(&app).await, 1);
    let claims = app.state.keys.verify_signature(at).unwrap();
    let row = app
        .store
        .get_upstream_tokens(&claims.sid)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.lease_until, None, "the lease is given back");
    assert_eq!(row.version, 1);
    assert_eq!(
        flow::refresh(&app, &client, tokens["refresh_token"].as_str().unwrap())
            .await
            .status(),
        200,
        "the grant is not revoked"
    );
}

/// A confidential client for the MCP server itself, registered like any other.
async fn register_mcp_server(app: &TestApp) -> RegisteredClient {
    let body: Value = app
        .register(serde_json::json!({
            "redirect_uris": ["https://mcp-server.example/unused"],
            "token_endpoint_auth_method": "client_secret_basic",
            "client_name": "The MCP server",
        }))
        .await
        .json()
        .await
        .unwrap();
    RegisteredClient {
        id: body["client_id"].as_str().unwrap().to_owned(),
        secret: Some(body["client_secret"].as_str().unwrap().to_owned()),
        redirect_uri: "https://mcp-server.example/unused".to_owned(),
    }
}

async fn exchange(
    app: &TestApp,
    client: &RegisteredClient,
    secret: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut all = vec![("grant_type", EXCHANGE)];
    all.extend_from_slice(form);
    app.http
        .post(app.url("/token"))
        .basic_auth(&client.id, Some(secret))
        .form(&all)
        .send()
        .await
        .unwrap()
}

fn subject(token: &str) -> Vec<(&str, &str)> {
    vec![
        ("subject_token", token),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
    ]
}

async fn refused(resp: reqwest::Response, status: u16, error: &str, what: &str) {
    assert_eq!(resp.status(), status, "{what}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], error, "{what}: {body}");
    assert!(body.get("access_token").is_none(), "{what}");
}

async fn token_exchange_for_the_upstream_token(backend: Backend) {
    let g = gate(backend, "3600", |_| {}).await;
    let a = &g.s.app;
    let server = register_mcp_server(a).await;
    let listed = server.id.clone();
    let b = a
        .another_instance(move |s| s.token_exchange_clients = vec![listed])
        .await;
    // An instance with the setting advertises the grant; one without does not, and refuses it.
    let meta: Value = reqwest::get(b.url("/.well-known/oauth-authorization-server"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&Value::from(EXCHANGE))
    );
    let meta: Value = reqwest::get(a.url("/.well-known/oauth-authorization-server"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !meta["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&Value::from(EXCHANGE))
    );

    let client = register_claude(a).await;
    let tokens = login(a, &client, &Browser::new(), "/mcp").await;
    let at = access_token(&tokens);
    let secret = server.secret.clone().unwrap();
    refused(
        exchange(a, &server, &secret, &subject(at)).await,
        400,
        "unsupported_grant_type",
        "not enabled here",
    )
    .await;

    let resp = exchange(&b, &server, &secret, &subject(at)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["issued_token_type"], ACCESS_TOKEN_TYPE);
    assert_eq!(body["token_type"], "Bearer");
    let expires_in = body["expires_in"].as_i64().unwrap();
    assert!((3500..=3600).contains(&expires_in), "{body}");
    assert!(body.get("refresh_token").is_none());
    let upstream = body["access_token"].as_str().unwrap();
    assert_eq!(userinfo(&g.s.idp, upstream).await, 200);
    assert_eq!(call(a, "/mcp", at).await.status(), 200);
    assert_eq!(g.mcp.last(), upstream, "the same token the header carries");

    // Past expiry, the exchange refreshes as forwarding does (once).
    b.clock.advance(3600);
    let resp = exchange(&b, &server, &secret, &subject(at)).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let renewed = body["access_token"].as_str().unwrap();
    assert_ne!(renewed, upstream);
    assert_eq!(userinfo(&g.s.idp, renewed).await, 200);
    assert_eq!(refreshes(&g.s.idp).await, (1, 1));
}

async fn token_exchange_refusals(backend: Backend) {
    let g = gate(backend, "3600", |_| {}).await;
    let a = &g.s.app;
    let server = register_mcp_server(a).await;
    let unlisted = register_mcp_server(a).await;
    let public = flow::register_public(a, "http://127.0.0.1/cb").await;
    let listed = vec![server.id.clone(), public.id.clone()];
    let also_listed = listed.clone();
    let b = a
        .another_instance(move |s| s.token_exchange_clients = listed)
        .await;
    // An instance where `/mcp` no longer keeps upstream tokens (the setting was turned off).
    let off = a
        .another_instance(move |s| {
            s.token_exchange_clients = also_listed;
            s.resources[0].upstream_token = false;
        })
        .await;
    let client = register_claude(a).await;
    let tokens = login(a, &client, &Browser::new(), "/mcp").await;
    let at = access_token(&tokens);
    let plain = login(a, &client, &Browser::new(), "/plain/mcp").await;
    let secret = server.secret.clone().unwrap();
    let claims = a.state.keys.verify_signature(at).unwrap();
    let before = a.store.get_upstream_tokens(&claims.sid).await.unwrap();

    refused(
        exchange(&b, &server, "wrong-secret", &subject(at)).await,
        401,
        "invalid_client",
        "a wrong secret",
    )
    .await;
    refused(
        exchange(
            &b,
            &unlisted,
            unlisted.secret.as_deref().unwrap(),
            &subject(at),
        )
        .await,
        400,
        "unauthorized_client",
        "a confidential client that is not listed",
    )
    .await;
    let public_resp = b
        .http
        .post(b.url("/token"))
        .form(&[
            ("grant_type", EXCHANGE),
            ("client_id", public.id.as_str()),
            ("subject_token", at),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
        ])
        .send()
        .await
        .unwrap();
    refused(
        public_resp,
        400,
        "unauthorized_client",
        "a listed public client",
    )
    .await;

    let mut tampered = at.to_owned();
    tampered.pop();
    tampered.push(if at.ends_with('A') { 'B' } else { 'A' });
    for (token, what) in [
        ("not-a-jwt", "garbage"),
        (tampered.as_str(), "a tampered token"),
        (
            access_token(&plain),
            "a token for a resource without upstream tokens",
        ),
        (tokens["refresh_token"].as_str().unwrap(), "a refresh token"),
    ] {
        refused(
            exchange(&b, &server, &secret, &subject(token)).await,
            400,
            "invalid_request",
            what,
        )
        .await;
    }
    refused(
        exchange(&off, &server, &secret, &subject(at)).await,
        400,
        "invalid_request",
        "a token for a resource that no longer keeps upstream tokens",
    )
    .await;
    let mut wrong_type = subject(at);
    wrong_type[1].1 = "urn:ietf:params:oauth:token-type:id_token";
    refused(
        exchange(&b, &server, &secret, &wrong_type).await,
        400,
        "invalid_request",
        "another subject token type",
    )
    .await;
    let mut asks_refresh = subject(at);
    asks_refresh.push((
        "requested_token_type",
        "urn:ietf:params:oauth:token-type:refresh_token",
    ));
    refused(
        exchange(&b, &server, &secret, &asks_refresh).await,
        400,
        "invalid_request",
        "the upstream refresh token",
    )
    .await;
    let mut with_resource = subject(at);
    with_resource.push(("resource", "https://www.googleapis.com/"));
    refused(
        exchange(&b, &server, &secret, &with_resource).await,
        400,
        "invalid_target",
        "a resource",
    )
    .await;
    refused(
        exchange(&b, &server, &secret, &[("subject_token", at)]).await,
        400,
        "invalid_request",
        "no subject_token_type",
    )
    .await;

    // A revoked access token (by its client, RFC 7009), then an expired one.
    let revoke = a
        .http
        .post(a.url("/revoke"))
        .form(&[
            ("token", at),
            ("client_id", client.id.as_str()),
            ("client_secret", client.secret.as_deref().unwrap()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    refused(
        exchange(&b, &server, &secret, &subject(at)).await,
        400,
        "invalid_request",
        "a revoked subject token",
    )
    .await;
    let fresh = flow::refresh(a, &client, tokens["refresh_token"].as_str().unwrap()).await;
    let fresh: Value = fresh.json().await.unwrap();
    let fresh_at = access_token(&fresh).to_owned();
    assert_eq!(
        exchange(&b, &server, &secret, &subject(&fresh_at))
            .await
            .status(),
        200,
        "the grant's other tokens still work"
    );
    b.clock.advance(86_400);
    refused(
        exchange(&b, &server, &secret, &subject(&fresh_at)).await,
        400,
        "invalid_request",
        "an expired subject token",
    )
    .await;

    // None of the refusals touched the tokens (the one success found them fresh).
    assert_eq!(
        a.store.get_upstream_tokens(&claims.sid).await.unwrap(),
        before
    );
    assert_eq!(refreshes(&g.s.idp).await, (0, 0));
}

/// A stand-in for an API of the upstream provider (what Google's or GitHub's APIs are to a real
/// MCP server): it accepts a bearer token only if the provider's userinfo endpoint does, and
/// answers who the token belongs to. It records every token it was shown.
struct UpstreamApi {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl UpstreamApi {
    async fn start(idp: &Idp) -> Self {
        let userinfo = format!("{}/me", idp.issuer);
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let state = (userinfo, seen.clone());
        let app = Router::new()
            .route(
                "/whoami",
                axum::routing::get(
                    |State((userinfo, seen)): State<(String, Arc<Mutex<Vec<String>>>)>,
                     headers: HeaderMap| async move {
                        let token = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .unwrap_or_default()
                            .to_owned();
                        seen.lock().unwrap().push(token.clone());
                        let resp = reqwest::Client::new()
                            .get(&userinfo)
                            .bearer_auth(&token)
                            .send()
                            .await
                            .unwrap();
                        let status =
                            axum::http::StatusCode::from_u16(resp.status().as_u16()).unwrap();
                        (status, resp.text().await.unwrap())
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/whoami", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// The TypeScript SDK test server (stateful, JSON answers) with `UPSTREAM_API_URL`.
async fn start_mcp_server(api: &UpstreamApi) -> (String, tokio::process::Child) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/clients");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/@modelcontextprotocol/sdk")
            .exists(),
        "tests/e2e/clients has no node_modules: run `npm ci` there (scripts/test does it)"
    );
    let mut child = tokio::process::Command::new("node")
        .arg("mcp-server.mjs")
        .current_dir(dir)
        .env("PORT", "0")
        .env("MCP_JSON_RESPONSE", "1")
        .env("UPSTREAM_API_URL", &api.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed");
    let url = crate::helpers::ready_line(&mut child, "MCP SERVER READY ", "the MCP server").await;
    (url, child)
}

async fn mcp_post(
    app: &TestApp,
    token: &str,
    session: Option<&str>,
    body: &str,
) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url("/mcp"))
        .bearer_auth(token)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18");
    if let Some(s) = session {
        req = req.header("Mcp-Session-Id", s);
    }
    req.body(body.to_owned()).send().await.unwrap()
}

/// `upstream_whoami` in the session: what the upstream API answered the MCP server.
async fn upstream_whoami(app: &TestApp, token: &str, session: &str) -> Value {
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"upstream_whoami","arguments":{}}}"#;
    let resp = mcp_post(app, token, Some(session), call).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let text = body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));
    serde_json::from_str(text).unwrap()
}

/// End to end: a stateful MCP server (TypeScript SDK) behind authgate calls a stand-in upstream
/// API as the user with `X-Authgate-Upstream-Token`. The provider's access tokens live 6 s, so
/// they really expire (the API, asking the provider, refuses them) and authgate refreshes them
/// (twice, the provider rotating the refresh token each time); then the user revokes access at
/// the provider, the refresh fails, the client gets a 401 challenge and its grant is gone, and a
/// new authorization brings new tokens to the same MCP session.
async fn e2e_stateful_mcp_server_calls_an_upstream_api_as_the_user(backend: Backend) {
    const TTL: u64 = 6;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let idp = crate::upstream::start_idp_with(
        &format!("{base}/oauth/callback"),
        "client_secret_post",
        false,
        &[("IDP_REFRESH_TOKENS", "1"), ("IDP_ACCESS_TOKEN_TTL", "6")],
    )
    .await;
    let api = UpstreamApi::start(&idp).await;
    let (mcp_url, _mcp) = start_mcp_server(&api).await;
    let issuer = idp.issuer.clone();
    let app = crate::helpers::spawn_app_on(backend, listener, move |raw| {
        raw.set("AUTHGATE_UPSTREAM_ISSUER", issuer);
        raw.set("AUTHGATE_UPSTREAM_CLIENT_ID", "authgate");
        raw.set("AUTHGATE_UPSTREAM_CLIENT_SECRET", "authgate-secret");
        raw.set(
            "AUTHGATE_UPSTREAM_SCOPES",
            "openid email profile offline_access",
        );
        raw.set("AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS", "prompt=consent");
        raw.set("AUTHGATE_ALLOWED_DOMAINS", "example.test");
        raw.set("AUTHGATE_MCP_UPSTREAM", mcp_url);
        raw.set("AUTHGATE_MCP_UPSTREAM_TOKEN", "header");
        raw.set("AUTHGATE_KEY_ENCRYPTION_KEY", KEK);
    })
    .await;
    let app = &app;
    let client = register_claude(app).await;
    let tokens = login(app, &client, &Browser::new(), "/mcp").await;
    let at = access_token(&tokens).to_owned();

    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#;
    let resp = mcp_post(app, &at, None, init).await;
    assert_eq!(resp.status(), 200);
    let sid = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    assert_eq!(
        mcp_post(app, &at, Some(&sid), initialized).await.status(),
        202
    );

    let who = upstream_whoami(app, &at, &sid).await;
    assert_eq!(who["status"], 200, "{who}");
    assert!(who["body"].as_str().unwrap().contains(USER), "{who}");
    let first = api.seen().last().unwrap().clone();

    // The provider's token expires for real, and by authgate's clock.
    for round in 1..=2 {
        tokio::time::sleep(std::time::Duration::from_secs(TTL + 1)).await;
        app.clock.advance(i64::try_from(TTL).unwrap() + 1);
        let previous = api.seen().last().unwrap().clone();
        assert_eq!(
            userinfo(&idp, &previous).await,
            401,
            "round {round}: the previous upstream token has expired at the provider"
        );
        let who = upstream_whoami(app, &at, &sid).await;
        assert_eq!(who["status"], 200, "round {round}: {who}");
        let current = api.seen().last().unwrap().clone();
        assert_ne!(current, previous, "round {round}");
        assert_eq!(refreshes(&idp).await, (round, round));
    }
    assert_ne!(api.seen().last().unwrap(), &first);

    // The user revokes the access at the provider; once the token is due, the refresh fails.
    idp_post(&idp, &format!("/test/revoke-grants?account={USER}")).await;
    let calls = api.seen().len();
    app.clock.advance(i64::try_from(TTL).unwrap() + 1);
    let call = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"upstream_whoami","arguments":{}}}"#;
    let refused = mcp_post(app, &at, Some(&sid), call).await;
    assert_eq!(refused.status(), 401);
    let challenge = refused.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with("Bearer resource_metadata="),
        "{challenge}"
    );
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert_eq!(api.seen().len(), calls, "the MCP server was not called");
    assert_eq!(refreshes(&idp).await, (3, 2));
    let refresh = flow::refresh(app, &client, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refresh.status(), 400, "the client must authorize again");

    // It does: a new login at the provider, new tokens, the same MCP session.
    let again = login(app, &client, &Browser::new(), "/mcp").await;
    let who = upstream_whoami(app, access_token(&again), &sid).await;
    assert_eq!(who["status"], 200, "{who}");
    assert!(who["body"].as_str().unwrap().contains(USER), "{who}");
}

both_backends!(
    e2e_stateful_mcp_server_calls_an_upstream_api_as_the_user,
    upstream_tokens_are_kept_sealed_and_sent_to_the_mcp_server,
    returning_users_log_in_at_the_provider_again,
    revoking_a_grant_deletes_its_upstream_tokens,
    a_webview_that_drops_the_cookie_keeps_the_upstream_tokens,
    one_refresh_across_instances,
    a_refused_refresh_sends_the_client_back_to_authorize,
    an_unreachable_provider_keeps_the_tokens,
    token_exchange_for_the_upstream_token,
    token_exchange_refusals,
);
