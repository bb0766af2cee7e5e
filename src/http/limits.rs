//! The limits every route lives under, applied in one place: request body sizes, time-outs for
//! everything that is not an MCP stream, panics turned into a 500 that names the request, and
//! per-source rate limits on the endpoints a flood could hurt.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use super::error::{ApiError, PageError};
use crate::config::Settings;
use crate::ratelimit::Limited;
use crate::state::AppState;
use crate::telemetry::names;

/// The OAuth endpoints and pages take small forms and JSON documents only.
pub const OAUTH_MAX_BODY: usize = 16 * 1024;

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
                PageError::rate_limited(wait).into_response()
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
    ApiError::Internal("a request handler panicked".to_owned()).into_response()
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
