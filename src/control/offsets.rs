//! Read-your-writes: the fast offset poller of one upstream.

use std::sync::Arc;
use std::time::Duration;

use super::ControlEnv;
use super::prober::poll_replication;
use crate::conn::control::Control;
use crate::model::upstream::Upstream;

/// Read-your-writes: while some read waits for a replica to catch up (or
/// for the primary's offset after a write), poll offsets every
/// `FAST_POLL`; otherwise sleep, so an idle sidecar sends nothing extra.
pub async fn offset_poll_loop(env: ControlEnv, up: Arc<Upstream>) {
    const FAST_POLL: Duration = Duration::from_millis(10);
    let timeout = Duration::from_millis(env.config().timeouts.request_timeout_ms);
    let mut conn: Option<Control> = None;
    loop {
        if up.is_retired() {
            return;
        }
        let wake = env.replication.wakeup.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        if !env.replication.demanded() {
            // Idle: drop the connection and wait for demand.
            conn = None;
            wake.await;
            continue;
        }
        if conn.is_none() {
            conn = Control::open(env.pipes.connector(), &up, timeout)
                .await
                .ok();
        }
        if let Some(c) = conn.as_mut()
            && poll_replication(&env, &up, c, timeout).await.is_err()
        {
            conn = None;
        }
        tokio::time::sleep(FAST_POLL).await;
    }
}
