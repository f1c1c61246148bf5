//! Hot reload (SIGHUP): a new config replaces the running one without
//! dropping client connections. Upstreams that are still configured keep
//! their state (health, latency, pipes); new ones are added and probed;
//! removed ones are retired.

use std::sync::Arc;

use super::ControlEnv;
use crate::config::Config;
use crate::model::topology::{Role, Topology, Upstream};
use crate::url::RedisUrl;

/// What happens to the replicas: pure, so it is tested with exact indices.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReplicaPlan {
    /// (index in the running topology, entry number in the new config)
    pub keep: Vec<(usize, usize)>,
    /// entry numbers (1-based) that need a new upstream
    pub create: Vec<usize>,
    /// indices in the running topology to retire
    pub remove: Vec<usize>,
}

/// Matches running replicas to the new config's entries by (region, url):
/// an entry resolved by DNS into several upstreams keeps all of them.
pub fn plan_replicas(running: &[(&str, &RedisUrl)], wanted: &[(&str, &RedisUrl)]) -> ReplicaPlan {
    let mut plan = ReplicaPlan::default();
    let mut used = vec![false; running.len()];
    for (e, (region, url)) in wanted.iter().enumerate() {
        let entry = e + 1;
        let mut found = false;
        for (i, (r, u)) in running.iter().enumerate() {
            if !used[i] && r == region && *u == *url {
                used[i] = true;
                found = true;
                plan.keep.push((i, entry));
            }
        }
        if !found {
            plan.create.push(entry);
        }
    }
    plan.remove = (0..running.len()).filter(|i| !used[*i]).collect();
    plan
}

/// A one-line summary of what a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub added: usize,
    pub removed: usize,
    pub primary_changed: bool,
}

/// Applies `new` to the running sidecar. What needs a restart (the listen
/// and admin addresses, the DNS resolver) keeps its running value, with a
/// warning.
pub fn apply(env: &ControlEnv, mut new: Config) -> Summary {
    let old = env.config();
    if new.listen != old.listen || new.admin != old.admin {
        tracing::warn!(
            listen = %new.listen,
            admin = %new.admin,
            "listen and admin addresses change only on restart; keeping the running ones"
        );
        new.listen = old.listen;
        new.admin = old.admin;
    }
    // The resolver is built once (its TTL bounds do follow a reload).
    if new.dns.server != old.dns.server || new.dns.timeout_ms != old.dns.timeout_ms {
        tracing::warn!(
            "the DNS server and lookup timeout change only on restart; keeping the running ones"
        );
        new.dns.server = old.dns.server;
        new.dns.timeout_ms = old.dns.timeout_ms;
    }
    // Upstreams as configured: a failover may have moved the primary since,
    // and the same entries again must not move it back.
    let same_upstreams = new.primary == old.primary && new.replicas == old.replicas;
    drop(old);
    let mut summary = Summary::default();
    let new = Arc::new(new);
    if same_upstreams {
        env.config.store(new);
        return summary;
    }
    let change = env.topology.update(|topo| {
        let primary =
            if topo.primary.url == new.primary.url && topo.primary.region == new.primary.region {
                topo.primary.clone()
            } else {
                summary.primary_changed = true;
                env.topology.new_upstream(
                    0,
                    Role::Primary,
                    &new.primary.region,
                    &new.primary.url,
                    None,
                )
            };
        let running: Vec<(&str, &RedisUrl)> = topo
            .replicas
            .iter()
            .map(|u| (u.region.as_str(), &u.url))
            .collect();
        let wanted: Vec<(&str, &RedisUrl)> = new
            .replicas
            .iter()
            .map(|r| (r.region.as_str(), &r.url))
            .collect();
        let plan = plan_replicas(&running, &wanted);
        let mut replicas: Vec<(usize, Arc<Upstream>)> = Vec::new();
        for (i, entry) in &plan.keep {
            let up = topo.replicas[*i].clone();
            up.set_entry(*entry);
            replicas.push((*entry, up));
        }
        for entry in &plan.create {
            let r = &new.replicas[entry - 1];
            let up = env
                .topology
                .new_upstream(*entry, Role::Replica, &r.region, &r.url, None);
            replicas.push((*entry, up));
        }
        replicas.sort_by_key(|(e, u)| (*e, u.addr));
        summary.added = plan.create.len();
        summary.removed = plan.remove.len();
        // The config first: probers of new upstreams read it.
        env.config.store(new.clone());
        Some(Topology {
            writes: if summary.primary_changed {
                crate::model::topology::Writes::Open
            } else {
                topo.writes.clone()
            },
            primary,
            replicas: replicas.into_iter().map(|(_, u)| u).collect(),
        })
    });
    if let Some(change) = change {
        env.apply(&change, "reload");
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> RedisUrl {
        s.parse().unwrap()
    }

    #[test]
    fn keeps_matching_replicas_adds_new_ones_and_removes_the_rest() {
        let a = url("redis://10.0.0.1:6379");
        let b = url("redis://10.0.0.2:6379");
        let c = url("redis://10.0.0.3:6379");
        let named = url("redis://ams.internal:6379");
        // Running: a (ams), named resolved to two upstreams (ams), b (sjc).
        let running = [("ams", &a), ("ams", &named), ("ams", &named), ("sjc", &b)];
        // Wanted: named first, then c (syd); a and b go.
        let wanted = [("ams", &named), ("syd", &c)];
        assert_eq!(
            plan_replicas(&running, &wanted),
            ReplicaPlan {
                keep: vec![(1, 1), (2, 1)],
                create: vec![2],
                remove: vec![0, 3],
            }
        );
        // Same URL in another region is another replica.
        let running = [("ams", &a)];
        let wanted = [("fra", &a)];
        let p = plan_replicas(&running, &wanted);
        assert_eq!((p.keep.len(), p.create, p.remove), (0, vec![1], vec![0]));
        // Nothing changes.
        let running = [("ams", &a), ("sjc", &b)];
        let p = plan_replicas(&running, &[("ams", &a), ("sjc", &b)]);
        assert_eq!(p.keep, vec![(0, 1), (1, 2)]);
        assert!(p.create.is_empty() && p.remove.is_empty());
    }
}
