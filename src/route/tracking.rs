//! A client's `CLIENT TRACKING`, kept by the sidecar instead of pinning the
//! client to a primary connection: the client's reads stay routed, the
//! sidecar's own tracking connections hear the invalidations
//! (`conn::fill`), and the session forwards those for the keys the client
//! read. Pure: the parsing, the errors and the replies are Redis 7.0's.
//!
//! Emulated: RESP3 clients, default, `OPTIN` or `OPTOUT` mode, with or
//! without `NOLOOP`. `BCAST` and `REDIRECT` (and RESP2 clients, which can
//! only be told through a redirect) still run on the client's own primary
//! connection, where Redis does the tracking.

use bytes::Bytes;

use crate::proto::Command;
use crate::proto::encode::{self as resp, Proto};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every read is tracked.
    Default,
    /// Only the read after `CLIENT CACHING YES`.
    OptIn,
    /// Every read but the one after `CLIENT CACHING NO`.
    OptOut,
}

/// What `CLIENT TRACKING ...` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Off,
    On {
        mode: Mode,
        noloop: bool,
        /// BCAST or REDIRECT: left to Redis.
        native: bool,
    },
}

/// An emulated client's tracking state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracking {
    pub mode: Mode,
    pub noloop: bool,
    /// `CLIENT CACHING` was just called: applies to the next command.
    caching: bool,
}

/// Parses `CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p]... [BCAST]
/// [OPTIN] [OPTOUT] [NOLOOP]` with Redis's checks and errors.
pub fn parse(cmd: &Command) -> Result<Request, Bytes> {
    if cmd.argc() < 3 {
        return Err(resp::error(
            "ERR wrong number of arguments for 'client|tracking' command",
        ));
    }
    let (mut optin, mut optout, mut noloop, mut bcast) = (false, false, false, false);
    let (mut redirect, mut prefixes) = (false, 0);
    let mut i = 3;
    while i < cmd.argc() {
        let a = cmd.arg(i).unwrap_or(b"");
        let more = i + 1 < cmd.argc();
        if a.eq_ignore_ascii_case(b"redirect") && more {
            if redirect {
                return Err(resp::error(
                    "ERR A client can only redirect to a single other client",
                ));
            }
            redirect = true;
            i += 1;
        } else if a.eq_ignore_ascii_case(b"bcast") {
            bcast = true;
        } else if a.eq_ignore_ascii_case(b"optin") {
            optin = true;
        } else if a.eq_ignore_ascii_case(b"optout") {
            optout = true;
        } else if a.eq_ignore_ascii_case(b"noloop") {
            noloop = true;
        } else if a.eq_ignore_ascii_case(b"prefix") && more {
            prefixes += 1;
            i += 1;
        } else {
            return Err(resp::error("ERR syntax error"));
        }
        i += 1;
    }
    let on = cmd.arg(2).unwrap_or(b"");
    if on.eq_ignore_ascii_case(b"off") {
        return Ok(Request::Off);
    }
    if !on.eq_ignore_ascii_case(b"on") {
        return Err(resp::error("ERR syntax error"));
    }
    if !bcast && prefixes > 0 {
        return Err(resp::error(
            "ERR PREFIX option requires BCAST mode to be enabled",
        ));
    }
    if bcast && (optin || optout) {
        return Err(resp::error(
            "ERR OPTIN and OPTOUT are not compatible with BCAST",
        ));
    }
    if optin && optout {
        return Err(resp::error(
            "ERR You can't specify both OPTIN mode and OPTOUT mode",
        ));
    }
    let mode = if optin {
        Mode::OptIn
    } else if optout {
        Mode::OptOut
    } else {
        Mode::Default
    };
    Ok(Request::On {
        mode,
        noloop,
        native: bcast || redirect,
    })
}

impl Tracking {
    /// Turns emulated tracking on, or changes it, as Redis allows.
    pub fn enable(current: Option<Tracking>, mode: Mode, noloop: bool) -> Result<Tracking, Bytes> {
        if let Some(t) = current
            && ((mode == Mode::OptIn && t.mode == Mode::OptOut)
                || (mode == Mode::OptOut && t.mode == Mode::OptIn))
        {
            return Err(resp::error(
                "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.",
            ));
        }
        // Redis adds options to what is on; it never clears NOLOOP.
        let noloop = noloop || current.is_some_and(|t| t.noloop);
        Ok(Tracking {
            mode,
            noloop,
            caching: false,
        })
    }

    /// `CLIENT CACHING YES|NO`.
    pub fn caching(&mut self, cmd: &Command) -> Result<(), Bytes> {
        let opt = cmd.arg(2).unwrap_or(b"");
        if opt.eq_ignore_ascii_case(b"yes") {
            if self.mode != Mode::OptIn {
                return Err(resp::error(
                    "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
                ));
            }
        } else if opt.eq_ignore_ascii_case(b"no") {
            if self.mode != Mode::OptOut {
                return Err(resp::error(
                    "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.",
                ));
            }
        } else {
            return Err(resp::error("ERR syntax error"));
        }
        self.caching = true;
        Ok(())
    }

    /// A command other than `CLIENT ...` is dispatched: whether its keys
    /// are tracked, consuming the `CLIENT CACHING` flag.
    pub fn take_tracked(&mut self) -> bool {
        let flag = std::mem::take(&mut self.caching);
        match self.mode {
            Mode::Default => true,
            Mode::OptIn => flag,
            Mode::OptOut => !flag,
        }
    }
}

/// `CLIENT CACHING` without tracking on.
pub fn caching_off_error() -> Bytes {
    resp::error(
        "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
    )
}

/// `CLIENT GETREDIR`: 0 (tracking, no redirect), or -1 (off).
pub fn getredir(t: Option<&Tracking>) -> Bytes {
    resp::integer(if t.is_some() { 0 } else { -1 })
}

/// `CLIENT TRACKINGINFO`, as Redis writes it in `proto`.
pub fn trackinginfo(t: Option<&Tracking>, proto: Proto) -> Bytes {
    let mut flags: Vec<&str> = vec![if t.is_some() { "on" } else { "off" }];
    if let Some(t) = t {
        match t.mode {
            Mode::Default => {}
            Mode::OptIn => {
                flags.push("optin");
                if t.caching {
                    flags.push("caching-yes");
                }
            }
            Mode::OptOut => {
                flags.push("optout");
                if t.caching {
                    flags.push("caching-no");
                }
            }
        }
        if t.noloop {
            flags.push("noloop");
        }
    }
    let mut out = Vec::new();
    let (map, set) = match proto {
        Proto::Resp3 => ("%3\r\n", '~'),
        Proto::Resp2 => ("*6\r\n", '*'),
    };
    out.extend_from_slice(map.as_bytes());
    out.extend_from_slice(&resp::bulk(b"flags"));
    out.extend_from_slice(format!("{set}{}\r\n", flags.len()).as_bytes());
    for f in flags {
        out.extend_from_slice(&resp::bulk(f.as_bytes()));
    }
    out.extend_from_slice(&resp::bulk(b"redirect"));
    out.extend_from_slice(&getredir(t));
    out.extend_from_slice(&resp::bulk(b"prefixes"));
    out.extend_from_slice(b"*0\r\n");
    Bytes::from(out)
}

/// The RESP3 push telling a client that `keys` changed.
pub fn invalidation<'a>(keys: impl ExactSizeIterator<Item = &'a [u8]>) -> Bytes {
    let mut out = format!(">2\r\n$10\r\ninvalidate\r\n*{}\r\n", keys.len()).into_bytes();
    for k in keys {
        out.extend_from_slice(&resp::bulk(k));
    }
    Bytes::from(out)
}

/// The RESP3 push telling a client that every key changed.
pub fn flush_push() -> Bytes {
    Bytes::from_static(b">2\r\n$10\r\ninvalidate\r\n_\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Command {
        let v: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        Command::from_args(&v)
    }

    fn err(r: Result<Request, Bytes>) -> String {
        String::from_utf8(r.unwrap_err().to_vec()).unwrap()
    }

    #[test]
    fn parses_modes_and_leaves_bcast_and_redirect_to_redis() {
        let on = |mode, noloop, native| {
            Ok(Request::On {
                mode,
                noloop,
                native,
            })
        };
        assert_eq!(
            parse(&cmd(&["CLIENT", "TRACKING", "on"])),
            on(Mode::Default, false, false)
        );
        assert_eq!(
            parse(&cmd(&["client", "tracking", "ON", "optin", "noloop"])),
            on(Mode::OptIn, true, false)
        );
        assert_eq!(
            parse(&cmd(&["CLIENT", "TRACKING", "on", "OPTOUT"])),
            on(Mode::OptOut, false, false)
        );
        assert_eq!(
            parse(&cmd(&["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "a"])),
            on(Mode::Default, false, true)
        );
        assert_eq!(
            parse(&cmd(&["CLIENT", "TRACKING", "on", "REDIRECT", "7"])),
            on(Mode::Default, false, true)
        );
        assert_eq!(
            parse(&cmd(&["CLIENT", "TRACKING", "off"])),
            Ok(Request::Off)
        );
    }

    #[test]
    fn bad_combinations_get_redis_errors() {
        assert_eq!(
            err(parse(&cmd(&[
                "CLIENT", "TRACKING", "on", "optin", "optout"
            ]))),
            "-ERR You can't specify both OPTIN mode and OPTOUT mode\r\n"
        );
        assert_eq!(
            err(parse(&cmd(&["CLIENT", "TRACKING", "on", "prefix", "a"]))),
            "-ERR PREFIX option requires BCAST mode to be enabled\r\n"
        );
        assert_eq!(
            err(parse(&cmd(&["CLIENT", "TRACKING", "on", "bcast", "optin"]))),
            "-ERR OPTIN and OPTOUT are not compatible with BCAST\r\n"
        );
        assert_eq!(
            err(parse(&cmd(&["CLIENT", "TRACKING", "maybe"]))),
            "-ERR syntax error\r\n"
        );
        assert_eq!(
            err(parse(&cmd(&["CLIENT", "TRACKING", "on", "what"]))),
            "-ERR syntax error\r\n"
        );
        let optin = Tracking::enable(None, Mode::OptIn, false).unwrap();
        assert!(Tracking::enable(Some(optin), Mode::OptOut, false).is_err());
        assert!(Tracking::enable(Some(optin), Mode::OptIn, false).is_ok());
    }

    #[test]
    fn caching_applies_to_the_next_command_only() {
        let mut t = Tracking::enable(None, Mode::OptIn, false).unwrap();
        assert!(!t.take_tracked());
        t.caching(&cmd(&["CLIENT", "CACHING", "yes"])).unwrap();
        assert!(t.take_tracked());
        assert!(!t.take_tracked());
        assert!(t.caching(&cmd(&["CLIENT", "CACHING", "no"])).is_err());

        let mut t = Tracking::enable(None, Mode::OptOut, false).unwrap();
        assert!(t.take_tracked());
        t.caching(&cmd(&["CLIENT", "CACHING", "NO"])).unwrap();
        assert!(!t.take_tracked());
        assert!(t.take_tracked());

        let mut t = Tracking::enable(None, Mode::Default, false).unwrap();
        assert!(t.caching(&cmd(&["CLIENT", "CACHING", "yes"])).is_err());
        assert!(t.take_tracked());
    }

    #[test]
    fn trackinginfo_and_getredir_match_redis() {
        let mut t = Tracking::enable(None, Mode::OptIn, true).unwrap();
        t.caching(&cmd(&["CLIENT", "CACHING", "yes"])).unwrap();
        assert_eq!(
            &trackinginfo(Some(&t), Proto::Resp3)[..],
            &b"%3\r\n$5\r\nflags\r\n~4\r\n$2\r\non\r\n$5\r\noptin\r\n$11\r\ncaching-yes\r\n$6\r\nnoloop\r\n$8\r\nredirect\r\n:0\r\n$8\r\nprefixes\r\n*0\r\n"[..]
        );
        assert_eq!(
            &trackinginfo(None, Proto::Resp2)[..],
            &b"*6\r\n$5\r\nflags\r\n*1\r\n$3\r\noff\r\n$8\r\nredirect\r\n:-1\r\n$8\r\nprefixes\r\n*0\r\n"[..]
        );
        assert_eq!(&getredir(None)[..], b":-1\r\n");
        assert_eq!(&getredir(Some(&t))[..], b":0\r\n");
        let keys: [&[u8]; 2] = [b"a", b"bc"];
        assert_eq!(
            &invalidation(keys.into_iter())[..],
            b">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$2\r\nbc\r\n"
        );
    }
}
