//! `GET/POST /dev/login`: the built-in development login's form, in place of an upstream
//! provider (loopback public URLs only).

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::logged_in;
use crate::http::cookies;
use crate::http::error::PageError;
use crate::http::extract::same_origin;
use crate::http::pages::{self, DevLoginPage};
use crate::services::authorization::{self, UpstreamAnswer};
use crate::services::upstream::dev::DEV_LOGIN_PATH;
use crate::state::AppState;

#[derive(Deserialize)]
pub struct DevLoginQuery {
    state: String,
}

pub async fn page(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DevLoginQuery>,
) -> Result<Response, PageError> {
    let browser = cookies::browser(&app.settings, &headers);
    // The same binding as the login's return: a webview without the cookie may log in here, and
    // is then asked to confirm.
    authorization::at_upstream(&app, &q.state, browser.as_ref()).await?;
    Ok(pages::render(
        StatusCode::OK,
        &DevLoginPage {
            state: q.state,
            action: app.settings.url(DEV_LOGIN_PATH),
        },
    ))
}

#[derive(Deserialize)]
pub struct DevLoginForm {
    state: String,
    email: String,
}

pub async fn log_in(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<DevLoginForm>,
) -> Result<Response, PageError> {
    same_origin(&app.settings, &headers)?;
    let browser = cookies::browser(&app.settings, &headers);
    let answer = UpstreamAnswer::Answer {
        answer: &form.email,
        issuer: None,
    };
    let finished =
        authorization::upstream_returned(&app, &form.state, browser.as_ref(), answer).await?;
    Ok(logged_in(&app, &finished))
}
