//! Integration test harness: real `redis-server` processes, the `nearby`
//! binary, and a raw RESP connection for byte-exact assertions.
//!
//! Synchronous (std::process, std::net), so it works from plain `#[test]`s and
//! from `#[tokio::test]`s alike. Every process started here is killed when its
//! handle is dropped, including while a test is panicking.
pub mod lagging;
pub mod log_check;
pub mod redis_cluster;
pub mod sentinel;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Ports

/// Ports handed out by [`free_port`] come from `[PORT_LO, PORT_HI)`, below the
/// kernel's ephemeral range (32768.. on Linux by default), so an outgoing
/// connection (a replica's link to its primary, a client) can never grab a
/// port between the moment it is chosen and the moment a server binds it.
const PORT_LO: u16 = 20_000;
const PORT_HI: u16 = 32_000;

static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A free TCP port on 127.0.0.1.
///
/// Each call in a process returns a different port (a process-wide counter,
/// starting at an offset derived from the pid so concurrent test binaries
/// start far apart), and each candidate is checked by binding it. Falls back
/// to a kernel-assigned port if the range is exhausted.
pub fn free_port() -> u16 {
    let span = PORT_HI - PORT_LO;
    let _ = NEXT_PORT.compare_exchange(
        0,
        ((std::process::id() * 7919) % u32::from(span)) as u16 + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let port = PORT_LO + n % span;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))
}

// ---------------------------------------------------------------------------
// Small helpers

/// Encodes a command as a RESP array of bulk strings.
pub fn resp(args: &[&str]) -> Vec<u8> {
    resp_bytes(&args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>())
}

/// Encodes a command with binary arguments as a RESP array of bulk strings.
pub fn resp_bytes(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The last `lines` lines of a file (empty if unreadable).
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends one command on a fresh connection and returns the raw reply, or
/// `None` if nothing sensible came back quickly.
fn quick_query(port: u16, cmd: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&loopback(port), Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.set_nodelay(true).ok()?;
    s.write_all(cmd).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if frame_len(&buf).is_some() {
            return Some(buf);
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Parses `key:value` lines (INFO output); skips blanks and `# Section` lines.
pub fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("failed to run redis-cli (is it installed? see scripts/install-redis.sh)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

// ---------------------------------------------------------------------------
// RedisServer

/// A `redis-server` process on 127.0.0.1 with its own temporary directory.
/// Dropping it kills the process (SIGKILL) and removes the directory.
pub struct RedisServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl RedisServer {
    /// Starts a standalone server (no persistence) and waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Like [`RedisServer::start`], with extra `redis-server` arguments.
    pub fn start_with(args: &[&str]) -> RedisServer {
        let mut last_log = String::new();
        // Retry a couple of times in case another process took the port.
        for _ in 0..3 {
            match Self::try_start_with(args) {
                Ok(s) => return s,
                Err(log) if log.contains("Address already in use") => last_log = log,
                Err(log) => panic!("redis-server failed to start; log tail:\n{log}"),
            }
        }
        panic!("redis-server could not find a free port; log tail:\n{last_log}")
    }

    /// Starts on a chosen port (e.g. to restart a server where it was).
    pub fn start_on_port(port: u16, args: &[&str]) -> RedisServer {
        Self::try_start_on(port, args)
            .unwrap_or_else(|log| panic!("redis-server failed to start on {port}:\n{log}"))
    }

    fn try_start_with(args: &[&str]) -> Result<RedisServer, String> {
        Self::try_start_on(free_port(), args)
    }

    fn try_start_on(port: u16, args: &[&str]) -> Result<RedisServer, String> {
        let dir = tempfile::Builder::new()
            .prefix("nearby-redis-")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--daemonize", "no"])
            .args(["--protected-mode", "no"])
            // A new replica's full sync starts at once instead of after the
            // default 5 s wait for more replicas to batch with.
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--logfile")
            .arg(&log)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("failed to spawn redis-server (is it installed? see scripts/install-redis.sh)");
        let mut server = RedisServer { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("(exited: {status})\n{}", tail(&log, 30)));
            }
            // -NOAUTH: up, with --requirepass.
            if quick_query(port, b"PING\r\n")
                .is_some_and(|r| r.starts_with(b"+PONG") || r.starts_with(b"-NOAUTH"))
            {
                return Ok(server);
            }
            if Instant::now() >= deadline {
                let msg = format!("(no PONG within 5 s)\n{}", tail(&log, 30));
                drop(server);
                panic!("redis-server on port {port} did not start: {msg}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts a server replicating from `127.0.0.1:<primary_port>`. Does not
    /// wait for the link to come up (see [`Cluster::start`]).
    pub fn replica_of(primary_port: u16) -> RedisServer {
        Self::start_with(&["--replicaof", "127.0.0.1", &primary_port.to_string()])
    }

    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Path of the server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Runs `redis-cli -h 127.0.0.1 -p <port> <args>`; returns stdout, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    /// Sends one command on a fresh connection; returns the raw RESP reply.
    pub fn query(&self, args: &[&str]) -> Vec<u8> {
        let mut c = RawConn::connect(self.port);
        c.send(&resp(args));
        c.read_reply()
    }

    /// Kills the server now (SIGKILL) and reaps it. Idempotent.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `INFO <section>` as a map of `key -> value`.
    pub fn info(&self, section: &str) -> HashMap<String, String> {
        let reply = self.query(&["INFO", section]);
        parse_info(&bulk_text(&reply))
    }

    /// Calls per command since the last reset, from `INFO commandstats`:
    /// `cmdstat_get:calls=3,...` becomes `{"get": 3}`; subcommands appear as
    /// `"config|get"`.
    pub fn commandstats(&self) -> HashMap<String, u64> {
        self.info("commandstats")
            .into_iter()
            .filter_map(|(k, v)| {
                let name = k.strip_prefix("cmdstat_")?.to_string();
                let calls = v
                    .split(',')
                    .find_map(|f| f.strip_prefix("calls="))?
                    .parse()
                    .ok()?;
                Some((name, calls))
            })
            .collect()
    }

    /// Calls of one command since the last reset (0 if never called).
    pub fn calls(&self, command: &str) -> u64 {
        self.commandstats().get(command).copied().unwrap_or(0)
    }

    /// `CONFIG RESETSTAT`.
    pub fn reset_stats(&self) {
        let reply = self.query(&["CONFIG", "RESETSTAT"]);
        assert_eq!(reply, b"+OK\r\n", "CONFIG RESETSTAT failed");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The payload of a bulk string reply (`$n\r\n...\r\n` or RESP3 verbatim
/// `=n\r\ntxt:...`), as text. Panics on anything else.
pub fn bulk_text(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    let (head, rest) = text.split_once("\r\n").unwrap_or((&text, ""));
    match head.as_bytes().first() {
        Some(b'$') => rest.strip_suffix("\r\n").unwrap_or(rest).to_string(),
        Some(b'=') => {
            let body = rest.strip_suffix("\r\n").unwrap_or(rest);
            body.get(4..).unwrap_or("").to_string()
        }
        _ => panic!("expected a bulk string, got {text:?}"),
    }
}

// ---------------------------------------------------------------------------
// Cluster

/// A primary and its replicas, all on loopback.
pub struct Cluster {
    pub primary: RedisServer,
    pub replicas: Vec<RedisServer>,
}

impl Cluster {
    /// Starts a primary and `n_replicas` replicas (REPLICAOF) and waits until
    /// every replica reports `master_link_status:up` (at most 10 s).
    pub fn start(n_replicas: usize) -> Cluster {
        let primary = RedisServer::start();
        let replicas: Vec<RedisServer> = (0..n_replicas)
            .map(|_| RedisServer::replica_of(primary.port))
            .collect();
        let cluster = Cluster { primary, replicas };
        for r in &cluster.replicas {
            let up = wait_until(Duration::from_secs(10), || {
                r.info("replication")
                    .get("master_link_status")
                    .map(String::as_str)
                    == Some("up")
            });
            if !up {
                panic!(
                    "replica on port {} did not link to primary {} within 10 s; replica log tail:\n{}",
                    r.port,
                    cluster.primary.port,
                    tail(&r.log_path(), 30)
                );
            }
        }
        cluster
    }

    /// Waits until every replica's `slave_repl_offset` has reached the
    /// primary's `master_repl_offset` as of this call (at most 5 s).
    pub fn wait_replicated(&self) {
        let target: u64 = offset(&self.primary.info("replication"), "master_repl_offset");
        for r in &self.replicas {
            let mut seen = 0;
            let ok = wait_until(Duration::from_secs(5), || {
                seen = offset(&r.info("replication"), "slave_repl_offset");
                seen >= target
            });
            assert!(
                ok,
                "replica on port {} stuck at offset {seen}, primary at {target}",
                r.port
            );
        }
    }

    /// `CONFIG RESETSTAT` on every server.
    pub fn reset_stats(&self) {
        self.primary.reset_stats();
        for r in &self.replicas {
            r.reset_stats();
        }
    }
}

fn offset(info: &HashMap<String, String>, key: &str) -> u64 {
    info.get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO replication has no numeric {key}: {info:?}"))
}

// ---------------------------------------------------------------------------
// Nearby

/// A running `nearby` sidecar. Dropping it sends SIGTERM, waits up to 3 s,
/// then SIGKILLs. If the test is panicking, the sidecar's log tail is printed.
///
/// Its log (stdout and stderr) is checked when it stops ([`Nearby::stop`] or
/// the drop at the end of the test): a WARN or ERROR line that the test did
/// not declare with [`Nearby::expect_log`] fails the test.
pub struct Nearby {
    pub port: u16,
    pub admin_port: u16,
    child: Child,
    log: PathBuf,
    /// WARN/ERROR lines the test declared as expected.
    expected: Mutex<Vec<log_check::Expected>>,
    /// Whether the log is still to be checked: once, when the sidecar stops;
    /// never for a start that failed.
    check_log: bool,
    _dir: tempfile::TempDir,
}

impl Nearby {
    /// Spawns `nearby run --listen 127.0.0.1:<port> --admin 127.0.0.1:<admin_port>`
    /// plus `args`, with every `NEARBY_*` variable removed from its environment
    /// and `RUST_LOG=info`; waits (at most 10 s) until it answers `CLIENT
    /// GETNAME` itself (`$-1`, or `-NOAUTH` when started with
    /// `--requirepass`). Panics with the log otherwise.
    pub fn start(args: &[&str]) -> Nearby {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(args) {
                Ok(n) => return n,
                Err(log) if is_addr_in_use(&log) => last = log,
                Err(log) => panic!("nearby failed to start:\n{log}"),
            }
        }
        panic!("nearby could not find free ports:\n{last}")
    }

    /// Starts a sidecar in front of `cluster`: `--primary <url> --primary-region
    /// primary --replica r1=<url> --replica r2=<url> ...` plus `extra`.
    pub fn start_for(cluster: &Cluster, extra: &[&str]) -> Nearby {
        let args = Self::cluster_args(cluster);
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.extend_from_slice(extra);
        let n = Self::start(&all);
        // Until every upstream has been probed once, unmeasured replicas
        // lose to a measured primary; routing tests start from a measured
        // world (on a loaded machine the first probes can lag the PING).
        n.wait_measured(Duration::from_secs(5));
        n
    }

    /// Waits until `/status` shows an RTT for every upstream, every one
    /// usable, and (with replicas) reads going to a replica: the steady
    /// state of an equidistant loopback cluster.
    pub fn wait_measured(&self, timeout: Duration) -> bool {
        wait_until(timeout, || {
            let Ok((200, body)) = self.http_get("/status") else {
                return false;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
                return false;
            };
            let ups = v["upstreams"].as_array().cloned().unwrap_or_default();
            let measured = ups
                .iter()
                .all(|u| !u["rtt_ms"].is_null() && u["unusable"].is_null());
            let has_replica = ups.iter().any(|u| u["role"] == "replica");
            let target = &v["reads_go_to"];
            measured
                && (!has_replica
                    || target["role"] == "replica"
                    || target["fallback"] == "read_from_primary")
        })
    }

    /// The arguments [`Nearby::start_for`] passes for `cluster`.
    pub fn cluster_args(cluster: &Cluster) -> Vec<String> {
        let mut args = vec![
            "--primary".to_string(),
            cluster.primary.url(),
            "--primary-region".to_string(),
            "primary".to_string(),
            // On loopback every upstream is equally near, and noise on a
            // loaded 2-core machine exceeds the default 2 ms window; a wide
            // window makes near-equals share deterministically (replicas
            // before the primary). Tests of latency routing use relays.
            "--latency-window-ms".to_string(),
            "50".to_string(),
        ];
        for (i, r) in cluster.replicas.iter().enumerate() {
            args.push("--replica".to_string());
            args.push(format!("r{}={}", i + 1, r.url()));
        }
        args
    }

    /// Like [`Nearby::start`], but returns `Err(log)` if the process exits (or
    /// does not become ready within 10 s) instead of panicking.
    pub fn try_start(args: &[&str]) -> Result<Nearby, String> {
        let port = free_port();
        let admin_port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("nearby-sidecar-")
            .tempdir()
            .expect("tempdir");
        let log = dir.path().join("nearby.log");
        let out = File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nearby"));
        cmd.arg("run")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin", &format!("127.0.0.1:{admin_port}")])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // NEARBY_TEST_RUST_LOG: a finer sidecar log while chasing a failure.
            .env(
                "RUST_LOG",
                std::env::var("NEARBY_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("NEARBY_") {
                cmd.env_remove(&key);
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("failed to spawn nearby: {e}"))?;
        let mut n = Nearby {
            port,
            admin_port,
            child,
            log,
            expected: Mutex::new(Vec::new()),
            check_log: false,
            _dir: dir,
        };

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = n.child.try_wait() {
                return Err(format!("nearby exited ({status}); log:\n{}", n.log()));
            }
            // A command the sidecar answers itself: PING goes where reads
            // go, and readiness must neither depend on nor disturb them.
            if let Some(reply) = quick_query(port, &resp(&["CLIENT", "GETNAME"]))
                && (reply.starts_with(b"$-1") || reply.starts_with(b"-NOAUTH"))
            {
                n.check_log = true;
                return Ok(n);
            }
            if Instant::now() >= deadline {
                n.shutdown();
                return Err(format!(
                    "nearby did not answer CLIENT GETNAME within 10 s; log:\n{}",
                    n.log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the sidecar wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `GET <path>` on the admin port: `(status, body)`.
    pub fn http_get(&self, path: &str) -> io::Result<(u16, String)> {
        http_get(self.admin_port, path)
    }

    /// `GET /metrics` body (panics if not 200).
    pub fn metrics(&self) -> String {
        let (status, body) = self.http_get("/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// Waits until `/readyz` answers 200 (at most `timeout`); false otherwise.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        wait_until(timeout, || matches!(self.http_get("/readyz"), Ok((200, _))))
    }

    /// Declares a log line this test expects (the scenario causes it): a line
    /// at `level` (`"WARN"` or `"ERROR"`) containing `substring` does not fail
    /// the test when the sidecar stops. It may appear any number of times,
    /// including none. Declare narrowly: a part of the message, not a prefix
    /// that would match anything.
    pub fn expect_log(&self, level: &str, substring: &str) -> &Self {
        self.expected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(log_check::Expected::new(level, substring));
        self
    }

    /// Sends SIGTERM, waits up to 3 s, then SIGKILLs; then checks the log
    /// (once): panics if it has a WARN or ERROR line not declared with
    /// [`Nearby::expect_log`]. Idempotent.
    pub fn stop(&mut self) {
        self.shutdown();
        if let Some(report) = self.take_log_report() {
            panic!("{report}");
        }
    }

    /// The undeclared WARN/ERROR lines, as a message, if there are any and
    /// the log was not checked yet. Marks the log checked.
    fn take_log_report(&mut self) -> Option<String> {
        if !std::mem::take(&mut self.check_log) {
            return None;
        }
        let log = self.log();
        let expected = self.expected.lock().unwrap_or_else(|e| e.into_inner());
        let bad = log_check::unexpected(&log, &expected);
        if bad.is_empty() {
            return None;
        }
        Some(format!(
            "nearby (port {}) logged {} WARN/ERROR line(s) the test did not expect \
             (declare the ones the scenario causes with Nearby::expect_log(level, substring)):\n{}",
            self.port,
            bad.len(),
            bad.join("\n")
        ))
    }

    /// Sends SIGTERM, waits up to 3 s, then SIGKILLs. Idempotent.
    fn shutdown(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let exited = wait_until(Duration::from_secs(3), || {
                !matches!(self.child.try_wait(), Ok(None))
            });
            if !exited {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for Nearby {
    fn drop(&mut self) {
        self.shutdown();
        let report = self.take_log_report();
        if thread::panicking() {
            // Never panic again while panicking: print the tail (and what
            // would have failed the test) instead.
            eprintln!(
                "---- nearby (port {}) log tail ----\n{}\n----",
                self.port,
                tail(&self.log, 60)
            );
            if let Some(report) = report {
                eprintln!("{report}");
            }
        } else if let Some(report) = report {
            panic!("{report}");
        }
    }
}

fn is_addr_in_use(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("AddrInUse")
}

/// A minimal HTTP/1.1 GET against 127.0.0.1:<port>: `(status, body)`.
pub fn http_get(port: u16, path: &str) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&loopback(port), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other(format!("malformed HTTP response: {text:?}")))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no status in {head:?}")))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

// ---------------------------------------------------------------------------
// RawConn

/// A raw RESP connection for byte-exact tests. Reads time out after 5 s
/// (and panic, so a hung test fails instead of hanging).
pub struct RawConn {
    stream: TcpStream,
    /// Bytes read but not yet returned.
    buf: Vec<u8>,
}

impl RawConn {
    pub fn connect(port: u16) -> RawConn {
        let stream = TcpStream::connect_timeout(&loopback(port), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("RawConn send");
    }

    /// Sends a command as a RESP array of bulk strings.
    pub fn send_cmd(&mut self, args: &[&str]) {
        self.send(&resp(args));
    }

    /// Sends a command and reads its reply.
    pub fn cmd(&mut self, args: &[&str]) -> Vec<u8> {
        self.send_cmd(args);
        self.read_reply()
    }

    /// Everything until the peer closes (or a read error / the 5 s timeout),
    /// including bytes already buffered.
    pub fn read_until_closed(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return out,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Exactly one RESP2/RESP3 reply (a RESP3 attribute is returned together
    /// with the reply it annotates). Panics on timeout or early close.
    pub fn read_reply(&mut self) -> Vec<u8> {
        loop {
            match frame_len(&self.buf) {
                Some(Ok(n)) => return self.buf.drain(..n).collect(),
                Some(Err(e)) => panic!(
                    "malformed RESP ({e}): {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                None => {}
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "connection closed mid-reply; buffered: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!(
                    "read_reply: {e}; buffered: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    pub fn read_n_replies(&mut self, n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|_| self.read_reply()).collect()
    }

    /// True if the peer closes (read returns 0, or the connection is reset)
    /// within 2 s. Bytes that arrive first are kept for `read_reply`.
    pub fn is_closed(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut chunk = [0u8; 16 * 1024];
        let closed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break false;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    break false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        let _ = self.stream.set_read_timeout(Some(Duration::from_secs(5)));
        closed
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

/// Length of the first complete RESP2/RESP3 frame in `buf`: `None` if more
/// bytes are needed, `Some(Err)` if it is malformed. Iterative: it counts the
/// elements still owed instead of recursing, so any nesting depth works.
pub fn frame_len(buf: &[u8]) -> Option<Result<usize, String>> {
    let mut pos = 0usize;
    let mut owed = 1usize;
    while owed > 0 {
        owed -= 1;
        let kind = *buf.get(pos)?;
        let line_end = pos + 1 + find_crlf(&buf[pos + 1..])?;
        let line = &buf[pos + 1..line_end];
        let after = line_end + 2;
        let num = || -> Result<i64, String> {
            std::str::from_utf8(line)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad length {:?}", String::from_utf8_lossy(line)))
        };
        pos = match kind {
            // Simple line types: string, error, integer, null, bool, double, big number.
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => after,
            // Bulk string, bulk error, verbatim string.
            b'$' | b'!' | b'=' => match num() {
                Ok(-1) => after,
                Ok(n) if n >= 0 => {
                    let end = after + n as usize + 2;
                    if buf.len() < end {
                        return None;
                    }
                    if &buf[end - 2..end] != b"\r\n" {
                        return Some(Err("bulk not terminated by CRLF".into()));
                    }
                    end
                }
                Ok(n) => return Some(Err(format!("bad bulk length {n}"))),
                Err(e) => return Some(Err(e)),
            },
            // Array, set, push; map and attribute have two elements per entry.
            b'*' | b'~' | b'>' | b'%' | b'|' => match num() {
                Ok(-1) => after,
                Ok(n) if n >= 0 => {
                    let n = n as usize;
                    owed += match kind {
                        b'%' => 2 * n,
                        // An attribute is followed by the reply it annotates.
                        b'|' => 2 * n + 1,
                        _ => n,
                    };
                    after
                }
                Ok(n) => return Some(Err(format!("bad aggregate length {n}"))),
                Err(e) => return Some(Err(e)),
            },
            other => return Some(Err(format!("unknown type byte {:?}", other as char))),
        };
    }
    Some(Ok(pos))
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}
