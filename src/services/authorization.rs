//! The authorization flow, from an accepted `/authorize` request to the answer sent to the
//! client: consent, the upstream login, the login policy, a session, the code. Each step that
//! writes commits all it writes together, so a failure leaves the request where it was and the
//! person can simply try again. One match on the request's [`Purpose`] decides how a login ends.

use crate::clock::Timestamp;
use crate::domain::consent::{ConsentAsk, after_approval};
use crate::domain::grant::{AuthorizationCode, Grant, Login};
use crate::domain::identity::{UpstreamIdentity, derive_subject};
use crate::domain::pending::{
    ClientAuthorization, Confirmation, LoginConstraint, PendingAuthorization, Purpose, Return,
    Stage, Unusable, UpstreamLeg,
};
use crate::domain::upstream_token::UpstreamTokens;
use crate::keys::TokenRejection;
use crate::oauth::oidc::{self, OpenIdRequest};
use crate::oauth::pkce::CodeChallenge;
use crate::oauth::redirect::find_matching;
use crate::oauth::request::AuthorizationRequest;
use crate::oauth::scope::ScopeSet;
use crate::oauth::secrets::{Hashed, Secret, kind};
use crate::oauth::url_rules::is_loopback_url;
use crate::oauth::{ErrorCode, OAuthError, resource};
use crate::services::audit::{self, Kind, Outcome};
use crate::services::clients::{self, Client, ResolveError};
use crate::services::upstream::{UpstreamError, UpstreamLogin};
use crate::services::upstream_tokens;
use crate::state::App;
use crate::store::{ConsentRecord, Repo, SessionRecord, StoreError};
use crate::telemetry::names;

/// An answer for the client's redirect URI (RFC 6749 §4.1.2, with RFC 9207's `iss`): a code or
/// an error. Only built once the redirect URI is trusted.
#[derive(Debug)]
pub struct ClientAnswer {
    pub redirect_uri: String,
    pub state: Option<String>,
    pub result: Result<Secret<kind::Code>, OAuthError>,
}

impl ClientAnswer {
    fn to(request: &ClientAuthorization, result: Result<Secret<kind::Code>, OAuthError>) -> Self {
        Self {
            redirect_uri: request.redirect_uri.clone(),
            state: request.state.clone(),
            result,
        }
    }

    /// The redirect URI with the answer's parameters, `state` and `iss` appended.
    pub fn location(&self, issuer: &str) -> String {
        let Ok(mut url) = url::Url::parse(&self.redirect_uri) else {
            return self.redirect_uri.clone();
        };
        {
            let mut q = url.query_pairs_mut();
            match &self.result {
                Ok(code) => {
                    q.append_pair("code", code.expose());
                }
                Err(e) => {
                    q.append_pair("error", e.code.as_str());
                    q.append_pair("error_description", &e.description);
                }
            }
            if let Some(s) = &self.state {
                q.append_pair("state", s);
            }
            q.append_pair("iss", issuer);
        }
        url.into()
    }
}

/// An `/authorize` request whose client and redirect URI are trusted and whose parameters are
/// valid.
#[derive(Debug)]
pub struct Accepted {
    pub client: Client,
    pub request: ClientAuthorization,
    pub prompt: ScopeSet,
}

/// Why an `/authorize` request goes no further.
#[derive(Debug)]
pub enum Rejected {
    /// The client is unknown (the detail says why): only the person can be told.
    UnknownClient(OAuthError),
    /// The redirect URI is not one the client registered: only the person can be told.
    UntrustedRedirect,
    /// The redirect URI is trusted, so the client is told.
    ToClient(ClientAnswer),
    Store(StoreError),
}

/// Checks the client and its redirect URI first (until both are trusted nothing is sent
/// anywhere), then the request itself.
pub async fn accept(app: &App, req: AuthorizationRequest) -> Result<Accepted, Rejected> {
    let client = match clients::resolve(app, &req.client_id).await {
        Ok(c) => c,
        Err(ResolveError::Unknown(e)) => return Err(Rejected::UnknownClient(e)),
        Err(ResolveError::Store(e)) => return Err(Rejected::Store(e)),
    };
    let redirect_uri = match &req.redirect_uri {
        Some(r) => find_matching(&client.metadata.redirect_uris, r).map(|_| r.clone()),
        None => match client.metadata.redirect_uris.as_slice() {
            [only] if !is_loopback_url(only) => Some(only.clone()),
            _ => None,
        },
    };
    let Some(redirect_uri) = redirect_uri else {
        return Err(Rejected::UntrustedRedirect);
    };
    let refuse = |e: OAuthError| {
        Rejected::ToClient(ClientAnswer {
            redirect_uri: redirect_uri.clone(),
            state: req.state.clone(),
            result: Err(e),
        })
    };
    // `state` is stored with the request and sent back verbatim: control characters (a NUL
    // cannot even be stored in PostgreSQL) have no place in it.
    if req
        .state
        .as_deref()
        .is_some_and(|s| s.chars().any(char::is_control))
    {
        return Err(refuse(OAuthError::invalid_request(
            "state must not contain control characters",
        )));
    }
    if req.response_type.as_deref() != Some("code") {
        return Err(refuse(OAuthError::new(
            ErrorCode::UnsupportedResponseType,
            "response_type must be code",
        )));
    }
    if !client
        .metadata
        .allows_grant(crate::oauth::client::GRANT_AUTHORIZATION_CODE)
    {
        return Err(refuse(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not use the authorization code grant",
        )));
    }
    let challenge = CodeChallenge::parse(
        req.code_challenge.as_deref(),
        req.code_challenge_method.as_deref(),
    )
    .map_err(&refuse)?;
    let uris: Vec<String> = app
        .settings
        .resources
        .iter()
        .map(|r| r.uri.clone())
        .collect();
    let resource = resource::select(req.resource.as_deref(), &uris).map_err(&refuse)?;
    // Scopes are those of the resource asked for; those only its tool rules need (step-up) are
    // granted when asked for, never by default.
    let Some(target) = app.settings.resources.iter().find(|r| r.uri == resource) else {
        return Err(refuse(OAuthError::new(
            ErrorCode::InvalidTarget,
            "unknown resource",
        )));
    };
    let scope = oidc::granted_scope(&req.scope, &target.offered, &target.scopes);
    let (nonce, login) = if scope.contains(oidc::OPENID) {
        openid_request(app, &req, &client.id)
            .await
            .map_err(&refuse)?
    } else {
        (None, LoginConstraint::default())
    };
    Ok(Accepted {
        request: ClientAuthorization {
            client_id: client.id.clone(),
            redirect_uri,
            state: req.state,
            code_challenge: challenge,
            scope,
            resource,
            nonce,
            login,
        },
        client,
        prompt: req.prompt,
    })
}

/// An OpenID request's `nonce`, and which login may answer it: `max_age` and `prompt=login` ask
/// for a recent one, `id_token_hint` for the person it names.
async fn openid_request(
    app: &App,
    req: &AuthorizationRequest,
    client_id: &str,
) -> Result<(Option<String>, LoginConstraint), OAuthError> {
    let now = app.clock.now();
    let openid = OpenIdRequest::parse(
        req.nonce.as_deref(),
        req.max_age.as_deref(),
        req.prompt.contains("login"),
        now,
    )?;
    let mut login = LoginConstraint {
        not_before: openid.login_not_before,
        subject: None,
    };
    if let Some(hint) = &req.id_token_hint {
        match hinted_subject(app, hint, client_id, now).await? {
            Some(subject) => login.subject = Some(subject),
            None => login.not_before = Some(now),
        }
    }
    Ok((openid.nonce, login))
}

/// Who an `id_token_hint` names. A hint that is not an ID token this server issued to this
/// client is refused (OIDC Core leaves it open; guessing past a forged or misdirected hint could
/// hand the client someone else's code). One signed by a key since dropped from the JWKS cannot
/// be checked, genuine or not: `None`, and the person must log in again.
async fn hinted_subject(
    app: &App,
    hint: &str,
    client_id: &str,
    now: Timestamp,
) -> Result<Option<String>, OAuthError> {
    let issuer = &app.settings.issuer;
    let verified = match app.keys.verify_id_token_hint(hint, issuer) {
        // Another instance may have rotated the keys since this one loaded them.
        Err(TokenRejection::UnknownKey) if app.keys.reload_if_stale(now).await => {
            app.keys.verify_id_token_hint(hint, issuer)
        }
        other => other,
    };
    match verified {
        Ok(claims) if claims.aud == client_id => Ok(Some(claims.sub)),
        Ok(_) => Err(OAuthError::invalid_request(
            "id_token_hint was issued to another client",
        )),
        Err(TokenRejection::UnknownKey) => Ok(None),
        Err(_) => Err(OAuthError::invalid_request(
            "id_token_hint is not an ID token issued by this server",
        )),
    }
}

/// Where an accepted request goes next.
#[derive(Debug)]
pub enum Started {
    /// Answered without asking: approved before, or `prompt=none` with nothing approved.
    Answered(ClientAnswer),
    /// Approved before, but the resource needs the user's upstream tokens, which only a login
    /// at the provider brings: straight there (the browser binding must be set).
    ToUpstream(String),
    /// The consent page, for the pending request `id` (its id in the clear, for the form), asking
    /// for what the signed-in person (if any) has not allowed this client yet, and the browser's
    /// session if it may answer the request.
    Consent {
        id: Secret<kind::Pending>,
        request: Box<ClientAuthorization>,
        client: Box<Client>,
        session: Option<SessionRecord>,
        ask: ConsentAsk,
    },
}

/// What a person allowed a client so far (`None`: nothing yet).
async fn approved(
    app: &App,
    subject: &str,
    client_id: &str,
) -> Result<Option<ScopeSet>, StoreError> {
    let consent = app.store.get_consent(subject, client_id).await?;
    Ok(consent.map(|c| ScopeSet::parse(&c.scope)))
}

pub async fn start(
    app: &App,
    accepted: Accepted,
    session: Option<&SessionRecord>,
    browser: Hashed<kind::Browser>,
) -> Result<Started, FlowError> {
    let Accepted {
        client,
        request,
        prompt,
    } = accepted;
    let asks_again = prompt.contains("consent") || prompt.contains("login");
    let session = session.filter(|s| request.login.admits(&s.subject, s.created_at));
    let provider_login = needs_provider_login(app, &request);
    let fresh = request.login.wants_fresh_login();
    let approved = match session {
        Some(s) => approved(app, &s.subject, &client.id).await?,
        None => None,
    };
    let ask = ConsentAsk::of(&request.scope, approved.as_ref());
    let mut go_upstream = false;
    if let Some(session) = session
        && !asks_again
        && approved.is_some()
        && ask.is_covered()
    {
        if !provider_login {
            let tx = app.store.begin().await?;
            let code = issue_code(app, &*tx, &request, &Who::of_session(session), None).await?;
            tx.commit().await?;
            return Ok(Started::Answered(ClientAnswer::to(&request, Ok(code))));
        }
        go_upstream = true;
    }
    if prompt.contains("none") {
        let code = if session.is_none() || go_upstream {
            ErrorCode::LoginRequired
        } else {
            ErrorCode::ConsentRequired
        };
        let error = OAuthError::new(code, "user interaction is required");
        return Ok(Started::Answered(ClientAnswer::to(&request, Err(error))));
    }
    let id = Secret::<kind::Pending>::new(app.random.token());
    let pending =
        PendingAuthorization::authorize(id.hash(), browser, request.clone(), app.clock.now());
    if go_upstream {
        let (state, leg) = new_leg(app);
        let at_upstream = pending
            .to_upstream(leg.clone())
            .map_err(|_| FlowError::Unusable(Unusable::AlreadyDone))?;
        app.store.insert_pending(&at_upstream).await?;
        let url = app.upstream.login_url(&state, &leg, fresh).await?;
        return Ok(Started::ToUpstream(url));
    }
    app.store.insert_pending(&pending).await?;
    metrics::counter!(names::AUTHORIZATIONS, "outcome" => "consent_shown").increment(1);
    Ok(Started::Consent {
        id,
        request: Box::new(request),
        client: Box::new(client),
        session: session.cloned(),
        ask,
    })
}

/// Why a browser's step in the flow cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("unknown or expired request")]
    Unknown,
    #[error("request not usable: {0:?}")]
    Unusable(Unusable),
    /// A login answer for a request that is not waiting for one.
    #[error("the request is not waiting for a login")]
    NotAtUpstream,
    /// The answer names another provider than the one configured.
    #[error("the answer came from another issuer")]
    WrongIssuer,
    /// The person cancelled at the provider, or it reported an error (account logins).
    #[error("the sign-in was cancelled")]
    Cancelled,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The login policy refused the person; the sentence is theirs to read.
    #[error("refused by the login policy")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the browser goes after a step.
#[derive(Debug)]
pub enum Next {
    ToClient(ClientAnswer),
    ToUpstream(String),
    ToAccount(String),
    /// A login came back without the binding cookie: the consent page again, for the person
    /// who logged in, with a token only this browser gets.
    Confirm(Box<Confirm>),
}

/// The page that confirms a login which came back without the binding cookie.
#[derive(Debug)]
pub struct Confirm {
    pub token: Secret<kind::Confirmation>,
    pub client: Client,
    pub request: ClientAuthorization,
    pub ask: ConsentAsk,
    /// The account that logged in, as shown to the person.
    pub account: String,
}

/// What the person decided on the consent page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Approve,
    Deny,
}

/// The pending request `id` refers to, if this browser may continue it now.
async fn usable(
    app: &App,
    id: &Hashed<kind::Pending>,
    browser: Option<&Hashed<kind::Browser>>,
) -> Result<PendingAuthorization, FlowError> {
    let pending = app.store.get_pending(id).await?.ok_or(FlowError::Unknown)?;
    pending
        .check(browser, app.clock.now())
        .map_err(FlowError::Unusable)?;
    Ok(pending)
}

/// The consent form: deny answers the client at once; approve finishes with the browser's
/// session, or sends it to log in first.
pub async fn consent(
    app: &App,
    request: &str,
    browser: Option<&Hashed<kind::Browser>>,
    decision: Decision,
    session: Option<&SessionRecord>,
) -> Result<Next, FlowError> {
    let pending = usable(app, &Hashed::of(request), browser).await?;
    let Some(client_request) = pending.client_request() else {
        return Err(FlowError::Unknown);
    };
    let outcome = match decision {
        Decision::Approve => Outcome::Approved,
        Decision::Deny => Outcome::Denied,
    };
    let mut event = audit::entry(app, Kind::Consent, outcome)
        .client(&client_request.client_id)
        .resource(&client_request.resource)
        .detail(&format!("scope: {}", client_request.scope));
    if let Some(s) = session {
        event = event.user(&s.subject, s.email.as_deref());
    }
    event.record();
    match (decision, session) {
        (Decision::Deny, _) => deny(app, &pending, client_request).await,
        (Decision::Approve, Some(session))
            if client_request
                .login
                .admits(&session.subject, session.created_at) =>
        {
            if needs_provider_login(app, client_request) {
                // Only a login at the provider brings the upstream tokens the resource needs.
                to_upstream(app, &pending, client_request.login.wants_fresh_login()).await
            } else {
                let who = Who::of_session(session);
                finish(app, &pending, &who, None, Proof::Session).await
            }
        }
        // Too old a login, or someone other than the client named: the provider must ask.
        (Decision::Approve, Some(_)) => to_upstream(app, &pending, true).await,
        (Decision::Approve, None) => {
            to_upstream(app, &pending, client_request.login.wants_fresh_login()).await
        }
    }
}

async fn deny(
    app: &App,
    pending: &PendingAuthorization,
    request: &ClientAuthorization,
) -> Result<Next, FlowError> {
    metrics::counter!(names::AUTHORIZATIONS, "outcome" => "denied").increment(1);
    if !app.store.finish_pending(&pending.id).await? {
        return Err(FlowError::Unusable(Unusable::AlreadyDone));
    }
    let error = OAuthError::new(ErrorCode::AccessDenied, "the user denied the request");
    Ok(Next::ToClient(ClientAnswer::to(request, Err(error))))
}

/// The confirmation form of a login that came back without the binding cookie. Its token is
/// the binding: it was handed only to the browser the login came back to.
pub async fn confirm(app: &App, token: &str, decision: Decision) -> Result<Next, FlowError> {
    let pending = app
        .store
        .get_pending_by_confirmation(&Hashed::of(token))
        .await?
        .ok_or(FlowError::Unknown)?;
    let confirmation = pending
        .awaiting_confirmation(app.clock.now())
        .map_err(FlowError::Unusable)?;
    let Some(request) = pending.client_request() else {
        return Err(FlowError::Unknown);
    };
    match decision {
        Decision::Deny => deny(app, &pending, request).await,
        Decision::Approve => {
            // The confirmation keeps who logged in, not what the provider said of the email nor
            // the minute of the login: unverified, and the request's start, are the safe reading.
            let who = Who {
                subject: confirmation.subject.clone(),
                email: confirmation.email.clone(),
                email_verified: None,
                auth_time: pending.created_at,
            };
            let tokens = confirmation
                .upstream_tokens
                .as_ref()
                .map(|sealed| {
                    upstream_tokens::open_waiting(app, &pending.id, sealed, app.clock.now())
                })
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("waiting upstream tokens: {e}")))?;
            finish(app, &pending, &who, None, Proof::Login(tokens.as_ref())).await
        }
    }
}

/// A fresh leg of the upstream login: its state in the clear (for the URL) and the leg.
fn new_leg(app: &App) -> (String, UpstreamLeg) {
    let state = app.random.token();
    let leg = UpstreamLeg {
        state: Hashed::of(&state),
        nonce: app.random.token(),
        verifier: app.random.token(),
    };
    (state, leg)
}

/// Approved without a session that may answer: off to log in (`fresh`: the provider must ask
/// for credentials again, not recognise its own session). A double submit replaces the leg, so
/// the browser's last navigation is the one that works.
async fn to_upstream(
    app: &App,
    pending: &PendingAuthorization,
    fresh: bool,
) -> Result<Next, FlowError> {
    let (state, leg) = new_leg(app);
    pending
        .to_upstream(leg.clone())
        .map_err(|_| FlowError::Unusable(Unusable::AlreadyDone))?;
    if !app.store.set_pending_upstream(&pending.id, &leg).await? {
        return Err(FlowError::Unusable(Unusable::AlreadyDone));
    }
    Ok(Next::ToUpstream(
        app.upstream.login_url(&state, &leg, fresh).await?,
    ))
}

/// Not logged in on the account page: the same upstream login, ending on that page.
pub async fn start_account_login(
    app: &App,
    browser: Hashed<kind::Browser>,
    return_to: String,
) -> Result<String, FlowError> {
    let (state, leg) = new_leg(app);
    let id = Hashed::of(&app.random.token());
    let pending =
        PendingAuthorization::account_login(id, browser, return_to, leg.clone(), app.clock.now());
    app.store.insert_pending(&pending).await?;
    Ok(app.upstream.login_url(&state, &leg, false).await?)
}

/// The pending request a login leg's `state` belongs to, if this browser may finish it now, and
/// how the browser is tied to it.
pub async fn at_upstream(
    app: &App,
    state: &str,
    browser: Option<&Hashed<kind::Browser>>,
) -> Result<(PendingAuthorization, Return), FlowError> {
    let pending = app
        .store
        .get_pending_by_upstream_state(&Hashed::of(state))
        .await?
        .ok_or(FlowError::Unknown)?;
    let returned = pending
        .check_return(browser, app.clock.now())
        .map_err(FlowError::Unusable)?;
    if !matches!(pending.stage, Stage::AtUpstream(_)) {
        return Err(FlowError::NotAtUpstream);
    }
    Ok((pending, returned))
}

/// What the browser brought back from the upstream login.
#[derive(Debug, Clone, Copy)]
pub enum UpstreamAnswer<'a> {
    /// The provider's code (or the development login's address), from the issuer named, if any.
    Answer {
        answer: &'a str,
        issuer: Option<&'a str>,
    },
    /// The provider reported an error (or sent nothing usable).
    Failed { issuer: Option<&'a str> },
}

/// How a finished login continues: where to, and the new session to set.
#[derive(Debug)]
pub struct Finished {
    pub next: Next,
    pub session: Option<Secret<kind::Session>>,
}

/// The end of the upstream leg: verify who logged in, apply the login policy, open a session
/// and finish the request.
pub async fn upstream_returned(
    app: &App,
    state: &str,
    browser: Option<&Hashed<kind::Browser>>,
    answer: UpstreamAnswer<'_>,
) -> Result<Finished, FlowError> {
    let (pending, returned) = at_upstream(app, state, browser).await?;
    let (UpstreamAnswer::Answer { issuer, .. } | UpstreamAnswer::Failed { issuer }) = answer;
    if issuer.is_some_and(|iss| iss != app.upstream.issuer()) {
        return Err(FlowError::WrongIssuer);
    }
    let Some(leg) = pending.upstream_leg() else {
        return Err(FlowError::NotAtUpstream);
    };
    let UpstreamAnswer::Answer { answer, .. } = answer else {
        return cancelled(app, &pending).await;
    };
    let started = std::time::Instant::now();
    let identified = app.upstream.identify(answer, leg).await;
    metrics::histogram!(names::UPSTREAM_LOGIN_SECONDS).record(started.elapsed().as_secs_f64());
    let login = identified.inspect_err(|e| {
        tracing::warn!(error = %e, "upstream login failed");
        metrics::counter!(names::AUTHORIZATIONS, "outcome" => "upstream_failed").increment(1);
    })?;
    let UpstreamLogin { identity, tokens } = login;
    let who = admit(app, &pending, identity).await?;
    match returned {
        Return::SameBrowser => log_in(app, &pending, who, tokens.as_ref()).await,
        Return::WithoutCookie => to_confirmation(app, &pending, who, tokens.as_ref()).await,
    }
}

/// Cancelled at the provider: the client hears `access_denied`; an account login just ends.
async fn cancelled(app: &App, pending: &PendingAuthorization) -> Result<Finished, FlowError> {
    app.store.finish_pending(&pending.id).await?;
    let Some(request) = pending.client_request() else {
        return Err(FlowError::Cancelled);
    };
    let error = OAuthError::new(
        ErrorCode::AccessDenied,
        "the sign-in was cancelled or failed at the identity provider",
    );
    Ok(Finished {
        next: Next::ToClient(ClientAnswer::to(request, Err(error))),
        session: None,
    })
}

/// A logged-in person: authgate's subject, what the login said of the email, and when it was.
#[derive(Debug, Clone)]
struct Who {
    subject: String,
    email: Option<String>,
    email_verified: Option<bool>,
    auth_time: Timestamp,
}

impl Who {
    fn of_session(session: &SessionRecord) -> Self {
        Self {
            subject: session.subject.clone(),
            email: session.email.clone(),
            email_verified: session.email_verified,
            auth_time: session.created_at,
        }
    }

    fn login(&self) -> Login {
        Login {
            subject: self.subject.clone(),
            email: self.email.clone(),
            email_verified: self.email_verified,
            auth_time: self.auth_time,
        }
    }
}

/// The login policy: who the upstream identity is, or the request ends refused.
async fn admit(
    app: &App,
    pending: &PendingAuthorization,
    identity: UpstreamIdentity,
) -> Result<Who, FlowError> {
    let client_id = pending.client_request().map(|r| r.client_id.as_str());
    if let Err(why) = app.settings.login_policy.check(&identity) {
        tracing::info!(upstream.issuer = %identity.issuer, "login refused by policy");
        let sub = derive_subject(&identity.issuer, &identity.subject);
        audit::entry(app, Kind::Login, Outcome::Refused)
            .user(&sub, identity.email.as_deref())
            .client_if(client_id)
            .detail("refused by the login policy")
            .record();
        app.store.finish_pending(&pending.id).await?;
        metrics::counter!(names::AUTHORIZATIONS, "outcome" => "refused_by_policy").increment(1);
        return Err(FlowError::Refused(why));
    }
    Ok(Who {
        subject: derive_subject(&identity.issuer, &identity.subject),
        email: identity.email,
        email_verified: identity.email_verified,
        auth_time: app.clock.now(),
    })
}

/// Back in the browser that approved: the session and the request's end, together.
async fn log_in(
    app: &App,
    pending: &PendingAuthorization,
    who: Who,
    upstream_tokens: Option<&UpstreamTokens>,
) -> Result<Finished, FlowError> {
    let now = app.clock.now();
    let value = Secret::<kind::Session>::new(app.random.token());
    let session = SessionRecord {
        id: value.hash(),
        subject: who.subject.clone(),
        email: who.email.clone(),
        email_verified: who.email_verified,
        created_at: now,
        expires_at: now + app.settings.session_ttl,
    };
    let next = finish(
        app,
        pending,
        &who,
        Some(&session),
        Proof::Login(upstream_tokens),
    )
    .await?;
    tracing::info!(user.sub = %session.subject, "user logged in");
    let client_id = pending.client_request().map(|r| r.client_id.as_str());
    audit::entry(app, Kind::Login, Outcome::Ok)
        .user(&session.subject, session.email.as_deref())
        .client_if(client_id)
        .record();
    Ok(Finished {
        next,
        session: Some(value),
    })
}

/// Whether a code for this request needs a login at the provider now: its resource hands the
/// user's upstream tokens to the MCP server, and only a login brings them.
fn needs_provider_login(app: &App, request: &ClientAuthorization) -> bool {
    app.settings
        .upstream_token_resource(&request.resource)
        .is_some()
}

/// How the person finishing a request is known.
enum Proof<'a> {
    /// An existing session.
    Session,
    /// A login just now (its session is new), with the provider's tokens if it gave any.
    Login(Option<&'a UpstreamTokens>),
}

/// Back without the binding cookie: nothing finishes and no session is opened (see
/// [`PendingAuthorization::check_return`]); the request waits for this browser to confirm, as
/// the person who logged in, on a page whose token only it gets.
async fn to_confirmation(
    app: &App,
    pending: &PendingAuthorization,
    who: Who,
    tokens: Option<&UpstreamTokens>,
) -> Result<Finished, FlowError> {
    let Some(request) = pending.client_request() else {
        return Err(FlowError::Unusable(Unusable::OtherBrowser));
    };
    let client = match clients::resolve(app, &request.client_id).await {
        Ok(c) => c,
        Err(ResolveError::Unknown(_)) => return Err(FlowError::Unknown),
        Err(ResolveError::Store(e)) => return Err(e.into()),
    };
    // A resource that hands the user's upstream tokens to its MCP server refuses a grant without
    // them, so the login's tokens wait, sealed with the request, for the confirmation to hand
    // them to the grant; without them a webview would go round the login for ever.
    let upstream_tokens = match tokens {
        Some(t) if needs_provider_login(app, request) => Some(
            upstream_tokens::seal_waiting(app, &pending.id, t, app.clock.now())
                .map_err(|e| StoreError::Corrupt(format!("waiting upstream tokens: {e}")))?,
        ),
        _ => None,
    };
    let token = Secret::<kind::Confirmation>::new(app.random.token());
    let confirmation = Confirmation {
        token: token.hash(),
        subject: who.subject.clone(),
        email: who.email.clone(),
        upstream_tokens,
    };
    pending
        .to_confirmation(confirmation.clone())
        .map_err(|_| FlowError::NotAtUpstream)?;
    if !app
        .store
        .set_pending_confirmation(&pending.id, &confirmation)
        .await?
    {
        return Err(FlowError::Unusable(Unusable::AlreadyDone));
    }
    let approved = approved(app, &who.subject, &request.client_id).await?;
    tracing::info!(user.sub = %who.subject, "login came back without the browser cookie; asking this browser to confirm");
    metrics::counter!(names::AUTHORIZATIONS, "outcome" => "confirmation_shown").increment(1);
    Ok(Finished {
        next: Next::Confirm(Box::new(Confirm {
            token,
            client,
            request: request.clone(),
            ask: ConsentAsk::of(&request.scope, approved.as_ref()),
            account: who.email.unwrap_or(who.subject),
        })),
        session: None,
    })
}

/// Ends a request for a logged-in person, exactly once: the session (when new), the request's
/// end and, for a client, the approval, the grant, its upstream tokens and the code are one
/// unit of work.
async fn finish(
    app: &App,
    pending: &PendingAuthorization,
    who: &Who,
    new_session: Option<&SessionRecord>,
    proof: Proof<'_>,
) -> Result<Next, FlowError> {
    pending
        .finish()
        .map_err(|_| FlowError::Unusable(Unusable::AlreadyDone))?;
    let keep = match (&pending.purpose, &proof) {
        (Purpose::Authorize(request), proof) if needs_provider_login(app, request) => match proof {
            Proof::Login(Some(tokens)) => Some(*tokens),
            // Unreachable by the flow (such requests always go to the provider): refused
            // rather than a grant the MCP server cannot use.
            Proof::Login(None) | Proof::Session => {
                return Err(FlowError::Upstream(UpstreamError::Exchange(
                    "the provider returned no tokens for the MCP server".to_owned(),
                )));
            }
        },
        _ => None,
    };
    let tx = app.store.begin().await?;
    if let Some(session) = new_session {
        tx.insert_session(session).await?;
    }
    if !tx.finish_pending(&pending.id).await? {
        tx.rollback().await?;
        return Err(FlowError::Unusable(Unusable::AlreadyDone));
    }
    let next = match &pending.purpose {
        Purpose::AccountLogin { return_to } => Next::ToAccount(return_to.clone()),
        Purpose::Authorize(request) if !request.login.admits(&who.subject, who.auth_time) => {
            // Someone else logged in than the person the client's id_token_hint named: the
            // session stays (they did log in), the client gets no code (OIDC Core §3.1.2.1).
            metrics::counter!(names::AUTHORIZATIONS, "outcome" => "other_user").increment(1);
            let error = OAuthError::new(
                ErrorCode::LoginRequired,
                "the user who signed in is not the one id_token_hint names",
            );
            Next::ToClient(ClientAnswer::to(request, Err(error)))
        }
        Purpose::Authorize(request) => {
            let code = issue_code(app, &*tx, request, who, keep).await?;
            Next::ToClient(ClientAnswer::to(request, Ok(code)))
        }
    };
    tx.commit().await?;
    Ok(next)
}

/// A code for an approved request, on `repo` (the caller's unit of work): it continues the
/// person's live grant for this client and resource (widened to what was approved), or starts
/// one, keeping the upstream tokens the login brought; and the approval is added to what the person allowed the client before.
async fn issue_code<R: Repo + ?Sized>(
    app: &App,
    repo: &R,
    request: &ClientAuthorization,
    who: &Who,
    upstream_tokens: Option<&UpstreamTokens>,
) -> Result<Secret<kind::Code>, StoreError> {
    let now: Timestamp = app.clock.now();
    let code = Secret::<kind::Code>::new(app.random.token());
    let grant_id = match continue_grant(app, repo, request, who, &code).await? {
        Some(id) => id,
        None => {
            let grant = Grant::new(
                app.random.id(),
                request,
                &who.login(),
                now,
                app.settings.refresh_ttl,
            );
            let record = AuthorizationCode::issue(code.hash(), &grant.id, request, now);
            repo.insert_grant(&grant, &record).await?;
            grant.id
        }
    };
    let before = repo.get_consent(&who.subject, &request.client_id).await?;
    let before = before.map(|c| ScopeSet::parse(&c.scope));
    repo.upsert_consent(&ConsentRecord {
        subject: who.subject.clone(),
        client_id: request.client_id.clone(),
        scope: after_approval(before.as_ref(), &request.scope).to_string(),
        created_at: now,
        last_used_at: now,
    })
    .await?;
    if let Some(tokens) = upstream_tokens {
        if tokens.refresh_token.is_none() {
            tracing::warn!(grant.id = %grant_id, "the upstream provider issued no refresh token: the MCP server's upstream token cannot be renewed, and the client must authorize again when it expires (ask the provider for offline access)");
        }
        let sealed = upstream_tokens::seal(app, &grant_id, tokens, now)
            .map_err(|e| StoreError::Corrupt(format!("upstream tokens: {e}")))?;
        // A continued grant's earlier tokens are replaced by this login's.
        repo.insert_upstream_tokens(&sealed).await?;
    }
    tracing::info!(client.id = %request.client_id, grant.id = %grant_id, "authorization code issued");
    metrics::counter!(names::AUTHORIZATIONS, "outcome" => "code_issued").increment(1);
    Ok(code)
}

/// Attaches `code` to the live grant this approval continues, widening it; `None` when there is
/// none to continue (the caller starts a grant).
async fn continue_grant<R: Repo + ?Sized>(
    app: &App,
    repo: &R,
    request: &ClientAuthorization,
    who: &Who,
    code: &Secret<kind::Code>,
) -> Result<Option<String>, StoreError> {
    let now = app.clock.now();
    let found = repo
        .find_live_grant(&who.subject, &request.client_id, &request.resource, now)
        .await?;
    let Some(found) = found else {
        return Ok(None);
    };
    // Touching the grant takes its row lock (PostgreSQL; a SQLite write transaction is exclusive
    // anyway), so a concurrent authorization of the same grant waits here and the scope read next
    // is the latest one: no widening is lost.
    if !repo.touch_grant(&found.id, now).await? {
        return Ok(None);
    }
    let Some(current) = repo.get_grant(&found.id).await? else {
        return Ok(None);
    };
    if !current.is_continued_by(&who.subject, request, now) {
        return Ok(None);
    }
    let widened = current.continued(request, &who.login(), now);
    let record = AuthorizationCode::issue(code.hash(), &widened.id, request, now);
    if !repo.continue_grant(&widened, &record).await? {
        return Ok(None);
    }
    Ok(Some(widened.id))
}

/// The browser's login session, if its cookie names one that is still valid.
pub async fn session(app: &App, cookie: Option<&str>) -> Result<Option<SessionRecord>, StoreError> {
    let Some(value) = cookie else {
        return Ok(None);
    };
    let session = app.store.get_session(&Hashed::of(value)).await?;
    Ok(session.filter(|s| s.expires_at > app.clock.now()))
}
