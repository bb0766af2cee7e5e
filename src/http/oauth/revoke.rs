//! `POST /revoke` (RFC 7009): refresh tokens revoke their whole grant; access tokens are revoked
//! by `jti`. Unknown tokens get 200, as the RFC requires.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::http::error::ApiError;
use crate::http::extract::OAuthForm;
use crate::oauth::OAuthError;
use crate::services::{clients, grants};
use crate::state::AppState;

pub async fn revoke(State(app): State<AppState>, form: OAuthForm) -> Result<Response, ApiError> {
    let token = form
        .params
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is required"))?;
    let client = clients::authenticate(&app, &form.credentials()?).await?;
    grants::revoke_token(&app, &client, token).await?;
    Ok((StatusCode::OK, [(header::CACHE_CONTROL, "no-store")]).into_response())
}
