//! One client connection: frame requests, route each, and write replies back
//! strictly in request order, whichever upstream answers first.
//!
//! Every request gets a sequence number and a slot in `pending`; replies
//! arrive as events on the session's channel and fill their slot; the front
//! of `pending` is written as soon as it is complete. Connection state that
//! Redis would keep per client (db, protocol, name, auth, CLIENT REPLY) is
//! kept here; state that only an upstream connection can hold (MULTI, WATCH,
//! subscriptions, blocking calls, MONITOR, tracking) pins the session to a
//! dedicated connection for as long as it lives.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

use crate::config::{Config, Consistency, ConsistencyScope, ReadFrom, SubscribeFrom};
use crate::conn::connect::Handshake;
use crate::conn::dedicated::{DRequest, Dedicated, Expect};
use crate::conn::event::{Event, EventTx, Request};
use crate::conn::pipe::PipeHandle;
use crate::conn::pool::PipePool;
use crate::metrics::ErrorKind;
use crate::metrics::Global;
use crate::model::SharedConfig;
use crate::model::clients::Clients;
use crate::model::facts::ServerFacts;
use crate::model::replication::Replication;
use crate::model::topology::TopologyCell;
use crate::model::topology::{Role, Upstream};
use crate::proto::encode::{self as resp, HelloInfo, Proto};
use crate::proto::refusal::Refusal;
use crate::proto::{Command, RequestFramer, RequestLimits};
use crate::route::command::{self, Kind, Local, Pin, Route};
use crate::route::consistency::{Need, Tracker, fresh_enough};
use crate::route::select::Fallback;

/// What a session reads and shares, handed out by `app`.
pub struct SessionEnv {
    pub config: SharedConfig,
    pub topology: Arc<TopologyCell>,
    pub facts: Arc<ServerFacts>,
    pub replication: Arc<Replication>,
    pub pipes: Arc<PipePool>,
    pub clients: Arc<Clients>,
    pub metrics: Arc<Global>,
    /// Turns true once on shutdown: stop reading, finish what is in flight.
    pub shutdown: watch::Receiver<bool>,
}

impl SessionEnv {
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }
}

/// Serves one client until it disconnects, QUITs, or breaks the protocol.
pub async fn serve(env: Arc<SessionEnv>, stream: TcpStream) {
    let max = env.config().limits.max_clients;
    if !env.clients.try_open(max) {
        env.metrics.error(ErrorKind::MaxClients);
        let mut stream = stream;
        let _ = stream
            .write_all(&resp::error("ERR max number of clients reached"))
            .await;
        return;
    }
    env.metrics.clients.increment(1.0);
    let mut session = Session::new(env.clone());
    session.run(stream).await;
    env.clients.close();
    env.metrics.clients.decrement(1.0);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ReplyMode {
    On,
    Off,
    Skip,
}

/// Something to do when a reply arrives, if it is not an error.
#[derive(Clone, Debug)]
enum Hook {
    None,
    Db(u32),
    Proto(Proto),
    /// A pass-through AUTH (or HELLO AUTH) succeeded: the session now runs
    /// as this user, on its dedicated connection only.
    Identity(Option<String>, String, Option<Proto>),
    /// EXEC: apply a SELECT queued inside the transaction.
    Exec,
}

enum SlotState {
    Waiting,
    Done(Bytes),
}

struct Slot {
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
    retry: Option<Retry>,
    /// Read-your-writes bookkeeping when this slot completes.
    track: Track,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Track {
    None,
    /// A command that may write: acknowledged when its reply arrives.
    Write,
    /// A read served by the primary: later replica reads must be as fresh.
    PrimaryRead,
    /// A read served by a replica at this offset.
    ReplicaRead(u64),
}

struct Retry {
    cmd: Command,
    tried: Tried,
    upstream: Arc<Upstream>,
}

/// Upstream ids a read was sent to (at most three: the first choice, one
/// retry, the primary after a refusal), inline: no allocation per read.
#[derive(Clone, Copy, Default)]
struct Tried {
    ids: [usize; 3],
    len: usize,
}

impl Tried {
    fn one(id: usize) -> Tried {
        Tried {
            ids: [id, 0, 0],
            len: 1,
        }
    }

    fn push(&mut self, id: usize) {
        if self.len < self.ids.len() {
            self.ids[self.len] = id;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[usize] {
        &self.ids[..self.len]
    }
}

struct Session {
    env: Arc<SessionEnv>,
    id: u64,
    proto: Proto,
    db: u32,
    name: Option<Bytes>,
    authed: bool,
    identity: Option<(Option<String>, String)>,
    reply_mode: ReplyMode,
    next_seq: u64,
    pending: VecDeque<Slot>,
    events_tx: EventTx,
    events_rx: mpsc::UnboundedReceiver<Event>,
    pipes: Vec<(usize, u32, Proto, PipeHandle)>,
    ded: Option<Dedicated>,
    ded_outstanding: usize,
    in_multi: bool,
    watching: bool,
    subscribed: bool,
    monitor: bool,
    client_state: bool,
    /// A SELECT queued inside MULTI, applied when EXEC succeeds.
    multi_db: Option<u32>,
    closing: bool,
    /// Stream frames (pub/sub, MONITOR) due before any pending reply.
    stray: BytesMut,
    /// Bytes of replies and stream frames held in `pending`, waiting for
    /// an earlier reply: they count toward the output limit.
    held_bytes: usize,
    /// The kind of the command being dispatched (metrics label).
    cur_kind: Kind,
    /// Read-your-writes is on, and the command being dispatched may write.
    ryw: bool,
    cur_marks_write: bool,
    writes_in_flight: usize,
    tracker: Tracker,
}

impl Session {
    fn new(env: Arc<SessionEnv>) -> Session {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let id = env.clients.next_id();
        let db = env.config().primary.url.db;
        let authed = env.config().security.requirepass.is_none();
        let ryw = env.config().routing.consistency == Consistency::ReadYourWrites;
        Session {
            env,
            id,
            proto: Proto::Resp2,
            db,
            name: None,
            authed,
            identity: None,
            reply_mode: ReplyMode::On,
            next_seq: 1,
            pending: VecDeque::new(),
            events_tx,
            events_rx,
            pipes: Vec::new(),
            ded: None,
            ded_outstanding: 0,
            in_multi: false,
            watching: false,
            subscribed: false,
            monitor: false,
            client_state: false,
            multi_db: None,
            closing: false,
            stray: BytesMut::new(),
            held_bytes: 0,
            cur_kind: Kind::Other,
            ryw,
            cur_marks_write: false,
            writes_in_flight: 0,
            tracker: Tracker::new(),
        }
    }

    async fn run(&mut self, stream: TcpStream) {
        let (mut rd, mut wr) = stream.into_split();
        let mut framer = {
            let limits = &self.env.config().limits;
            RequestFramer::new(RequestLimits {
                max_bulk_len: limits.proto_max_bulk_len,
                ..RequestLimits::default()
            })
        };
        let mut shutdown = self.env.shutdown.clone();
        if *shutdown.borrow() {
            return;
        }
        let mut inbuf = BytesMut::with_capacity(16 * 1024);
        // Replies ready for the client: written as the socket takes them,
        // while requests and replies keep flowing (a client that does not
        // read must not stall its own upstream replies).
        let mut out = BytesMut::with_capacity(16 * 1024);
        let mut eof = false;
        let mut last_read = Instant::now();
        loop {
            let (max_inflight, max_output, idle) = {
                let c = self.env.config();
                (
                    c.limits.max_inflight.max(1),
                    c.limits.max_output_buffer,
                    c.limits.client_idle_timeout_s,
                )
            };
            // Past the output limit, stop reading requests (Redis's
            // client-output-buffer-limit, pausing instead of disconnecting).
            let room =
                self.pending.len() < max_inflight && out.len() + self.held_bytes < max_output;
            let can_read = !eof && !self.closing && room;
            if can_read && inbuf.capacity() - inbuf.len() < 4096 {
                inbuf.reserve(16 * 1024);
            }
            let idle_deadline =
                (idle > 0 && self.idle_applies()).then(|| last_read + Duration::from_secs(idle));
            tokio::select! {
                r = rd.read_buf(&mut inbuf), if can_read => match r {
                    Ok(0) | Err(_) => {
                        // Half-closed or reset: answer what was asked, then go.
                        eof = true;
                    }
                    Ok(_) => {
                        last_read = Instant::now();
                        framer.set_unauthenticated(!self.authed);
                        self.take_commands(&mut framer, &mut inbuf, max_inflight, max_output, out.len());
                    }
                },
                ev = self.events_rx.recv() => {
                    if let Some(ev) = ev {
                        self.on_event(ev);
                    }
                    while let Ok(ev) = self.events_rx.try_recv() {
                        self.on_event(ev);
                    }
                }
                w = wr.write(&out), if !out.is_empty() => match w {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = out.split_to(n);
                        if out.is_empty() && out.capacity() > 1024 * 1024 {
                            out = BytesMut::with_capacity(16 * 1024);
                        }
                    }
                },
                _ = shutdown.changed(), if !self.closing => {
                    // Draining: no new requests; finish the ones in flight.
                    self.closing = true;
                }
                _ = crate::conn::event::sleep_until_opt(idle_deadline) => {
                    tracing::debug!(client = self.id, "idle timeout");
                    break;
                }
            }
            // Commands left in the buffer when a limit stopped framing:
            // take them once there is room.
            if !self.closing
                && !inbuf.is_empty()
                && self.pending.len() < max_inflight
                && out.len() + self.held_bytes < max_output
            {
                framer.set_unauthenticated(!self.authed);
                self.take_commands(&mut framer, &mut inbuf, max_inflight, max_output, out.len());
            }
            self.flush_ready(&mut out);
            if (self.closing || eof) && self.pending.is_empty() {
                // Write what is left, then close.
                if !out.is_empty() {
                    let _ = wr.write_all(&out).await;
                }
                break;
            }
        }
        let _ = wr.shutdown().await;
    }

    /// Redis does not time out subscribers, monitors or blocked clients.
    fn idle_applies(&self) -> bool {
        !(self.subscribed || self.monitor || self.ded_outstanding > 0)
    }

    fn take_commands(
        &mut self,
        framer: &mut RequestFramer,
        inbuf: &mut BytesMut,
        max_inflight: usize,
        max_output: usize,
        out_len: usize,
    ) {
        let mut n = 0;
        while !self.closing
            && self.pending.len() < max_inflight
            && out_len + self.held_bytes < max_output
        {
            match framer.next(inbuf) {
                Ok(Some(cmd)) => {
                    n += 1;
                    self.dispatch(cmd)
                }
                Ok(None) => break,
                Err(e) => {
                    // Not a command: answered, not counted as a request.
                    self.env.metrics.error(ErrorKind::Protocol);
                    let seq = self.new_slot(false, Hook::None);
                    self.complete(seq, resp::error(&format!("ERR {e}")));
                    self.closing = true;
                }
            }
        }
        if n > 0 {
            self.env.metrics.commands(n);
        }
    }

    // === slots ===

    fn new_slot(&mut self, on_dedicated: bool, hook: Hook) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let silent = match self.reply_mode {
            ReplyMode::On => false,
            ReplyMode::Off => true,
            ReplyMode::Skip => {
                self.reply_mode = ReplyMode::On;
                true
            }
        };
        if on_dedicated {
            self.ded_outstanding += 1;
        }
        self.pending.push_back(Slot {
            seq,
            state: SlotState::Waiting,
            trailer: Vec::new(),
            silent,
            on_dedicated,
            hook,
            retry: None,
            track: if self.cur_marks_write {
                self.writes_in_flight += 1;
                Track::Write
            } else {
                Track::None
            },
        });
        seq
    }

    /// A reply the sidecar makes itself for the current command.
    fn push_done(&mut self, reply: Bytes) {
        self.env.metrics.local(self.cur_kind);
        let seq = self.new_slot(false, Hook::None);
        self.complete(seq, reply);
    }

    fn slot_mut(&mut self, seq: u64) -> Option<&mut Slot> {
        let front = self.pending.front()?.seq;
        let idx = seq.checked_sub(front)? as usize;
        self.pending.get_mut(idx)
    }

    fn complete(&mut self, seq: u64, reply: Bytes) {
        let Some(slot) = self.slot_mut(seq) else {
            return;
        };
        if !matches!(slot.state, SlotState::Waiting) {
            return;
        }
        let ok = !reply.starts_with(b"-");
        let hook = std::mem::replace(&mut slot.hook, Hook::None);
        let on_ded = slot.on_dedicated;
        let track = std::mem::replace(&mut slot.track, Track::None);
        let len = reply.len();
        slot.state = SlotState::Done(reply);
        if on_ded {
            self.ded_outstanding -= 1;
        }
        self.held_bytes += len;
        // Even a failed write may have written (a script, a MULTI): every
        // completion counts.
        match track {
            Track::None => {}
            Track::Write => {
                self.writes_in_flight -= 1;
                self.with_tracker(|t| t.acknowledged(Instant::now()));
            }
            Track::PrimaryRead => self.with_tracker(|t| t.acknowledged(Instant::now())),
            Track::ReplicaRead(o) => self.with_tracker(|t| t.served_by_replica(o)),
        }
        if ok {
            self.apply_hook(hook, seq);
        }
    }

    fn apply_hook(&mut self, hook: Hook, seq: u64) {
        match hook {
            Hook::None => {}
            Hook::Db(db) => {
                self.db = db;
                if let Some(d) = &mut self.ded {
                    d.db = db;
                }
            }
            Hook::Proto(p) => {
                self.proto = p;
                if let Some(d) = &mut self.ded {
                    d.proto = p;
                }
            }
            Hook::Identity(user, pass, proto) => {
                self.identity = Some((user, pass));
                if let Some(p) = proto {
                    self.proto = p;
                    if let Some(d) = &mut self.ded {
                        d.proto = p;
                    }
                }
            }
            Hook::Exec => {
                // EXEC answered with an array: the queued commands ran.
                let ran = self
                    .slot_mut(seq)
                    .is_some_and(|s| matches!(&s.state, SlotState::Done(b) if b.starts_with(b"*")));
                if let Some(db) = self.multi_db.take()
                    && ran
                {
                    self.apply_hook(Hook::Db(db), seq);
                }
            }
        }
    }

    fn flush_ready(&mut self, out: &mut BytesMut) {
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

    // === events ===

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Reply { seq, data } => {
                if let Some(refusal) = Refusal::of(&data)
                    && self.try_reroute(seq, refusal)
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
            Event::Stream {
                after,
                data,
                subscriptions,
            } => {
                if let Some(n) = subscriptions {
                    self.subscribed = n > 0;
                }
                let len = data.len();
                match self.slot_mut(after) {
                    Some(slot) => {
                        slot.trailer.push(data);
                        self.held_bytes += len;
                    }
                    None => {
                        // Everything before it is written (its slot is gone),
                        // and nothing after it has been answered.
                        if self.pending.front().is_none_or(|f| f.seq > after) {
                            self.stray.extend_from_slice(&data);
                        }
                    }
                }
            }
            Event::Closed { conn, .. } if self.ded.as_ref().is_none_or(|d| d.conn != conn) => {
                // A connection this session already let go of.
            }
            Event::Closed { error, .. } => {
                let stateful = self.in_multi
                    || self.watching
                    || self.subscribed
                    || self.monitor
                    || self.client_state
                    || self.identity.is_some();
                self.ded = None;
                self.ded_outstanding = 0;
                if stateful {
                    // The state the client built is gone with the
                    // connection; closing tells its library to rebuild it.
                    tracing::debug!(client = self.id, error = %error, "dedicated connection lost");
                    self.in_multi = false;
                    self.watching = false;
                    self.subscribed = false;
                    self.monitor = false;
                    self.client_state = false;
                    self.closing = true;
                }
            }
        }
    }

    /// A replica refused a read it cannot serve: READONLY (the command is a
    /// write after all: learn it), NOSCRIPT (scripts are not replicated),
    /// LOADING, MASTERDOWN. The primary would have answered: ask it.
    fn try_reroute(&mut self, seq: u64, refusal: Refusal) -> bool {
        let Some(slot) = self.slot_mut(seq) else {
            return false;
        };
        let Some(retry) = slot.retry.take() else {
            return false;
        };
        if retry.upstream.role != Role::Replica {
            return false;
        }
        if refusal == Refusal::ReadOnly {
            let table = self.env.facts.commands();
            let learned = table.with_write(retry.cmd.name(), retry.cmd.arg(1));
            self.env.facts.commands.store(Arc::new(learned));
            tracing::info!(command = %String::from_utf8_lossy(retry.cmd.name()), "replica refused a write: routing this command to the primary from now on");
        }
        let primary = self.env.topology.load().primary.clone();
        self.resend(seq, retry.cmd, primary, retry.tried);
        true
    }

    /// A read that got no reply at all may go to another candidate, once.
    fn try_retry(&mut self, seq: u64) -> bool {
        let Some(slot) = self.slot_mut(seq) else {
            return false;
        };
        let Some(retry) = slot.retry.take() else {
            return false;
        };
        if retry.tried.len >= 2 {
            return false;
        }
        let next = self.pick_read(retry.tried.as_slice());
        if retry.tried.as_slice().contains(&next.id) {
            return false;
        }
        self.resend(seq, retry.cmd, next, retry.tried);
        true
    }

    /// Where this session's next read goes. `tried` lists upstreams that
    /// already failed the request.
    fn pick_read(&mut self, tried: &[usize]) -> Arc<Upstream> {
        let topo = self.env.topology.load();
        let config = self.env.config();
        let window = Duration::from_millis(config.routing.latency_window_ms);
        if config.routing.read_from == ReadFrom::Primary || topo.replicas.is_empty() {
            // No replica can take it: skip the freshness bookkeeping.
            let (up, fallback) = topo.read_target(config.routing.read_from, window, 0, |_| false);
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
            self.env.replication.demand_offsets();
        }
        let (up, fallback) = topo.read_target(
            config.routing.read_from,
            window,
            self.next_seq as usize,
            |u| tried.contains(&u.id) || !fresh_enough(need, u.repl_offset()),
        );
        if let Some(f) = fallback {
            self.env.metrics.fallback(f);
        }
        up.clone()
    }

    /// How fresh a replica must be for this session's next read.
    fn read_need(&mut self) -> Need {
        if !self.ryw {
            return Need::Any;
        }
        if self.writes_in_flight > 0 {
            // A pipelined write not yet acknowledged: only the primary,
            // which runs it first, is sure to show it.
            return Need::Primary;
        }
        let env = self.env.clone();
        let offsets = env.replication.offsets();
        self.with_tracker(|t| t.need(&offsets))
    }

    fn with_tracker<R>(&mut self, f: impl FnOnce(&mut Tracker) -> R) -> R {
        match self.env.config().routing.consistency_scope {
            ConsistencyScope::Connection => f(&mut self.tracker),
            ConsistencyScope::Sidecar => f(&mut self.env.replication.tracker()),
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

    fn resend(&mut self, seq: u64, cmd: Command, up: Arc<Upstream>, mut tried: Tried) {
        tried.push(up.id);
        let pipe = self.pipe_for(&up);
        let data = cmd.raw().clone();
        let track = self.read_track(&up);
        if let Some(slot) = self.slot_mut(seq) {
            slot.track = track;
            slot.retry = Some(Retry {
                cmd,
                tried,
                upstream: up,
            });
        }
        self.cur_kind = Kind::Read;
        self.send_pipe(pipe, seq, data);
    }

    // === routing ===

    fn pinned(&self) -> bool {
        self.ded.is_some()
            && (self.in_multi
                || self.watching
                || self.subscribed
                || self.monitor
                || self.client_state
                || self.identity.is_some()
                || self.ded_outstanding > 0)
    }

    fn dispatch(&mut self, cmd: Command) {
        if cmd.argc() == 0 {
            return;
        }
        let c = command::classify_full(&self.env.facts.commands(), &cmd);
        let route = c.route;
        self.cur_kind = c.kind;
        self.cur_marks_write = self.ryw && c.may_write;
        if !self.authed && !self.allowed_unauthenticated(&cmd) {
            self.push_done(resp::error("NOAUTH Authentication required."));
            return;
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
                            | Local::Ping
                            | Local::Quit
                            | Local::Reset
                            | Local::SetName
                            | Local::GetName
                            | Local::ClientReply
                    )
            );
            if !(self.subscribed_on_replica() && self.proto == Proto::Resp3 && !pubsub_only) {
                self.dispatch_pinned(cmd, route);
                return;
            }
            if let Route::Pin(_) = route {
                self.push_done(resp::error(&format!(
                    "ERR nearby: '{}' while subscribed through a replica is not supported (subscribe_from = \"nearest\"); unsubscribe first",
                    String::from_utf8_lossy(cmd.name())
                )));
                return;
            }
        }
        match route {
            Route::Read => {
                let up = self.pick_read(&[]);
                let pipe = self.pipe_for(&up);
                let seq = self.new_slot(false, Hook::None);
                let data = cmd.raw().clone();
                let track = self.read_track(&up);
                if let Some(slot) = self.slot_mut(seq) {
                    slot.track = track;
                    slot.retry = Some(Retry {
                        cmd,
                        tried: Tried::one(up.id),
                        upstream: up,
                    });
                }
                self.send_pipe(pipe, seq, data);
            }
            Route::Primary => self.send_to_primary(cmd),
            Route::Local(l) => self.local(l, cmd),
            Route::Pin(Pin::Exec | Pin::Discard) => {
                // Without MULTI, Redis answers with an error and keeps no
                // state: the shared pipe is fine.
                self.send_to_primary(cmd)
            }
            Route::Pin(p @ Pin::Subscribe(_))
                if self.env.config().routing.subscribe_from == SubscribeFrom::Nearest =>
            {
                // Subscribing on the nearest replica: PUBLISH on the primary
                // reaches it by replication (its reply then counts only the
                // primary's own subscribers).
                let target = self.pick_read(&[]);
                self.ensure_dedicated_to(target);
                self.dispatch_pinned(cmd, Route::Pin(p));
            }
            Route::Pin(p) => {
                self.ensure_dedicated();
                self.dispatch_pinned(cmd, Route::Pin(p));
            }
        }
    }

    fn send_to_primary(&mut self, cmd: Command) {
        let up = self.env.topology.load().primary.clone();
        let pipe = self.pipe_for(&up);
        let seq = self.new_slot(false, Hook::None);
        self.send_pipe(pipe, seq, cmd.into_raw());
    }

    /// Sends on this session's cached pipe number `pipe` (see `pipe_for`).
    fn send_pipe(&mut self, pipe: usize, seq: u64, data: Bytes) {
        let req = Request {
            seq,
            data,
            reply_to: self.events_tx.clone(),
            kind: self.cur_kind,
        };
        if self.pipes[pipe].3.send(req).is_err() {
            self.complete(seq, resp::error("ERR nearby: shutting down"));
        }
    }

    /// The index, in this session's cache, of the shared pipe to `up` for
    /// the session's db and protocol (looked up in the upstream once).
    fn pipe_for(&mut self, up: &Arc<Upstream>) -> usize {
        if let Some(i) = self
            .pipes
            .iter()
            .position(|(id, db, proto, _)| *id == up.id && *db == self.db && *proto == self.proto)
        {
            return i;
        }
        let p = self.env.pipes.get(up, self.db, self.proto);
        self.pipes.push((up.id, self.db, self.proto, p));
        self.pipes.len() - 1
    }

    /// The dedicated connection, to the primary: everything stateful but
    /// subscriptions (see `subscribe_from`) lives there.
    fn ensure_dedicated(&mut self) {
        let primary = self.env.topology.load().primary.clone();
        self.ensure_dedicated_to(primary);
    }

    fn ensure_dedicated_to(&mut self, target: Arc<Upstream>) {
        if let Some(d) = &self.ded
            && d.db == self.db
            && d.proto == self.proto
            && (d.upstream.id == target.id || self.pinned())
        {
            return;
        }
        let hs = Handshake {
            auth: self.identity.clone(),
            db: self.db,
            proto: Some(self.proto),
        };
        self.ded = Some(Dedicated::open(
            target,
            hs,
            self.env.pipes.timeouts(),
            self.events_tx.clone(),
        ));
    }

    /// Subscribed through a replica (`subscribe_from = nearest`).
    fn subscribed_on_replica(&self) -> bool {
        self.ded
            .as_ref()
            .is_some_and(|d| d.upstream.role == Role::Replica)
    }

    fn send_dedicated(&mut self, cmd: Command, expect: Expect, hook: Hook) {
        self.ensure_dedicated();
        let seq = self.new_slot(true, hook);
        let req = DRequest {
            seq,
            data: cmd.into_raw(),
            expect,
            kind: self.cur_kind,
        };
        let sent = self.ded.as_ref().is_some_and(|d| d.send(req));
        if !sent {
            self.complete(
                seq,
                resp::error("ERR nearby: the dedicated upstream connection is closed"),
            );
        }
    }

    fn dispatch_pinned(&mut self, cmd: Command, route: Route) {
        if route == Route::Read {
            self.env.metrics.fallback(Fallback::PinnedSession);
        }
        if self.monitor {
            // Every frame on a monitoring connection is a stream frame.
            match route {
                Route::Local(Local::Quit) | Route::Local(Local::Reset) => {}
                _ => {
                    self.send_dedicated(cmd, Expect::Stream, Hook::None);
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
                | Local::Reject(_)),
            ) => self.local(l, cmd),
            Route::Local(Local::Select) => match self.parse_db(&cmd) {
                Err(e) => self.push_done(e),
                Ok(db) => {
                    if self.in_multi {
                        self.multi_db = Some(db);
                        self.send_dedicated(cmd, Expect::One { blocking: false }, Hook::None);
                    } else {
                        self.send_dedicated(cmd, Expect::One { blocking: false }, Hook::Db(db));
                    }
                }
            },
            Route::Local(Local::Hello) => {
                // On a dedicated connection HELLO goes to Redis itself, which
                // knows the connection's state (auth, subscriptions).
                let hook = match self.hello_args(&cmd) {
                    Ok(h) => h,
                    Err(e) => {
                        self.push_done(e);
                        return;
                    }
                };
                self.send_dedicated(cmd, Expect::One { blocking: false }, hook);
            }
            Route::Local(Local::Auth) => {
                if self.env.config().security.requirepass.is_some() {
                    self.local(Local::Auth, cmd);
                } else {
                    let hook = auth_args(&cmd)
                        .map_or(Hook::None, |(user, pass)| Hook::Identity(user, pass, None));
                    self.send_dedicated(cmd, Expect::One { blocking: false }, hook);
                }
            }
            Route::Local(Local::Unwatch) => {
                self.watching = false;
                self.send_dedicated(cmd, Expect::One { blocking: false }, Hook::None);
            }
            Route::Local(Local::Unsubscribe(_)) => {
                self.send_dedicated(cmd, Expect::Stream, Hook::None);
            }
            Route::Pin(Pin::Subscribe(_)) => {
                self.subscribed = true;
                self.send_dedicated(cmd, Expect::Stream, Hook::None);
            }
            Route::Pin(Pin::Multi) => {
                self.in_multi = true;
                self.send_dedicated(cmd, Expect::One { blocking: false }, Hook::None);
            }
            Route::Pin(Pin::Exec) => {
                self.in_multi = false;
                self.watching = false;
                self.send_dedicated(cmd, Expect::One { blocking: false }, Hook::Exec);
            }
            Route::Pin(Pin::Discard) => {
                self.in_multi = false;
                self.watching = false;
                self.multi_db = None;
                self.send_dedicated(cmd, Expect::One { blocking: false }, Hook::None);
            }
            Route::Pin(Pin::Watch) => {
                if !self.in_multi {
                    self.watching = true;
                }
                self.send_dedicated(cmd, Expect::One { blocking: false }, Hook::None);
            }
            Route::Pin(Pin::Monitor) => {
                self.monitor = true;
                self.send_dedicated(cmd, Expect::Monitor, Hook::None);
            }
            Route::Pin(Pin::ClientState) => {
                self.client_state = true;
                self.send_dedicated(cmd, Expect::One { blocking: false }, Hook::None);
            }
            // Inside MULTI a blocking command does not block: Redis runs it
            // as its non-blocking form at EXEC.
            Route::Pin(Pin::Blocking) => {
                let blocking = !self.in_multi;
                self.send_dedicated(cmd, Expect::One { blocking }, Hook::None);
            }
            // Queued in MULTI, and a pub/sub reply shape in RESP2.
            Route::Local(Local::Ping) | Route::Read | Route::Primary => {
                self.send_dedicated(cmd, Expect::One { blocking: false }, Hook::None)
            }
        }
    }

    // === commands the sidecar answers ===

    fn allowed_unauthenticated(&self, cmd: &Command) -> bool {
        cmd.name_eq("AUTH") || cmd.name_eq("HELLO") || cmd.name_eq("QUIT")
    }

    fn parse_db(&self, cmd: &Command) -> Result<u32, Bytes> {
        if cmd.argc() != 2 {
            return Err(resp::error(
                "ERR wrong number of arguments for 'select' command",
            ));
        }
        let n: i64 = parse_int(cmd.arg(1).unwrap_or(b""))
            .ok_or_else(|| resp::error("ERR value is not an integer or out of range"))?;
        let max = self.env.facts.databases() as i64;
        if n < 0 || n >= max {
            return Err(resp::error("ERR DB index is out of range"));
        }
        Ok(n as u32)
    }

    /// Validates HELLO's arguments; returns what a successful reply changes.
    fn hello_args(&self, cmd: &Command) -> Result<Hook, Bytes> {
        let Some(ver) = cmd.arg(1) else {
            return Ok(Hook::None);
        };
        let proto = match parse_int(ver) {
            Some(2) => Proto::Resp2,
            Some(3) => Proto::Resp3,
            Some(_) => return Err(resp::error("NOPROTO unsupported protocol version")),
            None => {
                return Err(resp::error(
                    "ERR Protocol version is not an integer or out of range",
                ));
            }
        };
        let mut i = 2;
        let mut auth = None;
        while i < cmd.argc() {
            let opt = cmd.arg(i).unwrap_or(b"");
            let more = cmd.argc() - i - 1;
            if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
                let user = String::from_utf8_lossy(cmd.arg(i + 1).unwrap_or(b"")).into_owned();
                let pass = String::from_utf8_lossy(cmd.arg(i + 2).unwrap_or(b"")).into_owned();
                auth = Some((Some(user), pass));
                i += 3;
            } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
                i += 2;
            } else {
                return Err(resp::error(&format!(
                    "ERR Syntax error in HELLO option '{}'",
                    String::from_utf8_lossy(opt)
                )));
            }
        }
        Ok(match auth {
            Some((u, p)) => Hook::Identity(u, p, Some(proto)),
            None => Hook::Proto(proto),
        })
    }

    fn local(&mut self, l: Local, cmd: Command) {
        match l {
            Local::Ping => {
                let reply = match cmd.argc() {
                    1 => resp::simple("PONG"),
                    2 => resp::bulk(cmd.arg(1).unwrap_or(b"")),
                    _ => resp::error("ERR wrong number of arguments for 'ping' command"),
                };
                self.push_done(reply);
            }
            Local::Select => match self.parse_db(&cmd) {
                Ok(db) => {
                    self.db = db;
                    self.push_done(resp::ok());
                }
                Err(e) => self.push_done(e),
            },
            Local::Hello => self.hello(cmd),
            Local::Auth => self.auth(cmd),
            Local::SetName => {
                if cmd.argc() != 3 {
                    self.push_done(resp::error(
                        "ERR wrong number of arguments for 'client|setname' command",
                    ));
                    return;
                }
                let name = cmd.arg(2).unwrap_or(b"");
                if let Err(e) = check_client_name(name) {
                    self.push_done(e);
                    return;
                }
                self.name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
                self.push_done(resp::ok());
            }
            Local::GetName => {
                let reply = match &self.name {
                    Some(n) => resp::bulk(n),
                    None => resp::null(self.proto),
                };
                self.push_done(reply);
            }
            Local::ClientReply => {
                let mode = cmd.arg(2).unwrap_or(b"");
                if cmd.argc() != 3 {
                    self.push_done(resp::error(
                        "ERR wrong number of arguments for 'client|reply' command",
                    ));
                } else if mode.eq_ignore_ascii_case(b"ON") {
                    self.reply_mode = ReplyMode::On;
                    self.push_done(resp::ok());
                } else if mode.eq_ignore_ascii_case(b"OFF") {
                    self.reply_mode = ReplyMode::Off;
                } else if mode.eq_ignore_ascii_case(b"SKIP") {
                    if self.reply_mode != ReplyMode::Off {
                        self.reply_mode = ReplyMode::Skip;
                    }
                } else {
                    self.push_done(resp::error("ERR syntax error"));
                }
            }
            Local::Quit => {
                self.push_done(resp::ok());
                self.closing = true;
            }
            Local::Reset => {
                self.ded = None;
                self.ded_outstanding = 0;
                self.in_multi = false;
                self.watching = false;
                self.subscribed = false;
                self.monitor = false;
                self.client_state = false;
                self.multi_db = None;
                self.identity = None;
                self.db = self.env.config().primary.url.db;
                self.proto = Proto::Resp2;
                self.name = None;
                self.reply_mode = ReplyMode::On;
                self.authed = self.env.config().security.requirepass.is_none();
                // Slots still waiting on the dropped dedicated connection
                // would never complete.
                let waiting: Vec<u64> = self
                    .pending
                    .iter()
                    .filter(|s| s.on_dedicated && matches!(s.state, SlotState::Waiting))
                    .map(|s| s.seq)
                    .collect();
                for seq in waiting {
                    self.complete(seq, resp::error("ERR nearby: connection reset"));
                }
                self.ded_outstanding = 0;
                self.push_done(resp::simple("RESET"));
            }
            Local::Unwatch => self.push_done(resp::ok()),
            Local::Unsubscribe(kind) => {
                let names: Vec<&[u8]> = (1..cmd.argc()).filter_map(|i| cmd.arg(i)).collect();
                let frames = resp::unsubscribe_frames(kind.unsubscribe_name(), &names, self.proto);
                self.push_done(frames);
            }
            Local::Reject(msg) => self.push_done(resp::error(msg)),
        }
    }

    fn hello(&mut self, cmd: Command) {
        let hook = match self.hello_args(&cmd) {
            Ok(h) => h,
            Err(e) => {
                self.push_done(e);
                return;
            }
        };
        // SETNAME, if given.
        let mut i = 2;
        while i < cmd.argc() {
            if cmd.arg_eq(i, "SETNAME") {
                let name = cmd.arg(i + 1).unwrap_or(b"");
                if let Err(e) = check_client_name(name) {
                    self.push_done(e);
                    return;
                }
                self.name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
                i += 2;
            } else if cmd.arg_eq(i, "AUTH") {
                i += 3;
            } else {
                i += 1;
            }
        }
        match hook {
            Hook::Identity(user, pass, proto) => {
                if self.env.config().security.requirepass.is_some() {
                    if let Err(e) = self.check_requirepass(user.as_deref(), &pass) {
                        self.push_done(e);
                        return;
                    }
                    self.authed = true;
                    self.proto = proto.unwrap_or(self.proto);
                } else if self.same_as_upstream(user.as_deref(), &pass) {
                    self.proto = proto.unwrap_or(self.proto);
                } else {
                    // Someone else's credentials: Redis must judge them, and
                    // the session then runs on its own connection as them.
                    self.ensure_dedicated();
                    self.send_dedicated(
                        cmd,
                        Expect::One { blocking: false },
                        Hook::Identity(user, pass, proto),
                    );
                    return;
                }
            }
            Hook::Proto(p) => {
                if !self.authed {
                    self.push_done(resp::error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"));
                    return;
                }
                self.proto = p;
            }
            _ => {}
        }
        let version = self.env.facts.version();
        let reply = resp::hello(&HelloInfo {
            version: &version,
            proto: self.proto,
            id: self.id as i64,
            role: "master",
        });
        self.push_done(reply);
    }

    fn check_requirepass(&self, user: Option<&str>, pass: &str) -> Result<(), Bytes> {
        let wrong = || resp::error("WRONGPASS invalid username-password pair or user is disabled.");
        let expected = self
            .env
            .config()
            .security
            .requirepass
            .as_ref()
            .map(|s| s.expose().to_string())
            .unwrap_or_default();
        if user.is_some_and(|u| u != "default") {
            return Err(wrong());
        }
        if constant_time_eq(pass.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            self.env.metrics.error(ErrorKind::AuthFailed);
            Err(wrong())
        }
    }

    /// The client presents the credentials the sidecar already uses for the
    /// primary: its identity does not change, so shared pipes stay fine.
    fn same_as_upstream(&self, user: Option<&str>, pass: &str) -> bool {
        let url = &self.env.config().primary.url;
        let Some(p) = &url.password else { return false };
        let user_ok = match (user, url.username.as_deref()) {
            (None | Some("default"), None | Some("default")) => true,
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        user_ok && constant_time_eq(p.expose().as_bytes(), pass.as_bytes())
    }

    fn auth(&mut self, cmd: Command) {
        let Some((user, pass)) = auth_args(&cmd) else {
            self.push_done(resp::error(
                "ERR wrong number of arguments for 'auth' command",
            ));
            return;
        };
        if self.env.config().security.requirepass.is_some() {
            match self.check_requirepass(user.as_deref(), &pass) {
                Ok(()) => {
                    self.authed = true;
                    self.push_done(resp::ok());
                }
                Err(e) => self.push_done(e),
            }
        } else if self.same_as_upstream(user.as_deref(), &pass) {
            self.push_done(resp::ok());
        } else {
            self.send_dedicated(
                cmd,
                Expect::One { blocking: false },
                Hook::Identity(user, pass, None),
            );
        }
    }
}

/// `AUTH [username] password`: the credentials, or `None` for a wrong
/// number of arguments.
fn auth_args(cmd: &Command) -> Option<(Option<String>, String)> {
    let s = |i| String::from_utf8_lossy(cmd.arg(i).unwrap_or(b"")).into_owned();
    match cmd.argc() {
        2 => Some((None, s(1))),
        3 => Some((Some(s(1)), s(2))),
        _ => None,
    }
}

fn check_client_name(name: &[u8]) -> Result<(), Bytes> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(resp::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

fn parse_int(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
