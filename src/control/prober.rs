//! The prober of one upstream, on its own connection: PING for the round
//! trip, `INFO replication` for role, link and offsets, health through
//! rise/fall hysteresis.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::ControlEnv;
use crate::conn::connect::UpstreamError;
use crate::conn::control::Control;
use crate::model::upstream::{Role, Upstream};
use crate::route::health::HealthState;
use crate::route::replication::ReplicationInfo;

/// Starts the background tasks that watch one upstream: its prober, and
/// with read-your-writes its fast offset poller.
pub fn spawn_watchers(env: &ControlEnv, up: &Arc<Upstream>) {
    tokio::spawn(probe_loop(env.clone(), up.clone()));
    if env.config().routing.consistency == crate::config::Consistency::ReadYourWrites {
        tokio::spawn(super::offsets::offset_poll_loop(env.clone(), up.clone()));
    }
}

/// Probes `up` forever: each tick a PING (its round trip feeds the RTT
/// estimate) and `INFO replication` (role, link, offsets: the lag
/// estimate). On the primary, every new connection also refreshes the
/// command table and server facts.
pub async fn probe_loop(env: ControlEnv, up: Arc<Upstream>) {
    let mut state = {
        let cfg = env.config();
        HealthState::new(cfg.health.rise, cfg.health.fall)
    };
    let mut conn: Option<Control> = None;
    let mut next = Instant::now();
    loop {
        // Read each round: a reload may change the interval and timeouts.
        let (interval, timeout) = {
            let cfg = env.config();
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
        next = Instant::now() + interval;
        if up.is_retired() {
            return;
        }
        let ok = probe_once(&env, &up, &mut conn, timeout).await;
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
            env.topology.failover.recheck.notify_one();
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
    env: &ControlEnv,
    up: &Upstream,
    conn: &mut Option<Control>,
    timeout: Duration,
) -> Result<(), UpstreamError> {
    if conn.is_none() {
        let mut c = Control::open(env.pipes.connector(), up, timeout).await?;
        if up.role == Role::Primary {
            super::facts::refresh(&env.facts, &mut c, timeout).await;
        }
        *conn = Some(c);
    }
    let c = conn.as_mut().expect("connection just set");
    let res = probe_on(env, up, c, timeout).await;
    if res.is_err() {
        *conn = None;
    }
    res
}

async fn probe_on(
    env: &ControlEnv,
    up: &Upstream,
    c: &mut Control,
    timeout: Duration,
) -> Result<(), UpstreamError> {
    let sent = Instant::now();
    let pong = c.call(&[b"PING"], timeout).await?;
    let now = Instant::now();
    up.heard(now);
    if pong.raw.starts_with(b"-BUSY") {
        // Running a script (or a function) past the busy threshold: alive,
        // and clients get Redis's own BUSY; nothing else can be asked now.
        return Ok(());
    }
    if pong.is_error() {
        return Err(crate::conn::control::refused(&pong));
    }
    up.observe_probe(now - sent, now);

    poll_replication(env, up, c, timeout).await
}

/// One `INFO replication`: role check, offsets, lag.
pub(super) async fn poll_replication(
    env: &ControlEnv,
    up: &Upstream,
    c: &mut Control,
    timeout: Duration,
) -> Result<(), UpstreamError> {
    let sent = Instant::now();
    // Writes acknowledged before the request left: the offset it returns
    // covers them (what a failover may lose is counted from this).
    let acked = up.metrics.writes.load(std::sync::atomic::Ordering::Relaxed);
    let reply = c.call_ok(up, &[b"INFO", b"replication"], timeout).await?;
    let got = Instant::now();
    let info = ReplicationInfo::parse(&String::from_utf8_lossy(&reply.raw));
    let max_staleness = Duration::from_millis(env.config().routing.max_staleness_ms);
    let claim = super::failover::claim_of(env, &info);
    if let Some(id) = &info.master_replid {
        up.set_replid(id);
    }
    if up.set_claim(claim) != claim {
        // The primary follower decides what a role change means.
        env.topology.failover.recheck.notify_one();
    }
    match up.role {
        Role::Primary => {
            if let Some(o) = info.master_repl_offset {
                up.set_repl_offset(o);
                // Stamped with the send time: the offset covers every write
                // acknowledged before the request left.
                env.replication.offsets().record(sent, o);
                if info.is_master {
                    env.topology.failover.sample(o, acked);
                }
            }
            // Logged once per change, not every probe.
            let was_master = up.set_claims_master(info.is_master);
            if up.is_cluster_node() {
                // The cluster moves roles itself; the slot map follows.
                if info.is_master != was_master {
                    tracing::info!(upstream = %up, master = info.is_master, "a cluster node changed role");
                }
            } else if !info.is_master && was_master {
                tracing::warn!(upstream = %up, "the primary says it is a replica: writes wait for a new primary");
            } else if info.is_master && !was_master {
                tracing::info!(upstream = %up, "the primary is a primary again");
            }
            // The primary serves reads whatever it says; writes tell.
            up.set_lag(Some(Duration::ZERO), max_staleness);
        }
        Role::Replica => {
            let was_ok = up.set_role_ok(!info.is_master);
            if up.is_cluster_node() {
                if info.is_master == was_ok {
                    tracing::info!(upstream = %up, master = info.is_master, "a cluster node changed role");
                }
            } else if info.is_master && was_ok {
                tracing::warn!(upstream = %up, "configured as a replica but says role:master: excluded from reads");
            } else if !info.is_master && !was_ok {
                tracing::info!(upstream = %up, "is a replica again: back in the read pool");
            }
            let offset = info.slave_repl_offset.unwrap_or(0);
            up.set_repl_offset(offset);
            let lag = replica_lag(env, &info, offset, got);
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

/// A replica's lag: from the primary's offset history while the primary is
/// reachable. With the primary down there is no reference; as MongoDB does
/// for max staleness without a primary, the freshest replica becomes it.
fn replica_lag(env: &ControlEnv, info: &ReplicationInfo, offset: u64, at: Instant) -> Duration {
    let topo = env.topology.load();
    let primary_up = topo.primary.is_healthy();
    if primary_up {
        let from_offsets = env.replication.offsets().lag(offset, at);
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
            env.replication.offsets().lag(offset, at)
        }
    }
}
