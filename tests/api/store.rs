//! The storage contract, run against both backends.

use authgate::domain::grant::{AuthorizationCode, CodeState, Grant, RefreshState, RefreshToken};
use authgate::domain::pending::{ClientAuthorization, LoginConstraint, PendingAuthorization};
use authgate::oauth::client::{ClientMetadata, TokenAuthMethod};
use authgate::oauth::pkce::{self, CodeChallenge};
use authgate::oauth::redirect::ApplicationType;
use authgate::oauth::scope::ScopeSet;
use authgate::oauth::secrets::{Hashed, Secret, kind};
use authgate::store::{ClientRecord, DynStore, McpSessionRecord, SessionRecord};

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
