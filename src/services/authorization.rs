//! The authorization flow, from an accepted `/authorize` request to the answer sent to the
//! client: consent, the upstream login, the login policy, a session, the code. Each step that
//! writes commits all it writes together, so a failure leaves the request where it was and the
//! person can simply try again. One match on the request's [`Purpose`] decides how a login ends.

use crate::clock::Timestamp;
use crate::domain::grant::{AuthorizationCode, Grant};
use crate::domain::identity::{UpstreamIdentity, derive_subject};
use crate::domain::pending::{
    ClientAuthorization, PendingAuthorization, Purpose, Stage, Unusable, UpstreamLeg,
};
use crate::oauth::pkce::CodeChallenge;
use crate::oauth::redirect::find_matching;
use crate::oauth::request::AuthorizationRequest;
use crate::oauth::scope::ScopeSet;
use crate::oauth::secrets::{Hashed, Secret, kind};
use crate::oauth::url_rules::is_loopback_url;
use crate::oauth::{ErrorCode, OAuthError, resource};
use crate::services::audit::{self, Kind, Outcome};
use crate::services::clients::{self, Client, ResolveError};
use crate::services::upstream::UpstreamError;
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
    let requested = req.scope.narrow_to(&target.offered);
    let scope = if requested.is_empty() {
        target.scopes.clone()
    } else {
        requested
    };
    Ok(Accepted {
        request: ClientAuthorization {
            client_id: client.id.clone(),
            redirect_uri,
            state: req.state,
            code_challenge: challenge,
            scope,
            resource,
        },
        client,
        prompt: req.prompt,
    })
}

/// Where an accepted request goes next.
#[derive(Debug)]
pub enum Started {
    /// Answered without asking: approved before, or `prompt=none` with nothing approved.
    Answered(ClientAnswer),
    /// The consent page, for the pending request `id` (its id in the clear, for the form).
    Consent {
        id: Secret<kind::Pending>,
        pending: Box<PendingAuthorization>,
        client: Box<Client>,
    },
}

pub async fn start(
    app: &App,
    accepted: Accepted,
    session: Option<&SessionRecord>,
    browser: Hashed<kind::Browser>,
) -> Result<Started, StoreError> {
    let Accepted {
        client,
        request,
        prompt,
    } = accepted;
    let asks_again = prompt.contains("consent") || prompt.contains("login");
    if let Some(session) = session
        && !asks_again
        && let Some(c) = app.store.get_consent(&session.subject, &client.id).await?
        && request.scope.is_subset_of(&ScopeSet::parse(&c.scope))
    {
        let tx = app.store.begin().await?;
        let code = issue_code(app, &*tx, &request, session).await?;
        tx.commit().await?;
        return Ok(Started::Answered(ClientAnswer::to(&request, Ok(code))));
    }
    if prompt.contains("none") {
        let code = if session.is_some() {
            ErrorCode::ConsentRequired
        } else {
            ErrorCode::LoginRequired
        };
        let error = OAuthError::new(code, "user interaction is required");
        return Ok(Started::Answered(ClientAnswer::to(&request, Err(error))));
    }
    let id = Secret::<kind::Pending>::new(app.random.token());
    let pending = PendingAuthorization::authorize(id.hash(), browser, request, app.clock.now());
    app.store.insert_pending(&pending).await?;
    metrics::counter!(names::AUTHORIZATIONS, "outcome" => "consent_shown").increment(1);
    Ok(Started::Consent {
        id,
        pending: Box::new(pending),
        client: Box::new(client),
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
        (Decision::Deny, _) => {
            metrics::counter!(names::AUTHORIZATIONS, "outcome" => "denied").increment(1);
            if !app.store.finish_pending(&pending.id).await? {
                return Err(FlowError::Unusable(Unusable::AlreadyDone));
            }
            let error = OAuthError::new(ErrorCode::AccessDenied, "the user denied the request");
            Ok(Next::ToClient(ClientAnswer::to(client_request, Err(error))))
        }
        (Decision::Approve, Some(session)) => finish(app, &pending, session, false).await,
        (Decision::Approve, None) => to_upstream(app, &pending).await,
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

/// Approved without a session: off to log in. A double submit replaces the leg, so the
/// browser's last navigation is the one that works.
async fn to_upstream(app: &App, pending: &PendingAuthorization) -> Result<Next, FlowError> {
    let (state, leg) = new_leg(app);
    pending
        .to_upstream(leg.clone())
        .map_err(|_| FlowError::Unusable(Unusable::AlreadyDone))?;
    if !app.store.set_pending_upstream(&pending.id, &leg).await? {
        return Err(FlowError::Unusable(Unusable::AlreadyDone));
    }
    Ok(Next::ToUpstream(
        app.upstream.login_url(&state, &leg).await?,
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
    Ok(app.upstream.login_url(&state, &leg).await?)
}

/// The pending request a login leg's `state` belongs to, if this browser may finish it now.
pub async fn at_upstream(
    app: &App,
    state: &str,
    browser: Option<&Hashed<kind::Browser>>,
) -> Result<PendingAuthorization, FlowError> {
    let pending = app
        .store
        .get_pending_by_upstream_state(&Hashed::of(state))
        .await?
        .ok_or(FlowError::Unknown)?;
    pending
        .check(browser, app.clock.now())
        .map_err(FlowError::Unusable)?;
    if !matches!(pending.stage, Stage::AtUpstream(_)) {
        return Err(FlowError::NotAtUpstream);
    }
    Ok(pending)
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
    let pending = at_upstream(app, state, browser).await?;
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
    let identity = identified.inspect_err(|e| {
        tracing::warn!(error = %e, "upstream login failed");
        metrics::counter!(names::AUTHORIZATIONS, "outcome" => "upstream_failed").increment(1);
    })?;
    log_in(app, &pending, identity).await
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

/// The login policy, then the session and the request's end, together.
async fn log_in(
    app: &App,
    pending: &PendingAuthorization,
    identity: UpstreamIdentity,
) -> Result<Finished, FlowError> {
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
    let now = app.clock.now();
    let value = Secret::<kind::Session>::new(app.random.token());
    let session = SessionRecord {
        id: value.hash(),
        subject: derive_subject(&identity.issuer, &identity.subject),
        email: identity.email,
        created_at: now,
        expires_at: now + app.settings.session_ttl,
    };
    let next = finish(app, pending, &session, true).await?;
    tracing::info!(user.sub = %session.subject, "user logged in");
    audit::entry(app, Kind::Login, Outcome::Ok)
        .user(&session.subject, session.email.as_deref())
        .client_if(client_id)
        .record();
    Ok(Finished {
        next,
        session: Some(value),
    })
}

/// Ends a request for a logged-in person, exactly once: the session (when new), the request's
/// end and, for a client, the approval, the grant and the code are one unit of work.
async fn finish(
    app: &App,
    pending: &PendingAuthorization,
    session: &SessionRecord,
    new_session: bool,
) -> Result<Next, FlowError> {
    pending
        .finish()
        .map_err(|_| FlowError::Unusable(Unusable::AlreadyDone))?;
    let tx = app.store.begin().await?;
    if new_session {
        tx.insert_session(session).await?;
    }
    if !tx.finish_pending(&pending.id).await? {
        tx.rollback().await?;
        return Err(FlowError::Unusable(Unusable::AlreadyDone));
    }
    let next = match &pending.purpose {
        Purpose::AccountLogin { return_to } => Next::ToAccount(return_to.clone()),
        Purpose::Authorize(request) => {
            let code = issue_code(app, &*tx, request, session).await?;
            Next::ToClient(ClientAnswer::to(request, Ok(code)))
        }
    };
    tx.commit().await?;
    Ok(next)
}

/// A code for an approved request, and the approval remembered, on `repo` (the caller's unit
/// of work).
async fn issue_code<R: Repo + ?Sized>(
    app: &App,
    repo: &R,
    request: &ClientAuthorization,
    session: &SessionRecord,
) -> Result<Secret<kind::Code>, StoreError> {
    let now: Timestamp = app.clock.now();
    repo.upsert_consent(&ConsentRecord {
        subject: session.subject.clone(),
        client_id: request.client_id.clone(),
        scope: request.scope.to_string(),
        created_at: now,
        last_used_at: now,
    })
    .await?;
    let code = Secret::<kind::Code>::new(app.random.token());
    let grant = Grant {
        id: app.random.id(),
        client_id: request.client_id.clone(),
        subject: session.subject.clone(),
        email: session.email.clone(),
        scope: request.scope.clone(),
        resource: request.resource.clone(),
        created_at: now,
        expires_at: now + app.settings.refresh_ttl,
        last_used_at: now,
        revoked_at: None,
    };
    let record = AuthorizationCode::issue(code.hash(), &grant.id, request, now);
    repo.insert_grant(&grant, &record).await?;
    tracing::info!(client.id = %request.client_id, grant.id = %grant.id, "authorization code issued");
    metrics::counter!(names::AUTHORIZATIONS, "outcome" => "code_issued").increment(1);
    Ok(code)
}

/// The browser's login session, if its cookie names one that is still valid.
pub async fn session(app: &App, cookie: Option<&str>) -> Result<Option<SessionRecord>, StoreError> {
    let Some(value) = cookie else {
        return Ok(None);
    };
    let session = app.store.get_session(&Hashed::of(value)).await?;
    Ok(session.filter(|s| s.expires_at > app.clock.now()))
}
