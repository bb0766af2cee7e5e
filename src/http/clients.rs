//! Finding the client behind a `client_id`: a registered (DCR) client in the store, or a
//! metadata document fetched from its URL.

use crate::clock::Timestamp;
use crate::oauth::client::{ClientMetadata, is_metadata_document_id};
use crate::oauth::secrets::SecretHash;
use crate::oauth::{ErrorCode, OAuthError};
use crate::state::AppState;
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub metadata: ClientMetadata,
    pub secret_hash: Option<SecretHash>,
    pub secret_expires_at: Timestamp,
    /// A metadata-document client: public, identified by its URL's host.
    pub document: bool,
}

#[derive(Debug)]
pub enum ResolveError {
    Unknown(OAuthError),
    Store(StoreError),
}

pub async fn resolve(state: &AppState, client_id: &str) -> Result<Client, ResolveError> {
    if is_metadata_document_id(client_id) {
        if !state.settings.cimd_enabled {
            return Err(ResolveError::Unknown(OAuthError::new(
                ErrorCode::InvalidClient,
                "client metadata documents are not accepted by this server",
            )));
        }
        let metadata = state
            .cimd
            .resolve(client_id, state.clock.now())
            .await
            .map_err(ResolveError::Unknown)?;
        return Ok(Client {
            id: client_id.to_owned(),
            metadata,
            secret_hash: None,
            secret_expires_at: 0,
            document: true,
        });
    }
    match state.store.get_client(client_id).await {
        Ok(Some(c)) => Ok(Client {
            id: c.id,
            metadata: c.metadata,
            secret_hash: c.secret_hash,
            secret_expires_at: c.secret_expires_at,
            document: false,
        }),
        Ok(None) => Err(ResolveError::Unknown(OAuthError::new(
            ErrorCode::InvalidClient,
            "unknown client_id; register again",
        ))),
        Err(e) => Err(ResolveError::Store(e)),
    }
}

impl Client {
    /// The name shown to people: for a document client the verified host is what can be
    /// trusted, so it is shown beside any self-asserted name.
    pub fn display_name(&self) -> String {
        match &self.metadata.client_name {
            Some(n) if !n.trim().is_empty() => n.trim().to_owned(),
            _ => self
                .document_host()
                .unwrap_or_else(|| "An application".to_owned()),
        }
    }

    pub fn document_host(&self) -> Option<String> {
        if !self.document {
            return None;
        }
        url::Url::parse(&self.id)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
    }
}
