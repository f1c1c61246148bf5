//! Real Redis Sentinel processes watching a [`Cluster`](super::Cluster), for
//! tests of following a primary through a failover.
//!
//! Each sentinel runs as `redis-server <conf> --sentinel` (the same binary
//! as the servers: no `redis-sentinel` package needed) on a free loopback
//! port, with its own directory, config file (Sentinel rewrites it) and log.
//! Like [`RedisServer`](super::RedisServer), it is killed when dropped.
//!
//! Sentinel's periods are shortened with `SENTINEL DEBUG` (Redis 7.0+):
//! INFO every second instead of every 10 s and hello messages every 0.5 s
//! instead of 2 s. The sequence of events is Sentinel's own; only its pace
//! changes. At the default pace an old primary is turned into a replica
//! about 10 s after the switch (a sentinel waits until it has reported
//! `role:master` for over 4 publish periods, and asks INFO every 10 s); here
//! in about 2 s, and sentinels discover each other within a second.
//!
//! The servers of a `Cluster` run without a config file, so the
//! `CONFIG REWRITE` that Sentinel sends inside its `MULTI` with every
//! `REPLICAOF` fails (`ERR The server is running without a config file`);
//! the other commands of the transaction still run, so failovers work. What
//! is lost is only the persistence of the new role across a restart.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nearby::route::sentinel::parse_replicas;

use super::{RawConn, free_port, quick_query, redis_cli, resp, tail, wait_until};

/// `SENTINEL DEBUG` settings applied to every sentinel (see the module doc).
const DEBUG_PERIODS: &[&str] = &["info-period", "1000", "publish-period", "500"];

/// One sentinel process on 127.0.0.1.
pub struct Sentinel {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Sentinel {
    /// Starts a sentinel monitoring `127.0.0.1:<primary_port>` as
    /// `master_name`, and waits until it answers PING (at most 5 s).
    pub fn start(primary_port: u16, master_name: &str, quorum: usize) -> Sentinel {
        let mut last_log = String::new();
        for _ in 0..3 {
            match Self::try_start(free_port(), primary_port, master_name, quorum) {
                Ok(s) => return s,
                Err(log) if log.contains("Address already in use") => last_log = log,
                Err(log) => panic!("sentinel failed to start; log tail:\n{log}"),
            }
        }
        panic!("sentinel could not find a free port; log tail:\n{last_log}")
    }

    fn try_start(
        port: u16,
        primary_port: u16,
        name: &str,
        quorum: usize,
    ) -> Result<Sentinel, String> {
        let dir = tempfile::Builder::new()
            .prefix("nearby-sentinel-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().display();
        let conf = dir.path().join("sentinel.conf");
        let text = format!(
            "port {port}\n\
             bind 127.0.0.1\n\
             daemonize no\n\
             dir {d}\n\
             logfile {d}/sentinel.log\n\
             sentinel resolve-hostnames no\n\
             sentinel monitor {name} 127.0.0.1 {primary_port} {quorum}\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 5000\n\
             sentinel parallel-syncs {name} 1\n"
        );
        std::fs::write(&conf, text).expect("write sentinel.conf");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to spawn redis-server --sentinel (see scripts/install-redis.sh)");
        let mut s = Sentinel { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(status)) = s.child.try_wait() {
                return Err(format!("(exited: {status})\n{}", tail(&s.log_path(), 30)));
            }
            if quick_query(port, b"PING\r\n").is_some_and(|r| r.starts_with(b"+PONG")) {
                break;
            }
            if Instant::now() >= deadline {
                let msg = format!("(no PONG within 5 s)\n{}", tail(&s.log_path(), 30));
                drop(s);
                panic!("sentinel on port {port} did not start: {msg}");
            }
            thread::sleep(Duration::from_millis(10));
        }
        let mut debug = vec!["SENTINEL", "DEBUG"];
        debug.extend_from_slice(DEBUG_PERIODS);
        let reply = s.query(&debug);
        assert_eq!(reply, b"+OK\r\n", "SENTINEL DEBUG on port {port}");
        Ok(s)
    }

    /// `127.0.0.1:<port>`, as a sentinel address is listed.
    #[allow(dead_code, reason = "harness API for the tests that follow Sentinel")]
    pub fn url(&self) -> String {
        self.addr_arg()
    }

    /// `127.0.0.1:<port>`
    #[allow(dead_code, reason = "harness API for the tests that follow Sentinel")]
    pub fn addr_arg(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("sentinel.log")
    }

    /// Runs `redis-cli -h 127.0.0.1 -p <port> <args>`; returns stdout, trimmed.
    #[allow(dead_code, reason = "harness API for the tests that follow Sentinel")]
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    /// Sends one command on a fresh connection; returns the raw RESP reply.
    pub fn query(&self, args: &[&str]) -> Vec<u8> {
        let mut c = RawConn::connect(self.port);
        c.send(&resp(args));
        c.read_reply()
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME <name>`: `None` for an unknown
    /// name or an unreachable sentinel.
    pub fn master_addr(&self, name: &str) -> Option<(String, u16)> {
        let cmd = resp(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", name]);
        let reply = quick_query(self.port, &cmd)?;
        let text = String::from_utf8(reply).ok()?;
        // *2\r\n$<n>\r\n<ip>\r\n$<n>\r\n<port>\r\n
        let parts: Vec<&str> = text.split("\r\n").collect();
        match parts.as_slice() {
            ["*2", _, ip, _, port, ""] => Some((ip.to_string(), port.parse().ok()?)),
            _ => None,
        }
    }

    /// Kills the sentinel now (SIGKILL) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Several sentinels monitoring one primary under one name.
pub struct Sentinels {
    pub list: Vec<Sentinel>,
    pub master_name: String,
}

impl Sentinels {
    /// Starts `n` sentinels monitoring `127.0.0.1:<primary_port>` and waits
    /// (at most 15 s) until each knows the other `n - 1` and sees
    /// `expected_replicas` replicas, all usable: then a failover can start
    /// at once (Sentinel promotes only replicas it has fresh INFO from).
    pub fn start(
        primary_port: u16,
        n: usize,
        quorum: usize,
        master_name: &str,
        expected_replicas: usize,
    ) -> Sentinels {
        let list = (0..n)
            .map(|_| Sentinel::start(primary_port, master_name, quorum))
            .collect();
        let s = Sentinels {
            list,
            master_name: master_name.to_string(),
        };
        let mut state = Vec::new();
        let ready = wait_until(Duration::from_secs(15), || {
            state = s
                .list
                .iter()
                .map(|x| {
                    let others = aggregate_len(&x.query(&["SENTINEL", "SENTINELS", master_name]));
                    let usable = parse_replicas(&x.query(&["SENTINEL", "REPLICAS", master_name]))
                        .map(|r| r.iter().filter(|r| r.usable()).count());
                    (x.port, others, usable)
                })
                .collect();
            state.iter().all(|(_, others, usable)| {
                *others == Some(n - 1) && *usable == Ok(expected_replicas)
            })
        });
        if !ready {
            panic!(
                "sentinels not ready within 15 s (want {} other sentinels and {expected_replicas} usable replicas each); \
                 (port, other sentinels, usable replicas): {state:?}\n{}",
                n - 1,
                s.log_tails(20)
            );
        }
        s
    }

    /// `SENTINEL FAILOVER <name>` on the first sentinel: the raw reply
    /// (`+OK\r\n` once the failover has started).
    pub fn failover(&self) -> Vec<u8> {
        self.list[0].query(&["SENTINEL", "FAILOVER", &self.master_name])
    }

    /// Waits until every sentinel names `127.0.0.1:<port>` as the master.
    pub fn wait_master(&self, port: u16, within: Duration) -> bool {
        wait_until(within, || {
            self.list.iter().all(|s| {
                s.master_addr(&self.master_name)
                    .is_some_and(|(ip, p)| ip == "127.0.0.1" && p == port)
            })
        })
    }

    /// The master each sentinel names, in order.
    pub fn master_addrs(&self) -> Vec<Option<(String, u16)>> {
        self.list
            .iter()
            .map(|s| s.master_addr(&self.master_name))
            .collect()
    }

    /// The last `lines` lines of every sentinel's log.
    pub fn log_tails(&self, lines: usize) -> String {
        self.list
            .iter()
            .map(|s| {
                format!(
                    "---- sentinel {} ----\n{}",
                    s.port,
                    tail(&s.log_path(), lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.log_tails(30));
        }
    }
}

/// The element count of an array reply (`*<n>\r\n...`).
fn aggregate_len(reply: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(reply).ok()?;
    text.strip_prefix('*')?.split("\r\n").next()?.parse().ok()
}
