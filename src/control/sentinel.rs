//! Following Redis Sentinel: the primary and the replicas come from the
//! sentinels instead of a fixed `--primary`.
//!
//! Every poll asks each sentinel for the master (`SENTINEL MASTER`) and its
//! replicas; the answer of the highest config epoch wins once a majority of
//! the sentinels answered (`route::sentinel::consensus`). A new master gets
//! writes only after it says `master` to `ROLE` itself (`failover`). A
//! pub/sub connection to every sentinel (`+switch-master`, `+sdown`,
//! `+odown`, `+slave`, ...) makes the next poll happen at once; the periodic
//! poll is the backstop for a lost event or connection.
//!
//! Sentinel connections are plain TCP (with AUTH when configured).

use std::sync::Arc;
use std::time::Duration;

use redis_protocol::resp2::types::BytesFrame;
use tokio::sync::Notify;

use super::ControlEnv;
use super::failover::{self, Want};
use crate::config::{Config, SentinelConfig};
use crate::conn::plain::Plain;
use crate::model::topology::{Topology, Writes};
use crate::proto::reply::decode_resp2;
use crate::route::sentinel::{self as views, MasterView, ReplicaView};
use crate::url::{Host, RedisUrl, join_host_port};

/// Events that make the next poll happen at once.
const CHANNELS: &[&str] = &[
    "+try-failover",
    "+promoted-slave",
    "+failover-state-reconf-slaves",
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
    "+switch-master",
    "+sdown",
    "-sdown",
    "+odown",
    "-odown",
    "+slave",
    "+convert-to-slave",
    "+failover-end",
    "+role-change",
];

/// A connection to one sentinel, with the configured AUTH.
async fn connect(
    env: &ControlEnv,
    cfg: &SentinelConfig,
    at: &RedisUrl,
    timeout: Duration,
) -> Result<Plain, String> {
    let auth = cfg
        .password
        .as_ref()
        .map(|p| (cfg.username.as_deref(), p.expose()));
    Plain::open(env.pipes.connector(), &at.host, at.port, auth, timeout)
        .await
        .map_err(|e| format!("sentinel {}: {e}", at.host_port()))
}

/// One sentinel's view: the master and its replicas.
#[derive(Debug)]
struct View {
    /// Its address is where clients should go (`GET-MASTER-ADDR-BY-NAME`).
    master: MasterView,
    /// The address `SENTINEL MASTER` names: during a failover, the master
    /// being failed over.
    from: String,
    replicas: Vec<ReplicaView>,
}

async fn ask(
    env: &ControlEnv,
    cfg: &SentinelConfig,
    at: &RedisUrl,
    timeout: Duration,
) -> Result<View, String> {
    let mut c = connect(env, cfg, at, timeout).await?;
    let name = cfg.master_name.as_bytes();
    let m = c.call(&[b"SENTINEL", b"MASTER", name], timeout).await?;
    let mut master = views::parse_master(&m.raw)?;
    let from = join_host_port(&master.ip, master.port);
    // The address clients should use: the promoted replica as soon as the
    // failover reached reconfiguration, before `+switch-master`.
    let a = c
        .call(&[b"SENTINEL", b"GET-MASTER-ADDR-BY-NAME", name], timeout)
        .await?;
    if let Ok(BytesFrame::Array(v)) = decode_resp2(&a.raw)
        && let [BytesFrame::BulkString(ip), BytesFrame::BulkString(port)] = v.as_slice()
        && let Some(port) = std::str::from_utf8(port).ok().and_then(|p| p.parse().ok())
    {
        master.ip = String::from_utf8_lossy(ip).into_owned();
        master.port = port;
    }
    let r = c.call(&[b"SENTINEL", b"REPLICAS", name], timeout).await?;
    let replicas = views::parse_replicas(&r.raw)?;
    Ok(View {
        master,
        from,
        replicas,
    })
}

/// The region of the server at `host:port`: the configured entry with
/// that address (the primary's or a replica's), else `unknown`.
fn region_of(config: &Config, host: &str, port: u16) -> String {
    let same = |u: &RedisUrl| u.port == port && u.host_port() == join_host_port(host, port);
    if !config.primary.url.host_port().contains(".invalid:") && same(&config.primary.url) {
        return config.primary.region.clone();
    }
    config
        .replicas
        .iter()
        .find(|r| same(&r.url))
        .map_or_else(|| "unknown".to_string(), |r| r.region.clone())
}

/// The URL for a server the sentinels named: the configured primary URL's
/// scheme, credentials and database, at that address.
fn url_at(config: &Config, host: &str, port: u16) -> Option<RedisUrl> {
    let mut url = config.primary.url.clone();
    url.host = match host.parse() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(host.to_string()),
    };
    url.port = port;
    Some(url)
}

fn want(config: &Config, entry: usize, host: &str, port: u16) -> Option<Want> {
    let url = url_at(config, host, port)?;
    let addr = match url.host {
        Host::Ip(ip) => Some(std::net::SocketAddr::new(ip, port)),
        Host::Name(_) => None,
    };
    Some(Want {
        entry,
        region: region_of(config, host, port),
        url,
        addr,
    })
}

/// Asks the sentinels until one poll gives a primary (at most `limit`):
/// run before the sidecar serves, so its first writes have somewhere to go.
pub async fn initial(env: &ControlEnv, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if poll(env).await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                "no primary from the sentinels yet; serving anyway (writes wait for one)"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Follows the sentinels for ever.
pub async fn follow(env: ControlEnv) {
    let Some(cfg) = env.config().sentinel.clone() else {
        return;
    };
    let wake = Arc::new(Notify::new());
    for at in &cfg.addresses {
        tokio::spawn(listen(env.clone(), cfg.clone(), at.clone(), wake.clone()));
    }
    loop {
        let interval = Duration::from_millis(env.config().health.probe_interval_ms);
        let waiting = env.topology.load().writes != Writes::Open;
        let tick = if waiting {
            interval.min(Duration::from_millis(100))
        } else {
            interval
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = env.topology.failover.recheck.notified() => {}
            _ = tokio::time::sleep(tick) => {}
        }
        poll(&env).await;
        env.topology.failover.checked();
    }
}

/// Subscribes to one sentinel's events; each one wakes the poller.
async fn listen(env: ControlEnv, cfg: SentinelConfig, at: RedisUrl, wake: Arc<Notify>) {
    let mut failing = false;
    loop {
        let timeout = Duration::from_millis(env.config().timeouts.connect_timeout_ms);
        let res = async {
            let mut c = connect(&env, &cfg, &at, timeout).await?;
            let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
            args.extend(CHANNELS.iter().map(|c| c.as_bytes()));
            c.send(&args).await?;
            if failing {
                tracing::info!(sentinel = %at.host_port(), "sentinel events flow again");
                failing = false;
            }
            loop {
                let r = c.next().await?;
                if let Ok(BytesFrame::Array(v)) = decode_resp2(&r.raw)
                    && let [BytesFrame::BulkString(kind), BytesFrame::BulkString(ch), BytesFrame::BulkString(payload)] =
                        v.as_slice()
                    && &kind[..] == b"message"
                {
                    let ch = String::from_utf8_lossy(ch);
                    let payload = String::from_utf8_lossy(payload);
                    tracing::debug!(sentinel = %at.host_port(), channel = %ch, %payload, "sentinel event");
                    if ch == "+try-failover"
                        && payload.split_ascii_whitespace().nth(1) == Some(cfg.master_name.as_str())
                    {
                        // Hold writes before the promotion: a write the old
                        // primary acknowledged after it would be lost.
                        tracing::warn!(sentinel = %at.host_port(), "a sentinel failover started: writes wait for the new primary");
                        failover::set_writes(&env, Writes::Waiting);
                    }
                    if let views::Event::SwitchMaster { name, .. } = views::parse_event(&ch, &payload)
                        && name == cfg.master_name
                    {
                        tracing::info!(sentinel = %at.host_port(), "+switch-master {payload}");
                    }
                    wake.notify_one();
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), String>(())
        }
        .await;
        if let Err(e) = res
            && !failing
        {
            tracing::debug!(sentinel = %at.host_port(), error = %e, "sentinel event connection lost; reconnecting");
            failing = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One round: every sentinel asked, the consensus applied. True when the
/// topology has a confirmed primary afterwards.
async fn poll(env: &ControlEnv) -> bool {
    let config = env.config_full();
    let Some(cfg) = config.sentinel.clone() else {
        return false;
    };
    let timeout = Duration::from_millis(config.timeouts.connect_timeout_ms);
    // Every sentinel at once: a slow or dead one costs one timeout, not one
    // per sentinel.
    let mut set = tokio::task::JoinSet::new();
    for (i, at) in cfg.addresses.iter().enumerate() {
        let (env, cfg, at) = (env.clone(), cfg.clone(), at.clone());
        set.spawn(async move { (i, ask(&env, &cfg, &at, timeout).await) });
    }
    let mut answers: Vec<Result<View, String>> = (0..cfg.addresses.len())
        .map(|_| Err("no answer".to_string()))
        .collect();
    while let Some(r) = set.join_next().await {
        if let Ok((i, a)) = r {
            answers[i] = a;
        }
    }
    let mut views = Vec::new();
    for (at, a) in cfg.addresses.iter().zip(answers) {
        match a {
            Ok(v) => views.push(v),
            Err(e) => {
                tracing::debug!(sentinel = %at.host_port(), error = %e, "sentinel did not answer")
            }
        }
    }
    let masters: Vec<MasterView> = views.iter().map(|v| v.master.clone()).collect();
    let winner = match views::consensus(cfg.addresses.len(), &masters) {
        Ok(m) => m.clone(),
        Err(e) => {
            tracing::debug!(error = %e, "no sentinel consensus; keeping the current primary");
            return env.topology.load().writes == Writes::Open;
        }
    };
    env.topology.failover.set_source("sentinel");
    // The replicas, as the sentinels that agree on the master see them.
    let replicas: Vec<ReplicaView> = views
        .iter()
        .filter(|v| v.master.ip == winner.ip && v.master.port == winner.port)
        .flat_map(|v| v.replicas.iter().cloned())
        .filter(serves_reads)
        .collect();
    let Some(primary) = want(&config, 0, &winner.ip, winner.port) else {
        return false;
    };
    let mut wanted: Vec<Want> = Vec::new();
    for (i, r) in replicas.iter().enumerate() {
        let entry = config
            .replicas
            .iter()
            .position(|c| {
                c.url.port == r.port && c.url.host_port() == join_host_port(&r.ip, r.port)
            })
            .map_or(1000 + i, |p| p + 1);
        if let Some(w) = want(&config, entry, &r.ip, r.port) {
            wanted.push(w);
        }
    }
    let topo = env.topology.load_full();
    let mut primary = primary;
    let mut same_primary = topo.primary.label == join_host_port(&winner.ip, winner.port);
    // A failover away from the primary writes go to now.
    let failing_over = views
        .iter()
        .any(|v| v.master.failing_over() && v.from == topo.primary.label);
    if same_primary && (winner.is_down() || failing_over) {
        // Down, or a failover started. The sentinels name the promoted
        // replica only once they see it promoted (up to an INFO period
        // later); a replica that answers ROLE as master meanwhile is the
        // one their leader promoted, since only the leader promotes.
        // Only the replica a failing-over sentinel flags `promoted` (its
        // leader's choice) may be taken before the announcement.
        let chosen: Vec<String> = views
            .iter()
            .filter(|v| v.master.failing_over())
            .flat_map(|v| v.replicas.iter())
            .filter(|r| r.flags.iter().any(|f| f == "promoted"))
            .map(|r| join_host_port(&r.ip, r.port))
            .collect();
        match promoted_replica(env, &topo, &chosen, timeout).await {
            Some(up) if failing_over => {
                tracing::info!(upstream = %up, "promoted by the sentinels' failover");
                env.topology
                    .failover
                    .supersede(&topo.primary.label, winner.config_epoch);
                wanted.retain(|w| w.url.host_port() != up.url.host_port());
                primary = Want::of(&up);
                same_primary = false;
            }
            _ => {
                if topo.writes == Writes::Open {
                    tracing::warn!(primary = %topo.primary, "the sentinels see the primary down or failing over: writes wait for the new primary");
                }
                failover::set_writes(env, Writes::Waiting);
                return false;
            }
        }
    }
    if !same_primary
        && env
            .topology
            .failover
            .is_superseded(&primary.label(), winner.config_epoch)
    {
        // The sentinels have not announced the promotion yet.
        return true;
    }
    if same_primary {
        env.topology.failover.set_epoch(winner.config_epoch);
        // Same master: follow the replica list; writes open.
        let next = failover::reconcile(&env.topology, &topo, &primary, &wanted, Writes::Open);
        if differs(&topo, &next) {
            if let Some(change) = env
                .topology
                .update(|t| Arc::ptr_eq(t, &topo).then_some(next))
            {
                env.apply(&change, "sentinel");
            }
        } else {
            failover::set_writes(env, Writes::Open);
        }
        return true;
    }
    // A new master: build the topology, confirm ROLE on its primary, then
    // publish exactly that.
    let next = failover::reconcile(&env.topology, &topo, &primary, &wanted, Writes::Open);
    match failover::confirm_master(env, &next.primary, timeout).await {
        Ok(info) => {
            // The newest epoch any sentinel reports: a leader's, mid-failover.
            let newest = views.iter().map(|v| v.master.config_epoch).max();
            env.topology
                .failover
                .set_epoch(newest.unwrap_or(winner.config_epoch));
            let first = topo.primary.url.host_port().contains(".invalid:");
            if first {
                // The first answer: not a failover, the start.
                if let Some(change) = env
                    .topology
                    .update(|t| Arc::ptr_eq(t, &topo).then_some(next))
                {
                    tracing::info!(primary = %change.next.primary, epoch = winner.config_epoch, "primary from the sentinels");
                    env.apply(&change, "sentinel");
                }
                return true;
            }
            failover::switch(env, "sentinel", &info, |t| {
                Arc::ptr_eq(t, &topo).then_some(next)
            })
        }
        Err(e) => {
            tracing::warn!(candidate = %next.primary, error = %e, "the sentinels name a primary that does not say master: writes wait");
            failover::set_writes(env, Writes::Waiting);
            false
        }
    }
}

/// The one replica of `topo` among `chosen` (flagged `promoted` by a
/// sentinel running the failover) that answers `ROLE` as master now.
async fn promoted_replica(
    env: &ControlEnv,
    topo: &Topology,
    chosen: &[String],
    timeout: Duration,
) -> Option<Arc<crate::model::topology::Upstream>> {
    let mut found = None;
    for r in &topo.replicas {
        if !chosen.contains(&r.label) {
            continue;
        }
        if failover::confirm_master(env, r, timeout).await.is_ok() {
            if found.is_some() {
                return None;
            }
            found = Some(r.clone());
        }
    }
    found
}

/// A replica the sentinels list stays a read candidate unless they see it
/// down. A broken link to its primary (every replica's, while the primary
/// is dead) or a fresh `disconnected` flag is not a reason: the prober's
/// own lag bound decides whether its data is fresh enough, and dropping
/// every replica at once would send reads to a dead primary.
fn serves_reads(r: &ReplicaView) -> bool {
    !r.flags.iter().any(|f| f == "s_down" || f == "o_down")
}

/// Whether `next` holds other upstreams than `topo`.
fn differs(topo: &Topology, next: &Topology) -> bool {
    let ids = |t: &Topology| t.all().map(|u| u.id).collect::<Vec<_>>();
    ids(topo) != ids(next)
}
