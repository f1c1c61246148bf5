//! The near-cache's entries and the fills in flight. Pure: the fill
//! connections report replies and invalidations in the order they arrive,
//! sessions look entries up.
//!
//! The one race that matters: a fill's reply may carry a value that an
//! invalidation read earlier (or a local write acknowledged earlier)
//! already declared old. So a fill is registered before its request is
//! written (`begin_fill`), anything that invalidates one of its keys
//! meanwhile poisons it, and a poisoned fill is never stored.
//!
//! Memory is bounded by bytes: entries are evicted least recently used
//! first, and at most `MAX_PENDING` fills are tracked (a fill beyond that
//! is answered but never stored).

use std::collections::HashMap;

use bytes::Bytes;
use lru::LruCache;
use smallvec::SmallVec;
use tokio::time::Instant;

/// What an entry costs beyond its bytes (maps, the LRU list, the source).
const OVERHEAD: usize = 96;
/// Fills tracked at once.
const MAX_PENDING: usize = 10_000;

/// Where an entry came from: the session checks its source still vouches
/// for it before serving it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The upstream that answered.
    pub upstream: usize,
    /// The fill connection whose invalidations cover it.
    pub conn: u64,
    /// The upstream's replication history when the fill was sent.
    pub replid: u64,
    /// The upstream's replication offset when the fill was sent: the
    /// reply is at least that fresh.
    pub offset: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FillId(u64);

struct Entry {
    reply: Bytes,
    source: Source,
    expires: Instant,
    keys: Vec<Bytes>,
    size: usize,
}

struct Pending {
    key: Bytes,
    keys: Vec<Bytes>,
    conn: u64,
    poisoned: bool,
}

pub struct Store {
    max_bytes: usize,
    bytes: usize,
    entries: LruCache<Bytes, Entry>,
    /// Redis key → the entries covering it.
    index: HashMap<Bytes, SmallVec<[Bytes; 1]>>,
    pending: HashMap<u64, Pending>,
    /// Redis key → the fills in flight covering it.
    pending_index: HashMap<Bytes, SmallVec<[u64; 1]>>,
    next_fill: u64,
    evictions: u64,
}

impl Store {
    pub fn new(max_bytes: usize) -> Store {
        Store {
            max_bytes,
            bytes: 0,
            entries: LruCache::unbounded(),
            index: HashMap::new(),
            pending: HashMap::new(),
            pending_index: HashMap::new(),
            next_fill: 1,
            evictions: 0,
        }
    }

    /// The entry for `key` and its source, unless it expired (then it is
    /// removed).
    pub fn get(&mut self, key: &[u8], now: Instant) -> Option<(Bytes, Source)> {
        let e = self.entries.get(key)?;
        if e.expires <= now {
            self.remove(key);
            return None;
        }
        Some((e.reply.clone(), e.source.clone()))
    }

    /// A fill of entry `key`, covering `redis_keys`, is about to be sent
    /// on fill connection `conn`.
    pub fn begin_fill(&mut self, key: Bytes, redis_keys: Vec<Bytes>, conn: u64) -> FillId {
        let id = self.next_fill;
        self.next_fill += 1;
        if self.pending.len() >= MAX_PENDING {
            // Untracked: finish_fill will not know it.
            return FillId(id);
        }
        for k in &redis_keys {
            self.pending_index.entry(k.clone()).or_default().push(id);
        }
        self.pending.insert(
            id,
            Pending {
                key,
                keys: redis_keys,
                conn,
                poisoned: false,
            },
        );
        FillId(id)
    }

    /// The fill's reply arrived; stores it unless the fill was poisoned,
    /// the entry is too big to be worth it (an eighth of the bound), or it
    /// expired already. Returns whether it was stored.
    pub fn finish_fill(
        &mut self,
        id: FillId,
        reply: Bytes,
        source: Source,
        expires: Instant,
        now: Instant,
    ) -> bool {
        let Some(p) = self.take_pending(id.0) else {
            return false;
        };
        if p.poisoned || expires <= now {
            return false;
        }
        let size =
            OVERHEAD + p.key.len() + reply.len() + p.keys.iter().map(|k| k.len()).sum::<usize>();
        if size > self.max_bytes / 8 {
            return false;
        }
        // A framed reply shares its connection's read buffer: copied, so
        // that an entry pins only its own bytes.
        let reply = Bytes::copy_from_slice(&reply);
        self.remove(&p.key);
        for k in &p.keys {
            let list = self.index.entry(k.clone()).or_default();
            if !list.contains(&p.key) {
                list.push(p.key.clone());
            }
        }
        self.bytes += size;
        self.entries.put(
            p.key,
            Entry {
                reply,
                source,
                expires,
                keys: p.keys,
                size,
            },
        );
        while self.bytes > self.max_bytes {
            let Some((k, e)) = self.entries.pop_lru() else {
                break;
            };
            self.evictions += 1;
            self.forget(&k, e);
        }
        true
    }

    /// The fill failed or got an error reply.
    pub fn abandon_fill(&mut self, id: FillId) {
        self.take_pending(id.0);
    }

    /// Redis key `k` changed: every entry covering it goes (in every db:
    /// the index is by the bare key), and fills of it in flight are
    /// poisoned. Returns the entries dropped.
    pub fn invalidate(&mut self, k: &[u8]) -> usize {
        if let Some(ids) = self.pending_index.get(k) {
            for id in ids {
                if let Some(p) = self.pending.get_mut(id) {
                    p.poisoned = true;
                }
            }
        }
        let Some(list) = self.index.remove(k) else {
            return 0;
        };
        list.iter().filter(|ek| self.remove(ek)).count()
    }

    /// Every key changed (FLUSHALL, a full resync).
    pub fn flush_all(&mut self) -> usize {
        for p in self.pending.values_mut() {
            p.poisoned = true;
        }
        let n = self.entries.len();
        self.entries.clear();
        self.index.clear();
        self.bytes = 0;
        n
    }

    /// Fill connection `conn` is gone: what it filled can no longer hear
    /// its invalidations.
    pub fn flush_conn(&mut self, conn: u64) -> usize {
        for p in self.pending.values_mut() {
            if p.conn == conn {
                p.poisoned = true;
            }
        }
        let gone: Vec<Bytes> = self
            .entries
            .iter()
            .filter(|(_, e)| e.source.conn == conn)
            .map(|(k, _)| k.clone())
            .collect();
        gone.iter().filter(|k| self.remove(k)).count()
    }

    /// Drops one entry; whether it existed.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        match self.entries.pop(key) {
            Some(e) => {
                self.forget(key, e);
                true
            }
            None => false,
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn entries(&self) -> usize {
        self.entries.len()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Entries evicted by the byte bound so far.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// An entry left the LRU: its bytes and index references go too.
    fn forget(&mut self, key: &[u8], e: Entry) {
        self.bytes -= e.size;
        for k in &e.keys {
            if let Some(list) = self.index.get_mut(k) {
                list.retain(|ek| &ek[..] != key);
                if list.is_empty() {
                    self.index.remove(k);
                }
            }
        }
    }

    fn take_pending(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        for k in &p.keys {
            if let Some(ids) = self.pending_index.get_mut(k) {
                ids.retain(|i| *i != id);
                if ids.is_empty() {
                    self.pending_index.remove(k);
                }
            }
        }
        Some(p)
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        let sum: usize = self.entries.iter().map(|(_, e)| e.size).sum();
        assert_eq!(sum, self.bytes, "byte count");
        let refs: usize = self.index.values().map(|l| l.len()).sum();
        let mut want = 0;
        for (ek, e) in self.entries.iter() {
            let mut seen: Vec<&Bytes> = Vec::new();
            for k in &e.keys {
                if !seen.contains(&k) {
                    seen.push(k);
                    want += 1;
                    assert!(self.index[k].contains(ek), "index misses an entry");
                }
            }
        }
        assert_eq!(refs, want, "index references");
        let prefs: usize = self.pending_index.values().map(|l| l.len()).sum();
        let pwant: usize = self.pending.values().map(|p| p.keys.len()).sum();
        assert_eq!(prefs, pwant, "pending index references");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn src(conn: u64) -> Source {
        Source {
            upstream: 1,
            conn,
            replid: 7,
            offset: 100,
        }
    }

    fn later(now: Instant) -> Instant {
        now + Duration::from_secs(60)
    }

    /// Fills entry `key` over `keys` on conn 1 and finishes it at once.
    fn put(s: &mut Store, key: &str, keys: &[&str], reply: &str, now: Instant) -> bool {
        let id = s.begin_fill(b(key), keys.iter().map(|k| b(k)).collect(), 1);
        s.finish_fill(id, b(reply), src(1), later(now), now)
    }

    #[test]
    fn a_finished_fill_is_served_until_its_key_is_invalidated() {
        let now = Instant::now();
        let mut s = Store::new(1 << 20);
        assert!(put(&mut s, "e1", &["k"], "$1\r\nv\r\n", now));
        assert_eq!(s.get(b"e1", now), Some((b("$1\r\nv\r\n"), src(1))));
        assert_eq!(s.entries(), 1);
        assert_eq!(s.bytes(), OVERHEAD + 2 + 7 + 1);
        assert_eq!(s.invalidate(b"k"), 1);
        assert_eq!(s.get(b"e1", now), None);
        assert_eq!((s.entries(), s.bytes()), (0, 0));
        s.check_invariants();
    }

    #[test]
    fn an_invalidation_while_a_fill_is_in_flight_poisons_it() {
        let now = Instant::now();
        let mut s = Store::new(1 << 20);
        let id = s.begin_fill(b("e"), vec![b("k")], 1);
        assert_eq!(s.invalidate(b"k"), 0);
        assert!(!s.finish_fill(id, b(":1\r\n"), src(1), later(now), now));
        assert_eq!(s.get(b"e", now), None);
        // Another key's invalidation does not.
        let id = s.begin_fill(b("e"), vec![b("k")], 1);
        s.invalidate(b"other");
        assert!(s.finish_fill(id, b(":1\r\n"), src(1), later(now), now));
        assert_eq!(s.pending(), 0);
        s.check_invariants();
    }

    #[test]
    fn flushes_poison_fills_and_drop_entries() {
        let now = Instant::now();
        let mut s = Store::new(1 << 20);
        assert!(put(&mut s, "a", &["ka"], ":1\r\n", now));
        let id = s.begin_fill(b("b"), vec![b("kb")], 1);
        assert_eq!(s.flush_all(), 1);
        assert!(!s.finish_fill(id, b(":1\r\n"), src(1), later(now), now));

        // flush_conn: only that connection's entries and fills.
        let on2 = s.begin_fill(b("x"), vec![b("kx")], 2);
        assert!(s.finish_fill(on2, b(":1\r\n"), src(2), later(now), now));
        assert!(put(&mut s, "y", &["ky"], ":1\r\n", now));
        let pending2 = s.begin_fill(b("z"), vec![b("kz")], 2);
        let pending1 = s.begin_fill(b("w"), vec![b("kw")], 1);
        assert_eq!(s.flush_conn(2), 1);
        assert!(s.get(b"x", now).is_none());
        assert!(s.get(b"y", now).is_some());
        assert!(!s.finish_fill(pending2, b(":1\r\n"), src(2), later(now), now));
        assert!(s.finish_fill(pending1, b(":1\r\n"), src(1), later(now), now));
        s.check_invariants();
    }

    #[test]
    fn entries_expire_and_multi_key_entries_go_with_any_key() {
        let now = Instant::now();
        let mut s = Store::new(1 << 20);
        let id = s.begin_fill(b("m"), vec![b("a"), b("b")], 1);
        assert!(s.finish_fill(id, b("*0\r\n"), src(1), now + Duration::from_millis(5), now));
        assert!(s.get(b"m", now).is_some());
        assert!(s.get(b"m", now + Duration::from_millis(5)).is_none());
        assert_eq!(s.entries(), 0);
        // Expired on arrival: not stored.
        let id = s.begin_fill(b("m"), vec![b("a")], 1);
        assert!(!s.finish_fill(id, b("*0\r\n"), src(1), now, now));

        assert!(put(&mut s, "m", &["a", "b"], "*0\r\n", now));
        assert!(put(&mut s, "n", &["b"], "*0\r\n", now));
        assert_eq!(s.invalidate(b"b"), 2);
        assert_eq!(s.entries(), 0);
        assert!(s.index.is_empty());
        s.check_invariants();
    }

    #[test]
    fn the_byte_bound_evicts_the_least_recently_used() {
        let now = Instant::now();
        // Room for three entries of OVERHEAD + 2 + 4 + 2 bytes; an entry
        // may take at most an eighth of the bound.
        let one = OVERHEAD + 8;
        let mut s = Store::new(one * 8);
        for i in 0..8 {
            assert!(put(
                &mut s,
                &format!("e{i}"),
                &[&format!("k{i}")],
                "$0\r\n",
                now
            ));
        }
        assert_eq!(s.bytes(), one * 8);
        // Touch e0: e1 is now the oldest.
        assert!(s.get(b"e0", now).is_some());
        assert!(put(&mut s, "e8", &["k8"], "$0\r\n", now));
        assert_eq!(s.evictions(), 1);
        assert!(s.get(b"e1", now).is_none());
        assert!(s.get(b"e0", now).is_some());
        assert!(s.bytes() <= one * 8);
        // Too big for an eighth of the bound.
        let big = "x".repeat(one);
        assert!(!put(&mut s, "big", &["kb"], &big, now));
        s.check_invariants();
    }

    #[test]
    fn fills_beyond_the_pending_bound_are_never_stored() {
        let now = Instant::now();
        let mut s = Store::new(1 << 30);
        let ids: Vec<FillId> = (0..MAX_PENDING)
            .map(|i| s.begin_fill(b(&format!("e{i}")), vec![b("k")], 1))
            .collect();
        let extra = s.begin_fill(b("extra"), vec![b("k")], 1);
        assert_eq!(s.pending(), MAX_PENDING);
        assert!(!s.finish_fill(extra, b(":1\r\n"), src(1), later(now), now));
        for id in ids {
            s.abandon_fill(id);
        }
        assert_eq!(s.pending(), 0);
        assert!(s.pending_index.is_empty());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Begin(u8, u8, u8),
        Finish(usize, u8),
        Abandon(usize),
        Invalidate(u8),
        FlushAll,
        FlushConn(u8),
        Get(u8),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..20, 0u8..10, 0u8..3).prop_map(|(e, k, c)| Op::Begin(e, k, c)),
            4 => (0usize..40, 0u8..200).prop_map(|(i, n)| Op::Finish(i, n)),
            1 => (0usize..40).prop_map(Op::Abandon),
            2 => (0u8..10).prop_map(Op::Invalidate),
            1 => Just(Op::FlushAll),
            1 => (0u8..3).prop_map(Op::FlushConn),
            2 => (0u8..20).prop_map(Op::Get),
            1 => (0u8..20).prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn random_operations_keep_the_books_and_the_bound(ops in proptest::collection::vec(op(), 1..200)) {
            let now = Instant::now();
            let max = 2048;
            let mut s = Store::new(max);
            let mut fills: Vec<(FillId, u64)> = Vec::new();
            for op in ops {
                match op {
                    Op::Begin(e, k, c) => {
                        let keys = vec![b(&format!("k{k}")), b(&format!("k{}", (k + 1) % 10))];
                        let id = s.begin_fill(b(&format!("e{e}")), keys, c as u64);
                        fills.push((id, c as u64));
                    }
                    Op::Finish(i, n) if !fills.is_empty() => {
                        let (id, c) = fills.remove(i % fills.len());
                        s.finish_fill(id, Bytes::from(vec![b'x'; n as usize]), src(c), later(now), now);
                        prop_assert!(s.bytes() <= max);
                    }
                    Op::Abandon(i) if !fills.is_empty() => {
                        let (id, _) = fills.remove(i % fills.len());
                        s.abandon_fill(id);
                    }
                    Op::Invalidate(k) => { s.invalidate(format!("k{k}").as_bytes()); }
                    Op::FlushAll => { s.flush_all(); }
                    Op::FlushConn(c) => { s.flush_conn(c as u64); }
                    Op::Get(e) => { s.get(format!("e{e}").as_bytes(), now); }
                    Op::Remove(e) => { s.remove(format!("e{e}").as_bytes()); }
                    _ => {}
                }
                s.check_invariants();
            }
            // Invalidating every key leaves nothing.
            for k in 0..10 {
                s.invalidate(format!("k{k}").as_bytes());
            }
            prop_assert_eq!(s.entries(), 0);
            prop_assert_eq!(s.bytes(), 0);
            prop_assert!(s.index.is_empty());
        }
    }
}
