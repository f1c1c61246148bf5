//! Primary failover through the sidecar, against real servers: Redis's own
//! `FAILOVER`, a manual `REPLICAOF NO ONE`, two masters at once. Each runs
//! under a loop of 20 clients writing their own counters and reading them
//! back; afterwards every acknowledged write is checked on the new primary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{Cluster, Nearby, RawConn, RedisServer, wait_until};

/// What one client saw.
#[derive(Default, Debug)]
struct Tally {
    /// INCRs acknowledged (integer replies).
    acked: u64,
    /// The last value an INCR returned.
    last: u64,
    /// Replies that were not the next integer: (expected, got). A write
    /// acknowledged and then lost makes the counter go back.
    jumps: Vec<(u64, u64)>,
    write_errors: Vec<String>,
    read_errors: Vec<String>,
    /// When each write error happened, since the start.
    error_at: Vec<Duration>,
    /// The longest a write took to be answered.
    slowest_write: Duration,
    /// Reads that returned less than the client's own last write (checked
    /// only with `Load::start_checking`).
    stale_reads: Vec<(u64, String)>,
}

/// 20 clients, each INCRing `ctr:<n>` and reading it back, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<Tally>>,
    started: Instant,
}

const CLIENTS: usize = 20;

impl Load {
    fn start(port: u16) -> Load {
        Load::start_with(port, false)
    }

    /// Also counts reads that do not show the client's own last write.
    fn start_checking(port: u16) -> Load {
        Load::start_with(port, true)
    }

    fn start_with(port: u16, check_fresh: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let threads = (0..CLIENTS)
            .map(|n| {
                let stop = stop.clone();
                thread::spawn(move || {
                    let mut t = Tally::default();
                    let mut c = RawConn::connect(port);
                    let key = format!("ctr:{n}");
                    // Bounded: 60 s of work at most, whatever happens.
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let sent = Instant::now();
                        let r = c.cmd(&["INCR", &key]);
                        t.slowest_write = t.slowest_write.max(sent.elapsed());
                        let text = String::from_utf8_lossy(&r).into_owned();
                        let int = text
                            .strip_prefix(':')
                            .and_then(|v| v.trim_end().parse::<u64>().ok());
                        if let Some(v) = int {
                            if v != t.last + 1 {
                                t.jumps.push((t.last + 1, v));
                            }
                            t.acked += 1;
                            t.last = v;
                        } else {
                            t.write_errors.push(text);
                            t.error_at.push(started.elapsed());
                        }
                        let r = c.cmd(&["GET", &key]);
                        if r.first() != Some(&b'$') {
                            t.read_errors.push(String::from_utf8_lossy(&r).into_owned());
                        } else if check_fresh {
                            let text = String::from_utf8_lossy(&r).into_owned();
                            let seen: u64 = text
                                .lines()
                                .nth(1)
                                .and_then(|l| l.parse().ok())
                                .unwrap_or(0);
                            if seen < t.last {
                                t.stale_reads.push((t.last, text));
                            }
                        }
                        thread::sleep(Duration::from_millis(2));
                    }
                    t
                })
            })
            .collect();
        Load {
            stop,
            threads,
            started,
        }
    }

    fn finish(self) -> Vec<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("client thread"))
            .collect()
    }
}

/// Every acknowledged INCR is on `server`: no counter ever went back or
/// skipped, and each ends at its last acknowledged value (exactly, when
/// no write failed).
fn assert_nothing_lost(server: &RedisServer, tallies: &[Tally]) {
    for (n, t) in tallies.iter().enumerate() {
        assert!(t.jumps.is_empty(), "ctr:{n} jumped: {:?}", t.jumps);
        let v = String::from_utf8(server.query(&["GET", &format!("ctr:{n}")])).unwrap();
        let value: u64 = v.lines().nth(1).and_then(|l| l.parse().ok()).unwrap_or(0);
        if t.write_errors.is_empty() {
            assert_eq!(value, t.last, "ctr:{n} on the new primary");
        } else {
            assert!(
                value >= t.last,
                "ctr:{n}: {value} < {} acknowledged",
                t.last
            );
        }
    }
}

fn role(server: &RedisServer) -> String {
    server
        .info("replication")
        .get("role")
        .cloned()
        .unwrap_or_default()
}

/// The upstream `/status` names as the primary.
fn status_primary(nearby: &Nearby) -> String {
    let (_, body) = nearby.http_get("/status").expect("status");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    v["primary"]["address"].as_str().unwrap_or("").to_string()
}

#[test]
fn redis_failover_to_a_replica_loses_nothing_and_no_client_sees_an_error() {
    let cluster = Cluster::start(2);
    let nearby = Nearby::start_for(&cluster, &["--probe-interval-ms", "200"]);
    nearby
        .expect_log("WARN", "the primary changed")
        .expect_log("WARN", "the primary says it is a replica");
    // A subscriber and a blocked client on the old primary: their state
    // belongs to a replica now, so their connections close (as Redis's own
    // role change does), and their libraries reconnect.
    let mut sub = RawConn::connect(nearby.port);
    sub.send_cmd(&["SUBSCRIBE", "news"]);
    assert_eq!(
        sub.read_reply(),
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    let mut blocked = RawConn::connect(nearby.port);
    blocked.send_cmd(&["BLPOP", "nothing", "0"]);
    let load = Load::start(nearby.port);
    thread::sleep(Duration::from_millis(500));
    let target = &cluster.replicas[0];
    let reply = cluster.primary.cli(&[
        "FAILOVER",
        "TO",
        "127.0.0.1",
        &target.port.to_string(),
        "TIMEOUT",
        "5000",
    ]);
    assert_eq!(reply, "OK");
    assert!(
        wait_until(Duration::from_secs(10), || role(target) == "master"),
        "the replica was not promoted"
    );
    let promoted = Instant::now();
    let moved = wait_until(Duration::from_secs(5), || {
        status_primary(&nearby) == format!("127.0.0.1:{}", target.port)
    });
    assert!(moved, "writes did not follow the promotion");
    let took = promoted.elapsed();
    thread::sleep(Duration::from_millis(500));
    let tallies = load.finish();
    assert!(took < Duration::from_secs(1), "writes moved after {took:?}");
    eprintln!(
        "FAILOVER TO: writes moved {took:?} after the promotion; {} writes, {} errors",
        tallies.iter().map(|t| t.acked).sum::<u64>(),
        tallies.iter().map(|t| t.write_errors.len()).sum::<usize>()
    );
    assert!(sub.is_closed(), "the subscriber's connection stayed open");
    // Unblocked with an error: Redis's own, when it demoted itself before
    // the sidecar closed the connection; the sidecar's otherwise.
    let reply = String::from_utf8(blocked.read_reply()).unwrap();
    assert!(
        reply.starts_with(
            "-UNBLOCKED force unblock from blocking operation, instance state changed"
        ) || (reply.starts_with("-ERR nearby: ") && reply.contains("its role changed (failover)")),
        "the blocked client got {reply:?}"
    );
    let writes: u64 = tallies.iter().map(|t| t.acked).sum();
    assert!(writes > 200, "the load barely ran: {writes} writes");
    for (n, t) in tallies.iter().enumerate() {
        assert!(
            t.write_errors.is_empty(),
            "client {n}: {:?}",
            t.write_errors
        );
        assert!(t.read_errors.is_empty(), "client {n}: {:?}", t.read_errors);
    }
    assert_nothing_lost(target, &tallies);
    // Writes after the switch land on the new primary.
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "after", "1"]), b"+OK\r\n");
    assert_eq!(target.query(&["GET", "after"]), b"$1\r\n1\r\n");
    let metrics = nearby.metrics();
    assert!(
        metrics.contains("nearby_primary_changes_total{source=\"role\"} 1"),
        "{metrics}"
    );
}

#[test]
fn replicaof_no_one_moves_writes_within_two_probe_intervals() {
    let cluster = Cluster::start(2);
    let nearby = Nearby::start_for(&cluster, &["--probe-interval-ms", "300"]);
    nearby
        .expect_log("WARN", "the primary changed")
        .expect_log("WARN", "the primary says it is a replica")
        .expect_log("ERROR", "more than one server says role:master")
        .expect_log("WARN", "configured as a replica but says role:master");
    let load = Load::start(nearby.port);
    thread::sleep(Duration::from_millis(500));
    let new = &cluster.replicas[1];
    let port = new.port.to_string();
    assert_eq!(new.cli(&["REPLICAOF", "NO", "ONE"]), "OK");
    assert_eq!(
        cluster.primary.cli(&["REPLICAOF", "127.0.0.1", &port]),
        "OK"
    );
    let demoted = Instant::now();
    assert_eq!(
        cluster.replicas[0].cli(&["REPLICAOF", "127.0.0.1", &port]),
        "OK"
    );
    let moved = wait_until(Duration::from_secs(5), || {
        status_primary(&nearby) == format!("127.0.0.1:{port}")
    });
    let took = demoted.elapsed();
    let moved_at = load.started.elapsed();
    assert!(moved, "writes did not follow REPLICAOF NO ONE");
    assert!(took < Duration::from_millis(600), "moved after {took:?}");
    eprintln!("REPLICAOF NO ONE: writes moved {took:?} after the demotion (probe interval 300 ms)");
    thread::sleep(Duration::from_millis(300));
    let tallies = load.finish();
    // A request already on its way when the status changed may still fail.
    let late: Vec<&Duration> = tallies
        .iter()
        .flat_map(|t| t.error_at.iter())
        .filter(|at| **at > moved_at + Duration::from_millis(100))
        .collect();
    assert!(late.is_empty(), "write errors after the switch: {late:?}");
    for (n, t) in tallies.iter().enumerate() {
        assert!(t.read_errors.is_empty(), "client {n}: {:?}", t.read_errors);
        for e in &t.write_errors {
            // Between the promotion and the demotion both said master.
            assert!(
                e.starts_with("-ERR nearby: two primaries")
                    || e.starts_with("-ERR nearby: no primary"),
                "client {n}: {e} (acked {}, errors {:?} at {:?}, moved at {moved_at:?})",
                t.acked,
                &t.write_errors[..t.write_errors.len().min(3)],
                &t.error_at[..t.error_at.len().min(3)]
            );
        }
    }
    // Each counter ends where its client last saw it: the writes after the
    // switch all landed on the new primary. (Writes the old primary
    // acknowledged between the promotion and its demotion are lost by
    // Redis itself, as with any manual REPLICAOF NO ONE: the counters may
    // have gone back then, which `jumps` shows; that is why coordinated
    // failover exists.)
    for (n, t) in tallies.iter().enumerate() {
        let v = new.query(&["GET", &format!("ctr:{n}")]);
        let value: u64 = String::from_utf8_lossy(&v)
            .lines()
            .nth(1)
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        assert_eq!(value, t.last, "ctr:{n}");
    }
}

#[test]
fn two_masters_refuse_writes_naming_both() {
    let cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &["--probe-interval-ms", "200"]);
    nearby
        .expect_log("ERROR", "more than one server says role:master")
        .expect_log("WARN", "configured as a replica but says role:master");
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "k", "1"]), b"+OK\r\n");
    let r = &cluster.replicas[0];
    assert_eq!(r.cli(&["REPLICAOF", "NO", "ONE"]), "OK");
    let both = format!(
        "-ERR nearby: two primaries: 127.0.0.1:{} and 127.0.0.1:{} all say role:master; writes are refused until one steps down\r\n",
        cluster.primary.port, r.port
    );
    let refused = wait_until(Duration::from_secs(3), || {
        c.cmd(&["SET", "k", "2"]) == both.as_bytes()
    });
    assert!(refused, "writes were not refused while two said master");
    // Reads keep flowing.
    assert_eq!(c.cmd(&["GET", "k"]).first(), Some(&b'$'));
    // The promoted one steps down again: writes resume on the primary.
    assert_eq!(
        r.cli(&["REPLICAOF", "127.0.0.1", &cluster.primary.port.to_string()]),
        "OK"
    );
    let resumed = wait_until(Duration::from_secs(3), || {
        c.cmd(&["SET", "k", "3"]) == b"+OK\r\n"
    });
    assert!(resumed, "writes did not resume once one stepped down");
    assert_eq!(cluster.primary.query(&["GET", "k"]), b"$1\r\n3\r\n");
}

#[test]
fn read_your_writes_holds_across_a_failover() {
    // A replica whose link is 300 ms each way: a read there right after a
    // write would be stale, so read-your-writes must keep such reads off
    // it before, during and after the switch.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let primary = RedisServer::start();
    let near = RedisServer::replica_of(primary.port);
    let any = "127.0.0.1:0".parse().unwrap();
    let link = rt
        .block_on(nearby::lab::relay::Relay::start(
            any,
            primary.addr(),
            Duration::from_millis(600),
        ))
        .unwrap();
    let slow = RedisServer::start_with(&[
        "--replicaof",
        "127.0.0.1",
        &link.local_addr().port().to_string(),
    ]);
    for r in [&near, &slow] {
        let linked = wait_until(Duration::from_secs(20), || {
            r.info("replication")
                .get("master_link_status")
                .map(String::as_str)
                == Some("up")
        });
        assert!(linked, "replica {} did not link", r.port);
    }
    let nearby = Nearby::start(&[
        "--primary",
        &primary.url(),
        "--replica",
        &format!("near={}", near.url()),
        "--replica",
        &format!("slow={}", slow.url()),
        "--consistency",
        "read-your-writes",
        "--latency-window-ms",
        "50",
        "--probe-interval-ms",
        "200",
    ]);
    nearby.wait_measured(Duration::from_secs(5));
    nearby
        .expect_log("WARN", "the primary changed")
        .expect_log("WARN", "the primary says it is a replica");
    let load = Load::start_checking(nearby.port);
    thread::sleep(Duration::from_millis(700));
    let reply = primary.cli(&[
        "FAILOVER",
        "TO",
        "127.0.0.1",
        &near.port.to_string(),
        "TIMEOUT",
        "5000",
    ]);
    assert_eq!(reply, "OK");
    let moved = wait_until(Duration::from_secs(5), || {
        status_primary(&nearby) == format!("127.0.0.1:{}", near.port)
    });
    assert!(moved, "writes did not follow FAILOVER");
    thread::sleep(Duration::from_millis(1000));
    let tallies = load.finish();
    let reads: u64 = tallies.iter().map(|t| t.acked).sum();
    assert!(reads > 200, "the load barely ran: {reads}");
    for (n, t) in tallies.iter().enumerate() {
        assert!(
            t.write_errors.is_empty(),
            "client {n}: {:?}",
            t.write_errors
        );
        assert!(t.read_errors.is_empty(), "client {n}: {:?}", t.read_errors);
        assert!(
            t.stale_reads.is_empty(),
            "client {n} read behind its own writes: {:?}",
            t.stale_reads
        );
    }
    // The slow replica was in the read pool all along: a client with no
    // writes of its own reads there too. Only the bars kept the writers'
    // reads off it.
    slow.reset_stats();
    let mut reader = RawConn::connect(nearby.port);
    let served = wait_until(Duration::from_secs(10), || {
        for _ in 0..20 {
            assert_eq!(reader.cmd(&["GET", "untouched"]), b"$-1\r\n");
        }
        slow.calls("get") > 0
    });
    assert!(
        served,
        "the lagging replica served no read:\n{}",
        nearby.log()
    );
    drop(link);
}

// ---------------------------------------------------------------------------
// Sentinel

use crate::common::sentinel::Sentinels;

/// A cluster of a primary and two replicas watched by three sentinels, and
/// a sidecar following them (`--primary` only lends its region label).
fn sentinel_world(extra: &[&str]) -> (Cluster, Sentinels, Nearby) {
    let cluster = Cluster::start(2);
    let sentinels = Sentinels::start(cluster.primary.port, 3, 2, "mymaster", 2);
    let mut args: Vec<String> = vec![
        "--sentinel-master".into(),
        "mymaster".into(),
        "--primary".into(),
        cluster.primary.url(),
        "--latency-window-ms".into(),
        "50".into(),
        "--probe-interval-ms".into(),
        "200".into(),
    ];
    for s in &sentinels.list {
        args.push("--sentinel".into());
        args.push(format!("127.0.0.1:{}", s.port));
    }
    for (i, r) in cluster.replicas.iter().enumerate() {
        args.push("--replica".into());
        args.push(format!("r{}={}", i + 1, r.url()));
    }
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    let nearby = Nearby::start(&all);
    assert!(
        nearby.wait_measured(Duration::from_secs(10)),
        "the sidecar never saw the sentinels' world:\n{}",
        nearby.log()
    );
    (cluster, sentinels, nearby)
}

#[test]
fn sentinel_failover_loses_nothing_and_writes_resume_within_a_second() {
    let (cluster, sentinels, nearby) = sentinel_world(&[]);
    assert_eq!(
        status_primary(&nearby),
        format!("127.0.0.1:{}", cluster.primary.port)
    );
    nearby
        .expect_log("WARN", "the primary changed")
        .expect_log("WARN", "a sentinel failover started")
        .expect_log("WARN", "the sentinels see the primary down or failing over")
        .expect_log("WARN", "configured as a replica but says role:master");
    let load = Load::start(nearby.port);
    thread::sleep(Duration::from_millis(500));
    assert_eq!(sentinels.failover(), b"+OK\r\n");
    // The promotion: a former replica answers ROLE as master.
    let mut promoted = None;
    let found = wait_until(Duration::from_secs(10), || {
        promoted = cluster.replicas.iter().find(|r| role(r) == "master");
        promoted.is_some()
    });
    assert!(found, "no replica was promoted");
    let promoted_at = Instant::now();
    let new = promoted.unwrap();
    let moved = wait_until(Duration::from_secs(5), || {
        status_primary(&nearby) == format!("127.0.0.1:{}", new.port)
    });
    let took = promoted_at.elapsed();
    assert!(
        moved,
        "writes did not follow the sentinels:\n{}",
        nearby.log()
    );
    assert!(
        took < Duration::from_secs(1),
        "writes moved {took:?} after the promotion"
    );
    thread::sleep(Duration::from_millis(500));
    let tallies = load.finish();
    let writes: u64 = tallies.iter().map(|t| t.acked).sum();
    assert!(writes > 200, "the load barely ran: {writes} writes");
    let slowest = tallies
        .iter()
        .map(|t| t.slowest_write)
        .max()
        .unwrap_or_default();
    eprintln!(
        "SENTINEL FAILOVER: writes moved {took:?} after the promotion; {writes} writes, 0 errors, slowest write {slowest:?}"
    );
    if std::env::var("FAILOVER_DEBUG").is_ok() {
        eprintln!("{}", nearby.log());
    }
    for (n, t) in tallies.iter().enumerate() {
        assert!(
            t.write_errors.is_empty(),
            "client {n}: {:?}",
            t.write_errors
        );
        assert!(t.read_errors.is_empty(), "client {n}: {:?}", t.read_errors);
    }
    assert_nothing_lost(new, &tallies);
    let (_, body) = nearby.http_get("/status").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["primary"]["source"], "sentinel");
    assert_eq!(v["primary"]["last_switch"]["writes_at_risk"], 0, "{body}");
    // The sentinels' new epoch, once they all announced it.
    let epoch = wait_until(Duration::from_secs(10), || {
        let (_, body) = nearby.http_get("/status").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["primary"]["epoch"].as_u64().unwrap_or(0) >= 1
    });
    assert!(epoch, "the epoch never reached 1");
}

#[test]
fn sentinel_primary_killed_writes_fail_clearly_reads_never_and_the_old_one_gets_nothing() {
    let (mut cluster, sentinels, nearby) =
        sentinel_world(&["--failover-wait-ms", "1500", "--connect-timeout-ms", "300"]);
    nearby
        .expect_log("WARN", "the primary changed")
        .expect_log("WARN", "may be missing on")
        .expect_log("WARN", "upstream is down")
        .expect_log("WARN", "upstream marked down")
        .expect_log("WARN", "a sentinel failover started")
        .expect_log("WARN", "the sentinels see the primary down or failing over")
        .expect_log("WARN", "configured as a replica but says role:master");
    let load = Load::start(nearby.port);
    thread::sleep(Duration::from_millis(500));
    let old_port = cluster.primary.port;
    cluster.primary.kill();
    let killed = Instant::now();
    // +switch-master: every sentinel names a new master.
    let mut new_port = 0;
    let switched = wait_until(Duration::from_secs(20), || {
        let addrs = sentinels.master_addrs();
        match addrs.first().cloned().flatten() {
            Some((_, p))
                if p != old_port && addrs.iter().all(|a| a.as_ref().map(|x| x.1) == Some(p)) =>
            {
                new_port = p;
                true
            }
            _ => false,
        }
    });
    assert!(switched, "the sentinels did not fail over");
    let switch_at = Instant::now();
    let moved = wait_until(Duration::from_secs(5), || {
        status_primary(&nearby) == format!("127.0.0.1:{new_port}")
    });
    let took = switch_at.elapsed();
    assert!(moved, "writes did not follow +switch-master");
    assert!(
        took < Duration::from_secs(1),
        "writes resumed {took:?} after the switch"
    );
    // The old primary comes back with its old data and role before the
    // sentinels reconfigure it: it must get no write.
    let restarted = RedisServer::start_on_port(old_port, &[]);
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until && role(&restarted) == "master" {
        assert_eq!(
            restarted.calls("incr"),
            0,
            "a write reached the restarted old primary"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let tallies = load.finish();
    let outage = killed.elapsed();
    for (n, t) in tallies.iter().enumerate() {
        // A write waits for a primary at most --failover-wait-ms (1500),
        // plus a connect timeout (300) to the dead one.
        assert!(
            t.slowest_write < Duration::from_millis(2500),
            "client {n}: a write hung for {:?}",
            t.slowest_write
        );
    }
    for (n, t) in tallies.iter().enumerate() {
        assert!(
            t.read_errors.is_empty(),
            "client {n}: reads failed: {:?}",
            t.read_errors
        );
        for e in &t.write_errors {
            assert!(e.starts_with("-ERR nearby: "), "client {n}: {e}");
        }
    }
    // Writes resumed. (On a loaded machine the sentinels may fail over
    // once more; the server they name now is the one to check.)
    let mut now_port = new_port;
    let settled = wait_until(Duration::from_secs(10), || {
        let addrs = sentinels.master_addrs();
        let agreed = addrs.windows(2).all(|w| w[0] == w[1]);
        now_port = addrs[0].as_ref().map_or(new_port, |a| a.1);
        agreed && status_primary(&nearby) == format!("127.0.0.1:{now_port}")
    });
    assert!(
        settled,
        "the sidecar does not follow the sentinels' master {now_port} (old {old_port}, first new {new_port}; sentinels: {:?}):\n{}",
        sentinels.master_addrs(),
        nearby.log()
    );
    let new = cluster
        .replicas
        .iter()
        .find(|r| r.port == now_port)
        .expect("the new primary is a former replica");
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "after", "1"]), b"+OK\r\n");
    assert_eq!(new.query(&["GET", "after"]), b"$1\r\n1\r\n");
    // What was lost is at most what was reported at risk.
    let mut lost = 0;
    for (n, t) in tallies.iter().enumerate() {
        let v = new.query(&["GET", &format!("ctr:{n}")]);
        let value: u64 = String::from_utf8_lossy(&v)
            .lines()
            .nth(1)
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        // The counter went back by the writes the old primary took along.
        lost += t
            .jumps
            .iter()
            .map(|(want, got)| want.saturating_sub(*got))
            .sum::<u64>();
        assert!(value >= t.last, "ctr:{n}: {value} < last seen {}", t.last);
    }
    // Every switch's report (the sentinels may have failed over twice).
    let at_risk: u64 = nearby
        .metrics()
        .lines()
        .find(|l| l.starts_with("nearby_failover_writes_at_risk_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .map_or(0, |n| n as u64);
    assert!(
        lost <= at_risk,
        "{lost} acknowledged writes lost, {at_risk} reported at risk ({outage:?} outage)"
    );
    let slowest = tallies
        .iter()
        .map(|t| t.slowest_write)
        .max()
        .unwrap_or_default();
    let errors: usize = tallies.iter().map(|t| t.write_errors.len()).sum();
    eprintln!(
        "kill -9: writes resumed {took:?} after +switch-master; {errors} write errors, 0 read errors, slowest write {slowest:?}; {lost} acknowledged writes lost, {at_risk} reported at risk"
    );
}
