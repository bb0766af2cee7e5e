//! The SQL shared by both backends. Each operation is written once, as a function over a
//! connection (`queries!`); `impl_store!` expands those functions for each backend's connection
//! type and implements [`Repo`](super::Repo) twice from the one list of operations
//! (`repo_operations!`): on the pool (each operation on its own) and on a transaction.

pub(super) const INSERT_CLIENT: &str = "INSERT INTO clients (id, secret_hash, secret_expires_at, metadata, created_at, last_used_at) VALUES ($1, $2, $3, $4, $5, $6)";
pub(super) const SELECT_CLIENT: &str = "SELECT id, secret_hash, secret_expires_at, metadata, created_at, last_used_at FROM clients WHERE id = $1";
pub(super) const SELECT_CLIENTS: &str = "SELECT id, secret_hash, secret_expires_at, metadata, created_at, last_used_at FROM clients ORDER BY created_at DESC, id";
pub(super) const DELETE_CLIENT: &str = "DELETE FROM clients WHERE id = $1";
pub(super) const TOUCH_CLIENT: &str = "UPDATE clients SET last_used_at = $2 WHERE id = $1";
pub(super) const DELETE_IDLE_CLIENTS: &str =
    "DELETE FROM clients WHERE last_used_at IS NULL AND created_at < $1";

macro_rules! pending_columns {
    () => {
        "id_hash, browser_hash, purpose, client_id, redirect_uri, state, code_challenge, scope, resource, status, upstream_state_hash, upstream_nonce, upstream_verifier, subject, email, confirm_hash, created_at, expires_at, nonce, login_not_before, login_subject, upstream_tokens"
    };
}
pub(super) const INSERT_PENDING: &str = concat!(
    "INSERT INTO pending_authorizations (",
    pending_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)"
);
pub(super) const SELECT_PENDING: &str = concat!(
    "SELECT ",
    pending_columns!(),
    " FROM pending_authorizations WHERE id_hash = $1"
);
pub(super) const SELECT_PENDING_BY_STATE: &str = concat!(
    "SELECT ",
    pending_columns!(),
    " FROM pending_authorizations WHERE upstream_state_hash = $1"
);
pub(super) const SELECT_PENDING_BY_CONFIRMATION: &str = concat!(
    "SELECT ",
    pending_columns!(),
    " FROM pending_authorizations WHERE confirm_hash = $1"
);
pub(super) const SET_PENDING_UPSTREAM: &str = "UPDATE pending_authorizations SET status = 'upstream', upstream_state_hash = $2, upstream_nonce = $3, upstream_verifier = $4 WHERE id_hash = $1 AND status IN ('consent', 'upstream')";
// The leg's secrets go, so the upstream `state` (kept, unique) cannot start a second login.
pub(super) const SET_PENDING_CONFIRMATION: &str = "UPDATE pending_authorizations SET status = 'confirm', upstream_verifier = NULL, upstream_nonce = NULL, subject = $2, email = $3, confirm_hash = $4, upstream_tokens = $5 WHERE id_hash = $1 AND status = 'upstream'";
pub(super) const FINISH_PENDING: &str = "UPDATE pending_authorizations SET status = 'done', upstream_verifier = NULL, upstream_nonce = NULL, subject = NULL, email = NULL, upstream_tokens = NULL WHERE id_hash = $1 AND status <> 'done'";

pub(super) const INSERT_SESSION: &str = "INSERT INTO sessions (id_hash, subject, email, email_verified, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)";
pub(super) const SELECT_SESSION: &str = "SELECT id_hash, subject, email, email_verified, created_at, expires_at FROM sessions WHERE id_hash = $1";
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
pub(super) const SELECT_CONSENTS: &str = "SELECT subject, client_id, scope, created_at, last_used_at FROM consents WHERE subject = $1 ORDER BY last_used_at DESC, client_id";
pub(super) const DELETE_CONSENTS: &str = "DELETE FROM consents WHERE ($1 IS NULL OR subject = $1 OR subject IN (SELECT subject FROM grant_families WHERE email = $1)) AND ($2 IS NULL OR client_id = $2)";

/// A grant's columns under the `grant_*` names of [`super::rows::GrantRow`].
macro_rules! grant_columns {
    () => {
        "g.id AS grant_id, g.client_id AS grant_client_id, g.subject AS grant_subject, g.email AS grant_email, g.email_verified AS grant_email_verified, g.scope AS grant_scope, g.resource AS grant_resource, g.auth_time AS grant_auth_time, g.created_at AS grant_created_at, g.expires_at AS grant_expires_at, g.last_used_at AS grant_last_used_at, g.revoked_at AS grant_revoked_at"
    };
}
pub(super) const INSERT_GRANT: &str = "INSERT INTO grant_families (id, client_id, subject, email, email_verified, scope, resource, auth_time, created_at, expires_at, last_used_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
pub(super) const SELECT_GRANT: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grant_families g WHERE g.id = $1"
);
pub(super) const SELECT_GRANTS: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grant_families g WHERE ($1 IS NULL OR g.subject = $1 OR g.email = $1) AND ($2 IS NULL OR g.client_id = $2) ORDER BY g.created_at DESC, g.id"
);
pub(super) const SELECT_LIVE_GRANT: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grant_families g WHERE g.subject = $1 AND g.client_id = $2 AND g.resource = $3 AND g.revoked_at IS NULL AND g.expires_at > $4 ORDER BY g.created_at DESC, g.id DESC LIMIT 1"
);
pub(super) const CONTINUE_GRANT: &str = "UPDATE grant_families SET scope = $2, email = $3, last_used_at = $4, email_verified = $5, auth_time = $6 WHERE id = $1 AND revoked_at IS NULL AND expires_at > $4";
pub(super) const REVOKE_GRANT: &str =
    "UPDATE grant_families SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
pub(super) const TOUCH_GRANT: &str = "UPDATE grant_families SET last_used_at = $2 WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2";
pub(super) const DELETE_GRANT_UPSTREAM_TOKENS: &str =
    "DELETE FROM upstream_tokens WHERE grant_id = $1";
pub(super) const DELETE_GRANTS_UPSTREAM_TOKENS: &str = "DELETE FROM upstream_tokens WHERE grant_id IN (SELECT id FROM grant_families WHERE ($1 IS NULL OR subject = $1 OR email = $1) AND ($2 IS NULL OR client_id = $2))";
pub(super) const REVOKE_GRANTS: &str = "UPDATE grant_families SET revoked_at = $3 WHERE revoked_at IS NULL AND ($1 IS NULL OR subject = $1 OR email = $1) AND ($2 IS NULL OR client_id = $2)";

pub(super) const INSERT_CODE: &str = "INSERT INTO authorization_codes (hash, family_id, client_id, redirect_uri, code_challenge, nonce, created_at, expires_at, used_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub(super) const SELECT_CODE: &str = concat!(
    "SELECT c.hash, c.family_id, c.client_id, c.redirect_uri, c.code_challenge, c.nonce, c.created_at, c.expires_at, c.used_at, ",
    grant_columns!(),
    " FROM authorization_codes c JOIN grant_families g ON g.id = c.family_id WHERE c.hash = $1"
);
pub(super) const USE_CODE: &str =
    "UPDATE authorization_codes SET used_at = $2 WHERE hash = $1 AND used_at IS NULL";

pub(super) const INSERT_REFRESH: &str = "INSERT INTO refresh_tokens (hash, family_id, created_at, expires_at, rotated_at, successor_sealed) VALUES ($1, $2, $3, $4, $5, $6)";
pub(super) const SELECT_REFRESH: &str = concat!(
    "SELECT r.hash, r.family_id, r.created_at, r.expires_at, r.rotated_at, r.successor_sealed, ",
    grant_columns!(),
    " FROM refresh_tokens r JOIN grant_families g ON g.id = r.family_id WHERE r.hash = $1"
);
pub(super) const ROTATE_REFRESH: &str = "UPDATE refresh_tokens SET rotated_at = $2, successor_sealed = $3 WHERE hash = $1 AND rotated_at IS NULL";

macro_rules! upstream_token_columns {
    () => {
        "grant_id, access_sealed, refresh_sealed, obtained_at, expires_at, version, lease_until"
    };
}
pub(super) const INSERT_UPSTREAM_TOKENS: &str = concat!(
    "INSERT INTO upstream_tokens (",
    upstream_token_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (grant_id) DO UPDATE SET access_sealed = excluded.access_sealed, refresh_sealed = excluded.refresh_sealed, obtained_at = excluded.obtained_at, expires_at = excluded.expires_at, version = upstream_tokens.version + 1, lease_until = NULL"
);
pub(super) const SELECT_UPSTREAM_TOKENS: &str = concat!(
    "SELECT ",
    upstream_token_columns!(),
    " FROM upstream_tokens WHERE grant_id = $1"
);
pub(super) const LEASE_UPSTREAM_TOKENS: &str = "UPDATE upstream_tokens SET lease_until = $4 WHERE grant_id = $1 AND version = $2 AND (lease_until IS NULL OR lease_until <= $3)";
pub(super) const REPLACE_UPSTREAM_TOKENS: &str = "UPDATE upstream_tokens SET access_sealed = $2, refresh_sealed = $3, obtained_at = $4, expires_at = $5, version = $6, lease_until = NULL WHERE grant_id = $1 AND version = $7";
pub(super) const RELEASE_UPSTREAM_LEASE: &str =
    "UPDATE upstream_tokens SET lease_until = NULL WHERE grant_id = $1 AND version = $2";

pub(super) const REVOKE_JTI: &str = "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING";
pub(super) const SELECT_JTI: &str = "SELECT COUNT(*) FROM revoked_access_tokens WHERE jti = $1";

// A conflict means the assertion was used before: no row changes, so the caller learns it. Client
// assertions and ID-JAGs share the table; their hashes carry different labels.
pub(super) const USE_ASSERTION: &str = "INSERT INTO client_assertions (jti_hash, expires_at) VALUES ($1, $2) ON CONFLICT (jti_hash) DO NOTHING";

pub(super) const INSERT_KEY: &str = "INSERT INTO signing_keys (kid, alg, private_der, created_at, activates_at, retired_at) VALUES ($1, $2, $3, $4, $5, $6)";
pub(super) const SELECT_KEYS: &str = "SELECT kid, alg, private_der, created_at, activates_at, retired_at FROM signing_keys ORDER BY activates_at, created_at, kid";
/// `retired_at` records when a successor takes over, for reading the table by hand; the
/// keystore derives the stages from `activates_at` alone.
pub(super) const RETIRE_KEYS: &str = "UPDATE signing_keys SET retired_at = $2 WHERE kid <> $1 AND retired_at IS NULL AND activates_at <= $2";
pub(super) const DELETE_KEY: &str = "DELETE FROM signing_keys WHERE kid = $1";
pub(super) const BUMP_KEY_VERSION: &str =
    "UPDATE key_version SET version = version + 1 WHERE id = 1";
pub(super) const SELECT_KEY_VERSION: &str = "SELECT version FROM key_version WHERE id = 1";

/// `(statement, whether it takes the rotated-token window as $2)`. A deleted grant's codes go
/// with it (`ON DELETE CASCADE`); its refresh tokens are deleted first so that they are counted.
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
    ("DELETE FROM client_assertions WHERE expires_at < $1", false),
    (
        "DELETE FROM refresh_tokens WHERE (rotated_at IS NOT NULL AND rotated_at < $1 - $2) OR expires_at < $1",
        true,
    ),
    (
        "DELETE FROM refresh_tokens WHERE family_id IN (SELECT id FROM grant_families WHERE expires_at < $1)",
        false,
    ),
    (
        "DELETE FROM upstream_tokens WHERE grant_id IN (SELECT id FROM grant_families WHERE expires_at < $1 OR revoked_at IS NOT NULL)",
        false,
    ),
    ("DELETE FROM grant_families WHERE expires_at < $1", false),
];

macro_rules! audit_columns {
    () => {
        "id, at, kind, outcome, subject, email, client_id, resource, tool, latency_ms, request_id, detail"
    };
}
/// Rows per `INSERT` of audit events: one statement (one round trip) stores a whole batch of up
/// to this many, with 12 parameters a row (PostgreSQL and SQLite take thousands).
pub(super) const AUDIT_ROWS_PER_INSERT: usize = 32;
const AUDIT_COLUMNS: usize = 12;

/// The `INSERT` of `rows` audit events (1 to `AUDIT_ROWS_PER_INSERT`), built once per size.
pub(super) fn insert_audit_events(rows: usize) -> &'static str {
    static STATEMENTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = STATEMENTS.get_or_init(|| {
        (1..=AUDIT_ROWS_PER_INSERT)
            .map(|n| {
                let values: Vec<String> = (0..n)
                    .map(|row| {
                        let params: Vec<String> = (1..=AUDIT_COLUMNS)
                            .map(|col| format!("${}", row * AUDIT_COLUMNS + col))
                            .collect();
                        format!("({})", params.join(", "))
                    })
                    .collect();
                format!(
                    concat!(
                        "INSERT INTO audit_events (",
                        audit_columns!(),
                        ") VALUES {}"
                    ),
                    values.join(", ")
                )
            })
            .collect()
    });
    let index = rows.clamp(1, AUDIT_ROWS_PER_INSERT) - 1;
    all.get(index).map_or("", String::as_str)
}
pub(super) const SELECT_AUDIT_EVENTS: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit_events WHERE ($1 IS NULL OR subject = $1 OR email = $1) AND ($2 IS NULL OR client_id = $2) AND ($3 IS NULL OR at >= $3) ORDER BY at DESC, id DESC LIMIT $4"
);
pub(super) const DELETE_AUDIT_EVENTS: &str = "DELETE FROM audit_events WHERE at < $1";

/// Every [`Repo`](super::Repo) operation, as `mode name(args) -> result;`, passed to
/// `$callback!`. `atomic` operations take several statements, so on the pool they run in a
/// transaction of their own; `single` ones are one statement. Exported for the tests' fault
/// injection, which wraps every operation.
#[doc(hidden)]
#[macro_export]
macro_rules! repo_operations {
    ($callback:ident ! { $($prefix:tt)* }) => {
        $callback! { $($prefix)*
            single insert_client(client: &$crate::store::ClientRecord) -> ();
            single get_client(id: &str) -> Option<$crate::store::ClientRecord>;
            single delete_client(id: &str) -> bool;
            single touch_client(id: &str, now: $crate::clock::Timestamp) -> ();
            single delete_idle_clients(registered_before: $crate::clock::Timestamp) -> u64;
            single list_clients() -> Vec<$crate::store::ClientRecord>;
            single insert_pending(p: &$crate::domain::pending::PendingAuthorization) -> ();
            single get_pending(id: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::Pending>) -> Option<$crate::domain::pending::PendingAuthorization>;
            single get_pending_by_upstream_state(state: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::UpstreamState>) -> Option<$crate::domain::pending::PendingAuthorization>;
            single get_pending_by_confirmation(token: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::Confirmation>) -> Option<$crate::domain::pending::PendingAuthorization>;
            single set_pending_upstream(id: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::Pending>, leg: &$crate::domain::pending::UpstreamLeg) -> bool;
            single set_pending_confirmation(id: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::Pending>, confirmation: &$crate::domain::pending::Confirmation) -> bool;
            single finish_pending(id: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::Pending>) -> bool;
            single insert_session(s: &$crate::store::SessionRecord) -> ();
            single get_session(id: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::Session>) -> Option<$crate::store::SessionRecord>;
            single delete_session(id: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::Session>) -> ();
            single bind_mcp_session(s: &$crate::store::McpSessionRecord) -> bool;
            single get_mcp_session(id: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::McpSession>, resource: &str) -> Option<$crate::store::McpSessionRecord>;
            single touch_mcp_session(id: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::McpSession>, resource: &str, now: $crate::clock::Timestamp, expires_at: $crate::clock::Timestamp) -> ();
            single delete_mcp_session(id: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::McpSession>, resource: &str) -> bool;
            single upsert_consent(c: &$crate::store::ConsentRecord) -> ();
            single get_consent(subject: &str, client_id: &str) -> Option<$crate::store::ConsentRecord>;
            single list_consents(subject: &str) -> Vec<$crate::store::ConsentRecord>;
            atomic insert_grant(grant: &$crate::domain::grant::Grant, code: &$crate::domain::grant::AuthorizationCode) -> ();
            atomic continue_grant(grant: &$crate::domain::grant::Grant, code: &$crate::domain::grant::AuthorizationCode) -> bool;
            single find_live_grant(subject: &str, client_id: &str, resource: &str, now: $crate::clock::Timestamp) -> Option<$crate::domain::grant::Grant>;
            single insert_direct_grant(grant: &$crate::domain::grant::Grant) -> ();
            single get_grant(id: &str) -> Option<$crate::domain::grant::Grant>;
            atomic revoke_grant(id: &str, now: $crate::clock::Timestamp) -> bool;
            single touch_grant(id: &str, now: $crate::clock::Timestamp) -> bool;
            single list_grants(user: Option<&str>, client_id: Option<&str>) -> Vec<$crate::domain::grant::Grant>;
            atomic revoke_grants(user: Option<&str>, client_id: Option<&str>, now: $crate::clock::Timestamp) -> u64;
            single get_code(hash: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::Code>) -> Option<($crate::domain::grant::AuthorizationCode, $crate::domain::grant::Grant)>;
            single use_code(hash: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::Code>, now: $crate::clock::Timestamp) -> bool;
            single insert_refresh(r: &$crate::domain::grant::RefreshToken) -> ();
            single get_refresh(hash: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::Refresh>) -> Option<($crate::domain::grant::RefreshToken, $crate::domain::grant::Grant)>;
            single rotate_refresh(hash: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::Refresh>, now: $crate::clock::Timestamp, sealed_successor: &str) -> bool;
            single insert_upstream_tokens(t: &$crate::store::UpstreamTokenRecord) -> ();
            single get_upstream_tokens(grant_id: &str) -> Option<$crate::store::UpstreamTokenRecord>;
            single lease_upstream_tokens(grant_id: &str, version: i64, now: $crate::clock::Timestamp, until: $crate::clock::Timestamp) -> bool;
            single replace_upstream_tokens(t: &$crate::store::UpstreamTokenRecord, from_version: i64) -> bool;
            single release_upstream_lease(grant_id: &str, version: i64) -> ();
            single revoke_access_token(jti: &str, expires_at: $crate::clock::Timestamp) -> ();
            single is_access_token_revoked(jti: &str) -> bool;
            single use_client_assertion(jti: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::AssertionJti>, expires_at: $crate::clock::Timestamp) -> bool;
            single use_identity_assertion(jti: &$crate::oauth::secrets::Hashed<$crate::oauth::secrets::kind::IdentityAssertionJti>, expires_at: $crate::clock::Timestamp) -> bool;
            atomic insert_key(k: &$crate::store::KeyRecord) -> ();
            single list_keys() -> Vec<$crate::store::KeyRecord>;
            single key_version() -> i64;
            atomic delete_keys(kids: &[String]) -> u64;
            atomic delete_expired(now: $crate::clock::Timestamp, keep_rotated: i64) -> u64;
            atomic insert_audit_events(events: &[$crate::store::AuditEvent]) -> u64;
            single list_audit_events(query: &$crate::store::AuditQuery) -> Vec<$crate::store::AuditEvent>;
            single delete_audit_events_before(before: $crate::clock::Timestamp) -> u64;
        }
    };
}

/// The operations' bodies, for one backend's connection type.
macro_rules! queries {
    ($conn:ty) => {
        mod q {
            use $crate::clock::Timestamp;
            use $crate::domain::grant::{AuthorizationCode, Grant, RefreshToken};
            use $crate::domain::pending::{Confirmation, PendingAuthorization, UpstreamLeg};
            use $crate::oauth::secrets::{Hashed, kind};
            use $crate::store::rows::{self, PendingColumns};
            use $crate::store::sql;
            use $crate::store::{
                AuditEvent, AuditQuery, ClientRecord, ConsentRecord, KeyRecord, McpSessionRecord,
                SessionRecord, StoreError, UpstreamTokenRecord,
            };

            type Conn = $conn;
            type R<T> = Result<T, StoreError>;

            pub async fn insert_client(c: &mut Conn, client: &ClientRecord) -> R<()> {
                sqlx::query(sql::INSERT_CLIENT)
                    .bind(&client.id)
                    .bind(client.secret_hash.as_ref().map(|h| h.as_str()))
                    .bind(client.secret_expires_at)
                    .bind(rows::metadata_json(client)?)
                    .bind(client.created_at)
                    .bind(client.last_used_at)
                    .execute(c)
                    .await?;
                Ok(())
            }

            pub async fn get_client(c: &mut Conn, id: &str) -> R<Option<ClientRecord>> {
                let row: Option<rows::ClientRow> = sqlx::query_as(sql::SELECT_CLIENT)
                    .bind(id)
                    .fetch_optional(c)
                    .await?;
                row.map(ClientRecord::try_from).transpose()
            }

            pub async fn delete_client(c: &mut Conn, id: &str) -> R<bool> {
                let done = sqlx::query(sql::DELETE_CLIENT).bind(id).execute(c).await?;
                Ok(done.rows_affected() > 0)
            }

            pub async fn touch_client(c: &mut Conn, id: &str, now: Timestamp) -> R<()> {
                sqlx::query(sql::TOUCH_CLIENT)
                    .bind(id)
                    .bind(now)
                    .execute(c)
                    .await?;
                Ok(())
            }

            pub async fn delete_idle_clients(c: &mut Conn, before: Timestamp) -> R<u64> {
                let done = sqlx::query(sql::DELETE_IDLE_CLIENTS)
                    .bind(before)
                    .execute(c)
                    .await?;
                Ok(done.rows_affected())
            }

            pub async fn list_clients(c: &mut Conn) -> R<Vec<ClientRecord>> {
                let rows: Vec<rows::ClientRow> =
                    sqlx::query_as(sql::SELECT_CLIENTS).fetch_all(c).await?;
                rows.into_iter().map(ClientRecord::try_from).collect()
            }

            pub async fn insert_pending(c: &mut Conn, p: &PendingAuthorization) -> R<()> {
                let cols = PendingColumns::from(p);
                sqlx::query(sql::INSERT_PENDING)
                    .bind(p.id.as_str())
                    .bind(p.browser.as_str())
                    .bind(cols.purpose)
                    .bind(cols.client_id)
                    .bind(cols.redirect_uri)
                    .bind(cols.state)
                    .bind(cols.code_challenge)
                    .bind(cols.scope)
                    .bind(cols.resource)
                    .bind(p.stage.as_str())
                    .bind(cols.leg.map(|l| l.state.as_str()))
                    .bind(cols.leg.map(|l| l.nonce.as_str()))
                    .bind(cols.leg.map(|l| l.verifier.as_str()))
                    .bind(cols.confirmation.map(|c| c.subject.as_str()))
                    .bind(cols.confirmation.and_then(|c| c.email.as_deref()))
                    .bind(cols.confirmation.map(|c| c.token.as_str()))
                    .bind(p.created_at)
                    .bind(p.expires_at)
                    .bind(cols.nonce)
                    .bind(cols.login_not_before)
                    .bind(cols.login_subject)
                    .bind(
                        cols.confirmation
                            .and_then(|c| c.upstream_tokens.as_ref())
                            .map(|t| t.as_str()),
                    )
                    .execute(c)
                    .await?;
                Ok(())
            }

            async fn pending_by(
                c: &mut Conn,
                sql: &'static str,
                key: &str,
            ) -> R<Option<PendingAuthorization>> {
                let row: Option<rows::PendingRow> =
                    sqlx::query_as(sql).bind(key).fetch_optional(c).await?;
                row.map(PendingAuthorization::try_from).transpose()
            }

            pub async fn get_pending(
                c: &mut Conn,
                id: &Hashed<kind::Pending>,
            ) -> R<Option<PendingAuthorization>> {
                pending_by(c, sql::SELECT_PENDING, id.as_str()).await
            }

            pub async fn get_pending_by_upstream_state(
                c: &mut Conn,
                state: &Hashed<kind::UpstreamState>,
            ) -> R<Option<PendingAuthorization>> {
                pending_by(c, sql::SELECT_PENDING_BY_STATE, state.as_str()).await
            }

            pub async fn get_pending_by_confirmation(
                c: &mut Conn,
                token: &Hashed<kind::Confirmation>,
            ) -> R<Option<PendingAuthorization>> {
                pending_by(c, sql::SELECT_PENDING_BY_CONFIRMATION, token.as_str()).await
            }

            pub async fn set_pending_confirmation(
                c: &mut Conn,
                id: &Hashed<kind::Pending>,
                confirmation: &Confirmation,
            ) -> R<bool> {
                let done = sqlx::query(sql::SET_PENDING_CONFIRMATION)
                    .bind(id.as_str())
                    .bind(&confirmation.subject)
                    .bind(&confirmation.email)
                    .bind(confirmation.token.as_str())
                    .bind(confirmation.upstream_tokens.as_ref().map(|t| t.as_str()))
                    .execute(c)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            pub async fn set_pending_upstream(
                c: &mut Conn,
                id: &Hashed<kind::Pending>,
                leg: &UpstreamLeg,
            ) -> R<bool> {
                let done = sqlx::query(sql::SET_PENDING_UPSTREAM)
                    .bind(id.as_str())
                    .bind(leg.state.as_str())
                    .bind(&leg.nonce)
                    .bind(&leg.verifier)
                    .execute(c)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            pub async fn finish_pending(c: &mut Conn, id: &Hashed<kind::Pending>) -> R<bool> {
                let done = sqlx::query(sql::FINISH_PENDING)
                    .bind(id.as_str())
                    .execute(c)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            pub async fn insert_session(c: &mut Conn, s: &SessionRecord) -> R<()> {
                sqlx::query(sql::INSERT_SESSION)
                    .bind(s.id.as_str())
                    .bind(&s.subject)
                    .bind(&s.email)
                    .bind(s.email_verified)
                    .bind(s.created_at)
                    .bind(s.expires_at)
                    .execute(c)
                    .await?;
                Ok(())
            }

            pub async fn get_session(
                c: &mut Conn,
                id: &Hashed<kind::Session>,
            ) -> R<Option<SessionRecord>> {
                let row: Option<rows::SessionRow> = sqlx::query_as(sql::SELECT_SESSION)
                    .bind(id.as_str())
                    .fetch_optional(c)
                    .await?;
                Ok(row.map(SessionRecord::from))
            }

            pub async fn delete_session(c: &mut Conn, id: &Hashed<kind::Session>) -> R<()> {
                sqlx::query(sql::DELETE_SESSION)
                    .bind(id.as_str())
                    .execute(c)
                    .await?;
                Ok(())
            }

            pub async fn bind_mcp_session(c: &mut Conn, s: &McpSessionRecord) -> R<bool> {
                let done = sqlx::query(sql::BIND_MCP_SESSION)
                    .bind(s.id.as_str())
                    .bind(&s.resource)
                    .bind(&s.subject)
                    .bind(&s.client_id)
                    .bind(s.created_at)
                    .bind(s.last_used_at)
                    .bind(s.expires_at)
                    .execute(c)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            pub async fn get_mcp_session(
                c: &mut Conn,
                id: &Hashed<kind::McpSession>,
                resource: &str,
            ) -> R<Option<McpSessionRecord>> {
                let row: Option<rows::McpSessionRow> = sqlx::query_as(sql::SELECT_MCP_SESSION)
                    .bind(id.as_str())
                    .bind(resource)
                    .fetch_optional(c)
                    .await?;
                Ok(row.map(McpSessionRecord::from))
            }

            pub async fn touch_mcp_session(
                c: &mut Conn,
                id: &Hashed<kind::McpSession>,
                resource: &str,
                now: Timestamp,
                expires_at: Timestamp,
            ) -> R<()> {
                sqlx::query(sql::TOUCH_MCP_SESSION)
                    .bind(id.as_str())
                    .bind(resource)
                    .bind(now)
                    .bind(expires_at)
                    .execute(c)
                    .await?;
                Ok(())
            }

            pub async fn delete_mcp_session(
                c: &mut Conn,
                id: &Hashed<kind::McpSession>,
                resource: &str,
            ) -> R<bool> {
                let done = sqlx::query(sql::DELETE_MCP_SESSION)
                    .bind(id.as_str())
                    .bind(resource)
                    .execute(c)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            pub async fn upsert_consent(c: &mut Conn, consent: &ConsentRecord) -> R<()> {
                sqlx::query(sql::UPSERT_CONSENT)
                    .bind(&consent.subject)
                    .bind(&consent.client_id)
                    .bind(&consent.scope)
                    .bind(consent.created_at)
                    .bind(consent.last_used_at)
                    .execute(c)
                    .await?;
                Ok(())
            }

            pub async fn get_consent(
                c: &mut Conn,
                subject: &str,
                client_id: &str,
            ) -> R<Option<ConsentRecord>> {
                Ok(sqlx::query_as(sql::SELECT_CONSENT)
                    .bind(subject)
                    .bind(client_id)
                    .fetch_optional(c)
                    .await?)
            }

            pub async fn list_consents(c: &mut Conn, subject: &str) -> R<Vec<ConsentRecord>> {
                Ok(sqlx::query_as(sql::SELECT_CONSENTS)
                    .bind(subject)
                    .fetch_all(c)
                    .await?)
            }

            pub async fn insert_direct_grant(c: &mut Conn, g: &Grant) -> R<()> {
                sqlx::query(sql::INSERT_GRANT)
                    .bind(&g.id)
                    .bind(&g.client_id)
                    .bind(&g.subject)
                    .bind(&g.email)
                    .bind(g.email_verified)
                    .bind(g.scope.to_string())
                    .bind(&g.resource)
                    .bind(g.auth_time)
                    .bind(g.created_at)
                    .bind(g.expires_at)
                    .bind(g.last_used_at)
                    .bind(g.revoked_at)
                    .execute(c)
                    .await?;
                Ok(())
            }

            pub async fn insert_grant(c: &mut Conn, g: &Grant, code: &AuthorizationCode) -> R<()> {
                insert_direct_grant(&mut *c, g).await?;
                insert_code(c, code).await
            }

            async fn insert_code(c: &mut Conn, code: &AuthorizationCode) -> R<()> {
                let used_at = match code.state {
                    $crate::domain::grant::CodeState::Issued => None,
                    $crate::domain::grant::CodeState::Redeemed { at } => Some(at),
                };
                sqlx::query(sql::INSERT_CODE)
                    .bind(code.hash.as_str())
                    .bind(&code.grant_id)
                    .bind(&code.client_id)
                    .bind(&code.redirect_uri)
                    .bind(code.challenge.as_str())
                    .bind(code.nonce.as_deref())
                    .bind(code.created_at)
                    .bind(code.expires_at)
                    .bind(used_at)
                    .execute(c)
                    .await?;
                Ok(())
            }

            pub async fn continue_grant(
                c: &mut Conn,
                g: &Grant,
                code: &AuthorizationCode,
            ) -> R<bool> {
                let done = sqlx::query(sql::CONTINUE_GRANT)
                    .bind(&g.id)
                    .bind(g.scope.to_string())
                    .bind(&g.email)
                    .bind(g.last_used_at)
                    .bind(g.email_verified)
                    .bind(g.auth_time)
                    .execute(&mut *c)
                    .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                insert_code(c, code).await?;
                Ok(true)
            }

            pub async fn find_live_grant(
                c: &mut Conn,
                subject: &str,
                client_id: &str,
                resource: &str,
                now: Timestamp,
            ) -> R<Option<Grant>> {
                let row: Option<rows::GrantRow> = sqlx::query_as(sql::SELECT_LIVE_GRANT)
                    .bind(subject)
                    .bind(client_id)
                    .bind(resource)
                    .bind(now)
                    .fetch_optional(c)
                    .await?;
                Ok(row.map(Grant::from))
            }

            pub async fn get_grant(c: &mut Conn, id: &str) -> R<Option<Grant>> {
                let row: Option<rows::GrantRow> = sqlx::query_as(sql::SELECT_GRANT)
                    .bind(id)
                    .fetch_optional(c)
                    .await?;
                Ok(row.map(Grant::from))
            }

            pub async fn revoke_grant(c: &mut Conn, id: &str, now: Timestamp) -> R<bool> {
                sqlx::query(sql::DELETE_GRANT_UPSTREAM_TOKENS)
                    .bind(id)
                    .execute(&mut *c)
                    .await?;
                let done = sqlx::query(sql::REVOKE_GRANT)
                    .bind(id)
                    .bind(now)
                    .execute(c)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            pub async fn touch_grant(c: &mut Conn, id: &str, now: Timestamp) -> R<bool> {
                let done = sqlx::query(sql::TOUCH_GRANT)
                    .bind(id)
                    .bind(now)
                    .execute(c)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            pub async fn list_grants(
                c: &mut Conn,
                user: Option<&str>,
                client_id: Option<&str>,
            ) -> R<Vec<Grant>> {
                let rows: Vec<rows::GrantRow> = sqlx::query_as(sql::SELECT_GRANTS)
                    .bind(user)
                    .bind(client_id)
                    .fetch_all(c)
                    .await?;
                Ok(rows.into_iter().map(Grant::from).collect())
            }

            pub async fn revoke_grants(
                c: &mut Conn,
                user: Option<&str>,
                client_id: Option<&str>,
                now: Timestamp,
            ) -> R<u64> {
                if user.is_none() && client_id.is_none() {
                    return Ok(0);
                }
                sqlx::query(sql::DELETE_CONSENTS)
                    .bind(user)
                    .bind(client_id)
                    .execute(&mut *c)
                    .await?;
                sqlx::query(sql::DELETE_GRANTS_UPSTREAM_TOKENS)
                    .bind(user)
                    .bind(client_id)
                    .execute(&mut *c)
                    .await?;
                let done = sqlx::query(sql::REVOKE_GRANTS)
                    .bind(user)
                    .bind(client_id)
                    .bind(now)
                    .execute(c)
                    .await?;
                Ok(done.rows_affected())
            }

            pub async fn get_code(
                c: &mut Conn,
                hash: &Hashed<kind::Code>,
            ) -> R<Option<(AuthorizationCode, Grant)>> {
                let row: Option<rows::CodeRow> = sqlx::query_as(sql::SELECT_CODE)
                    .bind(hash.as_str())
                    .fetch_optional(c)
                    .await?;
                Ok(row.map(Into::into))
            }

            pub async fn use_code(
                c: &mut Conn,
                hash: &Hashed<kind::Code>,
                now: Timestamp,
            ) -> R<bool> {
                let done = sqlx::query(sql::USE_CODE)
                    .bind(hash.as_str())
                    .bind(now)
                    .execute(c)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            pub async fn insert_refresh(c: &mut Conn, r: &RefreshToken) -> R<()> {
                let (rotated_at, sealed) = match &r.state {
                    $crate::domain::grant::RefreshState::Current => (None, None),
                    $crate::domain::grant::RefreshState::Rotated {
                        at,
                        sealed_successor,
                    } => (Some(*at), Some(sealed_successor.as_str())),
                };
                sqlx::query(sql::INSERT_REFRESH)
                    .bind(r.hash.as_str())
                    .bind(&r.grant_id)
                    .bind(r.created_at)
                    .bind(r.expires_at)
                    .bind(rotated_at)
                    .bind(sealed)
                    .execute(c)
                    .await?;
                Ok(())
            }

            pub async fn get_refresh(
                c: &mut Conn,
                hash: &Hashed<kind::Refresh>,
            ) -> R<Option<(RefreshToken, Grant)>> {
                let row: Option<rows::RefreshRow> = sqlx::query_as(sql::SELECT_REFRESH)
                    .bind(hash.as_str())
                    .fetch_optional(c)
                    .await?;
                row.map(TryInto::try_into).transpose()
            }

            pub async fn rotate_refresh(
                c: &mut Conn,
                hash: &Hashed<kind::Refresh>,
                now: Timestamp,
                sealed_successor: &str,
            ) -> R<bool> {
                let done = sqlx::query(sql::ROTATE_REFRESH)
                    .bind(hash.as_str())
                    .bind(now)
                    .bind(sealed_successor)
                    .execute(c)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            pub async fn insert_upstream_tokens(c: &mut Conn, t: &UpstreamTokenRecord) -> R<()> {
                sqlx::query(sql::INSERT_UPSTREAM_TOKENS)
                    .bind(&t.grant_id)
                    .bind(&t.access_sealed)
                    .bind(&t.refresh_sealed)
                    .bind(t.obtained_at)
                    .bind(t.expires_at)
                    .bind(t.version)
                    .bind(t.lease_until)
                    .execute(c)
                    .await?;
                Ok(())
            }

            pub async fn get_upstream_tokens(
                c: &mut Conn,
                grant_id: &str,
            ) -> R<Option<UpstreamTokenRecord>> {
                let row: Option<rows::UpstreamTokenRow> =
                    sqlx::query_as(sql::SELECT_UPSTREAM_TOKENS)
                        .bind(grant_id)
                        .fetch_optional(c)
                        .await?;
                Ok(row.map(UpstreamTokenRecord::from))
            }

            pub async fn lease_upstream_tokens(
                c: &mut Conn,
                grant_id: &str,
                version: i64,
                now: Timestamp,
                until: Timestamp,
            ) -> R<bool> {
                let done = sqlx::query(sql::LEASE_UPSTREAM_TOKENS)
                    .bind(grant_id)
                    .bind(version)
                    .bind(now)
                    .bind(until)
                    .execute(c)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            pub async fn replace_upstream_tokens(
                c: &mut Conn,
                t: &UpstreamTokenRecord,
                from_version: i64,
            ) -> R<bool> {
                let done = sqlx::query(sql::REPLACE_UPSTREAM_TOKENS)
                    .bind(&t.grant_id)
                    .bind(&t.access_sealed)
                    .bind(&t.refresh_sealed)
                    .bind(t.obtained_at)
                    .bind(t.expires_at)
                    .bind(t.version)
                    .bind(from_version)
                    .execute(c)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            pub async fn release_upstream_lease(
                c: &mut Conn,
                grant_id: &str,
                version: i64,
            ) -> R<()> {
                sqlx::query(sql::RELEASE_UPSTREAM_LEASE)
                    .bind(grant_id)
                    .bind(version)
                    .execute(c)
                    .await?;
                Ok(())
            }

            pub async fn revoke_access_token(
                c: &mut Conn,
                jti: &str,
                expires_at: Timestamp,
            ) -> R<()> {
                sqlx::query(sql::REVOKE_JTI)
                    .bind(jti)
                    .bind(expires_at)
                    .execute(c)
                    .await?;
                Ok(())
            }

            pub async fn is_access_token_revoked(c: &mut Conn, jti: &str) -> R<bool> {
                let (n,): (i64,) = sqlx::query_as(sql::SELECT_JTI)
                    .bind(jti)
                    .fetch_one(c)
                    .await?;
                Ok(n > 0)
            }

            pub async fn use_client_assertion(
                c: &mut Conn,
                jti: &Hashed<kind::AssertionJti>,
                expires_at: Timestamp,
            ) -> R<bool> {
                let done = sqlx::query(sql::USE_ASSERTION)
                    .bind(jti.as_str())
                    .bind(expires_at)
                    .execute(c)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            pub async fn use_identity_assertion(
                c: &mut Conn,
                jti: &Hashed<kind::IdentityAssertionJti>,
                expires_at: Timestamp,
            ) -> R<bool> {
                let done = sqlx::query(sql::USE_ASSERTION)
                    .bind(jti.as_str())
                    .bind(expires_at)
                    .execute(c)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            pub async fn insert_key(c: &mut Conn, k: &KeyRecord) -> R<()> {
                sqlx::query(sql::INSERT_KEY)
                    .bind(&k.kid)
                    .bind(&k.alg)
                    .bind(&k.private_der)
                    .bind(k.created_at)
                    .bind(k.activates_at)
                    .bind(k.retired_at)
                    .execute(&mut *c)
                    .await?;
                sqlx::query(sql::RETIRE_KEYS)
                    .bind(&k.kid)
                    .bind(k.activates_at)
                    .execute(&mut *c)
                    .await?;
                sqlx::query(sql::BUMP_KEY_VERSION).execute(c).await?;
                Ok(())
            }

            pub async fn list_keys(c: &mut Conn) -> R<Vec<KeyRecord>> {
                Ok(sqlx::query_as(sql::SELECT_KEYS).fetch_all(c).await?)
            }

            pub async fn key_version(c: &mut Conn) -> R<i64> {
                let (v,): (i64,) = sqlx::query_as(sql::SELECT_KEY_VERSION).fetch_one(c).await?;
                Ok(v)
            }

            pub async fn delete_keys(c: &mut Conn, kids: &[String]) -> R<u64> {
                let mut removed = 0;
                for kid in kids {
                    removed += sqlx::query(sql::DELETE_KEY)
                        .bind(kid)
                        .execute(&mut *c)
                        .await?
                        .rows_affected();
                }
                if removed > 0 {
                    sqlx::query(sql::BUMP_KEY_VERSION).execute(c).await?;
                }
                Ok(removed)
            }

            pub async fn delete_expired(c: &mut Conn, now: Timestamp, keep_rotated: i64) -> R<u64> {
                let mut removed = 0;
                for (sql, with_window) in sql::DELETE_EXPIRED {
                    let mut q = sqlx::query(*sql).bind(now);
                    if *with_window {
                        q = q.bind(keep_rotated);
                    }
                    removed += q.execute(&mut *c).await?.rows_affected();
                }
                Ok(removed)
            }

            pub async fn insert_audit_events(c: &mut Conn, events: &[AuditEvent]) -> R<u64> {
                let mut stored = 0;
                for chunk in events.chunks(sql::AUDIT_ROWS_PER_INSERT) {
                    let mut q = sqlx::query(sql::insert_audit_events(chunk.len()));
                    for e in chunk {
                        q = q
                            .bind(&e.id)
                            .bind(e.at)
                            .bind(&e.kind)
                            .bind(&e.outcome)
                            .bind(&e.subject)
                            .bind(&e.email)
                            .bind(&e.client_id)
                            .bind(&e.resource)
                            .bind(&e.tool)
                            .bind(e.latency_ms)
                            .bind(&e.request_id)
                            .bind(&e.detail);
                    }
                    stored += q.execute(&mut *c).await?.rows_affected();
                }
                Ok(stored)
            }

            pub async fn list_audit_events(c: &mut Conn, query: &AuditQuery) -> R<Vec<AuditEvent>> {
                Ok(sqlx::query_as(sql::SELECT_AUDIT_EVENTS)
                    .bind(query.user.as_deref())
                    .bind(query.client_id.as_deref())
                    .bind(query.since)
                    .bind(query.limit)
                    .fetch_all(c)
                    .await?)
            }

            pub async fn delete_audit_events_before(c: &mut Conn, before: Timestamp) -> R<u64> {
                let done = sqlx::query(sql::DELETE_AUDIT_EVENTS)
                    .bind(before)
                    .execute(c)
                    .await?;
                Ok(done.rows_affected())
            }
        }
    };
}

/// Implements [`Repo`](super::Repo) for a backend's pool and transaction types from
/// `repo_operations!`, running the `q` functions.
macro_rules! impl_repo {
    (pool $store:ty; $( $mode:ident $name:ident ( $( $arg:ident : $ty:ty ),* ) -> $ret:ty ; )*) => {
        #[async_trait::async_trait]
        impl $crate::store::Repo for $store {
            $(
                async fn $name(&self, $( $arg: $ty ),*) -> Result<$ret, $crate::store::StoreError> {
                    $crate::store::sql::impl_repo!(@pool $mode self $name $( $arg )*)
                }
            )*
        }
    };
    (tx $tx:ty; $( $mode:ident $name:ident ( $( $arg:ident : $ty:ty ),* ) -> $ret:ty ; )*) => {
        #[async_trait::async_trait]
        impl $crate::store::Repo for $tx {
            $(
                async fn $name(&self, $( $arg: $ty ),*) -> Result<$ret, $crate::store::StoreError> {
                    let mut tx = self.tx.lock().await;
                    q::$name(&mut tx, $( $arg ),*).await
                }
            )*
        }
    };
    (@pool single $self:ident $name:ident $( $arg:ident )*) => {{
        let mut conn = $self.pool.acquire().await?;
        q::$name(&mut conn, $( $arg ),*).await
    }};
    (@pool atomic $self:ident $name:ident $( $arg:ident )*) => {{
        let mut tx = $self.begin_tx().await?;
        let out = q::$name(&mut tx, $( $arg ),*).await?;
        tx.commit().await?;
        Ok(out)
    }};
}

/// The backend's `Repo` implementations, its transaction type and its `Store` implementation.
/// `$store` must have `pool` and an async `begin_tx()` that starts a write transaction.
macro_rules! impl_store {
    ($store:ident, $tx:ident, $db:ty, $conn:ty, $backend:literal) => {
        $crate::store::sql::queries!($conn);

        /// A unit of work on this backend: rolled back when dropped uncommitted.
        pub struct $tx {
            tx: tokio::sync::Mutex<sqlx::Transaction<'static, $db>>,
        }

        $crate::repo_operations!(impl_repo! { pool $store; });
        $crate::repo_operations!(impl_repo! { tx $tx; });

        #[async_trait::async_trait]
        impl $crate::store::Tx for $tx {
            async fn commit(self: Box<Self>) -> Result<(), $crate::store::StoreError> {
                self.tx.into_inner().commit().await?;
                Ok(())
            }

            async fn rollback(self: Box<Self>) -> Result<(), $crate::store::StoreError> {
                self.tx.into_inner().rollback().await?;
                Ok(())
            }
        }

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

            async fn begin(&self) -> Result<Box<dyn $crate::store::Tx>, $crate::store::StoreError> {
                Ok(Box::new($tx {
                    tx: tokio::sync::Mutex::new(self.begin_tx().await?),
                }))
            }
        }
    };
}

pub(super) use impl_repo;
pub(super) use impl_store;
pub(super) use queries;
