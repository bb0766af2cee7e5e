//! `authgate serve`: the server process, from settings to a graceful shutdown.

use std::process::ExitCode;
use std::sync::Arc;

use crate::clock::SystemClock;
use crate::config::Settings;
use crate::random::SystemRandom;
use crate::startup::Application;
use crate::telemetry;

pub(super) async fn serve(settings: Settings) -> anyhow::Result<ExitCode> {
    telemetry::init_logs(settings.log_json);
    if settings.metrics_listen.is_some() {
        let _ = telemetry::metrics();
    }
    if settings.dev_mode {
        tracing::warn!(
            issuer = %settings.issuer,
            "AUTHGATE_PUBLIC_URL is not set: development mode on a loopback address; set it before exposing authgate"
        );
    }
    if settings.upstream.is_none() {
        tracing::warn!(
            "no AUTHGATE_UPSTREAM_ISSUER: the built-in DEVELOPMENT LOGIN is active and lets anyone sign in as any email address; configure an upstream provider before real use"
        );
    }
    let store = super::open_store(&settings).await?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!("AUTHGATE_LISTEN: cannot listen on {}: {e}", settings.listen)
        })?;
    tracing::info!(issuer = %settings.issuer, listen = %settings.listen, backend = store.backend(), "authgate listening");
    let app = Application::build(
        settings,
        listener,
        store,
        Arc::new(SystemClock),
        Arc::new(SystemRandom),
    )
    .await?;
    app.run_until(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM (what container runtimes send) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
