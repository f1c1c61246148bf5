//! Metric names and handles, built once: sessions and pipes only touch
//! pre-registered handles on the request path, never look names up.
//!
//! Names follow `../shared/DESIGN.md` ("Interface contract").

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{Counter, Gauge, Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::route::command::Kind;
use crate::route::select::Fallback;

pub const REQUESTS: &str = "nearby_requests_total";
pub const DURATION: &str = "nearby_request_duration_seconds";
pub const RTT: &str = "nearby_upstream_rtt_seconds";
pub const HEALTHY: &str = "nearby_upstream_healthy";
pub const LAG: &str = "nearby_upstream_replication_lag_seconds";
pub const FALLBACKS: &str = "nearby_read_fallbacks_total";
pub const ERRORS: &str = "nearby_errors_total";
pub const CLIENTS: &str = "nearby_client_connections";
pub const COMMANDS: &str = "nearby_commands_total";
pub const USAGE_TODAY: &str = "nearby_usage_commands_today";
pub const USAGE_ALLOWANCE: &str = "nearby_usage_free_commands_per_day";
pub const PROBES: &str = "nearby_probes_total";
pub const PRIMARY_CHANGES: &str = "nearby_primary_changes_total";
pub const WRITES_AT_RISK: &str = "nearby_failover_writes_at_risk_total";
pub const CLUSTER_NODE: &str = "nearby_cluster_node_info";
pub const NEAR_CACHE_HITS: &str = "nearby_near_cache_hits_total";
pub const NEAR_CACHE_MISSES: &str = "nearby_near_cache_misses_total";
pub const NEAR_CACHE_INVALIDATIONS: &str = "nearby_near_cache_invalidations_total";
pub const NEAR_CACHE_BYTES: &str = "nearby_near_cache_bytes";
pub const NEAR_CACHE_ENTRIES: &str = "nearby_near_cache_entries";

/// Explicit buckets from 50 µs to 10 s: Prometheus histograms, not
/// summaries, so they aggregate across sidecars.
pub const BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder (once per process). With `enabled`
/// false no recorder is installed and every handle is a no-op: the switch
/// for measuring what metrics cost.
pub fn install(enabled: bool) {
    HANDLE.get_or_init(|| {
        if !enabled {
            return None;
        }
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::set_global_recorder(recorder).ok()?;
        describe();
        Some(handle)
    });
}

/// Histogram samples collect in lock-free buckets until upkeep folds them
/// into their bucket counts: without it, memory grows with every request
/// between scrapes. Runs every few seconds while metrics are on.
pub fn spawn_upkeep() {
    if let Some(Some(h)) = HANDLE.get() {
        let h = h.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
            loop {
                tick.tick().await;
                h.run_upkeep();
            }
        });
    }
}

/// The Prometheus text, or `None` when metrics are off.
pub fn render() -> Option<String> {
    let h = HANDLE.get()?.as_ref()?;
    h.run_upkeep();
    let mut text = h.render();
    render_durations(&mut text);
    Some(text)
}

/// The request-duration histograms, kept here rather than in the
/// exporter: a sample is a bucket search and three relaxed adds (the
/// exporter's histogram takes an epoch guard and a slot per sample, a few
/// hundred nanoseconds per request at pipelined rates), and a pipe adds a
/// whole read's worth of samples at once (`Tally`).
pub struct DurationHistogram {
    /// Per bucket of `BUCKETS`, plus one past the last (+Inf only).
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

impl DurationHistogram {
    /// One sample of `ns` nanoseconds.
    fn record(&self, ns: u64) {
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn new() -> DurationHistogram {
        DurationHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// The counts per bucket (not cumulative) and the sum in seconds.
    pub fn snapshot(&self) -> ([u64; BUCKETS.len() + 1], f64) {
        let counts = std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        (counts, self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9)
    }
}

/// `BUCKETS` in nanoseconds (rounded: 0.00005 s is not exact in binary).
const BUCKETS_NS: [u64; BUCKETS.len()] = {
    let mut ns = [0; BUCKETS.len()];
    let mut i = 0;
    while i < ns.len() {
        ns[i] = (BUCKETS[i] * 1e9 + 0.5) as u64;
        i += 1;
    }
    ns
};

/// The bucket a sample of `ns` falls in (Prometheus buckets are `le`).
fn bucket_of(ns: u64) -> usize {
    BUCKETS_NS
        .iter()
        .position(|&b| ns <= b)
        .unwrap_or(BUCKETS_NS.len())
}

/// Every histogram series, by its label text (`upstream="..",...`): an
/// upstream made again with the same labels shares its series.
static DURATIONS: Mutex<Vec<(String, Arc<DurationHistogram>)>> = Mutex::new(Vec::new());

fn duration_series(labels: String) -> Arc<DurationHistogram> {
    let mut all = DURATIONS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, h)) = all.iter().find(|(l, _)| *l == labels) {
        return h.clone();
    }
    let h = Arc::new(DurationHistogram::new());
    all.push((labels, h.clone()));
    h
}

/// A label value as the Prometheus text format quotes it.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_durations(out: &mut String) {
    use std::fmt::Write;
    let all = DURATIONS.lock().unwrap_or_else(|e| e.into_inner());
    if all.is_empty() {
        return;
    }
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "# HELP {DURATION} Time from sending a request upstream to its reply"
    );
    let _ = writeln!(out, "# TYPE {DURATION} histogram");
    for (labels, h) in all.iter() {
        let (counts, sum) = h.snapshot();
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += counts[i];
            let _ = writeln!(
                out,
                "{DURATION}_bucket{{{labels},le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += counts[BUCKETS.len()];
        let _ = writeln!(
            out,
            "{DURATION}_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(out, "{DURATION}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{DURATION}_count{{{labels}}} {cumulative}");
    }
}

/// Samples of one upstream's replies gathered over a batch (one read of a
/// pipe) and added to its counters and histograms at once.
#[derive(Default)]
pub struct Tally {
    n: [u64; 3],
    buckets: [[u32; BUCKETS.len() + 1]; 3],
    sum_ns: [u64; 3],
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Tally {
    pub fn add(&mut self, kind: Kind, took: Duration) {
        let i = kind_index(kind);
        let ns = nanos(took);
        self.n[i] += 1;
        self.buckets[i][bucket_of(ns)] += 1;
        self.sum_ns[i] = self.sum_ns[i].saturating_add(ns);
    }
}

fn describe() {
    describe_counter!(
        REQUESTS,
        "Client commands, by the upstream that served them and kind (read|write|other)"
    );
    describe_gauge!(
        RTT,
        Unit::Seconds,
        "Smoothed probe round trip (EWMA, alpha 0.2)"
    );
    describe_gauge!(HEALTHY, "1 when the upstream is up (rise/fall hysteresis)");
    describe_gauge!(LAG, Unit::Seconds, "Estimated replication lag");
    describe_counter!(FALLBACKS, "Reads sent to the primary, and why");
    describe_counter!(ERRORS, "Errors, by kind");
    describe_gauge!(CLIENTS, "Open client connections");
    describe_counter!(
        COMMANDS,
        "Client commands received (usage, as a managed service bills it)"
    );
    describe_gauge!(USAGE_TODAY, "Client commands received today (UTC)");
    describe_gauge!(
        USAGE_ALLOWANCE,
        "Free commands per day before usage is billed"
    );
    describe_counter!(
        PROBES,
        "Health probes sent by the sidecar (never in nearby_requests_total)"
    );
    describe_counter!(
        PRIMARY_CHANGES,
        "Times writes moved to another primary (failover), by what said so"
    );
    describe_counter!(
        WRITES_AT_RISK,
        "Writes acknowledged by an old primary that its successor may lack"
    );
    describe_gauge!(
        CLUSTER_NODE,
        "1 for each Redis Cluster node in the sidecar's map, with its shard's slots and role (0 once it left); join on `upstream` for per-shard views"
    );
    describe_counter!(NEAR_CACHE_HITS, "Reads answered from the near-cache");
    describe_counter!(
        NEAR_CACHE_MISSES,
        "Cacheable reads that went upstream (and filled the near-cache)"
    );
    describe_counter!(
        NEAR_CACHE_INVALIDATIONS,
        "Near-cache entries dropped, by reason"
    );
    describe_gauge!(NEAR_CACHE_BYTES, "Bytes held by the near-cache");
    describe_gauge!(NEAR_CACHE_ENTRIES, "Entries held by the near-cache");
}

/// Why near-cache entries were dropped (`reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// Redis said the key changed (a tracking push).
    Key,
    /// Redis said every key changed (FLUSHALL, a full resync).
    Flush,
    /// A write through this sidecar.
    Write,
    /// The fill connection was lost.
    Connection,
    /// The entry's upstream became unusable or changed history.
    Unusable,
    /// Pushed out by newer entries (the byte bound).
    Evicted,
}

impl Invalidation {
    pub const ALL: [Invalidation; 6] = [
        Invalidation::Key,
        Invalidation::Flush,
        Invalidation::Write,
        Invalidation::Connection,
        Invalidation::Unusable,
        Invalidation::Evicted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Invalidation::Key => "key",
            Invalidation::Flush => "flush",
            Invalidation::Write => "write",
            Invalidation::Connection => "connection",
            Invalidation::Unusable => "unusable",
            Invalidation::Evicted => "evicted",
        }
    }
}

/// The near-cache's counters and gauges, registered once.
pub struct NearCacheMetrics {
    pub hits: Counter,
    pub misses: Counter,
    invalidations: [Counter; 6],
    pub bytes: Gauge,
    pub entries: Gauge,
}

impl NearCacheMetrics {
    pub fn new() -> NearCacheMetrics {
        NearCacheMetrics {
            hits: counter!(NEAR_CACHE_HITS),
            misses: counter!(NEAR_CACHE_MISSES),
            invalidations: Invalidation::ALL
                .map(|r| counter!(NEAR_CACHE_INVALIDATIONS, "reason" => r.as_str())),
            bytes: gauge!(NEAR_CACHE_BYTES),
            entries: gauge!(NEAR_CACHE_ENTRIES),
        }
    }

    pub fn invalidated(&self, reason: Invalidation, n: usize) {
        if n > 0 {
            self.invalidations[reason as usize].increment(n as u64);
        }
    }
}

impl Default for NearCacheMetrics {
    fn default() -> Self {
        NearCacheMetrics::new()
    }
}

/// A cluster node's place in the map: `labels` = [shard, upstream, region,
/// role]; 1 while it holds, 0 once it does not.
pub fn cluster_node(labels: &[String; 4], on: bool) {
    gauge!(CLUSTER_NODE, "shard" => labels[0].clone(), "upstream" => labels[1].clone(), "region" => labels[2].clone(), "role" => labels[3].clone())
        .set(if on { 1.0 } else { 0.0 });
}

/// A primary change, counted by its source (config, role, sentinel).
pub fn primary_changed(source: &'static str) {
    counter!(PRIMARY_CHANGES, "source" => source).increment(1);
}

/// Acknowledged writes an unplanned failover may have lost.
pub fn writes_at_risk(n: u64) {
    counter!(WRITES_AT_RISK).increment(n);
}

/// Handles for one upstream.
pub struct UpstreamMetrics {
    requests: [Counter; 3],
    durations: [Arc<DurationHistogram>; 3],
    pub rtt: Gauge,
    pub healthy: Gauge,
    pub lag: Gauge,
    pub probes_ok: Counter,
    pub probes_failed: Counter,
    /// Reads and writes served, for `/status` (shares over the last minute)
    /// and the lab's table; kept whether or not metrics are exported.
    pub reads: AtomicU64,
    pub writes: AtomicU64,
}

fn kind_index(k: Kind) -> usize {
    match k {
        Kind::Read => 0,
        Kind::Write => 1,
        Kind::Other => 2,
    }
}

impl UpstreamMetrics {
    pub fn new(upstream: &str, region: &str, role: &'static str) -> UpstreamMetrics {
        let req = |kind: &'static str| counter!(REQUESTS, "upstream" => upstream.to_string(), "region" => region.to_string(), "role" => role, "kind" => kind);
        let dur = |kind: &'static str| {
            duration_series(format!(
                "upstream=\"{}\",region=\"{}\",role=\"{role}\",kind=\"{kind}\"",
                escape_label(upstream),
                escape_label(region)
            ))
        };
        UpstreamMetrics {
            requests: [req("read"), req("write"), req("other")],
            durations: [dur("read"), dur("write"), dur("other")],
            rtt: gauge!(RTT, "upstream" => upstream.to_string(), "region" => region.to_string(), "role" => role),
            healthy: gauge!(HEALTHY, "upstream" => upstream.to_string(), "region" => region.to_string(), "role" => role),
            lag: gauge!(LAG, "upstream" => upstream.to_string(), "region" => region.to_string()),
            probes_ok: counter!(PROBES, "upstream" => upstream.to_string(), "result" => "ok"),
            probes_failed: counter!(PROBES, "upstream" => upstream.to_string(), "result" => "failed"),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }
    }

    /// One client command answered by this upstream.
    pub fn served(&self, kind: Kind, took: Duration) {
        let i = kind_index(kind);
        self.count(i, 1);
        self.durations[i].record(nanos(took));
    }

    /// Adds what `t` gathered, and empties it.
    pub fn add(&self, t: &mut Tally) {
        for i in 0..t.n.len() {
            let n = std::mem::take(&mut t.n[i]);
            if n == 0 {
                continue;
            }
            self.count(i, n);
            let h = &self.durations[i];
            for (b, count) in t.buckets[i].iter_mut().enumerate() {
                if *count > 0 {
                    h.buckets[b].fetch_add(u64::from(std::mem::take(count)), Ordering::Relaxed);
                }
            }
            h.sum_ns
                .fetch_add(std::mem::take(&mut t.sum_ns[i]), Ordering::Relaxed);
        }
    }

    /// `n` commands of kind index `i` served.
    fn count(&self, i: usize, n: u64) {
        match i {
            0 => self.reads.fetch_add(n, Ordering::Relaxed),
            1 => self.writes.fetch_add(n, Ordering::Relaxed),
            _ => 0,
        };
        self.requests[i].increment(n);
    }
}

/// Why an error reached a client or a connection was refused.
#[derive(Clone, Copy, Debug)]
pub enum ErrorKind {
    /// A request got no reply from its upstream (down, timeout, lost).
    Upstream,
    /// A read retried on another upstream (the client saw no error).
    ReadRetried,
    /// Malformed client input.
    Protocol,
    MaxClients,
    AuthFailed,
}

impl ErrorKind {
    const ALL: [ErrorKind; 5] = [
        ErrorKind::Upstream,
        ErrorKind::ReadRetried,
        ErrorKind::Protocol,
        ErrorKind::MaxClients,
        ErrorKind::AuthFailed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Upstream => "upstream",
            ErrorKind::ReadRetried => "read_retried",
            ErrorKind::Protocol => "protocol",
            ErrorKind::MaxClients => "max_clients",
            ErrorKind::AuthFailed => "auth_failed",
        }
    }
}

/// Sidecar-wide handles.
pub struct Global {
    fallbacks: Vec<Counter>,
    errors: Vec<Counter>,
    pub clients: Gauge,
    pub commands: Counter,
    /// Commands answered by the sidecar itself (SELECT, PING, HELLO...).
    local: [Counter; 3],
    pub usage: Usage,
}

impl Global {
    pub fn new(region: &str, free_per_day: u64) -> Global {
        let local = |kind: &'static str| counter!(REQUESTS, "upstream" => "nearby", "region" => region.to_string(), "role" => "sidecar", "kind" => kind);
        gauge!(USAGE_ALLOWANCE).set(free_per_day as f64);
        Global {
            fallbacks: Fallback::ALL
                .iter()
                .map(|f| counter!(FALLBACKS, "reason" => f.as_str()))
                .collect(),
            errors: ErrorKind::ALL
                .iter()
                .map(|k| counter!(ERRORS, "kind" => k.as_str()))
                .collect(),
            clients: gauge!(CLIENTS),
            commands: counter!(COMMANDS),
            local: [local("read"), local("write"), local("other")],
            usage: Usage::new(free_per_day, gauge!(USAGE_TODAY)),
        }
    }

    pub fn fallback(&self, f: Fallback) {
        if let Some(i) = Fallback::ALL.iter().position(|x| *x == f) {
            self.fallbacks[i].increment(1);
        }
    }

    pub fn error(&self, k: ErrorKind) {
        if let Some(i) = ErrorKind::ALL.iter().position(|x| x.as_str() == k.as_str()) {
            self.errors[i].increment(1);
        }
    }

    pub fn local(&self, kind: Kind) {
        self.local[kind_index(kind)].increment(1);
    }

    /// `n` client commands arrived (usage metering).
    pub fn commands(&self, n: u64) {
        self.commands.increment(n);
        self.usage.add(n);
    }
}

/// Usage against a free daily allowance, as a managed Redis bills it.
pub struct Usage {
    free_per_day: u64,
    /// UTC day number and today's count, packed: the day in the high 24
    /// bits, the count in the low 40.
    state: AtomicU64,
    today: Gauge,
}

const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

fn utc_day(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
        & 0xFF_FFFF
}

impl Usage {
    pub fn new(free_per_day: u64, today: Gauge) -> Usage {
        Usage {
            free_per_day,
            state: AtomicU64::new(utc_day(SystemTime::now()) << COUNT_BITS),
            today,
        }
    }

    /// Adds `n` commands at `now`; returns true when this call crossed the
    /// free allowance (logged once per day).
    pub fn add_at(&self, n: u64, now: SystemTime) -> bool {
        let day = utc_day(now);
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let (d, count) = (cur >> COUNT_BITS, cur & COUNT_MASK);
            let base = if d == day { count } else { 0 };
            let next_count = (base + n).min(COUNT_MASK);
            let next = (day << COUNT_BITS) | next_count;
            match self
                .state
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.today.set(next_count as f64);
                    return base <= self.free_per_day && next_count > self.free_per_day;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    pub fn add(&self, n: u64) {
        if self.add_at(n, SystemTime::now()) {
            // A metering event, not a fault: INFO.
            tracing::info!(
                free_per_day = self.free_per_day,
                "usage crossed the free daily allowance: further commands today are billable"
            );
        }
    }

    pub fn free_per_day(&self) -> u64 {
        self.free_per_day
    }

    pub fn today(&self) -> u64 {
        self.state.load(Ordering::Relaxed) & COUNT_MASK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_lands_in_le_buckets_with_its_sum_and_count() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(50_000), 0, "le: 50 µs is in the 50 µs bucket");
        assert_eq!(bucket_of(50_001), 1);
        assert_eq!(bucket_of(10_000_000_000), 16);
        assert_eq!(bucket_of(10_000_000_001), 17, "past 10 s: +Inf only");
        let h = duration_series("test=\"tally\"".to_string());
        let m = UpstreamMetrics {
            requests: [counter!("t_r"), counter!("t_w"), counter!("t_o")],
            durations: [h.clone(), duration_series("test=\"w\"".into()), h.clone()],
            rtt: gauge!("t_rtt"),
            healthy: gauge!("t_h"),
            lag: gauge!("t_l"),
            probes_ok: counter!("t_ok"),
            probes_failed: counter!("t_f"),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        };
        let mut t = Tally::default();
        t.add(Kind::Read, Duration::from_micros(30));
        t.add(Kind::Read, Duration::from_micros(30));
        t.add(Kind::Read, Duration::from_millis(3));
        m.add(&mut t);
        m.served(Kind::Other, Duration::from_secs(11));
        let (counts, sum) = h.snapshot();
        assert_eq!(counts[0], 2);
        assert_eq!(counts[6], 1, "3 ms is in the 5 ms bucket");
        assert_eq!(counts[17], 1);
        assert_eq!(counts.iter().sum::<u64>(), 4);
        assert!((sum - 11.00306).abs() < 1e-9, "{sum}");
        assert_eq!(m.reads.load(Ordering::Relaxed), 3);
        // Emptied by add: a second add adds nothing.
        m.add(&mut t);
        assert_eq!(h.snapshot().0.iter().sum::<u64>(), 4);
        let mut text = String::new();
        render_durations(&mut text);
        assert!(text.contains("# TYPE nearby_request_duration_seconds histogram\n"));
        assert!(
            text.contains(
                "nearby_request_duration_seconds_bucket{test=\"tally\",le=\"0.00005\"} 2\n"
            )
        );
        assert!(
            text.contains(
                "nearby_request_duration_seconds_bucket{test=\"tally\",le=\"0.005\"} 3\n"
            )
        );
        assert!(
            text.contains("nearby_request_duration_seconds_bucket{test=\"tally\",le=\"10\"} 3\n")
        );
        assert!(
            text.contains("nearby_request_duration_seconds_bucket{test=\"tally\",le=\"+Inf\"} 4\n")
        );
        assert!(text.contains("nearby_request_duration_seconds_count{test=\"tally\"} 4\n"));
    }

    #[test]
    fn usage_crosses_the_allowance_once_a_day_and_rolls_over() {
        let u = Usage::new(10, gauge!("test_usage"));
        let day0 = UNIX_EPOCH + Duration::from_secs(86_400 * 20_000 + 5);
        u.state
            .store(utc_day(day0) << COUNT_BITS, Ordering::Relaxed);
        assert!(!u.add_at(10, day0));
        assert_eq!(u.today(), 10);
        assert!(u.add_at(1, day0), "the 11th command crosses 10");
        assert!(!u.add_at(5, day0), "only once");
        assert_eq!(u.today(), 16);
        let day1 = day0 + Duration::from_secs(86_400);
        assert!(!u.add_at(3, day1));
        assert_eq!(u.today(), 3, "a new day starts from zero");
        assert!(u.add_at(8, day1));
    }
}
