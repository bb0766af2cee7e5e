//! OpenID Connect on top of the OAuth rules, for clients that ask for it with the `openid`
//! scope (OIDC Core 1.0): which identity scopes exist, how they join a resource's scopes, the
//! OpenID request parameters (`nonce`, `max_age`, `prompt=login`), and which claims about the
//! person a scope releases (in the ID token and at the UserInfo endpoint alike).
//!
//! A request without `openid` is plain OAuth: none of this applies to it, and its scopes are
//! decided exactly as before.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::OAuthError;
use super::scope::ScopeSet;
use crate::clock::Timestamp;

pub const OPENID: &str = "openid";
pub const EMAIL: &str = "email";

/// The identity scopes authgate can honour. `profile` is not among them: the upstream login
/// yields no name or picture to fill it with, and ChatGPT asks for every advertised scope.
pub const IDENTITY_SCOPES: &[&str] = &[OPENID, EMAIL];

/// The claims an ID token may carry, as advertised in `claims_supported`.
pub const CLAIMS_SUPPORTED: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    "email",
    "email_verified",
];

/// The longest `nonce` kept: it is stored and echoed in the ID token, and real clients send 32
/// to 64 characters.
pub const MAX_NONCE_LEN: usize = 512;

pub fn identity_scopes() -> ScopeSet {
    ScopeSet::from_list(IDENTITY_SCOPES.iter().copied())
}

/// Every scope offered: the resources' and, for OpenID clients, the identity scopes.
pub fn offered_scopes(resource_scopes: &ScopeSet) -> ScopeSet {
    ScopeSet::from_list(
        resource_scopes
            .iter()
            .chain(IDENTITY_SCOPES.iter().copied())
            .map(str::to_owned),
    )
}

/// The scope an authorization request is granted for a resource: the resource's scopes it asked
/// for (all of them if it named none, since unknown scopes are narrowed away, not refused), plus
/// the identity scopes it asked for when it asked for `openid`. Without `openid`, `email` means
/// nothing here and is dropped like any other unknown scope.
pub fn granted_scope(
    requested: &ScopeSet,
    resource_scopes: &ScopeSet,
    default: &ScopeSet,
) -> ScopeSet {
    let resource = requested.narrow_to(resource_scopes);
    let resource = if resource.is_empty() {
        default.clone()
    } else {
        resource
    };
    if !requested.contains(OPENID) {
        return resource;
    }
    let identity = requested.narrow_to(&identity_scopes());
    ScopeSet::from_list(resource.iter().chain(identity.iter()).map(str::to_owned))
}

/// The OpenID parameters of an authorization request, checked (OIDC Core §3.1.2.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenIdRequest {
    /// Echoed in the ID token, so the client can bind it to its request.
    pub nonce: Option<String>,
    /// The oldest login that may answer: `max_age` seconds ago, or the request's own time for
    /// `prompt=login`.
    pub login_not_before: Option<Timestamp>,
}

impl OpenIdRequest {
    pub fn parse(
        nonce: Option<&str>,
        max_age: Option<&str>,
        prompt_login: bool,
        now: Timestamp,
    ) -> Result<Self, OAuthError> {
        if let Some(n) = nonce {
            if n.chars().count() > MAX_NONCE_LEN {
                return Err(OAuthError::invalid_request(format!(
                    "nonce must be at most {MAX_NONCE_LEN} characters"
                )));
            }
            // It is stored and signed into a token: no NUL (PostgreSQL text cannot hold it) and
            // nothing else that is not text.
            if n.chars().any(char::is_control) {
                return Err(OAuthError::invalid_request(
                    "nonce must not contain control characters",
                ));
            }
        }
        let max_age =
            match max_age {
                None => None,
                Some(raw) => Some(raw.parse::<u64>().map_err(|_| {
                    OAuthError::invalid_request("max_age must be a number of seconds")
                })?),
            };
        let by_age = max_age.map(|s| now.saturating_sub(i64::try_from(s).unwrap_or(i64::MAX)));
        let by_prompt = prompt_login.then_some(now);
        Ok(Self {
            nonce: nonce.filter(|n| !n.is_empty()).map(str::to_owned),
            login_not_before: by_age.max(by_prompt),
        })
    }
}

/// What a scope releases about the person: `sub` always; `email` and `email_verified` only with
/// the `email` scope and an address. An address nobody vouched for is `email_verified: false`:
/// authgate says only what the upstream provider (or the development login) asserted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserClaims {
    pub sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
}

pub fn user_claims(
    subject: &str,
    email: Option<&str>,
    email_verified: Option<bool>,
    scope: &ScopeSet,
) -> UserClaims {
    let email = email.filter(|_| scope.contains(EMAIL));
    UserClaims {
        sub: subject.to_owned(),
        email_verified: email.map(|_| email_verified == Some(true)),
        email: email.map(str::to_owned),
    }
}

/// `at_hash` (OIDC Core §3.1.3.6): the left half of the access token's SHA-256 (the hash of
/// ES256), base64url. It ties the ID token to the access token issued with it.
pub fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = 1_790_000_000;

    fn granted(requested: &str, resource: &str) -> String {
        granted_scope(
            &ScopeSet::parse(requested),
            &ScopeSet::parse(resource),
            &ScopeSet::parse(resource),
        )
        .to_string()
    }

    #[test]
    fn identity_scopes_join_only_with_openid() {
        assert_eq!(granted("mcp", "mcp"), "mcp");
        assert_eq!(granted("", "mcp"), "mcp");
        assert_eq!(
            granted("email claudeai", "mcp"),
            "mcp",
            "email without openid is an unknown scope, as before"
        );
        assert_eq!(granted("openid email profile", "mcp"), "email mcp openid");
        assert_eq!(granted("openid", "mcp admin"), "admin mcp openid");
        assert_eq!(granted("openid admin", "mcp admin"), "admin openid");
        assert_eq!(
            granted("email mcp", "mcp email"),
            "email mcp",
            "a resource's own scope named email stays a resource scope"
        );
        assert_eq!(
            offered_scopes(&ScopeSet::parse("mcp")).to_string(),
            "email mcp openid"
        );
    }

    #[test]
    fn openid_parameters() {
        let p = OpenIdRequest::parse(Some("n-1"), None, false, NOW).unwrap();
        assert_eq!(p.nonce.as_deref(), Some("n-1"));
        assert_eq!(p.login_not_before, None);
        assert_eq!(
            OpenIdRequest::parse(None, Some("300"), false, NOW)
                .unwrap()
                .login_not_before,
            Some(NOW - 300)
        );
        assert_eq!(
            OpenIdRequest::parse(None, Some("0"), false, NOW)
                .unwrap()
                .login_not_before,
            Some(NOW)
        );
        assert_eq!(
            OpenIdRequest::parse(None, Some("300"), true, NOW)
                .unwrap()
                .login_not_before,
            Some(NOW),
            "prompt=login is the stricter of the two"
        );
        assert!(
            OpenIdRequest::parse(None, Some("99999999999999"), false, NOW).is_ok(),
            "a very long max_age is no limit, not an error"
        );
        for bad in ["-1", "1.5", "x", ""] {
            assert!(
                OpenIdRequest::parse(None, Some(bad), false, NOW).is_err(),
                "{bad}"
            );
        }
        let long = "n".repeat(MAX_NONCE_LEN + 1);
        assert!(OpenIdRequest::parse(Some(&long), None, false, NOW).is_err());
        let longest = "é".repeat(MAX_NONCE_LEN);
        assert!(
            OpenIdRequest::parse(Some(&longest), None, false, NOW).is_ok(),
            "characters, not bytes"
        );
        for bad in ["a\0b", "a\nb", "\u{7f}"] {
            assert!(
                OpenIdRequest::parse(Some(bad), None, false, NOW).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn claims_follow_the_scope() {
        let with_email = ScopeSet::parse("openid email mcp");
        let c = user_claims("ag_1", Some("ann@example.com"), Some(true), &with_email);
        assert_eq!(c.email.as_deref(), Some("ann@example.com"));
        assert_eq!(c.email_verified, Some(true));
        let unverified = user_claims("ag_1", Some("ann@example.com"), None, &with_email);
        assert_eq!(
            unverified.email_verified,
            Some(false),
            "nobody vouched for it"
        );
        let no_email = user_claims(
            "ag_1",
            Some("ann@example.com"),
            Some(true),
            &ScopeSet::parse("openid mcp"),
        );
        assert_eq!((&no_email.email, no_email.email_verified), (&None, None));
        let no_address = user_claims("ag_1", None, Some(true), &with_email);
        assert_eq!(no_address.email_verified, None);
        assert_eq!(
            serde_json::to_value(&no_email).unwrap(),
            serde_json::json!({"sub": "ag_1"})
        );
    }

    #[test]
    fn at_hash_of_oidc_core_example() {
        // OIDC Core, Appendix A.3 (an RS256 example; SHA-256 is also ES256's hash).
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }
}
