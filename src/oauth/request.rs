//! Requests as the RFCs define them, parsed once into types: form or query parameters (each at
//! most once, RFC 6749 §3.1 and §3.2), the authorization request, the token request by grant
//! type, and the client's credentials. Handlers never read parameters from string maps.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::assertion::{JWT_BEARER, peek_issuer};
use super::client::{GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN, TokenAuthMethod};
use super::id_jag;
use super::scope::ScopeSet;
use super::secrets::{Secret, kind};
use super::token_exchange::{GRANT_TOKEN_EXCHANGE, TokenExchangeRequest};
use super::{ErrorCode, OAuthError};

/// Why parameters could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamsError {
    Malformed,
    /// A parameter sent twice: which of the two a server reads is exactly what an attacker
    /// would like to choose.
    Repeated(String),
}

impl fmt::Display for ParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str("the request is not validly encoded"),
            Self::Repeated(k) => write!(f, "the parameter {k} appears more than once"),
        }
    }
}

impl From<ParamsError> for OAuthError {
    fn from(e: ParamsError) -> Self {
        OAuthError::invalid_request(e.to_string())
    }
}

/// `application/x-www-form-urlencoded` parameters, each present at most once. An empty value
/// counts as absent (RFC 6749 §3.1).
#[derive(Debug, Default, Clone)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    pub fn parse(encoded: &[u8]) -> Result<Self, ParamsError> {
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_bytes(encoded).map_err(|_| ParamsError::Malformed)?;
        let mut out = BTreeMap::new();
        for (k, v) in pairs {
            if out.contains_key(&k) {
                return Err(ParamsError::Repeated(k));
            }
            out.insert(k, v);
        }
        Ok(Self(out))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn owned(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    /// A parameter with a value: an empty one counts as absent.
    fn present(&self, name: &str) -> Option<String> {
        self.owned(name).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &str) -> Result<String, OAuthError> {
        self.owned(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("{name} is required")))
    }
}

/// An authorization request (RFC 6749 §4.1.1 with PKCE and RFC 8707), as sent: nothing in it is
/// trusted until the client and its redirect URI are.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: Option<String>,
    pub response_type: Option<String>,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub scope: ScopeSet,
    pub resource: Option<String>,
    pub prompt: ScopeSet,
    /// OpenID Connect's parameters (OIDC Core §3.1.2.1), read only for an `openid` request.
    pub nonce: Option<String>,
    pub max_age: Option<String>,
    pub id_token_hint: Option<String>,
}

impl AuthorizationRequest {
    /// `None`: the request does not say which client asks, so nobody can be answered but the
    /// person in the browser.
    pub fn parse(params: &Params) -> Option<Self> {
        Some(Self {
            client_id: params.owned("client_id")?,
            redirect_uri: params.owned("redirect_uri"),
            response_type: params.owned("response_type"),
            state: params.owned("state"),
            code_challenge: params.owned("code_challenge"),
            code_challenge_method: params.owned("code_challenge_method"),
            scope: ScopeSet::parse(params.get("scope").unwrap_or("")),
            resource: params.present("resource"),
            prompt: ScopeSet::parse(params.get("prompt").unwrap_or("")),
            nonce: params.present("nonce"),
            max_age: params.present("max_age"),
            id_token_hint: params.present("id_token_hint"),
        })
    }
}

/// A token request (RFC 6749 §4.1.3, §6), one variant per supported grant type.
#[derive(Debug)]
pub enum TokenRequest {
    AuthorizationCode {
        code: Secret<kind::Code>,
        redirect_uri: Option<String>,
        code_verifier: Option<String>,
        resource: Option<String>,
    },
    RefreshToken {
        refresh_token: Secret<kind::Refresh>,
        scope: Option<ScopeSet>,
        resource: Option<String>,
    },
    /// RFC 8693: an authgate access token for the user's upstream one.
    TokenExchange(TokenExchangeRequest),
    /// RFC 7523 §2.1 with an Identity Assertion JWT Authorization Grant as the `assertion`.
    JwtBearer {
        assertion: Secret<kind::IdentityAssertion>,
        scope: Option<ScopeSet>,
        resource: Option<String>,
    },
}

impl TokenRequest {
    pub fn parse(params: &Params) -> Result<Self, OAuthError> {
        let grant_type = params.required("grant_type")?;
        match grant_type.as_str() {
            GRANT_AUTHORIZATION_CODE => Ok(Self::AuthorizationCode {
                code: Secret::new(params.required("code")?),
                redirect_uri: params.owned("redirect_uri"),
                code_verifier: params.owned("code_verifier"),
                resource: params.owned("resource"),
            }),
            GRANT_REFRESH_TOKEN => Ok(Self::RefreshToken {
                refresh_token: Secret::new(params.required("refresh_token")?),
                scope: params.get("scope").map(ScopeSet::parse),
                resource: params.owned("resource"),
            }),
            GRANT_TOKEN_EXCHANGE => Ok(Self::TokenExchange(TokenExchangeRequest::parse(params)?)),
            id_jag::GRANT_TYPE => Ok(Self::JwtBearer {
                assertion: Secret::new(params.required("assertion")?),
                scope: params.get("scope").map(ScopeSet::parse),
                resource: params.owned("resource"),
            }),
            _ => Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "grant_type must be authorization_code, refresh_token or urn:ietf:params:oauth:grant-type:jwt-bearer",
            )),
        }
    }

    /// The wire name of the grant type (also the metrics label).
    pub fn grant_type(&self) -> &'static str {
        match self {
            Self::AuthorizationCode { .. } => GRANT_AUTHORIZATION_CODE,
            Self::RefreshToken { .. } => GRANT_REFRESH_TOKEN,
            Self::TokenExchange(_) => GRANT_TOKEN_EXCHANGE,
            Self::JwtBearer { .. } => id_jag::GRANT_TYPE,
        }
    }

    pub fn resource(&self) -> Option<&str> {
        match self {
            Self::AuthorizationCode { resource, .. }
            | Self::RefreshToken { resource, .. }
            | Self::JwtBearer { resource, .. } => resource.as_deref(),
            Self::TokenExchange(_) => None,
        }
    }
}

/// How a client says who it is at `/token` and `/revoke` (RFC 6749 §2.3, RFC 7521 §4.2): the
/// method it used and the secret or signed assertion it presented, not yet checked against
/// anything.
#[derive(Debug)]
pub struct ClientCredentials {
    pub client_id: String,
    pub method: TokenAuthMethod,
    pub secret: Option<Secret<kind::ClientSecret>>,
    pub assertion: Option<Secret<kind::ClientAssertion>>,
}

/// Why credentials could not even be read: the status and challenge differ (400 versus 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsError {
    /// 400 `invalid_request`: two methods at once, or contradictory client ids.
    Request(OAuthError),
    /// 401 `invalid_client`; `basic` when the client tried HTTP Basic (it gets a challenge).
    Client { description: String, basic: bool },
}

impl ClientCredentials {
    /// From the `Authorization` header's value (if any) and the body's parameters.
    pub fn parse(authorization: Option<&str>, params: &Params) -> Result<Self, CredentialsError> {
        let basic = match authorization.and_then(basic_credentials) {
            Some(Ok(pair)) => Some(pair),
            Some(Err(())) => {
                return Err(CredentialsError::Client {
                    description: "malformed Basic credentials".to_owned(),
                    basic: true,
                });
            }
            None => None,
        };
        let body_secret = params.get("client_secret");
        let body_id = params.get("client_id");
        let request = |why: &str| CredentialsError::Request(OAuthError::invalid_request(why));
        match (
            params.get("client_assertion"),
            params.get("client_assertion_type"),
        ) {
            (None, None) => {}
            (Some(assertion), Some(assertion_type)) => {
                if basic.is_some() || body_secret.is_some() {
                    return Err(request("use one client authentication method, not two"));
                }
                return Self::from_assertion(assertion, assertion_type, body_id);
            }
            _ => {
                return Err(request(
                    "client_assertion and client_assertion_type must be sent together",
                ));
            }
        }
        match (basic, body_id, body_secret) {
            (Some(_), _, Some(_)) => Err(request("use one client authentication method, not two")),
            (Some((id, _)), Some(body_id), _) if body_id != id => {
                Err(request("client_id does not match the Basic credentials"))
            }
            (Some((id, secret)), _, None) => Ok(Self {
                client_id: id,
                method: TokenAuthMethod::ClientSecretBasic,
                secret: Some(Secret::new(secret)),
                assertion: None,
            }),
            (None, Some(id), Some(secret)) => Ok(Self {
                client_id: id.to_owned(),
                method: TokenAuthMethod::ClientSecretPost,
                secret: Some(Secret::new(secret)),
                assertion: None,
            }),
            (None, Some(id), None) => Ok(Self {
                client_id: id.to_owned(),
                method: TokenAuthMethod::None,
                secret: None,
                assertion: None,
            }),
            (None, None, _) => Err(CredentialsError::Client {
                description: "client authentication is required".to_owned(),
                basic: false,
            }),
        }
    }

    /// A JWT client assertion (RFC 7523 §2.2). The client is the one its `iss` names (checked
    /// against `client_id` when that is sent too); its signature is verified later, with that
    /// client's keys.
    fn from_assertion(
        assertion: &str,
        assertion_type: &str,
        body_id: Option<&str>,
    ) -> Result<Self, CredentialsError> {
        let client = |why: &str| CredentialsError::Client {
            description: why.to_owned(),
            basic: false,
        };
        if assertion_type != JWT_BEARER {
            return Err(client(&format!(
                "client_assertion_type must be {JWT_BEARER}"
            )));
        }
        let issuer = peek_issuer(assertion)
            .ok_or_else(|| client("the client assertion is not a valid JWT"))?;
        if body_id.is_some_and(|id| id != issuer) {
            return Err(CredentialsError::Request(OAuthError::invalid_request(
                "client_id does not match the client assertion's issuer",
            )));
        }
        Ok(Self {
            client_id: issuer,
            method: TokenAuthMethod::PrivateKeyJwt,
            secret: None,
            assertion: Some(Secret::new(assertion)),
        })
    }

    pub fn used_basic(&self) -> bool {
        self.method == TokenAuthMethod::ClientSecretBasic
    }
}

/// `Some(Err)` for a Basic header that cannot be decoded; `None` for another scheme.
pub fn basic_credentials(value: &str) -> Option<Result<(String, String), ()>> {
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decode = || -> Option<(String, String)> {
        let raw = STANDARD.decode(rest.trim()).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (id, secret) = text.split_once(':')?;
        Some((form_decode(id)?, form_decode(secret)?))
    };
    Some(decode().ok_or(()))
}

/// Basic credentials are form-encoded before base64 (RFC 6749 §2.3.1).
fn form_decode(s: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&format!("v={s}")).ok()?;
    pairs.into_iter().next().map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(s: &str) -> Params {
        Params::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn repeated_parameters_are_refused() {
        assert_eq!(
            Params::parse(b"a=1&b=2&a=3").unwrap_err(),
            ParamsError::Repeated("a".into())
        );
        assert_eq!(params("a=1&b=").get("b"), Some(""));
    }

    #[test]
    fn token_requests_by_grant_type() {
        let r = TokenRequest::parse(&params(
            "grant_type=authorization_code&code=c&code_verifier=v&redirect_uri=https%3A%2F%2Fa%2Fcb",
        ))
        .unwrap();
        assert_eq!(r.grant_type(), "authorization_code");
        assert!(
            matches!(r, TokenRequest::AuthorizationCode { ref redirect_uri, .. } if redirect_uri.as_deref() == Some("https://a/cb"))
        );
        let r = TokenRequest::parse(&params(
            "grant_type=refresh_token&refresh_token=r&scope=mcp",
        ))
        .unwrap();
        assert!(matches!(
            r,
            TokenRequest::RefreshToken { scope: Some(_), .. }
        ));
        let r = TokenRequest::parse(&params(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=e30.e30.sig&resource=https%3A%2F%2Fa%2Fmcp",
        ))
        .unwrap();
        assert_eq!(r.grant_type(), id_jag::GRANT_TYPE);
        assert_eq!(r.resource(), Some("https://a/mcp"));
        assert!(
            !format!("{r:?}").contains("e30.e30.sig"),
            "the assertion is redacted"
        );
        for (body, code) in [
            ("code=c", ErrorCode::InvalidRequest),
            (
                "grant_type=password&username=a",
                ErrorCode::UnsupportedGrantType,
            ),
            ("grant_type=authorization_code", ErrorCode::InvalidRequest),
            ("grant_type=refresh_token", ErrorCode::InvalidRequest),
            (
                "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
                ErrorCode::InvalidRequest,
            ),
        ] {
            assert_eq!(
                TokenRequest::parse(&params(body)).unwrap_err().code,
                code,
                "{body}"
            );
        }
    }

    #[test]
    fn client_credentials() {
        let basic = format!("Basic {}", STANDARD.encode("agc_1:s%3Ae"));
        let c = ClientCredentials::parse(Some(&basic), &params("")).unwrap();
        assert_eq!(c.client_id, "agc_1");
        assert_eq!(c.secret.unwrap().expose(), "s:e");
        assert!(matches!(
            ClientCredentials::parse(Some(&basic), &params("client_secret=x")),
            Err(CredentialsError::Request(_))
        ));
        assert!(matches!(
            ClientCredentials::parse(Some(&basic), &params("client_id=other")),
            Err(CredentialsError::Request(_))
        ));
        assert!(matches!(
            ClientCredentials::parse(Some("Basic !!!"), &params("")),
            Err(CredentialsError::Client { basic: true, .. })
        ));
        assert!(matches!(
            ClientCredentials::parse(None, &params("")),
            Err(CredentialsError::Client { basic: false, .. })
        ));
        let c = ClientCredentials::parse(None, &params("client_id=a&client_secret=b")).unwrap();
        assert_eq!(c.method, TokenAuthMethod::ClientSecretPost);
        let c = ClientCredentials::parse(Some("Bearer x"), &params("client_id=a")).unwrap();
        assert_eq!(c.method, TokenAuthMethod::None);
    }

    #[test]
    fn client_assertions() {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwt = |iss: &str| {
            format!(
                "{}.{}.c2ln",
                URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
                URL_SAFE_NO_PAD.encode(format!(r#"{{"iss":"{iss}"}}"#))
            )
        };
        let form = |extra: &str| {
            params(&format!(
                "client_assertion_type={}&client_assertion={}{extra}",
                JWT_BEARER.replace(':', "%3A"),
                jwt("https://c.example/doc.json")
            ))
        };
        let c = ClientCredentials::parse(None, &form("")).unwrap();
        assert_eq!(c.client_id, "https://c.example/doc.json");
        assert_eq!(c.method, TokenAuthMethod::PrivateKeyJwt);
        assert!(!format!("{c:?}").contains(&jwt("https://c.example/doc.json")));
        let with_id = form("&client_id=https%3A%2F%2Fc.example%2Fdoc.json");
        assert!(ClientCredentials::parse(None, &with_id).is_ok());
        for (extra, basic) in [
            ("&client_id=other", None),
            ("&client_secret=s", None),
            ("", Some(format!("Basic {}", STANDARD.encode("a:b")))),
        ] {
            assert!(
                matches!(
                    ClientCredentials::parse(basic.as_deref(), &form(extra)),
                    Err(CredentialsError::Request(_))
                ),
                "{extra}"
            );
        }
        for body in [
            "client_assertion=x.y.z".to_owned(),
            format!("client_assertion_type={JWT_BEARER}"),
        ] {
            assert!(matches!(
                ClientCredentials::parse(None, &params(&body.replace(':', "%3A"))),
                Err(CredentialsError::Request(_))
            ));
        }
        let saml = params(
            "client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Asaml2-bearer&client_assertion=x",
        );
        let not_jwt = params(&format!(
            "client_assertion_type={}&client_assertion=garbage",
            JWT_BEARER.replace(':', "%3A")
        ));
        for p in [saml, not_jwt] {
            assert!(matches!(
                ClientCredentials::parse(None, &p),
                Err(CredentialsError::Client { basic: false, .. })
            ));
        }
    }
}
