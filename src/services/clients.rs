//! Finding the client behind a `client_id` (a registered client in the store, or a metadata
//! document fetched from its URL) and checking how it authenticates.

use crate::clock::Timestamp;
use crate::oauth::assertion::{self, AssertionError, Expected};
use crate::oauth::client::{ClientMetadata, TokenAuthMethod, is_metadata_document_id};
use crate::oauth::request::ClientCredentials;
use crate::oauth::secrets::{Hashed, kind};
use crate::oauth::{ErrorCode, OAuthError};
use crate::state::App;
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub metadata: ClientMetadata,
    pub secret_hash: Option<Hashed<kind::ClientSecret>>,
    pub secret_expires_at: Timestamp,
    /// A metadata-document client: public, identified by its URL's host.
    pub document: bool,
}

#[derive(Debug)]
pub enum ResolveError {
    Unknown(OAuthError),
    Store(StoreError),
}

/// Why a client could not be authenticated.
#[derive(Debug)]
pub enum AuthError {
    /// 401 `invalid_client`; `basic` when the client tried HTTP Basic.
    Client {
        description: String,
        basic: bool,
    },
    Store(StoreError),
}

pub async fn resolve(app: &App, client_id: &str) -> Result<Client, ResolveError> {
    if is_metadata_document_id(client_id) {
        if !app.settings.cimd_enabled {
            return Err(ResolveError::Unknown(OAuthError::new(
                ErrorCode::InvalidClient,
                "client metadata documents are not accepted by this server",
            )));
        }
        let metadata = app
            .cimd
            .resolve(client_id, app.clock.now())
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
    match app.store.get_client(client_id).await {
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

/// Authenticates the client by its registered method (RFC 6749 §2.3). Metadata-document
/// clients are public.
pub async fn authenticate(app: &App, creds: &ClientCredentials) -> Result<Client, AuthError> {
    let basic = creds.used_basic();
    let fail = |why: &str| AuthError::Client {
        description: why.to_owned(),
        basic,
    };
    let client = match resolve(app, &creds.client_id).await {
        Ok(c) => c,
        Err(ResolveError::Unknown(_)) => return Err(fail("unknown client; register again")),
        Err(ResolveError::Store(e)) => return Err(AuthError::Store(e)),
    };
    let registered = client.metadata.token_endpoint_auth_method;
    if registered != creds.method {
        return Err(fail(&format!(
            "this client must authenticate with {}",
            registered.as_str()
        )));
    }
    match registered {
        TokenAuthMethod::None => {}
        TokenAuthMethod::ClientSecretPost | TokenAuthMethod::ClientSecretBasic => {
            let ok = match (&client.secret_hash, &creds.secret) {
                (Some(hash), Some(s)) => hash.verify(s.expose()),
                _ => false,
            };
            if !ok {
                return Err(fail("client authentication failed"));
            }
            if client.secret_expires_at != 0 && client.secret_expires_at <= app.clock.now() {
                return Err(fail("the client secret has expired; register again"));
            }
        }
        TokenAuthMethod::PrivateKeyJwt => {
            let Some(signed) = &creds.assertion else {
                return Err(fail("client authentication failed"));
            };
            verify_assertion(app, &client, signed.expose()).await?;
        }
    }
    Ok(client)
}

/// `private_key_jwt`: the assertion verifies with the client's keys (fetched again once if it
/// names a `kid` the cached set lacks), then is recorded so that it is accepted once, on any
/// instance. The record comes last, so a forged assertion cannot use up a real one's `jti`.
async fn verify_assertion(app: &App, client: &Client, signed: &str) -> Result<(), AuthError> {
    let refuse = |why: String| AuthError::Client {
        description: why,
        basic: false,
    };
    let now = app.clock.now();
    let token_endpoint = app.settings.url("/token");
    let audiences = [token_endpoint.as_str(), app.settings.issuer.as_str()];
    let expected = Expected {
        client_id: &client.id,
        audiences: &audiences,
        signing_alg: client.metadata.token_endpoint_auth_signing_alg.as_deref(),
        now,
    };
    let keys = app
        .cimd
        .client_keys(&client.metadata, now)
        .await
        .map_err(|e| refuse(e.description))?;
    let mut verified = assertion::verify(signed, &keys.keys, &expected);
    if verified == Err(AssertionError::UnknownKey)
        && let Some(since) = keys.cached_since
        && let Some(fresh) = app
            .cimd
            .refetch_keys(&client.metadata, since, now)
            .await
            .map_err(|e| refuse(e.description))?
    {
        verified = assertion::verify(signed, &fresh.keys, &expected);
    }
    let verified = verified.map_err(|e| {
        tracing::info!(client.id = %client.id, reason = %e, "client assertion refused");
        refuse(e.to_string())
    })?;
    let record = Hashed::<kind::AssertionJti>::of(&format!("{}\n{}", client.id, verified.jti));
    if !app
        .store
        .use_client_assertion(&record, verified.remember_until)
        .await
        .map_err(AuthError::Store)?
    {
        tracing::warn!(client.id = %client.id, "client assertion replayed");
        return Err(refuse("the client assertion was already used".to_owned()));
    }
    Ok(())
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
