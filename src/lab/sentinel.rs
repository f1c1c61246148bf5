//! The lab's Redis Sentinels (`nearby lab --sentinel`) and
//! `nearby lab failover`.
//!
//! Three real sentinels (`redis-server <conf> --sentinel`) on consecutive
//! loopback ports watch the primary as [`MASTER`], quorum 2. They see every
//! server at its front relay address, as the sidecar does: the primary is
//! monitored there, and each server announces its front relay as its
//! replica address. The sidecar reaches the sentinels directly.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::route::sentinel::{parse_master, parse_replicas};

use super::{query_addr, wait_for};

/// The master name the lab's sentinels monitor.
pub const MASTER: &str = "mymaster";

/// How many sentinels the lab starts, and how many must agree that the
/// primary is down.
const COUNT: u16 = 3;
const QUORUM: u16 = 2;

/// The running sentinels; killed when dropped.
pub struct Sentinels {
    list: Vec<Sentinel>,
}

struct Sentinel {
    addr: SocketAddr,
    dir: PathBuf,
    child: Child,
}

impl Sentinels {
    /// Each sentinel's `127.0.0.1:PORT`.
    pub fn addrs(&self) -> Vec<String> {
        self.list.iter().map(|s| s.addr.to_string()).collect()
    }

    /// Stops every sentinel and waits for it to exit.
    pub async fn kill(&mut self) {
        for s in &mut self.list {
            let _ = s.child.kill().await;
        }
    }
}

/// The sentinel config: monitor `master` (the primary's front relay), a
/// second without a reply marks it down, a failover may take 5 s.
fn conf_text(port: u16, dir: &Path, master: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "port {port}\n\
         bind 127.0.0.1\n\
         daemonize no\n\
         dir \"{d}\"\n\
         logfile \"{d}/sentinel.log\"\n\
         sentinel resolve-hostnames no\n\
         sentinel monitor {MASTER} {ip} {mport} {QUORUM}\n\
         sentinel down-after-milliseconds {MASTER} 1000\n\
         sentinel failover-timeout {MASTER} 5000\n",
        ip = master.ip(),
        mport = master.port(),
    )
}

/// Starts the sentinels on `first_port` and the next ones, watching the
/// primary at `master`, and waits until each knows the other sentinels and
/// every replica in `replicas` (so that a failover can pick one).
pub async fn start(
    bin: &Path,
    dir: &Path,
    first_port: u16,
    master: SocketAddr,
    replicas: &[SocketAddr],
) -> Result<Sentinels, String> {
    let ports: Vec<u16> = (0..COUNT)
        .map(|i| first_port.checked_add(i))
        .collect::<Option<_>>()
        .ok_or("--sentinel-port: the three sentinel ports must be below 65536")?;
    // A port already in use would make that sentinel exit at once: say so
    // before starting any.
    for &port in &ports {
        std::net::TcpListener::bind(("127.0.0.1", port)).map_err(|e| {
            format!(
                "cannot start a sentinel on 127.0.0.1:{port} ({e}); another sentinel or lab running? choose others with --sentinel-port"
            )
        })?;
    }
    let mut sentinels = Sentinels { list: Vec::new() };
    for &port in &ports {
        let sdir = dir.join(format!("sentinel-{port}"));
        std::fs::create_dir_all(&sdir).map_err(|e| e.to_string())?;
        let conf = sdir.join("sentinel.conf");
        std::fs::write(&conf, conf_text(port, &sdir, master))
            .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        let child = Command::new(bin)
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {} --sentinel: {e}", bin.display()))?;
        sentinels.list.push(Sentinel {
            addr: ([127, 0, 0, 1], port).into(),
            dir: sdir,
            child,
        });
    }
    for s in &mut sentinels.list {
        let addr = s.addr;
        let log = s.dir.join("sentinel.log");
        let mut exited = None;
        let up = wait_for(
            &format!("the sentinel on {addr} answering PING"),
            Duration::from_secs(10),
            async || {
                if let Ok(Some(status)) = s.child.try_wait() {
                    exited = Some(status);
                    return true;
                }
                query_addr(&addr.to_string(), &[b"PING"])
                    .await
                    .is_ok_and(|r| r.starts_with(b"+PONG"))
            },
        )
        .await;
        if let Some(status) = exited {
            return Err(format!(
                "the sentinel on {addr} exited ({status}); see {}",
                log.display()
            ));
        }
        up.map_err(|e| format!("{e}; see {}", log.display()))?;
    }
    for s in &sentinels.list {
        let addr = s.addr.to_string();
        let mut seen = String::new();
        wait_for(
            &format!("the sentinel on {addr} seeing the other sentinels and every replica"),
            Duration::from_secs(30),
            async || {
                let (ready, now) = knows_all(&addr, replicas).await;
                seen = now;
                ready
            },
        )
        .await
        .map_err(|e| {
            format!(
                "{e} (last: {seen}); see {}",
                s.dir.join("sentinel.log").display()
            )
        })?;
    }
    Ok(sentinels)
}

/// Whether the sentinel at `addr` knows the other sentinels and sees every
/// replica up and replicating, and what it sees.
async fn knows_all(addr: &str, replicas: &[SocketAddr]) -> (bool, String) {
    let master = match query_addr(addr, &[b"SENTINEL", b"MASTER", MASTER.as_bytes()]).await {
        Ok(raw) => parse_master(&raw),
        Err(e) => Err(e.to_string()),
    };
    let seen = match query_addr(addr, &[b"SENTINEL", b"REPLICAS", MASTER.as_bytes()]).await {
        Ok(raw) => parse_replicas(&raw),
        Err(e) => Err(e.to_string()),
    };
    let (master, seen) = match (master, seen) {
        (Ok(m), Ok(r)) => (m, r),
        (Err(e), _) | (_, Err(e)) => return (false, e),
    };
    let others = master.num_other_sentinels.unwrap_or(0);
    let usable: Vec<String> = seen
        .iter()
        .filter(|r| r.usable())
        .map(|r| format!("{}:{}", r.ip, r.port))
        .collect();
    let ready = others >= u64::from(COUNT - 1)
        && replicas
            .iter()
            .all(|want| usable.contains(&want.to_string()));
    (
        ready,
        format!(
            "{others} other sentinels, usable replicas [{}]",
            usable.join(", ")
        ),
    )
}

/// `nearby lab failover`: `SENTINEL FAILOVER mymaster` to `sentinel`;
/// prints the reply; 0 on `OK`.
pub async fn failover(sentinel: &str) -> u8 {
    match query_addr(sentinel, &[b"SENTINEL", b"FAILOVER", MASTER.as_bytes()]).await {
        Ok(raw) => {
            let text = String::from_utf8_lossy(&raw);
            let text = text.trim_end();
            if let Some(ok) = text.strip_prefix('+') {
                println!("{ok}");
                if ok == "OK" {
                    return 0;
                }
                1
            } else {
                eprintln!(
                    "nearby lab failover: the sentinel on {sentinel} refused: {}",
                    text.strip_prefix('-').unwrap_or(text)
                );
                1
            }
        }
        Err(e) => {
            eprintln!(
                "nearby lab failover: no sentinel answers on {sentinel} ({e}); is `nearby lab --sentinel` running? (--sentinel ADDR names another)"
            );
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_conf_monitors_the_front_address_with_quorum_two() {
        let text = conf_text(
            26380,
            Path::new("/tmp/lab/sentinel-26380"),
            "127.0.0.1:40001".parse().unwrap(),
        );
        for line in [
            "port 26380",
            "logfile \"/tmp/lab/sentinel-26380/sentinel.log\"",
            "sentinel resolve-hostnames no",
            "sentinel monitor mymaster 127.0.0.1 40001 2",
            "sentinel down-after-milliseconds mymaster 1000",
            "sentinel failover-timeout mymaster 5000",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}
