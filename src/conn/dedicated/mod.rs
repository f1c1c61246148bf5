//! Dedicated connections: one upstream connection owned by one session, for
//! commands that create connection state (MULTI, WATCH, blocking calls,
//! pub/sub, MONITOR, CLIENT TRACKING, a client's own identity).
//!
//! Besides one-reply-per-request matching, a dedicated connection carries
//! frames that answer no single request: pub/sub messages and
//! confirmations, MONITOR lines, RESP3 pushes. Those are passed on as
//! `Event::Stream`, positioned after the last request the connection has
//! passed, so the client sees them exactly where Redis put them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::conn::connect::{self as upstream, Connector, Handshake, UpstreamError};
use crate::conn::event::{Event, EventTx, Timeouts, sleep_until_opt};
use crate::model::topology::Upstream;
use crate::proto::Proto;
use crate::proto::{ReplyFramer, ReplyLimits};
use crate::route::command::Kind;

mod matcher;

pub use matcher::Confirm;
use matcher::Matcher;

/// What a request sent on a dedicated connection is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Exactly one reply; `blocking` requests have no upstream timeout.
    One { blocking: bool },
    /// (UN)SUBSCRIBE and friends: answered by stream frames (or one error).
    Stream,
    /// MONITOR: one reply, then every frame on the connection is a stream.
    Monitor,
}

pub struct DRequest {
    pub seq: u64,
    /// Redis may hold it for long: no request timeout while it runs.
    pub slow: bool,
    /// For `Expect::Stream`: the confirmations that answer it.
    pub confirm: Option<Confirm>,
    pub data: Bytes,
    pub expect: Expect,
    pub kind: Kind,
}

pub struct Dedicated {
    tx: mpsc::UnboundedSender<DRequest>,
    pub upstream: Arc<Upstream>,
    pub db: u32,
    pub proto: Proto,
    /// The client name it was opened with (the session keeps it current).
    pub name: Option<bytes::Bytes>,
    /// Identifies this connection in its `Closed` event: a session that
    /// has replaced it ignores a late one.
    pub conn: u64,
}

impl Dedicated {
    /// Starts connecting at once; requests sent meanwhile wait for the
    /// handshake. Events go to `events` (the session's channel).
    pub fn open(
        connector: Arc<Connector>,
        up: Arc<Upstream>,
        hs: Handshake,
        timeouts: Timeouts,
        events: EventTx,
    ) -> Dedicated {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let conn = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let db = hs.db;
        let proto = hs.proto.unwrap_or(Proto::Resp2);
        let name = hs.name.clone();
        tokio::spawn(run(connector, up.clone(), hs, timeouts, rx, events, conn));
        Dedicated {
            tx,
            upstream: up,
            db,
            proto,
            name,
            conn,
        }
    }

    /// False when the connection task has ended (a `Closed` event is on its
    /// way to the session).
    pub fn send(&self, req: DRequest) -> bool {
        self.tx.send(req).is_ok()
    }
}

struct Sent {
    seq: u64,
    expect: Expect,
    sent: Instant,
    kind: Kind,
    slow: bool,
    confirm: Option<Confirm>,
}

async fn run(
    connector: Arc<Connector>,
    up: Arc<Upstream>,
    hs: Handshake,
    timeouts: Timeouts,
    mut rx: mpsc::UnboundedReceiver<DRequest>,
    events: EventTx,
    conn: u64,
) {
    let proto = hs.proto.unwrap_or(Proto::Resp2);
    let started = Instant::now();
    let err = match upstream::open_pipelined(&connector, &up, &hs, timeouts.connect).await {
        Ok(opened) => {
            let handshake = Pending {
                unsent: opened.unsent,
                unanswered: opened.unanswered,
                deadline: started + timeouts.connect,
            };
            serve(
                &up,
                opened.stream,
                opened.read,
                handshake,
                proto,
                &mut rx,
                &events,
                timeouts.request,
            )
            .await
        }
        Err(e) => Err((e, VecDeque::new())),
    };
    let (err, pending) = match err {
        Ok(()) => return,
        Err(x) => x,
    };
    let text: Arc<str> = Arc::from(format!("{up}: {err}"));
    rx.close();
    let queued = std::iter::from_fn(|| rx.try_recv().ok()).map(|r| r.seq);
    for seq in pending.into_iter().map(|s| s.seq).chain(queued) {
        let _ = events.send(Event::Failed {
            seq,
            error: text.clone(),
        });
    }
    let _ = events.send(Event::Closed { error: text, conn });
}

/// The connection's handshake, written with the first requests rather than
/// a round trip before them (`connect::open_pipelined`).
struct Pending {
    unsent: BytesMut,
    /// Replies still owed to the handshake: they come before any request's.
    unanswered: usize,
    /// As with a handshake waited for: it must be answered within the
    /// connect timeout.
    deadline: Instant,
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    up: &Upstream,
    stream: upstream::UpstreamStream,
    mut buf: BytesMut,
    mut handshake: Pending,
    proto: Proto,
    rx: &mut mpsc::UnboundedReceiver<DRequest>,
    events: &EventTx,
    request_timeout: Duration,
) -> Result<(), (UpstreamError, VecDeque<Sent>)> {
    let (mut rd, mut wr) = stream.into_split();
    let mut framer = ReplyFramer::new(ReplyLimits::default());
    let mut m = Matcher::new(proto);
    let mut batch = Vec::with_capacity(16);
    // The handshake leaves at once, with whatever the session queued while
    // the connection was being made.
    let mut out = std::mem::take(&mut handshake.unsent);
    if !out.is_empty() {
        let now = Instant::now();
        while let Ok(r) = rx.try_recv() {
            queue(&mut out, &mut m, r, now);
        }
        if let Err(e) = wr.write_all(&out).await {
            return Err((UpstreamError::Lost(e.to_string()), m.pending));
        }
        out.clear();
    }
    // After a deadline passed while the upstream still spoke elsewhere: look
    // again then.
    let tick = (request_timeout / 8).clamp(Duration::from_millis(5), Duration::from_millis(250));
    let mut recheck = None::<Instant>;
    loop {
        loop {
            match framer.next(&mut buf) {
                Ok(Some(reply)) if handshake.unanswered > 0 => {
                    handshake.unanswered -= 1;
                    if reply.is_error() {
                        // The requests behind it were refused the same way
                        // (NOAUTH) or ran in the state asked for (the
                        // session checked SELECT and HELLO against the
                        // server's facts): they fail with the cause.
                        let text = String::from_utf8_lossy(&reply.raw[1..])
                            .trim_end()
                            .to_string();
                        return Err((UpstreamError::Handshake(text), m.pending));
                    }
                }
                Ok(Some(reply)) => {
                    m.route(up, reply, events)
                        .map_err(|e| (e, std::mem::take(&mut m.pending)))?;
                }
                Ok(None) => break,
                Err(e) => {
                    return Err((UpstreamError::Protocol(e.to_string()), m.pending));
                }
            }
        }
        let deadline = match m.pending.front() {
            _ if handshake.unanswered > 0 => Some(handshake.deadline),
            Some(s)
                if !s.slow
                    && matches!(s.expect, Expect::One { blocking: false } | Expect::Monitor) =>
            {
                Some((s.sent + request_timeout).max(recheck.unwrap_or(s.sent)))
            }
            _ => None,
        };
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => return Err((UpstreamError::Lost("closed by the upstream".into()), m.pending)),
                Ok(_) => up.heard(Instant::now()),
                Err(e) => return Err((UpstreamError::Lost(e.to_string()), m.pending)),
            },
            n = rx.recv_many(&mut batch, 256) => {
                if n == 0 {
                    return Ok(()); // the session is gone
                }
                let now = Instant::now();
                for r in batch.drain(..) {
                    queue(&mut out, &mut m, r, now);
                }
                if let Err(e) = wr.write_all(&out).await {
                    return Err((UpstreamError::Lost(e.to_string()), m.pending));
                }
                out.clear();
            }
            // A failover changed this server's role: the state built here
            // (subscriptions, MULTI, a blocked call) belongs elsewhere now.
            () = up.retired() => {
                return Err((UpstreamError::Lost("its role changed (failover)".into()), m.pending));
            }
            // As on shared pipes: only an upstream silent everywhere fails.
            _ = sleep_until_opt(deadline) => {
                if handshake.unanswered > 0 {
                    return Err((UpstreamError::Handshake("timed out".into()), m.pending));
                }
                let now = Instant::now();
                if up.silent_for(request_timeout, now) {
                    return Err((UpstreamError::Timeout(request_timeout.as_millis() as u64), m.pending));
                }
                recheck = Some(now + tick);
            }
        }
    }
}

/// Appends a request to the next write and to what awaits a reply.
fn queue(out: &mut BytesMut, m: &mut Matcher, r: DRequest, now: Instant) {
    out.extend_from_slice(&r.data);
    m.pending.push_back(Sent {
        seq: r.seq,
        expect: r.expect,
        sent: now,
        kind: r.kind,
        slow: r.slow,
        confirm: r.confirm,
    });
}
