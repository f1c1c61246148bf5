//! Routing one command: to a shared pipe (reads to the nearest replica,
//! the rest to the primary), to the session's dedicated connection, or to
//! the sidecar itself.

use std::sync::Arc;

use bytes::Bytes;

use super::auth::{allowed_unauthenticated, auth_args, parse_hello};
use super::local::parse_select;
use super::retry::{Retry, Tried};
use super::slots::{Hook, Track};
use super::{Cur, Session};
use crate::config::SubscribeFrom;
use crate::conn::connect::Handshake;
use crate::conn::dedicated::{Confirm, DRequest, Dedicated, Expect};
use crate::conn::event::Request;
use crate::model::topology::{Role, Upstream};
use crate::proto::Command;
use crate::proto::encode::{self as resp, Proto};
use crate::route::cache::writes::{self, Written};
use crate::route::command::{self, Kind, Local, Pin, Route};
use crate::route::select::Fallback;

const ONE: Expect = Expect::One { blocking: false };

impl Session {
    pub(super) fn dispatch(&mut self, cmd: Command) {
        self.dispatch_one(cmd);
        // Taken by the command's slot; a command held (parked) notes it
        // again when it is dispatched for real.
        self.next_written = Written::Nothing;
    }

    fn dispatch_one(&mut self, cmd: Command) {
        if cmd.argc() == 0 {
            return;
        }
        // Behind commands held for a new primary: held too, in order.
        let Some(cmd) = self.park_behind(cmd) else {
            return;
        };
        let c = command::classify_full(self.commands_view.load(), &cmd);
        let route = c.route;
        let mut slot_cmd = Some(cmd);
        let cur = Cur {
            kind: c.kind,
            marks_write: self.ryw && c.may_write,
        };
        let authed = self.client.authed || allowed_unauthenticated(slot_cmd.as_ref().expect("set"));
        if !authed {
            self.push_done(cur, resp::error("NOAUTH Authentication required."));
            return;
        }
        if self.env.cluster.is_some() && self.cluster_route(cur, &mut slot_cmd, route) {
            return;
        }
        let mut cmd = slot_cmd.expect("not taken unless routed");
        if route == Route::Pin(Pin::ClientState)
            && !self.pinned()
            && cmd.name_eq("CLIENT")
            && self.tracking_command(cur, &cmd)
        {
            return;
        }
        // Emulated tracking: whether this command's keys are tracked (it
        // consumes CLIENT CACHING), and a NOLOOP writer's own keys.
        let mut tracked = false;
        if let Some(t) = &mut self.tracking
            && !cmd.name_eq("CLIENT")
        {
            tracked = t.take_tracked();
            if t.noloop
                && c.may_write
                && let Written::Keys(keys) = writes::written(&cmd)
            {
                self.env.fills.trackers.untrack(self.id, &keys);
            }
        }
        if self.env.fills.cache.is_some() && (c.may_write || route == Route::Pin(Pin::Discard)) {
            self.note_written(&cmd, route);
        }
        if self.pinned() {
            // A RESP3 client subscribed through a replica may run any
            // command meanwhile: those must not go to the replica's
            // connection (a write would be refused there); they take the
            // normal routes. RESP2 allows only pub/sub commands while
            // subscribed, and the replica answers the rest as Redis does.
            let pubsub_only = matches!(
                route,
                Route::Pin(Pin::Subscribe(_))
                    | Route::Local(
                        Local::Unsubscribe(_)
                            | Local::Quit
                            | Local::Reset
                            | Local::SetName
                            | Local::GetName
                            | Local::ClientReply
                    )
            );
            if !(self.subscribed_on_replica() && self.client.proto == Proto::Resp3 && !pubsub_only)
            {
                self.dispatch_pinned(cur, cmd, route);
                return;
            }
            if let Route::Pin(_) = route {
                self.push_done(cur, resp::error(&format!(
                    "ERR nearby: '{}' while subscribed through a replica is not supported (subscribe_from = \"nearest\"); unsubscribe first",
                    String::from_utf8_lossy(cmd.name())
                )));
                return;
            }
        }
        match route {
            Route::Read => {
                if self.env.fills.cache.is_some() || tracked {
                    let keys = tracked.then(|| super::near::read_keys(&cmd));
                    let Some(back) = self.near_read(cur, cmd, keys) else {
                        return;
                    };
                    cmd = back;
                }
                let up = self.pick_read(&[]);
                if up.role == Role::Primary
                    && !self.ryw
                    && self.shared_waiting == 0
                    && self.named_connection()
                {
                    // Bound for the primary anyway: on the named client's own
                    // connection, as Redis would see it (CLIENT LIST, SLOWLOG).
                    self.send_dedicated(cur, cmd, ONE, Hook::None);
                    return;
                }
                let seq = self.new_slot(cur, false, Hook::None);
                self.send_read(seq, cmd, up, Tried::default(), cur.kind);
            }
            // A named client's other commands run on its own connection,
            // which carries the name: SLOWLOG and CLIENT LIST show it as
            // Redis would. Its reads still go to the nearest replica.
            Route::Primary if self.named_connection() => {
                self.send_dedicated(cur, cmd, ONE, Hook::None)
            }
            // While a CLIENT PAUSE WRITE holds writes, a write waits on this
            // client's own connection, not at the head of a shared pipe
            // where everyone else's reads would queue behind it.
            Route::Primary if self.shared_waiting == 0 && self.writes_paused() => {
                self.send_dedicated(cur, cmd, ONE, Hook::None)
            }
            Route::Primary => self.send_to_primary(cur, cmd),
            Route::Control => {
                note_pause(&self.shard.load().primary, &cmd);
                // Never "slow": a KILL to a frozen server must still time out.
                self.send_primary_pipe(cur, cmd, 0, Proto::Resp2, false);
            }
            Route::Local(l) => self.local(cur, l, cmd),
            Route::Pin(Pin::Exec | Pin::Discard) => {
                // Without MULTI, Redis answers with an error and keeps no
                // state: the shared pipe is fine.
                self.send_to_primary(cur, cmd)
            }
            Route::Pin(p @ Pin::Subscribe(_))
                if self.env.config().routing.subscribe_from == SubscribeFrom::Nearest =>
            {
                // Subscribing on the nearest replica: PUBLISH on the primary
                // reaches it by replication (its reply then counts only the
                // primary's own subscribers).
                let target = self.pick_read(&[]);
                self.ensure_dedicated_to(target);
                self.dispatch_pinned(cur, cmd, Route::Pin(p));
            }
            Route::Pin(p) => {
                self.ensure_dedicated();
                self.dispatch_pinned(cur, cmd, Route::Pin(p));
            }
        }
    }

    /// Every command goes to the dedicated connection while it holds state.
    pub(super) fn pinned(&self) -> bool {
        self.ded.is_some() && self.pin.is_pinned(self.client.identity.is_some())
    }

    fn dispatch_pinned(&mut self, cur: Cur, cmd: Command, route: Route) {
        if route == Route::Read {
            self.env.metrics.fallback(Fallback::PinnedSession);
        }
        if self.pin.monitor {
            // Every frame on a monitoring connection is a stream frame.
            match route {
                Route::Local(Local::Quit) | Route::Local(Local::Reset) => {}
                _ => {
                    self.send_dedicated(cur, cmd, Expect::Stream, Hook::None);
                    return;
                }
            }
        }
        match route {
            Route::Local(
                l @ (Local::Quit
                | Local::Reset
                | Local::SetName
                | Local::GetName
                | Local::ClientReply
                | Local::Replicate),
            ) => self.local(cur, l, cmd),
            Route::Local(Local::Select) => match parse_select(&cmd, self.env.facts.databases()) {
                Err(e) => self.push_done(cur, e),
                Ok(db) if self.pin.multi => {
                    self.pin.multi_db = Some(db);
                    self.send_dedicated(cur, cmd, ONE, Hook::None);
                }
                Ok(db) => self.send_dedicated(cur, cmd, ONE, Hook::Db(db)),
            },
            Route::Local(Local::Hello) => {
                // On a dedicated connection HELLO goes to Redis itself, which
                // knows the connection's state (auth, subscriptions).
                match parse_hello(&cmd) {
                    Ok(args) => {
                        let hook = args.into_hook();
                        self.send_dedicated(cur, cmd, ONE, hook);
                    }
                    Err(e) => self.push_done(cur, e),
                }
            }
            Route::Local(Local::Auth) => {
                if self.env.config().security.requirepass.is_some() {
                    self.local(cur, Local::Auth, cmd);
                } else {
                    let hook = auth_args(&cmd).map_or(Hook::None, |c| Hook::Identity(c, None));
                    self.send_dedicated(cur, cmd, ONE, hook);
                }
            }
            Route::Local(Local::Unsubscribe(_)) | Route::Pin(Pin::Subscribe(_)) => {
                self.pin.sent(route);
                self.send_dedicated(cur, cmd, Expect::Stream, Hook::None);
            }
            Route::Pin(Pin::Exec) => {
                self.pin.sent(route);
                self.send_dedicated(cur, cmd, ONE, Hook::Exec);
            }
            Route::Pin(Pin::Monitor) => {
                self.pin.sent(route);
                self.send_dedicated(cur, cmd, Expect::Monitor, Hook::None);
            }
            // Inside MULTI a blocking command does not block: Redis runs it
            // as its non-blocking form at EXEC.
            Route::Pin(Pin::Blocking) => {
                let blocking = !self.pin.multi;
                self.send_dedicated(cur, cmd, Expect::One { blocking }, Hook::None);
            }
            Route::Local(Local::Unwatch)
            | Route::Pin(Pin::Multi | Pin::Discard | Pin::Watch | Pin::ClientState) => {
                self.pin.sent(route);
                self.send_dedicated(cur, cmd, ONE, Hook::None);
            }
            // Queued in MULTI, and a pub/sub reply shape in RESP2.
            Route::Read | Route::Primary | Route::Control => {
                if route == Route::Control {
                    note_pause(&self.shard.load().primary, &cmd);
                }
                self.send_dedicated(cur, cmd, ONE, Hook::None)
            }
        }
    }

    /// A new slot for the command `cur`, silent if CLIENT REPLY says so.
    pub(super) fn new_slot(&mut self, cur: Cur, on_dedicated: bool, hook: Hook) -> u64 {
        let silent = self.client.reply_mode.next_silent();
        if on_dedicated {
            self.pin.outstanding += 1;
        }
        let written = std::mem::take(&mut self.next_written);
        let track = if cur.marks_write {
            self.writes_in_flight += 1;
            Track::Write
        } else {
            Track::None
        };
        let seq = self.slots.push(silent, on_dedicated, hook, track);
        let shard = (self.ryw && self.env.cluster.is_some()).then(|| self.shard.clone());
        if (written != Written::Nothing || shard.is_some())
            && let Some(slot) = self.slots.get_mut(seq)
        {
            slot.written = written;
            slot.shard = shard;
        }
        seq
    }

    /// A reply the sidecar makes itself for the command `cur`.
    pub(super) fn push_done(&mut self, cur: Cur, reply: Bytes) {
        self.env.metrics.local(cur.kind);
        let seq = self.new_slot(cur, false, Hook::None);
        self.complete(seq, reply);
    }

    fn send_to_primary(&mut self, cur: Cur, cmd: Command) {
        let slow = command::is_slow(cmd.name());
        let (db, proto) = (self.client.db, self.client.proto);
        self.send_primary_pipe(cur, cmd, db, proto, slow);
    }

    /// On the primary's shared pipe for (db, proto).
    /// Held instead while a failover holds writes (`park`).
    fn send_primary_pipe(&mut self, cur: Cur, cmd: Command, db: u32, proto: Proto, slow: bool) {
        let cmd = match self.write_gate(cmd, cur.kind) {
            Ok(cmd) => cmd,
            Err(None) => return,
            Err(Some(reply)) => return self.push_done(cur, reply),
        };
        let up = self.shard.load().primary.clone();
        let pipe = self.pipe_at(&up, db, proto);
        let seq = self.new_slot(cur, false, Hook::None);
        let data = cmd.raw().clone();
        let shard = self.cluster_shard();
        if let Some(slot) = self.slots.get_mut(seq) {
            slot.retry = Some(Retry::write(cmd, up, cur.kind, shard));
        }
        self.send_pipe(pipe, seq, data, cur.kind, slow);
    }

    /// Sends on this session's cached pipe number `pipe` (see `pipe_for`).
    pub(super) fn send_pipe(&mut self, pipe: usize, seq: u64, data: Bytes, kind: Kind, slow: bool) {
        let req = Request {
            seq,
            data,
            reply_to: self.events_tx.clone(),
            kind,
            slow,
        };
        if self.pipes[pipe].3.send(req).is_err() {
            self.complete(seq, resp::error("ERR nearby: shutting down"));
        } else {
            self.shared_waiting += 1;
        }
    }

    /// The index, in this session's cache, of the shared pipe to `up` for
    /// the session's db and protocol (looked up in the upstream once).
    pub(super) fn pipe_for(&mut self, up: &Arc<Upstream>) -> usize {
        self.pipe_at(up, self.client.db, self.client.proto)
    }

    /// The index of the cached pipe to `up` for (db, proto).
    fn pipe_at(&mut self, up: &Arc<Upstream>, db: u32, proto: Proto) -> usize {
        if let Some(i) = self
            .pipes
            .iter()
            .position(|(id, d, p, _)| *id == up.id && *d == db && *p == proto)
        {
            // Nothing of ours in flight: free to leave a held pipe (our own
            // requests stay in order on the one they are queued on).
            if self.shared_waiting == 0 && self.pipes[i].3.busy() {
                let now = tokio::time::Instant::now();
                let limit = hold_limit(up);
                if self.pipes[i].3.held(now, limit) {
                    self.pipes[i].3 = self.env.pipes.unheld(up, db, proto, now, limit);
                }
            }
            return i;
        }
        let p = self
            .env
            .pipes
            .unheld(up, db, proto, tokio::time::Instant::now(), hold_limit(up));
        self.pipes.push((up.id, db, proto, p));
        self.pipes.len() - 1
    }

    /// The dedicated connection, to the primary: everything stateful but
    /// subscriptions (see `subscribe_from`) lives there.
    pub(super) fn ensure_dedicated(&mut self) {
        let primary = self.shard.load().primary.clone();
        self.ensure_dedicated_to(primary);
    }

    fn ensure_dedicated_to(&mut self, target: Arc<Upstream>) {
        if let Some(d) = &self.ded
            && d.db == self.client.db
            && d.proto == self.client.proto
            && d.name == self.client.name
            && (d.upstream.id == target.id || self.pinned())
        {
            return;
        }
        let hs = Handshake {
            auth: self.client.identity.clone(),
            db: self.client.db,
            proto: Some(self.client.proto),
            name: self.client.name.clone(),
        };
        self.ded = Some(Dedicated::open(
            self.env.pipes.connector().clone(),
            target,
            hs,
            self.env.pipes.timeouts(),
            self.events_tx.clone(),
        ));
    }

    fn writes_paused(&self) -> bool {
        self.shard.load().primary.writes_paused()
    }

    /// The client has a name and its dedicated primary connection carries
    /// it.
    fn named_connection(&self) -> bool {
        self.client.name.is_some()
            && self
                .ded
                .as_ref()
                .is_some_and(|d| d.upstream.role == Role::Primary && d.name == self.client.name)
    }

    /// CLIENT SETNAME: the sidecar keeps the name, and so does Redis, on the
    /// client's dedicated connection (opened now if there is none), so that
    /// another client's CLIENT LIST, and SLOWLOG, see it.
    pub(super) fn set_name(&mut self, cur: Cur, cmd: Command, name: Option<Bytes>) {
        self.client.name = name.clone();
        match &mut self.ded {
            Some(d) => {
                d.name = name;
                self.send_dedicated(cur, cmd, ONE, Hook::None);
            }
            // Answered by Redis once the connection (opened with the name)
            // is up, so that the name is listed by the time the client
            // hears OK.
            None if name.is_some() => self.send_dedicated(cur, cmd, ONE, Hook::None),
            None => self.push_done(cur, resp::ok()),
        }
    }

    /// Subscribed through a replica (`subscribe_from = nearest`).
    fn subscribed_on_replica(&self) -> bool {
        self.ded
            .as_ref()
            .is_some_and(|d| d.upstream.role == Role::Replica)
    }

    pub(super) fn send_dedicated(&mut self, cur: Cur, cmd: Command, expect: Expect, hook: Hook) {
        self.ensure_dedicated();
        let seq = self.new_slot(cur, true, hook);
        let confirm = match expect {
            Expect::Stream => Confirm::of(cmd.name(), cmd.argc().saturating_sub(1)),
            _ => None,
        };
        let req = DRequest {
            seq,
            confirm,
            slow: command::is_slow(cmd.name()),
            data: cmd.into_raw(),
            expect,
            kind: cur.kind,
        };
        let sent = self.ded.as_ref().is_some_and(|d| d.send(req));
        if !sent {
            self.complete(
                seq,
                resp::error("ERR nearby: the dedicated upstream connection is closed"),
            );
        }
    }
}

/// How long a pipe's head may wait before the pipe counts as held: well
/// past the upstream's usual answer (its cost), so only a command Redis
/// holds (not distance or an ordinary burst) sends sessions elsewhere.
fn hold_limit(up: &Upstream) -> std::time::Duration {
    let cost = up.cost().unwrap_or(0.0).clamp(0.0, 10.0);
    std::time::Duration::from_millis(20) + std::time::Duration::from_secs_f64(cost * 2.0)
}

/// CLIENT PAUSE <ms> WRITE and CLIENT UNPAUSE, as they pass: where writes
/// must not wait at the head of a shared pipe (see `Session::dispatch`).
fn note_pause(primary: &Upstream, cmd: &Command) {
    if !cmd.name_eq("CLIENT") {
        return;
    }
    if cmd.arg_eq(1, "UNPAUSE") {
        primary.pause_writes(None);
    } else if cmd.arg_eq(1, "PAUSE")
        && cmd.argc() == 4
        && cmd.arg_eq(3, "WRITE")
        && let Some(ms) = cmd.arg(2).and_then(crate::proto::parse_ll)
        && ms >= 0
    {
        let until = tokio::time::Instant::now() + std::time::Duration::from_millis(ms as u64);
        primary.pause_writes(Some(until));
    }
}
