//! A session in front of a Redis Cluster, for an app that does not know it
//! is one: each command goes to the shard of its key's slot (reads to that
//! shard's nearest usable node), multi-key commands spanning slots are
//! split and their replies merged as one Redis would answer, `MOVED` and
//! `ASK` are followed, and cluster-aware clients see the sidecar as one
//! node owning every slot.

use std::sync::Arc;

use bytes::Bytes;

use super::{Cur, Session};
use crate::conn::control::Control;
use crate::conn::dedicated::{DRequest, Expect};
use crate::conn::event::Event;
use crate::model::topology::{TopologyCell, Upstream};
use crate::proto::Command;
use crate::proto::encode as resp;
use crate::route::cluster::facade;
use crate::route::cluster::redirect::{self, Redirect};
use crate::route::cluster::slot::key_slot;
use crate::route::cluster::split::{self, Plan};
use crate::route::command::{self, Kind, Pin, Route};

/// A transaction in cluster mode: its commands must share one slot, so
/// MULTI waits (answered by the sidecar) until the first command names
/// the shard, and a command in another slot is refused as Redis Cluster
/// refuses it, failing the EXEC.
#[derive(Default)]
pub(super) struct Txn {
    /// MULTI not sent yet: no command so far.
    pending: bool,
    slot: Option<u16>,
    /// A command was refused: EXEC discards.
    dirty: bool,
}

const EXECABORT: &str = "EXECABORT Transaction discarded because of previous errors.";

/// Sub-requests of a split command carry this bit in their sequence
/// number: `SPLIT | client_seq << 8 | part`.
pub(super) const SPLIT: u64 = 1 << 62;

/// At most this many MOVED hops per request.
const MAX_REDIRECTS: u8 = 2;

/// How the parts' replies make the client's.
pub(super) enum How {
    /// A multi-key command split by slot.
    Plan(Plan),
    /// DBSIZE: integers added.
    Sum,
    /// KEYS: arrays joined.
    Concat,
    /// FLUSHALL, SCRIPT FLUSH ...: `+OK` when every shard said so.
    AllOk,
    /// SCRIPT LOAD, FUNCTION LOAD: every shard answers the same.
    First,
    /// SCAN on shard `shard` of `shards`: the cursor names the shard too.
    Scan { shard: u64, shards: u64 },
}

/// A command in flight as parts (one per slot, or one per shard).
pub(super) struct Split {
    seq: u64,
    how: How,
    parts: Vec<Command>,
    replies: Vec<Option<Bytes>>,
    redirects: Vec<u8>,
    failed: bool,
}

fn merge_fan(how: &How, replies: Vec<Bytes>) -> Bytes {
    if let How::Plan(p) = how {
        return split::merge(p, replies);
    }
    if let Some(e) = replies
        .iter()
        .find(|r| crate::route::cluster::error_text(r).is_some())
    {
        return e.clone();
    }
    let odd = || resp::error("ERR nearby: unexpected reply from a shard");
    match how {
        How::Plan(_) => unreachable!("merged above"),
        How::Sum => {
            let mut sum = 0i64;
            for r in &replies {
                match split::integer(r) {
                    Some(n) => sum += n,
                    None => return odd(),
                }
            }
            resp::integer(sum)
        }
        How::Concat => {
            let mut total = 0;
            let mut body = Vec::new();
            for r in &replies {
                let Some((n, at)) = split::array_header(r) else {
                    return odd();
                };
                total += n;
                body.extend_from_slice(&r[at..]);
            }
            let mut out = format!("*{total}\r\n").into_bytes();
            out.extend_from_slice(&body);
            Bytes::from(out)
        }
        How::AllOk => replies
            .iter()
            .find(|r| &r[..] != b"+OK\r\n")
            .cloned()
            .unwrap_or_else(resp::ok),
        How::First => {
            if replies.windows(2).all(|w| w[0] == w[1]) {
                replies[0].clone()
            } else {
                resp::error("ERR nearby: the shards answered differently")
            }
        }
        How::Scan { shard, shards } => {
            // `*2 $<len> <cursor> *<n> keys...`
            let r = &replies[0];
            let Some((2, at)) = split::array_header(r) else {
                return odd();
            };
            let rest = &r[at..];
            let Some(line) = rest.windows(2).position(|w| w == b"\r\n") else {
                return odd();
            };
            let Some(len) = std::str::from_utf8(&rest[1..line])
                .ok()
                .and_then(|l| l.parse::<usize>().ok())
            else {
                return odd();
            };
            let Some(cursor) = rest
                .get(line + 2..line + 2 + len)
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| c.parse::<u64>().ok())
            else {
                return odd();
            };
            let keys = &rest[line + 2 + len + 2..];
            let next = if cursor != 0 {
                (cursor << 8) | shard
            } else if shard + 1 < *shards {
                shard + 1
            } else {
                0
            };
            let mut out = b"*2\r\n".to_vec();
            out.extend_from_slice(&resp::bulk(next.to_string().as_bytes()));
            out.extend_from_slice(keys);
            Bytes::from(out)
        }
    }
}

/// Where the first key of `cmd` is, if it has one (0: no key).
fn first_key(cmd: &Command) -> usize {
    let name = cmd.name();
    let eq = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
    if [
        "EVAL",
        "EVALSHA",
        "EVAL_RO",
        "EVALSHA_RO",
        "FCALL",
        "FCALL_RO",
    ]
    .iter()
    .any(|n| eq(n))
    {
        let numkeys = cmd.arg(2).and_then(crate::proto::parse_ll).unwrap_or(0);
        return if numkeys > 0 { 3 } else { 0 };
    }
    if eq("XREAD") || eq("XREADGROUP") {
        return (1..cmd.argc())
            .find(|&i| cmd.arg_eq(i, "STREAMS"))
            .map_or(0, |i| i + 1);
    }
    const KEYLESS: &[&str] = &[
        "PING",
        "ECHO",
        "INFO",
        "DBSIZE",
        "KEYS",
        "SCAN",
        "RANDOMKEY",
        "TIME",
        "CONFIG",
        "CLIENT",
        "COMMAND",
        "SCRIPT",
        "FUNCTION",
        "FLUSHALL",
        "FLUSHDB",
        "MULTI",
        "EXEC",
        "DISCARD",
        "UNWATCH",
        "SUBSCRIBE",
        "PSUBSCRIBE",
        "UNSUBSCRIBE",
        "PUNSUBSCRIBE",
        "PUBLISH",
        "PUBSUB",
        "HELLO",
        "AUTH",
        "SELECT",
        "QUIT",
        "RESET",
        "LASTSAVE",
        "SAVE",
        "BGSAVE",
        "WAIT",
        "SLOWLOG",
        "LATENCY",
        "MEMORY",
        "MONITOR",
        "DEBUG",
        "ROLE",
        "LOLWUT",
        "SWAPDB",
        "ACL",
        "BGREWRITEAOF",
        "SHUTDOWN",
        "FAILOVER",
        "REPLICAOF",
        "SLAVEOF",
        "OBJECT",
        "READONLY",
        "READWRITE",
        "ASKING",
    ];
    if KEYLESS.iter().any(|n| eq(n)) {
        // OBJECT and MEMORY have a key after their subcommand.
        if (eq("OBJECT") || eq("MEMORY")) && cmd.argc() > 2 {
            return 2;
        }
        return 0;
    }
    if cmd.argc() > 1 { 1 } else { 0 }
}

impl Session {
    /// Routes `cmd` in cluster mode: answers what the sidecar answers,
    /// splits what spans slots, and otherwise points `self.shard` at the
    /// shard of its key. True when `cmd` was dealt with here.
    pub(super) fn cluster_route(
        &mut self,
        cur: Cur,
        cmd: &mut Option<Command>,
        route: Route,
    ) -> bool {
        let Some(cluster) = self.env.cluster.clone() else {
            return false;
        };
        let c = cmd.as_ref().expect("a command");
        if let Some(done) = self.cluster_txn(cur, c, route, &cluster.load_full()) {
            return done;
        }
        if self.pin.multi || self.pinned() {
            // Queued on the transaction's shard, or bound for the dedicated
            // connection's: `self.shard` stays that one (EXEC opens no
            // connection elsewhere once it clears the pin).
            return false;
        }
        if c.name_eq("CLUSTER") {
            if let Some(reply) = self.cluster_facade(c) {
                self.push_done(cur, reply);
                return true;
            }
        } else if c.name_eq("READONLY") || c.name_eq("READWRITE") || c.name_eq("ASKING") {
            self.push_done(cur, resp::ok());
            return true;
        } else if c.name_eq("SELECT") && !c.arg_eq(1, "0") {
            self.push_done(
                cur,
                resp::error("ERR SELECT is not allowed in cluster mode"),
            );
            return true;
        }
        if self.fan_out(cur, c) {
            return true;
        }
        let state = cluster.load();
        if c.name_eq("MSETNX")
            && split::single_slot((1..c.argc()).step_by(2).filter_map(|i| c.arg(i))).is_err()
        {
            self.push_done(cur, split::crossslot_error());
            return true;
        }
        if matches!(route, Route::Read | Route::Primary) {
            match split::plan(c, |slot| slot as usize) {
                Err(reply) => {
                    self.push_done(cur, reply);
                    return true;
                }
                Ok(Some(plan)) => {
                    let cmd = cmd.take().expect("a command");
                    let kind = if matches!(route, Route::Read) {
                        Kind::Read
                    } else {
                        Kind::Write
                    };
                    self.send_split(cur, cmd, plan, kind);
                    return true;
                }
                Ok(None) => {}
            }
        }
        let i = first_key(c);
        let shard = match c.arg(i).filter(|_| i > 0) {
            Some(key) => state.shard_of(key_slot(key)).cloned(),
            None => state.any().cloned(),
        };
        match shard {
            Some(s) => {
                self.shard = s;
                false
            }
            None => {
                self.push_done(cur, resp::error("CLUSTERDOWN Hash slot not served"));
                true
            }
        }
    }

    /// MULTI .. EXEC in a cluster (see `Txn`). `Some(true)`: answered here.
    fn cluster_txn(
        &mut self,
        cur: Cur,
        c: &Command,
        route: Route,
        state: &crate::model::cluster::ClusterState,
    ) -> Option<bool> {
        let keyed = first_key(c);
        let slot = c.arg(keyed).filter(|_| keyed > 0).map(key_slot);
        if route == Route::Pin(Pin::Multi) && self.txn.is_none() && !self.pin.multi {
            if self.pinned() {
                // After WATCH: its connection, its shard.
                self.txn = Some(Txn::default());
                return None;
            }
            self.txn = Some(Txn {
                pending: true,
                ..Txn::default()
            });
            self.push_done(cur, resp::ok());
            return Some(true);
        }
        let txn = self.txn.as_mut()?;
        let exec = route == Route::Pin(Pin::Exec);
        let discard = route == Route::Pin(Pin::Discard);
        if txn.pending {
            if exec || discard {
                self.txn = None;
                let reply = if exec {
                    Bytes::from_static(b"*0\r\n")
                } else {
                    resp::ok()
                };
                self.push_done(cur, reply);
                return Some(true);
            }
            // The first command names the shard: MULTI goes there now.
            let shard = match slot {
                Some(s) => state.shard_of(s).cloned(),
                None => state.any().cloned(),
            };
            let Some(shard) = shard else {
                self.push_done(cur, resp::error("CLUSTERDOWN Hash slot not served"));
                return Some(true);
            };
            txn.pending = false;
            txn.slot = slot;
            self.shard = shard;
            self.ensure_dedicated();
            self.send_hidden(&[b"MULTI"]);
            self.pin.sent(Route::Pin(Pin::Multi));
            return None;
        }
        if exec || discard {
            let dirty = txn.dirty;
            self.txn = None;
            if exec && dirty {
                self.send_hidden(&[b"DISCARD"]);
                self.pin.sent(Route::Pin(Pin::Discard));
                self.push_done(cur, resp::error(EXECABORT));
                return Some(true);
            }
            return None;
        }
        if let Some(s) = slot {
            match txn.slot {
                None => txn.slot = Some(s),
                Some(t) if t != s => {
                    txn.dirty = true;
                    self.push_done(cur, split::crossslot_error());
                    return Some(true);
                }
                _ => {}
            }
        }
        None
    }

    /// A command on the dedicated connection whose reply the client never
    /// sees (the deferred MULTI, the DISCARD of a failed transaction).
    fn send_hidden(&mut self, args: &[&[u8]]) {
        let seq = self.slots.push(
            true,
            true,
            super::slots::Hook::None,
            super::slots::Track::None,
        );
        self.pin.outstanding += 1;
        let req = DRequest {
            seq,
            confirm: None,
            slow: false,
            data: Command::from_args(args).into_raw(),
            expect: Expect::One { blocking: false },
            kind: Kind::Other,
        };
        if !self.ded.as_ref().is_some_and(|d| d.send(req)) {
            self.complete(seq, Bytes::new());
        }
    }

    fn cluster_facade(&self, cmd: &Command) -> Option<Bytes> {
        let listen = self.env.config().listen;
        let host = listen.ip().to_string();
        let port = listen.port();
        let id = facade::myid(&host, port);
        let proto = self.client.proto;
        let sub = |s: &str| cmd.arg_eq(1, s);
        Some(if sub("SLOTS") {
            facade::cluster_slots(&host, port, &id, proto)
        } else if sub("SHARDS") {
            facade::cluster_shards(&host, port, &id, proto)
        } else if sub("NODES") {
            facade::cluster_nodes(&host, port, &id, proto)
        } else if sub("INFO") {
            facade::cluster_info(proto)
        } else if sub("MYID") {
            facade::cluster_myid(&id)
        } else if sub("KEYSLOT") && cmd.argc() == 3 {
            resp::integer(key_slot(cmd.arg(2)?) as i64)
        } else {
            return None;
        })
    }

    /// Sends each part of `plan` to its shard; the client's slot is filled
    /// once every part answered.
    fn send_split(&mut self, cur: Cur, cmd: Command, plan: Plan, kind: Kind) {
        let _ = cmd;
        let state = self.env.cluster.as_ref().expect("cluster").load_full();
        let parts: Vec<(Option<Arc<TopologyCell>>, Command)> = plan
            .parts
            .iter()
            .map(|p| (state.shard_of(p.slot).cloned(), p.command.clone()))
            .collect();
        self.send_parts(cur, How::Plan(plan), parts, kind);
    }

    /// Sends one part per target and fills the client's slot from their
    /// merged replies (`How`).
    fn send_parts(
        &mut self,
        cur: Cur,
        how: How,
        parts: Vec<(Option<Arc<TopologyCell>>, Command)>,
        kind: Kind,
    ) {
        let seq = self.new_slot(cur, false, super::slots::Hook::None);
        let n = parts.len();
        let (cells, cmds): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
        self.splits.push(Split {
            seq,
            how,
            parts: cmds,
            replies: vec![None; n],
            redirects: vec![0; n],
            failed: false,
        });
        for (i, cell) in cells.into_iter().enumerate() {
            let Some(cell) = cell else {
                self.split_failed(seq, "CLUSTERDOWN Hash slot not served");
                return;
            };
            self.shard = cell;
            let up = if kind == Kind::Read {
                self.pick_read(&[])
            } else {
                self.shard.load().primary.clone()
            };
            let data = self.splits.last().expect("just pushed").parts[i]
                .raw()
                .clone();
            let pipe = self.pipe_for(&up);
            let slow = command::is_slow(self.splits.last().expect("pushed").parts[i].name());
            self.send_pipe(pipe, SPLIT | (seq << 8) | i as u64, data, kind, slow);
        }
    }

    /// Commands that concern every shard (DBSIZE, KEYS, FLUSHALL, SCRIPT
    /// and FUNCTION loads) go to each, and SCAN walks them in turn. True
    /// when `cmd` was one.
    fn fan_out(&mut self, cur: Cur, cmd: &Command) -> bool {
        let state = self.env.cluster.as_ref().expect("cluster").load_full();
        let n = state.shards.len();
        if n == 0 {
            return false;
        }
        let all = |c: &Command| -> Vec<(Option<Arc<TopologyCell>>, Command)> {
            state
                .shards
                .iter()
                .map(|s| (Some(s.clone()), c.clone()))
                .collect()
        };
        let name = |s: &str| cmd.name_eq(s);
        let sub = |s: &str| cmd.arg_eq(1, s);
        if name("DBSIZE") {
            self.send_parts(cur, How::Sum, all(cmd), Kind::Read);
        } else if name("KEYS") && cmd.argc() == 2 {
            self.send_parts(cur, How::Concat, all(cmd), Kind::Read);
        } else if name("FLUSHALL") || name("FLUSHDB") {
            self.send_parts(cur, How::AllOk, all(cmd), Kind::Write);
        } else if (name("SCRIPT") || name("FUNCTION")) && (sub("FLUSH") || sub("KILL")) {
            self.send_parts(cur, How::AllOk, all(cmd), Kind::Other);
        } else if (name("SCRIPT") || name("FUNCTION")) && sub("LOAD") {
            self.send_parts(cur, How::First, all(cmd), Kind::Other);
        } else if name("SCAN") && cmd.argc() >= 2 {
            let Some(cursor) = cmd
                .arg(1)
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| c.parse::<u64>().ok())
            else {
                self.push_done(cur, resp::error("ERR invalid cursor"));
                return true;
            };
            let shard = cursor & 0xff;
            let Some(cell) = state.shards.get(shard as usize).cloned() else {
                self.push_done(cur, resp::error("ERR invalid cursor"));
                return true;
            };
            let inner = (cursor >> 8).to_string();
            let mut args: Vec<&[u8]> = cmd.args().collect();
            args[1] = inner.as_bytes();
            let part = Command::from_args(&args);
            let how = How::Scan {
                shard,
                shards: n as u64,
            };
            self.send_parts(cur, how, vec![(Some(cell), part)], Kind::Read);
        } else {
            return false;
        }
        true
    }

    fn split_failed(&mut self, seq: u64, error: &str) {
        if let Some(s) = self.splits.iter_mut().find(|s| s.seq == seq)
            && !s.failed
        {
            s.failed = true;
            self.complete(seq, resp::error(error));
        }
    }

    /// A reply (or a failure: `data` None) for a split part.
    pub(super) fn on_split_event(&mut self, tagged: u64, data: Option<Bytes>, error: Option<&str>) {
        self.shared_waiting = self.shared_waiting.saturating_sub(1);
        let seq = (tagged & !SPLIT) >> 8;
        let part = (tagged & 0xff) as usize;
        let Some(pos) = self.splits.iter().position(|s| s.seq == seq) else {
            return;
        };
        if let Some(d) = &data
            && let Some(r) = redirect::parse_redirect(d)
            && self.splits[pos].redirects[part] < MAX_REDIRECTS
        {
            self.splits[pos].redirects[part] += 1;
            let cmd = self.splits[pos].parts[part].clone();
            if self.follow_redirect(tagged, &cmd, &r) {
                return;
            }
        }
        let s = &mut self.splits[pos];
        match (data, error) {
            (Some(d), _) => s.replies[part] = Some(d),
            (None, e) => {
                let e = format!("ERR nearby: {}", e.unwrap_or("lost"));
                self.split_failed(seq, &e);
            }
        }
        let s = &self.splits[pos];
        if s.replies.iter().all(Option::is_some) {
            let s = self.splits.swap_remove(pos);
            if !s.failed {
                let replies: Vec<Bytes> = s.replies.into_iter().map(|r| r.expect("all")).collect();
                let merged = merge_fan(&s.how, replies);
                self.complete(s.seq, merged);
            }
        } else if s.failed && s.replies.iter().filter(|r| r.is_none()).count() == 0 {
            self.splits.swap_remove(pos);
        }
    }

    /// A reply that redirects (`MOVED`, `ASK`) request `seq`: sends it where
    /// the cluster says. True when it was sent again.
    pub(super) fn try_redirect(&mut self, seq: u64, data: &Bytes) -> bool {
        let Some(r) = redirect::parse_redirect(data) else {
            return false;
        };
        let Some(slot) = self.slots.get_mut(seq) else {
            return false;
        };
        let Some(retry) = slot.retry.as_mut() else {
            return false;
        };
        if retry.redirects >= MAX_REDIRECTS {
            return false;
        }
        retry.redirects += 1;
        let cmd = retry.command().clone();
        self.follow_redirect(seq, &cmd, &r)
    }

    /// Sends `cmd` (request `seq`) to the node `r` names: on MOVED over its
    /// shared pipe (and the map is refreshed), on ASK over a connection of
    /// its own, after `ASKING`.
    fn follow_redirect(&mut self, seq: u64, cmd: &Command, r: &Redirect) -> bool {
        let Some(cluster) = self.env.cluster.clone() else {
            return false;
        };
        let (host, port, ask) = match r {
            Redirect::Moved { host, port, .. } => (host, *port, false),
            Redirect::Ask { host, port, .. } => (host, *port, true),
        };
        if !ask {
            cluster.refresh.notify_one();
        }
        let label = crate::url::join_host_port(host, port);
        let state = cluster.load_full();
        let mut found: Option<(Arc<TopologyCell>, Arc<Upstream>)> = None;
        for cell in &state.shards {
            if let Some(up) = cell
                .load()
                .all()
                .find(|u| u.url.host_port() == label || u.label == label)
            {
                found = Some((cell.clone(), up.clone()));
                break;
            }
        }
        let Some((cell, up)) = found else {
            // A node the map does not know yet (added to the cluster since):
            // the refresh just asked for will bring it.
            if ask {
                return false;
            }
            self.moved_to_unknown(seq, cmd, label, r.slot());
            return true;
        };
        if ask {
            self.ask(seq, cmd, up);
            return true;
        }
        // The node the cluster names owns the slot now, whatever role the
        // map (refreshing meanwhile) last gave it.
        self.shard = cell;
        let pipe = self.pipe_for(&up);
        let slow = command::is_slow(cmd.name());
        let kind = Kind::Other;
        self.send_pipe(pipe, seq, cmd.raw().clone(), kind, slow);
        true
    }

    /// A refusal that proves the command did not run (`TRYAGAIN` during a
    /// migration, `CLUSTERDOWN` during a failover): sent again after a
    /// pause, to whoever owns its slot by then, a few times within about
    /// two seconds. True when it was.
    pub(super) fn try_again(&mut self, seq: u64) -> bool {
        const TRIES: u8 = 6;
        let Some(cluster) = self.env.cluster.clone() else {
            return false;
        };
        let Some(retry) = self.slots.get_mut(seq).and_then(|s| s.retry.as_mut()) else {
            return false;
        };
        if retry.redirects >= TRIES {
            return false;
        }
        let delay = std::time::Duration::from_millis(50 << retry.redirects.min(4));
        retry.redirects += 1;
        let read = retry.is_read();
        let cmd = retry.command();
        let i = first_key(cmd);
        let slot = cmd.arg(i).filter(|_| i > 0).map(key_slot);
        let args: Vec<Vec<u8>> = cmd.args().map(<[u8]>::to_vec).collect();
        let events = self.events_tx.clone();
        let connector = self.env.pipes.connector().clone();
        let timeout = self.env.pipes.timeouts().request;
        self.shared_waiting += 1;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let state = cluster.load_full();
            let shard = match slot {
                Some(s) => state.shard_of(s),
                None => state.any(),
            };
            // A read goes to a usable replica of the shard if there is one
            // (the primary may be the node that failed), a write to the
            // primary.
            let target = shard.map(|c| {
                let t = c.load();
                let replica = t
                    .replicas
                    .iter()
                    .find(|r| read && r.unusable().is_none())
                    .cloned();
                replica.unwrap_or_else(|| t.primary.clone())
            });
            let ev = match target {
                None => Event::Failed {
                    seq,
                    error: Arc::from("no shard serves the slot"),
                },
                Some(up) => {
                    let res = async {
                        let mut c = Control::open(&connector, &up, timeout).await?;
                        if up.needs_readonly() {
                            c.call(&[b"READONLY"], timeout).await?;
                        }
                        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                        c.call(&refs, timeout).await
                    }
                    .await;
                    match res {
                        Ok(r) => Event::Reply { seq, data: r.raw },
                        Err(e) => Event::Failed {
                            seq,
                            error: Arc::from(format!("{up}: {e}")),
                        },
                    }
                }
            };
            let _ = events.send(ev);
        });
        true
    }

    /// MOVED to `label`, a node the map does not list: waits (about two
    /// seconds at most) for the refreshed map to list it, then sends `cmd`
    /// there. A MOVED proves the command did not run, so sending it again
    /// is safe for writes too. If the map never lists the node, the client
    /// gets the MOVED, as from Redis.
    fn moved_to_unknown(&mut self, seq: u64, cmd: &Command, label: String, slot: u16) {
        const WAIT: std::time::Duration = std::time::Duration::from_secs(2);
        const POLL: std::time::Duration = std::time::Duration::from_millis(20);
        let Some(cluster) = self.env.cluster.clone() else {
            return;
        };
        let events = self.events_tx.clone();
        let connector = self.env.pipes.connector().clone();
        let timeout = self.env.pipes.timeouts().request;
        let args: Vec<Vec<u8>> = cmd.args().map(<[u8]>::to_vec).collect();
        let moved = Bytes::from(format!("-MOVED {slot} {label}\r\n"));
        self.shared_waiting += 1;
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            let up = loop {
                let state = cluster.load_full();
                let up = state.shards.iter().find_map(|cell| {
                    cell.load()
                        .all()
                        .find(|u| u.url.host_port() == label || u.label == label)
                        .cloned()
                });
                if up.is_some() || tokio::time::Instant::now() >= deadline {
                    break up;
                }
                cluster.refresh.notify_one();
                tokio::time::sleep(POLL).await;
            };
            let ev = match up {
                None => Event::Reply { seq, data: moved },
                Some(up) => {
                    let res = async {
                        let mut c = Control::open(&connector, &up, timeout).await?;
                        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                        c.call(&refs, timeout).await
                    }
                    .await;
                    match res {
                        Ok(r) => Event::Reply { seq, data: r.raw },
                        Err(e) => Event::Failed {
                            seq,
                            error: Arc::from(format!("{up}: {e}")),
                        },
                    }
                }
            };
            let _ = events.send(ev);
        });
    }

    /// `ASKING` then `cmd` on a connection to `up` of their own (a shared
    /// pipe would let another client's command run in between).
    fn ask(&mut self, seq: u64, cmd: &Command, up: Arc<Upstream>) {
        let events = self.events_tx.clone();
        let connector = self.env.pipes.connector().clone();
        let timeout = self.env.pipes.timeouts().request;
        let args: Vec<Vec<u8>> = cmd.args().map(<[u8]>::to_vec).collect();
        self.shared_waiting += 1;
        tokio::spawn(async move {
            let res = async {
                let mut c = Control::open(&connector, &up, timeout).await?;
                c.call(&[b"ASKING"], timeout).await?;
                let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                c.call(&refs, timeout).await
            }
            .await;
            let ev = match res {
                Ok(r) => Event::Reply { seq, data: r.raw },
                Err(e) => Event::Failed {
                    seq,
                    error: Arc::from(format!("{up}: {e}")),
                },
            };
            let _ = events.send(ev);
        });
    }
}
