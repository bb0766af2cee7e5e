//! The one error type of the JSON endpoints, mapped to OAuth error responses
//! (`{"error", "error_description"}`, RFC 6749 §5.2). Internal causes are logged, never sent.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::oauth::{ErrorCode, OAuthError};
use crate::store::StoreError;

#[derive(Debug)]
pub enum ApiError {
    /// A protocol error the client may see, with its HTTP status.
    OAuth(StatusCode, OAuthError),
    /// Too many requests from one source; retry after this many seconds.
    RateLimited(u64),
    Store(StoreError),
}

impl ApiError {
    pub fn bad_request(err: OAuthError) -> Self {
        Self::OAuth(StatusCode::BAD_REQUEST, err)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    error_description: &'a str,
}

pub fn oauth_error_response(status: StatusCode, code: ErrorCode, description: &str) -> Response {
    let body = ErrorBody {
        error: code.as_str(),
        error_description: description,
    };
    let mut resp = (status, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::OAuth(status, e) => oauth_error_response(status, e.code, &e.description),
            Self::RateLimited(retry_after) => {
                let mut resp = oauth_error_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::TemporarilyUnavailable,
                    "too many requests from this address; retry later",
                );
                if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                resp
            }
            Self::Store(StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "database unavailable");
                oauth_error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::TemporarilyUnavailable,
                    "the service is temporarily unavailable",
                )
            }
            Self::Store(e) => {
                tracing::error!(error = %e, "storage error");
                oauth_error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::ServerError,
                    "internal error",
                )
            }
        }
    }
}
