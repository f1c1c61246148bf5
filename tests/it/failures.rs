//! Upstream failures: clear, fast errors for writes; reads keep flowing.

use std::time::{Duration, Instant};

use crate::common::{Cluster, Nearby, RawConn};

#[test]
fn primary_down_writes_fail_fast_and_reads_continue() {
    let mut cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &["--connect-timeout-ms", "500"]);
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "k", "before"]), b"+OK\r\n");
    cluster.wait_replicated();

    cluster.primary.kill();
    nearby
        .expect_log("WARN", "upstream marked down upstream=primary in primary")
        .expect_log("WARN", "upstream is down upstream=primary in primary");
    for i in 0..5 {
        let start = Instant::now();
        let reply = String::from_utf8(c.cmd(&["SET", "k", "after"])).unwrap();
        let took = start.elapsed();
        assert!(
            reply.starts_with("-ERR nearby: primary in primary (127.0.0.1:"),
            "attempt {i}: {reply}"
        );
        assert!(
            reply.contains(&format!(":{})", cluster.primary.port)),
            "{reply}"
        );
        assert!(took < Duration::from_secs(2), "write error took {took:?}");
        // Reads still come from the replica.
        assert_eq!(c.cmd(&["GET", "k"]), b"$6\r\nbefore\r\n");
    }
    // New clients too.
    let mut d = RawConn::connect(nearby.port);
    assert_eq!(d.cmd(&["GET", "k"]), b"$6\r\nbefore\r\n");
    let reply = String::from_utf8(d.cmd(&["INCR", "n"])).unwrap();
    assert!(reply.starts_with("-ERR nearby: primary"), "{reply}");
}

#[test]
fn a_killed_replica_costs_no_read_errors() {
    let mut cluster = Cluster::start(2);
    let nearby = Nearby::start_for(&cluster, &["--connect-timeout-ms", "500"]);
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "k", "v"]), b"+OK\r\n");
    cluster.wait_replicated();
    cluster.reset_stats();
    // Find the replica serving reads, then kill it mid-loop.
    for _ in 0..10 {
        assert_eq!(c.cmd(&["GET", "k"]), b"$1\r\nv\r\n");
    }
    let serving = (0..2)
        .find(|&i| cluster.replicas[i].calls("get") > 0)
        .expect("a replica served reads");
    let mut victim = cluster.replicas.remove(serving);
    let survivor = &cluster.replicas[0];
    let killed = format!("upstream=replica in r{}", serving + 1);
    nearby
        .expect_log("WARN", &format!("upstream marked down {killed}"))
        .expect_log("WARN", &format!("upstream is down {killed}"));
    victim.kill();
    for i in 0..300 {
        assert_eq!(
            c.cmd(&["GET", "k"]),
            b"$1\r\nv\r\n",
            "read {i} after the kill"
        );
    }
    assert!(survivor.calls("get") > 0);
    drop(victim);
}

#[test]
fn upstream_timeout_is_reported_within_the_request_timeout() {
    // A "Redis" that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        silent.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(8);
        while Instant::now() < end {
            if let Ok((s, _)) = silent.accept() {
                conns.push(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let nearby = Nearby::try_start(&[
        "--primary",
        &format!("redis://127.0.0.1:{port}"),
        "--primary-region",
        "mad",
        "--request-timeout-ms",
        "700",
    ]);
    let nearby = match nearby {
        Ok(n) => n,
        Err(log) => panic!("{log}"),
    };
    // The silent primary: the request times out, and so do probes.
    nearby
        .expect_log("WARN", "upstream marked down upstream=primary in mad")
        .expect_log("WARN", "upstream is down upstream=primary in mad");
    let mut c = RawConn::connect(nearby.port);
    let start = Instant::now();
    let reply = String::from_utf8(c.cmd(&["SET", "a", "b"])).unwrap();
    let took = start.elapsed();
    assert_eq!(
        reply,
        format!("-ERR nearby: primary in mad (127.0.0.1:{port}): no reply within 700 ms\r\n")
    );
    assert!(
        took >= Duration::from_millis(650) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    drop(nearby);
    held.join().unwrap();
}

#[test]
fn a_write_whose_reply_is_lost_is_never_sent_again() {
    // The primary 200 ms away through a relay; the write reaches it, then
    // the relay drops everything, so its reply never comes back. The write
    // may have run: the client gets an error, and no replica (nor the
    // primary again) ever sees it a second time.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cluster = Cluster::start(1);
    let relay = rt
        .block_on(nearby::lab::relay::Relay::start(
            "127.0.0.1:0".parse().unwrap(),
            cluster.primary.addr(),
            Duration::from_millis(200),
        ))
        .unwrap();
    let nearby = Nearby::start(&[
        "--primary",
        &format!("redis://{}", relay.local_addr()),
        "--replica",
        &format!("r1={}", cluster.replicas[0].url()),
        "--request-timeout-ms",
        "600",
    ]);
    nearby
        .expect_log("WARN", "upstream marked down")
        .expect_log("WARN", "upstream is down");
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "w", "0"]), b"+OK\r\n");
    cluster.wait_replicated();
    cluster.reset_stats();
    c.send_cmd(&["INCR", "w"]);
    std::thread::sleep(Duration::from_millis(150));
    relay.set_blackhole(true);
    let reply = String::from_utf8(c.read_reply()).unwrap();
    assert!(reply.starts_with("-ERR nearby: "), "{reply}");
    relay.set_blackhole(false);
    std::thread::sleep(Duration::from_millis(300));
    // Ran once on the primary; never tried on the replica.
    assert_eq!(cluster.primary.query(&["GET", "w"]), b"$1\r\n1\r\n");
    // The replica ran it once too, by replication; it refused nothing.
    let stats = cluster.replicas[0].info("commandstats");
    let incr = stats.get("cmdstat_incr").cloned().unwrap_or_default();
    assert!(
        incr.starts_with("calls=1,") && incr.contains("rejected_calls=0,failed_calls=0"),
        "the write was sent to the replica: {incr}"
    );
    assert_eq!(cluster.primary.calls("incr"), 1);
}
