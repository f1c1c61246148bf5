//! The admin HTTP server (axum): `/metrics`, `/healthz`, `/readyz`,
//! `/status`. Bound explicitly, loopback by default.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::metrics::Global;
use crate::model::SharedConfig;
use crate::model::clients::Clients;
use crate::model::topology::Upstream;
use crate::model::topology::{Topology, TopologyCell, Writes};

/// What `/status` reports and `nearby status` prints.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub region: Option<String>,
    pub primary_region: String,
    pub read_regions: Vec<String>,
    pub ready: bool,
    pub reads_go_to: ReadTarget,
    pub upstreams: Vec<UpstreamStatus>,
    pub clients: usize,
    pub commands_today: u64,
    pub free_commands_per_day: u64,
    pub primary: PrimaryStatus,
    /// Redis Cluster: each shard, its slot ranges, nodes and read target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardStatus>,
    /// With `--near-cache on`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_cache: Option<NearCacheStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NearCacheStatus {
    pub entries: usize,
    pub bytes: usize,
    pub max_bytes: usize,
    pub hits: u64,
    pub misses: u64,
    /// hits ÷ (hits + misses), 0 before any cacheable read.
    pub hit_ratio: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShardStatus {
    /// `start-end` ranges.
    pub slots: Vec<String>,
    pub reads_go_to: ReadTarget,
    pub upstreams: Vec<UpstreamStatus>,
}

/// Where the primary comes from and how it last changed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PrimaryStatus {
    pub address: String,
    /// `config` (fixed, following ROLE) or `sentinel`.
    pub source: String,
    /// `open`, `waiting` (a failover holds them) or `refused` (two masters).
    pub writes: String,
    /// The sentinels' config epoch (0 without Sentinel).
    pub epoch: u64,
    pub changes: u64,
    pub last_switch: Option<SwitchStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SwitchStatus {
    pub at_unix_ms: u64,
    pub from: String,
    pub to: String,
    pub source: String,
    pub writes_at_risk: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReadTarget {
    pub upstream: String,
    pub region: String,
    pub role: String,
    /// Why the primary, when it is the primary.
    pub fallback: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UpstreamStatus {
    pub role: String,
    pub region: String,
    /// `host:port` (never the password).
    pub address: String,
    pub url: String,
    pub healthy: bool,
    /// `None` when usable, else why not: down, not_a_replica, stale.
    pub unusable: Option<String>,
    pub rtt_ms: Option<f64>,
    pub cost_ms: Option<f64>,
    pub lag_ms: Option<u64>,
    pub outstanding: usize,
    pub reads: u64,
    pub writes: u64,
    /// Share of all reads this upstream served over the last minute.
    pub read_share_1m: f64,
}

/// Read counters sampled every second, to compute shares over a minute.
#[derive(Default)]
pub struct ReadHistory {
    samples: VecDeque<(Instant, HashMap<String, u64>)>,
}

impl ReadHistory {
    /// Records cumulative read counts per upstream, keeping a minute.
    pub fn record(&mut self, now: Instant, counts: HashMap<String, u64>) {
        self.samples.push_back((now, counts));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) > Duration::from_secs(60))
        {
            self.samples.pop_front();
        }
    }

    /// Each upstream's share of the reads between the oldest sample and
    /// `current` (cumulative counts now).
    pub fn shares(&self, current: &HashMap<String, u64>) -> HashMap<String, f64> {
        let base = self.samples.front().map(|(_, c)| c);
        let delta: HashMap<&String, u64> = current
            .iter()
            .map(|(k, v)| {
                (
                    k,
                    v.saturating_sub(base.and_then(|b| b.get(k)).copied().unwrap_or(0)),
                )
            })
            .collect();
        let total: u64 = delta.values().sum();
        delta
            .into_iter()
            .map(|(k, d)| {
                (
                    k.clone(),
                    if total == 0 {
                        0.0
                    } else {
                        d as f64 / total as f64
                    },
                )
            })
            .collect()
    }
}

/// What the admin server reads, handed out by `app`.
#[derive(Clone)]
pub struct AdminEnv {
    pub config: SharedConfig,
    pub topology: Arc<TopologyCell>,
    pub clients: Arc<Clients>,
    pub metrics: Arc<Global>,
    /// Set when fronting a Redis Cluster.
    pub cluster: Option<Arc<crate::model::cluster::ClusterCell>>,
    /// Set with `--near-cache on`.
    pub near_cache: Option<Arc<crate::model::near_cache::NearCache>>,
}

impl AdminEnv {
    fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }
}

fn read_counts(env: &AdminEnv) -> HashMap<String, u64> {
    env.topology
        .load()
        .all()
        .map(|u| (u.label.clone(), u.metrics.reads.load(Ordering::Relaxed)))
        .collect()
}

/// Ready when the configured job can be served: the primary confirmed up
/// (writes) or a usable read target confirmed up.
pub fn ready(env: &AdminEnv) -> bool {
    if let Some(cluster) = &env.cluster {
        // Every shard can serve: its primary or a usable replica is up.
        let state = cluster.load();
        return !state.shards.is_empty()
            && state
                .owner
                .iter()
                .all(|&o| o != crate::model::cluster::UNOWNED)
            && state.shards.iter().all(|c| topology_ready(&c.load()));
    }
    topology_ready(&env.topology.load())
}

fn topology_ready(topo: &Topology) -> bool {
    topo.primary.is_confirmed_up()
        || topo
            .replicas
            .iter()
            .any(|r| r.is_confirmed_up() && r.unusable().is_none())
}

pub fn status(env: &AdminEnv, history: &ReadHistory) -> Status {
    let topo = env.topology.load();
    let shares = history.shares(&read_counts(env));
    let config = env.config();
    let window = Duration::from_millis(config.routing.latency_window_ms);
    let (target, fallback) = topo.read_target(config.routing.read_from, window, 0, |_| false);
    let mut read_regions: Vec<String> = topo.replicas.iter().map(|r| r.region.clone()).collect();
    read_regions.dedup();
    Status {
        region: config.region.clone(),
        primary_region: topo.primary.region.clone(),
        read_regions,
        ready: ready(env),
        reads_go_to: ReadTarget {
            upstream: target.label.clone(),
            region: target.region.clone(),
            role: target.role.as_str().to_string(),
            fallback: fallback.map(|f| f.as_str().to_string()),
        },
        // In a cluster the shards list the nodes; the configured primary
        // is only a template for their URLs.
        upstreams: if env.cluster.is_some() {
            Vec::new()
        } else {
            topo.all()
                .map(|u| upstream_status(u, shares.get(&u.label).copied().unwrap_or(0.0)))
                .collect()
        },
        clients: env.clients.open(),
        commands_today: env.metrics.usage.today(),
        free_commands_per_day: env.metrics.usage.free_per_day(),
        primary: primary_status(env, &topo),
        shards: shard_status(env, window),
        near_cache: env.near_cache.as_ref().map(|c| {
            let (entries, bytes, _) = c.sizes();
            let (hits, misses) = c.counts();
            NearCacheStatus {
                entries,
                bytes,
                max_bytes: c.max_bytes,
                hits,
                misses,
                hit_ratio: if hits + misses == 0 {
                    0.0
                } else {
                    hits as f64 / (hits + misses) as f64
                },
            }
        }),
    }
}

fn shard_status(env: &AdminEnv, window: Duration) -> Vec<ShardStatus> {
    let Some(cluster) = &env.cluster else {
        return Vec::new();
    };
    let state = cluster.load();
    let read_from = env.config().routing.read_from;
    state
        .shards
        .iter()
        .enumerate()
        .map(|(i, cell)| {
            let topo = cell.load();
            let slots = state.ranges(i);
            let (target, fallback) = topo.read_target(read_from, window, 0, |_| false);
            ShardStatus {
                slots,
                reads_go_to: ReadTarget {
                    upstream: target.label.clone(),
                    region: target.region.clone(),
                    role: target.role.as_str().to_string(),
                    fallback: fallback.map(|f| f.as_str().to_string()),
                },
                upstreams: topo.all().map(|u| upstream_status(u, 0.0)).collect(),
            }
        })
        .collect()
}

fn primary_status(env: &AdminEnv, topo: &Topology) -> PrimaryStatus {
    let f = &env.topology.failover;
    PrimaryStatus {
        address: topo.primary.label.clone(),
        source: f.source().to_string(),
        writes: match topo.writes {
            Writes::Open => "open",
            Writes::Waiting => "waiting",
            Writes::Conflict(_) => "refused",
        }
        .to_string(),
        epoch: f.epoch(),
        changes: f.changes(),
        last_switch: f.last().map(|s| SwitchStatus {
            at_unix_ms: s.at_unix_ms,
            from: s.from,
            to: s.to,
            source: s.source.to_string(),
            writes_at_risk: s.writes_at_risk,
        }),
    }
}

fn upstream_status(u: &Upstream, share: f64) -> UpstreamStatus {
    UpstreamStatus {
        role: u.role.as_str().to_string(),
        region: u.region.clone(),
        address: u.label.clone(),
        url: u.url.redacted(),
        healthy: u.is_healthy(),
        unusable: u.unusable().map(|x| {
            match x {
                crate::route::select::Unusable::Down => "down",
                crate::route::select::Unusable::NotAReplica => "not_a_replica",
                crate::route::select::Unusable::Stale => "stale",
            }
            .to_string()
        }),
        rtt_ms: u.smoothed_rtt().map(|s| s * 1000.0),
        cost_ms: u.cost().map(|s| s * 1000.0),
        lag_ms: u.lag().map(|l| l.as_millis() as u64),
        outstanding: u.outstanding(),
        reads: u.metrics.reads.load(Ordering::Relaxed),
        writes: u.metrics.writes.load(Ordering::Relaxed),
        read_share_1m: share,
    }
}

#[derive(Clone)]
struct AdminState {
    env: AdminEnv,
    history: Arc<Mutex<ReadHistory>>,
}

/// Binds the admin listener and serves it until the process ends.
pub async fn serve(env: AdminEnv, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let history = Arc::new(Mutex::new(ReadHistory::default()));
    {
        let (env, history) = (env.clone(), history.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let counts = read_counts(&env);
                history
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(Instant::now(), counts);
            }
        });
    }
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status_json))
        .with_state(AdminState { env, history });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    Ok(())
}

async fn metrics() -> impl IntoResponse {
    match crate::metrics::render() {
        Some(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            text,
        ),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain")],
            "metrics are disabled\n".to_string(),
        ),
    }
}

async fn readyz(State(st): State<AdminState>) -> impl IntoResponse {
    if ready(&st.env) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no reachable primary and no usable replica\n",
        )
    }
}

async fn status_json(State(st): State<AdminState>) -> Json<Status> {
    let history = st.history.lock().unwrap_or_else(|p| p.into_inner());
    Json(status(&st.env, &history))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_shares_over_the_window() {
        let t0 = Instant::now();
        let mut h = ReadHistory::default();
        let counts = |a: u64, b: u64| HashMap::from([("a".to_string(), a), ("b".to_string(), b)]);
        h.record(t0, counts(100, 0));
        h.record(t0 + Duration::from_secs(30), counts(150, 10));
        let s = h.shares(&counts(190, 10));
        assert_eq!(s["a"], 0.9);
        assert_eq!(s["b"], 0.1);
        // Samples older than a minute drop out.
        h.record(t0 + Duration::from_secs(70), counts(190, 10));
        let s = h.shares(&counts(190, 20));
        assert_eq!(s["a"], 0.8);
        assert_eq!(s["b"], 0.2);
        assert_eq!(ReadHistory::default().shares(&counts(0, 0))["a"], 0.0);
    }
}
