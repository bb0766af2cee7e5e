//! The three error surfaces and their one mapping to responses each:
//! - [`ApiError`]: the JSON endpoints (`{"error", "error_description"}`, RFC 6749 §5.2);
//! - [`PageError`]: the browser pages, until a redirect URI is trusted (an HTML page, never a
//!   redirect);
//! - [`McpError`]: the protected MCP endpoints (bearer challenges, RFC 6750 and RFC 9728, and
//!   the gateway's own refusals);
//! - [`BearerError`]: the UserInfo endpoint (RFC 6750 challenges, OIDC Core §5.3.3).
//!
//! Internal causes are logged here, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::pages;
use crate::oauth::request::{CredentialsError, ParamsError};
use crate::oauth::{ErrorCode, OAuthError};
use crate::services::authorization::FlowError;
use crate::services::clients::AuthError;
use crate::services::grants::RevokeError;
use crate::services::tokens::TokenError;
use crate::services::upstream::UpstreamError;
use crate::services::userinfo::UserinfoError;
use crate::store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    /// A protocol error the client may see, with its HTTP status.
    OAuth(StatusCode, OAuthError),
    /// 401 `invalid_client`, with a Basic challenge when the client tried Basic (RFC 6749 §5.2).
    InvalidClient { description: String, basic: bool },
    /// Too many requests from one source; retry after this many seconds.
    RateLimited(u64),
    /// The database cannot be reached; the request may be retried.
    Unavailable(StoreError),
    /// Nobody's input is at fault; the cause goes to the log.
    Internal(String),
}

impl ApiError {
    pub fn bad_request(err: OAuthError) -> Self {
        Self::OAuth(StatusCode::BAD_REQUEST, err)
    }

    /// The metrics label of an outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Self::OAuth(_, e) => e.code.as_str(),
            Self::InvalidClient { .. } => "invalid_client",
            Self::RateLimited(_) => "rate_limited",
            Self::Unavailable(_) | Self::Internal(_) => "unavailable",
        }
    }
}

impl From<OAuthError> for ApiError {
    fn from(e: OAuthError) -> Self {
        Self::bad_request(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self::Unavailable(e),
            other => Self::Internal(format!("storage error: {other}")),
        }
    }
}

impl From<ParamsError> for ApiError {
    fn from(e: ParamsError) -> Self {
        Self::bad_request(e.into())
    }
}

impl From<CredentialsError> for ApiError {
    fn from(e: CredentialsError) -> Self {
        match e {
            CredentialsError::Request(e) => Self::bad_request(e),
            CredentialsError::Client { description, basic } => {
                Self::InvalidClient { description, basic }
            }
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Client { description, basic } => Self::InvalidClient { description, basic },
            AuthError::Store(e) => e.into(),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::OAuth(e) => Self::bad_request(e),
            TokenError::Store(e) => e.into(),
            TokenError::Internal(why) => Self::Internal(why),
            TokenError::Unavailable(why) => {
                tracing::warn!(error = %why, "a token request could not be served now");
                Self::OAuth(
                    StatusCode::SERVICE_UNAVAILABLE,
                    OAuthError::new(
                        ErrorCode::TemporarilyUnavailable,
                        "the upstream provider cannot be reached; retry later",
                    ),
                )
            }
        }
    }
}

impl From<RevokeError> for ApiError {
    fn from(e: RevokeError) -> Self {
        match e {
            RevokeError::Foreign(e) => Self::bad_request(e),
            RevokeError::Store(e) => e.into(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    error_description: &'a str,
}

/// Responses that carry tokens or errors about them are never cached (RFC 6749 §5.1).
pub fn no_store(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn oauth_error_response(status: StatusCode, code: ErrorCode, description: &str) -> Response {
    let body = ErrorBody {
        error: code.as_str(),
        error_description: description,
    };
    let mut resp = (status, axum::Json(body)).into_response();
    no_store(&mut resp);
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::OAuth(status, e) => oauth_error_response(status, e.code, &e.description),
            Self::InvalidClient { description, basic } => {
                let mut resp = oauth_error_response(
                    StatusCode::UNAUTHORIZED,
                    ErrorCode::InvalidClient,
                    &description,
                );
                if basic {
                    resp.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Basic realm=\"authgate\", charset=\"UTF-8\""),
                    );
                }
                resp
            }
            Self::RateLimited(retry_after) => {
                let mut resp = oauth_error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TemporarilyUnavailable,
                    "too many requests from this address; retry later",
                );
                retry_after_header(&mut resp, retry_after);
                resp
            }
            Self::Unavailable(e) => {
                tracing::warn!(error = %e, "database unavailable");
                oauth_error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::TemporarilyUnavailable,
                    "the service is temporarily unavailable",
                )
            }
            Self::Internal(why) => {
                tracing::error!(error = %why, "internal error");
                oauth_error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::ServerError,
                    "internal error; the X-Request-Id header identifies this request in the logs",
                )
            }
        }
    }
}

fn retry_after_header(resp: &mut Response, seconds: u64) {
    if let Ok(v) = HeaderValue::from_str(&seconds.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
}

/// An HTML error page: what went wrong, in words for the person in the browser.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
    /// A technical detail (shown smaller), never a secret.
    pub detail: Option<String>,
    pub retry_after: Option<u64>,
}

impl PageError {
    pub fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            title,
            message: message.into(),
            detail: None,
            retry_after: None,
        }
    }

    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn bad_request(title: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, title, message)
    }

    /// A form posted from another site.
    pub fn cross_site() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form was submitted from another site.",
        )
    }

    /// A sign-in request that already finished (a second submit, a reloaded callback).
    pub fn already_done() -> Self {
        Self::bad_request(
            "Already done",
            "This sign-in has already completed. You can close this page and return to the application.",
        )
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                "Too many requests came from your network. Wait a moment and try again.",
            )
        }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "storage error in a browser flow");
        let status = match e {
            StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(
            status,
            "Temporarily unavailable",
            "Something went wrong on the server. Please try again in a moment.",
        )
    }
}

impl From<ParamsError> for PageError {
    fn from(e: ParamsError) -> Self {
        match e {
            ParamsError::Malformed => {
                Self::bad_request("Invalid request", "The request is malformed.")
            }
            ParamsError::Repeated(k) => Self::bad_request(
                "Invalid request",
                format!("The parameter {k} appears more than once."),
            ),
        }
    }
}

impl From<FlowError> for PageError {
    fn from(e: FlowError) -> Self {
        use crate::domain::pending::Unusable;
        let restart = "Go back to the application and connect again.";
        match e {
            FlowError::Unknown => Self::bad_request(
                "Request expired",
                format!("This sign-in request is unknown or has expired. {restart}"),
            ),
            FlowError::Unusable(Unusable::OtherBrowser) => Self::bad_request(
                "Different browser",
                format!(
                    "This sign-in was started in another browser (or its cookies were cleared). {restart}"
                ),
            ),
            FlowError::Unusable(Unusable::Expired) => Self::bad_request(
                "Request expired",
                format!("This sign-in request has expired. {restart}"),
            ),
            FlowError::Unusable(Unusable::AlreadyDone) => Self::already_done(),
            FlowError::NotAtUpstream => Self::bad_request(
                "Request expired",
                "This sign-in request is not waiting for a login.",
            ),
            FlowError::WrongIssuer => Self::bad_request(
                "Invalid sign-in response",
                "The answer came from a different sign-in provider than the one this server uses.",
            ),
            FlowError::Cancelled => Self::bad_request(
                "Sign-in cancelled",
                "The sign-in was cancelled or failed at the identity provider.",
            ),
            FlowError::Upstream(UpstreamError::Answer(why)) => {
                Self::bad_request("Invalid email", why)
            }
            FlowError::Upstream(e @ UpstreamError::Discovery(_)) => {
                tracing::error!(error = %e, "cannot reach the upstream provider");
                Self::new(
                    StatusCode::BAD_GATEWAY,
                    "Sign-in unavailable",
                    "The sign-in provider cannot be reached right now. Please try again in a moment.",
                )
            }
            FlowError::Upstream(e) => Self::new(
                StatusCode::BAD_GATEWAY,
                "Sign-in failed",
                format!("The sign-in provider's answer could not be verified. {restart}"),
            )
            .with_detail(e.to_string()),
            FlowError::Refused(why) => Self::new(StatusCode::FORBIDDEN, "Access not allowed", why),
            FlowError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let mut resp = pages::render(
            self.status,
            &pages::ErrorPage {
                title: self.title.to_owned(),
                message: self.message,
                detail: self.detail,
            },
        );
        if let Some(seconds) = self.retry_after {
            retry_after_header(&mut resp, seconds);
        }
        resp
    }
}

/// Why a request to a protected MCP endpoint was not forwarded.
#[derive(Debug)]
pub enum McpError {
    /// 401 or 403 with a `WWW-Authenticate` challenge pointing at the resource's metadata.
    Challenge {
        kind: Challenge,
        resource_metadata: String,
        scope: String,
    },
    /// 421: a `Host` this gateway does not answer as (DNS rebinding), or an ambiguous one.
    Host,
    /// 403: a browser origin that is not allowed.
    Origin,
    /// 503: a check could not be made (the database is down): fail closed, retryable.
    Unavailable,
    /// A JSON-RPC error from the gateway itself (session refusals), with its HTTP status.
    JsonRpc {
        status: StatusCode,
        code: i64,
        message: &'static str,
    },
    /// A JSON-RPC error answering the request's message (`id`) from the gateway itself: the
    /// tool policy refused it, with its HTTP status.
    Policy {
        status: StatusCode,
        id: serde_json::Value,
        code: i64,
        message: &'static str,
    },
    /// 502 or 504: the MCP server behind cannot be reached, answered badly or too late.
    Gateway {
        status: StatusCode,
        why: &'static str,
    },
    /// 413: the request body is larger than this endpoint accepts.
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    NoToken,
    InvalidToken,
    InsufficientScope,
}

/// `WWW-Authenticate` parameters are quoted strings: drop what would end one early.
fn quoted(s: &str) -> String {
    s.replace(['"', '\\'], "")
}

fn challenge_response(kind: Challenge, resource_metadata: &str, scope: &str) -> Response {
    let prm = quoted(resource_metadata);
    let scope_q = quoted(scope);
    let (status, error, body) = match kind {
        Challenge::NoToken => (
            StatusCode::UNAUTHORIZED,
            None,
            json!({"error": "invalid_token", "error_description": "an access token is required"}),
        ),
        Challenge::InvalidToken => (
            StatusCode::UNAUTHORIZED,
            Some((
                "invalid_token",
                "the access token is invalid, expired or revoked",
            )),
            json!({"error": "invalid_token", "error_description": "the access token is invalid, expired or revoked"}),
        ),
        Challenge::InsufficientScope => (
            StatusCode::FORBIDDEN,
            Some((
                "insufficient_scope",
                "this resource needs the scopes listed",
            )),
            json!({"error": "insufficient_scope", "error_description": "this resource needs more scope", "scope": scope}),
        ),
    };
    let mut value = format!("Bearer resource_metadata=\"{prm}\", scope=\"{scope_q}\"");
    if let Some((code, description)) = error {
        value.push_str(&format!(
            ", error=\"{code}\", error_description=\"{description}\""
        ));
    }
    let mut resp = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

impl IntoResponse for McpError {
    fn into_response(self) -> Response {
        let json = |status: StatusCode, error: &str, description: &str| {
            (
                status,
                axum::Json(json!({"error": error, "error_description": description})),
            )
                .into_response()
        };
        match self {
            Self::Challenge {
                kind,
                resource_metadata,
                scope,
            } => challenge_response(kind, &resource_metadata, &scope),
            Self::Host => json(
                // This server is not the one the request was meant for (RFC 9110 §15.5.20).
                StatusCode::MISDIRECTED_REQUEST,
                "invalid_host",
                "this server does not answer for the requested host",
            ),
            Self::Origin => json(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this browser origin is not allowed",
            ),
            Self::Unavailable => json(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the service is temporarily unavailable",
            ),
            Self::JsonRpc {
                status,
                code,
                message,
            } => (
                status,
                axum::Json(
                    json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}}),
                ),
            )
                .into_response(),
            Self::Policy {
                status,
                id,
                code,
                message,
            } => (
                status,
                axum::Json(
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}),
                ),
            )
                .into_response(),
            Self::Gateway { status, why } => json(status, "upstream_unavailable", why),
            Self::TooLarge => json(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                "the request body is larger than this endpoint accepts",
            ),
        }
    }
}

/// Why the UserInfo endpoint did not answer with claims.
#[derive(Debug)]
pub enum BearerError {
    /// 401 with a bare challenge: no token, or another scheme (RFC 6750 §3.1: no error code,
    /// the client may simply not know a token is needed).
    NoToken,
    /// 400 `invalid_request`: several `Authorization` headers, or one that cannot be read.
    Malformed,
    /// 401 `invalid_token`.
    InvalidToken,
    /// 403 `insufficient_scope`: the token lacks `openid`.
    InsufficientScope,
    /// 503: the revocation check could not be made; retryable.
    Unavailable(StoreError),
    /// 500: nobody's input is at fault; the cause goes to the log.
    Internal(String),
}

impl From<UserinfoError> for BearerError {
    fn from(e: UserinfoError) -> Self {
        match e {
            UserinfoError::InvalidToken => Self::InvalidToken,
            UserinfoError::InsufficientScope => Self::InsufficientScope,
            UserinfoError::Store(e @ StoreError::Unavailable(_)) => Self::Unavailable(e),
            UserinfoError::Store(e) => Self::Internal(format!("storage error: {e}")),
        }
    }
}

impl IntoResponse for BearerError {
    fn into_response(self) -> Response {
        // (status, the challenge's error code, the body's, the description)
        let (status, challenge_error, error, description) = match &self {
            // Like the MCP guard: the body names the problem even where the challenge must not.
            Self::NoToken => (
                StatusCode::UNAUTHORIZED,
                None,
                "invalid_token",
                "an access token is required in the Authorization header",
            ),
            Self::Malformed => (
                StatusCode::BAD_REQUEST,
                Some("invalid_request"),
                "invalid_request",
                "send one Authorization header with a Bearer token",
            ),
            Self::InvalidToken => (
                StatusCode::UNAUTHORIZED,
                Some("invalid_token"),
                "invalid_token",
                "the access token is invalid, expired or revoked",
            ),
            Self::InsufficientScope => (
                StatusCode::FORBIDDEN,
                Some("insufficient_scope"),
                "insufficient_scope",
                "the access token was not granted the openid scope",
            ),
            Self::Unavailable(e) => {
                tracing::warn!(error = %e, "database unavailable");
                return oauth_error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::TemporarilyUnavailable,
                    "the service is temporarily unavailable",
                );
            }
            Self::Internal(why) => {
                tracing::error!(error = %why, "internal error");
                return oauth_error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::ServerError,
                    "internal error; the X-Request-Id header identifies this request in the logs",
                );
            }
        };
        let mut challenge = "Bearer realm=\"authgate\"".to_owned();
        if let Some(code) = challenge_error {
            challenge.push_str(&format!(
                ", error=\"{code}\", error_description=\"{description}\""
            ));
        }
        if matches!(self, Self::InsufficientScope) {
            challenge.push_str(&format!(", scope=\"{}\"", crate::oauth::oidc::OPENID));
        }
        let body = json!({"error": error, "error_description": description});
        let mut resp = (status, axum::Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        no_store(&mut resp);
        resp
    }
}
