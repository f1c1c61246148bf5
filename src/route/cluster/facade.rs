//! What a cluster-aware client is told when it asks: one node, the
//! sidecar, owning every slot. The client then sends everything through
//! the sidecar, which routes each command to its shard.

use bytes::Bytes;

use crate::proto::encode as resp;

/// A fixed 40-character node id for the sidecar at `listen`.
pub fn myid(listen: &str) -> String {
    // FNV-1a, stretched: the same address always gives the same id.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in listen.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    let mut out = String::with_capacity(40);
    while out.len() < 40 {
        h = (h ^ (h >> 29)).wrapping_mul(0xbf58476d1ce4e5b9);
        out.push_str(&format!("{:016x}", h));
    }
    out.truncate(40);
    out
}

fn bulk(s: &str) -> String {
    format!("${}\r\n{s}\r\n", s.len())
}

fn raw(s: String) -> Bytes {
    Bytes::from(s.into_bytes())
}

/// `CLUSTER SLOTS`: one range, one node (with Redis 7's empty metadata).
pub fn cluster_slots(host: &str, port: u16, id: &str) -> Bytes {
    raw(format!(
        "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n{}:{port}\r\n{}*0\r\n",
        bulk(host),
        bulk(id)
    ))
}

/// `CLUSTER SHARDS`: one shard, one healthy master.
pub fn cluster_shards(host: &str, port: u16, id: &str) -> Bytes {
    raw(format!(
        "*1\r\n*4\r\n{}*2\r\n:0\r\n:16383\r\n{}*1\r\n*14\r\n{}{}{}:{port}\r\n{}{}{}{}{}{}{}:0\r\n{}{}",
        bulk("slots"),
        bulk("nodes"),
        bulk("id"),
        bulk(id),
        bulk("port"),
        bulk("ip"),
        bulk(host),
        bulk("endpoint"),
        bulk(host),
        bulk("role"),
        bulk("master"),
        bulk("replication-offset"),
        bulk("health"),
        bulk("online"),
    ))
}

/// `CLUSTER NODES`: this node, master of every slot.
pub fn cluster_nodes(host: &str, port: u16, id: &str) -> Bytes {
    let bus = port as u32 + 10000;
    resp::bulk(
        format!("{id} {host}:{port}@{bus} myself,master - 0 0 1 connected 0-16383\n").as_bytes(),
    )
}

/// `CLUSTER INFO`: a healthy cluster of one node.
pub fn cluster_info() -> Bytes {
    resp::bulk(
        b"cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n\
cluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:1\r\ncluster_size:1\r\n\
cluster_current_epoch:1\r\ncluster_my_epoch:1\r\ncluster_stats_messages_sent:0\r\n\
cluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_node_owns_every_slot() {
        let id = myid("127.0.0.1:6379");
        assert_eq!(id.len(), 40);
        assert_eq!(id, myid("127.0.0.1:6379"));
        assert_ne!(id, myid("127.0.0.1:6380"));
        let slots = cluster_slots("127.0.0.1", 6379, &id);
        assert_eq!(
            String::from_utf8_lossy(&slots),
            format!(
                "*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:6379\r\n$40\r\n{id}\r\n*0\r\n"
            )
        );
        let shards =
            crate::route::cluster::map::parse_shards(&cluster_shards("127.0.0.1", 6379, &id))
                .unwrap();
        assert_eq!(shards.len(), 1);
        assert_eq!(shards[0].slots, vec![(0, 16383)]);
        assert_eq!(
            (shards[0].nodes[0].port, shards[0].nodes[0].primary),
            (6379, true)
        );
        assert!(shards[0].nodes[0].healthy);
        let nodes = cluster_nodes("127.0.0.1", 6379, &id);
        assert!(
            String::from_utf8_lossy(&nodes)
                .contains("127.0.0.1:6379@16379 myself,master - 0 0 1 connected 0-16383\n")
        );
        assert!(String::from_utf8_lossy(&cluster_info()).contains("cluster_state:ok\r\n"));
    }
}
