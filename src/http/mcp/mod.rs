//! The protected MCP endpoints: the guard in front of every resource path, then either
//! streaming forwarding to the MCP server behind authgate or the built-in MCP server.

pub mod builtin;
pub mod forward;
pub mod guard;
pub mod headers;
pub mod host;
pub mod policy;
pub mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Method};
use axum::middleware::from_fn_with_state;
use axum::routing::any;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::state::AppState;

/// Who is calling, as established by the guard from a verified access token. Handlers behind the
/// guard read it from the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub sub: String,
    pub email: Option<String>,
    pub client_id: String,
    pub scope: String,
    /// The grant the token belongs to (its `sid`): where the user's upstream tokens are kept.
    pub grant_id: String,
}

/// What a browser-based MCP client may send and read (the streamable HTTP transport's headers).
pub const ALLOW_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "accept",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "mcp-session-id",
    "last-event-id",
];
pub const EXPOSE_HEADERS: &[&str] = &[
    "www-authenticate",
    "mcp-session-id",
    "mcp-protocol-version",
    "retry-after",
];

pub fn header_names(names: &[&'static str]) -> Vec<HeaderName> {
    names.iter().map(|n| HeaderName::from_static(n)).collect()
}

/// CORS for the MCP endpoints: only the allowed origins (the boundary has refused the others
/// already), never credentials; preflights are answered before the token is asked for.
fn cors(app: &AppState) -> CorsLayer {
    let app = app.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origin
                .to_str()
                .is_ok_and(|o| guard::origin_allowed(&app, o))
        }))
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers(header_names(ALLOW_HEADERS))
        .expose_headers(header_names(EXPOSE_HEADERS))
        .max_age(Duration::from_secs(86_400))
}

/// Every protected resource at its path: boundary, CORS, token, the tool policy (only on
/// resources with tool rules), then the MCP server. The layers wrap every method, so nothing is
/// routed, redirected or refused with 405 before the token is checked.
pub fn routes(app: &AppState) -> Router {
    let mut resources = Router::new();
    for resource in &app.settings.resources {
        let state: guard::ResourceState = (app.clone(), Arc::new(resource.clone()));
        let route: Router = if resource.upstream.is_some() {
            Router::new()
                .route(&resource.path, any(forward::forward))
                .with_state(state.clone())
        } else {
            Router::new().route_service(&resource.path, builtin::service())
        };
        let route = if resource.tools.is_active() {
            route.route_layer(from_fn_with_state(state.clone(), policy::enforce))
        } else {
            route
        };
        let route = route
            .route_layer(from_fn_with_state(state.clone(), guard::authenticate))
            .route_layer(cors(app))
            .route_layer(from_fn_with_state(state, guard::boundary));
        resources = resources.merge(route);
    }
    resources
}
