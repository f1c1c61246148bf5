//! The routing log: one line whenever the default read target changes, with
//! why. It asks the same question sessions ask (`Topology::read_target`).

use std::sync::Arc;
use std::time::Duration;

use crate::model::SharedConfig;
use crate::model::topology::{TopologyCell, Upstream};
use crate::route::select::{Fallback, Unusable};

/// Logs one line whenever the default read target changes, with why.
pub async fn watch_routing(config: SharedConfig, topology: Arc<TopologyCell>) {
    let mut was: Option<Arc<Upstream>> = None;
    loop {
        let (interval, window, read_from) = {
            let c = config.load();
            (
                Duration::from_millis(c.health.probe_interval_ms.clamp(100, 1000)),
                Duration::from_millis(c.routing.latency_window_ms),
                c.routing.read_from,
            )
        };
        tokio::time::sleep(interval).await;
        let topo = topology.load();
        let (now, fallback) = topo.read_target(read_from, window, 0, |_| false);
        let now = now.clone();
        if let Some(prev) = &was
            && !Arc::ptr_eq(prev, &now)
        {
            tracing::info!("{}", describe_change(&now, fallback, prev));
        }
        was = Some(now);
    }
}

pub fn describe_change(now: &Upstream, fallback: Option<Fallback>, prev: &Upstream) -> String {
    let ms = |u: &Upstream| {
        u.cost()
            .map(|c| format!("{:.1} ms", c * 1000.0))
            .unwrap_or_else(|| "unmeasured".into())
    };
    let why = match prev.unusable() {
        Some(Unusable::Down) => format!("{} is down", prev.region),
        Some(Unusable::NotAReplica) => {
            format!("{} says it is not a replica", prev.region)
        }
        Some(Unusable::Stale) => format!(
            "{} lag {:.1} s > {:.1} s",
            prev.region,
            prev.lag().unwrap_or_default().as_secs_f64(),
            prev.staleness_bound().as_secs_f64()
        ),
        None if prev.is_retired() => format!("{} was removed", prev.region),
        None => format!("{} is nearer", now.region),
    };
    let via = fallback.map(|f| format!(" [{f}]")).unwrap_or_default();
    format!(
        "reads now go to {} {} ({}){via}; was {} ({}): {why}",
        now.region,
        now.role.as_str(),
        ms(now),
        prev.region,
        ms(prev)
    )
}
