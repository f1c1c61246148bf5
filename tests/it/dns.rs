//! DNS discovery against a fake nameserver on loopback: a replica name with
//! two addresses becomes two upstreams, follows record changes, survives a
//! failing nameserver, and a primary name is connected by trying every
//! address.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{
    Nearby, RawConn, RedisServer, frame_len, free_port, parse_info, resp, wait_until,
};

// ---------------------------------------------------------------------------
// A fake DNS server: answers A and AAAA queries from a table the test can
// change while it runs. Hand-encoded, UDP only, one question per query.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Answer,
    ServFail,
}

struct Zone {
    records: HashMap<String, Vec<IpAddr>>,
    ttl: u32,
    mode: Mode,
}

struct FakeDns {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeDns {
    fn start() -> FakeDns {
        let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind fake DNS");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let zone = Arc::new(Mutex::new(Zone {
            records: HashMap::new(),
            ttl: 1,
            mode: Mode::Answer,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (z, s) = (zone.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..n], &z.lock().unwrap()) {
                    let _ = sock.send_to(&reply, peer);
                }
            }
        });
        FakeDns {
            addr,
            zone,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, name: &str, ips: &[&str], ttl: u32) {
        let mut z = self.zone.lock().unwrap();
        z.records.insert(
            name.to_ascii_lowercase(),
            ips.iter().map(|s| s.parse().unwrap()).collect(),
        );
        z.ttl = ttl;
    }

    fn set_mode(&self, mode: Mode) {
        self.zone.lock().unwrap().mode = mode;
    }

    /// Stops answering at all (the socket closes).
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop();
    }
}

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// The response to one query, or `None` for a packet that is not one.
fn answer(q: &[u8], zone: &Zone) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    // The question: labels, then type and class.
    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(pos)? as usize;
        pos += 1;
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(pos..pos + len)?).to_ascii_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*q.get(pos)?, *q.get(pos + 1)?]);
    let question_end = pos + 4;
    q.get(..question_end)?;
    let name = labels.join(".");

    let (rcode, ips): (u8, Vec<IpAddr>) = match (zone.mode, zone.records.get(&name)) {
        (Mode::ServFail, _) => (2, vec![]),
        (Mode::Answer, None) => (3, vec![]),
        (Mode::Answer, Some(ips)) => (
            0,
            ips.iter()
                .copied()
                .filter(|ip| match qtype {
                    TYPE_A => ip.is_ipv4(),
                    TYPE_AAAA => ip.is_ipv6(),
                    _ => false,
                })
                .collect(),
        ),
    };
    let mut out = Vec::with_capacity(question_end + ips.len() * 28);
    out.extend_from_slice(&q[..2]); // id
    // QR, the query's opcode and RD, AA, RA, rcode.
    out.push(0x80 | (q[2] & 0x78) | 0x04 | (q[2] & 0x01));
    out.push(0x80 | rcode);
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(ips.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&q[12..question_end]);
    for ip in ips {
        out.extend_from_slice(&[0xc0, 0x0c]); // the question's name
        let (rtype, data) = match ip {
            IpAddr::V4(v4) => (TYPE_A, v4.octets().to_vec()),
            IpAddr::V6(v6) => (TYPE_AAAA, v6.octets().to_vec()),
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // IN
        out.extend_from_slice(&zone.ttl.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// A redis-server on a chosen address and port (the harness binds 127.0.0.1
// and picks the port; two replicas here share one port on two addresses).

struct BoundRedis {
    addr: SocketAddr,
    child: Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl BoundRedis {
    fn start(addr: SocketAddr, args: &[&str]) -> BoundRedis {
        let dir = tempfile::Builder::new()
            .prefix("nearby-dns-redis-")
            .tempdir()
            .unwrap();
        let log = dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &addr.port().to_string()])
            .args(["--bind", &addr.ip().to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no", "--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let mut s = BoundRedis {
            addr,
            child,
            _dir: dir,
            log,
        };
        let up = wait_until(Duration::from_secs(5), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        if !up {
            let _ = s.child.kill();
            panic!(
                "redis-server on {addr} did not start:\n{}",
                std::fs::read_to_string(&s.log).unwrap_or_default()
            );
        }
        s
    }

    fn query(&self, args: &[&str]) -> Vec<u8> {
        query_at(self.addr, args)
    }

    fn info(&self, section: &str) -> HashMap<String, String> {
        let reply = String::from_utf8_lossy(&self.query(&["INFO", section])).into_owned();
        parse_info(reply.split_once("\r\n").map_or("", |(_, body)| body))
    }

    /// GET calls since the last `CONFIG RESETSTAT`.
    fn gets(&self) -> u64 {
        self.info("commandstats")
            .get("cmdstat_get")
            .and_then(|v| v.split(',').find_map(|f| f.strip_prefix("calls=")))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }

    fn reset_stats(&self) {
        assert_eq!(self.query(&["CONFIG", "RESETSTAT"]), b"+OK\r\n");
    }
}

impl Drop for BoundRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn query_at(addr: SocketAddr, args: &[&str]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&resp(args)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(Ok(n)) = frame_len(&buf) {
            buf.truncate(n);
            return buf;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => panic!("{addr}: no reply to {args:?}"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Reads through the sidecar from several concurrent clients, each
/// pipelining batches of GETs; asserts every reply is the expected value.
fn read_burst(nearby: &Nearby, key: &str, value: &str) {
    let expected = format!("${}\r\n{value}\r\n", value.len()).into_bytes();
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (port, key, expected) = (nearby.port, key.to_owned(), expected.clone());
            thread::spawn(move || {
                let mut c = RawConn::connect(port);
                for _ in 0..10 {
                    let batch: Vec<u8> = (0..20).flat_map(|_| resp(&["GET", &key])).collect();
                    c.send(&batch);
                    for reply in c.read_n_replies(20) {
                        assert_eq!(
                            String::from_utf8_lossy(&reply),
                            String::from_utf8_lossy(&expected)
                        );
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("reader thread");
    }
}

/// Until `timeout`: resets both replicas' stats, reads, and returns the GET
/// counts as soon as `done(first, second)` holds (the last counts otherwise).
fn reads_until(
    nearby: &Nearby,
    replicas: [&BoundRedis; 2],
    timeout: Duration,
    done: impl Fn(u64, u64) -> bool,
) -> (u64, u64) {
    let deadline = Instant::now() + timeout;
    loop {
        for r in replicas {
            r.reset_stats();
        }
        read_burst(nearby, "dns:key", "hello");
        let counts = (replicas[0].gets(), replicas[1].gets());
        if done(counts.0, counts.1) || Instant::now() >= deadline {
            return counts;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn link_up(r: &BoundRedis) -> bool {
    r.info("replication")
        .get("master_link_status")
        .map(String::as_str)
        == Some("up")
}

#[test]
fn replica_name_follows_its_records() {
    let primary = RedisServer::start();
    let port = free_port();
    let p = primary.port.to_string();
    let near = BoundRedis::start(
        SocketAddr::from(([127, 0, 0, 1], port)),
        &["--replicaof", "127.0.0.1", &p],
    );
    let far = BoundRedis::start(
        SocketAddr::from(([127, 0, 0, 2], port)),
        &["--replicaof", "127.0.0.1", &p],
    );
    assert!(
        wait_until(Duration::from_secs(10), || link_up(&near) && link_up(&far)),
        "replicas did not link to the primary"
    );
    assert_eq!(primary.query(&["SET", "dns:key", "hello"]), b"+OK\r\n");
    assert!(wait_until(Duration::from_secs(5), || {
        [&near, &far]
            .iter()
            .all(|r| r.query(&["GET", "dns:key"]) == b"$5\r\nhello\r\n")
    }));

    let mut dns = FakeDns::start();
    dns.set("replicas.test", &["127.0.0.1", "127.0.0.2"], 1);
    let dns_server = dns.addr.to_string();
    let replica = format!("ams=redis://replicas.test:{port}");
    let nearby = Nearby::start(&[
        "--primary",
        &primary.url(),
        "--replica",
        &replica,
        "--dns-server",
        &dns_server,
        "--dns-min-ttl-s",
        "1",
        "--latency-window-ms",
        "1000",
    ]);

    // One name, two addresses: two upstreams, both serve reads.
    let (a, b) = reads_until(&nearby, [&near, &far], Duration::from_secs(10), |a, b| {
        a > 0 && b > 0
    });
    assert!(
        a > 0 && b > 0,
        "both addresses should serve reads: 127.0.0.1 got {a}, 127.0.0.2 got {b}\n{}",
        nearby.log()
    );
    assert!(
        nearby
            .log()
            .contains("replica replicas.test resolves to [127.0.0.1, 127.0.0.2]"),
        "{}",
        nearby.log()
    );

    // The record loses 127.0.0.1: within a few TTLs reads go to 127.0.0.2 only.
    dns.set("replicas.test", &["127.0.0.2"], 1);
    let (a, b) = reads_until(&nearby, [&near, &far], Duration::from_secs(10), |a, b| {
        a == 0 && b > 0
    });
    assert!(
        a == 0 && b > 0,
        "after the change 127.0.0.1 got {a} reads, 127.0.0.2 got {b}\n{}",
        nearby.log()
    );
    assert!(
        nearby.log().contains(
            "replica replicas.test now resolves to [127.0.0.2]; was [127.0.0.1, 127.0.0.2]"
        ),
        "{}",
        nearby.log()
    );

    // SERVFAIL: the last good address keeps serving, one warning.
    nearby.expect_log(
        "WARN",
        "replica replicas.test does not resolve; keeping [127.0.0.2]",
    );
    dns.set_mode(Mode::ServFail);
    assert!(
        wait_until(Duration::from_secs(10), || nearby.log().contains(
            "replica replicas.test does not resolve; keeping [127.0.0.2]"
        )),
        "{}",
        nearby.log()
    );
    thread::sleep(Duration::from_millis(2500));
    let (a, b) = reads_until(&nearby, [&near, &far], Duration::ZERO, |_, _| true);
    assert!(
        a == 0 && b > 0,
        "127.0.0.1 got {a}, 127.0.0.2 got {b}\n{}",
        nearby.log()
    );
    let warnings = nearby.log().matches("does not resolve").count();
    assert_eq!(
        warnings,
        1,
        "one warning per failure streak:\n{}",
        nearby.log()
    );

    // No nameserver at all (lookups time out): still the last good address.
    dns.stop();
    thread::sleep(Duration::from_secs(4));
    let (a, b) = reads_until(&nearby, [&near, &far], Duration::ZERO, |_, _| true);
    assert!(
        a == 0 && b > 0,
        "127.0.0.1 got {a}, 127.0.0.2 got {b}\n{}",
        nearby.log()
    );
    assert_eq!(nearby.log().matches("does not resolve").count(), 1);
}

#[test]
fn primary_name_tries_every_address() {
    // Listens on 127.0.0.1 only; the name also gives ::1 (first, as AAAA
    // often comes first) and 127.0.0.2, where nothing listens on that port.
    let primary = RedisServer::start();
    let dns = FakeDns::start();
    dns.set("primary.test", &["::1", "127.0.0.2", "127.0.0.1"], 30);
    let url = format!("redis://primary.test:{}", primary.port);
    let dns_server = dns.addr.to_string();
    let nearby = Nearby::start(&["--primary", &url, "--dns-server", &dns_server]);

    let mut c = RawConn::connect(nearby.port);
    assert_eq!(
        c.cmd(&["SET", "dns:primary", "v"]),
        b"+OK\r\n",
        "{}",
        nearby.log()
    );
    assert_eq!(c.cmd(&["GET", "dns:primary"]), b"$1\r\nv\r\n");
    assert_eq!(primary.query(&["GET", "dns:primary"]), b"$1\r\nv\r\n");
}

#[test]
fn a_promotion_behind_the_primary_name_moves_writes() {
    // A managed service promotes a replica and moves the primary's name to
    // it: both servers on one port, the name first on 127.0.0.1 (the
    // primary), then on 127.0.0.3 (the promoted replica).
    let port = free_port();
    let a = BoundRedis::start(SocketAddr::from(([127, 0, 0, 1], port)), &[]);
    let b = BoundRedis::start(
        SocketAddr::from(([127, 0, 0, 3], port)),
        &["--replicaof", "127.0.0.1", &port.to_string()],
    );
    assert!(
        wait_until(Duration::from_secs(10), || link_up(&b)),
        "the replica did not link"
    );
    let dns = FakeDns::start();
    dns.set("primary.test", &["127.0.0.1"], 1);
    let url = format!("redis://primary.test:{port}");
    let dns_server = dns.addr.to_string();
    let nearby = Nearby::start(&[
        "--primary",
        &url,
        "--dns-server",
        &dns_server,
        "--probe-interval-ms",
        "200",
        "--dns-min-ttl-s",
        "1",
    ]);
    nearby
        .expect_log("WARN", "the primary changed")
        .expect_log("WARN", "the primary says it is a replica");
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "k", "1"]), b"+OK\r\n");
    // The promotion, then the old primary follows it, then the name moves.
    assert_eq!(b.query(&["REPLICAOF", "NO", "ONE"]), b"+OK\r\n");
    assert_eq!(
        a.query(&["REPLICAOF", "127.0.0.3", &port.to_string()]),
        b"+OK\r\n"
    );
    dns.set("primary.test", &["127.0.0.3"], 1);
    // Writes go on without an error: a refused one waits and is sent again.
    let started = Instant::now();
    for i in 0..20 {
        let v = i.to_string();
        assert_eq!(
            c.cmd(&["SET", "k", &v]),
            b"+OK\r\n",
            "write {i} after {:?}:\n{}",
            started.elapsed(),
            nearby.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.query(&["GET", "k"]), b"$2\r\n19\r\n");
    let metrics = nearby.metrics();
    assert!(
        metrics.contains("nearby_primary_changes_total{source=\"dns\"} 1"),
        "{metrics}"
    );
}
