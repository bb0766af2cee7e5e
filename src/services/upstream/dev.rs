//! The built-in development login: a form that asks for an email address and believes it. It is
//! only ever configured on a loopback public URL (see `config`), and the server warns loudly at
//! start-up that anyone can sign in as anyone.

use async_trait::async_trait;

use super::{RefreshError, Upstream, UpstreamError, UpstreamKind, UpstreamLogin};
use crate::domain::identity::UpstreamIdentity;
use crate::domain::pending::UpstreamLeg;
use crate::domain::upstream_token::UpstreamTokens;
use crate::oauth::secrets::{Secret, kind};

pub const DEV_LOGIN_PATH: &str = "/dev/login";
const DEV_ISSUER: &str = "authgate:development-login";

pub struct DevLogin {
    /// The absolute URL of the login form.
    form_url: url::Url,
}

impl DevLogin {
    pub fn new(issuer: &str) -> Result<Self, UpstreamError> {
        let form_url = url::Url::parse(&format!("{issuer}{DEV_LOGIN_PATH}"))
            .map_err(|e| UpstreamError::Config(e.to_string()))?;
        Ok(Self { form_url })
    }
}

#[async_trait]
impl Upstream for DevLogin {
    fn kind(&self) -> UpstreamKind {
        UpstreamKind::Development
    }

    fn issuer(&self) -> &str {
        DEV_ISSUER
    }

    /// The form always asks, so every login through it is fresh.
    async fn login_url(
        &self,
        state: &str,
        _: &UpstreamLeg,
        _fresh: bool,
    ) -> Result<String, UpstreamError> {
        let mut url = self.form_url.clone();
        url.query_pairs_mut().append_pair("state", state);
        Ok(url.into())
    }

    async fn identify(&self, email: &str, _: &UpstreamLeg) -> Result<UpstreamLogin, UpstreamError> {
        let email = email.trim().to_ascii_lowercase();
        if email.len() > 254
            || !email.contains('@')
            || email.starts_with('@')
            || email.ends_with('@')
        {
            return Err(UpstreamError::Answer("Enter an email address."));
        }
        Ok(UpstreamLogin {
            identity: UpstreamIdentity {
                issuer: DEV_ISSUER.to_owned(),
                subject: email.clone(),
                email: Some(email),
                email_verified: Some(true),
            },
            tokens: None,
        })
    }

    /// Never called: the development login hands out no tokens, and settings that keep
    /// upstream tokens require a real provider.
    async fn refresh(
        &self,
        _: &Secret<kind::UpstreamRefresh>,
    ) -> Result<UpstreamTokens, RefreshError> {
        Err(RefreshError::Failed(
            "the development login has no tokens to refresh".to_owned(),
        ))
    }
}
