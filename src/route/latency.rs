//! How far an upstream is: a smoothed probe RTT plus a peak-sensitive
//! estimate from real traffic. Pure: every method takes `now`.
//!
//! - Probes: an EWMA of PING round trips with alpha 0.2, as MongoDB drivers
//!   smooth their RTT (a single outlier moves it by a fifth).
//! - Passive samples from real traffic, peak-sensitive (after linkerd's and
//!   tower's `PeakEwma`): a failure raises the estimate at once (x4, at
//!   least 100 ms, compounding while failures repeat); a slower sample
//!   closes a fifth of the gap and a second slower one in a row closes
//!   half, so a real slowdown moves reads within two or three requests
//!   while a single scheduling stall on a busy host (one 25 ms reply from
//!   a 1 ms replica) does not move them to a 10 ms one; a faster sample
//!   closes a fifth of the gap; without samples the
//!   estimate decays towards zero with time constant `PASSIVE_TAU`, leaving
//!   the probe EWMA in charge.
//!
//! The cost used to pick a read target is the larger of the two.

use std::time::Duration;

use tokio::time::Instant;

pub const PROBE_ALPHA: f64 = 0.2;
pub const PASSIVE_ALPHA: f64 = 0.2;
/// How much of the gap a slower sample closes when the one before it was
/// slower too.
pub const PASSIVE_RISE: f64 = 0.5;
/// The least a failure raises the cost to, in seconds.
pub const FAILURE_FLOOR: f64 = 0.1;
pub const PASSIVE_TAU: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct Latency {
    probe: Option<f64>,
    passive: f64,
    passive_at: Option<Instant>,
    /// The last passive sample was above the estimate.
    rising: bool,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Latency {
        Latency {
            probe: None,
            passive: 0.0,
            passive_at: None,
            rising: false,
        }
    }

    /// One probe round trip, in seconds. The first sample seeds the EWMA.
    pub fn probe_sample(&mut self, rtt: f64) {
        self.probe = Some(match self.probe {
            None => rtt,
            Some(prev) => prev + PROBE_ALPHA * (rtt - prev),
        });
    }

    /// The smoothed probe RTT, in seconds; `None` before the first probe.
    pub fn smoothed_rtt(&self) -> Option<f64> {
        self.probe
    }

    fn passive_at(&self, now: Instant) -> f64 {
        match self.passive_at {
            None => 0.0,
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                self.passive * (-dt / PASSIVE_TAU.as_secs_f64()).exp()
            }
        }
    }

    /// One request's latency from real traffic, in seconds.
    pub fn passive_sample(&mut self, sample: f64, now: Instant) {
        let current = self.passive_at(now);
        let slower = sample > current;
        let alpha = if slower && self.rising {
            PASSIVE_RISE
        } else {
            PASSIVE_ALPHA
        };
        self.rising = slower;
        self.passive = current + alpha * (sample - current);
        self.passive_at = Some(now);
    }

    /// A failure (no reply, a timeout): the estimate jumps at once to four
    /// times the current cost, at least `FAILURE_FLOOR` and at most
    /// `ceiling` (the timeout that failed). Large enough to move reads to
    /// any near alternative at once, not so large that one transient failure
    /// sends reads to a far region for many seconds; repeated failures
    /// compound, and the health check takes a dead upstream out anyway.
    pub fn failure(&mut self, ceiling: f64, now: Instant) {
        let current = self.cost(now).unwrap_or(0.0);
        let penalty = (current * 4.0)
            .max(FAILURE_FLOOR)
            .min(ceiling.max(FAILURE_FLOOR));
        self.passive = self.passive_at(now).max(penalty);
        self.passive_at = Some(now);
    }

    /// What choosing this upstream is expected to cost, in seconds; `None`
    /// when nothing has been measured yet.
    pub fn cost(&self, now: Instant) -> Option<f64> {
        let passive = self.passive_at.map(|_| self.passive_at(now));
        match (self.probe, passive) {
            (None, None) => None,
            (Some(p), None) => Some(p),
            (None, Some(q)) => Some(q),
            (Some(p), Some(q)) => Some(p.max(q)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn passive_cost_decays_by_e_per_time_constant_on_paused_time() {
        let mut l = Latency::new();
        // The first sample rises a fifth of the way from zero.
        l.passive_sample(0.100, Instant::now());
        assert!(close(l.cost(Instant::now()).unwrap(), 0.020));
        tokio::time::advance(PASSIVE_TAU).await;
        assert!(close(
            l.cost(Instant::now()).unwrap(),
            0.020 * (-1f64).exp()
        ));
        // A probe EWMA takes over once the passive estimate fell below it.
        l.probe_sample(0.010);
        tokio::time::advance(PASSIVE_TAU * 2).await;
        assert!(close(l.cost(Instant::now()).unwrap(), 0.010));
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn probe_ewma_with_alpha_one_fifth() {
        let mut l = Latency::new();
        assert_eq!(l.smoothed_rtt(), None);
        l.probe_sample(0.010);
        assert!(close(l.smoothed_rtt().unwrap(), 0.010));
        l.probe_sample(0.060);
        assert!(close(l.smoothed_rtt().unwrap(), 0.020));
        l.probe_sample(0.020);
        assert!(close(l.smoothed_rtt().unwrap(), 0.020));
        l.probe_sample(0.0);
        assert!(close(l.smoothed_rtt().unwrap(), 0.016));
    }

    #[test]
    fn passive_rises_fast_falls_slowly_and_jumps_on_failure() {
        let t0 = Instant::now();
        let mut l = Latency::new();
        assert_eq!(l.cost(t0), None);
        l.passive_sample(0.002, t0);
        assert!(close(l.cost(t0).unwrap(), 0.0004), "a fifth up from zero");
        // A second slower reply in a row closes half the gap.
        l.passive_sample(0.002, t0);
        assert!(close(l.cost(t0).unwrap(), 0.0012));
        // A faster one closes a fifth.
        l.passive_sample(0.0, t0);
        assert!(close(l.cost(t0).unwrap(), 0.00096));
        // One stall after it moves the estimate a fifth of the way only...
        l.passive_sample(0.02496, t0);
        assert!(close(l.cost(t0).unwrap(), 0.00576));
        // ...a second slow reply in a row, half of what is left.
        l.passive_sample(0.02576, t0);
        assert!(close(l.cost(t0).unwrap(), 0.01576));
        // A failure: at least 100 ms at once (4 x 15.76 ms is less).
        l.failure(1.0, t0);
        assert!(close(l.cost(t0).unwrap(), 0.1));
        // Repeated failures compound (x4), up to the timeout.
        l.failure(1.0, t0);
        assert!(close(l.cost(t0).unwrap(), 0.4));
        l.failure(1.0, t0);
        assert!(close(l.cost(t0).unwrap(), 1.0));
        // Good replies bring it down by a fifth of the gap each.
        l.passive_sample(0.0, t0);
        assert!(close(l.cost(t0).unwrap(), 0.8));
        l.passive_sample(0.0, t0);
        assert!(close(l.cost(t0).unwrap(), 0.64));
    }

    #[test]
    fn without_samples_the_passive_estimate_decays_to_the_probe() {
        let t0 = Instant::now();
        let mut l = Latency::new();
        l.probe_sample(0.020);
        l.passive_sample(0.140, t0);
        assert!(close(l.cost(t0).unwrap(), 0.028));
        l.passive_sample(0.140, t0);
        assert!(close(l.cost(t0).unwrap(), 0.084));
        // One time constant later: 84 ms * e^-1, still above the probe.
        let t1 = t0 + PASSIVE_TAU;
        assert!(close(l.cost(t1).unwrap(), 0.084 * (-1.0f64).exp()));
        // Long after, the probe RTT is what is left.
        let t2 = t0 + PASSIVE_TAU * 10;
        assert!(close(l.cost(t2).unwrap(), 0.020));
    }

    #[test]
    fn one_stall_does_not_move_reads_to_a_farther_replica_two_in_a_row_do() {
        let t0 = Instant::now();
        let (mut near, mut far) = (Latency::new(), Latency::new());
        near.probe_sample(0.001);
        far.probe_sample(0.010);
        // One 25 ms reply from the 1 ms replica (a stall on a busy host).
        near.passive_sample(0.025, t0);
        assert!(close(near.cost(t0).unwrap(), 0.005));
        assert!(near.cost(t0) < far.cost(t0));
        // A second in a row is a slowdown: the far one is nearer now.
        near.passive_sample(0.025, t0);
        assert!(close(near.cost(t0).unwrap(), 0.015));
        assert!(near.cost(t0) > far.cost(t0));
    }
}
