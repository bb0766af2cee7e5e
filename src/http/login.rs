//! The upstream leg: after consent, the browser goes to the upstream provider (or the built-in
//! development login) with authgate's own state, nonce and PKCE; the callback verifies the
//! identity, applies the login policy, opens a session and finishes the authorization.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::authorize::{
    ClientRedirect, complete, load_pending_for_browser, same_origin, store_failure,
};
use super::pages::{self, DevLoginPage, error_page, error_page_detail};
use crate::oauth::grant::derive_subject;
use crate::oauth::identity::UpstreamIdentity;
use crate::oauth::secrets::{PlainSecret, SecretHash, SecretKind};
use crate::oauth::{ErrorCode, OAuthError};
use crate::state::AppState;
use crate::store::{PENDING_UPSTREAM, PendingRecord, SessionRecord};
use crate::telemetry::names;

pub const CALLBACK_PATH: &str = "/oauth/callback";
pub const DEV_LOGIN_PATH: &str = "/dev/login";
const DEV_ISSUER: &str = "authgate:development-login";

fn state_hash(state: &str) -> String {
    SecretHash::of(SecretKind::UpstreamState, state)
        .as_str()
        .to_owned()
}

/// Approved: send the browser to log in. Called again on a double submit, which replaces the
/// upstream state, so the browser's last navigation is the one that works.
pub async fn start_upstream(state: &AppState, pending: &PendingRecord) -> Response {
    let up_state = state.random.token();
    let nonce = state.random.token();
    let verifier = state.random.token();
    match state
        .store
        .set_pending_upstream(&pending.id_hash, &state_hash(&up_state), &nonce, &verifier)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return pages::already_done();
        }
        Err(e) => return store_failure(&e),
    }
    match &state.upstream {
        Some(upstream) => match upstream.authorize_url(&up_state, &nonce, &verifier).await {
            Ok(url) => pages::redirect(StatusCode::SEE_OTHER, &url),
            Err(e) => {
                tracing::error!(error = %e, "cannot reach the upstream provider");
                error_page(
                    StatusCode::BAD_GATEWAY,
                    "Sign-in unavailable",
                    "The sign-in provider cannot be reached right now. Please try again in a moment.",
                )
            }
        },
        None => {
            let mut url = match url::Url::parse(&state.settings.url(DEV_LOGIN_PATH)) {
                Ok(u) => u,
                Err(_) => {
                    return error_page(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Error",
                        "Bad public URL.",
                    );
                }
            };
            url.query_pairs_mut().append_pair("state", &up_state);
            pages::redirect(StatusCode::SEE_OTHER, url.as_str())
        }
    }
}

async fn pending_for_state(
    state: &AppState,
    headers: &HeaderMap,
    up_state: &str,
) -> Result<PendingRecord, Response> {
    let found = state
        .store
        .get_pending_by_upstream_state(&state_hash(up_state))
        .await
        .map_err(|e| store_failure(&e))?;
    let pending = load_pending_for_browser(state, headers, found).await?;
    if pending.status != PENDING_UPSTREAM {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "Request expired",
            "This sign-in request is not waiting for a login.",
        ));
    }
    Ok(pending)
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    iss: Option<String>,
}

pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(upstream) = state.upstream.as_ref() else {
        return error_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "No upstream provider is configured.",
        );
    };
    let Some(up_state) = q.state.as_deref() else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid sign-in response",
            "The sign-in provider's answer has no state.",
        );
    };
    let pending = match pending_for_state(&state, &headers, up_state).await {
        Ok(p) => p,
        Err(page) => return page,
    };
    if q.iss.as_deref().is_some_and(|iss| iss != upstream.issuer()) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid sign-in response",
            "The answer came from a different sign-in provider than the one this server uses.",
        );
    }
    let to_client = ClientRedirect {
        uri: pending.redirect_uri.clone(),
        state: pending.state.clone(),
    };
    if q.error.is_some() || q.code.is_none() {
        if let Err(e) = state.store.finish_pending(&pending.id_hash).await {
            return store_failure(&e);
        }
        return to_client.error(
            &state.settings.issuer,
            StatusCode::SEE_OTHER,
            &OAuthError::new(
                ErrorCode::AccessDenied,
                "the sign-in was cancelled or failed at the identity provider",
            ),
        );
    }
    let code = q.code.as_deref().unwrap_or_default();
    let (Some(nonce), Some(verifier)) = (
        pending.upstream_nonce.as_deref(),
        pending.upstream_verifier.as_deref(),
    ) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Request expired",
            "This sign-in request is not waiting for a login.",
        );
    };
    let started = std::time::Instant::now();
    let exchanged = upstream.exchange(code, verifier, nonce).await;
    metrics::histogram!(names::UPSTREAM_LOGIN_SECONDS).record(started.elapsed().as_secs_f64());
    let identity = match exchanged {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(error = %e, "upstream login failed");
            metrics::counter!(names::AUTHORIZATIONS, "outcome" => "upstream_failed").increment(1);
            return error_page_detail(
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                "The sign-in provider's answer could not be verified. Go back to the application and try again.",
                e.to_string(),
            );
        }
    };
    finish_login(&state, &pending, identity).await
}

/// The login policy, then a session, then the code.
async fn finish_login(
    state: &AppState,
    pending: &PendingRecord,
    identity: UpstreamIdentity,
) -> Response {
    if let Err(why) = state.settings.login_policy.check(&identity) {
        tracing::info!(upstream.issuer = %identity.issuer, "login refused by policy");
        if let Err(e) = state.store.finish_pending(&pending.id_hash).await {
            return store_failure(&e);
        }
        metrics::counter!(names::AUTHORIZATIONS, "outcome" => "refused_by_policy").increment(1);
        return error_page(StatusCode::FORBIDDEN, "Access not allowed", why);
    }
    let now = state.clock.now();
    let session_value = PlainSecret::new(state.random.token());
    let session = SessionRecord {
        id_hash: session_value.hash(SecretKind::Session).as_str().to_owned(),
        subject: derive_subject(&identity.issuer, &identity.subject),
        email: identity.email.clone(),
        created_at: now,
        expires_at: now + state.settings.session_ttl,
    };
    if let Err(e) = state.store.insert_session(&session).await {
        return store_failure(&e);
    }
    tracing::info!(user.sub = %session.subject, "user logged in");
    complete(state, pending, &session, Some(session_value.expose())).await
}

#[derive(Deserialize)]
pub struct DevLoginQuery {
    state: String,
}

pub async fn dev_login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<DevLoginQuery>,
) -> Response {
    if let Err(page) = pending_for_state(&state, &headers, &q.state).await {
        return page;
    }
    pages::render(
        StatusCode::OK,
        &DevLoginPage {
            state: q.state,
            action: state.settings.url(DEV_LOGIN_PATH),
        },
    )
}

#[derive(Deserialize)]
pub struct DevLoginForm {
    state: String,
    email: String,
}

pub async fn dev_login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<DevLoginForm>,
) -> Response {
    if !same_origin(&state, &headers) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form was submitted from another site.",
        );
    }
    let pending = match pending_for_state(&state, &headers, &form.state).await {
        Ok(p) => p,
        Err(page) => return page,
    };
    let email = form.email.trim().to_ascii_lowercase();
    if email.len() > 254 || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid email",
            "Enter an email address.",
        );
    }
    let identity = UpstreamIdentity {
        issuer: DEV_ISSUER.to_owned(),
        subject: email.clone(),
        email: Some(email),
        email_verified: Some(true),
    };
    finish_login(&state, &pending, identity).await
}
