//! `/authorize`, the consent page and the development login, against the real app.

use reqwest::header::LOCATION;

use crate::both_backends;
use crate::browser::{Browser, location};
use crate::flow::{
    self, approve_and_dev_login, authorize_url, decide, new_pkce, open_consent, param,
    register_claude, register_public,
};
use crate::helpers::{Backend, spawn_app, spawn_app_with};

const CB: &str = "http://127.0.0.1:9/callback";

async fn untrusted_client_or_redirect_gets_a_page_never_a_redirect(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let pkce = new_pkce();
    let browser = Browser::new();
    let cases = [
        authorize_url(&app, "agc_unknown", CB, &pkce, &[]),
        authorize_url(&app, &client.id, "http://127.0.0.1:9/other", &pkce, &[]),
        authorize_url(
            &app,
            &client.id,
            "https://evil.example/callback",
            &pkce,
            &[],
        ),
        authorize_url(&app, &client.id, "http://localhost:9/callback", &pkce, &[]),
        app.url("/authorize?response_type=code"),
        format!(
            "{}&client_id=again",
            authorize_url(&app, &client.id, CB, &pkce, &[])
        ),
    ];
    for url in cases {
        let resp = browser.get(&url).await;
        assert_eq!(resp.status(), 400, "{url}");
        assert!(resp.headers().get(LOCATION).is_none(), "{url}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
}

async fn errors_after_trust_go_back_with_state_and_iss(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let pkce = new_pkce();
    let browser = Browser::new();
    let base = |extra: &[(&str, &str)]| {
        let mut url = url::Url::parse(&app.url("/authorize")).unwrap();
        url.query_pairs_mut()
            .append_pair("client_id", &client.id)
            .append_pair("redirect_uri", CB)
            .append_pair("state", "xyz");
        for (k, v) in extra {
            url.query_pairs_mut().append_pair(k, v);
        }
        url.to_string()
    };
    let ch = pkce.challenge.as_str();
    let cases: Vec<(String, &str)> = vec![
        (
            base(&[
                ("response_type", "token"),
                ("code_challenge", ch),
                ("code_challenge_method", "S256"),
            ]),
            "unsupported_response_type",
        ),
        (base(&[("response_type", "code")]), "invalid_request"),
        (
            base(&[("response_type", "code"), ("code_challenge", ch)]),
            "invalid_request",
        ),
        (
            base(&[
                ("response_type", "code"),
                ("code_challenge", ch),
                ("code_challenge_method", "plain"),
            ]),
            "invalid_request",
        ),
        (
            base(&[
                ("response_type", "code"),
                ("code_challenge", ch),
                ("code_challenge_method", "S256"),
                ("resource", "https://other.example/mcp"),
            ]),
            "invalid_target",
        ),
        (
            base(&[
                ("response_type", "code"),
                ("code_challenge", ch),
                ("code_challenge_method", "S256"),
                ("prompt", "none"),
            ]),
            "login_required",
        ),
    ];
    for (url, code) in cases {
        let resp = browser.get(&url).await;
        assert_eq!(resp.status(), 302, "{url}");
        let loc = location(&resp);
        assert!(loc.starts_with(CB), "{loc}");
        assert_eq!(param(&loc, "error").as_deref(), Some(code), "{url}");
        assert_eq!(param(&loc, "state").as_deref(), Some("xyz"));
        assert_eq!(param(&loc, "iss").as_deref(), Some(app.base.as_str()));
    }
}

async fn consent_page_shows_the_client_and_is_locked_down(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_claude(&app).await;
    let pkce = new_pkce();
    let browser = Browser::new();
    let resp = browser
        .get(&authorize_url(
            &app,
            &client.id,
            &client.redirect_uri,
            &pkce,
            &[("scope", "claudeai")],
        ))
        .await;
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("frame-ancestors 'none'"));
    assert!(
        !csp.contains("form-action"),
        "form-action would block the redirect to the client"
    );
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"));
    let html = resp.text().await.unwrap();
    assert!(html.contains("Claude"));
    assert!(html.contains("claude.ai"), "the redirect host is shown");
    assert!(html.contains("name=\"request\""));
    assert!(html.contains("value=\"approve\"") && html.contains("value=\"deny\""));
}

async fn consent_is_required_before_the_login(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let pkce = new_pkce();
    let browser = Browser::new();
    let url = authorize_url(&app, &client.id, CB, &pkce, &[]);
    // No request id, or a made-up one: nothing leads to a login or a code.
    let resp = decide(&browser, &app, "made-up", "approve").await;
    assert_eq!(resp.status(), 400);
    let request = open_consent(&browser, &url).await;
    let login = browser.get(&app.url("/dev/login?state=guess")).await;
    assert_eq!(login.status(), 400, "no login before an approval");
    let done = approve_and_dev_login(&browser, &app, &request, "ann@example.com").await;
    assert_eq!(done.status(), 303);
    assert!(param(&location(&done), "code").is_some());
}

async fn deny_answers_access_denied(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    let request = open_consent(
        &browser,
        &authorize_url(&app, &client.id, CB, &new_pkce(), &[]),
    )
    .await;
    let resp = decide(&browser, &app, &request, "deny").await;
    assert_eq!(resp.status(), 303);
    let loc = location(&resp);
    assert_eq!(param(&loc, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&loc, "state").as_deref(), Some("st-123"));
    assert_eq!(param(&loc, "iss").as_deref(), Some(app.base.as_str()));
    let again = decide(&browser, &app, &request, "approve").await;
    assert_eq!(
        again.status(),
        400,
        "a denied request cannot be approved afterwards"
    );
}

async fn consent_is_bound_to_the_browser_and_origin(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    let request = open_consent(
        &browser,
        &authorize_url(&app, &client.id, CB, &new_pkce(), &[]),
    )
    .await;
    let other = Browser::new();
    let stolen = decide(&other, &app, &request, "approve").await;
    assert_eq!(
        stolen.status(),
        400,
        "another browser cannot use the request"
    );
    let cross_site = browser
        .post_form(
            &app.url("/authorize/consent"),
            &[("request", &request), ("decision", "approve")],
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(cross_site.status(), 403);
    let null_origin = browser
        .http
        .post(app.url("/authorize/consent"))
        .form(&[("request", request.as_str()), ("decision", "approve")])
        .header("Origin", "null")
        .send()
        .await
        .unwrap();
    assert_eq!(
        null_origin.status(),
        403,
        "an opaque origin without fetch metadata is refused"
    );
    let null_same_site = browser
        .http
        .post(app.url("/authorize/consent"))
        .form(&[("request", request.as_str()), ("decision", "approve")])
        .header("Origin", "null")
        .header("Sec-Fetch-Site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        null_same_site.status(),
        303,
        "a same-origin form post with Origin: null (strict referrer policy)"
    );
    let ok = decide(&browser, &app, &request, "approve").await;
    assert_eq!(ok.status(), 303);
}

async fn double_submit_and_reload_still_complete(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    let url = authorize_url(&app, &client.id, CB, &new_pkce(), &[]);
    let _first_load = open_consent(&browser, &url).await;
    let request = open_consent(&browser, &url).await;
    let first = decide(&browser, &app, &request, "approve").await;
    assert_eq!(first.status(), 303);
    let second = decide(&browser, &app, &request, "approve").await;
    assert_eq!(second.status(), 303);
    let login_url = location(&second);
    let state = param(&login_url, "state").unwrap();
    let done = browser
        .post_form(
            &app.url("/dev/login"),
            &[("state", &state), ("email", "ann@example.com")],
            Some(&app.base),
        )
        .await;
    assert_eq!(done.status(), 303);
    assert!(param(&location(&done), "code").is_some());
    let stale = browser
        .post_form(
            &app.url("/dev/login"),
            &[("state", &state), ("email", "ann@example.com")],
            Some(&app.base),
        )
        .await;
    assert_eq!(stale.status(), 400, "the login completes once");
}

async fn approval_is_remembered_per_user_and_client(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    let pkce = new_pkce();
    flow::dev_flow(&app, &browser, &client, &pkce, &[]).await;
    // Same browser (session) and client: straight back with a code.
    let again = browser
        .get(&authorize_url(&app, &client.id, CB, &new_pkce(), &[]))
        .await;
    assert_eq!(again.status(), 302);
    assert!(param(&location(&again), "code").is_some());
    // prompt=consent asks again; the page says who is signed in.
    let forced = browser
        .get(&authorize_url(
            &app,
            &client.id,
            CB,
            &new_pkce(),
            &[("prompt", "consent")],
        ))
        .await;
    assert_eq!(forced.status(), 200);
    assert!(forced.text().await.unwrap().contains("ann@example.com"));
    // A signed-in user approving a new client gets a code without logging in again.
    let other = register_public(&app, "http://127.0.0.1:9/other-cb").await;
    let request = open_consent(
        &browser,
        &authorize_url(&app, &other.id, &other.redirect_uri, &new_pkce(), &[]),
    )
    .await;
    let approved = decide(&browser, &app, &request, "approve").await;
    assert_eq!(approved.status(), 303);
    assert!(param(&location(&approved), "code").is_some());
    // Forgetting the approval brings the page back.
    let sub = {
        let body = flow::full_grant(&app, &client).await;
        let token = body["access_token"].as_str().unwrap().to_owned();
        app.state.keys.verify_signature(&token).unwrap().sub
    };
    let now = app.clock_now();
    app.store
        .revoke_grants(Some(&sub), Some(&client.id), now)
        .await
        .unwrap();
    let after = browser
        .get(&authorize_url(&app, &client.id, CB, &new_pkce(), &[]))
        .await;
    assert_eq!(after.status(), 200);
}

async fn unlisted_emails_are_refused(backend: Backend) {
    let app = spawn_app_with(backend, |raw| {
        raw.set("AUTHGATE_ALLOWED_DOMAINS", "example.com")
    })
    .await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    let request = open_consent(
        &browser,
        &authorize_url(&app, &client.id, CB, &new_pkce(), &[]),
    )
    .await;
    let resp = approve_and_dev_login(&browser, &app, &request, "mallory@evil.example").await;
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get(LOCATION).is_none(), "no code");
    assert!(resp.text().await.unwrap().contains("not allowed"));
    let browser = Browser::new();
    let request = open_consent(
        &browser,
        &authorize_url(&app, &client.id, CB, &new_pkce(), &[]),
    )
    .await;
    let ok = approve_and_dev_login(&browser, &app, &request, "ann@example.com").await;
    assert_eq!(ok.status(), 303);
}

async fn missing_scope_gets_the_default_and_unknown_scopes_narrow(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    for extra in [
        vec![],
        vec![("scope", "claudeai")],
        vec![("scope", "mcp offline_access")],
    ] {
        let browser = Browser::new();
        let pkce = new_pkce();
        let code = flow::dev_flow(&app, &browser, &client, &pkce, &extra).await;
        let body: serde_json::Value = flow::redeem(&app, &client, &code, &pkce)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["scope"], "mcp", "{extra:?}");
    }
}

async fn lenient_resource_spellings_are_accepted(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let upper = app.url("/mcp").replace("http://", "HTTP://");
    let host_only = format!("{}/", app.base);
    for resource in [app.url("/mcp"), upper, host_only, app.base.clone()] {
        let browser = Browser::new();
        let pkce = new_pkce();
        let code = flow::dev_flow(&app, &browser, &client, &pkce, &[("resource", &resource)]).await;
        let body: serde_json::Value = flow::redeem(&app, &client, &code, &pkce)
            .await
            .json()
            .await
            .unwrap();
        let claims = app
            .state
            .keys
            .verify_signature(body["access_token"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            claims.aud,
            app.url("/mcp"),
            "{resource} means the MCP resource"
        );
    }
}

async fn control_characters_in_state_are_refused_and_nothing_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let url = authorize_url(&app, &client.id, CB, &new_pkce(), &[]).replace("st-123", "a%00b");
    let resp = Browser::new().get(&url).await;
    assert_eq!(resp.status(), 302);
    let back = location(&resp);
    assert!(back.starts_with(CB), "{back}");
    assert_eq!(param(&back, "error").as_deref(), Some("invalid_request"));
    assert_eq!(
        app.count_rows("SELECT COUNT(*) FROM pending_authorizations")
            .await,
        0
    );
}

both_backends!(
    untrusted_client_or_redirect_gets_a_page_never_a_redirect,
    errors_after_trust_go_back_with_state_and_iss,
    consent_page_shows_the_client_and_is_locked_down,
    consent_is_required_before_the_login,
    deny_answers_access_denied,
    consent_is_bound_to_the_browser_and_origin,
    double_submit_and_reload_still_complete,
    approval_is_remembered_per_user_and_client,
    unlisted_emails_are_refused,
    missing_scope_gets_the_default_and_unknown_scopes_narrow,
    lenient_resource_spellings_are_accepted,
    control_characters_in_state_are_refused_and_nothing_stored,
);

async fn pages_post_back_under_the_public_path_prefix(backend: Backend) {
    // Behind a proxy that mounts authgate at https://example.com/gate, the browser must post
    // to /gate/..., not to the site's root.
    let app = spawn_app_with(backend, |raw| {
        raw.set("AUTHGATE_PUBLIC_URL", "https://example.com/gate");
        crate::helpers::stub_upstream(raw);
    })
    .await;
    let client = register_public(&app, CB).await;
    let html = Browser::new()
        .get(&authorize_url(&app, &client.id, CB, &new_pkce(), &[]))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("action=\"https://example.com/gate/authorize/consent\""),
        "{html}"
    );
}

mod prefix {
    use super::*;
    both_backends!(pages_post_back_under_the_public_path_prefix);
}
