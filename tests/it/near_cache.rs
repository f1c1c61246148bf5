//! The near-cache against real redis-servers: hot reads answered by the
//! sidecar, kept fresh by Redis's own invalidations; never staler than
//! the replica it was filled from plus one invalidation delivery.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Cluster, Nearby, RawConn, RedisServer, wait_until};

/// The value of the counter or gauge `name{labels}` in a scrape, 0 if absent.
fn metric(m: &str, series: &str) -> f64 {
    m.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

fn hits(n: &Nearby) -> f64 {
    metric(&n.metrics(), "nearby_near_cache_hits_total")
}

fn bulk(v: &str) -> Vec<u8> {
    format!("${}\r\n{v}\r\n", v.len()).into_bytes()
}

fn cached_sidecar(c: &Cluster, extra: &[&str]) -> Nearby {
    let mut args = vec!["--near-cache", "on", "--probe-interval-ms", "200"];
    args.extend_from_slice(extra);
    Nearby::start_for(c, &args)
}

#[test]
fn a_hot_read_is_answered_by_the_sidecar_and_a_write_elsewhere_refreshes_it() {
    let c = Cluster::start(1);
    let n = cached_sidecar(&c, &[]);
    assert_eq!(c.primary.query(&["SET", "hot", "v1"]), b"+OK\r\n");
    c.wait_replicated();
    c.reset_stats();
    let mut cl = RawConn::connect(n.port);
    for _ in 0..10 {
        assert_eq!(cl.cmd(&["GET", "hot"]), bulk("v1"));
    }
    assert_eq!(c.replicas[0].calls("get"), 1, "one fill, nine hits");
    assert_eq!(c.primary.calls("get"), 0);
    assert_eq!(hits(&n), 9.0);
    let m = n.metrics();
    assert_eq!(metric(&m, "nearby_near_cache_misses_total"), 1.0);
    assert_eq!(metric(&m, "nearby_near_cache_entries"), 1.0);
    let (code, body) = n.http_get("/status").unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["near_cache"]["hits"], 9);
    assert_eq!(status["near_cache"]["misses"], 1);
    assert_eq!(status["near_cache"]["entries"], 1);
    assert_eq!(status["near_cache"]["hit_ratio"], 0.9);

    // Another client writes on the primary: the replica's invalidation
    // drops the entry once the write has replicated.
    assert_eq!(c.primary.query(&["SET", "hot", "v2"]), b"+OK\r\n");
    c.wait_replicated();
    let fresh = wait_until(Duration::from_secs(1), || {
        cl.cmd(&["GET", "hot"]) == bulk("v2")
    });
    assert!(fresh, "the entry outlived its key's change");
    let m = n.metrics();
    assert!(metric(&m, "nearby_near_cache_invalidations_total{reason=\"key\"}") >= 1.0);
}

#[test]
fn an_entry_ends_with_its_keys_ttl_and_a_flushall_drops_everything() {
    let c = Cluster::start(1);
    let n = cached_sidecar(&c, &["--near-cache-max-ttl-ms", "60000"]);
    assert_eq!(
        c.primary.query(&["SET", "short", "x", "PX", "1500"]),
        b"+OK\r\n"
    );
    assert_eq!(c.primary.query(&["SET", "long", "y"]), b"+OK\r\n");
    c.wait_replicated();
    let mut cl = RawConn::connect(n.port);
    assert_eq!(cl.cmd(&["GET", "short"]), bulk("x"));
    assert_eq!(cl.cmd(&["GET", "long"]), bulk("y"));
    std::thread::sleep(Duration::from_millis(1700));
    // Expired: a replica answers nil for a key past its TTL even before
    // the primary's DEL arrives, and so must the cache.
    assert_eq!(cl.cmd(&["GET", "short"]), b"$-1\r\n");
    assert_eq!(cl.cmd(&["GET", "long"]), bulk("y"));
    let before = hits(&n);
    assert_eq!(cl.cmd(&["GET", "long"]), bulk("y"));
    assert_eq!(hits(&n), before + 1.0);

    assert_eq!(c.primary.query(&["FLUSHALL"]), b"+OK\r\n");
    c.wait_replicated();
    let gone = wait_until(Duration::from_secs(1), || {
        cl.cmd(&["GET", "long"]) == b"$-1\r\n"
    });
    assert!(gone, "FLUSHALL did not reach the cache");
}

#[test]
fn cached_replies_are_byte_identical_to_the_replicas_in_both_protocols() {
    let c = Cluster::start(1);
    let n = cached_sidecar(&c, &[]);
    let setup: &[&[&str]] = &[
        &["SET", "s", "hello"],
        &["HSET", "h", "f1", "a", "f2", "b"],
        &["SADD", "set", "x", "y", "z"],
        &["ZADD", "z", "1.5", "m1", "2", "m2", "inf", "m3"],
        &["RPUSH", "l", "a", "b", "c"],
    ];
    for cmd in setup {
        c.primary.query(cmd);
    }
    c.wait_replicated();
    let reads: &[&[&str]] = &[
        &["GET", "s"],
        &["GET", "missing"],
        &["STRLEN", "s"],
        &["GETRANGE", "s", "1", "3"],
        &["MGET", "s", "missing", "h"],
        // From the GET entries above: no MGET entry needed.
        &["MGET", "missing", "s", "s"],
        &["EXISTS", "s", "h", "missing"],
        &["TYPE", "h"],
        &["HGET", "h", "f1"],
        &["HMGET", "h", "f1", "nope", "f2"],
        &["HGETALL", "h"],
        &["HKEYS", "h"],
        &["HLEN", "h"],
        &["SMEMBERS", "set"],
        &["SISMEMBER", "set", "x"],
        &["SMISMEMBER", "set", "x", "q"],
        &["SCARD", "set"],
        &["ZSCORE", "z", "m1"],
        &["ZSCORE", "z", "m3"],
        &["ZSCORE", "z", "none"],
        &["ZMSCORE", "z", "m1", "none"],
        &["ZRANGE", "z", "0", "-1"],
        &["ZRANK", "z", "m2"],
        &["ZCARD", "z"],
        &["LRANGE", "l", "0", "-1"],
        &["LINDEX", "l", "1"],
        &["LLEN", "l"],
        // Redis's own errors pass through and are not cached.
        &["GET", "h"],
        &["HGET", "s", "f"],
    ];
    for proto in ["2", "3"] {
        let mut direct = RawConn::connect(c.replicas[0].port);
        let mut via = RawConn::connect(n.port);
        assert!(
            direct
                .cmd(&["HELLO", proto])
                .starts_with(if proto == "3" { b"%" } else { b"*" })
        );
        assert!(
            via.cmd(&["HELLO", proto])
                .starts_with(if proto == "3" { b"%" } else { b"*" })
        );
        for cmd in reads {
            let want = direct.cmd(cmd);
            // The first answer fills the entry, the second is the entry.
            for round in ["fill", "hit"] {
                let got = via.cmd(cmd);
                assert_eq!(
                    String::from_utf8_lossy(&got),
                    String::from_utf8_lossy(&want),
                    "RESP{proto} {cmd:?} ({round})"
                );
            }
        }
    }
    assert!(hits(&n) >= 2.0 * 25.0, "the second answers were not hits");
    // The composed MGET never went upstream.
    let direct_mgets = c.replicas[0].commandstats();
    assert_eq!(
        direct_mgets.get("mget").copied().unwrap_or(0),
        2 * 2 + 1,
        "MGETs on the replica: two per protocol from the test's own direct \
         connection, and one fill of the MGET with a hash in it (entries \
         serve both protocols)"
    );
}

/// 10,000 write-then-read pairs through the sidecar with read-your-writes,
/// while another connection keeps each key cached: every read sees the
/// write before it.
#[test]
fn a_session_never_reads_behind_its_own_writes() {
    let c = Cluster::start(1);
    let n = cached_sidecar(&c, &["--consistency", "read-your-writes"]);
    let port = n.port;
    let stale: usize = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut cl = RawConn::connect(port);
                let mut hot = RawConn::connect(port);
                let key = format!("own-{t}");
                let mut stale = 0;
                for i in 0..2500 {
                    // Another connection reads first, so an entry exists
                    // when the write comes.
                    hot.cmd(&["GET", &key]);
                    hot.cmd(&["GET", &key]);
                    let v = i.to_string();
                    assert_eq!(cl.cmd(&["SET", &key, &v]), b"+OK\r\n");
                    if cl.cmd(&["GET", &key]) != bulk(&v) {
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
    assert_eq!(stale, 0, "stale reads of a session's own writes");
    assert!(hits(&n) > 1000.0, "the cache hardly answered: {}", hits(&n));
}

/// Writes through the sidecar (plain, in a transaction, in a script, a
/// flush) drop what they wrote before their replies reach the client.
/// The replica is 200 ms away and the primary 0, and reads prefer the
/// replica (a wide latency window): Redis's own invalidation arrives long
/// after the write's reply, so only the sidecar's own drop keeps the next
/// read from answering with the old entry.
#[test]
fn a_write_drops_its_keys_before_its_reply() {
    let c = Cluster::start(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let far = rt
        .block_on(nearby::lab::relay::Relay::start(
            "127.0.0.1:0".parse().unwrap(),
            c.replicas[0].addr(),
            Duration::from_millis(200),
        ))
        .unwrap();
    let replica = format!("far=redis://{}", far.local_addr());
    let n = Nearby::start(&[
        "--primary",
        &c.primary.url(),
        "--replica",
        &replica,
        "--latency-window-ms",
        "1000",
        "--probe-interval-ms",
        "200",
        "--near-cache",
        "on",
    ]);
    assert!(n.wait_ready(Duration::from_secs(5)));
    let mut cl = RawConn::connect(n.port);
    let warm = |cl: &mut RawConn, key: &str, v: &str| {
        // Filled from the far replica, then answered by the entry.
        let replica_gets = c.replicas[0].calls("get");
        assert_eq!(cl.cmd(&["GET", key]), bulk(v));
        assert_eq!(cl.cmd(&["GET", key]), bulk(v));
        assert_eq!(c.replicas[0].calls("get"), replica_gets + 1, "not cached");
    };
    assert_eq!(cl.cmd(&["SET", "w", "0"]), b"+OK\r\n");
    c.wait_replicated();
    // Until the replica is measured, reads may go to the primary.
    let mut probe = 0;
    assert!(wait_until(Duration::from_secs(5), || {
        probe += 1;
        let before = c.replicas[0].calls("get");
        cl.cmd(&["GET", &format!("probe{probe}")]);
        c.replicas[0].calls("get") > before
    }));
    warm(&mut cl, "w", "0");
    for i in 1..=3 {
        let v = i.to_string();
        assert_eq!(cl.cmd(&["SET", "w", &v]), b"+OK\r\n");
        assert_eq!(cl.cmd(&["GET", "w"]), bulk(&v), "plain write {i}");
        warm(&mut cl, "w", &v);
    }
    assert_eq!(cl.cmd(&["MULTI"]), b"+OK\r\n");
    assert_eq!(cl.cmd(&["SET", "w", "in-multi"]), b"+QUEUED\r\n");
    assert_eq!(cl.cmd(&["EXEC"]), b"*1\r\n+OK\r\n");
    assert_eq!(cl.cmd(&["GET", "w"]), bulk("in-multi"));
    warm(&mut cl, "w", "in-multi");
    assert_eq!(
        cl.cmd(&[
            "EVAL",
            "return redis.call('SET', KEYS[1], ARGV[1])",
            "1",
            "w",
            "scripted"
        ]),
        b"+OK\r\n"
    );
    assert_eq!(cl.cmd(&["GET", "w"]), bulk("scripted"));
    warm(&mut cl, "w", "scripted");
    assert_eq!(cl.cmd(&["FLUSHALL"]), b"+OK\r\n");
    assert_eq!(cl.cmd(&["GET", "w"]), b"$-1\r\n");
    let m = n.metrics();
    assert!(
        metric(
            &m,
            "nearby_near_cache_invalidations_total{reason=\"write\"}"
        ) >= 5.0
    );
}

/// A Zipf-distributed choice of `n` keys (exponent 1), from a fixed seed.
struct Zipf {
    cdf: Vec<f64>,
    state: u64,
}

impl Zipf {
    fn new(n: usize, seed: u64) -> Zipf {
        let weights: Vec<f64> = (1..=n).map(|k| 1.0 / k as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut acc = 0.0;
        let cdf = weights
            .iter()
            .map(|w| {
                acc += w / total;
                acc
            })
            .collect();
        Zipf {
            cdf,
            state: seed | 1,
        }
    }

    fn unit(&mut self) -> f64 {
        // xorshift64*
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        (self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn next(&mut self) -> usize {
        let u = self.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// One worker's (thread, writes, reads as (key, version, sent)).
type Worker = (usize, usize, Vec<(usize, u64, Instant)>);

/// How late a read may still show a version after a newer one was
/// acknowledged: replication plus one invalidation delivery on loopback
/// take about a millisecond; this leaves room for a loaded 2-core machine.
const STALE_BOUND: Duration = Duration::from_millis(250);

/// 95% reads through the near-cache, 5% writes through another sidecar
/// (no near-cache), over 1,000 keys with a Zipf distribution. Every value
/// is its key's version; a read is too stale if a newer version had been
/// acknowledged more than `STALE_BOUND` before the read was sent, and once
/// writes stop every key reads as its final version.
#[test]
fn a_zipf_read_write_mix_never_reads_staler_than_the_rules_allow() {
    const KEYS: usize = 1000;
    const THREADS: usize = 4;
    const OPS: usize = 5000;
    let c = Cluster::start(1);
    let cached = cached_sidecar(&c, &[]);
    let plain = Nearby::start_for(&c, &[]);
    for k in 0..KEYS {
        c.primary.query(&["SET", &format!("z{k}"), "0"]);
    }
    c.wait_replicated();
    // (key, version) -> when its write was acknowledged.
    let acked: Arc<Mutex<HashMap<(usize, u64), Instant>>> = Arc::default();
    let (rport, wport) = (cached.port, plain.port);
    let started = Instant::now();
    let results: Vec<Worker> = (0..THREADS)
        .map(|t| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                let mut zipf = Zipf::new(KEYS, 0x9e37_79b9 + t as u64);
                let mut reader = RawConn::connect(rport);
                let mut writer = RawConn::connect(wport);
                let mut reads = Vec::with_capacity(OPS);
                let mut writes = 0;
                for _ in 0..OPS {
                    if started.elapsed() > Duration::from_secs(30) {
                        break;
                    }
                    let k = zipf.next();
                    let key = format!("z{k}");
                    if zipf.unit() < 0.05 {
                        let r = writer.cmd(&["INCR", &key]);
                        let v: u64 = std::str::from_utf8(&r[1..r.len() - 2])
                            .unwrap()
                            .parse()
                            .unwrap();
                        acked.lock().unwrap().insert((k, v), Instant::now());
                        writes += 1;
                    } else {
                        let sent = Instant::now();
                        let r = reader.cmd(&["GET", &key]);
                        let text = crate::common::bulk_text(&r);
                        reads.push((k, text.parse::<u64>().unwrap(), sent));
                    }
                }
                (t, writes, reads)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let acked = acked.lock().unwrap();
    let mut total_reads = 0;
    let mut too_stale = Vec::new();
    for (_, _, reads) in &results {
        total_reads += reads.len();
        for &(k, v, sent) in reads {
            if let Some(&at) = acked.get(&(k, v + 1))
                && at + STALE_BOUND < sent
            {
                too_stale.push((k, v, sent - at));
            }
        }
    }
    let writes: usize = results.iter().map(|r| r.1).sum();
    assert!(
        writes > 100 && total_reads > 10_000,
        "{writes} writes, {total_reads} reads"
    );
    assert!(
        too_stale.is_empty(),
        "{} of {total_reads} reads were staler than allowed, e.g. {:?}",
        too_stale.len(),
        &too_stale[..too_stale.len().min(5)]
    );
    // Quiet: every key reads as the primary holds it.
    c.wait_replicated();
    std::thread::sleep(Duration::from_millis(100));
    let mut check = RawConn::connect(cached.port);
    for k in 0..KEYS {
        let key = format!("z{k}");
        let want = c.primary.query(&["GET", &key]);
        assert_eq!(
            check.cmd(&["GET", &key]),
            want,
            "{key} after the writes stopped"
        );
    }
    let m = cached.metrics();
    let (h, miss) = (
        metric(&m, "nearby_near_cache_hits_total"),
        metric(&m, "nearby_near_cache_misses_total"),
    );
    let ratio = h / (h + miss);
    println!("near-cache zipf mix: {total_reads} reads, {writes} writes, hit ratio {ratio:.3}");
    assert!(ratio > 0.5, "hit ratio {ratio:.3}");
}

/// Fills `key` = `v1` into the cache (one miss, then a hit).
fn fill(n: &Nearby, c: &Cluster, key: &str) -> RawConn {
    assert_eq!(c.primary.query(&["SET", key, "v1"]), b"+OK\r\n");
    c.wait_replicated();
    let mut cl = RawConn::connect(n.port);
    assert_eq!(cl.cmd(&["GET", key]), bulk("v1"));
    let before = hits(n);
    assert_eq!(cl.cmd(&["GET", key]), bulk("v1"));
    assert_eq!(hits(n), before + 1.0, "not cached");
    cl
}

/// The sidecar's fill connections on `server` (tracking clients).
fn tracking_clients(server: &RedisServer) -> Vec<String> {
    server
        .cli(&["CLIENT", "LIST"])
        .lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('t'))
        })
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn a_killed_fill_connection_takes_its_entries_with_it() {
    let c = Cluster::start(1);
    let n = cached_sidecar(&c, &[]);
    let mut cl = fill(&n, &c, "k");
    let ids = tracking_clients(&c.replicas[0]);
    assert_eq!(ids.len(), 1, "one fill connection to the replica");
    c.replicas[0].cli(&["CLIENT", "KILL", "ID", &ids[0]]);
    // The invalidation of this write has no connection to go to.
    assert_eq!(c.primary.query(&["SET", "k", "v2"]), b"+OK\r\n");
    c.wait_replicated();
    // Every read after the write replicated shows it.
    assert_eq!(cl.cmd(&["GET", "k"]), bulk("v2"));
    let m = n.metrics();
    assert!(
        metric(
            &m,
            "nearby_near_cache_invalidations_total{reason=\"connection\"}"
        ) >= 1.0
    );
}

#[test]
fn a_full_resync_of_the_replica_drops_what_it_filled() {
    // DEBUG CHANGE-REPL-ID needs the debug command.
    let primary = RedisServer::start_with(&["--enable-debug-command", "local"]);
    let replica = RedisServer::replica_of(primary.port);
    let c = Cluster {
        primary,
        replicas: vec![replica],
    };
    assert!(wait_until(Duration::from_secs(10), || {
        c.replicas[0]
            .info("replication")
            .get("master_link_status")
            .map(String::as_str)
            == Some("up")
    }));
    let n = cached_sidecar(&c, &[]);
    let mut cl = fill(&n, &c, "k");
    let full_before: u64 = c.primary.info("stats")["sync_full"].parse().unwrap();
    // A new replication history: the replica must sync in full, and an
    // RDB load invalidates no single key.
    assert_eq!(c.primary.query(&["DEBUG", "CHANGE-REPL-ID"]), b"+OK\r\n");
    assert_eq!(c.primary.query(&["SET", "k", "v2"]), b"+OK\r\n");
    c.primary.query(&["CLIENT", "KILL", "TYPE", "replica"]);
    let synced = wait_until(Duration::from_secs(10), || {
        c.replicas[0]
            .info("replication")
            .get("master_link_status")
            .map(String::as_str)
            == Some("up")
            && c.replicas[0].query(&["GET", "k"]) == bulk("v2")
    });
    assert!(synced, "the replica did not resync");
    let full_after: u64 = c.primary.info("stats")["sync_full"].parse().unwrap();
    assert_eq!(full_after, full_before + 1, "not a full resync");
    assert_eq!(cl.cmd(&["GET", "k"]), bulk("v2"));
}

#[test]
fn a_restarted_replica_serves_nothing_it_filled_before() {
    let mut c = Cluster::start(1);
    let n = cached_sidecar(&c, &[]);
    n.expect_log("WARN", "marked down");
    let mut cl = fill(&n, &c, "k");
    let port = c.replicas[0].port;
    c.replicas[0].kill();
    assert_eq!(c.primary.query(&["SET", "k", "v2"]), b"+OK\r\n");
    c.replicas[0] = RedisServer::start_on_port(
        port,
        &["--replicaof", "127.0.0.1", &c.primary.port.to_string()],
    );
    let synced = wait_until(Duration::from_secs(10), || {
        c.replicas[0].query(&["GET", "k"]) == bulk("v2")
    });
    assert!(synced);
    // From the first read on: the primary while the replica is down,
    // then the replica's fresh state.
    for _ in 0..20 {
        assert_eq!(cl.cmd(&["GET", "k"]), bulk("v2"));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn push(keys: &[&str]) -> Vec<u8> {
    let mut out = format!(">2\r\n$10\r\ninvalidate\r\n*{}\r\n", keys.len()).into_bytes();
    for k in keys {
        out.extend(bulk(k));
    }
    out
}

/// rueidis's handshake (`HELLO 3`, `CLIENT TRACKING ON OPTIN`, then
/// `CLIENT CACHING YES` before each cached read): the reads stay on the
/// nearest replica, and a write by anyone else reaches the client as
/// Redis's invalidation push. Without the near-cache too.
#[test]
fn a_tracking_client_keeps_replica_reads_and_hears_invalidations() {
    let c = Cluster::start(1);
    for extra in [&["--near-cache", "off"][..], &["--near-cache", "on"]] {
        let n = Nearby::start_for(&c, extra);
        c.primary.query(&["DEL", "other"]);
        assert_eq!(c.primary.query(&["SET", "t", "v1"]), b"+OK\r\n");
        c.wait_replicated();
        c.reset_stats();
        let mut cl = RawConn::connect(n.port);
        assert!(cl.cmd(&["HELLO", "3"]).starts_with(b"%"));
        assert_eq!(cl.cmd(&["CLIENT", "TRACKING", "ON", "OPTIN"]), b"+OK\r\n");
        assert_eq!(cl.cmd(&["CLIENT", "CACHING", "YES"]), b"+OK\r\n");
        assert_eq!(cl.cmd(&["GET", "t"]), bulk("v1"), "{extra:?}");
        // Not opted in: not tracked.
        assert_eq!(cl.cmd(&["GET", "other"]), b"_\r\n");
        assert_eq!(
            c.replicas[0].calls("get"),
            2,
            "reads left the replica: {extra:?}"
        );
        assert_eq!(c.primary.calls("get"), 0);

        assert_eq!(c.primary.query(&["SET", "other", "x"]), b"+OK\r\n");
        assert_eq!(c.primary.query(&["SET", "t", "v2"]), b"+OK\r\n");
        assert_eq!(cl.read_reply(), push(&["t"]), "{extra:?}");
        // Told once: the next change is not pushed until it is read again.
        assert_eq!(c.primary.query(&["SET", "t", "v3"]), b"+OK\r\n");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(cl.cmd(&["PING"]), b"+PONG\r\n", "{extra:?}");
        assert_eq!(
            String::from_utf8(cl.cmd(&["CLIENT", "TRACKINGINFO"])).unwrap(),
            "%3\r\n$5\r\nflags\r\n~2\r\n$2\r\non\r\n$5\r\noptin\r\n$8\r\nredirect\r\n:0\r\n$8\r\nprefixes\r\n*0\r\n"
        );
        assert_eq!(cl.cmd(&["CLIENT", "GETREDIR"]), b":0\r\n");
        assert_eq!(cl.cmd(&["CLIENT", "TRACKING", "OFF"]), b"+OK\r\n");
        assert_eq!(cl.cmd(&["CLIENT", "GETREDIR"]), b":-1\r\n");
    }
}

/// OPTOUT tracks every read (but one after `CLIENT CACHING NO`); the
/// client's own write is pushed to it too, unless NOLOOP.
#[test]
fn own_writes_are_pushed_unless_noloop_as_redis_does() {
    let c = Cluster::start(1);
    let n = Nearby::start_for(&c, &["--near-cache", "on"]);
    for (noloop, key) in [(false, "loop"), (true, "noloop")] {
        let mut cl = RawConn::connect(n.port);
        assert!(cl.cmd(&["HELLO", "3"]).starts_with(b"%"));
        let mut on = vec!["CLIENT", "TRACKING", "ON", "OPTOUT"];
        if noloop {
            on.push("NOLOOP");
        }
        assert_eq!(cl.cmd(&on), b"+OK\r\n");
        assert_eq!(cl.cmd(&["GET", key]), b"_\r\n");
        assert_eq!(cl.cmd(&["SET", key, "mine"]), b"+OK\r\n");
        if noloop {
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(cl.cmd(&["PING"]), b"+PONG\r\n", "NOLOOP: no push");
        } else {
            assert_eq!(cl.read_reply(), push(&[key]));
        }
        // The client reads its write (and tracks the key again).
        c.wait_replicated();
        assert_eq!(cl.cmd(&["GET", key]), bulk("mine"));
        assert_eq!(c.primary.query(&["SET", key, "theirs"]), b"+OK\r\n");
        assert_eq!(cl.read_reply(), push(&[key]), "another client's write");
    }
}

/// The tracking replies and errors are Redis's own, byte for byte.
#[test]
fn tracking_commands_answer_as_redis_does() {
    let c = Cluster::start(1);
    let n = Nearby::start_for(&c, &[]);
    let script: &[&[&str]] = &[
        &["HELLO", "3"],
        &["CLIENT", "GETREDIR"],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "CACHING", "YES"],
        &["CLIENT", "TRACKING", "ON", "OPTIN", "OPTOUT"],
        &["CLIENT", "TRACKING", "ON", "PREFIX", "a"],
        &["CLIENT", "TRACKING", "ON", "BOGUS"],
        &["CLIENT", "TRACKING", "ON", "OPTOUT"],
        &["CLIENT", "CACHING", "YES"],
        &["CLIENT", "CACHING", "NO"],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "TRACKING", "ON", "OPTIN"],
        &["CLIENT", "TRACKING", "ON", "NOLOOP"],
        &["CLIENT", "TRACKINGINFO"],
        &["CLIENT", "TRACKING", "OFF"],
        &["CLIENT", "TRACKINGINFO"],
    ];
    let mut direct = RawConn::connect(c.replicas[0].port);
    let mut via = RawConn::connect(n.port);
    for cmd in script {
        let want = direct.cmd(cmd);
        let got = via.cmd(cmd);
        if cmd[0] == "HELLO" {
            // The sidecar's HELLO names the sidecar.
            continue;
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want),
            "{cmd:?}"
        );
    }
}
