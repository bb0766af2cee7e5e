//! The storage contract, run against both backends.

use authgate::oauth::client::{ClientMetadata, TokenAuthMethod};
use authgate::oauth::redirect::ApplicationType;
use authgate::oauth::secrets::{PlainSecret, SecretKind};
use authgate::store::{ClientRecord, DynStore};

use crate::both_backends;
use crate::helpers::{Backend, T0, fresh_store};

fn client(id: &str, created_at: i64) -> ClientRecord {
    ClientRecord {
        id: id.to_owned(),
        secret_hash: Some(PlainSecret::new("sekret").hash(SecretKind::ClientSecret)),
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
    assert!(
        got.secret_hash
            .unwrap()
            .verify(SecretKind::ClientSecret, "sekret")
    );
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
    assert!(
        got.secret_hash
            .unwrap()
            .verify(SecretKind::ClientSecret, "sekret")
    );
    assert_eq!(reopened.count_clients().await.unwrap(), 1);
}

both_backends!(
    clients_round_trip,
    idle_clients_are_removed,
    clients_survive_a_restart
);
