//! Form bodies and client authentication for `/token` and `/revoke` (RFC 6749 §2.3, §3.2.1).

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::clients::{self, Client, ResolveError};
use super::error::{ApiError, oauth_error_response};
use crate::oauth::client::TokenAuthMethod;
use crate::oauth::secrets::SecretKind;
use crate::oauth::{ErrorCode, OAuthError};
use crate::state::AppState;

const MAX_FORM_BYTES: usize = 16 * 1024;

/// A form-encoded request body: each parameter at most once (RFC 6749 §3.2).
pub async fn read_form(
    headers: &HeaderMap,
    body: Body,
) -> Result<HashMap<String, String>, ApiError> {
    let is_form = super::has_content_type(headers, "application/x-www-form-urlencoded");
    if !is_form {
        return Err(ApiError::bad_request(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded",
        )));
    }
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            ApiError::OAuth(
                StatusCode::PAYLOAD_TOO_LARGE,
                OAuthError::invalid_request("the request is too large"),
            )
        })?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).map_err(|_| {
        ApiError::bad_request(OAuthError::invalid_request("the body is not a valid form"))
    })?;
    let mut out = HashMap::new();
    for (k, v) in pairs {
        if out.insert(k.clone(), v).is_some() {
            return Err(ApiError::bad_request(OAuthError::invalid_request(format!(
                "the parameter {k} appears more than once"
            ))));
        }
    }
    Ok(out)
}

/// 401 `invalid_client`, with a Basic challenge when Basic was tried (RFC 6749 §5.2).
#[derive(Debug)]
pub struct ClientAuthError {
    pub description: String,
    pub basic: bool,
}

impl IntoResponse for ClientAuthError {
    fn into_response(self) -> Response {
        let mut resp = oauth_error_response(
            StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidClient,
            &self.description,
        );
        if self.basic {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"authgate\", charset=\"UTF-8\""),
            );
        }
        resp
    }
}

pub enum AuthFailure {
    Client(ClientAuthError),
    Api(ApiError),
}

impl IntoResponse for AuthFailure {
    fn into_response(self) -> Response {
        match self {
            Self::Client(e) => e.into_response(),
            Self::Api(e) => e.into_response(),
        }
    }
}

pub fn basic_credentials(headers: &HeaderMap) -> Option<Result<(String, String), ()>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decode = || -> Option<(String, String)> {
        let raw = STANDARD.decode(rest.trim()).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (id, secret) = text.split_once(':')?;
        let id = form_decode(id)?;
        let secret = form_decode(secret)?;
        Some((id, secret))
    };
    Some(decode().ok_or(()))
}

/// Basic credentials are form-encoded before base64 (RFC 6749 §2.3.1).
fn form_decode(s: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&format!("v={s}")).ok()?;
    pairs.into_iter().next().map(|(_, v)| v)
}

/// Authenticates the client by its registered method. Metadata-document clients are public.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Client, AuthFailure> {
    let fail = |basic: bool, why: &str| {
        AuthFailure::Client(ClientAuthError {
            description: why.to_owned(),
            basic,
        })
    };
    let basic = match basic_credentials(headers) {
        Some(Ok(c)) => Some(c),
        Some(Err(())) => return Err(fail(true, "malformed Basic credentials")),
        None => None,
    };
    let body_secret = params.get("client_secret");
    if basic.is_some() && body_secret.is_some() {
        return Err(AuthFailure::Api(ApiError::bad_request(
            OAuthError::invalid_request("use one client authentication method, not two"),
        )));
    }
    let (client_id, presented_method, secret) = match (&basic, params.get("client_id")) {
        (Some((id, _)), Some(body_id)) if body_id != id => {
            return Err(AuthFailure::Api(ApiError::bad_request(
                OAuthError::invalid_request("client_id does not match the Basic credentials"),
            )));
        }
        (Some((id, s)), _) => (
            id.clone(),
            TokenAuthMethod::ClientSecretBasic,
            Some(s.clone()),
        ),
        (None, Some(id)) => match body_secret {
            Some(s) => (
                id.clone(),
                TokenAuthMethod::ClientSecretPost,
                Some(s.clone()),
            ),
            None => (id.clone(), TokenAuthMethod::None, None),
        },
        (None, None) => return Err(fail(false, "client authentication is required")),
    };
    let used_basic = presented_method == TokenAuthMethod::ClientSecretBasic;
    let client = match clients::resolve(state, &client_id).await {
        Ok(c) => c,
        Err(ResolveError::Unknown(_)) => {
            return Err(fail(used_basic, "unknown client; register again"));
        }
        Err(ResolveError::Store(e)) => return Err(AuthFailure::Api(ApiError::Store(e))),
    };
    let registered = client.metadata.token_endpoint_auth_method;
    if registered != presented_method {
        return Err(fail(
            used_basic,
            &format!("this client must authenticate with {}", registered.as_str()),
        ));
    }
    if registered.uses_secret() {
        let ok = match (&client.secret_hash, &secret) {
            (Some(hash), Some(s)) => hash.verify(SecretKind::ClientSecret, s),
            _ => false,
        };
        if !ok {
            return Err(fail(used_basic, "client authentication failed"));
        }
        if client.secret_expires_at != 0 && client.secret_expires_at <= state.clock.now() {
            return Err(fail(
                used_basic,
                "the client secret has expired; register again",
            ));
        }
    }
    Ok(client)
}
