//! The shared pipes, one per (upstream, db, protocol), opened on first use.
//! Sessions cache the handles they get, so the lock is taken about once per
//! session and pipe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::connect::{Connector, Handshake};
use super::pipe::{self, PipeHandle, Timeouts};
use crate::model::upstream::Upstream;
use crate::proto::Proto;

pub struct PipePool {
    connector: Arc<Connector>,
    timeouts: Timeouts,
    pipes: Mutex<HashMap<(usize, u32, Proto), PipeHandle>>,
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

    /// The shared pipe to `up` for (db, proto), started on first use.
    pub fn get(&self, up: &Arc<Upstream>, db: u32, proto: Proto) -> PipeHandle {
        let mut pipes = self.pipes.lock().unwrap_or_else(|p| p.into_inner());
        pipes
            .entry((up.id, db, proto))
            .or_insert_with(|| {
                let hs = Handshake {
                    auth: None,
                    db,
                    proto: Some(proto),
                };
                pipe::spawn(self.connector.clone(), up.clone(), hs, self.timeouts)
            })
            .clone()
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
