//! Browsers that lose authgate's browser-binding cookie across the upstream login (Perplexity's
//! embedded webview): the login still completes, through a confirmation in the browser the login
//! came back to, with no session opened. A browser with another cookie is still refused, and the
//! two login-CSRF lures (the attacker's answer opened in a victim's browser; the victim logging
//! in on the attacker's request) neither sign the victim in as the attacker nor give the attacker
//! a code for the victim.

use crate::both_backends;
use crate::browser::{Browser, form_inputs, location};
use crate::flow::{
    authorize_url, decide, new_pkce, open_consent, param, redeem, register_claude, register_public,
};
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::upstream::{setup, walk};

const CB: &str = "http://127.0.0.1:33418/";
const ATTACKER_CB: &str = "https://attacker.example/cb";

/// No `Set-Cookie` for a session.
fn no_session_cookie(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .all(|c| !c.to_str().unwrap().contains("authgate-session"))
}

/// Answers the confirmation page of a login that came back without the cookie.
pub async fn confirm(
    app: &TestApp,
    browser: &Browser,
    token: &str,
    decision: &str,
) -> reqwest::Response {
    browser
        .post_form(
            &app.url("/authorize/consent"),
            &[("confirm", token), ("decision", decision)],
            Some(&app.base),
        )
        .await
}

/// A browser that starts a request (with `extra` parameters) and approves it; returns the
/// upstream login URL.
pub async fn approved_elsewhere(
    app: &TestApp,
    client_id: &str,
    redirect_uri: &str,
    challenge_of: &crate::flow::Pkce,
    extra: &[(&str, &str)],
) -> (Browser, String, String) {
    let browser = Browser::new();
    let url = authorize_url(app, client_id, redirect_uri, challenge_of, extra);
    let request = open_consent(&browser, &url).await;
    let approved = decide(&browser, app, &request, "approve").await;
    assert_eq!(approved.status(), 303);
    (browser, request, location(&approved))
}

async fn a_webview_that_drops_the_cookie_confirms_after_the_login(backend: Backend) {
    let s = setup(backend, "client_secret_post", true, |_| {}).await;
    let app = &s.app;
    let client = register_claude(app).await;
    let pkce = new_pkce();
    let (_, _, upstream) =
        approved_elsewhere(app, &client.id, &client.redirect_uri, &pkce, &[]).await;
    // The webview comes back from the provider without authgate's cookie.
    let webview = Browser::new();
    let callback = walk(
        &webview,
        app,
        &upstream,
        &app.url("/oauth/callback"),
        "ann@example.test",
    )
    .await
    .unwrap();
    let page = webview.get(&callback).await;
    assert_eq!(page.status(), 200, "a confirmation, not a redirect");
    assert!(
        no_session_cookie(&page),
        "no session the browser did not have"
    );
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors 'none'") && !csp.contains("form-action"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("ann@example.test"),
        "it names the account that logged in"
    );
    assert!(html.contains("claude.ai"), "and where the answer goes");
    let fields = form_inputs(&html);
    assert!(!fields.contains_key("request"), "not the cookie-bound form");
    let token = fields["confirm"].clone();
    assert_eq!(
        webview.get(&callback).await.status(),
        400,
        "the login's return is single-use"
    );

    let done = confirm(app, &webview, &token, "approve").await;
    assert_eq!(done.status(), 303);
    assert!(no_session_cookie(&done));
    let back = location(&done);
    assert!(back.starts_with(&client.redirect_uri), "{back}");
    assert_eq!(param(&back, "state").as_deref(), Some("st-123"));
    let code = param(&back, "code").unwrap();
    let tokens = redeem(app, &client, &code, &pkce).await;
    assert_eq!(tokens.status(), 200);
    assert_eq!(
        confirm(app, &webview, &token, "approve").await.status(),
        400,
        "once"
    );
    // Still not signed in: the next request asks who this is.
    let next = webview
        .get(&authorize_url(
            app,
            &client.id,
            &client.redirect_uri,
            &new_pkce(),
            &[],
        ))
        .await;
    assert_eq!(next.status(), 200);
    assert!(!next.text().await.unwrap().contains("ann@example.test"));
}

async fn the_attackers_answer_in_a_victims_browser_signs_nobody_in(backend: Backend) {
    let s = setup(backend, "client_secret_post", true, |_| {}).await;
    let app = &s.app;
    let client = register_claude(app).await;
    // The attacker runs a request up to the provider's answer and keeps the callback URL.
    let attacker = Browser::new();
    let url = authorize_url(app, &client.id, &client.redirect_uri, &new_pkce(), &[]);
    let callback = walk(
        &attacker,
        app,
        &url,
        &app.url("/oauth/callback"),
        "mallory@example.test",
    )
    .await
    .unwrap();
    // The victim's browser, which never used authgate, is lured to it.
    let victim = Browser::new();
    let lured = victim.get(&callback).await;
    assert_eq!(lured.status(), 200, "no code is sent anywhere");
    assert!(
        no_session_cookie(&lured),
        "the victim is not signed in as the attacker"
    );
    let html = lured.text().await.unwrap();
    assert!(
        html.contains("mallory@example.test"),
        "the page says whose account it is"
    );
    let next = victim
        .get(&authorize_url(
            app,
            &client.id,
            &client.redirect_uri,
            &new_pkce(),
            &[],
        ))
        .await;
    assert_eq!(next.status(), 200);
    assert!(
        !next.text().await.unwrap().contains("mallory"),
        "no session as the attacker"
    );
    assert_eq!(
        victim.get(&app.url("/account")).await.status(),
        303,
        "not signed in"
    );
    assert_eq!(
        app.count_rows("SELECT COUNT(*) FROM sessions").await,
        0,
        "no session was opened at all"
    );
    assert_eq!(
        attacker.get(&callback).await.status(),
        400,
        "and the answer is spent"
    );
}

async fn a_victim_lured_to_log_in_on_the_attackers_request_gives_them_nothing(backend: Backend) {
    let s = setup(backend, "client_secret_post", true, |_| {}).await;
    let app = &s.app;
    let attacker_client = register_public(app, ATTACKER_CB).await;
    // The attacker approves their own client's request and hands the provider's login URL on.
    let (attacker, request, upstream) =
        approved_elsewhere(app, &attacker_client.id, ATTACKER_CB, &new_pkce(), &[]).await;
    let victim = Browser::new();
    let callback = walk(
        &victim,
        app,
        &upstream,
        &app.url("/oauth/callback"),
        "ann@example.test",
    )
    .await
    .unwrap();
    let page = victim.get(&callback).await;
    assert_eq!(
        page.status(),
        200,
        "no code goes to the attacker's redirect URI"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("ann@example.test") && html.contains("attacker.example"));
    let codes = "SELECT COUNT(*) FROM authorization_codes";
    assert_eq!(app.count_rows(codes).await, 0);
    // The attacker cannot finish it: not with the consent form of the request they hold (even
    // signed in, which would otherwise finish a request at once), not with a guessed
    // confirmation, not by replaying the login's return.
    let account = app.url("/account");
    walk(&attacker, app, &account, &account, "mallory@example.test")
        .await
        .unwrap();
    assert_eq!(attacker.get(&account).await.status(), 200, "signed in");
    assert_eq!(
        decide(&attacker, app, &request, "approve").await.status(),
        400
    );
    assert_eq!(
        confirm(app, &attacker, "guessed", "approve").await.status(),
        400
    );
    assert_eq!(attacker.get(&callback).await.status(), 400);
    assert_eq!(app.count_rows(codes).await, 0);
    // The victim sees who is asking and where the answer would go, and declines.
    let token = form_inputs(&html).remove("confirm").unwrap();
    let declined = confirm(app, &victim, &token, "deny").await;
    assert_eq!(declined.status(), 303);
    assert_eq!(
        param(&location(&declined), "error").as_deref(),
        Some("access_denied")
    );
    assert_eq!(app.count_rows(codes).await, 0);
}

async fn the_development_login_takes_a_browser_without_the_cookie_not_another_one(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let pkce = new_pkce();
    let (_, _, login_url) = approved_elsewhere(&app, &client.id, CB, &pkce, &[]).await;
    let state = param(&login_url, "state").unwrap();
    let form = [("state", state.as_str()), ("email", "ann@example.com")];
    let other = Browser::new();
    other
        .get(&authorize_url(&app, &client.id, CB, &new_pkce(), &[]))
        .await;
    assert_eq!(
        other.get(&login_url).await.status(),
        400,
        "another browser's cookie"
    );
    let posted = other
        .post_form(&app.url("/dev/login"), &form, Some(&app.base))
        .await;
    assert_eq!(posted.status(), 400);

    let webview = Browser::new();
    assert_eq!(webview.get(&login_url).await.status(), 200);
    let back = webview
        .post_form(&app.url("/dev/login"), &form, Some(&app.base))
        .await;
    assert_eq!(back.status(), 200, "a confirmation");
    assert!(no_session_cookie(&back));
    let token = form_inputs(&back.text().await.unwrap())
        .remove("confirm")
        .unwrap();
    let cross_site = webview
        .post_form(
            &app.url("/authorize/consent"),
            &[("confirm", token.as_str()), ("decision", "approve")],
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(
        cross_site.status(),
        403,
        "the confirmation refuses other sites too"
    );
    let both = webview
        .post_form(
            &app.url("/authorize/consent"),
            &[
                ("confirm", token.as_str()),
                ("request", "x"),
                ("decision", "approve"),
            ],
            Some(&app.base),
        )
        .await;
    assert_eq!(both.status(), 400, "one form at a time");
    let done = confirm(&app, &webview, &token, "approve").await;
    assert_eq!(done.status(), 303);
    let code = param(&location(&done), "code").unwrap();
    assert_eq!(redeem(&app, &client, &code, &pkce).await.status(), 200);
}

async fn account_logins_and_late_confirmations_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    // The account page's login exists to give its browser a session: the cookie is required.
    let started = Browser::new();
    let first = started.get(&app.url("/account")).await;
    let login_url = location(&first);
    let state = param(&login_url, "state").unwrap();
    let webview = Browser::new();
    assert_eq!(webview.get(&login_url).await.status(), 400);
    let posted = webview
        .post_form(
            &app.url("/dev/login"),
            &[("state", state.as_str()), ("email", "ann@example.com")],
            Some(&app.base),
        )
        .await;
    assert_eq!(posted.status(), 400);

    // A confirmation is part of its request, and ends with it.
    let client = register_public(&app, CB).await;
    let (_, _, login_url) = approved_elsewhere(&app, &client.id, CB, &new_pkce(), &[]).await;
    let state = param(&login_url, "state").unwrap();
    let back = webview
        .post_form(
            &app.url("/dev/login"),
            &[("state", state.as_str()), ("email", "ann@example.com")],
            Some(&app.base),
        )
        .await;
    let token = form_inputs(&back.text().await.unwrap())
        .remove("confirm")
        .unwrap();
    app.clock.advance(authgate::domain::pending::PENDING_TTL);
    assert_eq!(
        confirm(&app, &webview, &token, "approve").await.status(),
        400
    );
}

both_backends!(
    a_webview_that_drops_the_cookie_confirms_after_the_login,
    the_attackers_answer_in_a_victims_browser_signs_nobody_in,
    a_victim_lured_to_log_in_on_the_attackers_request_gives_them_nothing,
    the_development_login_takes_a_browser_without_the_cookie_not_another_one,
    account_logins_and_late_confirmations_are_refused,
);
