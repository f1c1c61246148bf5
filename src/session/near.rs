//! The near-cache on the session's side: a cacheable read is answered from
//! the shared cache when an entry exists whose source still vouches for it,
//! else it goes to the upstream `pick_read` chooses over that upstream's
//! fill connection (`conn::fill`), which stores the reply. A write's keys
//! leave the cache before its reply is written (`drop_written`).

use std::sync::Arc;

use tokio::time::Instant;

use super::slots::{Hook, Track};
use super::{Cur, Session};
use crate::metrics::Invalidation;
use crate::model::near_cache::NearCache;
use crate::model::topology::{Role, Upstream};
use crate::proto::Command;
use crate::proto::encode::{self as resp, Proto};
use crate::route::cache::writes::{self, Written};
use crate::route::cache::{self, Source};
use crate::route::command::Route;
use crate::route::consistency::{Need, fresh_enough};
use bytes::Bytes;

/// Whether an entry's source may serve it now.
#[derive(Debug, PartialEq, Eq)]
enum Vouch {
    Yes,
    /// Not for this read (its upstream is unhealthy or lags, or it is
    /// older than this session's read-your-writes bar); kept.
    NotNow,
    /// Never again (its upstream is gone or its history changed).
    Gone,
}

/// The keys a tracked read reads: exactly, for the reads the cache knows;
/// otherwise every argument that could be a key (an extra invalidation
/// costs a client one refetch, a missing one a stale entry).
pub(super) fn read_keys(cmd: &Command) -> Vec<Bytes> {
    if let Some(keys) = cache::cacheable(cmd) {
        return keys.into_iter().collect();
    }
    match writes::written(cmd) {
        Written::Keys(keys) => keys,
        _ => Vec::new(),
    }
}

pub(super) fn drop_written(cache: &NearCache, w: Written) {
    match w {
        Written::Nothing => {}
        Written::Keys(keys) => cache.invalidate(keys.iter().map(|k| &k[..]), Invalidation::Write),
        Written::Everything => cache.flush_all(Invalidation::Write),
    }
}

fn merge(into: &mut Written, w: Written) {
    *into = match (std::mem::take(into), w) {
        (Written::Everything, _) | (_, Written::Everything) => Written::Everything,
        (Written::Nothing, w) | (w, Written::Nothing) => w,
        (Written::Keys(mut a), Written::Keys(b)) => {
            a.extend(b);
            Written::Keys(a)
        }
    };
}

impl Session {
    /// Notes what a command that may write drops from the near-cache: its
    /// slot drops it when the reply arrives. Queued in a MULTI, it drops
    /// at EXEC, when the transaction runs.
    pub(super) fn note_written(&mut self, cmd: &Command, route: Route) {
        use crate::route::command::Pin;
        match route {
            Route::Pin(Pin::Exec) => {
                self.next_written = std::mem::take(&mut self.multi_written);
                return;
            }
            Route::Pin(Pin::Discard) => {
                self.multi_written = Written::Nothing;
                return;
            }
            _ => {}
        }
        let w = writes::written(cmd);
        if self.pin.multi {
            merge(&mut self.multi_written, w);
        } else {
            self.next_written = w;
        }
    }

    /// Answers a cacheable read from the near-cache, or sends it to fill
    /// the cache. A read the client tracks (`tracked`: its keys) goes over
    /// a tracking connection either way, so that the sidecar hears of
    /// changes to what it read. Hands the command back when neither
    /// applies.
    pub(super) fn near_read(
        &mut self,
        cur: Cur,
        cmd: Command,
        tracked: Option<Vec<Bytes>>,
    ) -> Option<Command> {
        if self.env.cluster.is_some() {
            return Some(cmd);
        }
        let cache = self.env.fills.cache.clone();
        let keys = cache.as_ref().and_then(|_| cache::cacheable(&cmd));
        let Some(keys) = keys else {
            let Some(tracked) = tracked else {
                return Some(cmd);
            };
            let up = self.pick_read(&[]);
            let seq = self.new_slot(cur, false, Hook::None);
            self.track_slot(seq, tracked);
            self.send_fill(seq, cmd, up, None, cur.kind);
            return None;
        };
        let cache = cache.expect("keys only with a cache");
        let need = if self.ryw {
            self.read_need()
        } else {
            Need::Any
        };
        let key = cache::entry_key(self.client.db, None, &cmd);
        // MGET from the keys' GET entries, when every one has a fresh one.
        let from_gets = if need != Need::Primary && cmd.name_eq("MGET") {
            self.mget_from_gets(&cache, &cmd, need)
        } else {
            None
        };
        let found = from_gets.or_else(|| {
            (need != Need::Primary)
                .then(|| cache.get(&key, Instant::now()))
                .flatten()
        });
        if let Some((reply, source)) = found {
            match self.vouch(&source, need) {
                Vouch::Yes => {
                    let data = match self.client.proto {
                        Proto::Resp3 => Some(reply),
                        Proto::Resp2 => crate::proto::downgrade::to_resp2(&reply).ok(),
                    };
                    if let Some(data) = data {
                        cache.hit();
                        self.env.metrics.local(cur.kind);
                        let seq = self.new_slot(cur, false, Hook::None);
                        if self.ryw
                            && let Some(slot) = self.slots.get_mut(seq)
                        {
                            // As fresh as its source was when filled: a
                            // later read must not go back before that.
                            slot.track = Track::ReplicaRead(source.offset);
                        }
                        // An entry lives only while its fill connection
                        // tracks its keys: the client hears what it would.
                        if let Some(t) = tracked {
                            self.env.fills.trackers.track(self.id, &t);
                            self.env.fills.trackers.settle(self.id, &t);
                        }
                        self.complete(seq, data);
                        return None;
                    }
                }
                Vouch::Gone => cache.remove(&key),
                Vouch::NotNow => {}
            }
        }
        cache.miss();
        let up = self.pick_read(&[]);
        let seq = self.new_slot(cur, false, Hook::None);
        if let Some(t) = tracked {
            self.track_slot(seq, t);
        }
        // Only the primary is known to hold this session's last write: the
        // read goes there, and fills nothing.
        let entry = (need != Need::Primary).then(|| (key, keys.into_iter().collect()));
        self.send_fill(seq, cmd, up, entry, cur.kind);
        None
    }

    /// Slot `seq` is a tracked read of `keys`: registered now, settled
    /// when its reply arrives.
    fn track_slot(&mut self, seq: u64, keys: Vec<Bytes>) {
        self.env.fills.trackers.track(self.id, &keys);
        if let Some(slot) = self.slots.get_mut(seq) {
            slot.tracked = keys;
        }
    }

    /// `CLIENT TRACKING`, `CACHING`, `GETREDIR`, `TRACKINGINFO` for a
    /// session on shared connections: answered here when the sidecar can
    /// emulate them (`route::tracking`); false hands the command to the
    /// client's dedicated connection, where Redis tracks.
    pub(super) fn tracking_command(&mut self, cur: Cur, cmd: &Command) -> bool {
        use crate::route::tracking::{self as tr, Request};
        if self.env.cluster.is_some() {
            return false;
        }
        if cmd.arg_eq(1, "TRACKING") {
            match tr::parse(cmd) {
                Err(e) => self.push_done(cur, e),
                Ok(Request::Off) => {
                    if self.tracking.take().is_some() {
                        self.env.fills.trackers.unregister(self.id);
                    }
                    self.push_done(cur, resp::ok());
                }
                Ok(Request::On { native: true, .. }) => return false,
                // Default mode tracks every read, including those of a
                // MULTI that the client's own connection runs: Redis's
                // pushes about them (tracking-table evictions, for one)
                // must come in order with that connection's replies, which
                // only Redis on that connection can do.
                Ok(Request::On {
                    mode: tr::Mode::Default,
                    ..
                }) if self.tracking.is_none() => return false,
                Ok(Request::On { .. }) if self.client.proto != Proto::Resp3 => return false,
                Ok(Request::On { mode, noloop, .. }) => {
                    match tr::Tracking::enable(self.tracking, mode, noloop) {
                        Ok(t) => {
                            if self.tracking.is_none() {
                                self.env
                                    .fills
                                    .trackers
                                    .register(self.id, self.events_tx.clone());
                            }
                            self.tracking = Some(t);
                            self.push_done(cur, resp::ok());
                        }
                        Err(e) => self.push_done(cur, e),
                    }
                }
            }
            return true;
        }
        if cmd.arg_eq(1, "CACHING") && cmd.argc() >= 3 {
            let reply = match &mut self.tracking {
                None => tr::caching_off_error(),
                Some(t) => match t.caching(cmd) {
                    Ok(()) => resp::ok(),
                    Err(e) => e,
                },
            };
            self.push_done(cur, reply);
            return true;
        }
        if cmd.arg_eq(1, "GETREDIR") && cmd.argc() == 2 {
            let reply = tr::getredir(self.tracking.as_ref());
            self.push_done(cur, reply);
            return true;
        }
        if cmd.arg_eq(1, "TRACKINGINFO") && cmd.argc() == 2 {
            let reply = tr::trackinginfo(self.tracking.as_ref(), self.client.proto);
            self.push_done(cur, reply);
            return true;
        }
        false
    }

    /// Turns emulated tracking off (RESET).
    pub(super) fn tracking_off(&mut self) {
        if self.tracking.take().is_some() {
            self.env.fills.trackers.unregister(self.id);
        }
    }

    /// An MGET answered from the GET entries of its keys: a GET entry that
    /// is not an error says the key holds a string or nothing, and then
    /// MGET's element is exactly GET's reply. The source returned is the
    /// least fresh of them (for read-your-writes).
    fn mget_from_gets(
        &self,
        cache: &NearCache,
        cmd: &Command,
        need: Need,
    ) -> Option<(Bytes, Source)> {
        let now = Instant::now();
        let mut out = format!("*{}\r\n", cmd.argc() - 1).into_bytes();
        let mut oldest: Option<Source> = None;
        for k in cmd.args().skip(1) {
            let get = Command::from_args(&[b"GET", k]);
            let (reply, source) = cache.get(&cache::entry_key(self.client.db, None, &get), now)?;
            if self.vouch(&source, need) != Vouch::Yes {
                return None;
            }
            out.extend_from_slice(&reply);
            if oldest.as_ref().is_none_or(|o| source.offset < o.offset) {
                oldest = Some(source);
            }
        }
        Some((Bytes::from(out), oldest?))
    }

    fn vouch(&self, source: &Source, need: Need) -> Vouch {
        let topo = self.shard.load();
        let up: Option<&Arc<Upstream>> = std::iter::once(&topo.primary)
            .chain(topo.replicas.iter())
            .find(|u| u.id == source.upstream);
        let Some(up) = up else {
            return Vouch::Gone;
        };
        if up.is_retired() || up.replid() != source.replid {
            return Vouch::Gone;
        }
        let usable = match up.role {
            Role::Replica => up.unusable().is_none(),
            Role::Primary => up.is_healthy(),
        };
        if !usable || !fresh_enough(need, source.offset) {
            return Vouch::NotNow;
        }
        Vouch::Yes
    }
}
