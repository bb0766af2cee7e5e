//! Staged signing-key rotation across instances: a rotated-in key is published by every
//! instance after one key-version poll, signs only from its activation time, and the key it
//! replaces keeps verifying its tokens until they have expired, then leaves the JWKS.

use std::process::Command;
use std::time::Duration;

use authgate::random::SystemRandom;
use serde_json::Value;

use crate::both_backends;
use crate::flow::{RegisteredClient, full_grant, refresh, register_claude};
use crate::helpers::{Backend, T0, TestApp, spawn_app};
use crate::ops::{INIT, kid_of};

const DELAY: i64 = 120;
const TTL: i64 = 3600;

async fn jwks_kids(app: &TestApp) -> Vec<String> {
    let jwks: Value = app
        .http
        .get(app.url("/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// Refreshes at `app`; returns the new refresh token and the access token's `kid`.
async fn refresh_at(app: &TestApp, client: &RegisteredClient, rt: &str) -> (String, String) {
    let resp = refresh(app, client, rt).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    (
        body["refresh_token"].as_str().unwrap().to_owned(),
        kid_of(body["access_token"].as_str().unwrap()),
    )
}

async fn mcp_status(app: &TestApp, token: &str) -> u16 {
    // Every instance is reached as the public URL's host, as through a load balancer.
    let public = app.state.settings.public_url.clone();
    let host = format!(
        "{}:{}",
        public.host_str().unwrap(),
        app.state.settings.public_port()
    );
    app.http
        .post(app.url("/mcp"))
        .header("Host", host)
        .header("Content-Type", "application/json")
        .header("Accept", "application/json, text/event-stream")
        .header("MCP-Protocol-Version", "2025-06-18")
        .bearer_auth(token)
        .body(INIT)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// What `authgate keys rotate` does, on its own connection to the database.
async fn rotate_like_the_cli(app: &TestApp) -> String {
    authgate::cli::admin::rotate_keys(
        app.store.clone(),
        app.state.settings.access_token_ttl,
        app.state.settings.key_publication_delay,
        app.state.settings.key_sealer.clone(),
        app.clock_now(),
        &SystemRandom,
    )
    .await
    .unwrap()
    .kid
}

async fn a_rotation_is_published_everywhere_after_one_poll_and_signs_only_from_its_activation(
    backend: Backend,
) {
    let a = spawn_app(backend).await;
    // This test polls B by hand; its background poll must not look first.
    let b = a
        .another_instance(|s| s.key_poll_interval = Duration::from_secs(3600))
        .await;
    assert_eq!(a.state.settings.key_publication_delay, DELAY, "the default");
    let client = register_claude(&a).await;
    let grant = full_grant(&a, &client).await;
    let old_kid = kid_of(grant["access_token"].as_str().unwrap());
    let mut rt = grant["refresh_token"].as_str().unwrap().to_owned();
    let store = a.store.clone();
    let stages = |now| {
        let store = store.clone();
        async move {
            authgate::cli::admin::keys(&store, TTL, now)
                .await
                .unwrap()
                .into_iter()
                .map(|k| (k.kid, k.state.as_str(), k.changes_at))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        stages(T0).await,
        [(old_kid.clone(), "current", None)],
        "the first key signs from the first start, with no delay"
    );

    let new_kid = rotate_like_the_cli(&a).await;
    assert_eq!(
        stages(T0).await,
        [
            (new_kid.clone(), "next", Some(T0 + DELAY)),
            (old_kid.clone(), "current", Some(T0 + DELAY))
        ]
    );
    assert!(
        !jwks_kids(&b).await.contains(&new_kid),
        "B has not looked yet"
    );
    let now = b.clock_now();
    assert!(b.state.keys.poll(now).await.unwrap(), "the version moved");
    assert!(
        !b.state.keys.poll(now).await.unwrap(),
        "nothing changed since: no reload"
    );
    assert!(a.state.keys.poll(now).await.unwrap());
    for (name, app) in [("A", &a), ("B", &b)] {
        let kids = jwks_kids(app).await;
        assert!(
            kids.contains(&new_kid) && kids.contains(&old_kid),
            "{name} publishes the next key beside the current one: {kids:?}"
        );
    }

    let (next_rt, kid) = refresh_at(&b, &client, &rt).await;
    rt = next_rt;
    assert_eq!(
        kid, old_kid,
        "the new key does not sign before it activates"
    );
    a.clock.advance(DELAY - 1);
    let (next_rt, kid) = refresh_at(&a, &client, &rt).await;
    rt = next_rt;
    assert_eq!(kid, old_kid, "one second before activation");
    a.clock.advance(1);
    let (next_rt, kid) = refresh_at(&b, &client, &rt).await;
    rt = next_rt;
    assert_eq!(
        kid, new_kid,
        "B signs with it from its activation, unprompted"
    );
    let (_, kid) = refresh_at(&a, &client, &rt).await;
    assert_eq!(kid, new_kid, "and so does A");
}

async fn the_retired_key_verifies_its_tokens_until_they_expire_then_leaves_the_jwks(
    backend: Backend,
) {
    let a = spawn_app(backend).await;
    let b = a.another_instance(|_| {}).await;
    let client = register_claude(&a).await;
    let grant = full_grant(&a, &client).await;
    let first_at = grant["access_token"].as_str().unwrap().to_owned();
    let old_kid = kid_of(&first_at);
    let new_kid = rotate_like_the_cli(&a).await;
    // A background reload may have seen the rotation first; either way both publish it now.
    for app in [&a, &b] {
        app.state.keys.poll(app.clock_now()).await.unwrap();
        assert!(jwks_kids(app).await.contains(&new_kid));
    }

    // The last token the old key signs, just before the new one takes over.
    a.clock.advance(DELAY - 1);
    let resp = refresh(&a, &client, grant["refresh_token"].as_str().unwrap()).await;
    let last: Value = resp.json().await.unwrap();
    let last_at = last["access_token"].as_str().unwrap().to_owned();
    assert_eq!(kid_of(&last_at), old_kid);
    a.clock.advance(1);
    assert_eq!(
        b.state.keys.signing_kid(b.clock_now()),
        Some(new_kid.clone())
    );

    // Past the first token's expiry, counted from the rotation: the retired key is still
    // needed for the last one.
    a.clock.advance(TTL - DELAY + 1);
    assert_eq!(mcp_status(&b, &first_at).await, 401, "expired");
    assert_eq!(
        mcp_status(&b, &last_at).await,
        200,
        "the retired key verifies its last token"
    );
    assert!(jwks_kids(&b).await.contains(&old_kid));

    // It stays published until its last token has expired (plus the margin), then leaves the
    // JWKS of every instance without any reload.
    let drops_at = T0 + DELAY + TTL + authgate::keys::DROP_MARGIN;
    a.clock.advance(drops_at - 1 - a.clock_now());
    assert!(jwks_kids(&b).await.contains(&old_kid));
    a.clock.advance(1);
    for (name, app) in [("A", &a), ("B", &b)] {
        assert_eq!(
            jwks_kids(app).await,
            vec![new_kid.clone()],
            "{name} no longer publishes the retired key"
        );
    }

    // The clean-up deletes it, and the other instance notices at its next poll.
    let report = authgate::cli::admin::cleanup(&a.store, 86_400, 86_400, TTL, a.clock_now())
        .await
        .unwrap();
    assert_eq!(report.retired_keys_removed, 1);
    let stored: Vec<String> = a
        .store
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(stored, vec![new_kid.clone()]);
    assert!(b.state.keys.poll(b.clock_now()).await.unwrap());
    assert_eq!(jwks_kids(&b).await, vec![new_kid]);
}

async fn the_latest_rotation_always_ends_up_signing(backend: Backend) {
    let app = spawn_app(backend).await;
    let keys = &app.state.keys;
    let first = keys.signing_kid(T0).unwrap();
    // Within the second the first key activated: it must still come after it.
    let quick = keys.rotate(T0, 0, &SystemRandom).await.unwrap();
    assert_eq!(quick.activates_at, T0 + 1);
    assert_eq!(keys.signing_kid(T0), Some(first));
    assert_eq!(keys.signing_kid(T0 + 1), Some(quick.kid.clone()));
    // A slow rotation, then a quick one: the quick one is the newer, so it waits for the other.
    let slow = keys.rotate(T0, 600, &SystemRandom).await.unwrap();
    let again = keys.rotate(T0, 0, &SystemRandom).await.unwrap();
    assert_eq!(slow.activates_at, T0 + 600);
    assert_eq!(again.activates_at, T0 + 601);
    assert_eq!(keys.signing_kid(T0 + 600), Some(slow.kid));
    assert_eq!(keys.signing_kid(T0 + 601), Some(again.kid));
}

async fn every_instance_polls_the_key_version_in_the_background(backend: Backend) {
    let a = spawn_app(backend).await;
    let b = a
        .another_instance(|s| s.key_poll_interval = Duration::from_millis(50))
        .await;
    let new_kid = rotate_like_the_cli(&a).await;
    // Bounded wait for B's background job; nothing here calls B's keystore.
    let mut published = false;
    for _ in 0..200 {
        if jwks_kids(&b).await.contains(&new_kid) {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(published, "B's background poll published the rotated key");
}

async fn keys_list_shows_each_keys_state_and_when_it_changes(backend: Backend) {
    let app = spawn_app(backend).await;
    let db = app.database_url();
    let cli = |args: &[&str], delay: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_authgate"));
        cmd.args(args).env_clear().env("DATABASE_URL", &db);
        if let Some(d) = delay {
            cmd.env("AUTHGATE_KEY_PUBLICATION_DELAY", d);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The CLI runs on the real clock, after the app's (mock) first key: with no delay the
    // second key signs at once and retires the first, then a default rotation is next.
    cli(&["keys", "rotate"], Some("0"));
    let out = cli(&["keys", "rotate"], None);
    assert!(out.contains("signs from"), "{out}");
    let list: Value = serde_json::from_str(&cli(&["keys", "list", "--json"], None)).unwrap();
    let list = list.as_array().unwrap();
    let states: Vec<&str> = list.iter().map(|k| k["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["next", "current", "retired"], "{list:?}");
    let (next, current, retired) = (&list[0], &list[1], &list[2]);
    assert_eq!(next["changes_at"], next["activates_at"]);
    assert_eq!(current["retires_at"], next["activates_at"]);
    assert_eq!(current["changes_at"], current["retires_at"]);
    assert_eq!(retired["retires_at"], current["activates_at"]);
    assert_eq!(
        retired["drops_at"].as_i64().unwrap(),
        current["activates_at"].as_i64().unwrap() + TTL + authgate::keys::DROP_MARGIN
    );
    assert_eq!(retired["changes_at"], retired["drops_at"]);
    let gap = next["activates_at"].as_i64().unwrap() - current["activates_at"].as_i64().unwrap();
    assert!(
        (DELAY..DELAY + 10).contains(&gap),
        "the default delay, give or take the seconds between the two commands: {gap}"
    );

    let table = cli(&["keys", "list"], None);
    for (key, state, then) in [
        (next, "next", "current"),
        (current, "current", "retired"),
        (retired, "retired", "dropped"),
    ] {
        let kid = key["kid"].as_str().unwrap();
        let line = table.lines().find(|l| l.starts_with(kid)).unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[2..5], [state, then, "at"], "{table}");
    }
}

both_backends!(
    a_rotation_is_published_everywhere_after_one_poll_and_signs_only_from_its_activation,
    the_retired_key_verifies_its_tokens_until_they_expire_then_leaves_the_jwks,
    the_latest_rotation_always_ends_up_signing,
    every_instance_polls_the_key_version_in_the_background,
    keys_list_shows_each_keys_state_and_when_it_changes,
);
