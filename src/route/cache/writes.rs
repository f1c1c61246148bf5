//! What a write through the sidecar drops from the near-cache before its
//! reply reaches the client, so that a client never reads its own write's
//! keys from an entry filled before it.
//!
//! Redis's own invalidation arrives later, after the write replicates;
//! this is the early, local drop. It errs on the side of dropping: every
//! argument that could be a key counts as one (dropping an entry that did
//! not change costs one refill, keeping one that did is a stale read).

use bytes::Bytes;

use crate::proto::Command;

/// Arguments longer than this are taken for values, not keys, except in
/// the positions where the command puts its keys (the first argument,
/// and MSET's odd ones): hashing a megabyte value on every write is not
/// worth the rare very long key.
const KEY_MAX: usize = 1024;

/// What one write drops.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Written {
    #[default]
    Nothing,
    Keys(Vec<Bytes>),
    /// FLUSHALL, FLUSHDB, SWAPDB: every entry.
    Everything,
}

/// The keys `cmd` (a command that may write) may have written.
pub fn written(cmd: &Command) -> Written {
    let eq = |n: &str| cmd.name_eq(n);
    if eq("FLUSHALL") || eq("FLUSHDB") || eq("SWAPDB") {
        return Written::Everything;
    }
    if eq("MULTI") || eq("EXEC") || eq("DISCARD") || eq("WATCH") || eq("UNWATCH") {
        return Written::Nothing;
    }
    let pairs = eq("MSET") || eq("MSETNX");
    let keys: Vec<Bytes> = cmd
        .args()
        .enumerate()
        .skip(1)
        .filter(|(i, a)| *i == 1 || (pairs && i % 2 == 1) || (!pairs && a.len() <= KEY_MAX))
        .map(|(_, a)| Bytes::copy_from_slice(a))
        .collect();
    if keys.is_empty() {
        Written::Nothing
    } else {
        Written::Keys(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(args: &[&[u8]]) -> Written {
        written(&Command::from_args(args))
    }

    fn list(ks: &[&[u8]]) -> Written {
        Written::Keys(ks.iter().map(|k| Bytes::copy_from_slice(k)).collect())
    }

    #[test]
    fn every_short_argument_counts_as_a_key() {
        assert_eq!(keys(&[b"SET", b"k", b"v"]), list(&[b"k", b"v"]));
        assert_eq!(keys(&[b"del", b"a", b"b"]), list(&[b"a", b"b"]));
        assert_eq!(keys(&[b"PING"]), Written::Nothing);
    }

    #[test]
    fn long_values_are_skipped_but_the_first_argument_never_is() {
        let long = vec![b'x'; KEY_MAX + 1];
        assert_eq!(keys(&[b"SET", b"k", &long]), list(&[b"k"]));
        assert_eq!(keys(&[b"SET", &long, b"v"]), list(&[&long, b"v"]));
    }

    #[test]
    fn mset_keys_count_whatever_their_length_and_values_do_not() {
        let long = vec![b'k'; KEY_MAX + 1];
        assert_eq!(
            keys(&[b"MSET", b"a", b"1", &long, b"2"]),
            list(&[b"a", &long])
        );
    }

    #[test]
    fn flushes_drop_everything() {
        assert_eq!(keys(&[b"flushall"]), Written::Everything);
        assert_eq!(keys(&[b"FLUSHDB", b"ASYNC"]), Written::Everything);
        assert_eq!(keys(&[b"SWAPDB", b"0", b"1"]), Written::Everything);
        assert_eq!(keys(&[b"EXEC"]), Written::Nothing);
    }
}
