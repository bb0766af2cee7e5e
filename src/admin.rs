//! Operator commands against the configured database: clients, grants, keys, clean-up. Each
//! returns plain data; `render` turns it into a readable table or JSON.

use serde::Serialize;

use crate::clock::Timestamp;
use crate::keys::{KeyStage, Keystore, schedule};
use crate::random::Random;
use crate::store::{DynStore, StoreError};

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

/// `YYYY-MM-DD HH:MM:SS` in UTC.
pub fn format_time(t: Timestamp) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// A left-aligned text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
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

pub fn opt_time(t: Option<Timestamp>) -> String {
    t.map(format_time).unwrap_or_else(|| "-".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_tables() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(1_790_000_000), "2026-09-21 14:13:20");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00");
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
