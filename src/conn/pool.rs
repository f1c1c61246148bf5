//! The shared pipes per (upstream, db, protocol), opened on first use.
//! Sessions cache the handles they get, so the lock is taken about once per
//! session and pipe.
//!
//! Usually one pipe per key carries everything. When its head is held (a
//! script, a paused write, DEBUG SLEEP: Redis answers that connection's
//! requests in order, so all behind it wait), sessions with nothing in
//! flight take another pipe, opened on demand up to `MAX_PIPES`: other
//! clients are not stalled behind one slow command, as on Redis itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::connect::{Connector, Handshake};
use super::pipe::{self, PipeHandle, Timeouts};
use crate::model::upstream::Upstream;
use crate::proto::Proto;

/// Pipes per (upstream, db, protocol) at most: beyond it, sessions queue
/// behind a held one again rather than open connections without bound.
pub const MAX_PIPES: usize = 8;

pub struct PipePool {
    connector: Arc<Connector>,
    timeouts: Timeouts,
    pipes: Mutex<HashMap<(usize, u32, Proto), Vec<PipeHandle>>>,
}

impl PipePool {
    pub fn new(connector: Arc<Connector>, timeouts: Timeouts) -> PipePool {
        PipePool {
            connector,
            timeouts,
            pipes: Mutex::new(HashMap::new()),
        }
    }

    /// How this sidecar's connections are made (dedicated and control
    /// connections use it too).
    pub fn connector(&self) -> &Arc<Connector> {
        &self.connector
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The first shared pipe to `up` for (db, proto), started on first use.
    pub fn get(&self, up: &Arc<Upstream>, db: u32, proto: Proto) -> PipeHandle {
        let mut pipes = self.pipes.lock().unwrap_or_else(|p| p.into_inner());
        let list = pipes.entry((up.id, db, proto)).or_default();
        if list.is_empty() {
            list.push(self.spawn(up, db, proto));
        }
        list[0].clone()
    }

    /// A pipe to `up` for (db, proto) whose head is not held longer than
    /// `limit`: an existing one, else a new one while fewer than
    /// `MAX_PIPES` exist, else the first.
    pub fn unheld(
        &self,
        up: &Arc<Upstream>,
        db: u32,
        proto: Proto,
        now: Instant,
        limit: Duration,
    ) -> PipeHandle {
        let mut pipes = self.pipes.lock().unwrap_or_else(|p| p.into_inner());
        let list = pipes.entry((up.id, db, proto)).or_default();
        if let Some(p) = list.iter().find(|p| !p.held(now, limit)) {
            return p.clone();
        }
        if list.len() < MAX_PIPES {
            let p = self.spawn(up, db, proto);
            list.push(p.clone());
            return p;
        }
        list[0].clone()
    }

    /// How many pipes exist to `up` for (db, proto).
    pub fn count(&self, up: &Upstream, db: u32, proto: Proto) -> usize {
        let pipes = self.pipes.lock().unwrap_or_else(|p| p.into_inner());
        pipes.get(&(up.id, db, proto)).map_or(0, Vec::len)
    }

    fn spawn(&self, up: &Arc<Upstream>, db: u32, proto: Proto) -> PipeHandle {
        let hs = Handshake {
            auth: None,
            db,
            proto: Some(proto),
            name: None,
        };
        pipe::spawn(self.connector.clone(), up.clone(), hs, self.timeouts)
    }

    /// Lets go of a retired upstream's pipes: each closes once the sessions
    /// holding it let go too.
    pub fn retire(&self, upstream_id: usize) {
        self.pipes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(id, _, _), _| *id != upstream_id);
    }
}
