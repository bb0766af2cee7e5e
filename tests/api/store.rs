//! The storage contract, run against both backends.

use authgate::domain::grant::{AuthorizationCode, CodeState, Grant, RefreshState, RefreshToken};
use authgate::domain::pending::{
    ClientAuthorization, LoginConstraint, PendingAuthorization, Stage, UpstreamLeg,
};
use authgate::oauth::client::{ClientMetadata, TokenAuthMethod};
use authgate::oauth::pkce::{self, CodeChallenge};
use authgate::oauth::redirect::ApplicationType;
use authgate::oauth::scope::ScopeSet;
use authgate::oauth::secrets::{Hashed, Secret, kind};
use authgate::store::{
    ClientRecord, DynStore, McpSessionRecord, SessionRecord, UpstreamTokenRecord,
};

use crate::both_backends;
use crate::helpers::{Backend, T0, fresh_store};

fn client(id: &str, created_at: i64) -> ClientRecord {
    ClientRecord {
        id: id.to_owned(),
        secret_hash: Some(Secret::<kind::ClientSecret>::new("sekret").hash()),
        secret_expires_at: 0,
        metadata: ClientMetadata {
            redirect_uris: vec!["https://claude.ai/api/mcp/auth_callback".into()],
            token_endpoint_auth_method: TokenAuthMethod::ClientSecretPost,
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            response_types: vec!["code".into()],
            application_type: ApplicationType::Web,
            client_name: Some("Claude".into()),
            client_uri: None,
            logo_uri: None,
            tos_uri: None,
            policy_uri: None,
            contacts: None,
            scope: Some(String::new()),
            software_id: None,
            software_version: None,
            jwks_uri: None,
            jwks: None,
            token_endpoint_auth_signing_alg: None,
            id_token_signed_response_alg: Some("ES256".into()),
        },
        created_at,
        last_used_at: None,
    }
}

async fn clients_round_trip(backend: Backend) {
    let store: DynStore = fresh_store(backend).await;
    store.ping().await.unwrap();
    let c = client("agc_one", T0);
    store.insert_client(&c).await.unwrap();
    let got = store.get_client("agc_one").await.unwrap().unwrap();
    assert_eq!(got.metadata, c.metadata);
    assert!(got.secret_hash.unwrap().verify("sekret"));
    assert_eq!(got.created_at, T0);
    assert_eq!(got.last_used_at, None);
    assert!(store.get_client("agc_missing").await.unwrap().is_none());
    assert!(store.insert_client(&c).await.is_err(), "ids are unique");
    assert!(store.delete_client("agc_one").await.unwrap());
    assert!(!store.delete_client("agc_one").await.unwrap());
    assert!(store.get_client("agc_one").await.unwrap().is_none());
}

async fn idle_clients_are_removed(backend: Backend) {
    let store = fresh_store(backend).await;
    store
        .insert_client(&client("agc_old_unused", T0))
        .await
        .unwrap();
    store
        .insert_client(&client("agc_old_used", T0))
        .await
        .unwrap();
    store
        .insert_client(&client("agc_new", T0 + 500))
        .await
        .unwrap();
    store.touch_client("agc_old_used", T0 + 10).await.unwrap();
    assert_eq!(store.delete_idle_clients(T0 + 100).await.unwrap(), 1);
    assert!(store.get_client("agc_old_unused").await.unwrap().is_none());
    let used = store.get_client("agc_old_used").await.unwrap().unwrap();
    assert_eq!(used.last_used_at, Some(T0 + 10));
    assert!(store.get_client("agc_new").await.unwrap().is_some());
}

async fn clients_survive_a_restart(backend: Backend) {
    let name = format!("t{}", uuid::Uuid::new_v4().simple());
    let store = crate::helpers::open_store(backend, &name).await;
    store
        .insert_client(&client("agc_durable", T0))
        .await
        .unwrap();
    drop(store);
    let reopened = crate::helpers::open_store(backend, &name).await;
    let got = reopened.get_client("agc_durable").await.unwrap().unwrap();
    assert!(got.secret_hash.unwrap().verify("sekret"));
    assert_eq!(reopened.list_clients().await.unwrap().len(), 1);
}

both_backends!(
    clients_round_trip,
    idle_clients_are_removed,
    clients_survive_a_restart
);

fn grant(id: &str, expires_at: i64) -> Grant {
    Grant {
        id: id.into(),
        client_id: "c".into(),
        subject: "s".into(),
        email: None,
        email_verified: None,
        scope: ScopeSet::parse("mcp"),
        resource: "https://x/mcp".into(),
        auth_time: None,
        created_at: T0,
        expires_at,
        last_used_at: T0,
        revoked_at: None,
    }
}

fn code(value: &str, grant_id: &str, expires_at: i64) -> AuthorizationCode {
    AuthorizationCode {
        hash: Hashed::of(value),
        grant_id: grant_id.into(),
        client_id: "c".into(),
        redirect_uri: "https://x/cb".into(),
        challenge: CodeChallenge::from_stored(pkce::s256("verifier")),
        nonce: None,
        created_at: T0,
        expires_at,
        state: CodeState::Issued,
    }
}

fn refresh(value: &str, grant_id: &str, rotated_at: Option<i64>) -> RefreshToken {
    RefreshToken {
        hash: Hashed::of(value),
        grant_id: grant_id.into(),
        created_at: T0,
        expires_at: T0 + 5000,
        state: match rotated_at {
            None => RefreshState::Current,
            Some(at) => RefreshState::Rotated {
                at,
                sealed_successor: "sealed".into(),
            },
        },
    }
}

fn session(value: &str, expires_at: i64) -> SessionRecord {
    SessionRecord {
        id: Hashed::of(value),
        subject: "s".into(),
        email: None,
        email_verified: None,
        created_at: T0,
        expires_at,
    }
}

/// What an ID token needs survives the database: the request's nonce and login constraint, the
/// session's and grant's verified email and login time, the code's nonce.
async fn openid_fields_round_trip(backend: Backend) {
    let store = fresh_store(backend).await;
    let request = ClientAuthorization {
        client_id: "c".into(),
        redirect_uri: "https://x/cb".into(),
        state: None,
        code_challenge: CodeChallenge::from_stored(pkce::s256("verifier")),
        scope: ScopeSet::parse("mcp openid email"),
        resource: "https://x/mcp".into(),
        nonce: Some("n-0S6_WzA2Mj".into()),
        login: LoginConstraint {
            not_before: Some(T0 - 300),
            subject: Some("ag_ann".into()),
        },
    };
    let pending =
        PendingAuthorization::authorize(Hashed::of("p"), Hashed::of("b"), request.clone(), T0);
    store.insert_pending(&pending).await.unwrap();
    let read = store.get_pending(&Hashed::of("p")).await.unwrap().unwrap();
    assert_eq!(read.client_request(), Some(&request));

    let session = SessionRecord {
        email: Some("ann@example.com".into()),
        email_verified: Some(true),
        ..session("sess", T0 + 100)
    };
    store.insert_session(&session).await.unwrap();
    let read = store.get_session(&session.id).await.unwrap().unwrap();
    assert_eq!(read.email_verified, Some(true));

    let g = Grant {
        email: Some("ann@example.com".into()),
        email_verified: Some(false),
        auth_time: Some(T0 - 5),
        ..grant("g", T0 + 10_000)
    };
    let c = AuthorizationCode::issue(Hashed::of("code"), "g", &request, T0);
    store.insert_grant(&g, &c).await.unwrap();
    let (code, grant) = store.get_code(&Hashed::of("code")).await.unwrap().unwrap();
    assert_eq!(code.nonce.as_deref(), Some("n-0S6_WzA2Mj"));
    assert_eq!(grant, g);
    assert_eq!(store.get_grant("g").await.unwrap().unwrap(), g);
}

async fn openid_columns_refuse_impossible_rows(backend: Backend) {
    let store = fresh_store(backend).await;
    // The database holds the model's rules too: no email_verified without an email, no nonce
    // longer than a request may send.
    let unverifiable = Grant {
        email_verified: Some(true),
        ..grant("g1", T0 + 10_000)
    };
    assert!(
        store
            .insert_grant(&unverifiable, &code("c1", "g1", T0 + 60))
            .await
            .is_err()
    );
    let long_nonce = AuthorizationCode {
        nonce: Some("n".repeat(513)),
        ..code("c2", "g2", T0 + 60)
    };
    assert!(
        store
            .insert_grant(&grant("g2", T0 + 10_000), &long_nonce)
            .await
            .is_err()
    );
}

mod openid {
    use super::*;
    both_backends!(
        openid_fields_round_trip,
        openid_columns_refuse_impossible_rows
    );
}

async fn expired_data_is_cleaned_up(backend: Backend) {
    let store = fresh_store(backend).await;
    store
        .insert_grant(
            &grant("live", T0 + 10_000),
            &code("code-live", "live", T0 + 60),
        )
        .await
        .unwrap();
    store
        .insert_grant(
            &grant("dead", T0 + 10),
            &code("code-old", "dead", T0 - 7200),
        )
        .await
        .unwrap();
    for r in [
        refresh("rt-current", "live", None),
        refresh("rt-rotated-long-ago", "live", Some(T0 - 1000)),
        refresh("rt-rotated-just-now", "live", Some(T0 + 90)),
        refresh("rt-of-dead-grant", "dead", None),
    ] {
        store.insert_refresh(&r).await.unwrap();
    }
    store
        .insert_session(&session("old", T0 + 50))
        .await
        .unwrap();
    store
        .insert_session(&session("new", T0 + 500))
        .await
        .unwrap();
    store.revoke_access_token("jti-old", T0 + 50).await.unwrap();
    store
        .revoke_access_token("jti-new", T0 + 500)
        .await
        .unwrap();

    let removed = store.delete_expired(T0 + 100, 60).await.unwrap();
    assert_eq!(removed, 6);
    let code_of = |v: &str| Hashed::<kind::Code>::of(v);
    let refresh_of = |v: &str| Hashed::<kind::Refresh>::of(v);
    assert!(
        store
            .get_code(&code_of("code-live"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .get_code(&code_of("code-old"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.get_grant("live").await.unwrap().is_some());
    assert!(store.get_grant("dead").await.unwrap().is_none());
    for (value, kept) in [
        ("rt-current", true),
        ("rt-rotated-just-now", true),
        ("rt-rotated-long-ago", false),
        ("rt-of-dead-grant", false),
    ] {
        let found = store.get_refresh(&refresh_of(value)).await.unwrap();
        assert_eq!(found.is_some(), kept, "{value}");
    }
    assert!(
        store
            .get_session(&Hashed::of("new"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        store
            .get_session(&Hashed::of("old"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.is_access_token_revoked("jti-new").await.unwrap());
    assert!(!store.is_access_token_revoked("jti-old").await.unwrap());
}

mod cleanup {
    use super::*;
    both_backends!(expired_data_is_cleaned_up);
}

fn h(id: &str) -> Hashed<kind::McpSession> {
    Hashed::of(id)
}

fn mcp_session(id: &str, subject: &str, client_id: &str, now: i64) -> McpSessionRecord {
    McpSessionRecord {
        id: h(id),
        resource: "https://x/mcp".into(),
        subject: subject.into(),
        client_id: client_id.into(),
        created_at: now,
        last_used_at: now,
        expires_at: now + 1000,
    }
}

async fn mcp_sessions_are_bound_to_their_first_caller(backend: Backend) {
    let store = fresh_store(backend).await;
    let ann = mcp_session("h1", "ann", "c1", T0);
    assert!(store.bind_mcp_session(&ann).await.unwrap());
    let got = store
        .get_mcp_session(&h("h1"), "https://x/mcp")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, ann);
    assert!(
        store
            .get_mcp_session(&h("h1"), "https://x/other/mcp")
            .await
            .unwrap()
            .is_none(),
        "bindings are per resource"
    );
    assert!(
        store
            .get_mcp_session(&h("h2"), "https://x/mcp")
            .await
            .unwrap()
            .is_none()
    );

    for thief in [
        mcp_session("h1", "bob", "c1", T0 + 5),
        mcp_session("h1", "ann", "c2", T0 + 5),
    ] {
        assert!(
            !store.bind_mcp_session(&thief).await.unwrap(),
            "{thief:?} must not take over"
        );
    }
    assert_eq!(
        store
            .get_mcp_session(&h("h1"), "https://x/mcp")
            .await
            .unwrap()
            .unwrap(),
        ann,
        "the first binding is left as it was"
    );
    let again = mcp_session("h1", "ann", "c1", T0 + 7);
    assert!(store.bind_mcp_session(&again).await.unwrap());
    let got = store
        .get_mcp_session(&h("h1"), "https://x/mcp")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.created_at, got.last_used_at, got.expires_at),
        (T0, T0 + 7, T0 + 1007)
    );
    let mut elsewhere = mcp_session("h1", "bob", "c9", T0);
    elsewhere.resource = "https://x/other/mcp".into();
    assert!(
        store.bind_mcp_session(&elsewhere).await.unwrap(),
        "the same id from another resource's upstream is another session"
    );

    store
        .touch_mcp_session(&h("h1"), "https://x/mcp", T0 + 100, T0 + 1100)
        .await
        .unwrap();
    store
        .touch_mcp_session(&h("h1"), "https://x/mcp", T0 + 50, T0 + 1050)
        .await
        .unwrap();
    let got = store
        .get_mcp_session(&h("h1"), "https://x/mcp")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.last_used_at, got.expires_at),
        (T0 + 100, T0 + 1100),
        "a late touch never moves the use time back"
    );

    assert!(
        store
            .delete_mcp_session(&h("h1"), "https://x/mcp")
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_mcp_session(&h("h1"), "https://x/mcp")
            .await
            .unwrap()
    );
    assert!(
        store
            .get_mcp_session(&h("h1"), "https://x/mcp")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_mcp_session(&h("h1"), "https://x/other/mcp")
            .await
            .unwrap()
            .is_some(),
        "only that resource's binding ends"
    );
    assert!(
        store
            .bind_mcp_session(&mcp_session("h1", "bob", "c1", T0 + 200))
            .await
            .unwrap(),
        "an ended binding no longer blocks the id"
    );
}

async fn expired_mcp_sessions_are_cleaned_up(backend: Backend) {
    let store = fresh_store(backend).await;
    let mut old = mcp_session("old", "ann", "c1", T0);
    old.expires_at = T0 + 50;
    store.bind_mcp_session(&old).await.unwrap();
    store
        .bind_mcp_session(&mcp_session("live", "ann", "c1", T0))
        .await
        .unwrap();
    assert_eq!(store.delete_expired(T0 + 100, 60).await.unwrap(), 1);
    assert!(
        store
            .get_mcp_session(&h("old"), "https://x/mcp")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .get_mcp_session(&h("live"), "https://x/mcp")
            .await
            .unwrap()
            .is_some()
    );
}

mod mcp_sessions {
    use super::*;
    both_backends!(
        mcp_sessions_are_bound_to_their_first_caller,
        expired_mcp_sessions_are_cleaned_up
    );
}

/// `n` concurrent calls of `op` on one store; how many applied.
async fn race<F, Fut>(n: usize, op: F) -> usize
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(op())).collect();
    let mut applied = 0;
    for t in tasks {
        applied += usize::from(t.await.unwrap());
    }
    applied
}

async fn a_code_is_used_once_under_races(backend: Backend) {
    let (store, name) = crate::helpers::fresh_named_store(backend).await;
    store
        .insert_grant(&grant("g", T0 + 10_000), &code("c1", "g", T0 + 60))
        .await
        .unwrap();
    let hash = Hashed::<kind::Code>::of("c1");
    let won = race(16, || {
        let (store, hash) = (store.clone(), hash.clone());
        async move { store.use_code(&hash, T0 + 1).await.unwrap() }
    })
    .await;
    assert_eq!(won, 1, "one redemption, however many race");
    let (c, _) = store.get_code(&hash).await.unwrap().unwrap();
    assert_eq!(c.state, CodeState::Redeemed { at: T0 + 1 });

    // The same inside units of work, each from its own transaction, on two pools (instances).
    store
        .insert_grant(&grant("g2", T0 + 10_000), &code("c2", "g2", T0 + 60))
        .await
        .unwrap();
    let other = crate::helpers::open_store(backend, &name).await;
    let hash = Hashed::<kind::Code>::of("c2");
    let won = race(8, || {
        let (a, b, hash) = (store.clone(), other.clone(), hash.clone());
        async move {
            let pick = if rand_bit() { a } else { b };
            let tx = pick.begin().await.unwrap();
            let used = tx.use_code(&hash, T0 + 2).await.unwrap();
            tx.commit().await.unwrap();
            used
        }
    })
    .await;
    assert_eq!(won, 1, "one transaction redeems it, across instances");
}

fn rand_bit() -> bool {
    uuid::Uuid::new_v4().as_bytes()[0] & 1 == 1
}

async fn a_refresh_token_rotates_once_under_races(backend: Backend) {
    let store = fresh_store(backend).await;
    store
        .insert_grant(&grant("g", T0 + 10_000), &code("c", "g", T0 + 60))
        .await
        .unwrap();
    store
        .insert_refresh(&refresh("rt", "g", None))
        .await
        .unwrap();
    let hash = Hashed::<kind::Refresh>::of("rt");
    let won = race(12, || {
        let (store, hash) = (store.clone(), hash.clone());
        async move {
            let tx = store.begin().await.unwrap();
            let sealed = uuid::Uuid::new_v4().to_string();
            let rotated = tx.rotate_refresh(&hash, T0 + 5, &sealed).await.unwrap();
            if rotated {
                let successor = refresh(&sealed, "g", None);
                tx.insert_refresh(&successor).await.unwrap();
                assert!(tx.touch_grant("g", T0 + 5).await.unwrap());
                tx.commit().await.unwrap();
            } else {
                tx.rollback().await.unwrap();
            }
            rotated
        }
    })
    .await;
    assert_eq!(won, 1);
    let (token, _) = store.get_refresh(&hash).await.unwrap().unwrap();
    let RefreshState::Rotated {
        at,
        sealed_successor,
    } = token.state
    else {
        panic!("rotated");
    };
    assert_eq!(at, T0 + 5);
    assert!(
        store
            .get_refresh(&Hashed::of(&sealed_successor))
            .await
            .unwrap()
            .is_some(),
        "the winner's successor, and only it, was stored"
    );
    assert_eq!(
        store.get_grant("g").await.unwrap().unwrap().last_used_at,
        T0 + 5
    );
    assert!(
        !store.touch_grant("g", T0 + 20_000).await.unwrap(),
        "an ended grant is not touched"
    );
}

fn pending(id: &str) -> PendingAuthorization {
    PendingAuthorization::authorize(
        Hashed::of(id),
        Hashed::of("browser"),
        ClientAuthorization {
            client_id: "agc_1".into(),
            redirect_uri: "https://claude.ai/cb".into(),
            state: Some("st".into()),
            code_challenge: CodeChallenge::from_stored(pkce::s256("verifier")),
            scope: ScopeSet::parse("mcp"),
            resource: "https://x/mcp".into(),
            nonce: None,
            login: LoginConstraint::default(),
        },
        T0,
    )
}

fn leg(state: &str) -> UpstreamLeg {
    UpstreamLeg {
        state: Hashed::of(state),
        nonce: "nonce".into(),
        verifier: "verifier".into(),
    }
}

async fn a_pending_request_completes_once_under_races(backend: Backend) {
    let store = fresh_store(backend).await;
    let p = pending("p1");
    store.insert_pending(&p).await.unwrap();
    assert_eq!(store.get_pending(&p.id).await.unwrap().unwrap(), p);
    assert!(store.set_pending_upstream(&p.id, &leg("s1")).await.unwrap());
    assert!(
        store.set_pending_upstream(&p.id, &leg("s2")).await.unwrap(),
        "a double submit replaces the leg"
    );
    let found = store
        .get_pending_by_upstream_state(&Hashed::of("s2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.stage, Stage::AtUpstream(leg("s2")));
    let id = p.id.clone();
    let won = race(10, || {
        let (store, id) = (store.clone(), id.clone());
        async move {
            let tx = store.begin().await.unwrap();
            let finished = tx.finish_pending(&id).await.unwrap();
            tx.commit().await.unwrap();
            finished
        }
    })
    .await;
    assert_eq!(won, 1, "one completion");
    let done = store.get_pending(&p.id).await.unwrap().unwrap();
    assert_eq!(done.stage, Stage::Done, "and the leg's secrets are gone");
    assert!(!store.set_pending_upstream(&p.id, &leg("s3")).await.unwrap());

    let account = PendingAuthorization::account_login(
        Hashed::of("p2"),
        Hashed::of("browser"),
        "https://x/account".into(),
        leg("s4"),
        T0,
    );
    store.insert_pending(&account).await.unwrap();
    assert_eq!(
        store.get_pending(&account.id).await.unwrap().unwrap(),
        account
    );
}

async fn units_of_work_commit_all_or_nothing(backend: Backend) {
    let store = fresh_store(backend).await;
    // Dropped without a commit: nothing happened.
    {
        let tx = store.begin().await.unwrap();
        tx.insert_client(&client("agc_dropped", T0)).await.unwrap();
        tx.insert_grant(&grant("g1", T0 + 100), &code("c1", "g1", T0 + 60))
            .await
            .unwrap();
        assert!(
            tx.get_client("agc_dropped").await.unwrap().is_some(),
            "a unit of work sees its own writes"
        );
    }
    let tx = store.begin().await.unwrap();
    tx.insert_client(&client("agc_rolled_back", T0))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    for id in ["agc_dropped", "agc_rolled_back"] {
        assert!(store.get_client(id).await.unwrap().is_none(), "{id}");
    }
    assert!(store.get_grant("g1").await.unwrap().is_none());
    let tx = store.begin().await.unwrap();
    tx.insert_client(&client("agc_kept", T0)).await.unwrap();
    tx.insert_grant(&grant("g2", T0 + 100), &code("c2", "g2", T0 + 60))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(store.get_client("agc_kept").await.unwrap().is_some());
    assert!(store.get_grant("g2").await.unwrap().is_some());
    // The database holds the model's rules too: a code without its grant is refused.
    assert!(
        store
            .insert_grant(&grant("g3", T0 - 1), &code("c3", "g3", T0 + 60))
            .await
            .is_err(),
        "a grant that ends before it starts"
    );
    assert!(store.get_grant("g3").await.unwrap().is_none(), "atomic");
    assert!(
        store
            .insert_refresh(&refresh("orphan", "no-such-grant", None))
            .await
            .is_err(),
        "a refresh token without its grant"
    );
}

fn upstream_tokens(grant_id: &str, version: i64) -> UpstreamTokenRecord {
    UpstreamTokenRecord {
        grant_id: grant_id.into(),
        access_sealed: format!("sealed1:access-v{version}"),
        refresh_sealed: Some(format!("sealed1:refresh-v{version}")),
        obtained_at: T0,
        expires_at: Some(T0 + 3600),
        version,
        lease_until: None,
    }
}

/// One lease among racing instances; a refresh is stored only over the version it started
/// from; the tokens go with their grant (revocation, revocation by filter, clean-up).
async fn upstream_tokens_are_leased_once_and_go_with_their_grant(backend: Backend) {
    let (store, name) = crate::helpers::fresh_named_store(backend).await;
    let other = crate::helpers::open_store(backend, &name).await;
    store
        .insert_grant(&grant("g", T0 + 10_000), &code("c", "g", T0 + 60))
        .await
        .unwrap();
    assert!(
        store
            .insert_upstream_tokens(&UpstreamTokenRecord {
                access_sealed: "ya29.plain".into(),
                ..upstream_tokens("g", 1)
            })
            .await
            .is_err(),
        "the database refuses a token in the clear"
    );
    store
        .insert_upstream_tokens(&upstream_tokens("g", 1))
        .await
        .unwrap();
    assert_eq!(
        store.get_upstream_tokens("g").await.unwrap(),
        Some(upstream_tokens("g", 1))
    );
    assert!(
        store
            .insert_upstream_tokens(&upstream_tokens("no-such-grant", 1))
            .await
            .is_err(),
        "only for a grant that exists"
    );

    let won = race(8, || {
        let (a, b) = (store.clone(), other.clone());
        async move {
            let pick = if rand_bit() { a } else { b };
            pick.lease_upstream_tokens("g", 1, T0 + 100, T0 + 130)
                .await
                .unwrap()
        }
    })
    .await;
    assert_eq!(won, 1, "one instance refreshes");
    assert!(
        !store
            .lease_upstream_tokens("g", 1, T0 + 129, T0 + 159)
            .await
            .unwrap()
    );
    assert!(
        store
            .lease_upstream_tokens("g", 1, T0 + 130, T0 + 160)
            .await
            .unwrap(),
        "a lease that ran out is taken over"
    );
    assert!(
        !store
            .lease_upstream_tokens("g", 2, T0 + 200, T0 + 230)
            .await
            .unwrap(),
        "only at the version read"
    );
    store.release_upstream_lease("g", 1).await.unwrap();
    assert_eq!(
        store
            .get_upstream_tokens("g")
            .await
            .unwrap()
            .unwrap()
            .lease_until,
        None
    );

    let next = upstream_tokens("g", 2);
    let won = race(4, || {
        let (a, b, next) = (store.clone(), other.clone(), next.clone());
        async move {
            let pick = if rand_bit() { a } else { b };
            pick.replace_upstream_tokens(&next, 1).await.unwrap()
        }
    })
    .await;
    assert_eq!(
        won, 1,
        "a refresh is stored once, over the version it started from"
    );
    assert_eq!(store.get_upstream_tokens("g").await.unwrap(), Some(next));

    assert!(store.revoke_grant("g", T0 + 300).await.unwrap());
    assert_eq!(store.get_upstream_tokens("g").await.unwrap(), None);
    assert!(
        !store
            .replace_upstream_tokens(&upstream_tokens("g", 3), 2)
            .await
            .unwrap(),
        "a refresh finishing after the revocation stores nothing"
    );

    for (id, subject) in [("h1", "ann"), ("h2", "bob")] {
        let g = Grant {
            subject: subject.into(),
            ..grant(id, T0 + 10_000)
        };
        store
            .insert_grant(&g, &code(id, id, T0 + 60))
            .await
            .unwrap();
        store
            .insert_upstream_tokens(&upstream_tokens(id, 1))
            .await
            .unwrap();
    }
    assert_eq!(store.revoke_grants(Some("ann"), None, T0).await.unwrap(), 1);
    assert_eq!(store.get_upstream_tokens("h1").await.unwrap(), None);
    assert!(store.get_upstream_tokens("h2").await.unwrap().is_some());
    store.delete_expired(T0 + 20_000, 60).await.unwrap();
    assert_eq!(
        store.get_upstream_tokens("h2").await.unwrap(),
        None,
        "gone with the grant at its end"
    );
}

mod exactly_once {
    use super::*;
    both_backends!(
        upstream_tokens_are_leased_once_and_go_with_their_grant,
        a_code_is_used_once_under_races,
        a_refresh_token_rotates_once_under_races,
        a_pending_request_completes_once_under_races,
        units_of_work_commit_all_or_nothing,
    );
}

/// A client assertion is accepted once however many requests race with it, stays refused until
/// it has expired, and is then cleaned up.
async fn client_assertions_are_used_once(backend: Backend) {
    let store = fresh_store(backend).await;
    let jti = Hashed::<kind::AssertionJti>::of("https://c.example/doc.json\nj-1");
    let attempts = (0..8).map(|_| {
        let store = store.clone();
        let jti = jti.clone();
        tokio::spawn(async move { store.use_client_assertion(&jti, T0 + 100).await.unwrap() })
    });
    let mut won = 0;
    for attempt in attempts {
        won += usize::from(attempt.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one of the racing uses is accepted");
    let other = Hashed::<kind::AssertionJti>::of("https://c.example/doc.json\nj-2");
    assert!(store.use_client_assertion(&other, T0 + 300).await.unwrap());
    assert_eq!(store.delete_expired(T0 + 200, 60).await.unwrap(), 1);
    assert!(
        !store.use_client_assertion(&other, T0 + 300).await.unwrap(),
        "kept until its own expiry"
    );
    assert!(
        store.use_client_assertion(&jti, T0 + 400).await.unwrap(),
        "an expired record is gone"
    );
}

/// ID-JAGs are recorded as client assertions are, once under races, in the same table; the
/// two kinds never collide, even for the same text. Their grants stand without a code.
async fn identity_assertions_are_used_once_apart_from_client_assertions(backend: Backend) {
    let store = fresh_store(backend).await;
    let text = "https://idp.example\nj-1";
    let jti = Hashed::<kind::IdentityAssertionJti>::of(text);
    let attempts = (0..8).map(|_| {
        let store = store.clone();
        let jti = jti.clone();
        tokio::spawn(async move { store.use_identity_assertion(&jti, T0 + 100).await.unwrap() })
    });
    let mut won = 0;
    for attempt in attempts {
        won += usize::from(attempt.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one of the racing uses is accepted");
    assert!(
        store
            .use_client_assertion(&Hashed::<kind::AssertionJti>::of(text), T0 + 100)
            .await
            .unwrap(),
        "a client assertion with the same text is another record"
    );
    assert_eq!(store.delete_expired(T0 + 200, 60).await.unwrap(), 2);
    assert!(store.use_identity_assertion(&jti, T0 + 400).await.unwrap());

    let direct = grant("g-direct", T0 + 3600);
    store.insert_direct_grant(&direct).await.unwrap();
    assert_eq!(store.get_grant("g-direct").await.unwrap(), Some(direct));
    assert!(
        store
            .insert_direct_grant(&grant("g-backwards", T0 - 1))
            .await
            .is_err(),
        "a grant that ends before it starts"
    );
}

mod client_assertions {
    use super::*;
    both_backends!(
        client_assertions_are_used_once,
        identity_assertions_are_used_once_apart_from_client_assertions,
    );
}
