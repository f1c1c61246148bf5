//! The sidecar in front of a real Redis Cluster (3 primaries × 2 replicas,
//! `common::redis_cluster`), for apps that do not know it is one: keys of
//! every slot through one plain connection, reads from each shard's
//! replicas, multi-key commands split and merged byte for byte as one
//! Redis answers, a cluster-aware client (redis-py `RedisCluster`) and a
//! plain one, slots migrated and a shard failed over under load.

use std::process::Command as Process;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::redis_cluster::RedisCluster;
use crate::common::{Nearby, RawConn, RedisServer};

/// A sidecar with `--cluster` seeds (two of the nodes).
fn sidecar(cluster: &RedisCluster, extra: &[&str]) -> Nearby {
    let seeds = cluster.seed_urls();
    let mut args = vec![
        "--cluster",
        &seeds[0],
        "--cluster",
        &seeds[1],
        "--latency-window-ms",
        "50",
        "--probe-interval-ms",
        "200",
    ];
    args.extend_from_slice(extra);
    let nearby = Nearby::start(&args);
    let ready = crate::common::wait_until(Duration::from_secs(10), || {
        nearby
            .http_get("/readyz")
            .is_ok_and(|(code, _)| code == 200)
    });
    assert!(ready, "the sidecar never became ready:\n{}", nearby.log());
    nearby
}

fn gets(node: &crate::common::redis_cluster::ClusterNode) -> u64 {
    node.info("commandstats")
        .get("cmdstat_get")
        .and_then(|v| v.split(',').find_map(|f| f.strip_prefix("calls=")))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn every_slot_through_one_plain_connection_reads_from_each_shards_replicas() {
    let cluster = RedisCluster::start(3, 2);
    let nearby = sidecar(&cluster, &[]);
    let mut c = RawConn::connect(nearby.port);
    // 600 keys over every shard.
    for i in 0..600 {
        let k = format!("key:{i}");
        assert_eq!(c.cmd(&["SET", &k, &i.to_string()]), b"+OK\r\n", "{k}");
    }
    for n in &cluster.nodes {
        n.query(&["CONFIG", "RESETSTAT"]);
    }
    for i in 0..600 {
        let k = format!("key:{i}");
        let v = i.to_string();
        let want = format!("${}\r\n{v}\r\n", v.len());
        // A replica may lag a moment behind the write.
        let got = c.cmd(&["GET", &k]);
        if got != want.as_bytes() {
            thread::sleep(Duration::from_millis(50));
            assert_eq!(String::from_utf8_lossy(&c.cmd(&["GET", &k])), want, "{k}");
        }
    }
    // Every shard's reads went to its replicas, none to its primary.
    for p in cluster.primaries() {
        let on_primary = gets(p);
        let on_replicas: u64 = cluster.replicas_of(p).iter().map(|r| gets(r)).sum();
        assert!(
            on_replicas >= 150 && on_primary * 20 <= on_replicas,
            "shard of {}: {on_primary} reads on the primary, {on_replicas} on replicas",
            p.port
        );
    }
    // Keys of one slot stay together, as in Redis.
    assert_eq!(c.cmd(&["SET", "{user1}.a", "1"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["RENAME", "{user1}.a", "{user1}.b"]), b"+OK\r\n");
    // SELECT is refused as Redis Cluster refuses it.
    assert_eq!(
        c.cmd(&["SELECT", "1"]),
        b"-ERR SELECT is not allowed in cluster mode\r\n"
    );
    assert_eq!(c.cmd(&["SELECT", "0"]), b"+OK\r\n");
}

#[test]
fn multi_key_commands_across_slots_answer_as_one_redis() {
    let cluster = RedisCluster::start(3, 1);
    let nearby = sidecar(&cluster, &[]);
    let single = RedisServer::start();
    let mut c = RawConn::connect(nearby.port);
    let mut d = RawConn::connect(single.port);
    // Keys on all three shards, one missing.
    let keys = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let both = |c: &mut RawConn, d: &mut RawConn, args: &[&str]| {
        let (x, y) = (c.cmd(args), d.cmd(args));
        assert_eq!(
            String::from_utf8_lossy(&x),
            String::from_utf8_lossy(&y),
            "{args:?}"
        );
    };
    let mut mset = vec!["MSET"];
    for k in &keys[..7] {
        mset.push(k);
        mset.push(k);
    }
    both(&mut c, &mut d, &mset);
    thread::sleep(Duration::from_millis(100));
    let mut mget = vec!["MGET"];
    mget.extend_from_slice(&keys);
    both(&mut c, &mut d, &mget);
    let mut exists = vec!["EXISTS"];
    exists.extend_from_slice(&keys);
    exists.push("a");
    both(&mut c, &mut d, &exists);
    let mut touch = vec!["TOUCH"];
    touch.extend_from_slice(&keys);
    both(&mut c, &mut d, &touch);
    both(&mut c, &mut d, &["DEL", "a", "b", "zzz", "c"]);
    both(&mut c, &mut d, &["UNLINK", "d", "e", "nope"]);
    both(&mut c, &mut d, &mget);
    both(&mut c, &mut d, &["MGET"]);
    both(&mut c, &mut d, &["MSET", "a"]);
    // MSETNX only within one slot; across slots Redis Cluster's own error.
    assert_eq!(
        c.cmd(&["MSETNX", "a", "1", "b", "2"]),
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(c.cmd(&["MSETNX", "{t}a", "1", "{t}b", "2"]), b":1\r\n");
}

#[test]
fn a_cluster_aware_client_and_a_plain_one_both_work() {
    let cluster = RedisCluster::start(3, 1);
    let nearby = sidecar(&cluster, &[]);
    let script = format!(
        r#"
import redis
from redis.cluster import RedisCluster
rc = RedisCluster(host="127.0.0.1", port={port})
nodes = rc.get_nodes()
assert len(nodes) == 1, nodes
for i in range(200):
    rc.set(f"rc:{{i}}", i)
assert [int(rc.get(f"rc:{{i}}")) for i in range(200)] == list(range(200))
assert rc.mget_nonatomic([f"rc:{{i}}" for i in range(10)]) == [str(i).encode() for i in range(10)]
plain = redis.Redis(host="127.0.0.1", port={port})
assert plain.mget([f"rc:{{i}}" for i in range(50)]) == [str(i).encode() for i in range(50)]
assert plain.delete(*[f"rc:{{i}}" for i in range(100)]) == 100
assert plain.exists(*[f"rc:{{i}}" for i in range(200)]) == 100
print("ok")
"#,
        port = nearby.port
    );
    let out = Process::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "stdout: {}\nstderr: {}\nsidecar:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        nearby.log()
    );
}

/// 20 clients INCRing their own counters (spread over every shard) and
/// reading them back, until stopped; returns (acked per client, errors).
fn load(port: u16, stop: Arc<AtomicBool>) -> Vec<thread::JoinHandle<(u64, Vec<String>)>> {
    (0..20)
        .map(|n| {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut c = RawConn::connect(port);
                let (mut acked, mut errors) = (0u64, Vec::new());
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let key = format!("ctr:{n}:{}", acked % 7);
                    let r = c.cmd(&["INCR", &key]);
                    if r.first() == Some(&b':') {
                        acked += 1;
                    } else {
                        errors.push(String::from_utf8_lossy(&r).into_owned());
                    }
                    let r = c.cmd(&["GET", &key]);
                    if r.first() != Some(&b'$') {
                        errors.push(String::from_utf8_lossy(&r).into_owned());
                    }
                    thread::sleep(Duration::from_millis(2));
                }
                (acked, errors)
            })
        })
        .collect()
}

/// The sum of every client's counters, read through a fresh connection.
fn total(port: u16) -> u64 {
    let mut c = RawConn::connect(port);
    let mut sum = 0;
    for n in 0..20 {
        for j in 0..7 {
            let r = c.cmd(&["GET", &format!("ctr:{n}:{j}")]);
            let text = String::from_utf8_lossy(&r).into_owned();
            sum += text
                .lines()
                .nth(1)
                .and_then(|l| l.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    sum
}

#[test]
fn slots_migrated_and_a_shard_failed_over_under_load_cost_no_client_error() {
    let cluster = RedisCluster::start(3, 1);
    let nearby = sidecar(&cluster, &[]);
    nearby.expect_log("WARN", "upstream is down");
    let stop = Arc::new(AtomicBool::new(false));
    let threads = load(nearby.port, stop.clone());
    thread::sleep(Duration::from_millis(500));
    let primaries = cluster.primaries();
    let moved = cluster.reshard(primaries[0], primaries[1], 1000);
    assert_eq!(moved.len(), 1000);
    thread::sleep(Duration::from_millis(500));
    let replica = cluster.replicas_of(primaries[2])[0];
    cluster.failover(replica);
    thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let mut acked = 0;
    for t in threads {
        let (a, errors) = t.join().expect("client");
        assert!(errors.is_empty(), "client errors: {errors:?}");
        acked += a;
    }
    assert!(acked > 500, "the load barely ran: {acked}");
    // Every acknowledged INCR is there (reads may lag: wait for replicas).
    thread::sleep(Duration::from_millis(200));
    assert_eq!(total(nearby.port), acked);
}

#[test]
fn each_shards_reads_go_to_its_nearest_replica_and_follow_a_latency_shift() {
    use nearby::lab::relay::Relay;
    use std::collections::HashMap;
    let cluster = RedisCluster::start(3, 2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // Every node behind a relay it announces, so the sidecar (and MOVED)
    // reach it through the simulated distance: each shard's primary 20 ms
    // away, one replica 1 ms ("near"), the other 10 ms ("far").
    let any = "127.0.0.1:0".parse().unwrap();
    let mut relays: HashMap<u16, Relay> = HashMap::new();
    let (mut near, mut far) = (Vec::new(), Vec::new());
    for p in cluster.primaries() {
        let reps = cluster.replicas_of(p);
        for (node, ms) in [(p, 20), (reps[0], 1), (reps[1], 10)] {
            let relay = rt
                .block_on(Relay::start(any, node.addr(), Duration::from_millis(ms)))
                .unwrap();
            let port = relay.local_addr().port().to_string();
            assert_eq!(
                node.cli(&["CONFIG", "SET", "cluster-announce-port", &port]),
                "OK"
            );
            relays.insert(node.port, relay);
        }
        near.push(reps[0].port);
        far.push(reps[1].port);
    }
    // Every node sees every announced port.
    let announced = crate::common::wait_until(Duration::from_secs(10), || {
        cluster.nodes.iter().all(|n| {
            let shards = String::from_utf8_lossy(&n.query(&["CLUSTER", "SHARDS"])).into_owned();
            relays
                .values()
                .all(|r| shards.contains(&format!(":{}\r\n", r.local_addr().port())))
        })
    });
    assert!(announced, "the cluster did not announce the relays");
    let seed = |port: u16| format!("redis://{}", relays[&port].local_addr());
    let (s0, s1) = (seed(cluster.nodes[0].port), seed(cluster.nodes[1].port));
    let nearby = Nearby::start(&[
        "--cluster",
        &s0,
        "--cluster",
        &s1,
        "--probe-interval-ms",
        "200",
    ]);
    let ready = crate::common::wait_until(Duration::from_secs(10), || {
        nearby
            .http_get("/readyz")
            .is_ok_and(|(code, _)| code == 200)
    });
    assert!(ready, "not ready:\n{}", nearby.log());
    let mut c = RawConn::connect(nearby.port);
    for i in 0..60 {
        assert_eq!(c.cmd(&["SET", &format!("k{i}"), "v"]), b"+OK\r\n");
    }
    // Probes have measured every node.
    thread::sleep(Duration::from_millis(1500));
    let by_port = |ports: &[u16]| -> Vec<u64> {
        ports
            .iter()
            .map(|p| gets(cluster.nodes.iter().find(|n| n.port == *p).unwrap()))
            .collect()
    };
    let read_all = |c: &mut RawConn, rounds: usize| {
        for n in &cluster.nodes {
            n.query(&["CONFIG", "RESETSTAT"]);
        }
        for round in 0..rounds {
            for i in 0..60 {
                let r = c.cmd(&["GET", &format!("k{i}")]);
                assert!(r.starts_with(b"$"), "round {round}: {r:?}");
            }
        }
    };
    read_all(&mut c, 5);
    let (n, f) = (by_port(&near), by_port(&far));
    for s in 0..3 {
        let share = n[s] as f64 / (n[s] + f[s]).max(1) as f64;
        assert!(
            share >= 0.97 && n[s] + f[s] >= 50,
            "shard {s}: {} reads near, {} far",
            n[s],
            f[s]
        );
    }
    // The near replicas move 40 ms away: reads follow to the far ones.
    for p in &near {
        relays[p].set_rtt(Duration::from_millis(40));
    }
    // Measured from the shift to the start of the first round of reads
    // that went (almost) all to the far replicas.
    let shifted = Instant::now();
    let mut followed_at = None;
    let mut first_round = None;
    while shifted.elapsed() < Duration::from_secs(10) {
        let started = shifted.elapsed();
        read_all(&mut c, 1);
        let (n, f) = (by_port(&near), by_port(&far));
        first_round.get_or_insert((n.clone(), f.clone()));
        if (0..3).all(|s| f[s] as f64 >= 0.9 * (n[s] + f[s]) as f64) {
            followed_at = Some(started);
            break;
        }
    }
    let at = followed_at.unwrap_or_else(|| {
        panic!(
            "reads did not follow the shift: near {:?}, far {:?}",
            by_port(&near),
            by_port(&far)
        )
    });
    assert!(
        at <= Duration::from_secs(3),
        "reads followed the shift after {at:?}"
    );
    eprintln!(
        "cluster: {:.1}% of each shard's reads on its nearest replica (lowest shard); after the shift, the first 60 reads went {:?} to the slowed replicas and {:?} to the far ones; all followed by {at:?}",
        100.0
            * (0..3)
                .map(|s| n[s] as f64 / (n[s] + f[s]) as f64)
                .fold(1.0, f64::min),
        first_round.as_ref().map(|r| &r.0),
        first_round.as_ref().map(|r| &r.1)
    );
}

#[test]
fn commands_about_every_shard_fan_out_and_scan_walks_them_all() {
    let cluster = RedisCluster::start(3, 1);
    let nearby = sidecar(&cluster, &[]);
    let mut c = RawConn::connect(nearby.port);
    for i in 0..300 {
        assert_eq!(c.cmd(&["SET", &format!("f:{i}"), "v"]), b"+OK\r\n");
    }
    thread::sleep(Duration::from_millis(200));
    assert_eq!(c.cmd(&["DBSIZE"]), b":300\r\n");
    let keys = String::from_utf8_lossy(&c.cmd(&["KEYS", "f:*"])).into_owned();
    assert!(
        keys.starts_with("*300\r\n"),
        "{}",
        &keys[..20.min(keys.len())]
    );
    // SCAN from 0 back to 0 visits every key once.
    let mut seen = std::collections::BTreeSet::new();
    let mut cursor = "0".to_string();
    for _ in 0..1000 {
        let r = String::from_utf8_lossy(&c.cmd(&["SCAN", &cursor, "COUNT", "50"])).into_owned();
        let lines: Vec<&str> = r.split("\r\n").collect();
        assert_eq!(lines[0], "*2", "{r}");
        cursor = lines[2].to_string();
        // `*2 $n cursor *k $n key $n key ...`
        for k in lines[5..].iter().step_by(2) {
            if k.starts_with("f:") {
                seen.insert(k.to_string());
            }
        }
        if cursor == "0" {
            break;
        }
    }
    assert_eq!(cursor, "0");
    assert_eq!(seen.len(), 300);
    let sha = String::from_utf8_lossy(&c.cmd(&["SCRIPT", "LOAD", "return 1"])).into_owned();
    assert!(sha.starts_with("$40\r\n"), "{sha}");
    // Loaded on every shard: EVALSHA works wherever the key lives.
    let sha = sha.lines().nth(1).unwrap().to_string();
    for k in ["a", "b", "c"] {
        assert_eq!(c.cmd(&["EVALSHA", &sha, "1", k]), b":1\r\n");
    }
    assert_eq!(c.cmd(&["FLUSHALL"]), b"+OK\r\n");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(c.cmd(&["DBSIZE"]), b":0\r\n");
}

#[test]
fn transactions_stay_within_one_slot_as_in_redis_cluster() {
    let cluster = RedisCluster::start(3, 1);
    let nearby = sidecar(&cluster, &[]);
    let mut c = RawConn::connect(nearby.port);
    // Whatever shard the keys live on.
    for tag in ["{a}", "{b}", "{c}"] {
        assert_eq!(c.cmd(&["MULTI"]), b"+OK\r\n");
        assert_eq!(c.cmd(&["SET", &format!("{tag}x"), "1"]), b"+QUEUED\r\n");
        assert_eq!(c.cmd(&["INCR", &format!("{tag}y")]), b"+QUEUED\r\n");
        assert_eq!(c.cmd(&["EXEC"]), b"*2\r\n+OK\r\n:1\r\n", "{tag}");
    }
    // A key in another slot: refused, and EXEC fails, as Redis Cluster does.
    assert_eq!(c.cmd(&["MULTI"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["SET", "{a}x", "2"]), b"+QUEUED\r\n");
    assert_eq!(
        c.cmd(&["SET", "{b}x", "2"]),
        b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
    );
    assert_eq!(
        c.cmd(&["EXEC"]),
        b"-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(c.cmd(&["GET", "{a}x"]), b"$1\r\n1\r\n");
    // WATCH names the shard; a change by another client aborts EXEC.
    let mut other = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["WATCH", "{c}x"]), b"+OK\r\n");
    assert_eq!(other.cmd(&["SET", "{c}x", "changed"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["MULTI"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["SET", "{c}x", "mine"]), b"+QUEUED\r\n");
    assert_eq!(c.cmd(&["EXEC"]), b"*-1\r\n");
    // Empty transactions and DISCARD.
    assert_eq!(c.cmd(&["MULTI"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["EXEC"]), b"*0\r\n");
    assert_eq!(c.cmd(&["MULTI"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["SET", "{b}z", "1"]), b"+QUEUED\r\n");
    assert_eq!(c.cmd(&["DISCARD"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["EXISTS", "{b}z"]), b":0\r\n");
}

#[test]
fn pubsub_works_cluster_wide_and_status_shows_the_shards() {
    let cluster = RedisCluster::start(3, 1);
    let nearby = sidecar(&cluster, &[]);
    let mut sub = RawConn::connect(nearby.port);
    sub.send_cmd(&["SUBSCRIBE", "news"]);
    assert_eq!(
        sub.read_reply(),
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    // Published on some node: the cluster bus carries it to every node.
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["PUBLISH", "news", "hi"]).first(), Some(&b':'));
    assert_eq!(
        sub.read_reply(),
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$2\r\nhi\r\n"
    );
    // Once probes settle (a first RTT sample can be an outlier), every
    // shard's reads go to its replica.
    let mut body = String::new();
    let settled = crate::common::wait_until(Duration::from_secs(5), || {
        body = nearby.http_get("/status").unwrap().1;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let shards = v["shards"].as_array().cloned().unwrap_or_default();
        shards.len() == 3
            && shards.iter().all(|s| {
                s["upstreams"].as_array().map_or(0, Vec::len) == 2
                    && s["reads_go_to"]["role"] == "replica"
            })
    });
    assert!(settled, "{body}");
    let table = Process::new(env!("CARGO_BIN_EXE_nearby"))
        .args([
            "status",
            "--admin",
            &format!("127.0.0.1:{}", nearby.admin_port),
        ])
        .output()
        .expect("nearby status");
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("Redis Cluster: 3 shards   ready: true"),
        "{text}"
    );
    assert!(
        text.contains("shard 0: slots 0-5460; reads go to replica"),
        "{text}"
    );
    assert!(
        text.contains("shard 2: slots 10923-16383; reads go to replica"),
        "{text}"
    );
    // Every node's shard and role, for per-shard views of the per-upstream
    // series: 3 shards x (1 primary + 1 replica).
    let m = nearby.metrics();
    let info: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("nearby_cluster_node_info{") && l.ends_with(" 1"))
        .collect();
    assert_eq!(info.len(), 6, "{info:?}");
    for (slots, role, n) in [
        ("0-5460", "primary", 1),
        ("0-5460", "replica", 1),
        ("10923-16383", "replica", 1),
    ] {
        let found = info
            .iter()
            .filter(|l| {
                l.contains(&format!("shard=\"{slots}\"")) && l.contains(&format!("role=\"{role}\""))
            })
            .count();
        assert_eq!(found, n, "{slots} {role}: {info:?}");
    }
}

/// A MOVED naming a node the sidecar's map does not list yet (added to
/// the cluster and given a slot since the map was read) is followed once
/// the refreshed map lists it, instead of reaching the client. The map is
/// refreshed only every 5 s otherwise, so the MOVED is what brings it.
#[test]
fn a_moved_to_a_node_added_since_the_map_was_read_is_followed() {
    use crate::common::redis_cluster::ClusterNode;
    let cluster = RedisCluster::start(3, 0);
    let seeds = cluster.seed_urls();
    let n = Nearby::start(&[
        "--cluster",
        &seeds[0],
        "--cluster",
        &seeds[1],
        "--probe-interval-ms",
        "5000",
    ]);
    assert!(crate::common::wait_until(Duration::from_secs(10), || {
        n.http_get("/readyz").is_ok_and(|(code, _)| code == 200)
    }));
    let new = ClusterNode::start();
    cluster.nodes[0].cli(&[
        "CLUSTER",
        "MEET",
        "127.0.0.1",
        &new.port.to_string(),
        &new.bus_port.to_string(),
    ]);
    let met = crate::common::wait_until(Duration::from_secs(10), || {
        cluster
            .nodes
            .iter()
            .all(|node| node.cli(&["CLUSTER", "NODES"]).contains(new.id()))
            && new.cli(&["CLUSTER", "NODES"]).lines().count() == 4
    });
    assert!(met, "the new node did not join");
    let key = "moved-to-a-new-node";
    let slot = cluster.key_slot(key);
    let src = cluster.primary_for_slot(slot);
    let s = slot.to_string();
    assert_eq!(
        new.cli(&["CLUSTER", "SETSLOT", &s, "IMPORTING", src.id()]),
        "OK"
    );
    assert_eq!(
        src.cli(&["CLUSTER", "SETSLOT", &s, "MIGRATING", new.id()]),
        "OK"
    );
    for node in cluster.nodes.iter().chain(std::iter::once(&new)) {
        assert_eq!(
            node.cli(&["CLUSTER", "SETSLOT", &s, "NODE", new.id()]),
            "OK"
        );
    }
    // The old owner now answers MOVED to the new node.
    assert!(
        String::from_utf8_lossy(&src.query(&["GET", key])).starts_with(&format!("-MOVED {slot} ")),
        "the old owner does not redirect"
    );
    let mut c = RawConn::connect(n.port);
    assert_eq!(c.cmd(&["SET", key, "v"]), b"+OK\r\n");
    assert_eq!(
        new.query(&["GET", key]),
        b"$1\r\nv\r\n",
        "the write is on the new owner"
    );
    assert_eq!(c.cmd(&["GET", key]), b"$1\r\nv\r\n");
    // Stopped before the nodes, which it would see go.
    drop(n);
}

/// What one client of the kill -9 test saw.
struct Seen {
    victim: bool,
    key: String,
    last_acked: u64,
    write_errors: Vec<(Instant, String)>,
    read_errors: Vec<String>,
    first_write_after_kill: Option<Instant>,
}

/// A shard's primary killed with SIGKILL under a 20-client INCR/GET load:
/// writes to the other shards never fail, reads of the failed shard never
/// fail (its replica serves them), and writes to it resume within a second
/// of the sidecar's map naming the promoted replica.
#[test]
fn a_shard_primary_killed_under_load_stops_only_its_own_writes() {
    let mut cluster = RedisCluster::start(3, 1);
    let nearby = sidecar(&cluster, &[]);
    nearby
        .expect_log("WARN", "marked down")
        .expect_log("WARN", "upstream is down")
        .expect_log("WARN", "cluster");
    // Every shard reads from its replica before the load starts.
    let measured = crate::common::wait_until(Duration::from_secs(10), || {
        nearby.http_get("/status").is_ok_and(|(_, body)| {
            let s: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            s["shards"].as_array().is_some_and(|shards| {
                shards.len() == 3
                    && shards
                        .iter()
                        .all(|sh| sh["reads_go_to"]["role"] == "replica")
            })
        })
    });
    assert!(measured, "reads never reached every shard's replica");
    let victim_port = cluster.primaries()[2].port;
    let heir = cluster.replicas_of(cluster.primaries()[2])[0].host_port();
    // Ten clients write keys of the victim's shard, ten of the others.
    let mut keys: Vec<(bool, String)> = Vec::new();
    let (mut on, mut off) = (0, 0);
    for i in 0.. {
        let key = format!("kill:{i}");
        let victim = cluster.primary_for_slot(cluster.key_slot(&key)).port == victim_port;
        if victim && on < 10 {
            on += 1;
            keys.push((true, key));
        } else if !victim && off < 10 {
            off += 1;
            keys.push((false, key));
        }
        if on == 10 && off == 10 {
            break;
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let killed_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let port = nearby.port;
    let threads: Vec<_> = keys
        .into_iter()
        .map(|(victim, key)| {
            let stop = stop.clone();
            let killed_at = killed_at.clone();
            thread::spawn(move || {
                let mut c = RawConn::connect(port);
                let mut seen = Seen {
                    victim,
                    key: key.clone(),
                    last_acked: 0,
                    write_errors: Vec::new(),
                    read_errors: Vec::new(),
                    first_write_after_kill: None,
                };
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let r = c.cmd(&["INCR", &key]);
                    let now = Instant::now();
                    if r.first() == Some(&b':') {
                        seen.last_acked =
                            String::from_utf8_lossy(&r[1..r.len() - 2]).parse().unwrap();
                        let after_kill = killed_at.lock().unwrap().is_some_and(|k| now > k);
                        if after_kill
                            && seen.first_write_after_kill.is_none()
                            && !seen.write_errors.is_empty()
                        {
                            seen.first_write_after_kill = Some(now);
                        }
                    } else {
                        seen.write_errors
                            .push((now, String::from_utf8_lossy(&r).into_owned()));
                    }
                    let r = c.cmd(&["GET", &key]);
                    if r.first() != Some(&b'$') {
                        seen.read_errors
                            .push(String::from_utf8_lossy(&r).into_owned());
                    }
                    thread::sleep(Duration::from_millis(2));
                }
                seen
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(700));
    let victim = cluster
        .nodes
        .iter_mut()
        .find(|n| n.port == victim_port)
        .unwrap();
    *killed_at.lock().unwrap() = Some(Instant::now());
    victim.kill();
    let kill = killed_at.lock().unwrap().unwrap();
    // The sidecar's map names the promoted replica as the shard's primary.
    let mapped = crate::common::wait_until(Duration::from_secs(20), || {
        nearby.http_get("/status").is_ok_and(|(_, body)| {
            let s: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            s["shards"].as_array().is_some_and(|shards| {
                shards.iter().any(|sh| {
                    sh["upstreams"].as_array().is_some_and(|ups| {
                        ups.iter()
                            .any(|u| u["role"] == "primary" && u["address"] == heir.as_str())
                    })
                })
            })
        })
    });
    let map_at = Instant::now();
    assert!(mapped, "the sidecar's map never named the promoted replica");
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut victim_errors = 0;
    let mut last_victim_error: Option<Instant> = None;
    for s in &seen {
        assert!(
            s.read_errors.is_empty(),
            "{}: read errors {:?}",
            s.key,
            s.read_errors
        );
        if !s.victim {
            assert!(
                s.write_errors.is_empty(),
                "{}: a write to another shard failed: {:?}",
                s.key,
                s.write_errors
            );
            continue;
        }
        victim_errors += s.write_errors.len();
        for (at, e) in &s.write_errors {
            assert!(e.starts_with('-'), "{}: not an error reply: {e:?}", s.key);
            last_victim_error = Some(last_victim_error.map_or(*at, |l| l.max(*at)));
        }
    }
    // Writes to the failed shard resumed within a second of the new map.
    if let Some(last) = last_victim_error {
        assert!(
            last < map_at + Duration::from_secs(1),
            "a write to the failed shard failed {:?} after the sidecar's map named the new primary",
            last - map_at
        );
    }
    let resumed = seen.iter().filter(|s| s.victim).all(|s| s.last_acked > 0);
    assert!(resumed);
    // What the new primary holds of what was acknowledged (asynchronous
    // replication may lose the last writes before a SIGKILL).
    let mut lost = 0;
    let mut c = RawConn::connect(nearby.port);
    for s in seen.iter().filter(|s| s.victim) {
        let r = c.cmd(&["GET", &s.key]);
        let now: u64 = crate::common::bulk_text(&r).parse().unwrap_or(0);
        lost += s.last_acked.saturating_sub(now);
    }
    println!(
        "kill -9 of a shard primary: {victim_errors} write errors on its shard, map updated {:?} after the kill, last error {:?} after the map, {lost} acknowledged writes lost",
        map_at - kill,
        last_victim_error.map(|l| l.saturating_duration_since(map_at))
    );
    drop(nearby);
}

/// Read-your-writes per shard: each write-then-read pair reads its write,
/// and once the shards' replicas have caught up (their offsets, sampled per
/// shard, reach the writes) reads go back to the replicas.
#[test]
fn read_your_writes_holds_per_shard_and_reads_return_to_the_replicas() {
    let cluster = RedisCluster::start(3, 1);
    let nearby = sidecar(&cluster, &["--consistency", "read-your-writes"]);
    let port = nearby.port;
    let stale: usize = (0..4)
        .map(|t| {
            thread::spawn(move || {
                let mut c = RawConn::connect(port);
                let mut stale = 0;
                for i in 0..500 {
                    // Keys on every shard.
                    let key = format!("ryw:{t}:{}", i % 16);
                    let v = i.to_string();
                    assert_eq!(c.cmd(&["SET", &key, &v]), b"+OK\r\n");
                    if c.cmd(&["GET", &key]) != format!("${}\r\n{v}\r\n", v.len()).into_bytes() {
                        stale += 1;
                    }
                }
                stale
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .sum();
    assert_eq!(stale, 0, "stale reads with read-your-writes");
    assert!(
        nearby
            .metrics()
            .contains("nearby_read_fallbacks_total{reason=\"pinned_after_write\"}"),
        "no read waited for a replica to catch up"
    );
    // On one connection: once its writes are on the replicas (each
    // shard's offsets say so), its reads go back to them.
    let mut c = RawConn::connect(port);
    for i in 0..16 {
        assert_eq!(c.cmd(&["SET", &format!("ryw:last:{i}"), "x"]), b"+OK\r\n");
    }
    thread::sleep(Duration::from_millis(1000));
    let replicas: Vec<_> = cluster
        .primaries()
        .iter()
        .map(|p| cluster.replicas_of(p)[0])
        .collect();
    let before: u64 = replicas.iter().map(|r| gets(r)).sum();
    for i in 0..48 {
        assert_eq!(
            c.cmd(&["GET", &format!("ryw:last:{}", i % 16)]),
            b"$1\r\nx\r\n"
        );
    }
    let after: u64 = replicas.iter().map(|r| gets(r)).sum();
    assert_eq!(after - before, 48, "reads did not return to the replicas");
}
