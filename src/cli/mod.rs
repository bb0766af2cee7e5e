//! The `authgate` command line: its arguments and which code runs each command. `serve` and the
//! admin commands read the local configuration and open the database; `doctor` and `auth0 setup`
//! look at a deployment or a tenant from outside and need neither.

pub mod admin;
pub mod audit;
pub mod auth0;
pub mod doctor;
mod serve;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::clock::SystemClock;
use crate::config::{RawConfig, Settings};
use crate::random::SystemRandom;
use crate::store::DynStore;

#[derive(Parser)]
#[command(
    name = "authgate",
    version,
    about = "OAuth 2.1 authorization server and gateway for MCP servers"
)]
pub struct Cli {
    /// TOML file whose settings overlay the environment.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the server.
    Serve,
    #[command(flatten)]
    Admin(admin::AdminCmd),
    /// Prepare an Auth0 tenant and print the AUTHGATE_UPSTREAM_* settings to use.
    #[command(subcommand)]
    Auth0(Auth0Cmd),
    /// Check a deployment from outside, the way Claude.ai sees it.
    Doctor {
        /// The public URL clients use, e.g. https://mcp.example.com
        public_url: String,
        /// Also check the upstream provider's discovery.
        #[arg(long, env = "AUTHGATE_UPSTREAM_ISSUER")]
        upstream_issuer: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Subcommand)]
pub enum Auth0Cmd {
    /// Create or update authgate's application, enable its connection and promote it to
    /// domain level (idempotent; --dry-run prints the requests instead of sending them).
    Setup(auth0::SetupArgs),
}

#[derive(Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs one command and returns the exit code of the process.
pub fn run(cli: Cli) -> ExitCode {
    let config = cli.config.as_deref();
    match cli.command {
        // Commands that look at a deployment or a tenant from outside need no local configuration.
        Command::Auth0(Auth0Cmd::Setup(args)) => block_on(auth0::command(&args, &SystemClock)),
        Command::Doctor {
            public_url,
            upstream_issuer,
            json,
        } => block_on(doctor::command(
            &public_url,
            upstream_issuer.as_deref(),
            json.json,
            &SystemClock,
        )),
        Command::Serve => with_settings(config, serve::serve),
        Command::Admin(command) => with_settings(config, |settings| {
            admin::command(settings, command, &SystemClock, &SystemRandom)
        }),
    }
}

/// Runs a command that needs the local configuration (the environment overlaid with the
/// `--config` file); a configuration error is printed and exits with 2.
fn with_settings<F>(config: Option<&Path>, command: impl FnOnce(Settings) -> F) -> ExitCode
where
    F: Future<Output = anyhow::Result<ExitCode>>,
{
    match load_settings(config) {
        Ok(settings) => block_on(command(settings)),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn load_settings(config: Option<&Path>) -> Result<Settings, String> {
    let mut raw = RawConfig::from_env(std::env::vars());
    if let Some(path) = config {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("configuration error: --config {}: {e}", path.display()))?;
        raw.overlay_toml(&text, &path.display().to_string())
            .map_err(|e| e.to_string())?;
    }
    Settings::from_raw(&raw).map_err(|e| e.to_string())
}

/// Runs a command's future on a new runtime; an error is printed with its causes.
fn block_on(command: impl Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn open_store(settings: &Settings) -> anyhow::Result<DynStore> {
    crate::store::connect(settings.database_url())
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "DATABASE_URL: cannot open the database: {}",
                redact_db_error(&e)
            )
        })
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
