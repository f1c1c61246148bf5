//! Choosing where one read goes. Pure: the caller gathers what the probers
//! and pipes know about each upstream into `Candidate`s.
//!
//! Candidates are the usable replicas (healthy, verified to be replicas,
//! within the staleness bound) plus the primary. The nearest by cost wins;
//! every candidate within `window` of the nearest shares the load, least
//! outstanding requests first (ties rotate), except that the primary steps
//! aside when a replica is within the window: it carries every write. Because the current choice
//! stays in that set until another is better by more than the window, a
//! small wobble in measurements does not move reads.

use std::fmt;

/// Why a replica cannot take reads right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    Down,
    /// Configured as a replica, but says `role:master`.
    NotAReplica,
    /// Lag beyond `max_staleness`.
    Stale,
}

/// Why a read went to the primary (`nearby_read_fallbacks_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fallback {
    /// No replica is configured at all.
    NoReplicas,
    NoHealthyReplica,
    /// Replicas are up but all lag beyond the bound.
    AllStale,
    /// The primary is the nearest (or within the window of it).
    PrimaryNearest,
    /// Read-your-writes: no replica has caught up with this session's write.
    PinnedAfterWrite,
    /// The session is pinned to a dedicated primary connection.
    PinnedSession,
    /// `--read-from primary`.
    ReadFromPrimary,
}

impl Fallback {
    pub const ALL: [Fallback; 7] = [
        Fallback::NoReplicas,
        Fallback::NoHealthyReplica,
        Fallback::AllStale,
        Fallback::PrimaryNearest,
        Fallback::PinnedAfterWrite,
        Fallback::PinnedSession,
        Fallback::ReadFromPrimary,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::NoReplicas => "no_replicas",
            Fallback::NoHealthyReplica => "no_healthy_replica",
            Fallback::AllStale => "all_stale",
            Fallback::PrimaryNearest => "primary_nearest",
            Fallback::PinnedAfterWrite => "pinned_after_write",
            Fallback::PinnedSession => "pinned_session",
            Fallback::ReadFromPrimary => "read_from_primary",
        }
    }
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// `None` when usable.
    pub unusable: Option<Unusable>,
    /// Expected cost in seconds; `None` before anything was measured.
    pub cost: Option<f64>,
    pub outstanding: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Choice {
    pub index: usize,
    pub fallback: Option<Fallback>,
}

/// Picks the candidate for one read. `primary` is the primary's index;
/// `rotate` breaks ties among equally loaded near candidates (any counter).
/// `extra_ok` lets the caller exclude candidates (e.g. replicas that have
/// not caught up with this session's writes): excluded replicas are treated
/// like unusable ones, and the fallback says `PinnedAfterWrite`.
pub fn select(
    cands: &[Candidate],
    primary: usize,
    window: f64,
    rotate: usize,
    extra_ok: impl Fn(usize) -> bool,
) -> Choice {
    let mut any_replica = false;
    let mut any_up = false;
    let mut any_fresh = false;
    let mut any_excluded = false;
    // A primary that is down still ends up chosen when nothing else is
    // usable (its error is then the honest answer), but never wins over a
    // usable replica.
    let usable =
        |i: usize, c: &Candidate| -> bool { c.unusable.is_none() && (i == primary || extra_ok(i)) };
    for (i, c) in cands.iter().enumerate() {
        if i == primary {
            continue;
        }
        any_replica = true;
        match c.unusable {
            None if extra_ok(i) => any_fresh = true,
            None => {
                any_up = true;
                any_excluded = true;
            }
            Some(Unusable::Stale) => any_up = true,
            Some(_) => {}
        }
    }
    let why_primary = if !any_replica {
        Fallback::NoReplicas
    } else if any_fresh {
        Fallback::PrimaryNearest
    } else if any_excluded {
        Fallback::PinnedAfterWrite
    } else if any_up {
        Fallback::AllStale
    } else {
        Fallback::NoHealthyReplica
    };
    if !any_fresh {
        return Choice {
            index: primary,
            fallback: Some(why_primary),
        };
    }
    // Unmeasured upstreams are neither near nor far: they join the window
    // only while nothing at all is measured.
    let best = cands
        .iter()
        .enumerate()
        .filter(|(i, c)| usable(*i, c))
        .filter_map(|(_, c)| c.cost)
        .fold(f64::INFINITY, f64::min);
    let near = |i: usize, c: &Candidate| -> bool {
        usable(i, c)
            && match c.cost {
                Some(cost) => cost <= best + window,
                None => best.is_infinite(),
            }
    };
    // Among near-equals, replicas take the reads: the primary also carries
    // every write, so it reads only when it is nearer by more than the
    // window (or nothing else is usable).
    let replica_near = cands
        .iter()
        .enumerate()
        .any(|(i, c)| i != primary && near(i, c));
    let n = cands.len();
    let mut chosen: Option<usize> = None;
    for k in 0..n {
        let i = (k + rotate) % n;
        let c = &cands[i];
        if !near(i, c) || (i == primary && replica_near) {
            continue;
        }
        if chosen.is_none_or(|j| c.outstanding < cands[j].outstanding) {
            chosen = Some(i);
        }
    }
    let index = chosen.unwrap_or(primary);
    Choice {
        index,
        fallback: (index == primary).then_some(why_primary),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(cost_ms: f64) -> Candidate {
        Candidate {
            unusable: None,
            cost: Some(cost_ms / 1000.0),
            outstanding: 0,
        }
    }

    fn pick(cands: &[Candidate], window_ms: f64, rotate: usize) -> Choice {
        select(cands, 0, window_ms / 1000.0, rotate, |_| true)
    }

    #[test]
    fn nearest_replica_wins() {
        let cands = [c(60.0), c(2.0), c(20.0), c(40.0)];
        for r in 0..8 {
            assert_eq!(
                pick(&cands, 2.0, r),
                Choice {
                    index: 1,
                    fallback: None
                }
            );
        }
    }

    #[test]
    fn primary_nearest_is_a_fallback_with_its_reason() {
        let cands = [c(1.0), c(30.0)];
        assert_eq!(
            pick(&cands, 2.0, 0),
            Choice {
                index: 0,
                fallback: Some(Fallback::PrimaryNearest)
            }
        );
    }

    #[test]
    fn the_window_shares_load_by_outstanding_requests() {
        let mut cands = [c(60.0), c(10.0), c(11.5), c(13.0)];
        // 10 and 11.5 are within 2 ms; 13 is not.
        let picks: Vec<usize> = (0..4).map(|r| pick(&cands, 2.0, r).index).collect();
        assert!(picks.iter().all(|&i| i == 1 || i == 2), "{picks:?}");
        assert!(
            picks.contains(&1) && picks.contains(&2),
            "ties rotate: {picks:?}"
        );
        cands[1].outstanding = 5;
        cands[2].outstanding = 1;
        for r in 0..4 {
            assert_eq!(pick(&cands, 2.0, r).index, 2);
        }
    }

    #[test]
    fn a_switch_needs_more_than_the_window() {
        // Current choice 1 at 10 ms; replica 2 improves to 8.5 ms: both are
        // still in the window, so reads keep going to both, not only to 2.
        let cands = [c(60.0), c(10.0), c(8.5)];
        let picks: Vec<usize> = (0..4).map(|r| pick(&cands, 2.0, r).index).collect();
        assert!(picks.contains(&1));
        // At 7.9 ms it is better by more than the window: 1 drops out.
        let cands = [c(60.0), c(10.0), c(7.9)];
        for r in 0..4 {
            assert_eq!(pick(&cands, 2.0, r).index, 2);
        }
    }

    #[test]
    fn unusable_replicas_and_fallback_reasons() {
        let mut cands = [c(60.0), c(2.0), c(20.0)];
        cands[1].unusable = Some(Unusable::Down);
        assert_eq!(pick(&cands, 2.0, 0).index, 2);
        cands[2].unusable = Some(Unusable::Stale);
        assert_eq!(
            pick(&cands, 2.0, 0),
            Choice {
                index: 0,
                fallback: Some(Fallback::AllStale)
            }
        );
        cands[2].unusable = Some(Unusable::NotAReplica);
        assert_eq!(
            pick(&cands, 2.0, 0).fallback,
            Some(Fallback::NoHealthyReplica)
        );
        assert_eq!(
            pick(&cands[..1], 2.0, 0).fallback,
            Some(Fallback::NoReplicas)
        );
        // Excluded by the caller (read-your-writes).
        let cands = [c(60.0), c(2.0)];
        assert_eq!(
            select(&cands, 0, 0.002, 0, |i| i != 1),
            Choice {
                index: 0,
                fallback: Some(Fallback::PinnedAfterWrite)
            }
        );
    }

    #[test]
    fn near_equal_replicas_take_reads_before_the_primary() {
        let cands = [c(0.3), c(0.4), c(1.9)];
        let picks: Vec<usize> = (0..6).map(|r| pick(&cands, 2.0, r).index).collect();
        assert!(!picks.contains(&0), "{picks:?}");
        assert!(picks.contains(&1) && picks.contains(&2), "{picks:?}");
        // Nearer by more than the window: the primary reads.
        let cands = [c(0.3), c(2.4)];
        assert_eq!(
            pick(&cands, 2.0, 0).fallback,
            Some(Fallback::PrimaryNearest)
        );
    }

    #[test]
    fn a_down_primary_loses_to_any_usable_replica() {
        let mut cands = [c(1.0), c(80.0)];
        cands[0].unusable = Some(Unusable::Down);
        assert_eq!(
            pick(&cands, 2.0, 0),
            Choice {
                index: 1,
                fallback: None
            }
        );
        cands[1].unusable = Some(Unusable::Down);
        assert_eq!(pick(&cands, 2.0, 0).index, 0);
    }

    #[test]
    fn unmeasured_upstreams_share_until_something_is_measured() {
        let mut cands = [c(0.0), c(0.0), c(0.0)];
        for x in &mut cands {
            x.cost = None;
        }
        let picks: Vec<usize> = (0..3).map(|r| pick(&cands, 2.0, r).index).collect();
        assert!(picks.contains(&1) && picks.contains(&2));
        cands[2].cost = Some(0.005);
        for r in 0..3 {
            assert_eq!(pick(&cands, 2.0, r).index, 2);
        }
    }
}
