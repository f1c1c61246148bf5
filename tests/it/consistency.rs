//! Read-your-writes against a replica that really lags: its replication
//! link runs through a relay that delays it by ~300 ms.

use std::time::{Duration, Instant};

use crate::common::RawConn;
use crate::common::lagging::{sidecar, world};

/// `pairs` write-then-read pairs on each of `threads` connections; the
/// read goes through `read_port` on a second connection when `split`.
/// Returns the number of stale reads.
fn pairs(port: u16, threads: usize, pairs: usize, split: bool, tag: &str) -> usize {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let tag = tag.to_string();
            std::thread::spawn(move || {
                let mut w = RawConn::connect(port);
                let mut r = if split {
                    Some(RawConn::connect(port))
                } else {
                    None
                };
                let key = format!("{tag}-{t}");
                let mut stale = 0;
                for i in 0..pairs {
                    let v = i.to_string();
                    assert_eq!(w.cmd(&["SET", &key, &v]), b"+OK\r\n");
                    let reader = r.as_mut().unwrap_or(&mut w);
                    let got = reader.cmd(&["GET", &key]);
                    if got != format!("${}\r\n{v}\r\n", v.len()).into_bytes() {
                        stale += 1;
                    }
                }
                stale
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).sum()
}

#[test]
fn eventual_reads_are_stale_and_read_your_writes_are_not() {
    let w = world();
    // Eventual: the setup can fail (most reads right after a write are stale).
    let eventual = sidecar(&w, &[]);
    let stale = pairs(eventual.port, 2, 100, false, "ev");
    assert!(
        stale >= 150,
        "only {stale} of 200 reads were stale: the replica does not lag"
    );
    drop(eventual);

    // Read-your-writes, per connection.
    let ryw = sidecar(&w, &["--consistency", "read-your-writes"]);
    let stale = pairs(ryw.port, 4, 500, false, "conn");
    assert_eq!(stale, 0, "stale reads with read-your-writes");
    let m = ryw.metrics();
    assert!(m.contains("nearby_read_fallbacks_total{reason=\"pinned_after_write\"}"));

    // Once writes stop, reads return to the replica within a second.
    std::thread::sleep(Duration::from_millis(1000));
    w.replica.reset_stats();
    w.primary.reset_stats();
    let mut c = RawConn::connect(ryw.port);
    for _ in 0..50 {
        c.cmd(&["GET", "conn-0"]);
    }
    assert_eq!(
        w.replica.calls("get"),
        50,
        "reads did not return to the replica"
    );
    assert_eq!(w.primary.calls("get"), 0);
}

#[test]
fn sidecar_scope_covers_writes_on_other_connections_and_reads_stay_monotonic() {
    let w = world();
    let ryw = sidecar(
        &w,
        &[
            "--consistency",
            "read-your-writes",
            "--consistency-scope",
            "sidecar",
        ],
    );
    // Write on one pooled connection, read on another.
    let stale = pairs(ryw.port, 4, 300, true, "pool");
    assert_eq!(stale, 0, "stale reads across connections in sidecar scope");

    // Monotonic reads: a reader never sees the counter go back while a
    // writer increments it.
    let port = ryw.port;
    let writer = std::thread::spawn(move || {
        let mut c = RawConn::connect(port);
        for _ in 0..300 {
            c.cmd(&["INCR", "counter"]);
        }
    });
    let mut r = RawConn::connect(ryw.port);
    let mut last = 0i64;
    let end = Instant::now() + Duration::from_secs(30);
    while !writer.is_finished() && Instant::now() < end {
        let reply = r.cmd(&["GET", "counter"]);
        let text = String::from_utf8_lossy(&reply).to_string();
        let v = text
            .lines()
            .nth(1)
            .and_then(|l| l.parse::<i64>().ok())
            .unwrap_or(0);
        assert!(v >= last, "counter went back from {last} to {v}");
        last = v;
    }
    writer.join().unwrap();
}

#[test]
fn a_replica_beyond_max_staleness_serves_no_reads() {
    let w = world();
    // Offsets are sampled every probe (200 ms here), so the lag estimate of
    // a replica ~300 ms behind moves between ~100 and ~500 ms: a 50 ms
    // bound is exceeded at every sample.
    let nearby = sidecar(&w, &["--max-staleness-ms", "50"]);
    nearby.expect_log(
        "WARN",
        "replica lags beyond the staleness bound: excluded from reads",
    );
    let port = nearby.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = RawConn::connect(port);
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 100_000 {
                c.cmd(&["SET", "busy", &i.to_string()]);
                i += 1;
            }
        })
    };
    let unusable = || -> Option<String> {
        let (_, body) = nearby.http_get("/status").ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["upstreams"]
            .as_array()?
            .iter()
            .find(|u| u["role"] == "replica")
            .map(|u| u["unusable"].as_str().unwrap_or("usable").to_string())
    };
    // Writes keep the replica ~300 ms behind: beyond the bound.
    let stale = crate::common::wait_until(Duration::from_secs(5), || {
        unusable().as_deref() == Some("stale")
    });
    assert!(stale, "the lagging replica was never marked stale");
    w.replica.reset_stats();
    let fallbacks = || -> f64 {
        nearby
            .metrics()
            .lines()
            .find_map(|l| l.strip_prefix("nearby_read_fallbacks_total{reason=\"all_stale\"} "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let before = fallbacks();
    let mut r = RawConn::connect(nearby.port);
    for _ in 0..20 {
        r.cmd(&["GET", "busy"]);
    }
    let after = fallbacks();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(w.replica.calls("get"), 0, "a stale replica served reads");
    assert_eq!(
        after - before,
        20.0,
        "reads to the primary counted as all_stale"
    );
    // Once writes stop it catches up and serves again.
    assert!(crate::common::wait_until(
        Duration::from_secs(5),
        || unusable().as_deref() == Some("usable")
    ));
}

/// Right after the primary dies, its replica can still be past the lag
/// bound (nothing has told the sidecar the primary is gone, so the lag is
/// still measured against it). A read that falls back to the dead primary
/// fails to connect; it is then served by that replica, which holds all
/// the dead primary sent it, instead of failing with "connect failed".
#[test]
fn a_read_failed_by_a_dead_primary_is_served_by_a_replica_past_the_bound() {
    let mut w = world();
    let nearby = sidecar(&w, &["--max-staleness-ms", "50"]);
    nearby
        .expect_log(
            "WARN",
            "replica lags beyond the staleness bound: excluded from reads",
        )
        .expect_log("WARN", "marked down")
        .expect_log("WARN", "upstream is down");
    let unusable = || -> Option<String> {
        let (_, body) = nearby.http_get("/status").ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["upstreams"]
            .as_array()?
            .iter()
            .find(|u| u["role"] == "replica")
            .map(|u| u["unusable"].as_str().unwrap_or("usable").to_string())
    };
    // Writes keep the replica ~300 ms behind: beyond the bound.
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "kept", "v"]), b"+OK\r\n");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut i = 0u64;
    while unusable().as_deref() != Some("stale") {
        assert!(
            Instant::now() < deadline,
            "the replica was never marked stale"
        );
        for _ in 0..200 {
            assert_eq!(c.cmd(&["SET", "busy", &i.to_string()]), b"+OK\r\n");
            i += 1;
        }
    }
    // `kept` reached the replica long ago; the primary dies now.
    w.replica.reset_stats();
    w.primary.kill();
    let mut r = RawConn::connect(nearby.port);
    for n in 0..20 {
        assert_eq!(r.cmd(&["GET", "kept"]), b"$1\r\nv\r\n", "read {n}");
    }
    assert_eq!(
        w.replica.calls("get"),
        20,
        "reads not served by the replica"
    );
}
