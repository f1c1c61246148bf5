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

use crate::conn::connect::{self as upstream, Handshake, UpstreamError};
use crate::conn::pipe::{Event, EventTx, Timeouts, sleep_until_opt};
use crate::model::topology::Upstream;
use crate::proto::Proto;
use crate::proto::{Reply, ReplyFramer, ReplyLimits};
use crate::route::command::Kind;

/// What a request sent on a dedicated connection is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Exactly one reply; `blocking` requests have no upstream timeout.
    One { blocking: bool },
    /// (UN)SUBSCRIBE and friends: answered by stream frames (or one error).
    Stream,
    /// Sent by the sidecar itself; the reply is checked, not forwarded.
    Swallow,
    /// MONITOR: one reply, then every frame on the connection is a stream.
    Monitor,
}

pub struct DRequest {
    pub seq: u64,
    pub data: Bytes,
    pub expect: Expect,
    pub kind: Kind,
}

pub struct Dedicated {
    tx: mpsc::UnboundedSender<DRequest>,
    pub upstream: Arc<Upstream>,
    pub db: u32,
    pub proto: Proto,
    /// Identifies this connection in its `Closed` event: a session that
    /// has replaced it ignores a late one.
    pub conn: u64,
}

impl Dedicated {
    /// Starts connecting at once; requests sent meanwhile wait for the
    /// handshake. Events go to `events` (the session's channel).
    pub fn open(
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
        tokio::spawn(run(up.clone(), hs, timeouts, rx, events, conn));
        Dedicated {
            tx,
            upstream: up,
            db,
            proto,
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
}

async fn run(
    up: Arc<Upstream>,
    hs: Handshake,
    timeouts: Timeouts,
    mut rx: mpsc::UnboundedReceiver<DRequest>,
    events: EventTx,
    conn: u64,
) {
    let proto = hs.proto.unwrap_or(Proto::Resp2);
    let err = match upstream::open(&up, &hs, timeouts.connect).await {
        Ok((stream, buf)) => {
            serve(&up, stream, buf, proto, &mut rx, &events, timeouts.request).await
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

/// Pub/sub bookkeeping from confirmation frames.
#[derive(Default)]
struct Subscriptions {
    /// Channels + patterns, as the last (p)(un)subscribe frame counted them.
    normal: usize,
    /// Shard channels, counted separately by Redis.
    shard: usize,
}

async fn serve(
    up: &Upstream,
    stream: upstream::UpstreamStream,
    mut buf: BytesMut,
    proto: Proto,
    rx: &mut mpsc::UnboundedReceiver<DRequest>,
    events: &EventTx,
    request_timeout: Duration,
) -> Result<(), (UpstreamError, VecDeque<Sent>)> {
    let (mut rd, mut wr) = stream.into_split();
    let mut framer = ReplyFramer::new(ReplyLimits::default());
    let mut m = Matcher {
        proto,
        pending: VecDeque::new(),
        subs: Subscriptions::default(),
        last_passed: 0,
        monitoring: false,
    };
    let mut batch = Vec::with_capacity(16);
    let mut out = BytesMut::new();
    loop {
        loop {
            match framer.next(&mut buf) {
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
            Some(s)
                if matches!(
                    s.expect,
                    Expect::One { blocking: false } | Expect::Swallow | Expect::Monitor
                ) =>
            {
                Some(s.sent + request_timeout)
            }
            _ => None,
        };
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => return Err((UpstreamError::Lost("closed by the upstream".into()), m.pending)),
                Ok(_) => {}
                Err(e) => return Err((UpstreamError::Lost(e.to_string()), m.pending)),
            },
            n = rx.recv_many(&mut batch, 256) => {
                if n == 0 {
                    return Ok(()); // the session is gone
                }
                let now = Instant::now();
                for r in batch.drain(..) {
                    out.extend_from_slice(&r.data);
                    m.pending.push_back(Sent {
                        seq: r.seq,
                        expect: r.expect,
                        sent: now,
                        kind: r.kind,
                    });
                }
                if let Err(e) = wr.write_all(&out).await {
                    return Err((UpstreamError::Lost(e.to_string()), m.pending));
                }
                out.clear();
            }
            _ = sleep_until_opt(deadline) => {
                return Err((UpstreamError::Timeout(request_timeout.as_millis() as u64), m.pending));
            }
        }
    }
}

/// Matches frames from the connection to the requests sent on it.
struct Matcher {
    proto: Proto,
    pending: VecDeque<Sent>,
    subs: Subscriptions,
    /// The last request the connection has passed: stream frames go after it.
    last_passed: u64,
    monitoring: bool,
}

impl Matcher {
    fn route(
        &mut self,
        up: &Upstream,
        reply: Reply,
        events: &EventTx,
    ) -> Result<(), UpstreamError> {
        let head = pubsub_head(&reply.raw);
        let in_pubsub = self.subs.normal + self.subs.shard > 0
            || self
                .pending
                .front()
                .is_some_and(|s| s.expect == Expect::Stream);
        let is_stream = if reply.is_error() {
            // An error always answers the oldest request.
            false
        } else if self.monitoring {
            true
        } else if self.proto == Proto::Resp3 {
            reply.is_push()
        } else {
            in_pubsub && head.is_some()
        };

        if is_stream {
            let mut count = None;
            if let Some((kind, n)) = head
                && let Some(n) = n
            {
                match kind {
                    PubSubKind::Normal => self.subs.normal = n,
                    PubSubKind::Shard => self.subs.shard = n,
                    PubSubKind::Message => {}
                }
                if kind != PubSubKind::Message {
                    count = Some(self.subs.normal + self.subs.shard);
                }
            }
            // Stream frames pass the subscribe-like requests ahead of them.
            while let Some(s) = self.pending.front() {
                if s.expect != Expect::Stream {
                    break;
                }
                self.last_passed = s.seq;
                let _ = events.send(Event::Passed { seq: s.seq });
                up.metrics.served(s.kind, s.sent.elapsed());
                self.pending.pop_front();
            }
            let _ = events.send(Event::Stream {
                after: self.last_passed,
                data: reply.raw,
                subscriptions: count,
            });
            return Ok(());
        }

        // A reply: skip subscribe-like requests that were answered only by
        // stream frames, unless this error is their answer.
        while let Some(s) = self.pending.front() {
            if s.expect != Expect::Stream || reply.is_error() {
                break;
            }
            self.last_passed = s.seq;
            let _ = events.send(Event::Passed { seq: s.seq });
            up.metrics.served(s.kind, s.sent.elapsed());
            self.pending.pop_front();
        }
        let Some(s) = self.pending.pop_front() else {
            return Err(UpstreamError::Protocol("reply without a request".into()));
        };
        self.last_passed = s.seq;
        if s.expect == Expect::Swallow {
            if reply.is_error() {
                return Err(UpstreamError::Handshake(
                    String::from_utf8_lossy(&reply.raw).trim_end().to_string(),
                ));
            }
            let _ = events.send(Event::Passed { seq: s.seq });
            return Ok(());
        }
        if s.expect == Expect::Monitor && !reply.is_error() {
            self.monitoring = true;
        }
        up.metrics.served(s.kind, s.sent.elapsed());
        let _ = events.send(Event::Reply {
            seq: s.seq,
            data: reply.raw,
        });
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PubSubKind {
    /// message / pmessage / smessage
    Message,
    /// (p)(un)subscribe confirmations
    Normal,
    /// s(un)subscribe confirmations
    Shard,
}

/// Peeks at an array or push frame whose first element names a pub/sub
/// frame kind; for confirmations also returns the trailing count. Only the
/// head is read: this is a classifier, not a decoder.
fn pubsub_head(raw: &[u8]) -> Option<(PubSubKind, Option<usize>)> {
    if !matches!(raw.first(), Some(b'*') | Some(b'>')) {
        return None;
    }
    let (n, mut pos) = line_int(raw, 1)?;
    if n < 2 {
        return None;
    }
    let word = bulk_at(raw, &mut pos)?;
    let kind = match word.to_ascii_lowercase().as_slice() {
        b"message" | b"pmessage" | b"smessage" => return Some((PubSubKind::Message, None)),
        b"subscribe" | b"unsubscribe" | b"psubscribe" | b"punsubscribe" => PubSubKind::Normal,
        b"ssubscribe" | b"sunsubscribe" => PubSubKind::Shard,
        _ => return None,
    };
    if n != 3 {
        return Some((kind, None));
    }
    // Second element: the channel (bulk) or a null.
    match raw.get(pos) {
        Some(b'$') => {
            let (len, p) = line_int(raw, pos + 1)?;
            pos = if len < 0 { p } else { p + len as usize + 2 };
        }
        Some(b'_') => pos += 3,
        _ => return None,
    }
    if raw.get(pos) != Some(&b':') {
        return None;
    }
    let (count, _) = line_int(raw, pos + 1)?;
    Some((kind, usize::try_from(count).ok()))
}

/// Parses the integer in a `<digits>\r\n` line starting at `pos`; returns
/// it and the position after the CRLF.
fn line_int(raw: &[u8], pos: usize) -> Option<(i64, usize)> {
    let rest = raw.get(pos..)?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    let n = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((n, pos + end + 2))
}

fn bulk_at<'a>(raw: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    if raw.get(*pos) == Some(&b'+') {
        let (start, rest) = (*pos + 1, raw.get(*pos + 1..)?);
        let end = rest.iter().position(|&b| b == b'\r')?;
        *pos = start + end + 2;
        return raw.get(start..start + end);
    }
    if raw.get(*pos) != Some(&b'$') {
        return None;
    }
    let (len, p) = line_int(raw, *pos + 1)?;
    let len = usize::try_from(len).ok()?;
    let word = raw.get(p..p + len)?;
    *pos = p + len + 2;
    Some(word)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_pubsub_frames() {
        assert_eq!(
            pubsub_head(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:2\r\n"),
            Some((PubSubKind::Normal, Some(2)))
        );
        assert_eq!(
            pubsub_head(b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n"),
            Some((PubSubKind::Normal, Some(0)))
        );
        assert_eq!(
            pubsub_head(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"),
            Some((PubSubKind::Normal, Some(0)))
        );
        assert_eq!(
            pubsub_head(b"*3\r\n$12\r\nsunsubscribe\r\n$1\r\nx\r\n:1\r\n"),
            Some((PubSubKind::Shard, Some(1)))
        );
        assert_eq!(
            pubsub_head(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n"),
            Some((PubSubKind::Message, None))
        );
        assert_eq!(pubsub_head(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"), None);
        assert_eq!(pubsub_head(b"+OK\r\n"), None);
        assert_eq!(pubsub_head(b"*3\r\n$9\r\nsubscr"), None);
    }
}
