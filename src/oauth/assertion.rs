//! Client authentication by a signed JWT (`private_key_jwt`, RFC 7523 §2.2 and §3, RFC 7521
//! §4.2): the client's public keys as it publishes them (`jwks`, or the set behind `jwks_uri`),
//! and the rules an assertion must pass. Pure: the keys are given, `now` is an argument, and
//! remembering which assertions were already used is the caller's job.

use std::fmt;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// `client_assertion_type` of a JWT client assertion.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The signature algorithms accepted, as advertised in `*_auth_signing_alg_values_supported`.
/// Asymmetric only: `none` and the HMAC family would let anyone who knows the public key (or
/// nothing at all) sign for the client.
pub const SIGNING_ALGS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Clocks differ: this much skew is allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY: i64 = 60;
/// The longest lifetime (`exp` from now) accepted. Every used `jti` is kept until its `exp`, so
/// this also bounds how long that record lives; real clients sign for a few minutes.
pub const MAX_LIFETIME: i64 = 3600;
/// A key set is a handful of keys; more is not a client's key set.
const MAX_KEYS: usize = 20;
pub(super) const MAX_JTI_LEN: usize = 256;

/// The algorithm named `name`, if it is one of [`SIGNING_ALGS`].
pub fn signing_alg(name: &str) -> Option<Algorithm> {
    let alg = match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    };
    Some(alg)
}

/// Reads a client's JWK Set (RFC 7517 §5) and keeps the keys an assertion may be verified with.
/// Keys for encryption only, of unknown types or curves are skipped; a set that carries private
/// or symmetric key material is refused outright (publishing it is a leak, and an `oct` key
/// would turn the set into a shared secret).
pub fn parse_key_set(value: &Value) -> Result<JwkSet, String> {
    let keys = value
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("a JWK Set must be an object with a \"keys\" array")?;
    if keys.len() > MAX_KEYS {
        return Err(format!("a JWK Set may hold at most {MAX_KEYS} keys"));
    }
    let mut usable = Vec::new();
    for key in keys {
        let obj = key.as_object().ok_or("each key must be a JSON object")?;
        if ["d", "p", "q", "dp", "dq", "qi", "k"]
            .iter()
            .any(|m| obj.contains_key(*m))
        {
            return Err("a JWK Set must hold public keys only".to_owned());
        }
        if !matches!(
            obj.get("kty").and_then(Value::as_str),
            Some("RSA" | "EC" | "OKP")
        ) {
            continue;
        }
        let jwk: Jwk = serde_json::from_value(key.clone())
            .map_err(|_| "a key of the JWK Set is malformed".to_owned())?;
        let signs = matches!(
            jwk.common.public_key_use,
            None | Some(PublicKeyUse::Signature)
        );
        let curve_ok = match &jwk.algorithm {
            AlgorithmParameters::EllipticCurve(p) => {
                matches!(p.curve, EllipticCurve::P256 | EllipticCurve::P384)
            }
            AlgorithmParameters::OctetKeyPair(p) => p.curve == EllipticCurve::Ed25519,
            AlgorithmParameters::RSA(_) => true,
            _ => false,
        };
        if signs && curve_ok && DecodingKey::from_jwk(&jwk).is_ok() {
            usable.push(jwk);
        }
    }
    if usable.is_empty() {
        return Err("the JWK Set has no signing key this server can use".to_owned());
    }
    Ok(JwkSet { keys: usable })
}

/// The `iss` of an assertion, read without verifying anything: it names the client whose keys
/// will then verify the signature. `None` when the text is not a JWT.
pub fn peek_issuer(assertion: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Iss {
        iss: String,
    }
    // The payload is decoded only to pick the client; nothing of it is trusted before the
    // signature is verified with that client's keys.
    jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(assertion)
        .ok()
        .map(|c| c.iss)
        .filter(|iss| !iss.is_empty())
}

/// What the assertion must say.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// `iss` and `sub` (RFC 7523 §3).
    pub client_id: &'a str,
    /// One of these must be in `aud`: the token endpoint's URL or the issuer.
    pub audiences: &'a [&'a str],
    /// The client's registered `token_endpoint_auth_signing_alg`, which then is the only one.
    pub signing_alg: Option<&'a str>,
    pub now: i64,
}

/// A valid assertion: its `jti`, to be used once, and until when it must be remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub jti: String,
    pub remember_until: i64,
}

/// Why an assertion is refused (all `invalid_client`, RFC 7521 §4.2.1). The text is for the
/// client and never quotes the assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssertionError {
    Malformed,
    UnsupportedAlg,
    WrongAlg,
    /// No key of the client's set has the assertion's `kid` (it may have rotated).
    UnknownKey,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    MissingExpiry,
    Expired,
    TooLong,
    NotYetValid,
    MissingJti,
}

impl fmt::Display for AssertionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self {
            Self::Malformed => "the client assertion is not a valid JWT",
            Self::UnsupportedAlg => {
                "the client assertion's alg is not supported (token_endpoint_auth_signing_alg_values_supported lists those that are)"
            }
            Self::WrongAlg => {
                "the client assertion's alg is not the client's token_endpoint_auth_signing_alg"
            }
            Self::UnknownKey => "no key of the client's JWK Set has the client assertion's kid",
            Self::BadSignature => {
                "the client assertion's signature does not verify with the client's keys"
            }
            Self::WrongIssuer => "the client assertion's iss and sub must both be the client_id",
            Self::WrongAudience => {
                "the client assertion's aud must be this server's token endpoint or issuer"
            }
            Self::MissingExpiry => "the client assertion has no exp",
            Self::Expired => "the client assertion has expired",
            Self::TooLong => "the client assertion is valid for too long (at most one hour)",
            Self::NotYetValid => "the client assertion is not valid yet",
            Self::MissingJti => "the client assertion has no usable jti",
        };
        f.write_str(why)
    }
}

impl std::error::Error for AssertionError {}

/// `aud`: one audience or several (RFC 7519 §4.1.3).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub(super) fn contains(&self, wanted: &str) -> bool {
        match self {
            Self::One(a) => a == wanted,
            Self::Many(all) => all.iter().any(|a| a == wanted),
        }
    }
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    jti: Option<String>,
}

/// A NumericDate (RFC 7519 §2): seconds, possibly with a fraction.
pub(super) fn numeric_date(v: Option<&Value>) -> Result<Option<i64>, AssertionError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && f.abs() < 1e15)
                    .map(|f| f.floor() as i64)
            })
            .map(Some)
            .ok_or(AssertionError::Malformed),
        Some(_) => Err(AssertionError::Malformed),
    }
}

/// Can `jwk` verify a signature made with `alg`? The family, the curve, and the key's own `alg`
/// when it names one.
fn key_fits(jwk: &Jwk, alg: Algorithm, alg_name: &str) -> bool {
    let declared_ok = jwk.common.key_algorithm.is_none_or(|a| {
        serde_json::to_value(a)
            .ok()
            .is_some_and(|v| v.as_str() == Some(alg_name))
    });
    let shape_ok = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::RSA(_), a) => {
            jsonwebtoken::AlgorithmFamily::Rsa.algorithms().contains(&a)
        }
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    declared_ok && shape_ok
}

/// Why a signed JWT's signature is refused, before any claim is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    Malformed,
    UnsupportedAlg,
    WrongAlg,
    /// No key of the set has the JWT's `kid` (it may have rotated).
    UnknownKey,
    BadSignature,
}

impl From<SignatureError> for AssertionError {
    fn from(e: SignatureError) -> Self {
        match e {
            SignatureError::Malformed => Self::Malformed,
            SignatureError::UnsupportedAlg => Self::UnsupportedAlg,
            SignatureError::WrongAlg => Self::WrongAlg,
            SignatureError::UnknownKey => Self::UnknownKey,
            SignatureError::BadSignature => Self::BadSignature,
        }
    }
}

/// Checks a JWT's signature with `keys` (the `kid` picks the key; without one every fitting key
/// is tried) and returns its header and claims, none of them checked yet. Only [`SIGNING_ALGS`],
/// and only `required_alg` when one is required.
pub fn verify_signature<C: DeserializeOwned>(
    jwt: &str,
    keys: &JwkSet,
    required_alg: Option<&str>,
) -> Result<(Header, C), SignatureError> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| SignatureError::Malformed)?;
    let alg_name = serde_json::to_value(header.alg)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let alg = signing_alg(&alg_name).ok_or(SignatureError::UnsupportedAlg)?;
    if required_alg.is_some_and(|a| a != alg_name) {
        return Err(SignatureError::WrongAlg);
    }
    let candidates: Vec<&Jwk> = match &header.kid {
        Some(kid) => {
            let named: Vec<&Jwk> = keys
                .keys
                .iter()
                .filter(|k| k.common.key_id.as_deref() == Some(kid.as_str()))
                .collect();
            if named.is_empty() {
                return Err(SignatureError::UnknownKey);
            }
            named
        }
        None => keys.keys.iter().collect(),
    };
    let mut validation = Validation::new(alg);
    // Time and audience are the caller's to check, against the injected clock and this
    // server's URLs.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = candidates
        .into_iter()
        .filter(|k| key_fits(k, alg, &alg_name))
        .filter_map(|k| DecodingKey::from_jwk(k).ok())
        .find_map(|key| jsonwebtoken::decode::<C>(jwt, &key, &validation).ok())
        .ok_or(SignatureError::BadSignature)?
        .claims;
    Ok((header, claims))
}

/// Verifies a client assertion against the client's keys and `expected`.
pub fn verify(
    assertion: &str,
    keys: &JwkSet,
    expected: &Expected<'_>,
) -> Result<Verified, AssertionError> {
    let (_, claims) = verify_signature::<Claims>(assertion, keys, expected.signing_alg)?;
    check_claims(&claims, expected)
}

fn check_claims(claims: &Claims, expected: &Expected<'_>) -> Result<Verified, AssertionError> {
    if claims.iss.as_deref() != Some(expected.client_id)
        || claims.sub.as_deref() != Some(expected.client_id)
    {
        return Err(AssertionError::WrongIssuer);
    }
    let aud_ok = claims
        .aud
        .as_ref()
        .is_some_and(|aud| expected.audiences.iter().any(|a| aud.contains(a)));
    if !aud_ok {
        return Err(AssertionError::WrongAudience);
    }
    let now = expected.now;
    let exp = numeric_date(claims.exp.as_ref())?.ok_or(AssertionError::MissingExpiry)?;
    if now >= exp.saturating_add(LEEWAY) {
        return Err(AssertionError::Expired);
    }
    if exp.saturating_sub(now) > MAX_LIFETIME {
        return Err(AssertionError::TooLong);
    }
    for not_before in [
        numeric_date(claims.nbf.as_ref())?,
        numeric_date(claims.iat.as_ref())?,
    ]
    .into_iter()
    .flatten()
    {
        if not_before > now.saturating_add(LEEWAY) {
            return Err(AssertionError::NotYetValid);
        }
    }
    let jti = claims
        .jti
        .as_deref()
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_LEN)
        .ok_or(AssertionError::MissingJti)?;
    Ok(Verified {
        jti: jti.to_owned(),
        remember_until: exp.saturating_add(LEEWAY),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use base64::Engine as _;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const CLIENT: &str = "https://chatgpt.com/oauth/client.json";
    const TOKEN: &str = "https://mcp.example.com/token";
    const ISSUER: &str = "https://mcp.example.com";
    const NOW: i64 = 1_790_000_000;

    /// A signing key and its public JWK.
    pub(crate) struct TestKey {
        pub encoding: EncodingKey,
        pub alg: Algorithm,
        pub jwk: Value,
    }

    pub(crate) fn rsa_key(kid: &str) -> TestKey {
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der.as_ref())
        );
        let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&encoding, Algorithm::RS256).unwrap())
                .unwrap();
        jwk["kid"] = json!(kid);
        TestKey {
            encoding,
            alg: Algorithm::RS256,
            jwk,
        }
    }

    #[expect(
        clippy::disallowed_methods,
        reason = "a throw-away test key pair, generated as keys.rs generates real ones"
    )]
    pub(crate) fn ec_key(kid: &str) -> TestKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
        let mut jwk =
            serde_json::to_value(Jwk::from_encoding_key(&encoding, Algorithm::ES256).unwrap())
                .unwrap();
        jwk["kid"] = json!(kid);
        TestKey {
            encoding,
            alg: Algorithm::ES256,
            jwk,
        }
    }

    fn sign(key: &TestKey, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(key.alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
    }

    fn claims() -> Value {
        json!({"iss": CLIENT, "sub": CLIENT, "aud": TOKEN, "exp": NOW + 300, "iat": NOW, "jti": "j-1"})
    }

    fn expected() -> Expected<'static> {
        Expected {
            client_id: CLIENT,
            audiences: &[TOKEN, ISSUER],
            signing_alg: None,
            now: NOW,
        }
    }

    fn set(keys: &[&TestKey]) -> JwkSet {
        parse_key_set(&json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}))
            .unwrap()
    }

    #[test]
    fn a_valid_assertion_verifies_with_rsa_and_ec_keys() {
        let (rsa, ec) = (rsa_key("r1"), ec_key("e1"));
        let keys = set(&[&rsa, &ec]);
        let v = verify(&sign(&rsa, Some("r1"), &claims()), &keys, &expected()).unwrap();
        assert_eq!(v.jti, "j-1");
        assert_eq!(v.remember_until, NOW + 300 + LEEWAY);
        assert!(verify(&sign(&ec, Some("e1"), &claims()), &keys, &expected()).is_ok());
        // Without a kid, every fitting key is tried.
        assert!(verify(&sign(&ec, None, &claims()), &keys, &expected()).is_ok());
        // The issuer is an audience too, and aud may be an array.
        let mut c = claims();
        c["aud"] = json!(["https://other.example", ISSUER]);
        assert!(verify(&sign(&rsa, Some("r1"), &c), &keys, &expected()).is_ok());
    }

    #[test]
    fn claims_are_checked() {
        let key = rsa_key("r1");
        let keys = set(&[&key]);
        let cases: Vec<(Value, AssertionError)> = vec![
            (
                json!({"iss": "https://evil.example/c.json"}),
                AssertionError::WrongIssuer,
            ),
            (json!({"sub": "someone"}), AssertionError::WrongIssuer),
            (
                json!({"aud": "https://mcp.example.com/revoke"}),
                AssertionError::WrongAudience,
            ),
            (json!({"aud": null}), AssertionError::WrongAudience),
            (json!({"exp": null}), AssertionError::MissingExpiry),
            (json!({"exp": NOW - LEEWAY}), AssertionError::Expired),
            (
                json!({"exp": NOW + MAX_LIFETIME + 1}),
                AssertionError::TooLong,
            ),
            (
                json!({"nbf": NOW + LEEWAY + 1}),
                AssertionError::NotYetValid,
            ),
            (
                json!({"iat": NOW + LEEWAY + 1}),
                AssertionError::NotYetValid,
            ),
            (json!({"jti": null}), AssertionError::MissingJti),
            (json!({"jti": ""}), AssertionError::MissingJti),
            (json!({"exp": "soon"}), AssertionError::Malformed),
        ];
        for (change, want) in cases {
            let mut c = claims();
            for (k, v) in change.as_object().unwrap() {
                c[k] = v.clone();
            }
            let got = verify(&sign(&key, Some("r1"), &c), &keys, &expected());
            assert_eq!(got, Err(want.clone()), "{change}");
        }
        // Within the leeway, a slightly slow clock is tolerated.
        let mut c = claims();
        c["exp"] = json!(NOW - LEEWAY + 1);
        c["iat"] = json!(NOW + LEEWAY);
        assert!(verify(&sign(&key, Some("r1"), &c), &keys, &expected()).is_ok());
    }

    #[test]
    fn signatures_keys_and_algorithms_are_checked() {
        let (key, other) = (rsa_key("r1"), rsa_key("r1"));
        let keys = set(&[&key]);
        // Signed by another key under the same kid.
        assert_eq!(
            verify(&sign(&other, Some("r1"), &claims()), &keys, &expected()),
            Err(AssertionError::BadSignature)
        );
        assert_eq!(
            verify(&sign(&key, Some("r2"), &claims()), &keys, &expected()),
            Err(AssertionError::UnknownKey)
        );
        // HS256 with the public key's bytes as the secret: the classic confusion.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(key.jwk["n"].as_str().unwrap().as_bytes()),
        )
        .unwrap();
        assert_eq!(
            verify(&hs, &keys, &expected()),
            Err(AssertionError::UnsupportedAlg)
        );
        // alg "none": no signature at all.
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let none = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&claims()));
        assert!(verify(&none, &keys, &expected()).is_err());
        // The registered signing alg is the only one accepted.
        let ec = ec_key("e1");
        let both = set(&[&key, &ec]);
        let only_rs = Expected {
            signing_alg: Some("RS256"),
            ..expected()
        };
        assert!(verify(&sign(&key, Some("r1"), &claims()), &both, &only_rs).is_ok());
        assert_eq!(
            verify(&sign(&ec, Some("e1"), &claims()), &both, &only_rs),
            Err(AssertionError::WrongAlg)
        );
        // A key declared for another algorithm is not used for this one.
        let mut declared = ec.jwk.clone();
        declared["alg"] = json!("ES384");
        let declared = parse_key_set(&json!({ "keys": [declared] })).unwrap();
        assert_eq!(
            verify(&sign(&ec, Some("e1"), &claims()), &declared, &expected()),
            Err(AssertionError::BadSignature)
        );
        assert_eq!(
            verify("not a jwt", &keys, &expected()),
            Err(AssertionError::Malformed)
        );
    }

    #[test]
    fn key_sets() {
        let key = rsa_key("r1");
        assert_eq!(set(&[&key]).keys.len(), 1);
        let mut private = key.jwk.clone();
        private["d"] = json!("AAAA");
        let mut enc = key.jwk.clone();
        enc["use"] = json!("enc");
        let oct = json!({"kty": "oct", "k": "c2VjcmV0"});
        let p521 = json!({"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"});
        for bad in [
            json!([]),
            json!({"keys": "x"}),
            json!({ "keys": [private] }),
            json!({ "keys": [oct] }),
            json!({"keys": []}),
            json!({ "keys": [enc] }),
            json!({ "keys": [p521] }),
            json!({"keys": [{"kty": "RSA", "n": 5}]}),
        ] {
            assert!(parse_key_set(&bad).is_err(), "{bad}");
        }
        // Unknown key types are skipped, not fatal.
        let mixed = json!({"keys": [{"kty": "XYZ"}, key.jwk.clone()]});
        assert_eq!(parse_key_set(&mixed).unwrap().keys.len(), 1);
    }

    #[test]
    fn the_issuer_is_peeked_without_trust() {
        let key = rsa_key("r1");
        assert_eq!(
            peek_issuer(&sign(&key, None, &claims())).as_deref(),
            Some(CLIENT)
        );
        assert_eq!(peek_issuer("a.b.c"), None);
        assert_eq!(peek_issuer(""), None);
        assert!(SIGNING_ALGS.iter().all(|a| signing_alg(a).is_some()));
        assert!(signing_alg("HS256").is_none() && signing_alg("none").is_none());
    }
}
