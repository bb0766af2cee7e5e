//! `POST /revoke` (RFC 7009): refresh tokens revoke their whole grant; access tokens are revoked
//! by `jti`. Unknown tokens get 200, as the RFC requires.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::client_auth::{self, AuthFailure};
use super::error::ApiError;
use crate::oauth::OAuthError;
use crate::oauth::secrets::{SecretHash, SecretKind};
use crate::state::AppState;

pub async fn revoke(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    match revoke_inner(&state, &headers, body).await {
        Ok(()) => (StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn revoke_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(), AuthFailure> {
    let params = client_auth::read_form(headers, body)
        .await
        .map_err(AuthFailure::Api)?;
    let token = params
        .get("token")
        .ok_or_else(|| {
            AuthFailure::Api(ApiError::bad_request(OAuthError::invalid_request(
                "token is required",
            )))
        })?
        .clone();
    let client = client_auth::authenticate(state, headers, &params).await?;
    let now = state.clock.now();
    let foreign = || {
        AuthFailure::Api(ApiError::bad_request(OAuthError::invalid_request(
            "the token was not issued to this client",
        )))
    };

    let hash = SecretHash::of(SecretKind::RefreshToken, &token);
    if let Some(record) = state
        .store
        .get_refresh(hash.as_str())
        .await
        .map_err(|e| AuthFailure::Api(e.into()))?
    {
        let family = state
            .store
            .get_family(&record.family_id)
            .await
            .map_err(|e| AuthFailure::Api(e.into()))?;
        if let Some(family) = family {
            if family.client_id != client.id {
                return Err(foreign());
            }
            state
                .store
                .revoke_family(&family.id, now)
                .await
                .map_err(|e| AuthFailure::Api(e.into()))?;
            tracing::info!(grant.family = %family.id, "grant revoked by its client");
        }
        return Ok(());
    }
    if let Ok(claims) = state.keys.verify_signature(&token) {
        if claims.client_id != client.id {
            return Err(foreign());
        }
        state
            .store
            .revoke_access_token(&claims.jti, claims.exp)
            .await
            .map_err(|e| AuthFailure::Api(e.into()))?;
        tracing::info!(client.id = %client.id, "access token revoked");
    }
    Ok(())
}
