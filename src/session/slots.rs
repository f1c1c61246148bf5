//! The ordered reply queue: every request gets a sequence number and a slot;
//! replies fill slots in any order; the front is written as soon as it is
//! complete, so the client sees replies in request order.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::retry::Retry;
use super::state::Creds;
use crate::proto::encode::Proto;
use crate::route::cache::writes::Written;

/// Something to do when a reply arrives, if it is not an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Hook {
    None,
    Db(u32),
    Proto(Proto),
    /// A pass-through AUTH (or HELLO AUTH) succeeded: the session now runs
    /// as this user, on its dedicated connection only.
    Identity(Creds, Option<Proto>),
    /// EXEC: apply a SELECT queued inside the transaction.
    Exec,
}

/// Read-your-writes bookkeeping when a slot completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Track {
    None,
    /// A command that may write: acknowledged when its reply arrives.
    Write,
    /// A read served by the primary: later replica reads must be as fresh.
    PrimaryRead,
    /// A read served by a replica at this offset.
    ReplicaRead(u64),
}

enum SlotState {
    Waiting,
    Done(Bytes),
}

pub(super) struct Slot {
    seq: u64,
    state: SlotState,
    /// Stream frames that go right after this slot's reply.
    trailer: Vec<Bytes>,
    /// CLIENT REPLY OFF/SKIP: awaited for ordering, never written.
    silent: bool,
    on_dedicated: bool,
    hook: Hook,
    /// For reads: the command and the upstreams tried, so a read that got
    /// no reply (or a replica's refusal) can go elsewhere.
    pub retry: Option<Retry>,
    pub track: Track,
    /// Near-cache: what this write drops when its reply arrives.
    pub written: Written,
    /// Emulated tracking: the keys of this tracked read, settled when its
    /// reply arrives.
    pub tracked: Vec<bytes::Bytes>,
    /// Cluster with read-your-writes: the shard whose bookkeeping this
    /// slot's completion feeds.
    pub shard: Option<std::sync::Arc<crate::model::topology::TopologyCell>>,
}

/// What completing a slot entails.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Completed {
    pub hook: Hook,
    pub track: Track,
    pub on_dedicated: bool,
    /// Not an error reply: the hook applies.
    pub ok: bool,
    /// An array reply (an EXEC whose commands ran).
    pub array: bool,
}

pub(super) struct Slots {
    next_seq: u64,
    pending: VecDeque<Slot>,
    /// Stream frames (pub/sub, MONITOR) due before any pending reply.
    stray: BytesMut,
    /// Bytes of replies and stream frames held in `pending`, waiting for
    /// an earlier reply: they count toward the output limit.
    held_bytes: usize,
}

impl Slot {
    pub(super) fn on_dedicated(&self) -> bool {
        self.on_dedicated
    }
}

impl Slots {
    pub(super) fn new() -> Slots {
        Slots {
            next_seq: 1,
            pending: VecDeque::new(),
            stray: BytesMut::new(),
            held_bytes: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub(super) fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// The sequence number the next slot gets.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// A new slot at the back; returns its sequence number.
    pub(super) fn push(
        &mut self,
        silent: bool,
        on_dedicated: bool,
        hook: Hook,
        track: Track,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.push_back(Slot {
            seq,
            state: SlotState::Waiting,
            trailer: Vec::new(),
            silent,
            on_dedicated,
            hook,
            retry: None,
            track,
            written: Written::Nothing,
            tracked: Vec::new(),
            shard: None,
        });
        seq
    }

    pub(super) fn get_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let front = self.pending.front()?.seq;
        let idx = seq.checked_sub(front)? as usize;
        self.pending.get_mut(idx)
    }

    /// Fills slot `seq` with its reply; `None` if there is no such slot
    /// waiting (already answered, or written and gone).
    pub(super) fn complete(&mut self, seq: u64, reply: Bytes) -> Option<Completed> {
        let slot = self.get_mut(seq)?;
        if !matches!(slot.state, SlotState::Waiting) {
            return None;
        }
        let done = Completed {
            hook: std::mem::replace(&mut slot.hook, Hook::None),
            track: std::mem::replace(&mut slot.track, Track::None),
            on_dedicated: slot.on_dedicated,
            ok: !reply.starts_with(b"-"),
            array: reply.starts_with(b"*"),
        };
        let len = reply.len();
        slot.state = SlotState::Done(reply);
        self.held_bytes += len;
        Some(done)
    }

    /// A stream frame due right after the reply to `after`.
    pub(super) fn stream(&mut self, after: u64, data: Bytes) {
        let len = data.len();
        match self.get_mut(after) {
            Some(slot) => {
                slot.trailer.push(data);
                self.held_bytes += len;
            }
            None => {
                // Everything before it is written (its slot is gone), and
                // nothing after it has been answered.
                if self.pending.front().is_none_or(|f| f.seq > after) {
                    self.stray.extend_from_slice(&data);
                }
            }
        }
    }

    /// The first slot still waiting on the dedicated connection.
    pub(super) fn first_waiting_dedicated(&self) -> Option<u64> {
        self.pending
            .iter()
            .find(|s| s.on_dedicated && matches!(s.state, SlotState::Waiting))
            .map(|s| s.seq)
    }

    /// Moves everything that may be written now to `out`: stray stream
    /// frames, then the complete slots at the front, each with its trailer.
    pub(super) fn flush(&mut self, out: &mut BytesMut) {
        if !self.stray.is_empty() {
            out.extend_from_slice(&self.stray);
            self.stray.clear();
        }
        while let Some(front) = self.pending.front() {
            if matches!(front.state, SlotState::Waiting) {
                break;
            }
            let slot = self.pending.pop_front().expect("front exists");
            if let SlotState::Done(data) = slot.state {
                self.held_bytes -= data.len();
                if !slot.silent {
                    out.extend_from_slice(&data);
                }
            }
            for t in slot.trailer {
                self.held_bytes -= t.len();
                out.extend_from_slice(&t);
            }
        }
    }
}

#[cfg(test)]
#[path = "slots_tests.rs"]
mod tests;
