//! Where a client command goes: classification from Redis's own command flags.
//!
//! The table comes from the primary's `COMMAND` reply (refreshed on reconnect),
//! with a built-in table of Redis 7.0's readonly commands as fallback. Unknown
//! means primary: a read sent to the primary is only slower, a write sent to a
//! replica is the dangerous mistake.

mod builtin;

use std::collections::HashMap as StdHashMap;

/// Command names are short and looked up once per request: a fast
/// non-cryptographic hash (the table is built from COMMAND, not from
/// client input, so flooding it is not a concern).
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::FixedState>;

use redis_protocol::resp2::types::BytesFrame;

use crate::proto::Command;
use builtin::{BUILTIN_BLOCKING, BUILTIN_READONLY, BUILTIN_WRITE};

pub const READONLY: u32 = 1;
pub const WRITE: u32 = 2;
pub const BLOCKING: u32 = 4;
/// The command has subcommands, classified as `name|sub`.
pub const CONTAINER: u32 = 8;

/// Command flags by lowercase name; subcommands of container commands are
/// keyed `container|sub` as Redis names them.
#[derive(Clone, Debug, Default)]
pub struct CommandTable {
    flags: HashMap<Box<[u8]>, u32>,
    /// From `COMMAND` (true) or the built-in fallback (false).
    pub learned: bool,
}

impl CommandTable {
    pub fn builtin() -> CommandTable {
        let mut flags: HashMap<Box<[u8]>, u32> = HashMap::default();
        for name in BUILTIN_READONLY {
            flags.insert(name.as_bytes().into(), READONLY);
        }
        for name in BUILTIN_WRITE {
            flags.insert(name.as_bytes().into(), WRITE);
        }
        for name in BUILTIN_BLOCKING {
            *flags.entry(name.as_bytes().into()).or_insert(WRITE) |= BLOCKING;
        }
        mark_containers(&mut flags);
        CommandTable {
            flags,
            learned: false,
        }
    }

    /// Builds the table from the reply to `COMMAND` (RESP2): one entry per
    /// command, `[name, arity, [flags...], first, last, step, acl, tips,
    /// key_specs, [subcommand entries...]]`.
    pub fn from_command_reply(reply: &BytesFrame) -> Result<CommandTable, String> {
        let BytesFrame::Array(entries) = reply else {
            return Err("COMMAND reply is not an array".into());
        };
        let mut flags = HashMap::with_capacity_and_hasher(entries.len() * 2, Default::default());
        for entry in entries {
            add_entry(&mut flags, entry)?;
        }
        if flags.is_empty() {
            return Err("COMMAND reply is empty".into());
        }
        mark_containers(&mut flags);
        Ok(CommandTable {
            flags,
            learned: true,
        })
    }

    pub fn len(&self) -> usize {
        self.flags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// Flags for `name` (any case), or for `name|sub` when the command is a
    /// container whose subcommand is known.
    pub fn lookup(&self, name: &[u8], sub: Option<&[u8]>) -> Option<u32> {
        let mut key = [0u8; 64];
        let n = name.len();
        if n == 0 || n > 32 {
            return None;
        }
        for (d, s) in key.iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        let flags = *self.flags.get(&key[..n])?;
        // Only containers look further: one hash lookup for GET and SET.
        if flags & CONTAINER != 0
            && let Some(sub) = sub
            && !sub.is_empty()
            && n + 1 + sub.len() <= key.len()
        {
            key[n] = b'|';
            for (d, s) in key[n + 1..].iter_mut().zip(sub) {
                *d = s.to_ascii_lowercase();
            }
            if let Some(f) = self.flags.get(&key[..n + 1 + sub.len()]) {
                return Some(*f);
            }
        }
        Some(flags)
    }

    /// A replica answered `-READONLY`: from now on this command is a write.
    pub fn with_write(&self, name: &[u8], sub: Option<&[u8]>) -> CommandTable {
        let mut next = self.clone();
        let mut key: Vec<u8> = name.to_ascii_lowercase();
        if let Some(sub) = sub
            && self.flags.get(&key[..]).is_some_and(|f| f & CONTAINER != 0)
        {
            key.push(b'|');
            key.extend(sub.to_ascii_lowercase());
        }
        let f = next.flags.entry(key.into()).or_insert(0);
        *f = (*f & !READONLY) | WRITE;
        next
    }
}

/// Sets `CONTAINER` on every command that has `name|sub` entries.
fn mark_containers(flags: &mut HashMap<Box<[u8]>, u32>) {
    let parents: Vec<Box<[u8]>> = flags
        .keys()
        .filter_map(|k| k.iter().position(|&b| b == b'|').map(|i| k[..i].into()))
        .collect();
    for p in parents {
        *flags.entry(p).or_insert(0) |= CONTAINER;
    }
}

fn add_entry(flags: &mut HashMap<Box<[u8]>, u32>, entry: &BytesFrame) -> Result<(), String> {
    let BytesFrame::Array(fields) = entry else {
        return Err("COMMAND entry is not an array".into());
    };
    let name = match fields.first() {
        Some(BytesFrame::BulkString(b)) | Some(BytesFrame::SimpleString(b)) => {
            b.to_ascii_lowercase()
        }
        _ => return Err("COMMAND entry without a name".into()),
    };
    let mut bits = 0;
    if let Some(BytesFrame::Array(list)) = fields.get(2) {
        for f in list {
            if let BytesFrame::SimpleString(s) | BytesFrame::BulkString(s) = f {
                bits |= match &s[..] {
                    b"readonly" => READONLY,
                    b"write" => WRITE,
                    b"blocking" => BLOCKING,
                    _ => 0,
                };
            }
        }
    }
    flags.insert(name.into(), bits);
    if let Some(BytesFrame::Array(subs)) = fields.get(9) {
        for sub in subs {
            add_entry(flags, sub)?;
        }
    }
    Ok(())
}

/// Which pub/sub family a (un)subscribe command belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubKind {
    Channel,
    Pattern,
    Shard,
}

impl SubKind {
    pub fn unsubscribe_name(self) -> &'static str {
        match self {
            SubKind::Channel => "unsubscribe",
            SubKind::Pattern => "punsubscribe",
            SubKind::Shard => "sunsubscribe",
        }
    }
}

/// Commands the sidecar answers itself, because it owns the state they touch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Local {
    Select,
    Hello,
    Auth,
    SetName,
    GetName,
    ClientReply,
    Quit,
    Reset,
    Unwatch,
    Unsubscribe(SubKind),
    /// SYNC/PSYNC: from here on the client talks to the primary directly.
    Replicate,
}

/// Commands that create connection state and so need a dedicated connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    Multi,
    Exec,
    Discard,
    Watch,
    Subscribe(SubKind),
    Monitor,
    Blocking,
    /// CLIENT TRACKING / CACHING / NO-EVICT / NO-TOUCH: state with no end
    /// but RESET.
    ClientState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Readonly and not blocking: any usable replica, or the primary.
    Read,
    /// Everything else: the primary's shared pipe.
    Primary,
    /// Server-wide commands that must reach Redis while it is busy (SCRIPT
    /// KILL, FUNCTION KILL, SHUTDOWN, CLIENT KILL/UNBLOCK/PAUSE/UNPAUSE):
    /// they do not depend on the connection's db or protocol, so they go
    /// on the primary's db-0 RESP2 pipe, which needs no SELECT or HELLO
    /// (Redis refuses those while busy).
    Control,
    Local(Local),
    Pin(Pin),
}

/// What a command counts as in metrics (`kind` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Read,
    Write,
    Other,
}

/// One command's route and what metrics and read-your-writes need to know
/// about it, from a single table lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    pub route: Route,
    pub kind: Kind,
    /// May change data: read-your-writes tracks it. Redis's `write` flag,
    /// scripts and functions (which carry no flag), EXEC, and anything Redis
    /// did not describe.
    pub may_write: bool,
}

/// Classifies one client command. Pure: the session decides what a route
/// means given its own state (a pinned session sends everything to its
/// dedicated connection).
pub fn classify(table: &CommandTable, cmd: &Command) -> Route {
    classify_full(table, cmd).route
}

/// Commands Redis may legitimately take long to answer (scripts, DEBUG
/// SLEEP, whole-keyspace walks, synchronous saves and flushes): while one
/// runs, an upstream's silence is not taken for death.
pub fn is_slow(name: &[u8]) -> bool {
    const SLOW: &[&[u8]] = &[
        b"EVAL",
        b"EVALSHA",
        b"EVAL_RO",
        b"EVALSHA_RO",
        b"FCALL",
        b"FCALL_RO",
        b"DEBUG",
        b"KEYS",
        b"FLUSHALL",
        b"FLUSHDB",
        b"SAVE",
        b"SCRIPT",
        b"FUNCTION",
        b"SORT",
        b"SORT_RO",
        b"MIGRATE",
        b"SHUTDOWN",
        b"WAIT",
        b"MEMORY",
    ];
    name.len() <= 10 && SLOW.iter().any(|s| s.eq_ignore_ascii_case(name))
}

pub fn classify_full(table: &CommandTable, cmd: &Command) -> Classified {
    let name = cmd.name();
    let flags = table.lookup(name, cmd.arg(1));
    let mut upper = [0u8; 20];
    let mut route = None;
    if name.len() <= upper.len() {
        for (d, s) in upper.iter_mut().zip(name) {
            *d = s.to_ascii_uppercase();
        }
        route = special(&upper[..name.len()], cmd);
    }
    let route = route.unwrap_or(match flags {
        Some(f) if f & BLOCKING != 0 => Route::Pin(Pin::Blocking),
        Some(f) if f & READONLY != 0 && f & WRITE == 0 => Route::Read,
        _ => Route::Primary,
    });
    let kind = match (route, flags) {
        (Route::Read, _) => Kind::Read,
        (_, Some(f)) if f & WRITE != 0 => Kind::Write,
        (_, Some(f)) if f & READONLY != 0 => Kind::Read,
        _ => Kind::Other,
    };
    let may_write = match route {
        Route::Read | Route::Local(_) => false,
        _ => {
            kind == Kind::Write
                || flags.is_none()
                || matches!(
                    &upper[..name.len().min(upper.len())],
                    b"EVAL" | b"EVALSHA" | b"FCALL" | b"EXEC"
                )
        }
    };
    Classified {
        route,
        kind,
        may_write,
    }
}

fn special(upper: &[u8], cmd: &Command) -> Option<Route> {
    use Route::{Local as L, Pin as P};
    Some(match upper {
        // PING goes where the client's reads go, so it tells the truth
        // about that upstream (BUSY, LOADING, down) as Redis would.
        b"PING" => Route::Read,
        b"SELECT" => L(Local::Select),
        b"HELLO" => L(Local::Hello),
        b"AUTH" => L(Local::Auth),
        b"QUIT" => L(Local::Quit),
        b"RESET" => L(Local::Reset),
        b"UNWATCH" => L(Local::Unwatch),
        b"UNSUBSCRIBE" => L(Local::Unsubscribe(SubKind::Channel)),
        b"PUNSUBSCRIBE" => L(Local::Unsubscribe(SubKind::Pattern)),
        b"SUNSUBSCRIBE" => L(Local::Unsubscribe(SubKind::Shard)),
        b"SHUTDOWN" => Route::Control,
        // What Redis accepts while busy (its `allow_busy` commands that
        // do not depend on the connection).
        b"SCRIPT" | b"FUNCTION" if cmd.arg_eq(1, "KILL") => Route::Control,
        b"FUNCTION" if cmd.arg_eq(1, "STATS") => Route::Control,
        // The replication stream: the connection becomes a raw tunnel to
        // the primary. A replica's REPLCONF (capabilities, an RDB filter)
        // belongs to the connection it then SYNCs on, so it starts it.
        b"SYNC" | b"PSYNC" | b"REPLCONF" => L(Local::Replicate),
        b"MULTI" => P(Pin::Multi),
        b"EXEC" => P(Pin::Exec),
        b"DISCARD" => P(Pin::Discard),
        b"WATCH" => P(Pin::Watch),
        b"SUBSCRIBE" => P(Pin::Subscribe(SubKind::Channel)),
        b"PSUBSCRIBE" => P(Pin::Subscribe(SubKind::Pattern)),
        b"SSUBSCRIBE" => P(Pin::Subscribe(SubKind::Shard)),
        b"MONITOR" => P(Pin::Monitor),
        b"BLPOP" | b"BRPOP" | b"BRPOPLPUSH" | b"BLMOVE" | b"BLMPOP" | b"BZPOPMIN" | b"BZPOPMAX"
        | b"BZMPOP" | b"WAIT" | b"WAITAOF" => P(Pin::Blocking),
        // XREAD is flagged blocking even without BLOCK; only the option makes
        // it block (REDIS-NOTES.md).
        b"XREAD" => {
            if has_block_option(cmd) {
                P(Pin::Blocking)
            } else {
                Route::Read
            }
        }
        b"XREADGROUP" => {
            if has_block_option(cmd) {
                P(Pin::Blocking)
            } else {
                Route::Primary
            }
        }
        b"CLIENT" => {
            let sub = cmd.arg(1).unwrap_or(b"");
            let mut u = [0u8; 16];
            if sub.len() > u.len() {
                return None;
            }
            for (d, s) in u.iter_mut().zip(sub) {
                *d = s.to_ascii_uppercase();
            }
            match &u[..sub.len()] {
                b"SETNAME" => L(Local::SetName),
                b"GETNAME" => L(Local::GetName),
                b"REPLY" => L(Local::ClientReply),
                // State on the connection, or its identity: what a client
                // learns or sets here must be its own connection's (CLIENT
                // KILL/UNBLOCK/TRACKING REDIRECT name it), so the session
                // moves to its dedicated connection for good.
                b"TRACKING" | b"CACHING" | b"NO-EVICT" | b"NO-TOUCH" | b"ID" | b"INFO"
                | b"LIST" | b"GETREDIR" | b"TRACKINGINFO" => P(Pin::ClientState),
                b"KILL" | b"UNBLOCK" | b"PAUSE" | b"UNPAUSE" => Route::Control,
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// True when a `BLOCK` option appears before `STREAMS` (after it, the words
/// are key names and IDs).
fn has_block_option(cmd: &Command) -> bool {
    (1..cmd.argc())
        .map_while(|i| cmd.arg(i))
        .take_while(|a| !a.eq_ignore_ascii_case(b"STREAMS"))
        .any(|a| a.eq_ignore_ascii_case(b"BLOCK"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn cmd(args: &[&str]) -> Command {
        let v: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        Command::from_args(&v)
    }

    fn route(args: &[&str]) -> Route {
        classify(&CommandTable::builtin(), &cmd(args))
    }

    #[test]
    fn builtin_routes() {
        assert_eq!(route(&["GET", "k"]), Route::Read);
        assert_eq!(route(&["get", "k"]), Route::Read);
        assert_eq!(route(&["SET", "k", "v"]), Route::Primary);
        assert_eq!(route(&["EVAL", "return 1", "0"]), Route::Primary);
        assert_eq!(route(&["EVAL_RO", "return 1", "0"]), Route::Read);
        assert_eq!(route(&["FCALL_RO", "f", "0"]), Route::Read);
        assert_eq!(route(&["NOSUCHCOMMAND"]), Route::Primary);
        assert_eq!(route(&["OBJECT", "ENCODING", "k"]), Route::Read);
        assert_eq!(route(&["OBJECT", "HELP"]), Route::Primary);
        assert_eq!(route(&["BLPOP", "k", "0"]), Route::Pin(Pin::Blocking));
        assert_eq!(route(&["WAIT", "1", "0"]), Route::Pin(Pin::Blocking));
        assert_eq!(route(&["MULTI"]), Route::Pin(Pin::Multi));
        assert_eq!(route(&["select", "3"]), Route::Local(Local::Select));
        assert_eq!(
            route(&["CLIENT", "setname", "x"]),
            Route::Local(Local::SetName)
        );
        assert_eq!(
            route(&["CLIENT", "TRACKING", "on"]),
            Route::Pin(Pin::ClientState)
        );
        // Identity: the session's own connection from then on.
        assert_eq!(route(&["CLIENT", "LIST"]), Route::Pin(Pin::ClientState));
        assert_eq!(route(&["CLIENT", "ID"]), Route::Pin(Pin::ClientState));
        // Reaches Redis while it is busy.
        assert_eq!(route(&["CLIENT", "UNBLOCK", "7"]), Route::Control);
        assert_eq!(route(&["script", "kill"]), Route::Control);
        assert_eq!(route(&["FUNCTION", "KILL"]), Route::Control);
        assert_eq!(route(&["FUNCTION", "LIST"]), Route::Primary);
        assert_eq!(route(&["SHUTDOWN", "NOSAVE"]), Route::Control);
        assert_eq!(route(&["PING"]), Route::Read);
        assert_eq!(
            route(&["PSUBSCRIBE", "a*"]),
            Route::Pin(Pin::Subscribe(SubKind::Pattern))
        );
    }

    #[test]
    fn xread_blocks_only_with_the_option() {
        assert_eq!(route(&["XREAD", "STREAMS", "s", "0"]), Route::Read);
        assert_eq!(
            route(&["XREAD", "COUNT", "1", "BLOCK", "10", "STREAMS", "s", "0"]),
            Route::Pin(Pin::Blocking)
        );
        // "block" after STREAMS is a key name.
        assert_eq!(route(&["XREAD", "STREAMS", "block", "0"]), Route::Read);
        assert_eq!(
            route(&["XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"]),
            Route::Primary
        );
        assert_eq!(
            route(&[
                "XREADGROUP",
                "GROUP",
                "g",
                "c",
                "BLOCK",
                "0",
                "STREAMS",
                "s",
                ">"
            ]),
            Route::Pin(Pin::Blocking)
        );
    }

    fn bulk(s: &str) -> BytesFrame {
        BytesFrame::BulkString(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn entry(name: &str, flags: &[&str], subs: Vec<BytesFrame>) -> BytesFrame {
        BytesFrame::Array(vec![
            bulk(name),
            BytesFrame::Integer(-1),
            BytesFrame::Array(
                flags
                    .iter()
                    .map(|f| BytesFrame::SimpleString(Bytes::copy_from_slice(f.as_bytes())))
                    .collect(),
            ),
            BytesFrame::Integer(1),
            BytesFrame::Integer(1),
            BytesFrame::Integer(1),
            BytesFrame::Array(vec![]),
            BytesFrame::Array(vec![]),
            BytesFrame::Array(vec![]),
            BytesFrame::Array(subs),
        ])
    }

    #[test]
    fn learns_from_the_command_reply() {
        let reply = BytesFrame::Array(vec![
            entry("get", &["readonly", "fast"], vec![]),
            entry("mycmd", &["readonly"], vec![]),
            entry("set", &["write", "denyoom"], vec![]),
            entry(
                "config",
                &[],
                vec![
                    entry("config|get", &["admin"], vec![]),
                    entry("config|set", &["admin"], vec![]),
                ],
            ),
        ]);
        let t = CommandTable::from_command_reply(&reply).unwrap();
        assert!(t.learned);
        assert_eq!(t.len(), 6);
        assert_eq!(t.lookup(b"MYCMD", None), Some(READONLY));
        assert_eq!(t.lookup(b"Config", Some(b"GET")), Some(0));
        // The learned table replaces the builtin one: an unknown-to-Redis
        // command is unknown.
        assert_eq!(t.lookup(b"strlen", None), None);
        assert_eq!(classify(&t, &cmd(&["mycmd"])), Route::Read);
        assert_eq!(classify(&t, &cmd(&["CONFIG", "GET", "x"])), Route::Primary);
        assert!(CommandTable::from_command_reply(&BytesFrame::Integer(1)).is_err());
    }

    #[test]
    fn readonly_reply_relearns_as_write() {
        let t = CommandTable::builtin().with_write(b"GET", Some(b"k"));
        assert_eq!(classify(&t, &cmd(&["GET", "k"])), Route::Primary);
        let t = CommandTable::builtin().with_write(b"OBJECT", Some(b"ENCODING"));
        assert_eq!(
            classify(&t, &cmd(&["OBJECT", "encoding", "k"])),
            Route::Primary
        );
        assert_eq!(classify(&t, &cmd(&["OBJECT", "FREQ", "k"])), Route::Read);
    }
}
