//! The HTTP surface: one router per area, merged here. Handlers extract, parse, decide with
//! `oauth`, persist with `store`, and respond.

pub mod cors;
pub mod discovery;
pub mod error;
pub mod register;

use axum::Router;
use axum::middleware::from_fn;
use axum::routing::{get, post};

use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let mut cors_routes = Router::new().route("/register", post(register::register));
    for path in discovery::as_metadata_paths(&state.settings) {
        cors_routes = cors_routes.route(&path, get(discovery::as_metadata));
    }
    for path in discovery::resource_metadata_paths(&state.settings) {
        cors_routes = cors_routes.route(&path, get(discovery::resource_metadata));
    }
    let cors_routes = cors_routes.layer(from_fn(cors::cors));

    Router::new().merge(cors_routes).with_state(state)
}
