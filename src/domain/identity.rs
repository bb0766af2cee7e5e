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

/// Whose accounts an enterprise issuer's (ID-JAG) `sub` values name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectSpace {
    /// Its own: its people are authgate users of their own, apart from the upstream login's,
    /// even when the issuer is the same provider.
    Issuer,
    /// The upstream login's (the operator says both speak of the same accounts with the same
    /// `sub`, such as one Okta organization): the person is the same authgate user either way.
    Upstream { upstream_issuer: String },
}

/// Prefixed to an enterprise issuer before deriving subjects in its own space: an issuer is an
/// https URL, so no upstream issuer can ever produce the same input.
const ENTERPRISE_SPACE: &str = "enterprise-issuer:";

/// authgate's subject for a person an enterprise issuer vouches for in an ID-JAG.
pub fn enterprise_subject(space: &SubjectSpace, issuer: &str, subject: &str) -> String {
    match space {
        SubjectSpace::Issuer => derive_subject(&format!("{ENTERPRISE_SPACE}{issuer}"), subject),
        SubjectSpace::Upstream { upstream_issuer } => derive_subject(upstream_issuer, subject),
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
    fn enterprise_subjects_join_the_upstream_ones_only_when_configured() {
        let okta = "https://acme.okta.com";
        let own = enterprise_subject(&SubjectSpace::Issuer, okta, "00u1");
        assert_ne!(
            own,
            derive_subject(okta, "00u1"),
            "apart by default, same issuer or not"
        );
        assert_eq!(own, enterprise_subject(&SubjectSpace::Issuer, okta, "00u1"));
        assert_ne!(
            own,
            enterprise_subject(&SubjectSpace::Issuer, "https://b.okta.com", "00u1")
        );
        let linked = SubjectSpace::Upstream {
            upstream_issuer: okta.to_owned(),
        };
        assert_eq!(
            enterprise_subject(&linked, "https://acme.okta.com/oauth2/ema", "00u1"),
            derive_subject(okta, "00u1"),
            "the upstream login's subject"
        );
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
