//! Replies the sidecar makes itself, encoded with `redis-protocol`.
//!
//! Everything forwarded from an upstream travels as raw bytes; only the
//! replies nearby owns (SELECT, HELLO, AUTH, errors about upstreams, ...) are
//! encoded here, in the protocol version the client negotiated.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::encode as enc2;
use redis_protocol::resp2::types::BorrowedFrame as F2;
use redis_protocol::resp3::encode::complete as enc3;
use redis_protocol::resp3::types::{BorrowedFrame as F3, FrameMap};

/// The RESP version a client (and the pipes serving it) speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Resp2,
    Resp3,
}

impl Proto {
    pub fn number(self) -> i64 {
        match self {
            Proto::Resp2 => 2,
            Proto::Resp3 => 3,
        }
    }
}

pub fn ok() -> Bytes {
    Bytes::from_static(b"+OK\r\n")
}

pub fn simple(s: &'static str) -> Bytes {
    let mut out = BytesMut::with_capacity(s.len() + 3);
    let _ = enc2::extend_encode_borrowed(&mut out, &F2::SimpleString(s.as_bytes()), false);
    out.freeze()
}

/// An error reply. `msg` starts with the error code (`ERR ...`, `NOAUTH ...`).
/// CR and LF would end the line early and let text masquerade as another
/// frame, so they are replaced: the encoder does not check.
pub fn error(msg: &str) -> Bytes {
    let clean: String = msg
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    let mut out = BytesMut::with_capacity(clean.len() + 3);
    let _ = enc2::extend_encode_borrowed(&mut out, &F2::Error(&clean), false);
    out.freeze()
}

pub fn integer(n: i64) -> Bytes {
    let mut out = BytesMut::with_capacity(24);
    let _ = enc2::extend_encode_borrowed(&mut out, &F2::Integer(n), false);
    out.freeze()
}

pub fn bulk(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 16);
    let _ = enc2::extend_encode_borrowed(&mut out, &F2::BulkString(data), false);
    out.freeze()
}

/// A null bulk string: `$-1` in RESP2, `_` in RESP3.
pub fn null(proto: Proto) -> Bytes {
    match proto {
        Proto::Resp2 => Bytes::from_static(b"$-1\r\n"),
        Proto::Resp3 => Bytes::from_static(b"_\r\n"),
    }
}

/// What HELLO answers: the server's identity as a map (RESP3) or a flat
/// array of pairs (RESP2), like redis-server.
pub struct HelloInfo<'a> {
    pub version: &'a str,
    pub proto: Proto,
    pub id: i64,
    pub role: &'a str,
}

pub fn hello(info: &HelloInfo<'_>) -> Bytes {
    let pairs: [(&str, Value<'_>); 7] = [
        ("server", Value::Str("redis")),
        ("version", Value::Str(info.version)),
        ("proto", Value::Int(info.proto.number())),
        ("id", Value::Int(info.id)),
        ("mode", Value::Str("standalone")),
        ("role", Value::Str(info.role)),
        ("modules", Value::EmptyArray),
    ];
    let mut out = BytesMut::with_capacity(128);
    match info.proto {
        Proto::Resp2 => {
            let mut flat = Vec::with_capacity(14);
            for (k, v) in &pairs {
                flat.push(F2::BulkString(k.as_bytes()));
                flat.push(match v {
                    Value::Str(s) => F2::BulkString(s.as_bytes()),
                    Value::Int(n) => F2::Integer(*n),
                    Value::EmptyArray => F2::Array(&[]),
                });
            }
            let _ = enc2::extend_encode_borrowed(&mut out, &F2::Array(&flat), false);
        }
        Proto::Resp3 => {
            let mut map = FrameMap::default();
            for (k, v) in &pairs {
                let key = F3::BlobString {
                    data: k.as_bytes(),
                    attributes: None,
                };
                let value = match v {
                    Value::Str(s) => F3::BlobString {
                        data: s.as_bytes(),
                        attributes: None,
                    },
                    Value::Int(n) => F3::Number {
                        data: *n,
                        attributes: None,
                    },
                    Value::EmptyArray => F3::Array {
                        data: &[],
                        attributes: None,
                    },
                };
                map.insert(key, value);
            }
            let _ = enc3::extend_encode_borrowed(
                &mut out,
                &F3::Map {
                    data: &map,
                    attributes: None,
                },
                false,
            );
        }
    }
    out.freeze()
}

enum Value<'a> {
    Str(&'a str),
    Int(i64),
    EmptyArray,
}

/// The confirmation frames `UNSUBSCRIBE`-like commands produce on a
/// connection with no subscriptions: one `[kind, name|nil, 0]` per argument,
/// or a single one with a nil name when there are none.
pub fn unsubscribe_frames(kind: &str, names: &[&[u8]], proto: Proto) -> Bytes {
    let mut out = BytesMut::new();
    let nil: [Option<&[u8]>; 1] = [None];
    let some: Vec<Option<&[u8]>> = names.iter().map(|n| Some(*n)).collect();
    let list: &[Option<&[u8]>] = if names.is_empty() { &nil } else { &some };
    for name in list {
        match proto {
            Proto::Resp2 => {
                let items = [
                    F2::BulkString(kind.as_bytes()),
                    match name {
                        Some(n) => F2::BulkString(n),
                        None => F2::Null,
                    },
                    F2::Integer(0),
                ];
                let _ = enc2::extend_encode_borrowed(&mut out, &F2::Array(&items), false);
            }
            Proto::Resp3 => {
                let items = [
                    F3::BlobString {
                        data: kind.as_bytes(),
                        attributes: None,
                    },
                    match name {
                        Some(n) => F3::BlobString {
                            data: n,
                            attributes: None,
                        },
                        None => F3::Null,
                    },
                    F3::Number {
                        data: 0,
                        attributes: None,
                    },
                ];
                let _ = enc3::extend_encode_borrowed(
                    &mut out,
                    &F3::Push {
                        data: &items,
                        attributes: None,
                    },
                    false,
                );
            }
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_cannot_inject_frames() {
        assert_eq!(&error("ERR a\r\n+OK")[..], b"-ERR a  +OK\r\n");
    }

    #[test]
    fn scalars() {
        assert_eq!(&integer(-7)[..], b":-7\r\n");
        assert_eq!(&bulk(b"a\r\nb")[..], b"$4\r\na\r\nb\r\n");
        assert_eq!(&null(Proto::Resp2)[..], b"$-1\r\n");
        assert_eq!(&null(Proto::Resp3)[..], b"_\r\n");
        assert_eq!(&simple("RESET")[..], b"+RESET\r\n");
    }

    #[test]
    fn hello_in_both_protocols() {
        let info = HelloInfo {
            version: "7.0.15",
            proto: Proto::Resp2,
            id: 9,
            role: "master",
        };
        let two = hello(&info);
        assert!(two.starts_with(b"*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n"));
        assert!(two.ends_with(b"$7\r\nmodules\r\n*0\r\n"));
        let three = hello(&HelloInfo {
            proto: Proto::Resp3,
            ..info
        });
        assert!(three.starts_with(b"%7\r\n"));
        assert!(
            three
                .windows(b"$5\r\nproto\r\n:3\r\n".len())
                .any(|w| w == b"$5\r\nproto\r\n:3\r\n")
        );
    }

    #[test]
    fn unsubscribe_without_subscriptions() {
        assert_eq!(
            &unsubscribe_frames("unsubscribe", &[], Proto::Resp2)[..],
            b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
        );
        assert_eq!(
            &unsubscribe_frames("punsubscribe", &[b"a", b"b"], Proto::Resp3)[..],
            b">3\r\n$12\r\npunsubscribe\r\n$1\r\na\r\n:0\r\n>3\r\n$12\r\npunsubscribe\r\n$1\r\nb\r\n:0\r\n"
        );
    }
}
