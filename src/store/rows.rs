//! Rows as the database returns them, and their conversion into domain values. A row that no
//! state of the domain model could have written is reported as corrupt, never guessed at.

use crate::domain::grant::{AuthorizationCode, CodeState, Grant, RefreshState, RefreshToken};
use crate::domain::pending::{
    ClientAuthorization, Confirmation, LoginConstraint, PendingAuthorization, Purpose, Stage,
    UpstreamLeg,
};
use crate::domain::upstream_token::SealedWaitingTokens;
use crate::oauth::client::ClientMetadata;
use crate::oauth::pkce::CodeChallenge;
use crate::oauth::scope::ScopeSet;
use crate::oauth::secrets::Hashed;

use super::{ClientRecord, McpSessionRecord, SessionRecord, StoreError, UpstreamTokenRecord};

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

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
            secret_hash: row.secret_hash.map(Hashed::from_stored),
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

#[derive(sqlx::FromRow)]
pub(super) struct PendingRow {
    pub id_hash: String,
    pub browser_hash: String,
    pub purpose: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub scope: String,
    pub resource: String,
    pub status: String,
    pub upstream_state_hash: Option<String>,
    pub upstream_nonce: Option<String>,
    pub upstream_verifier: Option<String>,
    pub subject: Option<String>,
    pub email: Option<String>,
    pub confirm_hash: Option<String>,
    pub upstream_tokens: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub nonce: Option<String>,
    pub login_not_before: Option<i64>,
    pub login_subject: Option<String>,
}

impl TryFrom<PendingRow> for PendingAuthorization {
    type Error = StoreError;

    fn try_from(row: PendingRow) -> Result<Self, StoreError> {
        let purpose = match row.purpose.as_str() {
            "authorize" => Purpose::Authorize(ClientAuthorization {
                client_id: row.client_id,
                redirect_uri: row.redirect_uri,
                state: row.state,
                code_challenge: CodeChallenge::from_stored(row.code_challenge),
                scope: ScopeSet::parse(&row.scope),
                resource: row.resource,
                nonce: row.nonce,
                login: LoginConstraint {
                    not_before: row.login_not_before,
                    subject: row.login_subject,
                },
            }),
            "account"
                if row.nonce.is_none()
                    && row.login_not_before.is_none()
                    && row.login_subject.is_none() =>
            {
                Purpose::AccountLogin {
                    return_to: row.redirect_uri,
                }
            }
            _ => return Err(corrupt("pending authorization purpose")),
        };
        let authorize = matches!(purpose, Purpose::Authorize(_));
        if row.upstream_tokens.is_some() && row.status != "confirm" {
            return Err(corrupt(
                "upstream tokens of a request not awaiting confirmation",
            ));
        }
        let stage = match (
            row.status.as_str(),
            row.upstream_state_hash,
            row.upstream_nonce,
            row.upstream_verifier,
            row.subject,
            row.confirm_hash,
        ) {
            ("consent", None, None, None, None, None) if authorize => Stage::AwaitingConsent,
            ("upstream", Some(state), Some(nonce), Some(verifier), None, None) => {
                Stage::AtUpstream(UpstreamLeg {
                    state: Hashed::from_stored(state),
                    nonce,
                    verifier,
                })
            }
            ("confirm", _, None, None, Some(subject), Some(token)) if authorize => {
                Stage::AwaitingConfirmation(Confirmation {
                    token: Hashed::from_stored(token),
                    subject,
                    email: row.email,
                    upstream_tokens: row.upstream_tokens.map(SealedWaitingTokens::from_stored),
                })
            }
            ("done", _, None, None, None, _) => Stage::Done,
            _ => return Err(corrupt("pending authorization stage")),
        };
        Ok(Self {
            id: Hashed::from_stored(row.id_hash),
            browser: Hashed::from_stored(row.browser_hash),
            purpose,
            stage,
            created_at: row.created_at,
            expires_at: row.expires_at,
        })
    }
}

/// The columns of a pending request as stored: an account login has no client, challenge,
/// scope or resource.
pub(super) struct PendingColumns<'a> {
    pub purpose: &'static str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub state: Option<&'a str>,
    pub code_challenge: &'a str,
    pub scope: String,
    pub resource: &'a str,
    pub leg: Option<&'a UpstreamLeg>,
    pub nonce: Option<&'a str>,
    pub login_not_before: Option<i64>,
    pub login_subject: Option<&'a str>,
    pub confirmation: Option<&'a Confirmation>,
}

impl<'a> From<&'a PendingAuthorization> for PendingColumns<'a> {
    fn from(p: &'a PendingAuthorization) -> Self {
        let leg = p.upstream_leg();
        let confirmation = match &p.stage {
            Stage::AwaitingConfirmation(c) => Some(c),
            _ => None,
        };
        match &p.purpose {
            Purpose::Authorize(r) => Self {
                purpose: "authorize",
                client_id: &r.client_id,
                redirect_uri: &r.redirect_uri,
                state: r.state.as_deref(),
                code_challenge: r.code_challenge.as_str(),
                scope: r.scope.to_string(),
                resource: &r.resource,
                leg,
                nonce: r.nonce.as_deref(),
                login_not_before: r.login.not_before,
                login_subject: r.login.subject.as_deref(),
                confirmation,
            },
            Purpose::AccountLogin { return_to } => Self {
                purpose: "account",
                client_id: "",
                redirect_uri: return_to,
                state: None,
                code_challenge: "",
                scope: String::new(),
                resource: "",
                leg,
                nonce: None,
                login_not_before: None,
                login_subject: None,
                confirmation,
            },
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SessionRow {
    pub id_hash: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    pub created_at: i64,
    pub expires_at: i64,
}

impl From<SessionRow> for SessionRecord {
    fn from(r: SessionRow) -> Self {
        Self {
            id: Hashed::from_stored(r.id_hash),
            subject: r.subject,
            email: r.email,
            email_verified: r.email_verified,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct McpSessionRow {
    pub id_hash: String,
    pub resource: String,
    pub subject: String,
    pub client_id: String,
    pub created_at: i64,
    pub last_used_at: i64,
    pub expires_at: i64,
}

impl From<McpSessionRow> for McpSessionRecord {
    fn from(r: McpSessionRow) -> Self {
        Self {
            id: Hashed::from_stored(r.id_hash),
            resource: r.resource,
            subject: r.subject,
            client_id: r.client_id,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            expires_at: r.expires_at,
        }
    }
}

/// A grant's columns, aliased `grant_*` in every query so that they can sit beside a code's or
/// a refresh token's in one joined row.
#[derive(sqlx::FromRow)]
pub(super) struct GrantRow {
    pub grant_id: String,
    pub grant_client_id: String,
    pub grant_subject: String,
    pub grant_email: Option<String>,
    pub grant_email_verified: Option<bool>,
    pub grant_scope: String,
    pub grant_resource: String,
    pub grant_auth_time: Option<i64>,
    pub grant_created_at: i64,
    pub grant_expires_at: i64,
    pub grant_last_used_at: i64,
    pub grant_revoked_at: Option<i64>,
}

impl From<GrantRow> for Grant {
    fn from(r: GrantRow) -> Self {
        Self {
            id: r.grant_id,
            client_id: r.grant_client_id,
            subject: r.grant_subject,
            email: r.grant_email,
            email_verified: r.grant_email_verified,
            scope: ScopeSet::parse(&r.grant_scope),
            resource: r.grant_resource,
            auth_time: r.grant_auth_time,
            created_at: r.grant_created_at,
            expires_at: r.grant_expires_at,
            last_used_at: r.grant_last_used_at,
            revoked_at: r.grant_revoked_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct CodeRow {
    pub hash: String,
    pub family_id: String,
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub nonce: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    #[sqlx(flatten)]
    pub grant: GrantRow,
}

impl From<CodeRow> for (AuthorizationCode, Grant) {
    fn from(r: CodeRow) -> Self {
        let code = AuthorizationCode {
            hash: Hashed::from_stored(r.hash),
            grant_id: r.family_id,
            client_id: r.client_id,
            redirect_uri: r.redirect_uri,
            challenge: CodeChallenge::from_stored(r.code_challenge),
            nonce: r.nonce,
            created_at: r.created_at,
            expires_at: r.expires_at,
            state: match r.used_at {
                None => CodeState::Issued,
                Some(at) => CodeState::Redeemed { at },
            },
        };
        (code, r.grant.into())
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct RefreshRow {
    pub hash: String,
    pub family_id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub rotated_at: Option<i64>,
    pub successor_sealed: Option<String>,
    #[sqlx(flatten)]
    pub grant: GrantRow,
}

impl TryFrom<RefreshRow> for (RefreshToken, Grant) {
    type Error = StoreError;

    fn try_from(r: RefreshRow) -> Result<Self, StoreError> {
        let state = match (r.rotated_at, r.successor_sealed) {
            (None, None) => RefreshState::Current,
            (Some(at), Some(sealed_successor)) => RefreshState::Rotated {
                at,
                sealed_successor,
            },
            _ => return Err(corrupt("refresh token rotation")),
        };
        let token = RefreshToken {
            hash: Hashed::from_stored(r.hash),
            grant_id: r.family_id,
            created_at: r.created_at,
            expires_at: r.expires_at,
            state,
        };
        Ok((token, r.grant.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(purpose: &str, status: &str, leg: bool) -> PendingRow {
        PendingRow {
            id_hash: "i".into(),
            browser_hash: "b".into(),
            purpose: purpose.into(),
            client_id: "agc_1".into(),
            redirect_uri: "https://a/cb".into(),
            state: None,
            code_challenge: "c".repeat(43),
            scope: "mcp".into(),
            resource: "https://r/mcp".into(),
            status: status.into(),
            upstream_state_hash: leg.then(|| "s".into()),
            upstream_nonce: leg.then(|| "n".into()),
            upstream_verifier: leg.then(|| "v".into()),
            subject: None,
            email: None,
            confirm_hash: None,
            upstream_tokens: None,
            created_at: 0,
            expires_at: 600,
            nonce: None,
            login_not_before: None,
            login_subject: None,
        }
    }

    fn confirming(purpose: &str, subject: bool, token: bool) -> PendingRow {
        PendingRow {
            upstream_state_hash: Some("s".into()),
            subject: subject.then(|| "sub".into()),
            confirm_hash: token.then(|| "t".into()),
            ..row(purpose, "confirm", false)
        }
    }

    #[test]
    fn impossible_pending_rows_are_corrupt() {
        assert!(PendingAuthorization::try_from(row("authorize", "consent", false)).is_ok());
        assert!(PendingAuthorization::try_from(row("authorize", "upstream", true)).is_ok());
        assert!(PendingAuthorization::try_from(row("account", "upstream", true)).is_ok());
        for (purpose, status, leg) in [
            ("authorize", "upstream", false),
            ("authorize", "consent", true),
            ("authorize", "done", true),
            ("account", "consent", false),
            ("other", "consent", false),
            ("authorize", "waiting", false),
        ] {
            assert!(
                PendingAuthorization::try_from(row(purpose, status, leg)).is_err(),
                "{purpose} {status} {leg}"
            );
        }
        let account_with_nonce = PendingRow {
            nonce: Some("n".into()),
            ..row("account", "upstream", true)
        };
        assert!(
            PendingAuthorization::try_from(account_with_nonce).is_err(),
            "an account login has no OpenID request"
        );
        assert!(matches!(
            PendingAuthorization::try_from(confirming("authorize", true, true))
                .unwrap()
                .stage,
            Stage::AwaitingConfirmation(_)
        ));
        let with_tokens = PendingRow {
            upstream_tokens: Some("sealed1:x".into()),
            ..confirming("authorize", true, true)
        };
        assert!(matches!(
            PendingAuthorization::try_from(with_tokens).unwrap().stage,
            Stage::AwaitingConfirmation(Confirmation {
                upstream_tokens: Some(_),
                ..
            })
        ));
        for bad in [
            confirming("account", true, true),
            confirming("authorize", false, true),
            confirming("authorize", true, false),
            PendingRow {
                subject: Some("sub".into()),
                ..row("authorize", "consent", false)
            },
            PendingRow {
                upstream_nonce: Some("n".into()),
                ..confirming("authorize", true, true)
            },
            PendingRow {
                upstream_tokens: Some("sealed1:x".into()),
                ..row("authorize", "upstream", true)
            },
        ] {
            assert!(PendingAuthorization::try_from(bad).is_err());
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct UpstreamTokenRow {
    pub grant_id: String,
    pub access_sealed: String,
    pub refresh_sealed: Option<String>,
    pub obtained_at: i64,
    pub expires_at: Option<i64>,
    pub version: i64,
    pub lease_until: Option<i64>,
}

impl From<UpstreamTokenRow> for UpstreamTokenRecord {
    fn from(row: UpstreamTokenRow) -> Self {
        Self {
            grant_id: row.grant_id,
            access_sealed: row.access_sealed,
            refresh_sealed: row.refresh_sealed,
            obtained_at: row.obtained_at,
            expires_at: row.expires_at,
            version: row.version,
            lease_until: row.lease_until,
        }
    }
}
