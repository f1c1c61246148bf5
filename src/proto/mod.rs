//! Frame boundaries for RESP traffic, found without decoding.
//!
//! `redis-protocol` 6 decodes recursively (a few hundred bytes of nested arrays
//! overflow a 2 MiB stack), re-parses a partial frame from its first byte on
//! every call (O(n²) for a big pipeline arriving in small reads), rejects inline
//! commands and its codec drops the wire bytes. The framers here are
//! incremental and iterative: each keeps its parse position between calls, so
//! every byte of a frame is examined at most once however the frame is split
//! across reads, nesting lives in an explicit stack, every size is checked
//! against a hard limit before anything waits for it, and a complete frame is
//! handed out as the exact bytes that arrived (`BytesMut::split_to(n).freeze()`,
//! no copy, no re-encode).
//!
//! - [`request`]: client requests, accepting exactly what redis-server 7.0
//!   accepts (multibulk arrays of bulk strings and inline lines) with its limits
//!   and its error texts.
//! - [`reply`]: upstream replies, RESP2 and RESP3, depth-limited; plus helpers
//!   that hand an already-bounded frame to `redis-protocol` for decoding.

pub mod command;
pub mod decode;
pub mod downgrade;
pub mod encode;
pub mod refusal;
pub mod reply;
pub mod request;

pub use encode::Proto;

pub use reply::{Reply, ReplyFramer, ReplyKind, ReplyLimits, decode_resp2, decode_resp3};
pub use request::{Command, RequestFramer, RequestLimits};

use bytes::Bytes;

/// Why a byte stream is not valid RESP.
///
/// `Display` is the text Redis 7.0 itself replies with, without the `ERR `
/// prefix, where Redis has such an error; [`ProtocolError::to_error_reply`]
/// builds the whole `-ERR ...\r\n` line. After any of these the connection
/// cannot be resynchronised and must be closed once the reply is written.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// An inline request with more than the inline limit (64 KiB) before `\n`.
    #[error("Protocol error: too big inline request")]
    TooBigInlineRequest,
    /// A `*<count>` line longer than the inline limit without `\r`.
    #[error("Protocol error: too big mbulk count string")]
    TooBigMbulkCountString,
    /// The request count is not a Redis integer or is above the limit
    /// (INT_MAX). Also used for a malformed aggregate count in a reply.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// Inside a request multibulk, a line that does not start with `$`.
    #[error("Protocol error: expected '$', got '{}'", printable(.0))]
    ExpectedDollar(u8),
    /// A `$<len>` line longer than the inline limit without `\r`.
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCountString,
    /// A bulk length that is negative, not an integer, or above
    /// `proto-max-bulk-len`. Also used for a malformed length in a reply.
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An inline request whose quoting `sdssplitargs` rejects.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// More than 10 arguments before AUTH, when a password is required.
    #[error("Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// A bulk longer than 16384 bytes before AUTH, when a password is required.
    #[error("Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulkLength,
    /// The two bytes after a bulk body are not `\r\n`. Redis skips them
    /// unchecked; a proxy must not, or it would forward a frame that another
    /// parser reads differently.
    #[error("Protocol error: expected CRLF after bulk")]
    BulkNotTerminated,
    /// A `\r` ending a header or line is not followed by `\n` (Redis skips the
    /// byte unchecked; see [`ProtocolError::BulkNotTerminated`]).
    #[error("Protocol error: expected LF after CR")]
    LineNotTerminated,
    /// A NUL byte before the `\n` of an inline request. Redis looks for the
    /// newline with `strchr`, which stops at NUL, so such a line never
    /// completes there; rejecting it at once beats waiting for the 64 KiB limit.
    #[error("Protocol error: unexpected NUL byte in inline request")]
    InlineNul,
    /// A reply starting with a byte that is not a RESP2/RESP3 type.
    #[error("Protocol error: invalid reply type '{}'", printable(.0))]
    InvalidReplyType(u8),
    /// A streamed RESP3 reply (`$?`, `*?`, ...), which Redis never sends.
    #[error("Protocol error: streamed RESP3 replies are not supported")]
    StreamedReply,
    /// A reply nested deeper than the framer's depth limit.
    #[error("Protocol error: reply nested deeper than {0} levels")]
    TooDeep(usize),
    /// An aggregate reply with more elements than the per-aggregate limit.
    #[error("Protocol error: too many elements in aggregate reply")]
    TooManyElements,
    /// A simple reply line (`+`, `-`, `:` ...) longer than the bulk limit.
    #[error("Protocol error: too big reply line")]
    TooBigReplyLine,
    /// `redis-protocol` rejected a frame handed to a decode helper.
    #[error("Protocol error: {0}")]
    Decode(String),
}

impl ProtocolError {
    /// The complete RESP error reply, `-ERR <Display>\r\n`, safe to write to a
    /// client (any CR or LF in the text is replaced by a space).
    pub fn to_error_reply(&self) -> Bytes {
        let text = self.to_string().replace(['\r', '\n'], " ");
        Bytes::from(format!("-ERR {text}\r\n"))
    }
}

/// The byte as Redis's `%c` would print it, made safe for an error line: Redis
/// turns CR and LF in error texts into spaces; non-ASCII bytes become `?` so
/// the text stays valid UTF-8.
fn printable(b: &u8) -> char {
    match *b {
        b'\r' | b'\n' => ' ',
        b if b.is_ascii() => b as char,
        _ => '?',
    }
}

/// Redis's `string2ll`: an optional `-`, then digits with no leading zero
/// (`0` alone is fine, `-0` is not), no `+`, no spaces, at most 21 bytes, in
/// range for i64. Anything Redis would not parse returns `None`.
pub(crate) fn parse_ll(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(v)
    } else {
        i64::try_from(v).ok()
    }
}

/// Where a search for a line terminator stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The terminator is at this offset of the buffer.
    Found(usize),
    /// Not in the bytes seen so far; the line may still end within its limit.
    Partial,
    /// More than `max` bytes follow the line start without a terminator.
    TooLong,
}

/// Resumable search for the first byte matching `is_end` in a line starting
/// at `start`, which may hold at most `max` bytes before its terminator (so
/// the terminator sits at `start + max` at the latest).
///
/// `scan_from` is where the previous call stopped; it is advanced past every
/// byte found not to match, so across calls each byte is examined once.
/// `scanned` counts examined bytes, to prove that in tests.
pub(crate) fn scan_line(
    buf: &[u8],
    start: usize,
    max: usize,
    scan_from: &mut usize,
    scanned: &mut u64,
    is_end: impl Fn(u8) -> bool,
) -> Scan {
    let window_end = start.saturating_add(max).saturating_add(1).min(buf.len());
    let from = (*scan_from).max(start);
    if from < window_end {
        let hay = &buf[from..window_end];
        match hay.iter().position(|&b| is_end(b)) {
            Some(i) => {
                *scanned += i as u64 + 1;
                *scan_from = from + i;
                return Scan::Found(from + i);
            }
            None => {
                *scanned += hay.len() as u64;
                *scan_from = window_end;
            }
        }
    }
    if buf.len() - start > max {
        Scan::TooLong
    } else {
        Scan::Partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ll_matches_string2ll() {
        assert_eq!(parse_ll(b"0"), Some(0));
        assert_eq!(parse_ll(b"12"), Some(12));
        assert_eq!(parse_ll(b"-1"), Some(-1));
        assert_eq!(parse_ll(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_ll(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"007",
            b"+1",
            b" 1",
            b"1 ",
            b"1a",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_ll(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn error_reply_is_one_safe_line() {
        assert_eq!(
            &ProtocolError::ExpectedDollar(b'\r').to_error_reply()[..],
            b"-ERR Protocol error: expected '$', got ' '\r\n"
        );
        assert_eq!(
            &ProtocolError::Decode("a\r\nb".into()).to_error_reply()[..],
            b"-ERR Protocol error: a  b\r\n"
        );
        assert_eq!(
            ProtocolError::ExpectedDollar(0xff).to_string(),
            "Protocol error: expected '$', got '?'"
        );
    }

    #[test]
    fn scan_line_resumes_and_limits() {
        let mut from = 0;
        let mut n = 0;
        let is_cr = |b| b == b'\r';
        assert_eq!(
            scan_line(b"abc", 0, 4, &mut from, &mut n, is_cr),
            Scan::Partial
        );
        assert_eq!((from, n), (3, 3));
        assert_eq!(
            scan_line(b"abcd\r", 0, 4, &mut from, &mut n, is_cr),
            Scan::Found(4)
        );
        assert_eq!((from, n), (4, 5));
        let mut from = 0;
        assert_eq!(
            scan_line(b"abcd", 0, 4, &mut from, &mut n, is_cr),
            Scan::Partial
        );
        assert_eq!(
            scan_line(b"abcde", 0, 4, &mut from, &mut n, is_cr),
            Scan::TooLong
        );
    }
}
