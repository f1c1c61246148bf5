//! Plain GET/SET cost no heap allocation per request on the hot path:
//! the sidecar runs in this process under a counting allocator, a client
//! that itself allocates nothing sends thousands of commands, and the
//! allocations per request are counted. (Background work — probes, metric
//! upkeep — allocates a little per second; it is amortized here, which is
//! why the bound is a small fraction, not zero.)
// The real-binary tier waits on wall-clock time in plain threads.
#![allow(clippy::disallowed_types)]

// The integration harness of `tests/it`; this binary uses only a part of it
// (in `tests/it` every item is used, and dead code there is a warning).
#[allow(dead_code)]
#[path = "it/common/mod.rs"]
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{RedisServer, free_port, wait_until};
use nearby::cli::ConfigArgs;
use nearby::config::Config;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn get_and_set_allocate_nothing_per_request() {
    let primary = RedisServer::start();
    let replica = RedisServer::replica_of(primary.port);
    let port = free_port();
    let args = ConfigArgs {
        listen: Some(format!("127.0.0.1:{port}")),
        admin: Some(format!("127.0.0.1:{}", free_port())),
        primary: Some(primary.url()),
        replicas: vec![format!("r1={}", replica.url())],
        latency_window_ms: Some(50),
        ..ConfigArgs::default()
    };
    let config = Config::from_parts(&args, None, None).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = rt.block_on(nearby::app::run_until(
            config,
            std::future::pending::<()>(),
            None,
        ));
    });
    assert!(wait_until(Duration::from_secs(10), || TcpStream::connect(
        ("127.0.0.1", port)
    )
    .is_ok()));

    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let set = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
    let get = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
    let mut reply = [0u8; 64];
    let mut round = |s: &mut TcpStream, cmd: &[u8], want: &[u8]| {
        s.write_all(cmd).unwrap();
        s.read_exact(&mut reply[..want.len()]).unwrap();
        assert_eq!(&reply[..want.len()], want);
    };
    // Warm up: pipes connected, buffers grown, the replica caught up.
    round(&mut s, set, b"+OK\r\n");
    assert!(wait_until(Duration::from_secs(5), || {
        replica.query(&["GET", "key"]) == b"$5\r\nvalue\r\n"
    }));
    for _ in 0..2000 {
        round(&mut s, set, b"+OK\r\n");
        round(&mut s, get, b"$5\r\nvalue\r\n");
    }

    const N: u64 = 10_000;
    let before = ALLOCS.load(Ordering::Relaxed);
    let start = std::time::Instant::now();
    for _ in 0..N / 2 {
        round(&mut s, set, b"+OK\r\n");
        round(&mut s, get, b"$5\r\nvalue\r\n");
    }
    let took = start.elapsed();
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    // The background's own rate (probes every second, metric upkeep),
    // measured idle for as long: what is left is the requests'.
    let idle_from = ALLOCS.load(Ordering::Relaxed);
    std::thread::sleep(took);
    let background = ALLOCS.load(Ordering::Relaxed) - idle_from;
    let per_request = allocs.saturating_sub(background) as f64 / N as f64;
    println!(
        "{allocs} allocations for {N} requests in {took:?}, {background} idle in as long: {per_request:.4} per request"
    );
    // What remains is amortized block allocation (channel segments and
    // histogram buckets, one per many requests): measured 0.037. One per
    // request, the thing this test rules out, would be 1.0.
    assert!(
        per_request < 0.1,
        "{allocs} allocations for {N} requests, {background} in background ({per_request:.4} per request)"
    );
}
