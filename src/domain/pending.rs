//! A pending authorization: a browser somewhere between `/authorize` (or the account page) and
//! the end of its login. What it is for ([`Purpose`]) and how far it got ([`Stage`]) are types,
//! so a request for the account page cannot carry a code challenge, and the upstream leg's
//! secrets exist only while the browser is at the upstream.

use std::fmt;

use crate::clock::Timestamp;
use crate::domain::upstream_token::SealedWaitingTokens;
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

/// A login that came back from the upstream in a browser without the binding cookie: who
/// logged in, and the hash of a token given only to that browser, on the page where it confirms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmation {
    pub token: Hashed<kind::Confirmation>,
    pub subject: String,
    pub email: Option<String>,
    /// The provider's tokens from the login, when the request's resource keeps them for its MCP
    /// server: the confirmation hands them to the grant.
    pub upstream_tokens: Option<SealedWaitingTokens>,
}

/// How far the request got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// The consent page is shown (account logins skip it: there is nothing to approve).
    AwaitingConsent,
    /// Approved (or an account login): the browser is at the upstream login.
    AtUpstream(UpstreamLeg),
    /// Logged in from a browser without the binding cookie: the person who logged in must
    /// approve again on a page only that browser got (see [`PendingAuthorization::check_return`]).
    AwaitingConfirmation(Confirmation),
    /// Answered: a code, a denial, a refusal, or the account page. Never again.
    Done,
}

impl Stage {
    /// The stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::AwaitingConsent => "consent",
            Self::AtUpstream(_) => "upstream",
            Self::AwaitingConfirmation(_) => "confirm",
            Self::Done => "done",
        }
    }
}

/// How a browser coming back from the upstream login is tied to the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    /// It has the cookie of the browser that approved: the login finishes at once.
    SameBrowser,
    /// It has no binding cookie at all (embedded webviews drop it across the upstream redirect):
    /// the login is verified, but only a confirmation in this browser finishes it.
    WithoutCookie,
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

    /// May this browser use the request's consent form now? Only with the binding cookie of
    /// the browser that opened the page, and only until a login has come back (after one that
    /// came back without the cookie, only its confirmation finishes the request).
    pub fn check(
        &self,
        browser: Option<&Hashed<kind::Browser>>,
        now: Timestamp,
    ) -> Result<(), Unusable> {
        if browser != Some(&self.browser) {
            return Err(Unusable::OtherBrowser);
        }
        self.usable(now)?;
        if let Stage::AwaitingConfirmation(_) = self.stage {
            return Err(Unusable::AlreadyDone);
        }
        Ok(())
    }

    /// May this browser, back from the upstream login (or the development login), continue the
    /// request now? Another browser's cookie is refused. A browser with no binding cookie at all
    /// may go on for a client's request (never for an account login, which exists to give a
    /// browser a session), but only to a confirmation:
    ///
    /// The upstream `state` is unguessable and single-use, and the leg's PKCE verifier and
    /// nonce tie the provider's answer to this request, so a missing cookie cannot make the
    /// login itself count for another request. What they cannot show is that the person now in
    /// front of the browser is the one who approved the client: an attacker can approve their own
    /// request, hand the provider's login URL to a victim, and the victim's login would come back
    /// here. Finishing then would send a code for the victim's account to the attacker's redirect
    /// URI (and an attacker's answer opened in a victim's browser would log that browser in as
    /// the attacker). So without the cookie nothing finishes and no session is opened: the
    /// browser gets a consent page naming the account that logged in and the client's
    /// destination, with a token only that page carries, and the person who logged in decides.
    /// A lure then works no better than sending the victim a malicious client's authorization
    /// URL, which the consent page is there for. Limiting the cookie-less path to young upstream
    /// legs would not help: an attacker starts a fresh request for each victim.
    pub fn check_return(
        &self,
        browser: Option<&Hashed<kind::Browser>>,
        now: Timestamp,
    ) -> Result<Return, Unusable> {
        let binding = match browser {
            Some(b) if *b == self.browser => Return::SameBrowser,
            None if matches!(self.purpose, Purpose::Authorize(_)) => Return::WithoutCookie,
            _ => return Err(Unusable::OtherBrowser),
        };
        self.usable(now)?;
        Ok(binding)
    }

    /// The confirmation this request waits for, if it may still be given.
    pub fn awaiting_confirmation(&self, now: Timestamp) -> Result<&Confirmation, Unusable> {
        self.usable(now)?;
        match &self.stage {
            Stage::AwaitingConfirmation(c) => Ok(c),
            _ => Err(Unusable::AlreadyDone),
        }
    }

    fn usable(&self, now: Timestamp) -> Result<(), Unusable> {
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
            Stage::AwaitingConfirmation(_) | Stage::Done => Err(InvalidTransition {
                from: self.stage.as_str(),
                to: "upstream",
            }),
        }
    }

    /// Logged in without the binding cookie: waits for that browser's confirmation. The leg's
    /// secrets go, so its `state` cannot be used again.
    pub fn to_confirmation(&self, confirmation: Confirmation) -> Result<Self, InvalidTransition> {
        match (&self.stage, &self.purpose) {
            (Stage::AtUpstream(_), Purpose::Authorize(_)) => Ok(Self {
                stage: Stage::AwaitingConfirmation(confirmation),
                ..self.clone()
            }),
            _ => Err(InvalidTransition {
                from: self.stage.as_str(),
                to: "confirm",
            }),
        }
    }

    /// Answered, once.
    pub fn finish(&self) -> Result<Self, InvalidTransition> {
        match self.stage {
            Stage::AwaitingConsent | Stage::AtUpstream(_) | Stage::AwaitingConfirmation(_) => {
                Ok(Self {
                    stage: Stage::Done,
                    ..self.clone()
                })
            }
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

    fn confirmation() -> Confirmation {
        Confirmation {
            token: Hashed::of("t"),
            subject: "sub".into(),
            email: None,
            upstream_tokens: None,
        }
    }

    #[test]
    fn a_login_may_come_back_without_the_cookie_but_not_with_another() {
        let up = request().to_upstream(leg("a")).unwrap();
        let mine = Hashed::of("browser");
        assert_eq!(up.check_return(Some(&mine), NOW), Ok(Return::SameBrowser));
        assert_eq!(up.check_return(None, NOW), Ok(Return::WithoutCookie));
        assert_eq!(
            up.check_return(Some(&Hashed::of("other")), NOW),
            Err(Unusable::OtherBrowser)
        );
        assert_eq!(
            up.check_return(None, NOW + PENDING_TTL),
            Err(Unusable::Expired)
        );
        let account = PendingAuthorization::account_login(
            Hashed::of("id"),
            Hashed::of("browser"),
            "https://mcp.example.com/account".into(),
            leg("a"),
            NOW,
        );
        assert_eq!(
            account.check_return(None, NOW),
            Err(Unusable::OtherBrowser),
            "an account login exists to give its browser a session"
        );
        assert!(account.to_confirmation(confirmation()).is_err());
    }

    #[test]
    fn a_login_without_the_cookie_waits_for_its_confirmation_only() {
        let p = request();
        assert!(
            p.to_confirmation(confirmation()).is_err(),
            "only a login that came back"
        );
        let waiting = p
            .to_upstream(leg("a"))
            .unwrap()
            .to_confirmation(confirmation())
            .unwrap();
        assert_eq!(waiting.upstream_leg(), None, "the leg is spent");
        assert_eq!(waiting.awaiting_confirmation(NOW), Ok(&confirmation()));
        assert_eq!(
            waiting.awaiting_confirmation(NOW + PENDING_TTL),
            Err(Unusable::Expired)
        );
        assert_eq!(
            waiting.check(Some(&Hashed::of("browser")), NOW),
            Err(Unusable::AlreadyDone),
            "the consent form cannot finish it, even from the browser that approved"
        );
        assert!(waiting.to_upstream(leg("b")).is_err());
        assert_eq!(
            p.awaiting_confirmation(NOW),
            Err(Unusable::AlreadyDone),
            "nothing to confirm before a login"
        );
        let done = waiting.finish().unwrap();
        assert_eq!(done.awaiting_confirmation(NOW), Err(Unusable::AlreadyDone));
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
