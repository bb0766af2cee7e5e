//! The guard of every protected resource, in two layers that run before method routing, for
//! every method:
//! - [`boundary`]: `Host` first (DNS rebinding), then a browser's `Origin`; failing either, the
//!   request goes no further (not even a CORS preflight is answered);
//! - [`authenticate`] (inside the CORS layer, so preflights pass without a token): the bearer
//!   token (RFC 6750, RFC 9728 §5.1). No token, a bad one or a revoked one gets 401 with a
//!   challenge pointing at the resource's metadata; too little scope gets 403.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Caller, host};
use crate::config::ResourceConfig;
use crate::http::error::{Challenge, McpError};
use crate::keys::TokenRejection;
use crate::oauth::scope::ScopeSet;
use crate::state::{App, AppState};
use crate::telemetry::names;

/// The state of a resource's layers: the app and which resource this is.
pub type ResourceState = (AppState, Arc<ResourceConfig>);

/// Why a request was refused, for the metrics and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NoToken,
    BadToken(TokenRejection),
    Revoked,
    InsufficientScope,
    Origin,
    /// A `Host` this gateway does not answer as (DNS rebinding), or an ambiguous one.
    Host,
    /// The revocation check could not be made (database down): fail closed, retryable.
    Unavailable,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Self::NoToken => "no_token",
            Self::BadToken(TokenRejection::Expired) => "expired",
            Self::BadToken(TokenRejection::WrongAudience) => "wrong_audience",
            Self::BadToken(TokenRejection::WrongIssuer) => "wrong_issuer",
            Self::BadToken(TokenRejection::BadSignature | TokenRejection::UnknownKey) => {
                "bad_signature"
            }
            Self::BadToken(TokenRejection::Malformed) => "malformed",
            Self::Revoked => "revoked",
            Self::InsufficientScope => "insufficient_scope",
            Self::Origin => "origin",
            Self::Host => "host",
            Self::Unavailable => "unavailable",
        }
    }

    fn into_error(self, app: &App, resource: &ResourceConfig) -> McpError {
        let challenge = |kind| McpError::Challenge {
            kind,
            resource_metadata: resource_metadata_url(app, resource),
            scope: resource.scopes.to_string(),
        };
        match self {
            Self::NoToken => challenge(Challenge::NoToken),
            Self::BadToken(_) | Self::Revoked => challenge(Challenge::InvalidToken),
            Self::InsufficientScope => challenge(Challenge::InsufficientScope),
            Self::Origin => McpError::Origin,
            Self::Host => McpError::Host,
            Self::Unavailable => McpError::Unavailable,
        }
    }
}

/// The absolute URL of a resource's metadata, as given in `WWW-Authenticate`: path-inserted at
/// the host root (RFC 9728 §3.1).
pub fn resource_metadata_url(app: &App, resource: &ResourceConfig) -> String {
    format!(
        "{}/.well-known/oauth-protected-resource{}{}",
        app.settings.public_url.origin().ascii_serialization(),
        app.settings.issuer_path(),
        resource.path
    )
}

/// A refusal is sent before the request's body is read. If the body arrives after the answer,
/// hyper cannot reuse the connection and closes it, and a client that has already sent its next
/// request on that connection (the metadata fetch after a 401) sees it dropped unanswered.
/// Saying `Connection: close` makes the client open a new one instead.
fn refuse(app: &App, resource: &ResourceConfig, refusal: Refusal, request: &HeaderMap) -> Response {
    metrics::counter!(names::GUARD_REJECTIONS, "reason" => refusal.label()).increment(1);
    let mut resp = refusal.into_error(app, resource).into_response();
    let has_body = request.contains_key(header::TRANSFER_ENCODING)
        || request
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The browser origins the MCP endpoints answer: the public URL's own and the operator's list.
pub fn origin_allowed(app: &App, origin: &str) -> bool {
    origin == app.settings.public_url.origin().ascii_serialization()
        || app.settings.allowed_origins.iter().any(|o| o == origin)
}

pub async fn boundary(
    State((app, resource)): State<ResourceState>,
    req: Request,
    next: Next,
) -> Response {
    let host_ok = host::request_authority(req.uri(), req.headers())
        .is_some_and(|a| host::is_allowed(&app.settings, a));
    if !host_ok {
        tracing::info!(resource = %resource.path, "refused a request for a host this gateway does not answer as");
        return refuse(&app, &resource, Refusal::Host, req.headers());
    }
    if let Some(o) = req.headers().get(header::ORIGIN)
        && !o.to_str().is_ok_and(|o| origin_allowed(&app, o))
    {
        tracing::info!(resource = %resource.path, "refused a request from a browser origin that is not allowed");
        return refuse(&app, &resource, Refusal::Origin, req.headers());
    }
    next.run(req).await
}

pub async fn authenticate(
    State((app, resource)): State<ResourceState>,
    mut req: Request,
    next: Next,
) -> Response {
    match caller(&app, &resource, req.headers()).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refusal) => {
            tracing::debug!(resource = %resource.path, ?refusal, "request refused");
            refuse(&app, &resource, refusal, req.headers())
        }
    }
}

/// The bearer token from the one `Authorization` header; never from the query string or body.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    let text = first.to_str().map_err(|_| ())?;
    let (scheme, token) = text.split_once(' ').ok_or(())?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(());
    }
    let token = token.trim();
    if token.is_empty() || token.len() > 4096 {
        return Err(());
    }
    Ok(Some(token))
}

/// Who is calling: a valid, unrevoked token for this resource with its scopes.
async fn caller(
    app: &App,
    resource: &ResourceConfig,
    headers: &HeaderMap,
) -> Result<Caller, Refusal> {
    let token = match bearer(headers) {
        Ok(Some(t)) => t,
        Ok(None) => return Err(Refusal::NoToken),
        Err(()) => return Err(Refusal::BadToken(TokenRejection::Malformed)),
    };
    let now = app.clock.now();
    let claims = match app
        .keys
        .verify(token, &app.settings.issuer, &resource.uri, now)
    {
        // Another instance may have rotated the keys since this one loaded them.
        Err(TokenRejection::UnknownKey) if app.keys.reload_if_stale(now).await => app
            .keys
            .verify(token, &app.settings.issuer, &resource.uri, now)
            .map_err(Refusal::BadToken)?,
        other => other.map_err(Refusal::BadToken)?,
    };
    match app.revocations.is_revoked(&app.store, &claims, now).await {
        Ok(false) => {}
        Ok(true) => return Err(Refusal::Revoked),
        Err(e) => {
            tracing::warn!(error = %e, "revocation check failed");
            return Err(Refusal::Unavailable);
        }
    }
    if !resource
        .scopes
        .is_subset_of(&ScopeSet::parse(&claims.scope))
    {
        return Err(Refusal::InsufficientScope);
    }
    Ok(Caller {
        sub: claims.sub,
        email: claims.email,
        client_id: claims.client_id,
        scope: claims.scope,
    })
}
