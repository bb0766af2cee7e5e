//! A pending authorization: a browser somewhere between `/authorize` (or the account page) and
//! the end of its login. What it is for ([`Purpose`]) and how far it got ([`Stage`]) are types,
//! so a request for the account page cannot carry a code challenge, and the upstream leg's
//! secrets exist only while the browser is at the upstream.

use std::fmt;

use crate::clock::Timestamp;
use crate::oauth::pkce::CodeChallenge;
use crate::oauth::scope::ScopeSet;
use crate::oauth::secrets::{Hashed, kind};

/// Pending requests (consent page, upstream login) live ten minutes.
pub const PENDING_TTL: i64 = 600;

/// What an authorization for a client will produce, fixed when the request is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthorization {
    pub client_id: String,
    /// The redirect URI as the request sent it (a loopback port may differ from the registered
    /// one), and where every answer goes.
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: CodeChallenge,
    pub scope: ScopeSet,
    pub resource: String,
    /// An OpenID request's `nonce`, for its ID token.
    pub nonce: Option<String>,
    pub login: LoginConstraint,
}

/// Which login may answer a request. Any session can, unless an OpenID request asked for a
/// recent login (`max_age`, `prompt=login`) or for one person (`id_token_hint`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoginConstraint {
    /// Logins older than this do not count.
    pub not_before: Option<Timestamp>,
    /// authgate's subject for the only person who may answer.
    pub subject: Option<String>,
}

impl LoginConstraint {
    /// May a login of `subject` at `logged_in_at` answer the request?
    pub fn admits(&self, subject: &str, logged_in_at: Timestamp) -> bool {
        self.not_before.is_none_or(|t| logged_in_at >= t)
            && self.subject.as_deref().is_none_or(|s| s == subject)
    }

    /// Must the person authenticate again at the provider, rather than be let through by its
    /// own session there?
    pub fn wants_fresh_login(&self) -> bool {
        self.not_before.is_some()
    }
}

/// Why a browser is logging in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// To authorize a client: it ends with a code sent to the client.
    Authorize(ClientAuthorization),
    /// To see the connected-apps page: it ends with a session and a return to that page.
    AccountLogin { return_to: String },
}

/// The upstream login leg's secrets: authgate's own `state` (stored hashed, it finds the request
/// again at the callback), the ID token's `nonce` and the PKCE verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamLeg {
    pub state: Hashed<kind::UpstreamState>,
    pub nonce: String,
    pub verifier: String,
}

impl fmt::Debug for UpstreamLeg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UpstreamLeg([redacted])")
    }
}

/// How far the request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// The consent page is shown (account logins skip it: there is nothing to approve).
    AwaitingConsent,
    /// Approved (or an account login): the browser is at the upstream login.
    AtUpstream(UpstreamLeg),
    /// Answered: a code, a denial, a refusal, or the account page. Never again.
    Done,
}

impl Stage {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::AwaitingConsent => "consent",
            Self::AtUpstream(_) => "upstream",
            Self::Done => "done",
        }
    }
}

/// A transition the state machine does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a pending authorization cannot go from {from} to {to}")]
pub struct InvalidTransition {
    pub from: &'static str,
    pub to: &'static str,
}

/// Why a browser may not continue a pending request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// Started in another browser (or its cookies were cleared).
    OtherBrowser,
    Expired,
    AlreadyDone,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAuthorization {
    pub id: Hashed<kind::Pending>,
    /// The browser that started it.
    pub browser: Hashed<kind::Browser>,
    pub purpose: Purpose,
    pub stage: Stage,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

impl PendingAuthorization {
    /// A client's request, waiting for the person's consent.
    pub fn authorize(
        id: Hashed<kind::Pending>,
        browser: Hashed<kind::Browser>,
        request: ClientAuthorization,
        now: Timestamp,
    ) -> Self {
        Self {
            id,
            browser,
            purpose: Purpose::Authorize(request),
            stage: Stage::AwaitingConsent,
            created_at: now,
            expires_at: now + PENDING_TTL,
        }
    }

    /// A login to the account page: straight to the upstream, nothing to consent to.
    pub fn account_login(
        id: Hashed<kind::Pending>,
        browser: Hashed<kind::Browser>,
        return_to: String,
        leg: UpstreamLeg,
        now: Timestamp,
    ) -> Self {
        Self {
            id,
            browser,
            purpose: Purpose::AccountLogin { return_to },
            stage: Stage::AtUpstream(leg),
            created_at: now,
            expires_at: now + PENDING_TTL,
        }
    }

    /// May this browser continue the request now?
    pub fn check(
        &self,
        browser: Option<&Hashed<kind::Browser>>,
        now: Timestamp,
    ) -> Result<(), Unusable> {
        if browser != Some(&self.browser) {
            return Err(Unusable::OtherBrowser);
        }
        if self.expires_at <= now {
            return Err(Unusable::Expired);
        }
        if self.stage == Stage::Done {
            return Err(Unusable::AlreadyDone);
        }
        Ok(())
    }

    /// Approved without a session: off to the upstream login. Allowed again while there (a
    /// double submit replaces the leg, so the browser's last navigation is the one that works).
    pub fn to_upstream(&self, leg: UpstreamLeg) -> Result<Self, InvalidTransition> {
        match self.stage {
            Stage::AwaitingConsent | Stage::AtUpstream(_) => Ok(Self {
                stage: Stage::AtUpstream(leg),
                ..self.clone()
            }),
            Stage::Done => Err(InvalidTransition {
                from: self.stage.as_str(),
                to: "upstream",
            }),
        }
    }

    /// Answered, once.
    pub fn finish(&self) -> Result<Self, InvalidTransition> {
        match self.stage {
            Stage::AwaitingConsent | Stage::AtUpstream(_) => Ok(Self {
                stage: Stage::Done,
                ..self.clone()
            }),
            Stage::Done => Err(InvalidTransition {
                from: "done",
                to: "done",
            }),
        }
    }

    /// Where this request's answers go, once it is for a client.
    pub fn client_request(&self) -> Option<&ClientAuthorization> {
        match &self.purpose {
            Purpose::Authorize(r) => Some(r),
            Purpose::AccountLogin { .. } => None,
        }
    }

    pub fn upstream_leg(&self) -> Option<&UpstreamLeg> {
        match &self.stage {
            Stage::AtUpstream(leg) => Some(leg),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = 1_790_000_000;

    fn leg(s: &str) -> UpstreamLeg {
        UpstreamLeg {
            state: Hashed::of(s),
            nonce: "n".into(),
            verifier: "v".into(),
        }
    }

    fn request() -> PendingAuthorization {
        PendingAuthorization::authorize(
            Hashed::of("id"),
            Hashed::of("browser"),
            ClientAuthorization {
                client_id: "agc_1".into(),
                redirect_uri: "https://claude.ai/cb".into(),
                state: Some("st".into()),
                code_challenge: CodeChallenge::from_stored("c".repeat(43)),
                scope: ScopeSet::parse("mcp"),
                resource: "https://mcp.example.com/mcp".into(),
                nonce: None,
                login: LoginConstraint::default(),
            },
            NOW,
        )
    }

    #[test]
    fn login_constraints() {
        assert!(LoginConstraint::default().admits("ag_a", 0));
        let recent = LoginConstraint {
            not_before: Some(NOW),
            subject: None,
        };
        assert!(recent.admits("ag_a", NOW));
        assert!(
            !recent.admits("ag_a", NOW - 1),
            "an older login does not count"
        );
        assert!(recent.wants_fresh_login());
        let person = LoginConstraint {
            not_before: None,
            subject: Some("ag_a".into()),
        };
        assert!(person.admits("ag_a", 0));
        assert!(!person.admits("ag_b", NOW), "another person does not count");
        assert!(!person.wants_fresh_login());
    }

    #[test]
    fn stages_move_forward_only() {
        let p = request();
        let up = p.to_upstream(leg("a")).unwrap();
        let again = up.to_upstream(leg("b")).unwrap();
        assert_eq!(
            again.upstream_leg(),
            Some(&leg("b")),
            "a double submit replaces the leg"
        );
        let done = again.finish().unwrap();
        assert_eq!(
            done.upstream_leg(),
            None,
            "the leg's secrets go with the stage"
        );
        assert!(done.finish().is_err());
        assert!(done.to_upstream(leg("c")).is_err());
        assert!(
            p.finish().is_ok(),
            "a denial or a session finishes without the upstream"
        );
    }

    #[test]
    fn only_the_browser_that_started_it_continues_in_time() {
        let p = request();
        let mine = Hashed::of("browser");
        assert_eq!(p.check(Some(&mine), NOW), Ok(()));
        assert_eq!(p.check(None, NOW), Err(Unusable::OtherBrowser));
        assert_eq!(
            p.check(Some(&Hashed::of("other")), NOW),
            Err(Unusable::OtherBrowser)
        );
        assert_eq!(
            p.check(Some(&mine), NOW + PENDING_TTL),
            Err(Unusable::Expired)
        );
        let done = p.finish().unwrap();
        assert_eq!(done.check(Some(&mine), NOW), Err(Unusable::AlreadyDone));
    }

    #[test]
    fn account_logins_have_no_client_and_start_at_the_upstream() {
        let p = PendingAuthorization::account_login(
            Hashed::of("id"),
            Hashed::of("browser"),
            "https://mcp.example.com/account".into(),
            leg("a"),
            NOW,
        );
        assert!(p.client_request().is_none());
        assert!(p.upstream_leg().is_some());
    }
}
