//! An app cannot tell nearby from Redis: one slow command delays only its
//! own client, nothing alive is failed by a timeout, a client's connection
//! identity is its own, PING tells the truth, deep replies pass, pub/sub
//! resubscribes. Real redis-server behind the real binary.

use std::thread;
use std::time::{Duration, Instant};

use crate::common::{Nearby, RawConn, RedisServer, resp};

fn sidecar(redis: &RedisServer, extra: &[&str]) -> Nearby {
    let url = redis.url();
    let mut args = vec!["--primary", &url, "--primary-region", "p"];
    args.extend_from_slice(extra);
    Nearby::start(&args)
}

/// `n` fresh clients, each doing `per` GETs; every latency, sorted.
fn fresh_clients_get(port: u16, n: usize, per: usize) -> Vec<Duration> {
    let handles: Vec<_> = (0..n)
        .map(|i| {
            thread::spawn(move || {
                let mut c = RawConn::connect(port);
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    let r = c.cmd(&["GET", &format!("k{i}")]);
                    lat.push(t.elapsed());
                    assert!(r.starts_with(b"$"), "{:?}", String::from_utf8_lossy(&r));
                }
                lat
            })
        })
        .collect();
    let mut all: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort();
    all
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() * 99 / 100]
}

#[test]
fn a_paused_write_holds_only_its_own_client() {
    let redis = RedisServer::start();
    let nearby = sidecar(&redis, &[]);
    let mut admin = RawConn::connect(nearby.port);
    // A reader already using the shared pipe.
    let mut reader = RawConn::connect(nearby.port);
    assert_eq!(reader.cmd(&["GET", "k"]), b"$-1\r\n");
    assert_eq!(admin.cmd(&["CLIENT", "PAUSE", "2000", "WRITE"]), b"+OK\r\n");
    // Redis holds the write until the pause ends.
    let mut writer = RawConn::connect(nearby.port);
    let sent = Instant::now();
    writer.send_cmd(&["SET", "k", "v"]);
    // Right behind it, the reader is answered at once (the write waits on
    // its client's own connection, not at the head of the shared pipe).
    let t = Instant::now();
    assert_eq!(reader.cmd(&["GET", "k"]), b"$-1\r\n");
    assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
    thread::sleep(Duration::from_millis(200));
    // Reads from other clients are not queued behind it.
    let lat = fresh_clients_get(nearby.port, 20, 50);
    assert!(p99(&lat) < Duration::from_millis(50), "p99 {:?}", p99(&lat));
    assert!(
        sent.elapsed() < Duration::from_millis(1900),
        "the reads outlasted the pause"
    );
    // The write itself is answered when Redis lets it run.
    assert_eq!(writer.read_reply(), b"+OK\r\n");
    assert!(
        sent.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        sent.elapsed()
    );
}

#[test]
fn a_busy_script_delays_only_its_client_and_script_kill_reaches_redis() {
    let redis = RedisServer::start();
    let nearby = sidecar(&redis, &["--request-timeout-ms", "1000"]);
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SELECT", "9"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["SET", "x", "1"]), b"+OK\r\n");
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "busy-reply-threshold", "100"]),
        b"+OK\r\n"
    );
    let mut script = RawConn::connect(nearby.port);
    assert_eq!(script.cmd(&["SELECT", "9"]), b"+OK\r\n");
    script.send_cmd(&["EVAL", "while true do end", "0"]);
    thread::sleep(Duration::from_millis(400));
    // Others get Redis's own answer at once, on the same db: BUSY.
    let mut other = RawConn::connect(nearby.port);
    assert_eq!(other.cmd(&["SELECT", "9"]), b"+OK\r\n");
    let t = Instant::now();
    let busy = String::from_utf8(other.cmd(&["GET", "x"])).unwrap();
    assert!(busy.starts_with("-BUSY "), "{busy:?}");
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    // PING tells the truth too.
    let ping = String::from_utf8(other.cmd(&["PING"])).unwrap();
    assert!(ping.starts_with("-BUSY "), "{ping:?}");
    // Well past --request-timeout-ms: the script's client is not failed by
    // nearby, and SCRIPT KILL reaches Redis.
    thread::sleep(Duration::from_millis(1200));
    assert_eq!(other.cmd(&["SCRIPT", "KILL"]), b"+OK\r\n");
    let killed = String::from_utf8(script.read_reply()).unwrap();
    assert!(
        killed.starts_with("-ERR Script killed by user with SCRIPT KILL..."),
        "{killed:?}"
    );
    assert_eq!(other.cmd(&["GET", "x"]), b"$1\r\n1\r\n");
}

#[test]
fn a_long_command_is_never_failed_by_the_request_timeout() {
    let redis = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let nearby = sidecar(&redis, &["--request-timeout-ms", "500"]);
    // The sidecar reads COMMAND from the primary just after it starts; when
    // that read is still on its way, Redis's sleep times it out, and the
    // built-in table serves until the next control connection.
    nearby.expect_log("WARN", "COMMAND failed; using the built-in table");
    let mut sleeper = RawConn::connect(nearby.port);
    let mut other = RawConn::connect(nearby.port);
    let t = Instant::now();
    sleeper.send_cmd(&["DEBUG", "SLEEP", "1.5"]);
    thread::sleep(Duration::from_millis(100));
    // Redis is asleep: this waits for it, as it would on Redis.
    assert_eq!(other.cmd(&["SET", "k", "v"]), b"+OK\r\n");
    assert_eq!(sleeper.read_reply(), b"+OK\r\n");
    assert!(
        t.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn connection_identity_is_the_clients_own() {
    let redis = RedisServer::start();
    let nearby = sidecar(&redis, &[]);
    let mut a = RawConn::connect(nearby.port);
    assert_eq!(a.cmd(&["CLIENT", "SETNAME", "alice"]), b"+OK\r\n");
    let id = String::from_utf8(a.cmd(&["CLIENT", "ID"])).unwrap();
    let id = id.trim_start_matches(':').trim_end().to_string();
    assert!(id.parse::<u64>().is_ok(), "{id:?}");
    // What Redis knows about that id is alice's connection, with her name.
    let mut b = RawConn::connect(nearby.port);
    let list = crate::common::bulk_text(&b.cmd(&["CLIENT", "LIST", "ID", &id]));
    assert!(
        list.contains(&format!("id={id} ")) && list.contains(" name=alice "),
        "{list}"
    );
    let info = crate::common::bulk_text(&a.cmd(&["CLIENT", "INFO"]));
    assert!(info.contains(&format!("id={id} ")), "{info}");
    // Another client unblocks her by that id.
    a.send_cmd(&["BLPOP", "nothing", "0"]);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(b.cmd(&["CLIENT", "UNBLOCK", &id]), b":1\r\n");
    assert_eq!(a.read_reply(), b"*-1\r\n");
    // And kills her by it: her connection closes, b's does not.
    assert_eq!(b.cmd(&["CLIENT", "KILL", "ID", &id]), b":1\r\n");
    assert!(a.is_closed());
    assert_eq!(b.cmd(&["GET", "k"]), b"$-1\r\n");
}

#[test]
fn setname_alone_keeps_replica_reads() {
    let cluster = crate::common::Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &[]);
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "app"]), b"+OK\r\n");
    cluster.reset_stats();
    for _ in 0..20 {
        assert_eq!(c.cmd(&["GET", "k"]), b"$-1\r\n");
    }
    assert_eq!(cluster.replicas[0].calls("get"), 20);
    assert_eq!(cluster.primary.calls("get"), 0);
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), b"$3\r\napp\r\n");
    // Redis knows the name too: another client sees it, and a slow command
    // of the named client is logged under it.
    let mut other = RawConn::connect(nearby.port);
    let list = crate::common::bulk_text(&other.cmd(&["CLIENT", "LIST"]));
    assert!(list.contains(" name=app "), "{list}");
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
        b"+OK\r\n"
    );
    assert_eq!(c.cmd(&["SET", "named", "1"]), b"+OK\r\n");
    let log =
        String::from_utf8_lossy(&cluster.primary.query(&["SLOWLOG", "GET", "2"])).into_owned();
    assert!(
        log.contains("named") && log.contains("\r\napp\r\n"),
        "{log}"
    );
}

#[test]
fn replies_of_any_depth_pass_as_redis_sends_them() {
    let redis = RedisServer::start();
    let nearby = sidecar(&redis, &[]);
    let script = "local t = {} local c = t for i = 1, 300 do c[1] = {} c = c[1] end return t";
    let direct = redis.query(&["EVAL", script, "0"]);
    assert!(
        direct.starts_with(b"*1\r\n*1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&direct)
    );
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["EVAL", script, "0"]), direct);
}

#[test]
fn subscribe_unsubscribe_subscribe_back_to_back() {
    let redis = RedisServer::start();
    let nearby = sidecar(&redis, &[]);
    for proto in ["2", "3"] {
        for (sub, unsub) in [("SUBSCRIBE", "UNSUBSCRIBE"), ("SSUBSCRIBE", "SUNSUBSCRIBE")] {
            let via = |port: u16| {
                let mut c = RawConn::connect(port);
                let _ = c.cmd(&["HELLO", proto]);
                c.send(
                    &[
                        resp(&[sub, "foo"]),
                        resp(&[unsub, "foo"]),
                        resp(&[sub, "foo"]),
                    ]
                    .concat(),
                );
                let frames = c.read_n_replies(3);
                // Still subscribed: a message arrives.
                let mut p = RawConn::connect(port);
                let publish = if sub == "SSUBSCRIBE" {
                    "SPUBLISH"
                } else {
                    "PUBLISH"
                };
                assert_eq!(p.cmd(&[publish, "foo", "hi"]), b":1\r\n");
                (frames, c.read_reply())
            };
            let through = via(nearby.port);
            // The sidecar's subscriber is gone before the direct run counts.
            let numsub = if sub == "SSUBSCRIBE" {
                "SHARDNUMSUB"
            } else {
                "NUMSUB"
            };
            assert!(crate::common::wait_until(Duration::from_secs(5), || {
                redis.query(&["PUBSUB", numsub, "foo"]).ends_with(b":0\r\n")
            }));
            assert_eq!(through, via(redis.port), "{sub} RESP{proto}");
        }
    }
}

#[test]
fn sync_streams_the_primarys_replication_through_nearby() {
    use std::io::Read;
    let redis = RedisServer::start();
    let nearby = sidecar(&redis, &[]);
    let mut sync = RawConn::connect(nearby.port);
    // As Redis's own test suite attaches to the stream: inline SYNC.
    sync.send(b"SYNC\r\n");
    let mut stream = sync.stream().try_clone().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    // Newlines (keepalives) may come first; then the RDB as one bulk.
    let payload_end = loop {
        let n = stream.read(&mut chunk).expect("the stream");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
        let start = got.iter().position(|&b| b != b'\n').unwrap_or(got.len());
        if let Some(eol) = got[start..].windows(2).position(|w| w == b"\r\n") {
            let head = std::str::from_utf8(&got[start..start + eol]).unwrap();
            assert!(head.starts_with('$'), "{head:?}");
            let len: usize = head[1..].parse().unwrap();
            let end = start + eol + 2 + len;
            if got.len() >= end {
                break end;
            }
        }
    };
    got.drain(..payload_end);
    // A write by another client arrives on the stream, as Redis sends it.
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "streamed", "yes"]), b"+OK\r\n");
    let want = b"*3\r\n$3\r\nSET\r\n$8\r\nstreamed\r\n$3\r\nyes\r\n";
    let deadline = Instant::now() + Duration::from_secs(5);
    while !got.windows(want.len()).any(|w| w == want) {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        let n = stream.read(&mut chunk).expect("the stream");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    // Redis counts the tunnel as its replica.
    let info = redis.cli(&["INFO", "replication"]);
    assert!(info.contains("connected_slaves:1"), "{info}");
}

#[test]
fn a_pipe_killed_as_soon_as_it_opened_serves_the_next_request() {
    let redis = RedisServer::start();
    let nearby = sidecar(&redis, &[]);
    let mut a = RawConn::connect(nearby.port);
    let mut b = RawConn::connect(nearby.port);
    // A's GET opens the shared pipe for db 3; B kills every normal
    // connection a moment later (Redis's own suite does this in CLIENT
    // KILL SKIPME).
    assert_eq!(a.cmd(&["SELECT", "3"]), b"+OK\r\n");
    assert_eq!(a.cmd(&["GET", "k"]), b"$-1\r\n");
    let killed = b.cmd(&["CLIENT", "KILL", "TYPE", "normal"]);
    assert!(
        killed.starts_with(b":"),
        "{:?}",
        String::from_utf8_lossy(&killed)
    );
    assert_ne!(killed, b":0\r\n");
    // The pipe reconnects at once: A is answered, as Redis answers a new
    // connection, instead of a "connection lost" for a backoff.
    for _ in 0..3 {
        assert_eq!(a.cmd(&["GET", "k"]), b"$-1\r\n");
    }
}
