//! A RESP3 reply as redis-server 7.0 writes the same value to a RESP2
//! client: the near-cache fills over RESP3 connections (their invalidation
//! pushes arrive in order with the replies) and serves clients of both.
//!
//! Maps become flat arrays, sets arrays, null `$-1`, doubles and big
//! numbers bulk strings of the same text, booleans `:1`/`:0`, verbatim
//! strings bulk strings without their format prefix, blob errors simple
//! errors; attributes are dropped. That is what Redis's own reply
//! functions do per protocol for the commands the cache allows (the
//! commands whose RESP2 shape differs in more than types, such as
//! `WITHSCORES` pairs, are never cached: `route::cache::key`).
//!
//! Iterative, with the nesting in an explicit, bounded stack.

use bytes::{BufMut, Bytes, BytesMut};

use super::ProtocolError;
use super::parse_ll;

/// Deeper than any reply a cacheable command has; bounds the stack.
const MAX_DEPTH: usize = 128;

struct Level {
    /// Elements still to come.
    left: i64,
    /// An attribute: its completion is not an element of its parent.
    counts: bool,
}

/// The RESP2 form of one complete RESP3 reply frame (the same `Bytes`
/// when nothing needs to change).
pub fn to_resp2(frame: &Bytes) -> Result<Bytes, ProtocolError> {
    match frame.first() {
        Some(b'$' | b'+' | b'-' | b':') => return Ok(frame.clone()),
        None => return Err(bad("an empty frame")),
        _ => {}
    }
    let mut out = BytesMut::with_capacity(frame.len() + 16);
    let mut stack: Vec<Level> = Vec::new();
    // Levels inside an attribute: their output is dropped.
    let mut skipping = 0usize;
    let mut pos = 0usize;
    let mut changed = false;
    loop {
        let (line, next) = line_at(frame, pos)?;
        let kind = line[0];
        let text = &line[1..];
        let sink = skipping == 0;
        let mut open: Option<(i64, bool)> = None;
        match kind {
            b'+' | b'-' | b':' => {
                if sink {
                    out.put_slice(&frame[pos..next]);
                }
                pos = next;
            }
            b'$' => {
                let n = number(text)?;
                let end = if n < 0 {
                    next
                } else {
                    let end = span_end(next, n as usize)?;
                    if frame.get(end - 2..end) != Some(b"\r\n") {
                        return Err(bad("a bulk string without its end"));
                    }
                    end
                };
                if sink {
                    out.put_slice(&frame[pos..end]);
                }
                pos = end;
            }
            b'*' | b'>' => {
                let n = number(text)?;
                if sink {
                    out.put_slice(b"*");
                    out.put_slice(text);
                    out.put_slice(b"\r\n");
                }
                changed |= kind == b'>';
                pos = next;
                if n > 0 {
                    open = Some((n, true));
                }
            }
            b'%' | b'~' => {
                let n = number(text)?;
                let elems = if kind == b'%' { n * 2 } else { n };
                if sink {
                    header(&mut out, b'*', elems);
                }
                changed = true;
                pos = next;
                if elems > 0 {
                    open = Some((elems, true));
                }
            }
            b'|' => {
                let n = number(text)?;
                changed = true;
                pos = next;
                if n > 0 {
                    skipping += 1;
                    stack.push(Level {
                        left: n * 2,
                        counts: false,
                    });
                    check_depth(&stack)?;
                }
                // Not an element: the value it describes follows.
                continue;
            }
            b'_' => {
                if sink {
                    out.put_slice(b"$-1\r\n");
                }
                changed = true;
                pos = next;
            }
            b',' | b'(' => {
                if sink {
                    header(&mut out, b'$', text.len() as i64);
                    out.put_slice(text);
                    out.put_slice(b"\r\n");
                }
                changed = true;
                pos = next;
            }
            b'#' => {
                let v: &[u8] = match text {
                    b"t" => b":1\r\n",
                    b"f" => b":0\r\n",
                    _ => return Err(bad("a boolean other than t or f")),
                };
                if sink {
                    out.put_slice(v);
                }
                changed = true;
                pos = next;
            }
            b'=' | b'!' => {
                let n = usize::try_from(number(text)?).map_err(|_| bad("a negative length"))?;
                let end = span_end(next, n)?;
                let body = frame
                    .get(next..end - 2)
                    .filter(|_| frame.get(end - 2..end) == Some(b"\r\n"))
                    .ok_or_else(|| bad("a blob without its end"))?;
                if sink {
                    if kind == b'=' {
                        // `txt:` or `mkd:` first.
                        let body = body
                            .get(4..)
                            .ok_or_else(|| bad("a short verbatim string"))?;
                        header(&mut out, b'$', body.len() as i64);
                        out.put_slice(body);
                    } else {
                        out.put_slice(b"-");
                        out.put_slice(body);
                    }
                    out.put_slice(b"\r\n");
                }
                changed = true;
                pos = end;
            }
            other => {
                return Err(ProtocolError::Decode(format!(
                    "unknown RESP3 type byte 0x{other:02x}"
                )));
            }
        }
        if let Some((left, counts)) = open {
            stack.push(Level { left, counts });
            check_depth(&stack)?;
            continue;
        }
        // One element complete: close every level it completes.
        let mut done = true;
        while let Some(top) = stack.last_mut() {
            top.left -= 1;
            if top.left > 0 {
                done = false;
                break;
            }
            let counts = top.counts;
            stack.pop();
            if !counts {
                skipping -= 1;
                // The attribute's value is still to come.
                done = false;
                break;
            }
        }
        if done {
            break;
        }
    }
    if pos != frame.len() {
        return Err(bad("bytes after the frame"));
    }
    Ok(if changed { out.freeze() } else { frame.clone() })
}

fn bad(what: &str) -> ProtocolError {
    ProtocolError::Decode(format!("malformed RESP3 reply: {what}"))
}

fn check_depth(stack: &[Level]) -> Result<(), ProtocolError> {
    if stack.len() > MAX_DEPTH {
        return Err(ProtocolError::TooDeep(MAX_DEPTH));
    }
    Ok(())
}

/// The line at `pos` without its `\r\n`, and where the next one starts.
fn line_at(frame: &[u8], pos: usize) -> Result<(&[u8], usize), ProtocolError> {
    let rest = frame
        .get(pos..)
        .filter(|r| !r.is_empty())
        .ok_or_else(|| bad("a truncated frame"))?;
    let nl = rest
        .windows(2)
        .position(|w| w == b"\r\n")
        .ok_or_else(|| bad("a line without CRLF"))?;
    if nl == 0 {
        return Err(bad("an empty line"));
    }
    Ok((&rest[..nl], pos + nl + 2))
}

/// Where a body of `n` bytes starting at `start` ends, with its CRLF.
fn span_end(start: usize, n: usize) -> Result<usize, ProtocolError> {
    start
        .checked_add(n)
        .and_then(|e| e.checked_add(2))
        .ok_or_else(|| bad("a length past any frame"))
}

fn number(text: &[u8]) -> Result<i64, ProtocolError> {
    parse_ll(text).ok_or_else(|| bad("a length that is not a number"))
}

fn header(out: &mut BytesMut, kind: u8, n: i64) {
    out.put_u8(kind);
    out.put_slice(n.to_string().as_bytes());
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn down(s: &[u8]) -> Vec<u8> {
        to_resp2(&Bytes::copy_from_slice(s)).unwrap().to_vec()
    }

    #[test]
    fn resp2_frames_come_back_unchanged_and_uncopied() {
        for f in [
            &b"$5\r\nhello\r\n"[..],
            b"$-1\r\n",
            b"+OK\r\n",
            b"-ERR no\r\n",
            b":42\r\n",
            b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
            b"*0\r\n",
            b"*-1\r\n",
        ] {
            let b = Bytes::copy_from_slice(f);
            let d = to_resp2(&b).unwrap();
            assert_eq!(&d[..], f);
            assert_eq!(d.as_ptr(), b.as_ptr(), "copied: {f:?}");
        }
    }

    #[test]
    fn each_resp3_type_becomes_what_redis_writes_to_resp2() {
        assert_eq!(down(b"_\r\n"), b"$-1\r\n");
        assert_eq!(down(b",1.5\r\n"), b"$3\r\n1.5\r\n");
        assert_eq!(down(b",inf\r\n"), b"$3\r\ninf\r\n");
        assert_eq!(down(b",-inf\r\n"), b"$4\r\n-inf\r\n");
        assert_eq!(down(b"#t\r\n"), b":1\r\n");
        assert_eq!(down(b"#f\r\n"), b":0\r\n");
        assert_eq!(
            down(b"(123456789012345678901\r\n"),
            b"$21\r\n123456789012345678901\r\n"
        );
        assert_eq!(down(b"=8\r\ntxt:abcd\r\n"), b"$4\r\nabcd\r\n");
        assert_eq!(down(b"!9\r\nERR oops!\r\n"), b"-ERR oops!\r\n");
        assert_eq!(
            down(b"%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n_\r\n"),
            b"*4\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n$-1\r\n"
        );
        assert_eq!(
            down(b"~2\r\n$1\r\nx\r\n$1\r\ny\r\n"),
            b"*2\r\n$1\r\nx\r\n$1\r\ny\r\n"
        );
        assert_eq!(down(b"%0\r\n"), b"*0\r\n");
        assert_eq!(down(b"~0\r\n"), b"*0\r\n");
    }

    #[test]
    fn nesting_converts_at_every_level() {
        // A map of sets, and an array holding a map and doubles.
        assert_eq!(
            down(b"%1\r\n$1\r\nk\r\n~1\r\n,2\r\n"),
            b"*2\r\n$1\r\nk\r\n*1\r\n$1\r\n2\r\n"
        );
        assert_eq!(
            down(b"*3\r\n%1\r\n:1\r\n#t\r\n,0.5\r\n_\r\n"),
            b"*3\r\n*2\r\n:1\r\n:1\r\n$3\r\n0.5\r\n$-1\r\n"
        );
    }

    #[test]
    fn attributes_are_dropped_with_their_contents() {
        assert_eq!(down(b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n"), b"$1\r\nv\r\n");
        assert_eq!(
            down(b"*2\r\n|1\r\n+a\r\n%1\r\n:1\r\n:2\r\n:7\r\n,1\r\n"),
            b"*2\r\n:7\r\n$1\r\n1\r\n"
        );
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for f in [
            &b""[..],
            b"%",
            b"%1\r\n",
            b"%x\r\n",
            b"~1\r\n$3\r\nab",
            b",1.5",
            b"#x\r\n",
            b"=2\r\nab\r\n",
            b"=10\r\ntxt:\r\n",
            b"_\r\n:1\r\n",
            b"?\r\n",
            b"\r\n",
            b"|1\r\n+a\r\n",
            b"~1\r\n$9223372036854775807\r\nx\r\n",
            b"=9223372036854775807\r\nx\r\n",
        ] {
            assert!(to_resp2(&Bytes::copy_from_slice(f)).is_err(), "{f:?}");
        }
        let deep = b"~1\r\n".repeat(MAX_DEPTH + 1);
        assert!(matches!(
            to_resp2(&Bytes::from(deep)),
            Err(ProtocolError::TooDeep(_))
        ));
    }

    fn resp2_value() -> impl Strategy<Value = Vec<u8>> {
        let leaf = prop_oneof![
            "[a-z]{0,8}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
            any::<i32>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(|b| {
                let mut v = format!("${}\r\n", b.len()).into_bytes();
                v.extend(b);
                v.extend(b"\r\n");
                v
            }),
            Just(b"$-1\r\n".to_vec()),
        ];
        leaf.prop_recursive(4, 32, 5, |inner| {
            proptest::collection::vec(inner, 0..5).prop_map(|items| {
                let mut v = format!("*{}\r\n", items.len()).into_bytes();
                for i in items {
                    v.extend(i);
                }
                v
            })
        })
    }

    proptest! {
        #[test]
        fn any_resp2_value_is_its_own_downgrade(v in resp2_value()) {
            prop_assert_eq!(down(&v), v);
        }
    }
}
