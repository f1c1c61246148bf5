//! Metrics, admin endpoints and status, checked against known traffic.

use std::time::Duration;

use crate::common::{Cluster, Nearby, RawConn, wait_until};

/// The value of one sample line `name{labels} value` whose labels include
/// every `label="value"` in `want`.
fn sample(metrics: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(r) => {
                let (labels, v) = r.split_once('}')?;
                (labels, v)
            }
            None => ("", rest),
        };
        if !rest.starts_with('{') && !rest.starts_with(' ') {
            return None;
        }
        let ok = want
            .iter()
            .all(|(k, v)| labels.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
        if ok { value.trim().parse().ok() } else { None }
    })
}

fn sum(metrics: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, v) = rest.split_once('}')?;
            want.iter()
                .all(|(k, val)| labels.split(',').any(|kv| kv == format!("{k}=\"{val}\"")))
                .then(|| v.trim().parse::<f64>().ok())?
        })
        .sum()
}

#[test]
fn request_counts_are_exact_by_upstream_role_and_kind() {
    let cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &["--region", "mad"]);
    assert!(nearby.wait_ready(Duration::from_secs(5)));
    // The harness's readiness PING is a command too: count from here.
    let before = nearby.metrics();
    let commands0 = sample(&before, "nearby_commands_total", &[]).unwrap_or(0.0);
    let local0 = sample(
        &before,
        "nearby_requests_total",
        &[("upstream", "nearby"), ("kind", "other")],
    )
    .unwrap_or(0.0);
    let mut c = RawConn::connect(nearby.port);
    const M: usize = 37;
    const N: usize = 53;
    for i in 0..M {
        assert_eq!(c.cmd(&["SET", &format!("k{i}"), "v"]), b"+OK\r\n");
    }
    cluster.wait_replicated();
    for i in 0..N {
        assert_eq!(c.cmd(&["GET", &format!("k{}", i % M)]), b"$1\r\nv\r\n");
    }
    let m = nearby.metrics();
    let primary = cluster.primary.addr().to_string();
    let replica = cluster.replicas[0].addr().to_string();
    let writes = sample(
        &m,
        "nearby_requests_total",
        &[
            ("upstream", &primary),
            ("region", "primary"),
            ("role", "primary"),
            ("kind", "write"),
        ],
    );
    assert_eq!(writes, Some(M as f64), "{m}");
    let reads = sample(
        &m,
        "nearby_requests_total",
        &[
            ("upstream", &replica),
            ("region", "r1"),
            ("role", "replica"),
            ("kind", "read"),
        ],
    );
    assert_eq!(reads, Some(N as f64));
    assert_eq!(
        sum(&m, "nearby_requests_total", &[("kind", "read")]),
        N as f64
    );
    assert_eq!(
        sum(&m, "nearby_requests_total", &[("kind", "write")]),
        M as f64
    );
    // Probes are counted separately, never as requests.
    assert!(sum(&m, "nearby_probes_total", &[("result", "ok")]) >= 2.0);
    assert_eq!(
        sample(&m, "nearby_commands_total", &[]),
        Some(commands0 + (M + N) as f64)
    );
    // Histograms, with buckets from 50 µs.
    let count = sample(
        &m,
        "nearby_request_duration_seconds_count",
        &[("upstream", &replica), ("kind", "read")],
    );
    assert_eq!(count, Some(N as f64));
    assert!(
        m.contains("nearby_request_duration_seconds_bucket{") && m.contains("le=\"0.00005\""),
        "no explicit buckets"
    );
    let inf = sample(
        &m,
        "nearby_request_duration_seconds_bucket",
        &[("upstream", &replica), ("kind", "read"), ("le", "+Inf")],
    );
    assert_eq!(inf, Some(N as f64));
    assert_eq!(sample(&m, "nearby_client_connections", &[]), Some(1.0));
    assert_eq!(
        sample(
            &m,
            "nearby_upstream_healthy",
            &[("upstream", &replica), ("role", "replica")]
        ),
        Some(1.0)
    );
    // A local command is counted once, as served by the sidecar.
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), b"$-1\r\n");
    let m = nearby.metrics();
    assert_eq!(
        sample(
            &m,
            "nearby_requests_total",
            &[
                ("upstream", "nearby"),
                ("role", "sidecar"),
                ("kind", "other")
            ]
        ),
        Some(local0 + 1.0)
    );
    assert_eq!(
        sample(&m, "nearby_commands_total", &[]),
        Some(commands0 + (M + N + 1) as f64)
    );
}

#[test]
fn rtt_gauges_follow_the_relay() {
    let cluster = Cluster::start(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let relay = rt
        .block_on(nearby::lab::relay::Relay::start(
            "127.0.0.1:0".parse().unwrap(),
            cluster.replicas[0].addr(),
            Duration::from_millis(30),
        ))
        .unwrap();
    let nearby = Nearby::start(&[
        "--primary",
        &cluster.primary.url(),
        "--replica",
        &format!("far=redis://{}", relay.local_addr()),
        "--probe-interval-ms",
        "100",
    ]);
    let label = relay.local_addr().to_string();
    let mut rtt = None;
    let ok = wait_until(Duration::from_secs(5), || {
        rtt = sample(
            &nearby.metrics(),
            "nearby_upstream_rtt_seconds",
            &[("upstream", &label)],
        );
        rtt.is_some_and(|r| r > 0.0)
    });
    assert!(ok, "no RTT gauge");
    // Let the EWMA settle on the relay's 30 ms.
    std::thread::sleep(Duration::from_millis(1500));
    let rtt = sample(
        &nearby.metrics(),
        "nearby_upstream_rtt_seconds",
        &[("upstream", &label)],
    )
    .unwrap();
    assert!((0.029..0.060).contains(&rtt), "rtt {rtt}");
    let primary_rtt = sample(
        &nearby.metrics(),
        "nearby_upstream_rtt_seconds",
        &[("upstream", &cluster.primary.addr().to_string())],
    )
    .unwrap();
    assert!(primary_rtt < 0.010, "primary rtt {primary_rtt}");
    let lag = sample(
        &nearby.metrics(),
        "nearby_upstream_replication_lag_seconds",
        &[("upstream", &label)],
    );
    assert!(lag.is_some_and(|l| l < 2.0), "lag {lag:?}");
}

#[test]
fn readyz_follows_what_can_be_served() {
    let mut cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &["--probe-interval-ms", "100", "--fall", "2"]);
    assert!(nearby.wait_ready(Duration::from_secs(5)));
    assert_eq!(nearby.http_get("/healthz").unwrap().0, 200);
    for up in ["primary in primary", "replica in r1"] {
        nearby
            .expect_log("WARN", &format!("upstream is down upstream={up}"))
            .expect_log("WARN", &format!("upstream marked down upstream={up}"));
    }
    // With the primary gone, the replica still serves reads: ready.
    cluster.primary.kill();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(nearby.http_get("/readyz").unwrap().0, 200);
    // With nothing left: 503.
    cluster.replicas[0].kill();
    assert!(wait_until(Duration::from_secs(5), || matches!(
        nearby.http_get("/readyz"),
        Ok((503, _))
    )));
    assert_eq!(nearby.http_get("/healthz").unwrap().0, 200);
}

#[test]
fn status_lists_every_region_and_never_a_password() {
    let primary = crate::common::RedisServer::start_with(&["--requirepass", "hunter2-secret"]);
    let replica = crate::common::RedisServer::start_with(&[
        "--replicaof",
        "127.0.0.1",
        &primary.port.to_string(),
        "--masterauth",
        "hunter2-secret",
        "--requirepass",
        "hunter2-secret",
    ]);
    let nearby = Nearby::start(&[
        "--primary",
        &format!("redis://default:hunter2-secret@127.0.0.1:{}", primary.port),
        "--primary-region",
        "iad",
        "--replica",
        &format!("ams=redis://:hunter2-secret@127.0.0.1:{}", replica.port),
        "--region",
        "ams",
        "--probe-interval-ms",
        "100",
        // Equidistant on loopback: a wide window keeps reads on the replica
        // whatever the noise (this test is about status, not latency).
        "--latency-window-ms",
        "50",
    ]);
    assert!(nearby.wait_ready(Duration::from_secs(5)));
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "k", "v"]), b"+OK\r\n");
    std::thread::sleep(Duration::from_millis(500));
    let (code, body) = nearby.http_get("/status").unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["region"], "ams");
    assert_eq!(status["primary_region"], "iad");
    assert_eq!(status["read_regions"], serde_json::json!(["ams"]));
    assert_eq!(status["upstreams"].as_array().unwrap().len(), 2);
    assert_eq!(status["reads_go_to"]["region"], "ams");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nearby"))
        .args([
            "status",
            "--admin",
            &format!("127.0.0.1:{}", nearby.admin_port),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    for needle in ["iad", "ams", "primary", "replica", "reads go to"] {
        assert!(table.contains(needle), "{needle} missing from:\n{table}");
    }
    let json = std::process::Command::new(env!("CARGO_BIN_EXE_nearby"))
        .args([
            "status",
            "--json",
            "--admin",
            &format!("127.0.0.1:{}", nearby.admin_port),
        ])
        .output()
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(parsed["primary_region"], "iad");

    for text in [body, nearby.metrics(), nearby.log(), table.to_string()] {
        assert!(!text.contains("hunter2"), "secret leaked in:\n{text}");
    }
}
