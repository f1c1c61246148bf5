//! Shared pipes: one long-lived connection per (upstream, db, protocol) that
//! carries the stateless requests of many clients, written in batches (one
//! write per batch) and matched to replies first-in first-out.
//!
//! A writer half drains the request queue; a reader half frames replies and
//! hands each to the session that sent the request. Nothing stateful is ever
//! sent here: sessions use dedicated connections for that.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::conn::connect::{self as upstream, Connector, Handshake, UpstreamError};
pub use crate::conn::event::{Event, EventTx, Request, Timeouts};
use crate::conn::mailbox;
use crate::model::stamp;
use crate::model::topology::{Role, Upstream};
use crate::proto::refusal::Refusal;
use crate::proto::{ReplyFramer, ReplyLimits};
use crate::route::command::Kind;

/// Requests written upstream in one batch at most.
const MAX_BATCH: usize = 1024;

#[derive(Clone)]
pub struct PipeHandle {
    tx: mailbox::Sender<Request>,
    head: Arc<Head>,
}

/// When the oldest request still waiting for its reply on a pipe was sent:
/// a pipe whose head waits far longer than its upstream's round trip is
/// held (a script, a paused write, DEBUG SLEEP), and whatever queues behind
/// it waits too. Sessions then take another pipe (see `PipePool`).
struct Head {
    epoch: Instant,
    /// µs since `epoch`, plus one; 0: nothing waiting.
    sent_us: AtomicU64,
}

impl Head {
    fn set(&self, sent: Option<Instant>) {
        let us = sent.map_or(0, |t| stamp(self.epoch, t));
        self.sent_us.store(us, Ordering::Relaxed);
    }
}

impl PipeHandle {
    /// Queues a request. The pipe task lives as long as its upstream, so this
    /// only fails during shutdown; the request is handed back.
    pub fn send(&self, req: Request) -> Result<(), Request> {
        self.tx.send(req)
    }

    /// Whether the pipe's oldest waiting request was sent more than `limit`
    /// before `now`.
    pub fn held(&self, now: Instant, limit: Duration) -> bool {
        let sent = self.head.sent_us.load(Ordering::Relaxed);
        sent != 0 && stamp(self.head.epoch, now).saturating_sub(sent) > limit.as_micros() as u64
    }

    /// Whether anything waits on the pipe at all: when not, it cannot be
    /// held, and no clock needs reading to say so.
    pub fn busy(&self) -> bool {
        self.head.sent_us.load(Ordering::Relaxed) != 0
    }

    /// The same pipe (both handles feed one connection).
    pub fn same(&self, other: &PipeHandle) -> bool {
        Arc::ptr_eq(&self.head, &other.head)
    }
}

/// Starts the pipe task for `up` with the connection state `hs`.
pub fn spawn(
    connector: Arc<Connector>,
    up: Arc<Upstream>,
    hs: Handshake,
    timeouts: Timeouts,
) -> PipeHandle {
    let (tx, rx) = mailbox::channel();
    let head = Arc::new(Head {
        epoch: Instant::now(),
        sent_us: AtomicU64::new(0),
    });
    tokio::spawn(run(connector, up, hs, timeouts, rx, head.clone()));
    PipeHandle { tx, head }
}

fn fail(req: Request, error: &Arc<str>) {
    let _ = req.reply_to.send(Event::Failed {
        seq: req.seq,
        error: error.clone(),
    });
}

/// How requests fail while the pipe cannot connect: with the cause, or,
/// when Redis itself refused the connection's setup because it is busy or
/// loading, with Redis's own reply (what a direct client would get).
enum Refused {
    Cause(Arc<str>),
    Verbatim(bytes::Bytes),
}

impl Refused {
    fn of(up: &Upstream, err: &UpstreamError) -> Refused {
        match err {
            UpstreamError::Handshake(text)
                if ["BUSY", "LOADING", "MASTERDOWN"]
                    .iter()
                    .any(|code| text.starts_with(code)) =>
            {
                Refused::Verbatim(bytes::Bytes::from(format!("-{text}\r\n")))
            }
            _ => Refused::Cause(describe(up, err)),
        }
    }

    fn fail(&self, req: Request) {
        match self {
            Refused::Cause(text) => fail(req, text),
            Refused::Verbatim(reply) => {
                let _ = req.reply_to.send(Event::Reply {
                    seq: req.seq,
                    data: reply.clone(),
                });
            }
        }
    }
}

fn describe(up: &Upstream, err: &UpstreamError) -> Arc<str> {
    Arc::from(format!("{up}: {err}"))
}

async fn run(
    connector: Arc<Connector>,
    up: Arc<Upstream>,
    hs: Handshake,
    timeouts: Timeouts,
    mut rx: mailbox::Receiver<Request>,
    head: Arc<Head>,
) {
    const MIN_BACKOFF: Duration = Duration::from_millis(50);
    const MAX_BACKOFF: Duration = Duration::from_secs(1);
    const BUSY_RETRY: Duration = Duration::from_millis(10);
    // Long enough that a server accepting and closing at once is not
    // reconnected to in a tight loop.
    const LIVED: Duration = Duration::from_millis(10);
    let young = |since: Instant| since.elapsed() < LIVED;
    let mut backoff = MIN_BACKOFF;
    // Whether the last connection was lost young: one such loss reconnects
    // at once too (CLIENT KILL of a pipe opened a moment before), a second
    // in a row backs off.
    let mut lost_young = false;
    // Requests taken from the queue while Redis refused the setup (busy):
    // written first once a connection is up, or refused again.
    let mut carry: Vec<Request> = Vec::new();
    loop {
        let err = match upstream::open(&connector, &up, &hs, timeouts.connect).await {
            Ok((stream, leftover)) => {
                backoff = MIN_BACKOFF;
                let carried = std::mem::take(&mut carry);
                let up_since = Instant::now();
                let err = serve(
                    &up,
                    stream,
                    leftover,
                    &mut rx,
                    timeouts.request,
                    &head,
                    carried,
                )
                .await;
                match err {
                    // A connection that served a while and was closed (CLIENT
                    // KILL, a server restart, an idle timeout): reconnect at
                    // once instead of failing requests for a backoff.
                    Some(UpstreamError::Lost(_)) if !(lost_young && young(up_since)) => {
                        lost_young = young(up_since);
                        head.set(None);
                        continue;
                    }
                    Some(e) => e,
                    None => return, // every session is gone: shutting down
                }
            }
            Err(e) => {
                // A server that refuses the setup while busy is alive.
                if matches!(Refused::of(&up, &e), Refused::Cause(_)) && up.set_healthy(false) {
                    tracing::warn!(upstream = %up, error = %e, "upstream marked down");
                }
                e
            }
        };
        head.set(None);
        tracing::debug!(upstream = %up, error = %err, "shared pipe down");
        // Fail fast while disconnected: reads retry elsewhere, writes get a
        // clear error now instead of waiting in a queue.
        let refused = Refused::of(&up, &err);
        for req in carry.drain(..) {
            refused.fail(req);
        }
        // Refused because Redis is busy: it may be free any moment, and a
        // stale BUSY must not outlive the script. Requests in the next few
        // ms get Redis's BUSY; the first one after that tries again at once.
        let wait = match refused {
            Refused::Verbatim(_) => BUSY_RETRY,
            Refused::Cause(_) => backoff,
        };
        let until = Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                req = rx.recv() => match req {
                    Some(req) => refused.fail(req),
                    None => return,
                },
            }
        }
        if let Refused::Verbatim(_) = refused {
            match rx.recv().await {
                Some(req) => carry.push(req),
                None => return,
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

struct InFlight {
    seq: u64,
    reply_to: EventTx,
    sent: Instant,
    kind: Kind,
    slow: bool,
}

/// The requests written on one connection and not yet answered, oldest
/// first. The writer appends a whole batch under one lock before writing
/// it, so a reply never arrives before its entry; the reader takes entries
/// as it frames replies. Neither wakes the other: the reader is woken by
/// the socket.
struct Flight {
    queue: Mutex<FlightQueue>,
}

struct FlightQueue {
    items: VecDeque<InFlight>,
    /// The reader has stopped: nothing more may be written.
    closed: bool,
}

impl Flight {
    fn lock(&self) -> MutexGuard<'_, FlightQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs one connection until it fails (returns the cause) or the request
/// queue closes (returns None).
async fn serve(
    up: &Arc<Upstream>,
    stream: upstream::UpstreamStream,
    leftover: BytesMut,
    rx: &mut mailbox::Receiver<Request>,
    request_timeout: Duration,
    head: &Arc<Head>,
    carried: Vec<Request>,
) -> Option<UpstreamError> {
    let (rd, mut wr) = stream.into_split();
    let flight = Arc::new(Flight {
        queue: Mutex::new(FlightQueue {
            items: VecDeque::with_capacity(128),
            closed: false,
        }),
    });
    let (stop_tx, stop_rx) = oneshot::channel::<UpstreamError>();
    let mut reader = tokio::spawn(read_loop(
        up.clone(),
        rd,
        leftover,
        flight.clone(),
        stop_rx,
        request_timeout,
        head.clone(),
    ));
    let mut batch: Vec<Request> = carried;
    batch.reserve(128);
    let mut out = BytesMut::with_capacity(16 * 1024);
    // Requests in the last batch written.
    let mut last_batch = 0;
    let err = loop {
        if batch.is_empty() {
            tokio::select! {
                biased;
                res = &mut reader => {
                    break res.unwrap_or_else(|e| UpstreamError::Lost(e.to_string()));
                }
                n = rx.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        let _ = stop_tx.send(UpstreamError::Lost("shutting down".into()));
                        return None;
                    }
                }
            }
            // Several clients share the pipe (this batch or the last had
            // more than one request): the write waits one scheduler turn,
            // for the I/O driver's next poll, and takes the requests of
            // every client that poll makes ready. Larger batches cost Redis
            // and the sidecar fewer reads, writes and wakeups per request.
            // A lone client's request is written at once.
            if batch.len() > 1 || last_batch > 1 {
                tokio::task::yield_now().await;
                rx.drain_vec(&mut batch, MAX_BATCH);
            }
        }
        let now = Instant::now();
        let (mut n, mut slow) = (0, 0);
        let closed = {
            let mut q = flight.lock();
            if !q.closed {
                if q.items.is_empty() {
                    head.set(Some(now));
                }
                for req in batch.drain(..) {
                    out.extend_from_slice(&req.data);
                    n += 1;
                    slow += usize::from(req.slow);
                    q.items.push_back(InFlight {
                        seq: req.seq,
                        reply_to: req.reply_to,
                        sent: now,
                        kind: req.kind,
                        slow: req.slow,
                    });
                }
            }
            q.closed
        };
        if closed {
            // The reader has stopped: it failed everything it held; these
            // were never written.
            let text = describe(up, &UpstreamError::Lost("connection closed".into()));
            for req in batch.drain(..) {
                fail(req, &text);
            }
            break reader
                .await
                .unwrap_or_else(|e| UpstreamError::Lost(e.to_string()));
        }
        last_batch = n;
        up.add_slow(slow);
        up.add_outstanding(n);
        if !out.is_empty()
            && let Err(e) = wr.write_all(&out).await
        {
            out.clear();
            let err = UpstreamError::Lost(e.to_string());
            let _ = stop_tx.send(err.clone());
            let _ = reader.await;
            break err;
        }
        out.clear();
        if out.capacity() > 1024 * 1024 {
            out = BytesMut::with_capacity(16 * 1024);
        }
    };
    Some(err)
}

async fn read_loop(
    up: Arc<Upstream>,
    mut rd: upstream::UpstreamReadHalf,
    mut buf: BytesMut,
    flight: Arc<Flight>,
    mut stop: oneshot::Receiver<UpstreamError>,
    request_timeout: Duration,
    head: Arc<Head>,
) -> UpstreamError {
    let mut framer = ReplyFramer::new(ReplyLimits::default());
    let mut tally = crate::metrics::Tally::default();
    // When the previous read completed: the passive latency sample is the
    // wait for the first reply of a read, counted from when its request was
    // sent or the previous read, whichever is later. That is the upstream's
    // distance plus its service time, without the queueing a big pipeline
    // causes itself (a 10,000-command burst must not look like a far
    // upstream).
    let mut prev_read = Instant::now();
    let tick = (request_timeout / 8).clamp(Duration::from_millis(5), Duration::from_millis(250));
    let mut timeout_check = tokio::time::interval(tick);
    timeout_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let err = 'conn: loop {
        let mut first_sent: Option<Instant> = None;
        let now = Instant::now();
        let (mut done, mut slow) = (0, 0);
        let framed = {
            let mut q = flight.lock();
            let framed = loop {
                match framer.next(&mut buf) {
                    Ok(Some(reply)) => {
                        // Out-of-band pushes answer no request; none are
                        // expected on a stateless pipe, so they are dropped.
                        if reply.is_push() {
                            continue;
                        }
                        let Some(entry) = q.items.pop_front() else {
                            break Err(UpstreamError::Protocol("reply without a request".into()));
                        };
                        done += 1;
                        slow += usize::from(entry.slow);
                        if first_sent.is_none() {
                            first_sent = Some(entry.sent);
                        }
                        // A replica's refusal of a read is retried elsewhere
                        // by the session: counted where it is finally served.
                        if !(entry.kind == Kind::Read
                            && up.role == Role::Replica
                            && Refusal::of(&reply.raw).is_some())
                        {
                            tally.add(entry.kind, now - entry.sent);
                        }
                        let _ = entry.reply_to.send(Event::Reply {
                            seq: entry.seq,
                            data: reply.raw,
                        });
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(UpstreamError::Protocol(e.to_string())),
                }
            };
            head.set(q.items.front().map(|p| p.sent));
            framed
        };
        up.sub_outstanding(done);
        up.sub_slow(slow);
        if done > 0 {
            up.metrics.add(&mut tally);
        }
        if let Err(e) = framed {
            break 'conn e;
        }
        if let Some(sent) = first_sent {
            up.observe_passive(now - sent.max(prev_read), now);
            up.heard(now);
            prev_read = now;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => break UpstreamError::Lost("closed by the upstream".into()),
                Ok(_) => {}
                Err(e) => break UpstreamError::Lost(e.to_string()),
            },
            // The oldest request's age is checked on a coarse tick rather
            // than with a timer per request: arming and cancelling a timer
            // on every read costs more than the whole check.
            // A request fails only when its upstream also went silent on
            // every connection (frozen, unreachable): a busy server that
            // still answers its prober, or runs a long script, is waited
            // for however long it takes, as a direct client would wait.
            _ = timeout_check.tick() => {
                let now = Instant::now();
                let oldest = flight.lock().items.front().map(|p| p.sent);
                if oldest.is_some_and(|sent| sent + request_timeout <= now)
                    && up.silent_for(request_timeout, now)
                {
                    break UpstreamError::Timeout(request_timeout.as_millis() as u64);
                }
            }
            e = &mut stop => {
                break e.unwrap_or_else(|_| UpstreamError::Lost("writer stopped".into()));
            }
        }
    };
    // Nothing more will be matched on this connection: fail what is in
    // flight (no reply was received for any of it).
    let pending = {
        let mut q = flight.lock();
        q.closed = true;
        std::mem::take(&mut q.items)
    };
    head.set(None);
    let text = describe(&up, &err);
    let lost = !pending.is_empty();
    up.sub_outstanding(pending.len());
    up.sub_slow(pending.iter().filter(|p| p.slow).count());
    for p in pending {
        let _ = p.reply_to.send(Event::Failed {
            seq: p.seq,
            error: text.clone(),
        });
    }
    if lost {
        // Requests lost with the connection: a large sample, so reads move
        // away at once.
        up.observe_failure(request_timeout, Instant::now());
    }
    if matches!(err, UpstreamError::Timeout(_)) && up.set_healthy(false) {
        tracing::warn!(upstream = %up, error = %err, "upstream marked down");
    }
    err
}
