//! `/account`: the connected-apps page. A person logs in through the same upstream, sees the
//! clients they approved and revokes any of them (its grants die and the approval is forgotten).

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::cookies::{self, BrowserBinding};
use super::error::PageError;
use super::extract::same_origin;
use super::pages;
use crate::clock::format_time;
use crate::oauth::redirect::redirect_target;
use crate::oauth::secrets::{Hashed, kind};
use crate::services::audit::{self, Kind, Outcome};
use crate::services::authorization;
use crate::services::clients;
use crate::state::{App, AppState};
use crate::store::SessionRecord;

pub const ACCOUNT_PATH: &str = "/account";
pub const REVOKE_PATH: &str = "/account/revoke";
pub const LOGOUT_PATH: &str = "/account/logout";

pub struct AppView {
    pub client_id: String,
    pub name: String,
    pub document_host: Option<String>,
    pub redirect_hosts: String,
    pub scope: String,
    pub first_use: String,
    pub last_use: String,
}

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage {
    pub who: String,
    pub server_name: String,
    pub apps: Vec<AppView>,
    pub csrf: String,
    pub notice: Option<String>,
    pub revoke_action: String,
    pub logout_action: String,
}

/// The form token: derived from the session cookie, which a cross-site page cannot read.
fn csrf_for(session_cookie: &str) -> String {
    Hashed::<kind::Csrf>::of(session_cookie)
        .as_str()
        .chars()
        .take(32)
        .collect()
}

/// The logged-in session and its cookie value, if the browser has a valid one.
async fn signed_in(
    app: &App,
    headers: &HeaderMap,
) -> Result<Option<(SessionRecord, String)>, PageError> {
    let Some(cookie) = cookies::session(&app.settings, headers) else {
        return Ok(None);
    };
    let session = authorization::session(app, Some(&cookie)).await?;
    Ok(session.map(|s| (s, cookie)))
}

pub async fn page(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, PageError> {
    let Some((session, cookie)) = signed_in(&app, &headers).await? else {
        // Not logged in: the same upstream login as an authorization, finishing on this page.
        let browser = BrowserBinding::of(&app.settings, &headers, app.random.as_ref());
        let url = authorization::start_account_login(
            &app,
            browser.hash(),
            app.settings.url(ACCOUNT_PATH),
        )
        .await?;
        let mut resp = pages::redirect(StatusCode::SEE_OTHER, &url);
        browser.set_on(&app.settings, &mut resp);
        return Ok(resp);
    };
    render(&app, &session, &cookie, None).await
}

/// One row per approved client: its name and where it sends people, if it is still known.
async fn app_view(app: &App, consent: crate::store::ConsentRecord, last: i64) -> AppView {
    let (name, document_host, redirect_hosts) =
        match clients::resolve(app, &consent.client_id).await {
            Ok(client) => {
                let mut hosts: Vec<String> = client
                    .metadata
                    .redirect_uris
                    .iter()
                    .map(|u| redirect_target(u))
                    .collect();
                hosts.dedup();
                (
                    client.display_name(),
                    client.document_host(),
                    hosts.join(", "),
                )
            }
            Err(_) => (
                consent.client_id.clone(),
                None,
                "(no longer registered)".to_owned(),
            ),
        };
    AppView {
        name,
        document_host,
        redirect_hosts,
        scope: consent.scope,
        first_use: format_time(consent.created_at),
        last_use: format_time(last),
        client_id: consent.client_id,
    }
}

async fn render(
    app: &App,
    session: &SessionRecord,
    cookie: &str,
    notice: Option<String>,
) -> Result<Response, PageError> {
    let consents = app.store.list_consents(&session.subject).await?;
    let grants = app.store.list_grants(Some(&session.subject), None).await?;
    let mut apps = Vec::new();
    for c in consents {
        let last = grants
            .iter()
            .filter(|g| g.client_id == c.client_id)
            .map(|g| g.last_used_at)
            .max()
            .unwrap_or(c.last_used_at)
            .max(c.last_used_at);
        apps.push(app_view(app, c, last).await);
    }
    let page = AccountPage {
        who: session
            .email
            .clone()
            .unwrap_or_else(|| session.subject.clone()),
        server_name: app
            .settings
            .public_url
            .host_str()
            .unwrap_or("this server")
            .to_owned(),
        apps,
        csrf: csrf_for(cookie),
        notice,
        revoke_action: app.settings.url(REVOKE_PATH),
        logout_action: app.settings.url(LOGOUT_PATH),
    };
    Ok(pages::render(StatusCode::OK, &page))
}

/// A form post from the account page: same origin, a live session, its form token.
async fn checked_session(
    app: &App,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(SessionRecord, String), PageError> {
    same_origin(&app.settings, headers)?;
    let Some((session, cookie)) = signed_in(app, headers).await? else {
        return Err(PageError::new(
            StatusCode::UNAUTHORIZED,
            "Signed out",
            "Your session has ended. Open the connected applications page again.",
        ));
    };
    let expected = csrf_for(&cookie);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        expected.as_bytes(),
        csrf.as_bytes(),
    )) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form is not valid any more. Reload the page and try again.",
        ));
    }
    Ok((session, cookie))
}

#[derive(Deserialize)]
pub struct RevokeForm {
    csrf: String,
    client_id: String,
}

pub async fn revoke(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<RevokeForm>,
) -> Result<Response, PageError> {
    let (session, cookie) = checked_session(&app, &headers, &form.csrf).await?;
    let n = app
        .store
        .revoke_grants(
            Some(&session.subject),
            Some(&form.client_id),
            app.clock.now(),
        )
        .await?;
    tracing::info!(user.sub = %session.subject, client.id = %form.client_id, grants = n, "access revoked by the user");
    audit::entry(&app, Kind::Revocation, Outcome::Revoked)
        .user(&session.subject, session.email.as_deref())
        .client(&form.client_id)
        .detail("revoked by the user on the account page")
        .record();
    let notice = "Access revoked. The application must ask you again before it can connect.";
    render(&app, &session, &cookie, Some(notice.to_owned())).await
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

pub async fn logout(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Result<Response, PageError> {
    let (session, _) = checked_session(&app, &headers, &form.csrf).await?;
    app.store.delete_session(&session.id).await?;
    let mut resp = pages::message(
        StatusCode::OK,
        "Signed out",
        "You are signed out of this server.",
    );
    let names = cookies::names(&app.settings);
    cookies::set(&mut resp, &names, names.session, "", 0);
    Ok(resp)
}
