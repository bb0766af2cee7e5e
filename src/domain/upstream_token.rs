//! The user's tokens at the upstream provider, kept with a grant so that the MCP server behind
//! authgate can call the provider's APIs as the user (never with the client's authgate token:
//! that would be token passthrough). The rules here decide, from the stored times alone, whether
//! the access token can be handed out as it is, must be refreshed first, or is beyond saving.

use crate::clock::Timestamp;
use crate::oauth::secrets::{Secret, kind};

/// The longest head start a refresh takes on expiry: the MCP server may use the token for the
/// whole of a long tool call after it received it.
pub const MAX_REFRESH_MARGIN: i64 = 300;

/// How long one instance may hold the right to refresh a grant's tokens. Longer than the
/// upstream request's own time-out, so a slow refresh is never overtaken by a second one; short
/// enough that a crashed holder only delays the others this long.
pub const LEASE_SECONDS: i64 = 30;

/// Tokens as the provider's token endpoint answered: at the login, or at a refresh.
#[derive(Debug)]
pub struct UpstreamTokens {
    pub access_token: Secret<kind::UpstreamAccess>,
    /// `None` when the provider issued none (or, at a refresh, did not rotate it).
    pub refresh_token: Option<Secret<kind::UpstreamRefresh>>,
    /// `expires_in`, when the provider said.
    pub expires_in: Option<i64>,
}

impl UpstreamTokens {
    /// When the access token expires, for one obtained at `now`. A negative lifetime is the
    /// provider's error; it is taken as already expired rather than trusted.
    pub fn expires_at(&self, now: Timestamp) -> Option<Timestamp> {
        self.expires_in.map(|s| now.saturating_add(s.max(0)))
    }
}

/// When a stored access token was obtained and when it expires (`None`: the provider did not
/// say, so it is used until the provider refuses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub obtained_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

impl Lifetime {
    /// How long before expiry a refresh is due: a quarter of the token's lifetime, at most
    /// [`MAX_REFRESH_MARGIN`]. A fixed margin would refresh a short-lived token on every
    /// request (or before it is even stored).
    pub fn margin(&self) -> i64 {
        match self.expires_at {
            Some(exp) => ((exp - self.obtained_at).max(0) / 4).min(MAX_REFRESH_MARGIN),
            None => 0,
        }
    }

    pub fn expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|exp| now >= exp)
    }

    pub fn refresh_due(&self, now: Timestamp) -> bool {
        self.expires_at
            .is_some_and(|exp| now >= exp.saturating_sub(self.margin()))
    }

    /// Seconds left, for `expires_in` in a token-exchange answer.
    pub fn remaining(&self, now: Timestamp) -> Option<i64> {
        self.expires_at.map(|exp| (exp - now).max(0))
    }
}

/// What to do with a grant's stored tokens for a request at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The access token is good: hand it out.
    Use,
    /// Due for a refresh, and nobody else is refreshing: take the lease and refresh.
    Refresh,
    /// Expired while another instance holds the lease: wait for its result.
    Wait,
    /// Expired with no refresh token: nothing can renew it; the user must log in again.
    Reauthorize,
}

/// The decision, from the stored state alone. A token that is due but not yet expired is still
/// used while another instance refreshes it, or when there is no refresh token to do so.
pub fn plan(
    lifetime: &Lifetime,
    can_refresh: bool,
    lease_until: Option<Timestamp>,
    now: Timestamp,
) -> Plan {
    if !lifetime.refresh_due(now) {
        return Plan::Use;
    }
    let expired = lifetime.expired(now);
    if !can_refresh {
        return if expired {
            Plan::Reauthorize
        } else {
            Plan::Use
        };
    }
    let leased = lease_until.is_some_and(|until| until > now);
    match (leased, expired) {
        (false, _) => Plan::Refresh,
        (true, false) => Plan::Use,
        (true, true) => Plan::Wait,
    }
}

/// Which of a grant's two sealed tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Access,
    Refresh,
}

/// The associated data a token is sealed under: its grant and which token it is, so a sealed
/// value copied to another grant's row, or from one column to the other, does not open.
pub fn sealing_context(grant_id: &str, part: Part) -> String {
    let part = match part {
        Part::Access => "access",
        Part::Refresh => "refresh",
    };
    format!("authgate:upstream-token:v1:{part}:{grant_id}")
}

/// The associated data of a login's tokens waiting, sealed together, with the request
/// `pending_id` for its confirmation (never a grant's context: those start with the part's name).
pub fn waiting_sealing_context(pending_id: &str) -> String {
    format!("authgate:upstream-token:v1:waiting:{pending_id}")
}

/// A login's upstream tokens, sealed, waiting with its request for a confirmation. Ciphertext,
/// but kept out of logs all the same.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedWaitingTokens(String);

impl SealedWaitingTokens {
    pub fn from_stored(sealed: String) -> Self {
        Self(sealed)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SealedWaitingTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedWaitingTokens([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = 1_790_000_000;

    fn hour() -> Lifetime {
        Lifetime {
            obtained_at: NOW,
            expires_at: Some(NOW + 3600),
        }
    }

    #[test]
    fn margins_are_a_quarter_of_the_lifetime_at_most_five_minutes() {
        assert_eq!(hour().margin(), 300);
        let short = Lifetime {
            obtained_at: NOW,
            expires_at: Some(NOW + 8),
        };
        assert_eq!(short.margin(), 2);
        assert!(!short.refresh_due(NOW + 5));
        assert!(short.refresh_due(NOW + 6));
        let unknown = Lifetime {
            obtained_at: NOW,
            expires_at: None,
        };
        assert_eq!(unknown.margin(), 0);
        assert!(!unknown.refresh_due(NOW + 10 * 365 * 86_400));
        assert!(!unknown.expired(NOW + 10 * 365 * 86_400));
        let backwards = Lifetime {
            obtained_at: NOW,
            expires_at: Some(NOW - 10),
        };
        assert_eq!(backwards.margin(), 0);
        assert!(backwards.expired(NOW));
    }

    #[test]
    fn due_and_expired_times() {
        let l = hour();
        assert!(!l.refresh_due(NOW + 3299));
        assert!(l.refresh_due(NOW + 3300));
        assert!(!l.expired(NOW + 3599));
        assert!(l.expired(NOW + 3600));
        assert_eq!(l.remaining(NOW + 3000), Some(600));
        assert_eq!(l.remaining(NOW + 4000), Some(0));
    }

    #[test]
    fn plans() {
        let l = hour();
        let fresh = NOW + 10;
        let due = NOW + 3400;
        let expired = NOW + 3600;
        let lease = Some(expired + LEASE_SECONDS);
        assert_eq!(plan(&l, true, None, fresh), Plan::Use);
        assert_eq!(plan(&l, true, lease, fresh), Plan::Use);
        assert_eq!(plan(&l, true, None, due), Plan::Refresh);
        assert_eq!(
            plan(&l, true, lease, due),
            Plan::Use,
            "another instance is refreshing; the old token still works"
        );
        assert_eq!(plan(&l, true, lease, expired), Plan::Wait);
        assert_eq!(
            plan(&l, true, Some(expired), expired),
            Plan::Refresh,
            "a lease that has run out is taken over"
        );
        assert_eq!(plan(&l, false, None, due), Plan::Use);
        assert_eq!(plan(&l, false, None, expired), Plan::Reauthorize);
    }

    #[test]
    fn provider_lifetimes() {
        let t = |expires_in| UpstreamTokens {
            access_token: Secret::new("a"),
            refresh_token: None,
            expires_in,
        };
        assert_eq!(t(Some(60)).expires_at(NOW), Some(NOW + 60));
        assert_eq!(t(Some(-5)).expires_at(NOW), Some(NOW));
        assert_eq!(t(None).expires_at(NOW), None);
        assert!(!format!("{:?}", t(None)).contains("\"a\""));
    }

    #[test]
    fn sealing_contexts_differ_by_grant_and_part() {
        let a = sealing_context("g1", Part::Access);
        assert_ne!(a, sealing_context("g2", Part::Access));
        assert_ne!(a, sealing_context("g1", Part::Refresh));
        assert_eq!(a, "authgate:upstream-token:v1:access:g1");
        assert_ne!(
            waiting_sealing_context("g1"),
            sealing_context("waiting:g1", Part::Access)
        );
    }
}
