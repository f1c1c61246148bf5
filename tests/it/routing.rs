//! Where commands run, measured on the servers themselves with
//! `INFO commandstats`, and pipelining order.

use crate::common::{Cluster, Nearby, RawConn, resp};

fn rejected(server: &crate::common::RedisServer, cmd: &str) -> u64 {
    server
        .info("commandstats")
        .get(&format!("cmdstat_{cmd}"))
        .and_then(|v| {
            v.split(',')
                .find_map(|f| f.strip_prefix("rejected_calls="))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn writes_run_only_on_the_primary_and_reads_on_replicas() {
    let cluster = Cluster::start(2);
    let nearby = Nearby::start_for(&cluster, &[]);
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "warm", "1"]), b"+OK\r\n");
    cluster.wait_replicated();
    cluster.reset_stats();

    const N: usize = 300;
    const M: usize = 120;
    for i in 0..M {
        assert_eq!(c.cmd(&["SET", &format!("k{i}"), "v"]), b"+OK\r\n");
    }
    cluster.wait_replicated();
    for i in 0..N {
        assert_eq!(c.cmd(&["GET", &format!("k{}", i % M)]), b"$1\r\nv\r\n");
    }
    // Other readonly families go to replicas too.
    for args in [
        vec!["HGET", "h", "f"],
        vec!["LRANGE", "l", "0", "-1"],
        vec!["ZSCORE", "z", "m"],
        vec!["EXISTS", "k1"],
        vec!["XREAD", "STREAMS", "s", "0"],
        vec!["EVAL_RO", "return 1", "0"],
    ] {
        c.cmd(&args);
    }

    assert_eq!(cluster.primary.calls("set"), M as u64);
    assert_eq!(cluster.primary.calls("get"), 0);
    for name in ["hget", "lrange", "zscore", "exists", "xread", "eval_ro"] {
        assert_eq!(cluster.primary.calls(name), 0, "{name} ran on the primary");
        let on_replicas: u64 = cluster.replicas.iter().map(|r| r.calls(name)).sum();
        assert_eq!(on_replicas, 1, "{name} on replicas");
    }
    let replica_gets: u64 = cluster.replicas.iter().map(|r| r.calls("get")).sum();
    assert_eq!(replica_gets, N as u64);
    for r in &cluster.replicas {
        // Replicas ran the replicated SETs, and never refused one from us.
        assert_eq!(r.calls("set"), M as u64);
        assert_eq!(rejected(r, "set"), 0);
    }
}

#[test]
fn read_from_primary_sends_reads_to_the_primary() {
    let cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &["--read-from", "primary"]);
    cluster.reset_stats();
    let mut c = RawConn::connect(nearby.port);
    for _ in 0..20 {
        c.cmd(&["GET", "x"]);
    }
    assert_eq!(cluster.primary.calls("get"), 20);
    assert_eq!(cluster.replicas[0].calls("get"), 0);
}

#[test]
fn select_and_resp3_keep_read_routing() {
    let cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &[]);
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SELECT", "3"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["SET", "in3", "three"]), b"+OK\r\n");
    cluster.wait_replicated();
    cluster.reset_stats();
    assert_eq!(c.cmd(&["GET", "in3"]), b"$5\r\nthree\r\n");
    assert_eq!(cluster.replicas[0].calls("get"), 1);
    assert_eq!(cluster.primary.calls("get"), 0);
    // The key is in db 3 only (this direct GET runs on the primary's db 0).
    assert_eq!(cluster.primary.query(&["GET", "in3"]), b"$-1\r\n");
    cluster.reset_stats();

    let hello = c.cmd(&["HELLO", "3"]);
    assert!(hello.starts_with(b"%7\r\n"));
    assert_eq!(c.cmd(&["GET", "in3"]), b"$5\r\nthree\r\n");
    assert_eq!(
        c.cmd(&["GET", "nope"]),
        b"_\r\n",
        "RESP3 null from a RESP3 pipe"
    );
    assert_eq!(c.cmd(&["HSET", "h", "a", "1"]), b":1\r\n");
    cluster.wait_replicated();
    assert_eq!(c.cmd(&["HGETALL", "h"]), b"%1\r\n$1\r\na\r\n$1\r\n1\r\n");
    assert_eq!(cluster.replicas[0].calls("get"), 2);
    assert_eq!(cluster.replicas[0].calls("hgetall"), 1);
    assert_eq!(cluster.primary.calls("get"), 0);

    // A client starting on db 0 in RESP2 is not affected.
    let mut other = RawConn::connect(nearby.port);
    assert_eq!(other.cmd(&["GET", "in3"]), b"$-1\r\n");
}

#[test]
fn ten_thousand_pipelined_commands_come_back_in_order() {
    let cluster = Cluster::start(2);
    let nearby = Nearby::start_for(&cluster, &[]);
    let mut c = RawConn::connect(nearby.port);
    // Keys read below exist before the pipeline (replicas are eventually
    // consistent; read-your-writes is its own feature).
    for i in 0..100 {
        c.cmd(&["SET", &format!("pre{i}"), &format!("value-{i}")]);
    }
    cluster.wait_replicated();

    let mut batch = Vec::new();
    let mut expected: Vec<Vec<u8>> = Vec::new();
    for i in 0..10_000 {
        match i % 3 {
            0 => {
                batch.extend(resp(&["GET", &format!("pre{}", i % 100)]));
                let v = format!("value-{}", i % 100);
                expected.push(format!("${}\r\n{v}\r\n", v.len()).into_bytes());
            }
            1 => {
                batch.extend(resp(&["SET", &format!("new{i}"), "x"]));
                expected.push(b"+OK\r\n".to_vec());
            }
            _ => {
                let s = format!("echo-{i}");
                batch.extend(resp(&["ECHO", &s]));
                expected.push(format!("${}\r\n{s}\r\n", s.len()).into_bytes());
            }
        }
    }
    c.send(&batch);
    let got = c.read_n_replies(expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            String::from_utf8_lossy(g),
            String::from_utf8_lossy(e),
            "reply {i} out of order"
        );
    }
    let replica_gets: u64 = cluster.replicas.iter().map(|r| r.calls("get")).sum();
    assert_eq!(replica_gets, 3334);
    assert_eq!(cluster.primary.calls("set"), 100 + 3333);
}

#[test]
fn large_values_and_many_clients_interleave_correctly() {
    let cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &[]);
    let big = "x".repeat(3 * 1024 * 1024);
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "big", &big]), b"+OK\r\n");
    cluster.wait_replicated();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let port = nearby.port;
            let big_len = big.len();
            std::thread::spawn(move || {
                let mut c = RawConn::connect(port);
                for i in 0..50 {
                    let key = format!("t{t}-{i}");
                    assert_eq!(c.cmd(&["SET", &key, &key]), b"+OK\r\n");
                    assert_eq!(
                        c.cmd(&["ECHO", &key]),
                        format!("${}\r\n{key}\r\n", key.len()).into_bytes()
                    );
                    if i % 10 == 0 {
                        let r = c.cmd(&["GET", "big"]);
                        let head = format!("${big_len}\r\n");
                        assert!(r.starts_with(head.as_bytes()));
                        assert_eq!(r.len(), head.len() + big_len + 2);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn evalsha_ro_of_a_script_loaded_on_the_primary_is_answered() {
    // SCRIPT LOAD is not replicated: the replica answers NOSCRIPT, and the
    // sidecar asks the primary instead of passing that through.
    let cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &[]);
    let mut c = RawConn::connect(nearby.port);
    let sha = c.cmd(&["SCRIPT", "LOAD", "return 'from-script'"]);
    let sha = String::from_utf8(sha).unwrap();
    let sha = sha.lines().nth(1).unwrap().to_string();
    assert_eq!(sha.len(), 40);
    cluster.reset_stats();
    assert_eq!(c.cmd(&["EVALSHA_RO", &sha, "0"]), b"$11\r\nfrom-script\r\n");
    // It was tried on the replica first, then served by the primary.
    assert!(
        cluster.replicas[0]
            .info("commandstats")
            .contains_key("cmdstat_evalsha_ro")
    );
    assert_eq!(cluster.primary.calls("evalsha_ro"), 1);
    // A truly unknown script is NOSCRIPT from the primary too.
    let r = c.cmd(&["EVALSHA_RO", &"0".repeat(40), "0"]);
    assert!(
        r.starts_with(b"-NOSCRIPT"),
        "{:?}",
        String::from_utf8_lossy(&r)
    );
}
