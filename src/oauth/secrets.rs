//! Bearer secrets (client secrets, authorization codes, refresh tokens, session ids): never
//! stored in the clear, never printed, compared in constant time.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret value as handed to or received from a client. `Debug` is redacted and there is no
/// `Display`; the value leaves only through [`PlainSecret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct PlainSecret(String);

impl PlainSecret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear value, for the one response that hands it out or a comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The stored form: SHA-256 over a kind label and the value. The values are 256-bit random
    /// strings, so a fast hash is enough; the label keeps one kind from being replayed as another.
    pub fn hash(&self, kind: SecretKind) -> SecretHash {
        SecretHash::of(kind, &self.0)
    }
}

impl fmt::Debug for PlainSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainSecret([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    ClientSecret,
    AuthorizationCode,
    RefreshToken,
    Session,
    PendingAuthorization,
    UpstreamState,
    McpSession,
}

impl SecretKind {
    fn label(self) -> &'static [u8] {
        match self {
            Self::ClientSecret => b"authgate:client-secret:",
            Self::AuthorizationCode => b"authgate:code:",
            Self::RefreshToken => b"authgate:refresh:",
            Self::Session => b"authgate:session:",
            Self::PendingAuthorization => b"authgate:pending:",
            Self::UpstreamState => b"authgate:upstream-state:",
            Self::McpSession => b"authgate:mcp-session:",
        }
    }
}

/// Hex-encoded SHA-256 of a secret, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash(String);

impl SecretHash {
    pub fn of(kind: SecretKind, value: &str) -> Self {
        let mut h = Sha256::new();
        h.update(kind.label());
        h.update(value.as_bytes());
        let digest = h.finalize();
        let mut hex = String::with_capacity(64);
        for b in digest.iter() {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        Self(hex)
    }

    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant-time check of a presented secret against this stored hash.
    pub fn verify(&self, kind: SecretKind, presented: &str) -> bool {
        let candidate = Self::of(kind, presented);
        self.0.as_bytes().ct_eq(candidate.0.as_bytes()).into()
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash([redacted])")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_redact() {
        let s = PlainSecret::new("s3cret-value");
        let h = s.hash(SecretKind::ClientSecret);
        assert!(h.verify(SecretKind::ClientSecret, "s3cret-value"));
        assert!(!h.verify(SecretKind::ClientSecret, "s3cret-valuE"));
        assert!(!h.verify(SecretKind::RefreshToken, "s3cret-value"));
        assert_eq!(h.as_str().len(), 64);
        assert!(!format!("{s:?}{h:?}").contains("s3cret"));
        assert!(!format!("{h:?}").contains(h.as_str()));
    }
}
