//! Routing micro-benchmarks: classification, read-target selection and
//! latency EWMA updates, all on the per-request hot path.
//!
//! Run: `cargo bench --bench select` (see `bench/README.md`).

use std::hint::black_box;
use std::time::Duration;

use tokio::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use nearby::proto::request::Command;
use nearby::route::command::{CommandTable, classify};
use nearby::route::latency::Latency;
use nearby::route::select::{Candidate, Unusable, select};

fn classification(c: &mut Criterion) {
    let table = CommandTable::builtin();
    let mut g = c.benchmark_group("classify");
    let cases: [(&str, Command); 6] = [
        ("GET", Command::from_args(&[b"GET", b"key:000000000001"])),
        (
            "get_lowercase",
            Command::from_args(&[b"get", b"key:000000000001"]),
        ),
        (
            "SET",
            Command::from_args(&[
                b"SET",
                b"key:000000000001",
                b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            ]),
        ),
        (
            "EVAL_RO",
            Command::from_args(&[b"EVAL_RO", b"return redis.call('GET', KEYS[1])", b"1", b"k"]),
        ),
        (
            "XREAD",
            Command::from_args(&[b"XREAD", b"COUNT", b"10", b"STREAMS", b"s", b"0"]),
        ),
        (
            "XREAD_BLOCK",
            Command::from_args(&[b"XREAD", b"BLOCK", b"0", b"STREAMS", b"s", b"$"]),
        ),
    ];
    for (name, cmd) in &cases {
        g.bench_function(*name, |b| {
            b.iter(|| black_box(classify(&table, black_box(cmd))))
        });
    }
    g.finish();
}

fn cand(cost_ms: f64, outstanding: usize) -> Candidate {
    Candidate {
        unusable: None,
        cost: Some(cost_ms / 1000.0),
        outstanding,
    }
}

fn selection(c: &mut Criterion) {
    let mut g = c.benchmark_group("select_4_candidates");
    // Primary far away, three replicas, two of them within the 2 ms window.
    let spread = [cand(60.0, 0), cand(1.0, 3), cand(2.5, 1), cand(20.0, 0)];
    // One replica down, one stale: the last one wins.
    let degraded = [
        cand(60.0, 0),
        Candidate {
            unusable: Some(Unusable::Down),
            ..cand(1.0, 0)
        },
        Candidate {
            unusable: Some(Unusable::Stale),
            ..cand(2.0, 0)
        },
        cand(30.0, 0),
    ];
    // Nothing measured yet: everyone is in the window.
    let unmeasured = [
        Candidate {
            cost: None,
            ..cand(0.0, 0)
        },
        Candidate {
            cost: None,
            ..cand(0.0, 0)
        },
        Candidate {
            cost: None,
            ..cand(0.0, 2)
        },
        Candidate {
            cost: None,
            ..cand(0.0, 1)
        },
    ];
    for (name, cands) in [
        ("spread", &spread),
        ("degraded", &degraded),
        ("unmeasured", &unmeasured),
    ] {
        g.bench_function(name, |b| {
            let mut rotate = 0usize;
            b.iter(|| {
                rotate = rotate.wrapping_add(1);
                black_box(select(black_box(cands), 0, 0.002, rotate, |_| true))
            })
        });
    }
    g.bench_function("spread_read_your_writes_filter", |b| {
        let mut rotate = 0usize;
        b.iter(|| {
            rotate = rotate.wrapping_add(1);
            black_box(select(black_box(&spread), 0, 0.002, rotate, |i| i != 1))
        })
    });
    g.finish();
}

fn ewma(c: &mut Criterion) {
    let mut g = c.benchmark_group("latency");
    g.bench_function("probe_sample", |b| {
        let mut l = Latency::new();
        let mut x = 0.001f64;
        b.iter(|| {
            x = if x > 0.002 { 0.0005 } else { x + 0.0001 };
            l.probe_sample(black_box(x));
        });
        black_box(l.smoothed_rtt());
    });
    g.bench_function("passive_sample", |b| {
        let mut l = Latency::new();
        let start = Instant::now();
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            // Synthetic clock, 10 µs apart, samples wobbling around 1 ms.
            let now = start + Duration::from_micros(10 * n);
            let sample = 0.001 + ((n % 7) as f64) * 0.0001;
            l.passive_sample(black_box(sample), now);
        });
        black_box(l.cost(start));
    });
    g.bench_function("cost", |b| {
        let mut l = Latency::new();
        let start = Instant::now();
        l.probe_sample(0.001);
        l.passive_sample(0.002, start);
        let now = start + Duration::from_millis(5);
        b.iter(|| black_box(l.cost(black_box(now))));
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
}

criterion_group! {
    name = benches;
    config = config();
    targets = classification, selection, ewma
}
criterion_main!(benches);
