//! Redirections and transient refusals from a cluster node.
//!
//! A node that does not own a key's slot answers `-MOVED <slot>
//! <endpoint>:<port>`: the slot has another owner, for good, so the slot map
//! is stale. During a migration the old owner answers `-ASK ...` for a key
//! it no longer has: that one command goes to the importing node, preceded
//! by `ASKING`, and the map stays as it is. `clusterRedirectClient` in Redis
//! 7.0.15 prints the endpoint as is, with no brackets around an IPv6
//! address (`-MOVED 3999 ::1:7000`), empty under
//! `cluster-preferred-endpoint-type unknown-endpoint` (`-MOVED 3999 :7000`:
//! the same host as the node that answered) and `?` when a hostname is
//! preferred but the node has none.
//!
//! `-TRYAGAIN` (a multi-key command during the migration of its slot) and
//! `-CLUSTERDOWN` (the cluster, or the slot's owner, is down) say "not now":
//! worth retrying after a pause, not a redirection.

use super::{SLOTS, error_text};

/// Where a node sends a command instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redirect {
    /// The slot belongs to `host:port` now: refresh the map.
    Moved { slot: u16, host: String, port: u16 },
    /// Send this one command to `host:port`, after `ASKING`.
    Ask { slot: u16, host: String, port: u16 },
}

impl Redirect {
    pub fn slot(&self) -> u16 {
        match self {
            Redirect::Moved { slot, .. } | Redirect::Ask { slot, .. } => *slot,
        }
    }

    /// The target. An empty host means the node that answered; `?`, a
    /// hostname the node does not know (use the slot map instead).
    pub fn addr(&self) -> (&str, u16) {
        match self {
            Redirect::Moved { host, port, .. } | Redirect::Ask { host, port, .. } => (host, *port),
        }
    }
}

/// The redirection `reply` (one complete raw reply: `-MOVED ...\r\n` or the
/// RESP3 blob error `!<len>\r\nMOVED ...\r\n`) is, if it is one. The
/// endpoint is split at its last colon, so a bare IPv6 address works; a
/// bracketed one (`[::1]:7000`, which Redis does not send) is unwrapped.
pub fn parse_redirect(reply: &[u8]) -> Option<Redirect> {
    let text = std::str::from_utf8(error_text(reply)?).ok()?;
    let mut words = text.split(' ');
    let (kind, slot, endpoint) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some() {
        return None;
    }
    let slot: u16 = parse_decimal(slot)?;
    if slot >= SLOTS {
        return None;
    }
    let (host, port) = endpoint.rsplit_once(':')?;
    let port: u16 = parse_decimal(port)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']')?,
        None => host,
    }
    .to_string();
    match kind {
        "MOVED" => Some(Redirect::Moved { slot, host, port }),
        "ASK" => Some(Redirect::Ask { slot, host, port }),
        _ => None,
    }
}

/// Digits only (no sign, no spaces), as Redis prints `%d`.
fn parse_decimal<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `Some(code)` when `reply` is a transient cluster refusal worth retrying
/// after a pause: `TRYAGAIN` (keys of a multi-key command split by a
/// migration in progress) or `CLUSTERDOWN` (`The cluster is down`, `... and
/// only accepts read commands`, `Hash slot not served`).
pub fn is_retryable(reply: &[u8]) -> Option<&'static str> {
    let text = error_text(reply)?;
    let code = text.split(|&b| b == b' ').next()?;
    match code {
        b"TRYAGAIN" => Some("TRYAGAIN"),
        b"CLUSTERDOWN" => Some("CLUSTERDOWN"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved(slot: u16, host: &str, port: u16) -> Option<Redirect> {
        Some(Redirect::Moved {
            slot,
            host: host.into(),
            port,
        })
    }

    #[test]
    fn redirections_as_redis_sends_them() {
        // Verbatim from redis-server 7.0.15: IPv4, bare IPv6, unknown
        // endpoint, hostname preferred but unset, hostname.
        assert_eq!(
            parse_redirect(b"-MOVED 12182 127.0.0.1:47003\r\n"),
            moved(12182, "127.0.0.1", 47003)
        );
        assert_eq!(
            parse_redirect(b"-MOVED 12182 ::1:47021\r\n"),
            moved(12182, "::1", 47021)
        );
        assert_eq!(
            parse_redirect(b"-MOVED 12182 :47021\r\n"),
            moved(12182, "", 47021)
        );
        assert_eq!(
            parse_redirect(b"-MOVED 12182 ?:47021\r\n"),
            moved(12182, "?", 47021)
        );
        assert_eq!(
            parse_redirect(b"-MOVED 12182 node21.example:47021\r\n"),
            moved(12182, "node21.example", 47021)
        );
        assert_eq!(
            parse_redirect(b"-ASK 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Ask {
                slot: 3999,
                host: "127.0.0.1".into(),
                port: 6381
            })
        );
        assert_eq!(
            parse_redirect(b"-MOVED 0 [2001:db8::1]:7000\r\n"),
            moved(0, "2001:db8::1", 7000)
        );
        assert_eq!(
            parse_redirect(b"-MOVED 16383 fe80::1%eth0:7000\r\n"),
            moved(16383, "fe80::1%eth0", 7000)
        );
    }

    #[test]
    fn blob_error_form() {
        assert_eq!(
            parse_redirect(b"!25\r\nMOVED 3999 127.0.0.1:6381\r\n"),
            moved(3999, "127.0.0.1", 6381)
        );
        let ask = parse_redirect(b"!12\r\nASK 1 ::1:70\r\n").unwrap();
        assert_eq!((ask.slot(), ask.addr()), (1, ("::1", 70)));
        assert_eq!(
            parse_redirect(b"!26\r\nMOVED 3999 127.0.0.1:6381\r\n"),
            None
        );
    }

    #[test]
    fn not_redirections() {
        for reply in [
            &b"-ERR unknown command\r\n"[..],
            b"-MOVED\r\n",
            b"-MOVED 3999\r\n",
            b"-MOVED 3999 127.0.0.1\r\n",
            b"-MOVED 3999 127.0.0.1:\r\n",
            b"-MOVED 3999 127.0.0.1:65536\r\n",
            b"-MOVED 3999 127.0.0.1:+1\r\n",
            b"-MOVED 16384 127.0.0.1:6381\r\n",
            b"-MOVED -1 127.0.0.1:6381\r\n",
            b"-MOVED 3999 127.0.0.1:6381 extra\r\n",
            b"-MOVED  3999 127.0.0.1:6381\r\n",
            b"-MOVED 3999 [::1:6381\r\n",
            b"-moved 3999 127.0.0.1:6381\r\n",
            b"-MOVED 3999 127.0.0.1:6381",
            b"+MOVED 3999 127.0.0.1:6381\r\n",
            b"$26\r\nMOVED 3999 127.0.0.1:6381\r\n",
            b"",
        ] {
            assert_eq!(
                parse_redirect(reply),
                None,
                "{}",
                String::from_utf8_lossy(reply)
            );
        }
    }

    #[test]
    fn retryable_refusals() {
        // The texts of clusterRedirectClient in Redis 7.0.15.
        for (reply, code) in [
            (
                &b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"[..],
                Some("TRYAGAIN"),
            ),
            (b"-CLUSTERDOWN The cluster is down\r\n", Some("CLUSTERDOWN")),
            (
                b"-CLUSTERDOWN The cluster is down and only accepts read commands\r\n",
                Some("CLUSTERDOWN"),
            ),
            (
                b"-CLUSTERDOWN Hash slot not served\r\n",
                Some("CLUSTERDOWN"),
            ),
            (b"!11\r\nCLUSTERDOWN\r\n", Some("CLUSTERDOWN")),
            (b"-TRYAGAIN\r\n", Some("TRYAGAIN")),
            (b"-MOVED 1 a:1\r\n", None),
            (
                b"-CROSSSLOT Keys in request don't hash to the same slot\r\n",
                None,
            ),
            (b"-TRYAGAINX x\r\n", None),
            (b"+TRYAGAIN\r\n", None),
        ] {
            assert_eq!(
                is_retryable(reply),
                code,
                "{}",
                String::from_utf8_lossy(reply)
            );
        }
    }
}
