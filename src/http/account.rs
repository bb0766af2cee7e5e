//! `/account`: the connected-apps page. A user logs in through the same upstream, sees the
//! clients they approved and revokes any of them (its grants die and the approval is forgotten).

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::authorize::{same_origin, store_failure};
use super::clients;
use super::cookies;
use super::pages::{self, error_page};
use crate::clock::format_time;
use crate::oauth::grant::PENDING_TTL;
use crate::oauth::secrets::{SecretHash, SecretKind};
use crate::state::AppState;
use crate::store::{PENDING_CONSENT, PendingRecord, SessionRecord};

pub const ACCOUNT_PATH: &str = "/account";
pub const REVOKE_PATH: &str = "/account/revoke";
pub const LOGOUT_PATH: &str = "/account/logout";
/// The pseudo-client of an account login: it finishes with a session, never with a code.
pub const ACCOUNT_CLIENT: &str = "authgate:account";

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
    SecretHash::of(SecretKind::Session, &format!("csrf:{session_cookie}")).as_str()[..32].to_owned()
}

pub async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let names = cookies::names(&state.settings);
    let session = match cookies::current_session(&state, &headers).await {
        Ok(s) => s,
        Err(e) => return store_failure(&e),
    };
    let (Some(session), Some(cookie)) = (session, cookies::read(&headers, names.session)) else {
        return start_login(&state, &headers).await;
    };
    render(&state, &session, cookie, None).await
}

async fn render(
    state: &AppState,
    session: &SessionRecord,
    cookie: &str,
    notice: Option<String>,
) -> Response {
    let consents = match state.store.list_consents(&session.subject).await {
        Ok(c) => c,
        Err(e) => return store_failure(&e),
    };
    let families = match state
        .store
        .list_families(Some(&session.subject), None)
        .await
    {
        Ok(f) => f,
        Err(e) => return store_failure(&e),
    };
    let mut apps = Vec::new();
    for c in consents {
        let last = families
            .iter()
            .filter(|f| f.client_id == c.client_id)
            .map(|f| f.last_used_at)
            .max()
            .unwrap_or(c.last_used_at)
            .max(c.last_used_at);
        let (name, document_host, redirect_hosts) =
            match clients::resolve(state, &c.client_id).await {
                Ok(client) => {
                    let mut hosts: Vec<String> = client
                        .metadata
                        .redirect_uris
                        .iter()
                        .map(|u| crate::oauth::redirect::redirect_target(u))
                        .collect();
                    hosts.dedup();
                    (
                        client.display_name(),
                        client.document_host(),
                        hosts.join(", "),
                    )
                }
                Err(_) => (
                    c.client_id.clone(),
                    None,
                    "(no longer registered)".to_owned(),
                ),
            };
        apps.push(AppView {
            client_id: c.client_id.clone(),
            name,
            document_host,
            redirect_hosts,
            scope: c.scope.clone(),
            first_use: format_time(c.created_at),
            last_use: format_time(last),
        });
    }
    pages::render(
        StatusCode::OK,
        &AccountPage {
            who: session
                .email
                .clone()
                .unwrap_or_else(|| session.subject.clone()),
            server_name: state
                .settings
                .public_url
                .host_str()
                .unwrap_or("this server")
                .to_owned(),
            apps,
            csrf: csrf_for(cookie),
            notice,
            revoke_action: state.settings.url(REVOKE_PATH),
            logout_action: state.settings.url(LOGOUT_PATH),
        },
    )
}

/// Not logged in: the same upstream login as an authorization, finishing on this page.
async fn start_login(state: &AppState, headers: &HeaderMap) -> Response {
    let browser = cookies::BrowserBinding::of(state, headers);
    let now = state.clock.now();
    let pending = PendingRecord {
        id_hash: SecretHash::of(SecretKind::PendingAuthorization, &state.random.token())
            .as_str()
            .to_owned(),
        browser_hash: browser.hash(),
        client_id: ACCOUNT_CLIENT.to_owned(),
        redirect_uri: state.settings.url(ACCOUNT_PATH),
        state: None,
        code_challenge: String::new(),
        scope: String::new(),
        resource: String::new(),
        status: PENDING_CONSENT.to_owned(),
        upstream_state_hash: None,
        upstream_nonce: None,
        upstream_verifier: None,
        created_at: now,
        expires_at: now + PENDING_TTL,
    };
    if let Err(e) = state.store.insert_pending(&pending).await {
        return store_failure(&e);
    }
    let mut resp = super::login::start_upstream(state, &pending).await;
    browser.set_on(state, &mut resp);
    resp
}

#[derive(Deserialize)]
pub struct RevokeForm {
    csrf: String,
    client_id: String,
}

async fn checked_session(
    state: &AppState,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<(SessionRecord, String), Response> {
    if !same_origin(state, headers) {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form was submitted from another site.",
        ));
    }
    let names = cookies::names(&state.settings);
    let session = cookies::current_session(state, headers)
        .await
        .map_err(|e| store_failure(&e))?;
    let (Some(session), Some(cookie)) = (session, cookies::read(headers, names.session)) else {
        return Err(error_page(
            StatusCode::UNAUTHORIZED,
            "Signed out",
            "Your session has ended. Open the connected applications page again.",
        ));
    };
    let expected = csrf_for(cookie);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        expected.as_bytes(),
        csrf.as_bytes(),
    )) {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form is not valid any more. Reload the page and try again.",
        ));
    }
    Ok((session, cookie.to_owned()))
}

pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<RevokeForm>,
) -> Response {
    let (session, cookie) = match checked_session(&state, &headers, &form.csrf).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    let now = state.clock.now();
    match state
        .store
        .revoke_grants(Some(&session.subject), Some(&form.client_id), now)
        .await
    {
        Ok(n) => {
            tracing::info!(user.sub = %session.subject, client.id = %form.client_id, grants = n, "access revoked by the user");
            render(
                &state,
                &session,
                &cookie,
                Some(
                    "Access revoked. The application must ask you again before it can connect."
                        .to_owned(),
                ),
            )
            .await
        }
        Err(e) => store_failure(&e),
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    csrf: String,
}

pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    let (session, _) = match checked_session(&state, &headers, &form.csrf).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    if let Err(e) = state.store.delete_session(&session.id_hash).await {
        return store_failure(&e);
    }
    let mut resp = error_page(
        StatusCode::OK,
        "Signed out",
        "You are signed out of this server.",
    );
    let names = cookies::names(&state.settings);
    cookies::set(&mut resp, &names, names.session, "", 0);
    resp
}
