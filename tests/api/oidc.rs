//! OpenID Connect for clients that ask for it: discovery, the ID token at the code exchange,
//! UserInfo, the OpenID request parameters (`nonce`, `max_age`, `prompt=login`,
//! `id_token_hint`), that clients without `openid` see no change, and a real relying-party
//! library (`openid-client`) logging in through the real upstream provider.

use authgate::config::RawResource;
use authgate::keys::AccessClaims;
use authgate::oauth::oidc;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};

use crate::both_backends;
use crate::browser::{Browser, location};
use crate::clients::run_client;
use crate::flow::{
    self, Pkce, RegisteredClient, approve_and_dev_login, authorize_url, decide, new_pkce,
    open_consent, param, redeem, register_public,
};
use crate::helpers::{Backend, T0, TestApp, spawn_app, spawn_app_with};
use crate::upstream::{setup, walk};

const CB: &str = "https://rp.example/cb";
const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#;
const OPENID_EMAIL: (&str, &str) = ("scope", "openid email mcp");

/// The ID token verified the way a relying party would: against the published JWKS, for this
/// issuer and client (expiry is checked by the caller against the app's clock, not the system's).
async fn verify_id_token(app: &TestApp, token: &str, client_id: &str) -> Value {
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let jwks: JwkSet = app
        .http
        .get(app.url("/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_issuer(&[&app.base]);
    v.set_audience(&[client_id]);
    v.validate_exp = false;
    v.set_required_spec_claims(&["iss", "sub", "aud", "exp", "iat"]);
    jsonwebtoken::decode::<Value>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .unwrap()
        .claims
}

/// Logs in through the consent page and the development login as `email`, returns the code.
async fn login_as(
    app: &TestApp,
    browser: &Browser,
    client: &RegisteredClient,
    pkce: &Pkce,
    extra: &[(&str, &str)],
    email: &str,
) -> String {
    let url = authorize_url(app, &client.id, &client.redirect_uri, pkce, extra);
    let request = open_consent(browser, &url).await;
    let done = approve_and_dev_login(browser, app, &request, email).await;
    assert_eq!(done.status(), 303);
    let back = location(&done);
    param(&back, "code").unwrap_or_else(|| panic!("no code: {back}"))
}

/// A browser logged in as `email` through `client` with `openid email`; its token response.
async fn openid_tokens(
    app: &TestApp,
    browser: &Browser,
    client: &RegisteredClient,
    email: &str,
) -> Value {
    let pkce = new_pkce();
    let code = login_as(app, browser, client, &pkce, &[OPENID_EMAIL], email).await;
    let resp = redeem(app, client, &code, &pkce).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

async fn authorize(
    browser: &Browser,
    app: &TestApp,
    client: &RegisteredClient,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    browser
        .get(&authorize_url(
            app,
            &client.id,
            &client.redirect_uri,
            &new_pkce(),
            extra,
        ))
        .await
}

/// The error an authorization request was answered with at the client's redirect URI.
fn redirect_error(resp: &reqwest::Response) -> Option<String> {
    assert_eq!(resp.status(), 302);
    let loc = location(resp);
    assert!(loc.starts_with(CB), "{loc}");
    param(&loc, "error")
}

async fn userinfo(app: &TestApp, auth: Option<&str>) -> reqwest::Response {
    let mut req = app.http.get(app.url("/userinfo"));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    req.send().await.unwrap()
}

fn challenge(resp: &reqwest::Response) -> String {
    resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn discovery_is_complete_and_agrees_with_the_oauth_metadata(backend: Backend) {
    let app = spawn_app(backend).await;
    let resp = app
        .http
        .get(app.url("/.well-known/openid-configuration"))
        .header("Origin", "https://chatgpt.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["issuer"], app.base);
    assert_eq!(doc["userinfo_endpoint"], app.url("/userinfo"));
    assert_eq!(doc["jwks_uri"], app.url("/jwks.json"));
    assert_eq!(doc["subject_types_supported"], json!(["public"]));
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    assert_eq!(doc["response_types_supported"], json!(["code"]));
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(doc["request_uri_parameter_supported"], false);
    let scopes = doc["scopes_supported"].as_array().unwrap();
    assert!(scopes.contains(&json!("openid")) && scopes.contains(&json!("email")));
    assert!(
        !scopes.contains(&json!("profile")),
        "nothing to fill profile with, and ChatGPT asks for every advertised scope"
    );
    let claims = doc["claims_supported"].as_array().unwrap();
    for c in ["sub", "email", "email_verified", "auth_time", "nonce"] {
        assert!(claims.contains(&json!(c)), "{c}");
    }
    assert!(!doc.as_object().unwrap().values().any(Value::is_null));
    // Everything the OAuth document says, this one says the same.
    let oauth: Value = app
        .http
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for (k, v) in oauth.as_object().unwrap() {
        assert_eq!(&doc[k], v, "{k}");
    }
    // The protected resource still asks for its own scope only.
    let prm: Value = app
        .http
        .get(app.url("/.well-known/oauth-protected-resource/mcp"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm["scopes_supported"], json!(["mcp"]));
}

async fn discovery_under_a_path_is_path_inserted(backend: Backend) {
    let app = spawn_app_with(backend, |raw| {
        raw.set("AUTHGATE_PUBLIC_URL", "https://example.com/gate");
        crate::helpers::stub_upstream(raw);
    })
    .await;
    // The RFC 8414 form, and the OpenID form `<issuer>/.well-known/...` as it arrives once the
    // proxy has stripped `/gate`.
    for path in [
        "/.well-known/openid-configuration/gate",
        "/.well-known/openid-configuration",
    ] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let doc: Value = resp.json().await.unwrap();
        assert_eq!(doc["issuer"], "https://example.com/gate");
        assert_eq!(
            doc["userinfo_endpoint"],
            "https://example.com/gate/userinfo"
        );
    }
}

async fn openid_code_exchange_issues_an_id_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    let pkce = new_pkce();
    let code = login_as(
        &app,
        &browser,
        &client,
        &pkce,
        &[OPENID_EMAIL, ("nonce", "n-0S6_WzA2Mj")],
        "ann@example.com",
    )
    .await;
    let resp = redeem(&app, &client, &code, &pkce).await;
    assert_eq!(resp.status(), 200);
    let tokens: Value = resp.json().await.unwrap();
    assert_eq!(tokens["scope"], "email mcp openid");
    let access = tokens["access_token"].as_str().unwrap();
    let id_token = tokens["id_token"].as_str().expect("an ID token");
    let access_claims = app
        .state
        .keys
        .verify(access, &app.base, &app.url("/mcp"), app.clock_now())
        .unwrap();

    let claims = verify_id_token(&app, id_token, &client.id).await;
    assert_eq!(claims["iss"], app.base);
    assert_eq!(claims["sub"], access_claims.sub.as_str());
    assert_eq!(claims["aud"], client.id.as_str());
    assert_eq!(claims["nonce"], "n-0S6_WzA2Mj");
    assert_eq!(claims["iat"], T0);
    assert_eq!(claims["exp"], T0 + 3600);
    assert_eq!(claims["auth_time"], T0, "the login's time");
    assert_eq!(claims["email"], "ann@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["at_hash"], oidc::at_hash(access));

    // The access token still opens the MCP resource, whose own scope is all the guard checks.
    let mcp = app
        .http
        .post(app.url("/mcp"))
        .bearer_auth(access)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(mcp.status(), 200);
    // An ID token is no access token, there or anywhere.
    let with_id_token = app
        .http
        .post(app.url("/mcp"))
        .bearer_auth(id_token)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .body(INIT)
        .send()
        .await
        .unwrap();
    assert_eq!(with_id_token.status(), 401);
    assert!(challenge(&with_id_token).contains("invalid_token"));

    // A refresh keeps the scope but repeats no ID token.
    let refreshed: Value = flow::refresh(&app, &client, tokens["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refreshed["scope"], "email mcp openid");
    assert!(refreshed.get("id_token").is_none(), "{refreshed}");
}

/// OpenID Connect Registration's default ID token algorithm is RS256; authgate signs with ES256.
/// A client that names one is answered with the one it will get (RFC 7591 §3.2.1), and its ID
/// tokens carry it; a client that names none sees no such field (Claude's registration answer
/// stays as it was).
async fn a_named_id_token_algorithm_is_answered_with_the_one_used(backend: Backend) {
    let app = spawn_app(backend).await;
    let plain: Value = flow::register(
        &app,
        json!({"redirect_uris":[CB],"token_endpoint_auth_method":"none"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(
        plain.get("id_token_signed_response_alg").is_none(),
        "{plain}"
    );
    let resp = flow::register(
        &app,
        json!({"redirect_uris":[CB],"token_endpoint_auth_method":"none","id_token_signed_response_alg":"RS256"}),
    )
    .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id_token_signed_response_alg"], "ES256", "{body}");
    let client = RegisteredClient {
        id: body["client_id"].as_str().unwrap().to_owned(),
        secret: None,
        redirect_uri: CB.to_owned(),
    };
    let tokens = openid_tokens(&app, &Browser::new(), &client, "ann@example.com").await;
    let header = jsonwebtoken::decode_header(tokens["id_token"].as_str().unwrap()).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    let wrong = flow::register(
        &app,
        json!({"redirect_uris":[CB],"id_token_signed_response_alg":256}),
    )
    .await;
    assert_eq!(wrong.status(), 400);
    let err: Value = wrong.json().await.unwrap();
    assert_eq!(err["error"], "invalid_client_metadata");
}

async fn openid_without_email_releases_the_subject_only(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    let pkce = new_pkce();
    let code = login_as(
        &app,
        &browser,
        &client,
        &pkce,
        &[("scope", "openid")],
        "ann@example.com",
    )
    .await;
    let tokens: Value = redeem(&app, &client, &code, &pkce)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        tokens["scope"], "mcp openid",
        "the resource's scope comes by default"
    );
    let claims = verify_id_token(&app, tokens["id_token"].as_str().unwrap(), &client.id).await;
    assert!(claims.get("email").is_none() && claims.get("email_verified").is_none());
    assert!(claims.get("nonce").is_none(), "no nonce asked, none echoed");
    let info: Value = userinfo(
        &app,
        Some(&format!(
            "Bearer {}",
            tokens["access_token"].as_str().unwrap()
        )),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(info, json!({"sub": claims["sub"]}));
}

async fn clients_without_openid_see_no_change(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    let pkce = new_pkce();
    // OpenID's parameters mean nothing without `openid`: even broken ones are ignored, as
    // before, and `email` is an unknown scope, narrowed away.
    let code = login_as(
        &app,
        &browser,
        &client,
        &pkce,
        &[
            ("scope", "mcp email claudeai"),
            ("nonce", &"n".repeat(600)),
            ("max_age", "soon"),
            ("id_token_hint", "not-a-token"),
        ],
        "ann@example.com",
    )
    .await;
    let tokens: Value = redeem(&app, &client, &code, &pkce)
        .await
        .json()
        .await
        .unwrap();
    let mut keys: Vec<&str> = tokens
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "access_token",
            "expires_in",
            "refresh_token",
            "scope",
            "token_type"
        ]
    );
    assert_eq!(tokens["scope"], "mcp");
    // Its access token is no key to UserInfo.
    let info = userinfo(
        &app,
        Some(&format!(
            "Bearer {}",
            tokens["access_token"].as_str().unwrap()
        )),
    )
    .await;
    assert_eq!(info.status(), 403);
    assert!(challenge(&info).contains("error=\"insufficient_scope\""));
    assert!(challenge(&info).contains("scope=\"openid\""));
    // prompt=login keeps its plain-OAuth meaning: the consent page again, then a code for the
    // session, without a new login.
    let url = authorize_url(&app, &client.id, CB, &new_pkce(), &[("prompt", "login")]);
    let request = open_consent(&browser, &url).await;
    let approved = decide(&browser, &app, &request, "approve").await;
    assert!(param(&location(&approved), "code").is_some());
}

async fn userinfo_answers_for_openid_tokens(backend: Backend) {
    let app = spawn_app_with(backend, |raw| {
        raw.add_resource(RawResource {
            path: Some("/files/mcp".into()),
            upstream: None,
            scopes: vec!["files".into()],
            ..Default::default()
        });
    })
    .await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    let tokens = openid_tokens(&app, &browser, &client, "ann@example.com").await;
    let bearer = format!("Bearer {}", tokens["access_token"].as_str().unwrap());
    let sub = verify_id_token(&app, tokens["id_token"].as_str().unwrap(), &client.id).await["sub"]
        .clone();
    let expected = json!({"sub": sub, "email": "ann@example.com", "email_verified": true});

    let got = app
        .http
        .get(app.url("/userinfo"))
        .header("Authorization", &bearer)
        .header("Origin", "https://chatgpt.com")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["cache-control"], "no-store");
    assert_eq!(got.headers()["access-control-allow-origin"], "*");
    assert_eq!(got.json::<Value>().await.unwrap(), expected);
    let posted = app
        .http
        .post(app.url("/userinfo"))
        .header("Authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    assert_eq!(posted.json::<Value>().await.unwrap(), expected);

    // Any of this issuer's resources: a token for /files/mcp serves too.
    let pkce = new_pkce();
    let url = authorize_url(
        &app,
        &client.id,
        CB,
        &pkce,
        &[
            ("scope", "openid email files"),
            ("resource", &app.url("/files/mcp")),
        ],
    );
    let request = open_consent(&browser, &url).await;
    let done = decide(&browser, &app, &request, "approve").await;
    let code = param(&location(&done), "code").unwrap();
    let files: Value = flow::token_request(
        &app,
        &client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("code_verifier", &pkce.verifier),
            ("resource", &app.url("/files/mcp")),
        ],
    )
    .await
    .json()
    .await
    .unwrap();
    let info = userinfo(
        &app,
        Some(&format!(
            "Bearer {}",
            files["access_token"].as_str().unwrap()
        )),
    )
    .await;
    assert_eq!(info.status(), 200);
    assert_eq!(info.json::<Value>().await.unwrap(), expected);
}

async fn userinfo_refuses_bad_requests_and_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    let tokens = openid_tokens(&app, &browser, &client, "ann@example.com").await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let good = app
        .state
        .keys
        .verify(&access, &app.base, &app.url("/mcp"), app.clock_now())
        .unwrap();

    // No token, or another scheme: a bare challenge, no error code (RFC 6750 §3.1).
    for auth in [None, Some("Basic YTpi")] {
        let resp = userinfo(&app, auth).await;
        assert_eq!(resp.status(), 401, "{auth:?}");
        assert_eq!(challenge(&resp), "Bearer realm=\"authgate\"");
    }
    // A token in the query string or body is not read.
    let query = app
        .http
        .get(format!("{}?access_token={access}", app.url("/userinfo")))
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), 401);
    assert!(!challenge(&query).contains("error="));
    let body = app
        .http
        .post(app.url("/userinfo"))
        .form(&[("access_token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(body.status(), 401);
    // Two Authorization headers: malformed.
    let twice = app
        .http
        .get(app.url("/userinfo"))
        .header("Authorization", format!("Bearer {access}"))
        .header("Authorization", format!("Bearer {access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
    assert!(challenge(&twice).contains("error=\"invalid_request\""));
    assert_eq!(
        twice.json::<Value>().await.unwrap()["error"],
        "invalid_request"
    );

    let mut tampered = access.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let sign = |claims: AccessClaims| app.state.keys.sign(&claims).unwrap();
    let foreign_issuer = sign(AccessClaims {
        iss: "https://evil.example".into(),
        ..good.clone()
    });
    let foreign_audience = sign(AccessClaims {
        aud: "https://evil.example/mcp".into(),
        ..good.clone()
    });
    let unknown_grant = sign(AccessClaims {
        sid: "no-such-grant".into(),
        ..good.clone()
    });
    let other_subject = sign(AccessClaims {
        sub: "ag_someone_else".into(),
        ..good.clone()
    });
    for (what, token) in [
        ("garbage", "garbage".to_owned()),
        ("tampered signature", tampered),
        (
            "an ID token",
            tokens["id_token"].as_str().unwrap().to_owned(),
        ),
        ("another issuer", foreign_issuer),
        ("another audience", foreign_audience),
        ("an unknown grant", unknown_grant),
        ("another subject than its grant's", other_subject),
    ] {
        let resp = userinfo(&app, Some(&format!("Bearer {token}"))).await;
        assert_eq!(resp.status(), 401, "{what}");
        assert!(
            challenge(&resp).contains("error=\"invalid_token\""),
            "{what}"
        );
        assert_eq!(resp.headers()["cache-control"], "no-store");
    }

    // Revoked itself, at once (no cache in between).
    assert_eq!(
        userinfo(&app, Some(&format!("Bearer {access}")))
            .await
            .status(),
        200
    );
    let revoked = app
        .http
        .post(app.url("/revoke"))
        .form(&[
            ("token", access.as_str()),
            ("client_id", client.id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(
        userinfo(&app, Some(&format!("Bearer {access}")))
            .await
            .status(),
        401
    );

    // Its grant revoked (the refresh token revokes the whole grant).
    let fresh: Value = flow::refresh(&app, &client, tokens["refresh_token"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    let fresh_access = fresh["access_token"].as_str().unwrap();
    assert_eq!(
        userinfo(&app, Some(&format!("Bearer {fresh_access}")))
            .await
            .status(),
        200
    );
    app.http
        .post(app.url("/revoke"))
        .form(&[
            ("token", fresh["refresh_token"].as_str().unwrap()),
            ("client_id", client.id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        userinfo(&app, Some(&format!("Bearer {fresh_access}")))
            .await
            .status(),
        401
    );

    // Expired.
    let other = openid_tokens(&app, &Browser::new(), &client, "bob@example.com").await;
    let bearer = format!("Bearer {}", other["access_token"].as_str().unwrap());
    assert_eq!(userinfo(&app, Some(&bearer)).await.status(), 200);
    app.clock.advance(3600);
    assert_eq!(userinfo(&app, Some(&bearer)).await.status(), 401);
}

async fn openid_request_parameters_are_checked(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let other_client = register_public(&app, CB).await;
    let browser = Browser::new();
    let tokens = openid_tokens(&app, &browser, &client, "ann@example.com").await;
    let others = openid_tokens(&app, &Browser::new(), &other_client, "ann@example.com").await;
    let id_token = tokens["id_token"].as_str().unwrap();
    let mut tampered = id_token.to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let long_nonce = "n".repeat(oidc::MAX_NONCE_LEN + 1);
    for (what, extra) in [
        ("a nonce too long", ("nonce", long_nonce.as_str())),
        ("a nonce with a NUL", ("nonce", "n\0")),
        ("max_age not a number", ("max_age", "soon")),
        ("a hint that is no JWT", ("id_token_hint", "not-a-token")),
        (
            "a hint with a broken signature",
            ("id_token_hint", tampered.as_str()),
        ),
        (
            "an access token as the hint",
            ("id_token_hint", tokens["access_token"].as_str().unwrap()),
        ),
        (
            "another client's ID token",
            ("id_token_hint", others["id_token"].as_str().unwrap()),
        ),
    ] {
        let resp = authorize(&browser, &app, &client, &[OPENID_EMAIL, extra]).await;
        assert_eq!(
            redirect_error(&resp).as_deref(),
            Some("invalid_request"),
            "{what}"
        );
        let loc = location(&resp);
        assert_eq!(param(&loc, "state").as_deref(), Some("st-123"), "{what}");
        assert_eq!(
            param(&loc, "iss").as_deref(),
            Some(app.base.as_str()),
            "{what}"
        );
        assert!(param(&loc, "code").is_none(), "{what}");
    }
    // The longest nonce allowed is kept and echoed.
    let nonce = "n".repeat(oidc::MAX_NONCE_LEN);
    let pkce = new_pkce();
    let resp = browser
        .get(&authorize_url(
            &app,
            &client.id,
            CB,
            &pkce,
            &[OPENID_EMAIL, ("nonce", &nonce)],
        ))
        .await;
    let code = param(&location(&resp), "code").expect("approved before: straight back");
    let again: Value = redeem(&app, &client, &code, &pkce)
        .await
        .json()
        .await
        .unwrap();
    let claims = verify_id_token(&app, again["id_token"].as_str().unwrap(), &client.id).await;
    assert_eq!(claims["nonce"], nonce.as_str());
}

async fn id_token_hint_names_who_may_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let ann_browser = Browser::new();
    let ann = openid_tokens(&app, &ann_browser, &client, "ann@example.com").await;
    let ann_hint = ann["id_token"].as_str().unwrap();
    let ann_sub = verify_id_token(&app, ann_hint, &client.id).await["sub"].clone();

    // Ann's browser, her own hint, no interaction: a code, for her. Even once the hint has
    // expired (re-authorization comes long after the ID token's hour).
    app.clock.advance(7200);
    let pkce = new_pkce();
    let resp = ann_browser
        .get(&authorize_url(
            &app,
            &client.id,
            CB,
            &pkce,
            &[
                OPENID_EMAIL,
                ("prompt", "none"),
                ("id_token_hint", ann_hint),
            ],
        ))
        .await;
    let code = param(&location(&resp), "code").expect("a code for the hinted user");
    let again: Value = redeem(&app, &client, &code, &pkce)
        .await
        .json()
        .await
        .unwrap();
    let claims = verify_id_token(&app, again["id_token"].as_str().unwrap(), &client.id).await;
    assert_eq!(claims["sub"], ann_sub);
    assert_eq!(claims["auth_time"], T0, "the login two hours ago, not now");

    // Bob's browser, Ann's hint: never a code for Bob.
    let bob_browser = Browser::new();
    openid_tokens(&app, &bob_browser, &client, "bob@example.com").await;
    let silent = authorize(
        &bob_browser,
        &app,
        &client,
        &[
            OPENID_EMAIL,
            ("prompt", "none"),
            ("id_token_hint", ann_hint),
        ],
    )
    .await;
    assert_eq!(redirect_error(&silent).as_deref(), Some("login_required"));
    // With interaction: the consent page (Bob's approval is not Ann's), then a login.
    let url = authorize_url(
        &app,
        &client.id,
        CB,
        &new_pkce(),
        &[OPENID_EMAIL, ("id_token_hint", ann_hint)],
    );
    let page = bob_browser.get(&url).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(!html.contains("bob@example.com"), "not offered as Bob");
    let request = crate::browser::form_inputs(&html)
        .remove("request")
        .unwrap();
    // Approving goes to the login (approve_and_dev_login insists), where Bob logs in again:
    // the client hears login_required, not a code for Bob.
    let bob_again = approve_and_dev_login(&bob_browser, &app, &request, "bob@example.com").await;
    let back = location(&bob_again);
    assert_eq!(
        param(&back, "error").as_deref(),
        Some("login_required"),
        "{back}"
    );
    assert!(param(&back, "code").is_none());
    // Ann logs in in Bob's browser: her code.
    let pkce = new_pkce();
    let url = authorize_url(
        &app,
        &client.id,
        CB,
        &pkce,
        &[OPENID_EMAIL, ("id_token_hint", ann_hint)],
    );
    let request = open_consent(&bob_browser, &url).await;
    let as_ann = approve_and_dev_login(&bob_browser, &app, &request, "ann@example.com").await;
    let code = param(&location(&as_ann), "code").expect("a code for Ann");
    let tokens: Value = redeem(&app, &client, &code, &pkce)
        .await
        .json()
        .await
        .unwrap();
    let claims = verify_id_token(&app, tokens["id_token"].as_str().unwrap(), &client.id).await;
    assert_eq!(claims["sub"], ann_sub);
}

/// A hint signed by a key authgate no longer has (rotated away and dropped) cannot be checked:
/// it is not refused, but the browser's session does not answer it either.
async fn an_unverifiable_hint_asks_for_a_login(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    let tokens = openid_tokens(&app, &browser, &client, "ann@example.com").await;
    let claims = verify_id_token(&app, tokens["id_token"].as_str().unwrap(), &client.id).await;
    let gone = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("dropped-key".into());
    header.typ = Some("JWT".into());
    let hint = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_ec_der(&gone.serialize_der()),
    )
    .unwrap();
    // Time resolution is the second: a login within the request's own second counts as fresh.
    app.clock.advance(1);
    let silent = authorize(
        &browser,
        &app,
        &client,
        &[OPENID_EMAIL, ("prompt", "none"), ("id_token_hint", &hint)],
    )
    .await;
    assert_eq!(redirect_error(&silent).as_deref(), Some("login_required"));
    let pkce = new_pkce();
    let url = authorize_url(
        &app,
        &client.id,
        CB,
        &pkce,
        &[OPENID_EMAIL, ("id_token_hint", &hint)],
    );
    let request = open_consent(&browser, &url).await;
    // Approving leads to the login (approve_and_dev_login insists on it).
    let done = approve_and_dev_login(&browser, &app, &request, "ann@example.com").await;
    assert!(param(&location(&done), "code").is_some());
}

async fn max_age_and_prompt_login_ask_for_a_recent_login(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_public(&app, CB).await;
    let browser = Browser::new();
    openid_tokens(&app, &browser, &client, "ann@example.com").await;
    app.clock.advance(120);

    // A login two minutes old is recent enough for max_age=3600: straight back.
    let pkce = new_pkce();
    let resp = browser
        .get(&authorize_url(
            &app,
            &client.id,
            CB,
            &pkce,
            &[OPENID_EMAIL, ("max_age", "3600")],
        ))
        .await;
    let code = param(&location(&resp), "code").expect("a code");
    let tokens: Value = redeem(&app, &client, &code, &pkce)
        .await
        .json()
        .await
        .unwrap();
    let claims = verify_id_token(&app, tokens["id_token"].as_str().unwrap(), &client.id).await;
    assert_eq!(claims["auth_time"], T0);

    // Not for max_age=60, nor for prompt=login: the consent page, then the login, then a
    // code whose auth_time is the new login's.
    let silent = authorize(
        &browser,
        &app,
        &client,
        &[OPENID_EMAIL, ("max_age", "60"), ("prompt", "none")],
    )
    .await;
    assert_eq!(redirect_error(&silent).as_deref(), Some("login_required"));
    for extra in [("max_age", "60"), ("prompt", "login")] {
        let pkce = new_pkce();
        let url = authorize_url(&app, &client.id, CB, &pkce, &[OPENID_EMAIL, extra]);
        let request = open_consent(&browser, &url).await;
        // Approving leads to the login (approve_and_dev_login insists on it).
        let done = approve_and_dev_login(&browser, &app, &request, "ann@example.com").await;
        let code = param(&location(&done), "code").expect("a code after the login");
        let tokens: Value = redeem(&app, &client, &code, &pkce)
            .await
            .json()
            .await
            .unwrap();
        let claims = verify_id_token(&app, tokens["id_token"].as_str().unwrap(), &client.id).await;
        assert_eq!(claims["auth_time"], app.clock_now(), "{extra:?}");
        app.clock.advance(120);
    }
}

/// The acceptance test: an OpenID Connect relying-party library, unmodified, discovers authgate,
/// registers, logs in with `openid email` through the real upstream provider, verifies the ID
/// token (signature included), reads UserInfo and re-authorizes with `id_token_hint`.
async fn openid_client_logs_in_through_the_real_provider(backend: Backend) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/clients");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/openid-client")
            .exists(),
        "tests/e2e/clients has no node_modules: run `npm ci` there (scripts/test does it)"
    );
    let s = setup(backend, "client_secret_post", true, |_| {}).await;
    let app = &s.app;
    // The library checks iat and exp against the real clock.
    let real_now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    app.clock.advance(real_now - app.clock_now());

    let r = run_client("node", "oidc-rp.mjs", &app.base, "openid email", "", &[]).await;
    assert_eq!(r["discovery"]["issuer"], app.base, "{r}");
    assert_eq!(r["discovery"]["userinfo_endpoint"], app.url("/userinfo"));
    assert_eq!(r["scope"], "email mcp openid");
    assert_eq!(r["idTokenHeader"]["alg"], "ES256");
    let claims = &r["claims"];
    assert_eq!(claims["iss"], app.base);
    assert_eq!(claims["email"], "ann@example.test");
    assert_eq!(
        claims["email_verified"], true,
        "the provider vouched for it"
    );
    assert!(claims["auth_time"].as_i64().unwrap() >= real_now);
    assert_eq!(
        r["userinfo"],
        json!({"sub": claims["sub"], "email": "ann@example.test", "email_verified": true})
    );
    assert_eq!(r["reauthorized"], true);
    assert_eq!(
        r["tamperedRejected"], true,
        "the library does check the signature"
    );

    // A fresh login is asked of the provider itself: it must not let its own session through.
    let client = flow::register_claude(app).await;
    let browser = Browser::new();
    let last_authorize = || async {
        reqwest::get(format!("{}/test/last-authorize", s.idp.issuer))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    for (prompt, upstream_prompt) in [(None, Value::Null), (Some("login"), json!("login"))] {
        // Past the second of the previous login, which would still count as fresh.
        app.clock.advance(1);
        let mut extra = vec![OPENID_EMAIL];
        extra.extend(prompt.map(|p| ("prompt", p)));
        let url = authorize_url(app, &client.id, &client.redirect_uri, &new_pkce(), &extra);
        let back = walk(
            &browser,
            app,
            &url,
            &client.redirect_uri,
            "ann@example.test",
        )
        .await
        .unwrap_or_else(|r| panic!("flow stopped at {}", r.url()));
        assert!(param(&back, "code").is_some(), "{back}");
        assert_eq!(
            last_authorize().await["prompt"],
            upstream_prompt,
            "{prompt:?}"
        );
    }
    crate::helpers::record_compat(
        "openid-client (OpenID Connect RP)",
        "DCR, none, openid email",
        backend,
    );
}

both_backends!(
    openid_client_logs_in_through_the_real_provider,
    discovery_is_complete_and_agrees_with_the_oauth_metadata,
    discovery_under_a_path_is_path_inserted,
    openid_code_exchange_issues_an_id_token,
    openid_without_email_releases_the_subject_only,
    a_named_id_token_algorithm_is_answered_with_the_one_used,
    clients_without_openid_see_no_change,
    userinfo_answers_for_openid_tokens,
    userinfo_refuses_bad_requests_and_tokens,
    openid_request_parameters_are_checked,
    id_token_hint_names_who_may_answer,
    an_unverifiable_hint_asks_for_a_login,
    max_age_and_prompt_login_ask_for_a_recent_login,
);
