use serde_json::Value;

use crate::both_backends;
use crate::helpers::{Backend, spawn_app, spawn_app_with};

async fn as_metadata_is_complete(backend: Backend) {
    let app = spawn_app(backend).await;
    let resp = app
        .http
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let m: Value = resp.json().await.unwrap();
    assert_eq!(m["issuer"], app.base);
    assert_eq!(m["registration_endpoint"], app.url("/register"));
    assert_eq!(m["authorization_endpoint"], app.url("/authorize"));
    assert_eq!(m["token_endpoint"], app.url("/token"));
    assert_eq!(m["revocation_endpoint"], app.url("/revoke"));
    assert_eq!(m["jwks_uri"], app.url("/jwks.json"));
    assert_eq!(m["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        m["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    let methods = serde_json::json!([
        "none",
        "client_secret_post",
        "client_secret_basic",
        "private_key_jwt"
    ]);
    assert_eq!(m["token_endpoint_auth_methods_supported"], methods);
    assert_eq!(m["revocation_endpoint_auth_methods_supported"], methods);
    // Asymmetric algorithms only: never HS256 or none for a client's assertion.
    let algs = serde_json::json!([
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"
    ]);
    assert_eq!(m["token_endpoint_auth_signing_alg_values_supported"], algs);
    assert_eq!(
        m["revocation_endpoint_auth_signing_alg_values_supported"],
        algs
    );
    assert_eq!(m["client_id_metadata_document_supported"], true);
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    assert_eq!(
        m["scopes_supported"],
        serde_json::json!(["email", "mcp", "openid"]),
        "the resource's scope and OpenID Connect's"
    );
    let grants = m["grant_types_supported"].as_array().unwrap();
    assert!(grants.contains(&"authorization_code".into()));
    assert!(!m.as_object().unwrap().values().any(Value::is_null));
}

async fn resource_metadata_at_both_locations(backend: Backend) {
    let app = spawn_app(backend).await;
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let prm: Value = resp.json().await.unwrap();
        assert_eq!(prm["resource"], app.url("/mcp"));
        assert_eq!(prm["authorization_servers"], serde_json::json!([app.base]));
        assert!(
            !prm["scopes_supported"]
                .as_array()
                .unwrap()
                .contains(&"offline_access".into())
        );
    }
}

async fn issuer_is_the_configured_public_url_not_the_host_header(backend: Backend) {
    let app = spawn_app_with(backend, |raw| {
        raw.set("AUTHGATE_PUBLIC_URL", "https://mcp.example.com/");
        crate::helpers::stub_upstream(raw);
    })
    .await;
    let m: Value = app
        .http
        .get(app.url("/.well-known/oauth-authorization-server"))
        .header("Host", "evil.example")
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Proto", "http")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["issuer"], "https://mcp.example.com");
    assert_eq!(
        m["registration_endpoint"],
        "https://mcp.example.com/register"
    );
    let prm: Value = app
        .http
        .get(app.url("/.well-known/oauth-protected-resource/mcp"))
        .header("X-Forwarded-Host", "evil.example")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        prm["authorization_servers"][0], m["issuer"],
        "byte-identical issuer"
    );
    assert_eq!(prm["resource"], "https://mcp.example.com/mcp");
}

async fn issuer_with_a_path_gets_path_inserted_documents(backend: Backend) {
    let app = spawn_app_with(backend, |raw| {
        raw.set("AUTHGATE_PUBLIC_URL", "https://example.com/gate");
        crate::helpers::stub_upstream(raw);
    })
    .await;
    for path in [
        "/.well-known/oauth-authorization-server/gate",
        "/.well-known/oauth-authorization-server",
    ] {
        let resp = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let m: Value = resp.json().await.unwrap();
        assert_eq!(m["issuer"], "https://example.com/gate");
    }
    let resp = app
        .http
        .get(app.url("/.well-known/oauth-protected-resource/gate/mcp"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let prm: Value = resp.json().await.unwrap();
    assert_eq!(prm["resource"], "https://example.com/gate/mcp");
}

async fn cors_on_discovery_and_register(backend: Backend) {
    let app = spawn_app(backend).await;
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/oauth-protected-resource/mcp",
        "/register",
        "/token",
        "/revoke",
        "/jwks.json",
    ] {
        let pre = app
            .http
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("Origin", "http://localhost:6274")
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "content-type, mcp-protocol-version",
            )
            .send()
            .await
            .unwrap();
        assert!(pre.status().is_success(), "{path}: {}", pre.status());
        assert_eq!(pre.headers()["access-control-allow-origin"], "*");
        assert!(
            pre.headers()
                .get("access-control-allow-credentials")
                .is_none()
        );
        let allowed = pre.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(allowed.contains("mcp-protocol-version") && allowed.contains("authorization"));
    }
    let resp = app
        .http
        .get(app.url("/.well-known/oauth-authorization-server"))
        .header("Origin", "http://localhost:6274")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert!(
        resp.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("www-authenticate")
    );
}

async fn no_cors_on_authorize(backend: Backend) {
    let app = spawn_app(backend).await;
    let pre = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/authorize"))
        .header("Origin", "http://localhost:6274")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert!(pre.headers().get("access-control-allow-origin").is_none());
    let get = app
        .http
        .get(app.url("/authorize?client_id=x"))
        .header("Origin", "http://localhost:6274")
        .send()
        .await
        .unwrap();
    assert!(get.headers().get("access-control-allow-origin").is_none());
}

async fn jwks_publishes_the_signing_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let jwks: Value = app
        .http
        .get(app.url("/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["crv"], "P-256");
    assert_eq!(keys[0]["alg"], "ES256");
    assert!(keys[0]["kid"].is_string());
    assert!(keys[0].get("d").is_none(), "no private part");
}

both_backends!(
    no_cors_on_authorize,
    jwks_publishes_the_signing_key,
    as_metadata_is_complete,
    resource_metadata_at_both_locations,
    issuer_is_the_configured_public_url_not_the_host_header,
    issuer_with_a_path_gets_path_inserted_documents,
    cors_on_discovery_and_register,
);
