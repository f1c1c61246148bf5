//! Refusals: the error replies a replica gives for a read the primary
//! would answer (READONLY, NOSCRIPT, LOADING, MASTERDOWN). The one place
//! that decides whether a reply is one, for simple (`-`) and RESP3 blob
//! (`!<len>`) errors alike.

use crate::proto::parse_ll;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The command writes after all (the command table did not say so).
    ReadOnly,
    /// Scripts are not replicated: the replica does not have this one.
    NoScript,
    /// The replica is loading its dataset.
    Loading,
    /// The replica lost its primary (`replica-serve-stale-data no`).
    MasterDown,
}

impl Refusal {
    /// The refusal `reply` (one complete reply, raw) is, if it is one.
    pub fn of(reply: &[u8]) -> Option<Refusal> {
        match error_code(reply)? {
            b"READONLY" => Some(Refusal::ReadOnly),
            b"NOSCRIPT" => Some(Refusal::NoScript),
            b"LOADING" => Some(Refusal::Loading),
            b"MASTERDOWN" => Some(Refusal::MasterDown),
            _ => None,
        }
    }
}

/// The first word of an error reply: `-CODE text\r\n` or `!<len>\r\nCODE
/// text\r\n`. `None` for anything else.
fn error_code(reply: &[u8]) -> Option<&[u8]> {
    let text = match reply.first()? {
        b'-' => &reply[1..],
        b'!' => {
            let cr = reply.iter().position(|&b| b == b'\r')?;
            let len = usize::try_from(parse_ll(&reply[1..cr])?).ok()?;
            reply.get(cr + 2..cr + 2 + len)?
        }
        _ => return None,
    };
    let end = text
        .iter()
        .position(|&b| b == b' ' || b == b'\r')
        .unwrap_or(text.len());
    Some(&text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_errors() {
        assert_eq!(
            Refusal::of(b"-READONLY You can't write against a read only replica.\r\n"),
            Some(Refusal::ReadOnly)
        );
        assert_eq!(
            Refusal::of(b"-NOSCRIPT No matching script.\r\n"),
            Some(Refusal::NoScript)
        );
        assert_eq!(
            Refusal::of(b"-LOADING Redis is loading the dataset in memory\r\n"),
            Some(Refusal::Loading)
        );
        assert_eq!(Refusal::of(b"-MASTERDOWN\r\n"), Some(Refusal::MasterDown));
        assert_eq!(Refusal::of(b"-ERR unknown command\r\n"), None);
        assert_eq!(Refusal::of(b"-READONLYX x\r\n"), None);
        assert_eq!(Refusal::of(b"-LOAD x\r\n"), None);
        assert_eq!(Refusal::of(b"-\r\n"), None);
        assert_eq!(Refusal::of(b"-readonly x\r\n"), None);
    }

    #[test]
    fn blob_errors() {
        assert_eq!(
            Refusal::of(b"!19\r\nLOADING please wait\r\n"),
            Some(Refusal::Loading)
        );
        assert_eq!(Refusal::of(b"!8\r\nREADONLY\r\n"), Some(Refusal::ReadOnly));
        assert_eq!(Refusal::of(b"!7\r\nERR bad\r\n"), None);
        // A length that is not a Redis integer, or runs past the frame.
        assert_eq!(Refusal::of(b"!+8\r\nREADONLY\r\n"), None);
        assert_eq!(Refusal::of(b"!20\r\nREADONLY\r\n"), None);
    }

    #[test]
    fn not_errors() {
        assert_eq!(Refusal::of(b"+READONLY\r\n"), None);
        assert_eq!(Refusal::of(b"$8\r\nREADONLY\r\n"), None);
        assert_eq!(Refusal::of(b"*1\r\n-READONLY x\r\n"), None);
        assert_eq!(Refusal::of(b""), None);
    }
}
