//! Discovery documents: RFC 8414 authorization-server metadata and RFC 9728 protected-resource
//! metadata, built from the configured public URL only (never from `Host` or `X-Forwarded-*`).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use crate::config::{ResourceConfig, Settings};
use crate::state::AppState;

pub const JWKS_PATH: &str = "/jwks.json";

pub fn authorization_server_metadata(settings: &Settings) -> serde_json::Value {
    json!({
        "issuer": settings.issuer,
        "authorization_endpoint": settings.url("/authorize"),
        "token_endpoint": settings.url("/token"),
        "registration_endpoint": settings.url("/register"),
        "revocation_endpoint": settings.url("/revoke"),
        "jwks_uri": settings.url(JWKS_PATH),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_post", "client_secret_basic"],
        "client_id_metadata_document_supported": settings.cimd_enabled,
        "scopes_supported": settings.scopes.iter().collect::<Vec<_>>(),
        "authorization_response_iss_parameter_supported": true,
    })
}

pub fn protected_resource_metadata(
    settings: &Settings,
    resource: &ResourceConfig,
) -> serde_json::Value {
    json!({
        "resource": resource.uri,
        "authorization_servers": [settings.issuer],
        "scopes_supported": resource.offered.iter().collect::<Vec<_>>(),
        "bearer_methods_supported": ["header"],
        "resource_name": format!("MCP server {}", resource.path),
    })
}

pub fn serialize(doc: &serde_json::Value) -> Bytes {
    Bytes::from(doc.to_string())
}

fn json_document(body: Bytes) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

pub async fn as_metadata(State(state): State<AppState>) -> Response {
    json_document(state.as_metadata.clone())
}

pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut resp = json_document(state.keys.jwks(state.clock.now()));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    resp
}

/// A resource's metadata document, serialized once (the route's state).
pub async fn resource_metadata(State(doc): State<Bytes>) -> Response {
    json_document(doc)
}

/// The well-known paths served, root forms first; path-inserted forms follow when the issuer or
/// resource has a path (RFC 8414 §3.1, RFC 9728 §3.1).
pub fn as_metadata_paths(settings: &Settings) -> Vec<String> {
    let mut paths = vec!["/.well-known/oauth-authorization-server".to_owned()];
    let issuer_path = settings.issuer_path();
    if !issuer_path.is_empty() {
        paths.push(format!(
            "/.well-known/oauth-authorization-server{issuer_path}"
        ));
    }
    paths
}

/// Where a resource's metadata is served. The default resource also answers at the root
/// location, which clients without a `WWW-Authenticate` pointer try last.
pub fn resource_metadata_paths(
    settings: &Settings,
    resource: &ResourceConfig,
    is_default: bool,
) -> Vec<String> {
    let mut paths = Vec::new();
    if is_default {
        paths.push("/.well-known/oauth-protected-resource".to_owned());
    }
    paths.push(format!(
        "/.well-known/oauth-protected-resource{}",
        resource.path
    ));
    let full = format!("{}{}", settings.issuer_path(), resource.path);
    if full != resource.path {
        paths.push(format!("/.well-known/oauth-protected-resource{full}"));
    }
    paths
}
