//! A grant and what it hands out: authorization codes, each starting a chain of refresh tokens.
//! Their states are types: a code is issued or redeemed, a refresh token is current or rotated
//! (and then carries its sealed successor). The rules are methods over those states and `now`.
//!
//! One grant per person, client and resource: a later authorization of the same client for the
//! same resource (a step-up to more scopes, or a client that lost its tokens) continues the live
//! grant instead of starting another. Its new code starts a second refresh chain in the same
//! grant, the grant's scope widens to what was approved, and every chain refreshes to that scope;
//! revoking the grant ends them all.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::pending::ClientAuthorization;
use crate::clock::Timestamp;
use crate::oauth::pkce::CodeChallenge;
use crate::oauth::scope::ScopeSet;
use crate::oauth::secrets::{Hashed, Secret, kind};
use crate::oauth::{ErrorCode, OAuthError};

/// Authorization codes live about a minute: clients redeem them at once.
pub const CODE_TTL: i64 = 60;

fn invalid_grant(why: &str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidGrant, why)
}

/// Everything one authorization produced: its code, refresh tokens and access tokens share it,
/// and revoking it revokes them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    pub client_id: String,
    pub subject: String,
    pub email: Option<String>,
    /// Whether the upstream provider vouched for `email` (`None`: it did not say).
    pub email_verified: Option<bool>,
    pub scope: ScopeSet,
    pub resource: String,
    /// When the person logged in (the login session's start); `None` for grants stored before
    /// authgate recorded it.
    pub auth_time: Option<Timestamp>,
    pub created_at: Timestamp,
    /// Absolute end of the grant.
    pub expires_at: Timestamp,
    pub last_used_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// Who approved a request, and what their login said: the grant (and its ID tokens) carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    /// When the person logged in (an ID token's `auth_time`).
    pub auth_time: Timestamp,
}

impl Grant {
    /// A new grant for a request the person of `login` approved, ending `ttl` seconds from now.
    pub fn new(
        id: String,
        request: &ClientAuthorization,
        login: &Login,
        now: Timestamp,
        ttl: i64,
    ) -> Self {
        Self {
            id,
            client_id: request.client_id.clone(),
            subject: login.subject.clone(),
            email: login.email.clone(),
            email_verified: login.email_verified,
            auth_time: Some(login.auth_time),
            scope: request.scope.clone(),
            resource: request.resource.clone(),
            created_at: now,
            expires_at: now + ttl,
            last_used_at: now,
            revoked_at: None,
        }
    }

    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }

    /// Whether `request`, approved by `subject`, continues this grant rather than starting one:
    /// same person, client and resource, and the grant still live.
    pub fn is_continued_by(
        &self,
        subject: &str,
        request: &ClientAuthorization,
        now: Timestamp,
    ) -> bool {
        self.subject == subject
            && self.client_id == request.client_id
            && self.resource == request.resource
            && self.is_live(now)
    }

    /// This grant once `request` is approved again. The scope only widens: what was granted stays
    /// granted until revoked (a client that wants less asks for less when it refreshes). The
    /// email is the latest login's. The absolute end stays: authorizing again does not make a
    /// grant live longer, and once it has ended the next authorization starts a new one.
    pub fn continued(&self, request: &ClientAuthorization, login: &Login, now: Timestamp) -> Self {
        Self {
            scope: self.scope.union(&request.scope),
            email: login.email.clone().or_else(|| self.email.clone()),
            email_verified: login
                .email
                .as_ref()
                .map_or(self.email_verified, |_| login.email_verified),
            auth_time: Some(login.auth_time),
            last_used_at: now,
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeState {
    Issued,
    Redeemed { at: Timestamp },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationCode {
    pub hash: Hashed<kind::Code>,
    pub grant_id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub challenge: CodeChallenge,
    /// The `nonce` of the OpenID request, echoed in the ID token the code yields.
    pub nonce: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub state: CodeState,
}

/// What a token request presents with a code.
pub struct CodeRedemption<'a> {
    pub client_id: &'a str,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: Option<&'a str>,
}

/// Why a code was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeError {
    /// Presented a second time: whoever holds it may not be the client, so what it produced
    /// is revoked.
    Replayed,
    Invalid(OAuthError),
}

impl AuthorizationCode {
    pub fn issue(
        hash: Hashed<kind::Code>,
        grant_id: &str,
        request: &ClientAuthorization,
        now: Timestamp,
    ) -> Self {
        Self {
            hash,
            grant_id: grant_id.to_owned(),
            client_id: request.client_id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            challenge: request.code_challenge.clone(),
            nonce: request.nonce.clone(),
            created_at: now,
            expires_at: now + CODE_TTL,
            state: CodeState::Issued,
        }
    }

    /// Checks a redemption: not used before, same client, same redirect URI when one is sent, a
    /// PKCE verifier matching the challenge, not expired.
    pub fn redeem(&self, req: &CodeRedemption<'_>, now: Timestamp) -> Result<(), CodeError> {
        if let CodeState::Redeemed { .. } = self.state {
            return Err(CodeError::Replayed);
        }
        let invalid = |e| Err(CodeError::Invalid(e));
        if self.client_id != req.client_id {
            return invalid(invalid_grant("the code was issued to another client"));
        }
        if now >= self.expires_at {
            return invalid(invalid_grant("the code has expired"));
        }
        if req.redirect_uri.is_some_and(|uri| uri != self.redirect_uri) {
            return invalid(invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        let Some(verifier) = req.code_verifier else {
            return invalid(OAuthError::invalid_request("code_verifier is required"));
        };
        if !self.challenge.verify(verifier) {
            return invalid(invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshState {
    Current,
    /// Rotated at `at`; the successor is kept sealed under this token so that a retry inside
    /// the grace window gets the same successor.
    Rotated {
        at: Timestamp,
        sealed_successor: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub hash: Hashed<kind::Refresh>,
    pub grant_id: String,
    pub created_at: Timestamp,
    /// Idle expiry: each rotation gives the successor a new one.
    pub expires_at: Timestamp,
    pub state: RefreshState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome<'a> {
    /// Current token: rotate it.
    Rotate,
    /// Rotated moments ago: a second server or a lost response; hand out the same successor.
    Grace { sealed_successor: &'a str },
    /// Rotated long ago: someone replays an old token; revoke the whole grant.
    Reuse,
    /// Unused for too long.
    Expired,
}

impl RefreshToken {
    pub fn issue(
        hash: Hashed<kind::Refresh>,
        grant_id: &str,
        now: Timestamp,
        idle_ttl: i64,
    ) -> Self {
        Self {
            hash,
            grant_id: grant_id.to_owned(),
            created_at: now,
            expires_at: now + idle_ttl,
            state: RefreshState::Current,
        }
    }

    pub fn outcome(&self, now: Timestamp, grace_seconds: i64) -> RefreshOutcome<'_> {
        match &self.state {
            RefreshState::Current if now >= self.expires_at => RefreshOutcome::Expired,
            RefreshState::Current => RefreshOutcome::Rotate,
            RefreshState::Rotated {
                at,
                sealed_successor,
            } if now - at <= grace_seconds => RefreshOutcome::Grace { sealed_successor },
            RefreshState::Rotated { .. } => RefreshOutcome::Reuse,
        }
    }
}

fn pad(presented: &Secret<kind::Refresh>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"authgate:refresh-successor:");
    h.update(presented.expose().as_bytes());
    h.finalize().into()
}

fn xor_pad(presented: &Secret<kind::Refresh>, value: &str) -> Option<String> {
    let raw: [u8; 32] = URL_SAFE_NO_PAD.decode(value).ok()?.try_into().ok()?;
    let out: Vec<u8> = raw
        .iter()
        .zip(pad(presented).iter())
        .map(|(a, b)| a ^ b)
        .collect();
    Some(URL_SAFE_NO_PAD.encode(out))
}

/// Seals the successor of a rotated refresh token so that only a holder of the old token can
/// recover it (a one-time pad keyed by the old token): the grace window then returns the same
/// successor from any instance without keeping it in the clear.
pub fn seal_successor(
    presented: &Secret<kind::Refresh>,
    successor: &Secret<kind::Refresh>,
) -> Option<String> {
    xor_pad(presented, successor.expose())
}

pub fn unseal_successor(
    presented: &Secret<kind::Refresh>,
    sealed: &str,
) -> Option<Secret<kind::Refresh>> {
    xor_pad(presented, sealed).map(Secret::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::pkce;

    const NOW: Timestamp = 1_790_000_000;

    fn refresh(state: RefreshState) -> RefreshToken {
        RefreshToken {
            hash: Hashed::of("r"),
            grant_id: "g".into(),
            created_at: 0,
            expires_at: 100,
            state,
        }
    }

    fn authorization(client: &str, scope: &str, resource: &str) -> ClientAuthorization {
        ClientAuthorization {
            client_id: client.into(),
            redirect_uri: "https://a/cb".into(),
            state: None,
            code_challenge: CodeChallenge::from_stored("c".repeat(43)),
            scope: ScopeSet::parse(scope),
            resource: resource.into(),
            nonce: None,
            login: Default::default(),
        }
    }

    fn login(email: Option<&str>, at: Timestamp) -> Login {
        Login {
            subject: "sub".into(),
            email: email.map(Into::into),
            email_verified: email.map(|_| true),
            auth_time: at,
        }
    }

    #[test]
    fn a_new_authorization_continues_the_live_grant_and_widens_it() {
        let first = authorization("c", "mcp", "https://r/mcp");
        let grant = Grant::new("g".into(), &first, &login(None, NOW), NOW, 1000);
        let step_up = authorization("c", "admin mcp", "https://r/mcp");
        assert!(grant.is_continued_by("sub", &step_up, NOW + 10));
        let wider = grant.continued(&step_up, &login(Some("a@x"), NOW + 5), NOW + 10);
        assert_eq!(wider.id, "g", "the same grant");
        assert_eq!(wider.scope.to_string(), "admin mcp");
        assert_eq!(wider.expires_at, grant.expires_at, "no longer life");
        assert_eq!(wider.email.as_deref(), Some("a@x"));
        assert_eq!(wider.email_verified, Some(true));
        assert_eq!(wider.auth_time, Some(NOW + 5), "the latest login's time");
        let narrower = wider.continued(&first, &login(None, NOW + 15), NOW + 20);
        assert_eq!(
            narrower.scope.to_string(),
            "admin mcp",
            "never narrowed by a later request"
        );
        assert_eq!(narrower.email.as_deref(), Some("a@x"));
        assert_eq!(
            narrower.email_verified,
            Some(true),
            "kept with the email it was said of"
        );
        for (subject, other, at) in [
            ("other", step_up.clone(), NOW),
            ("sub", authorization("d", "mcp", "https://r/mcp"), NOW),
            ("sub", authorization("c", "mcp", "https://r/files"), NOW),
            ("sub", step_up.clone(), NOW + 1000),
        ] {
            assert!(!grant.is_continued_by(subject, &other, at));
        }
        let revoked = Grant {
            revoked_at: Some(NOW),
            ..grant
        };
        assert!(!revoked.is_continued_by("sub", &step_up, NOW + 1));
    }

    #[test]
    fn refresh_outcomes() {
        assert_eq!(
            refresh(RefreshState::Current).outcome(50, 30),
            RefreshOutcome::Rotate
        );
        assert_eq!(
            refresh(RefreshState::Current).outcome(100, 30),
            RefreshOutcome::Expired
        );
        let rotated = refresh(RefreshState::Rotated {
            at: 50,
            sealed_successor: "s".into(),
        });
        assert_eq!(
            rotated.outcome(80, 30),
            RefreshOutcome::Grace {
                sealed_successor: "s"
            }
        );
        assert_eq!(rotated.outcome(81, 30), RefreshOutcome::Reuse);
    }

    #[test]
    fn successor_sealing() {
        let old = Secret::new(URL_SAFE_NO_PAD.encode([7u8; 32]));
        let next = Secret::new(URL_SAFE_NO_PAD.encode([9u8; 32]));
        let sealed = seal_successor(&old, &next).unwrap();
        assert_ne!(sealed, next.expose());
        assert_eq!(
            unseal_successor(&old, &sealed).unwrap().expose(),
            next.expose()
        );
        let other = Secret::new("another");
        assert_ne!(
            unseal_successor(&other, &sealed).unwrap().expose(),
            next.expose()
        );
    }

    fn code(state: CodeState, challenge: &str) -> AuthorizationCode {
        AuthorizationCode {
            hash: Hashed::of("c"),
            grant_id: "g".into(),
            client_id: "c".into(),
            redirect_uri: "https://a/cb".into(),
            challenge: CodeChallenge::from_stored(challenge.to_owned()),
            nonce: None,
            created_at: NOW,
            expires_at: NOW + 100,
            state,
        }
    }

    #[test]
    fn code_checks() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let issued = code(CodeState::Issued, &pkce::s256(verifier));
        let ok = CodeRedemption {
            client_id: "c",
            redirect_uri: Some("https://a/cb"),
            code_verifier: Some(verifier),
        };
        let code_of = |r: Result<(), CodeError>| match r {
            Err(CodeError::Invalid(e)) => Some(e.code),
            _ => None,
        };
        assert!(issued.redeem(&ok, NOW + 99).is_ok());
        let no_uri = CodeRedemption {
            redirect_uri: None,
            ..ok
        };
        assert!(issued.redeem(&no_uri, NOW + 99).is_ok());
        assert_eq!(
            code_of(issued.redeem(&ok, NOW + 100)),
            Some(ErrorCode::InvalidGrant)
        );
        let other = CodeRedemption {
            client_id: "d",
            ..ok
        };
        assert_eq!(
            code_of(issued.redeem(&other, NOW)),
            Some(ErrorCode::InvalidGrant)
        );
        let other_uri = CodeRedemption {
            redirect_uri: Some("https://a/cb/"),
            ..ok
        };
        assert_eq!(
            code_of(issued.redeem(&other_uri, NOW)),
            Some(ErrorCode::InvalidGrant)
        );
        let no_verifier = CodeRedemption {
            code_verifier: None,
            ..ok
        };
        assert_eq!(
            code_of(issued.redeem(&no_verifier, NOW)),
            Some(ErrorCode::InvalidRequest)
        );
        let wrong = "x".repeat(43);
        let wrong_verifier = CodeRedemption {
            code_verifier: Some(&wrong),
            ..ok
        };
        assert_eq!(
            code_of(issued.redeem(&wrong_verifier, NOW)),
            Some(ErrorCode::InvalidGrant)
        );
        let used = code(CodeState::Redeemed { at: NOW }, &pkce::s256(verifier));
        assert_eq!(used.redeem(&ok, NOW), Err(CodeError::Replayed));
    }
}
