//! One upstream and what is known about it: identity (role, region, URL,
//! address) and state (health, role check, lag, offsets, latency, load).
//! Sessions read it without locking; probers and pipes update it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::UpstreamMetrics;
use crate::route::failover::Claim;
use crate::route::latency::Latency;
use crate::route::select::{Candidate, Unusable};

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
    /// an entry. A reload may renumber entries.
    entry: AtomicUsize,
    healthy: AtomicBool,
    /// Set by the first successful probe: readiness needs a real answer.
    ever_up: AtomicBool,
    /// Set when discovery removed this upstream from the topology.
    retired: AtomicBool,
    /// Wakes the dedicated connections to this upstream when it is retired
    /// (a failover changed its role): they close, as Redis closes them.
    retired_wake: tokio::sync::Notify,
    /// What its last `INFO replication` said it is (`Claim` as u8).
    claim: AtomicU8,
    /// A Redis Cluster node: a replica's connections send `READONLY` so
    /// that it serves reads of its shard's slots.
    cluster: AtomicBool,
    /// Requests sent and not yet answered, for least-outstanding selection.
    outstanding: AtomicUsize,
    /// Commands Redis may hold for long (scripts, DEBUG, KEYS ...) sent and
    /// not yet answered: while any is, silence is not a sign of death.
    slow_in_flight: AtomicUsize,
    /// When anything last came back from this upstream, on any connection
    /// (µs since `born`; 0: never): liveness for the request timeout.
    heard_us: AtomicU64,
    /// Until when a CLIENT PAUSE WRITE sent through this sidecar holds
    /// writes (µs since `born`; 0: none known).
    writes_paused_us: AtomicU64,
    born: Instant,
    /// Configured as a replica and says `role:slave` (always true for the
    /// primary).
    role_ok: AtomicBool,
    /// The primary's last `INFO` said `role:master` (starts true): only to
    /// log a change once.
    claims_master: AtomicBool,
    /// Lag beyond `max_staleness`.
    stale: AtomicBool,
    /// The bound last applied, in ms (for logs).
    staleness_bound_ms: AtomicU64,
    /// Estimated replication lag in ms (`u64::MAX`: unknown).
    lag_ms: AtomicU64,
    /// The replica's own `slave_repl_offset` (the primary's
    /// `master_repl_offset`), as last probed.
    repl_offset: AtomicU64,
    /// A hash of the server's `master_replid`, as last probed (0: not yet):
    /// the near-cache serves an entry only while its replication history
    /// is the one it was filled from.
    replid: AtomicU64,
    latency: Mutex<Latency>,
    pub metrics: UpstreamMetrics,
    /// `Latency::cost` as f64 bits, NaN when unmeasured: read on every
    /// selection without locking.
    cost_bits: AtomicU64,
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
        let metrics = UpstreamMetrics::new(&label, &region, role.as_str());
        Upstream {
            metrics,
            id,
            entry: AtomicUsize::new(entry),
            role,
            region,
            label,
            addr,
            url,
            // Optimistic until the first probe or connection says otherwise.
            healthy: AtomicBool::new(true),
            retired: AtomicBool::new(false),
            retired_wake: tokio::sync::Notify::new(),
            claim: AtomicU8::new(Claim::Unknown.as_u8()),
            cluster: AtomicBool::new(false),
            ever_up: AtomicBool::new(false),
            role_ok: AtomicBool::new(true),
            claims_master: AtomicBool::new(true),
            stale: AtomicBool::new(false),
            staleness_bound_ms: AtomicU64::new(0),
            lag_ms: AtomicU64::new(u64::MAX),
            repl_offset: AtomicU64::new(0),
            replid: AtomicU64::new(0),
            latency: Mutex::new(Latency::new()),
            cost_bits: AtomicU64::new(f64::NAN.to_bits()),
            outstanding: AtomicUsize::new(0),
            slow_in_flight: AtomicUsize::new(0),
            heard_us: AtomicU64::new(0),
            writes_paused_us: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    pub fn entry(&self) -> usize {
        self.entry.load(Ordering::Relaxed)
    }

    pub fn set_entry(&self, entry: usize) {
        self.entry.store(entry, Ordering::Relaxed);
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Returns the previous value, so callers can log changes once.
    pub fn set_healthy(&self, up: bool) -> bool {
        self.healthy.swap(up, Ordering::Relaxed)
    }

    /// Takes this upstream out of service: its prober stops (the pipe pool
    /// lets go of its pipes separately).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.retired_wake.notify_waiters();
    }

    /// Completes once this upstream is retired.
    pub async fn retired(&self) {
        let wake = self.retired_wake.notified();
        tokio::pin!(wake);
        // Registered before the flag is read: a retire in between wakes it.
        wake.as_mut().enable();
        if self.is_retired() {
            return;
        }
        wake.await;
    }

    pub fn set_cluster_node(&self) {
        self.cluster.store(true, Ordering::Relaxed);
    }

    pub fn is_cluster_node(&self) -> bool {
        self.cluster.load(Ordering::Relaxed)
    }

    /// A cluster replica: connections to it must send `READONLY`.
    pub fn needs_readonly(&self) -> bool {
        self.role == Role::Replica && self.cluster.load(Ordering::Relaxed)
    }

    /// Records what the upstream said it is; returns what it said before.
    pub fn set_claim(&self, claim: Claim) -> Claim {
        Claim::from_u8(self.claim.swap(claim.as_u8(), Ordering::Relaxed))
    }

    pub fn claim(&self) -> Claim {
        Claim::from_u8(self.claim.load(Ordering::Relaxed))
    }

    /// Takes over what was measured of the same server under its old role
    /// (after a failover): latency, health, claim; so routing does not
    /// start from nothing.
    pub fn inherit(&self, from: &Upstream) {
        let l = from
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        *self.latency.lock().unwrap_or_else(|p| p.into_inner()) = l;
        self.cost_bits
            .store(from.cost_bits.load(Ordering::Relaxed), Ordering::Relaxed);
        self.healthy.store(from.is_healthy(), Ordering::Relaxed);
        self.ever_up
            .store(from.ever_up.load(Ordering::Relaxed), Ordering::Relaxed);
        self.claim.store(from.claim().as_u8(), Ordering::Relaxed);
        // A replica that still says master serves no reads until it steps
        // down (its prober keeps this current from then on).
        self.role_ok.store(
            self.role == Role::Primary || from.claim() != Claim::Master,
            Ordering::Relaxed,
        );
        self.heard_us.store(0, Ordering::Relaxed);
        self.set_repl_offset(from.repl_offset());
    }

    pub fn mark_probed_ok(&self) {
        self.ever_up.store(true, Ordering::Relaxed);
    }

    /// Up, and confirmed so by at least one probe.
    pub fn is_confirmed_up(&self) -> bool {
        self.ever_up.load(Ordering::Relaxed) && self.is_healthy()
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

    pub fn add_slow(&self, n: usize) {
        if n > 0 {
            self.slow_in_flight.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn sub_slow(&self, n: usize) {
        if n > 0 {
            self.slow_in_flight.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// CLIENT PAUSE ... WRITE until `until`; `None`: CLIENT UNPAUSE.
    pub fn pause_writes(&self, until: Option<Instant>) {
        let us = until.map_or(0, |t| super::stamp(self.born, t));
        self.writes_paused_us.store(us, Ordering::Relaxed);
    }

    /// Whether Redis holds writes now, as far as this sidecar knows. The
    /// clock is read only when a pause was seen at all: this is asked for
    /// every write.
    pub fn writes_paused(&self) -> bool {
        let until = self.writes_paused_us.load(Ordering::Relaxed);
        until != 0 && super::stamp(self.born, Instant::now()) < until
    }

    /// Something (a reply, even an error) came back at `now`.
    pub fn heard(&self, now: Instant) {
        let us = super::stamp(self.born, now);
        self.heard_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Whether a request that has waited `waited` at `now` should fail: the
    /// upstream has said nothing on any connection for that long and runs
    /// nothing that may legitimately hold it (a frozen or unreachable
    /// server). A busy one that still answers its prober, or runs a long
    /// script or DEBUG SLEEP, is waited for, as a direct client would.
    pub fn silent_for(&self, waited: Duration, now: Instant) -> bool {
        if self.slow_in_flight.load(Ordering::Relaxed) > 0 {
            return false;
        }
        let heard = self.heard_us.load(Ordering::Relaxed);
        let now_us = super::stamp(self.born, now);
        heard == 0 || now_us.saturating_sub(heard) >= waited.as_micros() as u64
    }

    fn with_latency(&self, now: Instant, f: impl FnOnce(&mut Latency)) {
        let mut l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut l);
        let cost = l.cost(now).unwrap_or(f64::NAN);
        self.cost_bits.store(cost.to_bits(), Ordering::Relaxed);
    }

    /// A probe round trip.
    pub fn observe_probe(&self, rtt: Duration, now: Instant) {
        self.with_latency(now, |l| l.probe_sample(rtt.as_secs_f64()));
    }

    /// A request's latency from real traffic; failures pass a large value.
    pub fn observe_passive(&self, latency: Duration, now: Instant) {
        self.with_latency(now, |l| l.passive_sample(latency.as_secs_f64(), now));
    }

    /// A request or probe failed after waiting up to `timeout`: the cost
    /// jumps at once (see `Latency::failure`).
    pub fn observe_failure(&self, timeout: Duration, now: Instant) {
        self.with_latency(now, |l| l.failure(timeout.as_secs_f64(), now));
    }

    /// Lets the passive estimate decay while no traffic comes.
    pub fn refresh_cost(&self, now: Instant) {
        self.with_latency(now, |_| {});
    }

    pub fn cost(&self) -> Option<f64> {
        let c = f64::from_bits(self.cost_bits.load(Ordering::Relaxed));
        (!c.is_nan()).then_some(c)
    }

    pub fn smoothed_rtt(&self) -> Option<f64> {
        self.latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .smoothed_rtt()
    }

    pub fn set_role_ok(&self, ok: bool) -> bool {
        self.role_ok.swap(ok, Ordering::Relaxed)
    }

    /// Records what the upstream says it is; returns what it said before.
    pub fn set_claims_master(&self, master: bool) -> bool {
        self.claims_master.swap(master, Ordering::Relaxed)
    }

    pub fn role_ok(&self) -> bool {
        self.role_ok.load(Ordering::Relaxed)
    }

    /// Records the lag estimate; returns whether the replica was stale before.
    pub fn set_lag(&self, lag: Option<Duration>, max_staleness: Duration) -> bool {
        let ms = lag.map_or(u64::MAX, |l| l.as_millis().min(u64::MAX as u128 - 1) as u64);
        self.lag_ms.store(ms, Ordering::Relaxed);
        let stale = lag.is_some_and(|l| l > max_staleness);
        self.staleness_bound_ms
            .store(max_staleness.as_millis() as u64, Ordering::Relaxed);
        self.stale.swap(stale, Ordering::Relaxed)
    }

    pub fn lag(&self) -> Option<Duration> {
        match self.lag_ms.load(Ordering::Relaxed) {
            u64::MAX => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    pub fn staleness_bound(&self) -> Duration {
        Duration::from_millis(self.staleness_bound_ms.load(Ordering::Relaxed))
    }

    pub fn is_stale(&self) -> bool {
        self.stale.load(Ordering::Relaxed)
    }

    pub fn set_repl_offset(&self, offset: u64) {
        self.repl_offset.store(offset, Ordering::Relaxed);
    }

    pub fn set_replid(&self, replid: &str) {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        replid.hash(&mut h);
        self.replid.store(h.finish().max(1), Ordering::Relaxed);
    }

    pub fn replid(&self) -> u64 {
        self.replid.load(Ordering::Relaxed)
    }

    pub fn repl_offset(&self) -> u64 {
        self.repl_offset.load(Ordering::Relaxed)
    }

    /// Why this upstream cannot take reads now, if it cannot.
    pub fn unusable(&self) -> Option<Unusable> {
        if !self.is_healthy() {
            Some(Unusable::Down)
        } else if !self.role_ok() {
            Some(Unusable::NotAReplica)
        } else if self.is_stale() {
            Some(Unusable::Stale)
        } else {
            None
        }
    }

    pub(crate) fn candidate(&self) -> Candidate {
        Candidate {
            unusable: self.unusable(),
            cost: self.cost(),
            outstanding: self.outstanding(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary() -> Upstream {
        let url: crate::url::RedisUrl = "redis://127.0.0.1:6379".parse().unwrap();
        Upstream::new(0, 0, Role::Primary, "r".into(), url, None)
    }

    #[test]
    fn a_primary_saying_replica_is_reported_once_per_change() {
        let up = primary();
        // Each probe: what it said before decides whether to log.
        let changes: Vec<bool> = [false, false, false, true, true, false]
            .iter()
            .map(|&master| up.set_claims_master(master) != master)
            .collect();
        assert_eq!(changes, [true, false, false, true, false, true]);
        // Reads on the primary never depend on it.
        assert!(up.role_ok());
    }
}
