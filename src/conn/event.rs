//! The session ⇄ connection protocol: what a session sends a shared pipe
//! (`Request`), and what every connection, shared or dedicated, reports
//! back on the session's channel (`Event`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::route::command::Kind;

/// What a session hears back about a request it sent.
#[derive(Debug)]
pub enum Event {
    /// The reply to request `seq`, raw.
    Reply { seq: u64, data: Bytes },
    /// Request `seq` got no reply; `error` names the upstream and the cause.
    Failed { seq: u64, error: Arc<str> },
    /// Dedicated connections only: a frame that answers no single request
    /// (pub/sub messages and confirmations, MONITOR lines): it goes to the
    /// client after request `after` and before anything later.
    Stream {
        after: u64,
        data: Bytes,
        subscriptions: Option<usize>,
    },
    /// Dedicated connections only: a request answered only by stream frames
    /// (SUBSCRIBE) has been passed.
    Passed { seq: u64 },
    /// An invalidation for a client whose tracking the sidecar emulates
    /// (`conn::trackers`): written after every reply already queued.
    Push { data: Bytes },
    /// Dedicated connections only: the connection is gone.
    Closed { error: Arc<str>, conn: u64 },
}

pub type EventTx = crate::conn::mailbox::Sender<Event>;
pub type EventRx = crate::conn::mailbox::Receiver<Event>;

/// A request for a shared pipe.
pub struct Request {
    pub seq: u64,
    pub data: Bytes,
    pub reply_to: EventTx,
    pub kind: Kind,
    /// Redis may hold it for long (a script, DEBUG SLEEP, KEYS): no
    /// request timeout on its upstream while it runs.
    pub slow: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub request: Duration,
}

/// Sleeps until `deadline`, or forever without one (a `select!` arm that
/// never fires).
pub(crate) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
