//! Read-your-writes with replication offsets. Pure: the session (or the
//! sidecar, for the sidecar-wide scope) feeds it acknowledgements and
//! offsets; it says how fresh a replica must be to serve the next read.
//!
//! After a write is acknowledged at time `t`, the first primary offset
//! sampled at or after `t` covers it (offsets only grow). A replica whose
//! own `slave_repl_offset` has reached that offset has applied the write.
//! Until that offset is known, or no replica has reached it, reads go to
//! the primary. A read served by the primary counts like a write (a later
//! replica read must be at least as fresh), and a read served by a replica
//! raises the bar to that replica's offset: a session never goes back in
//! time when it moves between upstreams.

use tokio::time::Instant;

use crate::route::replication::OffsetHistory;

/// What the next read needs from a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Any replica (nothing written, or the writes are everywhere known).
    Any,
    /// A replica at or past this offset.
    Offset(u64),
    /// A write is not yet covered by any primary offset sample: only the
    /// primary is known to have it.
    Primary,
}

#[derive(Clone, Debug, Default)]
pub struct Tracker {
    /// Acknowledgements whose covering offset is not known yet: the oldest
    /// one decides (a later sample covers all of them).
    unresolved_since: Option<Instant>,
    /// The newest acknowledgement, resolved once a sample covers it.
    newest_ack: Option<Instant>,
    /// The offset every replica read must reach.
    min_offset: u64,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    /// A write (or a primary read) was acknowledged at `at`.
    pub fn acknowledged(&mut self, at: Instant) {
        if self.unresolved_since.is_none() {
            self.unresolved_since = Some(at);
        }
        self.newest_ack = Some(self.newest_ack.map_or(at, |n| n.max(at)));
    }

    /// The primary changed; the new history holds at most `offset` of the
    /// old one. A bar above it is lowered to it: waiting for more would
    /// wait for writes that did not survive (the switch reported them).
    /// Acknowledgements not yet resolved resolve against the new history.
    pub fn rebase(&mut self, offset: u64) {
        self.min_offset = self.min_offset.min(offset);
    }

    /// A replica at `offset` (as last probed) served a read.
    pub fn served_by_replica(&mut self, offset: u64) {
        self.min_offset = self.min_offset.max(offset);
    }

    /// What the next read needs, resolving acknowledgements against the
    /// primary's offset history.
    pub fn need(&mut self, history: &OffsetHistory) -> Need {
        if self.unresolved_since.is_some() {
            let newest = self.newest_ack.expect("set with unresolved_since");
            match history.offset_at_or_after(newest) {
                Some(o) => {
                    // Covers every acknowledgement up to the newest.
                    self.min_offset = self.min_offset.max(o);
                    self.unresolved_since = None;
                    self.newest_ack = None;
                }
                None => return Need::Primary,
            }
        }
        if self.min_offset == 0 {
            Need::Any
        } else {
            Need::Offset(self.min_offset)
        }
    }
}

/// Whether a replica at `offset` may serve a read that needs `need`.
pub fn fresh_enough(need: Need, offset: u64) -> bool {
    match need {
        Need::Any => true,
        Need::Offset(o) => offset >= o,
        Need::Primary => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_write_pins_reads_until_a_replica_reaches_its_offset() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut h = OffsetHistory::new();
        h.record(t0, 1000);
        let mut t = Tracker::new();
        assert_eq!(t.need(&h), Need::Any);

        // Write acknowledged at t0+5ms; no sample since: primary only.
        t.acknowledged(t0 + ms(5));
        assert_eq!(t.need(&h), Need::Primary);
        assert!(!fresh_enough(t.need(&h), u64::MAX));

        // The primary's offset sampled at t0+8ms covers it.
        h.record(t0 + ms(8), 1100);
        assert_eq!(t.need(&h), Need::Offset(1100));
        assert!(!fresh_enough(Need::Offset(1100), 1099));
        assert!(fresh_enough(Need::Offset(1100), 1100));

        // Two more writes; the newer one decides.
        t.acknowledged(t0 + ms(10));
        t.acknowledged(t0 + ms(12));
        h.record(t0 + ms(11), 1200); // before the second write: not enough
        assert_eq!(t.need(&h), Need::Primary);
        h.record(t0 + ms(13), 1300);
        assert_eq!(t.need(&h), Need::Offset(1300));
    }

    #[test]
    fn a_failover_lowers_bars_the_new_history_cannot_reach() {
        let t0 = Instant::now();
        let mut h = OffsetHistory::new();
        h.record(t0, 500);
        let mut t = Tracker::new();
        t.served_by_replica(900);
        t.rebase(700);
        assert_eq!(t.need(&h), Need::Offset(700));
        t.rebase(800);
        assert_eq!(t.need(&h), Need::Offset(700));
        // An acknowledgement still open resolves in the new history.
        t.acknowledged(t0 + Duration::from_millis(5));
        let mut fresh = OffsetHistory::new();
        assert_eq!(t.need(&fresh), Need::Primary);
        fresh.record(t0 + Duration::from_millis(6), 650);
        assert_eq!(t.need(&fresh), Need::Offset(700));
    }

    #[test]
    fn reads_never_go_back_in_time() {
        let t0 = Instant::now();
        let mut h = OffsetHistory::new();
        h.record(t0, 500);
        let mut t = Tracker::new();
        t.served_by_replica(700);
        assert_eq!(t.need(&h), Need::Offset(700));
        // A replica at 600 is older than what this session already saw.
        assert!(!fresh_enough(t.need(&h), 600));
        t.served_by_replica(650);
        assert_eq!(t.need(&h), Need::Offset(700));
    }
}
