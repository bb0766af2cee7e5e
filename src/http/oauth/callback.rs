//! `GET /oauth/callback`: the browser's return from the upstream OpenID provider.

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;

use super::logged_in;
use crate::http::cookies;
use crate::http::error::PageError;
use crate::services::authorization::{self, UpstreamAnswer};
use crate::state::AppState;

pub const CALLBACK_PATH: &str = "/oauth/callback";

#[derive(Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    iss: Option<String>,
}

pub async fn callback(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, PageError> {
    let Some(state) = q.state.as_deref() else {
        return Err(PageError::bad_request(
            "Invalid sign-in response",
            "The sign-in provider's answer has no state.",
        ));
    };
    let issuer = q.iss.as_deref();
    let answer = match (&q.error, q.code.as_deref()) {
        (None, Some(code)) => UpstreamAnswer::Answer {
            answer: code,
            issuer,
        },
        _ => UpstreamAnswer::Failed { issuer },
    };
    let browser = cookies::browser(&app.settings, &headers);
    let finished = authorization::upstream_returned(&app, state, browser.as_ref(), answer).await?;
    Ok(logged_in(&app, &finished))
}
