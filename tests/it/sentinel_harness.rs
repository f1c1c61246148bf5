//! The sentinel harness (`common::sentinel`) against real processes: three
//! sentinels watching a primary and two replicas carry out a failover. The
//! sidecar is not involved here.

use std::time::{Duration, Instant};

use crate::common::sentinel::Sentinels;
use crate::common::{Cluster, wait_until};

#[test]
fn sentinels_promote_a_replica_and_demote_the_old_primary() {
    let cluster = Cluster::start(2);
    let t0 = Instant::now();
    let sentinels = Sentinels::start(cluster.primary.port, 3, 2, "mymaster", 2);
    eprintln!("sentinels ready after {:?}", t0.elapsed());
    let primary = ("127.0.0.1".to_string(), cluster.primary.port);
    assert_eq!(sentinels.master_addrs(), vec![Some(primary.clone()); 3]);

    let t1 = Instant::now();
    assert_eq!(sentinels.failover(), b"+OK\r\n");

    // Every sentinel names one of the former replicas.
    let replica_ports: Vec<u16> = cluster.replicas.iter().map(|r| r.port).collect();
    let within = Duration::from_secs(10);
    let mut new_port = None;
    let chosen = wait_until(within, || {
        new_port = sentinels.list[0]
            .master_addr("mymaster")
            .filter(|(ip, port)| ip == "127.0.0.1" && replica_ports.contains(port))
            .map(|(_, port)| port);
        new_port.is_some()
    });
    let new_port = new_port.filter(|_| chosen).unwrap_or_else(|| {
        panic!(
            "the first sentinel did not name one of the replicas {replica_ports:?} within 10 s: {:?}",
            sentinels.master_addrs()
        )
    });
    assert!(
        sentinels.wait_master(new_port, within.saturating_sub(t1.elapsed())),
        "sentinels did not all name 127.0.0.1:{new_port} within 10 s: {:?}",
        sentinels.master_addrs()
    );
    eprintln!(
        "all sentinels name 127.0.0.1:{new_port} after {:?}",
        t1.elapsed()
    );
    let promoted = cluster
        .replicas
        .iter()
        .find(|r| r.port == new_port)
        .unwrap();
    let role = promoted.query(&["ROLE"]);
    assert!(
        role.starts_with(b"*3\r\n$6\r\nmaster\r\n"),
        "ROLE of the promoted replica {new_port}: {:?}",
        String::from_utf8_lossy(&role)
    );

    // The old primary is turned into a replica.
    let t2 = Instant::now();
    let mut role = String::new();
    let demoted = wait_until(Duration::from_secs(10), || {
        role = cluster.primary.info("replication")["role"].clone();
        role == "slave"
    });
    assert!(
        demoted,
        "old primary {} still reports role:{role} 10 s after the switch",
        cluster.primary.port
    );
    eprintln!(
        "old primary demoted {:?} after the switch ({:?} after SENTINEL FAILOVER)",
        t2.elapsed(),
        t1.elapsed()
    );
}
