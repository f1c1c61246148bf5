//! Redirections a cluster node answers with: `-MOVED <slot> <host>:<port>`
//! (the slot lives elsewhere now: follow it and refresh the map) and
//! `-ASK <slot> <host>:<port>` (this one command, during a migration, goes
//! to the importing node after `ASKING`).

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redirect {
    Moved { slot: u16, host: String, port: u16 },
    Ask { slot: u16, host: String, port: u16 },
}

/// The redirection `reply` (one raw reply) is, if it is one. Redis prints
/// IPv6 addresses bare (`::1:7000`): the port is after the last colon.
pub fn parse_redirect(reply: &[u8]) -> Option<Redirect> {
    let text = std::str::from_utf8(reply.strip_prefix(b"-")?).ok()?;
    let text = text.trim_end();
    let mut w = text.split(' ');
    let kind = w.next()?;
    let slot: u16 = w.next()?.parse().ok().filter(|s| *s < 16384)?;
    let addr = w.next()?;
    if w.next().is_some() {
        return None;
    }
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    match kind {
        "MOVED" => Some(Redirect::Moved { slot, host, port }),
        "ASK" => Some(Redirect::Ask { slot, host, port }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_and_ask() {
        assert_eq!(
            parse_redirect(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Moved {
                slot: 3999,
                host: "127.0.0.1".into(),
                port: 6381
            })
        );
        assert_eq!(
            parse_redirect(b"-ASK 42 ::1:7000\r\n"),
            Some(Redirect::Ask {
                slot: 42,
                host: "::1".into(),
                port: 7000
            })
        );
        // An unknown endpoint: the same host as the node that answered.
        assert_eq!(
            parse_redirect(b"-MOVED 1 :7001\r\n"),
            Some(Redirect::Moved {
                slot: 1,
                host: String::new(),
                port: 7001
            })
        );
        assert_eq!(parse_redirect(b"-ERR MOVED 1 a:1\r\n"), None);
        assert_eq!(parse_redirect(b"-MOVED 99999 a:1\r\n"), None);
        assert_eq!(parse_redirect(b"-MOVED 1 a:x\r\n"), None);
        assert_eq!(parse_redirect(b"+OK\r\n"), None);
    }
}
