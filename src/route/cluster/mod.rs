//! Redis Cluster, without I/O: the pieces a sidecar in front of a cluster
//! needs to decide where a command goes and what the client hears back.
//!
//! The client sees one Redis. Behind it, every key lives in one of 16384
//! hash slots, each slot owned by one shard (a primary and its replicas), and
//! the owners move: failovers promote replicas, resharding moves slots one at
//! a time. So the sidecar keeps a slot map learnt from the nodes
//! ([`map`]), follows the redirections a node answers with when the map is
//! stale ([`redirect`]), splits the few multi-key commands whose keys may
//! live in different slots and answers them as one Redis would ([`split`]),
//! and, to a cluster-aware client, presents itself as a cluster of one node
//! owning every slot ([`facade`]), so that the client sends it everything.
//!
//! Formats are those of Redis 7.0.15 (`src/cluster.c`); the test fixtures
//! marked "verbatim" were captured from redis-server 7.0.15.

pub mod facade;
pub mod map;
pub mod redirect;
pub mod slot;
pub mod split;

/// The number of hash slots (`CLUSTER_SLOTS`).
pub const SLOTS: u16 = 16384;

/// The text of an error reply, `-TEXT\r\n` or RESP3 `!<len>\r\nTEXT\r\n`,
/// when `reply` is exactly one such frame. `None` for anything else.
pub fn error_text(reply: &[u8]) -> Option<&[u8]> {
    let text = match reply.first()? {
        b'-' => {
            let body = reply.strip_suffix(b"\r\n")?;
            &body[1..]
        }
        b'!' => {
            let cr = reply.iter().position(|&b| b == b'\r')?;
            let len = usize::try_from(crate::proto::parse_ll(&reply[1..cr])?).ok()?;
            let start = cr + 2;
            let end = start.checked_add(len)?;
            if reply.get(cr + 1) != Some(&b'\n') || reply.get(end..) != Some(b"\r\n") {
                return None;
            }
            &reply[start..end]
        }
        _ => return None,
    };
    // A simple error is one line.
    if reply[0] == b'-' && text.iter().any(|&b| b == b'\r' || b == b'\n') {
        return None;
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_of_simple_and_blob_errors() {
        assert_eq!(error_text(b"-MOVED 1 a:1\r\n"), Some(&b"MOVED 1 a:1"[..]));
        assert_eq!(error_text(b"!7\r\nASK 1 x\r\n"), Some(&b"ASK 1 x"[..]));
        assert_eq!(error_text(b"-\r\n"), Some(&b""[..]));
        // Not exactly one error frame.
        assert_eq!(error_text(b"-ERR x"), None);
        assert_eq!(error_text(b"-ERR x\r\n+OK\r\n"), None);
        assert_eq!(error_text(b"!8\r\nASK 1 x\r\n"), None);
        assert_eq!(error_text(b"!6\r\nASK 1 x\r\n"), None);
        assert_eq!(error_text(b"!-1\r\n"), None);
        assert_eq!(error_text(b"+MOVED 1 a:1\r\n"), None);
        assert_eq!(error_text(b""), None);
    }
}
