//! Every setting, declared once. The `settings!` macro (`declare.rs`) turns
//! this table into the clap flags and env twins, the file keys, the
//! defaults, the merge and the printed config; `SETTINGS` describes each
//! setting for the README test (`readme_tests.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::file::{FileCluster, FileDns, FileSecurity, FileSentinel, FileTls, FileUpstream};
use super::merge::{self, Merger};
use super::{
    ClusterConfig, ConfigError, ConsistencyScope, DnsConfig, FollowRole, LogFormat, Metrics,
    NearCache, ReadFrom, SecurityConfig, SentinelConfig, SubscribeFrom, TlsConfig, UpstreamConfig,
    Value, print, rules,
};
use super::{Consistency, Secret};
use crate::url::redact_loose;

/// One setting as documented: the README flag table lists exactly these.
#[derive(Debug)]
pub struct Setting {
    /// The file key as error messages name it (`limits.max_inflight`); ""
    /// for `--config`.
    pub key: &'static str,
    /// `--max-inflight`.
    pub flag: &'static str,
    /// `NEARBY_MAX_INFLIGHT`.
    pub env: &'static str,
    /// The documented default (also in `--help` for most settings).
    pub default: &'static str,
    /// The `--help` line.
    pub help: &'static str,
}

/// The descriptor of `key`; a compile error when used in a const and
/// there is no such setting.
pub const fn setting(key: &str) -> &'static Setting {
    let mut i = 0;
    while i < SETTINGS.len() {
        if eq(SETTINGS[i].key.as_bytes(), key.as_bytes()) {
            return &SETTINGS[i];
        }
        i += 1;
    }
    panic!("no such setting");
}

const fn eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

fn redact_url(url: &Option<String>) -> Option<String> {
    url.as_deref().map(redact_loose)
}

fn redact_urls(entries: &[String]) -> Vec<String> {
    entries.iter().map(|e| redact_loose(e)).collect()
}

// Rows, in `--help` order (see declare.rs for the blocks):
//
//   scalar (`top`, `sections`): everything is derived from the row.
//     name: Type = default[, min N]
//         => "flag", "ENV", "VALUE NAME",
//         "help";
//
//   `flags`: only the clap field and the descriptor; merge, checks and
//   printing are hand-written. `= default` is also shown in --help, `or
//   word` only in the README; `[...]` after the help are clap attributes.
//     name: ArgType ["file.key"] = default | or "word"
//         => "flag", "ENV",
//         "help", [clap attributes] [debug redact_fn];
settings! {
    flags {
        config: Option<PathBuf> [] or "—"
            => "config", "NEARBY_CONFIG",
            "TOML config file", [value_name = "FILE"];
    }
    top {
        listen: SocketAddr = "127.0.0.1:6379"
            => "listen", "NEARBY_LISTEN", "ADDR",
            "Address clients connect to";
        admin: SocketAddr = "127.0.0.1:9121"
            => "admin", "NEARBY_ADMIN", "ADDR",
            "Admin HTTP address (/metrics, /healthz, /readyz, /status)";
    }
    flags {
        region: Option<String> ["region"] = "$FLY_REGION"
            => "region", "NEARBY_REGION",
            "Region this sidecar runs in", [value_name = "NAME"];
        primary: Option<String> ["primary.url"] or "required"
            => "primary", "NEARBY_PRIMARY",
            "Primary URL: redis://[user:pass@]host[:port][/db] or rediss://",
            [value_name = "URL", hide_env_values = true] debug redact_url;
        primary_region: Option<String> ["primary.region"] = "primary"
            => "primary-region", "NEARBY_PRIMARY_REGION",
            "Region of the primary", [value_name = "NAME"];
        replicas: Vec<String> ["replica"] or "none"
            => "replica", "NEARBY_REPLICAS",
            "Read replica as REGION=URL; repeat, or comma-separate \
             (percent-encode ',' in passwords)",
            [value_name = "REGION=URL", value_delimiter = ',', hide_env_values = true]
            debug redact_urls;
    }
    sections {
        routing: RoutingConfig, FileRouting {
            read_from: ReadFrom = "nearest"
                => "read-from", "NEARBY_READ_FROM", "MODE",
                "Where reads go: nearest | primary";
            consistency: Consistency = "eventual"
                => "consistency", "NEARBY_CONSISTENCY", "MODE",
                "Read consistency: eventual | read-your-writes";
            consistency_scope: ConsistencyScope = "connection"
                => "consistency-scope", "NEARBY_CONSISTENCY_SCOPE", "SCOPE",
                "Read-your-writes tracked per connection | sidecar";
            max_staleness_ms: u64 = 10000, min 0
                => "max-staleness-ms", "NEARBY_MAX_STALENESS_MS", "MS",
                "Skip replicas lagging more than this";
            latency_window_ms: u64 = 2, min 0
                => "latency-window-ms", "NEARBY_LATENCY_WINDOW_MS", "MS",
                "Upstreams within this RTT of the nearest share reads";
            subscribe_from: SubscribeFrom = "primary"
                => "subscribe-from", "NEARBY_SUBSCRIBE_FROM", "MODE",
                "Where SUBSCRIBE goes: primary | nearest";
        }
        health: HealthConfig, FileHealth {
            probe_interval_ms: u64 = 1000, min 10
                => "probe-interval-ms", "NEARBY_PROBE_INTERVAL_MS", "MS",
                "Health probe period per upstream";
            /// Consecutive successes to mark an upstream up.
            rise: u32 = 2, min 1
                => "rise", "NEARBY_RISE", "N",
                "Consecutive good probes to mark an upstream up";
            /// Consecutive failures to mark an upstream down.
            fall: u32 = 3, min 1
                => "fall", "NEARBY_FALL", "N",
                "Consecutive failed probes to mark an upstream down";
        }
        timeouts: TimeoutConfig, FileTimeouts {
            connect_timeout_ms: u64 = 1000, min 1
                => "connect-timeout-ms", "NEARBY_CONNECT_TIMEOUT_MS", "MS",
                "Upstream connect timeout";
            request_timeout_ms: u64 = 3000, min 1
                => "request-timeout-ms", "NEARBY_REQUEST_TIMEOUT_MS", "MS",
                "Upstream request timeout";
            /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
            drain_timeout_ms: u64 = 5000, min 0
                => "drain-timeout-ms", "NEARBY_DRAIN_TIMEOUT_MS", "MS",
                "On SIGTERM, how long in-flight requests may take to finish";
        }
        limits: LimitsConfig, FileLimits {
            max_clients: usize = 10000, min 1
                => "max-clients", "NEARBY_MAX_CLIENTS", "N",
                "Maximum concurrent client connections";
            proto_max_bulk_len: usize = 536870912, min 1
                => "proto-max-bulk-len", "NEARBY_PROTO_MAX_BULK_LEN", "BYTES",
                "Largest bulk string accepted from a client, in bytes";
            /// Maximum pipelined requests in flight per client.
            max_inflight: usize = 1024, min 1
                => "max-inflight", "NEARBY_MAX_INFLIGHT", "N",
                "Maximum pipelined requests in flight per client";
            /// Reply bytes buffered for one client before the sidecar stops reading
            /// its requests (like Redis's client-output-buffer-limit, but pausing
            /// instead of disconnecting).
            max_output_buffer: usize = 67108864, min 1024
                => "max-output-buffer", "NEARBY_MAX_OUTPUT_BUFFER", "BYTES",
                "Reply bytes buffered per client before its requests stop being read";
            /// Commands a day before usage is billable (metering only).
            free_commands_per_day: u64 = 10000, min 0
                => "free-commands-per-day", "NEARBY_FREE_COMMANDS_PER_DAY", "N",
                "Free commands per day before usage counts as billable";
            /// 0 = never close idle clients.
            client_idle_timeout_s: u64 = 0, min 0
                => "client-idle-timeout-s", "NEARBY_CLIENT_IDLE_TIMEOUT_S", "SECONDS",
                "Close clients idle this long, 0 = never";
        }
        failover: FailoverConfig, FileFailover {
            /// How long a write waits for a new primary while a failover is
            /// under way, before it fails.
            wait_ms: u64 = 5000, min 0
                => "failover-wait-ms", "NEARBY_FAILOVER_WAIT_MS", "MS",
                "How long writes wait for a new primary during a failover";
            /// Without Sentinel: move writes to the server that says
            /// `role:master` (after a ROLE check).
            follow_role: FollowRole = "on"
                => "follow-role", "NEARBY_FOLLOW_ROLE", "on|off",
                "Without --sentinel, writes follow the server whose ROLE is master";
        }
        near_cache: NearCacheConfig, FileNearCache {
            /// Answer hot reads from local memory, kept fresh by Redis's
            /// own invalidations (`CLIENT TRACKING`).
            mode: NearCache = "off"
                => "near-cache", "NEARBY_NEAR_CACHE", "on|off",
                "Answer hot reads from a local cache kept fresh by Redis's invalidations";
            max_bytes: usize = 67108864, min 1024
                => "near-cache-max-bytes", "NEARBY_NEAR_CACHE_MAX_BYTES", "BYTES",
                "Near-cache memory bound (least recently used entries go first)";
            max_ttl_ms: u64 = 60000, min 1
                => "near-cache-max-ttl-ms", "NEARBY_NEAR_CACHE_MAX_TTL_MS", "MS",
                "Longest a near-cache entry lives, whatever its key's TTL";
        }
    }
    flags {
        requirepass: Option<Secret> ["security.requirepass"] or "none"
            => "requirepass", "NEARBY_REQUIREPASS",
            "Password clients must AUTH with", [value_name = "SECRET", hide_env_values = true];
        requirepass_file: Option<PathBuf> ["security.requirepass_file"] or "none"
            => "requirepass-file", "NEARBY_REQUIREPASS_FILE",
            "File holding the client password (trailing newline ignored)", [value_name = "PATH"];
        allow_unauthenticated: bool ["security.allow_unauthenticated"] or "false"
            => "allow-unauthenticated", "NEARBY_ALLOW_UNAUTHENTICATED",
            "Allow listening beyond loopback without --requirepass",
            [value_parser = clap::builder::BoolishValueParser::new()];
        tls_ca_file: Option<PathBuf> ["tls.ca_file"] or "none"
            => "tls-ca-file", "NEARBY_TLS_CA_FILE",
            "CA bundle to verify rediss:// upstreams", [value_name = "PATH"];
        tls_cert_file: Option<PathBuf> ["tls.cert_file"] or "none"
            => "tls-cert-file", "NEARBY_TLS_CERT_FILE",
            "Client certificate for rediss:// upstreams (needs --tls-key-file)",
            [value_name = "PATH"];
        tls_key_file: Option<PathBuf> ["tls.key_file"] or "none"
            => "tls-key-file", "NEARBY_TLS_KEY_FILE",
            "Client private key for rediss:// upstreams (needs --tls-cert-file)",
            [value_name = "PATH"];
        tls_server_name: Option<String> ["tls.server_name"] or "none"
            => "tls-server-name", "NEARBY_TLS_SERVER_NAME",
            "Server name to verify instead of the URL host", [value_name = "NAME"];
        dns_server: Option<String> ["dns.server"] = "/etc/resolv.conf"
            => "dns-server", "NEARBY_DNS_SERVER",
            "Nameserver for upstream host names, IP[:PORT] over UDP and TCP",
            [value_name = "ADDR"];
        dns_min_ttl_s: Option<u64> ["dns.min_ttl_s"] = "5"
            => "dns-min-ttl-s", "NEARBY_DNS_MIN_TTL_S",
            "Re-resolve upstream names at most this often, whatever their TTL",
            [value_name = "SECONDS"];
        dns_max_ttl_s: Option<u64> ["dns.max_ttl_s"] = "300"
            => "dns-max-ttl-s", "NEARBY_DNS_MAX_TTL_S",
            "Re-resolve upstream names at least this often, whatever their TTL",
            [value_name = "SECONDS"];
        dns_timeout_ms: Option<u64> ["dns.timeout_ms"] = "2000"
            => "dns-timeout-ms", "NEARBY_DNS_TIMEOUT_MS",
            "Time allowed for one DNS lookup", [value_name = "MS"];
        cluster: Vec<String> ["cluster.seeds"] or "none"
            => "cluster", "NEARBY_CLUSTER",
            "Redis Cluster seed node URL; repeat, or comma-separate: front a cluster instead of --primary",
            [value_name = "URL", value_delimiter = ',', hide_env_values = true]
            debug redact_urls;
        sentinels: Vec<String> ["sentinel.addresses"] or "none"
            => "sentinel", "NEARBY_SENTINELS",
            "Sentinel as HOST:PORT; repeat, or comma-separate: the primary comes from Sentinel",
            [value_name = "HOST:PORT", value_delimiter = ','];
        sentinel_master: Option<String> ["sentinel.master_name"] or "with --sentinel"
            => "sentinel-master", "NEARBY_SENTINEL_MASTER",
            "Name of the master the sentinels monitor", [value_name = "NAME"];
        sentinel_username: Option<String> ["sentinel.username"] or "none"
            => "sentinel-username", "NEARBY_SENTINEL_USERNAME",
            "User to AUTH to the sentinels as", [value_name = "USER"];
        sentinel_password: Option<Secret> ["sentinel.password"] or "none"
            => "sentinel-password", "NEARBY_SENTINEL_PASSWORD",
            "Password to AUTH to the sentinels with", [value_name = "SECRET", hide_env_values = true];
    }
    top {
        log_format: LogFormat = "text"
            => "log-format", "NEARBY_LOG_FORMAT", "FORMAT",
            "Log format: text | json";
        metrics: Metrics = "on"
            => "metrics", "NEARBY_METRICS", "on|off",
            "Record and serve Prometheus metrics: on or off";
        /// Runtime threads; `None` = 1, a current-thread runtime (what measured
        /// best for a sidecar); more = a work-stealing runtime.
        threads: Option<usize> = 1, min 1
            => "threads", "NEARBY_THREADS", "N",
            "Runtime threads: 1 = a current-thread runtime, more = work-stealing";
    }
}
