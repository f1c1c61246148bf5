//! Smoke tests for the integration harness itself (`tests/it/common`), against
//! real `redis-server` processes only: the sidecar is not involved here.

use std::time::Duration;

use crate::common::{Cluster, RawConn, RedisServer, frame_len, free_port, resp};

#[test]
fn free_ports_are_distinct_and_bindable() {
    let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
    let mut sorted = ports.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ports.len(), "duplicate ports: {ports:?}");
    for p in ports {
        std::net::TcpListener::bind(("127.0.0.1", p)).expect("port should be free");
    }
}

#[test]
fn cluster_replicates_and_counts_commands() {
    let cluster = Cluster::start(2);
    assert_eq!(cluster.replicas.len(), 2);
    assert_eq!(
        cluster.primary.info("replication")["role"],
        "master",
        "primary role"
    );
    for r in &cluster.replicas {
        let info = r.info("replication");
        assert_eq!(info["role"], "slave");
        assert_eq!(info["master_link_status"], "up");
        assert_eq!(info["master_port"], cluster.primary.port.to_string());
    }

    cluster.reset_stats();
    assert_eq!(cluster.primary.cli(&["SET", "greeting", "hello"]), "OK");
    assert_eq!(cluster.primary.cli(&["SET", "answer", "42"]), "OK");
    assert_eq!(cluster.primary.cli(&["SET", "greeting", "hola"]), "OK");
    cluster.wait_replicated();

    for r in &cluster.replicas {
        assert_eq!(r.cli(&["GET", "greeting"]), "hola");
        assert_eq!(r.cli(&["GET", "answer"]), "42");
    }
    let stats = cluster.primary.commandstats();
    assert_eq!(
        stats.get("set"),
        Some(&3),
        "primary commandstats: {stats:?}"
    );
    assert_eq!(cluster.primary.calls("get"), 0);
    for r in &cluster.replicas {
        assert_eq!(r.calls("get"), 2, "replica {} stats", r.port);
        // Replicated writes are applied, not called by clients, yet Redis
        // counts them too; they must be exactly the three SETs.
        assert_eq!(r.calls("set"), 3, "replica {} stats", r.port);
    }

    // Subcommands are reported as "container|sub".
    cluster.primary.reset_stats();
    cluster.primary.cli(&["CONFIG", "GET", "maxmemory"]);
    let stats = cluster.primary.commandstats();
    assert_eq!(stats.get("config|get"), Some(&1), "{stats:?}");
    assert_eq!(stats.get("set"), None, "reset should clear: {stats:?}");

    // Replicas refuse writes.
    let err = cluster.replicas[0].cli(&["SET", "x", "1"]);
    assert!(err.starts_with("READONLY"), "{err}");
}

#[test]
fn raw_conn_reads_exact_replies() {
    let server = RedisServer::start();
    let mut c = RawConn::connect(server.port);
    c.send(b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(c.read_reply(), b"+PONG\r\n");

    // Three pipelined commands in one write, read back one reply at a time.
    let mut pipeline = resp(&["SET", "k", "v"]);
    pipeline.extend_from_slice(&resp(&["GET", "k"]));
    pipeline.extend_from_slice(&resp(&["INCR", "k"]));
    c.send(&pipeline);
    let replies = c.read_n_replies(3);
    assert_eq!(replies[0], b"+OK\r\n");
    assert_eq!(replies[1], b"$1\r\nv\r\n");
    assert_eq!(
        replies[2],
        b"-ERR value is not an integer or out of range\r\n"
    );

    // Aggregates and RESP3.
    c.send(b"*5\r\n$5\r\nRPUSH\r\n$1\r\nl\r\n$1\r\na\r\n$0\r\n\r\n$1\r\nc\r\n");
    assert_eq!(c.read_reply(), b":3\r\n");
    assert_eq!(
        c.cmd(&["LRANGE", "l", "0", "-1"]),
        b"*3\r\n$1\r\na\r\n$0\r\n\r\n$1\r\nc\r\n"
    );
    let hello = c.cmd(&["HELLO", "3"]);
    assert!(
        hello.starts_with(b"%"),
        "{:?}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(c.cmd(&["GET", "missing"]), b"_\r\n");
    c.send(b"PING\r\n"); // inline
    assert_eq!(c.read_reply(), b"+PONG\r\n");

    // QUIT: Redis answers, then closes.
    c.send_cmd(&["QUIT"]);
    assert_eq!(c.read_reply(), b"+OK\r\n");
    assert!(c.is_closed());
}

#[test]
fn raw_conn_notices_open_and_closed_connections() {
    let mut server = RedisServer::start();
    let mut c = RawConn::connect(server.port);
    assert!(!c.is_closed(), "an idle connection is open");
    assert_eq!(c.cmd(&["PING"]), b"+PONG\r\n", "still usable afterwards");

    let mut c2 = RawConn::connect(server.port);
    c2.send_cmd(&["CLIENT", "SETNAME", "doomed"]);
    assert_eq!(c2.read_reply(), b"+OK\r\n");
    assert_eq!(
        server.cli(&["CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal"]),
        "2"
    );
    assert!(c2.is_closed());
    assert!(c2.read_until_closed().is_empty());

    let pid = server.pid();
    server.kill();
    assert!(c.is_closed());
    // The process is gone (reaped).
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn servers_die_when_dropped_even_on_panic() {
    let pid = std::panic::catch_unwind(|| {
        let server = RedisServer::start();
        let pid = server.pid();
        std::panic::panic_any(pid);
    })
    .expect_err("should panic")
    .downcast::<u32>()
    .map(|b| *b)
    .expect("pid payload");
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "redis-server {pid} survived its handle"
    );
}

#[test]
fn start_with_passes_extra_args() {
    let server = RedisServer::start_with(&["--maxmemory", "12mb"]);
    assert_eq!(
        server.cli(&["CONFIG", "GET", "maxmemory"]),
        "maxmemory\n12582912"
    );
    assert!(server.dir.path().join("redis.log").exists());
    assert!(server.url().ends_with(&format!(":{}", server.port)));
    assert_eq!(server.addr().port(), server.port);
}

#[test]
fn frame_len_handles_resp2_and_resp3() {
    assert_eq!(frame_len(b"+OK\r\n"), Some(Ok(5)));
    assert_eq!(frame_len(b"+OK\r"), None);
    assert_eq!(frame_len(b"$3\r\nfoo\r\n+x"), Some(Ok(9)));
    assert_eq!(frame_len(b"$3\r\nfo"), None);
    assert_eq!(frame_len(b"$-1\r\n"), Some(Ok(5)));
    assert_eq!(frame_len(b"*-1\r\n"), Some(Ok(5)));
    assert_eq!(frame_len(b"*2\r\n:1\r\n*1\r\n$1\r\na\r\n"), Some(Ok(19)));
    assert_eq!(frame_len(b"*2\r\n:1\r\n*1\r\n$1\r\n"), None);
    assert_eq!(frame_len(b"%1\r\n+k\r\n+v\r\n"), Some(Ok(12)));
    assert_eq!(frame_len(b"|1\r\n+k\r\n+v\r\n:5\r\n"), Some(Ok(16)));
    assert_eq!(frame_len(b"_\r\n"), Some(Ok(3)));
    assert_eq!(frame_len(b">2\r\n+a\r\n+b\r\n"), Some(Ok(12)));
    assert_eq!(frame_len(b"=8\r\ntxt:abcd\r\n"), Some(Ok(14)));
    assert!(matches!(frame_len(b"?\r\n"), Some(Err(_))));
    // Deep nesting does not recurse.
    let mut deep = b"*1\r\n".repeat(100_000);
    deep.extend_from_slice(b":1\r\n");
    assert_eq!(frame_len(&deep), Some(Ok(deep.len())));
}
