//! `nearby lab`: starts a world, serves through the sidecar, stops clean.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{RawConn, free_port, http_get, wait_until};

fn children(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn the_lab_serves_and_stops_cleanly_on_sigint() {
    let port = free_port();
    let admin = free_port();
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("lab.log");
    let mut lab = Command::new(env!("CARGO_BIN_EXE_nearby"))
        .args([
            "lab",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--regions",
            "iad=40,ams=2,syd=60",
            "--table-ms",
            "0",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .expect("spawn nearby lab");
    let pid = lab.id();
    let ready = wait_until(Duration::from_secs(30), || {
        matches!(http_get(admin, "/readyz"), Ok((200, _)))
    });
    assert!(
        ready,
        "the lab did not become ready:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let servers = children(pid);
    assert_eq!(servers.len(), 3, "three redis-servers: {servers:?}");

    let mut c = RawConn::connect(port);
    assert_eq!(c.cmd(&["SET", "lab-key", "hello"]), b"+OK\r\n");
    // The replica is ~2 ms away from the sidecar but its replication link
    // is delayed too: wait for the value to arrive.
    assert!(wait_until(Duration::from_secs(5), || c
        .cmd(&["GET", "lab-key"])
        == b"$5\r\nhello\r\n"));

    let (code, body) = http_get(admin, "/status").unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut regions: Vec<String> = status["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["region"].as_str().unwrap().to_string())
        .collect();
    regions.sort();
    assert_eq!(regions, ["ams", "iad", "syd"]);
    assert_eq!(status["primary_region"], "iad");

    let dir = std::env::temp_dir().join(format!("nearby-lab-{pid}"));
    assert!(dir.exists());
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let exited = wait_until(Duration::from_secs(5), || {
        matches!(lab.try_wait(), Ok(Some(_)))
    });
    if !exited {
        let _ = lab.kill();
    }
    assert!(exited, "the lab did not stop within 5 s of SIGINT");
    assert!(lab.wait().unwrap().success());
    for s in servers {
        assert!(!alive(s), "redis-server {s} still running");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
}
