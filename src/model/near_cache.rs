//! The near-cache every session of one sidecar shares: the store (pure,
//! `route::cache`) behind one lock, and its metrics.
//!
//! The lock is held only for a hash lookup or an insert: a hit clones a
//! `Bytes` (a reference count), never the reply.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::metrics::{Invalidation, NearCacheMetrics};
use crate::route::cache::{FillId, Source, Store};

pub struct NearCache {
    store: Mutex<Store>,
    /// The longest an entry lives, whatever its key's TTL.
    pub max_ttl: Duration,
    pub metrics: NearCacheMetrics,
    /// The byte bound, for `/status`.
    pub max_bytes: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl NearCache {
    pub fn new(max_bytes: usize, max_ttl: Duration) -> NearCache {
        NearCache {
            store: Mutex::new(Store::new(max_bytes)),
            max_ttl,
            metrics: NearCacheMetrics::new(),
            max_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        // A panic while holding the lock leaves a consistent store (every
        // operation finishes its bookkeeping before it can fail).
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A read answered from the cache.
    pub fn hit(&self) {
        self.metrics.hits.increment(1);
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    /// A cacheable read that went upstream.
    pub fn miss(&self) {
        self.metrics.misses.increment(1);
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// (hits, misses) since start.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// The entry for `key`, if there is one that has not expired.
    pub fn get(&self, key: &[u8], now: Instant) -> Option<(Bytes, Source)> {
        self.store().get(key, now)
    }

    pub fn begin_fill(&self, key: Bytes, redis_keys: Vec<Bytes>, conn: u64) -> FillId {
        self.store().begin_fill(key, redis_keys, conn)
    }

    pub fn finish_fill(
        &self,
        id: FillId,
        reply: Bytes,
        source: Source,
        expires: Instant,
        now: Instant,
    ) -> bool {
        let mut s = self.store();
        let before = s.evictions();
        let stored = s.finish_fill(id, reply, source, expires, now);
        let evicted = s.evictions() - before;
        self.metrics
            .invalidated(Invalidation::Evicted, evicted as usize);
        self.gauges(&s);
        stored
    }

    pub fn abandon_fill(&self, id: FillId) {
        self.store().abandon_fill(id);
    }

    /// Drops every entry covering one of `keys` (and poisons fills in
    /// flight for them).
    pub fn invalidate<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>, reason: Invalidation) {
        let mut s = self.store();
        let mut n = 0;
        for k in keys {
            n += s.invalidate(k);
        }
        self.metrics.invalidated(reason, n);
        self.gauges(&s);
    }

    pub fn flush_all(&self, reason: Invalidation) {
        let mut s = self.store();
        let n = s.flush_all();
        self.metrics.invalidated(reason, n);
        self.gauges(&s);
    }

    /// Fill connection `conn` is gone: its entries can no longer hear
    /// their invalidations.
    pub fn flush_conn(&self, conn: u64) {
        let mut s = self.store();
        let n = s.flush_conn(conn);
        self.metrics.invalidated(Invalidation::Connection, n);
        self.gauges(&s);
    }

    /// One entry whose source can no longer vouch for it.
    pub fn remove(&self, key: &[u8]) {
        let mut s = self.store();
        if s.remove(key) {
            self.metrics.invalidated(Invalidation::Unusable, 1);
            self.gauges(&s);
        }
    }

    /// (entries, bytes, pending fills), for `/status`.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let s = self.store();
        (s.entries(), s.bytes(), s.pending())
    }

    fn gauges(&self, s: &Store) {
        self.metrics.bytes.set(s.bytes() as f64);
        self.metrics.entries.set(s.entries() as f64);
    }
}
