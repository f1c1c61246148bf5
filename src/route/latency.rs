//! How far an upstream is: a smoothed probe RTT plus a peak-sensitive
//! estimate from real traffic. Pure: every method takes `now`.
//!
//! - Probes: an EWMA of PING round trips with alpha 0.2, as MongoDB drivers
//!   smooth their RTT (a single outlier moves it by a fifth).
//! - Passive samples from real traffic, peak-sensitive (after linkerd's and
//!   tower's `PeakEwma`): a failure raises the estimate at once (x4, at
//!   least 100 ms, compounding while failures repeat); a slower
//!   sample closes half the gap, so a real slowdown moves reads within a
//!   request or two while a single scheduling hiccup on a busy host does
//!   not; a faster sample closes a fifth of it; without samples the
//!   estimate decays towards zero with time constant `PASSIVE_TAU`, leaving
//!   the probe EWMA in charge.
//!
//! The cost used to pick a read target is the larger of the two.

use std::time::Duration;

use tokio::time::Instant;

pub const PROBE_ALPHA: f64 = 0.2;
pub const PASSIVE_ALPHA: f64 = 0.2;
pub const PASSIVE_RISE: f64 = 0.5;
/// The least a failure raises the cost to, in seconds.
pub const FAILURE_FLOOR: f64 = 0.1;
pub const PASSIVE_TAU: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct Latency {
    probe: Option<f64>,
    passive: f64,
    passive_at: Option<Instant>,
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
        let alpha = if sample > current {
            PASSIVE_RISE
        } else {
            PASSIVE_ALPHA
        };
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
        // The first sample rises half way from zero.
        l.passive_sample(0.100, Instant::now());
        assert!(close(l.cost(Instant::now()).unwrap(), 0.050));
        tokio::time::advance(PASSIVE_TAU).await;
        assert!(close(
            l.cost(Instant::now()).unwrap(),
            0.050 * (-1f64).exp()
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
        assert!(close(l.cost(t0).unwrap(), 0.001), "half way up from zero");
        l.passive_sample(0.002, t0);
        assert!(close(l.cost(t0).unwrap(), 0.0015));
        // A slower reply closes half the gap: one hiccup does not double it.
        l.passive_sample(0.0415, t0);
        assert!(close(l.cost(t0).unwrap(), 0.0215));
        // A failure: at least 100 ms at once.
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
        assert!(close(l.cost(t0).unwrap(), 0.070));
        // One time constant later: 70 ms * e^-1, still above the probe.
        let t1 = t0 + PASSIVE_TAU;
        assert!(close(l.cost(t1).unwrap(), 0.070 * (-1.0f64).exp()));
        // Long after, the probe RTT is what is left.
        let t2 = t0 + PASSIVE_TAU * 10;
        assert!(close(l.cost(t2).unwrap(), 0.020));
    }
}
