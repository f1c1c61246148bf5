//! The Redis Cluster harness (`common::redis_cluster`) against real
//! processes: a cluster of 3 primaries with 2 replicas each is created,
//! serves a key from its slot's primary, fails over to a replica and moves
//! 100 slots with their keys. The sidecar is not involved here.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::redis_cluster::{ClusterNode, RedisCluster, SLOTS};
use crate::common::{RawConn, resp};

fn ports(nodes: &[&ClusterNode]) -> Vec<u16> {
    nodes.iter().map(|n| n.port).collect()
}

/// Sends `cmds` on one connection to `port`, pipelined in batches; returns
/// the raw replies in order.
fn pipeline(port: u16, cmds: &[Vec<String>]) -> Vec<Vec<u8>> {
    let mut conn = RawConn::connect(port);
    let mut replies = Vec::with_capacity(cmds.len());
    for batch in cmds.chunks(500) {
        let mut bytes = Vec::new();
        for cmd in batch {
            let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
            bytes.extend(resp(&args));
        }
        conn.send(&bytes);
        replies.extend(conn.read_n_replies(batch.len()));
    }
    replies
}

fn text(reply: &[u8]) -> String {
    String::from_utf8_lossy(reply).into_owned()
}

#[test]
fn a_cluster_of_three_by_two_serves_fails_over_and_reshards() {
    let t0 = Instant::now();
    let cluster = RedisCluster::start(3, 2);
    eprintln!("3x2 cluster stable after {:?}", t0.elapsed());

    // 9 nodes; 3 primaries (nodes[..3]) with contiguous shares of the slots
    // in order; each with 2 linked replicas (nodes[3 + 2i..5 + 2i]).
    assert_eq!(cluster.nodes.len(), 9);
    let map = cluster.slot_map();
    let primaries = cluster.primaries();
    let node_ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    assert_eq!(ports(&primaries), node_ports[..3], "primaries: {map}");
    let mut next = 0usize;
    for (i, p) in primaries.iter().enumerate() {
        assert_eq!(p.role(), "master", "port {}", p.port);
        let slots: Vec<u16> = map.slots_of(p.port).into_iter().collect();
        let (first, last) = (usize::from(slots[0]), usize::from(slots[slots.len() - 1]));
        assert_eq!(
            first,
            next,
            "primary {i} starts where {} ends: {map}",
            i.max(1) - 1
        );
        assert_eq!(
            last - first + 1,
            slots.len(),
            "primary {i}'s slots are contiguous: {map}"
        );
        assert!(
            (SLOTS / 3..=SLOTS / 3 + 1).contains(&slots.len()),
            "primary {i} owns a third of the slots: {map}"
        );
        next = last + 1;

        let replicas = cluster.replicas_of(p);
        assert_eq!(ports(&replicas), node_ports[3 + 2 * i..5 + 2 * i], "{map}");
        for r in &replicas {
            assert_eq!(r.role(), "slave", "port {}", r.port);
            let info = r.info("replication");
            assert_eq!(info["master_port"], p.port.to_string(), "port {}", r.port);
            assert_eq!(info["master_link_status"], "up", "port {}", r.port);
        }
        assert_eq!(p.info("replication")["connected_slaves"], "2");
    }
    assert_eq!(next, SLOTS);
    assert_eq!(map.assigned(), SLOTS);
    assert!(map.covers_all());
    let all_ids: BTreeSet<&str> = cluster.nodes.iter().map(ClusterNode::id).collect();
    assert_eq!(all_ids.len(), 9, "node ids are distinct");

    // A key lives on its slot's primary; another primary redirects to it.
    let key = "harness:greeting";
    let slot = cluster.key_slot(key);
    let owner = cluster.primary_for_slot(slot);
    assert_eq!(owner.cli(&["SET", key, "hello"]), "OK");
    assert_eq!(owner.query(&["GET", key]), b"$5\r\nhello\r\n");
    let other = primaries.iter().find(|p| p.port != owner.port).unwrap();
    assert_eq!(
        text(&other.query(&["GET", key])),
        format!("-MOVED {slot} 127.0.0.1:{}\r\n", owner.port)
    );
    assert_eq!(other.cli(&["-c", "GET", key]), "hello");

    // CLUSTER FAILOVER on one of the owner's replicas: it becomes master
    // within 10 s, with the owner's slots, and the owner its replica.
    let old = owner;
    let replica = cluster.replicas_of(old)[0];
    let t1 = Instant::now();
    let agreed = cluster.failover(replica);
    let promoted_within = t1.elapsed();
    eprintln!("failover of {}: stable after {agreed:?}", replica.port);
    assert!(
        promoted_within < Duration::from_secs(10),
        "{promoted_within:?}"
    );
    assert_eq!(replica.role(), "master");
    assert_eq!(old.role(), "slave");
    let info = old.info("replication");
    assert_eq!(info["master_port"], replica.port.to_string());
    assert_eq!(info["master_link_status"], "up");
    assert_eq!(cluster.primary_for_slot(slot).port, replica.port);
    let new_replicas = ports(&cluster.replicas_of(replica));
    assert_eq!(new_replicas.len(), 2, "{new_replicas:?}");
    assert!(new_replicas.contains(&old.port), "{new_replicas:?}");
    assert_eq!(cluster.primaries().len(), 3);
    assert_eq!(other.cli(&["-c", "GET", key]), "hello", "the key survives");

    // Reshard 100 slots from one primary to another: exactly 100 slots
    // change hands, and the keys in them follow.
    let before = cluster.slot_map();
    let primaries = cluster.primaries();
    let (from, to, third) = (primaries[1], primaries[2], primaries[0]);
    let from_slots = before.slots_of(from.port);
    let names: Vec<String> = (0..10_000).map(|i| format!("rs:{i}")).collect();
    let keyslot_cmds: Vec<Vec<String>> = names
        .iter()
        .map(|k| vec!["CLUSTER".into(), "KEYSLOT".into(), k.clone()])
        .collect();
    let keys: Vec<(String, u16)> = pipeline(from.port, &keyslot_cmds)
        .iter()
        .zip(&names)
        .map(|(r, k)| {
            let s = text(r);
            let slot = s
                .strip_prefix(':')
                .and_then(|s| s.trim_end().parse().ok())
                .unwrap_or_else(|| panic!("CLUSTER KEYSLOT {k}: {s:?}"));
            (k.clone(), slot)
        })
        .filter(|(_, slot)| from_slots.contains(slot))
        .collect();
    assert_eq!(cluster.key_slot(&keys[0].0), keys[0].1);
    let sets: Vec<Vec<String>> = keys
        .iter()
        .map(|(k, _)| vec!["SET".into(), k.clone(), format!("value of {k}")])
        .collect();
    for r in pipeline(from.port, &sets) {
        assert_eq!(r, b"+OK\r\n");
    }
    let dbsize = |n: &ClusterNode| text(&n.query(&["DBSIZE"]));
    let to_keys_before = dbsize(to);

    let t2 = Instant::now();
    let moved = cluster.reshard(from, to, 100);
    eprintln!(
        "reshard of 100 slots ({} keys on the source): stable after {:?}",
        keys.len(),
        t2.elapsed()
    );
    let after = cluster.slot_map();
    assert_eq!(moved.len(), 100);
    eprintln!(
        "moved slots {}..={} of {}..",
        moved[0],
        moved[moved.len() - 1],
        from_slots.first().unwrap()
    );
    let gained: BTreeSet<u16> = after
        .slots_of(to.port)
        .difference(&before.slots_of(to.port))
        .copied()
        .collect();
    let lost: BTreeSet<u16> = from_slots
        .difference(&after.slots_of(from.port))
        .copied()
        .collect();
    assert_eq!(gained.len(), 100, "before {before}\nafter  {after}");
    assert_eq!(gained, lost, "before {before}\nafter  {after}");
    assert_eq!(gained.iter().copied().collect::<Vec<_>>(), moved);
    assert_eq!(
        after.slots_of(to.port).len(),
        before.slots_of(to.port).len() + 100
    );
    assert_eq!(after.slots_of(third.port), before.slots_of(third.port));
    assert_eq!(after.assigned(), SLOTS);
    assert!(after.covers_all());

    let (moved_keys, stayed): (Vec<_>, Vec<_>) =
        keys.iter().partition(|(_, slot)| gained.contains(slot));
    assert!(!moved_keys.is_empty(), "no test key in the moved slots");
    eprintln!("{} keys moved with the slots", moved_keys.len());
    assert_eq!(dbsize(from), format!(":{}\r\n", stayed.len()));
    let to_before: usize = to_keys_before[1..].trim_end().parse().unwrap();
    assert_eq!(dbsize(to), format!(":{}\r\n", to_before + moved_keys.len()));
    for (k, slot) in &moved_keys {
        let want = format!("value of {k}");
        assert_eq!(from.cli(&["-c", "GET", k]), want, "through redis-cli -c");
        assert_eq!(
            text(&from.query(&["GET", k])),
            format!("-MOVED {slot} 127.0.0.1:{}\r\n", to.port)
        );
    }
    let gets: Vec<Vec<String>> = stayed
        .iter()
        .map(|(k, _)| vec!["GET".into(), k.clone()])
        .collect();
    for ((k, _), r) in stayed.iter().zip(pipeline(from.port, &gets)) {
        let want = format!("value of {k}");
        assert_eq!(text(&r), format!("${}\r\n{want}\r\n", want.len()));
    }
    eprintln!("cluster_harness total {:?}", t0.elapsed());
}
