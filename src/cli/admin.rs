//! Operator commands against the configured database: clients, grants, keys, clean-up. The data
//! functions return plain data; `command` prints it as a table or JSON.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::JsonFlag;
use crate::clock::{Clock, Timestamp, format_time};
use crate::config::Settings;
use crate::keys::{KeyStage, Keystore, schedule};
use crate::random::Random;
use crate::store::{DynStore, StoreError};

/// The commands that work on the configured database (flattened into the top-level commands).
#[derive(Subcommand)]
pub enum AdminCmd {
    /// Registered clients.
    #[command(subcommand)]
    Clients(ClientsCmd),
    /// What users approved (grant families and their tokens).
    #[command(subcommand)]
    Grants(GrantsCmd),
    /// Access-token signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Delete expired codes, pending authorizations, sessions, rotated refresh tokens, idle
    /// registered clients and audit events past their retention now (the server also does
    /// this periodically).
    Cleanup(JsonFlag),
    /// Read the audit trail: tool calls and security events, newest first.
    Audit(super::audit::AuditArgs),
}

#[derive(Subcommand)]
pub enum ClientsCmd {
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
pub struct GrantFilter {
    /// A user's subject (`ag_...`) or email address.
    #[arg(long)]
    pub user: Option<String>,
    /// A client id (or metadata-document URL).
    #[arg(long)]
    pub client: Option<String>,
}

#[derive(Subcommand)]
pub enum GrantsCmd {
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
pub enum KeysCmd {
    /// List signing keys.
    List(JsonFlag),
    /// Publish a new key now; it signs after AUTHGATE_KEY_PUBLICATION_DELAY, and the current
    /// one stays published until its tokens expire.
    Rotate,
}

#[derive(Debug, Serialize)]
pub struct ClientSummary {
    pub client_id: String,
    pub name: Option<String>,
    pub auth_method: &'static str,
    pub redirect_hosts: Vec<String>,
    pub created_at: Timestamp,
    pub last_used_at: Option<Timestamp>,
}

#[derive(Debug, Serialize)]
pub struct GrantSummary {
    pub grant_id: String,
    pub client_id: String,
    pub subject: String,
    pub email: Option<String>,
    pub scope: String,
    pub resource: String,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
    pub status: &'static str,
}

#[derive(Debug, Serialize)]
pub struct KeySummary {
    pub kid: String,
    pub alg: String,
    /// `next`, `current`, `retired` or `dropped` (no longer published, awaiting clean-up).
    pub state: KeyStage,
    /// When `state` changes next (to current, to retired, out of the JWKS).
    pub changes_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub activates_at: Timestamp,
    pub retires_at: Option<Timestamp>,
    pub drops_at: Option<Timestamp>,
}

#[derive(Debug, Serialize)]
pub struct CleanupReport {
    pub expired_rows_removed: u64,
    pub idle_clients_removed: u64,
    pub retired_keys_removed: u64,
}

fn hosts(uris: &[String]) -> Vec<String> {
    let mut out: Vec<String> = uris
        .iter()
        .map(|u| {
            url::Url::parse(u)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| u.clone())
        })
        .collect();
    out.dedup();
    out
}

pub async fn clients(store: &DynStore) -> Result<Vec<ClientSummary>, StoreError> {
    Ok(store
        .list_clients()
        .await?
        .into_iter()
        .map(|c| ClientSummary {
            redirect_hosts: hosts(&c.metadata.redirect_uris),
            name: c.metadata.client_name,
            auth_method: c.metadata.token_endpoint_auth_method.as_str(),
            client_id: c.id,
            created_at: c.created_at,
            last_used_at: c.last_used_at,
        })
        .collect())
}

/// Deletes a client and revokes everything it was granted. `None` if it did not exist.
pub async fn delete_client(
    store: &DynStore,
    client_id: &str,
    now: Timestamp,
) -> Result<Option<u64>, StoreError> {
    crate::services::grants::delete_client(store, client_id, now).await
}

pub async fn grants(
    store: &DynStore,
    user: Option<&str>,
    client_id: Option<&str>,
    now: Timestamp,
) -> Result<Vec<GrantSummary>, StoreError> {
    Ok(store
        .list_grants(user, client_id)
        .await?
        .into_iter()
        .map(|f| GrantSummary {
            status: if f.revoked_at.is_some() {
                "revoked"
            } else if f.expires_at <= now {
                "expired"
            } else {
                "active"
            },
            grant_id: f.id,
            client_id: f.client_id,
            subject: f.subject,
            email: f.email,
            scope: f.scope.to_string(),
            resource: f.resource,
            created_at: f.created_at,
            last_used_at: f.last_used_at,
        })
        .collect())
}

/// The keys with their stages, newest activation first.
pub async fn keys(
    store: &DynStore,
    overlap: i64,
    now: Timestamp,
) -> Result<Vec<KeySummary>, StoreError> {
    let records = store.list_keys().await?;
    Ok(schedule(&records, overlap)
        .into_iter()
        .rev()
        .map(|(k, s)| KeySummary {
            state: s.stage(now),
            changes_at: s.changes_at(now),
            kid: s.kid,
            alg: k.alg.clone(),
            created_at: k.created_at,
            activates_at: s.activates_at,
            retires_at: s.retires_at,
            drops_at: s.drops_at,
        })
        .collect())
}

/// Adds a key that signs from `now + publication_delay` (or just after the latest key).
pub async fn rotate_keys(
    store: DynStore,
    overlap: i64,
    publication_delay: i64,
    sealer: Option<crate::keys::KeySealer>,
    now: Timestamp,
    random: &dyn Random,
) -> Result<crate::keys::Rotated, crate::keys::KeyError> {
    let keys = Keystore::load_or_create(store, overlap, sealer, now, random).await?;
    keys.rotate(now, publication_delay, random).await
}

pub async fn cleanup(
    store: &DynStore,
    idle_ttl: i64,
    keep_rotated: i64,
    overlap: i64,
    now: Timestamp,
) -> Result<CleanupReport, StoreError> {
    Ok(CleanupReport {
        expired_rows_removed: store.delete_expired(now, keep_rotated).await?,
        idle_clients_removed: store.delete_idle_clients(now - idle_ttl).await?,
        retired_keys_removed: crate::keys::remove_dropped(store, overlap, now).await?,
    })
}

/// Runs an admin command against the configured database, printing tables or JSON.
pub(super) async fn command(
    settings: Settings,
    command: AdminCmd,
    clock: &dyn Clock,
    random: &dyn Random,
) -> anyhow::Result<ExitCode> {
    let store = super::open_store(&settings).await?;
    let now = clock.now();
    match command {
        AdminCmd::Clients(command) => clients_command(&store, command, now, random).await,
        AdminCmd::Grants(command) => grants_command(&store, command, now, random).await,
        AdminCmd::Keys(command) => keys_command(store, &settings, command, now, random).await,
        AdminCmd::Cleanup(f) => cleanup_command(&store, &settings, f.json, now).await,
        AdminCmd::Audit(args) => super::audit::command(&store, args, now).await,
    }
}

async fn clients_command(
    store: &DynStore,
    command: ClientsCmd,
    now: Timestamp,
    random: &dyn Random,
) -> anyhow::Result<ExitCode> {
    match command {
        ClientsCmd::List(f) => print_list(
            &clients(store).await?,
            f.json,
            &[
                "CLIENT ID",
                "NAME",
                "AUTH",
                "REDIRECT HOSTS",
                "REGISTERED",
                "LAST TOKEN",
            ],
            |c| {
                vec![
                    c.client_id.clone(),
                    c.name.clone().unwrap_or_else(|| "-".into()),
                    c.auth_method.to_owned(),
                    c.redirect_hosts.join(","),
                    format_time(c.created_at),
                    opt_time(c.last_used_at),
                ]
            },
        ),
        ClientsCmd::Show { client_id, json } => {
            let Some(c) = store.get_client(&client_id).await? else {
                eprintln!("no client {client_id}");
                return Ok(ExitCode::from(1));
            };
            let client_grants = grants(store, None, Some(&client_id), now).await?;
            let value = serde_json::json!({
                "client_id": c.id,
                "metadata": c.metadata,
                "created_at": c.created_at,
                "last_used_at": c.last_used_at,
                "has_secret": c.secret_hash.is_some(),
                "active_grants": client_grants.iter().filter(|g| g.status == "active").count(),
            });
            if json.json {
                return print_json(&value);
            }
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
            println!("registered      {}", format_time(c.created_at));
            println!("last token      {}", opt_time(c.last_used_at));
            println!("active grants   {}", value["active_grants"]);
            Ok(ExitCode::SUCCESS)
        }
        ClientsCmd::Delete { client_id } => match delete_client(store, &client_id, now).await? {
            Some(revoked) => {
                let detail = "client deleted by an operator (authgate clients delete)";
                super::audit::operator_revocation(
                    store,
                    random,
                    now,
                    None,
                    Some(&client_id),
                    detail,
                )
                .await;
                println!("deleted client {client_id}; revoked {revoked} grant(s)");
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("no client {client_id}");
                Ok(ExitCode::from(1))
            }
        },
    }
}

async fn grants_command(
    store: &DynStore,
    command: GrantsCmd,
    now: Timestamp,
    random: &dyn Random,
) -> anyhow::Result<ExitCode> {
    match command {
        GrantsCmd::List { filter, json } => print_list(
            &grants(store, filter.user.as_deref(), filter.client.as_deref(), now).await?,
            json.json,
            &[
                "GRANT",
                "USER",
                "CLIENT",
                "SCOPE",
                "STATUS",
                "CREATED",
                "LAST USED",
            ],
            |g| {
                vec![
                    g.grant_id.clone(),
                    g.email.clone().unwrap_or_else(|| g.subject.clone()),
                    g.client_id.clone(),
                    g.scope.clone(),
                    g.status.to_owned(),
                    format_time(g.created_at),
                    format_time(g.last_used_at),
                ]
            },
        ),
        GrantsCmd::Revoke { filter } => {
            if filter.user.is_none() && filter.client.is_none() {
                eprintln!("name the grants to revoke: --user and/or --client");
                return Ok(ExitCode::from(2));
            }
            let (user, client) = (filter.user.as_deref(), filter.client.as_deref());
            let n = store.revoke_grants(user, client, now).await?;
            let detail = format!("{n} grant(s) revoked by an operator (authgate grants revoke)");
            super::audit::operator_revocation(store, random, now, user, client, &detail).await;
            println!(
                "revoked {n} grant(s); their refresh tokens stop working now and their access tokens within {} s",
                crate::startup::REVOCATION_CACHE_SECONDS
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn keys_command(
    store: DynStore,
    settings: &Settings,
    command: KeysCmd,
    now: Timestamp,
    random: &dyn Random,
) -> anyhow::Result<ExitCode> {
    let ttl = settings.access_token_ttl;
    match command {
        KeysCmd::List(f) => print_list(
            &keys(&store, ttl, now).await?,
            f.json,
            &[
                "KID",
                "ALG",
                "STATE",
                "CHANGES",
                "SIGNS FROM",
                "RETIRES",
                "UNPUBLISHED",
            ],
            |k| {
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
                        Some(at) => format!("{next} at {}", format_time(at)),
                        None => "-".to_owned(),
                    },
                    format_time(k.activates_at),
                    opt_time(k.retires_at),
                    opt_time(k.drops_at),
                ]
            },
        ),
        KeysCmd::Rotate => {
            let rotated = rotate_keys(
                store,
                ttl,
                settings.key_publication_delay,
                settings.key_sealer.clone(),
                now,
                random,
            )
            .await?;
            let (kid, activates) = (rotated.kid, rotated.activates_at);
            println!(
                "new signing key {kid}: published now (every running instance within {} s), signs from {} (in {} s); the key signing until then stays published until {}",
                crate::keys::POLL_SECONDS,
                format_time(activates),
                activates - now,
                format_time(activates + ttl + crate::keys::DROP_MARGIN),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn cleanup_command(
    store: &DynStore,
    settings: &Settings,
    json: bool,
    now: Timestamp,
) -> anyhow::Result<ExitCode> {
    // The same window as the server's periodic clean-up (`startup::reuse_window`).
    let keep = settings
        .refresh_idle_ttl
        .min(7 * 86_400)
        .max(settings.refresh_grace);
    let report = cleanup(
        store,
        settings.dcr_idle_ttl,
        keep,
        settings.access_token_ttl,
        now,
    )
    .await?;
    let audit_removed = store
        .delete_audit_events_before(now - settings.audit_retention)
        .await?;
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["audit_events_removed"] = audit_removed.into();
        return print_json(&value);
    }
    println!(
        "removed {} expired row(s), {} idle client(s), {} retired signing key(s) and {} audit event(s) past their retention",
        report.expired_rows_removed,
        report.idle_clients_removed,
        report.retired_keys_removed,
        audit_removed
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(ExitCode::SUCCESS)
}

/// A list command's output: the items as JSON, or one table row per item.
pub(super) fn print_list<T: Serialize>(
    items: &[T],
    json: bool,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<ExitCode> {
    if json {
        return print_json(items);
    }
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    println!("{}", table(headers, &rows));
    Ok(ExitCode::SUCCESS)
}

/// A left-aligned text table.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(headers.iter().map(|h| (*h).to_owned()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

fn opt_time(t: Option<Timestamp>) -> String {
    t.map(format_time).unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables() {
        let t = table(
            &["id", "name"],
            &[
                vec!["a".into(), "Claude".into()],
                vec!["bbb".into(), "-".into()],
            ],
        );
        assert_eq!(t, "id   name\na    Claude\nbbb  -");
    }
}
