//! The lab's Redis Cluster (`nearby lab --cluster`).
//!
//! Three shards, each a primary in the primary region (the first of
//! `--regions`) and one replica in every other region. Every node sits
//! behind its region's front relay and announces that relay as its address
//! (`--cluster-announce-port`), with its real cluster bus port: the cluster
//! (and so the sidecar, from `CLUSTER SHARDS`) sees each node at its relay.
//! `redis-cli --cluster create` joins the primaries and spreads the slots;
//! each replica then meets the cluster and follows its shard's primary
//! (`CLUSTER REPLICATE`), so that every shard has one replica per region.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

use crate::cli::{ConfigArgs, LabArgs};
use crate::config::Config;
use crate::lab::relay::Relay;

use super::{Region, Server, find_on_path, free_port, query, wait_for};

/// How many shards the lab's cluster has.
const SHARDS: usize = 3;

/// One cluster node: its server (and front relay), its bus port, its shard.
struct Node {
    server: Server,
    bus_port: u16,
    shard: usize,
    primary: bool,
    id: String,
}

impl Node {
    fn log(&self, dir: &Path) -> String {
        node_dir(dir, self.server.port)
            .join("redis.log")
            .display()
            .to_string()
    }
}

fn node_dir(dir: &Path, port: u16) -> std::path::PathBuf {
    dir.join(format!("node-{port}"))
}

/// Starts a cluster-enabled redis-server in `region` behind its front
/// relay, announcing the relay's port and its own bus port.
async fn start_node(bin: &Path, dir: &Path, region: &Region) -> Result<(Server, u16), String> {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_port().map_err(|e| e.to_string())?;
        let bus_port = free_port().map_err(|e| e.to_string())?;
        if bus_port == port {
            continue;
        }
        let ndir = node_dir(dir, port);
        std::fs::create_dir_all(&ndir).map_err(|e| e.to_string())?;
        let conf = ndir.join("redis.conf");
        std::fs::write(&conf, "").map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let target: SocketAddr = ([127, 0, 0, 1], port).into();
        let front = Relay::start(([127, 0, 0, 1], 0).into(), target, region.rtt)
            .await
            .map_err(|e| e.to_string())?;
        let f = front.local_addr();
        let log = ndir.join("redis.log");
        let mut child = Command::new(bin)
            .arg(&conf)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(ndir.join(format!("nodes-{port}.conf")))
            .args(["--cluster-node-timeout", "2000"])
            .args(["--cluster-port", &bus_port.to_string()])
            .args(["--cluster-announce-ip", &f.ip().to_string()])
            .args(["--cluster-announce-port", &f.port().to_string()])
            .args(["--cluster-announce-bus-port", &bus_port.to_string()])
            .arg("--dir")
            .arg(&ndir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let end = Instant::now() + Duration::from_secs(10);
        last.clear();
        while Instant::now() < end {
            if let Ok(Some(status)) = child.try_wait() {
                last = format!(
                    "a cluster node in {} exited ({status}); see {}",
                    region.name,
                    log.display()
                );
                break;
            }
            if query(port, &[b"PING"])
                .await
                .is_ok_and(|r| r.starts_with("+PONG"))
            {
                let server = Server {
                    region: region.clone(),
                    port,
                    child,
                    front,
                };
                return Ok((server, bus_port));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if last.is_empty() {
            last = format!(
                "a cluster node in {} did not answer within 10 s",
                region.name
            );
        }
        let _ = child.kill().await;
    }
    Err(last)
}

/// The text of a bulk or simple string reply (`$N\r\n...\r\n`, `+...`).
fn text_of(reply: &str) -> String {
    match reply.split_once("\r\n") {
        Some((head, rest)) if head.starts_with('$') => rest.trim_end_matches("\r\n").to_string(),
        Some((head, _)) => head.trim_start_matches('+').to_string(),
        None => reply.to_string(),
    }
}

async fn must(port: u16, args: &[&[u8]]) -> Result<String, String> {
    let reply = query(port, args)
        .await
        .map_err(|e| format!("127.0.0.1:{port}: {e}"))?;
    if let Some(err) = reply.strip_prefix('-') {
        return Err(format!(
            "127.0.0.1:{port} refused {}: {}",
            String::from_utf8_lossy(args[0]),
            err.trim_end()
        ));
    }
    Ok(reply)
}

/// Starts the nodes and forms the cluster; returns the nodes, primaries
/// first (shard order), then the replicas.
async fn form(bin: &Path, dir: &Path, regions: &[Region]) -> Result<Vec<Node>, String> {
    let cli = find_on_path("redis-cli").ok_or(
        "redis-cli is not installed (it comes with redis-server: `sudo apt-get install -y redis-tools`)",
    )?;
    let mut nodes = Vec::new();
    for shard in 0..SHARDS {
        let (server, bus_port) = start_node(bin, dir, &regions[0]).await?;
        nodes.push(Node {
            server,
            bus_port,
            shard,
            primary: true,
            id: String::new(),
        });
    }
    for region in &regions[1..] {
        for shard in 0..SHARDS {
            let (server, bus_port) = start_node(bin, dir, region).await?;
            nodes.push(Node {
                server,
                bus_port,
                shard,
                primary: false,
                id: String::new(),
            });
        }
    }
    for n in &mut nodes {
        n.id = text_of(&must(n.server.port, &[b"CLUSTER", b"MYID"]).await?);
    }

    // The primaries at their real ports: redis-cli connects to these; the
    // nodes learn each other's announced (relay) addresses by gossip.
    let mut create = Command::new(&cli);
    create.arg("--cluster").arg("create");
    for n in &nodes[..SHARDS] {
        create.arg(format!("127.0.0.1:{}", n.server.port));
    }
    create
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), create.output())
        .await
        .map_err(|_| "redis-cli --cluster create did not finish within 30 s".to_string())?
        .map_err(|e| format!("cannot run {}: {e}", cli.display()))?;
    if !out.status.success() {
        return Err(format!(
            "redis-cli --cluster create failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }

    // Each replica meets the first primary (at its real port and bus port),
    // and, once it knows its shard's primary, follows it.
    let first = &nodes[0];
    let (meet_port, meet_bus) = (first.server.port.to_string(), first.bus_port.to_string());
    for n in &nodes[SHARDS..] {
        must(
            n.server.port,
            &[
                b"CLUSTER",
                b"MEET",
                b"127.0.0.1",
                meet_port.as_bytes(),
                meet_bus.as_bytes(),
            ],
        )
        .await?;
    }
    for n in &nodes[SHARDS..] {
        let master = nodes[n.shard].id.clone();
        let port = n.server.port;
        wait_for(
            &format!("the node on 127.0.0.1:{port} learning its primary"),
            Duration::from_secs(15),
            async || {
                query(port, &[b"CLUSTER", b"NODES"])
                    .await
                    .is_ok_and(|r| r.contains(&master))
            },
        )
        .await?;
        must(port, &[b"CLUSTER", b"REPLICATE", master.as_bytes()]).await?;
    }

    // Bounded: the whole cluster up, every replica linked.
    let end = Instant::now() + Duration::from_secs(30);
    let total = nodes.len();
    for n in &nodes {
        let port = n.server.port;
        let left = end.saturating_duration_since(Instant::now());
        let known = format!("cluster_known_nodes:{total}\r\n");
        wait_for(
            &format!("cluster_state:ok on 127.0.0.1:{port}"),
            left,
            async || {
                query(port, &[b"CLUSTER", b"INFO"])
                    .await
                    .is_ok_and(|r| r.contains("cluster_state:ok") && r.contains(&known))
            },
        )
        .await
        .map_err(|e| format!("{e}; see {}", n.log(dir)))?;
        if !n.primary {
            let left = end.saturating_duration_since(Instant::now());
            wait_for(
                &format!("the replica on 127.0.0.1:{port} linking to its primary"),
                left,
                async || {
                    query(port, &[b"INFO", b"replication"])
                        .await
                        .is_ok_and(|r| {
                            r.contains("role:slave") && r.contains("master_link_status:up")
                        })
                },
            )
            .await
            .map_err(|e| format!("{e}; see {}", n.log(dir)))?;
        }
    }
    // Every node must report every other at its relay, as the sidecar will.
    for n in &nodes {
        let port = n.server.port;
        let left = end.saturating_duration_since(Instant::now());
        let mut seen = String::new();
        wait_for(
            &format!("127.0.0.1:{port} reporting every node at its relay (CLUSTER SHARDS)"),
            left.max(Duration::from_secs(1)),
            async || {
                seen = query(port, &[b"CLUSTER", b"SHARDS"])
                    .await
                    .unwrap_or_default();
                nodes.iter().all(|m| {
                    seen.contains(&format!(
                        "$4\r\nport\r\n:{}\r\n",
                        m.server.front_addr().port()
                    )) && !seen.contains(&format!("$4\r\nport\r\n:{}\r\n", m.server.port))
                })
            },
        )
        .await
        .map_err(|e| format!("{e}: {seen:?}"))?;
    }
    Ok(nodes)
}

/// `nearby lab --cluster`: the cluster, the sidecar in front, the table.
pub async fn lab(args: &LabArgs, bin: &Path, dir: &Path, regions: &[Region]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let primary_region = &regions[0];
    let t0 = Instant::now();
    let mut nodes = form(bin, dir, regions).await?;
    let formed = t0.elapsed();

    // Two primaries as seeds. In a cluster the primary and replica entries
    // only label nodes (by announced address) with their regions: every
    // replica's relay gets its region, and the primaries (the first as the
    // primary entry, the others as entries of the primary region) theirs.
    let cfg_args = ConfigArgs {
        listen: Some(args.listen.clone()),
        admin: Some(args.admin.clone()),
        region: Some(args.region.clone()),
        cluster: nodes[..2]
            .iter()
            .map(|n| format!("redis://{}", n.server.front_addr()))
            .collect(),
        primary: Some(format!("redis://{}", nodes[0].server.front_addr())),
        primary_region: Some(primary_region.name.clone()),
        replicas: nodes[1..]
            .iter()
            .map(|n| format!("{}=redis://{}", n.server.region.name, n.server.front_addr()))
            .collect(),
        probe_interval_ms: Some(500),
        ..ConfigArgs::default()
    };
    let config = Config::from_parts(&cfg_args, None, None).map_err(|e| e.to_string());
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            kill(&mut nodes).await;
            return Err(e);
        }
    };

    println!(
        "nearby lab: Redis Cluster of {SHARDS} shards over {} regions (formed in {:.1} s), data in {}",
        regions.len(),
        formed.as_secs_f64(),
        dir.display()
    );
    let mut order: Vec<&Node> = nodes.iter().collect();
    order.sort_by_key(|n| (n.shard, !n.primary));
    for n in order {
        let s = &n.server;
        println!(
            "  shard {} {:<8} {:<8} redis-server on 127.0.0.1:{} (bus {}) behind {} ms, seen at {}",
            n.shard + 1,
            s.region.name,
            if n.primary { "primary" } else { "replica" },
            s.port,
            n.bus_port,
            s.region.rtt.as_millis(),
            s.front_addr()
        );
    }
    let result = super::serve(args, config).await;
    kill(&mut nodes).await;
    drop(nodes);
    println!("nearby lab: stopped; removed {}", dir.display());
    result
}

async fn kill(nodes: &mut [Node]) {
    for n in nodes {
        let _ = n.server.child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_give_their_text() {
        assert_eq!(text_of("$3\r\nabc\r\n"), "abc");
        assert_eq!(text_of("+OK\r\n"), "OK");
    }
}
