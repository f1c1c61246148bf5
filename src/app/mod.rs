//! The composition root: builds the shared pieces (`context`), starts the
//! listener, the probers, discovery, the admin server and the routing log,
//! reloads on SIGHUP and drains on shutdown. The only module that sees
//! everything.

mod context;
pub mod routing_log;
pub mod shutdown;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::control::{self, prober};
use crate::metrics;
use crate::session::SessionEnv;

pub use context::Context;

/// Re-reads the configuration (SIGHUP).
pub type Reloader = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Runs the sidecar until SIGINT/SIGTERM; SIGHUP reloads through `reload`.
pub async fn run(config: Config, reload: Option<Reloader>) -> std::io::Result<()> {
    run_until(config, shutdown::shutdown_signal(), reload).await
}

/// Runs the sidecar until `stop` completes, then drains: stops accepting,
/// lets every session finish the requests it has in flight and write their
/// replies, and returns once all are done or the drain deadline passes.
pub async fn run_until(
    config: Config,
    stop: impl std::future::Future<Output = ()>,
    reload: Option<Reloader>,
) -> std::io::Result<()> {
    metrics::install(config.metrics == crate::config::Metrics::On);
    metrics::spawn_upkeep();
    let cx = Context::new(config).map_err(std::io::Error::other)?;
    let config = cx.config.load_full();
    let listener = crate::conn::socket::listen(config.listen)?;
    tracing::info!(
        listen = %config.listen,
        primary = %cx.topology.load().primary,
        replicas = cx.topology.load().replicas.len(),
        "nearby is serving"
    );
    crate::ops::admin::serve(cx.admin_env(), config.admin).await?;
    let control = cx.control_env();
    let standalone = cx.cluster.is_none();
    if let Some(cell) = &cx.cluster {
        // Reads and writes need the slot map: read it before serving.
        control::cluster::initial(&control, cell, Duration::from_secs(10)).await;
        tokio::spawn(control::cluster::follow(control.clone(), cell.clone()));
    }
    if config.sentinel.is_some() {
        // The first writes need a primary: ask before serving (bounded).
        control::sentinel::initial(&control, Duration::from_secs(10)).await;
        tokio::spawn(control::sentinel::follow(control.clone()));
    }
    // In a cluster, the shards have the probers; the configured primary
    // is only a placeholder.
    if standalone {
        for up in cx.topology.load().all() {
            prober::spawn_watchers(&control, up);
        }
    }
    let mut discovery = tokio::spawn(control::discovery::run(control.clone()));
    if standalone {
        tokio::spawn(control::failover::follow_roles(control.clone()));
    }
    tokio::spawn(routing_log::watch_routing(
        cx.config.clone(),
        cx.topology.clone(),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let accept = tokio::spawn(accept_loop(listener, cx.session_env(), stop_rx));
    let mut hup = shutdown::Hangup::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            () = hup.recv() => {
                let Some(reload) = &reload else { continue };
                match reload() {
                    Err(e) => tracing::error!("config reload rejected, the running config stays: {e}"),
                    Ok(new) => {
                        if let Err(e) = cx.pipes.connector().tls.reload(&new.tls) {
                            tracing::error!("config reload rejected, the running config stays: {e}");
                            continue;
                        }
                        let s = control::reload::apply(&control, new);
                        // Discovery follows the new entries.
                        discovery.abort();
                        discovery = tokio::spawn(control::discovery::run(control.clone()));
                        tracing::info!(
                            replicas_added = s.added,
                            replicas_removed = s.removed,
                            primary_changed = s.primary_changed,
                            "config reloaded"
                        );
                    }
                }
            }
        }
    }
    tracing::info!("shutting down: draining client connections");
    let _ = stop_tx.send(true);
    let _ = accept.await;
    let _ = cx.shutdown.send(true);
    let deadline = Duration::from_millis(cx.config.load().timeouts.drain_timeout_ms);
    let drained = tokio::time::timeout(deadline, async {
        while cx.clients.open() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("drained; bye"),
        Err(_) => tracing::warn!(
            clients = cx.clients.open(),
            "drain deadline passed; closing the remaining connections"
        ),
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, env: Arc<SessionEnv>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok((stream, _peer)) => {
                    crate::conn::socket::tune_accepted(&stream);
                    tokio::spawn(crate::session::serve(env.clone(), stream));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
