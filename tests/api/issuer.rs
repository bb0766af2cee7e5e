//! RFC 9207: every authorization response that reaches the client, a code or an error, carries
//! `iss`, once, byte for byte the issuer of the metadata, the resource metadata and the access
//! tokens. ChatGPT and Codex use their stable client id and callback only when it does.

use serde_json::Value;

use crate::both_backends;
use crate::browser::{Browser, location};
use crate::flow::{
    approve_and_dev_login, authorize_url, decide, new_pkce, open_consent, param, redeem,
    register_public,
};
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_on};
use crate::upstream::setup;

/// The `iss` values of an answer's URL: exactly one, which is returned.
fn only_iss(answer: &str) -> String {
    let all: Vec<String> = url::Url::parse(answer)
        .unwrap()
        .query_pairs()
        .filter(|(k, _)| k == "iss")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(all.len(), 1, "one iss in {answer}");
    all.into_iter().next().unwrap()
}

async fn metadata_issuer(app: &TestApp, path: &str) -> String {
    let meta: Value = app
        .http
        .get(app.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    meta["issuer"].as_str().unwrap().to_owned()
}

async fn every_authorization_response_carries_the_one_issuer(backend: Backend) {
    let app = spawn_app(backend).await;
    let issuer = metadata_issuer(&app, "/.well-known/oauth-authorization-server").await;
    let prm: Value = app
        .http
        .get(app.url("/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm["authorization_servers"], serde_json::json!([issuer]));
    const CB: &str = "http://127.0.0.1:9/callback";
    let approved = register_public(&app, CB).await;
    let other = register_public(&app, CB).await;
    let mut answers: Vec<(&str, String)> = Vec::new();

    // A first approval: consent, login, code.
    let ann = Browser::new();
    let pkce = new_pkce();
    let request = open_consent(&ann, &authorize_url(&app, &approved.id, CB, &pkce, &[])).await;
    let done = approve_and_dev_login(&ann, &app, &request, "ann@example.com").await;
    answers.push(("code after consent", location(&done)));
    let code = param(&location(&done), "code").unwrap();
    let tokens: Value = redeem(&app, &approved, &code, &pkce)
        .await
        .json()
        .await
        .unwrap();
    let claims = app
        .state
        .keys
        .verify_signature(tokens["access_token"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        claims.iss, issuer,
        "the access token's iss is the same string"
    );

    // Approved before: straight back with a code.
    let again = ann
        .get(&authorize_url(&app, &approved.id, CB, &new_pkce(), &[]))
        .await;
    assert_eq!(again.status(), 302);
    assert!(param(&location(&again), "code").is_some());
    answers.push(("code without consent", location(&again)));

    // Logged in, not approved, and no interaction allowed.
    let none = ann
        .get(&authorize_url(
            &app,
            &other.id,
            CB,
            &new_pkce(),
            &[("prompt", "none")],
        ))
        .await;
    answers.push(("consent_required", location(&none)));
    // Denied on the consent page.
    let request = open_consent(&ann, &authorize_url(&app, &other.id, CB, &new_pkce(), &[])).await;
    answers.push((
        "access_denied",
        location(&decide(&ann, &app, &request, "deny").await),
    ));

    // Refused before any consent, to a browser without a session.
    let stranger = Browser::new();
    let ch = new_pkce();
    for (expected, extra) in [
        ("login_required", vec![("prompt", "none")]),
        (
            "invalid_target",
            vec![("resource", "https://other.example/mcp")],
        ),
    ] {
        let resp = stranger
            .get(&authorize_url(&app, &approved.id, CB, &ch, &extra))
            .await;
        answers.push((expected, location(&resp)));
    }
    let mut bare = url::Url::parse(&app.url("/authorize")).unwrap();
    bare.query_pairs_mut()
        .append_pair("client_id", &approved.id)
        .append_pair("redirect_uri", CB)
        .append_pair("state", "st-123")
        .append_pair("response_type", "token");
    answers.push((
        "unsupported_response_type",
        location(&stranger.get(bare.as_str()).await),
    ));
    bare.query_pairs_mut()
        .clear()
        .append_pair("client_id", &approved.id)
        .append_pair("redirect_uri", CB)
        .append_pair("state", "st-123")
        .append_pair("response_type", "code");
    answers.push((
        "invalid_request",
        location(&stranger.get(bare.as_str()).await),
    ));

    for (what, answer) in &answers {
        assert!(answer.starts_with(CB), "{what}: {answer}");
        if what.starts_with("code") {
            assert!(param(answer, "code").is_some(), "{what}");
        } else {
            assert_eq!(param(answer, "error").as_deref(), Some(*what), "{answer}");
        }
        assert_eq!(param(answer, "state").as_deref(), Some("st-123"), "{what}");
        assert_eq!(only_iss(answer), issuer, "{what}: byte for byte");
    }
}

/// Under a path prefix the issuer has a path, and `iss` carries it exactly.
async fn a_path_issuer_is_sent_exactly(backend: Backend) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}/gate", listener.local_addr().unwrap());
    let public = issuer.clone();
    let app = spawn_app_on(backend, listener, move |raw| {
        raw.set("AUTHGATE_PUBLIC_URL", public)
    })
    .await;
    assert_eq!(
        metadata_issuer(&app, "/.well-known/oauth-authorization-server/gate").await,
        issuer
    );
    const CB: &str = "http://localhost:9/cb";
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    for extra in [
        vec![("prompt", "none")],
        vec![("resource", "https://other.example/mcp")],
    ] {
        let resp = browser
            .get(&authorize_url(&app, &client.id, CB, &new_pkce(), &extra))
            .await;
        assert_eq!(resp.status(), 302);
        assert_eq!(only_iss(&location(&resp)), issuer);
    }
}

/// The person cancels at the upstream provider: the client hears `access_denied`, with `iss`.
async fn a_login_cancelled_upstream_answers_access_denied_with_iss(backend: Backend) {
    let s = setup(backend, "client_secret_post", true, |_| {}).await;
    let app = &s.app;
    let client = crate::flow::register_claude(app).await;
    let browser = Browser::new();
    let request = open_consent(
        &browser,
        &authorize_url(app, &client.id, &client.redirect_uri, &new_pkce(), &[]),
    )
    .await;
    let to_provider = decide(&browser, app, &request, "approve").await;
    assert_eq!(to_provider.status(), 303);
    let state = param(&location(&to_provider), "state").unwrap();
    let mut callback = url::Url::parse(&app.url("/oauth/callback")).unwrap();
    callback
        .query_pairs_mut()
        .append_pair("error", "access_denied")
        .append_pair("state", &state)
        .append_pair("iss", &s.idp.issuer);
    let back = browser.get(callback.as_str()).await;
    assert_eq!(back.status(), 303);
    let answer = location(&back);
    assert!(answer.starts_with(&client.redirect_uri), "{answer}");
    assert_eq!(param(&answer, "error").as_deref(), Some("access_denied"));
    assert_eq!(param(&answer, "state").as_deref(), Some("st-123"));
    assert_eq!(only_iss(&answer), app.base);
}

both_backends!(
    every_authorization_response_carries_the_one_issuer,
    a_path_issuer_is_sent_exactly,
    a_login_cancelled_upstream_answers_access_denied_with_iss,
);
