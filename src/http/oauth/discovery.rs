//! Discovery documents: RFC 8414 authorization-server metadata, OpenID Connect Discovery (the
//! same document with the OpenID provider's fields) and RFC 9728 protected-resource metadata,
//! built from the configured public URL only (never from `Host` or `X-Forwarded-*`).

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use crate::config::{ResourceConfig, Settings};
use crate::oauth::assertion::SIGNING_ALGS;
use crate::oauth::client::{GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN, TokenAuthMethod};
use crate::oauth::id_jag;
use crate::oauth::oidc;
use crate::oauth::token_exchange::GRANT_TOKEN_EXCHANGE;
use crate::state::AppState;

pub const JWKS_PATH: &str = "/jwks.json";
pub const USERINFO_PATH: &str = "/userinfo";

pub fn authorization_server_metadata(settings: &Settings) -> serde_json::Value {
    let auth_methods: Vec<&str> = TokenAuthMethod::ALL.iter().map(|m| m.as_str()).collect();
    let mut grant_types = vec![GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN];
    if !settings.token_exchange_clients.is_empty() {
        grant_types.push(GRANT_TOKEN_EXCHANGE);
    }
    // Advertised only when it can succeed: clients such as Claude try the grant whenever it is
    // listed.
    let enterprise = !settings.enterprise_issuers.is_empty();
    if enterprise {
        grant_types.push(id_jag::GRANT_TYPE);
    }
    let mut doc = json!({
        "issuer": settings.issuer,
        "authorization_endpoint": settings.url("/authorize"),
        "token_endpoint": settings.url("/token"),
        "registration_endpoint": settings.url("/register"),
        "revocation_endpoint": settings.url("/revoke"),
        "jwks_uri": settings.url(JWKS_PATH),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": grant_types,
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "token_endpoint_auth_signing_alg_values_supported": SIGNING_ALGS,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_signing_alg_values_supported": SIGNING_ALGS,
        "client_id_metadata_document_supported": settings.cimd_enabled,
        "scopes_supported": settings.offered_scopes().iter().collect::<Vec<_>>(),
        "authorization_response_iss_parameter_supported": true,
    });
    if enterprise {
        doc["authorization_grant_profiles_supported"] = json!([id_jag::GRANT_PROFILE]);
    }
    doc
}

/// OpenID Connect Discovery 1.0 §3: the authorization-server metadata, so the two documents never
/// disagree, plus what an OpenID provider must say. ID tokens are signed with the access tokens'
/// ES256 keys; RS256, which the specification lists as mandatory, would need a second kind of
/// key. Request objects are not supported, which must be said (their default is "supported").
pub fn openid_configuration(settings: &Settings) -> serde_json::Value {
    let mut doc = authorization_server_metadata(settings);
    let provider = [
        ("userinfo_endpoint", json!(settings.url(USERINFO_PATH))),
        ("subject_types_supported", json!(["public"])),
        ("id_token_signing_alg_values_supported", json!(["ES256"])),
        ("claims_supported", json!(oidc::CLAIMS_SUPPORTED)),
        ("claim_types_supported", json!(["normal"])),
        ("claims_parameter_supported", json!(false)),
        ("request_parameter_supported", json!(false)),
        ("request_uri_parameter_supported", json!(false)),
        (
            "prompt_values_supported",
            json!(["none", "login", "consent"]),
        ),
    ];
    if let Some(fields) = doc.as_object_mut() {
        fields.extend(provider.map(|(k, v)| (k.to_owned(), v)));
    }
    doc
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

pub async fn openid_metadata(State(state): State<AppState>) -> Response {
    json_document(state.openid_metadata.clone())
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
    well_known_paths(settings, "oauth-authorization-server")
}

/// The OpenID document at the root, which is also where `<issuer>/.well-known/openid-configuration`
/// (OpenID Connect Discovery §4) arrives once a reverse proxy has stripped the issuer's path, and
/// path-inserted as RFC 8414 clients (the MCP SDKs) look for it.
pub fn openid_configuration_paths(settings: &Settings) -> Vec<String> {
    well_known_paths(settings, "openid-configuration")
}

fn well_known_paths(settings: &Settings, name: &str) -> Vec<String> {
    let mut paths = vec![format!("/.well-known/{name}")];
    let issuer_path = settings.issuer_path();
    if !issuer_path.is_empty() {
        paths.push(format!("/.well-known/{name}{issuer_path}"));
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
