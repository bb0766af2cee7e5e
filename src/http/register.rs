//! `POST /register`: Dynamic Client Registration (RFC 7591), shaped by what real MCP clients send.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use crate::oauth::OAuthError;
use crate::oauth::client::{ClientMetadata, MetadataSource, parse_client_metadata};
use crate::oauth::secrets::{PlainSecret, SecretKind};
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
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    let result = register_inner(&state, &headers, body, now).await;
    let outcome = if result.is_ok() {
        "created"
    } else {
        "rejected"
    };
    metrics::counter!(names::REGISTRATIONS, "outcome" => outcome).increment(1);
    result
}

async fn register_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    now: i64,
) -> Result<Response, ApiError> {
    let is_json = super::has_content_type(headers, "application/json");
    if !is_json {
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
        ApiError::bad_request(OAuthError::invalid_client_metadata(
            "the registration request is not valid JSON",
        ))
    })?;
    let metadata = parse_client_metadata(
        &value,
        MetadataSource::Registration,
        &state.settings.scopes,
        &state.settings.allowed_redirects,
    )
    .map_err(ApiError::bad_request)?;

    let client_id = format!("{CLIENT_ID_PREFIX}{}", state.random.id());
    let secret = metadata
        .token_endpoint_auth_method
        .uses_secret()
        .then(|| PlainSecret::new(state.random.token()));
    let record = ClientRecord {
        id: client_id.clone(),
        secret_hash: secret.as_ref().map(|s| s.hash(SecretKind::ClientSecret)),
        secret_expires_at: 0,
        metadata,
        created_at: now,
        last_used_at: None,
    };
    state.store.insert_client(&record).await?;
    tracing::info!(
        client.id = %record.id,
        client.auth_method = record.metadata.token_endpoint_auth_method.as_str(),
        "client registered"
    );

    let body = RegistrationResponse {
        client_id: &record.id,
        client_id_issued_at: now,
        client_secret: secret.as_ref().map(PlainSecret::expose),
        client_secret_expires_at: secret.as_ref().map(|_| record.secret_expires_at),
        metadata: &record.metadata,
    };
    let mut resp = (StatusCode::CREATED, axum::Json(body)).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// `DELETE /register/{client_id}`: a confidential client deletes itself, authenticating with its
/// own secret (HTTP Basic). Used by `authgate doctor` to remove its test registration; a
/// simplified form of RFC 7592 that needs no registration access token.
pub async fn unregister(
    State(state): State<AppState>,
    axum::extract::Path(client_id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let denied = || {
        super::client_auth::ClientAuthError {
            description: "client authentication failed".to_owned(),
            basic: true,
        }
        .into_response()
    };
    let Some(creds) = super::client_auth::basic_credentials(&headers).and_then(Result::ok) else {
        return denied();
    };
    if creds.0 != client_id {
        return denied();
    }
    let client = match state.store.get_client(&client_id).await {
        Ok(Some(c)) => c,
        Ok(None) => return denied(),
        Err(e) => return ApiError::Store(e).into_response(),
    };
    let ok = client
        .secret_hash
        .as_ref()
        .is_some_and(|h| h.verify(SecretKind::ClientSecret, &creds.1));
    if !ok {
        return denied();
    }
    let now = state.clock.now();
    if let Err(e) = state.store.revoke_grants(None, Some(&client_id), now).await {
        return ApiError::Store(e).into_response();
    }
    match state.store.delete_client(&client_id).await {
        Ok(_) => {
            tracing::info!(client.id = %client_id, "client deleted itself");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => ApiError::Store(e).into_response(),
    }
}
