//! The user's upstream tokens, for the MCP servers that call the upstream provider's APIs as the
//! user: sealed with the grant at the login, handed out fresh (refreshed before they expire, by
//! one instance at a time), and given up when the provider will not renew them. Giving up revokes
//! the grant, so the client's next refresh fails and it authorizes again, which logs in at the
//! provider and brings new tokens.
//!
//! Nothing is cached: each request reads the row, and plaintext tokens live only as long as the
//! request that uses them.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::domain::upstream_token::{
    LEASE_SECONDS, Lifetime, Part, Plan, SealedWaitingTokens, UpstreamTokens, plan,
    sealing_context, waiting_sealing_context,
};
use crate::keys::TokenRejection;
use crate::oauth::secrets::{Hashed, Secret, kind};
use crate::oauth::token_exchange::TokenExchangeRequest;
use crate::oauth::{ErrorCode, OAuthError};
use crate::sealing::{SealError, TokenSealer};
use crate::services::clients::Client;
use crate::services::tokens::TokenError;
use crate::services::upstream::RefreshError;
use crate::state::App;
use crate::store::{StoreError, UpstreamTokenRecord};
use crate::telemetry::names;

/// How often a request waiting for another instance's refresh looks again, and for how long.
/// The wait outlasts the provider request's own time-out (10 s), so a refresh in progress
/// normally finishes within it.
const WAIT_STEP: Duration = Duration::from_millis(100);
const WAIT_ROUNDS: u32 = 120;

/// An access token for the MCP server, and how long it has left if the provider said.
#[derive(Debug)]
pub struct Fresh {
    pub access_token: Secret<kind::UpstreamAccess>,
    pub expires_in: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamTokenError {
    /// There is no usable token and no way to renew it: the grant is revoked, and the client
    /// must authorize again.
    #[error("the user must authorize again")]
    Reauthorize,
    /// The provider could not renew the token now (unreachable, an error other than
    /// `invalid_grant`, or another instance's refresh did not finish in time).
    #[error("the upstream token cannot be renewed now: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The row that keeps `tokens`, obtained at `now`, with the grant `grant_id`.
pub fn seal(
    app: &App,
    grant_id: &str,
    tokens: &UpstreamTokens,
    now: Timestamp,
) -> Result<UpstreamTokenRecord, SealError> {
    let sealer = sealer(app)?;
    sealed_record(app, sealer, grant_id, tokens, None, now, 1)
}

/// A login's tokens as they wait for its confirmation: one sealed value, bound to the request,
/// with the access token's expiry as a time (the confirmation may come minutes later).
#[derive(serde::Serialize, serde::Deserialize)]
struct Waiting {
    access_token: String,
    refresh_token: Option<String>,
    expires_at: Option<Timestamp>,
}

/// Seals the tokens a login brought, obtained at `now`, to wait with the request `pending_id`.
pub fn seal_waiting(
    app: &App,
    pending_id: &Hashed<kind::Pending>,
    tokens: &UpstreamTokens,
    now: Timestamp,
) -> Result<SealedWaitingTokens, SealError> {
    let waiting = Waiting {
        access_token: tokens.access_token.expose().to_owned(),
        refresh_token: tokens.refresh_token.as_ref().map(|r| r.expose().to_owned()),
        expires_at: tokens.expires_at(now),
    };
    let plain = serde_json::to_string(&waiting).map_err(|_| SealError::Seal)?;
    let sealed = sealer(app)?.seal(
        &waiting_sealing_context(pending_id.as_str()),
        &plain,
        app.random.as_ref(),
    )?;
    Ok(SealedWaitingTokens::from_stored(sealed))
}

/// The tokens waiting with the request `pending_id`, as if the provider had answered at `now`.
pub fn open_waiting(
    app: &App,
    pending_id: &Hashed<kind::Pending>,
    sealed: &SealedWaitingTokens,
    now: Timestamp,
) -> Result<UpstreamTokens, SealError> {
    let plain = sealer(app)?.open(
        &waiting_sealing_context(pending_id.as_str()),
        sealed.as_str(),
    )?;
    let waiting: Waiting = serde_json::from_str(&plain).map_err(|_| SealError::Open)?;
    Ok(UpstreamTokens {
        access_token: Secret::new(waiting.access_token),
        refresh_token: waiting.refresh_token.map(Secret::new),
        expires_in: waiting.expires_at.map(|at| at - now),
    })
}

fn sealer(app: &App) -> Result<&TokenSealer, SealError> {
    // Settings require the key whenever a resource keeps upstream tokens.
    app.settings
        .upstream_token_sealer
        .as_ref()
        .ok_or(SealError::Key)
}

/// `kept_refresh`: the sealed refresh token to keep when the provider did not rotate it.
fn sealed_record(
    app: &App,
    sealer: &TokenSealer,
    grant_id: &str,
    tokens: &UpstreamTokens,
    kept_refresh: Option<&str>,
    now: Timestamp,
    version: i64,
) -> Result<UpstreamTokenRecord, SealError> {
    let random = app.random.as_ref();
    let access_sealed = sealer.seal(
        &sealing_context(grant_id, Part::Access),
        tokens.access_token.expose(),
        random,
    )?;
    let refresh_sealed = match &tokens.refresh_token {
        Some(r) => Some(sealer.seal(
            &sealing_context(grant_id, Part::Refresh),
            r.expose(),
            random,
        )?),
        None => kept_refresh.map(str::to_owned),
    };
    Ok(UpstreamTokenRecord {
        grant_id: grant_id.to_owned(),
        access_sealed,
        refresh_sealed,
        obtained_at: now,
        expires_at: tokens.expires_at(now),
        version,
        lease_until: None,
    })
}

fn lifetime(record: &UpstreamTokenRecord) -> Lifetime {
    Lifetime {
        obtained_at: record.obtained_at,
        expires_at: record.expires_at,
    }
}

/// A fresh upstream access token for the grant `grant_id`: the stored one while it is good,
/// else a refreshed one. Of several instances (or requests) finding it due at once, one
/// refreshes; the others keep using the old token while it has not expired, or wait for the new
/// one.
pub async fn current(app: &App, grant_id: &str) -> Result<Fresh, UpstreamTokenError> {
    let sealer =
        sealer(app).map_err(|_| UpstreamTokenError::Unavailable("no sealing key".into()))?;
    for _ in 0..WAIT_ROUNDS {
        let Some(record) = app.store.get_upstream_tokens(grant_id).await? else {
            // Revoked meanwhile, or granted before its resource kept upstream tokens: either
            // way only a new authorization helps, and the grant must not stay usable.
            return Err(give_up(app, grant_id, "the grant has no upstream tokens").await);
        };
        let now = app.clock.now();
        let can_refresh = record.refresh_sealed.is_some();
        match plan(&lifetime(&record), can_refresh, record.lease_until, now) {
            Plan::Use => return open_access(app, sealer, &record, now).await,
            Plan::Reauthorize => {
                return Err(give_up(app, grant_id, "expired, and there is no refresh token").await);
            }
            Plan::Refresh => {
                let until = now.saturating_add(LEASE_SECONDS);
                if app
                    .store
                    .lease_upstream_tokens(grant_id, record.version, now, until)
                    .await?
                {
                    return refresh(app, sealer, &record).await;
                }
                // Another request took the lease first: read again and follow it.
            }
            Plan::Wait => tokio::time::sleep(WAIT_STEP).await,
        }
    }
    Err(UpstreamTokenError::Unavailable(
        "another instance's refresh did not finish in time".into(),
    ))
}

async fn open_access(
    app: &App,
    sealer: &TokenSealer,
    record: &UpstreamTokenRecord,
    now: Timestamp,
) -> Result<Fresh, UpstreamTokenError> {
    let context = sealing_context(&record.grant_id, Part::Access);
    match sealer.open(&context, &record.access_sealed) {
        Ok(token) => Ok(Fresh {
            access_token: Secret::new(token),
            expires_in: lifetime(record).remaining(now),
        }),
        Err(_) => Err(give_up(app, &record.grant_id, "the stored token cannot be opened").await),
    }
}

/// Holding the lease: asks the provider, and stores what it answers over the version read.
async fn refresh(
    app: &App,
    sealer: &TokenSealer,
    record: &UpstreamTokenRecord,
) -> Result<Fresh, UpstreamTokenError> {
    let grant_id = record.grant_id.as_str();
    let opened = record
        .refresh_sealed
        .as_deref()
        .map(|s| sealer.open(&sealing_context(grant_id, Part::Refresh), s));
    let Some(Ok(refresh_token)) = opened else {
        return Err(give_up(app, grant_id, "the stored refresh token cannot be opened").await);
    };
    let refresh_token = Secret::<kind::UpstreamRefresh>::new(refresh_token);
    let answered = app.upstream.refresh(&refresh_token).await;
    let now = app.clock.now();
    let tokens = match answered {
        Ok(tokens) => tokens,
        Err(RefreshError::Refused) => {
            metrics::counter!(names::UPSTREAM_TOKEN_REFRESHES, "outcome" => "refused").increment(1);
            return Err(give_up(app, grant_id, "the provider refused the refresh token").await);
        }
        Err(RefreshError::Failed(why)) => {
            metrics::counter!(names::UPSTREAM_TOKEN_REFRESHES, "outcome" => "failed").increment(1);
            tracing::warn!(grant.id = %grant_id, error = %why, "upstream token refresh failed");
            app.store
                .release_upstream_lease(grant_id, record.version)
                .await?;
            if !lifetime(record).expired(now) {
                return open_access(app, sealer, record, now).await;
            }
            return Err(UpstreamTokenError::Unavailable(why));
        }
    };
    let next = sealed_record(
        app,
        sealer,
        grant_id,
        &tokens,
        record.refresh_sealed.as_deref(),
        now,
        record.version.saturating_add(1),
    )
    .map_err(|e| UpstreamTokenError::Unavailable(e.to_string()))?;
    if !app
        .store
        .replace_upstream_tokens(&next, record.version)
        .await?
    {
        // The grant was revoked while the provider answered: its tokens are gone for good.
        return Err(UpstreamTokenError::Reauthorize);
    }
    metrics::counter!(names::UPSTREAM_TOKEN_REFRESHES, "outcome" => "refreshed").increment(1);
    tracing::info!(grant.id = %grant_id, "upstream token refreshed");
    Ok(Fresh {
        access_token: tokens.access_token,
        expires_in: lifetime(&next).remaining(now),
    })
}

/// The tokens cannot be renewed: the grant goes (taking the tokens with it), so that the
/// client's refresh fails and it authorizes again, which brings new tokens from a new login.
async fn give_up(app: &App, grant_id: &str, why: &'static str) -> UpstreamTokenError {
    tracing::info!(grant.id = %grant_id, reason = why, "upstream tokens unusable; grant revoked so the client authorizes again");
    match app.store.revoke_grant(grant_id, app.clock.now()).await {
        Ok(_) => UpstreamTokenError::Reauthorize,
        Err(e) => UpstreamTokenError::Store(e),
    }
}

/// RFC 8693 at `/token`: a configured confidential client (the MCP server) exchanges an
/// authgate access token it received for the user's upstream access token.
pub async fn exchange(
    app: &App,
    client: &Client,
    req: TokenExchangeRequest,
) -> Result<Fresh, TokenError> {
    if app.settings.token_exchange_clients.is_empty() {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "token exchange is not enabled on this server",
        )
        .into());
    }
    let confidential = !client.document && client.metadata.token_endpoint_auth_method.uses_secret();
    if !confidential || !app.settings.token_exchange_clients.contains(&client.id) {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not exchange tokens",
        )
        .into());
    }
    let grant_id = subject_grant(app, req.subject_token.expose()).await?;
    let fresh = current(app, &grant_id).await.map_err(|e| match e {
        UpstreamTokenError::Reauthorize => OAuthError::invalid_request(
            "the user's upstream tokens are gone; the user must authorize again",
        )
        .into(),
        UpstreamTokenError::Unavailable(why) => TokenError::Unavailable(why),
        UpstreamTokenError::Store(e) => TokenError::Store(e),
    })?;
    app.store.touch_client(&client.id, app.clock.now()).await?;
    tracing::info!(client.id = %client.id, grant.id = %grant_id, "upstream token exchanged");
    Ok(fresh)
}

/// The grant behind a subject token: a valid, unrevoked authgate access token for a resource
/// that keeps upstream tokens. Every refusal is `invalid_request` (RFC 8693 §2.2.2).
async fn subject_grant(app: &App, token: &str) -> Result<String, TokenError> {
    let invalid = |why: &str| TokenError::OAuth(OAuthError::invalid_request(why));
    let now = app.clock.now();
    let claims = match app.keys.verify_signature(token) {
        // Another instance may have rotated the keys since this one loaded them.
        Err(TokenRejection::UnknownKey) if app.keys.reload_if_stale(now).await => {
            app.keys.verify_signature(token)
        }
        other => other,
    }
    .map_err(|_| invalid("the subject token is not a valid access token of this server"))?;
    if claims.iss != app.settings.issuer || now >= claims.exp {
        return Err(invalid(
            "the subject token is expired or not an access token of this server",
        ));
    }
    if app.settings.upstream_token_resource(&claims.aud).is_none() {
        return Err(invalid(
            "the subject token is not for a resource that keeps upstream tokens",
        ));
    }
    if app.store.is_access_token_revoked(&claims.jti).await? {
        return Err(invalid("the subject token was revoked"));
    }
    let live = app
        .store
        .get_grant(&claims.sid)
        .await?
        .is_some_and(|g| g.is_live(now));
    if !live {
        return Err(invalid(
            "the subject token's grant was revoked or has ended",
        ));
    }
    Ok(claims.sid)
}

/// At start-up: the token-exchange clients are marked used, so the clean-up of idle
/// registrations never removes one before its first exchange; a listed id that is not a
/// registered confidential client is reported (its exchanges would be refused).
pub async fn prepare_exchange_clients(app: &App) -> Result<(), StoreError> {
    for id in &app.settings.token_exchange_clients {
        match app.store.get_client(id).await? {
            None => {
                tracing::warn!(client.id = %id, "AUTHGATE_TOKEN_EXCHANGE_CLIENTS names a client that is not registered")
            }
            Some(c) if !c.metadata.token_endpoint_auth_method.uses_secret() => tracing::warn!(
                client.id = %id,
                "AUTHGATE_TOKEN_EXCHANGE_CLIENTS names a public client; only confidential clients may exchange tokens"
            ),
            Some(c) if c.last_used_at.is_none() => {
                app.store.touch_client(id, app.clock.now()).await?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Whether the upstream settings ask for refresh tokens the usual ways (`offline_access`, or
/// Google's `access_type=offline`). Without one, most providers issue none, and users must
/// authorize again each time the upstream access token expires.
pub fn asks_for_refresh_tokens(upstream: &crate::config::UpstreamConfig) -> bool {
    upstream.scopes.iter().any(|s| s == "offline_access")
        || upstream
            .authorize_params
            .iter()
            .any(|(k, v)| k == "access_type" && v == "offline")
}
