//! The MCP guard's revocation cache: bounded, evicting one entry at a time (a full cache keeps
//! its hot tokens in memory instead of clearing itself), each answer expiring on its own by the
//! injected clock, concurrent misses for one token coalesced, and its database queries counted
//! on the metrics listener. Real tokens from real grants, checked against the app's own store.

use std::time::Duration;

use authgate::keys::AccessClaims;
use authgate::services::revocation::RevocationCache;
use authgate::startup::REVOCATION_CACHE_SECONDS;

use crate::both_backends;
use crate::flow::{self, full_grant, register_claude};
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};
use crate::ops::free_port;

/// Every check of a token that is not cached costs two queries: its jti, then its grant.
const QUERIES_PER_MISS: u64 = 2;

/// `n` distinct valid access tokens (one grant, refreshed `n - 1` times), as the guard sees them.
async fn access_tokens(app: &TestApp, n: usize) -> Vec<(String, AccessClaims)> {
    let client = register_claude(app).await;
    let grant = full_grant(app, &client).await;
    let mut refresh = grant["refresh_token"].as_str().unwrap().to_owned();
    let mut tokens = vec![grant["access_token"].as_str().unwrap().to_owned()];
    while tokens.len() < n {
        let next: serde_json::Value = flow::refresh(app, &client, &refresh)
            .await
            .json()
            .await
            .unwrap();
        refresh = next["refresh_token"].as_str().unwrap().to_owned();
        tokens.push(next["access_token"].as_str().unwrap().to_owned());
    }
    tokens
        .into_iter()
        .map(|t| {
            let claims = app
                .state
                .keys
                .verify(&t, &app.base, &app.url("/mcp"), app.clock_now())
                .unwrap();
            (t, claims)
        })
        .collect()
}

async fn full_cache_keeps_its_hot_entries(backend: Backend) {
    const CAPACITY: u64 = 8;
    const HOT: usize = 4;
    let app = spawn_app(backend).await;
    let tokens = access_tokens(&app, HOT + 3 * CAPACITY as usize).await;
    let (hot, cold) = tokens.split_at(HOT);
    let cache = RevocationCache::with_capacity(REVOCATION_CACHE_SECONDS, CAPACITY);
    let now = app.clock_now();
    for (_, c) in hot {
        assert!(!cache.is_revoked(&app.store, c, now).await.unwrap());
    }
    // Three times the capacity of one-off tokens, while the hot ones keep being used.
    for chunk in cold.chunks(HOT) {
        for (_, c) in chunk {
            assert!(!cache.is_revoked(&app.store, c, now).await.unwrap());
        }
        for (_, c) in hot {
            assert!(!cache.is_revoked(&app.store, c, now).await.unwrap());
        }
    }
    assert_eq!(
        cache.store_queries(),
        QUERIES_PER_MISS * tokens.len() as u64,
        "the hot tokens were looked up once each, not again after the cache filled"
    );
    assert!(
        cache.entry_count().await <= CAPACITY,
        "the cache stays within its capacity"
    );
    let before = cache.store_queries();
    for (_, c) in hot {
        assert!(!cache.is_revoked(&app.store, c, now).await.unwrap());
    }
    assert_eq!(
        cache.store_queries(),
        before,
        "after eviction the hot tokens are still answered from memory"
    );
}

async fn each_answer_expires_on_its_own(backend: Backend) {
    let app = spawn_app(backend).await;
    let tokens = access_tokens(&app, 2).await;
    let (a, b) = (&tokens[0].1, &tokens[1].1);
    let cache = RevocationCache::with_capacity(REVOCATION_CACHE_SECONDS, 8);
    let t0 = app.clock_now();
    assert!(!cache.is_revoked(&app.store, a, t0).await.unwrap());
    assert!(
        !cache
            .is_revoked(&app.store, b, t0 + REVOCATION_CACHE_SECONDS / 2)
            .await
            .unwrap()
    );
    app.store.revoke_access_token(&a.jti, a.exp).await.unwrap();
    app.store.revoke_access_token(&b.jti, b.exp).await.unwrap();
    let a_stale = t0 + REVOCATION_CACHE_SECONDS;
    assert!(
        !cache.is_revoked(&app.store, a, a_stale - 1).await.unwrap(),
        "cached until its lifetime ends"
    );
    assert!(
        cache.is_revoked(&app.store, a, a_stale).await.unwrap(),
        "the revocation shows once the answer is {REVOCATION_CACHE_SECONDS} s old"
    );
    assert!(
        !cache.is_revoked(&app.store, b, a_stale).await.unwrap(),
        "an answer cached later is still fresh"
    );
    assert!(
        cache
            .is_revoked(
                &app.store,
                b,
                t0 + REVOCATION_CACHE_SECONDS / 2 + REVOCATION_CACHE_SECONDS
            )
            .await
            .unwrap()
    );
}

async fn concurrent_misses_for_one_token_cost_one_lookup(backend: Backend) {
    let app = spawn_app(backend).await;
    let tokens = access_tokens(&app, 1).await;
    let claims = &tokens[0].1;
    let cache = RevocationCache::with_capacity(REVOCATION_CACHE_SECONDS, 8);
    let now = app.clock_now();
    let answers =
        futures::future::join_all((0..16).map(|_| cache.is_revoked(&app.store, claims, now))).await;
    assert!(answers.into_iter().all(|a| a.is_ok_and(|revoked| !revoked)));
    assert_eq!(cache.store_queries(), QUERIES_PER_MISS);
}

async fn guard_queries_are_counted_on_the_metrics_listener(backend: Backend) {
    let _ = authgate::telemetry::metrics();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let addr = metrics_addr.clone();
    let app = spawn_app_with(backend, move |raw| {
        raw.set("AUTHGATE_METRICS_LISTEN", addr);
    })
    .await;
    let tokens = access_tokens(&app, 1).await;
    let mcp = app
        .http
        .post(app.url("/mcp"))
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18")
        .bearer_auth(&tokens[0].0)
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(mcp.status(), 200);
    assert_eq!(
        app.state.revocations.store_queries(),
        QUERIES_PER_MISS,
        "the guard's own cache made the look-ups"
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
    assert!(
        text.contains("# TYPE authgate_db_queries_total counter"),
        "{text}"
    );
    for operation in ["revoked_access_token", "grant_family"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("authgate_db_queries_total{")
                    && l.contains(&format!("operation=\"{operation}\""))),
            "{operation}: {text}"
        );
    }
}

both_backends!(
    full_cache_keeps_its_hot_entries,
    each_answer_expires_on_its_own,
    concurrent_misses_for_one_token_cost_one_lookup,
    guard_queries_are_counted_on_the_metrics_listener,
);
