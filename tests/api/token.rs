//! `/token` and `/revoke` against the real app: code redemption, client authentication,
//! refresh rotation, grace and reuse, races, and the access tokens themselves.

use std::sync::Arc;

use authgate::keys::TokenRejection;
use base64::Engine as _;
use serde_json::Value;

use crate::both_backends;
use crate::browser::Browser;
use crate::flow::{
    self, RegisteredClient, dev_flow, full_grant, new_pkce, redeem, refresh, register_claude,
    register_public, token_request,
};
use crate::helpers::{Backend, spawn_app, spawn_app_with};

const CB: &str = "http://127.0.0.1:9/callback";

async fn error_of(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn code_exchange_issues_bound_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_claude(&app).await;
    let browser = Browser::new();
    let pkce = new_pkce();
    let code = dev_flow(
        &app,
        &browser,
        &client,
        &pkce,
        &[("resource", &app.url("/mcp"))],
    )
    .await;
    let resp = token_request(
        &app,
        &client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &pkce.verifier),
            ("redirect_uri", &client.redirect_uri),
            ("resource", &app.url("/mcp")),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["scope"], "mcp");
    assert!(body["refresh_token"].as_str().unwrap().len() >= 43);
    let at = body["access_token"].as_str().unwrap();
    let claims = app
        .state
        .keys
        .verify(at, &app.base, &app.url("/mcp"), app.clock_now())
        .unwrap();
    assert_eq!(claims.client_id, client.id);
    assert_eq!(claims.email.as_deref(), Some("ann@example.com"));
    assert!(claims.sub.starts_with("ag_"));
    assert_eq!(claims.exp - claims.iat, 3600);
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(at.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    assert!(
        app.store
            .get_client(&client.id)
            .await
            .unwrap()
            .unwrap()
            .last_used_at
            .is_some(),
        "the client is marked used"
    );
}

async fn code_replay_is_refused_and_revokes_the_grant(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    let pkce = new_pkce();
    let code = dev_flow(&app, &browser, &client, &pkce, &[]).await;
    let first: Value = redeem(&app, &client, &code, &pkce)
        .await
        .json()
        .await
        .unwrap();
    let (status, err) = error_of(redeem(&app, &client, &code, &pkce).await).await;
    assert_eq!((status, err.as_str()), (400, "invalid_grant"));
    let (status, err) =
        error_of(refresh(&app, &client, first["refresh_token"].as_str().unwrap()).await).await;
    assert_eq!(
        (status, err.as_str()),
        (400, "invalid_grant"),
        "the replay revoked what the code produced"
    );
}

async fn concurrent_redemptions_of_one_code_succeed_once(backend: Backend) {
    let app = Arc::new(spawn_app(backend).await);
    let client = Arc::new(register_public(&app, CB).await);
    let browser = Browser::new();
    let pkce = Arc::new(new_pkce());
    let code = dev_flow(&app, &browser, &client, &pkce, &[]).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (app, client, pkce, code) = (app.clone(), client.clone(), pkce.clone(), code.clone());
        tasks.push(tokio::spawn(async move {
            redeem(&app, &client, &code, &pkce).await.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        15,
        "{statuses:?}"
    );
}

/// Who asks, the form, the expected status and error.
type Case<'a> = (&'a RegisteredClient, Vec<(&'a str, &'a str)>, u16, &'a str);

async fn pkce_and_bindings_are_enforced(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let other = register_public(&app, CB).await;
    let browser = Browser::new();
    let pkce = new_pkce();
    let code = dev_flow(&app, &browser, &client, &pkce, &[]).await;
    let wrong_verifier = new_pkce().verifier;
    let cases: Vec<Case<'_>> = vec![
        (
            &client,
            vec![("grant_type", "authorization_code"), ("code", &code)],
            400,
            "invalid_request",
        ),
        (
            &client,
            vec![
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", &wrong_verifier),
            ],
            400,
            "invalid_grant",
        ),
        (
            &client,
            vec![
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", &pkce.verifier),
                ("redirect_uri", "http://127.0.0.1:9/other"),
            ],
            400,
            "invalid_grant",
        ),
        (
            &client,
            vec![
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", &pkce.verifier),
                ("resource", "https://other.example/mcp"),
            ],
            400,
            "invalid_target",
        ),
        (
            &other,
            vec![
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("code_verifier", &pkce.verifier),
            ],
            400,
            "invalid_grant",
        ),
        (
            &client,
            vec![("grant_type", "password"), ("username", "a")],
            400,
            "unsupported_grant_type",
        ),
        (&client, vec![("code", &code)], 400, "invalid_request"),
    ];
    for (who, form, status, err) in cases {
        let got = error_of(token_request(&app, who, &form).await).await;
        assert_eq!(got, (status, err.to_owned()), "{form:?}");
    }
    // None of the failures consumed the code.
    assert_eq!(redeem(&app, &client, &code, &pkce).await.status(), 200);
}

async fn expired_codes_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    let pkce = new_pkce();
    let code = dev_flow(&app, &browser, &client, &pkce, &[]).await;
    app.clock.advance(61);
    assert_eq!(
        error_of(redeem(&app, &client, &code, &pkce).await).await,
        (400, "invalid_grant".to_owned())
    );
}

async fn clients_authenticate_by_their_registered_method(backend: Backend) {
    let app = spawn_app(backend).await;
    let claude = register_claude(&app).await;
    let secret = claude.secret.clone().unwrap();
    let browser = Browser::new();
    let pkce = new_pkce();
    let code = dev_flow(&app, &browser, &claude, &pkce, &[]).await;
    let base = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let post = |form: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            app.http
                .post(app.url("/token"))
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    let mut wrong = base
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .collect::<Vec<_>>();
    wrong.push(("client_id", claude.id.clone()));
    wrong.push(("client_secret", "not-the-secret".to_owned()));
    assert_eq!(
        error_of(post(wrong).await).await,
        (401, "invalid_client".to_owned())
    );
    let mut none = base
        .iter()
        .map(|(k, v)| (*k, (*v).to_owned()))
        .collect::<Vec<_>>();
    none.push(("client_id", claude.id.clone()));
    assert_eq!(
        error_of(post(none).await).await,
        (401, "invalid_client".to_owned()),
        "a confidential client must send its secret"
    );
    let basic = app
        .http
        .post(app.url("/token"))
        .basic_auth(&claude.id, Some(&secret))
        .form(&base)
        .send()
        .await
        .unwrap();
    assert_eq!(
        basic.status(),
        401,
        "registered client_secret_post, so Basic is refused"
    );
    assert!(
        basic.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let unknown = error_of(
        app.http
            .post(app.url("/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", "x"),
                ("client_id", "agc_gone"),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        unknown,
        (401, "invalid_client".to_owned()),
        "a vanished client is told to re-register"
    );
    let both = app
        .http
        .post(app.url("/token"))
        .basic_auth(&claude.id, Some(&secret))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_secret", secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(both).await, (400, "invalid_request".to_owned()));
    let json = app
        .http
        .post(app.url("/token"))
        .json(&serde_json::json!({"grant_type":"authorization_code"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(json).await, (400, "invalid_request".to_owned()));
    assert_eq!(
        redeem(&app, &claude, &code, &pkce).await.status(),
        200,
        "client_secret_post works"
    );

    // client_secret_basic, with the RFC's form-encoding inside Basic.
    let body: Value = app
        .register(serde_json::json!({"redirect_uris":[CB],"token_endpoint_auth_method":"client_secret_basic","grant_types":["authorization_code","refresh_token"]}))
        .await
        .json()
        .await
        .unwrap();
    let basic_client = RegisteredClient {
        id: body["client_id"].as_str().unwrap().to_owned(),
        secret: None,
        redirect_uri: CB.to_owned(),
    };
    let secret = body["client_secret"].as_str().unwrap().to_owned();
    let pkce = new_pkce();
    let code = dev_flow(&app, &Browser::new(), &basic_client, &pkce, &[]).await;
    let ok = app
        .http
        .post(app.url("/token"))
        .basic_auth(&basic_client.id, Some(&secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("code_verifier", pkce.verifier.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

async fn deleted_clients_get_invalid_client(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_claude(&app).await;
    let grant = full_grant(&app, &client).await;
    assert!(app.store.delete_client(&client.id).await.unwrap());
    let (status, err) =
        error_of(refresh(&app, &client, grant["refresh_token"].as_str().unwrap()).await).await;
    assert_eq!((status, err.as_str()), (401, "invalid_client"));
}

async fn refresh_rotates_with_grace_then_detects_reuse(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_claude(&app).await;
    let grant = full_grant(&app, &client).await;
    let rt0 = grant["refresh_token"].as_str().unwrap().to_owned();
    let first: Value = refresh(&app, &client, &rt0).await.json().await.unwrap();
    let rt1 = first["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rt0, rt1, "rotated");
    assert_eq!(first["scope"], "mcp");
    app.clock.advance(10);
    let replay: Value = refresh(&app, &client, &rt0).await.json().await.unwrap();
    assert_eq!(
        replay["refresh_token"],
        rt1.as_str(),
        "inside the grace window: the same successor"
    );
    assert!(replay["access_token"].is_string());
    app.clock.advance(25);
    let (status, err) = error_of(refresh(&app, &client, &rt0).await).await;
    assert_eq!(
        (status, err.as_str()),
        (400, "invalid_grant"),
        "after the grace window: reuse"
    );
    let (_, err) = error_of(refresh(&app, &client, &rt1).await).await;
    assert_eq!(err, "invalid_grant", "reuse revoked the whole family");
}

async fn concurrent_refreshes_share_one_successor(backend: Backend) {
    let app = Arc::new(spawn_app(backend).await);
    let client = Arc::new(register_claude(&app).await);
    let grant = full_grant(&app, &client).await;
    let rt0 = grant["refresh_token"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (app, client, rt0) = (app.clone(), client.clone(), rt0.clone());
        tasks.push(tokio::spawn(async move {
            let resp = refresh(&app, &client, &rt0).await;
            assert_eq!(resp.status(), 200);
            let body: Value = resp.json().await.unwrap();
            body["refresh_token"].as_str().unwrap().to_owned()
        }));
    }
    let mut successors = Vec::new();
    for t in tasks {
        successors.push(t.await.unwrap());
    }
    successors.dedup();
    assert_eq!(successors.len(), 1, "one successor for all: {successors:?}");
    assert_eq!(refresh(&app, &client, &successors[0]).await.status(), 200);
}

async fn refresh_cannot_widen_scope_or_change_resource(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_claude(&app).await;
    let grant = full_grant(&app, &client).await;
    let rt = grant["refresh_token"].as_str().unwrap();
    let widen = token_request(
        &app,
        &client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("scope", "mcp admin"),
        ],
    )
    .await;
    assert_eq!(error_of(widen).await, (400, "invalid_scope".to_owned()));
    let foreign = token_request(
        &app,
        &client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("resource", "https://other.example/mcp"),
        ],
    )
    .await;
    assert_eq!(error_of(foreign).await, (400, "invalid_target".to_owned()));
    let same = token_request(
        &app,
        &client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("resource", &app.url("/mcp")),
        ],
    )
    .await;
    assert_eq!(same.status(), 200);
}

async fn refresh_tokens_expire_when_idle(backend: Backend) {
    let app = spawn_app_with(backend, |raw| {
        raw.set("AUTHGATE_REFRESH_TOKEN_IDLE_TTL", "1h")
    })
    .await;
    let client = register_claude(&app).await;
    let grant = full_grant(&app, &client).await;
    app.clock.advance(3601);
    assert_eq!(
        error_of(refresh(&app, &client, grant["refresh_token"].as_str().unwrap()).await).await,
        (400, "invalid_grant".to_owned())
    );
}

async fn public_clients_without_refresh_grant_get_no_refresh_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let body: Value = app
        .register(serde_json::json!({"redirect_uris":[CB],"token_endpoint_auth_method":"none"}))
        .await
        .json()
        .await
        .unwrap();
    let client = RegisteredClient {
        id: body["client_id"].as_str().unwrap().to_owned(),
        secret: None,
        redirect_uri: CB.to_owned(),
    };
    let grant = full_grant(&app, &client).await;
    assert!(grant.get("refresh_token").is_none());
}

async fn tampered_and_foreign_tokens_are_rejected(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_claude(&app).await;
    let grant = full_grant(&app, &client).await;
    let at = grant["access_token"].as_str().unwrap().to_owned();
    let now = app.clock_now();
    let keys = &app.state.keys;
    let aud = app.url("/mcp");
    assert!(keys.verify(&at, &app.base, &aud, now).is_ok());
    let mut parts: Vec<String> = at.split('.').map(str::to_owned).collect();
    let mut claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&parts[1])
            .unwrap(),
    )
    .unwrap();
    claims["scope"] = "mcp admin".into();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&claims).unwrap());
    assert_eq!(
        keys.verify(&parts.join("."), &app.base, &aud, now),
        Err(TokenRejection::BadSignature)
    );
    assert_eq!(
        keys.verify(&at, "https://other-issuer.example", &aud, now),
        Err(TokenRejection::WrongIssuer)
    );
    assert_eq!(
        keys.verify(&at, &app.base, "https://other.example/mcp", now),
        Err(TokenRejection::WrongAudience)
    );
    assert_eq!(
        keys.verify(&at, &app.base, &aud, now + 3600),
        Err(TokenRejection::Expired)
    );
    assert_eq!(
        keys.verify("not.a.jwt", &app.base, &aud, now),
        Err(TokenRejection::Malformed)
    );
    // A token from another authgate (another key) is refused.
    let other = spawn_app(backend).await;
    let other_client = register_claude(&other).await;
    let foreign = full_grant(&other, &other_client).await;
    assert_eq!(
        keys.verify(
            foreign["access_token"].as_str().unwrap(),
            &app.base,
            &aud,
            now
        ),
        Err(TokenRejection::UnknownKey)
    );
}

async fn revocation(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_claude(&app).await;
    let other = register_claude(&app).await;
    let grant = full_grant(&app, &client).await;
    let rt = grant["refresh_token"].as_str().unwrap();
    let at = grant["access_token"].as_str().unwrap();
    let revoke = |who: &RegisteredClient, token: &str| {
        let form = vec![
            ("token", token.to_owned()),
            ("client_id", who.id.clone()),
            ("client_secret", who.secret.clone().unwrap()),
        ];
        let app = &app;
        async move {
            app.http
                .post(app.url("/revoke"))
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(revoke(&client, "never-issued").await.status(), 200);
    assert_eq!(
        error_of(revoke(&other, rt).await).await,
        (400, "invalid_request".to_owned()),
        "another client's token"
    );
    let bad_secret = app
        .http
        .post(app.url("/revoke"))
        .form(&[
            ("token", rt),
            ("client_id", client.id.as_str()),
            ("client_secret", "nope"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad_secret.status(), 401);
    assert_eq!(
        refresh(&app, &client, rt).await.status(),
        200,
        "nothing revoked so far"
    );
    let claims = app.state.keys.verify_signature(at).unwrap();
    assert_eq!(revoke(&client, at).await.status(), 200);
    assert!(
        app.store
            .is_access_token_revoked(&claims.jti)
            .await
            .unwrap()
    );
    let grant2 = full_grant(&app, &client).await;
    let rt2 = grant2["refresh_token"].as_str().unwrap();
    assert_eq!(revoke(&client, rt2).await.status(), 200);
    assert_eq!(
        error_of(refresh(&app, &client, rt2).await).await,
        (400, "invalid_grant".to_owned())
    );
}

async fn pending_consent_and_refresh_survive_a_restart(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_claude(&app).await;
    let grant = full_grant(&app, &client).await;
    let browser = Browser::new();
    let pkce = new_pkce();
    let url = flow::authorize_url(&app, &client.id, &client.redirect_uri, &pkce, &[]);
    let request = flow::open_consent(&browser, &url).await;

    let app = app.restart().await;
    let done = flow::approve_and_dev_login(&browser, &app, &request, "ann@example.com").await;
    assert_eq!(
        done.status(),
        303,
        "the pending consent survived the restart"
    );
    let code = flow::param(&crate::browser::location(&done), "code").unwrap();
    assert_eq!(redeem(&app, &client, &code, &pkce).await.status(), 200);
    assert_eq!(
        refresh(&app, &client, grant["refresh_token"].as_str().unwrap())
            .await
            .status(),
        200,
        "the refresh token survived"
    );
    assert!(
        app.state
            .keys
            .verify(
                grant["access_token"].as_str().unwrap(),
                &app.base,
                &app.url("/mcp"),
                app.clock_now()
            )
            .is_ok(),
        "the signing key survived"
    );
}

both_backends!(
    code_exchange_issues_bound_tokens,
    code_replay_is_refused_and_revokes_the_grant,
    concurrent_redemptions_of_one_code_succeed_once,
    pkce_and_bindings_are_enforced,
    expired_codes_are_refused,
    clients_authenticate_by_their_registered_method,
    deleted_clients_get_invalid_client,
    refresh_rotates_with_grace_then_detects_reuse,
    concurrent_refreshes_share_one_successor,
    refresh_cannot_widen_scope_or_change_resource,
    refresh_tokens_expire_when_idle,
    public_clients_without_refresh_grant_get_no_refresh_token,
    tampered_and_foreign_tokens_are_rejected,
    revocation,
    pending_consent_and_refresh_survive_a_restart,
);

async fn signing_keys_are_encrypted_at_rest_when_configured(backend: Backend) {
    use base64::engine::general_purpose::STANDARD;
    let key = STANDARD.encode([42u8; 32]);
    let app = spawn_app_with(backend, |raw| raw.set("AUTHGATE_KEY_ENCRYPTION_KEY", key)).await;
    let stored = app.store.list_keys().await.unwrap();
    assert!(!stored.is_empty());
    assert!(
        stored.iter().all(|k| k.private_der.starts_with("sealed1:")),
        "no private key in the clear"
    );
    let client = register_claude(&app).await;
    let grant = full_grant(&app, &client).await;
    let at = grant["access_token"].as_str().unwrap().to_owned();
    let store = app.store.clone();
    let app = app.restart().await;
    assert!(
        app.state
            .keys
            .verify(&at, &app.base, &app.url("/mcp"), app.clock_now())
            .is_ok(),
        "the sealed key opens after a restart"
    );
    // The same database without the key cannot start: the keys stay closed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut raw = authgate::config::RawConfig::default();
    raw.set(
        "AUTHGATE_LISTEN",
        listener.local_addr().unwrap().to_string(),
    );
    let settings = authgate::config::Settings::from_raw(&raw).unwrap();
    let clock = authgate::clock::MockClock::new(crate::helpers::T0);
    let result = authgate::startup::Application::build(
        settings,
        listener,
        store,
        std::sync::Arc::new(clock),
        std::sync::Arc::new(authgate::random::SystemRandom),
    )
    .await;
    let Err(e) = result else {
        panic!("started without the key")
    };
    assert!(e.to_string().contains("AUTHGATE_KEY_ENCRYPTION_KEY"), "{e}");
}

mod sealed_keys {
    use super::*;
    both_backends!(signing_keys_are_encrypted_at_rest_when_configured);
}
