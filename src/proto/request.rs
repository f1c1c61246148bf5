//! Client requests, framed exactly as redis-server 7.0 accepts them.
//!
//! A request starting with `*` is a multibulk: `*<count>\r\n` followed by
//! `count` bulk strings `$<len>\r\n<bytes>\r\n`. Anything else is an inline
//! command: one line ending in `\n`, split into arguments the way Redis's
//! `sdssplitargs` does. The limits, their order and the error texts follow
//! `processMultibulkBuffer` / `processInlineBuffer` in Redis 7.0, with two
//! deliberate tightenings a proxy needs (see [`ProtocolError::BulkNotTerminated`]
//! and [`ProtocolError::LineNotTerminated`]).
//!
//! Where Redis's verdict depends on how the bytes were split into reads (a
//! line is "too big" only if the limit is crossed before its terminator
//! arrives), the framer decides as if the bytes arrived one at a time, so the
//! result never depends on read sizes.

use bytes::{Buf, BytesMut};

use super::{ProtocolError, Scan, parse_ll, scan_line};

/// Before AUTH (when a password is required) Redis accepts at most this many
/// arguments per multibulk...
const UNAUTH_MAX_MULTIBULK: i64 = 10;
/// ...and bulk strings of at most this many bytes.
const UNAUTH_MAX_BULK: i64 = 16384;
/// The argument table is never preallocated beyond this, whatever the
/// declared count (Redis does the same with `argv`).
const ARGS_PREALLOC_MAX: usize = 1024;

/// The limits Redis applies to client requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Largest bulk string (`proto-max-bulk-len`, default 512 MiB).
    pub max_bulk_len: usize,
    /// Longest inline request, and longest `*`/`$` header line
    /// (`PROTO_INLINE_MAX_SIZE`, 64 KiB).
    pub max_inline_len: usize,
    /// Most arguments in one multibulk (Redis: INT_MAX).
    pub max_multibulk_len: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self {
            max_bulk_len: 512 * 1024 * 1024,
            max_inline_len: 64 * 1024,
            max_multibulk_len: i32::MAX as usize,
        }
    }
}

/// Where the framer stands within the frame at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between frames.
    Idle,
    /// Looking for the end of the `*<count>` line.
    Count,
    /// Looking for the end of a `$<len>` line at `pos`.
    BulkLen,
    /// Waiting for a bulk body of this many bytes (plus CRLF) at `pos`.
    BulkBody(usize),
    /// Looking for the `\n` of an inline request.
    Inline,
}

/// Resumable request framer: call [`RequestFramer::next`] after every read.
///
/// Between calls the caller may only append to the buffer; the frame being
/// parsed stays at its front and the framer keeps offsets into it.
#[derive(Debug)]
pub struct RequestFramer {
    limits: RequestLimits,
    unauthenticated: bool,
    state: State,
    /// Offset (from the frame start, `buf[0]`) of the next unparsed byte.
    pos: usize,
    /// Where the search for the current line's terminator resumes.
    scan_from: usize,
    /// Bulk strings still expected in the current multibulk.
    remaining: usize,
    /// `(start, end)` of each argument parsed so far, relative to the frame.
    args: Spans,
    /// Bytes examined while looking for line ends, over the framer's life.
    scanned: u64,
}

impl RequestFramer {
    pub fn new(limits: RequestLimits) -> Self {
        Self {
            limits,
            unauthenticated: false,
            state: State::Idle,
            pos: 0,
            scan_from: 0,
            remaining: 0,
            args: Spans::new(),
            scanned: 0,
        }
    }

    /// Before AUTH when a password is required, Redis caps the multibulk
    /// count at 10 and the bulk length at 16384 ("unauthenticated multibulk
    /// length" / "unauthenticated bulk length").
    pub fn set_unauthenticated(&mut self, on: bool) {
        self.unauthenticated = on;
    }

    /// Bytes examined so far while searching for line terminators. Each byte
    /// of input is examined at most once (plus one re-check of a trailing
    /// `\r` per call), however the input is split; bulk bodies are skipped by
    /// length, not examined.
    pub fn scanned(&self) -> u64 {
        self.scanned
    }

    /// Frames the next command at the front of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed; the partial frame stays in `buf`
    /// (empty requests Redis skips, `*0`, `*-1` and blank inline lines, are
    /// consumed). `Ok(Some(cmd))`: one complete command, its bytes split off
    /// the front of `buf`. `Err`: the client sent something Redis rejects;
    /// reply with [`ProtocolError::to_error_reply`] and close the connection
    /// (the framer's state is then meaningless).
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, ProtocolError> {
        loop {
            match self.state {
                State::Idle => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    self.state = if first == b'*' {
                        State::Count
                    } else {
                        State::Inline
                    };
                }
                State::Count => {
                    let Some(cr) = self.find_cr(buf, 0, ProtocolError::TooBigMbulkCountString)?
                    else {
                        return Ok(None);
                    };
                    let count = parse_ll(&buf[1..cr])
                        .filter(|&n| n <= i64::from(i32::MAX) && n <= self.max_count())
                        .ok_or(ProtocolError::InvalidMultibulkLength)?;
                    if self.unauthenticated && count > UNAUTH_MAX_MULTIBULK {
                        return Err(ProtocolError::UnauthenticatedMultibulkLength);
                    }
                    expect_lf(buf, cr)?;
                    if count <= 0 {
                        // Redis treats `*0` and `*-N` as an empty command
                        // and moves on to the next one.
                        buf.advance(cr + 2);
                        self.reset();
                        continue;
                    }
                    let count = count as usize;
                    self.remaining = count;
                    // Short commands (GET, SET ...) keep their spans inline:
                    // no allocation per request.
                    self.args = Spans::with_capacity(count.min(ARGS_PREALLOC_MAX));
                    self.pos = cr + 2;
                    self.scan_from = self.pos;
                    self.state = State::BulkLen;
                }
                State::BulkLen => {
                    let start = self.pos;
                    let Some(cr) =
                        self.find_cr(buf, start, ProtocolError::TooBigBulkCountString)?
                    else {
                        return Ok(None);
                    };
                    if buf[start] != b'$' {
                        return Err(ProtocolError::ExpectedDollar(buf[start]));
                    }
                    let len = parse_ll(&buf[start + 1..cr])
                        .filter(|&n| n >= 0 && n as u64 <= self.limits.max_bulk_len as u64)
                        .ok_or(ProtocolError::InvalidBulkLength)?;
                    if self.unauthenticated && len > UNAUTH_MAX_BULK {
                        return Err(ProtocolError::UnauthenticatedBulkLength);
                    }
                    expect_lf(buf, cr)?;
                    self.pos = cr + 2;
                    self.state = State::BulkBody(len as usize);
                }
                State::BulkBody(len) => {
                    let end = self.pos + len;
                    if buf.len() < end + 2 {
                        return Ok(None);
                    }
                    if buf[end..end + 2] != *b"\r\n" {
                        return Err(ProtocolError::BulkNotTerminated);
                    }
                    self.args.push((self.pos, end));
                    self.pos = end + 2;
                    self.scan_from = self.pos;
                    self.remaining -= 1;
                    if self.remaining > 0 {
                        self.state = State::BulkLen;
                        continue;
                    }
                    let raw = buf.split_to(self.pos).freeze();
                    let args = std::mem::take(&mut self.args);
                    self.reset();
                    return Ok(Some(Command { raw, args }));
                }
                State::Inline => {
                    let found = scan_line(
                        buf,
                        0,
                        self.limits.max_inline_len,
                        &mut self.scan_from,
                        &mut self.scanned,
                        |b| b == b'\n' || b == 0,
                    );
                    let nl = match found {
                        Scan::Found(i) if buf[i] == 0 => return Err(ProtocolError::InlineNul),
                        Scan::Found(i) => i,
                        Scan::Partial => return Ok(None),
                        Scan::TooLong => return Err(ProtocolError::TooBigInlineRequest),
                    };
                    let line = match buf[..nl].strip_suffix(b"\r") {
                        Some(line) => line,
                        None => &buf[..nl],
                    };
                    let cmd = split_inline(line)?;
                    buf.advance(nl + 1);
                    self.reset();
                    if cmd.argc() > 0 {
                        return Ok(Some(cmd));
                    }
                }
            }
        }
    }

    fn max_count(&self) -> i64 {
        i64::try_from(self.limits.max_multibulk_len).unwrap_or(i64::MAX)
    }

    /// Finds the `\r` ending the header line at `start`, and makes sure the
    /// byte after it has arrived (Redis waits for it too).
    fn find_cr(
        &mut self,
        buf: &[u8],
        start: usize,
        too_long: ProtocolError,
    ) -> Result<Option<usize>, ProtocolError> {
        let max = self.limits.max_inline_len;
        match scan_line(
            buf,
            start,
            max,
            &mut self.scan_from,
            &mut self.scanned,
            |b| b == b'\r',
        ) {
            Scan::Found(cr) if cr + 1 < buf.len() => Ok(Some(cr)),
            Scan::Found(_) | Scan::Partial => Ok(None),
            Scan::TooLong => Err(too_long),
        }
    }

    fn reset(&mut self) {
        self.state = State::Idle;
        self.pos = 0;
        self.scan_from = 0;
        self.remaining = 0;
        self.args.clear();
    }
}

fn expect_lf(buf: &[u8], cr: usize) -> Result<(), ProtocolError> {
    if buf[cr + 1] == b'\n' {
        Ok(())
    } else {
        Err(ProtocolError::LineNotTerminated)
    }
}

/// Splits an inline request line (without its `\r\n`) like Redis's
/// `sdssplitargs`, and encodes the result as a multibulk.
///
/// Arguments are separated by whitespace; `"..."` takes `\n \r \t \b \a`,
/// `\xHH` and `\<any>` escapes, `'...'` only `\'`; a closing quote must be
/// followed by whitespace or the end of the line. A quote may also open in
/// the middle of a bare word (`a"b c"` is the one argument `ab c`).
fn split_inline(line: &[u8]) -> Result<Command, ProtocolError> {
    // Like the C original, reading past the end yields NUL (the caller has
    // rejected lines containing a NUL byte).
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let is_space = |b: u8| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r');
    let mut data = Vec::with_capacity(line.len());
    let mut spans = Vec::new();
    let mut p = 0;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            break;
        }
        let start = data.len();
        let (mut in_dq, mut in_sq, mut done) = (false, false, false);
        while !done {
            let c = at(p);
            if in_dq {
                if c == b'\\' && at(p + 1) == b'x' && is_hex(at(p + 2)) && is_hex(at(p + 3)) {
                    data.push(hex(at(p + 2)) << 4 | hex(at(p + 3)));
                    p += 3;
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    data.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    done = true;
                } else if c == 0 {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    data.push(c);
                }
            } else if in_sq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    data.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return Err(ProtocolError::UnbalancedQuotes);
                    }
                    done = true;
                } else if c == 0 {
                    return Err(ProtocolError::UnbalancedQuotes);
                } else {
                    data.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    _ => data.push(c),
                }
            }
            if p < line.len() {
                p += 1;
            }
        }
        spans.push((start, data.len()));
    }
    Ok(Command::encode(spans.iter().map(|&(s, e)| &data[s..e])))
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

pub use super::command::Command;
use super::command::Spans;

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use proptest::prelude::*;

    fn framer() -> RequestFramer {
        RequestFramer::new(RequestLimits::default())
    }

    /// Feeds `input` at once and returns every command, or the first error.
    fn all(input: &[u8]) -> Result<Vec<Command>, ProtocolError> {
        let mut f = framer();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(cmd) = f.next(&mut buf)? {
            out.push(cmd);
        }
        Ok(out)
    }

    fn args_of(cmd: &Command) -> Vec<Vec<u8>> {
        cmd.args().map(<[u8]>::to_vec).collect()
    }

    fn err(input: &[u8]) -> String {
        all(input).unwrap_err().to_string()
    }

    fn one(input: &[u8]) -> Vec<Vec<u8>> {
        let cmds = all(input).unwrap();
        assert_eq!(cmds.len(), 1, "{:?}", String::from_utf8_lossy(input));
        args_of(&cmds[0])
    }

    fn v(args: &[&str]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn multibulk_raw_is_the_input() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\r\nb\0\r\n*1\r\n$4\r\nPING\r\n";
        let cmds = all(input).unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(&cmds[0].raw()[..], &input[..31]);
        assert_eq!(&cmds[1].raw()[..], &input[31..]);
        assert_eq!(args_of(&cmds[0]), vec![&b"SET"[..], b"k", b"a\r\nb\0"]);
        assert_eq!(cmds[0].argc(), 3);
        assert_eq!(cmds[0].arg(3), None);
        assert!(cmds[0].name_eq("set"));
        assert!(cmds[0].name_eq("SET"));
        assert!(cmds[0].arg_eq(1, "K"));
        assert!(!cmds[0].arg_eq(7, "K"));
        assert_eq!(cmds[1].name(), b"PING");
    }

    #[test]
    fn partial_frames_wait_and_keep_the_buffer() {
        let input = b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n";
        let mut f = framer();
        let mut buf = BytesMut::new();
        for (i, &b) in input.iter().enumerate() {
            buf.put_u8(b);
            let got = f.next(&mut buf).unwrap();
            if i + 1 < input.len() {
                assert!(got.is_none());
                assert_eq!(&buf[..], &input[..=i]);
            } else {
                assert_eq!(&got.unwrap().raw()[..], input);
                assert!(buf.is_empty());
            }
        }
    }

    #[test]
    fn empty_multibulks_are_skipped() {
        let cmds = all(b"*0\r\n*-1\r\n*-7\r\n*1\r\n$4\r\nPING\r\n*0\r\n").unwrap();
        assert_eq!(cmds.len(), 1);
        assert_eq!(&cmds[0].raw()[..], b"*1\r\n$4\r\nPING\r\n");
        let mut buf = BytesMut::from(&b"*0\r\n*0\r\n"[..]);
        assert_eq!(framer().next(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn empty_bulk_and_binary_args() {
        assert_eq!(
            one(b"*2\r\n$0\r\n\r\n$1\r\n\xff\r\n"),
            vec![vec![], vec![0xff]]
        );
    }

    #[test]
    fn inline_commands() {
        assert_eq!(one(b"PING\r\n"), v(&["PING"]));
        assert_eq!(one(b"PING\n"), v(&["PING"]));
        assert_eq!(one(b"  set  a\t b \r\n"), v(&["set", "a", "b"]));
        assert_eq!(one(b"a\rb\n"), v(&["a", "b"]));
        assert_eq!(one(b"a\x0bb\n"), v(&["a\x0bb"]));
        assert_eq!(one(b"\x0b a\n"), v(&["a"]));
        assert_eq!(one(b"set k \"a b\"\n"), v(&["set", "k", "a b"]));
        assert_eq!(
            one(b"echo \"\\n\\r\\t\\b\\a\\\\\\\"\\q\\x41\\x4a\\xzz\"\n"),
            vec![b"echo".to_vec(), b"\n\r\t\x08\x07\\\"qAJxzz".to_vec()]
        );
        assert_eq!(one(b"echo 'it\\'s \\n'\n"), v(&["echo", "it's \\n"]));
        assert_eq!(one(b"echo \"\" ''\n"), v(&["echo", "", ""]));
        assert_eq!(one(b"a\"b c\" 'x'\n"), v(&["ab c", "x"]));
        let cmd = &all(b"get k\n").unwrap()[0];
        assert_eq!(&cmd.raw()[..], b"*2\r\n$3\r\nget\r\n$1\r\nk\r\n");
        assert_eq!(cmd.raw(), Command::from_args(&[b"get", b"k"]).raw());
    }

    #[test]
    fn a_quote_inside_a_word_continues_it() {
        // `a"b c"d" e"`: the second closing quote is followed by `d`.
        assert_eq!(
            err(b"a\"b c\"d\" e\"\n"),
            "Protocol error: unbalanced quotes in request"
        );
        assert_eq!(one(b"a\"b c\"\n"), v(&["ab c"]));
    }

    #[test]
    fn blank_inline_lines_are_skipped() {
        let cmds = all(b"\r\n \t \n\nPING\n  \n").unwrap();
        assert_eq!(cmds.len(), 1);
        let mut buf = BytesMut::from(&b"\n\r\n"[..]);
        assert_eq!(framer().next(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn unbalanced_quotes() {
        for bad in [
            &b"echo \"abc\n"[..],
            b"echo \"abc\"x\n",
            b"echo 'abc\n",
            b"echo 'abc'x\n",
            b"echo \"abc\\\"\n",
            b"echo \"\\\n",
        ] {
            assert_eq!(err(bad), "Protocol error: unbalanced quotes in request");
        }
    }

    #[test]
    fn nul_in_inline_line_is_rejected() {
        assert_eq!(
            err(b"PING\0\r\n"),
            "Protocol error: unexpected NUL byte in inline request"
        );
        let mut buf = BytesMut::from(&b"PI\0"[..]);
        assert_eq!(framer().next(&mut buf), Err(ProtocolError::InlineNul));
    }

    #[test]
    fn too_big_inline_request() {
        let limit = RequestLimits::default().max_inline_len;
        let mut buf = BytesMut::from(&vec![b'a'; limit][..]);
        let mut f = framer();
        assert_eq!(f.next(&mut buf), Ok(None));
        buf.put_u8(b'a');
        assert_eq!(
            f.next(&mut buf).unwrap_err().to_string(),
            "Protocol error: too big inline request"
        );
        // The newline may sit right at the limit.
        let mut line = vec![b'a'; limit];
        line.push(b'\n');
        assert_eq!(one(&line)[0].len(), limit);
        line.insert(0, b'a');
        assert_eq!(err(&line), "Protocol error: too big inline request");
    }

    #[test]
    fn too_big_mbulk_count_string() {
        let limit = RequestLimits::default().max_inline_len;
        let mut input = vec![b'*'];
        input.extend(vec![b'1'; limit - 1]);
        let mut buf = BytesMut::from(&input[..]);
        let mut f = framer();
        assert_eq!(f.next(&mut buf), Ok(None));
        buf.put_u8(b'1');
        assert_eq!(
            f.next(&mut buf).unwrap_err().to_string(),
            "Protocol error: too big mbulk count string"
        );
    }

    #[test]
    fn invalid_multibulk_length() {
        for bad in [
            &b"*abc\r\n"[..],
            b"*\r\n",
            b"*01\r\n",
            b"*+1\r\n",
            b"*-0\r\n",
            b"*1 \r\n",
            b"*2147483648\r\n",
            b"*99999999999999999999999\r\n",
        ] {
            assert_eq!(err(bad), "Protocol error: invalid multibulk length");
        }
    }

    #[test]
    fn huge_counts_and_lengths_are_not_preallocated() {
        let mut f = framer();
        let mut buf = BytesMut::from(&b"*2147483647\r\n$536870912\r\nab"[..]);
        assert_eq!(f.next(&mut buf), Ok(None));
        assert!(f.args.capacity() <= ARGS_PREALLOC_MAX);
        assert_eq!(f.state, State::BulkBody(536_870_912));
        assert_eq!(
            err(b"*1\r\n$536870913\r\n"),
            "Protocol error: invalid bulk length"
        );
    }

    #[test]
    fn configured_multibulk_limit() {
        let mut f = RequestFramer::new(RequestLimits {
            max_multibulk_len: 2,
            ..RequestLimits::default()
        });
        let mut buf = BytesMut::from(&b"*3\r\n"[..]);
        assert_eq!(f.next(&mut buf), Err(ProtocolError::InvalidMultibulkLength));
    }

    #[test]
    fn expected_dollar() {
        assert_eq!(
            err(b"*1\r\n:1\r\n"),
            "Protocol error: expected '$', got ':'"
        );
        assert_eq!(
            err(b"*2\r\n$1\r\na\r\n*1\r\n"),
            "Protocol error: expected '$', got '*'"
        );
        assert_eq!(err(b"*1\r\n\r\n"), "Protocol error: expected '$', got ' '");
        // Like Redis, the verdict waits for the end of the line.
        let mut buf = BytesMut::from(&b"*1\r\nPING"[..]);
        assert_eq!(framer().next(&mut buf), Ok(None));
    }

    #[test]
    fn too_big_bulk_count_string() {
        let limit = RequestLimits::default().max_inline_len;
        let mut input = b"*1\r\n$".to_vec();
        input.extend(vec![b'1'; limit - 1]);
        let mut buf = BytesMut::from(&input[..]);
        let mut f = framer();
        assert_eq!(f.next(&mut buf), Ok(None));
        buf.put_u8(b'1');
        assert_eq!(
            f.next(&mut buf).unwrap_err().to_string(),
            "Protocol error: too big bulk count string"
        );
    }

    #[test]
    fn invalid_bulk_length() {
        for bad in [
            &b"*1\r\n$-1\r\n"[..],
            b"*1\r\n$-5\r\n",
            b"*1\r\n$abc\r\n",
            b"*1\r\n$\r\n",
            b"*1\r\n$03\r\n",
            b"*1\r\n$99999999999999999999\r\n",
        ] {
            assert_eq!(err(bad), "Protocol error: invalid bulk length");
        }
    }

    #[test]
    fn unauthenticated_limits() {
        let mut f = framer();
        f.set_unauthenticated(true);
        let ten = Command::from_args(&[&b"x"[..]; 10]).into_raw();
        let mut buf = BytesMut::from(&ten[..]);
        assert_eq!(f.next(&mut buf).unwrap().unwrap().argc(), 10);
        let mut buf = BytesMut::from(&b"*11\r\n"[..]);
        assert_eq!(
            f.next(&mut buf).unwrap_err().to_string(),
            "Protocol error: unauthenticated multibulk length"
        );

        let mut f = framer();
        f.set_unauthenticated(true);
        let ok = Command::from_args(&[&[b'v'; 16384][..]]).into_raw();
        let mut buf = BytesMut::from(&ok[..]);
        assert_eq!(f.next(&mut buf).unwrap().unwrap().argc(), 1);
        let mut buf = BytesMut::from(&b"*1\r\n$16385\r\n"[..]);
        assert_eq!(
            f.next(&mut buf).unwrap_err().to_string(),
            "Protocol error: unauthenticated bulk length"
        );

        // Once authenticated, the normal limits apply again.
        let mut f = framer();
        f.set_unauthenticated(true);
        f.set_unauthenticated(false);
        let big = Command::from_args(&[&b"x"[..]; 11]).into_raw();
        let mut buf = BytesMut::from(&big[..]);
        assert_eq!(f.next(&mut buf).unwrap().unwrap().argc(), 11);
    }

    #[test]
    fn crlf_is_required() {
        assert_eq!(
            err(b"*1\r\n$3\r\nfooXX"),
            "Protocol error: expected CRLF after bulk"
        );
        assert_eq!(
            err(b"*1\r\n$3\r\nfoo\rX"),
            "Protocol error: expected CRLF after bulk"
        );
        assert_eq!(
            err(b"*1\rX$3\r\nfoo\r\n"),
            "Protocol error: expected LF after CR"
        );
        assert_eq!(
            err(b"*1\r\n$3\rXfoo\r\n"),
            "Protocol error: expected LF after CR"
        );
    }

    #[test]
    fn from_args_encodes() {
        let cmd = Command::from_args(&[b"SET", b"k", b""]);
        assert_eq!(&cmd.raw()[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
        assert_eq!(cmd.arg(2), Some(&b""[..]));
        let empty = Command::from_args(&[]);
        assert_eq!(&empty.raw()[..], b"*0\r\n");
        assert_eq!(empty.name(), b"");
        assert!(!empty.name_eq(""));
    }

    /// A 200,000-argument MSET read in 16 KiB pieces is scanned once in total.
    #[test]
    fn big_pipeline_in_small_reads_is_linear() {
        let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
        for i in 0..100_000 {
            args.push(format!("key:{i}").into_bytes());
            args.push(format!("value:{i}").into_bytes());
        }
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let input = Command::from_args(&refs).into_raw();
        let mut f = framer();
        let mut buf = BytesMut::new();
        let mut got = None;
        let mut calls = 0u64;
        for chunk in input.chunks(16 * 1024) {
            buf.extend_from_slice(chunk);
            calls += 1;
            if let Some(cmd) = f.next(&mut buf).unwrap() {
                got = Some(cmd);
            }
        }
        let cmd = got.unwrap();
        assert_eq!(cmd.argc(), 200_001);
        assert_eq!(cmd.raw(), &input);
        // Only header lines are searched; each byte once, plus at most one
        // re-check of a trailing `\r` per call.
        assert!(f.scanned() <= input.len() as u64 + calls, "{}", f.scanned());
        assert!(f.scanned() >= 200_001 * 3);
    }

    // === property tests ===

    /// One request as the client might send it.
    #[derive(Debug, Clone)]
    enum Req {
        Multibulk(Vec<Vec<u8>>),
        Inline(Vec<Vec<u8>>),
        /// Input Redis skips: `*0`, `*-1`, blank lines.
        Skipped(&'static [u8]),
    }

    /// Inline encoding that survives any bytes: every argument double-quoted,
    /// with `\xHH` for anything but alphanumerics.
    fn inline_line(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            out.push(b'"');
            for &b in a {
                if b.is_ascii_alphanumeric() {
                    out.push(b);
                } else {
                    out.extend(format!("\\x{b:02x}").bytes());
                }
            }
            out.push(b'"');
        }
        out.extend(b"\r\n");
        out
    }

    fn arb_args() -> impl Strategy<Value = Vec<Vec<u8>>> {
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 1..5)
    }

    fn arb_req() -> impl Strategy<Value = Req> {
        prop_oneof![
            4 => arb_args().prop_map(Req::Multibulk),
            2 => arb_args().prop_map(Req::Inline),
            1 => prop::sample::select(vec![&b"*0\r\n"[..], b"*-1\r\n", b"\r\n", b"  \n"])
                .prop_map(Req::Skipped),
        ]
    }

    /// The arguments and the raw encoding a request must frame to.
    type Expected = (Vec<Vec<u8>>, Vec<u8>);

    fn render(reqs: &[Req]) -> (Vec<u8>, Vec<Expected>) {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for r in reqs {
            match r {
                Req::Multibulk(args) => {
                    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                    let raw = Command::from_args(&refs).into_raw().to_vec();
                    input.extend(&raw);
                    expected.push((args.clone(), raw));
                }
                Req::Inline(args) => {
                    input.extend(inline_line(args));
                    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                    expected.push((args.clone(), Command::from_args(&refs).into_raw().to_vec()));
                }
                Req::Skipped(bytes) => input.extend(*bytes),
            }
        }
        (input, expected)
    }

    /// Feeds `input` in pieces of the given sizes (cycled), draining commands
    /// after each piece.
    fn feed_chunked(
        f: &mut RequestFramer,
        input: &[u8],
        sizes: &[usize],
    ) -> (Result<(), ProtocolError>, Vec<Command>, BytesMut) {
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
                    Ok(Some(cmd)) => out.push(cmd),
                    Ok(None) => break,
                    Err(e) => return (Err(e), out, buf),
                }
            }
        }
        (Ok(()), out, buf)
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_commands(
            reqs in prop::collection::vec(arb_req(), 1..8),
            sizes in prop::collection::vec(1usize..40, 1..10),
        ) {
            let (input, expected) = render(&reqs);
            let whole = all(&input).unwrap();
            let (res, chunked, rest) = feed_chunked(&mut framer(), &input, &sizes);
            prop_assert_eq!(res, Ok(()));
            prop_assert!(rest.is_empty());
            prop_assert_eq!(&whole, &chunked);
            prop_assert_eq!(whole.len(), expected.len());
            for (cmd, (args, raw)) in whole.iter().zip(&expected) {
                prop_assert_eq!(&args_of(cmd), args);
                prop_assert_eq!(&cmd.raw()[..], &raw[..]);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(
            pieces in prop::collection::vec(
                prop_oneof![
                    prop::sample::select(vec![
                        &b"*"[..], b"$", b"\r\n", b"\r", b"\n", b"1", b"3", b"12", b"-1", b"0",
                        b"\"", b"'", b"\\", b"\\x4", b" ", b"abc", b"\0",
                    ]).prop_map(<[u8]>::to_vec),
                    prop::collection::vec(any::<u8>(), 0..8),
                ],
                0..80,
            ),
            sizes in prop::collection::vec(1usize..50, 1..10),
            unauth in any::<bool>(),
        ) {
            let input = pieces.concat();
            let limits = RequestLimits { max_bulk_len: 16, max_inline_len: 32, max_multibulk_len: 4 };
            // The largest frame these limits allow: a count line, then four
            // header lines and bodies, each line up to the inline limit + CRLF.
            let bound = (32 + 2) + 4 * ((32 + 2) + 16 + 2);
            let mut f = RequestFramer::new(limits);
            f.set_unauthenticated(unauth);
            let (res, cmds, rest) = feed_chunked(&mut f, &input, &sizes);
            for cmd in &cmds {
                prop_assert!(cmd.argc() >= 1);
                prop_assert!(cmd.args().all(|a| a.len() <= 32));
            }
            if res.is_ok() {
                prop_assert!(rest.len() <= bound, "holding {} bytes", rest.len());
                prop_assert!(f.args.len() <= 4);
            }
            // Whole-input parsing agrees on the commands before any error.
            let mut g = RequestFramer::new(limits);
            g.set_unauthenticated(unauth);
            let (res2, cmds2, _) = feed_chunked(&mut g, &input, &[input.len().max(1)]);
            prop_assert_eq!(res, res2);
            prop_assert_eq!(cmds, cmds2);
        }
    }
}
