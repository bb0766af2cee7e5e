//! `POST /register` against the real app: what real clients send, and every rejection.

use serde_json::{Value, json};

use crate::both_backends;
use crate::helpers::{
    Backend, CLAUDE_DCR_BODY, INSPECTOR_DCR_BODY, MCP_REMOTE_DCR_BODY, TestApp, spawn_app,
    spawn_app_with,
};

async fn post_raw(
    app: &TestApp,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.http
        .post(app.url("/register"))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

fn assert_no_nulls(v: &Value) {
    for (k, val) in v.as_object().unwrap() {
        assert!(!val.is_null(), "{k} is null");
    }
}

async fn claude_registers_with_a_secret(backend: Backend) {
    let app = spawn_app(backend).await;
    let resp = post_raw(&app, "application/json", CLAUDE_DCR_BODY).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let body: Value = resp.json().await.unwrap();
    assert_no_nulls(&body);
    let id = body["client_id"].as_str().unwrap();
    assert!(!id.starts_with("https://"));
    assert!(body["client_id_issued_at"].is_i64());
    let secret = body["client_secret"].as_str().unwrap();
    assert!(secret.len() >= 43);
    assert_eq!(body["client_secret_expires_at"], json!(0));
    assert_eq!(body["token_endpoint_auth_method"], "client_secret_post");
    assert_eq!(
        body["redirect_uris"],
        json!(["https://claude.ai/api/mcp/auth_callback"])
    );
    assert_eq!(
        body["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    assert_eq!(body["response_types"], json!(["code"]));
    assert_eq!(body["client_name"], "Claude");

    let stored = app.store.get_client(id).await.unwrap().unwrap();
    let hash = stored.secret_hash.unwrap();
    assert_ne!(hash.as_str(), secret, "the secret is stored hashed");
    assert!(!hash.as_str().contains(secret));
    assert!(hash.verify(secret));
}

async fn inspector_registers_as_a_public_client(backend: Backend) {
    let app = spawn_app(backend).await;
    let resp = post_raw(&app, "application/json", INSPECTOR_DCR_BODY).await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_no_nulls(&body);
    assert_eq!(body["token_endpoint_auth_method"], "none");
    assert!(
        body.get("client_secret").is_none(),
        "no secret for a public client"
    );
    assert!(body.get("client_secret_expires_at").is_none());
    assert_eq!(body["scope"], "");
    assert_eq!(
        body["client_uri"],
        "https://github.com/modelcontextprotocol/inspector"
    );
    assert_eq!(body["redirect_uris"].as_array().unwrap().len(), 2);
    let stored = app
        .store
        .get_client(body["client_id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(stored.secret_hash.is_none());
}

async fn mcp_remote_body_is_echoed(backend: Backend) {
    let app = spawn_app(backend).await;
    let resp = post_raw(&app, "application/json; charset=utf-8", MCP_REMOTE_DCR_BODY).await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["software_id"], "2e6dc280-f3c3-4e01-99a7-8181dbd1d23d");
    assert_eq!(body["software_version"], "0.1.38");
    assert_eq!(body["scope"], "mcp");
}

async fn omitted_auth_method_means_client_secret_basic(backend: Backend) {
    let app = spawn_app(backend).await;
    let resp = app
        .register(json!({"redirect_uris":["https://app.example/cb"],"x_unknown":{"a":1},"application_type":"web"}))
        .await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_endpoint_auth_method"], "client_secret_basic");
    assert!(body["client_secret"].is_string());
    assert!(body["client_secret_expires_at"].is_i64());
    assert!(body.get("x_unknown").is_none());
}

async fn native_apps_may_use_custom_schemes(backend: Backend) {
    let app = spawn_app(backend).await;
    let ok = app
        .register(json!({"redirect_uris":["claude://claude.ai/mcp-auth-callback/sdk"],"application_type":"native","token_endpoint_auth_method":"none"}))
        .await;
    assert_eq!(ok.status(), 201);
    let web = app
        .register(json!({"redirect_uris":["myapp://claude.ai/mcp-auth-callback/sdk"],"token_endpoint_auth_method":"none"}))
        .await;
    assert_eq!(web.status(), 400);
    // Listed private-use schemes (AUTHGATE_ALLOWED_REDIRECT_SCHEMES) need no application_type.
    let listed = app
        .register(json!({"redirect_uris":["claude://claude.ai/mcp-auth-callback/sdk"],"token_endpoint_auth_method":"none"}))
        .await;
    assert_eq!(listed.status(), 201);
}

async fn bad_metadata_is_rejected_without_side_effects(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        (
            json!({"token_endpoint_auth_method":"none"}),
            "invalid_redirect_uri",
        ),
        (json!({"redirect_uris":[]}), "invalid_redirect_uri"),
        (
            json!({"redirect_uris":["http://app.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris":["https://app.example/cb#x"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris":["https://*.app.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris":["https://user:pw@app.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris":["javascript:alert(1)"],"application_type":"native"}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris":["data:text/html,x"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris":["file:///etc/passwd"],"application_type":"native"}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris":["myapp:/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris":["https://app.example/cb"],"token_endpoint_auth_method":"private_key_jwt"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris":["https://app.example/cb"],"response_types":["token"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris":["https://app.example/cb"],"grant_types":["client_credentials"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris":["https://app.example/cb"],"client_name":["x"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris":["https://app.example/cb"],"logo_uri":"javascript:x"}),
            "invalid_client_metadata",
        ),
        (json!(["not", "an", "object"]), "invalid_client_metadata"),
    ];
    for (body, code) in cases {
        let resp = app.register(body.clone()).await;
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"], code, "{body}");
        assert!(
            err["error_description"].as_str().unwrap().len() > 10,
            "{body}"
        );
    }
    for (ct, body) in [
        ("application/json", "{not json"),
        (
            "application/x-www-form-urlencoded",
            "redirect_uris=https://app.example/cb",
        ),
        (
            "text/plain",
            r#"{"redirect_uris":["https://app.example/cb"]}"#,
        ),
    ] {
        let resp = post_raw(&app, ct, body).await;
        assert_eq!(resp.status(), 400, "{ct} {body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"], "invalid_client_metadata");
    }
    assert_eq!(
        app.store.list_clients().await.unwrap().len(),
        0,
        "nothing was stored"
    );
}

async fn oversized_body_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let big = json!({"redirect_uris":["https://app.example/cb"],"client_name":"x","padding":"y".repeat(20_000)});
    let resp = app.register(big).await;
    assert_eq!(resp.status(), 413);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"], "invalid_client_metadata");
    assert_eq!(app.store.list_clients().await.unwrap().len(), 0);
}

async fn registration_is_rate_limited_per_address(backend: Backend) {
    let app = spawn_app_with(backend, |raw| {
        raw.set("AUTHGATE_REGISTER_RATE_LIMIT", "3/min")
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            post_raw(&app, "application/json", CLAUDE_DCR_BODY)
                .await
                .status(),
            201
        );
    }
    let limited = post_raw(&app, "application/json", CLAUDE_DCR_BODY).await;
    assert_eq!(limited.status(), 429);
    assert!(
        limited.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(app.store.list_clients().await.unwrap().len(), 3);
    app.clock.advance(20);
    assert_eq!(
        post_raw(&app, "application/json", CLAUDE_DCR_BODY)
            .await
            .status(),
        201
    );
}

async fn default_rate_limit_admits_a_burst_from_shared_egress(backend: Backend) {
    // Claude.ai registers from a shared egress range, about twice per connection: a burst of
    // 100 registrations from one address must pass with the default limit.
    let app = spawn_app(backend).await;
    for i in 0..100 {
        assert_eq!(
            post_raw(&app, "application/json", CLAUDE_DCR_BODY)
                .await
                .status(),
            201,
            "#{i}"
        );
    }
}

async fn operators_can_restrict_redirect_uris(backend: Backend) {
    let app = spawn_app_with(backend, |raw| {
        raw.set(
            "AUTHGATE_ALLOWED_REDIRECTS",
            "https://claude.ai/api/mcp/auth_callback, http://localhost:*/callback",
        )
    })
    .await;
    assert_eq!(
        post_raw(&app, "application/json", CLAUDE_DCR_BODY)
            .await
            .status(),
        201
    );
    let ok = app.register(json!({"redirect_uris":["http://localhost:4321/callback"],"token_endpoint_auth_method":"none"})).await;
    assert_eq!(ok.status(), 201);
    let refused = app
        .register(json!({"redirect_uris":["https://evil.example/cb"]}))
        .await;
    assert_eq!(refused.status(), 400);
    let err: Value = refused.json().await.unwrap();
    assert_eq!(err["error"], "invalid_redirect_uri");
}

async fn idle_registrations_are_removed(backend: Backend) {
    let app = spawn_app_with(backend, |raw| raw.set("AUTHGATE_DCR_IDLE_TTL", "1h")).await;
    let idle: Value = app
        .register(serde_json::from_str(CLAUDE_DCR_BODY).unwrap())
        .await
        .json()
        .await
        .unwrap();
    let used: Value = app
        .register(serde_json::from_str(CLAUDE_DCR_BODY).unwrap())
        .await
        .json()
        .await
        .unwrap();
    let used_id = used["client_id"].as_str().unwrap();
    app.store
        .touch_client(used_id, app.clock_now())
        .await
        .unwrap();
    app.clock.advance(1800);
    assert_eq!(
        authgate::startup::remove_idle_clients(&app.state)
            .await
            .unwrap(),
        0
    );
    app.clock.advance(1801);
    assert_eq!(
        authgate::startup::remove_idle_clients(&app.state)
            .await
            .unwrap(),
        1
    );
    assert!(
        app.store
            .get_client(idle["client_id"].as_str().unwrap())
            .await
            .unwrap()
            .is_none()
    );
    assert!(app.store.get_client(used_id).await.unwrap().is_some());
}

both_backends!(
    claude_registers_with_a_secret,
    inspector_registers_as_a_public_client,
    mcp_remote_body_is_echoed,
    omitted_auth_method_means_client_secret_basic,
    native_apps_may_use_custom_schemes,
    bad_metadata_is_rejected_without_side_effects,
    oversized_body_is_refused,
    registration_is_rate_limited_per_address,
    default_rate_limit_admits_a_burst_from_shared_egress,
    operators_can_restrict_redirect_uris,
    idle_registrations_are_removed,
);
