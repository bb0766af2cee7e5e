//! `/healthz` (the process answers) and `/readyz` (the database answers and keys are loaded).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::state::AppState;

pub async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    // Probes time out after about a second: answer before that.
    let database = matches!(
        tokio::time::timeout(std::time::Duration::from_millis(800), state.store.ping()).await,
        Ok(Ok(()))
    );
    let keys = state.keys.signing_kid(state.clock.now()).is_some();
    let status = if database && keys {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({"database": database, "keys": keys})),
    )
        .into_response()
}
