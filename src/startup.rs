//! Building and running the server: state, router, listener, background jobs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::cimd::{CimdResolver, FetchOptions};
use crate::clock::Clock;
use crate::config::Settings;
use crate::http::{self, oauth::discovery};
use crate::keys::Keystore;
use crate::random::Random;
use crate::ratelimit::Limiters;
use crate::services::audit::AuditLog;
use crate::services::revocation::RevocationCache;
use crate::services::upstream::Upstream;
use crate::services::upstream::dev::DevLogin;
use crate::services::upstream::oidc::OidcUpstream;
use crate::services::upstream_tokens;
use crate::state::{App, AppState};
use crate::store::DynStore;

/// How long a revocation may take to reach the MCP guard of every instance.
pub const REVOCATION_CACHE_SECONDS: i64 = 10;

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Builds the application on an already bound listener (tests bind port 0 first, so the public
    /// URL can name the real port).
    pub async fn build(
        settings: Settings,
        listener: TcpListener,
        store: DynStore,
        clock: Arc<dyn Clock>,
        random: Arc<dyn Random>,
    ) -> Result<Self, anyhow::Error> {
        let extra_ca_pem = match &settings.cimd_test_ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                anyhow::anyhow!(
                    "AUTHGATE_CIMD_TEST_CA_FILE: cannot read {}: {e}",
                    path.display()
                )
            })?),
            None => None,
        };
        let cimd = CimdResolver::new(
            settings.offered_scopes(),
            settings.allowed_redirects.clone(),
            FetchOptions {
                test_hosts: settings.cimd_test_hosts.clone(),
                extra_ca_pem,
                pinned_fallback: settings.cimd_fallback,
            },
        )?;
        let keys = Keystore::load_or_create(
            store.clone(),
            settings.access_token_ttl,
            settings.key_sealer.clone(),
            clock.now(),
            random.as_ref(),
        )
        .await?;
        keep_enterprise_clients(&settings, &store, clock.now()).await?;
        let upstream: Box<dyn Upstream> = match &settings.upstream {
            Some(cfg) => Box::new(OidcUpstream::new(cfg.clone())?),
            None => Box::new(DevLogin::new(&settings.issuer)?),
        };
        let app = App {
            keys,
            upstream,
            as_metadata: discovery::serialize(&discovery::authorization_server_metadata(&settings)),
            openid_metadata: discovery::serialize(&discovery::openid_configuration(&settings)),
            resource_metadata: settings
                .resources
                .iter()
                .map(|r| {
                    discovery::serialize(&discovery::protected_resource_metadata(&settings, r))
                })
                .collect(),
            revocations: RevocationCache::new(REVOCATION_CACHE_SECONDS),
            mcp_http: crate::http::mcp::forward::client(
                Duration::from_secs(5),
                Duration::from_secs(u64::try_from(settings.mcp_upstream_timeout).unwrap_or(300)),
            )?,
            limiters: Limiters::new(&settings.rate_limits),
            audit: AuditLog::new(),
            cimd,
            settings,
            store,
            clock,
            random,
        };
        if let Some(upstream) = &app.settings.upstream
            && app.settings.keeps_upstream_tokens()
            && !upstream_tokens::asks_for_refresh_tokens(upstream)
        {
            tracing::warn!(
                "a resource keeps upstream tokens, but AUTHGATE_UPSTREAM_SCOPES has no offline_access (nor AUTHGATE_UPSTREAM_AUTHORIZE_PARAMS access_type=offline): without refresh tokens, users must authorize again whenever their upstream token expires"
            );
        }
        upstream_tokens::prepare_exchange_clients(&app).await?;
        Ok(Self {
            listener,
            state: AppState(Arc::new(app)),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, with the background jobs running alongside.
    pub async fn run_until<F>(self, shutdown: F) -> std::io::Result<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let metrics = match self.state.settings.metrics_listen {
            Some(addr) => {
                let listener = TcpListener::bind(addr).await?;
                Some(tokio::spawn(serve_metrics(listener, self.state.clone())))
            }
            None => None,
        };
        let audit_writer = self
            .state
            .audit
            .start_writer(self.state.store.clone())
            .await;
        let jobs = tokio::spawn(background_jobs(self.state.clone()));
        let key_poll = tokio::spawn(poll_keys(self.state.clone()));
        let audit_state = self.state.clone();
        let deadline =
            Duration::from_secs(u64::try_from(self.state.settings.shutdown_timeout).unwrap_or(30));
        let router = http::router(self.state);
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(
            self.listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!(
                "shutting down: no new connections; letting requests and streams finish"
            );
            let _ = stopping_tx.send(());
        });
        // In-flight requests and SSE streams may finish, but only until the deadline.
        let result = tokio::select! {
            r = server.into_future() => r,
            () = async move {
                if stopping_rx.await.is_ok() {
                    tokio::time::sleep(deadline).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!("shutdown deadline reached; closing the remaining connections");
                Ok(())
            }
        };
        jobs.abort();
        key_poll.abort();
        // What requests recorded until now still reaches the table, unless the database hangs.
        let _ = tokio::time::timeout(Duration::from_secs(5), audit_state.audit.flush()).await;
        if let Some(w) = audit_writer {
            w.abort();
        }
        if let Some(m) = metrics {
            m.abort();
        }
        result
    }
}

/// Prometheus metrics on their own listener, never on the public one.
async fn serve_metrics(listener: TcpListener, state: AppState) {
    let Some(handle) = crate::telemetry::metrics() else {
        tracing::warn!("metrics recorder unavailable");
        return;
    };
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            let state = state.clone();
            async move {
                let (open, idle) = state.store.pool_state();
                let names = crate::telemetry::names::DB_POOL_CONNECTIONS;
                metrics::gauge!(names, "state" => "idle").set(f64::from(idle));
                metrics::gauge!(names, "state" => "in_use")
                    .set(f64::from(open.saturating_sub(idle)));
                handle.render()
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics listener failed");
    }
}

/// Periodic clean-up. Every instance runs it; the deletes are idempotent, so several instances
/// on one database do not conflict.
async fn background_jobs(state: AppState) {
    let period = Duration::from_secs(
        u64::try_from(state.settings.dcr_idle_ttl / 4)
            .unwrap_or(600)
            .clamp(1, 600),
    );
    // Not at start: a fresh instance has nothing urgent to clean, and a first pass racing the
    // first requests would make the moment of a clean-up depend on scheduling.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tick.tick().await;
        if let Err(e) = remove_idle_clients(&state).await {
            tracing::warn!(error = %e, "idle client clean-up failed");
        }
        match state
            .store
            .delete_expired(state.clock.now(), reuse_window(&state))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed expired authorization data"),
            Err(e) => tracing::warn!(error = %e, "clean-up of expired data failed"),
        }
        match prune_audit(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed audit events past their retention"),
            Err(e) => tracing::warn!(error = %e, "clean-up of old audit events failed"),
        }
        match state.keys.remove_dropped(state.clock.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "removed retired signing keys"),
            Err(e) => tracing::warn!(error = %e, "clean-up of retired signing keys failed"),
        }
        // The poll only sees changes that moved the key version; this also catches keys
        // edited by hand.
        if let Err(e) = state.keys.reload(state.clock.now()).await {
            tracing::warn!(error = %e, "reloading signing keys failed");
        }
    }
}

/// Checks the key version often, so that a rotated-in key is published by every instance well
/// within its publication delay; the check is one small row, the keys are read only on change.
async fn poll_keys(state: AppState) {
    // A zero period would make the interval panic.
    let period = state
        .settings
        .key_poll_interval
        .max(Duration::from_millis(10));
    // The keys were loaded while building the application: the first check is due one period on.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match state.keys.poll(state.clock.now()).await {
            Ok(true) => tracing::info!("signing keys changed; reloaded"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "checking for signing-key changes failed"),
        }
    }
}

/// How long a rotated refresh token is kept: past the grace window it only serves to recognise
/// reuse (and revoke the grant), which matters most in the first days after rotation.
pub fn reuse_window(state: &AppState) -> i64 {
    state
        .settings
        .refresh_idle_ttl
        .min(7 * 86_400)
        .max(state.settings.refresh_grace)
}

/// Clients named under an enterprise issuer were registered by an operator, who then configured
/// the identity provider and the MCP host: their first token may come long after the idle time.
/// Marked used here, the idle clean-up keeps them.
async fn keep_enterprise_clients(
    settings: &Settings,
    store: &DynStore,
    now: crate::clock::Timestamp,
) -> Result<(), crate::store::StoreError> {
    let registered = settings
        .enterprise_issuers
        .iter()
        .flat_map(|e| &e.client_ids)
        .filter(|id| !crate::oauth::client::is_metadata_document_id(id));
    for id in registered {
        store.touch_client(id, now).await?;
    }
    Ok(())
}

/// Deletes the audit events older than `AUTHGATE_AUDIT_RETENTION`.
pub async fn prune_audit(state: &AppState) -> Result<u64, crate::store::StoreError> {
    let cutoff = state.clock.now() - state.settings.audit_retention;
    state.store.delete_audit_events_before(cutoff).await
}

/// Deletes registrations that never completed a token exchange within the idle time.
pub async fn remove_idle_clients(state: &AppState) -> Result<u64, crate::store::StoreError> {
    let cutoff = state.clock.now() - state.settings.dcr_idle_ttl;
    let removed = state.store.delete_idle_clients(cutoff).await?;
    if removed > 0 {
        tracing::info!(removed, "removed idle registered clients");
    }
    Ok(removed)
}
