//! Who logs in: an upstream identity, the operator's allowlists, and the stable subject authgate
//! gives the person.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// A person as the upstream provider vouched for them (claims from a verified ID token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamIdentity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginPolicy {
    pub emails: Vec<String>,
    pub domains: Vec<String>,
    /// Nobody listed: everyone the upstream authenticates may log in (must be chosen explicitly).
    pub anyone: bool,
}

impl LoginPolicy {
    /// `Err` carries the sentence shown to the person refused.
    pub fn check(&self, id: &UpstreamIdentity) -> Result<(), String> {
        if id.email_verified == Some(false) {
            return Err("Your email address is not verified by the sign-in provider.".to_owned());
        }
        if self.anyone {
            return Ok(());
        }
        let Some(email) = id.email.as_deref().map(str::to_ascii_lowercase) else {
            return Err("The sign-in provider did not share your email address.".to_owned());
        };
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        let listed = self.emails.iter().any(|e| e.eq_ignore_ascii_case(&email))
            || self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain));
        if listed {
            Ok(())
        } else {
            Err(format!("{email} is not allowed to use this server."))
        }
    }
}

/// authgate's stable subject for an upstream identity: the same person through the same upstream
/// always gets the same `sub`, and different upstreams can never collide.
pub fn derive_subject(upstream_issuer: &str, upstream_subject: &str) -> String {
    let mut h = Sha256::new();
    h.update(upstream_issuer.as_bytes());
    h.update([0u8]);
    h.update(upstream_subject.as_bytes());
    let digest = h.finalize();
    format!("ag_{}", URL_SAFE_NO_PAD.encode(&digest[..20]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(email: Option<&str>, verified: Option<bool>) -> UpstreamIdentity {
        UpstreamIdentity {
            issuer: "i".into(),
            subject: "s".into(),
            email: email.map(Into::into),
            email_verified: verified,
        }
    }

    #[test]
    fn allowlists() {
        let p = LoginPolicy {
            emails: vec!["Ann@Example.com".into()],
            domains: vec!["corp.example".into()],
            anyone: false,
        };
        assert!(p.check(&id(Some("ann@example.com"), Some(true))).is_ok());
        assert!(p.check(&id(Some("bob@corp.example"), None)).is_ok());
        assert!(p.check(&id(Some("bob@example.com"), Some(true))).is_err());
        assert!(
            p.check(&id(Some("bob@evilcorp.example"), Some(true)))
                .is_err()
        );
        assert!(
            p.check(&id(Some("x@corp.example.evil"), Some(true)))
                .is_err()
        );
        assert!(p.check(&id(None, None)).is_err());
        assert!(
            p.check(&id(Some("ann@example.com"), Some(false))).is_err(),
            "unverified email refused"
        );
        let open = LoginPolicy {
            anyone: true,
            ..LoginPolicy::default()
        };
        assert!(open.check(&id(None, None)).is_ok());
        assert!(open.check(&id(Some("a@b"), Some(false))).is_err());
    }

    #[test]
    fn subjects_are_stable_and_scoped_to_the_issuer() {
        assert_eq!(
            derive_subject("https://a/", "u1"),
            derive_subject("https://a/", "u1")
        );
        assert_ne!(
            derive_subject("https://a/", "u1"),
            derive_subject("https://b/", "u1")
        );
    }
}
