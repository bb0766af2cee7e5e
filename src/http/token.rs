//! `POST /token`: the authorization code grant (with PKCE) and refresh-token rotation with reuse
//! detection and a grace window.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::client_auth::{self, AuthFailure};
use super::clients::Client;
use super::error::ApiError;
use crate::keys::AccessClaims;
use crate::oauth::client::{GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN};
use crate::oauth::grant::{self, CodeRedemption, IssuedCode, RefreshOutcome};
use crate::oauth::scope::ScopeSet;
use crate::oauth::secrets::{PlainSecret, SecretHash, SecretKind};
use crate::oauth::{ErrorCode, OAuthError, resource};
use crate::state::AppState;
use crate::store::{FamilyRecord, RefreshRecord};
use crate::telemetry::names;

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    scope: &'a str,
}

fn invalid_grant(why: &str) -> ApiError {
    ApiError::bad_request(OAuthError::new(ErrorCode::InvalidGrant, why))
}

pub async fn token(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match token_inner(&state, &headers, body).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn token_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, AuthFailure> {
    let params = client_auth::read_form(headers, body)
        .await
        .map_err(AuthFailure::Api)?;
    let grant_type = params
        .get("grant_type")
        .ok_or_else(|| {
            AuthFailure::Api(ApiError::bad_request(OAuthError::invalid_request(
                "grant_type is required",
            )))
        })?
        .clone();
    if grant_type != GRANT_AUTHORIZATION_CODE && grant_type != GRANT_REFRESH_TOKEN {
        return Err(AuthFailure::Api(ApiError::bad_request(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            "grant_type must be authorization_code or refresh_token",
        ))));
    }
    let label = if grant_type == GRANT_AUTHORIZATION_CODE {
        GRANT_AUTHORIZATION_CODE
    } else {
        GRANT_REFRESH_TOKEN
    };
    let client = match client_auth::authenticate(state, headers, &params).await {
        Ok(c) => c,
        Err(e) => {
            metrics::counter!(names::TOKEN_GRANTS, "grant_type" => label, "outcome" => "invalid_client").increment(1);
            return Err(e);
        }
    };
    if !client.metadata.allows_grant(&grant_type) {
        return Err(AuthFailure::Api(ApiError::bad_request(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client did not register this grant type",
        ))));
    }
    let result = if grant_type == GRANT_AUTHORIZATION_CODE {
        authorization_code(state, &client, &params).await
    } else {
        refresh(state, &client, &params).await
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(ApiError::OAuth(_, e)) => e.code.as_str(),
        Err(ApiError::RateLimited(_)) => "rate_limited",
        Err(ApiError::Store(_)) => "unavailable",
    };
    metrics::counter!(names::TOKEN_GRANTS, "grant_type" => label, "outcome" => outcome)
        .increment(1);
    result.map_err(AuthFailure::Api)
}

async fn authorization_code(
    state: &AppState,
    client: &Client,
    params: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let code = params
        .get("code")
        .ok_or_else(|| ApiError::bad_request(OAuthError::invalid_request("code is required")))?;
    let hash = SecretHash::of(SecretKind::AuthorizationCode, code);
    let Some(record) = state.store.get_code(hash.as_str()).await? else {
        return Err(invalid_grant("unknown or expired code"));
    };
    if record.used_at.is_some() {
        return Err(replayed_code(state, &record.family_id, now).await);
    }
    grant::check_code(
        &IssuedCode {
            client_id: &record.client_id,
            redirect_uri: &record.redirect_uri,
            code_challenge: &record.code_challenge,
            expires_at: record.expires_at,
        },
        &CodeRedemption {
            client_id: &client.id,
            redirect_uri: params.get("redirect_uri").map(String::as_str),
            code_verifier: params.get("code_verifier").map(String::as_str),
        },
        now,
    )
    .map_err(ApiError::bad_request)?;
    let Some(family) = state.store.get_family(&record.family_id).await? else {
        return Err(invalid_grant("unknown or expired code"));
    };
    check_resource(params, &family)?;
    if !state.store.use_code(hash.as_str(), now).await? {
        return Err(replayed_code(state, &record.family_id, now).await);
    }
    if family.revoked_at.is_some() {
        return Err(invalid_grant("the grant was revoked"));
    }
    if !client.document {
        state.store.touch_client(&client.id, now).await?;
    }
    let refresh = if client.metadata.allows_grant(GRANT_REFRESH_TOKEN) {
        let token = PlainSecret::new(state.random.token());
        state
            .store
            .insert_refresh(&RefreshRecord {
                hash: token.hash(SecretKind::RefreshToken).as_str().to_owned(),
                family_id: family.id.clone(),
                created_at: now,
                expires_at: now + state.settings.refresh_idle_ttl,
                rotated_at: None,
                successor_sealed: None,
            })
            .await?;
        Some(token)
    } else {
        None
    };
    tracing::info!(client.id = %client.id, grant.family = %family.id, "code exchanged");
    token_response(
        state,
        client,
        &family,
        &ScopeSet::parse(&family.scope),
        refresh.as_ref(),
    )
}

/// A code presented twice: someone else may hold it, so everything it produced is revoked.
async fn replayed_code(state: &AppState, family_id: &str, now: i64) -> ApiError {
    tracing::warn!(grant.family = %family_id, "authorization code replayed; revoking its grant");
    if let Err(e) = state.store.revoke_family(family_id, now).await {
        return ApiError::Store(e);
    }
    invalid_grant("the code was already used")
}

fn check_resource(params: &HashMap<String, String>, family: &FamilyRecord) -> Result<(), ApiError> {
    if let Some(r) = params.get("resource") {
        resource::select(Some(r), std::slice::from_ref(&family.resource))
            .map_err(ApiError::bad_request)?;
    }
    Ok(())
}

async fn refresh(
    state: &AppState,
    client: &Client,
    params: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let presented = params.get("refresh_token").ok_or_else(|| {
        ApiError::bad_request(OAuthError::invalid_request("refresh_token is required"))
    })?;
    let hash = SecretHash::of(SecretKind::RefreshToken, presented);
    let Some(mut record) = state.store.get_refresh(hash.as_str()).await? else {
        return Err(invalid_grant("unknown refresh token"));
    };
    let Some(family) = state.store.get_family(&record.family_id).await? else {
        return Err(invalid_grant("unknown refresh token"));
    };
    if family.client_id != client.id {
        return Err(invalid_grant(
            "the refresh token was issued to another client",
        ));
    }
    if family.revoked_at.is_some() || family.expires_at <= now {
        return Err(invalid_grant("the grant was revoked or has expired"));
    }
    check_resource(params, &family)?;
    let family_scope = ScopeSet::parse(&family.scope);
    let scope = match params.get("scope") {
        Some(s) => {
            let asked = ScopeSet::parse(s);
            if !asked.is_subset_of(&family_scope) {
                return Err(ApiError::bad_request(OAuthError::new(
                    ErrorCode::InvalidScope,
                    "a refresh cannot widen the granted scope",
                )));
            }
            if asked.is_empty() {
                family_scope.clone()
            } else {
                asked
            }
        }
        None => family_scope.clone(),
    };

    let mut outcome = grant::refresh_outcome(
        record.rotated_at,
        record.expires_at,
        now,
        state.settings.refresh_grace,
    );
    let successor = match outcome {
        RefreshOutcome::Rotate => {
            let next = PlainSecret::new(state.random.token());
            let sealed = grant::seal_successor(presented, next.expose())
                .ok_or_else(|| invalid_grant("malformed refresh token"))?;
            let successor = RefreshRecord {
                hash: next.hash(SecretKind::RefreshToken).as_str().to_owned(),
                family_id: family.id.clone(),
                created_at: now,
                expires_at: now + state.settings.refresh_idle_ttl,
                rotated_at: None,
                successor_sealed: None,
            };
            if state
                .store
                .rotate_refresh(hash.as_str(), now, &sealed, &successor)
                .await?
            {
                metrics::counter!(names::REFRESH_EVENTS, "event" => "rotation").increment(1);
                Some(next)
            } else {
                // Another request rotated it a moment ago: answer as that request did.
                record = state
                    .store
                    .get_refresh(hash.as_str())
                    .await?
                    .ok_or_else(|| invalid_grant("unknown refresh token"))?;
                outcome = RefreshOutcome::Grace;
                None
            }
        }
        _ => None,
    };
    let successor = match (successor, outcome) {
        (Some(next), _) => next,
        (None, RefreshOutcome::Grace) => {
            let sealed = record
                .successor_sealed
                .as_deref()
                .ok_or_else(|| invalid_grant("unknown refresh token"))?;
            let next = grant::unseal_successor(presented, sealed)
                .ok_or_else(|| invalid_grant("unknown refresh token"))?;
            tracing::info!(grant.family = %family.id, "refresh token replayed within the grace window");
            metrics::counter!(names::REFRESH_EVENTS, "event" => "grace").increment(1);
            PlainSecret::new(next)
        }
        (None, RefreshOutcome::Reuse) => {
            tracing::warn!(grant.family = %family.id, client.id = %client.id, "rotated refresh token reused; revoking the grant");
            metrics::counter!(names::REFRESH_EVENTS, "event" => "reuse").increment(1);
            state.store.revoke_family(&family.id, now).await?;
            return Err(invalid_grant("the refresh token was already used"));
        }
        (None, _) => return Err(invalid_grant("the refresh token has expired")),
    };
    state.store.touch_family(&family.id, now).await?;
    token_response(state, client, &family, &scope, Some(&successor))
}

fn token_response(
    state: &AppState,
    client: &Client,
    family: &FamilyRecord,
    scope: &ScopeSet,
    refresh: Option<&PlainSecret>,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let ttl = state.settings.access_token_ttl;
    let claims = AccessClaims {
        iss: state.settings.issuer.clone(),
        sub: family.subject.clone(),
        aud: family.resource.clone(),
        client_id: client.id.clone(),
        scope: scope.to_string(),
        iat: now,
        exp: now + ttl,
        jti: state.random.id(),
        sid: family.id.clone(),
        email: family.email.clone(),
    };
    let access = state.keys.sign(&claims).map_err(|e| {
        tracing::error!(error = %e, "cannot sign an access token");
        ApiError::OAuth(
            StatusCode::INTERNAL_SERVER_ERROR,
            OAuthError::new(ErrorCode::ServerError, "internal error"),
        )
    })?;
    let body = TokenResponse {
        access_token: &access,
        token_type: "Bearer",
        expires_in: ttl,
        refresh_token: refresh.map(PlainSecret::expose),
        scope: &claims.scope,
    };
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(resp)
}
