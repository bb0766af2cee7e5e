//! `POST /token`: the authorization code grant (with PKCE, and an ID token for OpenID clients),
//! refresh-token rotation and the jwt-bearer grant with an enterprise ID-JAG
//! (`services::tokens` does the exchanges), and RFC 8693 token exchange for the user's upstream
//! token (`services::upstream_tokens`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::http::error::{ApiError, no_store};
use crate::http::extract::OAuthForm;
use crate::oauth::request::TokenRequest;
use crate::oauth::token_exchange::ACCESS_TOKEN_TYPE;
use crate::services::{clients, tokens, upstream_tokens};
use crate::state::AppState;
use crate::telemetry::names;

/// RFC 6749 §5.1, or RFC 8693 §2.2.1 for an exchange.
#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_token_type: Option<&'static str>,
    token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

pub async fn token(State(app): State<AppState>, form: OAuthForm) -> Result<Response, ApiError> {
    let req = TokenRequest::parse(&form.params)?;
    tokens::check_supported(&app, &req)?;
    let grant_type = req.grant_type();
    let result = exchange(&app, &form, req).await;
    let outcome = result.as_ref().map_or_else(ApiError::label, |_| "ok");
    metrics::counter!(names::TOKEN_GRANTS, "grant_type" => grant_type, "outcome" => outcome)
        .increment(1);
    let mut resp = (StatusCode::OK, axum::Json(result?)).into_response();
    no_store(&mut resp);
    Ok(resp)
}

async fn exchange(
    app: &AppState,
    form: &OAuthForm,
    req: TokenRequest,
) -> Result<TokenResponse, ApiError> {
    let client = clients::authenticate(app, &form.credentials()?).await?;
    if let TokenRequest::TokenExchange(req) = req {
        let fresh = upstream_tokens::exchange(app, &client, req).await?;
        return Ok(TokenResponse {
            access_token: fresh.access_token.expose().to_owned(),
            issued_token_type: Some(ACCESS_TOKEN_TYPE),
            token_type: "Bearer",
            expires_in: fresh.expires_in,
            refresh_token: None,
            scope: None,
            id_token: None,
        });
    }
    let issued = tokens::exchange(app, &client, req).await?;
    Ok(TokenResponse {
        access_token: issued.access_token,
        issued_token_type: None,
        token_type: "Bearer",
        expires_in: Some(issued.expires_in),
        refresh_token: issued.refresh_token.map(|r| r.expose().to_owned()),
        scope: Some(issued.scope.to_string()),
        id_token: issued.id_token,
    })
}
