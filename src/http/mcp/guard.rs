//! The guard of every protected resource, in two layers that run before method routing, for
//! every method:
//! - [`boundary`]: `Host` first (DNS rebinding), then a browser's `Origin`; failing either, the
//!   request goes no further (not even a CORS preflight is answered);
//! - [`authenticate`] (inside the CORS layer, so preflights pass without a token): the bearer
//!   token (RFC 6750, RFC 9728 §5.1). No token, a bad one or a revoked one gets 401 with a
//!   challenge pointing at the resource's metadata; too little scope for what the request does
//!   (the resource, and the tool it calls) gets 403 naming the scopes to ask for.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Caller, host};
use crate::config::ResourceConfig;
use crate::http::error::{Challenge, McpError};
use crate::http::extract::{Bearer, bearer};
use crate::keys::{AccessClaims, TokenRejection};
use crate::oauth::scope::ScopeSet;
use crate::oauth::step_up::challenge_scope;
use crate::state::{App, AppState};
use crate::telemetry::names;

/// The state of a resource's layers: the app and which resource this is.
pub type ResourceState = (AppState, Arc<ResourceConfig>);

/// Why a request was refused, for the metrics and the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoToken,
    BadToken(TokenRejection),
    Revoked,
    /// The scopes to ask for: see [`challenge_scope`].
    InsufficientScope(ScopeSet),
    Origin,
    /// A `Host` this gateway does not answer as (DNS rebinding), or an ambiguous one.
    Host,
    /// The revocation check could not be made (database down): fail closed, retryable.
    Unavailable,
}

impl Refusal {
    pub fn label(&self) -> &'static str {
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
            Self::InsufficientScope(_) => "insufficient_scope",
            Self::Origin => "origin",
            Self::Host => "host",
            Self::Unavailable => "unavailable",
        }
    }

    fn into_error(self, app: &App, resource: &ResourceConfig) -> McpError {
        // A 401 asks for what every request needs; a tool's own scopes are asked for when it is
        // called (step-up), so a client starts with no more than it uses.
        let challenge = |kind, scope: &ScopeSet| McpError::Challenge {
            kind,
            resource_metadata: resource_metadata_url(app, resource),
            scope: scope.to_string(),
        };
        match self {
            Self::NoToken => challenge(Challenge::NoToken, &resource.scopes),
            Self::BadToken(_) | Self::Revoked => {
                challenge(Challenge::InvalidToken, &resource.scopes)
            }
            Self::InsufficientScope(scope) => challenge(Challenge::InsufficientScope, &scope),
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

/// A refusal leaves the request body unread, after which the server closes the connection. A
/// client that sends its next request on that connection meanwhile (seen with the Python SDK
/// under load) loses it, so HTTP/1.1 clients are told to open a new one.
fn unread_body_closes(req: &Request, resp: &mut Response) {
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body && req.version() <= axum::http::Version::HTTP_11 {
        resp.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
}

fn refuse(app: &App, resource: &ResourceConfig, refusal: Refusal) -> Response {
    metrics::counter!(names::GUARD_REJECTIONS, "reason" => refusal.label()).increment(1);
    refusal.into_error(app, resource).into_response()
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
        let mut resp = refuse(&app, &resource, Refusal::Host);
        unread_body_closes(&req, &mut resp);
        return resp;
    }
    if let Some(o) = req.headers().get(header::ORIGIN)
        && !o.to_str().is_ok_and(|o| origin_allowed(&app, o))
    {
        tracing::info!(resource = %resource.path, "refused a request from a browser origin that is not allowed");
        let mut resp = refuse(&app, &resource, Refusal::Origin);
        unread_body_closes(&req, &mut resp);
        return resp;
    }
    next.run(req).await
}

pub async fn authenticate(
    State((app, resource)): State<ResourceState>,
    mut req: Request,
    next: Next,
) -> Response {
    let claims = match verified(&app, &resource, req.headers()).await {
        Ok(claims) => claims,
        Err(refusal) => return refused(&app, &resource, &req, refusal),
    };
    // What a tool needs besides is the tool policy's to check (`policy.rs`), once the body is
    // read; here every request needs the resource's own scopes.
    let held = ScopeSet::parse(&claims.scope);
    if !resource.scopes.is_subset_of(&held) {
        let ask = challenge_scope(&held, &resource.offered, &resource.scopes);
        return refused(&app, &resource, &req, Refusal::InsufficientScope(ask));
    }
    req.extensions_mut().insert(Caller {
        sub: claims.sub,
        email: claims.email,
        client_id: claims.client_id,
        scope: claims.scope,
        grant_id: claims.sid,
    });
    next.run(req).await
}

fn refused(app: &App, resource: &ResourceConfig, req: &Request, refusal: Refusal) -> Response {
    tracing::debug!(resource = %resource.path, ?refusal, "request refused");
    let mut resp = refuse(app, resource, refusal);
    unread_body_closes(req, &mut resp);
    resp
}

/// The claims of a valid, unrevoked token for this resource.
async fn verified(
    app: &App,
    resource: &ResourceConfig,
    headers: &HeaderMap,
) -> Result<AccessClaims, Refusal> {
    let token = match bearer(headers) {
        Bearer::Token(t) => t,
        Bearer::Absent => return Err(Refusal::NoToken),
        Bearer::OtherScheme | Bearer::Malformed => {
            return Err(Refusal::BadToken(TokenRejection::Malformed));
        }
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
        Ok(false) => Ok(claims),
        Ok(true) => Err(Refusal::Revoked),
        Err(e) => {
            tracing::warn!(error = %e, "revocation check failed");
            Err(Refusal::Unavailable)
        }
    }
}
