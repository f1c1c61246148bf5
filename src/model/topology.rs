//! The topology snapshot (the primary and the replicas) and its one writer.
//! Sessions read the snapshot without locking; discovery and reload replace
//! it through [`TopologyCell::update`], which serializes them so that
//! neither can lose the other's change.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::{Config, ReadFrom};
use crate::route::select::{self, Candidate, Choice, Fallback, Unusable};
use crate::url::{Host, RedisUrl};

pub use super::upstream::{Role, Upstream};

pub struct Topology {
    /// Where writes go (when `writes` is open), and the last primary known
    /// while a failover holds them.
    pub primary: Arc<Upstream>,
    pub replicas: Vec<Arc<Upstream>>,
    pub writes: Writes,
}

/// Whether writes may go to `primary` now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Writes {
    Open,
    /// A failover is under way (the primary stepped down, or the sentinels
    /// see it down): writes wait for the new primary.
    Waiting,
    /// More than one server says master: writes are refused, with this
    /// text, until one steps down.
    Conflict(Arc<str>),
}

impl Topology {
    pub fn all(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        std::iter::once(&self.primary).chain(self.replicas.iter())
    }

    /// Where a read goes: the one home of that decision, used by sessions,
    /// `/status` and the routing log. With `read_from = primary`, or no
    /// replica configured, the primary; else `pick_read`.
    pub fn read_target(
        &self,
        read_from: ReadFrom,
        window: Duration,
        rotate: usize,
        excluded: impl Fn(&Upstream) -> bool,
    ) -> (&Arc<Upstream>, Option<Fallback>) {
        if read_from == ReadFrom::Primary {
            return (&self.primary, Some(Fallback::ReadFromPrimary));
        }
        if self.replicas.is_empty() {
            return (&self.primary, Some(Fallback::NoReplicas));
        }
        self.pick_read(window, rotate, excluded)
    }

    /// The nearest usable upstream, sharing among those
    /// within `window` of it (see `select`). `excluded` filters replicas out
    /// (upstreams that already failed this request, or replicas behind a
    /// session's write); `rotate` is any counter, to spread ties.
    pub fn pick_read(
        &self,
        window: Duration,
        rotate: usize,
        excluded: impl Fn(&Upstream) -> bool,
    ) -> (&Arc<Upstream>, Option<Fallback>) {
        const STACK: usize = 16;
        let n = 1 + self.replicas.len();
        let mut on_stack = [Candidate {
            unusable: None,
            cost: None,
            outstanding: 0,
        }; STACK];
        let mut on_heap = Vec::new();
        let cands: &mut [Candidate] = if n <= STACK {
            &mut on_stack[..n]
        } else {
            on_heap.resize(n, on_stack[0]);
            &mut on_heap
        };
        for (slot, up) in cands.iter_mut().zip(self.all()) {
            *slot = up.candidate();
        }
        let Choice { index, fallback } =
            select::select(cands, 0, window.as_secs_f64(), rotate, |i| {
                i == 0 || !excluded(&self.replicas[i - 1])
            });
        if index == 0
            && !self.primary.is_healthy()
            && let Some(promoted) = self.replicas.iter().find(|r| {
                r.is_healthy() && r.unusable() == Some(Unusable::NotAReplica) && !excluded(r)
            })
        {
            // The primary is down and a replica says it is master: it was
            // promoted (the map, or the follower, will say so in a moment).
            // It has everything its old primary had; the old one answers
            // nothing at all.
            return (promoted, fallback);
        }
        let up = if index == 0 {
            &self.primary
        } else {
            &self.replicas[index - 1]
        };
        (up, fallback)
    }

    /// Where a read goes once the primary failed it (no connection) and no
    /// usable replica is left: the nearest replica that is up and still a
    /// replica but past the lag bound. Right after a primary dies its
    /// replicas' lag grows past the bound before anything is promoted;
    /// they hold everything the dead primary sent them, which is as fresh
    /// as any read can be until a new primary takes writes. `excluded`
    /// filters as in `pick_read` (tried, or behind the session's write).
    pub fn last_resort(&self, excluded: impl Fn(&Upstream) -> bool) -> Option<&Arc<Upstream>> {
        self.replicas
            .iter()
            .filter(|r| r.unusable() == Some(Unusable::Stale) && !excluded(r))
            .min_by(|a, b| {
                let cost = |u: &Upstream| u.cost().unwrap_or(f64::INFINITY);
                cost(a).total_cmp(&cost(b))
            })
    }
}

/// What an update changed: the upstreams that came and the ones that went.
pub struct Change {
    pub prev: Arc<Topology>,
    pub next: Arc<Topology>,
}

impl Change {
    /// Upstreams in the new snapshot that were not in the old one.
    pub fn added(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.next
            .all()
            .filter(|u| !self.prev.all().any(|p| Arc::ptr_eq(p, u)))
    }

    /// Upstreams of the old snapshot that the new one dropped.
    pub fn removed(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.prev
            .all()
            .filter(|u| !self.next.all().any(|n| Arc::ptr_eq(n, u)))
    }
}

/// The published topology, the only place that writes it, and the only
/// constructor of upstreams (ids are unique for the life of the process).
pub struct TopologyCell {
    snapshot: ArcSwap<Topology>,
    /// Primary changes: their source, history and what they put at risk.
    pub failover: super::failover::Failover,
    /// A cluster shard's own replication offsets (read-your-writes per
    /// shard); a standalone sidecar keeps its one in the app's context.
    pub replication: Arc<super::replication::Replication>,
    writer: Mutex<()>,
}

/// Upstream ids, unique in the process: pipes are keyed by them, and a
/// cluster has one cell per shard.
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

fn next_id() -> usize {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

impl TopologyCell {
    /// The topology the config describes: entry 0 is the primary, 1.. the
    /// replicas in order.
    pub fn from_config(config: &Config) -> TopologyCell {
        let cell = TopologyCell {
            snapshot: ArcSwap::from_pointee(Topology {
                primary: Arc::new(Upstream::new(
                    next_id(),
                    0,
                    Role::Primary,
                    config.primary.region.clone(),
                    config.primary.url.clone(),
                    literal_addr(&config.primary.url),
                )),
                replicas: Vec::new(),
                writes: initial_writes(config),
            }),
            writer: Mutex::new(()),
            failover: Default::default(),
            replication: Default::default(),
        };
        let replicas = config
            .replicas
            .iter()
            .enumerate()
            .map(|(i, r)| cell.new_upstream(i + 1, Role::Replica, &r.region, &r.url, None))
            .collect();
        let primary = cell.load().primary.clone();
        cell.snapshot.store(Arc::new(Topology {
            primary,
            replicas,
            writes: initial_writes(config),
        }));
        cell
    }

    /// One shard of a cluster: its primary and replicas (entries 0 and 1..).
    pub fn for_shard(
        primary: (&str, &RedisUrl, Option<SocketAddr>),
        replicas: &[(&str, &RedisUrl, Option<SocketAddr>)],
    ) -> TopologyCell {
        let up = |entry, role, (region, url, addr): (&str, &RedisUrl, Option<SocketAddr>)| {
            Arc::new(Upstream::new(
                next_id(),
                entry,
                role,
                region.to_string(),
                url.clone(),
                addr.or_else(|| literal_addr(url)),
            ))
        };
        TopologyCell {
            snapshot: ArcSwap::from_pointee(Topology {
                primary: up(0, Role::Primary, primary),
                replicas: replicas
                    .iter()
                    .enumerate()
                    .map(|(i, r)| up(i + 1, Role::Replica, *r))
                    .collect(),
                writes: Writes::Open,
            }),
            writer: Mutex::new(()),
            failover: Default::default(),
            replication: Default::default(),
        }
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<Topology>> {
        self.snapshot.load()
    }

    pub fn load_full(&self) -> Arc<Topology> {
        self.snapshot.load_full()
    }

    /// A new upstream with a fresh id for config entry `entry` (0 = the
    /// primary). `addr` is an address discovery resolved; without one an IP
    /// literal connects directly and a name is resolved at connect time.
    pub fn new_upstream(
        &self,
        entry: usize,
        role: Role,
        region: &str,
        url: &RedisUrl,
        addr: Option<SocketAddr>,
    ) -> Arc<Upstream> {
        let id = next_id();
        Arc::new(Upstream::new(
            id,
            entry,
            role,
            region.to_string(),
            url.clone(),
            addr.or_else(|| literal_addr(url)),
        ))
    }

    /// The only writer: `plan` sees the current snapshot and returns the
    /// next one, or `None` to keep it. Writers run one at a time, so `plan`
    /// runs exactly once and may create upstreams.
    pub fn update(&self, plan: impl FnOnce(&Arc<Topology>) -> Option<Topology>) -> Option<Change> {
        let _one_writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let prev = self.snapshot.load_full();
        let next = Arc::new(plan(&prev)?);
        self.snapshot.store(next.clone());
        Some(Change { prev, next })
    }
}

/// With Sentinel, writes wait until the sentinels name the primary.
fn initial_writes(config: &Config) -> Writes {
    if config.sentinel.is_some() {
        Writes::Waiting
    } else {
        Writes::Open
    }
}

fn literal_addr(url: &RedisUrl) -> Option<SocketAddr> {
    match url.host {
        Host::Ip(ip) => Some(SocketAddr::new(ip, url.port)),
        Host::Name(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    fn world() -> Topology {
        let url = |p: u16| -> RedisUrl { format!("redis://127.0.0.1:{p}").parse().unwrap() };
        let up =
            |id, role, port| Arc::new(Upstream::new(id, id, role, "r".into(), url(port), None));
        let t = Topology {
            primary: up(0, Role::Primary, 7000),
            replicas: vec![up(1, Role::Replica, 7001)],
            writes: Writes::Open,
        };
        let now = Instant::now();
        t.primary.observe_probe(Duration::from_millis(50), now);
        t.replicas[0].observe_probe(Duration::from_millis(1), now);
        t
    }

    #[test]
    fn read_target_honours_read_from() {
        let t = world();
        let w = Duration::from_millis(2);
        let (up, why) = t.read_target(ReadFrom::Nearest, w, 0, |_| false);
        assert_eq!((up.id, why), (1, None));
        // The routing log asks this too: it must not name the replica.
        let (up, why) = t.read_target(ReadFrom::Primary, w, 0, |_| false);
        assert_eq!((up.id, why), (0, Some(Fallback::ReadFromPrimary)));
        let (up, why) = t.read_target(ReadFrom::Nearest, w, 0, |u| u.id == 1);
        assert_eq!(up.id, 0);
        assert!(why.is_some());
    }

    #[test]
    fn last_resort_is_the_nearest_replica_only_past_the_lag_bound() {
        let mut t = world();
        let url: RedisUrl = "redis://127.0.0.1:7002".parse().unwrap();
        let far = Arc::new(Upstream::new(2, 2, Role::Replica, "r".into(), url, None));
        far.observe_probe(Duration::from_millis(9), Instant::now());
        t.replicas.push(far);
        let bound = Duration::from_millis(100);
        // Usable replicas are `pick_read`'s, not a last resort.
        assert!(t.last_resort(|_| false).is_none());
        for r in &t.replicas {
            r.set_lag(Some(Duration::from_secs(2)), bound);
        }
        assert_eq!(t.last_resort(|_| false).map(|u| u.id), Some(1));
        // Excluded (tried, or behind the session's write): the next one.
        assert_eq!(t.last_resort(|u| u.id == 1).map(|u| u.id), Some(2));
        // Down, or no longer a replica: never.
        t.replicas[1].set_healthy(false);
        assert!(t.last_resort(|u| u.id == 1).is_none());
        t.replicas[0].set_role_ok(false);
        assert!(t.last_resort(|_| false).is_none());
    }

    #[test]
    fn updates_report_what_came_and_went() {
        let args = crate::cli::ConfigArgs {
            primary: Some("redis://127.0.0.1:7000".into()),
            ..Default::default()
        };
        let config = Config::load(&args, None).unwrap();
        let cell = TopologyCell::from_config(&config);
        assert_eq!(cell.load().replicas.len(), 0);
        let first = cell.load().primary.clone();
        let url: RedisUrl = "redis://127.0.0.1:7009".parse().unwrap();
        let change = cell
            .update(|t| {
                Some(Topology {
                    primary: t.primary.clone(),
                    replicas: vec![cell.new_upstream(1, Role::Replica, "x", &url, None)],
                    writes: Writes::Open,
                })
            })
            .expect("changed");
        let added: Vec<usize> = change.added().map(|u| u.id).collect();
        assert_eq!(added, [change.next.replicas[0].id]);
        assert_ne!(added[0], first.id);
        assert_eq!(change.removed().count(), 0);
        assert!(Arc::ptr_eq(&cell.load().primary, &first));
        assert!(cell.update(|_| None).is_none());
    }
}
