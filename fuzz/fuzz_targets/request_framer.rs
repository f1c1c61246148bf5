//! Fuzzes `nearby::proto::RequestFramer`.
//!
//! Input: `[split byte][config byte][wire bytes...]` (see `common`).
//! The wire bytes are framed twice, once in one buffer and once in the
//! reads the split byte chooses, and these must hold:
//! - no panic (including arithmetic overflow: run with `-a`);
//! - both feedings give the same commands and end the same way (the same
//!   error, or the same bytes left waiting);
//! - while the framer waits, what it buffers stays within the limits: one
//!   element (line or bulk body) at most `max(max_inline_len, max_bulk_len)`
//!   plus a small constant, a whole pending frame at most the size its
//!   limits allow;
//! - `scanned()` stays linear: at most one look per input byte plus one
//!   per `next` call;
//! - every command has `argc >= 1`, its `raw()` is one well-formed
//!   multibulk (checked by an independent parser) whose bulk strings are
//!   its `args()`, and a fresh framer re-frames `raw()` into the same
//!   command, consuming all of it;
//! - a command framed from a multibulk is exactly the bytes that arrived.
#![no_main]

mod common;

use bytes::BytesMut;
use common::{Chunks, Input, parse_multibulk, unterminated_tail};
use libfuzzer_sys::fuzz_target;
use nearby::proto::{Command, ProtocolError, RequestFramer, RequestLimits};

/// Allowed excess over the derived bounds.
const SLACK: usize = 4;
/// Longest header line the framer accepts: type byte, 21 bytes of
/// `string2ll`, CRLF.
const HEADER_MAX: usize = 1 + 21 + 2;

struct Config {
    limits: RequestLimits,
    unauthenticated: bool,
}

impl Config {
    /// Config byte: bits 0-1 pick the limits; bit 2 turns on the
    /// unauthenticated caps; bits 3-7 size the tiny limits.
    fn from_byte(b: u8) -> Self {
        let limits = match b & 3 {
            // The limits the fuzzing issue asks for, with a small argument
            // cap so a whole pending frame has a visible bound.
            0 | 1 => RequestLimits {
                max_bulk_len: 4096,
                max_inline_len: 1024,
                max_multibulk_len: 16,
            },
            // Tiny limits, so every limit edge is reached by short inputs.
            2 => RequestLimits {
                max_bulk_len: usize::from((b >> 3) & 7) * 3,
                max_inline_len: 4 + usize::from(b >> 6) * 8,
                max_multibulk_len: 1 + usize::from((b >> 5) & 1) * 3,
            },
            // As 0, but with Redis's argument cap (no whole-frame bound).
            _ => RequestLimits {
                max_bulk_len: 4096,
                max_inline_len: 1024,
                max_multibulk_len: i32::MAX as usize,
            },
        };
        Self {
            limits,
            unauthenticated: b & 4 != 0,
        }
    }

    fn framer(&self) -> RequestFramer {
        let mut f = RequestFramer::new(self.limits);
        f.set_unauthenticated(self.unauthenticated);
        f
    }
}

/// What one feeding produced.
#[derive(Debug, PartialEq)]
struct Outcome {
    commands: Vec<(Vec<u8>, Vec<Vec<u8>>)>,
    /// The error that ended framing, or the bytes left waiting.
    end: Result<Vec<u8>, ProtocolError>,
}

/// Upper bounds on what the framer may hold while it waits.
struct Bounds {
    /// One pending element: an inline or header line, or a bulk body.
    element: usize,
    /// A whole pending multibulk, if the argument cap makes it finite.
    multibulk: Option<usize>,
    /// A whole pending inline request.
    inline: usize,
}

impl Bounds {
    fn new(l: &RequestLimits) -> Self {
        // A partial line holds at most `max_inline_len` bytes plus the `\r`
        // waiting for its `\n`; a partial bulk body at most its length plus
        // the `\r`.
        let element = (l.max_inline_len + 1).max(l.max_bulk_len + 1) + SLACK;
        let header = HEADER_MAX.min(l.max_inline_len + 2);
        let multibulk = (l.max_multibulk_len <= 1024).then(|| {
            // The count line, every complete argument but the last, and
            // the pending element.
            header + l.max_multibulk_len * (header + l.max_bulk_len + 2) + element
        });
        Self {
            element,
            multibulk,
            inline: l.max_inline_len + SLACK,
        }
    }

    fn check(&self, buf: &[u8]) {
        let tail = unterminated_tail(buf);
        assert!(
            tail <= self.element,
            "pending element of {tail} bytes exceeds the bound {}",
            self.element
        );
        match buf.first() {
            None => {}
            Some(b'*') => {
                if let Some(max) = self.multibulk {
                    assert!(
                        buf.len() <= max,
                        "pending multibulk of {} bytes exceeds the bound {max}",
                        buf.len()
                    );
                }
            }
            Some(_) => assert!(
                buf.len() <= self.inline,
                "pending inline request of {} bytes exceeds the bound {}",
                buf.len(),
                self.inline
            ),
        }
    }
}

/// The positive count of a `*<count>\r` line at the front of `seg`.
fn leading_positive_count(seg: &[u8]) -> bool {
    let Some(rest) = seg.strip_prefix(b"*") else {
        return false;
    };
    let end = rest.iter().position(|&b| b == b'\r').unwrap_or(rest.len());
    matches!(std::str::from_utf8(&rest[..end]).ok().map(str::parse::<i64>), Some(Ok(n)) if n > 0)
}

fn check_command(cmd: &Command) -> (Vec<u8>, Vec<Vec<u8>>) {
    let raw = cmd.raw().to_vec();
    let args: Vec<Vec<u8>> = cmd.args().map(<[u8]>::to_vec).collect();
    assert!(cmd.argc() >= 1, "empty command {raw:?}");
    assert_eq!(cmd.argc(), args.len());
    assert_eq!(cmd.name(), &args[0][..]);
    assert_eq!(cmd.arg(cmd.argc()), None);
    for (i, a) in args.iter().enumerate() {
        assert_eq!(cmd.arg(i), Some(&a[..]));
    }

    // An independent reading of `raw` sees exactly these arguments.
    let parsed = parse_multibulk(&raw)
        .unwrap_or_else(|| panic!("raw() is not one canonical multibulk: {raw:?}"));
    assert_eq!(parsed, args.iter().map(|a| &a[..]).collect::<Vec<_>>());

    // A fresh framer re-frames it into the same command, using all of it.
    let mut again = RequestFramer::new(RequestLimits::default());
    let mut buf = BytesMut::from(&raw[..]);
    let cmd2 = again
        .next(&mut buf)
        .unwrap_or_else(|e| panic!("re-framing {raw:?} failed: {e}"))
        .unwrap_or_else(|| panic!("re-framing {raw:?} wants more input"));
    assert!(buf.is_empty(), "re-framing left {buf:?}");
    assert_eq!(&cmd2, cmd);
    (raw, args)
}

/// Frames `data` fed as `reads`, checking the per-call invariants.
fn run<'a>(
    config: &Config,
    reads: impl Iterator<Item = &'a [u8]>,
    one_shot: bool,
) -> Outcome {
    let bounds = Bounds::new(&config.limits);
    let mut framer = config.framer();
    let mut buf = BytesMut::new();
    let mut commands = Vec::new();
    let mut fed = 0u64;
    let mut calls = 0u64;
    for read in reads {
        buf.extend_from_slice(read);
        fed += read.len() as u64;
        loop {
            let before = buf.clone();
            calls += 1;
            let result = framer.next(&mut buf);
            assert!(
                framer.scanned() <= fed + calls,
                "scanned {} bytes of {fed} in {calls} calls",
                framer.scanned()
            );
            match result {
                Ok(Some(cmd)) => {
                    let consumed = &before[..before.len() - buf.len()];
                    assert_eq!(&before[consumed.len()..], &buf[..]);
                    if one_shot && leading_positive_count(consumed) {
                        // Nothing to skip before a multibulk, and its raw()
                        // is the bytes as they arrived.
                        assert_eq!(&cmd.raw()[..], consumed);
                    }
                    commands.push(check_command(&cmd));
                }
                Ok(None) => {
                    // Only skipped empty requests may have been consumed.
                    assert!(before.ends_with(&buf));
                    bounds.check(&buf);
                    break;
                }
                Err(e) => {
                    // The error text must be one safe line.
                    let reply = e.to_error_reply();
                    assert!(reply.starts_with(b"-ERR ") && reply.ends_with(b"\r\n"));
                    assert!(!reply[..reply.len() - 2].iter().any(|&b| b == b'\r' || b == b'\n'));
                    return Outcome {
                        commands,
                        end: Err(e),
                    };
                }
            }
        }
    }
    Outcome {
        commands,
        end: Ok(buf.to_vec()),
    }
}

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let config = Config::from_byte(input.config);
    let whole = run(&config, std::iter::once(input.data), true);
    let chunked = run(&config, Chunks::new(input.split, input.data), false);
    assert_eq!(whole, chunked, "one-shot and chunked feeding differ");
});
