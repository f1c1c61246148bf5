//! Hot reload (SIGHUP): a new config replaces the running one without
//! dropping client connections. Upstreams that are still configured keep
//! their state (health, latency, pipes); new ones are added and probed;
//! removed ones are retired.

use std::sync::Arc;

use crate::app::Shared;
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

/// Applies `new` to the running sidecar. Addresses that need a restart
/// (listen, admin, DNS server) keep their running values, with a warning.
pub fn apply(shared: &Arc<Shared>, mut new: Config) -> Summary {
    let old = shared.config();
    if new.listen != old.listen || new.admin != old.admin {
        tracing::warn!(
            listen = %new.listen,
            admin = %new.admin,
            "listen and admin addresses change only on restart; keeping the running ones"
        );
        new.listen = old.listen;
        new.admin = old.admin;
    }
    let topo = shared.topology.load_full();
    let mut summary = Summary::default();

    let primary =
        if topo.primary.url == new.primary.url && topo.primary.region == new.primary.region {
            topo.primary.clone()
        } else {
            summary.primary_changed = true;
            shared.make_upstream(0, Role::Primary, &new.primary.region, &new.primary.url)
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
    let mut fresh: Vec<Arc<Upstream>> = Vec::new();
    for entry in &plan.create {
        let r = &new.replicas[entry - 1];
        let up = shared.make_upstream(*entry, Role::Replica, &r.region, &r.url);
        fresh.push(up.clone());
        replicas.push((*entry, up));
    }
    replicas.sort_by_key(|(e, u)| (*e, u.addr));
    summary.added = plan.create.len();
    summary.removed = plan.remove.len();

    shared.store_config(new);
    shared.topology.store(Arc::new(Topology {
        primary: primary.clone(),
        replicas: replicas.into_iter().map(|(_, u)| u).collect(),
    }));
    if summary.primary_changed {
        topo.primary.retire();
        fresh.push(primary);
    }
    for i in &plan.remove {
        topo.replicas[*i].retire();
    }
    for up in &fresh {
        crate::control::prober::spawn_watchers(shared, up);
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
