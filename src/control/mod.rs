//! Background tasks that keep the model fresh: probers, the fast offset
//! poller, server facts, DNS discovery and config reload.
pub mod cluster;
pub mod discovery;
pub mod facts;
pub mod failover;
pub mod offsets;
pub mod prober;
pub mod reload;
pub mod sentinel;

use std::sync::Arc;

use crate::config::Config;
use crate::conn::pool::PipePool;
use crate::model::SharedConfig;
use crate::model::facts::ServerFacts;
use crate::model::replication::Replication;
use crate::model::topology::{Change, TopologyCell};

/// What the control tasks read and write, handed out by `app`.
#[derive(Clone)]
pub struct ControlEnv {
    pub config: SharedConfig,
    pub topology: Arc<TopologyCell>,
    pub facts: Arc<ServerFacts>,
    pub replication: Arc<Replication>,
    pub pipes: Arc<PipePool>,
}

impl ControlEnv {
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// The config as an owned handle, to hold across awaits.
    pub fn config_full(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// After a topology update (discovery or reload): start watching the
    /// upstreams that came, retire the ones that went.
    pub fn apply(&self, change: &Change, origin: &str) {
        for up in change.added() {
            tracing::debug!(upstream = %up, origin, "upstream added");
            prober::spawn_watchers(self, up);
        }
        for up in change.removed() {
            tracing::debug!(upstream = %up, origin, "upstream retired");
            up.retire();
            self.pipes.retire(up.id);
        }
    }
}
