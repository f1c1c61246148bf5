//! Commands the sidecar answers itself: PING, SELECT, CLIENT SETNAME /
//! GETNAME / REPLY, QUIT, RESET, UNWATCH, UNSUBSCRIBE with nothing
//! subscribed. The replies are pure functions of the command and the
//! client's state; `Session::local` applies them.

use bytes::Bytes;

use super::state::{ClientState, ReplyMode};
use super::{Cur, Session};
use crate::proto::encode as resp;
use crate::proto::{Command, parse_ll};
use crate::route::command::Local;

/// SELECT index: the db, among `databases`, or the error Redis replies.
pub(super) fn parse_select(cmd: &Command, databases: u32) -> Result<u32, Bytes> {
    if cmd.argc() != 2 {
        return Err(resp::error(
            "ERR wrong number of arguments for 'select' command",
        ));
    }
    let n = parse_ll(cmd.arg(1).unwrap_or(b""))
        .ok_or_else(|| resp::error("ERR value is not an integer or out of range"))?;
    if n < 0 || n >= i64::from(databases) {
        return Err(resp::error("ERR DB index is out of range"));
    }
    Ok(n as u32)
}

/// Redis's rule for client names: printable ASCII, no spaces.
pub(super) fn check_client_name(name: &[u8]) -> Result<(), Bytes> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(resp::error(
            "ERR Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

/// A client name as stored: an empty name clears it.
pub(super) fn stored_name(name: &[u8]) -> Option<Bytes> {
    (!name.is_empty()).then(|| Bytes::copy_from_slice(name))
}

/// CLIENT SETNAME name: the name to store.
pub(super) fn setname(cmd: &Command) -> Result<Option<Bytes>, Bytes> {
    if cmd.argc() != 3 {
        return Err(resp::error(
            "ERR wrong number of arguments for 'client|setname' command",
        ));
    }
    let name = cmd.arg(2).unwrap_or(b"");
    check_client_name(name)?;
    Ok(stored_name(name))
}

/// CLIENT REPLY ON|OFF|SKIP: the new mode, and the reply if there is one
/// (OFF and SKIP are not answered).
pub(super) fn client_reply(cmd: &Command, mode: ReplyMode) -> (ReplyMode, Option<Bytes>) {
    let arg = cmd.arg(2).unwrap_or(b"");
    if cmd.argc() != 3 {
        let e = "ERR wrong number of arguments for 'client|reply' command";
        (mode, Some(resp::error(e)))
    } else if arg.eq_ignore_ascii_case(b"ON") {
        (ReplyMode::On, Some(resp::ok()))
    } else if arg.eq_ignore_ascii_case(b"OFF") {
        (ReplyMode::Off, None)
    } else if arg.eq_ignore_ascii_case(b"SKIP") {
        // SKIP while OFF changes nothing.
        let next = if mode == ReplyMode::Off {
            ReplyMode::Off
        } else {
            ReplyMode::Skip
        };
        (next, None)
    } else {
        (mode, Some(resp::error("ERR syntax error")))
    }
}

impl Session {
    pub(super) fn local(&mut self, cur: Cur, l: Local, cmd: Command) {
        match l {
            Local::Select => match parse_select(&cmd, self.env.facts.databases()) {
                Ok(db) => {
                    let changed = db != self.client.db;
                    self.client.db = db;
                    if changed {
                        // A client that picks a db is likely to block or
                        // watch there next: its own connection is opened now,
                        // so that its first BLPOP reaches Redis before a
                        // command another client sends just after it.
                        self.ensure_dedicated();
                    }
                    self.push_done(cur, resp::ok());
                }
                Err(e) => self.push_done(cur, e),
            },
            Local::Hello => self.hello(cur, cmd),
            Local::Auth => self.auth(cur, cmd),
            Local::SetName => match setname(&cmd) {
                Ok(name) => self.set_name(cur, cmd, name),
                Err(e) => self.push_done(cur, e),
            },
            Local::GetName => {
                let reply = match &self.client.name {
                    Some(n) => resp::bulk(n),
                    None => resp::null(self.client.proto),
                };
                self.push_done(cur, reply);
            }
            Local::ClientReply => {
                let (mode, reply) = client_reply(&cmd, self.client.reply_mode);
                self.client.reply_mode = mode;
                if let Some(r) = reply {
                    self.push_done(cur, r);
                }
            }
            Local::Quit => {
                self.push_done(cur, resp::ok());
                self.closing = true;
            }
            Local::Reset => {
                self.reset();
                self.push_done(cur, resp::simple("RESET"));
            }
            Local::Unwatch => self.push_done(cur, resp::ok()),
            Local::Unsubscribe(kind) => {
                let names: Vec<&[u8]> = (1..cmd.argc()).filter_map(|i| cmd.arg(i)).collect();
                let frames =
                    resp::unsubscribe_frames(kind.unsubscribe_name(), &names, self.client.proto);
                self.push_done(cur, frames);
            }
            Local::Replicate => {
                // Everything before it is answered first; then the session
                // hands its socket to a tunnel (`Session::run`).
                self.tunnel = Some(cmd);
                self.closing = true;
            }
        }
    }

    /// RESET: back to a new connection's state; the dedicated connection,
    /// and everything it held, is dropped.
    fn reset(&mut self) {
        self.ded = None;
        // Slots still waiting on the dropped dedicated connection would
        // never complete.
        while let Some(seq) = self.slots.first_waiting_dedicated() {
            self.complete(seq, resp::error("ERR nearby: connection reset"));
        }
        self.pin.reset();
        self.tracking_off();
        let config = self.env.config();
        self.client =
            ClientState::new(config.primary.url.db, config.security.requirepass.is_none());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Command {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        Command::from_args(&args)
    }

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn select_parses_like_redis() {
        assert_eq!(parse_select(&cmd(&["SELECT", "0"]), 16), Ok(0));
        assert_eq!(parse_select(&cmd(&["SELECT", "15"]), 16), Ok(15));
        let not_int = "-ERR value is not an integer or out of range\r\n";
        for bad in ["+1", "01", "-0", " 1", "1 ", "abc", "", "1.0", "0x1"] {
            let e = parse_select(&cmd(&["SELECT", bad]), 16).unwrap_err();
            assert_eq!(text(&e), not_int, "SELECT {bad:?}");
        }
        let range = "-ERR DB index is out of range\r\n";
        for bad in ["16", "-1", "99999999999"] {
            let e = parse_select(&cmd(&["SELECT", bad]), 16).unwrap_err();
            assert_eq!(text(&e), range, "SELECT {bad:?}");
        }
        let e = parse_select(&cmd(&["SELECT", "99999999999999999999"]), 16).unwrap_err();
        assert_eq!(text(&e), not_int);
        let e = parse_select(&cmd(&["SELECT"]), 16).unwrap_err();
        assert_eq!(
            text(&e),
            "-ERR wrong number of arguments for 'select' command\r\n"
        );
        assert!(parse_select(&cmd(&["SELECT", "1", "2"]), 16).is_err());
    }

    #[test]
    fn setname_checks_the_name() {
        assert_eq!(
            setname(&cmd(&["CLIENT", "SETNAME", "app-1"])),
            Ok(Some(Bytes::from_static(b"app-1")))
        );
        assert_eq!(setname(&cmd(&["CLIENT", "SETNAME", ""])), Ok(None));
        let e = setname(&cmd(&["CLIENT", "SETNAME", "a b"])).unwrap_err();
        assert_eq!(
            text(&e),
            "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
        );
        assert!(check_client_name("é".as_bytes()).is_err());
        let e = setname(&cmd(&["CLIENT", "SETNAME"])).unwrap_err();
        assert_eq!(
            text(&e),
            "-ERR wrong number of arguments for 'client|setname' command\r\n"
        );
    }

    #[test]
    fn client_reply_modes() {
        use ReplyMode::*;
        let r = |arg: &str, m| {
            let (m, reply) = client_reply(&cmd(&["CLIENT", "REPLY", arg]), m);
            (m, reply.map(|b| text(&b).to_string()))
        };
        assert_eq!(r("on", Off), (On, Some("+OK\r\n".into())));
        assert_eq!(r("OFF", On), (Off, None));
        assert_eq!(r("skip", On), (Skip, None));
        assert_eq!(r("SKIP", Off), (Off, None));
        assert_eq!(
            r("maybe", Skip),
            (Skip, Some("-ERR syntax error\r\n".into()))
        );
        let (m, reply) = client_reply(&cmd(&["CLIENT", "REPLY"]), On);
        assert_eq!(m, On);
        assert_eq!(
            text(&reply.unwrap()),
            "-ERR wrong number of arguments for 'client|reply' command\r\n"
        );
    }
}
