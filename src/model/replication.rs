//! Replication progress the sidecar tracks: the primary's offsets over time
//! (for replica lag and read-your-writes bars), the sidecar-wide
//! read-your-writes tracker, and the demand signal that turns fast offset
//! polling on while reads wait.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

use tokio::sync::Notify;

use crate::route::consistency::Tracker;
use crate::route::replication::OffsetHistory;

/// How long fast offset polling continues after the last read that waited.
const DEMAND_HOLD_MS: u64 = 1000;

pub struct Replication {
    offsets: Mutex<OffsetHistory>,
    /// The sidecar-wide bookkeeping (`consistency_scope = sidecar`).
    tracker: Mutex<Tracker>,
    /// When reads last waited for offsets, in ms since `epoch` (0: never).
    epoch: Instant,
    demand_ms: AtomicU64,
    /// Wakes the fast offset pollers.
    pub wakeup: Notify,
    generation: AtomicU64,
    rebase_to: AtomicU64,
}

impl Default for Replication {
    fn default() -> Replication {
        Replication {
            offsets: Mutex::new(OffsetHistory::new()),
            tracker: Mutex::new(Tracker::new()),
            epoch: Instant::now(),
            demand_ms: AtomicU64::new(0),
            wakeup: Notify::new(),
            generation: AtomicU64::new(0),
            rebase_to: AtomicU64::new(0),
        }
    }
}

impl Replication {
    /// The primary's offset history.
    pub fn offsets(&self) -> MutexGuard<'_, OffsetHistory> {
        self.offsets.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn tracker(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new primary: its history starts at `offset`, and bars set in the
    /// old one are clamped to it (what survived the switch is at most
    /// that), so no read waits for an offset the new history may never
    /// reach.
    pub fn reset_history(&self, offset: u64) {
        *self.offsets() = OffsetHistory::new();
        self.tracker().rebase(offset);
        self.generation.fetch_add(1, Ordering::Relaxed);
        self.rebase_to.store(offset, Ordering::Relaxed);
    }

    /// Bumped by each primary change; trackers rebase when theirs is older.
    pub fn generation(&self) -> (u64, u64) {
        (
            self.generation.load(Ordering::Relaxed),
            self.rebase_to.load(Ordering::Relaxed),
        )
    }

    /// A read is waiting for fresher offsets: poll fast for a while.
    pub fn demand_offsets(&self) {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let before = self.demand_ms.swap(now, Ordering::Relaxed);
        if now.saturating_sub(before) > DEMAND_HOLD_MS / 2 {
            self.wakeup.notify_waiters();
        }
    }

    /// True while reads waited for offsets recently.
    pub fn demanded(&self) -> bool {
        let last = self.demand_ms.load(Ordering::Relaxed);
        last != 0
            && (self.epoch.elapsed().as_millis() as u64 + 1).saturating_sub(last) <= DEMAND_HOLD_MS
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fast_polling_holds_for_a_second_after_the_last_wait() {
        let r = Replication::default();
        assert!(!r.demanded());
        tokio::time::advance(Duration::from_millis(5)).await;
        r.demand_offsets();
        tokio::time::advance(Duration::from_millis(1000)).await;
        assert!(r.demanded());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!r.demanded());
    }
}
