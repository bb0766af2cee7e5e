//! Signing keys for access tokens (RFC 9068 JWTs, ES256). Keys live in the database so that
//! restarts and several instances share them; rotation keeps retired keys published until the
//! tokens they signed have expired.

use std::collections::HashMap;
use std::sync::RwLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::random::Random;
use crate::store::{DynStore, KeyRecord, StoreError};

const ALG: &str = "ES256";
/// Marks a private key stored sealed with `AUTHGATE_KEY_ENCRYPTION_KEY`.
const SEALED_PREFIX: &str = "sealed1:";
const TOKEN_TYPE: &str = "at+jwt";

/// The claims of an authgate access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// The grant family, so that revoking a grant revokes its access tokens too.
    pub sid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key generation failed")]
    Generate,
    #[error("stored key {0} is unusable")]
    Corrupt(String),
    #[error("no signing key is loaded")]
    NoSigningKey,
    #[error(
        "AUTHGATE_KEY_ENCRYPTION_KEY: signing key {0} is stored encrypted and cannot be opened; set the key it was encrypted with"
    )]
    Sealed(String),
    #[error("AUTHGATE_KEY_ENCRYPTION_KEY must be 32 bytes, base64-encoded")]
    BadSealingKey,
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a presented token was refused. Only the kind is kept: the details would help an attacker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    Malformed,
    UnknownKey,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    Expired,
}

struct Loaded {
    signing: Option<(String, EncodingKey)>,
    verifying: HashMap<String, DecodingKey>,
    jwks: Bytes,
}

/// Encrypts signing keys at rest (AES-256-GCM, the key id as associated data), so that reading
/// the database is not enough to mint tokens.
#[derive(Clone)]
pub struct KeySealer(std::sync::Arc<aws_lc_rs::aead::LessSafeKey>);

impl std::fmt::Debug for KeySealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySealer([redacted])")
    }
}

impl KeySealer {
    pub fn new(key: &[u8]) -> Result<Self, KeyError> {
        use aws_lc_rs::aead::{AES_256_GCM, LessSafeKey, UnboundKey};
        if key.len() != 32 {
            return Err(KeyError::BadSealingKey);
        }
        let key = UnboundKey::new(&AES_256_GCM, key).map_err(|_| KeyError::BadSealingKey)?;
        Ok(Self(std::sync::Arc::new(LessSafeKey::new(key))))
    }

    /// Parses the setting: 32 bytes in base64 (standard or URL-safe, padding optional).
    pub fn from_setting(text: &str) -> Result<Self, KeyError> {
        let t = text.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(t)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
            .map_err(|_| KeyError::BadSealingKey)?;
        Self::new(&bytes)
    }

    fn seal(&self, kid: &str, der: &[u8], random: &dyn Random) -> Result<String, KeyError> {
        use aws_lc_rs::aead::{Aad, Nonce};
        let mut nonce = [0u8; 12];
        random.fill(&mut nonce);
        let mut buf = der.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut buf,
            )
            .map_err(|_| KeyError::Generate)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{SEALED_PREFIX}{}", STANDARD.encode(out)))
    }

    fn open(&self, kid: &str, sealed: &str) -> Result<Vec<u8>, KeyError> {
        use aws_lc_rs::aead::{Aad, Nonce};
        let raw = STANDARD
            .decode(sealed)
            .map_err(|_| KeyError::Corrupt(kid.to_owned()))?;
        if raw.len() < 12 + 16 {
            return Err(KeyError::Corrupt(kid.to_owned()));
        }
        let (nonce, rest) = raw.split_at(12);
        let nonce: [u8; 12] = nonce
            .try_into()
            .map_err(|_| KeyError::Corrupt(kid.to_owned()))?;
        let mut buf = rest.to_vec();
        let plain = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut buf,
            )
            .map_err(|_| KeyError::Sealed(kid.to_owned()))?;
        Ok(plain.to_vec())
    }
}

/// The DER of a stored private key: sealed ones need the sealer; plain ones (stored before
/// encryption was turned on) still load, and age out after the next rotation.
fn private_der(sealer: Option<&KeySealer>, kid: &str, stored: &str) -> Result<Vec<u8>, KeyError> {
    match stored.strip_prefix(SEALED_PREFIX) {
        Some(sealed) => sealer
            .ok_or_else(|| KeyError::Sealed(kid.to_owned()))?
            .open(kid, sealed),
        None => STANDARD
            .decode(stored)
            .map_err(|_| KeyError::Corrupt(kid.to_owned())),
    }
}

pub struct Keystore {
    store: DynStore,
    sealer: Option<KeySealer>,
    /// When the keys were last read from the database (for reloads on an unknown `kid`).
    loaded_at: std::sync::atomic::AtomicI64,
    /// Retired keys stay published this long: the access-token lifetime.
    overlap: i64,
    loaded: RwLock<Loaded>,
}

fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .map_err(|_| KeyError::Generate)?;
    Ok(doc.as_ref().to_vec())
}

fn public_jwk(kid: &str, der: &[u8]) -> Result<Jwk, KeyError> {
    let enc = EncodingKey::from_ec_der(der);
    let mut jwk = Jwk::from_encoding_key(&enc, Algorithm::ES256)
        .map_err(|_| KeyError::Corrupt(kid.to_owned()))?;
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
    Ok(jwk)
}

impl Keystore {
    /// Loads the keys, creating the first one on first start.
    pub async fn load_or_create(
        store: DynStore,
        overlap: i64,
        sealer: Option<KeySealer>,
        now: Timestamp,
        random: &dyn Random,
    ) -> Result<Self, KeyError> {
        let ks = Self {
            store,
            sealer,
            loaded_at: std::sync::atomic::AtomicI64::new(0),
            overlap,
            loaded: RwLock::new(Loaded {
                signing: None,
                verifying: HashMap::new(),
                jwks: Bytes::from_static(b"{\"keys\":[]}"),
            }),
        };
        let keys = ks.store.list_keys().await?;
        if !keys.iter().any(|k| k.retired_at.is_none()) {
            ks.create_key(now, random).await?;
        }
        ks.reload(now).await?;
        Ok(ks)
    }

    async fn create_key(&self, now: Timestamp, random: &dyn Random) -> Result<String, KeyError> {
        let der = generate_pkcs8()?;
        let kid = random.id();
        self.store
            .insert_key(&KeyRecord {
                kid: kid.clone(),
                alg: ALG.to_owned(),
                private_der: match &self.sealer {
                    Some(s) => s.seal(&kid, &der, random)?,
                    None => STANDARD.encode(der),
                },
                created_at: now,
                retired_at: None,
            })
            .await?;
        Ok(kid)
    }

    /// Adds a new signing key and retires the others (they stay published for the overlap).
    pub async fn rotate(&self, now: Timestamp, random: &dyn Random) -> Result<String, KeyError> {
        let kid = self.create_key(now, random).await?;
        self.store.retire_keys_except(&kid, now).await?;
        self.reload(now).await?;
        Ok(kid)
    }

    /// Reloads the keys if they were last read more than a few seconds ago; a token signed with
    /// an unknown key then costs at most one database read per interval. Returns whether it
    /// reloaded.
    pub async fn reload_if_stale(&self, now: Timestamp) -> bool {
        const MIN_INTERVAL: i64 = 5;
        let last = self.loaded_at.load(std::sync::atomic::Ordering::Relaxed);
        if now - last < MIN_INTERVAL {
            return false;
        }
        match self.reload(now).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "reloading signing keys failed");
                false
            }
        }
    }

    /// Re-reads the keys from the database (another instance may have rotated them).
    pub async fn reload(&self, now: Timestamp) -> Result<(), KeyError> {
        self.loaded_at
            .store(now, std::sync::atomic::Ordering::Relaxed);
        let keys = self.store.list_keys().await?;
        let mut signing = None;
        let mut verifying = HashMap::new();
        let mut jwks = Vec::new();
        for k in &keys {
            let published = k.retired_at.is_none_or(|at| at + self.overlap > now);
            if !published || k.alg != ALG {
                continue;
            }
            let der = private_der(self.sealer.as_ref(), &k.kid, &k.private_der)?;
            let jwk = public_jwk(&k.kid, &der)?;
            let dec = DecodingKey::from_jwk(&jwk).map_err(|_| KeyError::Corrupt(k.kid.clone()))?;
            verifying.insert(k.kid.clone(), dec);
            jwks.push(jwk);
            if k.retired_at.is_none() {
                // Newest active key signs (keys are listed oldest first).
                signing = Some((k.kid.clone(), EncodingKey::from_ec_der(&der)));
            }
        }
        let body = serde_json::to_vec(&JwkSet { keys: jwks })
            .map_err(|_| KeyError::Corrupt("jwks".to_owned()))?;
        let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        *loaded = Loaded {
            signing,
            verifying,
            jwks: Bytes::from(body),
        };
        Ok(())
    }

    pub fn jwks(&self) -> Bytes {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .jwks
            .clone()
    }

    pub fn signing_kid(&self) -> Option<String> {
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        loaded.signing.as_ref().map(|(kid, _)| kid.clone())
    }

    pub fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        let (kid, key) = loaded.signing.as_ref().ok_or(KeyError::NoSigningKey)?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.clone());
        header.typ = Some(TOKEN_TYPE.to_owned());
        Ok(jsonwebtoken::encode(&header, claims, key)?)
    }

    /// Verifies signature, type, issuer, audience and expiry (against `now`, not the system
    /// clock). No network and no database access.
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now: Timestamp,
    ) -> Result<AccessClaims, TokenRejection> {
        let claims = self.verify_signature(token)?;
        if claims.iss != issuer {
            return Err(TokenRejection::WrongIssuer);
        }
        if claims.aud != audience {
            return Err(TokenRejection::WrongAudience);
        }
        if now >= claims.exp {
            return Err(TokenRejection::Expired);
        }
        Ok(claims)
    }

    /// Signature and type only: for revocation, where an expired token is still recognised.
    pub fn verify_signature(&self, token: &str) -> Result<AccessClaims, TokenRejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejection::Malformed)?;
        if header.alg != Algorithm::ES256 || header.typ.as_deref() != Some(TOKEN_TYPE) {
            return Err(TokenRejection::Malformed);
        }
        let kid = header.kid.ok_or(TokenRejection::UnknownKey)?;
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        let key = loaded
            .verifying
            .get(&kid)
            .ok_or(TokenRejection::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<AccessClaims>(token, key, &validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenRejection::BadSignature,
                _ => TokenRejection::Malformed,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SystemRandom;

    #[test]
    fn sealed_keys_open_only_with_their_key_and_id() {
        let sealer = KeySealer::new(&[7u8; 32]).unwrap();
        let der = generate_pkcs8().unwrap();
        let stored = sealer.seal("kid-1", &der, &SystemRandom).unwrap();
        assert!(stored.starts_with(SEALED_PREFIX));
        assert!(!stored.contains(&STANDARD.encode(&der)));
        assert_eq!(private_der(Some(&sealer), "kid-1", &stored).unwrap(), der);
        let other = KeySealer::new(&[8u8; 32]).unwrap();
        assert!(matches!(
            private_der(Some(&other), "kid-1", &stored),
            Err(KeyError::Sealed(_))
        ));
        assert!(
            matches!(
                private_der(Some(&sealer), "kid-2", &stored),
                Err(KeyError::Sealed(_))
            ),
            "bound to its key id"
        );
        assert!(matches!(
            private_der(None, "kid-1", &stored),
            Err(KeyError::Sealed(_))
        ));
        assert_eq!(
            private_der(Some(&sealer), "old", &STANDARD.encode(&der)).unwrap(),
            der,
            "plain keys still load"
        );
        assert!(KeySealer::new(&[1u8; 16]).is_err());
        assert!(KeySealer::from_setting(&STANDARD.encode([9u8; 32])).is_ok());
        assert!(KeySealer::from_setting("not base64!").is_err());
        assert!(!format!("{sealer:?}").contains('7'));
    }
}
