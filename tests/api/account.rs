//! The connected-apps page and the admin CLI: what a user approved, seen and revoked; a revoked
//! grant then fails at `/token`.

use std::process::Command;

use serde_json::Value;

use crate::both_backends;
use crate::browser::{Browser, form_inputs, location};
use crate::flow::{self, new_pkce, refresh, register_claude};
use crate::helpers::{Backend, TestApp, spawn_app};

/// Logs `browser` into /account with the development login; returns the page HTML.
pub async fn account_login(app: &TestApp, browser: &Browser) -> String {
    let first = browser.get(&app.url("/account")).await;
    if first.status() == 200 {
        return first.text().await.unwrap();
    }
    assert_eq!(first.status(), 303, "not signed in: off to the login");
    let login = location(&first);
    assert!(login.starts_with(&app.url("/dev/login")), "{login}");
    let state = flow::param(&login, "state").unwrap();
    let done = browser
        .post_form(
            &app.url("/dev/login"),
            &[("state", &state), ("email", "ann@example.com")],
            Some(&app.base),
        )
        .await;
    assert_eq!(done.status(), 303);
    assert_eq!(
        location(&done),
        app.url("/account"),
        "no code, back to the page"
    );
    let page = browser.get(&app.url("/account")).await;
    assert_eq!(page.status(), 200);
    page.text().await.unwrap()
}

async fn users_see_and_revoke_what_they_approved(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_claude(&app).await;
    let browser = Browser::new();
    let pkce = new_pkce();
    let code = flow::dev_flow(&app, &browser, &client, &pkce, &[]).await;
    let grant: Value = flow::redeem(&app, &client, &code, &pkce)
        .await
        .json()
        .await
        .unwrap();
    let rt = grant["refresh_token"].as_str().unwrap();

    // Another browser logs in as the same user to manage access.
    let manager = Browser::new();
    let html = account_login(&app, &manager).await;
    assert!(
        html.contains("Claude") && html.contains("claude.ai"),
        "the approved client is listed"
    );
    let fields = form_inputs(&html);
    let csrf = fields["csrf"].clone();
    let forged = manager
        .post_form(
            &app.url("/account/revoke"),
            &[("csrf", "forged"), ("client_id", &client.id)],
            Some(&app.base),
        )
        .await;
    assert_eq!(forged.status(), 403);
    let cross = manager
        .post_form(
            &app.url("/account/revoke"),
            &[("csrf", &csrf), ("client_id", &client.id)],
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(cross.status(), 403);
    let outsider = Browser::new()
        .post_form(
            &app.url("/account/revoke"),
            &[("csrf", &csrf), ("client_id", &client.id)],
            Some(&app.base),
        )
        .await;
    assert_eq!(outsider.status(), 401, "no session, no revocation");
    assert_eq!(
        refresh(&app, &client, rt).await.status(),
        200,
        "nothing revoked yet"
    );

    let grant: Value = flow::full_grant(&app, &client).await;
    let rt = grant["refresh_token"].as_str().unwrap();
    let revoked = manager
        .post_form(
            &app.url("/account/revoke"),
            &[("csrf", &csrf), ("client_id", &client.id)],
            Some(&app.base),
        )
        .await;
    assert_eq!(revoked.status(), 200);
    assert!(
        !revoked.text().await.unwrap().contains("claude.ai/api"),
        "no longer listed"
    );
    let (status, body) = {
        let r = refresh(&app, &client, rt).await;
        (r.status(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(
        (status.as_u16(), body["error"].as_str().unwrap()),
        (400, "invalid_grant"),
        "a revoked grant fails at /token"
    );
    // The approval is forgotten: the consent page comes back in the original browser.
    let again = browser
        .get(&flow::authorize_url(
            &app,
            &client.id,
            &client.redirect_uri,
            &new_pkce(),
            &[],
        ))
        .await;
    assert_eq!(again.status(), 200);
}

async fn admin_cli(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_claude(&app).await;
    let grant: Value = flow::full_grant(&app, &client).await;
    let db = match backend {
        Backend::Sqlite => app.database_url(),
        Backend::Postgres => app.database_url(),
    };
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_authgate"))
            .args(args)
            .env_clear()
            .env("DATABASE_URL", &db)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = cli(&["clients", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&client.id)
            && out.contains("Claude")
            && out.contains("client_secret_post")
            && out.contains("claude.ai"),
        "{out}"
    );
    let (code, out, _) = cli(&["clients", "list", "--json"]);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["client_id"], client.id.as_str());
    assert!(
        !out.contains(client.secret.as_deref().unwrap()),
        "never the secret"
    );
    let (code, out, _) = cli(&["clients", "show", &client.id, "--json"]);
    assert_eq!(code, 0);
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["active_grants"], 1);
    assert_eq!(cli(&["clients", "show", "agc_missing"]).0, 1);
    let (code, out, _) = cli(&["grants", "list", "--user", "ann@example.com", "--json"]);
    assert_eq!(code, 0);
    let grants: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(grants.as_array().unwrap().len(), 1);
    assert_eq!(grants[0]["status"], "active");
    assert_eq!(cli(&["grants", "revoke"]).0, 2, "a filter is required");
    let (code, out, _) = cli(&["grants", "revoke", "--client", &client.id]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("revoked 1 grant"), "{out}");
    let resp = refresh(&app, &client, grant["refresh_token"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 400, "a revoked grant then fails at /token");
    let (code, out, _) = cli(&["keys", "list", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(cli(&["keys", "rotate"]).0, 0);
    let (_, out, _) = cli(&["keys", "list"]);
    assert!(out.contains("current") && out.contains("next"), "{out}");
    let (code, out, _) = cli(&["cleanup", "--json"]);
    assert_eq!(code, 0);
    assert!(serde_json::from_str::<Value>(&out).unwrap()["expired_rows_removed"].is_u64());
    let (code, out, _) = cli(&["clients", "delete", &client.id]);
    assert_eq!(code, 0, "{out}");
    let gone = flow::token_request(
        &app,
        &client,
        &[("grant_type", "refresh_token"), ("refresh_token", "x")],
    )
    .await;
    assert_eq!(gone.status(), 401, "a deleted client gets invalid_client");
    let (code, _, err) = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["clients", "list"])
        .env_clear()
        .env("DATABASE_URL", "postgres://nobody:hunter2@127.0.0.1:1/x")
        .output()
        .map(|o| {
            (
                o.status.code().unwrap_or(-1),
                (),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert_ne!(code, 0);
    assert!(
        err.contains("DATABASE_URL") && !err.contains("hunter2"),
        "{err}"
    );
}

both_backends!(users_see_and_revoke_what_they_approved, admin_cli);
