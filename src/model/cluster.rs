//! A Redis Cluster as the sidecar sees it: which shard owns each slot, and
//! each shard as a topology of its own (a primary and its replicas, with
//! the same probers, latency and health as a standalone primary has). The
//! cluster follower (`control::cluster`) replaces the state whole; sessions
//! read it without locking.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use super::topology::TopologyCell;

pub const SLOTS: usize = 16384;

/// No shard owns the slot (the map is incomplete).
pub const UNOWNED: u16 = u16::MAX;

pub struct ClusterState {
    /// Shard index per slot, `UNOWNED` where none.
    pub owner: Box<[u16]>,
    pub shards: Vec<Arc<TopologyCell>>,
    /// Each shard's primary node id, in `shards` order.
    pub ids: Vec<String>,
    /// What the map was built from (ranges, nodes, health): a map with
    /// the same signature changes nothing.
    pub signature: String,
}

impl ClusterState {
    pub fn empty() -> ClusterState {
        ClusterState {
            owner: vec![UNOWNED; SLOTS].into_boxed_slice(),
            shards: Vec::new(),
            ids: Vec::new(),
            signature: String::new(),
        }
    }

    pub fn shard_of(&self, slot: u16) -> Option<&Arc<TopologyCell>> {
        let i = *self.owner.get(slot as usize)?;
        self.shards.get(i as usize)
    }

    /// Any shard, for commands without keys.
    pub fn any(&self) -> Option<&Arc<TopologyCell>> {
        self.shards.first()
    }

    /// Shard `i`'s slots as `start-end` ranges, in slot order.
    pub fn ranges(&self, i: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut start: Option<usize> = None;
        for s in 0..=self.owner.len() {
            let mine = self.owner.get(s).is_some_and(|&o| o as usize == i);
            match (mine, start) {
                (true, None) => start = Some(s),
                (false, Some(a)) => {
                    out.push(format!("{a}-{}", s - 1));
                    start = None;
                }
                _ => {}
            }
        }
        out
    }
}

pub struct ClusterCell {
    state: ArcSwap<ClusterState>,
    /// Wakes the follower: a MOVED reply says the map changed.
    pub refresh: Notify,
    /// The `nearby_cluster_node_info` series last set to 1, so that a map
    /// change can set the ones that went to 0.
    pub info_series: std::sync::Mutex<Vec<[String; 4]>>,
}

impl Default for ClusterCell {
    fn default() -> ClusterCell {
        ClusterCell {
            state: ArcSwap::from_pointee(ClusterState::empty()),
            refresh: Notify::new(),
            info_series: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl ClusterCell {
    pub fn load(&self) -> arc_swap::Guard<Arc<ClusterState>> {
        self.state.load()
    }

    pub fn load_full(&self) -> Arc<ClusterState> {
        self.state.load_full()
    }

    pub fn store(&self, s: ClusterState) {
        self.state.store(Arc::new(s));
    }
}
