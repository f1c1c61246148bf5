//! Which reads the near-cache may answer, and the key of their entry.
//!
//! An explicit allow-list: deterministic reads whose reply depends only on
//! the keys they name (never the clock, randomness, or server state), and
//! whose RESP3 reply converts to exactly what Redis gives a RESP2 client
//! (`proto::downgrade`). Anything else, including a wrong arity, is not
//! cached and gets Redis's own answer.

use bytes::{BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use crate::proto::Command;

pub type Keys = SmallVec<[Bytes; 2]>;

/// Where a command's keys are.
#[derive(Clone, Copy)]
enum Shape {
    /// One key at argument 1; `min`..=`max` arguments in all (name included).
    One { min: usize, max: usize },
    /// Every argument from 1 is a key.
    All,
}

const ANY: usize = usize::MAX;

/// (name, shape): the allow-list.
const CACHEABLE: &[(&str, Shape)] = &[
    ("GET", Shape::One { min: 2, max: 2 }),
    ("STRLEN", Shape::One { min: 2, max: 2 }),
    ("GETRANGE", Shape::One { min: 4, max: 4 }),
    ("SUBSTR", Shape::One { min: 4, max: 4 }),
    ("GETBIT", Shape::One { min: 3, max: 3 }),
    ("BITCOUNT", Shape::One { min: 2, max: 5 }),
    ("EXISTS", Shape::All),
    ("MGET", Shape::All),
    ("TYPE", Shape::One { min: 2, max: 2 }),
    ("HGET", Shape::One { min: 3, max: 3 }),
    ("HMGET", Shape::One { min: 3, max: ANY }),
    ("HGETALL", Shape::One { min: 2, max: 2 }),
    ("HKEYS", Shape::One { min: 2, max: 2 }),
    ("HVALS", Shape::One { min: 2, max: 2 }),
    ("HLEN", Shape::One { min: 2, max: 2 }),
    ("HEXISTS", Shape::One { min: 3, max: 3 }),
    ("HSTRLEN", Shape::One { min: 3, max: 3 }),
    ("SMEMBERS", Shape::One { min: 2, max: 2 }),
    ("SISMEMBER", Shape::One { min: 3, max: 3 }),
    ("SMISMEMBER", Shape::One { min: 3, max: ANY }),
    ("SCARD", Shape::One { min: 2, max: 2 }),
    ("LRANGE", Shape::One { min: 4, max: 4 }),
    ("LLEN", Shape::One { min: 2, max: 2 }),
    ("LINDEX", Shape::One { min: 3, max: 3 }),
    ("LPOS", Shape::One { min: 3, max: ANY }),
    ("ZSCORE", Shape::One { min: 3, max: 3 }),
    ("ZMSCORE", Shape::One { min: 3, max: ANY }),
    ("ZCARD", Shape::One { min: 2, max: 2 }),
    ("ZCOUNT", Shape::One { min: 4, max: 4 }),
    ("ZLEXCOUNT", Shape::One { min: 4, max: 4 }),
    ("ZRANK", Shape::One { min: 3, max: 3 }),
    ("ZREVRANK", Shape::One { min: 3, max: 3 }),
    ("ZRANGE", Shape::One { min: 4, max: ANY }),
    ("ZREVRANGE", Shape::One { min: 4, max: ANY }),
    ("ZRANGEBYSCORE", Shape::One { min: 4, max: ANY }),
    ("ZREVRANGEBYSCORE", Shape::One { min: 4, max: ANY }),
    ("ZRANGEBYLEX", Shape::One { min: 4, max: ANY }),
    ("ZREVRANGEBYLEX", Shape::One { min: 4, max: ANY }),
];

/// The Redis keys of a read the near-cache may answer, or `None`.
pub fn cacheable(cmd: &Command) -> Option<Keys> {
    let name = cmd.name();
    if name.len() > 16 {
        return None;
    }
    let (_, shape) = CACHEABLE
        .iter()
        .find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(name))?;
    let argc = cmd.argc();
    // RESP3 nests scores as pairs where RESP2 flattens them: the reply
    // could not be given to both from one entry.
    if name.len() > 1
        && name[0].eq_ignore_ascii_case(&b'Z')
        && cmd
            .args()
            .skip(2)
            .any(|a| a.eq_ignore_ascii_case(b"WITHSCORES"))
    {
        return None;
    }
    match *shape {
        Shape::One { min, max } => {
            if argc < min || argc > max {
                return None;
            }
            Some(std::iter::once(Bytes::copy_from_slice(cmd.arg(1)?)).collect())
        }
        Shape::All => {
            if argc < 2 {
                return None;
            }
            Some(cmd.args().skip(1).map(Bytes::copy_from_slice).collect())
        }
    }
}

/// The entry key: db, user and every argument (the name upper-cased, so
/// `get` and `GET` share an entry), each length-prefixed, so that two
/// different requests never share a key.
pub fn entry_key(db: u32, user: Option<&[u8]>, cmd: &Command) -> Bytes {
    let len: usize =
        cmd.args().map(|a| a.len() + 4).sum::<usize>() + 9 + user.map_or(0, |u| u.len() + 4);
    let mut out = BytesMut::with_capacity(len);
    out.put_u32_le(db);
    match user {
        None => out.put_u8(0),
        Some(u) => {
            out.put_u8(1);
            out.put_u32_le(u.len() as u32);
            out.put_slice(u);
        }
    }
    out.put_u32_le(cmd.argc() as u32);
    for (i, a) in cmd.args().enumerate() {
        out.put_u32_le(a.len() as u32);
        if i == 0 {
            out.extend(a.iter().map(u8::to_ascii_uppercase));
        } else {
            out.put_slice(a);
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Command {
        let v: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        Command::from_args(&v)
    }

    fn keys(args: &[&str]) -> Option<Vec<String>> {
        cacheable(&cmd(args)).map(|ks| {
            ks.iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect()
        })
    }

    #[test]
    fn allow_listed_reads_give_their_keys() {
        assert_eq!(keys(&["GET", "k"]), Some(vec!["k".into()]));
        assert_eq!(keys(&["get", "k"]), Some(vec!["k".into()]));
        assert_eq!(
            keys(&["MGET", "a", "b"]),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            keys(&["EXISTS", "a", "a"]),
            Some(vec!["a".into(), "a".into()])
        );
        assert_eq!(keys(&["HMGET", "h", "f1", "f2"]), Some(vec!["h".into()]));
        assert_eq!(
            keys(&["ZRANGE", "z", "0", "-1", "REV"]),
            Some(vec!["z".into()])
        );
    }

    #[test]
    fn wrong_arity_and_time_or_chance_dependent_reads_are_not_cached() {
        assert_eq!(keys(&["GET"]), None);
        assert_eq!(keys(&["GET", "a", "b"]), None);
        assert_eq!(keys(&["MGET"]), None);
        assert_eq!(keys(&["HGET", "h"]), None);
        for never in [
            &["TTL", "k"][..],
            &["PTTL", "k"],
            &["RANDOMKEY"],
            &["SRANDMEMBER", "s"],
            &["HRANDFIELD", "h"],
            &["OBJECT", "ENCODING", "k"],
            &["SCAN", "0"],
            &["KEYS", "*"],
            &["GETEX", "k"],
            &["GETDEL", "k"],
            &["SET", "k", "v"],
            &["XRANGE", "s", "-", "+"],
        ] {
            assert_eq!(keys(never), None, "{never:?}");
        }
    }

    #[test]
    fn scores_are_never_cached() {
        assert_eq!(keys(&["ZRANGE", "z", "0", "-1", "withscores"]), None);
        assert_eq!(keys(&["ZRANGEBYSCORE", "z", "0", "9", "WITHSCORES"]), None);
        assert_eq!(keys(&["ZSCORE", "z", "m"]), Some(vec!["z".into()]));
    }

    #[test]
    fn entry_keys_are_unambiguous() {
        let k = |db, user: Option<&[u8]>, args: &[&str]| entry_key(db, user, &cmd(args));
        assert_eq!(k(0, None, &["get", "a"]), k(0, None, &["GET", "a"]));
        assert_ne!(k(0, None, &["GET", "a"]), k(0, None, &["GET", "A"]));
        assert_ne!(
            k(0, None, &["MGET", "ab", "c"]),
            k(0, None, &["MGET", "a", "bc"])
        );
        assert_ne!(k(1, None, &["GET", "a"]), k(2, None, &["GET", "a"]));
        assert_ne!(k(0, None, &["GET", "a"]), k(0, Some(b""), &["GET", "a"]));
        assert_ne!(
            k(0, Some(b"u"), &["GET", "a"]),
            k(0, Some(b"v"), &["GET", "a"])
        );
        assert_eq!(
            &k(3, None, &["GET", "k"])[..],
            b"\x03\x00\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00GET\x01\x00\x00\x00k"
        );
    }
}
