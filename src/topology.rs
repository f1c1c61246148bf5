//! The upstreams and what is known about them: role, region, health and
//! load. Sessions read it without locking; health is updated by probers and
//! by the pipes when connections fail.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::pipe::PipeHandle;
use crate::resp::Proto;
use crate::url::RedisUrl;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

pub struct Upstream {
    pub id: usize,
    pub role: Role,
    pub region: String,
    pub url: RedisUrl,
    /// The address discovery resolved this upstream to; `None` connects to
    /// the URL's host (resolving it, trying every address).
    pub addr: Option<SocketAddr>,
    /// `host:port` (the resolved address when there is one), the `upstream`
    /// label in metrics and errors.
    pub label: String,
    /// Index of the config entry this upstream comes from (0 = primary,
    /// 1.. = replicas in order): discovery keeps one upstream per address of
    /// an entry.
    pub entry: usize,
    healthy: AtomicBool,
    /// Set when discovery removed this upstream from the topology.
    retired: AtomicBool,
    /// Requests sent and not yet answered, for least-outstanding selection.
    outstanding: AtomicUsize,
    /// Shared pipes by (db, protocol), opened on first use.
    pipes: Mutex<HashMap<(u32, Proto), PipeHandle>>,
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in {} ({})",
            self.role.as_str(),
            self.region,
            self.label
        )
    }
}

impl Upstream {
    pub fn new(
        id: usize,
        entry: usize,
        role: Role,
        region: String,
        url: RedisUrl,
        addr: Option<SocketAddr>,
    ) -> Upstream {
        let label = match (addr, &url.host) {
            (Some(a), _) => a.to_string(),
            (None, _) => url.host_port(),
        };
        Upstream {
            id,
            entry,
            role,
            region,
            label,
            addr,
            url,
            // Optimistic until the first probe or connection says otherwise.
            healthy: AtomicBool::new(true),
            retired: AtomicBool::new(false),
            outstanding: AtomicUsize::new(0),
            pipes: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Returns the previous value, so callers can log changes once.
    pub fn set_healthy(&self, up: bool) -> bool {
        self.healthy.swap(up, Ordering::Relaxed)
    }

    /// Takes this upstream out of service: its prober stops and its pipes
    /// close once the sessions holding them let go.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.pipes.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub fn add_outstanding(&self, n: usize) {
        self.outstanding.fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub_outstanding(&self, n: usize) {
        self.outstanding.fetch_sub(n, Ordering::Relaxed);
    }

    /// The shared pipe for (db, proto), created by `make` on first use.
    /// Sessions cache the handle, so the lock is taken once per session.
    pub fn pipe(&self, db: u32, proto: Proto, make: impl FnOnce() -> PipeHandle) -> PipeHandle {
        let mut pipes = self.pipes.lock().unwrap_or_else(|p| p.into_inner());
        pipes.entry((db, proto)).or_insert_with(make).clone()
    }
}

pub struct Topology {
    pub primary: Arc<Upstream>,
    pub replicas: Vec<Arc<Upstream>>,
}

impl Topology {
    pub fn all(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        std::iter::once(&self.primary).chain(self.replicas.iter())
    }

    /// Where a read goes: the healthy replica with the fewest outstanding
    /// requests, else the primary. `exclude` lists upstreams that already
    /// failed this request.
    pub fn pick_read(&self, exclude: &[usize]) -> &Arc<Upstream> {
        self.replicas
            .iter()
            .filter(|u| u.is_healthy() && !exclude.contains(&u.id))
            .min_by_key(|u| u.outstanding())
            .unwrap_or(&self.primary)
    }
}
