//! Enterprise-managed authorization (MCP extension `io.modelcontextprotocol/auth/ema`): which
//! configured identity provider an ID-JAG comes from, whether the client presenting it may use
//! that provider's assertions, and the assertion verified with the provider's keys (fetched
//! through the guarded fetcher and cached; fetched again, at most every 30 s, when an assertion
//! names a `kid` the cached set lacks).

use crate::clock::Timestamp;
use crate::config::EnterpriseIssuer;
use crate::oauth::assertion::peek_issuer;
use crate::oauth::client::TokenAuthMethod;
use crate::oauth::id_jag::{self, Expected, IdJag, IdJagError};
use crate::oauth::{ErrorCode, OAuthError};
use crate::services::clients::Client;
use crate::state::App;

fn invalid_grant(why: impl Into<String>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, why)
}

/// The issuer of `assertion` and the assertion, verified for `client`. Nothing is written: the
/// caller records the `jti` only once everything else has passed, so a refused assertion never
/// uses up a real one's `jti`.
pub async fn verify<'a>(
    app: &'a App,
    client: &Client,
    assertion: &str,
    now: Timestamp,
) -> Result<(&'a EnterpriseIssuer, IdJag), OAuthError> {
    // The payload is read unverified only to pick whose keys verify it.
    let iss =
        peek_issuer(assertion).ok_or_else(|| invalid_grant(IdJagError::Malformed.to_string()))?;
    let Some(issuer) = app
        .settings
        .enterprise_issuers
        .iter()
        .find(|e| e.issuer == iss)
    else {
        tracing::info!(client.id = %client.id, "identity assertion from an untrusted issuer refused");
        return Err(invalid_grant(
            "the assertion's issuer is not trusted by this server",
        ));
    };
    // Checked before any key is fetched: a client the operator did not name cannot make
    // authgate fetch anything.
    if !issuer.client_ids.contains(&client.id) {
        tracing::info!(client.id = %client.id, issuer = %issuer.issuer, "client not allowed for this enterprise issuer");
        return Err(invalid_grant(
            "this client may not present this issuer's assertions",
        ));
    }
    if client.metadata.token_endpoint_auth_method == TokenAuthMethod::None
        && !issuer.allow_public_clients
    {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this issuer's assertions are accepted from authenticated clients only",
        ));
    }
    let expected = Expected {
        issuer: &issuer.issuer,
        audience: &app.settings.issuer,
        client_id: &client.id,
        now,
    };
    let unavailable = |why: String| {
        tracing::warn!(issuer = %issuer.issuer, reason = %why, "enterprise issuer keys unavailable");
        invalid_grant(why)
    };
    let keys = app
        .cimd
        .issuer_keys(&issuer.issuer, issuer.jwks_uri.as_deref(), now)
        .await
        .map_err(unavailable)?;
    let mut verified = id_jag::verify(assertion, &keys.keys, &expected);
    if verified == Err(IdJagError::UnknownKey)
        && let Some(since) = keys.cached_since
        && let Some(fresh) = app
            .cimd
            .refetch_issuer_keys(&issuer.issuer, issuer.jwks_uri.as_deref(), since, now)
            .await
            .map_err(unavailable)?
    {
        verified = id_jag::verify(assertion, &fresh.keys, &expected);
    }
    let id_jag = verified.map_err(|e| {
        tracing::info!(client.id = %client.id, issuer = %issuer.issuer, reason = %e, "identity assertion refused");
        invalid_grant(e.to_string())
    })?;
    Ok((issuer, id_jag))
}
