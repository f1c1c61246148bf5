//! Bad client input against a real cluster: every malformed request gets
//! exactly the `-ERR Protocol error: ...` line redis-server 7.0 sends for the
//! same bytes, then a closed connection; other clients and later connections
//! are unaffected, memory stays bounded, and the process never panics.

use std::io::Write;
use std::time::Duration;

use crate::common::{Cluster, Nearby, RawConn, resp, resp_bytes, wait_until};

/// A bad request and the exact error line redis-server 7.0 replies with.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expected: &'static [u8],
}

fn cases() -> Vec<Case> {
    let too_long_inline = vec![b'a'; 70_000];
    let mut long_count = b"*".to_vec();
    long_count.extend(std::iter::repeat_n(b'1', 70_000));
    vec![
        Case {
            name: "integer where a bulk is expected",
            bytes: b"*2\r\n$3\r\nGET\r\n:1\r\n".to_vec(),
            expected: b"-ERR Protocol error: expected '$', got ':'\r\n",
        },
        Case {
            name: "nested array in a request",
            bytes: b"*1\r\n*1\r\n$4\r\nPING\r\n".to_vec(),
            expected: b"-ERR Protocol error: expected '$', got '*'\r\n",
        },
        Case {
            name: "bulk length above 512 MB",
            bytes: b"*1\r\n$536870913\r\n".to_vec(),
            expected: b"-ERR Protocol error: invalid bulk length\r\n",
        },
        Case {
            name: "negative bulk length",
            bytes: b"*1\r\n$-1\r\n".to_vec(),
            expected: b"-ERR Protocol error: invalid bulk length\r\n",
        },
        Case {
            name: "non-numeric bulk length",
            bytes: b"*1\r\n$abc\r\n".to_vec(),
            expected: b"-ERR Protocol error: invalid bulk length\r\n",
        },
        Case {
            name: "multibulk count above INT_MAX",
            bytes: b"*2147483648\r\n".to_vec(),
            expected: b"-ERR Protocol error: invalid multibulk length\r\n",
        },
        Case {
            name: "non-numeric multibulk count",
            bytes: b"*abc\r\n".to_vec(),
            expected: b"-ERR Protocol error: invalid multibulk length\r\n",
        },
        Case {
            name: "inline request over 64 KiB without newline",
            bytes: too_long_inline,
            expected: b"-ERR Protocol error: too big inline request\r\n",
        },
        Case {
            name: "unbalanced quotes inline",
            bytes: b"SET \"a b\r\n".to_vec(),
            expected: b"-ERR Protocol error: unbalanced quotes in request\r\n",
        },
        Case {
            name: "closing quote not followed by space",
            bytes: b"SET \"a\"b c\r\n".to_vec(),
            expected: b"-ERR Protocol error: unbalanced quotes in request\r\n",
        },
        Case {
            name: "count line over 64 KiB",
            bytes: long_count,
            expected: b"-ERR Protocol error: too big mbulk count string\r\n",
        },
    ]
}

fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.len() > 120 {
        format!("{}... ({} bytes)", &s[..120], b.len())
    } else {
        s.into_owned()
    }
}

/// Sends `bytes` on a fresh connection to `port` and returns the first reply
/// line, asserting that nothing follows it and that the peer closes.
fn error_then_close(port: u16, who: &str, name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut c = RawConn::connect(port);
    c.send(bytes);
    let reply = c.read_reply();
    assert!(
        c.is_closed(),
        "{who}, {name}: connection not closed after {:?}",
        show(&reply)
    );
    let rest = c.read_until_closed();
    assert!(
        rest.is_empty(),
        "{who}, {name}: bytes after the error: {:?}",
        show(&rest)
    );
    reply
}

fn ping(c: &mut RawConn) -> Vec<u8> {
    c.cmd(&["PING"])
}

/// A new connection answers PING and does a SET/GET round trip.
fn assert_serving(cluster: &Cluster, nearby: &Nearby, key: &str) {
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(ping(&mut c), b"+PONG\r\n", "fresh connection PING");
    assert_eq!(c.cmd(&["SET", key, "v-after"]), b"+OK\r\n");
    // The GET may be routed to a replica: let it catch up first.
    cluster.wait_replicated();
    assert_eq!(c.cmd(&["GET", key]), b"$7\r\nv-after\r\n");
}

fn assert_healthy_process(nearby: &mut Nearby) {
    assert!(nearby.is_running(), "nearby exited:\n{}", nearby.log());
    let log = nearby.log();
    assert!(!log.contains("panicked"), "nearby panicked:\n{log}");
}

/// Resident set size of a process, in KiB, from /proc/<pid>/status.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

#[test]
fn protocol_errors_match_redis_and_close_only_that_client() {
    let cluster = Cluster::start(2);
    let mut nearby = Nearby::start_for(&cluster, &[]);

    for (i, case) in cases().into_iter().enumerate() {
        let name = case.name;
        // Connected (and used) before the bad input arrives.
        let mut bystander = RawConn::connect(nearby.port);
        assert_eq!(ping(&mut bystander), b"+PONG\r\n", "{name}: bystander");

        let from_redis = error_then_close(cluster.primary.port, "redis-server", name, &case.bytes);
        assert_eq!(
            show(&from_redis),
            show(case.expected),
            "{name}: redis-server itself replies differently (test expectation wrong)"
        );
        let from_nearby = error_then_close(nearby.port, "nearby", name, &case.bytes);
        assert_eq!(
            show(&from_nearby),
            show(&from_redis),
            "{name}: nearby's error differs from redis-server's"
        );

        assert_eq!(
            ping(&mut bystander),
            b"+PONG\r\n",
            "{name}: bystander disturbed"
        );
        assert_eq!(
            bystander.cmd(&["ECHO", "still here"]),
            b"$10\r\nstill here\r\n"
        );
        assert_serving(&cluster, &nearby, &format!("bad-input:{i}"));
    }
    assert_healthy_process(&mut nearby);
}

#[test]
fn inline_commands_work() {
    let cluster = Cluster::start(2);
    let mut nearby = Nearby::start_for(&cluster, &[]);

    let mut c = RawConn::connect(nearby.port);
    c.send(b"PING\r\n");
    assert_eq!(c.read_reply(), b"+PONG\r\n");
    c.send(b"SET inline:k \"a b\"\r\n");
    assert_eq!(c.read_reply(), b"+OK\r\n");
    cluster.wait_replicated();
    assert_eq!(c.cmd(&["GET", "inline:k"]), b"$3\r\na b\r\n");
    // Escapes in double quotes, single quotes, a bare `\n` line end.
    c.send(b"SET inline:e \"x\\ty\\x41\" \n");
    assert_eq!(c.read_reply(), b"+OK\r\n");
    c.send(b"SET inline:s 'it\\'s'\r\n");
    assert_eq!(c.read_reply(), b"+OK\r\n");
    cluster.wait_replicated();
    assert_eq!(c.cmd(&["GET", "inline:e"]), b"$4\r\nx\tyA\r\n");
    assert_eq!(c.cmd(&["GET", "inline:s"]), b"$4\r\nit's\r\n");

    // Empty lines (and whitespace-only ones) are skipped without a reply.
    c.send(b"\r\n\r\n\n   \r\nPING\r\n\r\nECHO hi\r\n");
    assert_eq!(c.read_reply(), b"+PONG\r\n");
    assert_eq!(c.read_reply(), b"$2\r\nhi\r\n");
    // ...and the connection stays open with nothing else pending.
    assert!(!c.is_closed(), "connection closed after empty lines");
    assert_eq!(ping(&mut c), b"+PONG\r\n");

    // Same as redis-server for the same bytes.
    let mut r = RawConn::connect(cluster.primary.port);
    r.send(b"\r\n\r\n\n   \r\nPING\r\n\r\nECHO hi\r\n");
    assert_eq!(r.read_reply(), b"+PONG\r\n");
    assert_eq!(r.read_reply(), b"$2\r\nhi\r\n");

    assert_healthy_process(&mut nearby);
}

#[test]
fn pipelined_requests_before_a_bad_frame_are_answered_first() {
    let cluster = Cluster::start(2);
    let mut nearby = Nearby::start_for(&cluster, &[]);

    let mut bytes = b"PING\r\nPING\r\n".to_vec();
    bytes.extend_from_slice(b"*1\r\n$abc\r\n");
    let expected = b"+PONG\r\n+PONG\r\n-ERR Protocol error: invalid bulk length\r\n";
    for (who, port) in [
        ("redis-server", cluster.primary.port),
        ("nearby", nearby.port),
    ] {
        let mut c = RawConn::connect(port);
        c.send(&bytes);
        let all = c.read_until_closed();
        assert_eq!(show(&all), show(expected), "{who}");
    }

    // A write before the bad frame is executed; the bad frame itself (a SET
    // whose value is malformed) never reaches the primary.
    let mut bytes = resp(&["SET", "pipe:a", "1"]);
    bytes.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$6\r\npipe:b\r\n:2\r\n");
    let mut c = RawConn::connect(nearby.port);
    c.send(&bytes);
    assert_eq!(c.read_reply(), b"+OK\r\n");
    assert_eq!(
        c.read_reply(),
        b"-ERR Protocol error: expected '$', got ':'\r\n"
    );
    assert!(c.is_closed(), "not closed after the protocol error");
    assert_eq!(cluster.primary.query(&["GET", "pipe:a"]), b"$1\r\n1\r\n");
    assert_eq!(cluster.primary.query(&["EXISTS", "pipe:b"]), b":0\r\n");

    // RESP-encoded commands pipelined in the same write as an inline bad line.
    let mut bytes = resp(&["ECHO", "one"]);
    bytes.extend_from_slice(&resp(&["ECHO", "two"]));
    bytes.extend_from_slice(b"ECHO \"unterminated\r\n");
    let mut c = RawConn::connect(nearby.port);
    c.send(&bytes);
    assert_eq!(
        show(&c.read_until_closed()),
        show(b"$3\r\none\r\n$3\r\ntwo\r\n-ERR Protocol error: unbalanced quotes in request\r\n")
    );

    assert_serving(&cluster, &nearby, "pipe:after");
    assert_healthy_process(&mut nearby);
}

#[test]
fn proto_max_bulk_len_is_enforced() {
    let cluster = Cluster::start(2);
    let mut nearby = Nearby::start_for(&cluster, &["--proto-max-bulk-len", "1048576"]);

    // Over the limit: rejected from the header alone, before any body.
    let header = b"*3\r\n$3\r\nSET\r\n$4\r\nbig1\r\n$2000000\r\n";
    let reply = error_then_close(nearby.port, "nearby", "$2000000", header);
    assert_eq!(
        show(&reply),
        show(b"-ERR Protocol error: invalid bulk length\r\n")
    );
    // One byte over, too.
    let reply = error_then_close(
        nearby.port,
        "nearby",
        "$1048577",
        b"*3\r\n$3\r\nSET\r\n$4\r\nbig2\r\n$1048577\r\n",
    );
    assert_eq!(
        show(&reply),
        show(b"-ERR Protocol error: invalid bulk length\r\n")
    );

    // Redis with the same limit says the same.
    assert_eq!(
        cluster
            .primary
            .query(&["CONFIG", "SET", "proto-max-bulk-len", "1048576"]),
        b"+OK\r\n"
    );
    let from_redis = error_then_close(cluster.primary.port, "redis-server", "$2000000", header);
    assert_eq!(
        show(&from_redis),
        show(b"-ERR Protocol error: invalid bulk length\r\n")
    );

    // A 1,000,000-byte value and one of exactly the limit round-trip.
    let mut c = RawConn::connect(nearby.port);
    for (key, len) in [("big:1m", 1_000_000usize), ("big:limit", 1_048_576)] {
        let value: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        c.send(&resp_bytes(&[b"SET", key.as_bytes(), &value]));
        assert_eq!(c.read_reply(), b"+OK\r\n", "SET {key}");
        cluster.wait_replicated();
        let reply = c.cmd(&["GET", key]);
        let mut expected = format!("${len}\r\n").into_bytes();
        expected.extend_from_slice(&value);
        expected.extend_from_slice(b"\r\n");
        assert!(reply == expected, "GET {key}: {}", show(&reply));
    }
    assert_eq!(ping(&mut c), b"+PONG\r\n");

    assert_serving(&cluster, &nearby, "big:after");
    assert_healthy_process(&mut nearby);
}

#[test]
fn huge_declared_counts_do_not_allocate() {
    let cluster = Cluster::start(2);
    let mut nearby = Nearby::start_for(&cluster, &[]);
    let before = rss_kib(nearby.pid());

    // 50 connections each declare a million-argument request (and 50 more the
    // largest count Redis accepts), then send nothing more.
    let mut conns = Vec::new();
    for header in [&b"*1048577\r\n"[..], &b"*2147483647\r\n"[..]] {
        for _ in 0..50 {
            let mut c = RawConn::connect(nearby.port);
            c.send(header);
            conns.push(c);
        }
    }
    // Let the sidecar read and frame every header.
    std::thread::sleep(Duration::from_millis(500));
    let mut probe = RawConn::connect(nearby.port);
    assert_eq!(ping(&mut probe), b"+PONG\r\n");

    let after = rss_kib(nearby.pid());
    assert!(
        after < 100 * 1024,
        "nearby RSS {after} KiB (was {before} KiB) after 100 huge headers"
    );
    // The partial requests are still waiting: no reply, no close (each
    // check waits 2 s, so only the first of each kind is checked).
    for i in [0, 50] {
        assert!(!conns[i].is_closed(), "connection {i} closed");
    }
    drop(conns);

    // Everything is released once those clients go away.
    assert!(
        wait_until(Duration::from_secs(5), || {
            let mut p = RawConn::connect(nearby.port);
            ping(&mut p) == b"+PONG\r\n"
        }),
        "nearby stopped answering"
    );
    assert_serving(&cluster, &nearby, "counts:after");
    assert_healthy_process(&mut nearby);
}

#[test]
fn bad_input_inside_a_transaction_discards_it() {
    let cluster = Cluster::start(2);
    let mut nearby = Nearby::start_for(&cluster, &[]);

    let mut bytes = resp(&["MULTI"]);
    bytes.extend_from_slice(&resp(&["SET", "tx:k", "queued"]));
    bytes.extend_from_slice(b"*2\r\n$4\r\nEXEC\r\n*0\r\n");
    let expected = b"+OK\r\n+QUEUED\r\n-ERR Protocol error: expected '$', got '*'\r\n";
    for (who, port) in [
        ("redis-server", cluster.primary.port),
        ("nearby", nearby.port),
    ] {
        let mut c = RawConn::connect(port);
        c.send(&bytes);
        assert_eq!(show(&c.read_until_closed()), show(expected), "{who}");
    }
    // The queued SET never ran, and does not run later either.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(cluster.primary.query(&["EXISTS", "tx:k"]), b":0\r\n");
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["EXEC"]), b"-ERR EXEC without MULTI\r\n");
    assert_eq!(cluster.primary.query(&["EXISTS", "tx:k"]), b":0\r\n");

    assert_serving(&cluster, &nearby, "tx:after");
    assert_healthy_process(&mut nearby);
}

#[test]
fn unauthenticated_limits_match_redis() {
    let cluster = Cluster::start(2);
    let mut nearby = Nearby::start_for(&cluster, &["--requirepass", "client-pw"]);
    let redis = crate::common::RedisServer::start_with(&["--requirepass", "client-pw"]);

    let mut big_bulk = b"*1\r\n$16385\r\n".to_vec();
    big_bulk.extend(std::iter::repeat_n(b'x', 16_385));
    big_bulk.extend_from_slice(b"\r\n");
    let cases: [(&str, Vec<u8>, &[u8]); 2] = [
        (
            "11 arguments before AUTH",
            b"*11\r\n".to_vec(),
            b"-ERR Protocol error: unauthenticated multibulk length\r\n",
        ),
        (
            "bulk over 16384 before AUTH",
            big_bulk,
            b"-ERR Protocol error: unauthenticated bulk length\r\n",
        ),
    ];
    for (name, bytes, expected) in cases {
        let from_redis = error_then_close(redis.port, "redis-server", name, &bytes);
        assert_eq!(show(&from_redis), show(expected), "{name}: redis-server");
        let from_nearby = error_then_close(nearby.port, "nearby", name, &bytes);
        assert_eq!(show(&from_nearby), show(&from_redis), "{name}: nearby");
    }

    // After AUTH the same requests are framed normally.
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["AUTH", "client-pw"]), b"+OK\r\n");
    let args: Vec<&str> = std::iter::once("ECHO")
        .chain(std::iter::repeat_n("x", 10))
        .collect();
    assert_eq!(
        c.cmd(&args),
        b"-ERR wrong number of arguments for 'echo' command\r\n"
    );
    let value = "y".repeat(16_385);
    assert_eq!(
        c.cmd(&["ECHO", &value]),
        format!("$16385\r\n{value}\r\n").into_bytes()
    );
    assert_healthy_process(&mut nearby);
}

/// The verdict never depends on how the bytes are split into reads.
#[test]
fn bad_input_arriving_byte_by_byte() {
    let cluster = Cluster::start(2);
    let mut nearby = Nearby::start_for(&cluster, &[]);

    for case in cases().into_iter().filter(|c| c.bytes.len() < 100) {
        let mut c = RawConn::connect(nearby.port);
        for b in &case.bytes {
            // The verdict may come before the last byte (a nested `*` is
            // rejected at once): then the peer is gone and writing fails.
            if c.stream().write_all(std::slice::from_ref(b)).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let reply = c.read_reply();
        assert_eq!(show(&reply), show(case.expected), "{}", case.name);
        assert!(c.is_closed(), "{}: not closed", case.name);
    }
    assert_serving(&cluster, &nearby, "split:after");
    assert_healthy_process(&mut nearby);
}

#[test]
fn bad_input_while_subscribed() {
    let cluster = Cluster::start(2);
    let mut nearby = Nearby::start_for(&cluster, &[]);

    let mut bytes = resp(&["SUBSCRIBE", "bad-input-ch"]);
    bytes.extend_from_slice(b"*1\r\n$abc\r\n");
    let expected: &[u8] = b"*3\r\n$9\r\nsubscribe\r\n$12\r\nbad-input-ch\r\n:1\r\n\
        -ERR Protocol error: invalid bulk length\r\n";
    for (who, port) in [
        ("redis-server", cluster.primary.port),
        ("nearby", nearby.port),
    ] {
        let mut c = RawConn::connect(port);
        c.send(&bytes);
        assert_eq!(show(&c.read_until_closed()), show(expected), "{who}");
    }
    // The subscription went away with the client.
    assert!(
        wait_until(Duration::from_secs(3), || {
            cluster.primary.query(&["PUBSUB", "NUMSUB", "bad-input-ch"])
                == b"*2\r\n$12\r\nbad-input-ch\r\n:0\r\n"
        }),
        "the sidecar's upstream subscription outlived its client"
    );
    assert_serving(&cluster, &nearby, "sub:after");
    assert_healthy_process(&mut nearby);
}
