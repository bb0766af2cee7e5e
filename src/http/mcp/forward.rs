//! Streaming forwarding to the MCP server behind authgate. Bodies flow both ways as they come
//! (SSE event by event); the client's `Authorization` never goes upstream; the caller's identity
//! goes as `X-Authgate-*` headers that authgate always sets itself (see `headers`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;

use super::guard::{ResourceState, resource_metadata_url};
use super::headers::{self, Hop};
use super::{Caller, session};
use crate::config::ResourceConfig;
use crate::http::error::{Challenge, McpError};
use crate::services::upstream_tokens::{self, UpstreamTokenError};
use crate::state::App;
use crate::telemetry::names;

pub fn client(
    connect_timeout: Duration,
    idle_timeout: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    // No overall timeout: it would cut long SSE streams. The idle (read) timeout bounds a stalled
    // upstream instead.
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(connect_timeout)
        .read_timeout(idle_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
}

fn gateway_error(status: StatusCode, why: &'static str) -> McpError {
    McpError::Gateway { status, why }
}

pub async fn forward(
    State((state, resource)): State<ResourceState>,
    req: Request,
) -> Result<Response, McpError> {
    let Some(upstream) = resource.upstream.clone() else {
        // Only resources with an upstream are routed here.
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let Some(caller) = req.extensions().get::<Caller>().cloned() else {
        // The guard always runs first; without it nothing is forwarded.
        return Ok(StatusCode::UNAUTHORIZED.into_response());
    };
    let (parts, body) = req.into_parts();
    let upstream_token = upstream_token(&state, &resource, &caller).await?;
    let session = session::before(
        &state,
        &caller,
        &resource.uri,
        &parts.method,
        &parts.headers,
    )
    .await?;
    let mut url = upstream;
    url.set_query(parts.uri.query());
    let hop = Hop::of(&parts, &state.settings);
    let mut headers = headers::to_upstream(&parts.headers, &hop, &caller);
    if let Some(token) = &upstream_token
        && !headers::set_upstream_token(&mut headers, token.access_token.expose())
    {
        return Err(gateway_error(
            StatusCode::BAD_GATEWAY,
            "invalid upstream token",
        ));
    }
    let request = state.mcp_http.request(parts.method, url).headers(headers);
    let upstream_resp = send(&state, request, body).await?;
    session
        .after(
            &state,
            &caller,
            upstream_resp.status(),
            upstream_resp.headers(),
        )
        .await?;
    let mut resp = Response::builder().status(upstream_resp.status());
    if let Some(h) = resp.headers_mut() {
        headers::to_client(upstream_resp.headers(), h);
    }
    // Dropping this stream (client gone) drops the upstream response and closes its connection.
    let stream = upstream_resp.bytes_stream().map_err(std::io::Error::other);
    resp.body(Body::from_stream(stream))
        .map_err(|_| gateway_error(StatusCode::BAD_GATEWAY, "invalid upstream response"))
}

/// The caller's upstream access token, fresh, for a resource that keeps them. When it cannot be
/// renewed, the client gets the same challenge as for a revoked token (its grant was revoked),
/// so it authorizes again.
async fn upstream_token(
    app: &App,
    resource: &ResourceConfig,
    caller: &Caller,
) -> Result<Option<upstream_tokens::Fresh>, McpError> {
    if !resource.upstream_token {
        return Ok(None);
    }
    match upstream_tokens::current(app, &caller.grant_id).await {
        Ok(fresh) => Ok(Some(fresh)),
        Err(UpstreamTokenError::Reauthorize) => {
            metrics::counter!(names::GUARD_REJECTIONS, "reason" => "upstream_token").increment(1);
            Err(McpError::Challenge {
                kind: Challenge::InvalidToken,
                resource_metadata: resource_metadata_url(app, resource),
                scope: resource.scopes.to_string(),
            })
        }
        Err(UpstreamTokenError::Store(e)) => {
            tracing::warn!(error = %e, "upstream token unavailable: storage");
            Err(McpError::Unavailable)
        }
        Err(UpstreamTokenError::Unavailable(why)) => {
            tracing::warn!(error = %why, "upstream token cannot be renewed now");
            Err(gateway_error(
                StatusCode::BAD_GATEWAY,
                "the user's upstream token cannot be renewed right now",
            ))
        }
    }
}

/// Sends the request with the client's body streaming through, and waits (bounded) for the
/// MCP server's status and headers.
async fn send(
    app: &App,
    request: reqwest::RequestBuilder,
    body: Body,
) -> Result<reqwest::Response, McpError> {
    // A body over AUTHGATE_MCP_MAX_BODY without a Content-Length is cut off mid-stream by the
    // limit layer; the client hears 413 for it, not a gateway error.
    let too_large = Arc::new(AtomicBool::new(false));
    let flag = too_large.clone();
    let body = reqwest::Body::wrap_stream(body.into_data_stream().map_err(move |e| {
        let e = e.into_inner();
        if e.is::<http_body_util::LengthLimitError>() {
            flag.store(true, Ordering::Relaxed);
        }
        e
    }));
    let timeout =
        Duration::from_secs(u64::try_from(app.settings.mcp_upstream_timeout).unwrap_or(300));
    let started = std::time::Instant::now();
    let sent = tokio::time::timeout(timeout, request.body(body).send()).await;
    metrics::histogram!(names::MCP_FORWARD_SECONDS).record(started.elapsed().as_secs_f64());
    let late = || {
        gateway_error(
            StatusCode::GATEWAY_TIMEOUT,
            "the MCP server did not answer in time",
        )
    };
    let resp = match sent {
        Ok(Ok(r)) => r,
        Ok(Err(e)) if e.is_timeout() => return Err(late()),
        Ok(Err(_)) if too_large.load(Ordering::Relaxed) => return Err(McpError::TooLarge),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "MCP upstream unreachable");
            metrics::counter!(names::MCP_FORWARD_RESPONSES, "status" => "502").increment(1);
            return Err(gateway_error(
                StatusCode::BAD_GATEWAY,
                "the MCP server cannot be reached",
            ));
        }
        Err(_) => return Err(late()),
    };
    metrics::counter!(names::MCP_FORWARD_RESPONSES, "status" => resp.status().as_u16().to_string())
        .increment(1);
    Ok(resp)
}
