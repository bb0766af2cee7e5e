//! Production operation: several instances on one PostgreSQL database behind one public URL
//! (a flow that hops between them, refresh races split across them, key rotation seen by the
//! other), health and readiness, request ids, the metrics listener, and trusted proxies for the
//! registration rate limit.
//!
//! Also home of [`Remote`], the authorization flow driven over plain HTTP against an authgate
//! reached at one address while its public URL is another (a load balancer's), used here and by
//! `process.rs` against the real binary.

use std::sync::Arc;
use std::time::Duration;

use authgate::clock::{Clock, MockClock};
use authgate::config::{RawConfig, Settings};
use authgate::random::SystemRandom;
use authgate::startup::Application;
use authgate::state::AppState;
use base64::Engine as _;
use serde_json::Value;

use crate::both_backends;
use crate::browser::Browser;
use crate::flow::{self, new_pkce};
use crate::helpers::{Backend, CLAUDE_DCR_BODY, Server, T0, open_store, spawn_app_with};

pub const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"test","version":"1"}}}"#;

/// An authgate reached at `base`, whose public URL (issuer, origin of its pages) is `public`.
pub struct Remote {
    pub base: String,
    pub public: String,
    pub http: reqwest::Client,
}

impl Remote {
    pub fn new(base: impl Into<String>, public: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            public: public.into(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }
}

impl Server for Remote {
    fn base(&self) -> &str {
        &self.base
    }

    fn public(&self) -> &str {
        &self.public
    }

    fn client(&self) -> &reqwest::Client {
        &self.http
    }
}

/// The `kid` of a JWT's header.
pub fn kid_of(jwt: &str) -> String {
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---- several instances on one PostgreSQL database ----

/// One authgate instance in this process, on its own port and its own connection pool.
struct Instance {
    remote: Remote,
    state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Two instances on one PostgreSQL schema, behind one public URL (a load balancer's, on a port
/// kept bound here so nothing else takes it), sharing one clock.
struct Cluster {
    a: Instance,
    b: Instance,
    clock: MockClock,
    _public_port: std::net::TcpListener,
}

async fn start_instance(schema: &str, public: &str, clock: &MockClock) -> Instance {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut raw = RawConfig::default();
    raw.set("AUTHGATE_LISTEN", addr.to_string());
    raw.set("AUTHGATE_PUBLIC_URL", public.to_owned());
    let settings = Settings::from_raw(&raw).unwrap();
    let store = open_store(Backend::Postgres, schema).await;
    let app = Application::build(
        settings,
        listener,
        store,
        Arc::new(clock.clone()),
        Arc::new(SystemRandom),
    )
    .await
    .unwrap();
    let state = app.state();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    Instance {
        remote: Remote::new(format!("http://{addr}"), public),
        state,
        shutdown: Some(tx),
    }
}

async fn start_cluster() -> Cluster {
    let public_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let public = format!("http://{}", public_port.local_addr().unwrap());
    let schema = format!("t{}", uuid::Uuid::new_v4().simple());
    let clock = MockClock::new(T0);
    // One after the other, as a rolling deployment would: the first creates the signing key.
    let a = start_instance(&schema, &public, &clock).await;
    let b = start_instance(&schema, &public, &clock).await;
    assert_ne!(a.remote.base, b.remote.base);
    Cluster {
        a,
        b,
        clock,
        _public_port: public_port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_started_on_one_instance_finishes_on_the_other() {
    let c = start_cluster().await;
    let (a, b) = (&c.a.remote, &c.b.remote);
    let meta_a: Value = a
        .http
        .get(a.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let meta_b: Value = b
        .http
        .get(b.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        meta_a, meta_b,
        "every instance advertises the same documents"
    );
    assert_eq!(meta_a["issuer"], a.public.as_str());

    let client = flow::register_claude(&a).await;
    let browser = Browser::new();
    let pkce = new_pkce();
    let request = flow::consent_for(&a, &browser, &client, &pkce).await;
    // The load balancer sends the rest of the flow to the other instance.
    let code = flow::approve_and_login(&b, &browser, &client, &request).await;
    let resp = flow::redeem(&b, &client, &code, &pkce).await;
    assert_eq!(resp.status(), 200);
    let grant: Value = resp.json().await.unwrap();
    let at = grant["access_token"].as_str().unwrap();
    assert_eq!(
        flow::mcp_post(&a, Some(at), INIT).await.status(),
        200,
        "accepted by A"
    );
    assert_eq!(
        flow::mcp_post(&b, Some(at), INIT).await.status(),
        200,
        "accepted by B"
    );
    let refreshed = flow::refresh(&a, &client, grant["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status(), 200, "B's refresh token works on A");

    // The other way round, with a code redeemed on the instance that did not issue it.
    let browser = Browser::new();
    let pkce = new_pkce();
    let request = flow::consent_for(&b, &browser, &client, &pkce).await;
    let code = flow::approve_and_login(&a, &browser, &client, &request).await;
    assert_eq!(flow::redeem(&b, &client, &code, &pkce).await.status(), 200);
    assert_eq!(
        flow::redeem(&a, &client, &code, &pkce).await.status(),
        400,
        "the code is single-use across instances"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_races_across_instances_share_one_successor_and_reuse_revokes_everywhere() {
    let c = start_cluster().await;
    let (a, b) = (&c.a.remote, &c.b.remote);
    let client = Arc::new(flow::register_claude(&a).await);
    let grant = flow::full_grant(&a, &client).await;
    let rt0 = grant["refresh_token"].as_str().unwrap().to_owned();
    let at0 = grant["access_token"].as_str().unwrap().to_owned();
    assert_eq!(flow::mcp_post(&b, Some(&at0), INIT).await.status(), 200);

    let remotes = [
        Arc::new(Remote::new(a.base.clone(), a.public.clone())),
        Arc::new(Remote::new(b.base.clone(), b.public.clone())),
    ];
    let mut tasks = Vec::new();
    for i in 0..12 {
        let (remote, client, rt0) = (remotes[i % 2].clone(), client.clone(), rt0.clone());
        tasks.push(tokio::spawn(async move {
            let resp = flow::refresh(&remote, &client, &rt0).await;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            (remote.base.clone(), status, body)
        }));
    }
    let mut successors = std::collections::BTreeSet::new();
    for t in tasks {
        let (base, status, body) = t.await.unwrap();
        assert_eq!(status, 200, "refresh at {base}: {body}");
        successors.insert(body["refresh_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        successors.len(),
        1,
        "one successor for all, whichever instance answered: {successors:?}"
    );
    let rt1 = successors.into_iter().next().unwrap();
    assert_ne!(rt1, rt0);

    c.clock.advance(10);
    let replay = flow::refresh(&b, &client, &rt0).await;
    assert_eq!(replay.status(), 200, "inside the grace window");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["refresh_token"], rt1.as_str());

    c.clock.advance(25);
    let reuse = flow::refresh(&a, &client, &rt0).await;
    assert_eq!(reuse.status(), 400, "after the grace window: reuse");
    let reuse: Value = reuse.json().await.unwrap();
    assert_eq!(reuse["error"], "invalid_grant");
    for (name, r) in [("A", a), ("B", b)] {
        let resp = flow::refresh(&r, &client, &rt1).await;
        assert_eq!(
            resp.status(),
            400,
            "the successor is revoked on {name} as well"
        );
    }
    c.clock.advance(authgate::startup::REVOCATION_CACHE_SECONDS);
    assert_eq!(
        flow::mcp_post(&b, Some(&at0), INIT).await.status(),
        401,
        "B's guard refuses the revoked grant's access token once its cache expires"
    );
    assert_eq!(flow::mcp_post(&a, Some(&at0), INIT).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_on_one_instance_is_accepted_and_published_by_the_other() {
    let c = start_cluster().await;
    let (a, b) = (&c.a.remote, &c.b.remote);
    let client = flow::register_claude(&a).await;
    let grant = flow::full_grant(&a, &client).await;
    let old_at = grant["access_token"].as_str().unwrap().to_owned();
    let old_kid = kid_of(&old_at);
    assert_eq!(
        c.b.state.keys.signing_kid(c.clock.now()).as_deref(),
        Some(old_kid.as_str())
    );

    // No publication delay: A signs with the new key before B has read it (from the next
    // second, as it must activate after the first key).
    let new_kid =
        c.a.state
            .keys
            .rotate(c.clock.now(), 0, &SystemRandom)
            .await
            .unwrap()
            .kid;
    c.clock.advance(1);
    assert_ne!(new_kid, old_kid);
    let jwks_b: Value = b
        .http
        .get(b.url("/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !jwks_b.to_string().contains(&new_kid),
        "B has not read the new key yet (so the guard's reload is what is tested)"
    );

    let refreshed = flow::refresh(&a, &client, grant["refresh_token"].as_str().unwrap()).await;
    assert_eq!(refreshed.status(), 200);
    let refreshed: Value = refreshed.json().await.unwrap();
    let new_at = refreshed["access_token"].as_str().unwrap().to_owned();
    assert_eq!(kid_of(&new_at), new_kid, "A signs with the new key");

    // The guard reloads on an unknown kid at most every few seconds.
    c.clock.advance(6);
    let resp = flow::mcp_post(&b, Some(&new_at), INIT).await;
    assert_eq!(
        resp.status(),
        200,
        "B's guard accepts a token signed with a key it had not loaded: {:?}",
        resp.headers().get("www-authenticate")
    );
    assert_eq!(
        flow::mcp_post(&b, Some(&old_at), INIT).await.status(),
        200,
        "the retired key still verifies its tokens"
    );
    c.b.state.keys.reload(c.clock.now()).await.unwrap();
    let jwks_b: Value = b
        .http
        .get(b.url("/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks_b["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(kids.contains(&new_kid.as_str()), "{kids:?}");
    assert!(
        kids.contains(&old_kid.as_str()),
        "the retired key stays published: {kids:?}"
    );
    assert_eq!(
        c.b.state.keys.signing_kid(c.clock.now()).as_deref(),
        Some(new_kid.as_str()),
        "B signs with the new key too"
    );
    let from_b = flow::refresh(&b, &client, refreshed["refresh_token"].as_str().unwrap()).await;
    assert_eq!(from_b.status(), 200);
    let from_b: Value = from_b.json().await.unwrap();
    assert_eq!(kid_of(from_b["access_token"].as_str().unwrap()), new_kid);
}

// ---- health, readiness, request ids, metrics ----

async fn health_readiness_and_request_ids(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready, serde_json::json!({"database": true, "keys": true}));

    let mut ids = std::collections::BTreeSet::new();
    let requests = [
        ("GET", "/healthz", None),
        ("GET", "/readyz", None),
        ("GET", "/.well-known/oauth-authorization-server", None),
        ("GET", "/jwks.json", None),
        ("POST", "/register", Some(CLAUDE_DCR_BODY)),
        ("POST", "/register", Some("{")),
        ("POST", "/token", Some("")),
        ("GET", "/authorize", None),
        ("POST", "/mcp", Some(INIT)),
        ("GET", "/no-such-page", None),
    ];
    for (method, path, body) in requests {
        let mut req = app.http.request(method.parse().unwrap(), app.url(path));
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        let resp = req.send().await.unwrap();
        let id = resp
            .headers()
            .get("x-request-id")
            .unwrap_or_else(|| panic!("{method} {path} ({}) has no x-request-id", resp.status()))
            .to_str()
            .unwrap()
            .to_owned();
        assert!(!id.is_empty(), "{method} {path}");
        assert!(
            ids.insert(id.clone()),
            "{method} {path}: {id} was already used"
        );
    }
}

async fn metrics_listener_serves_prometheus_text_without_secrets(backend: Backend) {
    // As main does before serving when a metrics address is set: the recorder must exist
    // before the first event is counted.
    let _ = authgate::telemetry::metrics();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let addr = metrics_addr.clone();
    let app = spawn_app_with(backend, move |raw| {
        raw.set("AUTHGATE_METRICS_LISTEN", addr);
    })
    .await;
    let remote = Remote::new(app.base.clone(), app.base.clone());
    let client = flow::register_claude(&remote).await;
    let grant = flow::full_grant(&remote, &client).await;
    let refreshed: Value =
        flow::refresh(&remote, &client, grant["refresh_token"].as_str().unwrap())
            .await
            .json()
            .await
            .unwrap();
    assert_eq!(flow::mcp_post(&remote, None, INIT).await.status(), 401);
    assert_eq!(
        flow::mcp_post(&remote, grant["access_token"].as_str(), INIT)
            .await
            .status(),
        200
    );

    let metrics_url = format!("http://{metrics_addr}/metrics");
    let mut text = String::new();
    for _ in 0..50 {
        match app.http.get(&metrics_url).send().await {
            Ok(resp) if resp.status() == 200 => {
                text = resp.text().await.unwrap();
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert!(!text.is_empty(), "nothing answered at {metrics_url}");
    assert!(
        text.contains("# TYPE authgate_registrations_total counter"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("authgate_registrations_total{") && l.contains("created")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("authgate_guard_rejections_total{") && l.contains("no_token")),
        "{text}"
    );
    let secrets = [
        client.secret.as_deref().unwrap(),
        grant["access_token"].as_str().unwrap(),
        grant["refresh_token"].as_str().unwrap(),
        refreshed["access_token"].as_str().unwrap(),
        refreshed["refresh_token"].as_str().unwrap(),
    ];
    for s in secrets {
        assert!(!text.contains(s), "a secret appears in the metrics");
    }
    for word in ["postgres://", "sqlite:", "password", "Bearer", "eyJ"] {
        assert!(!text.contains(word), "{word:?} appears in the metrics");
    }
    let public = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404, "no metrics on the public listener");
}

// ---- trusted proxies and the registration rate limit ----

async fn register_from(app: &crate::helpers::TestApp, forwarded_for: Option<&str>) -> u16 {
    let mut req = app
        .http
        .post(app.url("/register"))
        .header("Content-Type", "application/json")
        .body(CLAUDE_DCR_BODY);
    if let Some(f) = forwarded_for {
        req = req.header("X-Forwarded-For", f);
    }
    req.send().await.unwrap().status().as_u16()
}

async fn rate_limit_keys_on_forwarded_for_only_behind_a_trusted_proxy(backend: Backend) {
    let behind_proxy = spawn_app_with(backend, |raw| {
        raw.set("AUTHGATE_TRUSTED_PROXIES", "127.0.0.1/32");
        raw.set("AUTHGATE_REGISTER_RATE_LIMIT", "1/min");
    })
    .await;
    assert_eq!(
        register_from(&behind_proxy, Some("198.51.100.1")).await,
        201
    );
    assert_eq!(
        register_from(&behind_proxy, Some("198.51.100.1")).await,
        429,
        "the forwarded address's bucket is empty"
    );
    assert_eq!(
        register_from(&behind_proxy, Some("198.51.100.2")).await,
        201,
        "another forwarded address has its own bucket"
    );
    assert_eq!(
        register_from(&behind_proxy, Some("198.51.100.9, 198.51.100.2")).await,
        429,
        "the rightmost untrusted hop counts, not what the client wrote first"
    );

    let direct = spawn_app_with(backend, |raw| {
        raw.set("AUTHGATE_REGISTER_RATE_LIMIT", "1/min");
    })
    .await;
    assert_eq!(register_from(&direct, Some("198.51.100.1")).await, 201);
    assert_eq!(
        register_from(&direct, Some("198.51.100.2")).await,
        429,
        "without trusted proxies a forged X-Forwarded-For does not escape the limit"
    );
    assert_eq!(register_from(&direct, None).await, 429);
}

both_backends!(
    health_readiness_and_request_ids,
    metrics_listener_serves_prometheus_text_without_secrets,
    rate_limit_keys_on_forwarded_for_only_behind_a_trusted_proxy,
);
