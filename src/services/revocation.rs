//! The one storage look-up on the MCP hot path: has this access token, or its grant, been
//! revoked? Answers are cached briefly, so a revocation takes effect within `ttl` seconds on
//! every instance while a busy token costs one look-up per `ttl`.
//!
//! The cache is bounded and evicts one entry at a time (moka's TinyLFU), so a flood of new tokens
//! displaces the rarely used ones instead of emptying the cache and sending every request to the
//! database at once. Freshness is judged against the injected clock, not moka's own timers, so
//! tests can move time; moka only bounds and evicts.

use std::sync::atomic::{AtomicU64, Ordering};

use moka::future::Cache;
use moka::ops::compute::Op;

use crate::clock::Timestamp;
use crate::keys::AccessClaims;
use crate::store::{DynStore, StoreError};
use crate::telemetry::names;

/// An entry is a jti, its answer and moka's bookkeeping (a few hundred bytes), so a full cache
/// stays within some tens of megabytes.
pub const MAX_ENTRIES: u64 = 100_000;

#[derive(Clone, Copy)]
struct Checked {
    revoked: bool,
    at: Timestamp,
}

pub struct RevocationCache {
    ttl: i64,
    entries: Cache<String, Checked>,
    store_queries: AtomicU64,
}

impl RevocationCache {
    pub fn new(ttl: i64) -> Self {
        Self::with_capacity(ttl, MAX_ENTRIES)
    }

    pub fn with_capacity(ttl: i64, capacity: u64) -> Self {
        Self {
            ttl,
            entries: Cache::builder().max_capacity(capacity).build(),
            store_queries: AtomicU64::new(0),
        }
    }

    /// Database queries made so far by this cache's misses.
    pub fn store_queries(&self) -> u64 {
        self.store_queries.load(Ordering::Relaxed)
    }

    /// How many answers are held, once pending evictions have been applied.
    pub async fn entry_count(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }

    pub async fn is_revoked(
        &self,
        store: &DynStore,
        claims: &AccessClaims,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let fresh = |c: &Checked| now - c.at < self.ttl;
        if let Some(c) = self.entries.get(&claims.jti).await
            && fresh(&c)
        {
            return Ok(c.revoked);
        }
        // Misses for one key run one after the other, and each re-checks what the previous one
        // stored: a burst of requests with one new token costs one look-up, not one each.
        let result = self
            .entries
            .entry_by_ref(&claims.jti)
            .and_try_compute_with(|current| async move {
                if let Some(entry) = current
                    && fresh(entry.value())
                {
                    return Ok(Op::Nop);
                }
                let revoked = self.query(store, claims).await?;
                Ok::<_, StoreError>(Op::Put(Checked { revoked, at: now }))
            })
            .await?;
        match result.into_entry() {
            Some(entry) => Ok(entry.value().revoked),
            // Not reached: the computation above always leaves an entry. Asking the store again
            // is the safe answer if it ever were.
            None => self.query(store, claims).await,
        }
    }

    async fn query(&self, store: &DynStore, claims: &AccessClaims) -> Result<bool, StoreError> {
        self.count("revoked_access_token");
        if store.is_access_token_revoked(&claims.jti).await? {
            return Ok(true);
        }
        self.count("grant_family");
        Ok(store
            .get_grant(&claims.sid)
            .await?
            .is_none_or(|f| f.revoked_at.is_some()))
    }

    fn count(&self, operation: &'static str) {
        self.store_queries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::DB_QUERIES, "operation" => operation).increment(1);
    }
}
