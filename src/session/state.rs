//! What a session remembers about its client: the state Redis keeps per
//! client and the sidecar keeps in its place (`ClientState`), and the state
//! that only an upstream connection can hold, which pins the session to its
//! dedicated connection (`PinState`).

use bytes::Bytes;

use crate::proto::encode::Proto;
use crate::route::command::{Local, Pin, Route};

/// A user (`None`: the default user) and a password.
pub(super) type Creds = (Option<String>, String);

/// CLIENT REPLY.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReplyMode {
    On,
    Off,
    Skip,
}

impl ReplyMode {
    /// Whether the next command's reply is silent (awaited, never written);
    /// SKIP lasts one command.
    pub(super) fn next_silent(&mut self) -> bool {
        match *self {
            ReplyMode::On => false,
            ReplyMode::Off => true,
            ReplyMode::Skip => {
                *self = ReplyMode::On;
                true
            }
        }
    }
}

/// Per-client state the sidecar answers for itself.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ClientState {
    pub db: u32,
    pub proto: Proto,
    pub name: Option<Bytes>,
    pub authed: bool,
    /// Credentials the client authenticated with on its dedicated
    /// connection (not the sidecar's own).
    pub identity: Option<Creds>,
    pub reply_mode: ReplyMode,
}

impl ClientState {
    /// A new connection's state (and what RESET returns to).
    pub(super) fn new(db: u32, authed: bool) -> ClientState {
        ClientState {
            db,
            proto: Proto::Resp2,
            name: None,
            authed,
            identity: None,
            reply_mode: ReplyMode::On,
        }
    }
}

/// Connection state that lives on the dedicated connection. The only place
/// these flags are combined and reset.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct PinState {
    pub multi: bool,
    pub watching: bool,
    pub subscribed: bool,
    pub monitor: bool,
    /// CLIENT TRACKING and friends: state with no end the sidecar can see.
    pub client_state: bool,
    /// A SELECT queued inside MULTI, applied when EXEC succeeds.
    pub multi_db: Option<u32>,
    /// Requests sent on the dedicated connection, not yet answered.
    pub outstanding: usize,
}

impl PinState {
    /// State the client built that only its dedicated connection holds
    /// (`identity`: it authenticated as someone else there).
    fn holds_state(&self, identity: bool) -> bool {
        self.multi
            || self.watching
            || self.subscribed
            || self.monitor
            || self.client_state
            || identity
    }

    /// Whether every command must go to the dedicated connection (when
    /// there is one): it holds state, or still owes replies.
    pub(super) fn is_pinned(&self, identity: bool) -> bool {
        self.holds_state(identity) || self.outstanding > 0
    }

    /// Redis does not time out subscribers, monitors or blocked clients.
    pub(super) fn idle_exempt(&self) -> bool {
        self.subscribed || self.monitor || self.outstanding > 0
    }

    /// What sending `route` on the dedicated connection changes.
    pub(super) fn sent(&mut self, route: Route) {
        match route {
            Route::Local(Local::Unwatch) => self.watching = false,
            Route::Pin(Pin::Subscribe(_)) => self.subscribed = true,
            Route::Pin(Pin::Multi) => self.multi = true,
            Route::Pin(Pin::Exec) => {
                self.multi = false;
                self.watching = false;
            }
            Route::Pin(Pin::Discard) => {
                self.multi = false;
                self.watching = false;
                self.multi_db = None;
            }
            // Inside MULTI, WATCH is refused.
            Route::Pin(Pin::Watch) => self.watching |= !self.multi,
            Route::Pin(Pin::Monitor) => self.monitor = true,
            Route::Pin(Pin::ClientState) => self.client_state = true,
            _ => {}
        }
    }

    /// RESET: the dedicated connection is dropped with all it held.
    pub(super) fn reset(&mut self) {
        *self = PinState::default();
    }

    /// The dedicated connection closed. True when state the client built
    /// was lost with it: the session closes, so that the client's library
    /// rebuilds it.
    pub(super) fn on_lost(&mut self, identity: bool) -> bool {
        self.outstanding = 0;
        let lost = self.holds_state(identity);
        if lost {
            self.reset();
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::command::SubKind;

    #[test]
    fn reply_mode_skip_lasts_one_command() {
        let mut m = ReplyMode::Skip;
        assert!(m.next_silent());
        assert_eq!(m, ReplyMode::On);
        assert!(!m.next_silent());
        let mut m = ReplyMode::Off;
        assert!(m.next_silent());
        assert!(m.next_silent());
        assert_eq!(m, ReplyMode::Off);
    }

    #[test]
    fn transaction_flags() {
        let mut p = PinState::default();
        assert!(!p.is_pinned(false));
        p.sent(Route::Pin(Pin::Watch));
        assert!(p.watching && p.is_pinned(false));
        p.sent(Route::Pin(Pin::Multi));
        p.multi_db = Some(3);
        // WATCH inside MULTI is an error: it watches nothing more.
        p.sent(Route::Pin(Pin::Watch));
        assert!(p.multi && p.watching);
        p.sent(Route::Pin(Pin::Exec));
        assert!(!p.multi && !p.watching);
        // EXEC applies the queued SELECT itself (the Exec hook).
        assert_eq!(p.multi_db, Some(3));
        p.sent(Route::Pin(Pin::Multi));
        p.sent(Route::Pin(Pin::Discard));
        assert_eq!(p, PinState::default());
        p.sent(Route::Pin(Pin::Multi));
        p.sent(Route::Pin(Pin::Watch));
        assert!(!p.watching);
        p.sent(Route::Pin(Pin::Discard));
        p.sent(Route::Pin(Pin::Watch));
        p.sent(Route::Local(Local::Unwatch));
        assert_eq!(p, PinState::default());
    }

    #[test]
    fn pinned_and_idle() {
        let mut p = PinState::default();
        assert!(p.is_pinned(true), "a client's own identity pins");
        p.outstanding = 1;
        assert!(p.is_pinned(false) && p.idle_exempt());
        p.outstanding = 0;
        p.sent(Route::Pin(Pin::ClientState));
        assert!(p.is_pinned(false) && !p.idle_exempt());
        let mut p = PinState::default();
        p.sent(Route::Pin(Pin::Subscribe(SubKind::Channel)));
        assert!(p.subscribed && p.is_pinned(false) && p.idle_exempt());
        let mut p = PinState::default();
        p.sent(Route::Pin(Pin::Monitor));
        assert!(p.monitor && p.idle_exempt());
        // Routes that carry no connection state change nothing.
        let mut p = PinState::default();
        for r in [Route::Read, Route::Primary, Route::Pin(Pin::Blocking)] {
            p.sent(r);
        }
        assert_eq!(p, PinState::default());
    }

    #[test]
    fn reset_clears_everything() {
        let mut p = PinState {
            multi: true,
            watching: true,
            subscribed: true,
            monitor: true,
            client_state: true,
            multi_db: Some(2),
            outstanding: 4,
        };
        p.reset();
        assert_eq!(p, PinState::default());
    }

    #[test]
    fn lost_connection() {
        // Only replies were owed: nothing the client built is gone.
        let mut p = PinState {
            outstanding: 2,
            ..PinState::default()
        };
        assert!(!p.on_lost(false));
        assert_eq!(p, PinState::default());
        // A transaction is gone with the connection.
        let mut p = PinState {
            multi: true,
            multi_db: Some(1),
            outstanding: 1,
            ..PinState::default()
        };
        assert!(p.on_lost(false));
        assert_eq!(p, PinState::default());
        // So is an identity established there.
        let mut p = PinState::default();
        assert!(p.on_lost(true));
        let mut p = PinState {
            subscribed: true,
            ..PinState::default()
        };
        assert!(p.on_lost(false));
        assert!(!p.subscribed);
    }

    #[test]
    fn client_state_starts_clean() {
        let c = ClientState::new(3, false);
        assert_eq!(
            (c.db, c.proto, c.authed, c.reply_mode),
            (3, Proto::Resp2, false, ReplyMode::On)
        );
        assert!(c.name.is_none() && c.identity.is_none());
    }
}
