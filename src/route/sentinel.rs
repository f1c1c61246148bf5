//! What Redis Sentinel says, parsed without I/O: the replies of
//! `SENTINEL MASTER` and `SENTINEL REPLICAS`, the primary to follow given
//! several sentinels' answers, and the pub/sub events sentinels publish.
//!
//! One sentinel's answer is one opinion. During a failover the sentinels
//! disagree for a while: the others learn the new configuration from the
//! leader's hello messages (sent at once on the promotion, then every 2 s),
//! and a sentinel cut off from the others keeps naming the old primary. So the
//! sidecar asks every configured sentinel and follows the highest config
//! epoch, the rule the sentinels themselves converge by (a sentinel adopts
//! any hello message with a greater epoch than its own). It follows nothing
//! unless a majority answered: a sidecar that reaches only a minority may be
//! on the wrong side of a partition.
//!
//! Replies are RESP2 (`SENTINEL MASTER` sends a map, which RESP2 flattens to
//! alternating field names and values). Payload formats are those of
//! `sentinelEvent` in Redis 7.0's `src/sentinel.c`.

use redis_protocol::resp2::types::{BytesFrame, Resp2Frame};

use crate::proto::decode::{decode_ok, into_array};

/// A master as one sentinel sees it (`SENTINEL MASTER <name>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterView {
    pub ip: String,
    pub port: u16,
    /// `flags`, split on commas: `master`, `s_down`, `o_down`,
    /// `failover_in_progress` ...
    pub flags: Vec<String>,
    pub config_epoch: u64,
    /// How many other sentinels this one knows (absent in odd replies).
    pub num_other_sentinels: Option<u64>,
}

impl MasterView {
    /// Subjectively (this sentinel) or objectively (a quorum) down.
    pub fn is_down(&self) -> bool {
        has_flag(&self.flags, "s_down") || has_flag(&self.flags, "o_down")
    }

    /// This sentinel is running a failover of the master (flag
    /// `failover_in_progress`). From the promotion until its own switch, the
    /// leader reports the new config epoch with the old address.
    pub fn failing_over(&self) -> bool {
        has_flag(&self.flags, "failover_in_progress")
    }

    fn addr(&self) -> (&str, u16) {
        (&self.ip, self.port)
    }
}

/// A replica as one sentinel sees it (an entry of `SENTINEL REPLICAS`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaView {
    pub ip: String,
    pub port: u16,
    pub flags: Vec<String>,
    /// `master-link-status` is `ok` (the replica's own INFO says its link
    /// to the primary is up).
    pub master_link_ok: bool,
}

impl ReplicaView {
    /// Up, reachable by the sentinel, and replicating.
    pub fn usable(&self) -> bool {
        self.master_link_ok
            && !["s_down", "o_down", "disconnected"]
                .iter()
                .any(|f| has_flag(&self.flags, f))
    }
}

fn has_flag(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|f| f == flag)
}

/// Parses the raw reply of `SENTINEL MASTER <name>`. An error reply
/// (`-ERR No such master with that name`) is returned as its text.
pub fn parse_master(raw: &[u8]) -> Result<MasterView, String> {
    let items = into_array(decode_ok(raw)?)?;
    let f = Fields::new(&items)?;
    Ok(MasterView {
        ip: f.ip()?,
        port: f.port()?,
        flags: f.flags()?,
        config_epoch: number(f.require("config-epoch")?, "config-epoch")?,
        num_other_sentinels: f
            .get("num-other-sentinels")
            .map(|v| number(v, "num-other-sentinels"))
            .transpose()?,
    })
}

/// Parses the raw reply of `SENTINEL REPLICAS <name>` (or the older
/// `SENTINEL SLAVES`): an array of field arrays, possibly empty.
pub fn parse_replicas(raw: &[u8]) -> Result<Vec<ReplicaView>, String> {
    into_array(decode_ok(raw)?)?
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let items = into_array(entry).map_err(|e| format!("replica {i}: {e}"))?;
            replica(&items).map_err(|e| format!("replica {i}: {e}"))
        })
        .collect()
}

fn replica(items: &[BytesFrame]) -> Result<ReplicaView, String> {
    let f = Fields::new(items)?;
    Ok(ReplicaView {
        ip: f.ip()?,
        port: f.port()?,
        flags: f.flags()?,
        master_link_ok: f.require("master-link-status")? == "ok",
    })
}

/// The master to follow, from the answers of the sentinels that replied
/// out of `configured`. Needs a majority to have answered. The highest
/// config epoch wins; answers sharing it normally name one address (one
/// leader per epoch), but sentinels set up by hand can disagree, and then
/// the address most of them name wins, or nothing does: never a guess.
///
/// An answer flagged `failover_in_progress` counts as a reply but not as a
/// vote: once the promoted replica has taken over, the leader's
/// `SENTINEL MASTER` pairs the new epoch with the old address until the
/// failover ends (a second or more, seen with Redis 7.0.15), while the
/// other sentinels already name the new address at that epoch.
/// A master flagged down is still the master; what to do is the caller's.
pub fn consensus(configured: usize, answers: &[MasterView]) -> Result<&MasterView, String> {
    if answers.len() * 2 <= configured || answers.is_empty() {
        return Err(format!(
            "only {} of {configured} sentinels answered",
            answers.len()
        ));
    }
    let votes: Vec<&MasterView> = answers.iter().filter(|a| !a.failing_over()).collect();
    let Some(epoch) = votes.iter().map(|a| a.config_epoch).max() else {
        return Err("every sentinel that answered is running a failover".into());
    };
    // (first answer naming the address, how many name it), in answer order.
    let mut tally: Vec<(&MasterView, usize)> = Vec::new();
    for &a in votes.iter().filter(|a| a.config_epoch == epoch) {
        match tally.iter_mut().find(|(v, _)| v.addr() == a.addr()) {
            Some((_, n)) => *n += 1,
            None => tally.push((a, 1)),
        }
    }
    let best = tally.iter().map(|&(_, n)| n).max().unwrap_or(0);
    let mut top = tally.iter().filter(|&&(_, n)| n == best);
    match (top.next(), top.next()) {
        (Some(&(winner, _)), None) => Ok(winner),
        _ => Err(format!(
            "sentinels disagree at config epoch {epoch}: {}",
            tally
                .iter()
                .map(|(v, n)| format!("{}:{} ({n})", v.ip, v.port))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// What a sentinel event says, for the events that matter to following a
/// primary. Everything else, and anything malformed, is [`Event::Other`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `+switch-master`: the master `name` moved from `old` to `new`.
    SwitchMaster {
        name: String,
        old: (String, u16),
        new: (String, u16),
    },
    /// An event about one instance.
    Instance {
        kind: EventKind,
        /// `master`, `slave` or `sentinel`.
        role: String,
        /// A master's name; `ip:port` for a replica; a sentinel's run id.
        name: String,
        ip: String,
        port: u16,
        /// The master a replica or sentinel belongs to; `None` for a master.
        master_name: Option<String>,
    },
    Other,
}

/// The instance events parsed; the channel names are in [`EventKind::channel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `+sdown`: this sentinel thinks the instance is down.
    Sdown,
    /// `-sdown`
    SdownCleared,
    /// `+odown`: a quorum thinks the master is down (masters only).
    Odown,
    /// `-odown`
    OdownCleared,
    /// `+slave`: a new replica was discovered (or re-added after a switch).
    Slave,
    /// `+convert-to-slave`: a replica that claimed to be a master (an old
    /// primary back after a failover) is being turned into a replica.
    ConvertToSlave,
    /// `+failover-end`: the leader finished a failover; the instance is the
    /// master as it was before the switch.
    FailoverEnd,
    /// `+role-change`: the instance now reports the role the sentinel
    /// expects of it.
    RoleChange,
    /// `-role-change`: the instance reports a role other than the one the
    /// sentinel expects.
    RoleMismatch,
}

impl EventKind {
    const ALL: [EventKind; 9] = [
        EventKind::Sdown,
        EventKind::SdownCleared,
        EventKind::Odown,
        EventKind::OdownCleared,
        EventKind::Slave,
        EventKind::ConvertToSlave,
        EventKind::FailoverEnd,
        EventKind::RoleChange,
        EventKind::RoleMismatch,
    ];

    /// The pub/sub channel the event is published on.
    pub fn channel(self) -> &'static str {
        match self {
            EventKind::Sdown => "+sdown",
            EventKind::SdownCleared => "-sdown",
            EventKind::Odown => "+odown",
            EventKind::OdownCleared => "-odown",
            EventKind::Slave => "+slave",
            EventKind::ConvertToSlave => "+convert-to-slave",
            EventKind::FailoverEnd => "+failover-end",
            EventKind::RoleChange => "+role-change",
            EventKind::RoleMismatch => "-role-change",
        }
    }
}

/// Parses one message of a sentinel's pub/sub channels. Payloads:
///
/// - `+switch-master`: `<name> <old-ip> <old-port> <new-ip> <new-port>`
/// - instance events: `<type> <name> <ip> <port> @ <master-name>
///   <master-ip> <master-port>` for a replica or a sentinel; `<type> <name>
///   <ip> <port>` for a master. Either may be followed by details
///   (`#quorum 2/2` after `+odown`, `new reported role is master` after
///   `±role-change`), which are ignored.
pub fn parse_event(channel: &str, payload: &str) -> Event {
    try_parse_event(channel, payload).unwrap_or(Event::Other)
}

fn try_parse_event(channel: &str, payload: &str) -> Option<Event> {
    let mut w = payload.split_ascii_whitespace();
    if channel == "+switch-master" {
        let name = w.next()?.to_string();
        let old = (w.next()?.to_string(), port_of(w.next()?)?);
        let new = (w.next()?.to_string(), port_of(w.next()?)?);
        return w
            .next()
            .is_none()
            .then_some(Event::SwitchMaster { name, old, new });
    }
    let kind = EventKind::ALL
        .into_iter()
        .find(|k| k.channel() == channel)?;
    let role = w.next()?;
    let name = w.next()?.to_string();
    let ip = w.next()?.to_string();
    let port = port_of(w.next()?)?;
    let master_name = match (role, w.next()) {
        ("master", Some("@")) => return None,
        ("master", _) => None,
        ("slave" | "sentinel", Some("@")) => {
            let master = w.next()?.to_string();
            // The master's address: checked, not kept.
            w.next()?;
            port_of(w.next()?)?;
            Some(master)
        }
        _ => return None,
    };
    Some(Event::Instance {
        kind,
        role: role.to_string(),
        name,
        ip,
        port,
        master_name,
    })
}

fn port_of(s: &str) -> Option<u16> {
    s.parse().ok().filter(|&p| p != 0)
}

// ---------------------------------------------------------------------------
// Reply plumbing

/// A flat `field value field value ...` array, as text.
struct Fields<'a>(Vec<(&'a str, &'a str)>);

impl<'a> Fields<'a> {
    fn new(items: &'a [BytesFrame]) -> Result<Fields<'a>, String> {
        if !items.len().is_multiple_of(2) {
            return Err(format!("odd number of elements ({})", items.len()));
        }
        let text = |i: usize| match &items[i] {
            BytesFrame::BulkString(b) | BytesFrame::SimpleString(b) => {
                std::str::from_utf8(b).map_err(|_| format!("element {i} is not UTF-8"))
            }
            other => Err(format!("element {i} is {:?}, not a string", other.kind())),
        };
        (0..items.len())
            .step_by(2)
            .map(|i| Ok((text(i)?, text(i + 1)?)))
            .collect::<Result<_, String>>()
            .map(Fields)
    }

    fn get(&self, field: &str) -> Option<&'a str> {
        self.0.iter().find(|(k, _)| *k == field).map(|&(_, v)| v)
    }

    fn require(&self, field: &str) -> Result<&'a str, String> {
        self.get(field)
            .ok_or_else(|| format!("missing field {field:?}"))
    }

    fn ip(&self) -> Result<String, String> {
        match self.require("ip")? {
            "" => Err("empty ip".into()),
            ip => Ok(ip.to_string()),
        }
    }

    fn port(&self) -> Result<u16, String> {
        let v = self.require("port")?;
        port_of(v).ok_or_else(|| format!("bad port {v:?}"))
    }

    fn flags(&self) -> Result<Vec<String>, String> {
        Ok(self
            .require("flags")?
            .split(',')
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect())
    }
}

fn number(v: &str, field: &str) -> Result<u64, String> {
    v.parse().map_err(|_| format!("bad {field} {v:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodes a flat array of bulk strings, as Sentinel sends a map in RESP2.
    fn flat(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", pairs.len() * 2).into_bytes();
        for (k, v) in pairs {
            for s in [k, v] {
                out.extend_from_slice(format!("${}\r\n{s}\r\n", s.len()).as_bytes());
            }
        }
        out
    }

    fn nested(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", entries.len()).into_bytes();
        for e in entries {
            out.extend_from_slice(e);
        }
        out
    }

    /// `SENTINEL MASTER mymaster` from redis-sentinel 7.0.15, verbatim.
    const MASTER_REPLY: &[u8] = b"*40\r\n$4\r\nname\r\n$8\r\nmymaster\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n$5\r\n23790\r\n$5\r\nrunid\r\n$40\r\n8bad166cee42d8318b6bbaf18066f235be678c00\r\n$5\r\nflags\r\n$6\r\nmaster\r\n$21\r\nlink-pending-commands\r\n$1\r\n0\r\n$13\r\nlink-refcount\r\n$1\r\n1\r\n$14\r\nlast-ping-sent\r\n$1\r\n0\r\n$18\r\nlast-ok-ping-reply\r\n$3\r\n493\r\n$15\r\nlast-ping-reply\r\n$3\r\n493\r\n$23\r\ndown-after-milliseconds\r\n$4\r\n1000\r\n$12\r\ninfo-refresh\r\n$4\r\n7724\r\n$13\r\nrole-reported\r\n$6\r\nmaster\r\n$18\r\nrole-reported-time\r\n$4\r\n7749\r\n$12\r\nconfig-epoch\r\n$1\r\n0\r\n$10\r\nnum-slaves\r\n$1\r\n1\r\n$19\r\nnum-other-sentinels\r\n$1\r\n2\r\n$6\r\nquorum\r\n$1\r\n2\r\n$16\r\nfailover-timeout\r\n$5\r\n10000\r\n$14\r\nparallel-syncs\r\n$1\r\n1\r\n";

    /// `SENTINEL REPLICAS mymaster` from redis-sentinel 7.0.15, verbatim.
    const REPLICAS_REPLY: &[u8] = b"*1\r\n*42\r\n$4\r\nname\r\n$15\r\n127.0.0.1:23791\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n$5\r\n23791\r\n$5\r\nrunid\r\n$40\r\n1d9c52d41b170da498e92037a25bc049b310bab2\r\n$5\r\nflags\r\n$5\r\nslave\r\n$21\r\nlink-pending-commands\r\n$1\r\n0\r\n$13\r\nlink-refcount\r\n$1\r\n1\r\n$14\r\nlast-ping-sent\r\n$1\r\n0\r\n$18\r\nlast-ok-ping-reply\r\n$3\r\n860\r\n$15\r\nlast-ping-reply\r\n$3\r\n860\r\n$23\r\ndown-after-milliseconds\r\n$4\r\n1000\r\n$12\r\ninfo-refresh\r\n$4\r\n2941\r\n$13\r\nrole-reported\r\n$5\r\nslave\r\n$18\r\nrole-reported-time\r\n$4\r\n8242\r\n$21\r\nmaster-link-down-time\r\n$1\r\n0\r\n$18\r\nmaster-link-status\r\n$2\r\nok\r\n$11\r\nmaster-host\r\n$9\r\n127.0.0.1\r\n$11\r\nmaster-port\r\n$5\r\n23790\r\n$14\r\nslave-priority\r\n$3\r\n100\r\n$17\r\nslave-repl-offset\r\n$3\r\n827\r\n$17\r\nreplica-announced\r\n$1\r\n1\r\n";

    fn master(ip: &str, port: u16, epoch: u64) -> MasterView {
        MasterView {
            ip: ip.into(),
            port,
            flags: vec!["master".into()],
            config_epoch: epoch,
            num_other_sentinels: Some(2),
        }
    }

    #[test]
    fn parses_a_real_master_reply() {
        assert_eq!(
            parse_master(MASTER_REPLY),
            Ok(MasterView {
                ip: "127.0.0.1".into(),
                port: 23790,
                flags: vec!["master".into()],
                config_epoch: 0,
                num_other_sentinels: Some(2),
            })
        );
        assert!(!parse_master(MASTER_REPLY).unwrap().is_down());
    }

    #[test]
    fn master_flags_and_down_states() {
        let raw = flat(&[
            ("name", "mymaster"),
            ("ip", "10.0.0.7"),
            ("port", "6380"),
            ("flags", "s_down,o_down,master"),
            ("config-epoch", "3"),
        ]);
        let m = parse_master(&raw).unwrap();
        assert_eq!(
            m,
            MasterView {
                ip: "10.0.0.7".into(),
                port: 6380,
                flags: vec!["s_down".into(), "o_down".into(), "master".into()],
                config_epoch: 3,
                num_other_sentinels: None,
            }
        );
        assert!(m.is_down());
        let s_down_only = MasterView {
            flags: vec!["s_down".into(), "master".into()],
            ..m.clone()
        };
        assert!(s_down_only.is_down());
        let o_down_only = MasterView {
            flags: vec!["o_down".into(), "master".into()],
            ..m.clone()
        };
        assert!(o_down_only.is_down());
        // A flag that merely contains the text does not count.
        let other = MasterView {
            flags: vec!["master".into(), "master_down".into()],
            ..m
        };
        assert!(!other.is_down());
    }

    #[test]
    fn master_errors() {
        assert_eq!(
            parse_master(b"-ERR No such master with that name\r\n"),
            Err("ERR No such master with that name".into())
        );
        // Truncated: the array promises 40 elements.
        assert!(
            parse_master(&MASTER_REPLY[..MASTER_REPLY.len() - 10])
                .unwrap_err()
                .starts_with("malformed reply: ")
        );
        let base = [
            ("ip", "127.0.0.1"),
            ("port", "6379"),
            ("flags", "master"),
            ("config-epoch", "1"),
        ];
        let without = |field: &str| {
            let v: Vec<_> = base.iter().copied().filter(|(k, _)| *k != field).collect();
            parse_master(&flat(&v))
        };
        assert_eq!(without("ip"), Err("missing field \"ip\"".into()));
        assert_eq!(without("port"), Err("missing field \"port\"".into()));
        assert_eq!(without("flags"), Err("missing field \"flags\"".into()));
        assert_eq!(
            without("config-epoch"),
            Err("missing field \"config-epoch\"".into())
        );
        let with = |field: &str, value: &str| {
            let v: Vec<_> = base
                .iter()
                .map(|&(k, v)| if k == field { (k, value) } else { (k, v) })
                .collect();
            parse_master(&flat(&v))
        };
        assert_eq!(with("port", "63a9"), Err("bad port \"63a9\"".into()));
        assert_eq!(with("port", "70000"), Err("bad port \"70000\"".into()));
        assert_eq!(with("port", "0"), Err("bad port \"0\"".into()));
        assert_eq!(with("ip", ""), Err("empty ip".into()));
        assert_eq!(
            with("config-epoch", "-1"),
            Err("bad config-epoch \"-1\"".into())
        );
        let mut odd = flat(&base);
        odd[1] = b'7';
        odd.truncate(odd.len() - "$1\r\n1\r\n".len());
        assert_eq!(parse_master(&odd), Err("odd number of elements (7)".into()));
        assert_eq!(
            parse_master(b"*2\r\n$2\r\nip\r\n:1\r\n"),
            Err("element 1 is Integer, not a string".into())
        );
        assert_eq!(
            parse_master(b"$2\r\nip\r\n"),
            Err("expected an array, got BulkString".into())
        );
        assert_eq!(
            parse_master(b"*-1\r\n"),
            Err("expected an array, got Null".into())
        );
        assert!(parse_master(b"").is_err());
        assert!(parse_master(b"garbage").is_err());
    }

    #[test]
    fn parses_a_real_replicas_reply() {
        let r = parse_replicas(REPLICAS_REPLY).unwrap();
        assert_eq!(
            r,
            vec![ReplicaView {
                ip: "127.0.0.1".into(),
                port: 23791,
                flags: vec!["slave".into()],
                master_link_ok: true,
            }]
        );
        assert!(r[0].usable());
        assert_eq!(parse_replicas(b"*0\r\n"), Ok(vec![]));
    }

    #[test]
    fn replica_usability() {
        let entry = |flags: &str, link: &str| {
            flat(&[
                ("ip", "127.0.0.1"),
                ("port", "7001"),
                ("flags", flags),
                ("master-link-status", link),
            ])
        };
        let raw = nested(&[
            entry("slave", "ok"),
            entry("s_down,slave,disconnected", "err"),
            entry("slave", "err"),
            entry("o_down,slave", "ok"),
            entry("slave,disconnected", "ok"),
            entry("s_down,slave", "ok"),
            entry("slave,promoted", "ok"),
        ]);
        let r = parse_replicas(&raw).unwrap();
        assert_eq!(
            r[1],
            ReplicaView {
                ip: "127.0.0.1".into(),
                port: 7001,
                flags: vec!["s_down".into(), "slave".into(), "disconnected".into()],
                master_link_ok: false,
            }
        );
        assert_eq!(
            r.iter().map(ReplicaView::usable).collect::<Vec<_>>(),
            vec![true, false, false, false, false, false, true]
        );
    }

    #[test]
    fn replicas_errors() {
        assert_eq!(
            parse_replicas(b"-ERR No such master with that name\r\n"),
            Err("ERR No such master with that name".into())
        );
        assert!(
            parse_replicas(&REPLICAS_REPLY[..REPLICAS_REPLY.len() - 3])
                .unwrap_err()
                .starts_with("malformed reply: ")
        );
        let good = flat(&[
            ("ip", "127.0.0.1"),
            ("port", "7001"),
            ("flags", "slave"),
            ("master-link-status", "ok"),
        ]);
        let no_link = flat(&[("ip", "127.0.0.1"), ("port", "7002"), ("flags", "slave")]);
        assert_eq!(
            parse_replicas(&nested(&[good.clone(), no_link])),
            Err("replica 1: missing field \"master-link-status\"".into())
        );
        let bad_port = flat(&[
            ("ip", "127.0.0.1"),
            ("port", "x"),
            ("flags", "slave"),
            ("master-link-status", "ok"),
        ]);
        assert_eq!(
            parse_replicas(&nested(&[bad_port])),
            Err("replica 0: bad port \"x\"".into())
        );
        assert_eq!(
            parse_replicas(&nested(&[good, b":3\r\n".to_vec()])),
            Err("replica 1: expected an array, got Integer".into())
        );
    }

    #[test]
    fn consensus_follows_the_newest_epoch() {
        // One sentinel has already switched at epoch 5; two still report
        // the old primary at epoch 4.
        let answers = [
            master("10.0.0.1", 6379, 4),
            master("10.0.0.2", 6379, 5),
            master("10.0.0.1", 6379, 4),
        ];
        assert_eq!(consensus(3, &answers), Ok(&answers[1]));
        // Two of three answering is a majority.
        assert_eq!(consensus(3, &answers[..2]), Ok(&answers[1]));
        // All agreeing.
        let same = [master("10.0.0.1", 6379, 4), master("10.0.0.1", 6379, 4)];
        assert_eq!(consensus(2, &same), Ok(&same[0]));
        // A down master is still named.
        let down = [MasterView {
            flags: vec!["s_down".into(), "master".into()],
            ..master("10.0.0.1", 6379, 2)
        }];
        assert_eq!(consensus(1, &down), Ok(&down[0]));
    }

    #[test]
    fn consensus_skips_a_leader_mid_failover() {
        // What three Redis 7.0.15 sentinels said 0.9 s into SENTINEL
        // FAILOVER: the leader has the new epoch but the old address.
        let leader = MasterView {
            flags: vec![
                "master".into(),
                "failover_in_progress".into(),
                "force_failover".into(),
            ],
            ..master("127.0.0.1", 24790, 1)
        };
        assert!(leader.failing_over());
        let answers = [
            leader.clone(),
            master("127.0.0.1", 24791, 1),
            master("127.0.0.1", 24791, 1),
        ];
        assert_eq!(consensus(3, &answers), Ok(&answers[1]));
        // Just the leader and one other: the other, not a tie.
        assert_eq!(consensus(3, &answers[..2]), Ok(&answers[1]));
        // Before the others hear of it: the old configuration.
        let early = [leader.clone(), master("127.0.0.1", 24790, 0)];
        assert_eq!(consensus(3, &early), Ok(&early[1]));
        // The leader's reply counts towards the majority, not as a vote.
        assert_eq!(
            consensus(1, std::slice::from_ref(&leader)),
            Err("every sentinel that answered is running a failover".into())
        );
    }

    #[test]
    fn consensus_needs_a_majority_to_answer() {
        let one = [master("10.0.0.2", 6379, 5)];
        assert_eq!(
            consensus(3, &one),
            Err("only 1 of 3 sentinels answered".into())
        );
        let two = [master("10.0.0.2", 6379, 5), master("10.0.0.2", 6379, 5)];
        assert_eq!(
            consensus(4, &two),
            Err("only 2 of 4 sentinels answered".into())
        );
        assert_eq!(
            consensus(0, &[]),
            Err("only 0 of 0 sentinels answered".into())
        );
    }

    #[test]
    fn consensus_never_breaks_a_tie_by_guessing() {
        let tied = [
            master("10.0.0.2", 6379, 4),
            master("10.0.0.1", 6379, 3),
            master("10.0.0.3", 6380, 4),
        ];
        assert_eq!(
            consensus(3, &tied),
            Err(
                "sentinels disagree at config epoch 4: 10.0.0.2:6379 (1), 10.0.0.3:6380 (1)".into()
            )
        );
        // Same ip, different port: different addresses.
        let ports = [master("10.0.0.2", 6379, 4), master("10.0.0.2", 6380, 4)];
        assert!(consensus(2, &ports).is_err());
        // At the same epoch, the address most answers name wins.
        let most = [
            master("10.0.0.3", 6380, 4),
            master("10.0.0.2", 6379, 4),
            master("10.0.0.2", 6379, 4),
            master("10.0.0.1", 6379, 1),
        ];
        assert_eq!(consensus(5, &most), Ok(&most[1]));
    }

    fn instance(
        kind: EventKind,
        role: &str,
        name: &str,
        ip: &str,
        port: u16,
        master_name: Option<&str>,
    ) -> Event {
        Event::Instance {
            kind,
            role: role.into(),
            name: name.into(),
            ip: ip.into(),
            port,
            master_name: master_name.map(Into::into),
        }
    }

    #[test]
    fn parses_switch_master() {
        // As published by redis-sentinel 7.0.15 after SENTINEL FAILOVER.
        assert_eq!(
            parse_event("+switch-master", "mymaster 127.0.0.1 23790 127.0.0.1 23791"),
            Event::SwitchMaster {
                name: "mymaster".into(),
                old: ("127.0.0.1".into(), 23790),
                new: ("127.0.0.1".into(), 23791),
            }
        );
        assert_eq!(
            parse_event("+switch-master", "m ::1 6379 fe80::2 6380"),
            Event::SwitchMaster {
                name: "m".into(),
                old: ("::1".into(), 6379),
                new: ("fe80::2".into(), 6380),
            }
        );
        for bad in [
            "",
            "mymaster",
            "mymaster 127.0.0.1 23790 127.0.0.1",
            "mymaster 127.0.0.1 23790 127.0.0.1 port",
            "mymaster 127.0.0.1 x 127.0.0.1 23791",
            "mymaster 127.0.0.1 23790 127.0.0.1 23791 extra",
            "mymaster 127.0.0.1 23790 127.0.0.1 99999",
        ] {
            assert_eq!(parse_event("+switch-master", bad), Event::Other, "{bad:?}");
        }
    }

    #[test]
    fn parses_instance_events() {
        // Payloads as published by redis-sentinel 7.0.15.
        let cases = [
            (
                "+slave",
                "slave 127.0.0.1:23790 127.0.0.1 23790 @ mymaster 127.0.0.1 23791",
                instance(
                    EventKind::Slave,
                    "slave",
                    "127.0.0.1:23790",
                    "127.0.0.1",
                    23790,
                    Some("mymaster"),
                ),
            ),
            (
                "-role-change",
                "slave 127.0.0.1:23790 127.0.0.1 23790 @ mymaster 127.0.0.1 23791 new reported role is master",
                instance(
                    EventKind::RoleMismatch,
                    "slave",
                    "127.0.0.1:23790",
                    "127.0.0.1",
                    23790,
                    Some("mymaster"),
                ),
            ),
            (
                "+role-change",
                "slave 127.0.0.1:23790 127.0.0.1 23790 @ mymaster 127.0.0.1 23791 new reported role is slave",
                instance(
                    EventKind::RoleChange,
                    "slave",
                    "127.0.0.1:23790",
                    "127.0.0.1",
                    23790,
                    Some("mymaster"),
                ),
            ),
            (
                "+convert-to-slave",
                "slave 127.0.0.1:23790 127.0.0.1 23790 @ mymaster 127.0.0.1 23791",
                instance(
                    EventKind::ConvertToSlave,
                    "slave",
                    "127.0.0.1:23790",
                    "127.0.0.1",
                    23790,
                    Some("mymaster"),
                ),
            ),
            (
                "+odown",
                "master mymaster 127.0.0.1 6379 #quorum 2/2",
                instance(
                    EventKind::Odown,
                    "master",
                    "mymaster",
                    "127.0.0.1",
                    6379,
                    None,
                ),
            ),
            (
                "-odown",
                "master mymaster 127.0.0.1 6379",
                instance(
                    EventKind::OdownCleared,
                    "master",
                    "mymaster",
                    "127.0.0.1",
                    6379,
                    None,
                ),
            ),
            (
                "+sdown",
                "master mymaster 127.0.0.1 6379",
                instance(
                    EventKind::Sdown,
                    "master",
                    "mymaster",
                    "127.0.0.1",
                    6379,
                    None,
                ),
            ),
            (
                "-sdown",
                "sentinel 4e8e8b59d5c1f3a3b0d1e2f3a4b5c6d7e8f90a1b 127.0.0.1 26380 @ mymaster 127.0.0.1 6379",
                instance(
                    EventKind::SdownCleared,
                    "sentinel",
                    "4e8e8b59d5c1f3a3b0d1e2f3a4b5c6d7e8f90a1b",
                    "127.0.0.1",
                    26380,
                    Some("mymaster"),
                ),
            ),
            (
                "+failover-end",
                "master mymaster 127.0.0.1 6379",
                instance(
                    EventKind::FailoverEnd,
                    "master",
                    "mymaster",
                    "127.0.0.1",
                    6379,
                    None,
                ),
            ),
        ];
        for (channel, payload, want) in cases {
            assert_eq!(parse_event(channel, payload), want, "{channel} {payload}");
        }
        for k in EventKind::ALL {
            assert!(matches!(
                parse_event(k.channel(), "master m 10.0.0.1 6379"),
                Event::Instance { kind, .. } if kind == k
            ));
        }
    }

    #[test]
    fn unparseable_events_are_other() {
        let cases = [
            // Channels not followed.
            ("+new-epoch", "1"),
            ("+try-failover", "master mymaster 127.0.0.1 6379"),
            (
                "__sentinel__:hello",
                "127.0.0.1,26379,abc,0,mymaster,127.0.0.1,6379,0",
            ),
            ("", ""),
            // Malformed payloads.
            ("+sdown", ""),
            ("+sdown", "master"),
            ("+sdown", "master mymaster 127.0.0.1"),
            ("+sdown", "master mymaster 127.0.0.1 port"),
            ("+sdown", "master mymaster 127.0.0.1 -1"),
            ("+sdown", "master mymaster 127.0.0.1 65536"),
            (
                "+sdown",
                "replica r 127.0.0.1 6380 @ mymaster 127.0.0.1 6379",
            ),
            // A replica without its master, a master with one.
            ("+sdown", "slave 127.0.0.1:6380 127.0.0.1 6380"),
            ("+sdown", "slave 127.0.0.1:6380 127.0.0.1 6380 # details"),
            ("+sdown", "master m 127.0.0.1 6379 @ other 127.0.0.1 6380"),
            ("+slave", "slave 127.0.0.1:6380 127.0.0.1 6380 @"),
            (
                "+slave",
                "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1",
            ),
            (
                "+slave",
                "slave 127.0.0.1:6380 127.0.0.1 6380 @ mymaster 127.0.0.1 x",
            ),
        ];
        for (channel, payload) in cases {
            assert_eq!(
                parse_event(channel, payload),
                Event::Other,
                "{channel} {payload:?}"
            );
        }
    }
}
