//! Matching the frames of a dedicated connection to the requests sent on
//! it: one reply per request, except for stream frames (pub/sub, MONITOR,
//! RESP3 pushes), which answer no single request.

use std::collections::VecDeque;

use crate::conn::connect::UpstreamError;
use crate::conn::event::{Event, EventTx};
use crate::model::topology::Upstream;
use crate::proto::{Proto, Reply};

use super::{Expect, Sent};

/// Pub/sub bookkeeping from confirmation frames. Redis counts channels and
/// patterns together in (p)(un)subscribe frames and shard channels apart;
/// the split tells when an UNSUBSCRIBE without arguments is done.
#[derive(Default)]
struct Subscriptions {
    channels: usize,
    patterns: usize,
    shard: usize,
}

impl Subscriptions {
    fn total(&self) -> usize {
        self.channels + self.patterns + self.shard
    }

    /// A confirmation frame of `word` whose count is `n`.
    fn update(&mut self, word: Word, n: usize) {
        match word {
            Word::Subscribe | Word::Unsubscribe => self.channels = n.saturating_sub(self.patterns),
            Word::PSubscribe | Word::PUnsubscribe => {
                self.patterns = n.saturating_sub(self.channels)
            }
            Word::SSubscribe | Word::SUnsubscribe => self.shard = n,
        }
    }

    /// Subscriptions of the class `word` unsubscribes from.
    fn of_class(&self, word: Word) -> usize {
        match word {
            Word::Subscribe | Word::Unsubscribe => self.channels,
            Word::PSubscribe | Word::PUnsubscribe => self.patterns,
            Word::SSubscribe | Word::SUnsubscribe => self.shard,
        }
    }
}

/// The first element of a confirmation frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Word {
    Subscribe,
    Unsubscribe,
    PSubscribe,
    PUnsubscribe,
    SSubscribe,
    SUnsubscribe,
}

/// The confirmation frames that answer one subscribe-like request: one per
/// argument, or, for an unsubscribe without arguments, one per subscription
/// of its class (a single one when there is none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirm {
    word: Word,
    /// Frames still to come; `None`: until the class is empty.
    left: Option<usize>,
}

impl Confirm {
    /// For a request named `name` with `args` arguments after the name.
    pub fn of(name: &[u8], args: usize) -> Option<Confirm> {
        let word = match name.to_ascii_lowercase().as_slice() {
            b"subscribe" => Word::Subscribe,
            b"unsubscribe" => Word::Unsubscribe,
            b"psubscribe" => Word::PSubscribe,
            b"punsubscribe" => Word::PUnsubscribe,
            b"ssubscribe" => Word::SSubscribe,
            b"sunsubscribe" => Word::SUnsubscribe,
            _ => return None,
        };
        let unsubscribe = matches!(
            word,
            Word::Unsubscribe | Word::PUnsubscribe | Word::SUnsubscribe
        );
        let left = if args == 0 && unsubscribe {
            None
        } else {
            Some(args.max(1))
        };
        Some(Confirm { word, left })
    }
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

    /// Counts a confirmation frame of `word` against the request at the
    /// front; true when it was that request's last.
    fn confirms_front(&mut self, word: Word) -> bool {
        let subs = self.subs.of_class(word);
        let Some(s) = self.pending.front_mut() else {
            return false;
        };
        let Some(c) = s.confirm.as_mut().filter(|c| c.word == word) else {
            return false;
        };
        match &mut c.left {
            Some(left) => {
                *left = left.saturating_sub(1);
                *left == 0
            }
            None => subs == 0,
        }
    }

    pub(super) fn route(
        &mut self,
        up: &Upstream,
        reply: Reply,
        events: &EventTx,
    ) -> Result<(), UpstreamError> {
        let head = pubsub_head(&reply.raw);
        let in_pubsub =
            self.subs.total() > 0 || self.pending.iter().any(|s| s.expect == Expect::Stream);
        let is_stream = if reply.is_error() {
            // An error always answers the oldest request.
            false
        } else if self.monitoring || reply.is_push() {
            // A push answers no request (whatever protocol the connection
            // started with: HELLO 3 may have switched it since).
            true
        } else if self.proto == Proto::Resp3 {
            false
        } else {
            in_pubsub && head.is_some()
        };

        if is_stream {
            let mut count = None;
            let mut answers = false;
            if let Some((Head::Confirm(word), Some(n))) = head {
                self.subs.update(word, n);
                count = Some(self.subs.total());
                answers = self.confirms_front(word);
            }
            let _ = events.send(Event::Stream {
                after: self.last_passed,
                data: reply.raw,
                subscriptions: count,
            });
            // The request's last confirmation: it is done. (Passing only
            // then keeps a later SUBSCRIBE's frames in pub/sub mode while an
            // UNSUBSCRIBE brings the count through zero.)
            if answers && let Some(s) = self.pending.pop_front() {
                self.last_passed = s.seq;
                let _ = events.send(Event::Passed { seq: s.seq });
                up.metrics.served(s.kind, s.sent.elapsed());
            }
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
enum Head {
    /// message / pmessage / smessage
    Message,
    /// a (p|s)(un)subscribe confirmation
    Confirm(Word),
}

/// Peeks at an array or push frame whose first element names a pub/sub
/// frame kind; for confirmations also returns the trailing count. Only the
/// head is read: this is a classifier, not a decoder.
fn pubsub_head(raw: &[u8]) -> Option<(Head, Option<usize>)> {
    if !matches!(raw.first(), Some(b'*') | Some(b'>')) {
        return None;
    }
    let (n, mut pos) = line_int(raw, 1)?;
    if n < 2 {
        return None;
    }
    let word = bulk_at(raw, &mut pos)?;
    let kind = match word.to_ascii_lowercase().as_slice() {
        b"message" | b"pmessage" | b"smessage" => return Some((Head::Message, None)),
        _ => Head::Confirm(Confirm::of(word, 0)?.word),
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
            Some((Head::Confirm(Word::Subscribe), Some(2)))
        );
        assert_eq!(
            pubsub_head(b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n"),
            Some((Head::Confirm(Word::Unsubscribe), Some(0)))
        );
        assert_eq!(
            pubsub_head(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"),
            Some((Head::Confirm(Word::Unsubscribe), Some(0)))
        );
        assert_eq!(
            pubsub_head(b"*3\r\n$12\r\nsunsubscribe\r\n$1\r\nx\r\n:1\r\n"),
            Some((Head::Confirm(Word::SUnsubscribe), Some(1)))
        );
        assert_eq!(
            pubsub_head(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n"),
            Some((Head::Message, None))
        );
        assert_eq!(pubsub_head(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"), None);
        assert_eq!(pubsub_head(b"+OK\r\n"), None);
        assert_eq!(pubsub_head(b"*3\r\n$9\r\nsubscr"), None);
    }

    fn frame(word: &str, channel: &str, n: usize) -> Reply {
        let raw = format!(
            "*3\r\n${}\r\n{word}\r\n${}\r\n{channel}\r\n:{n}\r\n",
            word.len(),
            channel.len()
        );
        let mut f = crate::proto::ReplyFramer::new(crate::proto::ReplyLimits::default());
        f.next(&mut bytes::BytesMut::from(raw.as_bytes()))
            .unwrap()
            .unwrap()
    }

    fn sent(seq: u64, name: &str, args: usize) -> Sent {
        Sent {
            seq,
            expect: Expect::Stream,
            sent: tokio::time::Instant::now(),
            kind: crate::route::command::Kind::Other,
            slow: false,
            confirm: Confirm::of(name.as_bytes(), args),
        }
    }

    /// SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE sent back to back (redis-py's
    /// resubscribe test): the count passes through zero between them, and
    /// the last confirmation is still a stream frame, not a stray reply.
    #[test]
    fn resubscribing_through_zero_stays_in_pubsub() {
        let url: crate::url::RedisUrl = "redis://127.0.0.1:6379".parse().unwrap();
        let up = Upstream::new(
            0,
            0,
            crate::model::upstream::Role::Primary,
            "r".into(),
            url,
            None,
        );
        let (tx, mut rx) = crate::conn::mailbox::channel();
        let mut m = Matcher::new(Proto::Resp2);
        m.pending.push_back(sent(1, "SUBSCRIBE", 1));
        m.pending.push_back(sent(2, "UNSUBSCRIBE", 1));
        m.pending.push_back(sent(3, "SUBSCRIBE", 1));
        for (word, n) in [("subscribe", 1), ("unsubscribe", 0), ("subscribe", 1)] {
            m.route(&up, frame(word, "foo", n), &tx)
                .expect("a stream frame");
        }
        let mut got = Vec::new();
        while let Some(ev) = rx.try_recv() {
            got.push(match ev {
                Event::Stream {
                    after,
                    subscriptions,
                    ..
                } => format!("stream after {after} count {subscriptions:?}"),
                Event::Passed { seq } => format!("passed {seq}"),
                other => format!("{other:?}"),
            });
        }
        assert_eq!(
            got,
            [
                "stream after 0 count Some(1)",
                "passed 1",
                "stream after 1 count Some(0)",
                "passed 2",
                "stream after 2 count Some(1)",
                "passed 3",
            ]
        );
        assert!(m.pending.is_empty());
    }

    #[test]
    fn unsubscribe_without_arguments_waits_for_every_channel() {
        let url: crate::url::RedisUrl = "redis://127.0.0.1:6379".parse().unwrap();
        let up = Upstream::new(
            0,
            0,
            crate::model::upstream::Role::Primary,
            "r".into(),
            url,
            None,
        );
        let (tx, mut rx) = crate::conn::mailbox::channel();
        let mut m = Matcher::new(Proto::Resp2);
        m.pending.push_back(sent(1, "SUBSCRIBE", 2));
        m.pending.push_back(sent(2, "PSUBSCRIBE", 1));
        m.pending.push_back(sent(3, "UNSUBSCRIBE", 0));
        for (word, ch, n) in [
            ("subscribe", "a", 1),
            ("subscribe", "b", 2),
            ("psubscribe", "p*", 3),
            ("unsubscribe", "a", 2),
            ("unsubscribe", "b", 1),
        ] {
            m.route(&up, frame(word, ch, n), &tx)
                .expect("a stream frame");
        }
        let passed: Vec<u64> = std::iter::from_fn(|| rx.try_recv())
            .filter_map(|ev| match ev {
                Event::Passed { seq } => Some(seq),
                _ => None,
            })
            .collect();
        // The pattern stays: the unsubscribe is done when channels are.
        assert_eq!(passed, [1, 2, 3]);
    }
}
