//! `POST /token`: the authorization code grant (with PKCE), refresh-token rotation and the
//! jwt-bearer grant with an enterprise ID-JAG (`services::tokens` does the exchanges).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::http::error::{ApiError, no_store};
use crate::http::extract::OAuthForm;
use crate::oauth::request::TokenRequest;
use crate::services::{clients, tokens};
use crate::state::AppState;
use crate::telemetry::names;

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    scope: String,
}

pub async fn token(State(app): State<AppState>, form: OAuthForm) -> Result<Response, ApiError> {
    let req = TokenRequest::parse(&form.params)?;
    tokens::check_supported(&app, &req)?;
    let grant_type = req.grant_type();
    let result = exchange(&app, &form, req).await;
    let outcome = result.as_ref().map_or_else(ApiError::label, |_| "ok");
    metrics::counter!(names::TOKEN_GRANTS, "grant_type" => grant_type, "outcome" => outcome)
        .increment(1);
    let issued = result?;
    let body = TokenResponse {
        access_token: &issued.access_token,
        token_type: "Bearer",
        expires_in: issued.expires_in,
        refresh_token: issued.refresh_token.as_ref().map(|r| r.expose()),
        scope: issued.scope.to_string(),
    };
    let mut resp = (StatusCode::OK, axum::Json(body)).into_response();
    no_store(&mut resp);
    Ok(resp)
}

async fn exchange(
    app: &AppState,
    form: &OAuthForm,
    req: TokenRequest,
) -> Result<tokens::Issued, ApiError> {
    let client = clients::authenticate(app, &form.credentials()?).await?;
    Ok(tokens::exchange(app, &client, req).await?)
}
