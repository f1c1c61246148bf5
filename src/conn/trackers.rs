//! The clients whose `CLIENT TRACKING` the sidecar emulates
//! (`route::tracking`), and the keys each of them read: an invalidation
//! heard on any fill connection is forwarded to every client that read
//! the key, as Redis forwards it to every client that read it.
//!
//! Redis forgets a key's readers once it has told them; so does this,
//! except for a client with a tracked read of the key still in flight:
//! that read may be answered after the invalidation, and the client must
//! hear of the next change too.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bytes::Bytes;

use crate::conn::event::{Event, EventTx};
use crate::route::tracking;

#[derive(Default)]
struct Inner {
    sessions: HashMap<u64, EventTx>,
    /// Key → reader → tracked reads of it in flight.
    keys: HashMap<Bytes, HashMap<u64, u32>>,
    /// Reader → the keys it is registered for.
    by_session: HashMap<u64, HashSet<Bytes>>,
}

#[derive(Default)]
pub struct Trackers {
    inner: Mutex<Inner>,
}

impl Trackers {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Session `sid` turned tracking on; pushes go to `tx`.
    pub fn register(&self, sid: u64, tx: EventTx) {
        self.lock().sessions.insert(sid, tx);
    }

    /// Session `sid` turned tracking off, or is gone.
    pub fn unregister(&self, sid: u64) {
        let mut g = self.lock();
        g.sessions.remove(&sid);
        if let Some(keys) = g.by_session.remove(&sid) {
            for k in keys {
                if let Some(readers) = g.keys.get_mut(&k) {
                    readers.remove(&sid);
                    if readers.is_empty() {
                        g.keys.remove(&k);
                    }
                }
            }
        }
    }

    /// A tracked read of `keys` by `sid` is being sent.
    pub fn track(&self, sid: u64, keys: &[Bytes]) {
        let mut g = self.lock();
        if !g.sessions.contains_key(&sid) {
            return;
        }
        for k in keys {
            *g.keys.entry(k.clone()).or_default().entry(sid).or_default() += 1;
            g.by_session.entry(sid).or_default().insert(k.clone());
        }
    }

    /// That read was answered.
    pub fn settle(&self, sid: u64, keys: &[Bytes]) {
        let mut g = self.lock();
        for k in keys {
            if let Some(n) = g.keys.get_mut(k).and_then(|r| r.get_mut(&sid)) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// `sid` wrote `keys` with NOLOOP: Redis tells everyone but the writer,
    /// and forgets the writer as a reader too.
    pub fn untrack(&self, sid: u64, keys: &[Bytes]) {
        let mut g = self.lock();
        for k in keys {
            if let Some(readers) = g.keys.get_mut(k) {
                readers.remove(&sid);
                if readers.is_empty() {
                    g.keys.remove(k);
                }
            }
            if let Some(set) = g.by_session.get_mut(&sid) {
                set.remove(k);
            }
        }
    }

    /// `keys` changed: each reader gets one push naming the keys it read.
    pub fn invalidate<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) {
        let mut g = self.lock();
        if g.sessions.is_empty() {
            return;
        }
        let mut told: HashMap<u64, Vec<&'a [u8]>> = HashMap::new();
        for k in keys {
            let Some(readers) = g.keys.get_mut(k) else {
                continue;
            };
            for (sid, _) in readers.iter() {
                told.entry(*sid).or_default().push(k);
            }
            readers.retain(|_, in_flight| *in_flight > 0);
            if readers.is_empty() {
                g.keys.remove(k);
            }
        }
        for (sid, ks) in told {
            for k in &ks {
                let keep = g.keys.get(*k).is_some_and(|r| r.contains_key(&sid));
                if !keep && let Some(set) = g.by_session.get_mut(&sid) {
                    set.remove(*k);
                }
            }
            if let Some(tx) = g.sessions.get(&sid) {
                let _ = tx.send(Event::Push {
                    data: tracking::invalidation(ks.into_iter()),
                });
            }
        }
    }

    /// Every key changed (FLUSHALL), or a fill connection was lost and its
    /// invalidations with it: every tracking client is told to drop all.
    pub fn flush(&self) {
        let mut g = self.lock();
        if g.sessions.is_empty() {
            return;
        }
        for tx in g.sessions.values() {
            let _ = tx.send(Event::Push {
                data: tracking::flush_push(),
            });
        }
        let Inner {
            keys, by_session, ..
        } = &mut *g;
        keys.retain(|k, readers| {
            readers.retain(|sid, in_flight| {
                let keep = *in_flight > 0;
                if !keep && let Some(set) = by_session.get_mut(sid) {
                    set.remove(k);
                }
                keep
            });
            !readers.is_empty()
        });
    }

    /// (tracking sessions, keys with readers), for tests and `/status`.
    pub fn sizes(&self) -> (usize, usize) {
        let g = self.lock();
        (g.sessions.len(), g.keys.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn pushes(rx: &mut crate::conn::event::EventRx) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(Event::Push { data }) = rx.try_recv() {
            out.push(data.to_vec());
        }
        out
    }

    #[test]
    fn readers_hear_once_and_a_read_in_flight_keeps_them_registered() {
        let t = Trackers::default();
        let (tx1, mut rx1) = crate::conn::mailbox::channel();
        let (tx2, mut rx2) = crate::conn::mailbox::channel();
        t.register(1, tx1);
        t.register(2, tx2);
        t.track(1, &[b("k")]);
        t.settle(1, &[b("k")]);
        t.track(2, &[b("k")]); // still in flight
        t.invalidate([&b"k"[..], b"other"]);
        let one = b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n".to_vec();
        assert_eq!(pushes(&mut rx1), vec![one.clone()]);
        assert_eq!(pushes(&mut rx2), vec![one.clone()]);
        // 1 is forgotten; 2's read was in flight: it hears the next change.
        t.invalidate([&b"k"[..]]);
        assert!(pushes(&mut rx1).is_empty());
        assert_eq!(pushes(&mut rx2), vec![one]);
        // Answered: a reader like any other, told once more, then forgotten.
        t.settle(2, &[b("k")]);
        t.invalidate([&b"k"[..]]);
        assert_eq!(pushes(&mut rx2).len(), 1);
        t.invalidate([&b"k"[..]]);
        assert!(pushes(&mut rx2).is_empty());
        assert_eq!(t.sizes(), (2, 0));
    }

    #[test]
    fn unregistered_and_noloop_writers_hear_nothing() {
        let t = Trackers::default();
        let (tx, mut rx) = crate::conn::mailbox::channel();
        t.track(1, &[b("k")]); // not registered: ignored
        assert_eq!(t.sizes(), (0, 0));
        t.register(1, tx);
        t.track(1, &[b("a"), b("b")]);
        t.settle(1, &[b("a"), b("b")]);
        t.untrack(1, &[b("a")]);
        t.invalidate([&b"a"[..], b"b"]);
        assert_eq!(
            pushes(&mut rx),
            vec![b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nb\r\n".to_vec()]
        );
        t.track(1, &[b("c")]);
        t.unregister(1);
        assert_eq!(t.sizes(), (0, 0));
    }

    #[test]
    fn a_flush_tells_every_tracking_client() {
        let t = Trackers::default();
        let (tx, mut rx) = crate::conn::mailbox::channel();
        t.register(1, tx);
        t.track(1, &[b("a")]);
        t.settle(1, &[b("a")]);
        t.flush();
        assert_eq!(
            pushes(&mut rx),
            vec![b">2\r\n$10\r\ninvalidate\r\n_\r\n".to_vec()]
        );
        assert_eq!(t.sizes(), (1, 0));
    }
}
