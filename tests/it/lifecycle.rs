//! Graceful shutdown and hot reload, against the real binary.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Cluster, Nearby, RawConn, RedisServer, free_port, http_get, resp, wait_until};

#[test]
fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let primary = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let port = free_port();
    let admin = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nearby"))
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--primary",
            &primary.url(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || matches!(
        http_get(admin, "/readyz"),
        Ok((200, _))
    )));
    let mut c = RawConn::connect(port);
    assert_eq!(c.cmd(&["SET", "k", "v"]), b"+OK\r\n");
    // A slow request in flight when SIGTERM arrives: DEBUG SLEEP on the
    // primary's shared pipe, then a GET behind it.
    c.send(&[resp(&["DEBUG", "SLEEP", "0.5"]), resp(&["ECHO", "after"])].concat());
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(c.read_reply(), b"+OK\r\n");
    assert_eq!(c.read_reply(), b"$5\r\nafter\r\n");
    // Then the connection closes and the process exits 0.
    assert!(c.is_closed());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
    // New connections are refused once it is gone.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

fn write_config(
    path: &std::path::Path,
    primary: &RedisServer,
    replicas: &[(&str, &RedisServer)],
    extra: &str,
) {
    let mut text = format!(
        "[primary]\nurl = \"{}\"\nregion = \"iad\"\n[health]\nprobe_interval_ms = 100\n{extra}\n",
        primary.url()
    );
    for (region, r) in replicas {
        text.push_str(&format!(
            "[[replica]]\nregion = \"{region}\"\nurl = \"{}\"\n",
            r.url()
        ));
    }
    std::fs::write(path, text).unwrap();
}

fn regions(nearby: &Nearby) -> Vec<String> {
    let (_, body) = nearby.http_get("/status").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut r: Vec<String> = v["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["region"].as_str().unwrap().to_string())
        .collect();
    r.sort();
    r
}

#[test]
fn sighup_reloads_replicas_and_rejects_a_bad_config_without_dropping_clients() {
    let cluster = Cluster::start(2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nearby.toml");
    let (a, b) = (&cluster.replicas[0], &cluster.replicas[1]);
    write_config(&path, &cluster.primary, &[("ams", a)], "");
    let nearby = Nearby::start(&["--config", path.to_str().unwrap()]);
    let hup = || {
        Command::new("kill")
            .args(["-HUP", &nearby.pid().to_string()])
            .status()
            .unwrap();
    };
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "k", "v"]), b"+OK\r\n");
    assert_eq!(regions(&nearby), ["ams", "iad"]);

    // Add a replica.
    write_config(&path, &cluster.primary, &[("ams", a), ("syd", b)], "");
    hup();
    assert!(wait_until(Duration::from_secs(5), || regions(&nearby)
        == ["ams", "iad", "syd"]));
    // Remove one, and change routing: reads now go to the primary only.
    write_config(
        &path,
        &cluster.primary,
        &[("syd", b)],
        "[routing]\nread_from = \"primary\"\n",
    );
    hup();
    assert!(wait_until(Duration::from_secs(5), || regions(&nearby)
        == ["iad", "syd"]));
    cluster.reset_stats();
    for _ in 0..10 {
        assert_eq!(c.cmd(&["GET", "k"]), b"$1\r\nv\r\n");
    }
    assert_eq!(cluster.primary.calls("get"), 10);

    // A bad config is rejected; the old one keeps running.
    nearby.expect_log("ERROR", "config reload rejected, the running config stays");
    std::fs::write(&path, "[primary]\nurl = \"http://nope\"\n").unwrap();
    hup();
    assert!(wait_until(Duration::from_secs(5), || nearby
        .log()
        .contains("config reload rejected")));
    assert!(nearby.log().contains("primary.url"));
    assert_eq!(regions(&nearby), ["iad", "syd"]);
    // The client connection survived every reload.
    assert_eq!(c.cmd(&["ECHO", "still-here"]), b"$10\r\nstill-here\r\n");
}
