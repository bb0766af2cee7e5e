//! The authorization server's endpoints: discovery, registration, the authorization request and
//! its consent page, the upstream login's return (or the development login), tokens,
//! revocation, and OpenID Connect's UserInfo.

pub mod authorize;
pub mod callback;
pub mod consent;
pub mod dev_login;
pub mod discovery;
pub mod register;
pub mod revoke;
pub mod token;
pub mod userinfo;

use axum::http::StatusCode;
use axum::response::Response;

use super::cookies;
use super::pages;
use crate::services::authorization::{ClientAnswer, Finished, Next};
use crate::state::App;

/// The answer to the client, by redirect: 302 after a GET, 303 after a form POST
/// (OAuth 2.1 §7.5.3).
fn to_client(app: &App, status: StatusCode, answer: &ClientAnswer) -> Response {
    pages::redirect(status, &answer.location(&app.settings.issuer))
}

/// Where the browser goes after a form or a login: always 303, or the confirmation page.
fn go(app: &App, next: &Next) -> Response {
    match next {
        Next::ToClient(answer) => to_client(app, StatusCode::SEE_OTHER, answer),
        Next::ToUpstream(url) | Next::ToAccount(url) => pages::redirect(StatusCode::SEE_OTHER, url),
        Next::Confirm(c) => consent::consent_page(
            app,
            &c.client,
            &c.request,
            &c.ask,
            consent::ConsentForm::Confirm(c.token.expose()),
            Some(c.account.clone()),
        ),
    }
}

/// After a login: onwards, with the new session's cookie.
fn logged_in(app: &App, finished: &Finished) -> Response {
    let mut resp = go(app, &finished.next);
    if let Some(session) = &finished.session {
        cookies::set_session(&app.settings, &mut resp, session.expose());
    }
    resp
}
