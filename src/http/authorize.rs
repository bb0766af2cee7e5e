//! `GET /authorize` and the consent form. The client and its redirect URI are checked first;
//! until both are trusted every problem is an HTML page, never a redirect. Consent comes before
//! any redirect to the upstream provider (the MCP confused-deputy rule).

use std::collections::HashMap;

use axum::Form;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use super::clients::{self, Client, ResolveError};
use super::cookies;
use super::pages::{self, ConsentPage, error_page, error_page_detail};
use crate::oauth::grant::{CODE_TTL, PENDING_TTL};
use crate::oauth::redirect::find_matching;
use crate::oauth::scope::ScopeSet;
use crate::oauth::secrets::{PlainSecret, SecretHash, SecretKind};
use crate::oauth::url_rules::is_loopback_url;
use crate::oauth::{ErrorCode, OAuthError, pkce, resource};
use crate::state::AppState;
use crate::store::{
    CodeRecord, ConsentRecord, FamilyRecord, PENDING_CONSENT, PENDING_DONE, PendingRecord,
    SessionRecord, StoreError,
};
use crate::telemetry::names;

pub const CONSENT_PATH: &str = "/authorize/consent";

/// Where and how to answer a client once its redirect URI is trusted.
pub struct ClientRedirect {
    pub uri: String,
    pub state: Option<String>,
}

impl ClientRedirect {
    fn location(&self, issuer: &str, params: &[(&str, &str)]) -> String {
        let mut url = match url::Url::parse(&self.uri) {
            Ok(u) => u,
            Err(_) => return self.uri.clone(),
        };
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in params {
                q.append_pair(k, v);
            }
            if let Some(s) = &self.state {
                q.append_pair("state", s);
            }
            q.append_pair("iss", issuer);
        }
        url.to_string()
    }

    pub fn error(&self, issuer: &str, status: StatusCode, err: &OAuthError) -> Response {
        pages::redirect(
            status,
            &self.location(
                issuer,
                &[
                    ("error", err.code.as_str()),
                    ("error_description", &err.description),
                ],
            ),
        )
    }

    pub fn code(&self, issuer: &str, status: StatusCode, code: &str) -> Response {
        pages::redirect(status, &self.location(issuer, &[("code", code)]))
    }
}

pub fn store_failure(e: &StoreError) -> Response {
    tracing::error!(error = %e, "storage error in a browser flow");
    let status = match e {
        StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error_page(
        status,
        "Temporarily unavailable",
        "Something went wrong on the server. Please try again in a moment.",
    )
}

fn scope_descriptions(scope: &ScopeSet) -> Vec<String> {
    scope
        .iter()
        .map(|s| match s {
            "mcp" => "use this server's tools and data on your behalf".to_owned(),
            other => format!("use the “{other}” permission"),
        })
        .collect()
}

/// Parses the query, refusing repeated parameters (RFC 6749 §3.1).
fn parse_query(raw: Option<&str>) -> Result<HashMap<String, String>, String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|_| "The request is malformed.".to_owned())?;
    let mut out = HashMap::new();
    for (k, v) in pairs {
        if out.insert(k.clone(), v).is_some() {
            return Err(format!("The parameter {k} appears more than once."));
        }
    }
    Ok(out)
}

pub async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let issuer = state.settings.issuer.as_str();
    let params = match parse_query(query.as_deref()) {
        Ok(p) => p,
        Err(why) => return error_page(StatusCode::BAD_REQUEST, "Invalid request", why),
    };
    let Some(client_id) = params.get("client_id") else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The request does not say which application is asking (client_id is missing).",
        );
    };
    let client = match clients::resolve(&state, client_id).await {
        Ok(c) => c,
        Err(ResolveError::Unknown(e)) => {
            return error_page_detail(
                StatusCode::BAD_REQUEST,
                "Unknown application",
                "This application is not registered with this server. Go back to the application and connect again.",
                e.description,
            );
        }
        Err(ResolveError::Store(e)) => return store_failure(&e),
    };
    let redirect_uri = match params.get("redirect_uri") {
        Some(r) => find_matching(&client.metadata.redirect_uris, r).map(|_| r.clone()),
        None => match client.metadata.redirect_uris.as_slice() {
            [only] if !is_loopback_url(only) => Some(only.clone()),
            _ => None,
        },
    };
    let Some(redirect_uri) = redirect_uri else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid redirect",
            "The application asked to send you to an address it did not register, so this request was stopped.",
        );
    };
    let to_client = ClientRedirect {
        uri: redirect_uri,
        state: params.get("state").cloned(),
    };

    // From here the redirect URI is trusted: errors go back to the client.
    match params.get("response_type").map(String::as_str) {
        Some("code") => {}
        _ => {
            return to_client.error(
                issuer,
                StatusCode::FOUND,
                &OAuthError::new(
                    ErrorCode::UnsupportedResponseType,
                    "response_type must be code",
                ),
            );
        }
    }
    if !client
        .metadata
        .allows_grant(crate::oauth::client::GRANT_AUTHORIZATION_CODE)
    {
        return to_client.error(
            issuer,
            StatusCode::FOUND,
            &OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "this client may not use the authorization code grant",
            ),
        );
    }
    let challenge = match pkce::parse_challenge(
        params.get("code_challenge").map(String::as_str),
        params.get("code_challenge_method").map(String::as_str),
    ) {
        Ok(c) => c,
        Err(e) => return to_client.error(issuer, StatusCode::FOUND, &e),
    };
    let uris: Vec<String> = state
        .settings
        .resources
        .iter()
        .map(|r| r.uri.clone())
        .collect();
    let resource = match resource::select(params.get("resource").map(String::as_str), &uris) {
        Ok(r) => r,
        Err(e) => return to_client.error(issuer, StatusCode::FOUND, &e),
    };
    // Scopes are those of the resource asked for.
    let Some(offered) = state
        .settings
        .resources
        .iter()
        .find(|r| r.uri == resource)
        .map(|r| &r.scopes)
    else {
        return to_client.error(
            issuer,
            StatusCode::FOUND,
            &OAuthError::new(ErrorCode::InvalidTarget, "unknown resource"),
        );
    };
    let requested =
        ScopeSet::parse(params.get("scope").map(String::as_str).unwrap_or("")).narrow_to(offered);
    let scope = if requested.is_empty() {
        offered.clone()
    } else {
        requested
    };
    let prompt = ScopeSet::parse(params.get("prompt").map(String::as_str).unwrap_or(""));

    let session = match cookies::current_session(&state, &headers).await {
        Ok(s) => s,
        Err(e) => return store_failure(&e),
    };
    if let Some(session) = &session
        && !prompt.contains("consent")
        && !prompt.contains("login")
    {
        match state.store.get_consent(&session.subject, &client.id).await {
            Ok(Some(c)) if scope.is_subset_of(&ScopeSet::parse(&c.scope)) => {
                let grant = Grant {
                    client_id: &client.id,
                    redirect_uri: &to_client.uri,
                    code_challenge: &challenge,
                    scope: &scope,
                    resource: &resource,
                };
                return match issue_code(&state, &grant, session).await {
                    Ok(code) => to_client.code(issuer, StatusCode::FOUND, code.expose()),
                    Err(e) => store_failure(&e),
                };
            }
            Ok(_) => {}
            Err(e) => return store_failure(&e),
        }
    }
    if prompt.contains("none") {
        let code = if session.is_some() {
            ErrorCode::ConsentRequired
        } else {
            ErrorCode::LoginRequired
        };
        return to_client.error(
            issuer,
            StatusCode::FOUND,
            &OAuthError::new(code, "user interaction is required"),
        );
    }

    let browser = cookies::BrowserBinding::of(&state, &headers);
    let request_id = state.random.token();
    let now = state.clock.now();
    let pending = PendingRecord {
        id_hash: SecretHash::of(SecretKind::PendingAuthorization, &request_id)
            .as_str()
            .to_owned(),
        browser_hash: browser.hash(),
        client_id: client.id.clone(),
        redirect_uri: to_client.uri.clone(),
        state: to_client.state.clone(),
        code_challenge: challenge,
        scope: scope.to_string(),
        resource,
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
    metrics::counter!(names::AUTHORIZATIONS, "outcome" => "consent_shown").increment(1);
    let mut resp = consent_page(&state, &client, &pending, &request_id, session.as_ref());
    browser.set_on(&state, &mut resp);
    resp
}

fn consent_page(
    state: &AppState,
    client: &Client,
    pending: &PendingRecord,
    request_id: &str,
    session: Option<&SessionRecord>,
) -> Response {
    let redirect_host = crate::oauth::redirect::redirect_target(&pending.redirect_uri);
    let page = ConsentPage {
        client_name: client.display_name(),
        unverified_name: !client.document && client.metadata.client_name.is_some(),
        server_name: state
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
        scopes: scope_descriptions(&ScopeSet::parse(&pending.scope)),
        request_id: request_id.to_owned(),
        action: state.settings.url(CONSENT_PATH),
    };
    pages::render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct ConsentForm {
    request: String,
    decision: String,
}

/// Does a form POST come from our own pages? Browsers send `Origin` on POST; a foreign one is a
/// cross-site submission.
pub fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let same_site_fetch = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "same-origin");
    match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        // A strict referrer policy makes browsers send `null`; the fetch metadata still says
        // whether the form came from our own page.
        Some("null") => same_site_fetch,
        Some(origin) => origin == state.settings.public_url.origin().ascii_serialization(),
    }
}

/// The pending request a form refers to, checked against the browser that started it.
pub async fn load_pending_for_browser(
    state: &AppState,
    headers: &HeaderMap,
    pending: Option<PendingRecord>,
) -> Result<PendingRecord, Response> {
    let Some(pending) = pending else {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "Request expired",
            "This sign-in request is unknown or has expired. Go back to the application and connect again.",
        ));
    };
    let names = cookies::names(&state.settings);
    let bound = cookies::read(headers, names.browser)
        .is_some_and(|v| cookies::browser_hash(v) == pending.browser_hash);
    if !bound {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "Different browser",
            "This sign-in was started in another browser (or its cookies were cleared). Go back to the application and connect again.",
        ));
    }
    if pending.expires_at <= state.clock.now() {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "Request expired",
            "This sign-in request has expired. Go back to the application and connect again.",
        ));
    }
    if pending.status == PENDING_DONE {
        return Err(pages::already_done());
    }
    Ok(pending)
}

pub async fn consent(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<ConsentForm>,
) -> Response {
    let issuer = state.settings.issuer.as_str();
    if !same_origin(&state, &headers) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form was submitted from another site.",
        );
    }
    let id_hash = SecretHash::of(SecretKind::PendingAuthorization, &form.request);
    let found = match state.store.get_pending(id_hash.as_str()).await {
        Ok(p) => p,
        Err(e) => return store_failure(&e),
    };
    let pending = match load_pending_for_browser(&state, &headers, found).await {
        Ok(p) => p,
        Err(page) => return page,
    };
    let to_client = ClientRedirect {
        uri: pending.redirect_uri.clone(),
        state: pending.state.clone(),
    };
    match form.decision.as_str() {
        "deny" => {
            metrics::counter!(names::AUTHORIZATIONS, "outcome" => "denied").increment(1);
            if let Err(e) = state.store.finish_pending(&pending.id_hash).await {
                return store_failure(&e);
            }
            to_client.error(
                issuer,
                StatusCode::SEE_OTHER,
                &OAuthError::new(ErrorCode::AccessDenied, "the user denied the request"),
            )
        }
        "approve" => {
            let session = match cookies::current_session(&state, &headers).await {
                Ok(s) => s,
                Err(e) => return store_failure(&e),
            };
            match session {
                Some(session) => complete(&state, &pending, &session, None).await,
                None => super::login::start_upstream(&state, &pending).await,
            }
        }
        _ => error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "Unknown decision.",
        ),
    }
}

pub struct Grant<'a> {
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub code_challenge: &'a str,
    pub scope: &'a ScopeSet,
    pub resource: &'a str,
}

/// Issues an authorization code for a user who approved (or had approved) this client, and
/// remembers the approval.
async fn issue_code(
    state: &AppState,
    grant: &Grant<'_>,
    session: &SessionRecord,
) -> Result<PlainSecret, StoreError> {
    let now = state.clock.now();
    let consent = ConsentRecord {
        subject: session.subject.clone(),
        client_id: grant.client_id.to_owned(),
        scope: grant.scope.to_string(),
        created_at: now,
        last_used_at: now,
    };
    state.store.upsert_consent(&consent).await?;
    let code = PlainSecret::new(state.random.token());
    let family = FamilyRecord {
        id: state.random.id(),
        client_id: grant.client_id.to_owned(),
        subject: session.subject.clone(),
        email: session.email.clone(),
        scope: grant.scope.to_string(),
        resource: grant.resource.to_owned(),
        created_at: now,
        expires_at: now + state.settings.refresh_ttl,
        last_used_at: now,
        revoked_at: None,
    };
    let record = CodeRecord {
        hash: code.hash(SecretKind::AuthorizationCode).as_str().to_owned(),
        family_id: family.id.clone(),
        client_id: grant.client_id.to_owned(),
        redirect_uri: grant.redirect_uri.to_owned(),
        code_challenge: grant.code_challenge.to_owned(),
        created_at: now,
        expires_at: now + CODE_TTL,
        used_at: None,
    };
    state.store.insert_grant(&family, &record).await?;
    tracing::info!(client.id = %grant.client_id, grant.family = %family.id, "authorization code issued");
    metrics::counter!(names::AUTHORIZATIONS, "outcome" => "code_issued").increment(1);
    Ok(code)
}

/// Finishes a pending request for a logged-in user: exactly once, then back to the client with
/// a code. `set_session` carries a new session cookie to set on the same response.
pub async fn complete(
    state: &AppState,
    pending: &PendingRecord,
    session: &SessionRecord,
    set_session: Option<&str>,
) -> Response {
    let issuer = state.settings.issuer.as_str();
    match state.store.finish_pending(&pending.id_hash).await {
        Ok(true) => {}
        Ok(false) => {
            return pages::already_done();
        }
        Err(e) => return store_failure(&e),
    }
    let mut resp = if pending.client_id == super::account::ACCOUNT_CLIENT {
        // An account login: a session, no code, back to the connected-apps page.
        pages::redirect(StatusCode::SEE_OTHER, &pending.redirect_uri)
    } else {
        let scope = ScopeSet::parse(&pending.scope);
        let grant = Grant {
            client_id: &pending.client_id,
            redirect_uri: &pending.redirect_uri,
            code_challenge: &pending.code_challenge,
            scope: &scope,
            resource: &pending.resource,
        };
        let to_client = ClientRedirect {
            uri: pending.redirect_uri.clone(),
            state: pending.state.clone(),
        };
        match issue_code(state, &grant, session).await {
            Ok(code) => to_client.code(issuer, StatusCode::SEE_OTHER, code.expose()),
            Err(e) => return store_failure(&e),
        }
    };
    if let Some(value) = set_session {
        cookies::set_session(state, &mut resp, value);
    }
    resp
}
