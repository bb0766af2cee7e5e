//! What handlers take from a request before deciding anything: a form body as OAuth
//! parameters, a client's credentials, a bearer token, and whether a form post comes from our own
//! pages.

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};

use super::error::{ApiError, PageError};
use crate::config::Settings;
use crate::oauth::OAuthError;
use crate::oauth::request::{ClientCredentials, Params};

/// The OAuth endpoints take small forms only.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// Does the request declare this media type (parameters such as `charset` ignored)?
pub fn has_content_type(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(media_type))
}

/// A form-encoded body as OAuth parameters (each at most once), with the request's headers
/// (client authentication may be in `Authorization`).
pub struct OAuthForm {
    pub params: Params,
    pub headers: HeaderMap,
}

impl OAuthForm {
    pub fn credentials(&self) -> Result<ClientCredentials, ApiError> {
        let authorization = self
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        Ok(ClientCredentials::parse(authorization, &self.params)?)
    }
}

impl<S: Send + Sync> FromRequest<S> for OAuthForm {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        if !has_content_type(&parts.headers, "application/x-www-form-urlencoded") {
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
        Ok(Self {
            params: Params::parse(&bytes)?,
            headers: parts.headers,
        })
    }
}

/// Does a form POST come from our own pages? Browsers send `Origin` on POST; a foreign one is a
/// cross-site submission.
pub fn same_origin(settings: &Settings, headers: &HeaderMap) -> Result<(), PageError> {
    let same_site_fetch = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "same-origin");
    let ok = match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        // A strict referrer policy makes browsers send `null`; the fetch metadata still says
        // whether the form came from our own page.
        Some("null") => same_site_fetch,
        Some(origin) => origin == settings.public_url.origin().ascii_serialization(),
    };
    if ok {
        Ok(())
    } else {
        Err(PageError::cross_site())
    }
}

/// How a request presents a bearer token (RFC 6750 §2.1). Only the `Authorization` header is
/// read, never the query string or a form body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer<'a> {
    Absent,
    Token(&'a str),
    /// Another authentication scheme (`Basic ...`).
    OtherScheme,
    /// Several `Authorization` headers, or one that cannot be read as a bearer token.
    Malformed,
}

const MAX_BEARER_LEN: usize = 4096;

pub fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(first) = values.next() else {
        return Bearer::Absent;
    };
    if values.next().is_some() {
        return Bearer::Malformed;
    }
    let Ok(text) = first.to_str() else {
        return Bearer::Malformed;
    };
    let Some((scheme, token)) = text.split_once(' ') else {
        return Bearer::OtherScheme;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Bearer::OtherScheme;
    }
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_BEARER_LEN {
        return Bearer::Malformed;
    }
    Bearer::Token(token)
}
