//! The one storage look-up on the MCP hot path: has this access token, or its grant, been
//! revoked? Answers are cached briefly, so a revocation takes effect within `ttl` seconds on
//! every instance while a busy token costs one look-up per `ttl`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::clock::Timestamp;
use crate::keys::AccessClaims;
use crate::store::{DynStore, StoreError};

const MAX_ENTRIES: usize = 100_000;

pub struct RevocationCache {
    ttl: i64,
    entries: Mutex<HashMap<String, (bool, Timestamp)>>,
}

impl RevocationCache {
    pub fn new(ttl: i64) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub async fn is_revoked(
        &self,
        store: &DynStore,
        claims: &AccessClaims,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        if let Some((revoked, at)) = self.lookup(&claims.jti)
            && now - at < self.ttl
        {
            return Ok(revoked);
        }
        let revoked = store.is_access_token_revoked(&claims.jti).await?
            || store
                .get_family(&claims.sid)
                .await?
                .is_none_or(|f| f.revoked_at.is_some());
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, at)| now - *at < self.ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(claims.jti.clone(), (revoked, now));
        Ok(revoked)
    }

    fn lookup(&self, jti: &str) -> Option<(bool, Timestamp)> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(jti)
            .copied()
    }
}
