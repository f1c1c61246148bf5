//! Upstream replies, RESP2 and RESP3, framed without recursion.
//!
//! The framer walks a reply header by header. Open aggregates live in an
//! explicit stack of remaining element counts, bounded by `max_depth`, so a
//! hostile or broken upstream cannot overflow the thread stack; bulk bodies
//! are skipped by length, never examined; and the position is kept between
//! calls, so a reply arriving in many reads is scanned once.
//!
//! A RESP3 attribute (`|n`, n key/value pairs) annotates the value after it:
//! the attribute and that value form one frame, and the attribute does not
//! count as an element of an enclosing aggregate.

use bytes::{Bytes, BytesMut};

use super::{ProtocolError, Scan, parse_ll, scan_line};

/// Longest length line (`$`, `*`, `%` ...): a sign and 20 digits fit.
const LEN_LINE_MAX: usize = 32;

/// Hard limits on what an upstream may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLimits {
    /// Deepest aggregate nesting (attributes count as a level). Unlimited
    /// by default: Redis sends replies of any depth (a Lua script's nested
    /// table), and the framer's stack (16 bytes a level, each level at least
    /// 4 bytes of input) is bounded by the bytes it holds.
    pub max_depth: usize,
    /// Largest bulk string, blob error or verbatim string; also the longest
    /// simple line (`+`, `-`, `:` ...).
    pub max_bulk_len: usize,
    /// Most elements in one aggregate (pairs for maps and attributes).
    pub max_elements: usize,
}

impl Default for ReplyLimits {
    fn default() -> Self {
        Self {
            max_depth: usize::MAX,
            max_bulk_len: 512 * 1024 * 1024,
            max_elements: i32::MAX as usize,
        }
    }
}

/// The type of a reply's value (after any attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// `+`
    Simple,
    /// `-` simple error or `!` blob error.
    Error,
    /// `:`
    Integer,
    /// `$` with a body.
    Bulk,
    /// `$-1`, `*-1` (RESP2) or `_` (RESP3).
    Null,
    /// `*`
    Array,
    /// `%`
    Map,
    /// `~`
    Set,
    /// `>`: out-of-band data (pub/sub, invalidation), not an answer to a
    /// request.
    Push,
    /// `,` double, `#` boolean, `(` big number, `=` verbatim string.
    Other,
}

/// One complete reply: its exact wire bytes and the type of its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub raw: Bytes,
    pub kind: ReplyKind,
}

impl Reply {
    pub fn is_error(&self) -> bool {
        self.kind == ReplyKind::Error
    }

    pub fn is_push(&self) -> bool {
        self.kind == ReplyKind::Push
    }

    /// The first word of an error reply (`ERR`, `READONLY`, `NOSCRIPT`,
    /// `LOADING`, `MASTERDOWN`, ...), or `None` if this is not an error.
    pub fn error_code(&self) -> Option<&[u8]> {
        if !self.is_error() {
            return None;
        }
        let value = &self.raw[value_start(&self.raw)..];
        let text = match value.first()? {
            b'-' => &value[1..],
            b'!' => {
                let nl = value.iter().position(|&b| b == b'\n')?;
                let len = usize::try_from(parse_ll(&value[1..nl - 1])?).ok()?;
                value.get(nl + 1..nl + 1 + len)?
            }
            _ => return None,
        };
        let end = text
            .iter()
            .position(|&b| b == b' ' || b == b'\r')
            .unwrap_or(text.len());
        Some(&text[..end])
    }
}

/// Where the value of a (complete) reply starts: after its attribute, if any.
fn value_start(raw: &[u8]) -> usize {
    if raw.first() != Some(&b'|') {
        return 0;
    }
    let mut f = ReplyFramer::new(ReplyLimits::default());
    match f.scan(raw) {
        Ok(Some(_)) => f.value_start,
        _ => 0,
    }
}

/// An aggregate still being read.
#[derive(Debug, Clone, Copy)]
struct Open {
    /// Elements still to come.
    remaining: usize,
    /// An attribute: when complete, the value it annotates still follows.
    attribute: bool,
}

/// Resumable reply framer: call [`ReplyFramer::next`] after every read.
///
/// Between calls the caller may only append to the buffer.
#[derive(Debug)]
pub struct ReplyFramer {
    limits: ReplyLimits,
    /// Offset (from `buf[0]`) of the next header to read.
    pos: usize,
    /// Where the search for the current line's `\r` resumes.
    scan_from: usize,
    /// Length of a bulk body at `pos` still to arrive.
    pending_bulk: Option<usize>,
    stack: Vec<Open>,
    /// Kind of the frame's top-level value, once its header is read.
    kind: Option<ReplyKind>,
    /// Offset of the top-level value (after a top-level attribute).
    value_start: usize,
    /// Bytes examined while looking for line ends, over the framer's life.
    scanned: u64,
}

impl ReplyFramer {
    pub fn new(limits: ReplyLimits) -> Self {
        Self {
            limits,
            pos: 0,
            scan_from: 0,
            pending_bulk: None,
            stack: Vec::new(),
            kind: None,
            value_start: 0,
            scanned: 0,
        }
    }

    /// Bytes examined so far while searching for line ends; each input byte
    /// is examined at most once (plus one re-check of a trailing `\r` per
    /// call), bulk bodies not at all.
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// Frames the next reply at the front of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed (`buf` is left as it is).
    /// `Ok(Some(reply))`: one complete reply, split off the front of `buf`.
    /// `Err`: the upstream sent something that is not RESP within the
    /// limits; the connection cannot be trusted any more.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Reply>, ProtocolError> {
        let Some(len) = self.scan(buf)? else {
            return Ok(None);
        };
        let kind = self.kind.unwrap_or(ReplyKind::Other);
        self.reset();
        Ok(Some(Reply {
            raw: buf.split_to(len).freeze(),
            kind,
        }))
    }

    fn reset(&mut self) {
        self.pos = 0;
        self.scan_from = 0;
        self.pending_bulk = None;
        self.stack.clear();
        self.kind = None;
        self.value_start = 0;
    }

    /// Advances over `buf` (whose front is the frame being read) as far as
    /// it goes; `Some(len)` once the frame is complete.
    pub(super) fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        loop {
            if let Some(len) = self.pending_bulk {
                let end = self.pos + len;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if buf[end..end + 2] != *b"\r\n" {
                    return Err(ProtocolError::BulkNotTerminated);
                }
                self.pending_bulk = None;
                self.pos = end + 2;
                self.scan_from = self.pos;
                if self.value_done() {
                    return Ok(Some(self.pos));
                }
                continue;
            }

            let start = self.pos;
            let Some(&ty) = buf.get(start) else {
                return Ok(None);
            };
            let (max, too_long, length_line) = match ty {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                    // The limit is on the text after the type byte.
                    let max = self.limits.max_bulk_len.saturating_add(1);
                    (max, ProtocolError::TooBigReplyLine, false)
                }
                b'$' | b'!' | b'=' => (LEN_LINE_MAX, ProtocolError::InvalidBulkLength, true),
                b'*' | b'%' | b'~' | b'>' | b'|' => {
                    (LEN_LINE_MAX, ProtocolError::InvalidMultibulkLength, true)
                }
                _ => return Err(ProtocolError::InvalidReplyType(ty)),
            };
            let cr = match scan_line(
                buf,
                start,
                max,
                &mut self.scan_from,
                &mut self.scanned,
                |b| b == b'\r',
            ) {
                Scan::Found(cr) if cr + 1 < buf.len() => cr,
                Scan::Found(_) | Scan::Partial => return Ok(None),
                Scan::TooLong => return Err(too_long),
            };
            if buf[cr + 1] != b'\n' {
                return Err(ProtocolError::LineNotTerminated);
            }
            let body = &buf[start + 1..cr];
            self.pos = cr + 2;
            self.scan_from = self.pos;
            if length_line && body == b"?" {
                return Err(ProtocolError::StreamedReply);
            }
            if self.stack.is_empty() && ty != b'|' {
                self.value_start = start;
            }

            let complete = match ty {
                b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
                    self.set_kind(kind_of(ty));
                    true
                }
                b'$' | b'!' | b'=' => {
                    let n = parse_ll(body).ok_or(ProtocolError::InvalidBulkLength)?;
                    if n == -1 && ty == b'$' {
                        self.set_kind(ReplyKind::Null);
                        true
                    } else {
                        if n < 0 || n as u64 > self.limits.max_bulk_len as u64 {
                            return Err(ProtocolError::InvalidBulkLength);
                        }
                        self.set_kind(kind_of(ty));
                        self.pending_bulk = Some(n as usize);
                        false
                    }
                }
                _ => {
                    let n = parse_ll(body).ok_or(ProtocolError::InvalidMultibulkLength)?;
                    if n == -1 && ty == b'*' {
                        self.set_kind(ReplyKind::Null);
                        true
                    } else {
                        if n < 0 {
                            return Err(ProtocolError::InvalidMultibulkLength);
                        }
                        if n as u64 > self.limits.max_elements as u64 {
                            return Err(ProtocolError::TooManyElements);
                        }
                        let attribute = ty == b'|';
                        let pairs = matches!(ty, b'%' | b'|');
                        let remaining = (n as usize)
                            .checked_mul(if pairs { 2 } else { 1 })
                            .ok_or(ProtocolError::TooManyElements)?;
                        if !attribute {
                            self.set_kind(kind_of(ty));
                        }
                        if remaining == 0 {
                            // An empty attribute annotates the next value;
                            // an empty aggregate is a complete value.
                            !attribute
                        } else {
                            if self.stack.len() >= self.limits.max_depth {
                                return Err(ProtocolError::TooDeep(self.limits.max_depth));
                            }
                            self.stack.push(Open {
                                remaining,
                                attribute,
                            });
                            false
                        }
                    }
                }
            };
            if complete && self.value_done() {
                return Ok(Some(self.pos));
            }
        }
    }

    /// Records the kind if this header is the frame's top-level value.
    fn set_kind(&mut self, kind: ReplyKind) {
        if self.stack.is_empty() {
            self.kind = Some(kind);
        }
    }

    /// A value just ended: close every aggregate it completes. True when
    /// the whole frame is complete.
    fn value_done(&mut self) -> bool {
        while let Some(top) = self.stack.last_mut() {
            top.remaining -= 1;
            if top.remaining > 0 {
                return false;
            }
            let attribute = top.attribute;
            self.stack.pop();
            if attribute {
                // The annotated value follows and is what the parent counts.
                return false;
            }
        }
        true
    }
}

fn kind_of(ty: u8) -> ReplyKind {
    match ty {
        b'+' => ReplyKind::Simple,
        b'-' | b'!' => ReplyKind::Error,
        b':' => ReplyKind::Integer,
        b'$' => ReplyKind::Bulk,
        b'_' => ReplyKind::Null,
        b'*' => ReplyKind::Array,
        b'%' => ReplyKind::Map,
        b'~' => ReplyKind::Set,
        b'>' => ReplyKind::Push,
        _ => ReplyKind::Other,
    }
}

pub use super::decode::{decode_resp2, decode_resp3};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redis_protocol::resp2;

    fn framer() -> ReplyFramer {
        ReplyFramer::new(ReplyLimits::default())
    }

    fn all(input: &[u8]) -> Result<Vec<Reply>, ProtocolError> {
        let mut f = framer();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(r) = f.next(&mut buf)? {
            out.push(r);
        }
        Ok(out)
    }

    fn one(input: &[u8]) -> Reply {
        let mut f = framer();
        let mut buf = BytesMut::from(input);
        let r = f.next(&mut buf).unwrap().expect("a complete reply");
        assert!(buf.is_empty(), "left {:?}", buf);
        assert_eq!(&r.raw[..], input);
        r
    }

    fn err(input: &[u8]) -> ProtocolError {
        all(input).unwrap_err()
    }

    #[test]
    fn resp2_kinds() {
        assert_eq!(one(b"+OK\r\n").kind, ReplyKind::Simple);
        assert_eq!(one(b"-ERR no\r\n").kind, ReplyKind::Error);
        assert_eq!(one(b":-12\r\n").kind, ReplyKind::Integer);
        assert_eq!(one(b"$3\r\na\r\n\r\n").kind, ReplyKind::Bulk);
        assert_eq!(one(b"$0\r\n\r\n").kind, ReplyKind::Bulk);
        assert_eq!(one(b"$-1\r\n").kind, ReplyKind::Null);
        assert_eq!(one(b"*-1\r\n").kind, ReplyKind::Null);
        assert_eq!(one(b"*0\r\n").kind, ReplyKind::Array);
        assert_eq!(
            one(b"*3\r\n:1\r\n*2\r\n$1\r\nx\r\n$-1\r\n+y\r\n").kind,
            ReplyKind::Array
        );
    }

    #[test]
    fn resp3_kinds() {
        assert_eq!(one(b"_\r\n").kind, ReplyKind::Null);
        assert_eq!(one(b",1.5\r\n").kind, ReplyKind::Other);
        assert_eq!(one(b"#t\r\n").kind, ReplyKind::Other);
        assert_eq!(
            one(b"(123456789012345678901234567890\r\n").kind,
            ReplyKind::Other
        );
        assert_eq!(one(b"=8\r\ntxt:a\r\nb\r\n").kind, ReplyKind::Other);
        assert_eq!(one(b"!8\r\nERR x\r\ny\r\n").kind, ReplyKind::Error);
        assert_eq!(
            one(b"%2\r\n+a\r\n:1\r\n+b\r\n*1\r\n_\r\n").kind,
            ReplyKind::Map
        );
        assert_eq!(one(b"~2\r\n+a\r\n+b\r\n").kind, ReplyKind::Set);
        let push = one(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n");
        assert!(push.is_push());
        assert_eq!(push.kind, ReplyKind::Push);
        assert_eq!(one(b"%0\r\n").kind, ReplyKind::Map);
    }

    #[test]
    fn attributes_prefix_the_value_and_are_not_counted() {
        let r = one(b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n:7\r\n");
        assert_eq!(r.kind, ReplyKind::Integer);
        let r = one(b"|0\r\n-ERR x\r\n");
        assert_eq!(r.kind, ReplyKind::Error);
        assert_eq!(r.error_code(), Some(&b"ERR"[..]));
        // Inside an array the attribute does not take an element's place.
        let r = one(b"*2\r\n:1\r\n|1\r\n+a\r\n+b\r\n:2\r\n");
        assert_eq!(r.kind, ReplyKind::Array);
        let r = one(b"|1\r\n+a\r\n+b\r\n!9\r\nLOADING x\r\n");
        assert_eq!(r.error_code(), Some(&b"LOADING"[..]));
        // Two frames: the attribute belongs with the first value only.
        let rs = all(b"|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n").unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(&rs[1].raw[..], b":2\r\n");
    }

    #[test]
    fn error_codes() {
        let r = one(b"-READONLY You can't write against a read only replica.\r\n");
        assert!(r.is_error());
        assert_eq!(r.error_code(), Some(&b"READONLY"[..]));
        assert_eq!(one(b"-NOSCRIPT\r\n").error_code(), Some(&b"NOSCRIPT"[..]));
        assert_eq!(one(b"-\r\n").error_code(), Some(&b""[..]));
        assert_eq!(
            one(b"!21\r\nSYNTAX invalid syntax\r\n").error_code(),
            Some(&b"SYNTAX"[..])
        );
        assert_eq!(one(b"!6\r\nMASTER\r\n").error_code(), Some(&b"MASTER"[..]));
        assert_eq!(one(b"+OK\r\n").error_code(), None);
        assert_eq!(one(b"*1\r\n-ERR x\r\n").error_code(), None);
    }

    #[test]
    fn any_depth_passes_and_a_set_limit_holds_without_recursion() {
        // As deep as Redis sends it: 100,000 levels frame iteratively.
        let mut deep = b"*1\r\n".repeat(100_000);
        deep.extend(b":1\r\n");
        assert_eq!(one(&deep).kind, ReplyKind::Array);
        let limited = |input: &[u8]| {
            let mut f = ReplyFramer::new(ReplyLimits {
                max_depth: 128,
                ..ReplyLimits::default()
            });
            f.next(&mut BytesMut::from(input))
        };
        let mut ok = b"*1\r\n".repeat(128);
        ok.extend(b":1\r\n");
        assert!(limited(&ok).unwrap().is_some());
        let mut too_deep = b"*1\r\n".repeat(129);
        too_deep.extend(b":1\r\n");
        assert_eq!(limited(&too_deep).unwrap_err(), ProtocolError::TooDeep(128));
        let hostile = b"*1\r\n".repeat(100_000);
        assert_eq!(limited(&hostile).unwrap_err(), ProtocolError::TooDeep(128));
        let hostile = b"|1\r\n".repeat(100_000);
        assert_eq!(limited(&hostile).unwrap_err(), ProtocolError::TooDeep(128));
        assert_eq!(
            ProtocolError::TooDeep(128).to_string(),
            "Protocol error: reply nested deeper than 128 levels"
        );
    }

    #[test]
    fn streamed_replies_are_rejected() {
        for bad in [
            &b"$?\r\n"[..],
            b"*?\r\n",
            b"%?\r\n",
            b"~?\r\n",
            b">?\r\n",
            b"|?\r\n",
            b"=?\r\n",
        ] {
            assert_eq!(err(bad), ProtocolError::StreamedReply);
        }
        assert_eq!(
            err(b";4\r\nabcd\r\n"),
            ProtocolError::InvalidReplyType(b';')
        );
        assert_eq!(err(b".\r\n"), ProtocolError::InvalidReplyType(b'.'));
    }

    #[test]
    fn malformed_replies() {
        assert_eq!(err(b"$3\r\nfooXX"), ProtocolError::BulkNotTerminated);
        assert_eq!(err(b"+OK\rX"), ProtocolError::LineNotTerminated);
        assert_eq!(err(b"$-2\r\n"), ProtocolError::InvalidBulkLength);
        assert_eq!(err(b"!-1\r\n"), ProtocolError::InvalidBulkLength);
        assert_eq!(err(b"$x\r\n"), ProtocolError::InvalidBulkLength);
        assert_eq!(err(b"%-1\r\n"), ProtocolError::InvalidMultibulkLength);
        assert_eq!(err(b"*-2\r\n"), ProtocolError::InvalidMultibulkLength);
        assert_eq!(err(b"*01\r\n"), ProtocolError::InvalidMultibulkLength);
        assert_eq!(err(b"PING\r\n"), ProtocolError::InvalidReplyType(b'P'));
        assert_eq!(err(&[b'$'; 40]), ProtocolError::InvalidBulkLength);
        assert_eq!(err(&[b'*'; 40]), ProtocolError::InvalidMultibulkLength);
    }

    #[test]
    fn limits_apply() {
        let limits = ReplyLimits {
            max_depth: 2,
            max_bulk_len: 8,
            max_elements: 3,
        };
        let run = |input: &[u8]| ReplyFramer::new(limits).next(&mut BytesMut::from(input));
        assert_eq!(run(b"$9\r\n"), Err(ProtocolError::InvalidBulkLength));
        assert!(run(b"$8\r\n12345678\r\n").unwrap().is_some());
        assert_eq!(run(b"*4\r\n"), Err(ProtocolError::TooManyElements));
        assert_eq!(run(b"%4\r\n"), Err(ProtocolError::TooManyElements));
        assert_eq!(run(b"*1\r\n*1\r\n*1\r\n"), Err(ProtocolError::TooDeep(2)));
        assert_eq!(run(b"+123456789\r\n"), Err(ProtocolError::TooBigReplyLine));
        assert!(run(b"+12345678\r\n").unwrap().is_some());
        assert_eq!(run(b"+123456789"), Err(ProtocolError::TooBigReplyLine));
    }

    #[test]
    fn huge_declared_sizes_wait_without_allocating() {
        let mut f = framer();
        let mut buf = BytesMut::from(&b"*2147483647\r\n$536870912\r\nxy"[..]);
        assert_eq!(f.next(&mut buf), Ok(None));
        assert_eq!(buf.len(), 27);
        assert_eq!(f.stack.len(), 1);
        assert!(f.stack.capacity() <= 16);
        assert_eq!(f.pending_bulk, Some(536_870_912));
    }

    #[test]
    fn large_reply_in_small_reads_is_linear() {
        let mut input = b"*200000\r\n".to_vec();
        for i in 0..200_000 {
            let v = format!("value:{i}");
            input.extend(format!("${}\r\n{v}\r\n", v.len()).bytes());
        }
        let mut f = framer();
        let mut buf = BytesMut::new();
        let mut got = None;
        let mut calls = 0u64;
        for chunk in input.chunks(16 * 1024) {
            buf.extend_from_slice(chunk);
            calls += 1;
            if let Some(r) = f.next(&mut buf).unwrap() {
                got = Some(r);
            }
        }
        assert_eq!(&got.unwrap().raw[..], &input[..]);
        assert!(f.scanned() <= input.len() as u64 + calls, "{}", f.scanned());
    }

    #[test]
    fn decode_helpers() {
        use redis_protocol::resp2::types::BytesFrame as F2;
        use redis_protocol::resp3::types::BytesFrame as F3;
        let raw = Bytes::from_static(b"*2\r\n$4\r\nrole\r\n:5\r\n");
        match decode_resp2(&raw).unwrap() {
            F2::Array(items) => {
                assert_eq!(items.len(), 2);
                assert_eq!(items[0], F2::BulkString(Bytes::from_static(b"role")));
                assert_eq!(items[1], F2::Integer(5));
            }
            other => panic!("{other:?}"),
        }
        let raw = Bytes::from_static(b"%1\r\n+a\r\n#t\r\n");
        assert!(matches!(decode_resp3(&raw).unwrap(), F3::Map { .. }));
        // Resp3-only types are a decode error under RESP2.
        assert!(matches!(decode_resp2(&raw), Err(ProtocolError::Decode(_))));
        // Deep frames never reach the recursive decoder.
        let mut deep = b"*1\r\n".repeat(33);
        deep.extend(b":1\r\n");
        assert_eq!(
            decode_resp2(&Bytes::from(deep)),
            Err(ProtocolError::TooDeep(32))
        );
        assert!(matches!(
            decode_resp2(&Bytes::from_static(b":1\r\n:2\r\n")),
            Err(ProtocolError::Decode(_))
        ));
        assert!(matches!(
            decode_resp3(&Bytes::from_static(b"*2\r\n:1\r\n")),
            Err(ProtocolError::Decode(_))
        ));
    }

    // === property tests ===

    /// A RESP value for tests, with its own encoder.
    #[derive(Debug, Clone)]
    enum V {
        Simple(String),
        Error(String),
        Int(i64),
        Bulk(Vec<u8>),
        NullBulk,
        NullArray,
        Array(Vec<V>),
        Null,
        Double(String),
        Bool(bool),
        Big(String),
        Verbatim(Vec<u8>),
        BlobError(Vec<u8>),
        Map(Vec<(V, V)>),
        Set(Vec<V>),
        Push(Vec<V>),
        Attr(Vec<(V, V)>, Box<V>),
    }

    impl V {
        fn encode(&self, out: &mut Vec<u8>) {
            let agg = |out: &mut Vec<u8>, ty: char, items: &[V]| {
                out.extend(format!("{ty}{}\r\n", items.len()).bytes());
                items.iter().for_each(|v| v.encode(out));
            };
            let pairs = |out: &mut Vec<u8>, ty: char, items: &[(V, V)]| {
                out.extend(format!("{ty}{}\r\n", items.len()).bytes());
                for (k, v) in items {
                    k.encode(out);
                    v.encode(out);
                }
            };
            let blob = |out: &mut Vec<u8>, ty: char, data: &[u8]| {
                out.extend(format!("{ty}{}\r\n", data.len()).bytes());
                out.extend(data);
                out.extend(b"\r\n");
            };
            match self {
                V::Simple(s) => out.extend(format!("+{s}\r\n").bytes()),
                V::Error(s) => out.extend(format!("-{s}\r\n").bytes()),
                V::Int(i) => out.extend(format!(":{i}\r\n").bytes()),
                V::Bulk(b) => blob(out, '$', b),
                V::NullBulk => out.extend(b"$-1\r\n"),
                V::NullArray => out.extend(b"*-1\r\n"),
                V::Array(items) => agg(out, '*', items),
                V::Null => out.extend(b"_\r\n"),
                V::Double(d) => out.extend(format!(",{d}\r\n").bytes()),
                V::Bool(b) => out.extend(if *b { b"#t\r\n" } else { b"#f\r\n" }),
                V::Big(n) => out.extend(format!("({n}\r\n").bytes()),
                V::Verbatim(b) => blob(out, '=', &[b"txt:", &b[..]].concat()),
                V::BlobError(b) => blob(out, '!', b),
                V::Map(items) => pairs(out, '%', items),
                V::Set(items) => agg(out, '~', items),
                V::Push(items) => agg(out, '>', items),
                V::Attr(attrs, v) => {
                    pairs(out, '|', attrs);
                    v.encode(out);
                }
            }
        }

        fn kind(&self) -> ReplyKind {
            match self {
                V::Simple(_) => ReplyKind::Simple,
                V::Error(_) | V::BlobError(_) => ReplyKind::Error,
                V::Int(_) => ReplyKind::Integer,
                V::Bulk(_) => ReplyKind::Bulk,
                V::NullBulk | V::NullArray | V::Null => ReplyKind::Null,
                V::Array(_) => ReplyKind::Array,
                V::Double(_) | V::Bool(_) | V::Big(_) | V::Verbatim(_) => ReplyKind::Other,
                V::Map(_) => ReplyKind::Map,
                V::Set(_) => ReplyKind::Set,
                V::Push(_) => ReplyKind::Push,
                V::Attr(_, v) => v.kind(),
            }
        }

        /// Whether redis-protocol's RESP3 decoder can represent this value:
        /// no RESP2 nulls (Redis sends `_` in RESP3), no attributes, and only
        /// strings and integers as map keys and set members (it hashes them).
        fn decodable3(&self) -> bool {
            let key = |v: &V| matches!(v, V::Simple(_) | V::Bulk(_) | V::Int(_));
            match self {
                V::NullBulk | V::NullArray | V::Attr(..) => false,
                V::Array(items) | V::Push(items) => items.iter().all(V::decodable3),
                V::Set(items) => items.iter().all(key),
                V::Map(pairs) => pairs.iter().all(|(k, v)| key(k) && v.decodable3()),
                _ => true,
            }
        }

        fn bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            self.encode(&mut out);
            out
        }
    }

    fn line() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9 ]{0,12}"
    }

    fn leaf(resp3: bool) -> BoxedStrategy<V> {
        let resp2 = prop_oneof![
            line().prop_map(V::Simple),
            line().prop_map(|s| V::Error(format!("ERR {s}"))),
            any::<i64>().prop_map(V::Int),
            prop::collection::vec(any::<u8>(), 0..24).prop_map(V::Bulk),
            Just(V::NullBulk),
            Just(V::NullArray),
        ];
        if !resp3 {
            return resp2.boxed();
        }
        prop_oneof![
            3 => resp2,
            1 => Just(V::Null),
            1 => (-1000i32..1000, 0u8..100).prop_map(|(a, b)| V::Double(format!("{a}.{b}"))),
            1 => any::<bool>().prop_map(V::Bool),
            1 => "[1-9][0-9]{0,40}".prop_map(V::Big),
            1 => prop::collection::vec(any::<u8>(), 0..16).prop_map(V::Verbatim),
            1 => prop::collection::vec(any::<u8>(), 0..16).prop_map(V::BlobError),
        ]
        .boxed()
    }

    fn value(resp3: bool) -> BoxedStrategy<V> {
        leaf(resp3)
            .prop_recursive(5, 48, 5, move |inner| {
                let list = prop::collection::vec(inner.clone(), 0..5);
                let kv = prop::collection::vec((inner.clone(), inner.clone()), 0..3);
                if resp3 {
                    prop_oneof![
                        list.clone().prop_map(V::Array),
                        list.clone().prop_map(V::Set),
                        list.prop_map(V::Push),
                        kv.clone().prop_map(V::Map),
                        (kv, inner).prop_map(|(a, v)| V::Attr(a, Box::new(v))),
                    ]
                    .boxed()
                } else {
                    list.prop_map(V::Array).boxed()
                }
            })
            .boxed()
    }

    fn feed_chunked(
        f: &mut ReplyFramer,
        input: &[u8],
        sizes: &[usize],
    ) -> (Result<(), ProtocolError>, Vec<Reply>, BytesMut) {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < input.len() {
            let n = sizes[i % sizes.len()].min(input.len() - at);
            buf.extend_from_slice(&input[at..at + n]);
            at += n;
            i += 1;
            loop {
                match f.next(&mut buf) {
                    Ok(Some(r)) => out.push(r),
                    Ok(None) => break,
                    Err(e) => return (Err(e), out, buf),
                }
            }
        }
        (Ok(()), out, buf)
    }

    fn check_stream(values: &[V], sizes: &[usize]) -> Result<(), TestCaseError> {
        let encoded: Vec<Vec<u8>> = values.iter().map(V::bytes).collect();
        let input = encoded.concat();
        let (res, whole, rest) = feed_chunked(&mut framer(), &input, &[input.len().max(1)]);
        prop_assert_eq!(res, Ok(()));
        prop_assert!(rest.is_empty());
        let (res, chunked, rest) = feed_chunked(&mut framer(), &input, sizes);
        prop_assert_eq!(res, Ok(()));
        prop_assert!(rest.is_empty());
        prop_assert_eq!(&whole, &chunked);
        prop_assert_eq!(whole.len(), values.len());
        for ((r, v), bytes) in whole.iter().zip(values).zip(&encoded) {
            prop_assert_eq!(&r.raw[..], &bytes[..]);
            prop_assert_eq!(r.kind, v.kind());
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn resp2_any_split_gives_the_same_replies(
            values in prop::collection::vec(value(false), 1..6),
            sizes in prop::collection::vec(1usize..40, 1..10),
        ) {
            check_stream(&values, &sizes)?;
            // The framed bytes are what redis-protocol decodes, too.
            for v in &values {
                let raw = Bytes::from(v.bytes());
                let ours = decode_resp2(&raw);
                let theirs = resp2::decode::decode_bytes(&raw).unwrap().unwrap().0;
                prop_assert_eq!(ours, Ok(theirs));
            }
        }

        #[test]
        fn resp3_any_split_gives_the_same_replies(
            values in prop::collection::vec(value(true), 1..6),
            sizes in prop::collection::vec(1usize..40, 1..10),
        ) {
            check_stream(&values, &sizes)?;
            // The frames hand over to redis-protocol intact.
            for v in values.iter().filter(|v| v.decodable3()) {
                let raw = Bytes::from(v.bytes());
                let decoded = decode_resp3(&raw);
                prop_assert!(decoded.is_ok(), "{:?}: {:?}", raw, decoded);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            pieces in prop::collection::vec(
                prop_oneof![
                    prop::sample::select(vec![
                        &b"*"[..], b"$", b"%", b"|", b">", b"~", b"!", b"=", b"+", b"-",
                        b":", b"_", b"\r\n", b"\r", b"1", b"2", b"3", b"-1", b"0", b"?", b"ab",
                    ]).prop_map(<[u8]>::to_vec),
                    prop::collection::vec(any::<u8>(), 0..8),
                ],
                0..80,
            ),
            sizes in prop::collection::vec(1usize..50, 1..10),
        ) {
            let input = pieces.concat();
            let limits = ReplyLimits { max_depth: 3, max_bulk_len: 16, max_elements: 4 };
            let mut f = ReplyFramer::new(limits);
            let (res, replies, _) = feed_chunked(&mut f, &input, &sizes);
            prop_assert!(f.stack.len() <= 3);
            prop_assert!(f.pending_bulk.is_none_or(|n| n <= 16));
            let mut g = ReplyFramer::new(limits);
            let (res2, replies2, _) = feed_chunked(&mut g, &input, &[input.len().max(1)]);
            prop_assert_eq!(res, res2);
            prop_assert_eq!(replies, replies2);
        }
    }
}
