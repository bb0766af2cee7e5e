//! The UserInfo endpoint's decision (OIDC Core §5.3): who an access token speaks for, if it is
//! still good and was granted `openid`. Any resource's token serves, since the person is the same;
//! the revocation check goes to the database itself rather than the guard's cache, so a token
//! revoked a moment ago is refused here at once.

use crate::keys::TokenRejection;
use crate::oauth::oidc::{self, UserClaims};
use crate::oauth::scope::ScopeSet;
use crate::state::App;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum UserinfoError {
    /// Malformed, tampered, expired, foreign, or revoked (itself or its grant).
    #[error("the access token is invalid, expired or revoked")]
    InvalidToken,
    /// A good token without `openid`.
    #[error("the access token was not granted openid")]
    InsufficientScope,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub async fn userinfo(app: &App, token: &str) -> Result<UserClaims, UserinfoError> {
    let now = app.clock.now();
    let issuer = &app.settings.issuer;
    let audiences: Vec<&str> = app
        .settings
        .resources
        .iter()
        .map(|r| r.uri.as_str())
        .collect();
    let verified = match app.keys.verify_for_any(token, issuer, &audiences, now) {
        // Another instance may have rotated the keys since this one loaded them.
        Err(TokenRejection::UnknownKey) if app.keys.reload_if_stale(now).await => {
            app.keys.verify_for_any(token, issuer, &audiences, now)
        }
        other => other,
    };
    let claims = verified.map_err(|_| UserinfoError::InvalidToken)?;
    if app.store.is_access_token_revoked(&claims.jti).await? {
        return Err(UserinfoError::InvalidToken);
    }
    let Some(grant) = app
        .store
        .get_grant(&claims.sid)
        .await?
        .filter(|g| g.is_live(now) && g.subject == claims.sub)
    else {
        return Err(UserinfoError::InvalidToken);
    };
    let scope = ScopeSet::parse(&claims.scope);
    if !scope.contains(oidc::OPENID) {
        return Err(UserinfoError::InsufficientScope);
    }
    Ok(oidc::user_claims(
        &grant.subject,
        grant.email.as_deref(),
        grant.email_verified,
        &scope,
    ))
}
