//! Health with hysteresis (HAProxy's rise/fall), so a flapping upstream
//! does not make routing flap. Pure: the prober feeds it probe results.

/// HAProxy-style rise/fall: down after `fall` consecutive failures, up after
/// `rise` consecutive successes.
#[derive(Clone, Debug)]
pub struct HealthState {
    rise: u32,
    fall: u32,
    healthy: bool,
    streak: u32,
}

impl HealthState {
    /// Starts healthy: until the first probes say otherwise, the configured
    /// topology is trusted (failures then take it down after `fall`).
    pub fn new(rise: u32, fall: u32) -> HealthState {
        HealthState {
            rise: rise.max(1),
            fall: fall.max(1),
            healthy: true,
            streak: 0,
        }
    }

    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Records one probe result; returns the new state when it changed.
    /// `streak` counts consecutive results that disagree with the state.
    pub fn observe(&mut self, ok: bool) -> Option<bool> {
        if ok == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy { self.fall } else { self.rise };
        if self.streak >= needed {
            self.healthy = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }

    /// A connection failure seen by the data path counts as a failed probe.
    pub fn force_down(&mut self) {
        self.healthy = false;
        self.streak = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_successes() {
        let mut h = HealthState::new(2, 3);
        assert!(h.healthy());
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(false), Some(false));
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), Some(true));
    }

    #[test]
    fn a_flapping_upstream_does_not_flap_the_state() {
        let mut h = HealthState::new(2, 3);
        for _ in 0..10 {
            assert_eq!(h.observe(false), None);
            assert_eq!(h.observe(true), None);
        }
        assert!(h.healthy());
        h.force_down();
        for _ in 0..10 {
            assert_eq!(h.observe(true), None);
            assert_eq!(h.observe(false), None);
        }
        assert!(!h.healthy());
    }
}
