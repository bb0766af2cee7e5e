//! Persistence behind one set of operations ([`Repo`]) with a PostgreSQL and a SQLite
//! implementation sharing the same SQL (runtime-checked queries; `$n` placeholders work on both).
//!
//! A [`Store`] runs each operation on its own. An exchange that must happen all or nothing (a
//! code redemption, a refresh rotation, a completed login, a client's deletion) runs its
//! operations on a [`Tx`] from [`Store::begin`] and commits once; dropping the `Tx` undoes it.
//! Hashes of secrets cross this boundary typed by kind, never as strings.

mod postgres;
mod rows;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::domain::grant::{AuthorizationCode, Grant, RefreshToken};
use crate::domain::pending::{Confirmation, PendingAuthorization, UpstreamLeg};
use crate::oauth::client::ClientMetadata;
use crate::oauth::secrets::{Hashed, kind};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached right now (pool timeout, connection refused): callers
    /// answer 503 and the request can be retried.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Other(#[source] sqlx::Error),
}

/// Error codes that mean "the database is going away or busy", not "this query is wrong": the
/// request can be retried, so it gets 503 rather than 500. PostgreSQL SQLSTATE classes 08
/// (connection exception) and 57P (operator intervention: shutdown, crash, not yet accepting),
/// 53300 (too many connections), 40001/40P01 (serialization failure, deadlock: the transaction
/// was rolled back and may simply be retried); SQLite's BUSY and LOCKED (primary codes 5 and 6).
fn is_transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("57P")
        || code == "53300"
        || code == "40001"
        || code == "40P01"
        // SQLite's codes are at most four digits; PostgreSQL's SQLSTATEs are always five
        // characters, some all digits (22021), which must not be read as SQLite codes.
        || (code.len() < 5 && code.parse::<i64>().is_ok_and(|n| matches!(n & 0xff, 5 | 6)))
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            // A server shutting down can answer a new connection's handshake with garbage
            // ("unexpected response from SSLRequest"): that is the outage, not a bad query.
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_) => Self::Unavailable(e),
            sqlx::Error::Database(ref db) if db.code().is_some_and(|c| is_transient(&c)) => {
                Self::Unavailable(e)
            }
            other => Self::Other(other),
        }
    }
}

/// A registered (DCR) client. Metadata-document clients are not stored: they are resolved from
/// their URL.
#[derive(Debug, Clone)]
pub struct ClientRecord {
    pub id: String,
    pub secret_hash: Option<Hashed<kind::ClientSecret>>,
    /// 0 = never.
    pub secret_expires_at: Timestamp,
    pub metadata: ClientMetadata,
    pub created_at: Timestamp,
    /// Set on the first successful token exchange; registrations that never get one are
    /// removed after the idle time.
    pub last_used_at: Option<Timestamp>,
}

/// authgate's own login session in a browser.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: Hashed<kind::Session>,
    pub subject: String,
    pub email: Option<String>,
    /// Whether the upstream provider vouched for `email` (`None`: it did not say).
    pub email_verified: Option<bool>,
    /// When the person logged in: an ID token's `auth_time`.
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// An MCP session id issued by an upstream MCP server, bound to the caller it was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpSessionRecord {
    pub id: Hashed<kind::McpSession>,
    /// The resource URI (token audience) whose upstream issued it.
    pub resource: String,
    pub subject: String,
    pub client_id: String,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
    /// Idle end: `last_used_at` plus the session TTL in force when it was last touched.
    pub expires_at: Timestamp,
}

/// A grant's tokens at the upstream provider, sealed (see [`crate::sealing`]), and who may
/// refresh them now.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamTokenRecord {
    pub grant_id: String,
    pub access_sealed: String,
    pub refresh_sealed: Option<String>,
    pub obtained_at: Timestamp,
    /// `None`: the provider did not say.
    pub expires_at: Option<Timestamp>,
    /// Moves with every refresh: a refresh is stored only over the version it started from.
    pub version: i64,
    /// An instance is refreshing them until then.
    pub lease_until: Option<Timestamp>,
}

impl std::fmt::Debug for UpstreamTokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTokenRecord")
            .field("grant_id", &self.grant_id)
            .field("has_refresh", &self.refresh_sealed.is_some())
            .field("obtained_at", &self.obtained_at)
            .field("expires_at", &self.expires_at)
            .field("version", &self.version)
            .field("lease_until", &self.lease_until)
            .finish_non_exhaustive()
    }
}

/// What a user approved for a client.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConsentRecord {
    pub subject: String,
    pub client_id: String,
    pub scope: String,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
}

/// One entry of the audit trail: a tool call or a security event. It never holds a tool's
/// arguments, a token or a secret; `detail` is a short sentence of authgate's own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct AuditEvent {
    pub id: String,
    pub at: Timestamp,
    /// `tool_call`, `login`, `consent`, `refresh_reuse`, `code_replay`, `revocation`,
    /// `policy_refusal`.
    pub kind: String,
    pub outcome: String,
    pub subject: Option<String>,
    pub email: Option<String>,
    pub client_id: Option<String>,
    /// The resource URI (token audience).
    pub resource: Option<String>,
    pub tool: Option<String>,
    pub latency_ms: Option<i64>,
    /// The request's `X-Request-Id`, as in the logs.
    pub request_id: Option<String>,
    pub detail: Option<String>,
}

/// Which audit events to read (every filter optional), newest first, at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// A subject (`ag_...`) or an email address.
    pub user: Option<String>,
    pub client_id: Option<String>,
    /// Events at or after this time.
    pub since: Option<Timestamp>,
    pub limit: i64,
}

#[derive(Clone, sqlx::FromRow)]
pub struct KeyRecord {
    pub kid: String,
    pub alg: String,
    /// PKCS#8 DER, base64 (sealed when a key-encryption key is configured).
    pub private_der: String,
    pub created_at: Timestamp,
    /// When it starts signing; it is published from the moment it is stored.
    pub activates_at: Timestamp,
    /// When its successor took over (informational: stages derive from `activates_at`).
    pub retired_at: Option<Timestamp>,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// The operations on stored data, on a [`Store`] (each on its own) or on a [`Tx`] (together).
/// Conditional writes return whether they applied: exactly one of several racing callers gets
/// `true`.
#[async_trait]
pub trait Repo: Send + Sync {
    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    async fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError>;
    async fn delete_client(&self, id: &str) -> Result<bool, StoreError>;
    async fn touch_client(&self, id: &str, now: Timestamp) -> Result<(), StoreError>;
    /// Removes clients registered before `registered_before` that never completed a token
    /// exchange. Returns how many were removed.
    async fn delete_idle_clients(&self, registered_before: Timestamp) -> Result<u64, StoreError>;
    /// Every registered client, newest first (admin CLI).
    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError>;

    async fn insert_pending(&self, p: &PendingAuthorization) -> Result<(), StoreError>;
    async fn get_pending(
        &self,
        id: &Hashed<kind::Pending>,
    ) -> Result<Option<PendingAuthorization>, StoreError>;
    async fn get_pending_by_upstream_state(
        &self,
        state: &Hashed<kind::UpstreamState>,
    ) -> Result<Option<PendingAuthorization>, StoreError>;
    async fn get_pending_by_confirmation(
        &self,
        token: &Hashed<kind::Confirmation>,
    ) -> Result<Option<PendingAuthorization>, StoreError>;
    /// Moves the request to the upstream stage with this leg, unless it is done.
    async fn set_pending_upstream(
        &self,
        id: &Hashed<kind::Pending>,
        leg: &UpstreamLeg,
    ) -> Result<bool, StoreError>;
    /// Moves a request at the upstream stage to wait for a confirmation (dropping the leg's
    /// secrets); exactly one caller gets `true`.
    async fn set_pending_confirmation(
        &self,
        id: &Hashed<kind::Pending>,
        confirmation: &Confirmation,
    ) -> Result<bool, StoreError>;
    /// Marks the request done (and drops the leg's secrets); `false` when it already was.
    async fn finish_pending(&self, id: &Hashed<kind::Pending>) -> Result<bool, StoreError>;

    async fn insert_session(&self, s: &SessionRecord) -> Result<(), StoreError>;
    async fn get_session(
        &self,
        id: &Hashed<kind::Session>,
    ) -> Result<Option<SessionRecord>, StoreError>;
    async fn delete_session(&self, id: &Hashed<kind::Session>) -> Result<(), StoreError>;

    /// Binds an MCP session id (per resource) to the caller it was issued to. `false` when it is
    /// already bound to another caller, whose binding is left as it was; binding it again to the
    /// same caller only moves `last_used_at` and `expires_at`.
    async fn bind_mcp_session(&self, s: &McpSessionRecord) -> Result<bool, StoreError>;
    async fn get_mcp_session(
        &self,
        id: &Hashed<kind::McpSession>,
        resource: &str,
    ) -> Result<Option<McpSessionRecord>, StoreError>;
    /// Records a use (idle expiry); never moves `last_used_at` backwards.
    async fn touch_mcp_session(
        &self,
        id: &Hashed<kind::McpSession>,
        resource: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError>;
    async fn delete_mcp_session(
        &self,
        id: &Hashed<kind::McpSession>,
        resource: &str,
    ) -> Result<bool, StoreError>;

    async fn upsert_consent(&self, c: &ConsentRecord) -> Result<(), StoreError>;
    async fn get_consent(
        &self,
        subject: &str,
        client_id: &str,
    ) -> Result<Option<ConsentRecord>, StoreError>;
    /// The approvals a user gave, newest use first (the connected-apps page).
    async fn list_consents(&self, subject: &str) -> Result<Vec<ConsentRecord>, StoreError>;

    /// Stores a new grant and its authorization code.
    async fn insert_grant(&self, grant: &Grant, code: &AuthorizationCode)
    -> Result<(), StoreError>;
    /// Stores a live grant's widened scope and email (see [`Grant::continued`]) and a new code
    /// for it; `false` (and nothing stored) when the grant was revoked or has ended meanwhile.
    async fn continue_grant(
        &self,
        grant: &Grant,
        code: &AuthorizationCode,
    ) -> Result<bool, StoreError>;
    /// The newest live grant of a person, client and resource.
    async fn find_live_grant(
        &self,
        subject: &str,
        client_id: &str,
        resource: &str,
        now: Timestamp,
    ) -> Result<Option<Grant>, StoreError>;
    /// Stores a grant that no code stands for: the jwt-bearer grant's, whose access token comes
    /// straight from the exchange (the grant is what revocation and the MCP guard look up).
    async fn insert_direct_grant(&self, grant: &Grant) -> Result<(), StoreError>;
    async fn get_grant(&self, id: &str) -> Result<Option<Grant>, StoreError>;
    /// Revokes a grant and deletes its upstream tokens; `false` when it already was revoked.
    async fn revoke_grant(&self, id: &str, now: Timestamp) -> Result<bool, StoreError>;
    /// Records a use of a live grant; `false` if it was revoked or has ended meanwhile.
    async fn touch_grant(&self, id: &str, now: Timestamp) -> Result<bool, StoreError>;
    /// Grants, optionally only those of a user (subject or email) and/or a client, newest first.
    async fn list_grants(
        &self,
        user: Option<&str>,
        client_id: Option<&str>,
    ) -> Result<Vec<Grant>, StoreError>;
    /// Revokes the matching live grants (their refresh and access tokens die with them, their
    /// upstream tokens are deleted) and forgets the matching approvals. At least one filter is required. Returns grants revoked.
    async fn revoke_grants(
        &self,
        user: Option<&str>,
        client_id: Option<&str>,
        now: Timestamp,
    ) -> Result<u64, StoreError>;

    /// A code and its grant.
    async fn get_code(
        &self,
        hash: &Hashed<kind::Code>,
    ) -> Result<Option<(AuthorizationCode, Grant)>, StoreError>;
    /// Consumes a code; exactly one caller gets `true`, however many race.
    async fn use_code(&self, hash: &Hashed<kind::Code>, now: Timestamp)
    -> Result<bool, StoreError>;

    async fn insert_refresh(&self, r: &RefreshToken) -> Result<(), StoreError>;
    /// A refresh token and its grant.
    async fn get_refresh(
        &self,
        hash: &Hashed<kind::Refresh>,
    ) -> Result<Option<(RefreshToken, Grant)>, StoreError>;
    /// Marks a current token rotated, keeping its sealed successor; exactly one caller gets
    /// `true`.
    async fn rotate_refresh(
        &self,
        hash: &Hashed<kind::Refresh>,
        now: Timestamp,
        sealed_successor: &str,
    ) -> Result<bool, StoreError>;

    /// Keeps a grant's upstream tokens (in the unit of work that issues its code), replacing
    /// those of an earlier login when the grant is continued.
    async fn insert_upstream_tokens(&self, t: &UpstreamTokenRecord) -> Result<(), StoreError>;
    async fn get_upstream_tokens(
        &self,
        grant_id: &str,
    ) -> Result<Option<UpstreamTokenRecord>, StoreError>;
    /// Takes the right to refresh a grant's tokens until `until`, if they are still at `version`
    /// and nobody holds it at `now`; exactly one of several racing callers gets `true`.
    async fn lease_upstream_tokens(
        &self,
        grant_id: &str,
        version: i64,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<bool, StoreError>;
    /// Stores refreshed tokens (`t.version` the next one) over `from_version`, ending the lease;
    /// `false` when they are gone (the grant was revoked) or moved on meanwhile.
    async fn replace_upstream_tokens(
        &self,
        t: &UpstreamTokenRecord,
        from_version: i64,
    ) -> Result<bool, StoreError>;
    /// Gives the lease up without a refresh (the provider could not be reached).
    async fn release_upstream_lease(&self, grant_id: &str, version: i64) -> Result<(), StoreError>;

    async fn revoke_access_token(&self, jti: &str, expires_at: Timestamp)
    -> Result<(), StoreError>;
    async fn is_access_token_revoked(&self, jti: &str) -> Result<bool, StoreError>;

    /// Records a client assertion as used until `expires_at`; exactly one caller gets `true`,
    /// however many instances race.
    async fn use_client_assertion(
        &self,
        jti: &Hashed<kind::AssertionJti>,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Records an ID-JAG (by issuer and `jti`) as used until `expires_at`; exactly one caller
    /// gets `true`, however many instances race.
    async fn use_identity_assertion(
        &self,
        jti: &Hashed<kind::IdentityAssertionJti>,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Stores a key (published from now on, signing from its `activates_at`) and records that
    /// it supersedes the keys activated before it.
    async fn insert_key(&self, k: &KeyRecord) -> Result<(), StoreError>;
    /// Every key, in activation order.
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;
    /// A counter that every change to the keys moves (in the same transaction): reading this
    /// one row tells an instance whether it must re-read the keys.
    async fn key_version(&self) -> Result<i64, StoreError>;
    /// Removes keys no longer published. Returns how many were removed.
    async fn delete_keys(&self, kids: &[String]) -> Result<u64, StoreError>;

    /// Deletes what can no longer be used: expired pending requests, sessions, MCP session
    /// bindings, codes (kept an hour past expiry so a late replay is still recognised),
    /// revoked-token entries and used client assertions and ID-JAGs past their expiry, refresh
    /// tokens rotated more than `keep_rotated` seconds ago or idle-expired, upstream tokens of
    /// revoked grants, and grants past their
    /// absolute end. Returns rows removed.
    async fn delete_expired(&self, now: Timestamp, keep_rotated: i64) -> Result<u64, StoreError>;

    /// Appends audit events, all or none. Returns how many were stored.
    async fn insert_audit_events(&self, events: &[AuditEvent]) -> Result<u64, StoreError>;
    async fn list_audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
    /// Deletes the audit events from before `before` (the retention). Returns how many.
    async fn delete_audit_events_before(&self, before: Timestamp) -> Result<u64, StoreError>;
}

/// The database: operations one by one, and units of work.
#[async_trait]
pub trait Store: Repo + 'static {
    /// Which backend this is, for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Connections in the pool: (open, idle).
    fn pool_state(&self) -> (u32, u32);

    async fn ping(&self) -> Result<(), StoreError>;

    /// Starts a unit of work. Writers are serialized from the start (SQLite takes the write
    /// lock at once), so a transaction never fails half-way because another wrote first.
    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError>;
}

/// A unit of work: what is done through it is committed by [`Tx::commit`] or not at all.
#[async_trait]
pub trait Tx: Repo {
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;

    /// Undoes the work now. Dropping a `Tx` undoes it too, but only once its connection is next
    /// used; rolling back explicitly releases its locks before the caller goes on.
    async fn rollback(self: Box<Self>) -> Result<(), StoreError>;
}

pub type DynStore = Arc<dyn Store>;

/// Opens the database named by `url` (`sqlite:...` or `postgres://...`) and applies migrations.
pub async fn connect(url: &str) -> Result<DynStore, anyhow::Error> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        Ok(Arc::new(PgStore::connect(url).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::is_transient;

    #[test]
    fn transient_database_errors() {
        for code in [
            "57P01", "57P03", "08006", "08001", "53300", "40001", "40P01", "5", "517", "6",
        ] {
            assert!(is_transient(code), "{code}");
        }
        for code in ["23505", "42P01", "22021", "19", "2067", "1"] {
            assert!(!is_transient(code), "{code}");
        }
        use super::StoreError;
        let handshake = sqlx::Error::Protocol("unexpected response from SSLRequest: 0x00".into());
        assert!(matches!(
            StoreError::from(handshake),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            StoreError::from(sqlx::Error::RowNotFound),
            StoreError::Other(_)
        ));
    }
}
