//! Real client libraries in their default configuration, driven through
//! nearby against a real redis-server: redis-py and ioredis, each doing
//! pipelines, a transaction, pub/sub resubscribe and a blocking pop
//! (`tests/clients/`; `scripts/install-clients.sh` installs them).

use std::path::Path;
use std::process::Command;

use crate::common::{Nearby, RedisServer};

fn run_client(program: &str, script: &str, port: u16) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let out = Command::new(program)
        .arg(script)
        .arg(port.to_string())
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} {script}: {e} (run scripts/install-clients.sh)"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout == "ok\n",
        "{program} {script}: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn world() -> (RedisServer, Nearby) {
    let redis = RedisServer::start();
    let url = redis.url();
    let nearby = Nearby::start(&["--primary", &url, "--primary-region", "p"]);
    (redis, nearby)
}

#[test]
fn redis_py_through_nearby() {
    let (_redis, nearby) = world();
    run_client("python3", "redis_py.py", nearby.port);
}

#[test]
fn ioredis_through_nearby() {
    let (_redis, nearby) = world();
    run_client("node", "ioredis.js", nearby.port);
}
