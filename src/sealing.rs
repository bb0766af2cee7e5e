//! Secrets authgate must read back later (the user's upstream tokens), sealed at rest with
//! AES-256-GCM. Unlike the secrets it hands out, these cannot be stored hashed.
//!
//! The key is derived (HKDF-SHA256) from `AUTHGATE_KEY_ENCRYPTION_KEY` rather than being that
//! key: the signing keys are sealed under the key itself, and a separate key per purpose means a
//! value sealed for one purpose can never be opened as the other, whatever the associated data.

use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::random::Random;

/// Marks the format of a sealed value: nonce, ciphertext and tag, base64.
const PREFIX: &str = "sealed1:";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const SALT: &[u8] = b"authgate";
const UPSTREAM_TOKENS_INFO: &[u8] = b"authgate upstream tokens v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the sealing key cannot be derived")]
    Key,
    #[error("sealing failed")]
    Seal,
    /// Not sealed by this key, for this context, or damaged: the value is unusable.
    #[error("a sealed value cannot be opened")]
    Open,
}

/// Seals and opens the user's upstream tokens.
#[derive(Clone)]
pub struct TokenSealer(Arc<LessSafeKey>);

impl std::fmt::Debug for TokenSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSealer([redacted])")
    }
}

impl TokenSealer {
    /// The upstream-token key derived from the key-encryption key's bytes.
    pub fn derive(key_encryption_key: &[u8]) -> Result<Self, SealError> {
        let prk = Salt::new(HKDF_SHA256, SALT).extract(key_encryption_key);
        let info = [UPSTREAM_TOKENS_INFO];
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .map_err(|_| SealError::Key)?;
        Ok(Self(Arc::new(LessSafeKey::new(UnboundKey::from(okm)))))
    }

    /// Seals `plain` bound to `context` (associated data: which grant and which token).
    pub fn seal(
        &self,
        context: &str,
        plain: &str,
        random: &dyn Random,
    ) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        random.fill(&mut nonce);
        let mut buf = plain.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Seal)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    pub fn open(&self, context: &str, sealed: &str) -> Result<String, SealError> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|raw| raw.len() >= NONCE_LEN + TAG_LEN)
            .ok_or(SealError::Open)?;
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Open)?;
        let mut buf = rest.to_vec();
        let plain = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut buf,
            )
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SystemRandom;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let sealer = TokenSealer::derive(&[7u8; 32]).unwrap();
        let sealed = sealer
            .seal("grant-1:access", "ya29.token", &SystemRandom)
            .unwrap();
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("ya29"));
        assert_eq!(
            sealer.open("grant-1:access", &sealed).unwrap(),
            "ya29.token"
        );
        assert_eq!(
            sealer.open("grant-2:access", &sealed),
            Err(SealError::Open),
            "bound to its context"
        );
        let other = TokenSealer::derive(&[8u8; 32]).unwrap();
        assert_eq!(other.open("grant-1:access", &sealed), Err(SealError::Open));
        let mut damaged = sealed.clone();
        damaged.pop();
        damaged.push('A');
        assert_eq!(
            sealer.open("grant-1:access", &damaged),
            Err(SealError::Open)
        );
        assert_eq!(
            sealer.open("grant-1:access", "ya29.token"),
            Err(SealError::Open)
        );
        assert_eq!(
            sealer.open("grant-1:access", "sealed1:AAAA"),
            Err(SealError::Open)
        );
        assert_ne!(
            sealed,
            sealer
                .seal("grant-1:access", "ya29.token", &SystemRandom)
                .unwrap(),
            "a fresh nonce each time"
        );
        assert!(!format!("{sealer:?}").contains('7'));
    }

    #[test]
    fn the_derived_key_is_not_the_key_encryption_key() {
        // A value sealed directly under the key-encryption key (as signing keys are) does not
        // open with the derived key.
        let kek = [9u8; 32];
        let direct = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &kek).unwrap());
        let nonce = [1u8; NONCE_LEN];
        let mut buf = b"secret".to_vec();
        direct
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(b"ctx".as_slice()),
                &mut buf,
            )
            .unwrap();
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&buf);
        let sealed = format!("{PREFIX}{}", STANDARD.encode(raw));
        let derived = TokenSealer::derive(&kek).unwrap();
        assert_eq!(derived.open("ctx", &sealed), Err(SealError::Open));
    }
}
