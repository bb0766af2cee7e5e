//! CORS for the endpoints browser-based MCP clients call directly (discovery, `/register`,
//! `/token`, `/revoke`). Any origin, never credentials: these endpoints authenticate with explicit
//! parameters, not cookies. `/authorize` is deliberately not covered.

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub const ALLOW_HEADERS: &str = "Authorization, Content-Type, Accept, MCP-Protocol-Version, Mcp-Method, Mcp-Name, Mcp-Session-Id, Last-Event-ID";
pub const EXPOSE_HEADERS: &str =
    "WWW-Authenticate, Mcp-Session-Id, MCP-Protocol-Version, Retry-After";

pub fn is_preflight(req: &Request) -> bool {
    req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// A 204 answer to a preflight, allowing `allow_origin` (no authentication is needed for it).
pub fn preflight(allow_origin: HeaderValue) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    allow(&mut resp, allow_origin);
    resp
}

/// Lets `origin` read the response and the headers clients need.
pub fn allow(resp: &mut Response, origin: HeaderValue) {
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}

pub async fn cors(req: Request, next: Next) -> Response {
    if is_preflight(&req) {
        return preflight(HeaderValue::from_static("*"));
    }
    let has_origin = req.headers().contains_key(header::ORIGIN);
    let mut resp = next.run(req).await;
    if has_origin {
        allow(&mut resp, HeaderValue::from_static("*"));
    }
    resp
}
