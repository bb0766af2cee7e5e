//! The upstream login: where a browser goes to prove who it is, and how what it brings back
//! becomes a verified identity. Two implementations: an OpenID Connect provider ([`oidc`]) and
//! the built-in development login ([`dev`]), which runs only on a loopback public URL.

pub mod dev;
pub mod oidc;

use async_trait::async_trait;

use crate::domain::identity::UpstreamIdentity;
use crate::domain::pending::UpstreamLeg;
use crate::domain::upstream_token::UpstreamTokens;
use crate::oauth::secrets::{Secret, kind};

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the upstream provider's discovery failed: {0}")]
    Discovery(String),
    #[error("the upstream token request failed: {0}")]
    Exchange(String),
    #[error("the upstream ID token was rejected: {0}")]
    IdToken(String),
    #[error("upstream configuration: {0}")]
    Config(String),
    /// What the browser brought back is not an answer at all (the person's mistake, not the
    /// provider's): the sentence says what to do.
    #[error("{0}")]
    Answer(&'static str),
}

/// Who logged in, and the provider's tokens for them (the development login has none).
#[derive(Debug)]
pub struct UpstreamLogin {
    pub identity: UpstreamIdentity,
    pub tokens: Option<UpstreamTokens>,
}

/// Why the provider gave no fresh tokens for a refresh token.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// `invalid_grant`: the refresh token was revoked or has expired. Only a new login gets new
    /// tokens.
    #[error("the upstream provider refused the refresh token")]
    Refused,
    /// Unreachable, another error, or an answer that could not be read: the tokens stay and the
    /// refresh may be tried again. The text never holds a token.
    #[error("the upstream refresh failed: {0}")]
    Failed(String),
}

/// Which routes bring the browser back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// `GET /oauth/callback` with the provider's code.
    Oidc,
    /// `GET/POST /dev/login`, a form asking for an email address.
    Development,
}

#[async_trait]
pub trait Upstream: Send + Sync {
    fn kind(&self) -> UpstreamKind;

    /// The issuer whose identities this login yields.
    fn issuer(&self) -> &str;

    /// Where the browser goes for this leg. `state` is the leg's state in the clear (it travels
    /// in the URL; the leg holds only its hash). `fresh`: the person must enter credentials
    /// again, whatever session they have at the provider.
    async fn login_url(
        &self,
        state: &str,
        leg: &UpstreamLeg,
        fresh: bool,
    ) -> Result<String, UpstreamError>;

    /// Verifies what the browser brought back (the provider's code, or the address typed into
    /// the development login) and returns who logged in, with the provider's tokens.
    async fn identify(
        &self,
        answer: &str,
        leg: &UpstreamLeg,
    ) -> Result<UpstreamLogin, UpstreamError>;

    /// New tokens for a refresh token from a login.
    async fn refresh(
        &self,
        refresh_token: &Secret<kind::UpstreamRefresh>,
    ) -> Result<UpstreamTokens, RefreshError>;
}
