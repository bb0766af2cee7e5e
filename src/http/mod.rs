//! The HTTP surface. Handlers extract, parse (`oauth`), decide and persist (`services`), and
//! respond; errors have one type per surface (`error`). The router and the layers every route
//! lives under are assembled here.

pub mod account;
pub mod client_ip;
pub mod cookies;
pub mod error;
pub mod extract;
pub mod health;
pub mod limits;
pub mod mcp;
pub mod oauth;
pub mod pages;

use std::time::Duration;

use axum::Router;
use axum::http::Method;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post};
use tower_http::cors::{Any, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use self::oauth::{
    authorize, callback, consent, dev_login, discovery, register, revoke, token, userinfo,
};
use crate::ratelimit::Limited;
use crate::services::upstream::UpstreamKind;
use crate::services::upstream::dev::DEV_LOGIN_PATH;
use crate::state::AppState;

/// CORS for the endpoints browser-based MCP clients call directly (discovery, `/register`,
/// `/token`, `/revoke`, `/userinfo`): any origin, never credentials, since these authenticate with explicit
/// parameters, not cookies. `/authorize` and the pages never get it.
fn open_cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers(mcp::header_names(mcp::ALLOW_HEADERS))
        .expose_headers(mcp::header_names(mcp::EXPOSE_HEADERS))
        .max_age(Duration::from_secs(86_400))
}

/// Discovery, registration, tokens, revocation and UserInfo: the JSON endpoints.
fn json_endpoints(app: &AppState) -> Router {
    let limited = |which: Limited| from_fn_with_state((app.clone(), which), limits::rate_limit);
    // `/register` enforces the same 16 KiB itself, answering with RFC 7591's error code.
    let registration = Router::new()
        .route(
            "/register",
            post(register::register).route_layer(limited(Limited::Register)),
        )
        .route("/register/{client_id}", delete(register::unregister))
        .with_state(app.clone());
    let mut routes = Router::new()
        .route(
            "/token",
            post(token::token).route_layer(limited(Limited::Token)),
        )
        .route(
            "/revoke",
            post(revoke::revoke).route_layer(limited(Limited::Revoke)),
        )
        .route(discovery::JWKS_PATH, get(discovery::jwks))
        .route(
            discovery::USERINFO_PATH,
            get(userinfo::userinfo).post(userinfo::userinfo),
        );
    for path in discovery::as_metadata_paths(&app.settings) {
        routes = routes.route(&path, get(discovery::as_metadata));
    }
    for path in discovery::openid_configuration_paths(&app.settings) {
        routes = routes.route(&path, get(discovery::openid_metadata));
    }
    let mut routes: Router = routes.with_state(app.clone());
    for (index, resource) in app.settings.resources.iter().enumerate() {
        let doc = app
            .resource_metadata
            .get(index)
            .cloned()
            .unwrap_or_default();
        let mut prm = Router::new();
        for path in discovery::resource_metadata_paths(&app.settings, resource, index == 0) {
            prm = prm.route(&path, get(discovery::resource_metadata));
        }
        routes = routes.merge(prm.with_state(doc));
    }
    let routes =
        limits::bounded(routes, &app.settings).merge(limits::timed(registration, &app.settings));
    if app.settings.cors_enabled {
        routes.route_layer(open_cors())
    } else {
        routes
    }
}

/// The browser pages: no CORS, ever.
fn pages(app: &AppState) -> Router {
    let limited = |which: Limited| from_fn_with_state((app.clone(), which), limits::rate_limit);
    let mut pages = Router::new()
        .route(
            "/authorize",
            get(authorize::authorize).route_layer(limited(Limited::Authorize)),
        )
        .route(consent::CONSENT_PATH, post(consent::consent))
        .route(
            account::ACCOUNT_PATH,
            get(account::page).route_layer(limited(Limited::Account)),
        )
        .route(
            account::REVOKE_PATH,
            post(account::revoke).route_layer(limited(Limited::Account)),
        )
        .route(
            account::LOGOUT_PATH,
            post(account::logout).route_layer(limited(Limited::Account)),
        );
    pages = match app.upstream.kind() {
        UpstreamKind::Oidc => pages.route(
            callback::CALLBACK_PATH,
            get(callback::callback).route_layer(limited(Limited::Callback)),
        ),
        UpstreamKind::Development => {
            pages.route(DEV_LOGIN_PATH, get(dev_login::page).post(dev_login::log_in))
        }
    };
    let health = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    limits::bounded(pages.merge(health).with_state(app.clone()), &app.settings)
}

pub fn router(app: AppState) -> Router {
    let routes = Router::new()
        .merge(json_endpoints(&app))
        .merge(pages(&app))
        .merge(limits::mcp(mcp::routes(&app), &app.settings));
    outer_layers(routes, &app.settings)
}

/// Makes the request id available to the audit events that services record while serving it.
async fn audit_scope(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    crate::services::audit::with_request_id(id, next.run(req)).await
}

/// What wraps every route: a request id, the request log line, and panics turned into a 500
/// that carries the id (the connection survives).
pub fn outer_layers(app: Router, settings: &crate::config::Settings) -> Router {
    let trusted = settings.trusted_proxies.clone();
    limits::catch_panics(app.layer(axum::middleware::from_fn(audit_scope)))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(move |req: &axum::http::Request<axum::body::Body>| {
                    // The path only: query strings carry codes and states.
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let client = req
                        .extensions()
                        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                        .map(|c| client_ip::client_ip(c.0, req.headers(), &trusted).to_string())
                        .unwrap_or_default();
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id, client = %client)
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}
