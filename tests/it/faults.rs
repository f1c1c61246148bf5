//! Faults under a bounded client load: frozen, killed, black-holed and
//! restarted upstreams; hostile and broken clients.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Cluster, Nearby, RawConn, RedisServer, resp, wait_until};

fn signal(pid: u32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn upstream_unusable(nearby: &Nearby, port: u16) -> Option<String> {
    let (_, body) = nearby.http_get("/status").ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["upstreams"]
        .as_array()?
        .iter()
        .find(|u| u["address"] == format!("127.0.0.1:{port}"))
        .map(|u| u["unusable"].as_str().unwrap_or("usable").to_string())
}

/// Reads `k` for `d`, every reply checked; returns how many.
fn read_loop(c: &mut RawConn, d: Duration) -> usize {
    let end = Instant::now() + d;
    let mut n = 0;
    while Instant::now() < end {
        assert_eq!(c.cmd(&["GET", "k"]), b"$1\r\nv\r\n", "read {n}");
        n += 1;
    }
    n
}

#[test]
fn a_frozen_replica_is_ejected_and_comes_back() {
    let cluster = Cluster::start(2);
    let nearby = Nearby::start_for(
        &cluster,
        &[
            "--request-timeout-ms",
            "400",
            "--probe-interval-ms",
            "100",
            "--fall",
            "2",
            "--rise",
            "2",
        ],
    );
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "k", "v"]), b"+OK\r\n");
    cluster.wait_replicated();
    read_loop(&mut c, Duration::from_millis(300));

    let frozen = &cluster.replicas[0];
    nearby
        .expect_log("WARN", "upstream marked down upstream=replica in r1")
        .expect_log("WARN", "upstream is down upstream=replica in r1");
    signal(frozen.pid(), "-STOP");
    // No read fails: requests stuck on the frozen replica time out and are
    // retried elsewhere.
    let n = read_loop(&mut c, Duration::from_millis(2000));
    assert!(n > 20, "{n} reads in 2 s");
    assert_eq!(
        upstream_unusable(&nearby, frozen.port).as_deref(),
        Some("down")
    );
    cluster.replicas[1].reset_stats();
    read_loop(&mut c, Duration::from_millis(300));
    assert!(cluster.replicas[1].calls("get") > 0);

    signal(frozen.pid(), "-CONT");
    assert!(
        wait_until(Duration::from_secs(5), || upstream_unusable(
            &nearby,
            frozen.port
        )
        .as_deref()
            == Some("usable")),
        "the replica did not come back"
    );
    read_loop(&mut c, Duration::from_millis(300));
}

#[test]
fn primary_killed_and_restarted_without_restarting_nearby() {
    let mut cluster = Cluster::start(1);
    let port = cluster.primary.port;
    let nearby = Nearby::start_for(
        &cluster,
        &["--connect-timeout-ms", "300", "--probe-interval-ms", "100"],
    );
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "k", "v"]), b"+OK\r\n");
    cluster.wait_replicated();

    nearby
        .expect_log("WARN", "upstream marked down upstream=primary in primary")
        .expect_log("WARN", "upstream is down upstream=primary in primary");
    cluster.primary.kill();
    let start = Instant::now();
    let reply = String::from_utf8(c.cmd(&["SET", "k", "w"])).unwrap();
    assert!(
        reply.starts_with("-ERR nearby: primary in primary"),
        "{reply}"
    );
    assert!(start.elapsed() < Duration::from_secs(1));
    // Reads keep flowing from the replica while the primary is down.
    read_loop(&mut c, Duration::from_millis(500));

    // The same primary comes back on the same port.
    let _restarted = RedisServer::start_on_port(port, &[]);
    let ok = wait_until(Duration::from_secs(5), || {
        c.cmd(&["SET", "k2", "x"]) == b"+OK\r\n"
    });
    assert!(ok, "writes did not recover after the primary came back");
    // It restarted empty (no persistence) and the replica resynced: write
    // the key again and read it through the replica.
    assert_eq!(c.cmd(&["SET", "k", "v"]), b"+OK\r\n");
    assert!(wait_until(Duration::from_secs(5), || c.cmd(&["GET", "k"])
        == b"$1\r\nv\r\n"));
}

#[test]
fn a_black_holed_replica_costs_no_read_errors() {
    let cluster = Cluster::start(2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let relay = rt
        .block_on(nearby::lab::relay::Relay::start(
            any,
            cluster.replicas[0].addr(),
            Duration::ZERO,
        ))
        .unwrap();
    let nearby = Nearby::start(&[
        "--primary",
        &cluster.primary.url(),
        "--replica",
        &format!("hole=redis://{}", relay.local_addr()),
        "--replica",
        &format!("other={}", cluster.replicas[1].url()),
        "--request-timeout-ms",
        "400",
        "--probe-interval-ms",
        "100",
        "--latency-window-ms",
        "50",
    ]);
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "k", "v"]), b"+OK\r\n");
    cluster.wait_replicated();
    read_loop(&mut c, Duration::from_millis(300));
    nearby
        .expect_log("WARN", "upstream marked down upstream=replica in hole")
        .expect_log("WARN", "upstream is down upstream=replica in hole");
    relay.set_blackhole(true);
    let n = read_loop(&mut c, Duration::from_millis(2000));
    assert!(n > 20, "{n} reads in 2 s");
    relay.set_blackhole(false);
}

#[test]
fn a_client_that_never_reads_stays_bounded_and_others_are_fine() {
    let cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &["--max-output-buffer", "4194304"]);
    let value = "x".repeat(10_000);
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "big", &value]), b"+OK\r\n");
    cluster.wait_replicated();
    let before = rss_kb(nearby.pid());

    // 100,000 GETs of 10 kB (1 GB of replies) that are never read.
    let mut hog = TcpStream::connect(("127.0.0.1", nearby.port)).unwrap();
    hog.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let one = resp(&["GET", "big"]);
    let chunk: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
    let mut sent = 0;
    for _ in 0..100 {
        match hog.write_all(&chunk) {
            Ok(()) => sent += 1000,
            Err(_) => break, // the sidecar stopped reading: as intended
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kb(nearby.pid());
    assert!(
        after < before + 100 * 1024,
        "RSS grew from {before} kB to {after} kB after {sent} unread GETs"
    );
    // Others are served normally meanwhile.
    let mut other = RawConn::connect(nearby.port);
    for _ in 0..50 {
        let r = other.cmd(&["GET", "big"]);
        assert_eq!(r.len(), value.len() + "$10000\r\n\r\n".len());
    }
    drop(hog);
    assert!(nearby.http_get("/healthz").is_ok());
}

#[test]
fn half_closed_and_reset_clients() {
    let cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &[]);
    // Half-close: the replies to what was sent still arrive.
    let mut s = TcpStream::connect(("127.0.0.1", nearby.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&[resp(&["SET", "h", "1"]), resp(&["ECHO", "bye"])].concat())
        .unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"+OK\r\n$3\r\nbye\r\n");

    // Abrupt resets mid-pipeline, many times.
    for _ in 0..50 {
        let s = TcpStream::connect(("127.0.0.1", nearby.port)).unwrap();
        socket_linger_zero(&s);
        let mut s = s;
        let _ = s.write_all(&resp(&["BLPOP", "nothing", "1"]));
        let _ = s.write_all(&resp(&["GET", "h"]).repeat(100));
        drop(s);
    }
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["ECHO", "alive"]), b"$5\r\nalive\r\n");
    assert!(!nearby.log().contains("panicked"));
}

/// SO_LINGER 0: close sends a RST.
fn socket_linger_zero(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

#[test]
fn max_clients_is_enforced_with_the_redis_error() {
    let cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &["--max-clients", "3"]);
    // The harness's readiness connection may still be closing: take the
    // three places as they free up.
    let mut held: Vec<RawConn> = Vec::new();
    let end = Instant::now() + Duration::from_secs(3);
    while held.len() < 3 && Instant::now() < end {
        let mut c = RawConn::connect(nearby.port);
        c.send(&resp(&["PING"]));
        if c.read_reply() == b"+PONG\r\n" {
            held.push(c);
        }
    }
    assert_eq!(held.len(), 3);
    let mut extra = RawConn::connect(nearby.port);
    assert_eq!(
        extra.read_until_closed(),
        b"-ERR max number of clients reached\r\n"
    );
    drop(held.pop());
    assert!(wait_until(Duration::from_secs(2), || {
        let mut c = RawConn::connect(nearby.port);
        c.send(&resp(&["PING"]));
        c.read_reply() == b"+PONG\r\n"
    }));
}

#[test]
fn idle_clients_are_closed_after_the_timeout() {
    let cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &["--client-idle-timeout-s", "1"]);
    let mut idle = RawConn::connect(nearby.port);
    assert_eq!(idle.cmd(&["PING"]), b"+PONG\r\n");
    let mut sub = RawConn::connect(nearby.port);
    sub.send(&resp(&["SUBSCRIBE", "ch"]));
    sub.read_reply();
    std::thread::sleep(Duration::from_millis(1800));
    assert!(idle.is_closed(), "idle client still open");
    // Subscribers are exempt, as in Redis.
    let mut p = RawConn::connect(nearby.port);
    assert_eq!(p.cmd(&["PUBLISH", "ch", "m"]), b":1\r\n");
    assert_eq!(
        sub.read_reply(),
        b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nm\r\n"
    );
}
