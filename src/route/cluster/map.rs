//! The slot map as cluster nodes report it (`CLUSTER SHARDS`, or `CLUSTER
//! SLOTS` on older servers), and the owner of every slot.

use bytes::Bytes;
use redis_protocol::resp2::types::BytesFrame;

use crate::proto::decode_resp2;

pub const SLOTS: usize = 16384;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub ip: String,
    pub port: u16,
    pub primary: bool,
    /// `CLUSTER SHARDS` health `online` (always true from `CLUSTER SLOTS`).
    pub healthy: bool,
}

/// One shard: its slot ranges and its nodes, the primary first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub slots: Vec<(u16, u16)>,
    pub nodes: Vec<Node>,
}

impl Shard {
    pub fn primary(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.primary)
    }
}

fn decode(raw: &[u8]) -> Result<BytesFrame, String> {
    match decode_resp2(&Bytes::copy_from_slice(raw)) {
        Ok(BytesFrame::Error(e)) => Err(e.to_string()),
        Ok(f) => Ok(f),
        Err(e) => Err(format!("malformed reply: {e}")),
    }
}

fn text(f: &BytesFrame) -> Option<String> {
    match f {
        BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => {
            Some(String::from_utf8_lossy(b).into_owned())
        }
        BytesFrame::Integer(i) => Some(i.to_string()),
        _ => None,
    }
}

fn int(f: &BytesFrame) -> Option<i64> {
    match f {
        BytesFrame::Integer(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

fn slot(f: &BytesFrame) -> Result<u16, String> {
    int(f)
        .filter(|s| (0..SLOTS as i64).contains(s))
        .map(|s| s as u16)
        .ok_or_else(|| format!("bad slot {f:?}"))
}

fn port(v: i64) -> Result<u16, String> {
    u16::try_from(v)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("bad port {v}"))
}

fn array(f: &BytesFrame) -> Result<&[BytesFrame], String> {
    match f {
        BytesFrame::Array(v) => Ok(v),
        _ => Err("expected an array".into()),
    }
}

/// A flat `name value ...` array as pairs.
fn fields(items: &[BytesFrame]) -> Result<Vec<(String, &BytesFrame)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err(format!("odd number of elements ({})", items.len()));
    }
    items
        .chunks(2)
        .map(|p| Ok((text(&p[0]).ok_or("a field name is not a string")?, &p[1])))
        .collect()
}

/// `CLUSTER SHARDS` (Redis 7).
pub fn parse_shards(raw: &[u8]) -> Result<Vec<Shard>, String> {
    let top = decode(raw)?;
    let mut out = Vec::new();
    for s in array(&top)? {
        let f = fields(array(s)?)?;
        let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        let ranges = array(get("slots").ok_or("missing field \"slots\"")?)?;
        if !ranges.len().is_multiple_of(2) {
            return Err("odd slot range list".into());
        }
        let slots = ranges
            .chunks(2)
            .map(|r| Ok((slot(&r[0])?, slot(&r[1])?)))
            .collect::<Result<Vec<_>, String>>()?;
        let mut nodes = Vec::new();
        for n in array(get("nodes").ok_or("missing field \"nodes\"")?)? {
            let nf = fields(array(n)?)?;
            let g = |k: &str| nf.iter().find(|(n, _)| n == k).and_then(|(_, v)| text(v));
            let ip = g("ip")
                .filter(|s| !s.is_empty() && s != "?")
                .or_else(|| g("endpoint"))
                .ok_or("missing field \"ip\"")?;
            let p = g("port")
                .and_then(|p| p.parse::<i64>().ok())
                .ok_or("missing field \"port\"")?;
            nodes.push(Node {
                id: g("id").ok_or("missing field \"id\"")?,
                ip,
                port: port(p)?,
                primary: g("role").as_deref() == Some("master"),
                healthy: g("health").as_deref() == Some("online"),
            });
        }
        nodes.sort_by_key(|n| !n.primary);
        out.push(Shard { slots, nodes });
    }
    Ok(out)
}

/// `CLUSTER SLOTS`: ranges grouped into shards by their primary's id.
pub fn parse_slots(raw: &[u8]) -> Result<Vec<Shard>, String> {
    let top = decode(raw)?;
    let mut out: Vec<Shard> = Vec::new();
    for r in array(&top)? {
        let r = array(r)?;
        if r.len() < 3 {
            return Err("a slot range without a node".into());
        }
        let range = (slot(&r[0])?, slot(&r[1])?);
        let mut nodes = Vec::new();
        for (i, n) in r[2..].iter().enumerate() {
            let n = array(n)?;
            if n.len() < 3 {
                return Err("a node without ip, port and id".into());
            }
            nodes.push(Node {
                ip: text(&n[0]).ok_or("ip is not a string")?,
                port: port(int(&n[1]).ok_or("port is not a number")?)?,
                id: text(&n[2]).ok_or("id is not a string")?,
                primary: i == 0,
                healthy: true,
            });
        }
        match out.iter_mut().find(|s| s.nodes[0].id == nodes[0].id) {
            Some(s) => s.slots.push(range),
            None => out.push(Shard {
                slots: vec![range],
                nodes,
            }),
        }
    }
    Ok(out)
}

/// The shards and the owner of every slot.
#[derive(Clone, Debug)]
pub struct SlotMap {
    shards: Vec<Shard>,
    owner: Vec<u16>,
}

const NONE: u16 = u16::MAX;

impl SlotMap {
    /// Rejects reversed or overlapping ranges; uncovered slots are allowed.
    pub fn new(shards: Vec<Shard>) -> Result<SlotMap, String> {
        let mut owner = vec![NONE; SLOTS];
        for (i, s) in shards.iter().enumerate() {
            if s.primary().is_none() {
                return Err(format!("shard {i} has no primary"));
            }
            for &(a, b) in &s.slots {
                if a > b {
                    return Err(format!("reversed range {a}-{b}"));
                }
                for o in &mut owner[a as usize..=b as usize] {
                    if *o != NONE {
                        return Err(format!("slot range {a}-{b} is claimed twice"));
                    }
                    *o = i as u16;
                }
            }
        }
        Ok(SlotMap { shards, owner })
    }

    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    pub fn shard_of(&self, slot: u16) -> Option<usize> {
        match self.owner.get(slot as usize) {
            Some(&NONE) | None => None,
            Some(&i) => Some(i as usize),
        }
    }

    pub fn uncovered(&self) -> usize {
        self.owner.iter().filter(|&&o| o == NONE).count()
    }

    /// Same owner (by primary id) for every slot: two nodes agree.
    pub fn same_as(&self, other: &SlotMap) -> bool {
        let id = |m: &SlotMap, s: usize| {
            m.shard_of(s as u16)
                .and_then(|i| m.shards[i].primary())
                .map(|n| n.id.clone())
        };
        (0..SLOTS).all(|s| id(self, s) == id(other, s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> String {
        format!("${}\r\n{s}\r\n", s.len())
    }

    fn node(id: &str, port: u16, role: &str, health: &str) -> String {
        let mut s = String::from("*12\r\n");
        for (k, v) in [
            ("id", bulk(id)),
            ("port", format!(":{port}\r\n")),
            ("ip", bulk("127.0.0.1")),
            ("endpoint", bulk("127.0.0.1")),
            ("role", bulk(role)),
            ("health", bulk(health)),
        ] {
            s.push_str(&bulk(k));
            s.push_str(&v);
        }
        s
    }

    #[test]
    fn shards_from_cluster_shards() {
        let shard = |a: u16, b: u16, nodes: &[String]| {
            format!(
                "*4\r\n{}*2\r\n:{a}\r\n:{b}\r\n{}*{}\r\n{}",
                bulk("slots"),
                bulk("nodes"),
                nodes.len(),
                nodes.concat()
            )
        };
        let raw = format!(
            "*2\r\n{}{}",
            shard(
                0,
                8191,
                &[
                    node("r1", 7003, "replica", "online"),
                    node("p1", 7000, "master", "online")
                ]
            ),
            shard(
                8192,
                16383,
                &[
                    node("p2", 7001, "master", "online"),
                    node("r2", 7004, "replica", "failed")
                ]
            )
        );
        let shards = parse_shards(raw.as_bytes()).unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].slots, vec![(0, 8191)]);
        assert_eq!(shards[0].nodes[0].id, "p1", "the primary first");
        assert!(shards[0].nodes[0].primary && !shards[0].nodes[1].primary);
        assert!(!shards[1].nodes[1].healthy);
        let m = SlotMap::new(shards).unwrap();
        assert_eq!(m.shard_of(0), Some(0));
        assert_eq!(m.shard_of(8192), Some(1));
        assert_eq!(m.uncovered(), 0);
        assert!(parse_shards(b"-ERR unknown subcommand\r\n").is_err());
    }

    #[test]
    fn shards_from_cluster_slots() {
        let n = |port: u16, id: &str| format!("*3\r\n{}:{port}\r\n{}", bulk("127.0.0.1"), bulk(id));
        let raw = format!(
            "*3\r\n*4\r\n:0\r\n:99\r\n{}{}*3\r\n:100\r\n:16383\r\n{}*3\r\n:200\r\n:300\r\n{}",
            n(7000, "p1"),
            n(7003, "r1"),
            n(7001, "p2"),
            n(7000, "p1")
        );
        // The last range overlaps the second: rejected by the map.
        let shards = parse_slots(raw.as_bytes()).unwrap();
        assert_eq!(shards.len(), 2);
        assert_eq!(shards[0].slots, vec![(0, 99), (200, 300)]);
        assert_eq!(shards[0].nodes[1].port, 7003);
        assert!(SlotMap::new(shards).is_err());
    }

    #[test]
    fn maps_agree_by_owner() {
        let s = |id: &str, a, b| Shard {
            slots: vec![(a, b)],
            nodes: vec![Node {
                id: id.into(),
                ip: "127.0.0.1".into(),
                port: 7000,
                primary: true,
                healthy: true,
            }],
        };
        let a = SlotMap::new(vec![s("p1", 0, 100), s("p2", 101, 16383)]).unwrap();
        let b = SlotMap::new(vec![s("p2", 101, 16383), s("p1", 0, 100)]).unwrap();
        let c = SlotMap::new(vec![s("p1", 0, 101), s("p2", 102, 16383)]).unwrap();
        assert!(a.same_as(&b));
        assert!(!a.same_as(&c));
        let gap = SlotMap::new(vec![s("p1", 0, 100)]).unwrap();
        assert_eq!(gap.uncovered(), 16283);
        assert_eq!(gap.shard_of(101), None);
    }
}
