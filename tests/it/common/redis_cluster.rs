//! A real Redis Cluster on loopback, for tests of the sidecar in front of one.
//!
//! Every node is a `redis-server --cluster-enabled yes` with its own
//! temporary directory (its `nodes.conf`, its log), a client port and a
//! cluster bus port, both from [`free_port`] (`--cluster-port`, so the bus
//! does not land on `port + 10000`, which can be in the kernel's ephemeral
//! range). Like [`RedisServer`](super::RedisServer), a node is SIGKILLed and
//! reaped when its handle is dropped, and it can be killed and restarted on
//! the same ports and directory, so that it rejoins with its `nodes.conf`.
//! Nothing is persisted: a restarted node comes back with an empty dataset.
//!
//! [`RedisCluster::start`] creates the cluster the way an operator would,
//! with `redis-cli --cluster create ... --cluster-replicas R --cluster-yes`.
//! With every address on one host, `redis-cli` makes the first `P`
//! addresses the primaries (contiguous slot ranges, in order) and then, in
//! its "anti-affinity" pass, swaps replicas between primaries at random (on
//! one host no placement avoids sharing it, and it prints "Some slaves are
//! in the same host as their master"): which replica ends up under which
//! primary changes from run to run, and differs from the "Adding replica"
//! lines it printed before that pass. `start`
//! therefore reorders [`RedisCluster::nodes`] from the agreed slot map:
//! `nodes[..P]` are the primaries in slot order and `nodes[P + i*R + j]` is
//! replica `j` (ports ascending) of primary `i`. The order reflects the
//! cluster as created; after a failover or a reshard ask
//! [`RedisCluster::primaries`] and [`RedisCluster::replicas_of`], which read
//! the live slot map.
//!
//! Pace: `--cluster-node-timeout 1000` (failure detection in about 1 to
//! 2 s instead of 15 s) and `--repl-diskless-sync-delay 0` (a replica's full
//! sync starts at once). `redis-cli --cluster create` itself waits a second
//! for the nodes to meet, and a primary reports `cluster_state:ok` only 2 s
//! after its process started (Redis's rejoin delay), so a 3x2 cluster is
//! ready in about 2.5 s. One more wait is cut short: Redis 7.0 leaves a
//! replica whose replication offset is still 0 out of `CLUSTER SLOTS`, and
//! the offset of an idle primary moves only with its first replication PING,
//! 10 s (`repl-ping-replica-period`) after a replica linked; so `start`
//! sends a `FLUSHALL` (replicated even on an empty dataset) to each new
//! primary with replicas and an offset of 0.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{RawConn, free_port, loopback, parse_info, quick_query, redis_cli, resp, tail};

/// Hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// How long [`RedisCluster::start`] waits, in all, for a stable cluster.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long a replica may take to report `master` after `CLUSTER FAILOVER`.
const PROMOTE_WITHIN: Duration = Duration::from_secs(10);
/// How long the nodes may take to agree after a failover or a reshard.
const AGREE_WITHIN: Duration = Duration::from_secs(10);
/// How long a `redis-cli --cluster reshard` may run.
const TOOL_WITHIN: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// ClusterNode

/// One cluster-enabled `redis-server` on 127.0.0.1.
pub struct ClusterNode {
    pub port: u16,
    /// The cluster bus port (`--cluster-port`).
    pub bus_port: u16,
    pub dir: tempfile::TempDir,
    /// The node id (`CLUSTER MYID`): kept in `nodes.conf`, so it survives
    /// a restart (checked).
    id: String,
    /// `None` once killed.
    child: Option<Child>,
}

impl ClusterNode {
    /// Starts a node on fresh ports and waits until it answers PING (at
    /// most 5 s). It knows no other node yet.
    pub fn start() -> ClusterNode {
        let mut last_log = String::new();
        // Retry in case another process took one of the two ports.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("nearby-cluster-")
                .tempdir()
                .expect("tempdir");
            let mut node = ClusterNode {
                port: free_port(),
                bus_port: free_port(),
                dir,
                id: String::new(),
                child: None,
            };
            match node.spawn() {
                Ok(()) => return node,
                Err(log) if log.contains("Address already in use") => last_log = log,
                Err(log) => panic!("cluster node failed to start: {log}"),
            }
        }
        panic!("cluster node could not find free ports; log tail:\n{last_log}")
    }

    /// Runs `redis-server` on this node's ports and directory; waits for
    /// PING and reads the node id.
    fn spawn(&mut self) -> Result<(), String> {
        let dir = self.dir.path();
        let child = Command::new("redis-server")
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(dir.join("nodes.conf"))
            .args(["--cluster-node-timeout", "1000"])
            .args(["--cluster-port", &self.bus_port.to_string()])
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to spawn redis-server (is it installed? see scripts/install-redis.sh)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!(
                    "port {} (bus {}) exited: {status}\n{}",
                    self.port,
                    self.bus_port,
                    tail(&self.log_path(), 30)
                ));
            }
            if quick_query(self.port, b"PING\r\n").is_some_and(|r| r.starts_with(b"+PONG")) {
                break;
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "port {}: no PONG within 5 s\n{}",
                    self.port,
                    tail(&self.log_path(), 30)
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
        let id = self
            .try_query(&["CLUSTER", "MYID"])
            .and_then(|r| as_text(&parse(&r).ok()?))
            .ok_or_else(|| format!("port {}: no reply to CLUSTER MYID", self.port))?;
        if !self.id.is_empty() && id != self.id {
            return Err(format!(
                "port {} came back as node {id}, was {} (nodes.conf lost?)",
                self.port, self.id
            ));
        }
        self.id = id;
        Ok(())
    }

    /// Kills the node now (SIGKILL) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node again (killing it first if it runs) on the same
    /// ports and directory: it rejoins the cluster with its `nodes.conf`,
    /// as the same node id, with an empty dataset. Waits only for PING;
    /// follow with [`RedisCluster::wait_stable`].
    #[allow(dead_code, reason = "harness API for the cluster tests to come")]
    pub fn restart(&mut self) {
        self.kill();
        if let Err(log) = self.spawn() {
            panic!("cluster node did not restart: {log}");
        }
    }

    /// False once killed through this handle (until restarted).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    #[allow(dead_code, reason = "harness API for the cluster tests to come")]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    #[allow(dead_code, reason = "harness API for the cluster tests to come")]
    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// `127.0.0.1:<port>`, as `redis-cli --cluster` takes addresses.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:<port>`
    #[allow(dead_code, reason = "harness API for the cluster tests to come")]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Path of the node's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The node id, as `CLUSTER MYID` reported it when the node (re)started.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs `redis-cli -h 127.0.0.1 -p <port> <args>`; returns stdout,
    /// trimmed. Pass `-c` first to follow MOVED/ASK redirections.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    /// Sends one command on a fresh connection; returns the raw RESP reply.
    /// Panics if the node does not answer within 5 s.
    pub fn query(&self, args: &[&str]) -> Vec<u8> {
        let mut c = RawConn::connect(self.port);
        c.send(&resp(args));
        c.read_reply()
    }

    /// Like [`ClusterNode::query`], but `None` if nothing came back quickly
    /// (for polling a node that may be down).
    fn try_query(&self, args: &[&str]) -> Option<Vec<u8>> {
        quick_query(self.port, &resp(args))
    }

    /// `master` or `slave`: the first element of `ROLE`.
    pub fn role(&self) -> String {
        let reply = self.query(&["ROLE"]);
        role_of(&reply).unwrap_or_else(|| {
            panic!(
                "port {}: unexpected ROLE reply {:?}",
                self.port,
                String::from_utf8_lossy(&reply)
            )
        })
    }

    /// `INFO <section>` as a map of `key -> value`.
    pub fn info(&self, section: &str) -> HashMap<String, String> {
        self.try_info(section)
            .unwrap_or_else(|| panic!("port {}: no reply to INFO {section}", self.port))
    }

    fn try_info(&self, section: &str) -> Option<HashMap<String, String>> {
        let reply = self.try_query(&["INFO", section])?;
        Some(parse_info(&as_text(&parse(&reply).ok()?)?))
    }

    /// `CLUSTER INFO` as a map of `key -> value`.
    #[allow(dead_code, reason = "harness API for the cluster tests to come")]
    pub fn cluster_info(&self) -> HashMap<String, String> {
        self.try_cluster_info()
            .unwrap_or_else(|| panic!("port {}: no reply to CLUSTER INFO", self.port))
    }

    fn try_cluster_info(&self) -> Option<HashMap<String, String>> {
        let reply = self.try_query(&["CLUSTER", "INFO"])?;
        Some(parse_info(&as_text(&parse(&reply).ok()?)?))
    }

    /// This node's view of the slot map (`CLUSTER SLOTS`).
    pub fn slot_map(&self) -> Result<SlotMap, String> {
        let reply = self
            .try_query(&["CLUSTER", "SLOTS"])
            .ok_or_else(|| format!("port {}: no reply to CLUSTER SLOTS", self.port))?;
        SlotMap::parse(&reply).map_err(|e| format!("port {}: CLUSTER SLOTS: {e}", self.port))
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------
// The slot map

/// A node as `CLUSTER SLOTS` lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub port: u16,
    pub id: String,
}

/// One range of `CLUSTER SLOTS`: `start..=end`, its primary and replicas.
/// Replicas are sorted by port (each node lists them in the order it
/// learned of them, which differs from node to node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRange {
    pub start: u16,
    pub end: u16,
    pub primary: Member,
    pub replicas: Vec<Member>,
}

/// One node's `CLUSTER SLOTS`, normalized (ranges by start, replicas by
/// port) so that the views of different nodes compare equal when they
/// agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    pub ranges: Vec<SlotRange>,
}

impl SlotMap {
    /// Parses a RESP2 `CLUSTER SLOTS` reply.
    pub fn parse(reply: &[u8]) -> Result<SlotMap, String> {
        let Resp::Array(entries) = parse(reply)? else {
            return Err(format!(
                "not an array: {:?}",
                String::from_utf8_lossy(reply)
            ));
        };
        let mut ranges = Vec::with_capacity(entries.len());
        for e in entries {
            let Resp::Array(parts) = e else {
                return Err(format!("range is not an array: {e:?}"));
            };
            let [Resp::Int(start), Resp::Int(end), primary, replicas @ ..] = parts.as_slice()
            else {
                return Err(format!("malformed range: {parts:?}"));
            };
            let mut replicas = replicas
                .iter()
                .map(Member::parse)
                .collect::<Result<Vec<_>, _>>()?;
            replicas.sort();
            ranges.push(SlotRange {
                start: u16::try_from(*start).map_err(|e| e.to_string())?,
                end: u16::try_from(*end).map_err(|e| e.to_string())?,
                primary: Member::parse(primary)?,
                replicas,
            });
        }
        ranges.sort_by_key(|r| r.start);
        Ok(SlotMap { ranges })
    }

    /// The range holding `slot`.
    pub fn range_of(&self, slot: u16) -> Option<&SlotRange> {
        self.ranges
            .iter()
            .find(|r| (r.start..=r.end).contains(&slot))
    }

    /// Slots assigned to some primary.
    pub fn assigned(&self) -> usize {
        self.ranges
            .iter()
            .map(|r| usize::from(r.end - r.start) + 1)
            .sum()
    }

    /// The slots the primary on `port` owns, ascending.
    pub fn slots_of(&self, port: u16) -> BTreeSet<u16> {
        self.ranges
            .iter()
            .filter(|r| r.primary.port == port)
            .flat_map(|r| r.start..=r.end)
            .collect()
    }

    /// The primaries, in the order of their lowest slot.
    pub fn primaries(&self) -> Vec<&Member> {
        let mut out: Vec<&Member> = Vec::new();
        for r in &self.ranges {
            if !out.contains(&&r.primary) {
                out.push(&r.primary);
            }
        }
        out
    }

    /// The replicas of the primary on `port` (by port; empty if it is no
    /// primary here).
    pub fn replicas_of(&self, port: u16) -> &[Member] {
        self.ranges
            .iter()
            .find(|r| r.primary.port == port)
            .map_or(&[], |r| r.replicas.as_slice())
    }

    /// The primary that the replica on `port` follows.
    pub fn primary_of(&self, port: u16) -> Option<&Member> {
        self.ranges
            .iter()
            .find(|r| r.replicas.iter().any(|m| m.port == port))
            .map(|r| &r.primary)
    }

    pub fn is_primary(&self, port: u16) -> bool {
        self.ranges.iter().any(|r| r.primary.port == port)
    }

    /// Whether the node on `port` is listed, as a primary or a replica.
    pub fn lists(&self, port: u16) -> bool {
        self.is_primary(port) || self.primary_of(port).is_some()
    }

    /// Whether the ranges cover `0..16384` without gaps or overlaps.
    pub fn covers_all(&self) -> bool {
        let mut next = 0usize;
        for r in &self.ranges {
            if usize::from(r.start) != next {
                return false;
            }
            next = usize::from(r.end) + 1;
        }
        next == SLOTS
    }
}

impl fmt::Display for SlotMap {
    /// `0-5460 @20001 [20004 20008]; 5461-10922 @20002 [...]; ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            let replicas: Vec<String> = r.replicas.iter().map(|m| m.port.to_string()).collect();
            write!(
                f,
                "{sep}{}-{} @{} [{}]",
                r.start,
                r.end,
                r.primary.port,
                replicas.join(" ")
            )?;
        }
        Ok(())
    }
}

impl Member {
    /// `[ip, port, id, ...]` (Redis 7 adds a map of hostname metadata).
    fn parse(v: &Resp) -> Result<Member, String> {
        match v {
            Resp::Array(parts) => match parts.as_slice() {
                [_ip, Resp::Int(port), Resp::Bulk(id), ..] => Ok(Member {
                    port: u16::try_from(*port).map_err(|e| e.to_string())?,
                    id: String::from_utf8_lossy(id).into_owned(),
                }),
                _ => Err(format!("malformed node: {parts:?}")),
            },
            _ => Err(format!("node is not an array: {v:?}")),
        }
    }
}

// ---------------------------------------------------------------------------
// RedisCluster

/// A Redis Cluster of [`ClusterNode`]s on loopback. See the module doc for
/// the order of [`RedisCluster::nodes`].
pub struct RedisCluster {
    pub nodes: Vec<ClusterNode>,
    /// What `redis-cli --cluster create` printed (colors stripped).
    pub create_output: String,
    /// Set once a panic message of this harness carried the log tails, so
    /// that `Drop` does not print them again.
    tails_shown: Cell<bool>,
}

impl RedisCluster {
    /// Starts `primaries * (1 + replicas_per_primary)` nodes, creates the
    /// cluster with `redis-cli --cluster create`, and waits (at most 30 s in
    /// all) until it is stable ([`RedisCluster::check_stable`]) with
    /// `primaries` primaries of `replicas_per_primary` replicas each.
    pub fn start(primaries: usize, replicas_per_primary: usize) -> RedisCluster {
        assert!(
            primaries >= 3,
            "redis-cli --cluster create needs at least 3 primaries"
        );
        let t0 = Instant::now();
        let total = primaries * (1 + replicas_per_primary);
        let mut cluster = RedisCluster {
            nodes: (0..total).map(|_| ClusterNode::start()).collect(),
            create_output: String::new(),
            tails_shown: Cell::new(false),
        };
        let mut args = vec!["--cluster".to_string(), "create".to_string()];
        args.extend(cluster.nodes.iter().map(ClusterNode::host_port));
        args.extend([
            "--cluster-replicas".to_string(),
            replicas_per_primary.to_string(),
            "--cluster-yes".to_string(),
        ]);
        let (status, output) = run_redis_cli(&args, READY_WITHIN);
        cluster.create_output = output;
        if !status.is_some_and(|s| s.success()) {
            cluster.fail(&format!(
                "redis-cli --cluster create {} ({status:?})",
                if status.is_none() {
                    "did not finish within 30 s"
                } else {
                    "failed"
                }
            ));
        }

        let mut last = Err("not checked yet".to_string());
        super::wait_until(READY_WITHIN.saturating_sub(t0.elapsed()), || {
            cluster.bump_idle_offsets();
            last = cluster
                .check_stable()
                .and_then(|map| check_shape(&map, primaries, replicas_per_primary));
            last.is_ok()
        });
        let map = last.unwrap_or_else(|e| {
            cluster.fail(&format!("the cluster was not stable within 30 s: {e}"))
        });

        // The deterministic order: primaries by slot, then their replicas.
        let order: Vec<u16> = map
            .primaries()
            .iter()
            .map(|p| p.port)
            .chain(
                map.primaries()
                    .iter()
                    .flat_map(|p| map.replicas_of(p.port).iter().map(|r| r.port)),
            )
            .collect();
        let mut unordered: Vec<Option<ClusterNode>> = std::mem::take(&mut cluster.nodes)
            .into_iter()
            .map(Some)
            .collect();
        cluster.nodes = order
            .iter()
            .map(|port| {
                unordered
                    .iter_mut()
                    .find(|n| n.as_ref().is_some_and(|n| n.port == *port))
                    .and_then(Option::take)
                    .expect("every listed node is one of ours (checked)")
            })
            .collect();
        cluster
    }

    /// Sends `FLUSHALL` (replicated even on an empty dataset) to every
    /// primary that has replicas but a replication offset of 0. Redis 7.0
    /// leaves a replica whose offset is 0 out of `CLUSTER SLOTS`, and an
    /// idle primary's offset moves only with its first replication PING,
    /// `repl-ping-replica-period` (10 s) after a replica linked. Only for a
    /// cluster just created: the datasets are empty.
    fn bump_idle_offsets(&self) {
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            let Some(repl) = n.try_info("replication") else {
                continue;
            };
            let get = |k: &str| repl.get(k).map_or("", String::as_str);
            if get("role") == "master"
                && !matches!(get("connected_slaves"), "" | "0")
                && get("master_repl_offset") == "0"
            {
                let _ = n.try_query(&["FLUSHALL"]);
            }
        }
    }

    /// Panics with `msg`, the `create` output and every node's log tail.
    fn fail(&self, msg: &str) -> ! {
        self.tails_shown.set(true);
        panic!(
            "{msg}\n---- redis-cli --cluster create output ----\n{}\n{}",
            self.create_output,
            self.log_tails(20)
        )
    }

    /// Checks, once, that the cluster is stable, and returns the slot map
    /// the nodes agree on. Stable: every running node reports
    /// `cluster_state:ok`, all 16384 slots assigned and ok, and knows every
    /// node (killed ones included); all return the same `CLUSTER SLOTS`
    /// (replica order aside), which covers every slot and lists every
    /// running node and no killed one; each listed primary says `master`
    /// with as many connected replicas as listed, and each listed replica
    /// follows its listed primary with `master_link_status:up`.
    pub fn check_stable(&self) -> Result<SlotMap, String> {
        let running: Vec<&ClusterNode> = self.nodes.iter().filter(|n| n.is_running()).collect();
        let mut agreed: Option<(u16, SlotMap)> = None;
        for n in &running {
            let info = n
                .try_cluster_info()
                .ok_or_else(|| format!("port {}: no reply to CLUSTER INFO", n.port))?;
            let known = self.nodes.len().to_string();
            let slots = SLOTS.to_string();
            for (key, want) in [
                ("cluster_state", "ok"),
                ("cluster_slots_assigned", slots.as_str()),
                ("cluster_slots_ok", slots.as_str()),
                ("cluster_known_nodes", known.as_str()),
            ] {
                let got = info.get(key).map_or("", String::as_str);
                if got != want {
                    return Err(format!("port {}: {key}:{got}, want {want}", n.port));
                }
            }
            let map = n.slot_map()?;
            match &agreed {
                None => agreed = Some((n.port, map)),
                Some((port, first)) if *first != map => {
                    return Err(format!(
                        "ports {port} and {} disagree on the slot map:\n  {first}\n  {map}",
                        n.port
                    ));
                }
                Some(_) => {}
            }
        }
        let Some((_, map)) = agreed else {
            return Err("no node is running".to_string());
        };
        if !map.covers_all() {
            return Err(format!("the slot map has gaps: {map}"));
        }
        for n in &self.nodes {
            if !n.is_running() {
                if map.lists(n.port) {
                    return Err(format!("killed port {} is still listed: {map}", n.port));
                }
                continue;
            }
            let repl = n
                .try_info("replication")
                .ok_or_else(|| format!("port {}: no reply to INFO replication", n.port))?;
            let get = |k: &str| repl.get(k).map_or("", String::as_str);
            if map.is_primary(n.port) {
                let replicas = map.replicas_of(n.port).len().to_string();
                if get("role") != "master" || get("connected_slaves") != replicas {
                    return Err(format!(
                        "port {}: role:{} connected_slaves:{}, but listed as a primary with {replicas} replicas: {map}",
                        n.port,
                        get("role"),
                        get("connected_slaves")
                    ));
                }
            } else if let Some(p) = map.primary_of(n.port) {
                if get("role") != "slave"
                    || get("master_port") != p.port.to_string()
                    || get("master_link_status") != "up"
                {
                    return Err(format!(
                        "port {}: role:{} master_port:{} master_link_status:{}, but listed as a replica of {}",
                        n.port,
                        get("role"),
                        get("master_port"),
                        get("master_link_status"),
                        p.port
                    ));
                }
            } else {
                return Err(format!("port {} is not in the slot map: {map}", n.port));
            }
        }
        Ok(map)
    }

    /// Waits until [`RedisCluster::check_stable`] passes (at most `within`);
    /// panics with the last reason and the log tails otherwise. Returns the
    /// agreed slot map.
    pub fn wait_stable(&self, within: Duration) -> SlotMap {
        let mut last = Err("not checked yet".to_string());
        super::wait_until(within, || {
            last = self.check_stable();
            last.is_ok()
        });
        last.unwrap_or_else(|e| {
            self.fail(&format!(
                "the cluster was not stable within {within:?}: {e}"
            ))
        })
    }

    /// The slot map as the first running node sees it (`CLUSTER SLOTS`).
    /// After a change, call [`RedisCluster::wait_stable`] first.
    pub fn slot_map(&self) -> SlotMap {
        let n = self.any_node();
        n.slot_map().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The primaries, in the order of their lowest slot (live slot map).
    pub fn primaries(&self) -> Vec<&ClusterNode> {
        self.slot_map()
            .primaries()
            .iter()
            .map(|m| self.node(m.port))
            .collect()
    }

    /// The replicas of `primary`, by port (live slot map).
    pub fn replicas_of(&self, primary: &ClusterNode) -> Vec<&ClusterNode> {
        self.slot_map()
            .replicas_of(primary.port)
            .iter()
            .map(|m| self.node(m.port))
            .collect()
    }

    /// The primary owning `slot` (live slot map).
    pub fn primary_for_slot(&self, slot: u16) -> &ClusterNode {
        let map = self.slot_map();
        let range = map
            .range_of(slot)
            .unwrap_or_else(|| panic!("slot {slot} is not assigned: {map}"));
        self.node(range.primary.port)
    }

    /// `CLUSTER KEYSLOT <key>` on a running node.
    pub fn key_slot(&self, key: &str) -> u16 {
        let reply = self.any_node().query(&["CLUSTER", "KEYSLOT", key]);
        match parse(&reply) {
            Ok(Resp::Int(slot)) => u16::try_from(slot).expect("a slot fits in u16"),
            _ => panic!(
                "CLUSTER KEYSLOT {key}: {:?}",
                String::from_utf8_lossy(&reply)
            ),
        }
    }

    /// `redis://127.0.0.1:<port>` of every running node, in `nodes` order.
    #[allow(dead_code, reason = "harness API for the cluster tests to come")]
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(ClusterNode::url)
            .collect()
    }

    /// The node on `port`.
    pub fn node(&self, port: u16) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port} in this cluster"))
    }

    fn any_node(&self) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.is_running())
            .expect("no node of the cluster is running")
    }

    /// `CLUSTER FAILOVER` on `replica` (a manual failover: its primary, which
    /// must be up, stops writes until the replica has caught up, then the
    /// replica takes over). Waits until `replica` reports `master` (at most
    /// 10 s), then until the cluster is stable with `replica` owning the old
    /// primary's slots and the old primary a replica of it (at most 10 s).
    /// Returns the time from the command to that agreement.
    pub fn failover(&self, replica: &ClusterNode) -> Duration {
        let before = self.wait_stable(AGREE_WITHIN);
        let old = before
            .primary_of(replica.port)
            .unwrap_or_else(|| panic!("port {} is not a replica: {before}", replica.port))
            .clone();
        let slots = before.slots_of(old.port);
        let t0 = Instant::now();
        let reply = replica.query(&["CLUSTER", "FAILOVER"]);
        assert_eq!(
            reply,
            b"+OK\r\n",
            "CLUSTER FAILOVER on {}: {:?}",
            replica.port,
            String::from_utf8_lossy(&reply)
        );
        let promoted = super::wait_until(PROMOTE_WITHIN, || {
            replica
                .try_query(&["ROLE"])
                .is_some_and(|r| role_of(&r).as_deref() == Some("master"))
        });
        if !promoted {
            self.fail(&format!(
                "port {} did not report master within {PROMOTE_WITHIN:?} of CLUSTER FAILOVER",
                replica.port
            ));
        }
        let mut last = Err("not checked yet".to_string());
        super::wait_until(AGREE_WITHIN, || {
            last = self.check_stable().and_then(|map| {
                let old_running = self.node(old.port).is_running();
                if map.slots_of(replica.port) != slots {
                    Err(format!(
                        "port {} does not own the slots yet: {map}",
                        replica.port
                    ))
                } else if old_running
                    && map.primary_of(old.port).map(|m| m.port) != Some(replica.port)
                {
                    Err(format!(
                        "old primary {} is not a replica of {} yet: {map}",
                        old.port, replica.port
                    ))
                } else {
                    Ok(())
                }
            });
            last.is_ok()
        });
        if let Err(e) = last {
            self.fail(&format!(
                "no agreement within {AGREE_WITHIN:?} after port {} was promoted: {e}",
                replica.port
            ));
        }
        t0.elapsed()
    }

    /// Moves `slots` slots (and their keys) from the primary `from` to the
    /// primary `to` with `redis-cli --cluster reshard <from> --cluster-from
    /// <id> --cluster-to <id> --cluster-slots N --cluster-yes` (at most
    /// 30 s), then waits until the cluster is stable (at most 10 s) and
    /// checks that exactly those slots changed hands. Returns them,
    /// ascending (redis-cli takes a single source's lowest slots).
    pub fn reshard(&self, from: &ClusterNode, to: &ClusterNode, slots: usize) -> Vec<u16> {
        // redis-cli refuses to reshard a cluster whose nodes disagree.
        let before = self.wait_stable(AGREE_WITHIN);
        let from_before = before.slots_of(from.port);
        let to_before = before.slots_of(to.port);
        assert!(
            from_before.len() >= slots && before.is_primary(to.port),
            "reshard of {slots} slots from {} to {}: {before}",
            from.port,
            to.port
        );
        let args: Vec<String> = [
            "--cluster",
            "reshard",
            &from.host_port(),
            "--cluster-from",
            from.id(),
            "--cluster-to",
            to.id(),
            "--cluster-slots",
            &slots.to_string(),
            "--cluster-yes",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (status, output) = run_redis_cli(&args, TOOL_WITHIN);
        if !status.is_some_and(|s| s.success()) || output.contains("[ERR]") {
            self.fail(&format!(
                "redis-cli --cluster reshard ({status:?}):\n{output}"
            ));
        }
        let after = self.wait_stable(AGREE_WITHIN);
        let moved: Vec<u16> = after
            .slots_of(to.port)
            .difference(&to_before)
            .copied()
            .collect();
        let from_after = after.slots_of(from.port);
        let consistent = moved.len() == slots
            && moved.iter().all(|s| from_before.contains(s))
            && from_after.len() == from_before.len() - slots
            && after.slots_of(to.port).is_superset(&to_before);
        if !consistent {
            self.fail(&format!(
                "reshard of {slots} slots from {} to {} moved {} slots:\n  before {before}\n  after  {after}",
                from.port,
                to.port,
                moved.len()
            ));
        }
        moved
    }

    /// The last `lines` lines of every node's log.
    pub fn log_tails(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "---- cluster node {} ({}) ----\n{}",
                    n.port,
                    if n.is_running() { "running" } else { "killed" },
                    tail(&n.log_path(), lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        if thread::panicking() && !self.tails_shown.get() {
            eprintln!("{}", self.log_tails(20));
        }
    }
}

/// The shape [`RedisCluster::start`] asks for, on an agreed slot map.
fn check_shape(map: &SlotMap, primaries: usize, replicas: usize) -> Result<SlotMap, String> {
    let listed = map.primaries();
    if listed.len() != primaries {
        return Err(format!(
            "{} primaries, want {primaries}: {map}",
            listed.len()
        ));
    }
    if let Some(p) = listed
        .iter()
        .find(|p| map.replicas_of(p.port).len() != replicas)
    {
        return Err(format!(
            "primary {} has {} replicas, want {replicas}: {map}",
            p.port,
            map.replicas_of(p.port).len()
        ));
    }
    Ok(map.clone())
}

/// Runs `redis-cli <args>`, at most `within` (then it is killed: `None`);
/// returns its exit status and its stdout and stderr, colors stripped.
fn run_redis_cli(args: &[String], within: Duration) -> (Option<ExitStatus>, String) {
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let file = out.as_file();
    let mut child = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone temp file"))
        .stderr(file.try_clone().expect("clone temp file"))
        .spawn()
        .expect("failed to run redis-cli (is it installed? see scripts/install-redis.sh)");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(out.path()).unwrap_or_default();
    (status, strip_colors(&text))
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`): redis-cli
/// colors its `--cluster` output even when it is not a terminal.
fn strip_colors(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// A small RESP2 reader, for the replies this harness takes apart.

#[derive(Debug, Clone, PartialEq)]
enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    Nil,
    Array(Vec<Resp>),
}

/// Parses one complete RESP2 reply (trailing bytes are an error).
fn parse(buf: &[u8]) -> Result<Resp, String> {
    let (value, used) = parse_at(buf, 0)?;
    if used != buf.len() {
        return Err(format!("{} bytes after the reply", buf.len() - used));
    }
    Ok(value)
}

fn parse_at(buf: &[u8], pos: usize) -> Result<(Resp, usize), String> {
    let kind = *buf.get(pos).ok_or("truncated reply")?;
    let end = buf[pos..]
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| pos + i)
        .ok_or("truncated line")?;
    let line = String::from_utf8_lossy(&buf[pos + 1..end]).into_owned();
    let after = end + 2;
    let len =
        || -> Result<i64, String> { line.parse().map_err(|_| format!("bad length {line:?}")) };
    match kind {
        b'+' => Ok((Resp::Simple(line), after)),
        b'-' => Ok((Resp::Error(line), after)),
        b':' => Ok((Resp::Int(len()?), after)),
        b'$' => match len()? {
            -1 => Ok((Resp::Nil, after)),
            n => {
                let stop = after + usize::try_from(n).map_err(|e| e.to_string())?;
                let body = buf.get(after..stop).ok_or("truncated bulk string")?;
                Ok((Resp::Bulk(body.to_vec()), stop + 2))
            }
        },
        b'*' => match len()? {
            -1 => Ok((Resp::Nil, after)),
            n => {
                let mut items = Vec::new();
                let mut at = after;
                for _ in 0..n {
                    let (item, next) = parse_at(buf, at)?;
                    items.push(item);
                    at = next;
                }
                Ok((Resp::Array(items), at))
            }
        },
        other => Err(format!("unexpected type byte {:?}", other as char)),
    }
}

/// The text of a bulk or simple string reply.
fn as_text(v: &Resp) -> Option<String> {
    match v {
        Resp::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Resp::Simple(s) => Some(s.clone()),
        _ => None,
    }
}

/// The first element of a `ROLE` reply.
fn role_of(reply: &[u8]) -> Option<String> {
    match parse(reply).ok()? {
        Resp::Array(items) => as_text(items.first()?),
        _ => None,
    }
}
