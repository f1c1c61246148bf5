//! The hash slot of a key, as Redis Cluster computes it (`keyHashSlot`):
//! CRC16/XMODEM of the key modulo 16384, or of its hash tag, the bytes
//! between the first `{` and the first `}` after it, when that is not
//! empty. A tag lets a client keep related keys in one slot, which is what
//! makes a multi-key command possible there.
//!
//! `redis-protocol`, already a dependency, implements exactly that
//! (`redis_keyslot`, over the `crc16` crate); the tests hold it to Redis's
//! answers and to a reading of `keyHashSlot` written here.

/// The hash slot of `key`, in `0..16384`.
pub fn key_slot(key: &[u8]) -> u16 {
    redis_protocol::redis_keyslot(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// CRC16/XMODEM (polynomial 0x1021, initial value 0, no reflection),
    /// bit by bit: an independent check of the crate's table.
    fn crc16(data: &[u8]) -> u16 {
        let mut crc: u16 = 0;
        for &b in data {
            crc ^= u16::from(b) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 {
                    (crc << 1) ^ 0x1021
                } else {
                    crc << 1
                };
            }
        }
        crc
    }

    /// `keyHashSlot` of Redis 7.0.15, restated.
    fn reference(key: &[u8]) -> u16 {
        let hashed = match key.iter().position(|&b| b == b'{') {
            Some(s) => match key[s + 1..].iter().position(|&b| b == b'}') {
                Some(len) if len > 0 => &key[s + 1..s + 1 + len],
                _ => key,
            },
            None => key,
        };
        crc16(hashed) & 0x3FFF
    }

    #[test]
    fn redis_answers() {
        // CLUSTER KEYSLOT on redis-server 7.0.15.
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"foo{}{bar}"), 8363);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn hash_tags() {
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        // An empty tag: the whole key.
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") & 0x3FFF);
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        // The first `}` after the first `{`.
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), crc16(b"{bar") & 0x3FFF);
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        // No closing brace, or a lone `{` at the end: the whole key.
        assert_eq!(key_slot(b"foo{bar"), crc16(b"foo{bar") & 0x3FFF);
        assert_eq!(key_slot(b"foo{"), crc16(b"foo{") & 0x3FFF);
        assert_eq!(key_slot(b"{"), crc16(b"{") & 0x3FFF);
        assert_eq!(key_slot(b"}{a}"), key_slot(b"a"));
    }

    proptest! {
        #[test]
        fn matches_key_hash_slot(key in proptest::collection::vec(
            prop_oneof![Just(b'{'), Just(b'}'), any::<u8>()], 0..24)
        ) {
            prop_assert_eq!(key_slot(&key), reference(&key));
        }
    }
}
