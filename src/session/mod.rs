//! One client connection: frame requests, route each, and write replies back
//! strictly in request order, whichever upstream answers first.
//!
//! Every request gets a sequence number and a slot (`slots`); replies
//! arrive as events on the session's channel (`events`) and fill their
//! slot; the front of the queue is written as soon as it is complete.
//! Connection state that Redis would keep per client (db, protocol, name,
//! auth, CLIENT REPLY) is kept here; state that only an upstream connection
//! can hold (MULTI, WATCH, subscriptions, blocking calls, MONITOR, tracking)
//! pins the session to a dedicated connection for as long as it lives
//! (`state`).
//!
//! - `mod.rs`: `serve`, the select loop, backpressure, idle, drain
//! - `dispatch`: where each command goes; `local`, `auth`: what the
//!   sidecar answers itself; `retry`: reads sent elsewhere

mod auth;
mod cluster;
mod dispatch;
mod events;
mod local;
mod near;
mod park;
mod retry;
mod slots;
mod state;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::config::{Config, Consistency};
use crate::conn::connect::Handshake;
use crate::conn::dedicated::Dedicated;
use crate::conn::event::{Event, EventRx, EventTx};
use crate::conn::pipe::PipeHandle;
use crate::conn::pool::PipePool;
use crate::metrics::ErrorKind;
use crate::metrics::Global;
use crate::model::SharedConfig;
use crate::model::clients::Clients;
use crate::model::facts::{CommandsOf, ServerFacts};
use crate::model::replication::Replication;
use crate::model::topology::TopologyCell;
use crate::proto::encode::{self as resp, Proto};
use crate::proto::{Command, RequestFramer, RequestLimits};
use crate::route::cache::writes::Written;
use crate::route::command::{CommandTable, Kind};
use crate::route::consistency::Tracker;
use slots::{Hook, Slots};
use state::{ClientState, PinState};

/// A client connection's first read and write buffers, in bytes.
const CLIENT_BUF: usize = 4 * 1024;

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
    /// Set when fronting a Redis Cluster.
    pub cluster: Option<Arc<crate::model::cluster::ClusterCell>>,
    /// Tracking connections: near-cache fills and emulated tracking.
    pub fills: Arc<crate::conn::fill::FillPool>,
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

/// The command being dispatched, as far as its replies' bookkeeping goes.
#[derive(Clone, Copy, Debug)]
struct Cur {
    /// The metrics label.
    kind: Kind,
    /// Read-your-writes is on, and the command may write.
    marks_write: bool,
}

impl Cur {
    /// Not a command (a protocol error).
    const NONE: Cur = Cur {
        kind: Kind::Other,
        marks_write: false,
    };
}

struct Session {
    env: Arc<SessionEnv>,
    id: u64,
    client: ClientState,
    pin: PinState,
    slots: Slots,
    events_tx: EventTx,
    events_rx: EventRx,
    /// Events taken from `events_rx` in one go, handled in order.
    event_batch: std::collections::VecDeque<Event>,
    /// Shared pipes used so far: (upstream id, db, protocol, pipe).
    pipes: Vec<(usize, u32, Proto, PipeHandle)>,
    /// Requests on shared pipes not yet answered: while any are, the
    /// session stays on its pipes (its commands run in the order sent).
    shared_waiting: usize,
    ded: Option<Dedicated>,
    /// Stop reading requests; close once the replies in flight are written.
    closing: bool,
    /// SYNC/PSYNC: once every earlier reply is written, the connection is
    /// tunnelled to the primary with this command.
    tunnel: Option<Command>,
    /// Read-your-writes is on.
    ryw: bool,
    writes_in_flight: usize,
    tracker: Tracker,
    /// The replication generation `tracker` was last rebased to.
    ryw_generation: u64,
    /// In a cluster, read-your-writes per shard: (the shard, its tracker,
    /// its generation).
    shard_trackers: Vec<(Arc<TopologyCell>, Tracker, u64)>,
    /// Commands held while writes wait for a new primary.
    park: park::Park,
    /// The topology the command being routed goes to: the one primary and
    /// its replicas, or in a cluster the shard of its key.
    shard: Arc<TopologyCell>,
    /// Cluster: multi-key commands in flight as parts.
    splits: Vec<cluster::Split>,
    /// Cluster: the transaction being built.
    txn: Option<cluster::Txn>,
    /// Near-cache: what the command being dispatched drops when its reply
    /// arrives (taken by its slot), and what the queued commands of a
    /// MULTI drop at EXEC.
    next_written: Written,
    multi_written: Written,
    /// CLIENT TRACKING, emulated by the sidecar (`route::tracking`).
    tracking: Option<crate::route::tracking::Tracking>,
    /// This session's views of the config and the command table, read on
    /// every command: one pointer comparison while neither was swapped,
    /// instead of arc_swap's guard (about 60 instructions each).
    config_view: arc_swap::Cache<SharedConfig, Arc<Config>>,
    commands_view: arc_swap::Cache<CommandsOf, Arc<CommandTable>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.tracking.is_some() {
            self.env.fills.trackers.unregister(self.id);
        }
    }
}

impl Session {
    fn new(env: Arc<SessionEnv>) -> Session {
        let topology = env.topology.clone();
        let config_view = arc_swap::Cache::new(env.config.clone());
        let commands_view = arc_swap::Cache::new(CommandsOf(env.facts.clone()));
        let (events_tx, events_rx) = crate::conn::mailbox::channel();
        let id = env.clients.next_id();
        let (client, ryw) = {
            let c = env.config();
            (
                ClientState::new(c.primary.url.db, c.security.requirepass.is_none()),
                c.routing.consistency == Consistency::ReadYourWrites,
            )
        };
        Session {
            env,
            id,
            client,
            pin: PinState::default(),
            slots: Slots::new(),
            events_tx,
            events_rx,
            event_batch: std::collections::VecDeque::new(),
            pipes: Vec::new(),
            shared_waiting: 0,
            ded: None,
            closing: false,
            tunnel: None,
            ryw,
            writes_in_flight: 0,
            tracker: Tracker::new(),
            ryw_generation: 0,
            shard_trackers: Vec::new(),
            park: park::Park::default(),
            shard: topology,
            splits: Vec::new(),
            txn: None,
            next_written: Written::Nothing,
            multi_written: Written::Nothing,
            tracking: None,
            config_view,
            commands_view,
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
        if *shutdown.borrow_and_update() {
            return;
        }
        // Small to start: a sidecar holds a connection per app thread, most
        // of them idle; a buffer grows (doubling) for the clients that
        // send more.
        let mut inbuf = BytesMut::with_capacity(CLIENT_BUF);
        // Replies ready for the client: written as the socket takes them,
        // while requests and replies keep flowing (a client that does not
        // read must not stall its own upstream replies).
        let mut out = BytesMut::with_capacity(CLIENT_BUF);
        let mut eof = false;
        let mut last_read = Instant::now();
        // Made once: a `changed()` made on every pass registers a waiter
        // with the watch each time, for a signal that comes once.
        let mut shutdown_signal = std::pin::pin!(shutdown.changed());
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
            let room = self.slots.len() + self.park.len() < max_inflight
                && out.len() + self.slots.held_bytes() < max_output;
            let can_read = !eof && !self.closing && room;
            if can_read && inbuf.capacity() - inbuf.len() < CLIENT_BUF / 4 {
                inbuf.reserve(inbuf.len().max(CLIENT_BUF));
            }
            let idle_deadline = (idle > 0 && !self.pin.idle_exempt())
                .then(|| last_read + Duration::from_secs(idle));
            // Replies first, then the client's socket, then its requests:
            // a fixed order costs no random draw per pass, and what is
            // answered leaves before more is taken in.
            tokio::select! {
                biased;
                ev = self.events_rx.recv() => {
                    if let Some(ev) = ev {
                        self.on_event(ev);
                    }
                    let mut batch = std::mem::take(&mut self.event_batch);
                    self.events_rx.drain_into(&mut batch);
                    while let Some(ev) = batch.pop_front() {
                        self.on_event(ev);
                    }
                    self.event_batch = batch;
                }
                w = wr.write(&out), if !out.is_empty() => match w {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = out.split_to(n);
                        if out.is_empty() && out.capacity() > 1024 * 1024 {
                            out = BytesMut::with_capacity(CLIENT_BUF);
                        }
                    }
                },
                r = rd.read_buf(&mut inbuf), if can_read => match r {
                    Ok(0) | Err(_) => {
                        // Half-closed or reset: answer what was asked, then go.
                        eof = true;
                    }
                    Ok(_) => {
                        last_read = Instant::now();
                        framer.set_unauthenticated(!self.client.authed);
                        self.take_commands(&mut framer, &mut inbuf, max_inflight, max_output, out.len());
                    }
                },
                _ = &mut shutdown_signal, if !self.closing => {
                    // Draining: no new requests; finish the ones in flight.
                    self.closing = true;
                }
                _ = crate::conn::event::sleep_until_opt(idle_deadline) => {
                    tracing::debug!(client = self.id, "idle timeout");
                    break;
                }
                _ = tokio::time::sleep(park::POLL), if !self.park.is_empty() => {
                    self.release_parked();
                }
            }
            // Commands left in the buffer when a limit stopped framing:
            // take them once there is room.
            if !self.closing
                && !inbuf.is_empty()
                && self.slots.len() + self.park.len() < max_inflight
                && out.len() + self.slots.held_bytes() < max_output
            {
                framer.set_unauthenticated(!self.client.authed);
                self.take_commands(&mut framer, &mut inbuf, max_inflight, max_output, out.len());
            }
            self.slots.flush(&mut out);
            // Written now, while the socket is known to take it: a reply
            // that waits for the next pass costs a second pass per request.
            if !out.is_empty() {
                match wr.try_write(&out) {
                    Ok(0) => break,
                    Ok(n) => {
                        let _ = out.split_to(n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
            if (self.closing || eof) && self.slots.is_empty() && self.park.is_empty() {
                // Write what is left, then close.
                if !out.is_empty() {
                    let _ = wr.write_all(&out).await;
                }
                break;
            }
        }
        // A fresh receiver: the loop's was lent to its signal. One made
        // after shutdown began sees no change, so that is checked first.
        let shutdown = self.env.shutdown.clone();
        if let Some(cmd) = self.tunnel.take()
            && !eof
            && !*shutdown.borrow()
        {
            self.replicate(cmd, rd, &mut wr, inbuf, shutdown).await;
        }
        let _ = wr.shutdown().await;
    }

    /// SYNC/PSYNC: a raw connection to the primary (authenticated as the
    /// client is), the command and anything pipelined after it, then bytes
    /// both ways until either side closes: the replication stream is not
    /// RESP replies and must not be framed.
    async fn replicate(
        &self,
        cmd: Command,
        mut rd: tokio::net::tcp::OwnedReadHalf,
        wr: &mut tokio::net::tcp::OwnedWriteHalf,
        inbuf: BytesMut,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let primary = self.env.topology.load().primary.clone();
        let hs = Handshake {
            auth: self.client.identity.clone(),
            ..Handshake::default()
        };
        let connect = self.env.pipes.timeouts().connect;
        let (stream, leftover) =
            match crate::conn::connect::open(self.env.pipes.connector(), &primary, &hs, connect)
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    let _ = wr
                        .write_all(&resp::error(&format!("ERR nearby: {primary}: {e}")))
                        .await;
                    return;
                }
            };
        let (mut urd, mut uwr) = stream.into_split();
        if uwr.write_all(cmd.raw()).await.is_err()
            || uwr.write_all(&inbuf).await.is_err()
            || wr.write_all(&leftover).await.is_err()
        {
            return;
        }
        tokio::select! {
            _ = tokio::io::copy(&mut rd, &mut uwr) => {}
            _ = tokio::io::copy(&mut urd, wr) => {}
            _ = shutdown.changed() => {}
        }
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
            && self.slots.len() + self.park.len() < max_inflight
            && out_len + self.slots.held_bytes() < max_output
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
                    let seq = self.new_slot(Cur::NONE, false, Hook::None);
                    self.complete(seq, resp::error(&format!("ERR {e}")));
                    self.closing = true;
                }
            }
        }
        if n > 0 {
            self.env.metrics.commands(n);
        }
    }
}
