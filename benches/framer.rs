//! Framer micro-benchmarks: how fast the session finds request boundaries
//! and the pipes find reply boundaries.
//!
//! Run: `cargo bench --bench framer` (see `bench/README.md`).

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nearby::proto::reply::{ReplyFramer, ReplyLimits};
use nearby::proto::request::{RequestFramer, RequestLimits};

/// One RESP multibulk request.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// 64 pipelined commands, alternating `SET key:N <value>` and `GET key:N`,
/// the shape redis-benchmark -P sends.
fn pipeline_64() -> Vec<u8> {
    let value = vec![b'x'; 32];
    let mut out = Vec::new();
    for i in 0..32 {
        let key = format!("key:{i:012}");
        out.extend(encode(&[b"SET", key.as_bytes(), &value]));
        out.extend(encode(&[b"GET", key.as_bytes()]));
    }
    out
}

/// `MSET k0 v0 k1 v1 ...` with 200,000 arguments after the name.
fn big_mset() -> Vec<u8> {
    let mut args: Vec<Vec<u8>> = vec![b"MSET".to_vec()];
    for i in 0..100_000 {
        args.push(format!("k{i}").into_bytes());
        args.push(format!("v{i}").into_bytes());
    }
    let refs: Vec<&[u8]> = args.iter().map(|a| a.as_slice()).collect();
    encode(&refs)
}

fn request(c: &mut Criterion) {
    let mut g = c.benchmark_group("request_framer");

    let pipe = pipeline_64();
    g.throughput(Throughput::Elements(64));
    g.bench_function("pipeline_64_set_get", |b| {
        let mut framer = RequestFramer::new(RequestLimits::default());
        b.iter(|| {
            let mut buf = BytesMut::from(&pipe[..]);
            let mut n = 0;
            while let Some(cmd) = framer.next(&mut buf).unwrap() {
                black_box(&cmd);
                n += 1;
            }
            assert_eq!(n, 64);
        })
    });

    // The same pipeline arriving in 16 KiB reads is a single read here
    // (it is ~5 KiB); a 200k-argument MSET is not: framing must resume
    // where it stopped on each of its ~100 reads, never rescan.
    let mset = big_mset();
    g.throughput(Throughput::Bytes(mset.len() as u64));
    g.bench_function("mset_200k_args_16k_chunks", |b| {
        b.iter(|| {
            let mut framer = RequestFramer::new(RequestLimits::default());
            let mut buf = BytesMut::with_capacity(mset.len());
            let mut got = None;
            for chunk in mset.chunks(16 * 1024) {
                buf.extend_from_slice(chunk);
                if let Some(cmd) = framer.next(&mut buf).unwrap() {
                    got = Some(cmd);
                }
            }
            let cmd = got.expect("one command");
            assert_eq!(cmd.argc(), 200_001);
            black_box(cmd);
        })
    });
    g.finish();
}

fn reply(c: &mut Criterion) {
    let mut g = c.benchmark_group("reply_framer");
    let cases: [(&str, Vec<u8>); 7] = [
        ("ok", b"+OK\r\n".to_vec()),
        ("bulk_32", {
            let mut v = b"$32\r\n".to_vec();
            v.extend_from_slice(&[b'x'; 32]);
            v.extend_from_slice(b"\r\n");
            v
        }),
        ("null", b"$-1\r\n".to_vec()),
        ("integer", b":1234567\r\n".to_vec()),
        (
            "error",
            b"-ERR wrong number of arguments for 'get' command\r\n".to_vec(),
        ),
        ("mget_10", {
            let mut v = b"*10\r\n".to_vec();
            for i in 0..10 {
                let s = format!("value-{i:026}");
                v.extend_from_slice(format!("${}\r\n{s}\r\n", s.len()).as_bytes());
            }
            v
        }),
        (
            "resp3_map_hgetall_4",
            b"%4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:2\r\n$1\r\nc\r\n,3.5\r\n$1\r\nd\r\n_\r\n".to_vec(),
        ),
    ];
    for (name, raw) in &cases {
        // 64 of the same reply back to back, as a pipelined batch arrives.
        let batch: Vec<u8> = raw.repeat(64);
        g.throughput(Throughput::Elements(64));
        g.bench_function(format!("{name}_x64"), |b| {
            let mut framer = ReplyFramer::new(ReplyLimits::default());
            b.iter(|| {
                let mut buf = BytesMut::from(&batch[..]);
                let mut n = 0;
                while let Some(r) = framer.next(&mut buf).unwrap() {
                    black_box(&r);
                    n += 1;
                }
                assert_eq!(n, 64);
            })
        });
    }
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
    targets = request, reply
}
criterion_main!(benches);
