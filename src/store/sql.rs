//! The SQL shared by both backends. `impl_store!` expands the same query texts for each pool
//! type, so the two implementations cannot drift apart.

use crate::oauth::client::ClientMetadata;
use crate::oauth::secrets::SecretHash;

use super::{ClientRecord, StoreError};

#[derive(sqlx::FromRow)]
pub(super) struct ClientRow {
    pub id: String,
    pub secret_hash: Option<String>,
    pub secret_expires_at: i64,
    pub metadata: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

impl TryFrom<ClientRow> for ClientRecord {
    type Error = StoreError;

    fn try_from(row: ClientRow) -> Result<Self, StoreError> {
        let metadata: ClientMetadata = serde_json::from_str(&row.metadata)
            .map_err(|e| StoreError::Corrupt(format!("client {} metadata: {e}", row.id)))?;
        Ok(Self {
            id: row.id,
            secret_hash: row.secret_hash.map(SecretHash::from_stored),
            secret_expires_at: row.secret_expires_at,
            metadata,
            created_at: row.created_at,
            last_used_at: row.last_used_at,
        })
    }
}

pub(super) fn metadata_json(client: &ClientRecord) -> Result<String, StoreError> {
    serde_json::to_string(&client.metadata)
        .map_err(|e| StoreError::Corrupt(format!("client metadata: {e}")))
}

pub(super) const INSERT_CLIENT: &str = "INSERT INTO clients (id, secret_hash, secret_expires_at, metadata, created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6)";
pub(super) const SELECT_CLIENT: &str = "SELECT id, secret_hash, secret_expires_at, metadata, created_at, last_used_at FROM clients WHERE id = $1";
pub(super) const DELETE_CLIENT: &str = "DELETE FROM clients WHERE id = $1";
pub(super) const COUNT_CLIENTS: &str = "SELECT COUNT(*) FROM clients";
pub(super) const TOUCH_CLIENT: &str = "UPDATE clients SET last_used_at = $2 WHERE id = $1";
pub(super) const DELETE_IDLE_CLIENTS: &str =
    "DELETE FROM clients WHERE last_used_at IS NULL AND created_at < $1";

macro_rules! impl_store {
    ($store:ty, $backend:literal) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn insert_client(
                &self,
                client: &$crate::store::ClientRecord,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::sql::INSERT_CLIENT)
                    .bind(&client.id)
                    .bind(client.secret_hash.as_ref().map(|h| h.as_str()))
                    .bind(client.secret_expires_at)
                    .bind($crate::store::sql::metadata_json(client)?)
                    .bind(client.created_at)
                    .bind(client.last_used_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get_client(
                &self,
                id: &str,
            ) -> Result<Option<$crate::store::ClientRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::sql::ClientRow> =
                    sqlx::query_as($crate::store::sql::SELECT_CLIENT)
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map($crate::store::ClientRecord::try_from).transpose()
            }

            async fn delete_client(&self, id: &str) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::sql::DELETE_CLIENT)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn count_clients(&self) -> Result<i64, $crate::store::StoreError> {
                let (n,): (i64,) = sqlx::query_as($crate::store::sql::COUNT_CLIENTS)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n)
            }

            async fn touch_client(
                &self,
                id: &str,
                now: $crate::clock::Timestamp,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::sql::TOUCH_CLIENT)
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_idle_clients(
                &self,
                registered_before: $crate::clock::Timestamp,
            ) -> Result<u64, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::sql::DELETE_IDLE_CLIENTS)
                    .bind(registered_before)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(super) use impl_store;
