//! What the session hears back from its connections: replies fill slots
//! (or send a refused read elsewhere), failures retry or become error
//! replies, stream frames join the queue, a lost dedicated connection
//! takes its state with it.

use bytes::Bytes;

use super::Session;
use super::slots::Hook;
use crate::conn::event::Event;
use crate::metrics::ErrorKind;
use crate::proto::encode as resp;
use crate::proto::refusal::Refusal;

impl Session {
    pub(super) fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Reply { seq, data } if seq & super::cluster::SPLIT != 0 => {
                return self.on_split_event(seq, Some(data), None);
            }
            Event::Failed { seq, error } if seq & super::cluster::SPLIT != 0 => {
                return self.on_split_event(seq, None, Some(&error));
            }
            _ => {}
        }
        if let Event::Reply { seq, .. } | Event::Failed { seq, .. } = &ev
            && self.slots.get_mut(*seq).is_some_and(|s| !s.on_dedicated())
        {
            self.shared_waiting = self.shared_waiting.saturating_sub(1);
        }
        match ev {
            Event::Reply { seq, data } => {
                if self.env.cluster.is_some()
                    && (data.starts_with(b"-MOVED ") || data.starts_with(b"-ASK "))
                    && self.try_redirect(seq, &data)
                {
                    return;
                }
                if self.env.cluster.is_some()
                    && crate::route::cluster::redirect::is_retryable(&data).is_some()
                    && self.try_again(seq)
                {
                    return;
                }
                if let Some(refusal) = Refusal::of(&data)
                    && self.try_reroute(seq, refusal, &data)
                {
                    return;
                }
                self.complete(seq, data);
            }
            Event::Failed { seq, error } => {
                if self.try_retry(seq) {
                    self.env.metrics.error(ErrorKind::ReadRetried);
                    return;
                }
                self.env.metrics.error(ErrorKind::Upstream);
                self.complete(seq, resp::error(&format!("ERR nearby: {error}")));
            }
            Event::Passed { seq } => self.complete(seq, Bytes::new()),
            Event::Push { data } => {
                if self.tracking.is_some() {
                    // After every reply queued so far: a push never
                    // overtakes the reply of the read it is about.
                    let newest = self.slots.next_seq() - 1;
                    self.slots.stream(newest, data);
                }
            }
            Event::Stream {
                after,
                data,
                subscriptions,
            } => {
                if let Some(n) = subscriptions {
                    self.pin.subscribed = n > 0;
                }
                self.slots.stream(after, data);
            }
            Event::Closed { conn, .. } if self.ded.as_ref().is_none_or(|d| d.conn != conn) => {
                // A connection this session already let go of.
            }
            Event::Closed { error, .. } => {
                self.ded = None;
                if self.pin.on_lost(self.client.identity.is_some()) {
                    // The state the client built is gone with the
                    // connection; closing tells its library to rebuild it.
                    tracing::debug!(client = self.id, error = %error, "dedicated connection lost");
                    self.closing = true;
                }
            }
        }
    }

    /// Slot `seq` is answered with `reply`.
    pub(super) fn complete(&mut self, seq: u64, reply: Bytes) {
        // A write's keys leave the near-cache before its reply is written.
        let mut shard = None;
        if let Some(slot) = self.slots.get_mut(seq) {
            let written = std::mem::take(&mut slot.written);
            let tracked = std::mem::take(&mut slot.tracked);
            shard = slot.shard.take();
            if let Some(cache) = &self.env.fills.cache {
                super::near::drop_written(cache, written);
            }
            if !tracked.is_empty() {
                self.env.fills.trackers.settle(self.id, &tracked);
            }
        }
        let Some(done) = self.slots.complete(seq, reply) else {
            return;
        };
        if done.on_dedicated {
            self.pin.outstanding = self.pin.outstanding.saturating_sub(1);
        }
        match shard {
            // The shard the command went to keeps its bookkeeping.
            Some(sh) => {
                let current = std::mem::replace(&mut self.shard, sh);
                self.on_tracked(done.track);
                self.shard = current;
            }
            None => self.on_tracked(done.track),
        }
        if done.ok {
            self.apply_hook(done.hook, done.array);
        }
    }

    /// `array`: the reply was an array (for EXEC: the queued commands ran).
    fn apply_hook(&mut self, hook: Hook, array: bool) {
        match hook {
            Hook::None => {}
            Hook::Db(db) => {
                self.client.db = db;
                if let Some(d) = &mut self.ded {
                    d.db = db;
                }
            }
            Hook::Proto(p) => self.set_proto(p),
            Hook::Identity(creds, proto) => {
                self.client.identity = Some(creds);
                if let Some(p) = proto {
                    self.set_proto(p);
                }
            }
            Hook::Exec => {
                if let Some(db) = self.pin.multi_db.take()
                    && array
                {
                    self.apply_hook(Hook::Db(db), false);
                }
            }
        }
    }

    fn set_proto(&mut self, p: resp::Proto) {
        self.client.proto = p;
        if let Some(d) = &mut self.ded {
            d.proto = p;
        }
    }
}
