//! 10,000 concurrent client connections held open and all served.
//! In its own test binary: it needs most of the process's file descriptors.
// The real-binary tier waits on wall-clock time in plain threads.
#![allow(clippy::disallowed_types)]

// The integration harness of `tests/it`; this binary uses only a part of it
// (in `tests/it` every item is used, and dead code there is a warning).
#[allow(dead_code)]
#[path = "it/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Cluster, Nearby, RawConn, resp};

#[test]
fn ten_thousand_concurrent_clients() {
    const N: usize = 10_000;
    let cluster = Cluster::start(1);
    let nearby = Nearby::start_for(&cluster, &["--max-clients", "10100"]);
    let mut c = RawConn::connect(nearby.port);
    assert_eq!(c.cmd(&["SET", "k", "v"]), b"+OK\r\n");
    cluster.wait_replicated();

    let mut conns: Vec<TcpStream> = (0..N)
        .map(|i| {
            let s = TcpStream::connect(("127.0.0.1", nearby.port))
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s
        })
        .collect();
    // Every connection sends a GET and an ECHO; every one is answered.
    for (i, s) in conns.iter_mut().enumerate() {
        let echo = format!("c{i}");
        s.write_all(&[resp(&["GET", "k"]), resp(&["ECHO", &echo])].concat())
            .unwrap();
    }
    for (i, s) in conns.iter_mut().enumerate() {
        let echo = format!("c{i}");
        let want = format!("$1\r\nv\r\n${}\r\n{echo}\r\n", echo.len()).into_bytes();
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("connection {i}: {e}"));
        assert_eq!(got, want, "connection {i}");
    }
    let m = nearby.metrics();
    let clients: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("nearby_client_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(clients >= N as f64, "{clients} connections counted");
    assert_eq!(c.cmd(&["ECHO", "still"]), b"$5\r\nstill\r\n");
    drop(conns);
}
