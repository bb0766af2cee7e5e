//! The audit trail: security events from the services (logins, consent, refresh-token reuse,
//! code replay, revocations), `authgate audit` over the stored rows, the JSON log lines and the
//! Prometheus counter, pruning after the retention, and a failing write that never fails the
//! user's request.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use authgate::store::{AuditEvent, DynStore, Repo, Store, StoreError, Tx};
use serde_json::Value;

use crate::both_backends;
use crate::browser::{Browser, form_inputs};
use crate::flow::{
    self, authorize_url, decide, dev_flow, full_grant, new_pkce, open_consent, redeem, refresh,
    register_claude,
};
use crate::helpers::Server;
use crate::helpers::{Backend, T0, TestApp, spawn_app, spawn_app_with, spawn_app_wrapped};
use crate::policy::audit_rows;

fn has(rows: &[AuditEvent], kind: &str, outcome: &str) -> bool {
    rows.iter().any(|r| r.kind == kind && r.outcome == outcome)
}

async fn security_events_are_audited(backend: Backend) {
    let metrics = authgate::telemetry::metrics().expect("the metrics recorder");
    let app = spawn_app_with(backend, |raw| {
        raw.set("AUTHGATE_ALLOWED_EMAILS", "ann@example.com");
    })
    .await;
    let client = register_claude(&app).await;
    let grant = full_grant(&app, &client).await;

    let browser = Browser::new();
    let pkce = new_pkce();
    let url = authorize_url(&app, &client.id, &client.redirect_uri, &pkce, &[]);
    let request = open_consent(&browser, &url).await;
    assert_eq!(decide(&browser, &app, &request, "deny").await.status(), 303);
    let request = open_consent(&browser, &url).await;
    let refused = flow::approve_and_dev_login(&browser, &app, &request, "bob@example.com").await;
    assert_eq!(refused.status(), 403, "bob is not on the list");

    let rt = grant["refresh_token"].as_str().unwrap();
    assert_eq!(refresh(&app, &client, rt).await.status(), 200);
    app.clock.advance(60);
    assert_eq!(refresh(&app, &client, rt).await.status(), 400, "reuse");

    let pkce = new_pkce();
    let code = dev_flow(&app, &Browser::new(), &client, &pkce, &[]).await;
    assert_eq!(redeem(&app, &client, &code, &pkce).await.status(), 200);
    assert_eq!(
        redeem(&app, &client, &code, &pkce).await.status(),
        400,
        "replay"
    );

    let fresh = full_grant(&app, &client).await;
    let revoke = |token: String| {
        let (app, client) = (&app, &client);
        async move {
            app.http
                .post(app.url("/revoke"))
                .form(&[
                    ("token", token.as_str()),
                    ("client_id", client.id.as_str()),
                    ("client_secret", client.secret.as_deref().unwrap()),
                ])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        revoke(fresh["access_token"].as_str().unwrap().to_owned()).await,
        200
    );
    assert_eq!(
        revoke(fresh["refresh_token"].as_str().unwrap().to_owned()).await,
        200
    );

    let manager = Browser::new();
    let html = crate::account::account_login(&app, &manager).await;
    let csrf = form_inputs(&html)["csrf"].clone();
    let revoked = manager
        .post_form(
            &app.url("/account/revoke"),
            &[("csrf", &csrf), ("client_id", &client.id)],
            Some(&app.base),
        )
        .await;
    assert_eq!(revoked.status(), 200);

    let rows = audit_rows(&app).await;
    for (kind, outcome) in [
        ("login", "ok"),
        ("login", "refused"),
        ("consent", "approved"),
        ("consent", "denied"),
        ("refresh_reuse", "revoked"),
        ("code_replay", "revoked"),
        ("revocation", "revoked"),
    ] {
        assert!(has(&rows, kind, outcome), "{kind} {outcome} in {rows:#?}");
    }
    let refused = rows
        .iter()
        .find(|r| r.kind == "login" && r.outcome == "refused")
        .unwrap();
    assert_eq!(refused.email.as_deref(), Some("bob@example.com"));
    assert_eq!(refused.client_id.as_deref(), Some(client.id.as_str()));
    let revocations: Vec<&str> = rows
        .iter()
        .filter(|r| r.kind == "revocation")
        .filter_map(|r| r.detail.as_deref())
        .collect();
    assert_eq!(revocations.len(), 3, "{revocations:?}");
    let reuse = rows.iter().find(|r| r.kind == "refresh_reuse").unwrap();
    assert_eq!(reuse.email.as_deref(), Some("ann@example.com"));
    assert!(
        rows.iter().all(|r| r.request_id.is_some()),
        "every event names its request: {rows:#?}"
    );
    let all = format!("{rows:?}");
    for secret in [
        rt,
        grant["access_token"].as_str().unwrap(),
        client.secret.as_deref().unwrap(),
        code.as_str(),
    ] {
        assert!(!all.contains(secret), "a secret in the audit trail");
    }
    let text = metrics.render();
    for series in [
        r#"authgate_audit_events_total{kind="login",outcome="ok"}"#,
        r#"authgate_audit_events_total{kind="refresh_reuse",outcome="revoked"}"#,
    ] {
        assert!(text.contains(series), "{series} in the metrics");
    }
}

async fn the_cli_reads_the_audit_trail(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = register_claude(&app).await;
    full_grant(&app, &client).await;
    let other = register_claude(&app).await;
    let browser = Browser::new();
    let pkce = new_pkce();
    let url = authorize_url(&app, &other.id, &other.redirect_uri, &pkce, &[]);
    let request = open_consent(&browser, &url).await;
    decide(&browser, &app, &request, "deny").await;
    app.state.audit.flush().await;

    let db = app.database_url();
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_authgate"))
            .arg("audit")
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
    let t0 = time::OffsetDateTime::from_unix_timestamp(T0 - 60)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (code, out, err) = cli(&["--json", "--since", &t0]);
    assert_eq!(code, 0, "{err}");
    let all: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(all.len() >= 3, "{out}");
    assert!(
        all.iter()
            .any(|e| e["kind"] == "consent" && e["outcome"] == "denied")
    );
    let (_, out, _) = cli(&["--json", "--client", &other.id]);
    let theirs: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(theirs.len(), 1, "{out}");
    assert_eq!(theirs[0]["outcome"], "denied");
    let (_, out, _) = cli(&["--json", "--user", "ann@example.com"]);
    let ann: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(
        !ann.is_empty() && ann.iter().all(|e| e["email"] == "ann@example.com"),
        "{out}"
    );
    let sub = ann[0]["subject"].as_str().unwrap().to_owned();
    let (_, out, _) = cli(&["--json", "--user", &sub]);
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&out).unwrap().len(),
        ann.len()
    );
    let later = time::OffsetDateTime::from_unix_timestamp(T0 + 3600)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let (_, out, _) = cli(&["--json", "--since", &later]);
    assert_eq!(out.trim(), "[]");
    let (code, out, _) = cli(&["--since", &t0, "--limit", "2"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two rows: {out}");
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("OUTCOME"),
        "{out}"
    );
    let (code, _, err) = cli(&["--since", "last tuesday"]);
    assert_eq!(code, 2);
    assert!(err.contains("--since"), "{err}");

    let revoked = Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["grants", "revoke", "--user", "ann@example.com"])
        .env_clear()
        .env("DATABASE_URL", &db)
        .output()
        .unwrap();
    assert!(revoked.status.success());
    let (_, out, _) = cli(&["--json", "--limit", "1"]);
    let last: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(last[0]["kind"], "revocation", "{out}");
    assert_eq!(last[0]["email"], "ann@example.com");
    assert_eq!(
        last[0]["detail"],
        "1 grant(s) revoked by an operator (authgate grants revoke)"
    );
}

async fn old_rows_are_pruned_after_the_retention(backend: Backend) {
    let app = spawn_app_with(backend, |raw| raw.set("AUTHGATE_AUDIT_RETENTION", "1h")).await;
    let client = register_claude(&app).await;
    full_grant(&app, &client).await;
    let old = audit_rows(&app).await.len() as u64;
    assert!(old >= 2);
    app.clock.advance(2 * 3600);
    full_grant(&app, &client).await;
    app.state.audit.flush().await;
    let removed = authgate::startup::prune_audit(&app.state).await.unwrap();
    assert_eq!(removed, old);
    let left = audit_rows(&app).await;
    assert!(!left.is_empty());
    assert!(left.iter().all(|r| r.at >= T0 + 2 * 3600), "{left:#?}");
}

/// The store's side: a batch larger than one statement's rows, the filters, newest first.
async fn audit_rows_are_stored_in_batches_and_read_by_filter(backend: Backend) {
    let store = crate::helpers::fresh_store(backend).await;
    let events: Vec<AuditEvent> = (0..70)
        .map(|i| {
            let mut e = authgate::services::audit::event(
                format!("id-{i:03}"),
                T0 + i,
                authgate::services::audit::Kind::ToolCall,
                authgate::services::audit::Outcome::Ok,
            );
            e.subject = Some(format!("ag_{}", i % 2));
            e.email = Some(format!("user{}@example.com", i % 2));
            e.client_id = Some(format!("c{}", i % 5));
            e.tool = Some("echo".into());
            e.latency_ms = Some(i);
            e
        })
        .collect();
    assert_eq!(store.insert_audit_events(&events).await.unwrap(), 70);
    let read = |user: Option<&str>, client: Option<&str>, since: Option<i64>, limit: i64| {
        let store = store.clone();
        let query = authgate::store::AuditQuery {
            user: user.map(str::to_owned),
            client_id: client.map(str::to_owned),
            since,
            limit,
        };
        async move { store.list_audit_events(&query).await.unwrap() }
    };
    let all = read(None, None, None, 100).await;
    assert_eq!(all.len(), 70);
    assert_eq!(all[0], events[69], "newest first, every column as written");
    assert_eq!(read(Some("ag_1"), None, None, 100).await.len(), 35);
    assert_eq!(
        read(Some("user0@example.com"), None, None, 100).await.len(),
        35
    );
    assert_eq!(read(None, Some("c3"), None, 100).await.len(), 14);
    assert_eq!(read(Some("ag_1"), Some("c3"), None, 100).await.len(), 7);
    assert_eq!(read(None, None, Some(T0 + 60), 100).await.len(), 10);
    assert_eq!(read(None, None, None, 5).await.len(), 5);
    assert_eq!(store.delete_audit_events_before(T0 + 10).await.unwrap(), 10);
    assert_eq!(read(None, None, None, 100).await.len(), 60);
}

/// A store on which every audit write fails, as an outage of that table would.
struct NoAudit(DynStore);

macro_rules! no_audit_repo {
    ($ty:ty; $( $mode:ident $name:ident ( $( $arg:ident : $argty:ty ),* ) -> $ret:ty ; )*) => {
        #[async_trait]
        impl Repo for $ty {
            $(
                async fn $name(&self, $( $arg: $argty ),*) -> Result<$ret, StoreError> {
                    if stringify!($name) == "insert_audit_events" {
                        return Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut));
                    }
                    self.0.$name($( $arg ),*).await
                }
            )*
        }
    };
}

authgate::repo_operations!(no_audit_repo! { NoAudit; });

#[async_trait]
impl Store for NoAudit {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }

    fn pool_state(&self) -> (u32, u32) {
        self.0.pool_state()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.0.ping().await
    }

    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError> {
        self.0.begin().await
    }
}

async fn a_failing_audit_write_never_fails_the_request(backend: Backend) {
    let app: TestApp =
        spawn_app_wrapped(backend, |inner| Arc::new(NoAudit(inner)) as DynStore).await;
    let client = register_claude(&app).await;
    let grant = full_grant(&app, &client).await;
    assert!(grant["access_token"].is_string(), "the flow went through");
    app.state.audit.flush().await;
    let (failed, dropped) = app.state.audit.lost();
    assert!(failed >= 2, "the failed rows are counted: {failed}");
    assert_eq!(dropped, 0);
    assert!(audit_rows(&app).await.is_empty());
}

/// The real binary with JSON logs: every audit event is one line with target `authgate::audit`,
/// and a rule for `*` audits the calls of the built-in server without restricting them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_are_json_log_lines() {
    let dir =
        std::env::temp_dir().join(format!("authgate-audit-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("policy.toml");
    std::fs::write(&config, "[[tool]]\nname = \"*\"\n").unwrap();
    let log_path = dir.join("out.log");
    let port = crate::ops::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_authgate"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AUTHGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("a.db").display()),
        )
        .env("AUTHGATE_LOG_FORMAT", "json")
        .stdout(std::fs::File::create(&log_path).unwrap())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let remote = crate::ops::Remote::new(base.clone(), base.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while remote
        .http
        .get(remote.url("/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "authgate did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = flow::register_claude(&remote).await;
    let grant = flow::full_grant(&remote, &client).await;
    let token = grant["access_token"].as_str().unwrap();
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{"note":"secret-argument-456"}}}"#;
    let resp = flow::mcp_post(&remote, Some(token), call).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("ann@example.com"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill().await;
    let text = std::fs::read_to_string(&log_path).unwrap();
    let audit: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["target"] == "authgate::audit")
        .collect();
    let find = |kind: &str, outcome: &str| {
        audit
            .iter()
            .find(|e| e["kind"] == kind && e["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no {kind} {outcome} line in:\n{text}"))
    };
    find("login", "ok");
    find("consent", "approved");
    let line = find("tool_call", "ok");
    assert_eq!(line["tool"], "whoami");
    assert_eq!(line["email"], "ann@example.com");
    assert!(line["latency_ms"].is_u64(), "{line}");
    assert!(line["request_id"].is_string(), "{line}");
    for secret in [
        token,
        "secret-argument-456",
        client.secret.as_deref().unwrap(),
    ] {
        assert!(!text.contains(secret), "a secret in the logs");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

both_backends!(
    audit_rows_are_stored_in_batches_and_read_by_filter,
    security_events_are_audited,
    the_cli_reads_the_audit_trail,
    old_rows_are_pruned_after_the_retention,
    a_failing_audit_write_never_fails_the_request,
);
