//! Moving writes when the primary changes. Two followers feed it: the ROLE
//! follower here (without Sentinel: the servers' own `INFO replication`, as
//! the probers read it) and `sentinel`. Either way a new primary gets
//! writes only after it answers `ROLE` as master itself, and never while a
//! second server says master.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redis_protocol::resp2::types::BytesFrame;

use super::ControlEnv;
use crate::config::FollowRole;
use crate::conn::control::Control;
use crate::model::failover::Switch;
use crate::model::topology::{Role, Topology, TopologyCell, Upstream, Writes};
use crate::proto::reply::decode_resp2;
use crate::route::failover::{self, Claim, Election, Server};
use crate::route::replication::ReplicationInfo;
use crate::url::{Host, RedisUrl};

/// How often to look again while writes wait for a primary.
const WAITING_TICK: Duration = Duration::from_millis(100);

/// One server the topology should hold.
#[derive(Clone, Debug)]
pub struct Want {
    pub entry: usize,
    pub region: String,
    pub url: RedisUrl,
    pub addr: Option<SocketAddr>,
}

impl Want {
    pub fn of(up: &Upstream) -> Want {
        Want {
            entry: up.entry(),
            region: up.region.clone(),
            url: up.url.clone(),
            addr: up.addr,
        }
    }

    /// The label the upstream will have (see `Upstream::new`).
    pub fn label(&self) -> String {
        self.addr
            .map_or_else(|| self.url.host_port(), |a| a.to_string())
    }
}

/// The topology with `primary` and `replicas`: an upstream already there in
/// the same role is kept (state, pipes and all); a server that changes role
/// becomes a new upstream that inherits what was measured of it.
pub fn reconcile(
    cell: &TopologyCell,
    topo: &Topology,
    primary: &Want,
    replicas: &[Want],
    writes: Writes,
) -> Topology {
    let place = |w: &Want, role: Role| -> Arc<Upstream> {
        let label = w.label();
        if let Some(u) = topo.all().find(|u| u.label == label && u.role == role) {
            return u.clone();
        }
        let u = cell.new_upstream(w.entry, role, &w.region, &w.url, w.addr);
        if let Some(old) = topo.all().find(|u| u.label == label) {
            u.inherit(old);
        }
        u
    };
    let primary = place(primary, Role::Primary);
    let mut out: Vec<Arc<Upstream>> = Vec::new();
    for w in replicas {
        let u = place(w, Role::Replica);
        if u.label != primary.label && !out.iter().any(|o| o.label == u.label) {
            out.push(u);
        }
    }
    out.sort_by_key(|u| (u.entry(), u.addr));
    Topology {
        primary,
        replicas: out,
        writes,
    }
}

/// Publishes `writes` if it differs from the current state.
pub fn set_writes(env: &ControlEnv, writes: Writes) {
    env.topology.update(|t| {
        (t.writes != writes).then(|| Topology {
            primary: t.primary.clone(),
            replicas: t.replicas.clone(),
            writes: writes.clone(),
        })
    });
}

/// Asks `up` itself: `ROLE` must say master; then its `INFO replication`
/// (what it kept of the old history).
pub async fn confirm_master(
    env: &ControlEnv,
    up: &Upstream,
    timeout: Duration,
) -> Result<ReplicationInfo, String> {
    let mut c = Control::open(env.pipes.connector(), up, timeout)
        .await
        .map_err(|e| e.to_string())?;
    let role = c
        .call_ok(up, &[b"ROLE"], timeout)
        .await
        .map_err(|e| e.to_string())?;
    let first = match decode_resp2(&role.raw) {
        Ok(BytesFrame::Array(v)) => match v.into_iter().next() {
            Some(BytesFrame::BulkString(b)) | Some(BytesFrame::SimpleString(b)) => b,
            _ => return Err("ROLE: unexpected reply".into()),
        },
        _ => return Err("ROLE: unexpected reply".into()),
    };
    if &first[..] != b"master" {
        return Err(format!("ROLE says {}", String::from_utf8_lossy(&first)));
    }
    let info = c
        .call_ok(up, &[b"INFO", b"replication"], timeout)
        .await
        .map_err(|e| e.to_string())?;
    up.set_claim(Claim::Master);
    Ok(ReplicationInfo::parse(&String::from_utf8_lossy(&info.raw)))
}

/// Moves writes to `to` (already confirmed, `info` its replication state):
/// publishes the topology `next` builds, counts and logs the switch, and
/// says what an unplanned failover may have lost.
pub fn switch(
    env: &ControlEnv,
    source: &'static str,
    info: &ReplicationInfo,
    next: impl FnOnce(&Arc<Topology>) -> Option<Topology>,
) -> bool {
    let Some(change) = env.topology.update(next) else {
        return false;
    };
    let (old, new) = (&change.prev.primary, &change.next.primary);
    let unplanned = !old.is_healthy() || old.claim() != Claim::Replica;
    let (mut writes_at_risk, mut bytes) = (0, None);
    if unplanned && let Some(second) = info.second_repl_offset {
        let fo = &env.topology.failover;
        let acked = old
            .metrics
            .writes
            .load(std::sync::atomic::Ordering::Relaxed);
        writes_at_risk = fo.writes_beyond(second.saturating_sub(1), acked);
        bytes = fo
            .highest_offset()
            .and_then(|h| failover::bytes_at_risk(h, second));
    }
    tracing::warn!(
        from = %old,
        to = %new,
        source,
        "the primary changed: writes now go to {}",
        new.label
    );
    // Bytes alone are no loss: a primary's offset also grows with
    // replication pings and sentinel traffic while writes are held.
    if writes_at_risk > 0 {
        let range = bytes.map_or_else(String::new, |(a, b)| format!("{a}..={b}"));
        tracing::warn!(
            writes = writes_at_risk,
            bytes = %range,
            "writes acknowledged by {} may be missing on {} (unplanned failover)",
            old.label,
            new.label
        );
        crate::metrics::writes_at_risk(writes_at_risk);
    }
    crate::metrics::primary_changed(source);
    env.topology.failover.record(Switch {
        at_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        from: old.label.clone(),
        to: new.label.clone(),
        source,
        writes_at_risk,
        bytes_at_risk: bytes,
    });
    // Offsets of the old history no longer bound the new one.
    env.replication
        .reset_history(info.master_repl_offset.unwrap_or(0));
    env.apply(&change, "failover");
    true
}

/// Follows the servers' own word on who is master, when there is no
/// Sentinel: never returns.
pub async fn follow_roles(env: ControlEnv) {
    let mut waiting_logged = false;
    loop {
        let (interval, timeout, on) = {
            let c = env.config();
            (
                Duration::from_millis(c.health.probe_interval_ms),
                Duration::from_millis(c.timeouts.connect_timeout_ms.max(100)),
                c.failover.follow_role == FollowRole::On && c.sentinel.is_none(),
            )
        };
        let waiting = env.topology.load().writes != Writes::Open;
        let tick = if waiting {
            interval.min(WAITING_TICK)
        } else {
            interval
        };
        let woken = tokio::select! {
            _ = env.topology.failover.recheck.notified() => true,
            _ = tokio::time::sleep(tick) => false,
        };
        if !on {
            continue;
        }
        decide(&env, timeout, woken, &mut waiting_logged).await;
        env.topology.failover.checked();
    }
}

/// One look at the servers' claims, acting on what it finds.
async fn decide(env: &ControlEnv, timeout: Duration, woken: bool, waiting_logged: &mut bool) {
    let waiting = env.topology.load().writes != Writes::Open;
    {
        let topo = env.topology.load_full();
        let refused = env.topology.failover.take_refused();
        if woken || waiting {
            // A refused write (or a wait): ask now, not at the next probe.
            refresh_claims(env, &topo, timeout, waiting).await;
        }
        if (refused || topo.writes == Writes::Waiting)
            && matches!(topo.primary.url.host, Host::Name(_))
            && topo.primary.claim() == Claim::Master
        {
            // Refused as READONLY, yet a fresh connection to the name finds
            // a master: the name moved (a managed promotion). The open
            // connections still reach the old server; start over by name.
            renew_primary(env, &topo);
            return;
        }
        match failover::elect(topo.primary.id, &servers(&topo)) {
            Election::Keep => {
                *waiting_logged = false;
                set_writes(env, Writes::Open);
            }
            Election::NoPrimary => {
                if !*waiting_logged {
                    tracing::warn!(primary = %topo.primary, "the primary says it is a replica and no server says master: writes wait for a new primary");
                    *waiting_logged = true;
                }
                set_writes(env, Writes::Waiting);
            }
            Election::Conflict(ids) => {
                let names: Vec<String> = ids
                    .iter()
                    .filter_map(|id| topo.all().find(|u| u.id == *id))
                    .map(|u| u.label.clone())
                    .collect();
                let text = format!(
                    "ERR nearby: two primaries: {} all say role:master; writes are refused until one steps down",
                    names.join(" and ")
                );
                if topo.writes != Writes::Conflict(Arc::from(text.as_str())) {
                    tracing::error!(servers = %names.join(", "), "more than one server says role:master: writes refused until one steps down");
                }
                set_writes(env, Writes::Conflict(Arc::from(text)));
            }
            Election::Switch(id) => {
                let Some(to) = topo.all().find(|u| u.id == id).cloned() else {
                    return;
                };
                match confirm_master(env, &to, timeout).await {
                    Ok(info) => {
                        *waiting_logged = false;
                        let prev = topo.clone();
                        switch(env, "role", &info, |t| {
                            if !Arc::ptr_eq(&t.primary, &prev.primary) {
                                return None; // someone else moved it meanwhile
                            }
                            let replicas: Vec<Want> = t
                                .all()
                                .filter(|u| u.id != to.id)
                                .map(|u| Want::of(u))
                                .collect();
                            Some(reconcile(
                                &env.topology,
                                t,
                                &Want::of(&to),
                                &replicas,
                                Writes::Open,
                            ))
                        });
                    }
                    Err(e) => {
                        tracing::debug!(upstream = %to, error = %e, "says master on INFO but not on ROLE: not switching")
                    }
                }
            }
        }
    }
}

/// A new upstream for the primary's name, so that every connection to it
/// is made afresh (the old one retires, its pipes with it).
fn renew_primary(env: &ControlEnv, topo: &Arc<Topology>) {
    let old = &topo.primary;
    switch(env, "dns", &ReplicationInfo::default(), |t| {
        if !Arc::ptr_eq(t, topo) {
            return None;
        }
        let fresh =
            env.topology
                .new_upstream(old.entry(), Role::Primary, &old.region, &old.url, None);
        fresh.inherit(old);
        Some(Topology {
            primary: fresh,
            replicas: t.replicas.clone(),
            writes: Writes::Open,
        })
    });
}

/// The servers of `topo`, once each (a name discovery also resolved to the
/// primary's address is one server).
fn servers(topo: &Topology) -> Vec<Server> {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for u in topo.all() {
        if seen.contains(&u.label.as_str()) {
            continue;
        }
        seen.push(&u.label);
        out.push(Server {
            id: u.id,
            claim: u.claim(),
            healthy: u.is_healthy(),
        });
    }
    out
}

/// What a server's `INFO replication` claims, judged against the servers
/// this sidecar knows.
pub fn claim_of(env: &ControlEnv, info: &ReplicationInfo) -> Claim {
    let topo = env.topology.load();
    let master = info
        .master_addr
        .as_ref()
        .map(|(h, p)| crate::url::join_host_port(h, *p));
    Claim::of(info.is_master, info.link_up, master.as_deref(), |a| {
        topo.all().any(|u| u.label == a || u.url.host_port() == a)
    })
}

/// Reads the claims now instead of at the next probe: the primary's, and
/// while writes wait every server's.
async fn refresh_claims(env: &ControlEnv, topo: &Topology, timeout: Duration, all: bool) {
    let targets: Vec<&Arc<Upstream>> = if all {
        topo.all().collect()
    } else {
        vec![&topo.primary]
    };
    for up in targets {
        let Ok(mut c) = Control::open(env.pipes.connector(), up, timeout).await else {
            continue;
        };
        if let Ok(r) = c.call_ok(up, &[b"INFO", b"replication"], timeout).await {
            let info = ReplicationInfo::parse(&String::from_utf8_lossy(&r.raw));
            up.set_claim(claim_of(env, &info));
        }
    }
}
