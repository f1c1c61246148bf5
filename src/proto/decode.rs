//! Decoding whole replies with `redis-protocol`, for the control plane
//! (INFO, ROLE, COMMAND, CONFIG) and tests. Its decoder recurses, so each
//! reply is first framed with a small depth limit.

use bytes::Bytes;
use redis_protocol::{resp2, resp3};

use super::ProtocolError;
use super::reply::{ReplyFramer, ReplyLimits};

/// Depth allowed by the decode helpers: `redis-protocol` recurses, about
/// 19 KiB of stack per level in a debug build, and control-plane replies
/// (INFO, ROLE, COMMAND) nest a handful of levels.
const DECODE_MAX_DEPTH: usize = 32;

/// Checks that `raw` is exactly one frame no deeper than the decode helpers
/// allow, so the recursive decoder is safe to call on it.
fn check_decodable(raw: &[u8]) -> Result<(), ProtocolError> {
    let mut f = ReplyFramer::new(ReplyLimits {
        max_depth: DECODE_MAX_DEPTH,
        ..ReplyLimits::default()
    });
    match f.scan(raw)? {
        Some(n) if n == raw.len() => Ok(()),
        Some(_) => Err(ProtocolError::Decode("bytes after the frame".into())),
        None => Err(ProtocolError::Decode("incomplete frame".into())),
    }
}

fn decode_error(e: redis_protocol::error::RedisProtocolError) -> ProtocolError {
    ProtocolError::Decode(e.details().to_owned())
}

/// Decodes one framed RESP2 reply (INFO, ROLE, COMMAND ...) with
/// `redis-protocol`, after checking that it is a single frame at most 32
/// levels deep (the decoder recurses).
pub fn decode_resp2(raw: &Bytes) -> Result<resp2::types::BytesFrame, ProtocolError> {
    check_decodable(raw)?;
    match resp2::decode::decode_bytes(raw).map_err(decode_error)? {
        Some((frame, n)) if n == raw.len() => Ok(frame),
        _ => Err(ProtocolError::Decode("incomplete frame".into())),
    }
}

/// Decodes one framed RESP3 reply with `redis-protocol` (streamed frames
/// are rejected), after the same checks as [`decode_resp2`].
pub fn decode_resp3(raw: &Bytes) -> Result<resp3::types::BytesFrame, ProtocolError> {
    check_decodable(raw)?;
    match resp3::decode::complete::decode_bytes(raw).map_err(decode_error)? {
        Some((frame, n)) if n == raw.len() => Ok(frame),
        _ => Err(ProtocolError::Decode("incomplete frame".into())),
    }
}

/// A control-plane reply to a command that must succeed: decoded, with an
/// error reply (`-ERR ...`) given back as its text.
pub fn decode_ok(raw: &[u8]) -> Result<resp2::types::BytesFrame, String> {
    use resp2::types::BytesFrame;
    match decode_resp2(&Bytes::copy_from_slice(raw)) {
        Ok(BytesFrame::Error(e)) => Err(e.to_string()),
        Ok(f) => Ok(f),
        Err(e) => Err(format!("malformed reply: {e}")),
    }
}

/// The elements of an array reply, or an error naming what came instead.
pub fn into_array(f: resp2::types::BytesFrame) -> Result<Vec<resp2::types::BytesFrame>, String> {
    use redis_protocol::resp2::types::Resp2Frame;
    match f {
        resp2::types::BytesFrame::Array(v) => Ok(v),
        other => Err(format!("expected an array, got {:?}", other.kind())),
    }
}
