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

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
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

    async fn ping(&self) -> Result<(), StoreError>;

    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    async fn get_client(&self, id: &str) -> Result<Option<ClientRecord>, StoreError>;
    async fn delete_client(&self, id: &str) -> Result<bool, StoreError>;
    async fn count_clients(&self) -> Result<i64, StoreError>;
    async fn touch_client(&self, id: &str, now: Timestamp) -> Result<(), StoreError>;
    /// Removes clients registered before `registered_before` that never completed a token
    /// exchange. Returns how many were removed.
    async fn delete_idle_clients(&self, registered_before: Timestamp) -> Result<u64, StoreError>;
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
