//! Commands that create connection state ride dedicated connections, and
//! the session goes back to shared routing once the state is gone.

use std::time::{Duration, Instant};

use crate::common::{Cluster, Nearby, RawConn, resp};

fn setup() -> (Cluster, Nearby) {
    let cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &[]);
    (cluster, nearby)
}

#[test]
fn transactions_run_on_the_primary_and_watch_detects_conflicts() {
    let (cluster, nearby) = setup();
    let mut c = RawConn::connect(nearby.port);
    cluster.reset_stats();
    assert_eq!(c.cmd(&["MULTI"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["SET", "t", "1"]), b"+QUEUED\r\n");
    assert_eq!(c.cmd(&["GET", "t"]), b"+QUEUED\r\n");
    assert_eq!(c.cmd(&["EXEC"]), b"*2\r\n+OK\r\n$1\r\n1\r\n");
    // The read inside the transaction ran on the primary.
    assert_eq!(cluster.primary.calls("get"), 1);
    assert_eq!(cluster.replicas[0].calls("get"), 0);

    // After EXEC, reads go back to the replica.
    cluster.wait_replicated();
    assert_eq!(c.cmd(&["GET", "t"]), b"$1\r\n1\r\n");
    assert_eq!(cluster.replicas[0].calls("get"), 1);

    // WATCH: another client's write aborts the transaction.
    let mut other = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["WATCH", "t"]), b"+OK\r\n");
    assert_eq!(other.cmd(&["SET", "t", "2"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["MULTI"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["INCR", "t"]), b"+QUEUED\r\n");
    assert_eq!(c.cmd(&["EXEC"]), b"*-1\r\n");
    // Without a conflict it runs.
    assert_eq!(c.cmd(&["WATCH", "t"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["MULTI"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["INCR", "t"]), b"+QUEUED\r\n");
    assert_eq!(c.cmd(&["EXEC"]), b"*1\r\n:3\r\n");
    // DISCARD ends MULTI; errors inside MULTI are Redis's own.
    assert_eq!(c.cmd(&["MULTI"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["MULTI"]), b"-ERR MULTI calls can not be nested\r\n");
    assert_eq!(c.cmd(&["DISCARD"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["EXEC"]), b"-ERR EXEC without MULTI\r\n");
}

#[test]
fn a_blocked_client_does_not_delay_others() {
    let (_cluster, nearby) = setup();
    let mut blocked = RawConn::connect(nearby.port);
    blocked.send(&resp(&["BLPOP", "queue", "5"]));
    std::thread::sleep(Duration::from_millis(100));

    let mut other = RawConn::connect(nearby.port);
    let start = Instant::now();
    for i in 0..200 {
        assert_eq!(other.cmd(&["SET", &format!("k{i}"), "v"]), b"+OK\r\n");
        other.cmd(&["GET", "k0"]);
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "400 commands took {took:?} while a client was blocked"
    );

    assert_eq!(other.cmd(&["RPUSH", "queue", "job"]), b":1\r\n");
    assert_eq!(blocked.read_reply(), b"*2\r\n$5\r\nqueue\r\n$3\r\njob\r\n");
    // The blocked client is usable afterwards, pipelined behind a block too.
    blocked.send(&[resp(&["BRPOP", "empty", "0.2"]), resp(&["ECHO", "after"])].concat());
    assert_eq!(blocked.read_reply(), b"*-1\r\n");
    assert_eq!(blocked.read_reply(), b"$5\r\nafter\r\n");
    // XREAD with BLOCK blocks too, and returns data written meanwhile.
    blocked.send(&resp(&["XREAD", "BLOCK", "3000", "STREAMS", "st", "$"]));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        other.cmd(&["XADD", "st", "5-1", "f", "v"]),
        b"$3\r\n5-1\r\n"
    );
    assert_eq!(
        blocked.read_reply(),
        b"*1\r\n*2\r\n$2\r\nst\r\n*1\r\n*2\r\n$3\r\n5-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
}

#[test]
fn pubsub_until_the_last_unsubscribe() {
    let (cluster, nearby) = setup();
    let mut sub = RawConn::connect(nearby.port);
    let mut publisher = RawConn::connect(nearby.port);
    sub.send(&resp(&["SUBSCRIBE", "news", "sport"]));
    assert_eq!(
        sub.read_reply(),
        b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"
    );
    assert_eq!(
        sub.read_reply(),
        b"*3\r\n$9\r\nsubscribe\r\n$5\r\nsport\r\n:2\r\n"
    );
    assert_eq!(publisher.cmd(&["PUBLISH", "news", "hello"]), b":1\r\n");
    assert_eq!(
        sub.read_reply(),
        b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n"
    );
    // PING in subscribed mode (RESP2) is Redis's own form.
    assert_eq!(sub.cmd(&["PING"]), b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    sub.send(&resp(&["PSUBSCRIBE", "s*"]));
    assert_eq!(
        sub.read_reply(),
        b"*3\r\n$10\r\npsubscribe\r\n$2\r\ns*\r\n:3\r\n"
    );
    assert_eq!(publisher.cmd(&["PUBLISH", "sport", "goal"]), b":2\r\n");
    let a = sub.read_reply();
    let b = sub.read_reply();
    assert_eq!(a, b"*3\r\n$7\r\nmessage\r\n$5\r\nsport\r\n$4\r\ngoal\r\n");
    assert_eq!(
        b,
        b"*4\r\n$8\r\npmessage\r\n$2\r\ns*\r\n$5\r\nsport\r\n$4\r\ngoal\r\n"
    );
    // Unsubscribe everything. Redis walks its channel table in hash order,
    // so the channel order (and so each running count) varies; the set of
    // channels and the final count do not.
    sub.send(&[resp(&["UNSUBSCRIBE"]), resp(&["PUNSUBSCRIBE"])].concat());
    let first = sub.read_reply();
    let second = sub.read_reply();
    let mut channels = vec![
        first[..first.len() - 4].to_vec(),
        second[..second.len() - 4].to_vec(),
    ];
    channels.sort();
    assert_eq!(
        channels,
        vec![
            b"*3\r\n$11\r\nunsubscribe\r\n$4\r\nnews\r\n".to_vec(),
            b"*3\r\n$11\r\nunsubscribe\r\n$5\r\nsport\r\n".to_vec(),
        ]
    );
    let mut counts = vec![
        first[first.len() - 4..].to_vec(),
        second[second.len() - 4..].to_vec(),
    ];
    counts.sort();
    assert_eq!(counts, vec![b":1\r\n".to_vec(), b":2\r\n".to_vec()]);
    assert_eq!(
        sub.read_reply(),
        b"*3\r\n$12\r\npunsubscribe\r\n$2\r\ns*\r\n:0\r\n"
    );
    // Back to shared routing: reads go to the replica again.
    assert_eq!(sub.cmd(&["SET", "after", "sub"]), b"+OK\r\n");
    cluster.wait_replicated();
    cluster.reset_stats();
    assert_eq!(sub.cmd(&["GET", "after"]), b"$3\r\nsub\r\n");
    assert_eq!(cluster.replicas[0].calls("get"), 1);
    assert_eq!(publisher.cmd(&["PUBLISH", "news", "nobody"]), b":0\r\n");
}

#[test]
fn resp3_pubsub_and_client_tracking_pushes() {
    let (_cluster, nearby) = setup();
    let mut c = RawConn::connect(nearby.port);
    assert!(c.cmd(&["HELLO", "3"]).starts_with(b"%7\r\n"));
    c.send(&resp(&["SUBSCRIBE", "ch"]));
    assert_eq!(
        c.read_reply(),
        b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"
    );
    // RESP3 allows any command while subscribed.
    assert_eq!(c.cmd(&["SET", "r3", "v"]), b"+OK\r\n");
    let mut p = RawConn::connect(nearby.port);
    assert_eq!(p.cmd(&["PUBLISH", "ch", "m"]), b":1\r\n");
    assert_eq!(
        c.read_reply(),
        b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\nm\r\n"
    );
    assert_eq!(
        c.cmd(&["UNSUBSCRIBE", "ch"]),
        b">3\r\n$11\r\nunsubscribe\r\n$2\r\nch\r\n:0\r\n"
    );

    // Tracking: a write by another client invalidates what this one read.
    let mut t = RawConn::connect(nearby.port);
    assert!(t.cmd(&["HELLO", "3"]).starts_with(b"%7\r\n"));
    assert_eq!(t.cmd(&["CLIENT", "TRACKING", "on"]), b"+OK\r\n");
    assert_eq!(t.cmd(&["GET", "tracked"]), b"_\r\n");
    assert_eq!(p.cmd(&["SET", "tracked", "1"]), b"+OK\r\n");
    assert_eq!(
        t.read_reply(),
        b">2\r\n$10\r\ninvalidate\r\n*1\r\n$7\r\ntracked\r\n"
    );
}

#[test]
fn monitor_reset_quit_and_names() {
    let (_cluster, nearby) = setup();
    let mut m = RawConn::connect(nearby.port);
    assert_eq!(m.cmd(&["MONITOR"]), b"+OK\r\n");
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "watched-key", "1"]), b"+OK\r\n");
    // The sidecar's own probes (PING) show up too; find the SET.
    let mut seen = Vec::new();
    loop {
        let line = String::from_utf8(m.read_reply()).unwrap();
        assert!(line.starts_with('+'), "{line}");
        if line.contains("\"SET\" \"watched-key\" \"1\"") {
            break;
        }
        seen.push(line);
        assert!(seen.len() < 20, "no SET among {seen:?}");
    }
    // RESET leaves monitor mode and restores defaults.
    m.send(&resp(&["RESET"]));
    // Monitor lines may precede the +RESET; skip them.
    loop {
        let r = m.read_reply();
        if r == b"+RESET\r\n" {
            break;
        }
        assert!(r.starts_with(b"+"), "{:?}", String::from_utf8_lossy(&r));
    }
    assert_eq!(m.cmd(&["ECHO", "back"]), b"$4\r\nback\r\n");

    // Names are per client.
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "alpha"]), b"+OK\r\n");
    assert_eq!(m.cmd(&["CLIENT", "SETNAME", "beta"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), b"$5\r\nalpha\r\n");
    assert_eq!(m.cmd(&["CLIENT", "GETNAME"]), b"$4\r\nbeta\r\n");
    // RESET clears the name and SELECT.
    assert_eq!(c.cmd(&["SELECT", "5"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["SET", "db5", "x"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["RESET"]), b"+RESET\r\n");
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), b"$-1\r\n");
    assert_eq!(c.cmd(&["EXISTS", "db5"]), b":0\r\n");

    // CLIENT REPLY OFF / SKIP / ON.
    c.send(
        &[
            resp(&["CLIENT", "REPLY", "OFF"]),
            resp(&["ECHO", "hidden1"]),
            resp(&["CLIENT", "REPLY", "ON"]),
            resp(&["CLIENT", "REPLY", "SKIP"]),
            resp(&["ECHO", "hidden2"]),
            resp(&["ECHO", "shown"]),
        ]
        .concat(),
    );
    assert_eq!(c.read_reply(), b"+OK\r\n");
    assert_eq!(c.read_reply(), b"$5\r\nshown\r\n");

    // QUIT answers +OK and closes.
    c.send(&[resp(&["QUIT"]), resp(&["PING"])].concat());
    assert_eq!(c.read_until_closed(), b"+OK\r\n");
}

#[test]
fn auth_with_requirepass() {
    let cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &["--requirepass", "sidecar-secret"]);
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(
        c.cmd(&["GET", "x"]),
        b"-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        c.cmd(&["AUTH", "wrong"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(c.cmd(&["AUTH", "sidecar-secret"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["GET", "x"]), b"$-1\r\n");
    let mut h = RawConn::connect(nearby.port);
    let r = h.cmd(&["HELLO", "3", "AUTH", "default", "sidecar-secret"]);
    assert!(r.starts_with(b"%7\r\n"));
    assert_eq!(h.cmd(&["GET", "x"]), b"_\r\n");
    assert!(!nearby.log().contains("sidecar-secret"));
}

#[test]
fn client_auth_passes_through_to_the_primary() {
    // The upstream requires a password; the sidecar knows it from the URL.
    let primary = crate::common::RedisServer::start_with(&["--requirepass", "up-pass"]);
    let nearby = Nearby::start(&[
        "--primary",
        &format!("redis://:up-pass@127.0.0.1:{}", primary.port),
    ]);
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "k", "v"]), b"+OK\r\n");
    // Wrong credentials are judged by Redis itself, and rejected.
    assert_eq!(
        c.cmd(&["AUTH", "nope"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    // The same credentials as the URL's: accepted, identity unchanged.
    assert_eq!(c.cmd(&["AUTH", "up-pass"]), b"+OK\r\n");
    // Another ACL user: passed through, and the session now runs as it.
    assert_eq!(
        primary.query(&[
            "ACL",
            "SETUSER",
            "reader",
            "on",
            ">rpass",
            "~*",
            "+get",
            "+acl|whoami",
            "+ping"
        ]),
        b"-NOAUTH Authentication required.\r\n"
    );
    let mut admin = RawConn::connect(primary.port);
    assert_eq!(admin.cmd(&["AUTH", "up-pass"]), b"+OK\r\n");
    assert_eq!(
        admin.cmd(&[
            "ACL",
            "SETUSER",
            "reader",
            "on",
            ">rpass",
            "~*",
            "+get",
            "+acl|whoami",
            "+ping"
        ]),
        b"+OK\r\n"
    );
    assert_eq!(c.cmd(&["AUTH", "reader", "rpass"]), b"+OK\r\n");
    assert_eq!(c.cmd(&["ACL", "WHOAMI"]), b"$6\r\nreader\r\n");
    assert_eq!(c.cmd(&["GET", "k"]), b"$1\r\nv\r\n");
    let denied = c.cmd(&["SET", "k", "w"]);
    assert!(
        denied.starts_with(b"-NOPERM"),
        "{:?}",
        String::from_utf8_lossy(&denied)
    );
    // Other clients keep the sidecar's identity.
    let mut d = RawConn::connect(nearby.port);
    assert_eq!(d.cmd(&["ACL", "WHOAMI"]), b"$7\r\ndefault\r\n");
}

#[test]
fn subscribe_from_nearest_subscribes_on_the_replica() {
    let cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &["--subscribe-from", "nearest"]);
    let mut sub = RawConn::connect(nearby.port);
    assert!(sub.cmd(&["HELLO", "3"]).starts_with(b"%7\r\n"));
    sub.send(&resp(&["SUBSCRIBE", "near"]));
    assert_eq!(
        sub.read_reply(),
        b">3\r\n$9\r\nsubscribe\r\n$4\r\nnear\r\n:1\r\n"
    );
    // The subscription lives on the replica, not on the primary.
    assert_eq!(
        cluster.replicas[0].query(&["PUBSUB", "NUMSUB", "near"]),
        b"*2\r\n$4\r\nnear\r\n:1\r\n"
    );
    assert_eq!(
        cluster.primary.query(&["PUBSUB", "NUMSUB", "near"]),
        b"*2\r\n$4\r\nnear\r\n:0\r\n"
    );
    // PUBLISH on the primary reaches it through replication (its count is
    // the primary's own subscribers: 0).
    let mut p = RawConn::connect(nearby.port);
    assert_eq!(p.cmd(&["PUBLISH", "near", "hi"]), b":0\r\n");
    assert_eq!(
        sub.read_reply(),
        b">3\r\n$7\r\nmessage\r\n$4\r\nnear\r\n$2\r\nhi\r\n"
    );
    // While subscribed, a RESP3 client's writes still reach the primary.
    assert_eq!(sub.cmd(&["SET", "while-subscribed", "1"]), b"+OK\r\n");
    assert_eq!(
        cluster.primary.query(&["GET", "while-subscribed"]),
        b"$1\r\n1\r\n"
    );
    assert_eq!(
        sub.cmd(&["UNSUBSCRIBE", "near"]),
        b">3\r\n$11\r\nunsubscribe\r\n$4\r\nnear\r\n:0\r\n"
    );
    // Then MULTI goes to the primary as usual.
    assert_eq!(sub.cmd(&["MULTI"]), b"+OK\r\n");
    assert_eq!(sub.cmd(&["INCR", "n"]), b"+QUEUED\r\n");
    assert_eq!(sub.cmd(&["EXEC"]), b"*1\r\n:1\r\n");
}

/// A dedicated connection's state (db, protocol, name) is written with the
/// first request that needs it, not a round trip before it: the request
/// still runs in that state, on a connection Redis knows by that name.
#[test]
fn a_dedicated_connection_runs_its_first_request_in_the_clients_state() {
    let (cluster, nearby) = setup();
    let mut c = RawConn::connect(nearby.port);
    // All in one write: the dedicated connection is opened by WATCH while
    // CLIENT INFO and the transaction queue behind it.
    c.send(
        &[
            resp(&["HELLO", "3"]),
            resp(&["SELECT", "7"]),
            resp(&["CLIENT", "SETNAME", "ded"]),
            resp(&["WATCH", "k"]),
            resp(&["CLIENT", "INFO"]),
            resp(&["MULTI"]),
            resp(&["SET", "k", "v"]),
            resp(&["EXEC"]),
        ]
        .concat(),
    );
    let hello = c.read_reply();
    assert!(
        hello.starts_with(b"%"),
        "{:?}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(c.read_reply(), b"+OK\r\n");
    assert_eq!(c.read_reply(), b"+OK\r\n");
    assert_eq!(c.read_reply(), b"+OK\r\n");
    let info = String::from_utf8_lossy(&c.read_reply()).into_owned();
    for field in ["name=ded", "db=7", "resp=3"] {
        assert!(
            info.split_whitespace().any(|f| f == field),
            "{field:?} not in {info:?}"
        );
    }
    assert_eq!(c.read_reply(), b"+OK\r\n");
    assert_eq!(c.read_reply(), b"+QUEUED\r\n");
    assert_eq!(c.read_reply(), b"*1\r\n+OK\r\n");
    assert_eq!(cluster.primary.cli(&["-n", "7", "GET", "k"]), "v");
    assert_eq!(cluster.primary.cli(&["-n", "0", "EXISTS", "k"]), "0");
}

/// A refused AUTH on a dedicated connection stops everything behind it:
/// nothing the client asked runs as whatever user the connection is left
/// with (here ACL `default`, which is on and needs no password).
#[test]
fn a_dedicated_connection_whose_auth_is_refused_runs_nothing() {
    let primary = crate::common::RedisServer::start();
    assert_eq!(
        primary.cli(&["ACL", "SETUSER", "u", "on", ">pw", "~*", "+@all"]),
        "OK"
    );
    let url = format!("redis://u:pw@{}", primary.addr());
    let nearby = Nearby::start(&["--primary", &url]);
    assert!(nearby.wait_ready(Duration::from_secs(5)));
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "k", "1"]), b"+OK\r\n");
    // Disabled now: the sidecar's next new connection as `u` is refused;
    // the ones it holds stay.
    assert_eq!(primary.cli(&["ACL", "SETUSER", "u", "off"]), "OK");
    primary.reset_stats();
    let reply = String::from_utf8_lossy(&c.cmd(&["WATCH", "k"])).into_owned();
    assert!(
        reply.starts_with("-ERR nearby: ") && reply.contains("WRONGPASS"),
        "{reply:?}"
    );
    assert_eq!(primary.calls("watch"), 0, "WATCH ran as another user");
}
