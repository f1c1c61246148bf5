//! The slot map: which shard owns each of the 16384 slots, from a node's
//! `CLUSTER SHARDS` (Redis 7) or `CLUSTER SLOTS` (older, and a fallback).
//!
//! One node's map is one opinion. A node cut off in a minority partition
//! keeps serving the map it last knew, and after a failover or a slot
//! migration the other nodes learn the change over the cluster bus within a
//! few hundred milliseconds, not at once. So a map is only worth adopting
//! when two nodes agree on it ([`SlotMap::same_as`]), and a stale one is
//! corrected by the MOVED redirections the owners answer with.
//!
//! Both replies are decoded as RESP2 (a map arrives as a flat array of
//! alternating names and values). Formats are those of
//! `addShardReplyForClusterShards`, `addNodeDetailsToShardReply` and
//! `clusterReplyMultiBulkSlots` in Redis 7.0.15's `src/cluster.c`.

use std::collections::HashMap;

use redis_protocol::resp2::types::{BytesFrame, Resp2Frame};

use super::SLOTS;
use crate::proto::decode::{decode_ok, into_array};

/// One node of a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The 40-character node id, stable for the node's life.
    pub id: String,
    /// Its IP (the hostname when only that is known). Empty when the node
    /// does not know its own address yet (a node learns it from its peers,
    /// so a cluster of one reports `""`): the node that answered, as in a
    /// redirection to `:port`.
    pub ip: String,
    /// The port for clients: the plaintext port, or in a TLS-only cluster
    /// (no plaintext port) the TLS port.
    pub port: u16,
    /// The TLS port, when `CLUSTER SHARDS` reports one (`tls-cluster yes`);
    /// `CLUSTER SLOTS` reports only the port fitting the asking connection.
    pub tls_port: Option<u16>,
    pub primary: bool,
    /// `CLUSTER SHARDS` health is `online` (not `fail`, and not a replica
    /// still `loading` its first sync). `CLUSTER SLOTS` lists only the
    /// replicas that are available and says nothing of the primary's
    /// health, so every node parsed from it is healthy.
    pub healthy: bool,
}

/// A primary, its replicas and the slots they serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Inclusive `(start, end)` ranges, in the order the node listed them.
    pub slots: Vec<(u16, u16)>,
    /// The primary first, then its replicas.
    pub nodes: Vec<Node>,
}

impl Shard {
    pub fn primary(&self) -> Option<&Node> {
        self.nodes.first().filter(|n| n.primary)
    }
}

/// Parses the raw RESP2 reply of `CLUSTER SHARDS`. An error reply (e.g.
/// `-ERR This instance has cluster support disabled`) is returned as its
/// text. Shards that own no slot (a primary just added) are kept.
pub fn parse_shards(raw: &[u8]) -> Result<Vec<Shard>, String> {
    into_array(decode_ok(raw)?)?
        .into_iter()
        .enumerate()
        .map(|(i, s)| shard(s).map_err(|e| format!("shard {i}: {e}")))
        .collect()
}

fn shard(frame: BytesFrame) -> Result<Shard, String> {
    let items = into_array(frame)?;
    let f = Fields::new(&items)?;
    let flat = match f.require("slots")? {
        BytesFrame::Array(v) => v
            .iter()
            .map(|v| int(v, "slots"))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err("slots is not an array".into()),
    };
    if !flat.len().is_multiple_of(2) {
        return Err(format!("odd number of slot bounds ({})", flat.len()));
    }
    let slots = flat
        .chunks(2)
        .map(|p| Ok((slot_number(p[0])?, slot_number(p[1])?)))
        .collect::<Result<Vec<_>, String>>()?;
    let mut nodes = match f.require("nodes")? {
        BytesFrame::Array(v) => v
            .iter()
            .enumerate()
            .map(|(i, n)| shard_node(n).map_err(|e| format!("node {i}: {e}")))
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err("nodes is not an array".into()),
    };
    // Redis lists the primary first; make sure of it.
    match nodes.iter().filter(|n| n.primary).count() {
        1 => {}
        n => return Err(format!("{n} nodes with role master")),
    }
    nodes.sort_by_key(|n| !n.primary);
    Ok(Shard { slots, nodes })
}

fn shard_node(frame: &BytesFrame) -> Result<Node, String> {
    let BytesFrame::Array(items) = frame else {
        return Err("not an array".into());
    };
    let f = Fields::new(items)?;
    let plain_port = f.get("port").map(|v| port(v, "port")).transpose()?;
    let tls_port = f.get("tls-port").map(|v| port(v, "tls-port")).transpose()?;
    let ip = match f.get("ip").map(|v| text(v, "ip")).transpose()? {
        Some(ip) if !ip.is_empty() => ip,
        _ => match f.get("endpoint").map(|v| text(v, "endpoint")).transpose()? {
            // `?`: the hostname was preferred but is not set.
            Some(e) if e != "?" => e,
            _ => "",
        },
    };
    let primary = match text(f.require("role")?, "role")? {
        "master" => true,
        "replica" => false,
        other => return Err(format!("unknown role {other:?}")),
    };
    Ok(Node {
        id: text(f.require("id")?, "id")?.to_string(),
        ip: ip.to_string(),
        port: plain_port
            .or(tls_port)
            .ok_or_else(|| "neither port nor tls-port".to_string())?,
        tls_port,
        primary,
        healthy: text(f.require("health")?, "health")? == "online",
    })
}

/// Parses the raw RESP2 reply of `CLUSTER SLOTS`: one entry per slot range,
/// `[start, end, primary, replica...]`, each node `[endpoint, port, id,
/// {extra networking fields}]`. Ranges of one primary (by id) make one
/// shard, in the order primaries first appear; its nodes are those of its
/// first range.
pub fn parse_slots(raw: &[u8]) -> Result<Vec<Shard>, String> {
    let mut shards: Vec<Shard> = Vec::new();
    let mut by_primary: HashMap<String, usize> = HashMap::new();
    for (i, entry) in into_array(decode_ok(raw)?)?.into_iter().enumerate() {
        let (range, nodes) = slots_entry(entry).map_err(|e| format!("range {i}: {e}"))?;
        match by_primary.get(&nodes[0].id) {
            Some(&s) => shards[s].slots.push(range),
            None => {
                by_primary.insert(nodes[0].id.clone(), shards.len());
                shards.push(Shard {
                    slots: vec![range],
                    nodes,
                });
            }
        }
    }
    Ok(shards)
}

fn slots_entry(frame: BytesFrame) -> Result<((u16, u16), Vec<Node>), String> {
    let items = into_array(frame)?;
    if items.len() < 3 {
        return Err(format!("{} elements, expected at least 3", items.len()));
    }
    let range = (
        slot_number(int(&items[0], "start")?)?,
        slot_number(int(&items[1], "end")?)?,
    );
    let nodes = items[2..]
        .iter()
        .enumerate()
        .map(|(i, n)| slots_node(n, i == 0).map_err(|e| format!("node {i}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((range, nodes))
}

fn slots_node(frame: &BytesFrame, primary: bool) -> Result<Node, String> {
    let BytesFrame::Array(items) = frame else {
        return Err("not an array".into());
    };
    if items.len() < 3 {
        return Err(format!("{} elements, expected at least 3", items.len()));
    }
    // The preferred endpoint: the IP, a hostname, `?` (hostname preferred
    // but unset) or null (`cluster-preferred-endpoint-type
    // unknown-endpoint`). When it is not the IP, the IP follows in the
    // extra fields; take that, as for CLUSTER SHARDS.
    let endpoint = match &items[0] {
        BytesFrame::Null => "",
        v => text(v, "endpoint")?,
    };
    let extra_ip = match items.get(3) {
        Some(BytesFrame::Array(extra)) => Fields::new(extra)?
            .get("ip")
            .map(|v| text(v, "ip"))
            .transpose()?,
        Some(_) => return Err("extra fields are not an array".into()),
        None => None,
    };
    let ip = match extra_ip {
        Some(ip) if !ip.is_empty() => ip,
        _ if endpoint == "?" => "",
        _ => endpoint,
    };
    Ok(Node {
        id: text(&items[2], "id")?.to_string(),
        ip: ip.to_string(),
        port: port(&items[1], "port")?,
        tls_port: None,
        primary,
        healthy: true,
    })
}

/// Which shard owns each slot.
#[derive(Clone, Debug)]
pub struct SlotMap {
    shards: Vec<Shard>,
    /// Per slot, the index of its shard; `NONE` when no shard has it.
    owner: Box<[u16]>,
}

const NONE: u16 = u16::MAX;

impl SlotMap {
    /// Checks the shards and indexes their slots. Ranges must lie in
    /// `0..16384` with `start <= end` and not overlap (two owners of a slot
    /// is a broken reply, not a state to route by); every shard needs its
    /// primary first. Slots no shard owns are allowed: a cluster is down
    /// for them (`-CLUSTERDOWN Hash slot not served`), see
    /// [`SlotMap::uncovered`].
    pub fn new(shards: Vec<Shard>) -> Result<SlotMap, String> {
        if shards.len() >= usize::from(NONE) {
            return Err(format!("{} shards", shards.len()));
        }
        let mut owner = vec![NONE; usize::from(SLOTS)].into_boxed_slice();
        for (i, shard) in shards.iter().enumerate() {
            if shard.primary().is_none() {
                return Err(format!("shard {i}: no primary first"));
            }
            for &(start, end) in &shard.slots {
                if start > end || end >= SLOTS {
                    return Err(format!("shard {i}: bad slot range {start}-{end}"));
                }
                for slot in start..=end {
                    let o = &mut owner[usize::from(slot)];
                    if *o != NONE {
                        return Err(format!("slot {slot} is in shards {} and {i}", *o));
                    }
                    *o = i as u16;
                }
            }
        }
        Ok(SlotMap { shards, owner })
    }

    /// The index (into [`SlotMap::shards`]) of the shard owning `slot`.
    pub fn shard_of(&self, slot: u16) -> Option<usize> {
        match *self.owner.get(usize::from(slot))? {
            NONE => None,
            i => Some(usize::from(i)),
        }
    }

    /// The primary owning `slot`.
    pub fn primary_of(&self, slot: u16) -> Option<&Node> {
        self.shards[self.shard_of(slot)?].primary()
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// How many slots no shard owns (0 for a healthy cluster).
    pub fn uncovered(&self) -> usize {
        self.owner.iter().filter(|&&o| o == NONE).count()
    }

    /// Both maps give every slot to the same primary (by node id), and
    /// leave the same slots uncovered. How ranges are cut, the order of
    /// shards, replicas and addresses do not matter: two nodes agree on the
    /// map when they agree on who owns what.
    pub fn same_as(&self, other: &SlotMap) -> bool {
        self.runs() == other.runs()
    }

    /// Maximal runs of slots with one owner: `(start, end, primary id)`.
    fn runs(&self) -> Vec<(u16, u16, Option<&str>)> {
        let mut runs: Vec<(u16, u16, Option<&str>)> = Vec::new();
        for slot in 0..SLOTS {
            let id = self.primary_of(slot).map(|n| n.id.as_str());
            match runs.last_mut() {
                Some((_, end, last)) if *last == id => *end = slot,
                _ => runs.push((slot, slot, id)),
            }
        }
        runs
    }
}

/// A flat `name value name value ...` array (a RESP2 map).
struct Fields<'a>(Vec<(&'a str, &'a BytesFrame)>);

impl<'a> Fields<'a> {
    fn new(items: &'a [BytesFrame]) -> Result<Fields<'a>, String> {
        if !items.len().is_multiple_of(2) {
            return Err(format!("odd number of elements ({})", items.len()));
        }
        items
            .chunks(2)
            .map(|p| Ok((text(&p[0], "field name")?, &p[1])))
            .collect::<Result<_, String>>()
            .map(Fields)
    }

    fn get(&self, field: &str) -> Option<&'a BytesFrame> {
        self.0.iter().find(|(k, _)| *k == field).map(|&(_, v)| v)
    }

    fn require(&self, field: &str) -> Result<&'a BytesFrame, String> {
        self.get(field)
            .ok_or_else(|| format!("missing field {field:?}"))
    }
}

fn text<'a>(v: &'a BytesFrame, what: &str) -> Result<&'a str, String> {
    match v {
        BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => {
            std::str::from_utf8(b).map_err(|_| format!("{what} is not UTF-8"))
        }
        other => Err(format!("{what} is {:?}, not a string", other.kind())),
    }
}

/// An integer, sent as one or (leniently) as a decimal string.
fn int(v: &BytesFrame, what: &str) -> Result<i64, String> {
    match v {
        BytesFrame::Integer(n) => Ok(*n),
        other => text(other, what)?
            .parse()
            .map_err(|_| format!("{what} is not an integer")),
    }
}

fn port(v: &BytesFrame, what: &str) -> Result<u16, String> {
    let n = int(v, what)?;
    u16::try_from(n).map_err(|_| format!("bad {what} {n}"))
}

/// A slot bound as a u16; whether it is below 16384 is for
/// [`SlotMap::new`] to say.
fn slot_number(n: i64) -> Result<u16, String> {
    u16::try_from(n).map_err(|_| format!("bad slot {n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CLUSTER SHARDS` (RESP2) from a redis-server 7.0.15 cluster of three
    /// primaries with one replica each, verbatim, after the replica on port
    /// 47006 was killed (health `fail`).
    const SHARDS_REPLY: &[u8] = b"*3\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:5460\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\n06be2ccc50709eb21ea9d5b769a29a647a6c0a1c\r\n$4\r\nport\r\n:47001\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:70\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\n585ab206bfde54d03cf5bc1cc2123a842964e639\r\n$4\r\nport\r\n:47004\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:70\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:10923\r\n:16383\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\nd932956730f70a82323d6676cc7388671e885618\r\n$4\r\nport\r\n:47003\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:70\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\n68c8d0f09a28134d6951b7fcb50817ae3f17623b\r\n$4\r\nport\r\n:47006\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:70\r\n$6\r\nhealth\r\n$4\r\nfail\r\n*4\r\n$5\r\nslots\r\n*2\r\n:5461\r\n:10922\r\n$5\r\nnodes\r\n*2\r\n*14\r\n$2\r\nid\r\n$40\r\n2fedd44074ce69e5b1f1bdffabd6ddf2719eac2e\r\n$4\r\nport\r\n:47002\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:70\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*14\r\n$2\r\nid\r\n$40\r\nc50c9b029e1bba528c22055627f17f4eef1d2ec2\r\n$4\r\nport\r\n:47005\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$8\r\nendpoint\r\n$9\r\n127.0.0.1\r\n$4\r\nrole\r\n$7\r\nreplica\r\n$18\r\nreplication-offset\r\n:70\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";

    /// `CLUSTER SLOTS` from the same cluster at the same moment, verbatim:
    /// the failed replica is left out.
    const SLOTS_REPLY: &[u8] = b"*3\r\n*4\r\n:0\r\n:5460\r\n*4\r\n$9\r\n127.0.0.1\r\n:47001\r\n$40\r\n06be2ccc50709eb21ea9d5b769a29a647a6c0a1c\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:47004\r\n$40\r\n585ab206bfde54d03cf5bc1cc2123a842964e639\r\n*0\r\n*4\r\n:5461\r\n:10922\r\n*4\r\n$9\r\n127.0.0.1\r\n:47002\r\n$40\r\n2fedd44074ce69e5b1f1bdffabd6ddf2719eac2e\r\n*0\r\n*4\r\n$9\r\n127.0.0.1\r\n:47005\r\n$40\r\nc50c9b029e1bba528c22055627f17f4eef1d2ec2\r\n*0\r\n*3\r\n:10923\r\n:16383\r\n*4\r\n$9\r\n127.0.0.1\r\n:47003\r\n$40\r\nd932956730f70a82323d6676cc7388671e885618\r\n*0\r\n";

    /// `CLUSTER SHARDS` from a redis-server 7.0.15 cluster of two primaries
    /// on `::1`, verbatim, with `cluster-preferred-endpoint-type hostname`
    /// and a hostname announced by one of them only (the other's endpoint
    /// is `?`).
    const SHARDS_HOSTNAME_REPLY: &[u8] = b"*2\r\n*4\r\n$5\r\nslots\r\n*2\r\n:8001\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*16\r\n$2\r\nid\r\n$40\r\nd31aadea03e758bc6af7664aa32507c7ad2fb573\r\n$4\r\nport\r\n:47021\r\n$2\r\nip\r\n$3\r\n::1\r\n$8\r\nendpoint\r\n$14\r\nnode21.example\r\n$8\r\nhostname\r\n$14\r\nnode21.example\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:8000\r\n$5\r\nnodes\r\n*1\r\n*14\r\n$2\r\nid\r\n$40\r\n4ea8dd7ce9446e5201bc7aaea271a23dfbdd0191\r\n$4\r\nport\r\n:47020\r\n$2\r\nip\r\n$3\r\n::1\r\n$8\r\nendpoint\r\n$1\r\n?\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";

    /// `CLUSTER SLOTS` from that cluster, verbatim, first with
    /// `unknown-endpoint` (null endpoints), then with `hostname`.
    const SLOTS_UNKNOWN_ENDPOINT_REPLY: &[u8] = b"*2\r\n*3\r\n:0\r\n:8000\r\n*4\r\n$-1\r\n:47020\r\n$40\r\n4ea8dd7ce9446e5201bc7aaea271a23dfbdd0191\r\n*2\r\n$2\r\nip\r\n$3\r\n::1\r\n*3\r\n:8001\r\n:16383\r\n*4\r\n$-1\r\n:47021\r\n$40\r\nd31aadea03e758bc6af7664aa32507c7ad2fb573\r\n*2\r\n$2\r\nip\r\n$3\r\n::1\r\n";
    const SLOTS_HOSTNAME_REPLY: &[u8] = b"*2\r\n*3\r\n:0\r\n:8000\r\n*4\r\n$1\r\n?\r\n:47020\r\n$40\r\n4ea8dd7ce9446e5201bc7aaea271a23dfbdd0191\r\n*2\r\n$2\r\nip\r\n$3\r\n::1\r\n*3\r\n:8001\r\n:16383\r\n*4\r\n$14\r\nnode21.example\r\n:47021\r\n$40\r\nd31aadea03e758bc6af7664aa32507c7ad2fb573\r\n*2\r\n$2\r\nip\r\n$3\r\n::1\r\n";

    /// `CLUSTER SHARDS` of a cluster of one node that has not met a peer,
    /// verbatim: its own ip is empty.
    const SHARDS_ALONE_REPLY: &[u8] = b"*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*14\r\n$2\r\nid\r\n$40\r\ne2f81ec82ab5f7f2495223d0284216dd2483b229\r\n$4\r\nport\r\n:47010\r\n$2\r\nip\r\n$0\r\n\r\n$8\r\nendpoint\r\n$0\r\n\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$18\r\nreplication-offset\r\n:0\r\n$6\r\nhealth\r\n$6\r\nonline\r\n";

    fn node(id: &str, port: u16, primary: bool, healthy: bool) -> Node {
        Node {
            id: id.into(),
            ip: "127.0.0.1".into(),
            port,
            tls_port: None,
            primary,
            healthy,
        }
    }

    const A: &str = "06be2ccc50709eb21ea9d5b769a29a647a6c0a1c";
    const A1: &str = "585ab206bfde54d03cf5bc1cc2123a842964e639";
    const B: &str = "2fedd44074ce69e5b1f1bdffabd6ddf2719eac2e";
    const B1: &str = "c50c9b029e1bba528c22055627f17f4eef1d2ec2";
    const C: &str = "d932956730f70a82323d6676cc7388671e885618";
    const C1: &str = "68c8d0f09a28134d6951b7fcb50817ae3f17623b";

    #[test]
    fn parses_real_shards() {
        assert_eq!(
            parse_shards(SHARDS_REPLY),
            Ok(vec![
                Shard {
                    slots: vec![(0, 5460)],
                    nodes: vec![node(A, 47001, true, true), node(A1, 47004, false, true)],
                },
                Shard {
                    slots: vec![(10923, 16383)],
                    nodes: vec![node(C, 47003, true, true), node(C1, 47006, false, false)],
                },
                Shard {
                    slots: vec![(5461, 10922)],
                    nodes: vec![node(B, 47002, true, true), node(B1, 47005, false, true)],
                },
            ])
        );
    }

    #[test]
    fn parses_real_slots() {
        assert_eq!(
            parse_slots(SLOTS_REPLY),
            Ok(vec![
                Shard {
                    slots: vec![(0, 5460)],
                    nodes: vec![node(A, 47001, true, true), node(A1, 47004, false, true)],
                },
                Shard {
                    slots: vec![(5461, 10922)],
                    nodes: vec![node(B, 47002, true, true), node(B1, 47005, false, true)],
                },
                Shard {
                    slots: vec![(10923, 16383)],
                    nodes: vec![node(C, 47003, true, true)],
                },
            ])
        );
    }

    #[test]
    fn the_ip_wins_over_a_hostname_endpoint() {
        let v6 = |id: &str, port| Node {
            ip: "::1".into(),
            ..node(id, port, true, true)
        };
        let n20 = "4ea8dd7ce9446e5201bc7aaea271a23dfbdd0191";
        let n21 = "d31aadea03e758bc6af7664aa32507c7ad2fb573";
        let shards = parse_shards(SHARDS_HOSTNAME_REPLY).unwrap();
        assert_eq!(shards[0].nodes, [v6(n21, 47021)]);
        assert_eq!(shards[1].nodes, [v6(n20, 47020)]);
        for raw in [SLOTS_UNKNOWN_ENDPOINT_REPLY, SLOTS_HOSTNAME_REPLY] {
            let shards = parse_slots(raw).unwrap();
            assert_eq!(shards[0].slots, [(0, 8000)]);
            assert_eq!(shards[0].nodes, [v6(n20, 47020)]);
            assert_eq!(shards[1].nodes, [v6(n21, 47021)]);
        }
    }

    #[test]
    fn a_lone_node_does_not_know_its_ip() {
        let shards = parse_shards(SHARDS_ALONE_REPLY).unwrap();
        assert_eq!(shards[0].nodes[0].ip, "");
        assert_eq!(shards[0].nodes[0].port, 47010);
    }

    /// Builds a RESP2 `CLUSTER SHARDS` node entry from `(name, value)`,
    /// where a value starting with `:` is an integer.
    fn fields(pairs: &[(&str, &str)]) -> String {
        let mut out = format!("*{}\r\n", pairs.len() * 2);
        for (k, v) in pairs {
            out += &format!("${}\r\n{k}\r\n", k.len());
            match v.strip_prefix(':') {
                Some(n) => out += &format!(":{n}\r\n"),
                None => out += &format!("${}\r\n{v}\r\n", v.len()),
            }
        }
        out
    }

    fn one_shard(slots: &str, nodes: &[String]) -> Vec<u8> {
        let mut out = format!(
            "*1\r\n*4\r\n$5\r\nslots\r\n{slots}$5\r\nnodes\r\n*{}\r\n",
            nodes.len()
        );
        for n in nodes {
            out += n;
        }
        out.into_bytes()
    }

    #[test]
    fn shards_tls_ports_fallbacks_and_primary_first() {
        let replica = fields(&[
            ("id", "r"),
            ("tls-port", ":7443"),
            ("ip", ""),
            ("endpoint", "r.example"),
            ("role", "replica"),
            ("replication-offset", ":0"),
            ("health", "loading"),
            ("future-field", "x"),
        ]);
        let primary = fields(&[
            ("id", "p"),
            ("port", ":7000"),
            ("tls-port", ":7001"),
            ("ip", "10.0.0.1"),
            ("endpoint", "p.example"),
            ("role", "master"),
            ("health", "online"),
        ]);
        let raw = one_shard("*4\r\n:0\r\n:9\r\n:20\r\n:20\r\n", &[replica, primary]);
        assert_eq!(
            parse_shards(&raw),
            Ok(vec![Shard {
                slots: vec![(0, 9), (20, 20)],
                nodes: vec![
                    Node {
                        id: "p".into(),
                        ip: "10.0.0.1".into(),
                        port: 7000,
                        tls_port: Some(7001),
                        primary: true,
                        healthy: true,
                    },
                    Node {
                        id: "r".into(),
                        ip: "r.example".into(),
                        port: 7443,
                        tls_port: Some(7443),
                        primary: false,
                        healthy: false,
                    },
                ],
            }])
        );
        // A shard with no slots (a primary just added) is kept.
        let lone = fields(&[
            ("id", "p"),
            ("port", ":7000"),
            ("ip", "10.0.0.1"),
            ("role", "master"),
            ("health", "online"),
        ]);
        let shards = parse_shards(&one_shard("*0\r\n", &[lone])).unwrap();
        assert_eq!(shards[0].slots, []);
    }

    #[test]
    fn shards_errors() {
        assert_eq!(
            parse_shards(b"-ERR This instance has cluster support disabled\r\n"),
            Err("ERR This instance has cluster support disabled".into())
        );
        assert_eq!(
            parse_shards(b"+OK\r\n"),
            Err("expected an array, got SimpleString".into())
        );
        assert!(
            parse_shards(b"*1\r\n")
                .unwrap_err()
                .starts_with("malformed reply")
        );
        let p = |health: &str, role: &str| {
            fields(&[
                ("id", "p"),
                ("port", ":7000"),
                ("ip", "10.0.0.1"),
                ("role", role),
                ("health", health),
            ])
        };
        let ok = p("online", "master");
        assert_eq!(
            parse_shards(&one_shard("*1\r\n:0\r\n", std::slice::from_ref(&ok))),
            Err("shard 0: odd number of slot bounds (1)".into())
        );
        assert_eq!(
            parse_shards(&one_shard("*2\r\n:0\r\n:-1\r\n", std::slice::from_ref(&ok))),
            Err("shard 0: bad slot -1".into())
        );
        assert_eq!(
            parse_shards(&one_shard("*0\r\n", &[p("online", "replica")])),
            Err("shard 0: 0 nodes with role master".into())
        );
        assert_eq!(
            parse_shards(&one_shard("*0\r\n", &[ok.clone(), ok.clone()])),
            Err("shard 0: 2 nodes with role master".into())
        );
        assert_eq!(
            parse_shards(&one_shard("*0\r\n", &[p("online", "slave")])),
            Err("shard 0: node 0: unknown role \"slave\"".into())
        );
        let no_health = fields(&[("id", "p"), ("port", ":7000"), ("role", "master")]);
        assert_eq!(
            parse_shards(&one_shard("*0\r\n", &[no_health])),
            Err("shard 0: node 0: missing field \"health\"".into())
        );
        let no_port = fields(&[("id", "p"), ("role", "master"), ("health", "online")]);
        assert_eq!(
            parse_shards(&one_shard("*0\r\n", &[no_port])),
            Err("shard 0: node 0: neither port nor tls-port".into())
        );
        let big_port = fields(&[("id", "p"), ("port", ":70000")]);
        assert_eq!(
            parse_shards(&one_shard("*0\r\n", &[big_port])),
            Err("shard 0: node 0: bad port 70000".into())
        );
    }

    #[test]
    fn slots_group_ranges_by_primary() {
        // Two ranges of one primary (as after a slot moved back and forth),
        // and pre-7.0 nodes without the extra fields.
        let raw = b"*3\r\n\
            *4\r\n:0\r\n:99\r\n*3\r\n$2\r\nh1\r\n:1\r\n$1\r\np\r\n*3\r\n$2\r\nh2\r\n:2\r\n$1\r\nr\r\n\
            *3\r\n:100\r\n:199\r\n*3\r\n$2\r\nh3\r\n:3\r\n$1\r\nq\r\n\
            *4\r\n:200\r\n:299\r\n*3\r\n$2\r\nh1\r\n:1\r\n$1\r\np\r\n*3\r\n$2\r\nh2\r\n:2\r\n$1\r\nr\r\n";
        let n = |id: &str, ip: &str, port, primary| Node {
            id: id.into(),
            ip: ip.into(),
            port,
            tls_port: None,
            primary,
            healthy: true,
        };
        assert_eq!(
            parse_slots(raw),
            Ok(vec![
                Shard {
                    slots: vec![(0, 99), (200, 299)],
                    nodes: vec![n("p", "h1", 1, true), n("r", "h2", 2, false)],
                },
                Shard {
                    slots: vec![(100, 199)],
                    nodes: vec![n("q", "h3", 3, true)],
                },
            ])
        );
        assert_eq!(parse_slots(b"*0\r\n"), Ok(vec![]));
        assert_eq!(
            parse_slots(b"*1\r\n*2\r\n:0\r\n:1\r\n"),
            Err("range 0: 2 elements, expected at least 3".into())
        );
        assert_eq!(
            parse_slots(b"*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:1\r\n"),
            Err("range 0: node 0: 2 elements, expected at least 3".into())
        );
        assert_eq!(
            parse_slots(b"-CLUSTERDOWN The cluster is down\r\n"),
            Err("CLUSTERDOWN The cluster is down".into())
        );
    }

    fn shard(slots: &[(u16, u16)], primary: &str) -> Shard {
        Shard {
            slots: slots.to_vec(),
            nodes: vec![node(primary, 7000, true, true)],
        }
    }

    #[test]
    fn slot_map_lookups() {
        let map = SlotMap::new(parse_shards(SHARDS_REPLY).unwrap()).unwrap();
        assert_eq!(map.uncovered(), 0);
        assert_eq!(map.shard_of(0), Some(0));
        assert_eq!(map.shard_of(5460), Some(0));
        assert_eq!(map.shard_of(5461), Some(2));
        assert_eq!(map.shard_of(16383), Some(1));
        assert_eq!(map.shard_of(16384), None);
        assert_eq!(map.primary_of(12182).map(|n| n.port), Some(47003));
        assert_eq!(map.shards().len(), 3);

        let partial = SlotMap::new(vec![shard(&[(0, 99), (200, 200)], "a")]).unwrap();
        assert_eq!(partial.uncovered(), 16384 - 101);
        assert_eq!(partial.shard_of(100), None);
        assert_eq!(partial.shard_of(200), Some(0));
        assert_eq!(partial.primary_of(100), None);
        assert_eq!(SlotMap::new(vec![]).unwrap().uncovered(), 16384);
    }

    #[test]
    fn slot_map_rejects_bad_ranges() {
        assert_eq!(
            SlotMap::new(vec![shard(&[(0, 100)], "a"), shard(&[(100, 200)], "b")]).unwrap_err(),
            "slot 100 is in shards 0 and 1"
        );
        assert_eq!(
            SlotMap::new(vec![shard(&[(0, 10), (5, 6)], "a")]).unwrap_err(),
            "slot 5 is in shards 0 and 0"
        );
        assert_eq!(
            SlotMap::new(vec![shard(&[(16000, 16384)], "a")]).unwrap_err(),
            "shard 0: bad slot range 16000-16384"
        );
        assert_eq!(
            SlotMap::new(vec![shard(&[(6, 5)], "a")]).unwrap_err(),
            "shard 0: bad slot range 6-5"
        );
        let headless = Shard {
            slots: vec![],
            nodes: vec![node("r", 1, false, true)],
        };
        assert_eq!(
            SlotMap::new(vec![headless]).unwrap_err(),
            "shard 0: no primary first"
        );
    }

    #[test]
    fn agreement_is_about_owners() {
        let shards = SlotMap::new(parse_shards(SHARDS_REPLY).unwrap()).unwrap();
        let slots = SlotMap::new(parse_slots(SLOTS_REPLY).unwrap()).unwrap();
        // Different shard order, a replica missing: the same map.
        assert!(shards.same_as(&slots));
        assert!(slots.same_as(&shards));

        let whole = SlotMap::new(vec![shard(&[(0, 16383)], "a")]).unwrap();
        let cut = SlotMap::new(vec![shard(&[(0, 99), (100, 16383)], "a")]).unwrap();
        assert!(whole.same_as(&cut));
        // One slot moved to another primary.
        let moved = SlotMap::new(vec![
            shard(&[(0, 99), (101, 16383)], "a"),
            shard(&[(100, 100)], "b"),
        ])
        .unwrap();
        assert!(!whole.same_as(&moved));
        // One slot uncovered.
        let hole = SlotMap::new(vec![shard(&[(0, 99), (101, 16383)], "a")]).unwrap();
        assert!(!whole.same_as(&hole));
        assert!(!hole.same_as(&moved));
        // Same ranges, another primary (a failover the other node missed).
        let failed_over = SlotMap::new(vec![shard(&[(0, 16383)], "a1")]).unwrap();
        assert!(!whole.same_as(&failed_over));
    }
}
