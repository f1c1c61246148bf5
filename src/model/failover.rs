//! What the sidecar knows about primary changes: where the primary comes
//! from (the config, the servers' own ROLE, or Sentinel), the sentinels'
//! config epoch, the last switch, and the history that tells which
//! acknowledged writes an unplanned failover may have lost.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Enough (offset, writes) samples for minutes of history at one a second.
const ACK_SAMPLES: usize = 1024;

/// One move of writes to another server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Switch {
    /// Milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    pub from: String,
    pub to: String,
    /// What said so: `role` or `sentinel`.
    pub source: &'static str,
    /// Acknowledged writes the new primary may lack (0 after a coordinated
    /// failover), and their byte range in the old history.
    pub writes_at_risk: u64,
    pub bytes_at_risk: Option<(u64, u64)>,
}

pub struct Failover {
    /// `config` (fixed, following ROLE) or `sentinel`.
    source: Mutex<&'static str>,
    /// The sentinels' config epoch of the current primary (0 without).
    epoch: AtomicU64,
    changes: AtomicU64,
    last: Mutex<Option<Switch>>,
    /// (master_repl_offset, writes the primary had acknowledged before
    /// that INFO was sent), as sampled by the primary's prober.
    acks: Mutex<VecDeque<(u64, u64)>>,
    /// Wakes the primary follower: a write was refused as READONLY, or a
    /// server's claimed role changed.
    pub recheck: Notify,
    /// A write was refused as READONLY since the follower last looked.
    refused: std::sync::atomic::AtomicBool,
    /// An old primary left before the sentinels announced its successor,
    /// with the epoch they reported then: not to be returned to until they
    /// report a newer epoch.
    superseded: Mutex<Option<(String, u64)>>,
    /// Looks the follower finished: a refused write waits for two (one
    /// wholly after the refusal) before it takes the refusal as final.
    checks: AtomicU64,
}

impl Default for Failover {
    fn default() -> Failover {
        Failover {
            source: Mutex::new("config"),
            epoch: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            last: Mutex::new(None),
            acks: Mutex::new(VecDeque::new()),
            recheck: Notify::new(),
            refused: std::sync::atomic::AtomicBool::new(false),
            checks: AtomicU64::new(0),
            superseded: Mutex::new(None),
        }
    }
}

impl Failover {
    /// The primary refused a write as a replica would: look now.
    pub fn note_refused(&self) {
        self.refused.store(true, Ordering::Relaxed);
        self.recheck.notify_one();
    }

    /// Writes left `label` (at sentinel epoch `epoch`) ahead of the
    /// sentinels' announcement.
    pub fn supersede(&self, label: &str, epoch: u64) {
        *self.superseded.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((label.to_string(), epoch));
    }

    /// Whether the sentinels naming `label` at `epoch` is the stale view of
    /// a switch already made.
    pub fn is_superseded(&self, label: &str, epoch: u64) -> bool {
        self.superseded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|(l, e)| l == label && epoch <= *e)
    }

    /// The follower finished one look at the servers.
    pub fn checked(&self) {
        self.checks.fetch_add(1, Ordering::Relaxed);
    }

    pub fn checks(&self) -> u64 {
        self.checks.load(Ordering::Relaxed)
    }

    /// Whether a write was refused since the last call.
    pub fn take_refused(&self) -> bool {
        self.refused.swap(false, Ordering::Relaxed)
    }

    pub fn source(&self) -> &'static str {
        *self.source.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_source(&self, s: &'static str) {
        *self.source.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    pub fn set_epoch(&self, e: u64) {
        self.epoch.store(e, Ordering::Relaxed);
    }

    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    pub fn last(&self) -> Option<Switch> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn record(&self, s: Switch) {
        self.changes.fetch_add(1, Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
        self.acks.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The primary reported `offset` in reply to an INFO sent when it had
    /// acknowledged `writes` writes.
    pub fn sample(&self, offset: u64, writes: u64) {
        let mut a = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        if a.back().is_some_and(|&(o, w)| o == offset && w == writes) {
            return;
        }
        if a.len() == ACK_SAMPLES {
            a.pop_front();
        }
        a.push_back((offset, writes));
    }

    /// The highest offset the old primary reported.
    pub fn highest_offset(&self) -> Option<u64> {
        let a = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        a.iter().map(|&(o, _)| o).max()
    }

    /// Of `acked` writes the old primary acknowledged in all, how many the
    /// new primary may lack when it kept the old history up to `kept`: all
    /// but those covered by a sample at or below `kept`. An upper bound:
    /// writes after the last covered sample are counted, though some may
    /// have made it.
    pub fn writes_beyond(&self, kept: u64, acked: u64) -> u64 {
        let a = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        let covered = a
            .iter()
            .filter(|&&(o, _)| o <= kept)
            .map(|&(_, w)| w)
            .max()
            .unwrap_or(0);
        acked.saturating_sub(covered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_beyond_what_the_new_primary_kept() {
        let f = Failover::default();
        f.sample(100, 0);
        f.sample(500, 10);
        f.sample(900, 25);
        assert_eq!(f.highest_offset(), Some(900));
        // Kept up to 500: the 10 writes acknowledged by then are safe.
        assert_eq!(f.writes_beyond(500, 30), 20);
        assert_eq!(f.writes_beyond(899, 30), 20);
        assert_eq!(f.writes_beyond(900, 30), 5);
        assert_eq!(f.writes_beyond(50, 30), 30);
        f.record(Switch {
            at_unix_ms: 1,
            from: "a".into(),
            to: "b".into(),
            source: "role",
            writes_at_risk: 0,
            bytes_at_risk: None,
        });
        assert_eq!(f.changes(), 1);
        assert_eq!(f.highest_offset(), None);
    }
}
