//! Bearer secrets (client secrets, authorization codes, refresh tokens, session ids, ...): never
//! stored in the clear, never printed, compared in constant time.
//!
//! Each kind of secret is a type ([`kind`]), so a hash of one kind cannot be passed where another
//! is expected, and a plaintext [`Secret`] cannot be passed where a [`Hashed`] belongs. The label
//! hashed in with the value keeps one kind from being replayed as another even in the database.

use std::fmt;
use std::marker::PhantomData;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A kind of secret: the label its hashes are computed under.
pub trait Kind: Send + Sync + 'static {
    const LABEL: &'static [u8];
}

/// The kinds of secrets authgate hands out or receives.
pub mod kind {
    macro_rules! kinds {
        ($($(#[$doc:meta])* $name:ident => $label:literal,)*) => {
            $(
                $(#[$doc])*
                #[derive(Debug)]
                pub enum $name {}
                impl super::Kind for $name {
                    const LABEL: &'static [u8] = $label;
                }
            )*
        };
    }

    kinds! {
        /// A confidential client's secret.
        ClientSecret => b"authgate:client-secret:",
        /// An authorization code.
        Code => b"authgate:code:",
        /// A refresh token.
        Refresh => b"authgate:refresh:",
        /// authgate's own browser session id.
        Session => b"authgate:session:",
        /// The id of a pending authorization request (the consent form's hidden field).
        Pending => b"authgate:pending:",
        /// The cookie that binds a pending request to the browser that started it.
        Browser => b"authgate:browser:",
        /// authgate's `state` on the upstream login leg.
        UpstreamState => b"authgate:upstream-state:",
        /// The form token of the page that confirms a login which came back without the
        /// browser-binding cookie.
        Confirmation => b"authgate:confirmation:",
        /// An `Mcp-Session-Id` issued by an upstream MCP server.
        McpSession => b"authgate:mcp-session:",
        /// The account page's form token, derived from the session cookie.
        Csrf => b"authgate:csrf:",
        /// A client's signed JWT assertion (`private_key_jwt`): a bearer credential until it
        /// expires, so it is never printed.
        ClientAssertion => b"authgate:client-assertion:",
        /// A used client assertion's client and `jti`, remembered so that it is used once.
        AssertionJti => b"authgate:assertion-jti:",
        /// The upstream provider's access token for a user (kept sealed, handed to the MCP
        /// server behind authgate).
        UpstreamAccess => b"authgate:upstream-access:",
        /// The upstream provider's refresh token for a user (kept sealed).
        UpstreamRefresh => b"authgate:upstream-refresh:",
        /// An authgate access token presented as an RFC 8693 subject token.
        SubjectToken => b"authgate:subject-token:",
        /// An Identity Assertion JWT Authorization Grant (enterprise-managed authorization): a
        /// bearer credential until it expires, so it is never printed.
        IdentityAssertion => b"authgate:id-jag:",
        /// A used ID-JAG's issuer and `jti`. Its own label keeps these records apart from the
        /// client assertions' in the one table both are kept in.
        IdentityAssertionJti => b"authgate:id-jag-jti:",
    }
}

/// A secret value as handed to or received from a client. Neither `Clone` nor `PartialEq`: a
/// plaintext secret is used once, and compared only through its hash in constant time. `Debug` is
/// redacted and there is no `Display`; the value leaves only through [`Secret::expose`].
pub struct Secret<K: Kind> {
    value: String,
    kind: PhantomData<K>,
}

impl<K: Kind> Secret<K> {
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            kind: PhantomData,
        }
    }

    /// The clear value, for the one response that hands it out.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The stored form: SHA-256 over the kind's label and the value. The values are 256-bit
    /// random strings, so a fast hash is enough.
    pub fn hash(&self) -> Hashed<K> {
        Hashed::of(&self.value)
    }
}

impl<K: Kind> fmt::Debug for Secret<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Hex-encoded SHA-256 of a secret of kind `K`, as stored.
pub struct Hashed<K: Kind> {
    hex: String,
    kind: PhantomData<K>,
}

impl<K: Kind> Hashed<K> {
    pub fn of(value: &str) -> Self {
        let mut h = Sha256::new();
        h.update(K::LABEL);
        h.update(value.as_bytes());
        let digest = h.finalize();
        let mut hex = String::with_capacity(64);
        for b in digest.iter() {
            hex.push(char::from(HEX[usize::from(b >> 4)]));
            hex.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        Self::from_stored(hex)
    }

    /// A hash read back from the database.
    pub fn from_stored(hex: String) -> Self {
        Self {
            hex,
            kind: PhantomData,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.hex
    }

    /// Constant-time check of a presented secret against this stored hash.
    pub fn verify(&self, presented: &str) -> bool {
        let candidate = Self::of(presented);
        self.hex.as_bytes().ct_eq(candidate.hex.as_bytes()).into()
    }
}

// Derives would demand `K: Clone`/`K: PartialEq` of the uninhabited marker types.
impl<K: Kind> Clone for Hashed<K> {
    fn clone(&self) -> Self {
        Self::from_stored(self.hex.clone())
    }
}

/// Hashes are compared in constant time too: equality of stored hashes is not secret in itself,
/// but a variable-time comparison is one less thing to reason about.
impl<K: Kind> PartialEq for Hashed<K> {
    fn eq(&self, other: &Self) -> bool {
        self.hex.as_bytes().ct_eq(other.hex.as_bytes()).into()
    }
}

impl<K: Kind> Eq for Hashed<K> {}

impl<K: Kind> fmt::Debug for Hashed<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hashed([redacted])")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_redact() {
        let s = Secret::<kind::ClientSecret>::new("s3cret-value");
        let h = s.hash();
        assert!(h.verify("s3cret-value"));
        assert!(!h.verify("s3cret-valuE"));
        assert_ne!(
            Hashed::<kind::Refresh>::of("s3cret-value").as_str(),
            h.as_str(),
            "the kind is part of the hash"
        );
        assert_eq!(h.as_str().len(), 64);
        assert!(!format!("{s:?}{h:?}").contains("s3cret"));
        assert!(!format!("{h:?}").contains(h.as_str()));
    }
}
