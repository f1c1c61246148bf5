//! Multi-key commands across slots: split into one command per group of
//! keys, and the replies merged into the one a single Redis would send.
//!
//! A cluster node refuses a command whose keys hash to different slots
//! (`-CROSSSLOT`), even when it owns all of them. A client that thinks it
//! talks to one Redis sends `MGET a b` without a thought for slots, so the
//! sidecar splits the commands whose meaning survives splitting: MGET (the
//! values, in key order), MSET (`+OK`), DEL, UNLINK, EXISTS and TOUCH (a
//! count, summed). The parts are not atomic together, as with every cluster
//! client that offers them: a reader may see some keys of an MSET set and
//! others not yet. MSETNX (all or nothing), MULTI and scripts cannot be
//! split; those get Redis Cluster's own `-CROSSSLOT` ([`single_slot`]).
//!
//! Keys go into parts by `group(slot)`. For Redis Cluster the group must be
//! the slot itself (one part per slot): a node would refuse a part holding
//! two of its slots. Within a part keys keep their order, so MSET with a key
//! twice still ends with the last value, and a repeated key is counted as
//! one Redis counts it (DEL once, EXISTS twice).
//!
//! Merging: if any part failed, the result is the first error in part
//! order, for MGET too. A single Redis answers a whole MGET or an error,
//! never some values; values with holes would be a reply no Redis sends.
//! By then the caller has followed MOVED and ASK and retried TRYAGAIN for
//! each part, so what is left is an error for the whole command. For DEL
//! and MSET other parts may have taken effect: the error says the command
//! failed, as a client of a real cluster would also see.

use bytes::{BufMut, Bytes, BytesMut};

use super::slot::key_slot;
use crate::proto::{Command, ReplyFramer, ReplyLimits, encode, parse_ll};

/// How the replies of the parts become one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merge {
    /// MGET: each part answers an array; its elements go back to the
    /// positions of their keys.
    MgetOrder,
    /// DEL, UNLINK, EXISTS, TOUCH: the integers add up.
    SumIntegers,
    /// MSET: `+OK` when every part said `+OK`.
    AllOk,
}

/// One command to send, for the keys of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// The slot of the part's first key (of every key, when the group is
    /// the slot).
    pub slot: u16,
    /// The command name as the client sent it, then this part's keys (with
    /// their values, for MSET) in the client's order.
    pub command: Command,
    /// The argument index of each key of the part in the original command
    /// (1 is the first key; for MSET its value is the next argument).
    pub positions: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// In the order their groups first appear among the keys.
    pub parts: Vec<Part>,
    pub merge: Merge,
}

/// Splits `cmd` by the group of each key's slot. `Ok(None)`: send it as it
/// is, because it is not one of MGET, MSET, DEL, UNLINK, EXISTS, TOUCH, or
/// all its keys fall in one group. `Err(reply)`: Redis's error for a wrong
/// number of arguments, to answer without sending anything.
pub fn plan(cmd: &Command, group: impl Fn(u16) -> usize) -> Result<Option<Plan>, Bytes> {
    let Some((name, merge, step)) = splittable(cmd) else {
        return Ok(None);
    };
    let argc = cmd.argc();
    if argc < 1 + step || !(argc - 1).is_multiple_of(step) {
        return Err(encode::error(&format!(
            "ERR wrong number of arguments for '{name}' command"
        )));
    }
    // (group, slot of its first key, key positions), by first appearance.
    let mut groups: Vec<(usize, u16, Vec<usize>)> = Vec::new();
    let mut index: std::collections::HashMap<usize, usize> = Default::default();
    for pos in (1..argc).step_by(step) {
        let slot = key_slot(cmd.arg(pos).unwrap_or_default());
        let g = group(slot);
        match index.get(&g) {
            Some(&i) => groups[i].2.push(pos),
            None => {
                index.insert(g, groups.len());
                groups.push((g, slot, vec![pos]));
            }
        }
    }
    if groups.len() < 2 {
        return Ok(None);
    }
    let parts = groups
        .into_iter()
        .map(|(_, slot, positions)| {
            let mut args: Vec<&[u8]> = Vec::with_capacity(1 + positions.len() * step);
            args.push(cmd.name());
            for &p in &positions {
                for a in p..p + step {
                    args.push(cmd.arg(a).unwrap_or_default());
                }
            }
            Part {
                slot,
                command: Command::from_args(&args),
                positions,
            }
        })
        .collect();
    Ok(Some(Plan { parts, merge }))
}

/// The lowercase name Redis uses in its errors, the merge, and how many
/// arguments each key takes.
fn splittable(cmd: &Command) -> Option<(&'static str, Merge, usize)> {
    const TABLE: [(&str, &str, Merge, usize); 6] = [
        ("MGET", "mget", Merge::MgetOrder, 1),
        ("MSET", "mset", Merge::AllOk, 2),
        ("DEL", "del", Merge::SumIntegers, 1),
        ("UNLINK", "unlink", Merge::SumIntegers, 1),
        ("EXISTS", "exists", Merge::SumIntegers, 1),
        ("TOUCH", "touch", Merge::SumIntegers, 1),
    ];
    TABLE
        .iter()
        .find(|(upper, ..)| cmd.name_eq(upper))
        .map(|&(_, lower, merge, step)| (lower, merge, step))
}

/// What Redis Cluster answers a command whose keys are in several slots.
pub fn crossslot_error() -> Bytes {
    Bytes::from_static(b"-CROSSSLOT Keys in request don't hash to the same slot\r\n")
}

/// Keys in more than one slot, for a command that cannot be split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrossSlot;

impl CrossSlot {
    /// [`crossslot_error`].
    pub fn reply(self) -> Bytes {
        crossslot_error()
    }
}

/// The one slot of all `keys` (`None` for no key), or [`CrossSlot`] when
/// they hash to different slots: the check `getNodeByQuery` makes, for
/// MSETNX, MULTI ... EXEC, EVAL and any other command that must run on one
/// node as a whole.
pub fn single_slot<'a>(keys: impl Iterator<Item = &'a [u8]>) -> Result<Option<u16>, CrossSlot> {
    let mut slot = None;
    for key in keys {
        let s = key_slot(key);
        match slot {
            None => slot = Some(s),
            Some(first) if first != s => return Err(CrossSlot),
            Some(_) => {}
        }
    }
    Ok(slot)
}

/// The reply a single Redis would give, from the replies of the parts, in
/// part order (each one complete raw reply, RESP2 or RESP3). A reply of the
/// wrong shape, or a missing one, makes an `-ERR` reply, since nothing
/// better can be said.
pub fn merge(plan: &Plan, replies: Vec<Bytes>) -> Bytes {
    if replies.len() != plan.parts.len() {
        return unexpected(plan);
    }
    if let Some(e) = replies.iter().find(|r| super::error_text(r).is_some()) {
        return e.clone();
    }
    let merged = match plan.merge {
        Merge::MgetOrder => merge_mget(plan, replies),
        Merge::SumIntegers => replies
            .iter()
            .try_fold(0i64, |sum, r| sum.checked_add(integer(r)?))
            .map(encode::integer),
        Merge::AllOk => replies
            .iter()
            .all(|r| r[..] == b"+OK\r\n"[..])
            .then(encode::ok),
    };
    merged.unwrap_or_else(|| unexpected(plan))
}

fn merge_mget(plan: &Plan, replies: Vec<Bytes>) -> Option<Bytes> {
    let total: usize = plan.parts.iter().map(|p| p.positions.len()).sum();
    let mut values: Vec<Option<Bytes>> = vec![None; total];
    let mut framer = ReplyFramer::new(ReplyLimits::default());
    for (part, reply) in plan.parts.iter().zip(replies) {
        let (n, header) = array_header(&reply)?;
        if n != part.positions.len() {
            return None;
        }
        let mut rest = BytesMut::from(&reply[header..]);
        for &pos in &part.positions {
            let value = framer.next(&mut rest).ok()??;
            *values.get_mut(pos.checked_sub(1)?)? = Some(value.raw);
        }
        if !rest.is_empty() {
            return None;
        }
    }
    let size = 16 + values.iter().flatten().map(Bytes::len).sum::<usize>();
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(format!("*{total}\r\n").as_bytes());
    for v in values {
        out.put_slice(&v?);
    }
    Some(out.freeze())
}

/// `*<n>\r\n`: `n` and the header's length.
pub fn array_header(reply: &[u8]) -> Option<(usize, usize)> {
    if reply.first() != Some(&b'*') {
        return None;
    }
    let cr = reply.iter().position(|&b| b == b'\r')?;
    if reply.get(cr + 1) != Some(&b'\n') {
        return None;
    }
    let n = usize::try_from(parse_ll(&reply[1..cr])?).ok()?;
    Some((n, cr + 2))
}

/// `:<n>\r\n`, exactly.
pub fn integer(reply: &[u8]) -> Option<i64> {
    parse_ll(reply.strip_prefix(b":")?.strip_suffix(b"\r\n")?)
}

fn unexpected(plan: &Plan) -> Bytes {
    let name = plan
        .parts
        .first()
        .map(|p| String::from_utf8_lossy(p.command.name()).to_uppercase())
        .unwrap_or_default();
    encode::error(&format!(
        "ERR unexpected reply from the cluster to a part of {name}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Command {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        Command::from_args(&args)
    }

    fn part(slot: u16, args: &[&str], positions: &[usize]) -> Part {
        Part {
            slot,
            command: cmd(args),
            positions: positions.to_vec(),
        }
    }

    /// Two groups: slots below 8192, and the rest.
    fn halves(slot: u16) -> usize {
        usize::from(slot >= 8192)
    }

    fn by_slot(slot: u16) -> usize {
        usize::from(slot)
    }

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn the_keys_used_here() {
        assert_eq!(key_slot(b"a"), 15495);
        assert_eq!(key_slot(b"b"), 3300);
        assert_eq!(key_slot(b"c"), 7365);
        assert_eq!(key_slot(b"d"), 11298);
        assert_eq!(key_slot(b"{b}x"), 3300);
    }

    #[test]
    fn mget_by_group_keeps_key_order() {
        let plan = plan(&cmd(&["mget", "a", "b", "c", "d"]), halves)
            .unwrap()
            .unwrap();
        assert_eq!(plan.merge, Merge::MgetOrder);
        assert_eq!(
            plan.parts,
            [
                part(15495, &["mget", "a", "d"], &[1, 4]),
                part(3300, &["mget", "b", "c"], &[2, 3]),
            ]
        );
        let merged = merge(
            &plan,
            vec![
                b("*2\r\n$2\r\nva\r\n$-1\r\n"),
                b("*2\r\n$-1\r\n$2\r\nvc\r\n"),
            ],
        );
        assert_eq!(&merged[..], b"*4\r\n$2\r\nva\r\n$-1\r\n$2\r\nvc\r\n$-1\r\n");
    }

    #[test]
    fn mget_by_slot_in_resp3() {
        let plan = plan(&cmd(&["MGET", "b", "a", "{b}x"]), by_slot)
            .unwrap()
            .unwrap();
        assert_eq!(
            plan.parts,
            [
                part(3300, &["MGET", "b", "{b}x"], &[1, 3]),
                part(15495, &["MGET", "a"], &[2]),
            ]
        );
        let merged = merge(
            &plan,
            vec![b("*2\r\n_\r\n$1\r\nx\r\n"), b("*1\r\n$3\r\na\r\n\r\n")],
        );
        assert_eq!(&merged[..], b"*3\r\n_\r\n$3\r\na\r\n\r\n$1\r\nx\r\n");
    }

    #[test]
    fn mset_pairs_travel_together() {
        let plan = plan(&cmd(&["MSET", "a", "1", "b", "2", "a", "3"]), by_slot)
            .unwrap()
            .unwrap();
        assert_eq!(plan.merge, Merge::AllOk);
        assert_eq!(
            plan.parts,
            [
                part(15495, &["MSET", "a", "1", "a", "3"], &[1, 5]),
                part(3300, &["MSET", "b", "2"], &[3]),
            ]
        );
        assert_eq!(
            &merge(&plan, vec![b("+OK\r\n"), b("+OK\r\n")])[..],
            b"+OK\r\n"
        );
        assert_eq!(
            &merge(&plan, vec![b("+OK\r\n"), b("-OOM command not allowed\r\n")])[..],
            b"-OOM command not allowed\r\n"
        );
    }

    #[test]
    fn counts_add_up() {
        for name in ["DEL", "unlink", "Exists", "TOUCH"] {
            let plan = plan(&cmd(&[name, "a", "b", "c"]), by_slot)
                .unwrap()
                .unwrap();
            assert_eq!(plan.merge, Merge::SumIntegers);
            assert_eq!(plan.parts.len(), 3);
            assert_eq!(
                &merge(&plan, vec![b(":1\r\n"), b(":0\r\n"), b(":1\r\n")])[..],
                b":2\r\n"
            );
        }
        let plan = plan(&cmd(&["EXISTS", "a", "b", "a"]), by_slot)
            .unwrap()
            .unwrap();
        assert_eq!(plan.parts[0], part(15495, &["EXISTS", "a", "a"], &[1, 3]));
        assert_eq!(&merge(&plan, vec![b(":2\r\n"), b(":1\r\n")])[..], b":3\r\n");
    }

    #[test]
    fn sent_as_is() {
        // One group.
        assert_eq!(plan(&cmd(&["MGET", "b", "c"]), halves), Ok(None));
        assert_eq!(plan(&cmd(&["DEL", "{b}x", "b"]), by_slot), Ok(None));
        assert_eq!(plan(&cmd(&["MSET", "a", "1"]), by_slot), Ok(None));
        // Not a command that is split.
        assert_eq!(
            plan(&cmd(&["MSETNX", "a", "1", "b", "2"]), by_slot),
            Ok(None)
        );
        assert_eq!(plan(&cmd(&["GET", "a"]), by_slot), Ok(None));
        assert_eq!(plan(&Command::from_args(&[]), by_slot), Ok(None));
    }

    #[test]
    fn wrong_number_of_arguments() {
        let err = |args: &[&str]| plan(&cmd(args), by_slot).unwrap_err();
        // Verbatim from redis-server 7.0.15 (cluster mode, too).
        assert_eq!(
            &err(&["MGET"])[..],
            b"-ERR wrong number of arguments for 'mget' command\r\n"
        );
        assert_eq!(
            &err(&["mset", "a"])[..],
            b"-ERR wrong number of arguments for 'mset' command\r\n"
        );
        assert_eq!(
            &err(&["DEL"])[..],
            b"-ERR wrong number of arguments for 'del' command\r\n"
        );
        // MSET with a key but no value, in the middle.
        assert_eq!(
            &err(&["MSET", "a", "1", "b"])[..],
            b"-ERR wrong number of arguments for 'mset' command\r\n"
        );
        assert_eq!(
            &err(&["unlink"])[..],
            b"-ERR wrong number of arguments for 'unlink' command\r\n"
        );
        assert_eq!(
            &err(&["exists"])[..],
            b"-ERR wrong number of arguments for 'exists' command\r\n"
        );
        assert_eq!(
            &err(&["touch"])[..],
            b"-ERR wrong number of arguments for 'touch' command\r\n"
        );
    }

    #[test]
    fn the_first_error_wins() {
        let plan = plan(&cmd(&["MGET", "a", "b", "c"]), by_slot)
            .unwrap()
            .unwrap();
        let merged = merge(
            &plan,
            vec![
                b("*1\r\n$1\r\n1\r\n"),
                b("-CLUSTERDOWN The cluster is down\r\n"),
                b("!7\r\nERR bad\r\n"),
            ],
        );
        assert_eq!(&merged[..], b"-CLUSTERDOWN The cluster is down\r\n");
        let merged = merge(
            &plan,
            vec![b("!7\r\nERR bad\r\n"), b("-ERR x\r\n"), b("*1\r\n_\r\n")],
        );
        assert_eq!(&merged[..], b"!7\r\nERR bad\r\n");
    }

    #[test]
    fn malformed_part_replies() {
        let unexpected = |name: &str| {
            format!("-ERR unexpected reply from the cluster to a part of {name}\r\n").into_bytes()
        };
        let mget = plan(&cmd(&["mget", "a", "b"]), by_slot).unwrap().unwrap();
        for replies in [
            vec![b("*1\r\n$1\r\n1\r\n")],
            vec![b("*1\r\n$1\r\n1\r\n"), b("*2\r\n$1\r\n1\r\n$1\r\n2\r\n")],
            vec![b("*1\r\n$1\r\n1\r\n"), b("*1\r\n$1\r\n1\r\n:2\r\n")],
            vec![b("*1\r\n$1\r\n1\r\n"), b("*1\r\n$5\r\n1\r\n")],
            vec![b("*1\r\n$1\r\n1\r\n"), b(":1\r\n")],
            vec![b("*1\r\n$1\r\n1\r\n"), b("*-1\r\n")],
        ] {
            assert_eq!(merge(&mget, replies)[..], unexpected("MGET")[..]);
        }
        let del = plan(&cmd(&["del", "a", "b"]), by_slot).unwrap().unwrap();
        assert_eq!(
            merge(&del, vec![b(":1\r\n"), b("+OK\r\n")])[..],
            unexpected("DEL")[..]
        );
        assert_eq!(
            merge(&del, vec![b(":9223372036854775807\r\n"), b(":1\r\n")])[..],
            unexpected("DEL")[..]
        );
        let mset = plan(&cmd(&["mset", "a", "1", "b", "2"]), by_slot)
            .unwrap()
            .unwrap();
        assert_eq!(
            merge(&mset, vec![b("+OK\r\n"), b(":1\r\n")])[..],
            unexpected("MSET")[..]
        );
    }

    #[test]
    fn single_slot_or_crossslot() {
        let keys = |ks: &[&'static str]| ks.iter().map(|k| k.as_bytes()).collect::<Vec<_>>();
        assert_eq!(single_slot(keys(&[]).into_iter()), Ok(None));
        assert_eq!(
            single_slot(keys(&["b", "{b}x", "b"]).into_iter()),
            Ok(Some(3300))
        );
        assert_eq!(single_slot(keys(&["a", "b"]).into_iter()), Err(CrossSlot));
        assert_eq!(
            &CrossSlot.reply()[..],
            b"-CROSSSLOT Keys in request don't hash to the same slot\r\n"
        );
        assert_eq!(crossslot_error(), CrossSlot.reply());
    }
}
