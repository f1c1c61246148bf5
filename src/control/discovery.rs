//! DNS discovery: replica host names become one upstream per address, and
//! follow the name as its records change (a sidecar following `*.internal`
//! private DNS in a cloud).
//!
//! Every replica entry whose URL host is a name is resolved with hickory
//! (never the blocking std resolver), re-resolved when its TTL expires
//! (clamped to `[dns] min_ttl_s ..= max_ttl_s`), and each address becomes its
//! own upstream of that entry's region. Upstreams whose address stays keep
//! their health, latency and pipes. A failed lookup or an empty answer keeps
//! the last good addresses and is retried after the floor.
//!
//! The primary is left alone: it keeps one upstream without an address, and
//! every connection resolves the name and tries each address in turn
//! ([`crate::conn::resolve::connect`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::ControlEnv;
use crate::model::topology::{Role, Topology, Upstream};
use crate::url::Host;

/// Extra wait past a TTL, so the re-resolution finds the resolver's cache
/// entry expired.
const SLACK: Duration = Duration::from_millis(20);

/// The TTL to wait for: at least `floor`, at most `ceiling` (the floor wins
/// if they cross).
pub fn clamp_ttl(ttl: Duration, floor: Duration, ceiling: Duration) -> Duration {
    ttl.min(ceiling).max(floor)
}

/// What to change in the replica list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// New upstreams: (entry, address).
    pub add: Vec<(usize, SocketAddr)>,
    /// Upstreams to retire, as indexes into `current`.
    pub remove: Vec<usize>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

/// Compares the replicas there are, `current` as (entry, address), with
/// fresh answers, `resolved` as (entry, addresses). For each entry with a
/// non-empty answer: an upstream whose address is still in the answer stays
/// (its state and pipes survive), the others go (including the entry's
/// unresolved `None` upstream), and each new address is added once. An entry
/// with an empty answer, or not in `resolved`, is left as it is.
pub fn plan(
    current: &[(usize, Option<SocketAddr>)],
    resolved: &[(usize, Vec<SocketAddr>)],
) -> Diff {
    let mut diff = Diff::default();
    for (entry, addrs) in resolved {
        if addrs.is_empty() {
            continue;
        }
        let mut kept: Vec<SocketAddr> = Vec::new();
        for (i, (e, addr)) in current.iter().enumerate() {
            if e != entry {
                continue;
            }
            match addr {
                Some(a) if addrs.contains(a) && !kept.contains(a) => kept.push(*a),
                _ => diff.remove.push(i),
            }
        }
        for a in addrs {
            if !kept.contains(a) && !diff.add.contains(&(*entry, *a)) {
                diff.add.push((*entry, *a));
            }
        }
    }
    diff.remove.sort_unstable();
    diff.remove.dedup();
    diff
}

/// Follows every replica entry whose host is a name; never returns while
/// there is one. Installs the configured resolver first.
pub async fn run(env: ControlEnv) {
    if env.config().sentinel.is_some() || env.config().cluster.is_some() {
        // The sentinels (or the cluster) name the servers; entries only
        // label regions.
        return;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, r) in env.config().replicas.iter().enumerate() {
        if let Host::Name(name) = &r.url.host {
            tasks.spawn(follow(env.clone(), i + 1, name.clone(), r.url.port));
        }
    }
    while tasks.join_next().await.is_some() {}
}

fn show(addrs: &[SocketAddr]) -> String {
    let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
    format!("{ips:?}")
}

/// Resolves one replica entry's name for ever.
async fn follow(env: ControlEnv, entry: usize, name: String, port: u16) {
    let dns = &env.config().dns;
    let floor = Duration::from_secs(dns.min_ttl_s);
    let ceiling = Duration::from_secs(dns.max_ttl_s);
    let mut last_good: Vec<SocketAddr> = Vec::new();
    let mut failing = false;
    loop {
        let wait = match env.pipes.connector().resolver.lookup(&name, None).await {
            Ok(found) => {
                let mut addrs: Vec<SocketAddr> = found
                    .ips
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, port))
                    .collect();
                addrs.sort_unstable();
                addrs.dedup();
                if failing {
                    tracing::info!(name = %name, "replica {name} resolves again");
                    failing = false;
                }
                if last_good.is_empty() {
                    tracing::info!(name = %name, "replica {name} resolves to {}", show(&addrs));
                } else if addrs != last_good {
                    tracing::info!(
                        name = %name,
                        "replica {name} now resolves to {}; was {}",
                        show(&addrs),
                        show(&last_good)
                    );
                }
                apply(&env, &[(entry, addrs.clone())]);
                last_good = addrs;
                let ttl = found.valid_until.saturating_duration_since(Instant::now());
                clamp_ttl(ttl, floor, ceiling) + SLACK
            }
            Err(e) => {
                if !failing {
                    if last_good.is_empty() {
                        tracing::warn!(name = %name, error = %e, "replica {name} does not resolve; connecting by name until it does");
                    } else {
                        tracing::warn!(
                            name = %name,
                            error = %e,
                            "replica {name} does not resolve; keeping {}",
                            show(&last_good)
                        );
                    }
                    failing = true;
                }
                floor
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Makes the topology's replicas of the resolved entries match the answers:
/// publishes the new topology, starts a prober per new upstream and retires
/// the ones that went.
fn apply(env: &ControlEnv, resolved: &[(usize, Vec<SocketAddr>)]) {
    let config = env.config();
    let change = env.topology.update(|topo| {
        let current: Vec<(usize, Option<SocketAddr>)> =
            topo.replicas.iter().map(|u| (u.entry(), u.addr)).collect();
        let diff = plan(&current, resolved);
        if diff.is_empty() {
            return None;
        }
        let mut replicas: Vec<Arc<Upstream>> = topo
            .replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| !diff.remove.contains(i))
            .map(|(_, u)| u.clone())
            .collect();
        for (entry, addr) in &diff.add {
            let Some(cfg) = entry.checked_sub(1).and_then(|i| config.replicas.get(i)) else {
                continue;
            };
            replicas.push(env.topology.new_upstream(
                *entry,
                Role::Replica,
                &cfg.region,
                &cfg.url,
                Some(*addr),
            ));
        }
        // Config order, then address order within an entry.
        replicas.sort_by_key(|u| (u.entry(), u.addr));
        Some(Topology {
            primary: topo.primary.clone(),
            replicas,
            writes: topo.writes.clone(),
        })
    });
    if let Some(change) = change {
        env.apply(&change, "discovery");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn clamp_ttl_applies_floor_and_ceiling() {
        let s = Duration::from_secs;
        assert_eq!(clamp_ttl(s(1), s(5), s(300)), s(5));
        assert_eq!(clamp_ttl(s(0), s(5), s(300)), s(5));
        assert_eq!(clamp_ttl(s(60), s(5), s(300)), s(60));
        assert_eq!(clamp_ttl(s(86_400), s(5), s(300)), s(300));
        assert_eq!(clamp_ttl(s(5), s(5), s(5)), s(5));
        // Crossed bounds: the floor wins, so nothing spins.
        assert_eq!(clamp_ttl(s(1), s(10), s(3)), s(10));
    }

    #[test]
    fn first_answer_replaces_the_unresolved_upstream() {
        let current = [(0, Some(a("10.0.0.9:6379"))), (1, None), (2, None)];
        let d = plan(
            &current,
            &[(1, vec![a("10.0.0.1:6379"), a("10.0.0.2:6379")])],
        );
        assert_eq!(d.remove, vec![1]);
        assert_eq!(
            d.add,
            vec![(1, a("10.0.0.1:6379")), (1, a("10.0.0.2:6379"))]
        );
    }

    #[test]
    fn unchanged_addresses_stay() {
        let current = [
            (1, Some(a("10.0.0.1:6379"))),
            (1, Some(a("10.0.0.2:6379"))),
            (2, Some(a("10.0.0.1:6379"))),
        ];
        let same = plan(
            &current,
            &[(1, vec![a("10.0.0.2:6379"), a("10.0.0.1:6379")])],
        );
        assert!(same.is_empty(), "{same:?}");
        // One address goes, one comes; the other entry with the same
        // address is not touched.
        let d = plan(
            &current,
            &[(1, vec![a("10.0.0.2:6379"), a("10.0.0.3:6379")])],
        );
        assert_eq!(d.remove, vec![0]);
        assert_eq!(d.add, vec![(1, a("10.0.0.3:6379"))]);
    }

    #[test]
    fn empty_answer_keeps_the_last_good_addresses() {
        let current = [(1, Some(a("10.0.0.1:6379"))), (2, None)];
        assert!(plan(&current, &[(1, vec![]), (2, vec![])]).is_empty());
        assert!(plan(&current, &[]).is_empty());
    }

    #[test]
    fn duplicates_collapse() {
        let current = [(1, Some(a("10.0.0.1:6379"))), (1, Some(a("10.0.0.1:6379")))];
        let d = plan(
            &current,
            &[(
                1,
                vec![a("10.0.0.1:6379"), a("[::1]:6379"), a("[::1]:6379")],
            )],
        );
        assert_eq!(d.remove, vec![1]);
        assert_eq!(d.add, vec![(1, a("[::1]:6379"))]);
    }

    #[test]
    fn several_entries_at_once() {
        let current = [(1, None), (2, Some(a("10.0.1.1:6379")))];
        let d = plan(
            &current,
            &[(1, vec![a("10.0.0.1:6379")]), (2, vec![a("10.0.1.2:6379")])],
        );
        assert_eq!(d.remove, vec![0, 1]);
        assert_eq!(
            d.add,
            vec![(1, a("10.0.0.1:6379")), (2, a("10.0.1.2:6379"))]
        );
    }
}
