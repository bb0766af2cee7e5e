//! The upstream OpenID Connect provider (Auth0 or any OIDC provider), used only to log people in,
//! through authgate's one static confidential client.

use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthType, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
};
use secrecy::ExposeSecret;
use tokio::sync::RwLock;

use async_trait::async_trait;

use super::{RefreshError, Upstream, UpstreamError, UpstreamKind, UpstreamLogin};
use crate::config::UpstreamConfig;
use crate::domain::identity::UpstreamIdentity;
use crate::domain::pending::UpstreamLeg;
use crate::domain::upstream_token::UpstreamTokens;
use crate::oauth::secrets::{Secret, kind};
use crate::telemetry::error_chain;

/// How long discovery (and the provider's keys) is reused before being fetched again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

pub struct OidcUpstream {
    config: UpstreamConfig,
    http: OidcHttp,
    discovered: RwLock<Option<(CoreProviderMetadata, Instant)>>,
}

impl OidcUpstream {
    pub fn new(config: UpstreamConfig) -> Result<Self, UpstreamError> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("authgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| UpstreamError::Config(e.to_string()))?;
        Ok(Self {
            config,
            http: OidcHttp(http),
            discovered: RwLock::new(None),
        })
    }

    async fn metadata(&self, force: bool) -> Result<CoreProviderMetadata, UpstreamError> {
        if !force
            && let Some((m, at)) = self.discovered.read().await.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| UpstreamError::Config(e.to_string()))?;
        let m = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| UpstreamError::Discovery(error_chain(&e)))?;
        *self.discovered.write().await = Some((m.clone(), Instant::now()));
        Ok(m)
    }

    /// Checks that discovery works (for start-up logs and `doctor`).
    pub async fn check(&self) -> Result<(), UpstreamError> {
        self.metadata(false).await.map(|_| ())
    }

    fn client(
        &self,
        metadata: CoreProviderMetadata,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        UpstreamError,
    > {
        let redirect = RedirectUrl::new(self.config.callback_url.clone())
            .map_err(|e| UpstreamError::Config(e.to_string()))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            Some(ClientSecret::new(
                self.config.client_secret.expose_secret().to_owned(),
            )),
        )
        .set_redirect_uri(redirect)
        .set_auth_type(if self.config.auth_method_basic {
            AuthType::BasicAuth
        } else {
            AuthType::RequestBody
        }))
    }

    /// The URL that sends the browser to the upstream login, with authgate's own state, nonce
    /// and PKCE challenge (and `prompt=login` for a `fresh` login). The MCP client's `resource`
    /// is never forwarded.
    async fn authorize_url(
        &self,
        state: &str,
        nonce: &str,
        pkce_verifier: &str,
        fresh: bool,
    ) -> Result<String, UpstreamError> {
        let client = self.client(self.metadata(false).await?)?;
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
            pkce_verifier.to_owned(),
        ));
        let state = state.to_owned();
        let nonce = nonce.to_owned();
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .set_pkce_challenge(challenge);
        for s in &self.config.scopes {
            if s != "openid" {
                req = req.add_scope(Scope::new(s.clone()));
            }
        }
        for (k, v) in &self.config.authorize_params {
            req = req.add_extra_param(k.clone(), v.clone());
        }
        // The operator's own `prompt` wins: a parameter sent twice is an invalid request.
        if fresh
            && !self
                .config
                .authorize_params
                .iter()
                .any(|(k, _)| k == "prompt")
        {
            req = req.add_prompt(openidconnect::core::CoreAuthPrompt::Login);
        }
        let (url, _, _) = req.url();
        Ok(url.to_string())
    }

    /// Redeems the upstream code and verifies the ID token (signature, issuer, audience, expiry,
    /// nonce). Keys are re-discovered once if the token was signed by a key not yet seen.
    async fn exchange(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<UpstreamLogin, UpstreamError> {
        let client = self.client(self.metadata(false).await?)?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| UpstreamError::Config(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| UpstreamError::Exchange(error_chain(&e)))?;
        use openidconnect::TokenResponse as _;
        let id_token = response
            .id_token()
            .ok_or_else(|| UpstreamError::IdToken("the token response has no id_token".into()))?;
        let nonce = Nonce::new(nonce.to_owned());
        let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(c) => c.clone(),
            Err(first) => {
                let fresh = self.client(self.metadata(true).await?)?;
                id_token
                    .claims(&fresh.id_token_verifier(), &nonce)
                    .map_err(|_| UpstreamError::IdToken(first.to_string()))?
                    .clone()
            }
        };
        Ok(UpstreamLogin {
            identity: UpstreamIdentity {
                issuer: self.config.issuer.clone(),
                subject: claims.subject().to_string(),
                email: claims.email().map(|e| e.to_string()),
                email_verified: claims.email_verified(),
            },
            tokens: Some(tokens_of(&response)),
        })
    }

    async fn refresh_tokens(
        &self,
        refresh_token: &Secret<kind::UpstreamRefresh>,
    ) -> Result<UpstreamTokens, RefreshError> {
        let failed = |e: UpstreamError| RefreshError::Failed(e.to_string());
        let client = self
            .client(self.metadata(false).await.map_err(failed)?)
            .map_err(failed)?;
        let token = openidconnect::RefreshToken::new(refresh_token.expose().to_owned());
        let response = client
            .exchange_refresh_token(&token)
            .map_err(|e| RefreshError::Failed(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(refresh_error)?;
        Ok(tokens_of(&response))
    }
}

/// The tokens of a token response (the ID token is verified separately, at the login).
fn tokens_of(response: &openidconnect::core::CoreTokenResponse) -> UpstreamTokens {
    use openidconnect::OAuth2TokenResponse as _;
    UpstreamTokens {
        access_token: Secret::new(response.access_token().secret().clone()),
        refresh_token: response
            .refresh_token()
            .map(|r| Secret::new(r.secret().clone())),
        expires_in: response
            .expires_in()
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
    }
}

/// Only `invalid_grant` means the refresh token is dead. The provider's description and an
/// unreadable body are left out: a parse error can quote the body, which holds tokens.
fn refresh_error(
    e: openidconnect::RequestTokenError<
        HttpError,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> RefreshError {
    use openidconnect::RequestTokenError;
    use openidconnect::core::CoreErrorResponseType;
    match e {
        RequestTokenError::ServerResponse(r)
            if *r.error() == CoreErrorResponseType::InvalidGrant =>
        {
            RefreshError::Refused
        }
        RequestTokenError::ServerResponse(r) => {
            RefreshError::Failed(format!("the provider answered {}", r.error()))
        }
        RequestTokenError::Request(e) => RefreshError::Failed(error_chain(&e)),
        RequestTokenError::Parse(..) => {
            RefreshError::Failed("the provider's answer could not be read".to_owned())
        }
        RequestTokenError::Other(why) => RefreshError::Failed(why),
    }
}

#[async_trait]
impl Upstream for OidcUpstream {
    fn kind(&self) -> UpstreamKind {
        UpstreamKind::Oidc
    }

    fn issuer(&self) -> &str {
        &self.config.issuer
    }

    async fn login_url(
        &self,
        state: &str,
        leg: &UpstreamLeg,
        fresh: bool,
    ) -> Result<String, UpstreamError> {
        self.authorize_url(state, &leg.nonce, &leg.verifier, fresh)
            .await
    }

    async fn identify(
        &self,
        code: &str,
        leg: &UpstreamLeg,
    ) -> Result<UpstreamLogin, UpstreamError> {
        self.exchange(code, &leg.verifier, &leg.nonce).await
    }

    async fn refresh(
        &self,
        refresh_token: &Secret<kind::UpstreamRefresh>,
    ) -> Result<UpstreamTokens, RefreshError> {
        self.refresh_tokens(refresh_token).await
    }
}

/// openidconnect's HTTP client, on the crate's own reqwest 0.13 (redirects off): openidconnect's
/// own `reqwest` feature pins reqwest 0.12, which would put a second HTTP and TLS stack in the
/// binary.
struct OidcHttp(reqwest::Client);

impl<'c> openidconnect::AsyncHttpClient<'c> for OidcHttp {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, HttpError>>
                + Send
                + 'c,
        >,
    >;

    fn call(&'c self, req: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(send(&self.0, req))
    }
}

async fn send(
    client: &reqwest::Client,
    req: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let (parts, body) = req.into_parts();
    let resp = client
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let mut builder = http::Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        builder = builder.header(k, v);
    }
    Ok(builder.body(resp.bytes().await?.to_vec())?)
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Reqwest(#[from] reqwest::Error),
    #[error(transparent)]
    Http(#[from] http::Error),
}
