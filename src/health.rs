//! Health: a prober per upstream on its own connection, with rise/fall
//! hysteresis so a flapping upstream does not make routing flap.
//!
//! The state machine is pure; the prober loop owns the socket.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::framer::{Command, Reply, ReplyFramer, ReplyLimits};
use crate::server::Shared;
use crate::topology::{Role, Upstream};
use crate::upstream::{self, Handshake, UpstreamError};

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
    stream: TcpStream,
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

/// Probes `up` forever: PING every interval; on the primary, every new
/// connection also refreshes the command table and server facts.
pub async fn probe_loop(shared: Arc<Shared>, up: Arc<Upstream>) {
    let cfg = &shared.config;
    let interval = Duration::from_millis(cfg.health.probe_interval_ms);
    let timeout = Duration::from_millis(
        cfg.timeouts
            .connect_timeout_ms
            .max(cfg.timeouts.request_timeout_ms),
    );
    let mut state = HealthState::new(cfg.health.rise, cfg.health.fall);
    let mut conn: Option<Control> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if up.is_retired() {
            return;
        }
        let ok = probe_once(&shared, &up, &mut conn, timeout).await;
        if !up.is_healthy() && state.healthy() {
            // The data path saw a failure: restart the rise count from down.
            state.force_down();
        }
        if let Some(now) = state.observe(ok.is_ok()) {
            up.set_healthy(now);
            match &ok {
                Ok(()) => tracing::info!(upstream = %up, "upstream is up"),
                Err(e) => tracing::warn!(upstream = %up, error = %e, "upstream is down"),
            }
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
    let res = c.call(&[b"PING"], timeout).await;
    match res {
        Ok(r) if !r.is_error() => Ok(()),
        Ok(r) => {
            *conn = None;
            Err(UpstreamError::Protocol(
                String::from_utf8_lossy(&r.raw).trim_end().to_string(),
            ))
        }
        Err(e) => {
            *conn = None;
            Err(e)
        }
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
