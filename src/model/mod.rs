//! Shared state types: the upstreams, the topology snapshot, what the
//! sidecar mirrors from the primary, replication progress and the client
//! count. No I/O and no tasks.
pub mod clients;
pub mod facts;
pub mod replication;
pub mod topology;
pub mod upstream;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;

/// The running config, replaced whole on reload.
pub type SharedConfig = Arc<ArcSwap<Config>>;
