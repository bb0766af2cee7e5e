//! `authgate audit`: reading the audit trail from the configured database, and recording what
//! operators do through the admin commands.

use std::process::ExitCode;

use clap::Args;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::JsonFlag;
use crate::clock::{Timestamp, format_time};
use crate::config::parse_duration;
use crate::random::Random;
use crate::services::audit::{self, Kind, Outcome};
use crate::store::{AuditEvent, AuditQuery, DynStore, StoreError};

#[derive(Args)]
pub struct AuditArgs {
    /// A user's subject (`ag_...`) or email address.
    #[arg(long)]
    pub user: Option<String>,
    /// A client id (or metadata-document URL).
    #[arg(long)]
    pub client: Option<String>,
    /// Only events since T: an RFC 3339 time (2026-09-21T14:00:00Z) or a duration back from
    /// now (90s, 15m, 24h, 7d).
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// At most this many events, the newest.
    #[arg(long, default_value_t = 200)]
    pub limit: u32,
    #[command(flatten)]
    pub json: JsonFlag,
}

/// `--since`: an RFC 3339 time, or a duration back from `now`.
pub fn parse_since(raw: &str, now: Timestamp) -> Result<Timestamp, String> {
    if let Ok(t) = OffsetDateTime::parse(raw.trim(), &Rfc3339) {
        return Ok(t.unix_timestamp());
    }
    parse_duration("--since", raw).map(|d| now - d).map_err(|_| {
        "--since: must be an RFC 3339 time (2026-09-21T14:00:00Z) or a duration such as 24h or 7d"
            .to_owned()
    })
}

pub async fn events(store: &DynStore, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError> {
    store.list_audit_events(query).await
}

pub(super) async fn command(
    store: &DynStore,
    args: AuditArgs,
    now: Timestamp,
) -> anyhow::Result<ExitCode> {
    let since = match args
        .since
        .as_deref()
        .map(|s| parse_since(s, now))
        .transpose()
    {
        Ok(s) => s,
        Err(why) => {
            eprintln!("{why}");
            return Ok(ExitCode::from(2));
        }
    };
    let query = AuditQuery {
        user: args.user,
        client_id: args.client,
        since,
        limit: i64::from(args.limit),
    };
    super::admin::print_list(
        &events(store, &query).await?,
        args.json.json,
        &[
            "TIME", "KIND", "OUTCOME", "USER", "CLIENT", "TOOL", "MS", "REQUEST", "DETAIL",
        ],
        |e| {
            let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
            vec![
                format_time(e.at),
                e.kind.clone(),
                e.outcome.clone(),
                or_dash(&e.email.clone().or_else(|| e.subject.clone())),
                or_dash(&e.client_id),
                or_dash(&e.tool),
                e.latency_ms
                    .map_or_else(|| "-".to_owned(), |ms| ms.to_string()),
                or_dash(&e.request_id),
                or_dash(&e.detail),
            ]
        },
    )
}

/// An operator's revocation through the CLI: logged, counted and stored at once (there is no
/// server process here to queue it).
pub(super) async fn operator_revocation(
    store: &DynStore,
    random: &dyn Random,
    now: Timestamp,
    user: Option<&str>,
    client_id: Option<&str>,
    detail: &str,
) {
    let mut event = audit::event(random.id(), now, Kind::Revocation, Outcome::Revoked);
    match user {
        Some(u) if u.contains('@') => event.email = Some(u.to_owned()),
        other => event.subject = other.map(str::to_owned),
    }
    event.client_id = client_id.map(str::to_owned);
    event.detail = Some(detail.to_owned());
    audit::emit(Kind::Revocation, Outcome::Revoked, &event);
    if let Err(e) = store.insert_audit_events(&[event]).await {
        eprintln!(
            "warning: the revocation is done, but could not be written to the audit trail: {e}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_a_duration_back() {
        let now = 1_790_000_000;
        assert_eq!(parse_since("2026-09-21T14:13:20Z", now), Ok(1_790_000_000));
        assert_eq!(
            parse_since("2026-09-21T16:13:20+02:00", now),
            Ok(1_790_000_000)
        );
        assert_eq!(parse_since("24h", now), Ok(now - 86_400));
        assert_eq!(parse_since("90", now), Ok(now - 90));
        for bad in ["yesterday", "2026-09-21", "-5m", ""] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }
}
