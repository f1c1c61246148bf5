//! Matching the frames of a dedicated connection to the requests sent on
//! it: one reply per request, except for stream frames (pub/sub, MONITOR,
//! RESP3 pushes), which answer no single request.

use std::collections::VecDeque;

use crate::conn::connect::UpstreamError;
use crate::conn::event::{Event, EventTx};
use crate::model::topology::Upstream;
use crate::proto::{Proto, Reply};

use super::{Expect, Sent};

/// Pub/sub bookkeeping from confirmation frames.
#[derive(Default)]
struct Subscriptions {
    /// Channels + patterns, as the last (p)(un)subscribe frame counted them.
    normal: usize,
    /// Shard channels, counted separately by Redis.
    shard: usize,
}

/// Matches frames from the connection to the requests sent on it.
pub(super) struct Matcher {
    proto: Proto,
    pub(super) pending: VecDeque<Sent>,
    subs: Subscriptions,
    /// The last request the connection has passed: stream frames go after it.
    last_passed: u64,
    monitoring: bool,
}

impl Matcher {
    pub(super) fn new(proto: Proto) -> Matcher {
        Matcher {
            proto,
            pending: VecDeque::new(),
            subs: Subscriptions::default(),
            last_passed: 0,
            monitoring: false,
        }
    }

    /// Passes the subscribe-like requests at the front: answered only by
    /// stream frames, they are done once a later frame arrives.
    fn pass_stream_requests(&mut self, up: &Upstream, events: &EventTx) {
        while let Some(s) = self.pending.front() {
            if s.expect != Expect::Stream {
                break;
            }
            self.last_passed = s.seq;
            let _ = events.send(Event::Passed { seq: s.seq });
            up.metrics.served(s.kind, s.sent.elapsed());
            self.pending.pop_front();
        }
    }

    pub(super) fn route(
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
            self.pass_stream_requests(up, events);
            let _ = events.send(Event::Stream {
                after: self.last_passed,
                data: reply.raw,
                subscriptions: count,
            });
            return Ok(());
        }

        // A reply: skip subscribe-like requests that were answered only by
        // stream frames, unless this error is their answer.
        if !reply.is_error() {
            self.pass_stream_requests(up, events);
        }
        let Some(s) = self.pending.pop_front() else {
            return Err(UpstreamError::Protocol("reply without a request".into()));
        };
        self.last_passed = s.seq;
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
