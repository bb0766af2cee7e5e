//! `GET/POST /userinfo` (OIDC Core §5.3): the claims an OpenID client's access token releases
//! about the person, from a bearer token in the `Authorization` header.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::http::error::{BearerError, no_store};
use crate::http::extract::{Bearer, bearer};
use crate::services::userinfo;
use crate::state::AppState;

pub async fn userinfo(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, BearerError> {
    let token = match bearer(&headers) {
        Bearer::Token(t) => t,
        Bearer::Absent | Bearer::OtherScheme => return Err(BearerError::NoToken),
        Bearer::Malformed => return Err(BearerError::Malformed),
    };
    let claims = userinfo::userinfo(&app, token).await?;
    let mut resp = (StatusCode::OK, axum::Json(claims)).into_response();
    no_store(&mut resp);
    Ok(resp)
}
