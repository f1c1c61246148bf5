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

/// A first port whose next two are free too (the lab's three sentinels),
/// taken from [`free_port`]'s sequence so that no other test gets them.
fn three_free_ports() -> u16 {
    for _ in 0..100 {
        let first = free_port();
        if first < u16::MAX - 2 && free_port() == first + 1 && free_port() == first + 2 {
            return first;
        }
    }
    panic!("no three consecutive free ports");
}

/// Stops the lab with SIGTERM when the test ends, passed or not (then
/// SIGKILL if it does not go within 5 s).
struct Lab {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Lab {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let mut status = None;
        wait_until(Duration::from_secs(5), || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        status
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop();
    }
}

fn status(admin: u16) -> Option<serde_json::Value> {
    match http_get(admin, "/status") {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// `SENTINEL GET-MASTER-ADDR-BY-NAME mymaster` from the sentinel on `port`,
/// as `HOST:PORT`.
fn sentinel_names(port: u16) -> String {
    let reply = RawConn::connect(port).cmd(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]);
    let text = String::from_utf8_lossy(&reply).into_owned();
    match text.split("\r\n").collect::<Vec<_>>().as_slice() {
        ["*2", _, host, _, port, ""] => format!("{host}:{port}"),
        _ => text,
    }
}

/// The address `/status` lists for the upstream in `region`.
fn address_of(status: &serde_json::Value, region: &str) -> Option<String> {
    status["upstreams"]
        .as_array()?
        .iter()
        .find(|u| u["region"] == region)
        .and_then(|u| u["address"].as_str())
        .map(str::to_string)
}

#[test]
fn the_lab_with_sentinels_follows_a_failover() {
    let t0 = std::time::Instant::now();
    let port = free_port();
    let admin = free_port();
    let sentinel_port = three_free_ports();
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("lab.log");
    let child = Command::new(env!("CARGO_BIN_EXE_nearby"))
        .args([
            "lab",
            "--sentinel",
            "--sentinel-port",
            &sentinel_port.to_string(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--regions",
            "iad=20,ams=5",
            "--table-ms",
            "0",
            // A safety net: the test stops it long before.
            "--duration-s",
            "60",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .expect("spawn nearby lab --sentinel");
    let mut lab = Lab { child, log };
    let pid = lab.child.id();

    // The sidecar follows the sentinels, which name the iad server at its
    // front relay (the address the `iad` entry labels).
    let mut last = None;
    let mut iad = None;
    let mut ams = None;
    let ready = wait_until(Duration::from_secs(20), || {
        last = status(admin);
        let Some(s) = &last else { return false };
        iad = address_of(s, "iad");
        ams = address_of(s, "ams");
        s["ready"] == true
            && s["primary"]["source"] == "sentinel"
            && iad.is_some()
            && ams.is_some()
            && s["primary"]["address"].as_str() == iad.as_deref()
    });
    assert!(
        ready,
        "the lab did not follow its sentinels to iad within 20 s: {last:?}\n{}",
        lab.log()
    );
    let (iad, ams) = (iad.unwrap(), ams.unwrap());
    assert_ne!(iad, ams);
    for port in sentinel_port..sentinel_port + 3 {
        assert_eq!(sentinel_names(port), iad, "sentinel {port}");
    }
    eprintln!(
        "lab ready after {:?}: iad at {iad}, ams at {ams}",
        t0.elapsed()
    );
    let procs = children(pid);
    assert_eq!(
        procs.len(),
        5,
        "two redis-servers, three sentinels: {procs:?}"
    );

    let mut c = RawConn::connect(port);
    assert_eq!(c.cmd(&["SET", "before", "failover"]), b"+OK\r\n");
    // The promoted replica must hold it: wait until it has arrived.
    assert!(wait_until(Duration::from_secs(5), || c
        .cmd(&["GET", "before"])
        == b"$8\r\nfailover\r\n"));

    let t1 = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_nearby"))
        .args([
            "lab",
            "failover",
            "--sentinel",
            &format!("127.0.0.1:{sentinel_port}"),
        ])
        .output()
        .expect("run nearby lab failover");
    assert!(
        out.status.success(),
        "nearby lab failover: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n");

    let within = Duration::from_secs(15);
    let switched = wait_until(within, || {
        last = status(admin);
        last.as_ref().is_some_and(|s| {
            s["primary"]["address"].as_str() == Some(ams.as_str())
                && s["primary"]["writes"] == "open"
        })
    });
    assert!(
        switched,
        "the primary did not move to ams ({ams}) within 15 s: {last:?}\n{}",
        lab.log()
    );
    eprintln!(
        "the sidecar writes to ams {:?} after the failover",
        t1.elapsed()
    );
    assert_eq!(last.as_ref().unwrap()["primary"]["source"], "sentinel");

    let mut c = RawConn::connect(port);
    assert_eq!(c.cmd(&["SET", "after", "failover"]), b"+OK\r\n");
    let readable = wait_until(within.saturating_sub(t1.elapsed()), || {
        c.cmd(&["GET", "after"]) == b"$8\r\nfailover\r\n"
    });
    assert!(readable, "the write after the failover is not readable");
    assert_eq!(c.cmd(&["GET", "before"]), b"$8\r\nfailover\r\n");
    // Writes move as soon as the leader flags the replica promoted; the
    // new config epoch shows once the sentinels switch (a second or two).
    let epoch = wait_until(within.saturating_sub(t1.elapsed()), || {
        last = status(admin);
        last.as_ref().is_some_and(|s| {
            s["primary"]["epoch"].as_u64() >= Some(1)
                && s["primary"]["address"].as_str() == Some(ams.as_str())
        })
    });
    assert!(epoch, "no new epoch on ams within 15 s: {last:?}");
    // The sentinel asked leads the failover, and names ams once it ends.
    let mut named = String::new();
    let leader_switched = wait_until(within.saturating_sub(t1.elapsed()), || {
        named = sentinel_names(sentinel_port);
        named == ams
    });
    assert!(
        leader_switched,
        "sentinel {sentinel_port} still names {named}"
    );
    eprintln!("epoch 1 on ams {:?} after the failover", t1.elapsed());
    assert!(t1.elapsed() < within, "{:?}", t1.elapsed());

    // SIGTERM stops the sidecar, the servers and the sentinels.
    let dir = std::env::temp_dir().join(format!("nearby-lab-{pid}"));
    assert!(dir.exists());
    let exit = lab.stop();
    assert!(
        exit.is_some_and(|e| e.success()),
        "the lab did not exit cleanly within 5 s of SIGTERM: {exit:?}\n{}",
        lab.log()
    );
    for p in procs {
        assert!(!alive(p), "lab child {p} still running");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    eprintln!("the whole test took {:?}", t0.elapsed());
}

#[test]
fn the_lab_with_a_cluster_reads_each_shard_from_its_near_replica() {
    let t0 = std::time::Instant::now();
    let port = free_port();
    let admin = free_port();
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("lab.log");
    let child = Command::new(env!("CARGO_BIN_EXE_nearby"))
        .args([
            "lab",
            "--cluster",
            "--regions",
            "iad=20,ams=2",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
            "--table-ms",
            "0",
            // A safety net: the test stops it long before.
            "--duration-s",
            "40",
        ])
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(
            std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
        ))
        .spawn()
        .expect("spawn nearby lab --cluster");
    let mut lab = Lab { child, log };
    let pid = lab.child.id();

    // Three shards, each read from its ams replica.
    let mut last = None;
    let ready = wait_until(Duration::from_secs(20), || {
        if !matches!(http_get(admin, "/readyz"), Ok((200, _))) {
            return false;
        }
        last = status(admin);
        let Some(s) = &last else { return false };
        s["shards"].as_array().is_some_and(|shards| {
            shards.len() == 3
                && shards.iter().all(|sh| {
                    sh["reads_go_to"]["region"] == "ams" && sh["reads_go_to"]["role"] == "replica"
                })
        })
    });
    assert!(
        ready,
        "the cluster lab did not read every shard from ams within 20 s: {last:?}\n{}",
        lab.log()
    );
    eprintln!("cluster lab ready after {:?}", t0.elapsed());
    let procs = children(pid);
    assert_eq!(procs.len(), 6, "three primaries, three replicas: {procs:?}");

    let mut c = RawConn::connect(port);
    for i in 0..30 {
        let (k, v) = (format!("lab-cluster-{i}"), format!("value-{i}"));
        assert_eq!(c.cmd(&["SET", &k, &v]), b"+OK\r\n", "SET {k}");
    }
    for i in 0..30 {
        let (k, v) = (format!("lab-cluster-{i}"), format!("value-{i}"));
        let want = format!("${}\r\n{v}\r\n", v.len()).into_bytes();
        let mut got = Vec::new();
        // Reads go to the replica, a replication link behind.
        let read = wait_until(Duration::from_secs(3), || {
            got = c.cmd(&["GET", &k]);
            got == want
        });
        assert!(read, "GET {k}: {:?}", String::from_utf8_lossy(&got));
    }

    let dir = std::env::temp_dir().join(format!("nearby-lab-{pid}"));
    assert!(dir.exists());
    let exit = lab.stop();
    assert!(
        exit.is_some_and(|e| e.success()),
        "the lab did not exit cleanly within 5 s of SIGTERM: {exit:?}\n{}",
        lab.log()
    );
    for p in procs {
        assert!(!alive(p), "lab child {p} still running");
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    eprintln!("the whole test took {:?}", t0.elapsed());
}

#[test]
fn the_lab_refuses_a_cluster_with_sentinels() {
    let out = Command::new(env!("CARGO_BIN_EXE_nearby"))
        .args(["lab", "--cluster", "--sentinel"])
        .output()
        .expect("run nearby lab");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
