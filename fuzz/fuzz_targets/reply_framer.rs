//! Fuzzes `nearby::proto::ReplyFramer` (and the decode helpers behind it).
//!
//! Input: `[split byte][config byte][wire bytes...]` (see `common`).
//! The wire bytes are framed twice, once in one buffer and once in the
//! reads the split byte chooses, and these must hold:
//! - no panic (including arithmetic overflow: run with `-a`);
//! - both feedings give the same replies (bytes and kind) and end the same
//!   way (the same error, or the same bytes left waiting);
//! - the replies are the input itself, cut in pieces: nothing skipped,
//!   nothing re-encoded;
//! - while the framer waits, the element it waits on (a line or a bulk
//!   body) holds at most `max_bulk_len` plus a small constant;
//! - `scanned()` stays linear: at most one look per input byte plus one
//!   per `next` call;
//! - every reply re-frames, with a fresh framer and the same limits, to
//!   exactly one reply of the same length and kind;
//! - `error_code()`, `decode_resp2` and `decode_resp3` do not panic on any
//!   framed reply (they may return errors).
#![no_main]

mod common;

use bytes::BytesMut;
use common::{Chunks, Input, unterminated_tail};
use libfuzzer_sys::fuzz_target;
use nearby::proto::{ProtocolError, Reply, ReplyFramer, ReplyKind, ReplyLimits, decode_resp2, decode_resp3};

/// Allowed excess over the derived bound.
const SLACK: usize = 4;
/// The framer's longest length line (`$`, `*` ... headers).
const LEN_LINE_MAX: usize = 32;

/// Config byte: bits 0-1 pick the limits, bits 2-7 size the tiny ones.
fn limits(b: u8) -> ReplyLimits {
    match b & 3 {
        // The limits the fuzzing issue asks for.
        0 | 1 => ReplyLimits {
            max_depth: 16,
            max_bulk_len: 4096,
            max_elements: i32::MAX as usize,
        },
        // Tiny limits, so every limit edge is reached by short inputs.
        2 => ReplyLimits {
            max_depth: usize::from((b >> 2) & 3),
            max_bulk_len: usize::from((b >> 4) & 7) * 3,
            max_elements: usize::from(b >> 7) * 4 + 1,
        },
        // As 0, with a small element cap.
        _ => ReplyLimits {
            max_depth: 16,
            max_bulk_len: 4096,
            max_elements: 8,
        },
    }
}

/// What one feeding produced.
#[derive(Debug, PartialEq)]
struct Outcome {
    replies: Vec<(Vec<u8>, ReplyKind)>,
    /// The error that ended framing, or the bytes left waiting.
    end: Result<Vec<u8>, ProtocolError>,
}

fn check_reply(limits: ReplyLimits, reply: &Reply) {
    let raw = &reply.raw;
    assert!(!raw.is_empty());
    assert!(raw.ends_with(b"\r\n"), "reply does not end in CRLF: {raw:?}");

    // Exactly one frame of the same length and kind, also when more bytes
    // follow it.
    for trailer in [&b""[..], b"+next\r\n"] {
        let mut again = ReplyFramer::new(limits);
        let mut buf = BytesMut::from(&raw[..]);
        buf.extend_from_slice(trailer);
        let r2 = again
            .next(&mut buf)
            .unwrap_or_else(|e| panic!("re-framing {raw:?} failed: {e}"))
            .unwrap_or_else(|| panic!("re-framing {raw:?} wants more input"));
        assert_eq!(r2.raw.len(), raw.len(), "re-framed {raw:?} as {:?}", r2.raw);
        assert_eq!(r2.kind, reply.kind);
        assert_eq!(&buf[..], trailer);
    }

    // Helpers that read a framed reply must not panic on any of them.
    let code = reply.error_code();
    if !reply.is_error() {
        assert!(code.is_none());
    }
    let _ = decode_resp2(raw);
    let _ = decode_resp3(raw);
}

fn run<'a>(limits: ReplyLimits, reads: impl Iterator<Item = &'a [u8]>, input: &[u8]) -> Outcome {
    let element_max = (limits.max_bulk_len + 2).max(LEN_LINE_MAX + 1) + SLACK;
    let mut framer = ReplyFramer::new(limits);
    let mut buf = BytesMut::new();
    let mut replies = Vec::new();
    let mut consumed = 0usize;
    let mut fed = 0u64;
    let mut calls = 0u64;
    for read in reads {
        buf.extend_from_slice(read);
        fed += read.len() as u64;
        loop {
            let len_before = buf.len();
            calls += 1;
            let result = framer.next(&mut buf);
            assert!(
                framer.scanned() <= fed + calls,
                "scanned {} bytes of {fed} in {calls} calls",
                framer.scanned()
            );
            match result {
                Ok(Some(reply)) => {
                    assert_eq!(buf.len() + reply.raw.len(), len_before);
                    // The reply is the next bytes of the input.
                    assert_eq!(&reply.raw[..], &input[consumed..consumed + reply.raw.len()]);
                    consumed += reply.raw.len();
                    check_reply(limits, &reply);
                    replies.push((reply.raw.to_vec(), reply.kind));
                }
                Ok(None) => {
                    assert_eq!(buf.len(), len_before, "waiting consumed bytes");
                    let tail = unterminated_tail(&buf);
                    assert!(
                        tail <= element_max,
                        "pending element of {tail} bytes exceeds the bound {element_max}"
                    );
                    break;
                }
                Err(e) => {
                    return Outcome {
                        replies,
                        end: Err(e),
                    };
                }
            }
        }
    }
    Outcome {
        replies,
        end: Ok(buf.to_vec()),
    }
}

fuzz_target!(|raw: &[u8]| {
    let Some(input) = Input::parse(raw) else {
        return;
    };
    let limits = limits(input.config);
    let whole = run(limits, std::iter::once(input.data), input.data);
    let chunked = run(limits, Chunks::new(input.split, input.data), input.data);
    assert_eq!(whole, chunked, "one-shot and chunked feeding differ");
});
