//! Reads go to the nearest upstream by measured latency: real redis-servers
//! placed at chosen distances behind the region simulator (a delaying relay).

use std::time::{Duration, Instant};

use crate::common::{Cluster, Nearby, RawConn};
use nearby::lab::relay::Relay;

/// Fields drop in order: the sidecar stops before its upstreams go away.
struct World {
    nearby: Nearby,
    cluster: Cluster,
    relays: Vec<Relay>, // primary, then replicas in order
    _rt: tokio::runtime::Runtime,
}

/// Primary and replicas behind relays with the given RTTs (ms).
fn world(primary_ms: u64, replica_ms: &[u64], extra: &[&str]) -> World {
    let cluster = Cluster::start(replica_ms.len());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let relay = |target, ms| {
        rt.block_on(Relay::start(
            "127.0.0.1:0".parse().unwrap(),
            target,
            Duration::from_millis(ms),
        ))
        .unwrap()
    };
    let mut relays = vec![relay(cluster.primary.addr(), primary_ms)];
    for (r, ms) in cluster.replicas.iter().zip(replica_ms) {
        relays.push(relay(r.addr(), *ms));
    }
    let mut args = vec![
        "--primary".to_string(),
        format!("redis://{}", relays[0].local_addr()),
        "--primary-region".to_string(),
        "iad".to_string(),
        "--probe-interval-ms".to_string(),
        "200".to_string(),
    ];
    for (i, r) in relays[1..].iter().enumerate() {
        args.push("--replica".to_string());
        args.push(format!("r{}=redis://{}", i + 1, r.local_addr()));
    }
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    let nearby = Nearby::start(&all);
    World {
        nearby,
        cluster,
        relays,
        _rt: rt,
    }
}

fn gets_per_server(w: &World) -> (u64, Vec<u64>) {
    (
        w.cluster.primary.calls("get"),
        w.cluster.replicas.iter().map(|r| r.calls("get")).collect(),
    )
}

/// Reads for `d`, asserting every one succeeds.
fn read_for(c: &mut RawConn, d: Duration) -> usize {
    let end = Instant::now() + d;
    let mut n = 0;
    while Instant::now() < end {
        assert_eq!(c.cmd(&["GET", "k"]), b"$1\r\nv\r\n");
        n += 1;
    }
    n
}

#[test]
fn reads_go_to_the_nearest_and_move_when_it_slows_down() {
    let w = world(60, &[2, 20, 40], &[]);
    let mut c = RawConn::connect(w.nearby.port);
    assert_eq!(c.cmd(&["SET", "k", "v"]), b"+OK\r\n");
    w.cluster.wait_replicated();
    // Let a few probes measure every upstream.
    read_for(&mut c, Duration::from_millis(1200));
    w.cluster.reset_stats();

    for _ in 0..1000 {
        assert_eq!(c.cmd(&["GET", "k"]), b"$1\r\nv\r\n");
    }
    let (primary, replicas) = gets_per_server(&w);
    assert!(
        replicas[0] >= 970,
        "only {} of 1000 reads on the 2 ms replica (others: {replicas:?}, primary {primary})",
        replicas[0]
    );

    // The nearest slows to 80 ms: reads move to the 20 ms one.
    w.relays[1].set_rtt(Duration::from_millis(80));
    read_for(&mut c, Duration::from_millis(1000)); // a few probe intervals
    w.cluster.reset_stats();
    for _ in 0..100 {
        assert_eq!(c.cmd(&["GET", "k"]), b"$1\r\nv\r\n");
    }
    let (primary, replicas) = gets_per_server(&w);
    assert!(
        replicas[1] >= 97,
        "reads did not move to the 20 ms replica: replicas {replicas:?}, primary {primary}"
    );
    // One log line says so, and why.
    let log = w.nearby.log();
    assert!(
        log.contains("reads now go to r2 replica")
            && log.contains("was r1")
            && log.contains("r2 is nearer"),
        "no routing-change line in:\n{log}"
    );

    // It recovers: reads come back.
    w.relays[1].set_rtt(Duration::from_millis(2));
    read_for(&mut c, Duration::from_millis(3000));
    w.cluster.reset_stats();
    for _ in 0..100 {
        assert_eq!(c.cmd(&["GET", "k"]), b"$1\r\nv\r\n");
    }
    let (_, replicas) = gets_per_server(&w);
    assert!(replicas[0] >= 97, "reads did not come back: {replicas:?}");
}

#[test]
fn killing_the_chosen_replica_mid_loop_costs_no_errors() {
    let mut w = world(60, &[2, 20], &["--connect-timeout-ms", "300"]);
    let mut c = RawConn::connect(w.nearby.port);
    assert_eq!(c.cmd(&["SET", "k", "v"]), b"+OK\r\n");
    w.cluster.wait_replicated();
    read_for(&mut c, Duration::from_millis(1000));
    w.cluster.reset_stats();
    read_for(&mut c, Duration::from_millis(200));
    let (_, before) = gets_per_server(&w);
    assert!(before[0] > 0 && before[1] == 0, "{before:?}");

    let mut chosen = w.cluster.replicas.remove(0);
    w.nearby
        .expect_log("WARN", "upstream marked down upstream=replica in r1")
        .expect_log("WARN", "upstream is down upstream=replica in r1");
    chosen.kill();
    // Every read in the loop succeeds (read_for asserts each reply).
    let n = read_for(&mut c, Duration::from_millis(1500));
    assert!(n > 20, "only {n} reads in 1.5 s");
    assert!(
        w.cluster.replicas[0].calls("get") > 0,
        "reads did not move on"
    );
    drop(chosen);
}

#[test]
fn the_primary_serves_reads_when_it_is_the_nearest() {
    let w = world(2, &[40], &[]);
    let mut c = RawConn::connect(w.nearby.port);
    assert_eq!(c.cmd(&["SET", "k", "v"]), b"+OK\r\n");
    w.cluster.wait_replicated();
    read_for(&mut c, Duration::from_millis(800));
    w.cluster.reset_stats();
    for _ in 0..200 {
        assert_eq!(c.cmd(&["GET", "k"]), b"$1\r\nv\r\n");
    }
    let (primary, replicas) = gets_per_server(&w);
    assert!(primary >= 194, "primary {primary}, replicas {replicas:?}");
}
