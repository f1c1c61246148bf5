//! AUTH and HELLO: their arguments, parsed once; the sidecar's own
//! `requirepass`; and credentials passed through to Redis, which then pin
//! the session to a dedicated connection running as that user.

use bytes::Bytes;

use super::local::{check_client_name, stored_name};
use super::slots::Hook;
use super::state::Creds;
use super::{Cur, Session};
use crate::conn::dedicated::Expect;
use crate::metrics::ErrorKind;
use crate::proto::encode::{self as resp, HelloInfo, Proto};
use crate::proto::{Command, parse_ll};

/// What a client may send before it has authenticated.
pub(super) fn allowed_unauthenticated(cmd: &Command) -> bool {
    cmd.name_eq("AUTH") || cmd.name_eq("HELLO") || cmd.name_eq("QUIT")
}

/// `AUTH [username] password`: the credentials, or `None` for a wrong
/// number of arguments.
pub(super) fn auth_args(cmd: &Command) -> Option<Creds> {
    let s = |i| String::from_utf8_lossy(cmd.arg(i).unwrap_or(b"")).into_owned();
    match cmd.argc() {
        2 => Some((None, s(1))),
        3 => Some((Some(s(1)), s(2))),
        _ => None,
    }
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct HelloArgs<'a> {
    /// `None`: HELLO alone, which changes nothing.
    pub proto: Option<Proto>,
    pub auth: Option<Creds>,
    /// The last SETNAME's name (all of them valid).
    pub setname: Option<&'a [u8]>,
}

impl HelloArgs<'_> {
    /// What a successful reply changes.
    pub(super) fn into_hook(self) -> Hook {
        match (self.auth, self.proto) {
            (Some(creds), proto) => Hook::Identity(creds, proto),
            (None, Some(p)) => Hook::Proto(p),
            (None, None) => Hook::None,
        }
    }
}

/// HELLO's arguments, checked in Redis's order, with its error replies.
pub(super) fn parse_hello(cmd: &Command) -> Result<HelloArgs<'_>, Bytes> {
    let mut args = HelloArgs {
        proto: None,
        auth: None,
        setname: None,
    };
    let Some(ver) = cmd.arg(1) else {
        return Ok(args);
    };
    args.proto = Some(match parse_ll(ver) {
        Some(2) => Proto::Resp2,
        Some(3) => Proto::Resp3,
        Some(_) => return Err(resp::error("NOPROTO unsupported protocol version")),
        None => {
            return Err(resp::error(
                "ERR Protocol version is not an integer or out of range",
            ));
        }
    });
    let mut i = 2;
    while i < cmd.argc() {
        let opt = cmd.arg(i).unwrap_or(b"");
        let more = cmd.argc() - i - 1;
        if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            let s = |i| String::from_utf8_lossy(cmd.arg(i).unwrap_or(b"")).into_owned();
            args.auth = Some((Some(s(i + 1)), s(i + 2)));
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            let name = cmd.arg(i + 1).unwrap_or(b"");
            check_client_name(name)?;
            args.setname = Some(name);
            i += 2;
        } else {
            return Err(resp::error(&format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(opt)
            )));
        }
    }
    Ok(args)
}

/// Compares without an early exit (the time taken does not tell how much
/// of a password matched).
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Session {
    pub(super) fn hello(&mut self, cur: Cur, cmd: Command) {
        let args = match parse_hello(&cmd) {
            Ok(a) => a,
            Err(e) => {
                self.push_done(cur, e);
                return;
            }
        };
        if let Some(name) = args.setname {
            self.client.name = stored_name(name);
        }
        let (proto, auth) = (args.proto, args.auth);
        match auth {
            Some((user, pass)) => {
                if self.env.config().security.requirepass.is_some() {
                    if let Err(e) = self.check_requirepass(user.as_deref(), &pass) {
                        self.push_done(cur, e);
                        return;
                    }
                    self.client.authed = true;
                } else if !self.same_as_upstream(user.as_deref(), &pass) {
                    // Someone else's credentials: Redis must judge them, and
                    // the session then runs on its own connection as them.
                    self.ensure_dedicated();
                    let hook = Hook::Identity((user, pass), proto);
                    self.send_dedicated(cur, cmd, Expect::One { blocking: false }, hook);
                    return;
                }
                self.client.proto = proto.unwrap_or(self.client.proto);
            }
            None => {
                if let Some(p) = proto {
                    if !self.client.authed {
                        self.push_done(cur, resp::error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time"));
                        return;
                    }
                    self.client.proto = p;
                }
            }
        }
        let version = self.env.facts.version();
        let reply = resp::hello(&HelloInfo {
            version: &version,
            proto: self.client.proto,
            id: self.id as i64,
            role: "master",
        });
        self.push_done(cur, reply);
    }

    pub(super) fn auth(&mut self, cur: Cur, cmd: Command) {
        let Some((user, pass)) = auth_args(&cmd) else {
            self.push_done(
                cur,
                resp::error("ERR wrong number of arguments for 'auth' command"),
            );
            return;
        };
        if self.env.config().security.requirepass.is_some() {
            match self.check_requirepass(user.as_deref(), &pass) {
                Ok(()) => {
                    self.client.authed = true;
                    self.push_done(cur, resp::ok());
                }
                Err(e) => self.push_done(cur, e),
            }
        } else if self.same_as_upstream(user.as_deref(), &pass) {
            self.push_done(cur, resp::ok());
        } else {
            let hook = Hook::Identity((user, pass), None);
            self.send_dedicated(cur, cmd, Expect::One { blocking: false }, hook);
        }
    }

    fn check_requirepass(&self, user: Option<&str>, pass: &str) -> Result<(), Bytes> {
        let wrong = || resp::error("WRONGPASS invalid username-password pair or user is disabled.");
        let expected = self
            .env
            .config()
            .security
            .requirepass
            .as_ref()
            .map(|s| s.expose().to_string())
            .unwrap_or_default();
        if user.is_some_and(|u| u != "default") {
            return Err(wrong());
        }
        if constant_time_eq(pass.as_bytes(), expected.as_bytes()) {
            Ok(())
        } else {
            self.env.metrics.error(ErrorKind::AuthFailed);
            Err(wrong())
        }
    }

    /// The client presents the credentials the sidecar already uses for the
    /// primary: its identity does not change, so shared pipes stay fine.
    fn same_as_upstream(&self, user: Option<&str>, pass: &str) -> bool {
        let url = &self.env.config().primary.url;
        let Some(p) = &url.password else { return false };
        let user_ok = match (user, url.username.as_deref()) {
            (None | Some("default"), None | Some("default")) => true,
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        user_ok && constant_time_eq(p.expose().as_bytes(), pass.as_bytes())
    }
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
