//! What a cluster-aware client is told: the sidecar is a cluster of one
//! node that owns every slot. Such a client (redis-py's `RedisCluster`,
//! go-redis's `ClusterClient`, lettuce, ...) asks a seed node for the
//! topology and then sends each command to the owner of its slot; told that
//! one node owns them all, it sends everything here, and the sidecar does the
//! routing. It never sees MOVED or ASK: those are the sidecar's to follow.
//!
//! Each reply is byte for byte what redis-server 7.0.15 sends for a cluster
//! of one master with no replica, config epoch 1, no hostname and the IP as
//! the preferred endpoint (`clusterReplyMultiBulkSlots`,
//! `addShardReplyForClusterShards`, `clusterGenNodeDescription`,
//! `clusterCommand`'s INFO and MYID), in the client's protocol: RESP3 turns
//! the maps of CLUSTER SHARDS and CLUSTER SLOTS into `%` and the text of
//! CLUSTER NODES and CLUSTER INFO into a verbatim string (`=`, `txt:`).
//! `host` is the address the client reached the sidecar by, as a node
//! shows its announced IP.

use bytes::{BufMut, Bytes, BytesMut};

use super::SLOTS;
use crate::proto::{Proto, encode};

/// The config epoch the one node claims: what `redis-cli --cluster create`
/// gives its first node.
const EPOCH: u64 = 1;

/// A node id for the sidecar listening on `host:port`: 40 lowercase hex
/// characters like a Redis node id, always the same for one address, so a
/// client that caches ids sees the same node across restarts. Not a secret
/// and not a digest Redis knows: any fixed, well-spread value would do.
pub fn myid(host: &str, port: u16) -> String {
    let mut id = String::with_capacity(48);
    for round in 0u8..3 {
        // FNV-1a over the round and the address, then a 64-bit finaliser
        // (splitmix64's) to spread it.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let port = port.to_be_bytes();
        for &b in [round]
            .iter()
            .chain(host.as_bytes())
            .chain(b":")
            .chain(&port)
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        id.push_str(&format!("{h:016x}"));
    }
    id.truncate(40);
    id
}

/// `CLUSTER MYID`: the id as a bulk string (in both protocols).
pub fn cluster_myid(id: &str) -> Bytes {
    encode::bulk(id.as_bytes())
}

/// `CLUSTER SLOTS`: one range, 0-16383, served by one node `[host, port,
/// id, {}]` (the empty map holds the networking fields other than the
/// preferred endpoint: none here).
pub fn cluster_slots(host: &str, port: u16, id: &str, proto: Proto) -> Bytes {
    let mut out = Out::new(proto);
    out.array(1);
    out.array(3);
    out.int(0);
    out.int(i64::from(SLOTS - 1));
    out.array(4);
    out.bulk(host);
    out.int(i64::from(port));
    out.bulk(id);
    out.map(0);
    out.done()
}

/// `CLUSTER SHARDS`: one shard, slots 0-16383, one master node.
pub fn cluster_shards(host: &str, port: u16, id: &str, proto: Proto) -> Bytes {
    let mut out = Out::new(proto);
    out.array(1);
    out.map(2);
    out.bulk("slots");
    out.array(2);
    out.int(0);
    out.int(i64::from(SLOTS - 1));
    out.bulk("nodes");
    out.array(1);
    out.map(7);
    out.bulk("id");
    out.bulk(id);
    out.bulk("port");
    out.int(i64::from(port));
    out.bulk("ip");
    out.bulk(host);
    out.bulk("endpoint");
    out.bulk(host);
    out.bulk("role");
    out.bulk("master");
    out.bulk("replication-offset");
    out.int(0);
    out.bulk("health");
    out.bulk("online");
    out.done()
}

/// `CLUSTER NODES`: the one line of `myself`. The bus port is the port +
/// 10000, Redis's default; 0 where that would not be a port (Redis would
/// refuse to start there without an explicit `cluster-port`).
pub fn cluster_nodes(host: &str, port: u16, id: &str, proto: Proto) -> Bytes {
    let bus = port.checked_add(10000).unwrap_or(0);
    let text = format!(
        "{id} {host}:{port}@{bus} myself,master - 0 0 {EPOCH} connected 0-{}\n",
        SLOTS - 1
    );
    let mut out = Out::new(proto);
    out.verbatim(&text);
    out.done()
}

/// `CLUSTER INFO`: state ok, every slot assigned and ok, one known node,
/// one shard, no bus traffic.
pub fn cluster_info(proto: Proto) -> Bytes {
    let text = format!(
        "cluster_state:ok\r\n\
         cluster_slots_assigned:{SLOTS}\r\n\
         cluster_slots_ok:{SLOTS}\r\n\
         cluster_slots_pfail:0\r\n\
         cluster_slots_fail:0\r\n\
         cluster_known_nodes:1\r\n\
         cluster_size:1\r\n\
         cluster_current_epoch:{EPOCH}\r\n\
         cluster_my_epoch:{EPOCH}\r\n\
         cluster_stats_messages_sent:0\r\n\
         cluster_stats_messages_received:0\r\n\
         total_cluster_links_buffer_limit_exceeded:0\r\n"
    );
    let mut out = Out::new(proto);
    out.verbatim(&text);
    out.done()
}

/// A reply under construction, in one protocol.
struct Out {
    buf: BytesMut,
    proto: Proto,
}

impl Out {
    fn new(proto: Proto) -> Out {
        Out {
            buf: BytesMut::with_capacity(256),
            proto,
        }
    }

    fn header(&mut self, ty: u8, n: usize) {
        self.buf.put_u8(ty);
        self.buf.put_slice(n.to_string().as_bytes());
        self.buf.put_slice(b"\r\n");
    }

    fn array(&mut self, n: usize) {
        self.header(b'*', n);
    }

    /// `n` pairs: `%n` in RESP3, a flat array of 2n in RESP2.
    fn map(&mut self, n: usize) {
        match self.proto {
            Proto::Resp2 => self.header(b'*', 2 * n),
            Proto::Resp3 => self.header(b'%', n),
        }
    }

    fn bulk(&mut self, s: &str) {
        self.buf.put_slice(&encode::bulk(s.as_bytes()));
    }

    fn int(&mut self, n: i64) {
        self.buf.put_slice(&encode::integer(n));
    }

    /// `addReplyVerbatim(..., "txt")`: a bulk string in RESP2.
    fn verbatim(&mut self, text: &str) {
        match self.proto {
            Proto::Resp2 => self.bulk(text),
            Proto::Resp3 => {
                self.header(b'=', text.len() + 4);
                self.buf.put_slice(b"txt:");
                self.buf.put_slice(text.as_bytes());
                self.buf.put_slice(b"\r\n");
            }
        }
    }

    fn done(self) -> Bytes {
        self.buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The replies of a redis-server 7.0.15 that is a cluster of one
    /// (`CLUSTER ADDSLOTSRANGE 0 16383`, no peer met, so its own ip is
    /// empty), port 47010, verbatim.
    const ID: &str = "e2f81ec82ab5f7f2495223d0284216dd2483b229";
    const SLOTS2: &[u8] = b"*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$0\r\n\r\n:47010\r\n$40\r\ne2f81ec82ab5f7f2495223d0284216dd2483b229\r\n*0\r\n";
    const SLOTS3: &[u8] = b"*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$0\r\n\r\n:47010\r\n$40\r\ne2f81ec82ab5f7f2495223d0284216dd2483b229\r\n%0\r\n";
    const SHARDS2: &[u8] = b"*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*14\r\n$2\r\nid\r\n$40\r\ne2f81ec82ab5f7f2495223d0284216dd2483b229\r\n$4\r\nport\r\n:47010\r\n$2\r\nip\r\n$0\r\n\r\n$8\r\nendpoint\r\n$0\r\n\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
    const SHARDS3: &[u8] = b"*1\r\n%2\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n%7\r\n$2\r\nid\r\n$40\r\ne2f81ec82ab5f7f2495223d0284216dd2483b229\r\n$4\r\nport\r\n:47010\r\n$2\r\nip\r\n$0\r\n\r\n$8\r\nendpoint\r\n$0\r\n\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";
    /// These two with config epoch 0 (slots added by hand); the facade
    /// claims epoch 1.
    const NODES2: &[u8] = b"$94\r\ne2f81ec82ab5f7f2495223d0284216dd2483b229 :47010@57010 myself,master - 0 0 0 connected 0-16383\n\r\n";
    const NODES3: &[u8] = b"=98\r\ntxt:e2f81ec82ab5f7f2495223d0284216dd2483b229 :47010@57010 myself,master - 0 0 0 connected 0-16383\n\r\n";
    const INFO2: &[u8] = b"$312\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:1\r\ncluster_size:1\r\ncluster_current_epoch:0\r\ncluster_my_epoch:0\r\ncluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n\r\n";
    const INFO3: &[u8] = b"=316\r\ntxt:cluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:0\r\ncluster_known_nodes:1\r\ncluster_size:1\r\ncluster_current_epoch:0\r\ncluster_my_epoch:0\r\ncluster_stats_messages_sent:0\r\ncluster_stats_messages_received:0\r\ntotal_cluster_links_buffer_limit_exceeded:0\r\n\r\n";
    const MYID: &[u8] = b"$40\r\ne2f81ec82ab5f7f2495223d0284216dd2483b229\r\n";

    fn epoch_one(redis: &[u8], from: &str, to: &str) -> Vec<u8> {
        String::from_utf8(redis.to_vec())
            .unwrap()
            .replace(from, to)
            .into_bytes()
    }

    #[test]
    fn same_bytes_as_redis() {
        use Proto::*;
        assert_eq!(&cluster_slots("", 47010, ID, Resp2)[..], SLOTS2);
        assert_eq!(&cluster_slots("", 47010, ID, Resp3)[..], SLOTS3);
        assert_eq!(&cluster_shards("", 47010, ID, Resp2)[..], SHARDS2);
        assert_eq!(&cluster_shards("", 47010, ID, Resp3)[..], SHARDS3);
        let (e0, e1) = (" 0 0 0 connected", " 0 0 1 connected");
        assert_eq!(
            cluster_nodes("", 47010, ID, Resp2)[..],
            epoch_one(NODES2, e0, e1)
        );
        assert_eq!(
            cluster_nodes("", 47010, ID, Resp3)[..],
            epoch_one(NODES3, e0, e1)
        );
        let info2 = epoch_one(INFO2, "_epoch:0", "_epoch:1");
        assert_eq!(cluster_info(Resp2)[..], info2);
        assert_eq!(
            cluster_info(Resp3)[..],
            epoch_one(INFO3, "_epoch:0", "_epoch:1")
        );
        assert_eq!(&cluster_myid(ID)[..], MYID);
    }

    #[test]
    fn with_an_address() {
        let id = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(
            &cluster_slots("10.1.2.3", 6379, id, Proto::Resp2)[..],
            b"*1\r\n*3\r\n:0\r\n:16383\r\n*4\r\n$8\r\n10.1.2.3\r\n:6379\r\n$40\r\n0123456789abcdef0123456789abcdef01234567\r\n*0\r\n"
        );
        assert_eq!(
            &cluster_nodes("::1", 6379, id, Proto::Resp2)[..],
            b"$96\r\n0123456789abcdef0123456789abcdef01234567 ::1:6379@16379 myself,master - 0 0 1 connected 0-16383\n\r\n"
        );
        // No bus port above 55535.
        assert!(
            cluster_nodes("h", 60000, id, Proto::Resp2)
                .windows(b"h:60000@0 ".len())
                .any(|w| w == b"h:60000@0 ")
        );
        let shards = cluster_shards("10.1.2.3", 6379, id, Proto::Resp2);
        assert!(
            shards
                .windows(b"$2\r\nip\r\n$8\r\n10.1.2.3\r\n$8\r\nendpoint\r\n$8\r\n10.1.2.3\r\n".len())
                .any(|w| w == b"$2\r\nip\r\n$8\r\n10.1.2.3\r\n$8\r\nendpoint\r\n$8\r\n10.1.2.3\r\n")
        );
    }

    #[test]
    fn the_facade_parses_as_one_shard() {
        use super::super::map::{Node, Shard, SlotMap, parse_shards, parse_slots};
        let id = myid("127.0.0.1", 6379);
        let shard = Shard {
            slots: vec![(0, 16383)],
            nodes: vec![Node {
                id: id.clone(),
                ip: "127.0.0.1".into(),
                port: 6379,
                tls_port: None,
                primary: true,
                healthy: true,
            }],
        };
        let shards = parse_shards(&cluster_shards("127.0.0.1", 6379, &id, Proto::Resp2));
        assert_eq!(shards, Ok(vec![shard.clone()]));
        let slots = parse_slots(&cluster_slots("127.0.0.1", 6379, &id, Proto::Resp2));
        assert_eq!(slots, Ok(vec![shard]));
        assert_eq!(SlotMap::new(slots.unwrap()).unwrap().uncovered(), 0);
    }

    #[test]
    fn ids_are_fixed_per_address() {
        let id = myid("127.0.0.1", 6379);
        assert_eq!(id, myid("127.0.0.1", 6379));
        assert_eq!(id.len(), 40);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(id, myid("127.0.0.1", 6380));
        assert_ne!(id, myid("127.0.0.2", 6379));
        assert_ne!(myid("", 0), myid("", 1));
        // Pinned: a change would give clients a new node.
        assert_eq!(id, "61f17f0ae0b09009d527831dd9451d112698ba39");
    }
}
