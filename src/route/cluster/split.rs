//! Multi-key commands whose keys span slots, for apps that do not know the
//! server is a cluster: split into one command per slot, and the replies
//! merged into exactly what one Redis would answer. Only commands whose
//! parts are independent are split (MGET, MSET, DEL, UNLINK, EXISTS,
//! TOUCH); MSETNX, transactions and scripts must stay within one slot, and
//! Redis Cluster's own `CROSSSLOT` error says so.

use bytes::{BufMut, Bytes, BytesMut};

use super::slot::key_slot;
use crate::proto::Command;
use crate::proto::encode as resp;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// MGET: the parts' arrays, reassembled in key order.
    MgetOrder,
    /// DEL, UNLINK, EXISTS, TOUCH: the parts' integers added.
    SumIntegers,
    /// MSET: `+OK` when every part said so.
    AllOk,
}

#[derive(Clone, Debug)]
pub struct Part {
    pub slot: u16,
    pub command: Command,
    /// Which keys of the original command (0 = the first key) it carries.
    pub positions: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub parts: Vec<Part>,
    pub merge: Merge,
    /// Keys in the original command.
    pub keys: usize,
}

pub fn crossslot_error() -> Bytes {
    resp::error("CROSSSLOT Keys in request don't hash to the same slot")
}

fn arity_error(name: &[u8]) -> Bytes {
    resp::error(&format!(
        "ERR wrong number of arguments for '{}' command",
        String::from_utf8_lossy(name).to_ascii_lowercase()
    ))
}

/// Keys of one command in more than one slot.
#[derive(Debug, PartialEq, Eq)]
pub struct CrossSlot;

/// The slot every key is in (`None`: no keys).
pub fn single_slot<'a>(keys: impl Iterator<Item = &'a [u8]>) -> Result<Option<u16>, CrossSlot> {
    let mut slot = None;
    for k in keys {
        let s = key_slot(k);
        match slot {
            None => slot = Some(s),
            Some(x) if x != s => return Err(CrossSlot),
            _ => {}
        }
    }
    Ok(slot)
}

/// The plan for `cmd`: `Ok(None)` when it is not split (not one of the
/// commands above, or all its keys in one slot), `Err` with Redis's reply
/// for a wrong number of arguments.
pub fn plan(cmd: &Command) -> Result<Option<Plan>, Bytes> {
    let name = cmd.name();
    let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    let (merge, step) = if is("MGET") {
        (Merge::MgetOrder, 1)
    } else if is("MSET") {
        (Merge::AllOk, 2)
    } else if is("DEL") || is("UNLINK") || is("EXISTS") || is("TOUCH") {
        (Merge::SumIntegers, 1)
    } else {
        return Ok(None);
    };
    let argc = cmd.argc();
    if argc < 1 + step || !(argc - 1).is_multiple_of(step) {
        return Err(arity_error(name));
    }
    let keys = (argc - 1) / step;
    let key = |i: usize| cmd.arg(1 + i * step).unwrap_or_default();
    if single_slot((0..keys).map(key)).is_ok() {
        return Ok(None);
    }
    // One part per slot, in the order slots first appear.
    let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
    for i in 0..keys {
        let s = key_slot(key(i));
        match groups.iter_mut().find(|(g, _)| *g == s) {
            Some((_, v)) => v.push(i),
            None => groups.push((s, vec![i])),
        }
    }
    let parts = groups
        .into_iter()
        .map(|(slot, positions)| {
            let mut args: Vec<&[u8]> = vec![name];
            for &i in &positions {
                for j in 0..step {
                    args.push(cmd.arg(1 + i * step + j).unwrap_or_default());
                }
            }
            Part {
                slot,
                command: Command::from_args(&args),
                positions,
            }
        })
        .collect();
    Ok(Some(Plan { parts, merge, keys }))
}

/// The elements of a flat array of bulk strings and nulls, raw.
fn elements(reply: &[u8]) -> Option<Vec<&[u8]>> {
    let line = |at: usize| -> Option<(usize, usize)> {
        let end = reply[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((at, end))
    };
    let (s, e) = line(0)?;
    if reply.get(s) != Some(&b'*') {
        return None;
    }
    let n: usize = std::str::from_utf8(&reply[s + 1..e]).ok()?.parse().ok()?;
    let mut at = e + 2;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (s, e) = line(at)?;
        let end = match reply.get(s)? {
            b'$' => {
                let len: i64 = std::str::from_utf8(&reply[s + 1..e]).ok()?.parse().ok()?;
                if len < 0 {
                    e + 2
                } else {
                    e + 2 + len as usize + 2
                }
            }
            b'_' => e + 2,
            _ => return None,
        };
        out.push(reply.get(at..end)?);
        at = end;
    }
    (at == reply.len()).then_some(out)
}

fn integer(reply: &[u8]) -> Option<i64> {
    std::str::from_utf8(reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?)
        .ok()?
        .parse()
        .ok()
}

fn is_error(reply: &[u8]) -> bool {
    matches!(reply.first(), Some(b'-') | Some(b'!'))
}

/// What one Redis would have answered, from the parts' replies (in part
/// order). An error in any part is the answer (the first one): the client
/// learns that the command did not wholly succeed, as it would if Redis
/// had refused it.
pub fn merge(plan: &Plan, replies: Vec<Bytes>) -> Bytes {
    if let Some(e) = replies.iter().find(|r| is_error(r)) {
        return e.clone();
    }
    match plan.merge {
        Merge::AllOk => match replies.iter().find(|r| &r[..] != b"+OK\r\n") {
            Some(r) => r.clone(),
            None => resp::ok(),
        },
        Merge::SumIntegers => {
            let mut sum = 0i64;
            for r in &replies {
                match integer(r) {
                    Some(n) => sum += n,
                    None => return resp::error("ERR nearby: unexpected reply from a shard"),
                }
            }
            resp::integer(sum)
        }
        Merge::MgetOrder => {
            let mut slots: Vec<Option<&[u8]>> = vec![None; plan.keys];
            for (part, reply) in plan.parts.iter().zip(&replies) {
                let Some(els) = elements(reply) else {
                    return resp::error("ERR nearby: unexpected reply from a shard");
                };
                if els.len() != part.positions.len() {
                    return resp::error("ERR nearby: unexpected reply from a shard");
                }
                for (&pos, el) in part.positions.iter().zip(els) {
                    slots[pos] = Some(el);
                }
            }
            let mut out = BytesMut::new();
            out.put_slice(format!("*{}\r\n", plan.keys).as_bytes());
            for el in slots {
                out.put_slice(el.unwrap_or(b"$-1\r\n"));
            }
            out.freeze()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Command {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        Command::from_args(&a)
    }

    #[test]
    fn splits_by_slot_and_merges_in_key_order() {
        // "a" 15495, "b" 3300, "c" 7365: three slots; "{a}x" with "a".
        let p = plan(&cmd(&["MGET", "a", "b", "{a}x", "c"]))
            .unwrap()
            .unwrap();
        assert_eq!(p.parts.len(), 3);
        assert_eq!(p.parts[0].positions, vec![0, 2]);
        assert_eq!(
            p.parts[0].command.raw(),
            &cmd(&["MGET", "a", "{a}x"]).into_raw()
        );
        let merged = merge(
            &p,
            vec![
                Bytes::from_static(b"*2\r\n$1\r\n1\r\n$-1\r\n"),
                Bytes::from_static(b"*1\r\n$2\r\n22\r\n"),
                Bytes::from_static(b"*1\r\n_\r\n"),
            ],
        );
        assert_eq!(&merged[..], b"*4\r\n$1\r\n1\r\n$2\r\n22\r\n$-1\r\n_\r\n");
        // One slot: sent as is.
        assert!(plan(&cmd(&["MGET", "{t}a", "{t}b"])).unwrap().is_none());
        assert!(plan(&cmd(&["GET", "a"])).unwrap().is_none());
    }

    #[test]
    fn sums_oks_and_errors() {
        let p = plan(&cmd(&["DEL", "a", "b", "c"])).unwrap().unwrap();
        let r = |s: &'static str| Bytes::from_static(s.as_bytes());
        assert_eq!(
            &merge(&p, vec![r(":1\r\n"), r(":0\r\n"), r(":1\r\n")])[..],
            b":2\r\n"
        );
        let m = plan(&cmd(&["MSET", "a", "1", "b", "2"])).unwrap().unwrap();
        assert_eq!(
            m.parts[1].command.raw(),
            &cmd(&["MSET", "b", "2"]).into_raw()
        );
        assert_eq!(&merge(&m, vec![r("+OK\r\n"), r("+OK\r\n")])[..], b"+OK\r\n");
        assert_eq!(
            &merge(&m, vec![r("+OK\r\n"), r("-OOM no\r\n")])[..],
            b"-OOM no\r\n"
        );
        assert_eq!(
            plan(&cmd(&["MSET", "a"])).unwrap_err(),
            Bytes::from_static(b"-ERR wrong number of arguments for 'mset' command\r\n")
        );
        assert_eq!(
            plan(&cmd(&["mget"])).unwrap_err(),
            Bytes::from_static(b"-ERR wrong number of arguments for 'mget' command\r\n")
        );
        assert_eq!(
            single_slot([&b"a"[..], b"{a}b"].into_iter()),
            Ok(Some(15495))
        );
        assert_eq!(single_slot([&b"a"[..], b"b"].into_iter()), Err(CrossSlot));
    }
}
