//! Failure injection: every exchange is run against a store that fails at its first, second,
//! third... storage operation (the commit included), on both backends. After each failure
//! nothing of the exchange may be left half-done, and the client's retry must succeed (a
//! retried code redemption is not a replay).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use authgate::oauth::secrets::{Hashed, kind};
use authgate::store::{DynStore, Repo, Store, StoreError, Tx};
use serde_json::Value;

use crate::both_backends;
use crate::browser::{Browser, location};
use crate::flow::{
    RegisteredClient, authorize_url, decide, dev_flow, new_pkce, open_consent, param, redeem,
    refresh, register_claude,
};
use crate::helpers::{Backend, TestApp, spawn_app_wrapped, spawn_app_wrapped_with};

/// Operations of the background jobs and the key poll, which may run at any moment: never
/// counted, never failed.
const BACKGROUND: &[&str] = &[
    "key_version",
    "list_keys",
    "insert_key",
    "delete_keys",
    "delete_expired",
    "delete_idle_clients",
    // The audit trail's writer stores rows whenever a batch is ready.
    "insert_audit_events",
    "delete_audit_events_before",
];

/// When armed, the `fail_at`-th counted operation fails as an outage would, before it runs.
#[derive(Default)]
struct Faults {
    armed: AtomicBool,
    count: AtomicUsize,
    fail_at: AtomicUsize,
    hit: AtomicBool,
}

impl Faults {
    fn arm(&self, fail_at: usize) {
        self.count.store(0, Ordering::SeqCst);
        self.fail_at.store(fail_at, Ordering::SeqCst);
        self.hit.store(false, Ordering::SeqCst);
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Disarms; says whether the fault was reached.
    fn disarm(&self) -> bool {
        self.armed.store(false, Ordering::SeqCst);
        self.hit.load(Ordering::SeqCst)
    }

    fn step(&self, operation: &str) -> Result<(), StoreError> {
        if !self.armed.load(Ordering::SeqCst) || BACKGROUND.contains(&operation) {
            return Ok(());
        }
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at.load(Ordering::SeqCst) {
            self.hit.store(true, Ordering::SeqCst);
            return Err(StoreError::Unavailable(sqlx::Error::PoolTimedOut));
        }
        Ok(())
    }
}

struct FaultyStore {
    inner: DynStore,
    faults: Arc<Faults>,
}

struct FaultyTx {
    inner: Box<dyn Tx>,
    faults: Arc<Faults>,
}

macro_rules! faulty_repo {
    ($ty:ty; $( $mode:ident $name:ident ( $( $arg:ident : $argty:ty ),* ) -> $ret:ty ; )*) => {
        #[async_trait]
        impl Repo for $ty {
            $(
                async fn $name(&self, $( $arg: $argty ),*) -> Result<$ret, StoreError> {
                    self.faults.step(stringify!($name))?;
                    self.inner.$name($( $arg ),*).await
                }
            )*
        }
    };
}

authgate::repo_operations!(faulty_repo! { FaultyStore; });
authgate::repo_operations!(faulty_repo! { FaultyTx; });

#[async_trait]
impl Store for FaultyStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    fn pool_state(&self) -> (u32, u32) {
        self.inner.pool_state()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError> {
        self.faults.step("begin")?;
        Ok(Box::new(FaultyTx {
            inner: self.inner.begin().await?,
            faults: self.faults.clone(),
        }))
    }
}

#[async_trait]
impl Tx for FaultyTx {
    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        // Failing here drops the inner transaction uncommitted: the commit never happened.
        self.faults.step("commit")?;
        self.inner.commit().await
    }

    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        self.inner.rollback().await
    }
}

async fn faulty_app(backend: Backend) -> (TestApp, Arc<Faults>) {
    let faults = Arc::new(Faults::default());
    let f = faults.clone();
    let app = spawn_app_wrapped(backend, move |inner| {
        Arc::new(FaultyStore { inner, faults: f }) as DynStore
    })
    .await;
    (app, faults)
}

/// Runs `attempt` with the k-th operation failing, for k = 1, 2, ... until an attempt no longer
/// reaches the fault (it has fewer operations). `check` runs after each failed attempt, then the
/// same attempt is retried without faults and must succeed. Returns how many steps failed.
async fn each_step_fails<S, A, AF, C, CF, R, RF>(
    faults: &Faults,
    mut setup: impl FnMut() -> S,
    attempt: A,
    check: C,
    retry_ok: R,
) -> usize
where
    S: std::future::Future<Output = Value>,
    A: Fn(Value) -> AF,
    AF: std::future::Future<Output = (u16, Value)>,
    C: Fn(Value) -> CF,
    CF: std::future::Future<Output = ()>,
    R: Fn(Value, u16) -> RF,
    RF: std::future::Future<Output = bool>,
{
    for k in 1.. {
        let input = setup().await;
        faults.arm(k);
        let (status, _) = attempt(input.clone()).await;
        if !faults.disarm() {
            assert!(
                retry_ok(input, status).await,
                "the attempt without a fault succeeds"
            );
            return k - 1;
        }
        assert!(
            status >= 500,
            "step {k}: a storage failure is a server error, got {status}"
        );
        check(input.clone()).await;
        let (status, _) = attempt(input.clone()).await;
        assert!(
            retry_ok(input, status).await,
            "step {k}: the retry succeeds ({status})"
        );
    }
    0
}

async fn code_redemption_is_all_or_nothing(backend: Backend) {
    let (app, faults) = faulty_app(backend).await;
    let app = Arc::new(app);
    let client = Arc::new(register_claude(&app).await);
    let steps = each_step_fails(
        &faults,
        || {
            let (app, client) = (app.clone(), client.clone());
            async move {
                let pkce = new_pkce();
                let code = dev_flow(&app, &Browser::new(), &client, &pkce, &[]).await;
                // Every flow of this person and client continues one grant: its refresh chains
                // from earlier rounds are counted before the attempt.
                let hash = Hashed::<kind::Code>::of(&code);
                let (_, grant) = app.store.get_code(&hash).await.unwrap().unwrap();
                let tokens = refresh_tokens_of(&app, &grant.id).await;
                serde_json::json!({"code": code, "verifier": pkce.verifier, "challenge": pkce.challenge, "tokens": tokens})
            }
        },
        |input| {
            let (app, client) = (app.clone(), client.clone());
            async move {
                let pkce = pkce_of(&input);
                let resp = redeem(&app, &client, input["code"].as_str().unwrap(), &pkce).await;
                (resp.status().as_u16(), Value::Null)
            }
        },
        |input| {
            let app = app.clone();
            async move {
                let code = Hashed::<kind::Code>::of(input["code"].as_str().unwrap());
                let (code, grant) = app.store.get_code(&code).await.unwrap().unwrap();
                assert_eq!(
                    code.state,
                    authgate::domain::grant::CodeState::Issued,
                    "the code is not burned"
                );
                assert!(grant.revoked_at.is_none(), "nor its grant revoked");
                assert_eq!(
                    refresh_tokens_of(&app, &grant.id).await,
                    input["tokens"].as_i64().unwrap(),
                    "no refresh token was stored"
                );
            }
        },
        |_, status| async move { status == 200 },
    )
    .await;
    assert!(
        steps >= 5,
        "the exchange has at least 5 storage steps: {steps}"
    );
    // A replay after success is still refused and revokes.
    let pkce = new_pkce();
    let code = dev_flow(&app, &Browser::new(), &client, &pkce, &[]).await;
    assert_eq!(redeem(&app, &client, &code, &pkce).await.status(), 200);
    assert_eq!(redeem(&app, &client, &code, &pkce).await.status(), 400);
}

async fn refresh_tokens_of(app: &TestApp, grant: &str) -> i64 {
    app.count_rows(&format!(
        "SELECT COUNT(*) FROM refresh_tokens WHERE family_id = '{grant}'"
    ))
    .await
}

fn pkce_of(input: &Value) -> crate::flow::Pkce {
    crate::flow::Pkce {
        verifier: input["verifier"].as_str().unwrap().to_owned(),
        challenge: input["challenge"].as_str().unwrap().to_owned(),
    }
}

async fn refresh_rotation_is_all_or_nothing(backend: Backend) {
    let (app, faults) = faulty_app(backend).await;
    let app = Arc::new(app);
    let client = Arc::new(register_claude(&app).await);
    let current = Arc::new(std::sync::Mutex::new(
        crate::flow::full_grant(&app, &client).await["refresh_token"]
            .as_str()
            .unwrap()
            .to_owned(),
    ));
    let steps = each_step_fails(
        &faults,
        || {
            let current = current.clone();
            async move { Value::String(current.lock().unwrap().clone()) }
        },
        |input| {
            let (app, client, current) = (app.clone(), client.clone(), current.clone());
            async move {
                let resp = refresh(&app, &client, input.as_str().unwrap()).await;
                let status = resp.status().as_u16();
                if status == 200 {
                    let body: Value = resp.json().await.unwrap();
                    *current.lock().unwrap() = body["refresh_token"].as_str().unwrap().to_owned();
                }
                (status, Value::Null)
            }
        },
        |input| {
            let app = app.clone();
            async move {
                let presented = Hashed::<kind::Refresh>::of(input.as_str().unwrap());
                let (token, grant) = app.store.get_refresh(&presented).await.unwrap().unwrap();
                assert_eq!(
                    token.state,
                    authgate::domain::grant::RefreshState::Current,
                    "the presented token is still current"
                );
                let live = app
                    .count_rows(&format!(
                        "SELECT COUNT(*) FROM refresh_tokens WHERE family_id = '{}' AND rotated_at IS NULL",
                        grant.id
                    ))
                    .await;
                assert_eq!(live, 1, "no successor was stored");
            }
        },
        |_, status| async move { status == 200 },
    )
    .await;
    assert!(steps >= 5, "rotation has at least 5 storage steps: {steps}");
}

/// A browser with a session, on a consent page asked for again (`prompt=consent`).
async fn consent_page_with_session(app: &TestApp, client: &RegisteredClient) -> (Browser, String) {
    let browser = Browser::new();
    dev_flow(app, &browser, client, &new_pkce(), &[]).await;
    let url = authorize_url(
        app,
        &client.id,
        &client.redirect_uri,
        &new_pkce(),
        &[("prompt", "consent")],
    );
    let request = open_consent(&browser, &url).await;
    (browser, request)
}

async fn consent_completion_is_all_or_nothing(backend: Backend) {
    let (app, faults) = faulty_app(backend).await;
    let app = Arc::new(app);
    let client = Arc::new(register_claude(&app).await);
    let browsers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let steps = each_step_fails(
        &faults,
        || {
            let (app, client, browsers) = (app.clone(), client.clone(), browsers.clone());
            async move {
                let (browser, request) = consent_page_with_session(&app, &client).await;
                let mut all = browsers.lock().unwrap();
                all.push(browser);
                serde_json::json!({"browser": all.len() - 1, "request": request})
            }
        },
        |input| {
            let (app, browsers) = (app.clone(), browsers.clone());
            async move {
                let browser =
                    browsers.lock().unwrap()[input["browser"].as_u64().unwrap() as usize].clone();
                let resp = decide(
                    &browser,
                    &app,
                    input["request"].as_str().unwrap(),
                    "approve",
                )
                .await;
                let status = resp.status().as_u16();
                let coded = status == 303 && param(&location(&resp), "code").is_some();
                (if coded { 200 } else { status }, Value::Null)
            }
        },
        |input| {
            let app = app.clone();
            async move {
                let id = Hashed::<kind::Pending>::of(input["request"].as_str().unwrap());
                let pending = app.store.get_pending(&id).await.unwrap().unwrap();
                assert_eq!(
                    pending.stage,
                    authgate::domain::pending::Stage::AwaitingConsent,
                    "the request is still open"
                );
            }
        },
        |_, status| async move { status == 200 },
    )
    .await;
    assert!(
        steps >= 4,
        "consent completion has at least 4 storage steps: {steps}"
    );
    // One person and one client: every completed consent continued the same grant, and none
    // of the failed attempts left a grant of its own.
    let grants = app.count_rows("SELECT COUNT(*) FROM grant_families").await;
    let codes = app
        .count_rows("SELECT COUNT(*) FROM authorization_codes")
        .await;
    assert_eq!(grants, 1, "one grant ({codes} codes)");
}

async fn login_completion_is_all_or_nothing(backend: Backend) {
    let (app, faults) = faulty_app(backend).await;
    let app = Arc::new(app);
    let client = Arc::new(register_claude(&app).await);
    let browsers = Arc::new(std::sync::Mutex::new(Vec::new()));
    let steps = each_step_fails(
        &faults,
        || {
            let (app, client, browsers) = (app.clone(), client.clone(), browsers.clone());
            async move {
                let browser = Browser::new();
                let url = authorize_url(&app, &client.id, &client.redirect_uri, &new_pkce(), &[]);
                let request = open_consent(&browser, &url).await;
                let approved = decide(&browser, &app, &request, "approve").await;
                let state = param(&location(&approved), "state").unwrap();
                let mut all = browsers.lock().unwrap();
                all.push(browser);
                serde_json::json!({"browser": all.len() - 1, "state": state})
            }
        },
        |input| {
            let (app, browsers) = (app.clone(), browsers.clone());
            async move {
                let browser =
                    browsers.lock().unwrap()[input["browser"].as_u64().unwrap() as usize].clone();
                let state = input["state"].as_str().unwrap();
                let resp = browser
                    .post_form(
                        &app.url("/dev/login"),
                        &[("state", state), ("email", "ann@example.com")],
                        Some(&app.base),
                    )
                    .await;
                let status = resp.status().as_u16();
                let coded = status == 303 && param(&location(&resp), "code").is_some();
                (if coded { 200 } else { status }, Value::Null)
            }
        },
        |input| {
            let app = app.clone();
            async move {
                let state = Hashed::<kind::UpstreamState>::of(input["state"].as_str().unwrap());
                let pending = app
                    .store
                    .get_pending_by_upstream_state(&state)
                    .await
                    .unwrap()
                    .unwrap();
                assert!(
                    matches!(
                        pending.stage,
                        authgate::domain::pending::Stage::AtUpstream(_)
                    ),
                    "the request still waits for the login"
                );
                let sessions = app.count_rows("SELECT COUNT(*) FROM sessions").await;
                let codes = app
                    .count_rows("SELECT COUNT(*) FROM authorization_codes")
                    .await;
                assert_eq!(sessions, codes, "no session without its code");
            }
        },
        |_, status| async move { status == 200 },
    )
    .await;
    assert!(
        steps >= 5,
        "login completion has at least 5 storage steps: {steps}"
    );
}

async fn client_deletion_is_all_or_nothing(backend: Backend) {
    let (app, faults) = faulty_app(backend).await;
    let app = Arc::new(app);
    let steps = each_step_fails(
        &faults,
        || {
            let app = app.clone();
            async move {
                let client = register_claude(&app).await;
                crate::flow::full_grant(&app, &client).await;
                serde_json::json!({"id": client.id, "secret": client.secret})
            }
        },
        |input| {
            let app = app.clone();
            async move {
                let resp = app
                    .http
                    .delete(app.url(&format!("/register/{}", input["id"].as_str().unwrap())))
                    .basic_auth(input["id"].as_str().unwrap(), input["secret"].as_str())
                    .send()
                    .await
                    .unwrap();
                (resp.status().as_u16(), Value::Null)
            }
        },
        |input| {
            let app = app.clone();
            async move {
                let id = input["id"].as_str().unwrap();
                assert!(
                    app.store.get_client(id).await.unwrap().is_some(),
                    "the client stays"
                );
                let grants = app.store.list_grants(None, Some(id)).await.unwrap();
                assert!(
                    grants.iter().all(|g| g.revoked_at.is_none()),
                    "its grants stay live"
                );
            }
        },
        |_, status| async move { status == 204 },
    )
    .await;
    assert!(steps >= 4, "deletion has at least 4 storage steps: {steps}");
}

async fn revocation_is_all_or_nothing(backend: Backend) {
    let (app, faults) = faulty_app(backend).await;
    let app = Arc::new(app);
    let client = Arc::new(register_claude(&app).await);
    let steps = each_step_fails(
        &faults,
        || {
            let (app, client) = (app.clone(), client.clone());
            async move { crate::flow::full_grant(&app, &client).await }
        },
        |grant| {
            let (app, client) = (app.clone(), client.clone());
            async move {
                let resp = app
                    .http
                    .post(app.url("/revoke"))
                    .form(&[
                        ("token", grant["refresh_token"].as_str().unwrap()),
                        ("client_id", &client.id),
                        ("client_secret", client.secret.as_deref().unwrap()),
                    ])
                    .send()
                    .await
                    .unwrap();
                (resp.status().as_u16(), Value::Null)
            }
        },
        |grant| {
            let app = app.clone();
            async move {
                let token = Hashed::<kind::Refresh>::of(grant["refresh_token"].as_str().unwrap());
                let (_, grant) = app.store.get_refresh(&token).await.unwrap().unwrap();
                assert!(grant.revoked_at.is_none(), "nothing was revoked");
            }
        },
        |grant, status| {
            let app = app.clone();
            async move {
                // 200 is also the answer for an unknown token: the grant itself must be revoked.
                let token = Hashed::<kind::Refresh>::of(grant["refresh_token"].as_str().unwrap());
                let (_, grant) = app.store.get_refresh(&token).await.unwrap().unwrap();
                status == 200 && grant.revoked_at.is_some()
            }
        },
    )
    .await;
    assert!(
        steps >= 3,
        "revocation has at least 3 storage steps: {steps}"
    );
}

/// UserInfo checks revocation in the database: while it cannot, the answer is 503 (fail closed,
/// retryable), never the claims and never a 401 that would send the client to log in again.
async fn userinfo_fails_closed_while_the_database_is_down(backend: Backend) {
    let (app, faults) = faulty_app(backend).await;
    let app = Arc::new(app);
    let client = Arc::new(register_claude(&app).await);
    let pkce = new_pkce();
    let scope = [("scope", "openid email mcp")];
    let code = dev_flow(&app, &Browser::new(), &client, &pkce, &scope).await;
    let tokens: Value = redeem(&app, &client, &code, &pkce)
        .await
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let steps = each_step_fails(
        &faults,
        || {
            let access = access.clone();
            async move { serde_json::json!({ "access": access }) }
        },
        |input| {
            let app = app.clone();
            async move {
                let resp = app
                    .http
                    .get(app.url("/userinfo"))
                    .bearer_auth(input["access"].as_str().unwrap())
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                if status != 200 {
                    assert_eq!(status, 503);
                    let body: Value = resp.json().await.unwrap();
                    assert_eq!(body["error"], "temporarily_unavailable");
                }
                (status, Value::Null)
            }
        },
        |_| async {},
        |_, status| async move { status == 200 },
    )
    .await;
    assert_eq!(steps, 2, "the token's revocation, then its grant");
}

/// The jwt-bearer grant: a failure at any step records neither the ID-JAG's `jti` nor a grant,
/// so the client's retry with the same ID-JAG is not taken for a replay.
async fn id_jag_exchange_is_all_or_nothing(backend: Backend) {
    use crate::enterprise::{CONFIDENTIAL, IDP, present, spawn_idp, trusting};
    let idp = spawn_idp().await;
    let faults = Arc::new(Faults::default());
    let f = faults.clone();
    let app = spawn_app_wrapped_with(
        backend,
        move |inner| Arc::new(FaultyStore { inner, faults: f }) as DynStore,
        trusting(&idp, None),
    )
    .await;
    idp.serve(&app).await;
    let (app, idp) = (Arc::new(app), Arc::new(idp));
    let steps = each_step_fails(
        &faults,
        || {
            let (app, idp) = (app.clone(), idp.clone());
            async move {
                let grants = app.count_rows("SELECT COUNT(*) FROM grant_families").await;
                let jag = idp.id_jag(&app, CONFIDENTIAL, serde_json::json!({}));
                serde_json::json!({"jag": jag, "grants": grants})
            }
        },
        |input| {
            let app = app.clone();
            async move {
                let resp = present(&app, CONFIDENTIAL, input["jag"].as_str().unwrap(), &[]).await;
                (resp.status().as_u16(), Value::Null)
            }
        },
        |input| {
            let app = app.clone();
            async move {
                let claims = crate::enterprise::payload(input["jag"].as_str().unwrap());
                let used = Hashed::<kind::IdentityAssertionJti>::of(&format!(
                    "{IDP}\n{}",
                    claims["jti"].as_str().unwrap()
                ));
                let recorded = app
                    .count_rows(&format!(
                        "SELECT COUNT(*) FROM client_assertions WHERE jti_hash = '{}'",
                        used.as_str()
                    ))
                    .await;
                assert_eq!(recorded, 0, "the jti is not used up");
                let grants = app.count_rows("SELECT COUNT(*) FROM grant_families").await;
                assert_eq!(
                    Some(grants),
                    input["grants"].as_i64(),
                    "no grant was stored"
                );
            }
        },
        |_, status| async move { status == 200 },
    )
    .await;
    assert!(
        steps >= 5,
        "client look-up, begin, jti, grant, touch, commit: {steps}"
    );
}

both_backends!(
    id_jag_exchange_is_all_or_nothing,
    userinfo_fails_closed_while_the_database_is_down,
    code_redemption_is_all_or_nothing,
    refresh_rotation_is_all_or_nothing,
    consent_completion_is_all_or_nothing,
    login_completion_is_all_or_nothing,
    client_deletion_is_all_or_nothing,
    revocation_is_all_or_nothing,
);
