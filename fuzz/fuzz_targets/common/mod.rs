//! Helpers shared by the framer fuzz targets.
//!
//! Every input starts with two control bytes, the rest is the wire data:
//! - byte 0 picks how the data is cut into reads (see [`Chunks`]);
//! - byte 1 picks the framer limits and flags (each target decodes it).

// Each target uses only some of the helpers.
#![allow(dead_code)]

/// The control bytes and the wire data of one fuzz input.
pub struct Input<'a> {
    pub split: u8,
    pub config: u8,
    pub data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn parse(raw: &'a [u8]) -> Option<Self> {
        match raw {
            [split, config, data @ ..] => Some(Self {
                split: *split,
                config: *config,
                data,
            }),
            _ => None,
        }
    }
}

/// Cuts `data` into reads. The low 3 bits of the split byte choose the
/// largest read (1 byte ... 4 KiB), the other 5 bits seed a xorshift
/// generator that draws each read's size in `1..=max`, so the fuzzer can
/// explore both byte-at-a-time feeding and uneven splits.
pub struct Chunks<'a> {
    data: &'a [u8],
    max: usize,
    state: u32,
}

impl<'a> Chunks<'a> {
    pub fn new(split: u8, data: &'a [u8]) -> Self {
        const MAX: [usize; 8] = [1, 2, 3, 5, 8, 17, 64, 4096];
        Self {
            data,
            max: MAX[usize::from(split & 7)],
            // Never zero (xorshift would stay at zero).
            state: 0x9e37_79b9 ^ (u32::from(split >> 3) << 8) ^ data.len() as u32 | 1,
        }
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.data.is_empty() {
            return None;
        }
        self.state ^= self.state << 13;
        self.state ^= self.state >> 17;
        self.state ^= self.state << 5;
        let n = (self.state as usize % self.max + 1).min(self.data.len());
        let (chunk, rest) = self.data.split_at(n);
        self.data = rest;
        Some(chunk)
    }
}

/// Bytes after the last `\n` of `buf` (all of it if there is none).
///
/// When a framer waits for more input, the element it is waiting on (a
/// header line, an inline line, a simple reply line or a bulk body) starts
/// at the front of the buffer or right after a `\n` (the end of the
/// previous line or bulk CRLF), so this tail is never longer than that
/// element: a bound on it is a bound on what one element may buffer.
pub fn unterminated_tail(buf: &[u8]) -> usize {
    match buf.iter().rposition(|&b| b == b'\n') {
        Some(i) => buf.len() - i - 1,
        None => buf.len(),
    }
}

/// Parses `raw` as exactly one canonical RESP multibulk of bulk strings
/// (`*N\r\n` then N times `$L\r\n<L bytes>\r\n`, decimal without sign or
/// leading zeros), independently of the framer under test.
pub fn parse_multibulk(raw: &[u8]) -> Option<Vec<&[u8]>> {
    fn header(raw: &[u8], at: usize, ty: u8) -> Option<(usize, usize)> {
        if *raw.get(at)? != ty {
            return None;
        }
        let digits_end = at + 1 + raw[at + 1..].iter().position(|b| !b.is_ascii_digit())?;
        let digits = &raw[at + 1..digits_end];
        if digits.is_empty() || digits.len() > 19 || (digits.len() > 1 && digits[0] == b'0') {
            return None;
        }
        if raw.get(digits_end..digits_end + 2)? != b"\r\n" {
            return None;
        }
        let n = std::str::from_utf8(digits).ok()?.parse::<usize>().ok()?;
        Some((n, digits_end + 2))
    }
    let (count, mut at) = header(raw, 0, b'*')?;
    let mut args = Vec::new();
    for _ in 0..count {
        let (len, body) = header(raw, at, b'$')?;
        let end = body.checked_add(len)?;
        if raw.get(end..end.checked_add(2)?)? != b"\r\n" {
            return None;
        }
        args.push(&raw[body..end]);
        at = end + 2;
    }
    (at == raw.len()).then_some(args)
}
