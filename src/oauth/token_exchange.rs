//! RFC 8693 token exchange as authgate offers it: an MCP server presents the authgate access token
//! it received with a request and gets the user's access token at the upstream provider. Nothing
//! else is exchanged: no other token types, no delegation (`actor_token`), no choice of audience
//! or scope, which the upstream provider fixed at the login.

use super::request::Params;
use super::secrets::{Secret, kind};
use super::{ErrorCode, OAuthError};

pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3: the only token type authgate takes and issues.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// A token-exchange request (RFC 8693 §2.1) that asks for what authgate can give.
#[derive(Debug)]
pub struct TokenExchangeRequest {
    /// An authgate access token, not yet verified.
    pub subject_token: Secret<kind::SubjectToken>,
}

/// A parameter's value; empty counts as absent (RFC 6749 §3.1).
fn given<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params.get(name).filter(|v| !v.is_empty())
}

impl TokenExchangeRequest {
    /// RFC 8693 §2.2.2: a request authgate cannot serve is `invalid_request`, a target it will
    /// not issue for `invalid_target`, a scope `invalid_scope`.
    pub fn parse(params: &Params) -> Result<Self, OAuthError> {
        let subject_token = given(params, "subject_token")
            .ok_or_else(|| OAuthError::invalid_request("subject_token is required"))?;
        match given(params, "subject_token_type") {
            Some(ACCESS_TOKEN_TYPE) => {}
            Some(_) => {
                return Err(OAuthError::invalid_request(
                    "subject_token_type must be urn:ietf:params:oauth:token-type:access_token",
                ));
            }
            None => {
                return Err(OAuthError::invalid_request(
                    "subject_token_type is required",
                ));
            }
        }
        if given(params, "actor_token").is_some() || given(params, "actor_token_type").is_some() {
            return Err(OAuthError::invalid_request(
                "delegation (actor_token) is not supported",
            ));
        }
        if given(params, "requested_token_type").is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
            return Err(OAuthError::invalid_request(
                "only the upstream access token (urn:ietf:params:oauth:token-type:access_token) can be requested",
            ));
        }
        if given(params, "resource").is_some() || given(params, "audience").is_some() {
            return Err(OAuthError::new(
                ErrorCode::InvalidTarget,
                "the upstream access token is for the upstream provider's APIs; resource and audience cannot be chosen",
            ));
        }
        if given(params, "scope").is_some() {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                "the upstream access token's scope was fixed at the login",
            ));
        }
        Ok(Self {
            subject_token: Secret::new(subject_token),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<TokenExchangeRequest, OAuthError> {
        TokenExchangeRequest::parse(&Params::parse(body.as_bytes()).unwrap())
    }

    const OK: &str = "subject_token=eyJ.x.y&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token";

    #[test]
    fn accepts_an_access_token_for_the_upstream_access_token() {
        let r = parse(OK).unwrap();
        assert_eq!(r.subject_token.expose(), "eyJ.x.y");
        let with_type = format!(
            "{OK}&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"
        );
        assert!(parse(&with_type).is_ok());
        assert!(
            parse(&format!("{OK}&scope=&resource=")).is_ok(),
            "empty is absent"
        );
        assert!(!format!("{r:?}").contains("eyJ"));
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        let cases = [
            (
                "subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token",
                ErrorCode::InvalidRequest,
            ),
            ("subject_token=x", ErrorCode::InvalidRequest),
            (
                "subject_token=x&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token",
                ErrorCode::InvalidRequest,
            ),
            (
                &format!(
                    "{OK}&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Arefresh_token"
                ),
                ErrorCode::InvalidRequest,
            ),
            (&format!("{OK}&actor_token=y"), ErrorCode::InvalidRequest),
            (
                &format!(
                    "{OK}&actor_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"
                ),
                ErrorCode::InvalidRequest,
            ),
            (
                &format!("{OK}&resource=https%3A%2F%2Fapi.example"),
                ErrorCode::InvalidTarget,
            ),
            (&format!("{OK}&audience=github"), ErrorCode::InvalidTarget),
            (&format!("{OK}&scope=repo"), ErrorCode::InvalidScope),
        ];
        for (body, code) in cases {
            assert_eq!(parse(body).unwrap_err().code, code, "{body}");
        }
    }
}
