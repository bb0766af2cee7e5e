use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use authgate::clock::SystemClock;
use authgate::config::{RawConfig, Settings};
use authgate::random::SystemRandom;
use authgate::startup::Application;

#[derive(Parser)]
#[command(
    name = "authgate",
    version,
    about = "OAuth 2.1 authorization server and gateway for MCP servers"
)]
struct Cli {
    /// TOML file whose settings overlay the environment.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match load_settings(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    authgate::telemetry::init_logs(settings.log_json);
    if settings.metrics_listen.is_some() {
        let _ = authgate::telemetry::metrics();
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve => match runtime.block_on(serve(settings)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn load_settings(config: Option<&std::path::Path>) -> Result<Settings, String> {
    let mut raw = RawConfig::from_env(std::env::vars());
    if let Some(path) = config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("configuration error: --config {}: {e}", path.display()))?;
        raw.overlay_toml(&text, &path.display().to_string())
            .map_err(|e| e.to_string())?;
    }
    Settings::from_raw(&raw).map_err(|e| e.to_string())
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
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
    let store = authgate::store::connect(settings.database_url())
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "DATABASE_URL: cannot open the database: {}",
                redact_db_error(&e)
            )
        })?;
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
    Ok(())
}

/// Database errors can quote the connection string; print only their kind.
fn redact_db_error(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    if text.contains("://") || text.contains("password") {
        "connection failed (details withheld because they may contain credentials)".to_owned()
    } else {
        text
    }
}

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
