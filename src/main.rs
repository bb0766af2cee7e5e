use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use authgate::admin;
use authgate::clock::{Clock, SystemClock};
use authgate::config::{RawConfig, Settings};
use authgate::keys::KeyStage;
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
    /// Registered clients.
    #[command(subcommand)]
    Clients(ClientsCmd),
    /// What users approved (grant families and their tokens).
    #[command(subcommand)]
    Grants(GrantsCmd),
    /// Access-token signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Delete expired codes, pending authorizations, sessions, rotated refresh tokens and idle
    /// registered clients now (the server also does this periodically).
    Cleanup(JsonFlag),
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
enum Auth0Cmd {
    /// Create or update authgate's application, enable its connection and promote it to
    /// domain level (idempotent; --dry-run prints the requests instead of sending them).
    Setup(authgate::auth0::SetupArgs),
}

#[derive(Args)]
struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ClientsCmd {
    /// List registered clients.
    List(JsonFlag),
    /// Show one client's registered metadata.
    Show {
        client_id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Delete a client and revoke everything it was granted.
    Delete { client_id: String },
}

#[derive(Args)]
struct GrantFilter {
    /// A user's subject (`ag_...`) or email address.
    #[arg(long)]
    user: Option<String>,
    /// A client id (or metadata-document URL).
    #[arg(long)]
    client: Option<String>,
}

#[derive(Subcommand)]
enum GrantsCmd {
    /// List grants.
    List {
        #[command(flatten)]
        filter: GrantFilter,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Revoke grants (their refresh and access tokens) and forget the approvals, by user
    /// and/or client.
    Revoke {
        #[command(flatten)]
        filter: GrantFilter,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// List signing keys.
    List(JsonFlag),
    /// Publish a new key now; it signs after AUTHGATE_KEY_PUBLICATION_DELAY, and the current
    /// one stays published until its tokens expire.
    Rotate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Commands that look at a deployment or a tenant from outside need no local configuration.
    if let Command::Auth0(Auth0Cmd::Setup(args)) = &cli.command {
        let Ok(rt) = tokio::runtime::Runtime::new() else {
            return ExitCode::FAILURE;
        };
        return match rt.block_on(authgate::auth0::run(args)) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Doctor {
        public_url,
        upstream_issuer,
        json,
    } = &cli.command
    {
        return match tokio::runtime::Runtime::new() {
            Ok(rt) => {
                let report = rt.block_on(authgate::doctor::run(
                    public_url,
                    upstream_issuer.as_deref(),
                    SystemClock.now(),
                ));
                if json.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).unwrap_or_default()
                    );
                } else {
                    print!("{}", report.render());
                }
                if report.failed() == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("cannot start the runtime: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let settings = match load_settings(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let serving = matches!(cli.command, Command::Serve);
    if serving {
        authgate::telemetry::init_logs(settings.log_json);
        if settings.metrics_listen.is_some() {
            let _ = authgate::telemetry::metrics();
        }
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve => runtime.block_on(serve(settings)),
        other => runtime.block_on(admin_command(settings, other)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
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

async fn open_store(settings: &Settings) -> anyhow::Result<authgate::store::DynStore> {
    authgate::store::connect(settings.database_url())
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "DATABASE_URL: cannot open the database: {}",
                redact_db_error(&e)
            )
        })
}

async fn serve(settings: Settings) -> anyhow::Result<ExitCode> {
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
    let store = open_store(&settings).await?;
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

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

async fn admin_command(settings: Settings, command: Command) -> anyhow::Result<ExitCode> {
    let store = open_store(&settings).await?;
    let now = SystemClock.now();
    match command {
        // Handled before: not admin commands.
        Command::Serve | Command::Doctor { .. } | Command::Auth0(_) => {
            return Ok(ExitCode::FAILURE);
        }
        Command::Clients(ClientsCmd::List(f)) => {
            let list = admin::clients(&store).await?;
            if f.json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|c| {
                        vec![
                            c.client_id.clone(),
                            c.name.clone().unwrap_or_else(|| "-".into()),
                            c.auth_method.to_owned(),
                            c.redirect_hosts.join(","),
                            admin::format_time(c.created_at),
                            admin::opt_time(c.last_used_at),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    admin::table(
                        &[
                            "CLIENT ID",
                            "NAME",
                            "AUTH",
                            "REDIRECT HOSTS",
                            "REGISTERED",
                            "LAST TOKEN"
                        ],
                        &rows
                    )
                );
            }
        }
        Command::Clients(ClientsCmd::Show { client_id, json }) => {
            let Some(c) = store.get_client(&client_id).await? else {
                eprintln!("no client {client_id}");
                return Ok(ExitCode::from(1));
            };
            let grants = admin::grants(&store, None, Some(&client_id), now).await?;
            let value = serde_json::json!({
                "client_id": c.id,
                "metadata": c.metadata,
                "created_at": c.created_at,
                "last_used_at": c.last_used_at,
                "has_secret": c.secret_hash.is_some(),
                "active_grants": grants.iter().filter(|g| g.status == "active").count(),
            });
            if json.json {
                print_json(&value)?;
            } else {
                println!("client_id       {}", c.id);
                println!(
                    "name            {}",
                    c.metadata.client_name.as_deref().unwrap_or("-")
                );
                println!(
                    "auth method     {}",
                    c.metadata.token_endpoint_auth_method.as_str()
                );
                println!("redirect URIs   {}", c.metadata.redirect_uris.join(" "));
                println!("grant types     {}", c.metadata.grant_types.join(" "));
                println!("registered      {}", admin::format_time(c.created_at));
                println!("last token      {}", admin::opt_time(c.last_used_at));
                println!("active grants   {}", value["active_grants"]);
            }
        }
        Command::Clients(ClientsCmd::Delete { client_id }) => {
            match admin::delete_client(&store, &client_id, now).await? {
                Some(revoked) => println!("deleted client {client_id}; revoked {revoked} grant(s)"),
                None => {
                    eprintln!("no client {client_id}");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        Command::Grants(GrantsCmd::List { filter, json }) => {
            let list = admin::grants(
                &store,
                filter.user.as_deref(),
                filter.client.as_deref(),
                now,
            )
            .await?;
            if json.json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|g| {
                        vec![
                            g.grant_id.clone(),
                            g.email.clone().unwrap_or_else(|| g.subject.clone()),
                            g.client_id.clone(),
                            g.scope.clone(),
                            g.status.to_owned(),
                            admin::format_time(g.created_at),
                            admin::format_time(g.last_used_at),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    admin::table(
                        &[
                            "GRANT",
                            "USER",
                            "CLIENT",
                            "SCOPE",
                            "STATUS",
                            "CREATED",
                            "LAST USED"
                        ],
                        &rows
                    )
                );
            }
        }
        Command::Grants(GrantsCmd::Revoke { filter }) => {
            if filter.user.is_none() && filter.client.is_none() {
                eprintln!("name the grants to revoke: --user and/or --client");
                return Ok(ExitCode::from(2));
            }
            let n = store
                .revoke_grants(filter.user.as_deref(), filter.client.as_deref(), now)
                .await?;
            println!(
                "revoked {n} grant(s); their refresh tokens stop working now and their access tokens within {} s",
                authgate::startup::REVOCATION_CACHE_SECONDS
            );
        }
        Command::Keys(KeysCmd::List(f)) => {
            let list = admin::keys(&store, settings.access_token_ttl, now).await?;
            if f.json {
                print_json(&list)?;
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|k| {
                        let next = match k.state {
                            KeyStage::Next => "current",
                            KeyStage::Current => "retired",
                            KeyStage::Retired => "dropped",
                            KeyStage::Dropped => "-",
                        };
                        vec![
                            k.kid.clone(),
                            k.alg.clone(),
                            k.state.as_str().to_owned(),
                            match k.changes_at {
                                Some(at) => format!("{next} at {}", admin::format_time(at)),
                                None => "-".to_owned(),
                            },
                            admin::format_time(k.activates_at),
                            admin::opt_time(k.retires_at),
                            admin::opt_time(k.drops_at),
                        ]
                    })
                    .collect();
                println!(
                    "{}",
                    admin::table(
                        &[
                            "KID",
                            "ALG",
                            "STATE",
                            "CHANGES",
                            "SIGNS FROM",
                            "RETIRES",
                            "UNPUBLISHED"
                        ],
                        &rows
                    )
                );
            }
        }
        Command::Keys(KeysCmd::Rotate) => {
            let delay = settings.key_publication_delay;
            let rotated = admin::rotate_keys(
                store,
                settings.access_token_ttl,
                delay,
                settings.key_sealer.clone(),
                now,
                &SystemRandom,
            )
            .await?;
            let (kid, activates) = (rotated.kid, rotated.activates_at);
            println!(
                "new signing key {kid}: published now (every running instance within {} s), signs from {} (in {} s); the key signing until then stays published until {}",
                authgate::keys::POLL_SECONDS,
                admin::format_time(activates),
                activates - now,
                admin::format_time(
                    activates + settings.access_token_ttl + authgate::keys::DROP_MARGIN
                ),
            );
        }
        Command::Cleanup(f) => {
            let keep = settings
                .refresh_idle_ttl
                .min(7 * 86_400)
                .max(settings.refresh_grace);
            let report = admin::cleanup(
                &store,
                settings.dcr_idle_ttl,
                keep,
                settings.access_token_ttl,
                now,
            )
            .await?;
            if f.json {
                print_json(&report)?;
            } else {
                println!(
                    "removed {} expired row(s), {} idle client(s) and {} retired signing key(s)",
                    report.expired_rows_removed,
                    report.idle_clients_removed,
                    report.retired_keys_removed
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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
