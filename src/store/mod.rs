//! Persistence behind one trait, with a PostgreSQL and a SQLite implementation sharing the same
//! SQL (runtime-checked queries, `$n` placeholders work on both).

mod postgres;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::oauth::client::ClientMetadata;
use crate::oauth::secrets::SecretHash;

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
/// 53300 (too many connections); SQLite's BUSY and LOCKED (primary codes 5 and 6).
fn is_transient(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("57P")
        || code == "53300"
        || code.parse::<i64>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
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
    pub secret_hash: Option<SecretHash>,
    /// 0 = never.
    pub secret_expires_at: Timestamp,
    pub metadata: ClientMetadata,
    pub created_at: Timestamp,
    /// Set on the first successful token exchange; registrations that never get one are
    /// removed after the idle time.
    pub last_used_at: Option<Timestamp>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is, for logs and metrics.
    fn backend(&self) -> &'static str;

    /// Connections in the pool: (open, idle).
    fn pool_state(&self) -> (u32, u32);

    async fn ping(&self) -> Result<(), StoreError>;

    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    async fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError>;
    async fn delete_client(&self, id: &str) -> Result<bool, StoreError>;
    async fn count_clients(&self) -> Result<i64, StoreError>;
    async fn touch_client(&self, id: &str, now: Timestamp) -> Result<(), StoreError>;
    /// Removes clients registered before `registered_before` that never completed a token
    /// exchange. Returns how many were removed.
    async fn delete_idle_clients(&self, registered_before: Timestamp) -> Result<u64, StoreError>;

    async fn insert_pending(&self, p: &PendingRecord) -> Result<(), StoreError>;
    async fn get_pending(&self, id_hash: &str) -> Result<Option<PendingRecord>, StoreError>;
    async fn get_pending_by_upstream_state(
        &self,
        state_hash: &str,
    ) -> Result<Option<PendingRecord>, StoreError>;
    /// Records the approval and the upstream leg's secrets. Allowed again while the upstream
    /// login has not completed, so a double submit still leads somewhere.
    async fn set_pending_upstream(
        &self,
        id_hash: &str,
        state_hash: &str,
        nonce: &str,
        verifier: &str,
    ) -> Result<bool, StoreError>;
    /// Marks the request done; `false` when it already was (a second callback loses).
    async fn finish_pending(&self, id_hash: &str) -> Result<bool, StoreError>;

    async fn insert_session(&self, s: &SessionRecord) -> Result<(), StoreError>;
    async fn get_session(&self, id_hash: &str) -> Result<Option<SessionRecord>, StoreError>;
    async fn delete_session(&self, id_hash: &str) -> Result<(), StoreError>;

    /// Binds an MCP session id (by hash, per resource) to the caller it was issued to. `false`
    /// when it is already bound to another caller, whose binding is left as it was; binding it
    /// again to the same caller only moves `last_used_at` and `expires_at`.
    async fn bind_mcp_session(&self, s: &McpSessionRecord) -> Result<bool, StoreError>;
    async fn get_mcp_session(
        &self,
        id_hash: &str,
        resource: &str,
    ) -> Result<Option<McpSessionRecord>, StoreError>;
    /// Records a use (idle expiry); never moves `last_used_at` backwards.
    async fn touch_mcp_session(
        &self,
        id_hash: &str,
        resource: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<(), StoreError>;
    async fn delete_mcp_session(&self, id_hash: &str, resource: &str) -> Result<bool, StoreError>;

    async fn upsert_consent(&self, c: &ConsentRecord) -> Result<(), StoreError>;
    async fn get_consent(
        &self,
        subject: &str,
        client_id: &str,
    ) -> Result<Option<ConsentRecord>, StoreError>;
    async fn delete_consent(&self, subject: &str, client_id: &str) -> Result<bool, StoreError>;

    /// Stores a new grant family and its authorization code together.
    async fn insert_grant(
        &self,
        family: &FamilyRecord,
        code: &CodeRecord,
    ) -> Result<(), StoreError>;
    async fn get_family(&self, id: &str) -> Result<Option<FamilyRecord>, StoreError>;
    async fn revoke_family(&self, id: &str, now: Timestamp) -> Result<bool, StoreError>;
    async fn touch_family(&self, id: &str, now: Timestamp) -> Result<(), StoreError>;

    async fn get_code(&self, hash: &str) -> Result<Option<CodeRecord>, StoreError>;
    /// Consumes a code; exactly one caller gets `true`, however many race.
    async fn use_code(&self, hash: &str, now: Timestamp) -> Result<bool, StoreError>;

    async fn insert_refresh(&self, r: &RefreshRecord) -> Result<(), StoreError>;
    async fn get_refresh(&self, hash: &str) -> Result<Option<RefreshRecord>, StoreError>;
    /// Rotates `hash` to `successor` atomically; exactly one caller gets `true`.
    async fn rotate_refresh(
        &self,
        hash: &str,
        now: Timestamp,
        sealed_successor: &str,
        successor: &RefreshRecord,
    ) -> Result<bool, StoreError>;

    async fn revoke_access_token(&self, jti: &str, expires_at: Timestamp)
    -> Result<(), StoreError>;
    async fn is_access_token_revoked(&self, jti: &str) -> Result<bool, StoreError>;

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
    /// bindings, codes (kept an
    /// hour past expiry so a late replay is still recognised), revoked-token entries past their
    /// expiry, refresh tokens rotated more than `keep_rotated` seconds ago or idle-expired, and
    /// grants past their absolute end. Returns the number of rows removed.
    async fn delete_expired(&self, now: Timestamp, keep_rotated: i64) -> Result<u64, StoreError>;

    /// Every registered client, newest first (admin CLI).
    async fn list_clients(&self) -> Result<Vec<ClientRecord>, StoreError>;
    /// Grants, optionally only those of a user (subject or email) and/or a client, newest first.
    async fn list_families(
        &self,
        user: Option<&str>,
        client_id: Option<&str>,
    ) -> Result<Vec<FamilyRecord>, StoreError>;
    /// Revokes the matching live grants (their refresh and access tokens die with them) and
    /// forgets the matching approvals. At least one filter is required. Returns grants revoked.
    async fn revoke_grants(
        &self,
        user: Option<&str>,
        client_id: Option<&str>,
        now: Timestamp,
    ) -> Result<u64, StoreError>;
    /// The approvals a user gave, newest use first (the connected-apps page).
    async fn list_consents(&self, subject: &str) -> Result<Vec<ConsentRecord>, StoreError>;
}

/// An authorization request between `/authorize` and the redirect back to the client.
#[derive(Clone, sqlx::FromRow)]
pub struct PendingRecord {
    pub id_hash: String,
    /// Hash of the browser-binding cookie of the browser that started the request.
    pub browser_hash: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub scope: String,
    pub resource: String,
    /// `consent`, `upstream` (approved, at the upstream login) or `done`.
    pub status: String,
    pub upstream_state_hash: Option<String>,
    pub upstream_nonce: Option<String>,
    pub upstream_verifier: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for PendingRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRecord")
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("scope", &self.scope)
            .field("resource", &self.resource)
            .field("status", &self.status)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

pub const PENDING_CONSENT: &str = "consent";
pub const PENDING_UPSTREAM: &str = "upstream";
pub const PENDING_DONE: &str = "done";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRecord {
    pub id_hash: String,
    pub subject: String,
    pub email: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// An MCP session id issued by an upstream MCP server, bound to the caller it was issued to.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct McpSessionRecord {
    /// SHA-256 of the session id ([`crate::oauth::secrets::SecretKind::McpSession`]).
    pub id_hash: String,
    /// The resource URI (token audience) whose upstream issued it.
    pub resource: String,
    pub subject: String,
    pub client_id: String,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
    /// Idle end: `last_used_at` plus the session TTL in force when it was last touched.
    pub expires_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConsentRecord {
    pub subject: String,
    pub client_id: String,
    pub scope: String,
    pub created_at: Timestamp,
    pub last_used_at: Timestamp,
}

/// Everything one authorization produced: its code, refresh tokens and access tokens share it,
/// and revoking it revokes them all.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FamilyRecord {
    pub id: String,
    pub client_id: String,
    pub subject: String,
    pub email: Option<String>,
    pub scope: String,
    pub resource: String,
    pub created_at: Timestamp,
    /// Absolute end of the grant.
    pub expires_at: Timestamp,
    pub last_used_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CodeRecord {
    pub hash: String,
    pub family_id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub used_at: Option<Timestamp>,
}

#[derive(Clone, sqlx::FromRow)]
pub struct RefreshRecord {
    pub hash: String,
    pub family_id: String,
    pub created_at: Timestamp,
    /// Idle expiry: each rotation gives the successor a new one.
    pub expires_at: Timestamp,
    pub rotated_at: Option<Timestamp>,
    pub successor_sealed: Option<String>,
}

impl std::fmt::Debug for RefreshRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshRecord")
            .field("family_id", &self.family_id)
            .field("expires_at", &self.expires_at)
            .field("rotated_at", &self.rotated_at)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, sqlx::FromRow)]
pub struct KeyRecord {
    pub kid: String,
    pub alg: String,
    /// PKCS#8 DER, base64.
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
        for code in ["57P01", "57P03", "08006", "08001", "53300", "5", "517", "6"] {
            assert!(is_transient(code), "{code}");
        }
        for code in ["23505", "42P01", "19", "2067", "1"] {
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
