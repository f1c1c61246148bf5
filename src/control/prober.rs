//! Health: a prober per upstream on its own connection, with rise/fall
//! hysteresis so a flapping upstream does not make routing flap.
//!
//! The state machine is pure; the prober loop owns the socket.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::app::Shared;
use crate::conn::connect::{self as upstream, Handshake, UpstreamError};
use crate::model::topology::{Role, Upstream};
use crate::proto::{Command, Reply, ReplyFramer, ReplyLimits};
use crate::route::replication::ReplicationInfo;

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

/// A plain request/reply connection for the sidecar's own commands.
pub struct Control {
    stream: upstream::UpstreamStream,
    buf: BytesMut,
    framer: ReplyFramer,
}

impl Control {
    pub async fn open(up: &Upstream, timeout: Duration) -> Result<Control, UpstreamError> {
        let (stream, buf) = upstream::open(up, &Handshake::default(), timeout).await?;
        Ok(Control {
            stream,
            buf,
            framer: ReplyFramer::new(ReplyLimits::default()),
        })
    }

    /// `call`, with an error reply (a refusal) returned as an error.
    pub async fn call_ok(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
    ) -> Result<Reply, UpstreamError> {
        let reply = self.call(args, timeout).await?;
        if reply.is_error() {
            return Err(refused(&reply));
        }
        Ok(reply)
    }

    pub async fn call(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
    ) -> Result<Reply, UpstreamError> {
        let cmd = Command::from_args(args);
        let exchange = async {
            self.stream
                .write_all(cmd.raw())
                .await
                .map_err(|e| UpstreamError::Lost(e.to_string()))?;
            loop {
                match self.framer.next(&mut self.buf) {
                    Ok(Some(r)) if r.is_push() => continue,
                    Ok(Some(r)) => return Ok(r),
                    Ok(None) => {}
                    Err(e) => return Err(UpstreamError::Protocol(e.to_string())),
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) => return Err(UpstreamError::Lost("closed by the upstream".into())),
                    Ok(_) => {}
                    Err(e) => return Err(UpstreamError::Lost(e.to_string())),
                }
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Timeout(timeout.as_millis() as u64))?
    }
}

/// Starts the background tasks that watch one upstream: its prober, and
/// with read-your-writes its fast offset poller.
pub fn spawn_watchers(shared: &Arc<Shared>, up: &Arc<Upstream>) {
    tokio::spawn(probe_loop(shared.clone(), up.clone()));
    if shared.config().routing.consistency == crate::config::Consistency::ReadYourWrites {
        tokio::spawn(offset_poll_loop(shared.clone(), up.clone()));
    }
}

/// Probes `up` forever: each tick a PING (its round trip feeds the RTT
/// estimate) and `INFO replication` (role, link, offsets: the lag
/// estimate). On the primary, every new connection also refreshes the
/// command table and server facts.
pub async fn probe_loop(shared: Arc<Shared>, up: Arc<Upstream>) {
    let mut state = {
        let cfg = shared.config();
        HealthState::new(cfg.health.rise, cfg.health.fall)
    };
    let mut conn: Option<Control> = None;
    let mut next = tokio::time::Instant::now();
    loop {
        // Read each round: a reload may change the interval and timeouts.
        let (interval, timeout) = {
            let cfg = shared.config();
            (
                Duration::from_millis(cfg.health.probe_interval_ms),
                Duration::from_millis(
                    cfg.timeouts
                        .connect_timeout_ms
                        .max(cfg.timeouts.request_timeout_ms),
                ),
            )
        };
        tokio::time::sleep_until(next).await;
        next = tokio::time::Instant::now() + interval;
        if up.is_retired() {
            return;
        }
        let ok = probe_once(&shared, &up, &mut conn, timeout).await;
        if !up.is_healthy() && state.healthy() {
            // The data path saw a failure: restart the rise count from down.
            state.force_down();
        }
        if let Err(e) = &ok {
            // A failed probe is a large latency sample, so the cost jumps
            // before the fall count marks the upstream down.
            up.observe_failure(timeout, Instant::now());
            tracing::debug!(upstream = %up, error = %e, "probe failed");
        }
        if let Some(now) = state.observe(ok.is_ok()) {
            up.set_healthy(now);
            match &ok {
                Ok(()) => tracing::info!(upstream = %up, "upstream is up"),
                Err(e) => tracing::warn!(upstream = %up, error = %e, "upstream is down"),
            }
        }
        up.refresh_cost(Instant::now());
        if ok.is_ok() {
            up.mark_probed_ok();
            up.metrics.probes_ok.increment(1);
        } else {
            up.metrics.probes_failed.increment(1);
        }
        up.metrics
            .healthy
            .set(if up.is_healthy() { 1.0 } else { 0.0 });
        if let Some(rtt) = up.smoothed_rtt() {
            up.metrics.rtt.set(rtt);
        }
        if let Some(lag) = up.lag() {
            up.metrics.lag.set(lag.as_secs_f64());
        }
    }
}

async fn probe_once(
    shared: &Shared,
    up: &Upstream,
    conn: &mut Option<Control>,
    timeout: Duration,
) -> Result<(), UpstreamError> {
    if conn.is_none() {
        let mut c = Control::open(up, timeout).await?;
        if up.role == Role::Primary {
            shared.refresh_server_facts(&mut c, timeout).await;
        }
        *conn = Some(c);
    }
    let c = conn.as_mut().expect("connection just set");
    let res = probe_on(shared, up, c, timeout).await;
    if res.is_err() {
        *conn = None;
    }
    res
}

async fn probe_on(
    shared: &Shared,
    up: &Upstream,
    c: &mut Control,
    timeout: Duration,
) -> Result<(), UpstreamError> {
    let sent = Instant::now();
    c.call_ok(&[b"PING"], timeout).await?;
    let now = Instant::now();
    up.observe_probe(now - sent, now);

    poll_replication(shared, up, c, timeout).await
}

/// One `INFO replication`: role check, offsets, lag.
async fn poll_replication(
    shared: &Shared,
    up: &Upstream,
    c: &mut Control,
    timeout: Duration,
) -> Result<(), UpstreamError> {
    let sent = Instant::now();
    let reply = c.call_ok(&[b"INFO", b"replication"], timeout).await?;
    let got = Instant::now();
    let info = ReplicationInfo::parse(&String::from_utf8_lossy(&reply.raw));
    let max_staleness = Duration::from_millis(shared.config().routing.max_staleness_ms);
    match up.role {
        Role::Primary => {
            if let Some(o) = info.master_repl_offset {
                up.set_repl_offset(o);
                // Stamped with the send time: the offset covers every write
                // acknowledged before the request left.
                shared
                    .offsets
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(sent, o);
            }
            if !info.is_master && up.set_role_ok(false) {
                tracing::warn!(upstream = %up, "the configured primary says it is a replica: writes will be refused");
            } else if info.is_master && !up.set_role_ok(true) {
                tracing::info!(upstream = %up, "the configured primary is a primary again");
            }
            // The primary serves reads whatever it says; writes tell.
            up.set_role_ok(true);
            up.set_lag(Some(Duration::ZERO), max_staleness);
        }
        Role::Replica => {
            let was_ok = up.set_role_ok(!info.is_master);
            if info.is_master && was_ok {
                tracing::warn!(upstream = %up, "configured as a replica but says role:master: excluded from reads");
            } else if !info.is_master && !was_ok {
                tracing::info!(upstream = %up, "is a replica again: back in the read pool");
            }
            let offset = info.slave_repl_offset.unwrap_or(0);
            up.set_repl_offset(offset);
            let lag = replica_lag(shared, &info, offset, got);
            let was_stale = up.set_lag(Some(lag), max_staleness);
            let stale = lag > max_staleness;
            if stale != was_stale {
                if stale {
                    tracing::warn!(upstream = %up, lag_ms = lag.as_millis() as u64, max_staleness_ms = max_staleness.as_millis() as u64, "replica lags beyond the staleness bound: excluded from reads");
                } else {
                    tracing::info!(upstream = %up, lag_ms = lag.as_millis() as u64, "replica caught up: back in the read pool");
                }
            }
        }
    }
    Ok(())
}

/// Read-your-writes: while some read waits for a replica to catch up (or
/// for the primary's offset after a write), poll offsets every
/// `FAST_POLL`; otherwise sleep, so an idle sidecar sends nothing extra.
pub async fn offset_poll_loop(shared: Arc<Shared>, up: Arc<Upstream>) {
    const FAST_POLL: Duration = Duration::from_millis(10);
    let timeout = Duration::from_millis(shared.config().timeouts.request_timeout_ms);
    let mut conn: Option<Control> = None;
    loop {
        if up.is_retired() {
            return;
        }
        let wake = shared.ryw_wakeup.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        if !shared.ryw_demanded() {
            // Idle: drop the connection and wait for demand.
            conn = None;
            wake.await;
            continue;
        }
        if conn.is_none() {
            conn = Control::open(&up, timeout).await.ok();
        }
        if let Some(c) = conn.as_mut()
            && poll_replication(&shared, &up, c, timeout).await.is_err()
        {
            conn = None;
        }
        tokio::time::sleep(FAST_POLL).await;
    }
}

/// A replica's lag: from the primary's offset history while the primary is
/// reachable. With the primary down there is no reference; as MongoDB does
/// for max staleness without a primary, the freshest replica becomes it.
fn replica_lag(shared: &Shared, info: &ReplicationInfo, offset: u64, at: Instant) -> Duration {
    let topo = shared.topology.load();
    let primary_up = topo.primary.is_healthy();
    if primary_up {
        let from_offsets = shared
            .offsets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .lag(offset, at);
        let link = if info.link_up {
            Duration::ZERO
        } else {
            info.link_down_for.unwrap_or(Duration::ZERO)
        };
        from_offsets.max(link)
    } else {
        let freshest = topo
            .replicas
            .iter()
            .map(|r| r.repl_offset())
            .max()
            .unwrap_or(0);
        if offset >= freshest {
            Duration::ZERO
        } else {
            shared
                .offsets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .lag(offset, at)
        }
    }
}

fn refused(reply: &Reply) -> UpstreamError {
    UpstreamError::Protocol(String::from_utf8_lossy(&reply.raw).trim_end().to_string())
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
