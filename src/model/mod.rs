//! Shared state types: the upstreams, the topology snapshot, what the
//! sidecar mirrors from the primary, replication progress and the client
//! count. No I/O and no tasks.
pub mod clients;
pub mod cluster;
pub mod facts;
pub mod failover;
pub mod near_cache;
pub mod replication;
pub mod topology;
pub mod upstream;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::config::Config;

/// The running config, replaced whole on reload.
pub type SharedConfig = Arc<ArcSwap<Config>>;

/// An instant as an atomic can hold it: µs since `epoch`, plus one, so that
/// 0 is free to mean "none".
pub fn stamp(epoch: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(epoch).as_micros() as u64 + 1
}
