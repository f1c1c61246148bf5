//! Fill connections: one sidecar-owned RESP3 connection per upstream with
//! `CLIENT TRACKING ON OPTIN`, which carries near-cache misses and brings
//! back Redis's invalidations for what they read.
//!
//! Each miss goes out as `CLIENT CACHING YES`, the command, and `PTTL` of
//! each of its keys (an entry never outlives its key). Replies and
//! invalidation pushes are handled in the order they arrive on the one
//! connection: Redis writes an invalidation after the reply of the read
//! that tracked the key, so a push that arrives while a fill of its key
//! is in flight poisons that fill (`route::cache::Store`), and one that
//! arrives after it drops the entry. When the connection is lost, its
//! entries go too: their invalidations could no longer arrive.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp3::types::BytesFrame as F3;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::conn::connect::{self as upstream, Connector, Handshake, UpstreamError};
use crate::conn::event::{Event, EventTx, Timeouts};
use crate::conn::trackers::Trackers;
use crate::metrics::Invalidation;
use crate::model::near_cache::NearCache;

/// Numbers fill connections across the process: entries name the
/// connection that filled them, so losing it drops exactly its entries.
static NEXT_CONN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
use crate::model::topology::Upstream;
use crate::proto::encode::Proto;
use crate::proto::{Command, ReplyFramer, ReplyLimits, decode_resp3};
use crate::route::cache::{FillId, Source};
use crate::route::command::Kind;

/// A read for a fill connection.
pub struct FillRequest {
    pub seq: u64,
    pub reply_to: EventTx,
    /// The command, as the client sent it.
    pub data: Bytes,
    pub db: u32,
    /// The near-cache entry to fill: its key and the Redis keys it
    /// covers. None: only tracked (for a client whose tracking the
    /// sidecar emulates).
    pub entry: Option<(Bytes, Vec<Bytes>)>,
    /// The client speaks RESP2: the reply is converted.
    pub resp2: bool,
    pub kind: Kind,
}

/// The fill connections of one sidecar, one per upstream, started on
/// first use.
pub struct FillPool {
    /// With `--near-cache on`.
    pub cache: Option<Arc<NearCache>>,
    pub trackers: Arc<Trackers>,
    connector: Arc<Connector>,
    timeouts: Timeouts,
    handles: Mutex<HashMap<usize, mpsc::UnboundedSender<FillRequest>>>,
}

impl FillPool {
    pub fn new(
        cache: Option<Arc<NearCache>>,
        connector: Arc<Connector>,
        timeouts: Timeouts,
    ) -> FillPool {
        FillPool {
            cache,
            trackers: Arc::new(Trackers::default()),
            connector,
            timeouts,
            handles: Mutex::new(HashMap::new()),
        }
    }

    /// Queues a fill on `up`'s connection; handed back if it cannot be
    /// (the upstream was retired).
    pub fn send(&self, up: &Arc<Upstream>, req: FillRequest) -> Result<(), FillRequest> {
        if up.is_retired() {
            return Err(req);
        }
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        let tx = handles.entry(up.id).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let sinks = Sinks {
                cache: self.cache.clone(),
                trackers: self.trackers.clone(),
            };
            tokio::spawn(run(
                sinks,
                self.connector.clone(),
                up.clone(),
                self.timeouts,
                rx,
            ));
            tx
        });
        match tx.send(req) {
            Ok(()) => Ok(()),
            Err(e) => {
                handles.remove(&up.id);
                Err(e.0)
            }
        }
    }
}

fn fail(req: FillRequest, error: &Arc<str>) {
    let _ = req.reply_to.send(Event::Failed {
        seq: req.seq,
        error: error.clone(),
    });
}

/// Where what a fill connection hears goes.
struct Sinks {
    cache: Option<Arc<NearCache>>,
    trackers: Arc<Trackers>,
}

impl Sinks {
    /// The connection is gone, and its invalidations with it.
    fn lost(&self, conn: u64) {
        if let Some(c) = &self.cache {
            c.flush_conn(conn);
        }
        self.trackers.flush();
    }
}

async fn run(
    sinks: Sinks,
    connector: Arc<Connector>,
    up: Arc<Upstream>,
    timeouts: Timeouts,
    mut rx: mpsc::UnboundedReceiver<FillRequest>,
) {
    const MIN_BACKOFF: Duration = Duration::from_millis(50);
    const MAX_BACKOFF: Duration = Duration::from_secs(1);
    let mut backoff = MIN_BACKOFF;
    loop {
        if up.is_retired() {
            // Requests still queued are failed (and retried on pipes).
            rx.close();
            let text: Arc<str> = Arc::from(format!("{up}: retired"));
            while let Ok(req) = rx.try_recv() {
                fail(req, &text);
            }
            return;
        }
        let conn = NEXT_CONN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let err = match open(&connector, &up, timeouts.connect).await {
            Ok((stream, leftover)) => {
                backoff = MIN_BACKOFF;
                let err = serve(&sinks, &up, conn, stream, leftover, &mut rx, timeouts).await;
                sinks.lost(conn);
                match err {
                    Some(e) => e,
                    None => return,
                }
            }
            Err(e) => e,
        };
        tracing::debug!(upstream = %up, error = %err, "near-cache fill connection down");
        // Fail fast while disconnected: the session sends the read on a
        // shared pipe instead.
        let text: Arc<str> = Arc::from(format!("{up}: {err}"));
        let until = Instant::now() + backoff;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                req = rx.recv() => match req {
                    Some(req) => fail(req, &text),
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A RESP3 connection with tracking on (opt-in: only what a fill reads
/// is tracked).
async fn open(
    connector: &Connector,
    up: &Upstream,
    connect_timeout: Duration,
) -> Result<(upstream::UpstreamStream, BytesMut), UpstreamError> {
    let hs = Handshake {
        proto: Some(Proto::Resp3),
        ..Handshake::default()
    };
    let (mut stream, mut buf) = upstream::open(connector, up, &hs, connect_timeout).await?;
    let cmd = Command::from_args(&[b"CLIENT", b"TRACKING", b"ON", b"OPTIN"]);
    stream
        .write_all(cmd.raw())
        .await
        .map_err(|e| UpstreamError::Lost(e.to_string()))?;
    let mut framer = ReplyFramer::new(ReplyLimits::default());
    let reply = tokio::time::timeout(connect_timeout, async {
        loop {
            if let Some(r) = framer
                .next(&mut buf)
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?
            {
                return Ok(r);
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) => return Err(UpstreamError::Lost("closed by the upstream".into())),
                Ok(_) => {}
                Err(e) => return Err(UpstreamError::Lost(e.to_string())),
            }
        }
    })
    .await
    .map_err(|_| UpstreamError::Timeout(connect_timeout.as_millis() as u64))??;
    if reply.is_error() {
        return Err(UpstreamError::Handshake(
            String::from_utf8_lossy(reply.raw.trim_ascii_end())
                .trim_start_matches('-')
                .to_string(),
        ));
    }
    Ok((stream, buf))
}

/// What each reply on the connection answers, in order.
enum Expect {
    Select,
    Caching,
    /// The read itself.
    Read {
        seq: u64,
        reply_to: EventTx,
        resp2: bool,
        kind: Kind,
        sent: Instant,
        fill: Option<FillId>,
        source: Source,
        /// `PTTL` replies still to come for it.
        ttls: usize,
    },
    /// One key's `PTTL`; the last one stores the entry.
    Ttl {
        fill: FillId,
        last: bool,
    },
}

/// A fill whose read was answered, waiting for its keys' TTLs.
struct Answered {
    reply: Bytes,
    source: Source,
    /// The shortest TTL seen so far.
    ttl: Duration,
    failed: bool,
}

async fn serve(
    sinks: &Sinks,
    up: &Arc<Upstream>,
    conn: u64,
    stream: upstream::UpstreamStream,
    mut buf: BytesMut,
    rx: &mut mpsc::UnboundedReceiver<FillRequest>,
    timeouts: Timeouts,
) -> Option<UpstreamError> {
    let (mut rd, mut wr) = stream.into_split();
    let mut framer = ReplyFramer::new(ReplyLimits::default());
    let mut expect: VecDeque<Expect> = VecDeque::new();
    let mut answered: HashMap<FillId, Answered> = HashMap::new();
    let mut batch: Vec<FillRequest> = Vec::with_capacity(64);
    let mut out = BytesMut::with_capacity(4096);
    let mut db = 0u32;
    let tick = (timeouts.request / 8).clamp(Duration::from_millis(5), Duration::from_millis(250));
    let mut timeout_check = tokio::time::interval(tick);
    timeout_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let err = loop {
        // Everything already read, in wire order.
        loop {
            match framer.next(&mut buf) {
                Ok(Some(reply)) => {
                    if reply.is_push() {
                        on_push(sinks, &reply.raw);
                        continue;
                    }
                    let Some(e) = expect.pop_front() else {
                        return Some(end(
                            sinks,
                            up,
                            expect,
                            answered,
                            UpstreamError::Protocol("reply without a request".into()),
                        ));
                    };
                    on_reply(sinks, up, e, reply, &mut answered);
                }
                Ok(None) => break,
                Err(e) => {
                    return Some(end(
                        sinks,
                        up,
                        expect,
                        answered,
                        UpstreamError::Protocol(e.to_string()),
                    ));
                }
            }
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
            n = rx.recv_many(&mut batch, 256) => {
                if n == 0 {
                    return None;
                }
                let now = Instant::now();
                for req in batch.drain(..) {
                    if req.db != db {
                        out.extend_from_slice(
                            Command::from_args(&[b"SELECT", req.db.to_string().as_bytes()]).raw(),
                        );
                        expect.push_back(Expect::Select);
                        db = req.db;
                    }
                    out.extend_from_slice(CACHING_YES);
                    expect.push_back(Expect::Caching);
                    out.extend_from_slice(&req.data);
                    let entry = req.entry.zip(sinks.cache.as_ref());
                    let ttls = entry.as_ref().map_or(0, |((_, keys), _)| keys.len());
                    // Registered before the request is written: a push
                    // read after this point poisons it.
                    let fill = entry.map(|((key, keys), cache)| {
                        for k in &keys {
                            out.extend_from_slice(Command::from_args(&[b"PTTL", k]).raw());
                        }
                        cache.begin_fill(key, keys, conn)
                    });
                    let source = Source {
                        upstream: up.id,
                        conn,
                        replid: up.replid(),
                        offset: up.repl_offset(),
                    };
                    expect.push_back(Expect::Read {
                        seq: req.seq,
                        reply_to: req.reply_to,
                        resp2: req.resp2,
                        kind: req.kind,
                        sent: now,
                        fill,
                        source,
                        ttls,
                    });
                    if let Some(fill) = fill {
                        for i in 0..ttls {
                            expect.push_back(Expect::Ttl { fill, last: i + 1 == ttls });
                        }
                    }
                    up.add_outstanding(1);
                }
                if let Err(e) = wr.write_all(&out).await {
                    out.clear();
                    break UpstreamError::Lost(e.to_string());
                }
                out.clear();
            },
            _ = timeout_check.tick() => {
                let now = Instant::now();
                let oldest = expect.iter().find_map(|e| match e {
                    Expect::Read { sent, .. } => Some(*sent),
                    _ => None,
                });
                if oldest.is_some_and(|s| s + timeouts.request <= now)
                    && up.silent_for(timeouts.request, now)
                {
                    break UpstreamError::Timeout(timeouts.request.as_millis() as u64);
                }
            }
        }
    };
    Some(end(sinks, up, expect, answered, err))
}

const CACHING_YES: &[u8] = b"*3\r\n$6\r\nCLIENT\r\n$7\r\nCACHING\r\n$3\r\nYES\r\n";

/// The connection is lost: reads in flight fail (the session retries them
/// elsewhere), fills in flight are forgotten.
fn end(
    sinks: &Sinks,
    up: &Upstream,
    expect: VecDeque<Expect>,
    answered: HashMap<FillId, Answered>,
    err: UpstreamError,
) -> UpstreamError {
    let text: Arc<str> = Arc::from(format!("{up}: {err}"));
    for e in expect {
        if let Expect::Read {
            seq,
            reply_to,
            fill,
            ..
        } = e
        {
            up.sub_outstanding(1);
            if let (Some(f), Some(c)) = (fill, &sinks.cache) {
                c.abandon_fill(f);
            }
            let _ = reply_to.send(Event::Failed {
                seq,
                error: text.clone(),
            });
        }
    }
    if let Some(c) = &sinks.cache {
        for id in answered.into_keys() {
            c.abandon_fill(id);
        }
    }
    err
}

fn on_reply(
    sinks: &Sinks,
    up: &Upstream,
    e: Expect,
    reply: crate::proto::Reply,
    answered: &mut HashMap<FillId, Answered>,
) {
    match e {
        Expect::Select | Expect::Caching => {
            if reply.is_error() {
                tracing::debug!(upstream = %up, reply = %String::from_utf8_lossy(&reply.raw), "fill connection setup refused");
            }
        }
        Expect::Read {
            seq,
            reply_to,
            resp2,
            kind,
            sent,
            fill,
            source,
            ttls,
        } => {
            up.sub_outstanding(1);
            up.metrics.served(kind, sent.elapsed());
            let data = if resp2 {
                match crate::proto::downgrade::to_resp2(&reply.raw) {
                    Ok(d) => d,
                    Err(e) => crate::proto::encode::error(&format!(
                        "ERR nearby: the reply could not be given in RESP2: {e}"
                    )),
                }
            } else {
                reply.raw.clone()
            };
            let _ = reply_to.send(Event::Reply { seq, data });
            let (Some(fill), Some(cache)) = (fill, &sinks.cache) else {
                return;
            };
            if reply.is_error() || ttls == 0 {
                cache.abandon_fill(fill);
            } else {
                answered.insert(
                    fill,
                    Answered {
                        reply: reply.raw,
                        source,
                        ttl: cache.max_ttl,
                        failed: false,
                    },
                );
            }
        }
        Expect::Ttl { fill, last } => {
            if let Some(a) = answered.get_mut(&fill) {
                match integer(&reply.raw) {
                    // A key with a TTL: the entry ends with it.
                    Some(ms) if ms >= 0 => {
                        a.ttl = a.ttl.min(Duration::from_millis(ms as u64));
                    }
                    // -1: no TTL; -2: no such key (tracked all the same).
                    Some(-1 | -2) => {}
                    _ => a.failed = true,
                }
            }
            if last
                && let Some(a) = answered.remove(&fill)
                && let Some(cache) = &sinks.cache
            {
                if a.failed || a.ttl.is_zero() {
                    cache.abandon_fill(fill);
                } else {
                    let now = Instant::now();
                    cache.finish_fill(fill, a.reply, a.source, now + a.ttl, now);
                }
            }
        }
    }
}

/// `>2 invalidate [keys...]`, or `>2 invalidate _` for "everything".
fn on_push(sinks: &Sinks, raw: &Bytes) {
    let Ok(F3::Push { data, .. }) = decode_resp3(raw) else {
        return;
    };
    let is_invalidate = matches!(data.first(), Some(F3::BlobString { data, .. } | F3::SimpleString { data, .. }) if data.eq_ignore_ascii_case(b"invalidate"));
    if !is_invalidate {
        return;
    }
    match data.get(1) {
        Some(F3::Array { data: keys, .. }) => {
            let keys = keys.iter().filter_map(|k| match k {
                F3::BlobString { data, .. } | F3::SimpleString { data, .. } => Some(&data[..]),
                _ => None,
            });
            if let Some(c) = &sinks.cache {
                c.invalidate(keys.clone(), Invalidation::Key);
            }
            sinks.trackers.invalidate(keys);
        }
        Some(F3::Null) => {
            if let Some(c) = &sinks.cache {
                c.flush_all(Invalidation::Flush);
            }
            sinks.trackers.flush();
        }
        _ => {}
    }
}

/// The value of an integer reply (`:n`).
fn integer(raw: &[u8]) -> Option<i64> {
    let body = raw.strip_prefix(b":")?.strip_suffix(b"\r\n")?;
    crate::proto::parse_ll(body)
}
