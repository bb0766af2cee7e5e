//! The consent page and its form (`POST /authorize/consent`): approve or deny. The form is
//! bound to the browser that opened the page and refused from other sites.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::go;
use crate::domain::pending::PendingAuthorization;
use crate::http::cookies;
use crate::http::error::PageError;
use crate::http::extract::same_origin;
use crate::http::pages::{self, ConsentPage};
use crate::oauth::oidc;
use crate::oauth::redirect::redirect_target;
use crate::oauth::scope::ScopeSet;
use crate::oauth::secrets::{Secret, kind};
use crate::oauth::url_rules::is_loopback_url;
use crate::services::authorization::{self, Decision};
use crate::services::clients::Client;
use crate::state::{App, AppState};
use crate::store::SessionRecord;

pub const CONSENT_PATH: &str = "/authorize/consent";

fn scope_descriptions(scope: &ScopeSet) -> Vec<String> {
    scope
        .iter()
        .map(|s| match s {
            "mcp" => "use this server's tools and data on your behalf".to_owned(),
            oidc::OPENID => "know who you are (an identifier for your account)".to_owned(),
            oidc::EMAIL => "see your email address".to_owned(),
            other => format!("use the “{other}” permission"),
        })
        .collect()
}

pub fn consent_page(
    app: &App,
    client: &Client,
    pending: &PendingAuthorization,
    id: &Secret<kind::Pending>,
    session: Option<&SessionRecord>,
) -> Response {
    let (redirect_host, scope) = match pending.client_request() {
        Some(r) => (redirect_target(&r.redirect_uri), r.scope.clone()),
        None => (String::new(), ScopeSet::default()),
    };
    let page = ConsentPage {
        client_name: client.display_name(),
        unverified_name: !client.document && client.metadata.client_name.is_some(),
        server_name: app
            .settings
            .public_url
            .host_str()
            .unwrap_or("this server")
            .to_owned(),
        client_host: client.document_host(),
        redirect_host,
        loopback_only: client
            .metadata
            .redirect_uris
            .iter()
            .all(|u| is_loopback_url(u)),
        signed_in_as: session.map(|s| s.email.clone().unwrap_or_else(|| s.subject.clone())),
        scopes: scope_descriptions(&scope),
        request_id: id.expose().to_owned(),
        action: app.settings.url(CONSENT_PATH),
    };
    pages::render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct ConsentForm {
    request: String,
    decision: String,
}

pub async fn consent(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<ConsentForm>,
) -> Result<Response, PageError> {
    same_origin(&app.settings, &headers)?;
    let decision = match form.decision.as_str() {
        "approve" => Decision::Approve,
        "deny" => Decision::Deny,
        _ => {
            return Err(PageError::bad_request(
                "Invalid request",
                "Unknown decision.",
            ));
        }
    };
    let session = match decision {
        Decision::Approve => {
            let cookie = cookies::session(&app.settings, &headers);
            authorization::session(&app, cookie.as_deref()).await?
        }
        Decision::Deny => None,
    };
    let browser = cookies::browser(&app.settings, &headers);
    let next = authorization::consent(
        &app,
        &form.request,
        browser.as_ref(),
        decision,
        session.as_ref(),
    )
    .await?;
    Ok(go(&app, &next))
}
