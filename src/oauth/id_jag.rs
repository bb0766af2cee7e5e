//! The Identity Assertion JWT Authorization Grant (ID-JAG, draft-ietf-oauth-identity-assertion-
//! authz-grant), as MCP's enterprise-managed authorization extension (`io.modelcontextprotocol/
//! auth/ema`, SEP-990) profiles it: a JWT that an enterprise identity provider signs for one
//! client and one user, which the client presents with the RFC 7523 jwt-bearer grant. The rules
//! it must pass, and how its `resource` and `scope` become the grant's. Pure: the issuer's keys
//! are given, `now` is an argument, and remembering used `jti`s is the caller's job.

use std::fmt;

use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use serde_json::Value;

use super::assertion::{
    Audience, LEEWAY, MAX_JTI_LEN, MAX_LIFETIME, SignatureError, numeric_date, verify_signature,
};
use super::resource::{self, canonical};
use super::scope::ScopeSet;
use super::{ErrorCode, OAuthError};

/// `grant_type` of the JWT bearer grant (RFC 7523 §2.1).
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// What `authorization_grant_profiles_supported` lists for ID-JAGs (the draft's §7.2).
pub const GRANT_PROFILE: &str = "urn:ietf:params:oauth:grant-profile:id-jag";
/// The JWT `typ` of an ID-JAG (RFC 8725 §3.11: a typed JWT cannot pass for another kind, such
/// as an ID token the same provider signed with the same key).
pub const TYP: &str = "oauth-id-jag+jwt";

/// What the assertion must say.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The trusted issuer whose keys verify it: its `iss`.
    pub issuer: &'a str,
    /// This authorization server's issuer: its `aud`.
    pub audience: &'a str,
    /// The authenticated client: its `client_id` claim.
    pub client_id: &'a str,
    pub now: i64,
}

/// A valid ID-JAG: who the person is, what the identity provider allowed, and its `jti`, to be
/// used once, remembered until `remember_until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdJag {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    /// The `resource` claim, one or several URIs; empty when absent.
    pub resources: Vec<String>,
    /// The `scope` claim; `None` when absent.
    pub scope: Option<ScopeSet>,
    pub jti: String,
    pub remember_until: i64,
}

/// Why an ID-JAG is refused (all `invalid_grant`, RFC 7521 §5.2). The text is for the client and
/// never quotes the assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdJagError {
    Malformed,
    WrongType,
    UnsupportedAlg,
    /// No key of the issuer's set has the assertion's `kid` (the issuer may have rotated).
    UnknownKey,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    WrongClient,
    MissingSubject,
    MissingExpiry,
    Expired,
    TooLong,
    MissingIssuedAt,
    NotYetValid,
    MissingJti,
}

impl fmt::Display for IdJagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self {
            Self::Malformed => "the assertion is not a valid JWT",
            Self::WrongType => "the assertion's typ must be oauth-id-jag+jwt",
            Self::UnsupportedAlg => "the assertion's alg is not supported",
            Self::UnknownKey => "no key of the issuer's JWK Set has the assertion's kid",
            Self::BadSignature => {
                "the assertion's signature does not verify with the issuer's keys"
            }
            Self::WrongIssuer => "the assertion's iss is not the issuer whose keys verified it",
            Self::WrongAudience => "the assertion's aud must be this authorization server's issuer",
            Self::WrongClient => "the assertion's client_id is not the authenticated client",
            Self::MissingSubject => "the assertion has no sub",
            Self::MissingExpiry => "the assertion has no exp",
            Self::Expired => "the assertion has expired",
            Self::TooLong => "the assertion is valid for too long (at most one hour)",
            Self::MissingIssuedAt => "the assertion has no iat",
            Self::NotYetValid => "the assertion is not valid yet",
            Self::MissingJti => "the assertion has no usable jti",
        };
        f.write_str(why)
    }
}

impl std::error::Error for IdJagError {}

impl From<SignatureError> for IdJagError {
    fn from(e: SignatureError) -> Self {
        match e {
            SignatureError::Malformed => Self::Malformed,
            // No algorithm is required of an issuer, so WrongAlg cannot happen; refusing is right
            // if it ever did.
            SignatureError::UnsupportedAlg | SignatureError::WrongAlg => Self::UnsupportedAlg,
            SignatureError::UnknownKey => Self::UnknownKey,
            SignatureError::BadSignature => Self::BadSignature,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    client_id: Option<String>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    jti: Option<String>,
    resource: Option<OneOrMany>,
    scope: Option<String>,
    email: Option<String>,
    email_verified: Option<Value>,
}

/// Is `typ` the ID-JAG media type? Compared case-insensitively, with or without the
/// `application/` prefix that RFC 7515 §4.1.9 lets senders omit.
fn is_id_jag_type(typ: Option<&str>) -> bool {
    typ.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t.strip_prefix("application/").unwrap_or(&t) == TYP
    })
}

/// `email_verified` as a boolean; some providers send the strings `"true"` and `"false"`.
fn flag(v: Option<&Value>) -> Option<bool> {
    match v {
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::String(s)) if s == "true" => Some(true),
        Some(Value::String(s)) if s == "false" => Some(false),
        _ => None,
    }
}

/// Verifies an ID-JAG against its issuer's keys and `expected` (the draft's §4.4.1 with RFC 7521
/// §5.2, and the extension's §7.4: a typed, signed, short-lived JWT for this server and this
/// client).
pub fn verify(
    assertion: &str,
    keys: &JwkSet,
    expected: &Expected<'_>,
) -> Result<IdJag, IdJagError> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| IdJagError::Malformed)?;
    if !is_id_jag_type(header.typ.as_deref()) {
        return Err(IdJagError::WrongType);
    }
    let (_, claims) = verify_signature::<Value>(assertion, keys, None)?;
    let claims: Claims = serde_json::from_value(claims).map_err(|_| IdJagError::Malformed)?;
    check_claims(claims, expected)
}

fn check_claims(claims: Claims, expected: &Expected<'_>) -> Result<IdJag, IdJagError> {
    if claims.iss.as_deref() != Some(expected.issuer) {
        return Err(IdJagError::WrongIssuer);
    }
    if !claims
        .aud
        .as_ref()
        .is_some_and(|aud| aud.contains(expected.audience))
    {
        return Err(IdJagError::WrongAudience);
    }
    if claims.client_id.as_deref() != Some(expected.client_id) {
        return Err(IdJagError::WrongClient);
    }
    let subject = claims
        .sub
        .filter(|s| !s.is_empty())
        .ok_or(IdJagError::MissingSubject)?;
    let date = |v: Option<&Value>| numeric_date(v).map_err(|_| IdJagError::Malformed);
    let now = expected.now;
    let exp = date(claims.exp.as_ref())?.ok_or(IdJagError::MissingExpiry)?;
    if now >= exp.saturating_add(LEEWAY) {
        return Err(IdJagError::Expired);
    }
    if exp.saturating_sub(now) > MAX_LIFETIME {
        return Err(IdJagError::TooLong);
    }
    let iat = date(claims.iat.as_ref())?.ok_or(IdJagError::MissingIssuedAt)?;
    for not_before in [Some(iat), date(claims.nbf.as_ref())?]
        .into_iter()
        .flatten()
    {
        if not_before > now.saturating_add(LEEWAY) {
            return Err(IdJagError::NotYetValid);
        }
    }
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_LEN)
        .ok_or(IdJagError::MissingJti)?;
    let resources = match claims.resource {
        None => Vec::new(),
        Some(OneOrMany::One(r)) => vec![r],
        Some(OneOrMany::Many(all)) => all,
    };
    Ok(IdJag {
        issuer: expected.issuer.to_owned(),
        subject,
        email: claims.email.filter(|e| !e.is_empty()),
        email_verified: flag(claims.email_verified.as_ref()),
        resources,
        scope: claims.scope.as_deref().map(ScopeSet::parse),
        jti,
        remember_until: exp.saturating_add(LEEWAY),
    })
}

/// The protected resource the access token is for. `served` are authgate's resource URIs, the
/// default first; `allowed` those the issuer may grant access to.
///
/// The assertion's `resource` claim binds it (the extension's §7.6: a value authgate does not
/// serve is refused, `invalid_grant`); the request's `resource` parameter (RFC 8707) then picks
/// one of the claimed ones, and must be served (`invalid_target`). Without the claim the
/// parameter, or the default, decides. Either way the issuer must be allowed that resource.
pub fn select_resource(
    claimed: &[String],
    requested: Option<&str>,
    served: &[String],
    allowed: &[String],
) -> Result<String, OAuthError> {
    let invalid_grant = |why: &str| OAuthError::new(ErrorCode::InvalidGrant, why);
    let requested = match requested.filter(|r| !r.is_empty()) {
        Some(r) => Some(resource::select(Some(r), served)?),
        None => None,
    };
    let chosen = if claimed.is_empty() {
        match requested {
            Some(r) => r,
            None => resource::select(None, served)?,
        }
    } else {
        let same = |a: &str, b: &str| canonical(a).is_some_and(|x| canonical(b) == Some(x));
        let bound: Vec<&String> = served
            .iter()
            .filter(|s| claimed.iter().any(|c| same(c, s)))
            .collect();
        match (bound.as_slice(), requested) {
            ([], _) => {
                return Err(invalid_grant(
                    "the assertion's resource is not served by this authorization server",
                ));
            }
            (bound, Some(r)) => {
                if !bound.contains(&&r) {
                    return Err(OAuthError::new(
                        ErrorCode::InvalidTarget,
                        "the requested resource is not the assertion's resource",
                    ));
                }
                r
            }
            ([only], None) => (*only).clone(),
            (_, None) => {
                return Err(OAuthError::new(
                    ErrorCode::InvalidTarget,
                    "the assertion names several resources: send resource to choose one",
                ));
            }
        }
    };
    if !allowed.contains(&chosen) {
        return Err(invalid_grant(
            "this issuer may not grant access to the requested resource",
        ));
    }
    Ok(chosen)
}

/// The scope granted: what the identity provider allowed (the `scope` claim; without it, all the
/// resource offers), narrowed to the resource's scopes, then to what the request asks for when
/// it asks (the extension's §7.2.1: the intersection). An assertion that allows nothing the
/// resource offers is refused (`invalid_grant`, §7.6.2); a request for nothing it allows is
/// `invalid_scope`.
pub fn grant_scope(
    claimed: Option<&ScopeSet>,
    requested: Option<&ScopeSet>,
    offered: &ScopeSet,
) -> Result<ScopeSet, OAuthError> {
    let allowed = match claimed {
        Some(c) => {
            let narrowed = c.narrow_to(offered);
            if narrowed.is_empty() {
                return Err(OAuthError::new(
                    ErrorCode::InvalidGrant,
                    "none of the assertion's scopes is offered for this resource",
                ));
            }
            narrowed
        }
        None => offered.clone(),
    };
    match requested.filter(|r| !r.is_empty()) {
        Some(r) => {
            let narrowed = r.narrow_to(&allowed);
            if narrowed.is_empty() {
                return Err(OAuthError::new(
                    ErrorCode::InvalidScope,
                    "none of the requested scopes is allowed by the assertion",
                ));
            }
            Ok(narrowed)
        }
        None => Ok(allowed),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::super::assertion::parse_key_set;
    use super::super::assertion::tests::{TestKey, ec_key, rsa_key};
    use super::*;

    const IDP: &str = "https://acme.idp.example";
    const AS: &str = "https://mcp.example.com";
    const CLIENT: &str = "agc_enterprise";
    const NOW: i64 = 1_790_000_000;

    fn claims() -> Value {
        json!({
            "iss": IDP, "sub": "U019488227", "aud": AS, "client_id": CLIENT,
            "exp": NOW + 300, "iat": NOW, "jti": "9e43f81b64a33f20116179",
            "resource": "https://mcp.example.com/mcp", "scope": "mcp",
            "email": "ann@example.com", "email_verified": true,
        })
    }

    fn expected() -> Expected<'static> {
        Expected {
            issuer: IDP,
            audience: AS,
            client_id: CLIENT,
            now: NOW,
        }
    }

    fn sign(key: &TestKey, typ: Option<&str>, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(key.alg);
        header.typ = typ.map(str::to_owned);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
    }

    fn set(keys: &[&TestKey]) -> JwkSet {
        parse_key_set(&json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}))
            .unwrap()
    }

    #[test]
    fn a_valid_id_jag_verifies() {
        let (rsa, ec) = (rsa_key("r1"), ec_key("e1"));
        let keys = set(&[&rsa, &ec]);
        let got = verify(
            &sign(&rsa, Some(TYP), Some("r1"), &claims()),
            &keys,
            &expected(),
        )
        .unwrap();
        assert_eq!(
            got,
            IdJag {
                issuer: IDP.into(),
                subject: "U019488227".into(),
                email: Some("ann@example.com".into()),
                email_verified: Some(true),
                resources: vec!["https://mcp.example.com/mcp".into()],
                scope: Some(ScopeSet::parse("mcp")),
                jti: "9e43f81b64a33f20116179".into(),
                remember_until: NOW + 300 + LEEWAY,
            }
        );
        for typ in ["application/oauth-id-jag+jwt", "OAUTH-ID-JAG+JWT"] {
            assert!(
                verify(
                    &sign(&ec, Some(typ), Some("e1"), &claims()),
                    &keys,
                    &expected()
                )
                .is_ok(),
                "{typ}"
            );
        }
        let mut c = claims();
        c["aud"] = json!(["https://other.example", AS]);
        c["resource"] = json!(["https://a.example/mcp", "https://mcp.example.com/mcp"]);
        c["email_verified"] = json!("false");
        c.as_object_mut().unwrap().remove("scope");
        let got = verify(&sign(&ec, Some(TYP), None, &c), &keys, &expected()).unwrap();
        assert_eq!(got.resources.len(), 2);
        assert_eq!(got.scope, None);
        assert_eq!(got.email_verified, Some(false));
    }

    #[test]
    fn claims_are_checked() {
        let key = rsa_key("r1");
        let keys = set(&[&key]);
        let cases: Vec<(Value, IdJagError)> = vec![
            (
                json!({"iss": "https://evil.example"}),
                IdJagError::WrongIssuer,
            ),
            (json!({"iss": null}), IdJagError::WrongIssuer),
            (
                json!({"aud": "https://mcp.example.com/token"}),
                IdJagError::WrongAudience,
            ),
            (
                json!({"aud": "https://mcp.example.com/"}),
                IdJagError::WrongAudience,
            ),
            (json!({"aud": null}), IdJagError::WrongAudience),
            (json!({"client_id": "agc_other"}), IdJagError::WrongClient),
            (json!({"client_id": null}), IdJagError::WrongClient),
            (json!({"sub": null}), IdJagError::MissingSubject),
            (json!({"sub": ""}), IdJagError::MissingSubject),
            (json!({"exp": null}), IdJagError::MissingExpiry),
            (json!({"exp": NOW - LEEWAY}), IdJagError::Expired),
            (json!({"exp": NOW + MAX_LIFETIME + 1}), IdJagError::TooLong),
            (json!({"iat": null}), IdJagError::MissingIssuedAt),
            (json!({"iat": NOW + LEEWAY + 1}), IdJagError::NotYetValid),
            (json!({"nbf": NOW + LEEWAY + 1}), IdJagError::NotYetValid),
            (json!({"jti": null}), IdJagError::MissingJti),
            (json!({"jti": ""}), IdJagError::MissingJti),
            (
                json!({"jti": "j".repeat(MAX_JTI_LEN + 1)}),
                IdJagError::MissingJti,
            ),
            (json!({"sub": 42}), IdJagError::Malformed),
            (json!({"resource": {"uri": "x"}}), IdJagError::Malformed),
            (json!({"exp": "soon"}), IdJagError::Malformed),
        ];
        for (change, want) in cases {
            let mut c = claims();
            for (k, v) in change.as_object().unwrap() {
                c[k] = v.clone();
            }
            let got = verify(&sign(&key, Some(TYP), Some("r1"), &c), &keys, &expected());
            assert_eq!(got, Err(want), "{change}");
        }
        // Within the leeway, a slightly slow clock is tolerated.
        let mut c = claims();
        c["exp"] = json!(NOW - LEEWAY + 1);
        c["iat"] = json!(NOW + LEEWAY);
        assert!(verify(&sign(&key, Some(TYP), Some("r1"), &c), &keys, &expected()).is_ok());
    }

    #[test]
    fn type_signature_and_algorithm_are_checked() {
        let (key, impostor) = (rsa_key("r1"), rsa_key("r1"));
        let keys = set(&[&key]);
        for typ in [
            None,
            Some("JWT"),
            Some("at+jwt"),
            Some("id-jag+jwt"),
            Some("oauth-id-jag+jwt2"),
        ] {
            assert_eq!(
                verify(&sign(&key, typ, Some("r1"), &claims()), &keys, &expected()),
                Err(IdJagError::WrongType),
                "{typ:?}"
            );
        }
        assert_eq!(
            verify(
                &sign(&impostor, Some(TYP), Some("r1"), &claims()),
                &keys,
                &expected()
            ),
            Err(IdJagError::BadSignature)
        );
        assert_eq!(
            verify(
                &sign(&key, Some(TYP), Some("r2"), &claims()),
                &keys,
                &expected()
            ),
            Err(IdJagError::UnknownKey)
        );
        // HS256 keyed with the public modulus: the algorithm-confusion forgery.
        let mut hs = Header::new(Algorithm::HS256);
        hs.typ = Some(TYP.into());
        let secret = key.jwk["n"].as_str().unwrap().as_bytes();
        let forged =
            jsonwebtoken::encode(&hs, &claims(), &EncodingKey::from_secret(secret)).unwrap();
        assert_eq!(
            verify(&forged, &keys, &expected()),
            Err(IdJagError::UnsupportedAlg)
        );
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": TYP})),
            b64(&claims())
        );
        assert!(verify(&none, &keys, &expected()).is_err());
        assert_eq!(
            verify("not.a.jwt", &keys, &expected()),
            Err(IdJagError::Malformed)
        );
    }

    const MCP: &str = "https://mcp.example.com/mcp";
    const GH: &str = "https://mcp.example.com/github/mcp";

    fn served() -> Vec<String> {
        vec![MCP.into(), GH.into()]
    }

    #[test]
    fn the_resource_is_bound_by_the_claim_and_picked_by_the_request() {
        let all = served();
        let only_mcp = vec![MCP.to_owned()];
        let pick = |claimed: &[&str], requested: Option<&str>, allowed: &[String]| {
            let claimed: Vec<String> = claimed.iter().map(|s| (*s).to_owned()).collect();
            select_resource(&claimed, requested, &all, allowed)
        };
        assert_eq!(pick(&[MCP], None, &all).unwrap(), MCP);
        assert_eq!(
            pick(&["https://MCP.example.com/mcp/"], Some(MCP), &all).unwrap(),
            MCP
        );
        assert_eq!(pick(&[], None, &all).unwrap(), MCP, "the default");
        assert_eq!(pick(&[], Some(GH), &all).unwrap(), GH);
        assert_eq!(pick(&[MCP, GH], Some(GH), &all).unwrap(), GH);
        assert_eq!(
            pick(&[MCP, "https://elsewhere.example/mcp"], None, &all).unwrap(),
            MCP
        );
        let code = |r: Result<String, OAuthError>| r.unwrap_err().code;
        assert_eq!(
            code(pick(&["https://elsewhere.example/mcp"], None, &all)),
            ErrorCode::InvalidGrant
        );
        assert_eq!(
            code(pick(&["https://mcp.example.com"], None, &all)),
            ErrorCode::InvalidGrant,
            "no origin leniency in the claim"
        );
        assert_eq!(
            code(pick(&[GH], None, &only_mcp)),
            ErrorCode::InvalidGrant,
            "not allowed for the issuer"
        );
        assert_eq!(
            code(pick(&[], Some(GH), &only_mcp)),
            ErrorCode::InvalidGrant
        );
        assert_eq!(code(pick(&[MCP], Some(GH), &all)), ErrorCode::InvalidTarget);
        assert_eq!(
            code(pick(&[MCP], Some("https://elsewhere.example/mcp"), &all)),
            ErrorCode::InvalidTarget
        );
        assert_eq!(
            code(pick(&[], Some("https://elsewhere.example/mcp"), &all)),
            ErrorCode::InvalidTarget
        );
        assert_eq!(code(pick(&[MCP, GH], None, &all)), ErrorCode::InvalidTarget);
    }

    #[test]
    fn the_scope_is_the_intersection() {
        let offered = ScopeSet::parse("mcp read write");
        let s = |v: &str| ScopeSet::parse(v);
        let grant = |c: Option<&str>, r: Option<&str>| {
            grant_scope(c.map(s).as_ref(), r.map(s).as_ref(), &offered)
        };
        assert_eq!(grant(None, None).unwrap(), offered);
        assert_eq!(grant(Some("mcp read admin"), None).unwrap(), s("mcp read"));
        assert_eq!(
            grant(Some("mcp read"), Some("read write")).unwrap(),
            s("read")
        );
        assert_eq!(grant(None, Some("write other")).unwrap(), s("write"));
        assert_eq!(grant(Some("mcp"), Some("")).unwrap(), s("mcp"));
        assert_eq!(
            grant(Some("admin"), None).unwrap_err().code,
            ErrorCode::InvalidGrant
        );
        assert_eq!(
            grant(Some(""), None).unwrap_err().code,
            ErrorCode::InvalidGrant
        );
        assert_eq!(
            grant(Some("mcp"), Some("write")).unwrap_err().code,
            ErrorCode::InvalidScope
        );
    }
}
