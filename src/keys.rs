//! Signing keys for access tokens (RFC 9068 JWTs, ES256) and, for OpenID clients, ID tokens.
//! Keys live in the database so that restarts and several instances share them. Rotation is
//! staged: a new key is published first and signs only from its activation time, when the
//! previous one retires; a retired key stays published until the tokens it signed have expired.

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
/// ID tokens carry the plain JWT type, so neither kind can pass for the other.
const ID_TOKEN_TYPE: &str = "JWT";

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

/// The claims of an authgate ID token (OIDC Core §2), for a client that asked for `openid`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdClaims {
    pub iss: String,
    pub sub: String,
    /// The client the token was issued to.
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    /// When the person logged in at the upstream provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
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

/// How long a retired key stays published beyond the token lifetime: an instance that had not
/// yet read the successor (it checks every [`POLL_SECONDS`]) or whose clock runs behind may
/// still sign with it for a little while after it retired.
pub const DROP_MARGIN: i64 = 60;

/// How often every instance checks whether the keys changed. The default publication delay
/// (120 s) covers one poll plus the 60 s that clients may cache `/jwks.json`.
pub const POLL_SECONDS: u64 = 30;

/// Where a key is in its life. Every instance computes it from the stored times and its own
/// clock, so the switch to a new key needs no coordination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStage {
    /// Published, not signing yet: JWKS caches learn it before any token carries it.
    Next,
    /// The key that signs.
    Current,
    /// Superseded; published until the tokens it signed have expired.
    Retired,
    /// No longer published; removed by the next clean-up.
    Dropped,
}

impl KeyStage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Current => "current",
            Self::Retired => "retired",
            Self::Dropped => "dropped",
        }
    }
}

/// A key added by [`Keystore::rotate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    pub kid: String,
    /// When it starts signing.
    pub activates_at: Timestamp,
}

/// When one key enters each stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySchedule {
    pub kid: String,
    pub activates_at: Timestamp,
    /// When the following key activates; `None` while there is none.
    pub retires_at: Option<Timestamp>,
    /// When it leaves the JWKS.
    pub drops_at: Option<Timestamp>,
}

impl KeySchedule {
    pub fn stage(&self, now: Timestamp) -> KeyStage {
        if now < self.activates_at {
            KeyStage::Next
        } else if self.retires_at.is_none_or(|at| now < at) {
            KeyStage::Current
        } else if self.drops_at.is_none_or(|at| now < at) {
            KeyStage::Retired
        } else {
            KeyStage::Dropped
        }
    }

    /// When [`Self::stage`] next changes; `None` for a current key without successor, or a
    /// dropped one.
    pub fn changes_at(&self, now: Timestamp) -> Option<Timestamp> {
        match self.stage(now) {
            KeyStage::Next => Some(self.activates_at),
            KeyStage::Current => self.retires_at,
            KeyStage::Retired => self.drops_at,
            KeyStage::Dropped => None,
        }
    }
}

/// The schedule of every key, in activation order: each key retires when the next one
/// activates, and is dropped once the tokens it could have signed have expired (`overlap`,
/// the access-token lifetime, plus [`DROP_MARGIN`]).
pub fn schedule(keys: &[KeyRecord], overlap: i64) -> Vec<(&KeyRecord, KeySchedule)> {
    let mut ordered: Vec<&KeyRecord> = keys.iter().collect();
    ordered.sort_by(|a, b| {
        (a.activates_at, a.created_at, &a.kid).cmp(&(b.activates_at, b.created_at, &b.kid))
    });
    let successors: Vec<Option<Timestamp>> = ordered
        .iter()
        .skip(1)
        .map(|k| Some(k.activates_at))
        .chain(std::iter::once(None))
        .collect();
    ordered
        .into_iter()
        .zip(successors)
        .map(|(k, retires_at)| {
            let sched = KeySchedule {
                kid: k.kid.clone(),
                activates_at: k.activates_at,
                retires_at,
                drops_at: retires_at
                    .map(|at| at.saturating_add(overlap).saturating_add(DROP_MARGIN)),
            };
            (k, sched)
        })
        .collect()
}

/// Deletes the keys that are no longer published; nothing is opened, so the CLI needs no
/// sealing key for it. Returns how many.
pub async fn remove_dropped(
    store: &DynStore,
    overlap: i64,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let keys = store.list_keys().await?;
    let dropped: Vec<String> = schedule(&keys, overlap)
        .into_iter()
        .filter(|(_, s)| s.stage(now) == KeyStage::Dropped)
        .map(|(_, s)| s.kid)
        .collect();
    if dropped.is_empty() {
        return Ok(0);
    }
    store.delete_keys(&dropped).await
}

struct LoadedKey {
    schedule: KeySchedule,
    signing: EncodingKey,
    verifying: DecodingKey,
    jwk: Jwk,
}

struct Loaded {
    /// The key version these keys were read at; `None` before the first read.
    version: Option<i64>,
    /// Every key not yet dropped when read, in activation order.
    keys: Vec<LoadedKey>,
    jwks: Bytes,
    /// `jwks` is right until this time (the next drop); it is rebuilt after.
    jwks_until: Timestamp,
}

impl Loaded {
    /// The newest key activated at `at`. A clock behind the one of the instance that created
    /// the first key would find none: it signs with the oldest key rather than not at all.
    fn signing_at(&self, at: Timestamp) -> Option<&LoadedKey> {
        self.keys
            .iter()
            .rev()
            .find(|k| k.schedule.activates_at <= at)
            .or_else(|| self.keys.first())
    }
}

/// The published keys at `now` (next, current, retired) and until when that set holds.
fn build_jwks(keys: &[LoadedKey], now: Timestamp) -> Option<(Bytes, Timestamp)> {
    let published: Vec<&LoadedKey> = keys
        .iter()
        .filter(|k| k.schedule.stage(now) != KeyStage::Dropped)
        .collect();
    let until = published
        .iter()
        .filter_map(|k| k.schedule.drops_at)
        .min()
        .unwrap_or(Timestamp::MAX);
    let set = JwkSet {
        keys: published.iter().map(|k| k.jwk.clone()).collect(),
    };
    let body = serde_json::to_vec(&set).ok()?;
    Some((Bytes::from(body), until))
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
        Self::new(&decode_encryption_key(text)?)
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

/// The bytes of `AUTHGATE_KEY_ENCRYPTION_KEY`: 32 bytes in base64 (standard or URL-safe,
/// padding optional).
pub fn decode_encryption_key(text: &str) -> Result<Vec<u8>, KeyError> {
    let t = text.trim().trim_end_matches('=');
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(t)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(t))
        .map_err(|_| KeyError::BadSealingKey)?;
    if bytes.len() != 32 {
        return Err(KeyError::BadSealingKey);
    }
    Ok(bytes)
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
    /// The access-token lifetime: how long a retired key's tokens can live on.
    overlap: i64,
    loaded: RwLock<Loaded>,
}

fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    #[expect(
        clippy::disallowed_methods,
        reason = "key pairs come from the crypto library's own generator, not from Random"
    )]
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
    /// Loads the keys, creating the first one on first start (it signs at once: there are no
    /// caches to warn yet).
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
                version: None,
                keys: Vec::new(),
                jwks: Bytes::from_static(b"{\"keys\":[]}"),
                jwks_until: Timestamp::MAX,
            }),
        };
        if ks.store.list_keys().await?.is_empty() {
            ks.create_key(now, now, random).await?;
        }
        ks.reload(now).await?;
        Ok(ks)
    }

    async fn create_key(
        &self,
        now: Timestamp,
        activates_at: Timestamp,
        random: &dyn Random,
    ) -> Result<String, KeyError> {
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
                activates_at,
                retired_at: None,
            })
            .await?;
        Ok(kid)
    }

    /// Adds a key that is published at once and signs from `now + publication_delay`, when the
    /// key signing until then retires (it stays published until its tokens have expired). It
    /// activates after every key already stored, so the latest rotation always ends up signing,
    /// even one within the same second as the previous.
    pub async fn rotate(
        &self,
        now: Timestamp,
        publication_delay: i64,
        random: &dyn Random,
    ) -> Result<Rotated, KeyError> {
        let after_the_others = self
            .store
            .list_keys()
            .await?
            .iter()
            .map(|k| k.activates_at.saturating_add(1))
            .max()
            .unwrap_or(Timestamp::MIN);
        let activates_at = now
            .saturating_add(publication_delay.max(0))
            .max(after_the_others);
        let kid = self.create_key(now, activates_at, random).await?;
        self.reload(now).await?;
        Ok(Rotated { kid, activates_at })
    }

    /// The periodic check: one small read, and the keys are re-read only when another
    /// instance (or the CLI) changed them. Returns whether it reloaded.
    pub async fn poll(&self, now: Timestamp) -> Result<bool, KeyError> {
        let version = self.store.key_version().await?;
        let loaded = self
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .version;
        if loaded == Some(version) {
            return Ok(false);
        }
        self.reload(now).await?;
        Ok(true)
    }

    /// Deletes the keys that are no longer published. Returns how many.
    pub async fn remove_dropped(&self, now: Timestamp) -> Result<u64, KeyError> {
        Ok(remove_dropped(&self.store, self.overlap, now).await?)
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
        // The version first: a change landing between the two reads moves it again, so the
        // next poll reloads.
        let version = self.store.key_version().await?;
        let records = self.store.list_keys().await?;
        let mut keys = Vec::new();
        for (k, sched) in schedule(&records, self.overlap) {
            if sched.stage(now) == KeyStage::Dropped || k.alg != ALG {
                continue;
            }
            let der = private_der(self.sealer.as_ref(), &k.kid, &k.private_der)?;
            let jwk = public_jwk(&k.kid, &der)?;
            let verifying =
                DecodingKey::from_jwk(&jwk).map_err(|_| KeyError::Corrupt(k.kid.clone()))?;
            keys.push(LoadedKey {
                schedule: sched,
                signing: EncodingKey::from_ec_der(&der),
                verifying,
                jwk,
            });
        }
        let (jwks, jwks_until) =
            build_jwks(&keys, now).ok_or_else(|| KeyError::Corrupt("jwks".to_owned()))?;
        let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        *loaded = Loaded {
            version: Some(version),
            keys,
            jwks,
            jwks_until,
        };
        Ok(())
    }

    /// The JWKS at `now`: a retired key leaves it when its tokens have expired, without waiting
    /// for a reload.
    pub fn jwks(&self, now: Timestamp) -> Bytes {
        {
            let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
            if now < loaded.jwks_until {
                return loaded.jwks.clone();
            }
        }
        let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        if now >= loaded.jwks_until
            && let Some((jwks, until)) = build_jwks(&loaded.keys, now)
        {
            loaded.jwks = jwks;
            loaded.jwks_until = until;
        }
        loaded.jwks.clone()
    }

    /// The key that signs a token issued at `now`.
    pub fn signing_kid(&self, now: Timestamp) -> Option<String> {
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        loaded.signing_at(now).map(|k| k.schedule.kid.clone())
    }

    /// Signs with the key current at the token's `iat`, so every instance switches keys at the
    /// same moment.
    pub fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        self.sign_jwt(claims, claims.iat, TOKEN_TYPE)
    }

    /// An ID token, with the same keys as the access tokens (one JWKS for both).
    pub fn sign_id_token(&self, claims: &IdClaims) -> Result<String, KeyError> {
        self.sign_jwt(claims, claims.iat, ID_TOKEN_TYPE)
    }

    fn sign_jwt<T: Serialize>(&self, claims: &T, iat: i64, typ: &str) -> Result<String, KeyError> {
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        let key = loaded.signing_at(iat).ok_or(KeyError::NoSigningKey)?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.schedule.kid.clone());
        header.typ = Some(typ.to_owned());
        Ok(jsonwebtoken::encode(&header, claims, &key.signing)?)
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
        self.verify_for_any(token, issuer, std::slice::from_ref(&audience), now)
    }

    /// The same, for a token that may be meant for any of `audiences` (the UserInfo endpoint
    /// serves every resource's tokens).
    pub fn verify_for_any(
        &self,
        token: &str,
        issuer: &str,
        audiences: &[&str],
        now: Timestamp,
    ) -> Result<AccessClaims, TokenRejection> {
        let claims = self.verify_signature(token)?;
        if claims.iss != issuer {
            return Err(TokenRejection::WrongIssuer);
        }
        if !audiences.contains(&claims.aud.as_str()) {
            return Err(TokenRejection::WrongAudience);
        }
        if now >= claims.exp {
            return Err(TokenRejection::Expired);
        }
        Ok(claims)
    }

    /// Signature and type only: for revocation, where an expired token is still recognised.
    pub fn verify_signature(&self, token: &str) -> Result<AccessClaims, TokenRejection> {
        self.decode(token, TOKEN_TYPE)
    }

    /// An ID token this issuer signed, presented back as `id_token_hint`: signature, type and
    /// issuer. Its expiry is not checked: a client re-authorizing holds an ID token that expired
    /// long ago, and the hint only names the person it expects.
    pub fn verify_id_token_hint(
        &self,
        token: &str,
        issuer: &str,
    ) -> Result<IdClaims, TokenRejection> {
        let claims: IdClaims = self.decode(token, ID_TOKEN_TYPE)?;
        if claims.iss != issuer {
            return Err(TokenRejection::WrongIssuer);
        }
        Ok(claims)
    }

    fn decode<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        typ: &str,
    ) -> Result<T, TokenRejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRejection::Malformed)?;
        if header.alg != Algorithm::ES256 || header.typ.as_deref() != Some(typ) {
            return Err(TokenRejection::Malformed);
        }
        let kid = header.kid.ok_or(TokenRejection::UnknownKey)?;
        let loaded = self.loaded.read().unwrap_or_else(|p| p.into_inner());
        let key = &loaded
            .keys
            .iter()
            .find(|k| k.schedule.kid == kid)
            .ok_or(TokenRejection::UnknownKey)?
            .verifying;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<T>(token, key, &validation)
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

    fn record(kid: &str, created_at: Timestamp, activates_at: Timestamp) -> KeyRecord {
        KeyRecord {
            kid: kid.to_owned(),
            alg: ALG.to_owned(),
            private_der: String::new(),
            created_at,
            activates_at,
            retired_at: None,
        }
    }

    #[test]
    fn each_key_retires_when_the_next_activates_and_drops_after_its_tokens() {
        const TTL: i64 = 3600;
        // Listed out of order on purpose: the schedule follows activation, not the listing.
        let keys = [
            record("c", 2000, 2120),
            record("a", 0, 0),
            record("b", 1000, 1120),
        ];
        let sched: Vec<KeySchedule> = schedule(&keys, TTL).into_iter().map(|(_, s)| s).collect();
        let kids: Vec<&str> = sched.iter().map(|s| s.kid.as_str()).collect();
        assert_eq!(kids, ["a", "b", "c"]);
        let (a, b, c) = (&sched[0], &sched[1], &sched[2]);
        assert_eq!(a.retires_at, Some(1120));
        assert_eq!(a.drops_at, Some(1120 + TTL + DROP_MARGIN));
        assert_eq!((c.retires_at, c.drops_at), (None, None));

        assert_eq!(b.stage(1119), KeyStage::Next);
        assert_eq!(b.changes_at(1119), Some(1120));
        assert_eq!(a.stage(1119), KeyStage::Current);
        assert_eq!(b.stage(1120), KeyStage::Current);
        assert_eq!(b.changes_at(1120), Some(2120));
        assert_eq!(a.stage(1120), KeyStage::Retired);
        assert_eq!(a.changes_at(1120), a.drops_at);
        assert_eq!(a.stage(1120 + TTL + DROP_MARGIN - 1), KeyStage::Retired);
        assert_eq!(a.stage(1120 + TTL + DROP_MARGIN), KeyStage::Dropped);
        assert_eq!(c.stage(1_000_000), KeyStage::Current);
        assert_eq!(c.changes_at(1_000_000), None);
    }

    #[test]
    fn keys_activating_together_have_exactly_one_current() {
        // Two instances creating the first key at the same moment.
        let keys = [record("y", 5, 5), record("x", 5, 5)];
        let stages: Vec<(String, KeyStage)> = schedule(&keys, 60)
            .into_iter()
            .map(|(_, s)| (s.kid.clone(), s.stage(5)))
            .collect();
        assert_eq!(
            stages,
            [
                ("x".to_owned(), KeyStage::Retired),
                ("y".to_owned(), KeyStage::Current)
            ]
        );
    }

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
