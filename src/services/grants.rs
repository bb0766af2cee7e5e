//! Taking grants back: a client revoking its own token (RFC 7009), a person revoking a client
//! on the account page, an operator or a client deleting a registration.

use crate::clock::Timestamp;
use crate::oauth::OAuthError;
use crate::oauth::secrets::Hashed;
use crate::services::audit::{self, Kind, Outcome};
use crate::services::clients::Client;
use crate::state::App;
use crate::store::{DynStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// The token is another client's: refused, and nothing is revoked.
    #[error("{0}")]
    Foreign(OAuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `/revoke`: a refresh token revokes its whole grant, an access token itself (by `jti`).
/// Unknown tokens are not an error (RFC 7009 §2.2).
pub async fn revoke_token(app: &App, client: &Client, token: &str) -> Result<(), RevokeError> {
    let now = app.clock.now();
    let foreign = || {
        RevokeError::Foreign(OAuthError::invalid_request(
            "the token was not issued to this client",
        ))
    };
    if let Some((_, grant)) = app.store.get_refresh(&Hashed::of(token)).await? {
        if grant.client_id != client.id {
            return Err(foreign());
        }
        app.store.revoke_grant(&grant.id, now).await?;
        tracing::info!(grant.id = %grant.id, "grant revoked by its client");
        audit::entry(app, Kind::Revocation, Outcome::Revoked)
            .user(&grant.subject, grant.email.as_deref())
            .client(&client.id)
            .resource(&grant.resource)
            .detail("refresh token revoked by its client: the whole grant")
            .record();
        return Ok(());
    }
    if let Ok(claims) = app.keys.verify_signature(token) {
        if claims.client_id != client.id {
            return Err(foreign());
        }
        app.store
            .revoke_access_token(&claims.jti, claims.exp)
            .await?;
        tracing::info!(client.id = %client.id, "access token revoked");
        audit::entry(app, Kind::Revocation, Outcome::Revoked)
            .user(&claims.sub, claims.email.as_deref())
            .client(&client.id)
            .resource(&claims.aud)
            .detail("access token revoked by its client")
            .record();
    }
    Ok(())
}

/// Deletes a registered client and revokes everything it was granted, together. `None` when
/// there is no such client.
pub async fn delete_client(
    store: &DynStore,
    client_id: &str,
    now: Timestamp,
) -> Result<Option<u64>, StoreError> {
    let tx = store.begin().await?;
    let revoked = tx.revoke_grants(None, Some(client_id), now).await?;
    if !tx.delete_client(client_id).await? {
        tx.rollback().await?;
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(revoked))
}
