//! One client command as raw bytes plus argument spans: forwarded without
//! re-encoding, read without copying.

use bytes::{BufMut, Bytes, BytesMut};

/// One client command: its RESP multibulk encoding and where each argument
/// sits in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Always `*N\r\n` followed by N bulk strings.
    pub(super) raw: Bytes,
    /// `(start, end)` of each argument within `raw`.
    pub(super) args: Spans,
}

/// Argument spans, inline up to `INLINE_ARGS` (a SET with an expiry fits).
pub(super) type Spans = smallvec::SmallVec<[(usize, usize); INLINE_ARGS]>;
const INLINE_ARGS: usize = 5;

impl Command {
    /// Builds an encoded command, e.g. the AUTH/SELECT/HELLO the proxy sends
    /// to its upstreams.
    pub fn from_args(args: &[&[u8]]) -> Command {
        Self::encode(args.iter().copied())
    }

    pub(super) fn encode<'a>(args: impl ExactSizeIterator<Item = &'a [u8]> + Clone) -> Command {
        let size = 16 + args.clone().map(|a| a.len() + 16).sum::<usize>();
        let mut out = BytesMut::with_capacity(size);
        out.put_u8(b'*');
        put_decimal(&mut out, args.len());
        out.put_slice(b"\r\n");
        let mut spans = Spans::with_capacity(args.len());
        for arg in args {
            out.put_u8(b'$');
            put_decimal(&mut out, arg.len());
            out.put_slice(b"\r\n");
            spans.push((out.len(), out.len() + arg.len()));
            out.put_slice(arg);
            out.put_slice(b"\r\n");
        }
        Command {
            raw: out.freeze(),
            args: spans,
        }
    }

    /// The command as a RESP multibulk: for multibulk input exactly the bytes
    /// the client sent; for inline input the parsed arguments re-encoded.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    pub fn argc(&self) -> usize {
        self.args.len()
    }

    /// Argument `i` (0 is the command name), or `None` past the end.
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        self.args.get(i).map(|&(s, e)| &self.raw[s..e])
    }

    /// All arguments, the command name first.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.args.iter().map(|&(s, e)| &self.raw[s..e])
    }

    /// The command name as sent (any case), or `b""` for an empty command.
    pub fn name(&self) -> &[u8] {
        self.arg(0).unwrap_or_default()
    }

    /// Whether the command name equals `upper`, ignoring ASCII case.
    pub fn name_eq(&self, upper: &str) -> bool {
        self.arg_eq(0, upper)
    }

    /// Whether argument `i` exists and equals `upper`, ignoring ASCII case.
    pub fn arg_eq(&self, i: usize, upper: &str) -> bool {
        self.arg(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(upper.as_bytes()))
    }
}

fn put_decimal(out: &mut BytesMut, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}
