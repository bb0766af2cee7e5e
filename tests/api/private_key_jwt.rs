//! `private_key_jwt` client authentication (RFC 7523) at `/token` and `/revoke`: the client signs
//! an assertion with a key it publishes (`jwks_uri`, or `jwks` inline). The test holds the
//! private keys and serves the public ones from the TLS test host, as ChatGPT does from
//! chatgpt.com.

use std::sync::atomic::Ordering;

use aws_lc_rs::encoding::AsDer;
use base64::Engine as _;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::both_backends;
use crate::browser::{Browser, location};
use crate::cimd::through_the_app::app_with_doc_host;
use crate::cimd::{CHATGPT_CALLBACK, CHATGPT_CIMD};
use crate::flow::{self, Pkce, new_pkce, param};
use crate::helpers::{Backend, TestApp};

pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A client's signing key (RSA 2048, RS256, as ChatGPT's document declares) and its public JWK.
pub struct ClientKey {
    encoding: EncodingKey,
    alg: Algorithm,
    pub kid: String,
    pub jwk: Value,
}

impl ClientKey {
    pub fn rsa(kid: &str) -> Self {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der.as_ref())
        );
        Self::with(
            EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            Algorithm::RS256,
            kid,
        )
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "a throwaway test key: no replayable randomness needed"
    )]
    pub fn ec(kid: &str) -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        Self::with(
            EncodingKey::from_ec_der(pkcs8.as_ref()),
            Algorithm::ES256,
            kid,
        )
    }

    fn with(encoding: EncodingKey, alg: Algorithm, kid: &str) -> Self {
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&encoding, alg).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        Self {
            encoding,
            alg,
            kid: kid.to_owned(),
            jwk,
        }
    }

    /// Signs `claims` under this key's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// Signs `claims` under this key's `kid`, with `typ` in the header (an ID-JAG's
    /// `oauth-id-jag+jwt`).
    pub fn sign_typed(&self, typ: &str, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some(typ.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }

    /// A fresh assertion for `client_id` at `app`'s token endpoint: valid five minutes, a new
    /// `jti` each time.
    pub fn assertion(&self, app: &TestApp, client_id: &str) -> String {
        self.sign(&claims(app, client_id))
    }
}

pub fn claims(app: &TestApp, client_id: &str) -> Value {
    let now = app.clock_now();
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": app.url("/token"),
        "iat": now,
        "exp": now + 300,
        "jti": uuid::Uuid::new_v4().to_string(),
    })
}

/// A token-endpoint (or revocation) form authenticated by `assertion`.
pub async fn post_with_assertion(
    app: &TestApp,
    path: &str,
    assertion: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    let mut all = form.to_vec();
    all.push(("client_assertion_type", JWT_BEARER));
    all.push(("client_assertion", assertion));
    app.http
        .post(app.url(path))
        .form(&all)
        .send()
        .await
        .unwrap()
}

/// The browser part for a client with the development login: returns the code.
async fn code_for(app: &TestApp, client_id: &str, redirect_uri: &str, pkce: &Pkce) -> String {
    let browser = Browser::new();
    let url = flow::authorize_url(app, client_id, redirect_uri, pkce, &[]);
    let request = flow::open_consent(&browser, &url).await;
    let done = flow::approve_and_dev_login(&browser, app, &request, "ann@example.com").await;
    let back = location(&done);
    assert!(back.starts_with(redirect_uri), "{back}");
    assert_eq!(param(&back, "iss").as_deref(), Some(app.base.as_str()));
    param(&back, "code").unwrap()
}

fn redeem_form<'a>(
    code: &'a str,
    pkce: &'a Pkce,
    redirect_uri: &'a str,
) -> [(&'a str, &'a str); 4] {
    [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("code_verifier", &pkce.verifier),
        ("redirect_uri", redirect_uri),
    ]
}

async fn assert_invalid_client(resp: reqwest::Response, assertion: &str, why: &str) {
    assert_eq!(resp.status(), 401, "{why}");
    assert!(
        resp.headers().get("www-authenticate").is_none(),
        "no Basic challenge for an assertion ({why})"
    );
    let body = resp.text().await.unwrap();
    assert!(!body.contains(assertion), "the assertion is never echoed");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "invalid_client", "{why}: {body}");
    assert!(
        body["error_description"].as_str().unwrap().contains(why),
        "{why}: {body}"
    );
}

async fn chatgpt_signs_its_token_requests(backend: Backend) {
    let (app, host) = app_with_doc_host(backend).await;
    let key = ClientKey::rsa("chatgpt-1");
    host.set_keys(&[&key.jwk]);
    let pkce = new_pkce();
    let code = code_for(&app, CHATGPT_CIMD, CHATGPT_CALLBACK, &pkce).await;
    let form = redeem_form(&code, &pkce, CHATGPT_CALLBACK);

    // Refused, each without using up the code.
    let public = flow::token_request(
        &app,
        &flow::RegisteredClient {
            id: CHATGPT_CIMD.to_owned(),
            secret: None,
            redirect_uri: CHATGPT_CALLBACK.to_owned(),
        },
        &form,
    )
    .await;
    assert_invalid_client(
        public,
        "no assertion sent",
        "must authenticate with private_key_jwt",
    )
    .await;
    let other_key = ClientKey::rsa("chatgpt-1");
    let ec_key = ClientKey::ec("chatgpt-1");
    let now = app.clock_now();
    let with = |change: Value| {
        let mut c = claims(&app, CHATGPT_CIMD);
        for (k, v) in change.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(&app, CHATGPT_CIMD),
        &EncodingKey::from_secret(key.jwk["n"].as_str().unwrap().as_bytes()),
    )
    .unwrap();
    let refused = [
        (
            other_key.assertion(&app, CHATGPT_CIMD),
            "signature does not verify",
        ),
        (
            ec_key.assertion(&app, CHATGPT_CIMD),
            "token_endpoint_auth_signing_alg",
        ),
        (hs256, "alg is not supported"),
        (key.sign(&with(json!({"aud": app.url("/revoke")}))), "aud"),
        (key.sign(&with(json!({"exp": now - 120}))), "expired"),
        (key.sign(&with(json!({"exp": now + 7200}))), "too long"),
        (
            key.sign(&with(json!({"sub": "someone-else"}))),
            "iss and sub",
        ),
        (key.sign(&with(json!({"jti": null}))), "jti"),
    ];
    for (assertion, why) in refused {
        let resp = post_with_assertion(&app, "/token", &assertion, &form).await;
        assert_invalid_client(resp, &assertion, why).await;
    }

    let first = key.assertion(&app, CHATGPT_CIMD);
    let resp = post_with_assertion(&app, "/token", &first, &form).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let tokens: Value = resp.json().await.unwrap();
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
    assert_eq!(claims.client_id, CHATGPT_CIMD);
    let rt = tokens["refresh_token"].as_str().unwrap();
    let refresh = [("grant_type", "refresh_token"), ("refresh_token", rt)];

    // The same assertion again: single use.
    let again = post_with_assertion(&app, "/token", &first, &refresh).await;
    assert_invalid_client(again, &first, "already used").await;
    // The issuer is an accepted audience too.
    let to_issuer = key.sign(&with(json!({"aud": app.base})));
    let refreshed = post_with_assertion(&app, "/token", &to_issuer, &refresh).await;
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.unwrap();
    let rt2 = refreshed["refresh_token"].as_str().unwrap();

    // Revocation authenticates the same way; the grant is then gone.
    let revoke = post_with_assertion(
        &app,
        "/revoke",
        &key.assertion(&app, CHATGPT_CIMD),
        &[("token", rt2)],
    )
    .await;
    assert_eq!(revoke.status(), 200);
    let dead = post_with_assertion(
        &app,
        "/token",
        &key.assertion(&app, CHATGPT_CIMD),
        &[("grant_type", "refresh_token"), ("refresh_token", rt2)],
    )
    .await;
    assert_eq!(dead.status(), 400);
    assert_eq!(
        dead.json::<Value>().await.unwrap()["error"],
        "invalid_grant"
    );
    assert_eq!(
        host.jwks_hits.load(Ordering::SeqCst),
        1,
        "the key set is cached"
    );
}

async fn a_used_assertion_is_refused_by_every_instance(backend: Backend) {
    let (app, host) = app_with_doc_host(backend).await;
    let key = ClientKey::rsa("k1");
    host.set_keys(&[&key.jwk]);
    let other = app.another_instance(|_| {}).await;
    let pkce = new_pkce();
    let code = code_for(&app, CHATGPT_CIMD, CHATGPT_CALLBACK, &pkce).await;
    let assertion = key.assertion(&app, CHATGPT_CIMD);
    let form = redeem_form(&code, &pkce, CHATGPT_CALLBACK);
    let resp = post_with_assertion(&app, "/token", &assertion, &form).await;
    assert_eq!(resp.status(), 200);
    let tokens: Value = resp.json().await.unwrap();
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
    ];
    let replayed = post_with_assertion(&other, "/token", &assertion, &refresh).await;
    assert_invalid_client(replayed, &assertion, "already used").await;
    let fresh = post_with_assertion(
        &other,
        "/token",
        &key.assertion(&app, CHATGPT_CIMD),
        &refresh,
    )
    .await;
    assert_eq!(
        fresh.status(),
        200,
        "the other instance verifies fresh ones"
    );
}

async fn rotated_keys_are_fetched_again_but_not_in_a_loop(backend: Backend) {
    let (app, host) = app_with_doc_host(backend).await;
    let old = ClientKey::rsa("2026-11");
    host.set_keys(&[&old.jwk]);
    let pkce = new_pkce();
    let code = code_for(&app, CHATGPT_CIMD, CHATGPT_CALLBACK, &pkce).await;
    let form = redeem_form(&code, &pkce, CHATGPT_CALLBACK);
    let resp = post_with_assertion(&app, "/token", &old.assertion(&app, CHATGPT_CIMD), &form).await;
    assert_eq!(resp.status(), 200);
    let tokens: Value = resp.json().await.unwrap();
    assert_eq!(host.jwks_hits.load(Ordering::SeqCst), 1);

    // ChatGPT rotates: the cached set (max-age 3600) lacks the new kid.
    let new = ClientKey::rsa("2026-12");
    host.set_keys(&[&new.jwk]);
    let refresh = [
        ("grant_type", "refresh_token"),
        ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
    ];
    let soon = new.assertion(&app, CHATGPT_CIMD);
    let resp = post_with_assertion(&app, "/token", &soon, &refresh).await;
    assert_invalid_client(resp, &soon, "kid").await;
    assert_eq!(
        host.jwks_hits.load(Ordering::SeqCst),
        1,
        "fetched moments ago: an unknown kid does not fetch again yet"
    );
    app.clock.advance(31);
    let resp =
        post_with_assertion(&app, "/token", &new.assertion(&app, CHATGPT_CIMD), &refresh).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        host.jwks_hits.load(Ordering::SeqCst),
        2,
        "fetched again once"
    );
}

async fn registered_clients_may_use_private_key_jwt(backend: Backend) {
    let (app, host) = app_with_doc_host(backend).await;
    let cb = "https://agent.example/callback";
    let key = ClientKey::ec("agent-1");
    // Keys inline.
    let reg = app
        .register(json!({"redirect_uris":[cb],"token_endpoint_auth_method":"private_key_jwt","token_endpoint_auth_signing_alg":"ES256","grant_types":["authorization_code","refresh_token"],"client_name":"Agent","jwks":{"keys":[key.jwk.clone()]}}))
        .await;
    assert_eq!(reg.status(), 201);
    let reg: Value = reg.json().await.unwrap();
    assert!(reg.get("client_secret").is_none(), "no secret to hand out");
    assert_eq!(reg["token_endpoint_auth_method"], "private_key_jwt");
    assert_eq!(reg["jwks"]["keys"][0]["kid"], "agent-1");
    let id = reg["client_id"].as_str().unwrap().to_owned();
    let pkce = new_pkce();
    let code = code_for(&app, &id, cb, &pkce).await;
    let resp = post_with_assertion(
        &app,
        "/token",
        &key.assertion(&app, &id),
        &redeem_form(&code, &pkce, cb),
    )
    .await;
    assert_eq!(resp.status(), 200);

    // Keys behind a jwks_uri, fetched through the same guard as metadata documents.
    let app2 = &app;
    let rsa = ClientKey::rsa("agent-2");
    host.set_keys(&[&rsa.jwk]);
    let reg: Value = app2
        .register(json!({"redirect_uris":[cb],"token_endpoint_auth_method":"private_key_jwt","jwks_uri":"https://docs.example/jwks.json"}))
        .await
        .json()
        .await
        .unwrap();
    let id = reg["client_id"].as_str().unwrap().to_owned();
    let pkce = new_pkce();
    let code = code_for(app2, &id, cb, &pkce).await;
    let resp = post_with_assertion(
        app2,
        "/token",
        &rsa.assertion(app2, &id),
        &redeem_form(&code, &pkce, cb),
    )
    .await;
    assert_eq!(resp.status(), 200);

    // A jwks_uri on a private address is never fetched.
    let reg: Value = app2
        .register(json!({"redirect_uris":[cb],"token_endpoint_auth_method":"private_key_jwt","jwks_uri":"https://10.0.0.1/jwks.json"}))
        .await
        .json()
        .await
        .unwrap();
    let id = reg["client_id"].as_str().unwrap().to_owned();
    let assertion = rsa.assertion(app2, &id);
    let resp = post_with_assertion(
        app2,
        "/token",
        &assertion,
        &[("grant_type", "refresh_token"), ("refresh_token", "x")],
    )
    .await;
    assert_invalid_client(resp, &assertion, "its host is a special-use address").await;

    // Without keys, private_key_jwt cannot be registered.
    let resp = app2
        .register(json!({"redirect_uris":[cb],"token_endpoint_auth_method":"private_key_jwt"}))
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_client_metadata"
    );
}

async fn malformed_assertion_requests_are_refused_before_anything(backend: Backend) {
    let (app, _host) = app_with_doc_host(backend).await;
    let key = ClientKey::rsa("k1");
    let assertion = key.assertion(&app, CHATGPT_CIMD);
    let form = [("grant_type", "refresh_token"), ("refresh_token", "x")];
    // Two methods at once, or half of one: 400 invalid_request.
    let both = app
        .http
        .post(app.url("/token"))
        .basic_auth(CHATGPT_CIMD, Some("guess"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", &assertion),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(both.status(), 400);
    let half = app
        .http
        .post(app.url("/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", "x"),
            ("client_assertion", assertion.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(half.status(), 400);
    // Another assertion type, or not a JWT: 401 invalid_client.
    let mut saml = form.to_vec();
    saml.push((
        "client_assertion_type",
        "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
    ));
    saml.push(("client_assertion", &assertion));
    let resp = app
        .http
        .post(app.url("/token"))
        .form(&saml)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = post_with_assertion(&app, "/token", "not-a-jwt", &form).await;
    assert_invalid_client(resp, "not-a-jwt", "not a valid JWT").await;
}

both_backends!(
    chatgpt_signs_its_token_requests,
    a_used_assertion_is_refused_by_every_instance,
    rotated_keys_are_fetched_again_but_not_in_a_loop,
    registered_clients_may_use_private_key_jwt,
    malformed_assertion_requests_are_refused_before_anything,
);
