//! Writes that wait for a new primary. While a failover is under way
//! (`Writes::Waiting`), a write is held here for up to `failover.wait_ms`,
//! and so is every command the client sent after it, so that they still run
//! in the order sent. A write the old primary refused with a reply proving
//! it did not run (READONLY, LOADING, MASTERDOWN) waits too, and is sent
//! once to the new primary; nothing that may have run is ever sent again.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::Session;
use crate::model::topology::Writes;
use crate::proto::Command;
use crate::proto::encode as resp;
use crate::route::command::{self, Kind};

/// How often a session with held commands looks at the topology again.
pub(super) const POLL: Duration = Duration::from_millis(5);

pub(super) const NO_PRIMARY: &str = "ERR nearby: no primary (failover in progress)";

pub(super) enum Parked {
    /// Not dispatched yet: it goes through `dispatch` once released.
    Fresh(Command),
    /// A write the primary `not` refused with `reply`; its slot waits.
    /// `checks`: the follower's count of looks when it was refused.
    Refused {
        seq: u64,
        cmd: Command,
        kind: Kind,
        reply: Bytes,
        not: usize,
        checks: u64,
    },
}

#[derive(Default)]
pub(super) struct Park {
    pub queue: VecDeque<Parked>,
    /// When the commands held now stop waiting.
    pub deadline: Option<Instant>,
    /// Set while releasing after the deadline: writes fail instead of
    /// waiting again.
    pub expired: bool,
}

impl Park {
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    fn hold(&mut self, p: Parked, wait: Duration) {
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + wait);
        }
        self.queue.push_back(p);
    }
}

impl Session {
    fn failover_wait(&self) -> Duration {
        Duration::from_millis(self.env.config().failover.wait_ms)
    }

    /// Holds `cmd` behind earlier held commands; gives it back when
    /// nothing is held.
    pub(super) fn park_behind(&mut self, cmd: Command) -> Option<Command> {
        if self.park.is_empty() {
            return Some(cmd);
        }
        let wait = self.failover_wait();
        self.park.hold(Parked::Fresh(cmd), wait);
        None
    }

    /// Whether a write may go to the primary now. `Err` gives the command
    /// back when it was not held: then `reply` says why it fails.
    /// Only writes wait: a command that changes no data (CONFIG, CLIENT,
    /// REPLICAOF NO ONE itself) goes to the server as it is.
    pub(super) fn write_gate(
        &mut self,
        cmd: Command,
        kind: Kind,
    ) -> Result<Command, Option<Bytes>> {
        if kind != Kind::Write {
            return Ok(cmd);
        }
        match &self.shard.load().writes {
            Writes::Open => Ok(cmd),
            Writes::Conflict(text) => Err(Some(resp::error(text))),
            Writes::Waiting => {
                let wait = self.failover_wait();
                if self.park.expired || wait.is_zero() {
                    return Err(Some(resp::error(NO_PRIMARY)));
                }
                self.park.hold(Parked::Fresh(cmd), wait);
                Err(None)
            }
        }
    }

    /// A write refused by primary `not`: held for the new primary, or
    /// until the follower has looked and found no failover (then the
    /// client gets the refusal, as from Redis).
    pub(super) fn park_refused(
        &mut self,
        seq: u64,
        cmd: Command,
        kind: Kind,
        reply: Bytes,
        not: usize,
    ) {
        let f = &self.shard.failover;
        f.note_refused();
        let checks = f.checks();
        let wait = self.failover_wait();
        self.park.hold(
            Parked::Refused {
                seq,
                cmd,
                kind,
                reply,
                not,
                checks,
            },
            wait,
        );
    }

    /// Releases the held commands once writes have somewhere to go, or the
    /// deadline passed (then held writes fail, held reads run).
    pub(super) fn release_parked(&mut self) {
        let Some(front) = self.park.queue.front() else {
            return;
        };
        let topo = self.shard.load_full();
        let ready = match front {
            _ if topo.writes == Writes::Waiting => false,
            Parked::Refused { not, checks, .. } => {
                topo.primary.id != *not || self.shard.failover.checks() >= checks + 2
            }
            Parked::Fresh(_) => true,
        };
        let expired = self.park.deadline.is_some_and(|d| Instant::now() >= d);
        if !ready && !expired {
            return;
        }
        let held = std::mem::take(&mut self.park.queue);
        self.park.deadline = None;
        self.park.expired = !ready;
        for p in held {
            if !self.park.is_empty() {
                // Held again (the primary moved on meanwhile): keep order.
                let wait = self.failover_wait();
                self.park.hold(p, wait);
                continue;
            }
            match p {
                Parked::Fresh(cmd) => self.dispatch(cmd),
                Parked::Refused {
                    seq,
                    cmd,
                    kind,
                    reply,
                    not,
                    ..
                } => {
                    let primary = self.shard.load().primary.clone();
                    if self.park.expired || primary.id == not || topo.writes != Writes::Open {
                        self.complete(seq, reply);
                    } else {
                        let pipe = self.pipe_for(&primary);
                        let slow = command::is_slow(cmd.name());
                        self.send_pipe(pipe, seq, cmd.into_raw(), kind, slow);
                    }
                }
            }
        }
        self.park.expired = false;
    }
}
