//! The limits every route lives under, applied in one place: request body sizes, time-outs for
//! everything that is not an MCP stream, panics turned into a 500 that names the request, and
//! per-source rate limits on the endpoints a flood could hurt.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use super::error::ApiError;
use super::pages;
use crate::config::{RateLimits, Settings};
use crate::ratelimit::RateLimiter;
use crate::state::AppState;
use crate::telemetry::names;

/// The OAuth endpoints and pages take small forms and JSON documents only.
pub const OAUTH_MAX_BODY: usize = 16 * 1024;

/// The endpoints with a per-source rate limit, each with its own buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Register,
    Token,
    Authorize,
    Revoke,
    Account,
    Callback,
}

impl Limited {
    fn label(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Token => "token",
            Self::Authorize => "authorize",
            Self::Revoke => "revoke",
            Self::Account => "account",
            Self::Callback => "callback",
        }
    }

    /// Browser pages get a page; the JSON endpoints an OAuth error.
    fn is_page(self) -> bool {
        matches!(self, Self::Authorize | Self::Account | Self::Callback)
    }
}

/// One set of buckets per limited endpoint.
#[derive(Debug)]
pub struct Limiters {
    register: RateLimiter,
    token: RateLimiter,
    authorize: RateLimiter,
    revoke: RateLimiter,
    account: RateLimiter,
    callback: RateLimiter,
}

impl Limiters {
    pub fn new(limits: &RateLimits) -> Self {
        Self {
            register: RateLimiter::new(limits.register),
            token: RateLimiter::new(limits.token),
            authorize: RateLimiter::new(limits.authorize),
            revoke: RateLimiter::new(limits.revoke),
            account: RateLimiter::new(limits.account),
            callback: RateLimiter::new(limits.callback),
        }
    }

    fn get(&self, which: Limited) -> &RateLimiter {
        match which {
            Limited::Register => &self.register,
            Limited::Token => &self.token,
            Limited::Authorize => &self.authorize,
            Limited::Revoke => &self.revoke,
            Limited::Account => &self.account,
            Limited::Callback => &self.callback,
        }
    }
}

/// Middleware: one token from the caller's bucket (its address, or the forwarded one behind a
/// trusted proxy), or 429 with `Retry-After` before the handler runs.
pub async fn rate_limit(
    State((state, which)): State<(AppState, Limited)>,
    req: Request,
    next: Next,
) -> Response {
    let Some(peer) = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
    else {
        // Served without connection info (never by `serve`): nothing to key a bucket on.
        return next.run(req).await;
    };
    let ip = super::client_ip::client_ip(peer, req.headers(), &state.settings.trusted_proxies);
    match state.limiters.get(which).check(ip, state.clock.now()) {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            metrics::counter!(names::RATE_LIMITED, "endpoint" => which.label()).increment(1);
            tracing::info!(endpoint = which.label(), "rate limited");
            if which.is_page() {
                let mut resp = pages::error_page(
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many requests",
                    "Too many requests came from your network. Wait a moment and try again.",
                );
                if let Ok(v) = HeaderValue::from_str(&wait.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                resp
            } else {
                ApiError::RateLimited(wait).into_response()
            }
        }
    }
}

/// A panic in a handler answers 500 (the connection stays usable); the request id that
/// `PropagateRequestIdLayer` copies onto this response is what an operator searches the logs for.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    super::error::oauth_error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        crate::oauth::ErrorCode::ServerError,
        "internal error; the X-Request-Id header identifies this request in the logs",
    )
}

/// Body limit and time-out for the OAuth endpoints, pages, discovery and health checks.
pub fn bounded(router: Router, settings: &Settings) -> Router {
    timed(
        router.layer(RequestBodyLimitLayer::new(OAUTH_MAX_BODY)),
        settings,
    )
}

/// The time-out alone, for routes that bound their bodies themselves.
pub fn timed(router: Router, settings: &Settings) -> Router {
    let timeout = Duration::from_secs(u64::try_from(settings.request_timeout).unwrap_or(30));
    router.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        timeout,
    ))
}

/// Body limit for the MCP endpoints; no time-out, since their responses may stream for as long
/// as a tool runs (the forwarder bounds the wait for the first byte itself).
pub fn mcp(router: Router, settings: &Settings) -> Router {
    router.layer(RequestBodyLimitLayer::new(settings.mcp_max_body))
}

/// Outermost of the limits: panics never drop the connection.
pub fn catch_panics(router: Router) -> Router {
    router.layer(CatchPanicLayer::custom(panic_response))
}
