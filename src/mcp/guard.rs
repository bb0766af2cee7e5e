//! The bearer guard (RFC 6750, RFC 9728 §5.1): runs before method routing for every method.
//! No token, a bad one or a revoked one gets 401 with a `WWW-Authenticate` challenge that points
//! at the resource's metadata; too little scope gets 403. Browser origins are checked (DNS
//! rebinding), as is `Host` before anything else, and CORS preflights are answered without
//! authentication.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Caller, host};
use crate::config::ResourceConfig;
use crate::http::cors;
use crate::http::discovery::resource_metadata_url;
use crate::keys::TokenRejection;
use crate::oauth::scope::ScopeSet;
use crate::state::AppState;
use crate::telemetry::names;

/// Why a request was refused, for the challenge and the logs.
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
}

fn quoted(s: &str) -> String {
    s.replace(['"', '\\'], "")
}

pub fn challenge(state: &AppState, resource: &ResourceConfig, refusal: Refusal) -> Response {
    let prm = resource_metadata_url(&state.settings, resource);
    let scope = resource.scopes.to_string();
    let (status, header_value, body) = match refusal {
        Refusal::NoToken => (
            StatusCode::UNAUTHORIZED,
            format!(
                "Bearer resource_metadata=\"{}\", scope=\"{}\"",
                quoted(&prm),
                quoted(&scope)
            ),
            json!({"error": "invalid_token", "error_description": "an access token is required"}),
        ),
        Refusal::BadToken(_) | Refusal::Revoked => (
            StatusCode::UNAUTHORIZED,
            format!(
                "Bearer resource_metadata=\"{}\", scope=\"{}\", error=\"invalid_token\", error_description=\"the access token is invalid, expired or revoked\"",
                quoted(&prm),
                quoted(&scope)
            ),
            json!({"error": "invalid_token", "error_description": "the access token is invalid, expired or revoked"}),
        ),
        Refusal::InsufficientScope => (
            StatusCode::FORBIDDEN,
            format!(
                "Bearer resource_metadata=\"{}\", scope=\"{}\", error=\"insufficient_scope\", error_description=\"this resource needs the scopes listed\"",
                quoted(&prm),
                quoted(&scope)
            ),
            json!({"error": "insufficient_scope", "error_description": "this resource needs more scope", "scope": scope}),
        ),
        Refusal::Unavailable => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(json!({"error": "temporarily_unavailable", "error_description": "the service is temporarily unavailable"})),
            )
                .into_response();
        }
        Refusal::Host => {
            // 421: this server is not the one the request was meant for (RFC 9110 §15.5.20).
            return (
                StatusCode::MISDIRECTED_REQUEST,
                axum::Json(json!({"error": "invalid_host", "error_description": "this server does not answer for the requested host"})),
            )
                .into_response();
        }
        Refusal::Origin => {
            return (
                StatusCode::FORBIDDEN,
                axum::Json(json!({"error": "forbidden", "error_description": "this browser origin is not allowed"})),
            )
                .into_response();
        }
    };
    let mut resp = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&header_value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
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

fn origin_allowed(state: &AppState, origin: &str) -> bool {
    origin == state.settings.public_url.origin().ascii_serialization()
        || state.settings.allowed_origins.iter().any(|o| o == origin)
}

pub async fn guard(
    State((state, index)): State<(AppState, usize)>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(resource) = state.settings.resources.get(index) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let host_ok = host::request_authority(req.uri(), req.headers())
        .is_some_and(|a| host::is_allowed(&state.settings, a));
    if !host_ok {
        tracing::info!(resource = %resource.path, "refused a request for a host this gateway does not answer as");
        metrics::counter!(names::GUARD_REJECTIONS, "reason" => Refusal::Host.label()).increment(1);
        return challenge(&state, resource, Refusal::Host);
    }
    let origin = req.headers().get(header::ORIGIN).cloned();
    if let Some(o) = &origin {
        let allowed = o.to_str().is_ok_and(|o| origin_allowed(&state, o));
        if !allowed {
            tracing::info!(resource = %resource.path, "refused a request from a browser origin that is not allowed");
            metrics::counter!(names::GUARD_REJECTIONS, "reason" => Refusal::Origin.label())
                .increment(1);
            return challenge(&state, resource, Refusal::Origin);
        }
    }
    if cors::is_preflight(&req) {
        // Answered without authentication; only allowed origins get to read it.
        return match origin {
            Some(o) => cors::preflight(o),
            None => StatusCode::NO_CONTENT.into_response(),
        };
    }
    let mut resp = match authorize(&state, resource, req.headers()).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refusal) => {
            tracing::debug!(resource = %resource.path, ?refusal, "request refused");
            metrics::counter!(names::GUARD_REJECTIONS, "reason" => refusal.label()).increment(1);
            challenge(&state, resource, refusal)
        }
    };
    if let Some(o) = &origin {
        cors::allow(&mut resp, o.clone());
    }
    resp
}

async fn authorize(
    state: &AppState,
    resource: &ResourceConfig,
    headers: &HeaderMap,
) -> Result<Caller, Refusal> {
    let token = match bearer(headers) {
        Ok(Some(t)) => t,
        Ok(None) => return Err(Refusal::NoToken),
        Err(()) => return Err(Refusal::BadToken(TokenRejection::Malformed)),
    };
    let now = state.clock.now();
    let claims = match state
        .keys
        .verify(token, &state.settings.issuer, &resource.uri, now)
    {
        // Another instance may have rotated the keys since this one loaded them.
        Err(TokenRejection::UnknownKey) if state.keys.reload_if_stale(now).await => state
            .keys
            .verify(token, &state.settings.issuer, &resource.uri, now)
            .map_err(Refusal::BadToken)?,
        other => other.map_err(Refusal::BadToken)?,
    };
    match state
        .revocations
        .is_revoked(&state.store, &claims, now)
        .await
    {
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
