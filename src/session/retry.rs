//! Where reads go, and where they go next: a read that got no reply may
//! try another candidate once; a replica's refusal sends it to the primary.
//! Read-your-writes decides how fresh a replica must be.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Session;
use super::slots::Track;
use crate::config::{ConsistencyScope, ReadFrom};
use bytes::Bytes;

use crate::model::topology::{Role, TopologyCell, Upstream, Writes};
use crate::proto::Command;
use crate::proto::refusal::Refusal;
use crate::route::command::{self, Kind};
use crate::route::consistency::{Need, Tracker, fresh_enough};

pub(super) struct Retry {
    cmd: Command,
    tried: Tried,
    upstream: Arc<Upstream>,
    /// Sent to the primary's shared pipe as a write (or another command
    /// for the primary): only a refusal proving it did not run sends it
    /// again, to a new primary (`park`).
    write: Option<Kind>,
    /// Cluster: MOVED/ASK hops so far, and the shard it was sent to.
    pub(super) redirects: u8,
    shard: Option<Arc<TopologyCell>>,
}

impl Retry {
    pub(super) fn write(
        cmd: Command,
        upstream: Arc<Upstream>,
        kind: Kind,
        shard: Option<Arc<TopologyCell>>,
    ) -> Retry {
        Retry {
            cmd,
            tried: Tried::default(),
            upstream,
            write: Some(kind),
            redirects: 0,
            shard,
        }
    }

    pub(super) fn command(&self) -> &Command {
        &self.cmd
    }

    /// A read (not a write or another command for the primary).
    pub(super) fn is_read(&self) -> bool {
        self.write.is_none()
    }
}

/// Upstream ids a read was sent to (at most three: the first choice, one
/// retry, the primary after a refusal), inline: no allocation per read.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(super) struct Tried {
    ids: [usize; 3],
    len: usize,
}

impl Tried {
    fn push(&mut self, id: usize) {
        if self.len < self.ids.len() {
            self.ids[self.len] = id;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[usize] {
        &self.ids[..self.len]
    }

    /// A read that got no reply gets one more try, elsewhere.
    fn may_retry(&self) -> bool {
        self.len < 2
    }
}

impl Session {
    /// Sends the read `cmd` of slot `seq` to `up` on a shared pipe,
    /// remembering where it went.
    pub(super) fn send_read(
        &mut self,
        seq: u64,
        cmd: Command,
        up: Arc<Upstream>,
        mut tried: Tried,
        kind: Kind,
    ) {
        tried.push(up.id);
        let shard = self.cluster_shard();
        let pipe = self.pipe_for(&up);
        let data = cmd.raw().clone();
        let slow = command::is_slow(cmd.name());
        let track = self.read_track(&up);
        if let Some(slot) = self.slots.get_mut(seq) {
            slot.track = track;
            slot.retry = Some(Retry {
                cmd,
                tried,
                upstream: up,
                write: None,
                redirects: 0,
                shard,
            });
        }
        self.send_pipe(pipe, seq, data, kind, slow);
    }

    /// Sends the read `cmd` of slot `seq` to `up`'s tracking connection,
    /// which stores the reply as the near-cache entry `entry` if any.
    /// Failures and refusals take the shared pipes like any read.
    pub(super) fn send_fill(
        &mut self,
        seq: u64,
        cmd: Command,
        up: Arc<Upstream>,
        entry: Option<(Bytes, Vec<Bytes>)>,
        kind: Kind,
    ) {
        let pool = self.env.fills.clone();
        let mut tried = Tried::default();
        tried.push(up.id);
        let track = self.read_track(&up);
        let req = crate::conn::fill::FillRequest {
            seq,
            reply_to: self.events_tx.clone(),
            data: cmd.raw().clone(),
            db: self.client.db,
            entry,
            resp2: self.client.proto == crate::proto::Proto::Resp2,
            kind,
        };
        match pool.send(&up, req) {
            Ok(()) => {
                if let Some(slot) = self.slots.get_mut(seq) {
                    slot.track = track;
                    slot.retry = Some(Retry {
                        cmd,
                        tried,
                        upstream: up,
                        write: None,
                        redirects: 0,
                        shard: None,
                    });
                }
                self.shared_waiting += 1;
            }
            // Retired a moment ago: a shared pipe, as any read.
            Err(_) => self.send_read(seq, cmd, up, Tried::default(), kind),
        }
    }

    /// A replica refused a read it cannot serve: READONLY (the command is a
    /// write after all: learn it), NOSCRIPT (scripts are not replicated),
    /// LOADING, MASTERDOWN. The primary would have answered: ask it.
    pub(super) fn try_reroute(&mut self, seq: u64, refusal: Refusal, reply: &Bytes) -> bool {
        let Some(slot) = self.slots.get_mut(seq) else {
            return false;
        };
        let Some(retry) = slot.retry.take() else {
            return false;
        };
        if let Some(kind) = retry.write {
            // The primary refused a write without running it: READONLY
            // says it stepped down; LOADING and MASTERDOWN count only
            // while a failover is already under way.
            let stepped_down = refusal == Refusal::ReadOnly
                || (matches!(refusal, Refusal::Loading | Refusal::MasterDown)
                    && self.shard.load().writes != Writes::Open);
            let following = {
                let c = self.env.config();
                c.sentinel.is_some() || c.failover.follow_role == crate::config::FollowRole::On
            };
            if !stepped_down || !following {
                return false;
            }
            let not = retry.upstream.id;
            self.park_refused(seq, retry.cmd, kind, reply.clone(), not);
            return true;
        }
        if retry.upstream.role != Role::Replica {
            return false;
        }
        if refusal == Refusal::ReadOnly {
            let table = self.env.facts.commands();
            let learned = table.with_write(retry.cmd.name(), retry.cmd.arg(1));
            self.env.facts.commands.store(Arc::new(learned));
            tracing::info!(command = %String::from_utf8_lossy(retry.cmd.name()), "replica refused a write: routing this command to the primary from now on");
        }
        if let Some(s) = retry.shard {
            self.shard = s;
        }
        let primary = self.shard.load().primary.clone();
        self.send_read(seq, retry.cmd, primary, retry.tried, Kind::Read);
        true
    }

    /// A read that got no reply at all may go to another candidate, once.
    pub(super) fn try_retry(&mut self, seq: u64) -> bool {
        let Some(slot) = self.slots.get_mut(seq) else {
            return false;
        };
        let Some(retry) = slot.retry.take() else {
            return false;
        };
        // A write that got no reply may have run: never sent again.
        if retry.write.is_some() || !retry.tried.may_retry() {
            return false;
        }
        if let Some(s) = retry.shard.clone() {
            self.shard = s;
        }
        let tried = retry.tried.as_slice();
        let mut next = self.pick_read(tried);
        if tried.contains(&next.id) {
            // Nothing usable is left. When the primary is what failed, a
            // replica past the lag bound still answers (see `last_resort`);
            // one behind this session's own writes does not.
            let topo = self.shard.load();
            if !tried.contains(&topo.primary.id) {
                return false;
            }
            let need = self.read_need();
            let Some(up) =
                topo.last_resort(|u| tried.contains(&u.id) || !fresh_enough(need, u.repl_offset()))
            else {
                return false;
            };
            next = up.clone();
        }
        self.send_read(seq, retry.cmd, next, retry.tried, Kind::Read);
        true
    }

    /// The shard this command goes to, in cluster mode (kept with its
    /// retry, since replies come back after other commands moved it).
    pub(super) fn cluster_shard(&self) -> Option<Arc<TopologyCell>> {
        self.env.cluster.as_ref().map(|_| self.shard.clone())
    }

    /// Where this session's next read goes. `tried` lists upstreams that
    /// already failed the request.
    pub(super) fn pick_read(&mut self, tried: &[usize]) -> Arc<Upstream> {
        let topo = self.shard.load();
        let (read_from, window) = {
            let c = self.config_view.load();
            let window = Duration::from_millis(c.routing.latency_window_ms);
            (c.routing.read_from, window)
        };
        if read_from == ReadFrom::Primary || topo.replicas.is_empty() {
            // No replica can take it: skip the freshness bookkeeping.
            let (up, fallback) = topo.read_target(read_from, window, 0, |_| false);
            if let Some(f) = fallback {
                self.env.metrics.fallback(f);
            }
            return up.clone();
        }
        let need = self.read_need();
        if need != Need::Any
            && (need == Need::Primary
                || topo
                    .replicas
                    .iter()
                    .any(|r| r.unusable().is_none() && !fresh_enough(need, r.repl_offset())))
        {
            self.replication().demand_offsets();
        }
        let (up, fallback) =
            topo.read_target(read_from, window, self.slots.next_seq() as usize, |u| {
                tried.contains(&u.id) || !fresh_enough(need, u.repl_offset())
            });
        if let Some(f) = fallback {
            self.env.metrics.fallback(f);
        }
        up.clone()
    }

    /// How fresh a replica must be for this session's next read.
    pub(super) fn read_need(&mut self) -> Need {
        if !self.ryw {
            return Need::Any;
        }
        if self.writes_in_flight > 0 {
            // A pipelined write not yet acknowledged: only the primary,
            // which runs it first, is sure to show it.
            return Need::Primary;
        }
        let replication = self.replication();
        let (generation, rebase_to) = replication.generation();
        let (tracker, seen) = self.own_tracker();
        if generation != *seen {
            // A failover since this session's last read: its bar was set
            // in the old history (the sidecar-wide tracker is rebased by
            // the switch itself).
            *seen = generation;
            tracker.rebase(rebase_to);
        }
        let offsets = replication.offsets();
        self.with_tracker(|t| t.need(&offsets))
    }

    /// Whose replication offsets this session's reads are judged by: the
    /// primary's, or in a cluster the current shard's.
    fn replication(&self) -> Arc<crate::model::replication::Replication> {
        if self.env.cluster.is_some() {
            self.shard.replication.clone()
        } else {
            self.env.replication.clone()
        }
    }

    /// This connection's own tracker and the replication generation it was
    /// last rebased to: one per shard in a cluster (each shard has its own
    /// offsets).
    fn own_tracker(&mut self) -> (&mut Tracker, &mut u64) {
        if self.env.cluster.is_none() {
            return (&mut self.tracker, &mut self.ryw_generation);
        }
        let i = match self
            .shard_trackers
            .iter()
            .position(|(k, _, _)| Arc::ptr_eq(k, &self.shard))
        {
            Some(i) => i,
            None => {
                self.shard_trackers
                    .push((self.shard.clone(), Tracker::new(), 0));
                self.shard_trackers.len() - 1
            }
        };
        let (_, t, g) = &mut self.shard_trackers[i];
        (t, g)
    }

    fn with_tracker<R>(&mut self, f: impl FnOnce(&mut Tracker) -> R) -> R {
        match self.env.config().routing.consistency_scope {
            ConsistencyScope::Connection => f(self.own_tracker().0),
            ConsistencyScope::Sidecar => f(&mut self.replication().tracker()),
        }
    }

    /// The bookkeeping a read served by `up` leaves behind.
    fn read_track(&self, up: &Upstream) -> Track {
        if !self.ryw {
            Track::None
        } else if up.role == Role::Primary {
            Track::PrimaryRead
        } else {
            Track::ReplicaRead(up.repl_offset())
        }
    }

    /// A slot completed: the read-your-writes bookkeeping it carried.
    /// Even a failed write may have written (a script, a MULTI): every
    /// completion counts.
    pub(super) fn on_tracked(&mut self, track: Track) {
        match track {
            Track::None => {}
            Track::Write => {
                self.writes_in_flight -= 1;
                self.with_tracker(|t| t.acknowledged(Instant::now()));
            }
            Track::PrimaryRead => self.with_tracker(|t| t.acknowledged(Instant::now())),
            Track::ReplicaRead(o) => self.with_tracker(|t| t.served_by_replica(o)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tried_holds_three_and_retries_once() {
        let mut t = Tried::default();
        assert!(t.may_retry());
        t.push(4);
        assert_eq!(t.as_slice(), &[4]);
        assert!(t.may_retry());
        t.push(7);
        assert!(!t.may_retry());
        t.push(0);
        t.push(9);
        assert_eq!(t.as_slice(), &[4, 7, 0], "a fourth id is not kept");
    }
}
