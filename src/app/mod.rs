//! The running sidecar: shared state, the client listener, background tasks
//! and shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::config::Config;
use crate::conn::connect::Handshake;
use crate::conn::pipe::{self, PipeHandle, Timeouts};
use crate::control::prober::{self as health, Control};
use crate::metrics;
use crate::model::topology::{Role, Topology, Upstream};
use crate::proto::Proto;
use crate::proto::reply::decode_resp2;
use crate::route::command::CommandTable;
use crate::route::consistency::Tracker;
use crate::route::replication::OffsetHistory;
use crate::url::{Host, RedisUrl};

/// An upstream for a config entry; an IP literal needs no resolving, a
/// name is resolved at connect time until discovery pins its addresses.
fn new_upstream(
    id: usize,
    entry: usize,
    role: Role,
    region: &str,
    url: &RedisUrl,
) -> Arc<Upstream> {
    let addr = match url.host {
        Host::Ip(ip) => Some(SocketAddr::new(ip, url.port)),
        Host::Name(_) => None,
    };
    Arc::new(Upstream::new(
        id,
        entry,
        role,
        region.to_string(),
        url.clone(),
        addr,
    ))
}

/// How long fast offset polling continues after the last read that waited.
const RYW_DEMAND_HOLD_MS: u64 = 1000;

/// State every session reads. The topology and command table are swapped
/// whole, so readers never lock.
pub struct Shared {
    /// Swapped whole on SIGHUP.
    config: ArcSwap<Config>,
    pub topology: ArcSwap<Topology>,
    pub commands: ArcSwap<CommandTable>,
    /// `redis_version` of the primary, for HELLO.
    pub server_version: RwLock<String>,
    /// The primary's `databases`, the bound for SELECT.
    pub databases: AtomicU32,
    pub timeouts: Timeouts,
    /// The primary's replication offsets over time, for replica lag.
    pub offsets: Mutex<OffsetHistory>,
    next_client_id: AtomicU64,
    /// Ids for upstreams that discovery adds later.
    next_upstream_id: AtomicUsize,
    pub clients: AtomicUsize,
    pub metrics: metrics::Global,
    /// Read-your-writes: when reads last waited for offsets (ms since
    /// `epoch`), and the wake-up for the fast offset pollers.
    epoch: Instant,
    ryw_demand_ms: AtomicU64,
    pub ryw_wakeup: Notify,
    /// The sidecar-wide read-your-writes bookkeeping (scope = sidecar).
    pub ryw: Mutex<Tracker>,
    /// Set once on shutdown: sessions stop reading and finish what they have.
    pub shutdown: watch::Sender<bool>,
}

impl Shared {
    pub fn new(config: Config) -> Shared {
        let ids = AtomicUsize::new(0);
        let make = |entry, role, region: &str, url: &RedisUrl| {
            new_upstream(
                ids.fetch_add(1, Ordering::Relaxed),
                entry,
                role,
                region,
                url,
            )
        };
        let primary = make(
            0,
            Role::Primary,
            &config.primary.region,
            &config.primary.url,
        );
        let replicas = config
            .replicas
            .iter()
            .enumerate()
            .map(|(i, r)| make(i + 1, Role::Replica, &r.region, &r.url))
            .collect();
        let timeouts = Timeouts {
            connect: Duration::from_millis(config.timeouts.connect_timeout_ms),
            request: Duration::from_millis(config.timeouts.request_timeout_ms),
        };
        Shared {
            topology: ArcSwap::from_pointee(Topology { primary, replicas }),
            commands: ArcSwap::from_pointee(CommandTable::builtin()),
            server_version: RwLock::new("7.0.0".into()),
            databases: AtomicU32::new(16),
            timeouts,
            offsets: Mutex::new(OffsetHistory::new()),
            next_client_id: AtomicU64::new(1),
            next_upstream_id: AtomicUsize::new(ids.into_inner()),
            clients: AtomicUsize::new(0),
            epoch: Instant::now(),
            ryw_demand_ms: AtomicU64::new(0),
            ryw_wakeup: Notify::new(),
            ryw: Mutex::new(Tracker::new()),
            shutdown: watch::channel(false).0,
            metrics: metrics::Global::new(
                config.region.as_deref().unwrap_or(""),
                config.limits.free_commands_per_day,
            ),
            config: ArcSwap::from_pointee(config),
        }
    }

    /// A read is waiting for fresher offsets: poll fast for a while.
    pub fn demand_offsets(&self) {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let before = self.ryw_demand_ms.swap(now, Ordering::Relaxed);
        if now.saturating_sub(before) > RYW_DEMAND_HOLD_MS / 2 {
            self.ryw_wakeup.notify_waiters();
        }
    }

    /// True while reads waited for offsets recently.
    pub fn ryw_demanded(&self) -> bool {
        let last = self.ryw_demand_ms.load(Ordering::Relaxed);
        last != 0
            && (self.epoch.elapsed().as_millis() as u64 + 1).saturating_sub(last)
                <= RYW_DEMAND_HOLD_MS
    }

    /// A new upstream with a fresh id (config entry `entry`: 0 = primary).
    pub fn make_upstream(
        &self,
        entry: usize,
        role: Role,
        region: &str,
        url: &RedisUrl,
    ) -> Arc<Upstream> {
        let id = self.next_upstream_id.fetch_add(1, Ordering::Relaxed);
        new_upstream(id, entry, role, region, url)
    }

    /// A new upstream with a fresh id at an address discovery resolved.
    pub fn make_upstream_at(
        &self,
        entry: usize,
        role: Role,
        region: &str,
        url: &RedisUrl,
        addr: SocketAddr,
    ) -> Arc<Upstream> {
        let id = self.next_upstream_id.fetch_add(1, Ordering::Relaxed);
        Arc::new(Upstream::new(
            id,
            entry,
            role,
            region.to_string(),
            url.clone(),
            Some(addr),
        ))
    }

    pub fn store_config(&self, config: Config) {
        self.config.store(Arc::new(config));
    }

    /// The current config (read without locking; replaced on reload).
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The shared pipe to `up` for (db, proto), started on first use.
    pub fn pipe(&self, up: &Arc<Upstream>, db: u32, proto: Proto) -> PipeHandle {
        up.pipe(db, proto, || {
            let hs = Handshake {
                auth: None,
                db,
                proto: Some(proto),
            };
            pipe::spawn(up.clone(), hs, self.timeouts)
        })
    }

    /// Reads what the sidecar mirrors from the primary: the command table
    /// (`COMMAND`), the server version and the number of databases. Each
    /// part is optional: a managed Redis may refuse CONFIG.
    pub async fn refresh_server_facts(&self, c: &mut Control, timeout: Duration) {
        match c.call(&[b"COMMAND"], timeout).await {
            Ok(r) if !r.is_error() => match decode_resp2(&r.raw)
                .map_err(|e| e.to_string())
                .and_then(|f| CommandTable::from_command_reply(&f))
            {
                Ok(t) => {
                    tracing::debug!(commands = t.len(), "command table read from the primary");
                    self.commands.store(Arc::new(t));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not read COMMAND; using the built-in table")
                }
            },
            Ok(r) => {
                tracing::warn!(reply = %String::from_utf8_lossy(&r.raw).trim_end(), "COMMAND refused; using the built-in table")
            }
            Err(e) => tracing::warn!(error = %e, "COMMAND failed; using the built-in table"),
        }
        if let Ok(r) = c.call(&[b"INFO", b"server"], timeout).await {
            let text = String::from_utf8_lossy(&r.raw);
            if let Some(v) = text.lines().find_map(|l| l.strip_prefix("redis_version:")) {
                *self
                    .server_version
                    .write()
                    .unwrap_or_else(|p| p.into_inner()) = v.trim().to_string();
            }
        }
        if let Ok(r) = c.call(&[b"CONFIG", b"GET", b"databases"], timeout).await
            && let Ok(redis_protocol::resp2::types::BytesFrame::Array(v)) = decode_resp2(&r.raw)
            && let Some(redis_protocol::resp2::types::BytesFrame::BulkString(n)) = v.get(1)
            && let Some(n) = std::str::from_utf8(n).ok().and_then(|s| s.parse().ok())
        {
            self.databases.store(n, Ordering::Relaxed);
        }
    }
}

/// Re-reads the configuration (SIGHUP).
pub type Reloader = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Runs the sidecar until SIGINT/SIGTERM; SIGHUP reloads through `reload`.
pub async fn run(config: Config, reload: Option<Reloader>) -> std::io::Result<()> {
    run_until(config, shutdown_signal(), reload).await
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
    crate::conn::tls::init(&config.tls).map_err(std::io::Error::other)?;
    metrics::spawn_upkeep();
    let listener = crate::conn::net::listen(config.listen)?;
    let shared = Arc::new(Shared::new(config));
    tracing::info!(
        listen = %shared.config().listen,
        primary = %shared.topology.load().primary,
        replicas = shared.topology.load().replicas.len(),
        "nearby is serving"
    );
    crate::ops::admin::serve(shared.clone(), shared.config().admin).await?;
    // The resolver is configured before any prober resolves a name.
    if let Err(e) = crate::conn::net::init_resolver(&shared.config().dns) {
        tracing::error!(error = %e, "cannot configure the DNS resolver; using the system defaults");
    }
    for up in shared.topology.load().all() {
        health::spawn_watchers(&shared, up);
    }
    let mut discovery = tokio::spawn(crate::control::discovery::run(shared.clone()));
    tokio::spawn(watch_routing(shared.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let accept = tokio::spawn(accept_loop(listener, shared.clone(), stop_rx));
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                let Some(reload) = &reload else { continue };
                match reload() {
                    Err(e) => tracing::error!("config reload rejected, the running config stays: {e}"),
                    Ok(new) => {
                        if let Err(e) = crate::conn::tls::init(&new.tls) {
                            tracing::error!("config reload rejected, the running config stays: {e}");
                            continue;
                        }
                        let s = crate::control::reload::apply(&shared, new);
                        // Discovery follows the new entries.
                        discovery.abort();
                        discovery = tokio::spawn(crate::control::discovery::run(shared.clone()));
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
    let _ = shared.shutdown.send(true);
    let deadline = Duration::from_millis(shared.config().timeouts.drain_timeout_ms);
    let drained = tokio::time::timeout(deadline, async {
        while shared.clients.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("drained; bye"),
        Err(_) => tracing::warn!(
            clients = shared.clients.load(Ordering::Relaxed),
            "drain deadline passed; closing the remaining connections"
        ),
    }
    Ok(())
}

/// Logs one line whenever the default read target changes, with why.
async fn watch_routing(shared: Arc<Shared>) {
    let mut was: Option<Arc<Upstream>> = None;
    loop {
        let interval =
            Duration::from_millis(shared.config().health.probe_interval_ms.clamp(100, 1000));
        tokio::time::sleep(interval).await;
        let topo = shared.topology.load();
        let window = Duration::from_millis(shared.config().routing.latency_window_ms);
        let (now, fallback) = topo.pick_read(window, 0, |_| false);
        let now = now.clone();
        if let Some(prev) = &was
            && !Arc::ptr_eq(prev, &now)
        {
            tracing::info!("{}", describe_change(&now, fallback, prev));
        }
        was = Some(now);
    }
}

fn describe_change(
    now: &Upstream,
    fallback: Option<crate::route::select::Fallback>,
    prev: &Upstream,
) -> String {
    let ms = |u: &Upstream| {
        u.cost()
            .map(|c| format!("{:.1} ms", c * 1000.0))
            .unwrap_or_else(|| "unmeasured".into())
    };
    let why = match prev.unusable() {
        Some(crate::route::select::Unusable::Down) => format!("{} is down", prev.region),
        Some(crate::route::select::Unusable::NotAReplica) => {
            format!("{} says it is not a replica", prev.region)
        }
        Some(crate::route::select::Unusable::Stale) => format!(
            "{} lag {:.1} s > {:.1} s",
            prev.region,
            prev.lag().unwrap_or_default().as_secs_f64(),
            shared_staleness_hint(prev)
        ),
        None if prev.is_retired() => format!("{} was removed", prev.region),
        None => format!("{} is nearer", now.region),
    };
    let via = fallback.map(|f| format!(" [{f}]")).unwrap_or_default();
    format!(
        "reads now go to {} {} ({}){via}; was {} ({}): {why}",
        now.region,
        now.role.as_str(),
        ms(now),
        prev.region,
        ms(prev)
    )
}

/// The staleness bound a stale upstream exceeded (its lag is above it).
fn shared_staleness_hint(up: &Upstream) -> f64 {
    up.staleness_bound().as_secs_f64()
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            r = listener.accept() => match r {
                Ok((stream, _peer)) => {
                    crate::conn::net::tune_accepted(&stream);
                    let shared = shared.clone();
                    tokio::spawn(crate::session::serve(shared, stream));
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

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
