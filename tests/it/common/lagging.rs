//! A primary and a replica whose replication link runs through a relay
//! that delays it by ~300 ms: a replica that really lags.

use std::time::Duration;

use nearby::lab::relay::Relay;

use super::{Nearby, RedisServer, wait_until};

pub struct World {
    pub primary: RedisServer,
    pub replica: RedisServer,
    _link: Relay,
    pub front: Relay,
    _rt: tokio::runtime::Runtime,
}

/// A primary 5 ms away from the sidecar, and a replica on this host whose
/// replication link is 300 ms each way.
pub fn world() -> World {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let primary = RedisServer::start();
    let any = "127.0.0.1:0".parse().unwrap();
    let link = rt
        .block_on(Relay::start(
            any,
            primary.addr(),
            Duration::from_millis(600),
        ))
        .unwrap();
    let replica = RedisServer::start_with(&[
        "--replicaof",
        "127.0.0.1",
        &link.local_addr().port().to_string(),
    ]);
    let front = rt
        .block_on(Relay::start(any, primary.addr(), Duration::from_millis(5)))
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || {
            replica
                .info("replication")
                .get("master_link_status")
                .map(String::as_str)
                == Some("up")
        }),
        "replica did not sync through the slow link"
    );
    World {
        primary,
        replica,
        _link: link,
        front,
        _rt: rt,
    }
}

pub fn sidecar(w: &World, extra: &[&str]) -> Nearby {
    let mut args = vec![
        "--primary".to_string(),
        format!("redis://{}", w.front.local_addr()),
        "--primary-region".to_string(),
        "iad".to_string(),
        "--replica".to_string(),
        format!("local={}", w.replica.url()),
        "--latency-window-ms".to_string(),
        "1".to_string(),
        "--probe-interval-ms".to_string(),
        "200".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let n = Nearby::start(&argv);
    assert!(n.wait_ready(Duration::from_secs(5)));
    // Let probes find the replica nearer than the primary.
    std::thread::sleep(Duration::from_millis(800));
    n
}
