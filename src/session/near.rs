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
use crate::proto::encode::Proto;
use crate::route::cache::writes::{self, Written};
use crate::route::cache::{self, Source};
use crate::route::command::Route;
use crate::route::consistency::{Need, fresh_enough};

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
    /// the cache; hands the command back when the cache does not apply.
    pub(super) fn near_read(&mut self, cur: Cur, cmd: Command) -> Option<Command> {
        let Some(pool) = self.env.near_cache.clone() else {
            return Some(cmd);
        };
        if self.env.cluster.is_some() {
            return Some(cmd);
        }
        let Some(keys) = cache::cacheable(&cmd) else {
            return Some(cmd);
        };
        let need = if self.ryw {
            self.read_need()
        } else {
            Need::Any
        };
        if need == Need::Primary {
            // Only the primary is known to hold this session's last write.
            return Some(cmd);
        }
        let key = cache::entry_key(self.client.db, None, &cmd);
        if let Some((reply, source)) = pool.cache.get(&key, Instant::now()) {
            match self.vouch(&source, need) {
                Vouch::Yes => {
                    pool.cache.metrics.hits.increment(1);
                    let data = match self.client.proto {
                        Proto::Resp3 => reply,
                        Proto::Resp2 => match crate::proto::downgrade::to_resp2(&reply) {
                            Ok(d) => d,
                            Err(_) => return Some(cmd),
                        },
                    };
                    self.env.metrics.local(cur.kind);
                    let seq = self.new_slot(cur, false, Hook::None);
                    if self.ryw
                        && let Some(slot) = self.slots.get_mut(seq)
                    {
                        // As fresh as its source was when filled: a later
                        // read must not go back before that.
                        slot.track = Track::ReplicaRead(source.offset);
                    }
                    self.complete(seq, data);
                    return None;
                }
                Vouch::Gone => pool.cache.remove(&key),
                Vouch::NotNow => {}
            }
        }
        pool.cache.metrics.misses.increment(1);
        let up = self.pick_read(&[]);
        let seq = self.new_slot(cur, false, Hook::None);
        self.send_fill(seq, cmd, up, (key, keys.into_iter().collect()), cur.kind);
        None
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
