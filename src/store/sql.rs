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

pub(super) const INSERT_PENDING: &str = "INSERT INTO pending_authorizations (id_hash, browser_hash, client_id, redirect_uri, state, code_challenge, scope, resource, status, upstream_state_hash, upstream_nonce, upstream_verifier, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";
const PENDING_COLUMNS: &str = "id_hash, browser_hash, client_id, redirect_uri, state, code_challenge, scope, resource, status, upstream_state_hash, upstream_nonce, upstream_verifier, created_at, expires_at";
pub(super) fn select_pending_by(column: &str) -> String {
    format!("SELECT {PENDING_COLUMNS} FROM pending_authorizations WHERE {column} = $1")
}
pub(super) const SET_PENDING_UPSTREAM: &str = "UPDATE pending_authorizations SET status = 'upstream', upstream_state_hash = $2, upstream_nonce = $3, upstream_verifier = $4 WHERE id_hash = $1 AND status IN ('consent', 'upstream')";
pub(super) const FINISH_PENDING: &str = "UPDATE pending_authorizations SET status = 'done', upstream_verifier = NULL, upstream_nonce = NULL WHERE id_hash = $1 AND status <> 'done'";

pub(super) const INSERT_SESSION: &str = "INSERT INTO sessions (id_hash, subject, email, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)";
pub(super) const SELECT_SESSION: &str =
    "SELECT id_hash, subject, email, created_at, expires_at FROM sessions WHERE id_hash = $1";
pub(super) const DELETE_SESSION: &str = "DELETE FROM sessions WHERE id_hash = $1";

// Binding again for the same caller only pushes the expiry out; another caller's binding is never
// overwritten (no row changes, so the caller learns it lost).
pub(super) const BIND_MCP_SESSION: &str = "INSERT INTO mcp_sessions (id_hash, resource, subject, client_id, created_at, last_used_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id_hash, resource) DO UPDATE SET last_used_at = excluded.last_used_at, expires_at = excluded.expires_at WHERE mcp_sessions.subject = excluded.subject AND mcp_sessions.client_id = excluded.client_id";
pub(super) const SELECT_MCP_SESSION: &str = "SELECT id_hash, resource, subject, client_id, created_at, last_used_at, expires_at FROM mcp_sessions WHERE id_hash = $1 AND resource = $2";
pub(super) const TOUCH_MCP_SESSION: &str = "UPDATE mcp_sessions SET last_used_at = $3, expires_at = $4 WHERE id_hash = $1 AND resource = $2 AND last_used_at < $3";
pub(super) const DELETE_MCP_SESSION: &str =
    "DELETE FROM mcp_sessions WHERE id_hash = $1 AND resource = $2";

pub(super) const UPSERT_CONSENT: &str = "INSERT INTO consents (subject, client_id, scope, created_at, last_used_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subject, client_id) DO UPDATE SET scope = excluded.scope, last_used_at = excluded.last_used_at";
pub(super) const SELECT_CONSENT: &str = "SELECT subject, client_id, scope, created_at, last_used_at FROM consents WHERE subject = $1 AND client_id = $2";
pub(super) const DELETE_CONSENT: &str =
    "DELETE FROM consents WHERE subject = $1 AND client_id = $2";

pub(super) const INSERT_FAMILY: &str = "INSERT INTO grant_families (id, client_id, subject, email, scope, resource, created_at, expires_at, last_used_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
pub(super) const SELECT_FAMILY: &str = "SELECT id, client_id, subject, email, scope, resource, created_at, expires_at, last_used_at, revoked_at FROM grant_families WHERE id = $1";
pub(super) const REVOKE_FAMILY: &str =
    "UPDATE grant_families SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
pub(super) const TOUCH_FAMILY: &str = "UPDATE grant_families SET last_used_at = $2 WHERE id = $1";

pub(super) const INSERT_CODE: &str = "INSERT INTO authorization_codes (hash, family_id, client_id, redirect_uri, code_challenge, created_at, expires_at, used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub(super) const SELECT_CODE: &str = "SELECT hash, family_id, client_id, redirect_uri, code_challenge, created_at, expires_at, used_at FROM authorization_codes WHERE hash = $1";
pub(super) const USE_CODE: &str =
    "UPDATE authorization_codes SET used_at = $2 WHERE hash = $1 AND used_at IS NULL";

pub(super) const INSERT_REFRESH: &str = "INSERT INTO refresh_tokens (hash, family_id, created_at, expires_at, rotated_at, successor_sealed) VALUES ($1, $2, $3, $4, $5, $6)";
pub(super) const SELECT_REFRESH: &str = "SELECT hash, family_id, created_at, expires_at, rotated_at, successor_sealed FROM refresh_tokens WHERE hash = $1";
pub(super) const ROTATE_REFRESH: &str = "UPDATE refresh_tokens SET rotated_at = $2, successor_sealed = $3 WHERE hash = $1 AND rotated_at IS NULL";

pub(super) const REVOKE_JTI: &str = "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING";
pub(super) const SELECT_JTI: &str = "SELECT COUNT(*) FROM revoked_access_tokens WHERE jti = $1";

pub(super) const INSERT_KEY: &str = "INSERT INTO signing_keys (kid, alg, private_der, created_at, activates_at, retired_at) VALUES ($1, $2, $3, $4, $5, $6)";
pub(super) const SELECT_KEYS: &str = "SELECT kid, alg, private_der, created_at, activates_at, retired_at FROM signing_keys ORDER BY activates_at, created_at, kid";
/// `retired_at` records when a successor takes over, for reading the table by hand; the
/// keystore derives the stages from `activates_at` alone.
pub(super) const RETIRE_KEYS: &str = "UPDATE signing_keys SET retired_at = $2 WHERE kid <> $1 AND retired_at IS NULL AND activates_at <= $2";
pub(super) const DELETE_KEY: &str = "DELETE FROM signing_keys WHERE kid = $1";
pub(super) const BUMP_KEY_VERSION: &str =
    "UPDATE key_version SET version = version + 1 WHERE id = 1";
pub(super) const SELECT_KEY_VERSION: &str = "SELECT version FROM key_version WHERE id = 1";

/// `(statement, whether it takes the rotated-token window as $2)`.
pub(super) const DELETE_EXPIRED: &[(&str, bool)] = &[
    (
        "DELETE FROM pending_authorizations WHERE expires_at < $1",
        false,
    ),
    ("DELETE FROM sessions WHERE expires_at < $1", false),
    ("DELETE FROM mcp_sessions WHERE expires_at < $1", false),
    (
        "DELETE FROM authorization_codes WHERE expires_at < $1 - 3600",
        false,
    ),
    (
        "DELETE FROM revoked_access_tokens WHERE expires_at < $1",
        false,
    ),
    (
        "DELETE FROM refresh_tokens WHERE (rotated_at IS NOT NULL AND rotated_at < $1 - $2) OR expires_at < $1",
        true,
    ),
    (
        "DELETE FROM refresh_tokens WHERE family_id IN (SELECT id FROM grant_families WHERE expires_at < $1)",
        false,
    ),
    ("DELETE FROM grant_families WHERE expires_at < $1", false),
];

pub(super) const SELECT_CLIENTS: &str = "SELECT id, secret_hash, secret_expires_at, metadata, created_at, last_used_at FROM clients ORDER BY created_at DESC, id";
pub(super) const SELECT_FAMILIES: &str = "SELECT id, client_id, subject, email, scope, resource, created_at, expires_at, last_used_at, revoked_at FROM grant_families WHERE ($1 IS NULL OR subject = $1 OR email = $1) AND ($2 IS NULL OR client_id = $2) ORDER BY created_at DESC, id";
pub(super) const REVOKE_FAMILIES: &str = "UPDATE grant_families SET revoked_at = $3 WHERE revoked_at IS NULL AND ($1 IS NULL OR subject = $1 OR email = $1) AND ($2 IS NULL OR client_id = $2)";
pub(super) const DELETE_CONSENTS: &str = "DELETE FROM consents WHERE ($1 IS NULL OR subject = $1 OR subject IN (SELECT subject FROM grant_families WHERE email = $1)) AND ($2 IS NULL OR client_id = $2)";
pub(super) const SELECT_CONSENTS: &str = "SELECT subject, client_id, scope, created_at, last_used_at FROM consents WHERE subject = $1 ORDER BY last_used_at DESC, client_id";

macro_rules! impl_store {
    ($store:ty, $backend:literal) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            fn pool_state(&self) -> (u32, u32) {
                (
                    self.pool.size(),
                    u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
                )
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

            async fn insert_pending(
                &self,
                p: &$crate::store::PendingRecord,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::sql::INSERT_PENDING)
                    .bind(&p.id_hash)
                    .bind(&p.browser_hash)
                    .bind(&p.client_id)
                    .bind(&p.redirect_uri)
                    .bind(&p.state)
                    .bind(&p.code_challenge)
                    .bind(&p.scope)
                    .bind(&p.resource)
                    .bind(&p.status)
                    .bind(&p.upstream_state_hash)
                    .bind(&p.upstream_nonce)
                    .bind(&p.upstream_verifier)
                    .bind(p.created_at)
                    .bind(p.expires_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get_pending(
                &self,
                id_hash: &str,
            ) -> Result<Option<$crate::store::PendingRecord>, $crate::store::StoreError> {
                let sql = $crate::store::sql::select_pending_by("id_hash");
                Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(id_hash)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn get_pending_by_upstream_state(
                &self,
                state_hash: &str,
            ) -> Result<Option<$crate::store::PendingRecord>, $crate::store::StoreError> {
                let sql = $crate::store::sql::select_pending_by("upstream_state_hash");
                Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(state_hash)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn set_pending_upstream(
                &self,
                id_hash: &str,
                state_hash: &str,
                nonce: &str,
                verifier: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::sql::SET_PENDING_UPSTREAM)
                    .bind(id_hash)
                    .bind(state_hash)
                    .bind(nonce)
                    .bind(verifier)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn finish_pending(
                &self,
                id_hash: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::sql::FINISH_PENDING)
                    .bind(id_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_session(
                &self,
                s: &$crate::store::SessionRecord,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::sql::INSERT_SESSION)
                    .bind(&s.id_hash)
                    .bind(&s.subject)
                    .bind(&s.email)
                    .bind(s.created_at)
                    .bind(s.expires_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get_session(
                &self,
                id_hash: &str,
            ) -> Result<Option<$crate::store::SessionRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as($crate::store::sql::SELECT_SESSION)
                    .bind(id_hash)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn delete_session(&self, id_hash: &str) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::sql::DELETE_SESSION)
                    .bind(id_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn bind_mcp_session(
                &self,
                s: &$crate::store::McpSessionRecord,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::sql::BIND_MCP_SESSION)
                    .bind(&s.id_hash)
                    .bind(&s.resource)
                    .bind(&s.subject)
                    .bind(&s.client_id)
                    .bind(s.created_at)
                    .bind(s.last_used_at)
                    .bind(s.expires_at)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn get_mcp_session(
                &self,
                id_hash: &str,
                resource: &str,
            ) -> Result<Option<$crate::store::McpSessionRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as($crate::store::sql::SELECT_MCP_SESSION)
                    .bind(id_hash)
                    .bind(resource)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn touch_mcp_session(
                &self,
                id_hash: &str,
                resource: &str,
                now: $crate::clock::Timestamp,
                expires_at: $crate::clock::Timestamp,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::sql::TOUCH_MCP_SESSION)
                    .bind(id_hash)
                    .bind(resource)
                    .bind(now)
                    .bind(expires_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_mcp_session(
                &self,
                id_hash: &str,
                resource: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::sql::DELETE_MCP_SESSION)
                    .bind(id_hash)
                    .bind(resource)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn upsert_consent(
                &self,
                c: &$crate::store::ConsentRecord,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::sql::UPSERT_CONSENT)
                    .bind(&c.subject)
                    .bind(&c.client_id)
                    .bind(&c.scope)
                    .bind(c.created_at)
                    .bind(c.last_used_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get_consent(
                &self,
                subject: &str,
                client_id: &str,
            ) -> Result<Option<$crate::store::ConsentRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as($crate::store::sql::SELECT_CONSENT)
                    .bind(subject)
                    .bind(client_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn delete_consent(
                &self,
                subject: &str,
                client_id: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::sql::DELETE_CONSENT)
                    .bind(subject)
                    .bind(client_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn insert_grant(
                &self,
                f: &$crate::store::FamilyRecord,
                c: &$crate::store::CodeRecord,
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query($crate::store::sql::INSERT_FAMILY)
                    .bind(&f.id)
                    .bind(&f.client_id)
                    .bind(&f.subject)
                    .bind(&f.email)
                    .bind(&f.scope)
                    .bind(&f.resource)
                    .bind(f.created_at)
                    .bind(f.expires_at)
                    .bind(f.last_used_at)
                    .bind(f.revoked_at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query($crate::store::sql::INSERT_CODE)
                    .bind(&c.hash)
                    .bind(&c.family_id)
                    .bind(&c.client_id)
                    .bind(&c.redirect_uri)
                    .bind(&c.code_challenge)
                    .bind(c.created_at)
                    .bind(c.expires_at)
                    .bind(c.used_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_family(
                &self,
                id: &str,
            ) -> Result<Option<$crate::store::FamilyRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as($crate::store::sql::SELECT_FAMILY)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn revoke_family(
                &self,
                id: &str,
                now: $crate::clock::Timestamp,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::sql::REVOKE_FAMILY)
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn touch_family(
                &self,
                id: &str,
                now: $crate::clock::Timestamp,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::sql::TOUCH_FAMILY)
                    .bind(id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get_code(
                &self,
                hash: &str,
            ) -> Result<Option<$crate::store::CodeRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as($crate::store::sql::SELECT_CODE)
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn use_code(
                &self,
                hash: &str,
                now: $crate::clock::Timestamp,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::sql::USE_CODE)
                    .bind(hash)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_refresh(
                &self,
                r: &$crate::store::RefreshRecord,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::sql::INSERT_REFRESH)
                    .bind(&r.hash)
                    .bind(&r.family_id)
                    .bind(r.created_at)
                    .bind(r.expires_at)
                    .bind(r.rotated_at)
                    .bind(&r.successor_sealed)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get_refresh(
                &self,
                hash: &str,
            ) -> Result<Option<$crate::store::RefreshRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as($crate::store::sql::SELECT_REFRESH)
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn rotate_refresh(
                &self,
                hash: &str,
                now: $crate::clock::Timestamp,
                sealed: &str,
                successor: &$crate::store::RefreshRecord,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query($crate::store::sql::ROTATE_REFRESH)
                    .bind(hash)
                    .bind(now)
                    .bind(sealed)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                sqlx::query($crate::store::sql::INSERT_REFRESH)
                    .bind(&successor.hash)
                    .bind(&successor.family_id)
                    .bind(successor.created_at)
                    .bind(successor.expires_at)
                    .bind(successor.rotated_at)
                    .bind(&successor.successor_sealed)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn revoke_access_token(
                &self,
                jti: &str,
                expires_at: $crate::clock::Timestamp,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::sql::REVOKE_JTI)
                    .bind(jti)
                    .bind(expires_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn is_access_token_revoked(
                &self,
                jti: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let (n,): (i64,) = sqlx::query_as($crate::store::sql::SELECT_JTI)
                    .bind(jti)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n > 0)
            }

            async fn insert_key(
                &self,
                k: &$crate::store::KeyRecord,
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query($crate::store::sql::INSERT_KEY)
                    .bind(&k.kid)
                    .bind(&k.alg)
                    .bind(&k.private_der)
                    .bind(k.created_at)
                    .bind(k.activates_at)
                    .bind(k.retired_at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query($crate::store::sql::RETIRE_KEYS)
                    .bind(&k.kid)
                    .bind(k.activates_at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query($crate::store::sql::BUMP_KEY_VERSION)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn key_version(&self) -> Result<i64, $crate::store::StoreError> {
                let (v,): (i64,) = sqlx::query_as($crate::store::sql::SELECT_KEY_VERSION)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(v)
            }

            async fn delete_keys(&self, kids: &[String]) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                let mut removed = 0;
                for kid in kids {
                    removed += sqlx::query($crate::store::sql::DELETE_KEY)
                        .bind(kid)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                if removed > 0 {
                    sqlx::query($crate::store::sql::BUMP_KEY_VERSION)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(removed)
            }

            async fn list_keys(
                &self,
            ) -> Result<Vec<$crate::store::KeyRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as($crate::store::sql::SELECT_KEYS)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn delete_expired(
                &self,
                now: $crate::clock::Timestamp,
                keep_rotated: i64,
            ) -> Result<u64, $crate::store::StoreError> {
                let mut removed = 0;
                for (sql, with_window) in $crate::store::sql::DELETE_EXPIRED {
                    let mut q = sqlx::query(*sql).bind(now);
                    if *with_window {
                        q = q.bind(keep_rotated);
                    }
                    removed += q.execute(&self.pool).await?.rows_affected();
                }
                Ok(removed)
            }

            async fn list_clients(
                &self,
            ) -> Result<Vec<$crate::store::ClientRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::sql::ClientRow> =
                    sqlx::query_as($crate::store::sql::SELECT_CLIENTS)
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter()
                    .map($crate::store::ClientRecord::try_from)
                    .collect()
            }

            async fn list_families(
                &self,
                user: Option<&str>,
                client_id: Option<&str>,
            ) -> Result<Vec<$crate::store::FamilyRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as($crate::store::sql::SELECT_FAMILIES)
                    .bind(user)
                    .bind(client_id)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn revoke_grants(
                &self,
                user: Option<&str>,
                client_id: Option<&str>,
                now: $crate::clock::Timestamp,
            ) -> Result<u64, $crate::store::StoreError> {
                if user.is_none() && client_id.is_none() {
                    return Ok(0);
                }
                let mut tx = self.pool.begin().await?;
                sqlx::query($crate::store::sql::DELETE_CONSENTS)
                    .bind(user)
                    .bind(client_id)
                    .execute(&mut *tx)
                    .await?;
                let done = sqlx::query($crate::store::sql::REVOKE_FAMILIES)
                    .bind(user)
                    .bind(client_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected())
            }

            async fn list_consents(
                &self,
                subject: &str,
            ) -> Result<Vec<$crate::store::ConsentRecord>, $crate::store::StoreError> {
                Ok(sqlx::query_as($crate::store::sql::SELECT_CONSENTS)
                    .bind(subject)
                    .fetch_all(&self.pool)
                    .await?)
            }
        }
    };
}

pub(super) use impl_store;
