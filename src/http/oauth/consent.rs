//! The consent page and its form (`POST /authorize/consent`): approve or deny. The form is
//! bound to the browser that opened the page (its cookie) and refused from other sites. The same
//! page confirms a login that came back without that cookie; its form is bound by a token only
//! that page carried.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::go;
use crate::domain::consent::ConsentAsk;
use crate::domain::pending::ClientAuthorization;
use crate::http::cookies;
use crate::http::error::PageError;
use crate::http::extract::same_origin;
use crate::http::pages::{self, ConsentPage};
use crate::oauth::oidc;
use crate::oauth::redirect::redirect_target;
use crate::oauth::scope::ScopeSet;
use crate::oauth::url_rules::is_loopback_url;
use crate::services::authorization::{self, Decision};
use crate::services::clients::Client;
use crate::state::{App, AppState};

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

/// Which form the page carries: a pending request's (bound to the browser's cookie), or a
/// confirmation's (bound by its token).
pub enum ConsentForm<'a> {
    Request(&'a str),
    Confirm(&'a str),
}

/// The consent page for `request`, asking only for what `ask` says is new.
pub fn consent_page(
    app: &App,
    client: &Client,
    request: &ClientAuthorization,
    ask: &ConsentAsk,
    form: ConsentForm<'_>,
    signed_in_as: Option<String>,
) -> Response {
    let (field, value, confirming) = match form {
        ConsentForm::Request(id) => ("request", id, false),
        ConsentForm::Confirm(token) => ("confirm", token, true),
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
        redirect_host: redirect_target(&request.redirect_uri),
        loopback_only: client
            .metadata
            .redirect_uris
            .iter()
            .all(|u| is_loopback_url(u)),
        signed_in_as,
        scopes: scope_descriptions(&ask.new),
        already_allowed: scope_descriptions(&ask.already),
        confirming,
        field,
        value: value.to_owned(),
        action: app.settings.url(CONSENT_PATH),
    };
    pages::render(StatusCode::OK, &page)
}

/// Either `request` (the pending request's id) or `confirm` (a confirmation's token).
#[derive(Deserialize)]
pub struct Answer {
    request: Option<String>,
    confirm: Option<String>,
    decision: String,
}

impl Answer {
    fn decision(&self) -> Result<Decision, PageError> {
        match self.decision.as_str() {
            "approve" => Ok(Decision::Approve),
            "deny" => Ok(Decision::Deny),
            _ => Err(PageError::bad_request(
                "Invalid request",
                "Unknown decision.",
            )),
        }
    }
}

pub async fn consent(
    State(app): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<Answer>,
) -> Result<Response, PageError> {
    same_origin(&app.settings, &headers)?;
    let decision = form.decision()?;
    let request = match (form.request, form.confirm) {
        (Some(request), None) => request,
        (None, Some(token)) => {
            let next = authorization::confirm(&app, &token, decision).await?;
            return Ok(go(&app, &next));
        }
        _ => {
            return Err(PageError::bad_request(
                "Invalid request",
                "The form does not say which request it answers.",
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
    let next = authorization::consent(&app, &request, browser.as_ref(), decision, session.as_ref())
        .await?;
    Ok(go(&app, &next))
}
