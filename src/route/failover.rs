//! Who the primary is when servers change roles. Pure: the ROLE follower
//! feeds it what each server said on its last probe; it answers whether to
//! keep the primary, move writes, or hold them.
//!
//! The rule is "never two primaries": writes go to the one server that says
//! `master`. When two say so (a promotion whose old primary has not stepped
//! down yet, or an old primary restarted with its old config), nobody gets
//! writes until one steps down, because a write to the wrong one is lost.

/// What a server said about itself on its last probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Not probed yet, or its last probe failed: its word is not current.
    Unknown,
    Master,
    /// A replica of a server this sidecar knows, or with its link up: part
    /// of a replication setup, maybe mid-failover.
    Replica,
    /// A replica of nothing this sidecar knows, its link down (an operator's
    /// `REPLICAOF` elsewhere): not a failover; writes get its own answer.
    Orphan,
}

impl Claim {
    pub fn as_u8(self) -> u8 {
        match self {
            Claim::Unknown => 0,
            Claim::Master => 1,
            Claim::Replica => 2,
            Claim::Orphan => 3,
        }
    }

    pub fn from_u8(v: u8) -> Claim {
        match v {
            1 => Claim::Master,
            2 => Claim::Replica,
            3 => Claim::Orphan,
            _ => Claim::Unknown,
        }
    }

    /// What `INFO replication` says: `known` tells whether an address is
    /// one of this sidecar's servers.
    pub fn of(
        is_master: bool,
        link_up: bool,
        master: Option<&str>,
        known: impl Fn(&str) -> bool,
    ) -> Claim {
        if is_master {
            Claim::Master
        } else if link_up || master.is_some_and(known) {
            Claim::Replica
        } else {
            Claim::Orphan
        }
    }
}

/// One server as the election sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Server {
    pub id: usize,
    pub claim: Claim,
    /// Up by the prober's hysteresis: a down server's last word is stale.
    pub healthy: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Election {
    /// The current primary stays (it says master, or it is down and nobody
    /// else says master: an outage, not a failover).
    Keep,
    /// Move writes to this server (after confirming its ROLE).
    Switch(usize),
    /// More than one server says master: hold writes, naming them.
    Conflict(Vec<usize>),
    /// The primary says it is a replica and no server says master yet: a
    /// failover is under way; writes wait.
    NoPrimary,
}

/// Decides from the servers' claims; `current` is the primary's id.
pub fn elect(current: usize, servers: &[Server]) -> Election {
    let masters: Vec<usize> = servers
        .iter()
        .filter(|s| s.healthy && s.claim == Claim::Master)
        .map(|s| s.id)
        .collect();
    match masters.as_slice() {
        [] => {
            let primary_says_replica = servers
                .iter()
                .any(|s| s.id == current && s.healthy && s.claim == Claim::Replica);
            if primary_says_replica {
                Election::NoPrimary
            } else {
                Election::Keep
            }
        }
        [one] if *one == current => Election::Keep,
        [one] => Election::Switch(*one),
        many => Election::Conflict(many.to_vec()),
    }
}

/// The bytes of the old primary's history the new primary may lack: the
/// new primary holds the old history up to `second_repl_offset - 1` (Redis's
/// PSYNC2 bookkeeping); `acked` is the highest offset the sidecar saw the
/// old primary report after acknowledging writes. `None` when nothing
/// acknowledged can be missing.
pub fn bytes_at_risk(acked: u64, second_repl_offset: u64) -> Option<(u64, u64)> {
    let kept = second_repl_offset.saturating_sub(1);
    (second_repl_offset > 0 && acked > kept).then_some((kept + 1, acked))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: usize, claim: Claim, healthy: bool) -> Server {
        Server { id, claim, healthy }
    }

    #[test]
    fn one_master_is_the_primary() {
        use Claim::*;
        let steady = [s(0, Master, true), s(1, Replica, true), s(2, Replica, true)];
        assert_eq!(elect(0, &steady), Election::Keep);
        // REPLICAOF NO ONE on 1, then REPLICAOF 1 on 0: writes follow.
        let moved = [s(0, Replica, true), s(1, Master, true), s(2, Replica, true)];
        assert_eq!(elect(0, &moved), Election::Switch(1));
        // The primary killed, a replica promoted by someone else.
        let promoted = [s(0, Master, false), s(1, Master, true), s(2, Unknown, true)];
        assert_eq!(elect(0, &promoted), Election::Switch(1));
    }

    #[test]
    fn two_masters_hold_writes() {
        use Claim::*;
        let both = [s(0, Master, true), s(1, Master, true), s(2, Replica, true)];
        assert_eq!(elect(0, &both), Election::Conflict(vec![0, 1]));
        // The old primary restarted with its old config, after a switch to 1.
        assert_eq!(elect(1, &both), Election::Conflict(vec![0, 1]));
    }

    #[test]
    fn no_master_is_a_failover_only_when_the_primary_says_replica() {
        use Claim::*;
        let stepped_down = [s(0, Replica, true), s(1, Replica, true)];
        assert_eq!(elect(0, &stepped_down), Election::NoPrimary);
        // Down: an outage; writes fail fast as before, no waiting.
        let down = [s(0, Master, false), s(1, Replica, true)];
        assert_eq!(elect(0, &down), Election::Keep);
        let unknown = [s(0, Unknown, true), s(1, Replica, true)];
        assert_eq!(elect(0, &unknown), Election::Keep);
        // REPLICAOF somewhere unknown: the server answers writes itself.
        let orphan = [s(0, Orphan, true), s(1, Replica, true)];
        assert_eq!(elect(0, &orphan), Election::Keep);
    }

    #[test]
    fn bytes_at_risk_start_after_what_the_new_primary_kept() {
        // The new primary kept the old history up to 1000 (second offset 1001).
        assert_eq!(bytes_at_risk(1000, 1001), None);
        assert_eq!(bytes_at_risk(900, 1001), None);
        assert_eq!(bytes_at_risk(1250, 1001), Some((1001, 1250)));
        // No second history (never switched): nothing to compare.
        assert_eq!(bytes_at_risk(1250, 0), None);
    }

    #[test]
    fn claims_round_trip_through_u8() {
        for c in [Claim::Unknown, Claim::Master, Claim::Replica, Claim::Orphan] {
            assert_eq!(Claim::from_u8(c.as_u8()), c);
        }
        assert_eq!(Claim::from_u8(9), Claim::Unknown);
        let known = |a: &str| a == "10.0.0.2:6379";
        assert_eq!(Claim::of(true, false, None, known), Claim::Master);
        assert_eq!(
            Claim::of(false, false, Some("10.0.0.2:6379"), known),
            Claim::Replica
        );
        assert_eq!(
            Claim::of(false, true, Some("10.9.9.9:6379"), known),
            Claim::Replica
        );
        assert_eq!(
            Claim::of(false, false, Some("localhost:9999"), known),
            Claim::Orphan
        );
    }
}
