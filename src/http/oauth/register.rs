//! `POST /register`: Dynamic Client Registration (RFC 7591), shaped by what real MCP clients
//! send; `DELETE /register/{id}`: a confidential client deletes itself.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::http::error::{ApiError, no_store};
use crate::http::extract::has_content_type;
use crate::oauth::OAuthError;
use crate::oauth::client::{ClientMetadata, MetadataSource, parse_client_metadata};
use crate::oauth::request::basic_credentials;
use crate::oauth::secrets::{Secret, kind};
use crate::services::grants;
use crate::state::AppState;
use crate::store::ClientRecord;
use crate::telemetry::names;

/// Real registration bodies are under 1 KB; anything far larger is not a client.
pub const MAX_REGISTRATION_BYTES: usize = 16 * 1024;
/// Prefix of generated client ids; never `https://`, which would read as a metadata document.
pub const CLIENT_ID_PREFIX: &str = "agc_";

#[derive(Serialize)]
struct RegistrationResponse<'a> {
    client_id: &'a str,
    client_id_issued_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret_expires_at: Option<i64>,
    #[serde(flatten)]
    metadata: &'a ClientMetadata,
}

pub async fn register(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let result = register_client(&app, &headers, body).await;
    let outcome = if result.is_ok() {
        "created"
    } else {
        "rejected"
    };
    metrics::counter!(names::REGISTRATIONS, "outcome" => outcome).increment(1);
    result
}

/// The body, as RFC 7591 wants it read: JSON, bounded, every error `invalid_client_metadata`.
async fn metadata_of(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<ClientMetadata, ApiError> {
    if !has_content_type(headers, "application/json") {
        return Err(ApiError::bad_request(OAuthError::invalid_client_metadata(
            "the registration request must be application/json",
        )));
    }
    let bytes = axum::body::to_bytes(body, MAX_REGISTRATION_BYTES)
        .await
        .map_err(|_| {
            ApiError::OAuth(
                StatusCode::PAYLOAD_TOO_LARGE,
                OAuthError::invalid_client_metadata("the registration request is too large"),
            )
        })?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
        OAuthError::invalid_client_metadata("the registration request is not valid JSON")
    })?;
    Ok(parse_client_metadata(
        &value,
        MetadataSource::Registration,
        &app.settings.offered_scopes(),
        &app.settings.allowed_redirects,
    )?)
}

async fn register_client(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let metadata = metadata_of(app, headers, body).await?;
    let now = app.clock.now();
    let secret = metadata
        .token_endpoint_auth_method
        .uses_secret()
        .then(|| Secret::<kind::ClientSecret>::new(app.random.token()));
    let record = ClientRecord {
        id: format!("{CLIENT_ID_PREFIX}{}", app.random.id()),
        secret_hash: secret.as_ref().map(Secret::hash),
        secret_expires_at: 0,
        metadata,
        created_at: now,
        last_used_at: None,
    };
    app.store.insert_client(&record).await?;
    tracing::info!(
        client.id = %record.id,
        client.auth_method = record.metadata.token_endpoint_auth_method.as_str(),
        "client registered"
    );
    let body = RegistrationResponse {
        client_id: &record.id,
        client_id_issued_at: now,
        client_secret: secret.as_ref().map(Secret::expose),
        client_secret_expires_at: secret.as_ref().map(|_| record.secret_expires_at),
        metadata: &record.metadata,
    };
    let mut resp = (StatusCode::CREATED, axum::Json(body)).into_response();
    no_store(&mut resp);
    Ok(resp)
}

/// `DELETE /register/{client_id}`: a confidential client deletes itself, authenticating with its
/// own secret (HTTP Basic). Used by `authgate doctor` to remove its test registration; a
/// simplified form of RFC 7592 that needs no registration access token.
pub async fn unregister(
    State(app): State<AppState>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let denied = || ApiError::InvalidClient {
        description: "client authentication failed".to_owned(),
        basic: true,
    };
    let creds = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(basic_credentials)
        .and_then(Result::ok)
        .filter(|(id, _)| *id == client_id)
        .ok_or_else(denied)?;
    let client = app.store.get_client(&client_id).await?.ok_or_else(denied)?;
    let authenticated = client
        .secret_hash
        .as_ref()
        .is_some_and(|h| h.verify(&creds.1));
    if !authenticated {
        return Err(denied());
    }
    grants::delete_client(&app.store, &client_id, app.clock.now()).await?;
    tracing::info!(client.id = %client_id, "client deleted itself");
    Ok(StatusCode::NO_CONTENT.into_response())
}
