//! The token exchanges: a code for tokens (with an ID token when the grant includes `openid`), a
//! refresh token for the next one, an enterprise identity provider's ID-JAG for an access token.
//! Each exchange checks first, signs the tokens (pure CPU, so nothing can fail after the
//! commit), then persists in one transaction: if any step fails, nothing of it happened, and the
//! client's retry is not mistaken for a replay.

use crate::clock::Timestamp;
use crate::domain::grant::{
    CodeError, CodeRedemption, Grant, RefreshOutcome, RefreshToken, seal_successor,
    unseal_successor,
};
use crate::domain::identity::{UpstreamIdentity, enterprise_subject};
use crate::keys::{AccessClaims, IdClaims};
use crate::oauth::client::GRANT_REFRESH_TOKEN;
use crate::oauth::id_jag;
use crate::oauth::oidc;
use crate::oauth::request::TokenRequest;
use crate::oauth::scope::ScopeSet;
use crate::oauth::secrets::{Hashed, Secret, kind};
use crate::oauth::{ErrorCode, OAuthError, resource};
use crate::services::audit::{self, Kind, Outcome};
use crate::services::clients::Client;
use crate::services::enterprise;
use crate::state::App;
use crate::store::StoreError;
use crate::telemetry::names;

/// What a successful exchange hands out.
#[derive(Debug)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: i64,
    pub refresh_token: Option<Secret<kind::Refresh>>,
    pub scope: ScopeSet,
    pub id_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    OAuth(OAuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something that is nobody's input went wrong (the signing key); logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
    /// A service authgate depends on (the upstream provider) cannot answer now; the request
    /// may be retried.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
}

impl From<OAuthError> for TokenError {
    fn from(e: OAuthError) -> Self {
        Self::OAuth(e)
    }
}

fn invalid_grant(why: &str) -> TokenError {
    TokenError::OAuth(OAuthError::new(ErrorCode::InvalidGrant, why))
}

/// Whether this server takes the request's grant type at all: answered before the client
/// authenticates, as for a grant type nobody supports.
pub fn check_supported(app: &App, req: &TokenRequest) -> Result<(), OAuthError> {
    if matches!(req, TokenRequest::JwtBearer { .. }) && app.settings.enterprise_issuers.is_empty() {
        return Err(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "the jwt-bearer grant is not accepted: no enterprise issuer is configured",
        ));
    }
    Ok(())
}

pub async fn exchange(app: &App, client: &Client, req: TokenRequest) -> Result<Issued, TokenError> {
    // The jwt-bearer grant is allowed by the operator, who names the client under an enterprise
    // issuer, not by the client's registration (which drops grant types authgate does not
    // advertise, so one made while no issuer was configured could not have kept it).
    let operator_allowed = matches!(req, TokenRequest::JwtBearer { .. });
    if !operator_allowed && !client.metadata.allows_grant(req.grant_type()) {
        return Err(TokenError::OAuth(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client did not register this grant type",
        )));
    }
    match req {
        TokenRequest::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier,
            resource,
        } => {
            let redemption = CodeRedemption {
                client_id: &client.id,
                redirect_uri: redirect_uri.as_deref(),
                code_verifier: code_verifier.as_deref(),
            };
            redeem_code(app, client, &code, &redemption, resource.as_deref()).await
        }
        TokenRequest::RefreshToken {
            refresh_token,
            scope,
            resource,
        } => refresh(app, client, &refresh_token, scope, resource.as_deref()).await,
        TokenRequest::JwtBearer {
            assertion,
            scope,
            resource,
        } => jwt_bearer(app, client, &assertion, scope, resource.as_deref()).await,
        // Its answer is the upstream's token, not authgate's: `upstream_tokens::exchange`.
        TokenRequest::TokenExchange(_) => Err(TokenError::OAuth(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "token exchange is answered by its own service",
        ))),
    }
}

/// An ID-JAG for an access token (the ID-JAG draft's §4.4, the extension's §5): the enterprise
/// identity provider's policy is the consent, so there is no consent page and no code. The
/// grant gets no refresh token: the client asks the provider for a new ID-JAG when the access
/// token expires, so the provider's policy (a user removed, a client revoked) is applied again
/// each time (the draft: the resource authorization server SHOULD NOT issue one).
async fn jwt_bearer(
    app: &App,
    client: &Client,
    assertion: &Secret<kind::IdentityAssertion>,
    asked_scope: Option<ScopeSet>,
    asked_resource: Option<&str>,
) -> Result<Issued, TokenError> {
    let now = app.clock.now();
    let (issuer, presented) = enterprise::verify(app, client, assertion.expose(), now).await?;
    let served: Vec<String> = app
        .settings
        .resources
        .iter()
        .map(|r| r.uri.clone())
        .collect();
    let resource = id_jag::select_resource(
        &presented.resources,
        asked_resource,
        &served,
        &issuer.resources,
    )?;
    let offered = app
        .settings
        .resources
        .iter()
        .find(|r| r.uri == resource)
        .map(|r| &r.scopes)
        .ok_or_else(|| OAuthError::new(ErrorCode::InvalidTarget, "unknown resource"))?;
    let scope = id_jag::grant_scope(presented.scope.as_ref(), asked_scope.as_ref(), offered)?;
    let person = UpstreamIdentity {
        issuer: presented.issuer.clone(),
        subject: presented.subject.clone(),
        email: presented.email.clone(),
        email_verified: presented.email_verified,
    };
    if app.settings.login_policy.check(&person).is_err() {
        tracing::info!(issuer = %issuer.issuer, client.id = %client.id, "identity assertion refused by the login policy");
        return Err(invalid_grant(
            "the user is not allowed by this server's login policy",
        ));
    }
    let grant = Grant {
        id: app.random.id(),
        client_id: client.id.clone(),
        subject: enterprise_subject(&issuer.subjects, &issuer.issuer, &presented.subject),
        email: presented.email.clone(),
        email_verified: presented.email.as_ref().and(presented.email_verified),
        scope: scope.clone(),
        resource,
        // The identity provider authenticated the person, at a time the ID-JAG does not say.
        auth_time: None,
        created_at: now,
        // The grant backs one access token and nothing else.
        expires_at: now + app.settings.access_token_ttl,
        last_used_at: now,
        revoked_at: None,
    };
    let issued = sign(app, client, &grant, scope, None, now)?;
    // Scoped by issuer: two providers may well use the same `jti`.
    let used =
        Hashed::<kind::IdentityAssertionJti>::of(&format!("{}\n{}", issuer.issuer, presented.jti));

    let tx = app.store.begin().await?;
    if !tx
        .use_identity_assertion(&used, presented.remember_until)
        .await?
    {
        tx.rollback().await?;
        tracing::warn!(issuer = %issuer.issuer, client.id = %client.id, "identity assertion replayed");
        return Err(invalid_grant("the assertion was already used"));
    }
    tx.insert_direct_grant(&grant).await?;
    if !client.document {
        tx.touch_client(&client.id, now).await?;
    }
    tx.commit().await?;
    tracing::info!(client.id = %client.id, grant.id = %grant.id, issuer = %issuer.issuer, "identity assertion exchanged");
    Ok(issued)
}

async fn redeem_code(
    app: &App,
    client: &Client,
    code: &Secret<kind::Code>,
    redemption: &CodeRedemption<'_>,
    resource: Option<&str>,
) -> Result<Issued, TokenError> {
    let now = app.clock.now();
    let hash = code.hash();
    let Some((code, grant)) = app.store.get_code(&hash).await? else {
        return Err(invalid_grant("unknown or expired code"));
    };
    match code.redeem(redemption, now) {
        Ok(()) => {}
        Err(CodeError::Replayed) => return Err(replayed_code(app, &grant, now).await),
        Err(CodeError::Invalid(e)) => return Err(e.into()),
    }
    check_resource(resource, &grant)?;
    if grant.revoked_at.is_some() {
        return Err(invalid_grant("the grant was revoked"));
    }
    let refresh = client
        .metadata
        .allows_grant(GRANT_REFRESH_TOKEN)
        .then(|| Secret::<kind::Refresh>::new(app.random.token()));
    let mut issued = sign(app, client, &grant, grant.scope.clone(), refresh, now)?;
    if grant.scope.contains(oidc::OPENID) {
        let id_token = sign_id_token(app, client, &grant, code.nonce, &issued.access_token, now)?;
        issued.id_token = Some(id_token);
    }

    let tx = app.store.begin().await?;
    if !tx.use_code(&hash, now).await? {
        // Another request redeemed it first (it was checked unused a moment ago).
        tx.rollback().await?;
        return Err(replayed_code(app, &grant, now).await);
    }
    if !client.document {
        tx.touch_client(&client.id, now).await?;
    }
    if let Some(r) = &issued.refresh_token {
        let token = RefreshToken::issue(r.hash(), &grant.id, now, app.settings.refresh_idle_ttl);
        tx.insert_refresh(&token).await?;
    }
    tx.commit().await?;
    tracing::info!(client.id = %client.id, grant.id = %grant.id, "code exchanged");
    Ok(issued)
}

/// A code presented twice: someone else may hold it, so everything it produced is revoked.
async fn replayed_code(app: &App, grant: &Grant, now: Timestamp) -> TokenError {
    tracing::warn!(grant.id = %grant.id, "authorization code replayed; revoking its grant");
    audit::entry(app, Kind::CodeReplay, Outcome::Revoked)
        .user(&grant.subject, grant.email.as_deref())
        .client(&grant.client_id)
        .resource(&grant.resource)
        .detail("an authorization code was presented again; its grant is revoked")
        .record();
    if let Err(e) = app.store.revoke_grant(&grant.id, now).await {
        return TokenError::Store(e);
    }
    invalid_grant("the code was already used")
}

fn check_resource(requested: Option<&str>, grant: &Grant) -> Result<(), TokenError> {
    if let Some(r) = requested {
        resource::select(Some(r), std::slice::from_ref(&grant.resource))?;
    }
    Ok(())
}

/// The scope a refresh asks for: the grant's, or a part of it, never more.
fn refresh_scope(asked: Option<ScopeSet>, grant: &Grant) -> Result<ScopeSet, TokenError> {
    match asked {
        Some(asked) if !asked.is_subset_of(&grant.scope) => {
            Err(TokenError::OAuth(OAuthError::new(
                ErrorCode::InvalidScope,
                "a refresh cannot widen the granted scope",
            )))
        }
        Some(asked) if !asked.is_empty() => Ok(asked),
        _ => Ok(grant.scope.clone()),
    }
}

async fn refresh(
    app: &App,
    client: &Client,
    presented: &Secret<kind::Refresh>,
    scope: Option<ScopeSet>,
    resource: Option<&str>,
) -> Result<Issued, TokenError> {
    let now = app.clock.now();
    let hash = presented.hash();
    let Some((token, grant)) = app.store.get_refresh(&hash).await? else {
        return Err(invalid_grant("unknown refresh token"));
    };
    if grant.client_id != client.id {
        return Err(invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if !grant.is_live(now) {
        return Err(invalid_grant("the grant was revoked or has expired"));
    }
    check_resource(resource, &grant)?;
    let scope = refresh_scope(scope, &grant)?;
    match token.outcome(now, app.settings.refresh_grace) {
        RefreshOutcome::Rotate => rotate(app, client, presented, &grant, scope, now).await,
        RefreshOutcome::Grace { sealed_successor } => {
            grace(app, client, presented, sealed_successor, &grant, scope, now).await
        }
        RefreshOutcome::Reuse => {
            tracing::warn!(grant.id = %grant.id, client.id = %client.id, "rotated refresh token reused; revoking the grant");
            metrics::counter!(names::REFRESH_EVENTS, "event" => "reuse").increment(1);
            audit::entry(app, Kind::RefreshReuse, Outcome::Revoked)
                .user(&grant.subject, grant.email.as_deref())
                .client(&client.id)
                .resource(&grant.resource)
                .detail("a rotated refresh token was used again; its grant is revoked")
                .record();
            app.store.revoke_grant(&grant.id, now).await?;
            Err(invalid_grant("the refresh token was already used"))
        }
        RefreshOutcome::Expired => Err(invalid_grant("the refresh token has expired")),
    }
}

/// Rotation: three statements in one transaction (mark rotated, store the successor, record
/// the grant's use), so a failure leaves the presented token current and the retry works.
async fn rotate(
    app: &App,
    client: &Client,
    presented: &Secret<kind::Refresh>,
    grant: &Grant,
    scope: ScopeSet,
    now: Timestamp,
) -> Result<Issued, TokenError> {
    let next = Secret::<kind::Refresh>::new(app.random.token());
    let sealed =
        seal_successor(presented, &next).ok_or_else(|| invalid_grant("malformed refresh token"))?;
    let successor = RefreshToken::issue(next.hash(), &grant.id, now, app.settings.refresh_idle_ttl);
    let issued = sign(app, client, grant, scope, Some(next), now)?;

    let tx = app.store.begin().await?;
    if !tx.rotate_refresh(&presented.hash(), now, &sealed).await? {
        // Another request rotated it a moment ago: answer as that request did.
        tx.rollback().await?;
        let Some((token, grant)) = app.store.get_refresh(&presented.hash()).await? else {
            return Err(invalid_grant("unknown refresh token"));
        };
        let RefreshOutcome::Grace { sealed_successor } =
            token.outcome(now, app.settings.refresh_grace)
        else {
            return Err(invalid_grant("unknown refresh token"));
        };
        return grace(
            app,
            client,
            presented,
            sealed_successor,
            &grant,
            issued.scope,
            now,
        )
        .await;
    }
    tx.insert_refresh(&successor).await?;
    if !tx.touch_grant(&grant.id, now).await? {
        // Revoked (or ended) since it was read: the rotation must not happen.
        tx.rollback().await?;
        return Err(invalid_grant("the grant was revoked or has expired"));
    }
    tx.commit().await?;
    metrics::counter!(names::REFRESH_EVENTS, "event" => "rotation").increment(1);
    Ok(issued)
}

/// A retry inside the grace window gets the successor the first request got.
async fn grace(
    app: &App,
    client: &Client,
    presented: &Secret<kind::Refresh>,
    sealed_successor: &str,
    grant: &Grant,
    scope: ScopeSet,
    now: Timestamp,
) -> Result<Issued, TokenError> {
    let next = unseal_successor(presented, sealed_successor)
        .ok_or_else(|| invalid_grant("unknown refresh token"))?;
    tracing::info!(grant.id = %grant.id, "refresh token replayed within the grace window");
    metrics::counter!(names::REFRESH_EVENTS, "event" => "grace").increment(1);
    let issued = sign(app, client, grant, scope, Some(next), now)?;
    if !app.store.touch_grant(&grant.id, now).await? {
        return Err(invalid_grant("the grant was revoked or has expired"));
    }
    Ok(issued)
}

/// The access token (RFC 9068), bound to the grant's resource.
fn sign(
    app: &App,
    client: &Client,
    grant: &Grant,
    scope: ScopeSet,
    refresh_token: Option<Secret<kind::Refresh>>,
    now: Timestamp,
) -> Result<Issued, TokenError> {
    let ttl = app.settings.access_token_ttl;
    let claims = AccessClaims {
        iss: app.settings.issuer.clone(),
        sub: grant.subject.clone(),
        aud: grant.resource.clone(),
        client_id: client.id.clone(),
        scope: scope.to_string(),
        iat: now,
        exp: now + ttl,
        jti: app.random.id(),
        sid: grant.id.clone(),
        email: grant.email.clone(),
    };
    let access_token = app
        .keys
        .sign(&claims)
        .map_err(|e| TokenError::Internal(format!("cannot sign an access token: {e}")))?;
    Ok(Issued {
        access_token,
        expires_in: ttl,
        refresh_token,
        scope,
        id_token: None,
    })
}

/// The ID token (OIDC Core §3.1.3.3) issued with a code's access token, for the client, with the
/// request's `nonce`. Refreshes carry none (§12.2 allows either): what it asserts, one login,
/// does not change when the access token does.
fn sign_id_token(
    app: &App,
    client: &Client,
    grant: &Grant,
    nonce: Option<String>,
    access_token: &str,
    now: Timestamp,
) -> Result<String, TokenError> {
    let user = oidc::user_claims(
        &grant.subject,
        grant.email.as_deref(),
        grant.email_verified,
        &grant.scope,
    );
    let claims = IdClaims {
        iss: app.settings.issuer.clone(),
        sub: user.sub,
        aud: client.id.clone(),
        iat: now,
        exp: now + app.settings.access_token_ttl,
        auth_time: grant.auth_time,
        nonce,
        at_hash: Some(oidc::at_hash(access_token)),
        email: user.email,
        email_verified: user.email_verified,
    };
    app.keys
        .sign_id_token(&claims)
        .map_err(|e| TokenError::Internal(format!("cannot sign an ID token: {e}")))
}
