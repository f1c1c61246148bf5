//! The read-your-writes benchmark, in one run: a 95/5 read/write mix with a
//! replica that lags ~300 ms. For eventual and read-your-writes it prints
//! the share of reads replicas served, the mean read latency and the stale
//! reads seen; it asserts only what must hold (no stale read with
//! read-your-writes; eventual really reads stale data here).

use std::time::{Duration, Instant};

use crate::common::RawConn;
use crate::common::lagging::{sidecar, world};

struct Outcome {
    reads: usize,
    stale: usize,
    read_time: Duration,
    replica_reads: f64,
    primary_reads: f64,
}

fn counter(metrics: &str, role: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("nearby_requests_total{")
                && l.contains(&format!("role=\"{role}\""))
                && l.contains("kind=\"read\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `threads` clients, `ops` operations each: 5% SET of one of 20 own keys,
/// 95% GET of one of them (a deterministic mix, no RNG dependency).
fn mix(port: u16, threads: usize, ops: usize, tag: &str) -> (usize, usize, Duration) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let tag = tag.to_string();
            std::thread::spawn(move || {
                let mut c = RawConn::connect(port);
                let mut version = [0u64; 20];
                let (mut reads, mut stale) = (0, 0);
                let mut read_time = Duration::ZERO;
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ t as u64;
                for _ in 0..ops {
                    // xorshift: a fixed, reproducible sequence.
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let k = (x % 20) as usize;
                    let key = format!("{tag}-{t}-{k}");
                    if x % 100 < 5 {
                        version[k] += 1;
                        let v = version[k].to_string();
                        assert_eq!(c.cmd(&["SET", &key, &v]), b"+OK\r\n");
                    } else {
                        let start = Instant::now();
                        let r = c.cmd(&["GET", &key]);
                        read_time += start.elapsed();
                        reads += 1;
                        let seen = String::from_utf8_lossy(&r)
                            .lines()
                            .nth(1)
                            .and_then(|l| l.parse::<u64>().ok())
                            .unwrap_or(0);
                        if seen < version[k] {
                            stale += 1;
                        }
                    }
                }
                (reads, stale, read_time)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold((0, 0, Duration::ZERO), |a, b| {
            (a.0 + b.0, a.1 + b.1, a.2 + b.2)
        })
}

fn run(extra: &[&str], tag: &str) -> Outcome {
    let w = world();
    let nearby = sidecar(&w, extra);
    let before = nearby.metrics();
    let (reads, stale, read_time) = mix(nearby.port, 4, 1500, tag);
    let after = nearby.metrics();
    Outcome {
        reads,
        stale,
        read_time,
        replica_reads: counter(&after, "replica") - counter(&before, "replica"),
        primary_reads: counter(&after, "primary") - counter(&before, "primary"),
    }
}

#[test]
fn read_your_writes_costs_in_a_95_5_mix() {
    let eventual = run(&[], "ev");
    let ryw = run(&["--consistency", "read-your-writes"], "ryw");
    println!("\n| mode | reads | served by replicas | mean read latency | stale reads |");
    println!("|---|---|---|---|---|");
    for (name, o) in [("eventual", &eventual), ("read-your-writes", &ryw)] {
        let share = o.replica_reads / (o.replica_reads + o.primary_reads).max(1.0);
        println!(
            "| {name} | {} | {:.1}% | {:.2} ms | {} |",
            o.reads,
            share * 100.0,
            o.read_time.as_secs_f64() * 1000.0 / o.reads as f64,
            o.stale
        );
    }
    assert_eq!(ryw.stale, 0, "stale reads with read-your-writes");
    assert!(
        eventual.stale > 0,
        "eventual read nothing stale: the replica does not lag"
    );
    assert_eq!(ryw.replica_reads + ryw.primary_reads, ryw.reads as f64);
}
