//! Following a Redis Cluster: the slot map from `CLUSTER SHARDS` (or
//! `CLUSTER SLOTS` on servers without it), trusted only when two nodes give
//! the same one (a node cut off in a minority can report a stale map),
//! refreshed on `MOVED`, periodically, and when a node goes down. Each
//! shard becomes a topology of its own (`model::cluster`): a primary and
//! its replicas with probers, so reads go to the nearest usable node of
//! the key's shard by measured latency, as they do for one primary.

use std::sync::Arc;
use std::time::Duration;

use super::ControlEnv;
use crate::config::Config;
use crate::conn::plain::Plain;
use crate::model::cluster::{ClusterCell, ClusterState, SLOTS, UNOWNED};
use crate::model::topology::{Topology, TopologyCell, Upstream, Writes};
use crate::route::cluster::map::{self, Shard, SlotMap};
use crate::url::{Host, RedisUrl};

/// The control env of one shard: the shared pieces, with the shard's own
/// topology and replication history.
pub fn shard_env(env: &ControlEnv, cell: &Arc<TopologyCell>) -> ControlEnv {
    ControlEnv {
        topology: cell.clone(),
        replication: cell.replication.clone(),
        ..env.clone()
    }
}

/// Asks `url` for its slot map.
async fn ask(env: &ControlEnv, url: &RedisUrl, timeout: Duration) -> Result<Vec<Shard>, String> {
    let auth = url
        .password
        .as_ref()
        .map(|p| (url.username.as_deref(), p.expose()));
    let mut c = Plain::open(env.pipes.connector(), &url.host, url.port, auth, timeout)
        .await
        .map_err(|e| format!("{}: {e}", url.host_port()))?;
    let r = c.call(&[b"CLUSTER", b"SHARDS"], timeout).await?;
    if !r.is_error() {
        return map::parse_shards(&r.raw);
    }
    let r = c.call(&[b"CLUSTER", b"SLOTS"], timeout).await?;
    map::parse_slots(&r.raw)
}

/// The URL of a node: the seeds' credentials, scheme and database, at its
/// address.
fn node_url(config: &Config, ip: &str, port: u16) -> RedisUrl {
    let mut url = config
        .cluster
        .as_ref()
        .and_then(|c| c.seeds.first())
        .cloned()
        .unwrap_or_else(|| config.primary.url.clone());
    url.host = match ip.parse() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(ip.to_string()),
    };
    url.port = port;
    url.db = 0;
    url
}

/// The region of a node: a `--replica` (or `--primary`) entry with its
/// address, else `unknown`.
fn region_of(config: &Config, url: &RedisUrl) -> String {
    let hp = url.host_port();
    if config.primary.url.host_port() == hp {
        return config.primary.region.clone();
    }
    config
        .replicas
        .iter()
        .find(|r| r.url.host_port() == hp)
        .map_or_else(|| "unknown".to_string(), |r| r.region.clone())
}

/// One map, agreed on by two nodes (or the only one that answered, when
/// only one is known).
async fn agreed_map(
    env: &ControlEnv,
    known: &[RedisUrl],
    timeout: Duration,
) -> Result<SlotMap, String> {
    let mut first: Option<(String, SlotMap)> = None;
    let mut errors = Vec::new();
    for url in known {
        match ask(env, url, timeout).await.and_then(SlotMap::new) {
            Ok(m) => match &first {
                None => first = Some((url.host_port(), m)),
                Some((_, f)) if f.same_as(&m) => return Ok(m),
                Some((who, _)) => {
                    tracing::debug!(a = %who, b = %url.host_port(), "two cluster nodes disagree on the slot map; asking another");
                }
            },
            Err(e) => errors.push(e),
        }
    }
    match first {
        Some((_, m)) if known.len() == 1 => Ok(m),
        Some(_) => Err("no two cluster nodes agree on the slot map".into()),
        None => Err(errors.join("; ")),
    }
}

/// The addresses to ask: the seeds, then every node of the current map.
fn known_nodes(config: &Config, cell: &ClusterCell) -> Vec<RedisUrl> {
    let mut out: Vec<RedisUrl> = config
        .cluster
        .as_ref()
        .map_or_else(Vec::new, |c| c.seeds.clone());
    for shard in &cell.load().shards {
        for up in shard.load().all() {
            if !out.iter().any(|u| u.host_port() == up.url.host_port()) {
                out.push(up.url.clone());
            }
        }
    }
    out
}

/// Builds the state for `m`: a shard whose primary is already a shard
/// keeps its cell (upstreams, probers, pipes); its replica list follows.
fn build(env: &ControlEnv, config: &Config, cur: &ClusterState, m: &SlotMap) -> ClusterState {
    let mut next = ClusterState::empty();
    // Shards in slot order: status and logs read the same way every time.
    let mut order: Vec<usize> = (0..m.shards().len()).collect();
    order.sort_by_key(|&i| m.shards()[i].slots.iter().map(|r| r.0).min());
    for i in order {
        let shard = &m.shards()[i];
        let Some(p) = shard.nodes.iter().find(|n| n.primary) else {
            continue;
        };
        let purl = node_url(config, &p.ip, p.port);
        let replicas: Vec<(String, RedisUrl)> = shard
            .nodes
            .iter()
            // Failed or still loading ones too: their probers judge them,
            // and an idle replica reports `loading` until its first write.
            .filter(|n| !n.primary)
            .map(|n| {
                let u = node_url(config, &n.ip, n.port);
                (region_of(config, &u), u)
            })
            .collect();
        let existing = cur
            .shards
            .iter()
            .find(|c| c.load().primary.url.host_port() == purl.host_port());
        let cell = match existing {
            Some(c) => {
                follow_replicas(env, c, &replicas);
                c.clone()
            }
            None => {
                let region = region_of(config, &purl);
                let reps: Vec<(&str, &RedisUrl, Option<std::net::SocketAddr>)> = replicas
                    .iter()
                    .map(|(r, u)| (r.as_str(), u, None))
                    .collect();
                let cell = Arc::new(TopologyCell::for_shard((&region, &purl, None), &reps));
                let senv = shard_env(env, &cell);
                for up in cell.load().all() {
                    up.set_cluster_node();
                    super::prober::spawn_watchers(&senv, up);
                }
                cell
            }
        };
        next.ids.push(p.id.clone());
        next.shards.push(cell);
        for slot in 0..SLOTS {
            if m.shard_of(slot as u16) == Some(i) {
                next.owner[slot] = (next.shards.len() - 1) as u16;
            }
        }
    }
    // Shards that went: their upstreams retire.
    for old in &cur.shards {
        if !next.shards.iter().any(|c| Arc::ptr_eq(c, old)) {
            for up in old.load().all() {
                up.retire();
                env.pipes.retire(up.id);
            }
        }
    }
    next
}

/// Makes a shard's replicas the ones listed, keeping those that stay.
fn follow_replicas(env: &ControlEnv, cell: &Arc<TopologyCell>, want: &[(String, RedisUrl)]) {
    let senv = shard_env(env, cell);
    let change = cell.update(|t| {
        let same = t.replicas.len() == want.len()
            && want.iter().all(|(_, u)| {
                t.replicas
                    .iter()
                    .any(|r| r.url.host_port() == u.host_port())
            });
        if same {
            return None;
        }
        let mut replicas: Vec<Arc<Upstream>> = Vec::new();
        for (i, (region, url)) in want.iter().enumerate() {
            match t
                .replicas
                .iter()
                .find(|r| r.url.host_port() == url.host_port())
            {
                Some(r) => replicas.push(r.clone()),
                None => {
                    let up = cell.new_upstream(
                        i + 1,
                        crate::model::topology::Role::Replica,
                        region,
                        url,
                        None,
                    );
                    up.set_cluster_node();
                    replicas.push(up);
                }
            }
        }
        Some(Topology {
            primary: t.primary.clone(),
            replicas,
            writes: Writes::Open,
        })
    });
    if let Some(change) = change {
        senv.apply(&change, "cluster");
    }
}

/// Everything of a map that the state is built from.
fn signature(m: &SlotMap) -> String {
    let mut parts: Vec<String> = m
        .shards()
        .iter()
        .map(|s| {
            let mut nodes: Vec<String> = s
                .nodes
                .iter()
                .map(|n| format!("{}:{}:{}:{}:{}", n.id, n.ip, n.port, n.primary, n.healthy))
                .collect();
            nodes.sort();
            format!("{:?}|{}", s.slots, nodes.join(","))
        })
        .collect();
    parts.sort();
    parts.join(";")
}

/// One refresh: true when a map was applied (or was already current).
pub async fn refresh(env: &ControlEnv, cell: &ClusterCell) -> bool {
    let config = env.config_full();
    let timeout = Duration::from_millis(config.timeouts.connect_timeout_ms);
    let known = known_nodes(&config, cell);
    match agreed_map(env, &known, timeout).await {
        Ok(m) => {
            let cur = cell.load_full();
            let signature = signature(&m);
            if cur.signature == signature {
                return true;
            }
            let mut next = build(env, &config, &cur, &m);
            next.signature = signature;
            let unowned = next.owner.iter().filter(|&&o| o == UNOWNED).count();
            tracing::info!(
                shards = next.shards.len(),
                unowned_slots = unowned,
                "cluster slot map applied"
            );
            publish_nodes(cell, &next);
            cell.store(next);
            true
        }
        Err(e) => {
            // Nodes disagree for a moment during every failover and
            // migration: `follow` warns only when it lasts.
            tracing::debug!(error = %e, "cannot read the cluster's slot map; keeping the current one");
            false
        }
    }
}

/// `nearby_cluster_node_info`: which shard (its slots) each node serves in,
/// and as what, so that per-upstream series can be viewed per shard.
fn publish_nodes(cell: &ClusterCell, next: &ClusterState) {
    let mut now: Vec<[String; 4]> = Vec::new();
    for (i, shard) in next.shards.iter().enumerate() {
        let slots = next.ranges(i).join(",");
        for up in shard.load().all() {
            now.push([
                slots.clone(),
                up.label.clone(),
                up.region.clone(),
                up.role.as_str().to_string(),
            ]);
        }
    }
    let mut prev = cell.info_series.lock().unwrap_or_else(|e| e.into_inner());
    for gone in prev.iter().filter(|p| !now.contains(p)) {
        crate::metrics::cluster_node(gone, false);
    }
    for s in &now {
        crate::metrics::cluster_node(s, true);
    }
    *prev = now;
}

/// Before serving: the first map (bounded).
pub async fn initial(env: &ControlEnv, cell: &ClusterCell, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while !refresh(env, cell).await {
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("no cluster slot map yet; serving anyway");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Follows the cluster for ever: on MOVED at once, else every probe
/// interval (a node failure shows in the next map).
pub async fn follow(env: ControlEnv, cell: Arc<ClusterCell>) {
    /// How long the map may stay unreadable before it is worth a warning.
    const PATIENCE: Duration = Duration::from_secs(5);
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut warned = false;
    loop {
        let interval = Duration::from_millis(env.config().health.probe_interval_ms);
        tokio::select! {
            _ = cell.refresh.notified() => {}
            _ = tokio::time::sleep(interval) => {}
        }
        if refresh(&env, &cell).await {
            if warned {
                tracing::info!("the cluster's slot map is readable again");
            }
            (failing_since, warned) = (None, false);
        } else {
            let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
            if !warned && since.elapsed() >= PATIENCE {
                tracing::warn!(
                    "no agreed cluster slot map for {} s; routing by the last one",
                    PATIENCE.as_secs()
                );
                warned = true;
            }
        }
    }
}
