//! The HTTP surface: one router per area, merged here. Handlers extract, parse, decide with
//! `oauth`, persist with `store`, and respond.

pub mod account;
pub mod authorize;
pub mod client_auth;
pub mod client_ip;
pub mod clients;
pub mod cookies;
pub mod cors;
pub mod discovery;
pub mod error;
pub mod health;
pub mod limits;
pub mod login;
pub mod pages;
pub mod register;
pub mod revoke;
pub mod token;

use axum::Router;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{any, delete, get, post};

use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::mcp;

use crate::state::AppState;

/// Does the request declare this media type (parameters such as `charset` ignored)?
pub fn has_content_type(headers: &axum::http::HeaderMap, media_type: &str) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(media_type))
}

pub fn router(state: AppState) -> Router {
    use limits::Limited;
    let limited = |which: Limited| from_fn_with_state((state.clone(), which), limits::rate_limit);
    // `/register` enforces the same 16 KiB itself, answering with RFC 7591's error code.
    let registration = Router::new()
        .route(
            "/register",
            post(register::register).route_layer(limited(Limited::Register)),
        )
        .route("/register/{client_id}", delete(register::unregister))
        .with_state(state.clone());
    let mut cors_routes = Router::new()
        .route(
            "/token",
            post(token::token).route_layer(limited(Limited::Token)),
        )
        .route(
            "/revoke",
            post(revoke::revoke).route_layer(limited(Limited::Revoke)),
        )
        .route(discovery::JWKS_PATH, get(discovery::jwks));
    for path in discovery::as_metadata_paths(&state.settings) {
        cors_routes = cors_routes.route(&path, get(discovery::as_metadata));
    }
    let mut cors_routes: Router = cors_routes.with_state(state.clone());
    for (index, resource) in state.settings.resources.iter().enumerate() {
        let mut prm = Router::new();
        for path in discovery::resource_metadata_paths(&state.settings, resource, index == 0) {
            prm = prm.route(&path, get(discovery::resource_metadata));
        }
        cors_routes = cors_routes.merge(prm.with_state((state.clone(), index)));
    }
    let cors_routes = limits::bounded(cors_routes, &state.settings)
        .merge(limits::timed(registration, &state.settings));
    let cors_routes = if state.settings.cors_enabled {
        cors_routes.route_layer(from_fn(cors::cors))
    } else {
        cors_routes
    };

    // Browser pages: no CORS, ever.
    let mut pages = Router::new()
        .route(
            "/authorize",
            get(authorize::authorize).route_layer(limited(Limited::Authorize)),
        )
        .route(authorize::CONSENT_PATH, post(authorize::consent))
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
    if state.upstream.is_some() {
        pages = pages.route(
            login::CALLBACK_PATH,
            get(login::callback).route_layer(limited(Limited::Callback)),
        );
    } else {
        pages = pages.route(
            login::DEV_LOGIN_PATH,
            get(login::dev_login_page).post(login::dev_login),
        );
    }

    // The protected resources: the guard wraps every method, so nothing is routed, redirected
    // or refused with 405 before the token is checked.
    let mut resources = Router::new();
    for (index, resource) in state.settings.resources.iter().enumerate() {
        let guard = from_fn_with_state((state.clone(), index), mcp::guard::guard);
        let route: Router = if resource.upstream.is_some() {
            Router::new()
                .route(&resource.path, any(mcp::forward::forward))
                .with_state((state.clone(), index))
        } else {
            Router::new().route_service(&resource.path, mcp::builtin::service())
        };
        resources = resources.merge(route.route_layer(guard));
    }
    let resources = limits::mcp(resources, &state.settings);

    let health = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(state.clone());

    let bounded = limits::bounded(
        Router::new()
            .merge(pages.with_state(state.clone()))
            .merge(health),
        &state.settings,
    );
    let app = Router::new()
        .merge(cors_routes)
        .merge(bounded)
        .merge(resources);
    outer_layers(app, &state.settings)
}

/// What wraps every route: a request id, the request log line, and panics turned into a 500
/// that carries the id (the connection survives).
pub fn outer_layers(app: Router, settings: &crate::config::Settings) -> Router {
    let trusted = settings.trusted_proxies.clone();
    limits::catch_panics(app)
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
