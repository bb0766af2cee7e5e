//! `GET /authorize`. The client and its redirect URI are checked first; until both are trusted
//! every problem is an HTML page, never a redirect. Consent comes before any redirect to the
//! upstream provider (the MCP confused-deputy rule).

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::consent::{ConsentForm, consent_page};
use super::to_client;
use crate::http::cookies::{self, BrowserBinding};
use crate::http::error::PageError;
use crate::http::pages;
use crate::oauth::request::{AuthorizationRequest, Params};
use crate::services::authorization::{self, Rejected, Started};
use crate::state::{App, AppState};

pub async fn authorize(
    State(app): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let params = Params::parse(query.unwrap_or_default().as_bytes())?;
    let Some(request) = AuthorizationRequest::parse(&params) else {
        return Err(PageError::bad_request(
            "Invalid request",
            "The request does not say which application is asking (client_id is missing).",
        ));
    };
    let accepted = match authorization::accept(&app, request).await {
        Ok(a) => a,
        Err(e) => return rejected(&app, e),
    };
    let cookie = cookies::session(&app.settings, &headers);
    let session = authorization::session(&app, cookie.as_deref()).await?;
    let browser = BrowserBinding::of(&app.settings, &headers, app.random.as_ref());
    match authorization::start(&app, accepted, session.as_ref(), browser.hash()).await? {
        Started::Answered(answer) => Ok(to_client(&app, StatusCode::FOUND, &answer)),
        Started::ToUpstream(url) => {
            let mut resp = pages::redirect(StatusCode::FOUND, &url);
            browser.set_on(&app.settings, &mut resp);
            Ok(resp)
        }
        Started::Consent {
            id,
            request,
            client,
            session,
            ask,
        } => {
            let signed_in_as = session.map(|s| s.email.unwrap_or(s.subject));
            let form = ConsentForm::Request(id.expose());
            let mut resp = consent_page(&app, &client, &request, &ask, form, signed_in_as);
            browser.set_on(&app.settings, &mut resp);
            Ok(resp)
        }
    }
}

/// A refused request: the client is told if its redirect URI is trusted, else the person.
fn rejected(app: &App, e: Rejected) -> Result<Response, PageError> {
    Err(match e {
        Rejected::ToClient(answer) => return Ok(to_client(app, StatusCode::FOUND, &answer)),
        Rejected::UnknownClient(why) => PageError::bad_request(
            "Unknown application",
            "This application is not registered with this server. Go back to the application and connect again.",
        )
        .with_detail(why.description),
        Rejected::UntrustedRedirect => PageError::bad_request(
            "Invalid redirect",
            "The application asked to send you to an address it did not register, so this request was stopped.",
        ),
        Rejected::Store(e) => e.into(),
    })
}
