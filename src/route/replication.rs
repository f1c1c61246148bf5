//! How far behind a replica is, in seconds, from replication offsets.
//! Pure: the probers feed samples in and pass `now`.
//!
//! The primary's prober records `master_repl_offset` with the time it saw
//! it. A replica's own `slave_repl_offset` is current (the primary's view
//! of replica offsets lags by up to a second, REDIS-NOTES.md). A replica at
//! offset `r` lacks every write the primary had made when it first reported
//! an offset above `r`; so the replica is at least `now - t` behind, where
//! `t` is the time of that first sample. With one sample per probe interval
//! this is a lower bound, exact to within the interval.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Enough history to measure lags well past any sensible staleness bound
/// at one sample a second, and more when sampled fast.
const CAPACITY: usize = 4096;

#[derive(Debug, Default)]
pub struct OffsetHistory {
    samples: VecDeque<(Instant, u64)>,
    /// The latest time the newest offset was confirmed (samples that do not
    /// advance the offset are not stored, but they still say "as of then,
    /// the primary was at this offset").
    confirmed_at: Option<Instant>,
}

impl OffsetHistory {
    pub fn new() -> OffsetHistory {
        OffsetHistory::default()
    }

    /// Records the primary's offset as seen at `at`. Samples that do not
    /// advance the offset add nothing: only the first time an offset was
    /// reached matters.
    /// `at` must be when the INFO request was sent: the reply's offset
    /// then covers every write acknowledged before `at`.
    pub fn record(&mut self, at: Instant, offset: u64) {
        self.confirmed_at = Some(self.confirmed_at.map_or(at, |c| c.max(at)));
        if let Some(&(_, last)) = self.samples.back()
            && offset <= last
        {
            return;
        }
        if self.samples.len() == CAPACITY {
            self.samples.pop_front();
        }
        self.samples.push_back((at, offset));
    }

    /// The primary's offset as first observed at or after `t`: it covers
    /// every write acknowledged before `t`. `None` until such a sample.
    pub fn offset_at_or_after(&self, t: Instant) -> Option<u64> {
        if let Some(&(_, o)) = self.samples.iter().find(|(at, _)| *at >= t) {
            return Some(o);
        }
        match (self.samples.back(), self.confirmed_at) {
            (Some(&(_, o)), Some(c)) if c >= t => Some(o),
            _ => None,
        }
    }

    /// The latest offset the primary reported.
    pub fn latest(&self) -> Option<u64> {
        self.samples.back().map(|&(_, o)| o)
    }

    /// The lag of a replica that reported `offset` at `at`. Zero when it has
    /// everything the primary had reported by then; the full span of the
    /// history when it is behind all of it.
    pub fn lag(&self, offset: u64, at: Instant) -> Duration {
        self.samples
            .iter()
            .take_while(|(t, _)| *t <= at)
            .find(|(_, o)| *o > offset)
            .map(|(t, _)| at.saturating_duration_since(*t))
            .unwrap_or(Duration::ZERO)
    }
}

/// What a replica's `INFO replication` says, reduced to what routing needs.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ReplicationInfo {
    /// `role:master` or `role:slave`.
    pub is_master: bool,
    pub master_repl_offset: Option<u64>,
    pub slave_repl_offset: Option<u64>,
    pub link_up: bool,
    /// `master_link_down_since_seconds` when the link is down.
    pub link_down_for: Option<Duration>,
    /// The replication history this server is on, the one before it, and
    /// where that earlier one ends (+1): PSYNC2's bookkeeping, which says
    /// what a promoted replica kept of its old primary's history.
    pub master_replid: Option<String>,
    pub master_replid2: Option<String>,
    pub second_repl_offset: Option<u64>,
    /// A replica's primary, `master_host:master_port`.
    pub master_addr: Option<(String, u16)>,
}

impl ReplicationInfo {
    pub fn parse(text: &str) -> ReplicationInfo {
        let mut info = ReplicationInfo::default();
        for line in text.lines() {
            let Some((k, v)) = line.trim().split_once(':') else {
                continue;
            };
            match k {
                "role" => info.is_master = v == "master",
                "master_repl_offset" => info.master_repl_offset = v.parse().ok(),
                "slave_repl_offset" => info.slave_repl_offset = v.parse().ok(),
                "master_link_status" => info.link_up = v == "up",
                "master_replid" => info.master_replid = Some(v.to_string()),
                "master_replid2" => info.master_replid2 = Some(v.to_string()),
                // -1 when there is no earlier history.
                "second_repl_offset" => info.second_repl_offset = v.parse().ok(),
                "master_host" => {
                    let port = info.master_addr.as_ref().map_or(0, |a| a.1);
                    info.master_addr = Some((v.to_string(), port));
                }
                "master_port" => {
                    let host = info.master_addr.take().map(|a| a.0).unwrap_or_default();
                    info.master_addr = Some((host, v.parse().unwrap_or(0)));
                }
                "master_link_down_since_seconds" => {
                    info.link_down_for = v
                        .parse::<i64>()
                        .ok()
                        .map(|s| Duration::from_secs(s.max(0) as u64))
                }
                _ => {}
            }
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_from_the_first_primary_offset_the_replica_lacks() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut h = OffsetHistory::new();
        h.record(t0, 100);
        h.record(t0 + s, 100); // no write: ignored
        h.record(t0 + 2 * s, 250);
        h.record(t0 + 3 * s, 400);
        assert_eq!(h.latest(), Some(400));
        // Current replica: no lag.
        assert_eq!(h.lag(400, t0 + 3 * s), Duration::ZERO);
        assert_eq!(h.lag(500, t0 + 3 * s), Duration::ZERO);
        // Missing the write seen at t0+2s, observed at t0+3.5s.
        assert_eq!(
            h.lag(250 - 1, t0 + 3 * s + s / 2),
            Duration::from_millis(1500)
        );
        assert_eq!(h.lag(250, t0 + 3 * s + s / 2), Duration::from_millis(500));
        // Behind everything: the whole history.
        assert_eq!(h.lag(0, t0 + 10 * s), Duration::from_secs(10));
        // Samples after the replica's observation do not count.
        assert_eq!(h.lag(250, t0 + 2 * s + s / 2), Duration::ZERO);
    }

    #[test]
    fn offset_covering_a_write() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut h = OffsetHistory::new();
        h.record(t0, 100);
        // A write acknowledged at t0+5ms: nothing observed since.
        assert_eq!(h.offset_at_or_after(t0 + ms(5)), None);
        // A sample at t0+10ms that did not advance still confirms 100.
        h.record(t0 + ms(10), 100);
        assert_eq!(h.offset_at_or_after(t0 + ms(5)), Some(100));
        h.record(t0 + ms(20), 180);
        h.record(t0 + ms(30), 260);
        assert_eq!(h.offset_at_or_after(t0 + ms(15)), Some(180));
        assert_eq!(h.offset_at_or_after(t0 + ms(20)), Some(180));
        assert_eq!(h.offset_at_or_after(t0 + ms(21)), Some(260));
        assert_eq!(h.offset_at_or_after(t0 + ms(31)), None);
    }

    #[test]
    fn history_is_bounded() {
        let t0 = Instant::now();
        let mut h = OffsetHistory::new();
        for i in 0..(CAPACITY as u64 + 10) {
            h.record(t0 + Duration::from_millis(i), i + 1);
        }
        assert_eq!(h.samples.len(), CAPACITY);
        assert_eq!(h.latest(), Some(CAPACITY as u64 + 10));
    }

    #[test]
    fn parses_info_replication() {
        let replica = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:6380\r\nmaster_link_status:down\r\nmaster_link_down_since_seconds:12\r\nslave_repl_offset:3456\r\nmaster_repl_offset:3456\r\n";
        let r = ReplicationInfo::parse(replica);
        assert_eq!(
            r,
            ReplicationInfo {
                is_master: false,
                master_repl_offset: Some(3456),
                slave_repl_offset: Some(3456),
                link_up: false,
                link_down_for: Some(Duration::from_secs(12)),
                master_addr: Some(("127.0.0.1".into(), 6380)),
                ..ReplicationInfo::default()
            }
        );
        let primary = "role:master\r\nconnected_slaves:1\r\nmaster_replid:abc\r\nmaster_replid2:def\r\nmaster_repl_offset:99\r\nsecond_repl_offset:42\r\n";
        let p = ReplicationInfo::parse(primary);
        assert!(p.is_master);
        assert_eq!(p.master_repl_offset, Some(99));
        assert_eq!(
            (p.master_replid.as_deref(), p.master_replid2.as_deref()),
            (Some("abc"), Some("def"))
        );
        assert_eq!(p.second_repl_offset, Some(42));
        let fresh = ReplicationInfo::parse("role:master\r\nsecond_repl_offset:-1\r\n");
        assert_eq!(fresh.second_repl_offset, None);
        assert_eq!(p.slave_repl_offset, None);
    }
}
