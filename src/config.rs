//! The effective configuration: flags > env > TOML file > defaults.
//!
//! Clap has already folded the environment into [`ConfigArgs`]; this module
//! merges those values with the optional TOML file, applies defaults, and
//! validates everything. Every error is one line naming where the value came
//! from (a flag or the file) and the config key it belongs to.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};

use crate::cli::ConfigArgs;
use crate::url::{RedisUrl, Secret, redact_loose};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:6379";
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9121";
pub const DEFAULT_PRIMARY_REGION: &str = "primary";

/// A configuration error: `{source_name}: {key}: {message}`, one line.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("{source_name}: {key}: {message}")]
pub struct ConfigError {
    /// Where the offending value came from: the file path, a flag name
    /// (`--replica`, also for its env twin), or `FLY_REGION`.
    pub source_name: String,
    /// The config key, as in the file: `routing.latency_window_ms`, `replica[1]`.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(
        source_name: impl Into<String>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            source_name: source_name.into(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Where reads go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReadFrom {
    /// The nearest healthy, fresh-enough replica (or the primary if nearer).
    #[default]
    Nearest,
    /// Always the primary.
    Primary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Consistency {
    #[default]
    Eventual,
    /// After a write, read from a replica only once it has caught up.
    ReadYourWrites,
}

/// Whose writes a read must observe under read-your-writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConsistencyScope {
    /// The same client connection's writes.
    #[default]
    Connection,
    /// Any write that went through this sidecar.
    Sidecar,
}

/// Where SUBSCRIBE / PSUBSCRIBE / SSUBSCRIBE go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SubscribeFrom {
    #[default]
    Primary,
    Nearest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Whether Prometheus metrics are recorded and served (off: every metric
/// handle is a no-op; used to measure what metrics cost).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Metrics {
    #[default]
    On,
    Off,
}

/// Names for the enums, shared by parsing and printing.
trait Named: Sized + Copy + PartialEq + 'static {
    const CHOICES: &'static [(&'static str, Self)];

    fn as_str(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, v)| *v == self)
            .map(|(n, _)| *n)
            .expect("every variant is named")
    }

    fn parse_named(s: &str) -> Result<Self, String> {
        Self::CHOICES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::CHOICES.iter().map(|(n, _)| *n).collect();
                format!("invalid value '{s}' (expected {})", names.join(" or "))
            })
    }
}

impl Named for ReadFrom {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("nearest", ReadFrom::Nearest),
        ("primary", ReadFrom::Primary),
    ];
}
impl Named for Consistency {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("eventual", Consistency::Eventual),
        ("read-your-writes", Consistency::ReadYourWrites),
    ];
}
impl Named for ConsistencyScope {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("connection", ConsistencyScope::Connection),
        ("sidecar", ConsistencyScope::Sidecar),
    ];
}
impl Named for SubscribeFrom {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("primary", SubscribeFrom::Primary),
        ("nearest", SubscribeFrom::Nearest),
    ];
}
impl Named for Metrics {
    const CHOICES: &'static [(&'static str, Self)] = &[("on", Metrics::On), ("off", Metrics::Off)];
}
impl Named for LogFormat {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("text", LogFormat::Text), ("json", LogFormat::Json)];
}

macro_rules! display_named {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_named!(
    ReadFrom,
    Consistency,
    ConsistencyScope,
    SubscribeFrom,
    LogFormat
);

/// One upstream: the primary or a read replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub region: String,
    pub url: RedisUrl,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingConfig {
    pub read_from: ReadFrom,
    pub consistency: Consistency,
    pub consistency_scope: ConsistencyScope,
    pub max_staleness_ms: u64,
    pub latency_window_ms: u64,
    pub subscribe_from: SubscribeFrom,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            read_from: ReadFrom::Nearest,
            consistency: Consistency::Eventual,
            consistency_scope: ConsistencyScope::Connection,
            max_staleness_ms: 10_000,
            latency_window_ms: 2,
            subscribe_from: SubscribeFrom::Primary,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthConfig {
    pub probe_interval_ms: u64,
    /// Consecutive successes to mark an upstream up.
    pub rise: u32,
    /// Consecutive failures to mark an upstream down.
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            probe_interval_ms: 1000,
            rise: 2,
            fall: 3,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeoutConfig {
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    pub drain_timeout_ms: u64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            connect_timeout_ms: 1000,
            request_timeout_ms: 3000,
            drain_timeout_ms: 5000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitsConfig {
    pub max_clients: usize,
    pub proto_max_bulk_len: usize,
    /// Maximum pipelined requests in flight per client.
    pub max_inflight: usize,
    /// Reply bytes buffered for one client before the sidecar stops reading
    /// its requests (like Redis's client-output-buffer-limit, but pausing
    /// instead of disconnecting).
    pub max_output_buffer: usize,
    /// Commands a day before usage is billable (metering only).
    pub free_commands_per_day: u64,
    /// 0 = never close idle clients.
    pub client_idle_timeout_s: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_clients: 10_000,
            proto_max_bulk_len: 512 * 1024 * 1024,
            max_inflight: 1024,
            max_output_buffer: 64 * 1024 * 1024,
            free_commands_per_day: 10_000,
            client_idle_timeout_s: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SecurityConfig {
    /// Password clients must AUTH with (from `requirepass` or `requirepass_file`).
    pub requirepass: Option<Secret>,
    pub allow_unauthenticated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

/// How upstream host names are resolved (hickory, never the blocking std
/// resolver) and how often discovery re-resolves them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// A nameserver to ask instead of the system's (`/etc/resolv.conf`),
    /// over UDP and TCP.
    pub server: Option<SocketAddr>,
    /// Floor for a record's TTL: re-resolve at most this often (also the
    /// retry delay after a failed lookup).
    pub min_ttl_s: u64,
    /// Ceiling for a record's TTL: re-resolve at least this often.
    pub max_ttl_s: u64,
    /// Bound for one lookup (both address families, every attempt).
    pub timeout_ms: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            server: None,
            min_ttl_s: 5,
            max_ttl_s: 300,
            timeout_ms: 2000,
        }
    }
}

/// The effective configuration. `Debug` never shows a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where this sidecar runs (`--region`, file, then `$FLY_REGION`).
    pub region: Option<String>,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub primary: UpstreamConfig,
    pub replicas: Vec<UpstreamConfig>,
    pub routing: RoutingConfig,
    pub health: HealthConfig,
    pub timeouts: TimeoutConfig,
    pub limits: LimitsConfig,
    pub security: SecurityConfig,
    pub tls: TlsConfig,
    pub dns: DnsConfig,
    pub log_format: LogFormat,
    pub metrics: Metrics,
    /// Runtime threads; `None` = 1, a current-thread runtime (what measured
    /// best for a sidecar); more = a work-stealing runtime.
    pub threads: Option<usize>,
}

// ---------------------------------------------------------------------------
// The file shape. Also used, fully populated, to print the effective config.

#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    admin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_format: Option<String>,
    metrics: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    threads: Option<usize>,
    primary: FileUpstream,
    replica: Vec<FileUpstream>,
    routing: FileRouting,
    health: FileHealth,
    timeouts: FileTimeouts,
    limits: FileLimits,
    security: FileSecurity,
    #[serde(skip_serializing_if = "FileTls::is_empty")]
    tls: FileTls,
    dns: FileDns,
}

#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields, default)]
struct FileUpstream {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<String>,
}

#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields, default)]
struct FileRouting {
    #[serde(skip_serializing_if = "Option::is_none")]
    read_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consistency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    consistency_scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_staleness_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_window_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscribe_from: Option<String>,
}

#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields, default)]
struct FileHealth {
    #[serde(skip_serializing_if = "Option::is_none")]
    probe_interval_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rise: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fall: Option<u32>,
}

#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields, default)]
struct FileTimeouts {
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_timeout_ms: Option<u64>,
    drain_timeout_ms: Option<u64>,
}

#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields, default)]
struct FileLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_clients: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proto_max_bulk_len: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_inflight: Option<usize>,
    max_output_buffer: Option<usize>,
    free_commands_per_day: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_idle_timeout_s: Option<u64>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
struct FileSecurity {
    #[serde(skip_serializing_if = "Option::is_none")]
    requirepass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requirepass_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_unauthenticated: Option<bool>,
}

impl fmt::Debug for FileSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSecurity")
            .field("requirepass", &self.requirepass.as_ref().map(|_| "***"))
            .field("requirepass_file", &self.requirepass_file)
            .field("allow_unauthenticated", &self.allow_unauthenticated)
            .finish()
    }
}

#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields, default)]
struct FileTls {
    #[serde(skip_serializing_if = "Option::is_none")]
    ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_name: Option<String>,
}

impl FileTls {
    fn is_empty(&self) -> bool {
        self.ca_file.is_none()
            && self.cert_file.is_none()
            && self.key_file.is_none()
            && self.server_name.is_none()
    }
}

#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields, default)]
struct FileDns {
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min_ttl_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_ttl_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
}

/// Internal type names serde puts in messages, and what to say instead.
const FILE_TYPE_NAMES: &[&str] = &[
    "FileConfig",
    "FileUpstream",
    "FileRouting",
    "FileHealth",
    "FileTimeouts",
    "FileLimits",
    "FileSecurity",
    "FileTls",
    "FileDns",
];

// ---------------------------------------------------------------------------
// Merging.

/// The value of one setting and where it came from.
struct Sourced<T> {
    value: T,
    source: String,
}

struct Merger<'a> {
    file_name: Option<&'a str>,
}

impl Merger<'_> {
    /// Flag (or its env twin) first, then the file.
    fn pick<T>(&self, flag: Option<T>, flag_name: &str, file: Option<T>) -> Option<Sourced<T>> {
        match (flag, file) {
            (Some(value), _) => Some(Sourced {
                value,
                source: flag_name.to_owned(),
            }),
            (None, Some(value)) => Some(Sourced {
                value,
                source: self.file_name.unwrap_or("config").to_owned(),
            }),
            (None, None) => None,
        }
    }

    fn file_source(&self) -> String {
        self.file_name.unwrap_or("config").to_owned()
    }

    fn named<T: Named>(
        &self,
        flag: Option<&String>,
        flag_name: &str,
        file: Option<&String>,
        key: &str,
        default: T,
    ) -> Result<T, ConfigError> {
        match self.pick(flag, flag_name, file) {
            None => Ok(default),
            Some(s) => T::parse_named(s.value).map_err(|m| ConfigError::new(s.source, key, m)),
        }
    }

    /// A number with a lower bound (and the TOML integer range as upper
    /// bound, so the effective config can always be printed back).
    fn number<T>(
        &self,
        flag: Option<T>,
        flag_name: &str,
        file: Option<T>,
        key: &str,
        default: T,
        min: T,
    ) -> Result<T, ConfigError>
    where
        T: Copy + PartialOrd + fmt::Display + TryInto<i64>,
    {
        let Some(s) = self.pick(flag, flag_name, file) else {
            return Ok(default);
        };
        if s.value < min {
            return Err(ConfigError::new(
                s.source,
                key,
                format!("must be at least {min}, got {}", s.value),
            ));
        }
        if s.value.try_into().is_err() {
            return Err(ConfigError::new(
                s.source,
                key,
                format!("must be at most {}, got {}", i64::MAX, s.value),
            ));
        }
        Ok(s.value)
    }

    fn socket_addr(
        &self,
        flag: Option<&String>,
        flag_name: &str,
        file: Option<&String>,
        key: &str,
        default: &str,
    ) -> Result<Sourced<SocketAddr>, ConfigError> {
        let Sourced { value: s, source } = self
            .pick(flag, flag_name, file)
            .map(|s| Sourced {
                value: s.value.as_str(),
                source: s.source,
            })
            .unwrap_or(Sourced {
                value: default,
                source: "default".to_owned(),
            });
        match s.trim().parse::<SocketAddr>() {
            Ok(addr) => Ok(Sourced {
                value: addr,
                source,
            }),
            Err(_) => Err(ConfigError::new(
                source,
                key,
                format!(
                    "invalid socket address '{s}' (expected IP:PORT, e.g. 127.0.0.1:6379 or [::1]:6379)"
                ),
            )),
        }
    }
}

/// A nameserver: `IP:PORT`, or a bare IP for port 53.
fn parse_nameserver(s: &str, source: &str, key: &str) -> Result<SocketAddr, ConfigError> {
    let t = s.trim();
    t.parse::<SocketAddr>()
        .or_else(|_| t.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| {
            ConfigError::new(
                source,
                key,
                format!(
                    "invalid nameserver address '{s}' (expected IP or IP:PORT, e.g. 127.0.0.1:53 or [::1]:5353)"
                ),
            )
        })
}

fn check_region(name: &str, source: &str, key: &str) -> Result<String, ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::new(source, key, "must not be empty"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ConfigError::new(
            source,
            key,
            format!("invalid region '{name}' (use letters, digits, '-' and '_')"),
        ));
    }
    Ok(name.to_owned())
}

fn parse_url(s: &str, source: &str, key: &str) -> Result<RedisUrl, ConfigError> {
    s.parse::<RedisUrl>()
        .map_err(|e| ConfigError::new(source, key, e.to_string()))
}

impl Config {
    /// Merge precedence: flags > env (clap already folds env into
    /// `ConfigArgs`) > file (`--config`) > defaults. `fly_region` is the value
    /// of `$FLY_REGION` (passed in so tests don't touch the process env): used
    /// for `region` only when neither flag/env nor file set it.
    pub fn load(args: &ConfigArgs, fly_region: Option<String>) -> Result<Config, ConfigError> {
        match &args.config {
            None => Config::from_parts(args, None, fly_region),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(
                        "--config",
                        "config",
                        format!("cannot read '{}': {e}", path.display()),
                    )
                })?;
                Config::from_parts(args, Some((path.as_path(), &text)), fly_region)
            }
        }
    }

    /// Pure apart from reading `requirepass_file`: `file` is the config
    /// file's path (for messages) and contents.
    pub fn from_parts(
        args: &ConfigArgs,
        file: Option<(&Path, &str)>,
        fly_region: Option<String>,
    ) -> Result<Config, ConfigError> {
        let file_name = file.map(|(p, _)| p.display().to_string());
        let fc = match file {
            None => FileConfig::default(),
            Some((_, text)) => parse_file(file_name.as_deref().unwrap_or("config"), text)?,
        };
        let m = Merger {
            file_name: file_name.as_deref(),
        };
        let a = args;

        // Region of this sidecar.
        let region = match m.pick(a.region.as_ref(), "--region", fc.region.as_ref()) {
            Some(s) => Some(check_region(s.value, &s.source, "region")?),
            None => match fly_region.filter(|r| !r.is_empty()) {
                Some(r) => Some(check_region(&r, "FLY_REGION", "region")?),
                None => None,
            },
        };

        let listen = m.socket_addr(
            a.listen.as_ref(),
            "--listen",
            fc.listen.as_ref(),
            "listen",
            DEFAULT_LISTEN,
        )?;
        let admin = m.socket_addr(
            a.admin.as_ref(),
            "--admin",
            fc.admin.as_ref(),
            "admin",
            DEFAULT_ADMIN,
        )?;

        // Primary.
        let primary_url = m
            .pick(a.primary.as_ref(), "--primary", fc.primary.url.as_ref())
            .ok_or_else(|| {
                ConfigError::new(
                    file_name.as_deref().unwrap_or("--primary"),
                    "primary.url",
                    "required (--primary, NEARBY_PRIMARY or [primary] url)",
                )
            })?;
        let primary_url = parse_url(primary_url.value, &primary_url.source, "primary.url")?;
        let primary_region = match m.pick(
            a.primary_region.as_ref(),
            "--primary-region",
            fc.primary.region.as_ref(),
        ) {
            Some(s) => check_region(s.value, &s.source, "primary.region")?,
            None => DEFAULT_PRIMARY_REGION.to_owned(),
        };
        let primary = UpstreamConfig {
            region: primary_region,
            url: primary_url,
        };

        // Replicas: the flag list (or NEARBY_REPLICAS) replaces the file's.
        let mut replicas = Vec::new();
        if !a.replicas.is_empty() {
            for (i, entry) in a.replicas.iter().enumerate() {
                let key = format!("replica[{i}]");
                let entry = entry.trim();
                let Some((region, url)) = entry.split_once('=').filter(|(_, u)| u.contains("://"))
                else {
                    return Err(ConfigError::new(
                        "--replica",
                        key,
                        format!("expected REGION=URL, got '{}'", redact_loose(entry)),
                    ));
                };
                let region = check_region(region.trim(), "--replica", &format!("{key}.region"))?;
                let url = parse_url(url.trim(), "--replica", &format!("{key}.url"))?;
                replicas.push(UpstreamConfig { region, url });
            }
        } else {
            let src = m.file_source();
            for (i, r) in fc.replica.iter().enumerate() {
                let key = format!("replica[{i}]");
                let region = r
                    .region
                    .as_deref()
                    .ok_or_else(|| ConfigError::new(&src, format!("{key}.region"), "required"))?;
                let region = check_region(region, &src, &format!("{key}.region"))?;
                let url = r
                    .url
                    .as_deref()
                    .ok_or_else(|| ConfigError::new(&src, format!("{key}.url"), "required"))?;
                let url = parse_url(url, &src, &format!("{key}.url"))?;
                replicas.push(UpstreamConfig { region, url });
            }
        }

        let d = RoutingConfig::default();
        let fr = &fc.routing;
        let routing = RoutingConfig {
            read_from: m.named(
                a.read_from.as_ref(),
                "--read-from",
                fr.read_from.as_ref(),
                "routing.read_from",
                d.read_from,
            )?,
            consistency: m.named(
                a.consistency.as_ref(),
                "--consistency",
                fr.consistency.as_ref(),
                "routing.consistency",
                d.consistency,
            )?,
            consistency_scope: m.named(
                a.consistency_scope.as_ref(),
                "--consistency-scope",
                fr.consistency_scope.as_ref(),
                "routing.consistency_scope",
                d.consistency_scope,
            )?,
            max_staleness_ms: m.number(
                a.max_staleness_ms,
                "--max-staleness-ms",
                fr.max_staleness_ms,
                "routing.max_staleness_ms",
                d.max_staleness_ms,
                0,
            )?,
            latency_window_ms: m.number(
                a.latency_window_ms,
                "--latency-window-ms",
                fr.latency_window_ms,
                "routing.latency_window_ms",
                d.latency_window_ms,
                0,
            )?,
            subscribe_from: m.named(
                a.subscribe_from.as_ref(),
                "--subscribe-from",
                fr.subscribe_from.as_ref(),
                "routing.subscribe_from",
                d.subscribe_from,
            )?,
        };

        let d = HealthConfig::default();
        let fh = &fc.health;
        let health = HealthConfig {
            probe_interval_ms: m.number(
                a.probe_interval_ms,
                "--probe-interval-ms",
                fh.probe_interval_ms,
                "health.probe_interval_ms",
                d.probe_interval_ms,
                10,
            )?,
            rise: m.number(a.rise, "--rise", fh.rise, "health.rise", d.rise, 1)?,
            fall: m.number(a.fall, "--fall", fh.fall, "health.fall", d.fall, 1)?,
        };

        let d = TimeoutConfig::default();
        let ft = &fc.timeouts;
        let timeouts = TimeoutConfig {
            connect_timeout_ms: m.number(
                a.connect_timeout_ms,
                "--connect-timeout-ms",
                ft.connect_timeout_ms,
                "timeouts.connect_timeout_ms",
                d.connect_timeout_ms,
                1,
            )?,
            request_timeout_ms: m.number(
                a.request_timeout_ms,
                "--request-timeout-ms",
                ft.request_timeout_ms,
                "timeouts.request_timeout_ms",
                d.request_timeout_ms,
                1,
            )?,
            drain_timeout_ms: m.number(
                a.drain_timeout_ms,
                "--drain-timeout-ms",
                ft.drain_timeout_ms,
                "timeouts.drain_timeout_ms",
                d.drain_timeout_ms,
                0,
            )?,
        };

        let d = LimitsConfig::default();
        let fl = &fc.limits;
        let limits = LimitsConfig {
            max_clients: m.number(
                a.max_clients,
                "--max-clients",
                fl.max_clients,
                "limits.max_clients",
                d.max_clients,
                1,
            )?,
            proto_max_bulk_len: m.number(
                a.proto_max_bulk_len,
                "--proto-max-bulk-len",
                fl.proto_max_bulk_len,
                "limits.proto_max_bulk_len",
                d.proto_max_bulk_len,
                1,
            )?,
            max_inflight: m.number(
                a.max_inflight,
                "--max-inflight",
                fl.max_inflight,
                "limits.max_inflight",
                d.max_inflight,
                1,
            )?,
            max_output_buffer: m.number(
                a.max_output_buffer,
                "--max-output-buffer",
                fl.max_output_buffer,
                "limits.max_output_buffer",
                d.max_output_buffer,
                1024,
            )?,
            free_commands_per_day: m.number(
                a.free_commands_per_day,
                "--free-commands-per-day",
                fl.free_commands_per_day,
                "limits.free_commands_per_day",
                d.free_commands_per_day,
                0,
            )?,
            client_idle_timeout_s: m.number(
                a.client_idle_timeout_s,
                "--client-idle-timeout-s",
                fl.client_idle_timeout_s,
                "limits.client_idle_timeout_s",
                d.client_idle_timeout_s,
                0,
            )?,
        };

        let security = resolve_security(a, &fc.security, &m)?;

        // TLS: carried as given; only the cert/key pairing is checked.
        let ftls = &fc.tls;
        let ca_file = m.pick(a.tls_ca_file.clone(), "--tls-ca-file", ftls.ca_file.clone());
        let cert_file = m.pick(
            a.tls_cert_file.clone(),
            "--tls-cert-file",
            ftls.cert_file.clone(),
        );
        let key_file = m.pick(
            a.tls_key_file.clone(),
            "--tls-key-file",
            ftls.key_file.clone(),
        );
        let server_name = m.pick(
            a.tls_server_name.clone(),
            "--tls-server-name",
            ftls.server_name.clone(),
        );
        match (&cert_file, &key_file) {
            (Some(c), None) => {
                return Err(ConfigError::new(
                    &c.source,
                    "tls.key_file",
                    "required when tls.cert_file is set",
                ));
            }
            (None, Some(k)) => {
                return Err(ConfigError::new(
                    &k.source,
                    "tls.cert_file",
                    "required when tls.key_file is set",
                ));
            }
            _ => {}
        }
        if let Some(s) = &server_name
            && s.value.trim().is_empty()
        {
            return Err(ConfigError::new(
                &s.source,
                "tls.server_name",
                "must not be empty",
            ));
        }
        let tls = TlsConfig {
            ca_file: ca_file.map(|s| s.value),
            cert_file: cert_file.map(|s| s.value),
            key_file: key_file.map(|s| s.value),
            server_name: server_name.map(|s| s.value),
        };

        let dns = resolve_dns(a, &fc.dns, &m)?;

        let log_format = m.named(
            a.log_format.as_ref(),
            "--log-format",
            fc.log_format.as_ref(),
            "log_format",
            LogFormat::Text,
        )?;
        let metrics = m.named(
            a.metrics.as_ref(),
            "--metrics",
            fc.metrics.as_ref(),
            "metrics",
            Metrics::On,
        )?;
        let threads = match m.pick(a.threads, "--threads", fc.threads) {
            None => None,
            Some(s) => Some(m.number(Some(s.value), &s.source, None, "threads", 1, 1)?),
        };

        // Listening beyond loopback needs client authentication, or an
        // explicit opt-out.
        if !listen.value.ip().is_loopback()
            && security.requirepass.is_none()
            && !security.allow_unauthenticated
        {
            return Err(ConfigError::new(
                listen.source,
                "listen",
                format!(
                    "{} is not a loopback address; set --requirepass or --allow-unauthenticated",
                    listen.value
                ),
            ));
        }

        Ok(Config {
            region,
            listen: listen.value,
            admin: admin.value,
            primary,
            replicas,
            routing,
            health,
            timeouts,
            limits,
            security,
            tls,
            dns,
            log_format,
            metrics,
            threads,
        })
    }

    /// The effective config as TOML, secrets shown as `***` (for
    /// `check-config`). It parses back as a config file.
    pub fn to_redacted_toml(&self) -> String {
        let upstream = |u: &UpstreamConfig| FileUpstream {
            url: Some(u.url.redacted()),
            region: Some(u.region.clone()),
        };
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| PathBuf::from(p.to_string_lossy().into_owned()))
        };
        let out = FileConfig {
            region: self.region.clone(),
            listen: Some(self.listen.to_string()),
            admin: Some(self.admin.to_string()),
            log_format: Some(self.log_format.as_str().to_owned()),
            metrics: Some(self.metrics.as_str().to_owned()),
            threads: self.threads,
            primary: upstream(&self.primary),
            replica: self.replicas.iter().map(upstream).collect(),
            routing: FileRouting {
                read_from: Some(self.routing.read_from.as_str().to_owned()),
                consistency: Some(self.routing.consistency.as_str().to_owned()),
                consistency_scope: Some(self.routing.consistency_scope.as_str().to_owned()),
                max_staleness_ms: Some(self.routing.max_staleness_ms),
                latency_window_ms: Some(self.routing.latency_window_ms),
                subscribe_from: Some(self.routing.subscribe_from.as_str().to_owned()),
            },
            health: FileHealth {
                probe_interval_ms: Some(self.health.probe_interval_ms),
                rise: Some(self.health.rise),
                fall: Some(self.health.fall),
            },
            timeouts: FileTimeouts {
                connect_timeout_ms: Some(self.timeouts.connect_timeout_ms),
                request_timeout_ms: Some(self.timeouts.request_timeout_ms),
                drain_timeout_ms: Some(self.timeouts.drain_timeout_ms),
            },
            limits: FileLimits {
                max_clients: Some(self.limits.max_clients),
                proto_max_bulk_len: Some(self.limits.proto_max_bulk_len),
                max_inflight: Some(self.limits.max_inflight),
                max_output_buffer: Some(self.limits.max_output_buffer),
                free_commands_per_day: Some(self.limits.free_commands_per_day),
                client_idle_timeout_s: Some(self.limits.client_idle_timeout_s),
            },
            security: FileSecurity {
                requirepass: self.security.requirepass.as_ref().map(|_| "***".to_owned()),
                requirepass_file: None,
                allow_unauthenticated: Some(self.security.allow_unauthenticated),
            },
            tls: FileTls {
                ca_file: path(&self.tls.ca_file),
                cert_file: path(&self.tls.cert_file),
                key_file: path(&self.tls.key_file),
                server_name: self.tls.server_name.clone(),
            },
            dns: FileDns {
                server: self.dns.server.map(|a| a.to_string()),
                min_ttl_s: Some(self.dns.min_ttl_s),
                max_ttl_s: Some(self.dns.max_ttl_s),
                timeout_ms: Some(self.dns.timeout_ms),
            },
        };
        toml::to_string(&out)
            .unwrap_or_else(|e| format!("# cannot print the effective config: {e}\n"))
    }
}

fn resolve_dns(a: &ConfigArgs, fd: &FileDns, m: &Merger<'_>) -> Result<DnsConfig, ConfigError> {
    let d = DnsConfig::default();
    let server = match m.pick(a.dns_server.as_ref(), "--dns-server", fd.server.as_ref()) {
        None => None,
        Some(s) => Some(parse_nameserver(s.value, &s.source, "dns.server")?),
    };
    // A day at most: DNS TTLs beyond that are clamped by resolvers anyway.
    const MAX_TTL_S: u64 = 86_400;
    let at_most_a_day = |v: u64, flag: Option<u64>, flag_name: &str, key: &str| {
        if v <= MAX_TTL_S {
            return Ok(v);
        }
        let source = if flag.is_some() {
            flag_name.to_owned()
        } else {
            m.file_source()
        };
        Err(ConfigError::new(
            source,
            key,
            format!("must be at most {MAX_TTL_S}, got {v}"),
        ))
    };
    let min_ttl_s = m.number(
        a.dns_min_ttl_s,
        "--dns-min-ttl-s",
        fd.min_ttl_s,
        "dns.min_ttl_s",
        d.min_ttl_s,
        1,
    )?;
    let min_ttl_s = at_most_a_day(
        min_ttl_s,
        a.dns_min_ttl_s,
        "--dns-min-ttl-s",
        "dns.min_ttl_s",
    )?;
    // The ceiling must not be below the floor; with only the floor set
    // above the default ceiling, the ceiling follows it.
    let max_ttl_s = match m.pick(a.dns_max_ttl_s, "--dns-max-ttl-s", fd.max_ttl_s) {
        None => d.max_ttl_s.max(min_ttl_s),
        Some(s) => {
            let v = m.number(Some(s.value), &s.source, None, "dns.max_ttl_s", 1, 1)?;
            let v = at_most_a_day(v, a.dns_max_ttl_s, "--dns-max-ttl-s", "dns.max_ttl_s")?;
            if v < min_ttl_s {
                return Err(ConfigError::new(
                    s.source,
                    "dns.max_ttl_s",
                    format!("must be at least dns.min_ttl_s ({min_ttl_s}), got {v}"),
                ));
            }
            v
        }
    };
    let timeout_ms = m.number(
        a.dns_timeout_ms,
        "--dns-timeout-ms",
        fd.timeout_ms,
        "dns.timeout_ms",
        d.timeout_ms,
        1,
    )?;
    Ok(DnsConfig {
        server,
        min_ttl_s,
        max_ttl_s,
        timeout_ms,
    })
}

fn resolve_security(
    a: &ConfigArgs,
    fs: &FileSecurity,
    m: &Merger<'_>,
) -> Result<SecurityConfig, ConfigError> {
    // requirepass and requirepass_file are one setting: flags (either one)
    // override the file's pair as a whole.
    let (pass, pass_file, source) = if a.requirepass.is_some() || a.requirepass_file.is_some() {
        let src = if a.requirepass.is_some() {
            "--requirepass"
        } else {
            "--requirepass-file"
        };
        (
            a.requirepass.clone(),
            a.requirepass_file.clone(),
            src.to_owned(),
        )
    } else {
        (
            fs.requirepass.clone().map(Secret::from),
            fs.requirepass_file.clone(),
            m.file_source(),
        )
    };
    let requirepass = match (pass, pass_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                source,
                "security.requirepass",
                "set either requirepass or requirepass_file, not both",
            ));
        }
        (Some(p), None) => {
            if p.expose().is_empty() {
                return Err(ConfigError::new(
                    source,
                    "security.requirepass",
                    "must not be empty",
                ));
            }
            Some(p)
        }
        (None, Some(path)) => {
            let source = if source == "--requirepass" {
                "--requirepass-file".to_owned()
            } else {
                source
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::new(
                    &source,
                    "security.requirepass_file",
                    format!("cannot read '{}': {e}", path.display()),
                )
            })?;
            let pass = text
                .strip_suffix('\n')
                .map(|t| t.strip_suffix('\r').unwrap_or(t))
                .unwrap_or(&text);
            if pass.is_empty() {
                return Err(ConfigError::new(
                    &source,
                    "security.requirepass_file",
                    format!("'{}' is empty", path.display()),
                ));
            }
            Some(Secret::new(pass))
        }
        (None, None) => None,
    };
    let allow_unauthenticated =
        a.allow_unauthenticated || fs.allow_unauthenticated.unwrap_or(false);
    Ok(SecurityConfig {
        requirepass,
        allow_unauthenticated,
    })
}

// ---------------------------------------------------------------------------
// TOML errors: one line, naming the key path and the line.

fn parse_file(name: &str, text: &str) -> Result<FileConfig, ConfigError> {
    let (tree, syntax_errors) = DeTable::parse_recoverable(text);
    if let Some(e) = syntax_errors.first() {
        return Err(toml_error(name, text, tree.get_ref(), e));
    }
    toml::from_str::<FileConfig>(text).map_err(|e| toml_error(name, text, tree.get_ref(), &e))
}

fn toml_error(name: &str, text: &str, tree: &DeTable<'_>, e: &toml::de::Error) -> ConfigError {
    let mut message = e.message().replace('\n', " ");
    for name in FILE_TYPE_NAMES {
        message = message.replace(&format!("struct {name}"), "a table");
    }
    let message = message.trim();
    match e.span() {
        Some(span) => {
            let pos = span.start.min(text.len());
            let (line, column) = line_column(text, pos);
            let key = find_key(tree, pos, "")
                .or_else(|| key_on_line(text, pos))
                .or_else(|| enclosing_header(text, pos))
                .unwrap_or_else(|| "(top level)".to_owned());
            ConfigError::new(
                name,
                key,
                format!("{message} (line {line}, column {column})"),
            )
        }
        None => ConfigError::new(name, "(top level)", message),
    }
}

fn line_column(text: &str, pos: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..pos];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

fn span_has(span: std::ops::Range<usize>, pos: usize) -> bool {
    span.start <= pos && pos < span.end.max(span.start + 1)
}

/// The deepest key whose name or value covers `pos`: `routing.rise`,
/// `replica[1].url`.
fn find_key(table: &DeTable<'_>, pos: usize, prefix: &str) -> Option<String> {
    for (k, v) in table.iter() {
        let path = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        match v.get_ref() {
            DeValue::Table(t) => {
                if let Some(p) = find_key(t, pos, &path) {
                    return Some(p);
                }
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    if let DeValue::Table(t) = item.get_ref()
                        && let Some(p) = find_key(t, pos, &item_path)
                    {
                        return Some(p);
                    }
                    if span_has(item.span(), pos) {
                        return Some(item_path);
                    }
                }
            }
            _ => {}
        }
        if span_has(k.span(), pos) || span_has(v.span(), pos) {
            return Some(path);
        }
    }
    None
}

/// Fallback for syntax errors the tree cannot place: the header or
/// `key = ...` on the error's line (qualified by the table in scope).
fn key_on_line(text: &str, pos: usize) -> Option<String> {
    let start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("").trim();
    if let Some(header) = line.strip_prefix('[') {
        let name = header
            .trim_start_matches('[')
            .split(']')
            .next()
            .unwrap_or("")
            .trim();
        return valid_key_path(name).then(|| name.to_owned());
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    if !valid_key_path(key) {
        return None;
    }
    Some(match enclosing_header(text, start) {
        Some(table) => format!("{table}.{key}"),
        None => key.to_owned(),
    })
}

fn valid_key_path(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Fallback for errors the tree cannot place: the `[table]` in scope at
/// byte `pos` (headers on earlier lines only).
fn enclosing_header(text: &str, pos: usize) -> Option<String> {
    let line_start = text[..pos].rfind('\n').map_or(0, |i| i + 1);
    text[..line_start].lines().rev().find_map(|line| {
        let line = line.trim();
        let inner = line
            .strip_prefix("[[")
            .and_then(|l| l.split("]]").next())
            .or_else(|| line.strip_prefix('[').and_then(|l| l.split(']').next()))?;
        Some(inner.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::url::Host;
    use clap::Parser;

    const P: &str = "redis://127.0.0.1:6379";

    fn args(extra: &[&str]) -> ConfigArgs {
        let mut argv = vec!["nearby", "run"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{e}"))
            .command
        {
            Command::Run(a) | Command::CheckConfig(a) => a,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn from_file(a: &ConfigArgs, toml: &str) -> Result<Config, ConfigError> {
        Config::from_parts(a, Some((Path::new("config/x.toml"), toml)), None)
    }

    fn file_err(toml: &str) -> String {
        from_file(&ConfigArgs::default(), toml)
            .unwrap_err()
            .to_string()
    }

    fn flag_err(extra: &[&str]) -> String {
        Config::from_parts(&args(extra), None, None)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults() {
        let c = Config::from_parts(&args(&["--primary", P]), None, None).unwrap();
        assert_eq!(c.region, None);
        assert_eq!(c.listen, "127.0.0.1:6379".parse().unwrap());
        assert_eq!(c.admin, "127.0.0.1:9121".parse().unwrap());
        assert_eq!(c.primary.region, "primary");
        assert_eq!(c.primary.url.host, Host::Ip("127.0.0.1".parse().unwrap()));
        assert!(c.replicas.is_empty());
        assert_eq!(c.routing, RoutingConfig::default());
        assert_eq!(c.routing.max_staleness_ms, 10_000);
        assert_eq!(c.routing.latency_window_ms, 2);
        assert_eq!(c.routing.read_from, ReadFrom::Nearest);
        assert_eq!(c.routing.subscribe_from, SubscribeFrom::Primary);
        assert_eq!(
            c.health,
            HealthConfig {
                probe_interval_ms: 1000,
                rise: 2,
                fall: 3
            }
        );
        assert_eq!(
            c.timeouts,
            TimeoutConfig {
                connect_timeout_ms: 1000,
                request_timeout_ms: 3000,
                drain_timeout_ms: 5000,
            }
        );
        assert_eq!(
            c.limits,
            LimitsConfig {
                max_clients: 10_000,
                proto_max_bulk_len: 536_870_912,
                max_inflight: 1024,
                max_output_buffer: 64 * 1024 * 1024,
                free_commands_per_day: 10_000,
                client_idle_timeout_s: 0
            }
        );
        assert_eq!(c.security, SecurityConfig::default());
        assert_eq!(c.tls, TlsConfig::default());
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.threads, None);
    }

    const FULL: &str = r#"
region = "mad"
listen = "127.0.0.1:6380"
admin  = "127.0.0.1:9122"
log_format = "json"
threads = 2

[primary]
url = "redis://default:filesecret@primary.example.internal:6379"
region = "mad"

[[replica]]
region = "ams"
url = "redis://ams.example.internal:6379"

[[replica]]
region = "lhr"
url = "redis://[::1]:6381/2"

[routing]
read_from = "primary"
consistency = "read-your-writes"
consistency_scope = "sidecar"
max_staleness_ms = 5000
latency_window_ms = 4
subscribe_from = "nearest"

[health]
probe_interval_ms = 500
rise = 3
fall = 4

[timeouts]
connect_timeout_ms = 200
request_timeout_ms = 900

[limits]
max_clients = 50
proto_max_bulk_len = 1048576
max_inflight = 1000
client_idle_timeout_s = 60

[security]
requirepass = "clientsecret"
allow_unauthenticated = false

[tls]
ca_file = "/etc/nearby/ca.pem"
cert_file = "/etc/nearby/cert.pem"
key_file = "/etc/nearby/key.pem"
server_name = "redis.example.com"

[dns]
server = "10.0.0.2:5353"
min_ttl_s = 2
max_ttl_s = 120
timeout_ms = 800
"#;

    #[test]
    fn full_file() {
        let c = from_file(&ConfigArgs::default(), FULL).unwrap();
        assert_eq!(c.region.as_deref(), Some("mad"));
        assert_eq!(c.listen.port(), 6380);
        assert_eq!(c.admin.port(), 9122);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.threads, Some(2));
        assert_eq!(c.primary.region, "mad");
        assert_eq!(
            c.primary.url.password.as_ref().map(Secret::expose),
            Some("filesecret")
        );
        assert_eq!(c.replicas.len(), 2);
        assert_eq!(c.replicas[0].region, "ams");
        assert_eq!(c.replicas[1].url.host_port(), "[::1]:6381");
        assert_eq!(c.replicas[1].url.db, 2);
        assert_eq!(
            c.routing,
            RoutingConfig {
                read_from: ReadFrom::Primary,
                consistency: Consistency::ReadYourWrites,
                consistency_scope: ConsistencyScope::Sidecar,
                max_staleness_ms: 5000,
                latency_window_ms: 4,
                subscribe_from: SubscribeFrom::Nearest,
            }
        );
        assert_eq!(
            c.health,
            HealthConfig {
                probe_interval_ms: 500,
                rise: 3,
                fall: 4
            }
        );
        assert_eq!(
            c.timeouts,
            TimeoutConfig {
                connect_timeout_ms: 200,
                request_timeout_ms: 900,
                drain_timeout_ms: 5000,
            }
        );
        assert_eq!(c.limits.max_inflight, 1000);
        assert_eq!(c.limits.client_idle_timeout_s, 60);
        assert_eq!(
            c.security.requirepass.as_ref().map(Secret::expose),
            Some("clientsecret")
        );
        assert_eq!(
            c.tls.ca_file.as_deref(),
            Some(Path::new("/etc/nearby/ca.pem"))
        );
        assert_eq!(c.tls.server_name.as_deref(), Some("redis.example.com"));
    }

    #[test]
    fn precedence_flag_over_file_over_fly_region() {
        let file =
            format!("region = \"ams\"\n[primary]\nurl = \"{P}\"\n[health]\nrise = 5\nfall = 6\n");
        let path = Some((Path::new("f.toml"), file.as_str()));
        // flag wins over file and FLY_REGION
        let c = Config::from_parts(
            &args(&["--region", "mad", "--rise", "9"]),
            path,
            Some("lhr".into()),
        )
        .unwrap();
        assert_eq!(c.region.as_deref(), Some("mad"));
        assert_eq!(c.health.rise, 9);
        assert_eq!(c.health.fall, 6);
        // file wins over FLY_REGION
        let c = Config::from_parts(&args(&[]), path, Some("lhr".into())).unwrap();
        assert_eq!(c.region.as_deref(), Some("ams"));
        assert_eq!(c.health.rise, 5);
        // FLY_REGION only when nothing else sets it
        let c = Config::from_parts(&args(&["--primary", P]), None, Some("lhr".into())).unwrap();
        assert_eq!(c.region.as_deref(), Some("lhr"));
        let c = Config::from_parts(&args(&["--primary", P]), None, Some(String::new())).unwrap();
        assert_eq!(c.region, None);
    }

    #[test]
    fn replica_flags_replace_file_list() {
        let file = format!(
            "[primary]\nurl = \"{P}\"\n[[replica]]\nregion = \"ams\"\nurl = \"redis://a:1\"\n"
        );
        let c = from_file(
            &args(&["--replica", "lhr=redis://l:2,fra=rediss://:pw@f:3/1"]),
            &file,
        )
        .unwrap();
        let regions: Vec<&str> = c.replicas.iter().map(|r| r.region.as_str()).collect();
        assert_eq!(regions, ["lhr", "fra"]);
        assert!(c.replicas[1].url.tls);
        assert_eq!(c.replicas[1].url.db, 1);
        let c = from_file(&args(&[]), &file).unwrap();
        assert_eq!(c.replicas[0].region, "ams");
        assert_eq!(c.replicas[0].url.host_port(), "a:1");
    }

    #[test]
    fn primary_from_flag_overrides_file() {
        let file = "[primary]\nurl = \"redis://file:1\"\nregion = \"ams\"\n";
        let c = from_file(
            &args(&["--primary", "redis://flag:2", "--primary-region", "mad"]),
            file,
        )
        .unwrap();
        assert_eq!(c.primary.url.host_port(), "flag:2");
        assert_eq!(c.primary.region, "mad");
    }

    #[test]
    fn primary_required() {
        assert_eq!(
            Config::from_parts(&ConfigArgs::default(), None, None)
                .unwrap_err()
                .to_string(),
            "--primary: primary.url: required (--primary, NEARBY_PRIMARY or [primary] url)"
        );
        assert_eq!(
            file_err("region = \"mad\"\n"),
            "config/x.toml: primary.url: required (--primary, NEARBY_PRIMARY or [primary] url)"
        );
    }

    #[test]
    fn url_errors_name_the_key() {
        assert_eq!(
            flag_err(&["--primary", "http://h"]),
            "--primary: primary.url: unsupported scheme 'http' (expected redis:// or rediss://)"
        );
        assert_eq!(
            file_err("[primary]\nurl = \"redis://h:99999\"\n"),
            "config/x.toml: primary.url: invalid port '99999'"
        );
        assert_eq!(
            file_err(&format!(
                "[primary]\nurl = \"{P}\"\n[[replica]]\nregion = \"ams\"\nurl = \"redis://h/x\"\n"
            )),
            "config/x.toml: replica[0].url: invalid database '/x'"
        );
        assert_eq!(
            flag_err(&[
                "--primary",
                P,
                "--replica",
                "ams=redis://a",
                "--replica",
                "lhr=redis://"
            ]),
            "--replica: replica[1].url: missing host"
        );
    }

    #[test]
    fn replica_entry_errors() {
        assert_eq!(
            flag_err(&[
                "--primary",
                P,
                "--replica",
                "ams=redis://a",
                "--replica",
                "foo"
            ]),
            "--replica: replica[1]: expected REGION=URL, got 'foo'"
        );
        // A malformed entry never echoes a password.
        assert_eq!(
            flag_err(&["--primary", P, "--replica", "ams:redis://u:hunter2@h"]),
            "--replica: replica[0]: expected REGION=URL, got 'ams:redis://***@h'"
        );
        assert_eq!(
            flag_err(&["--primary", P, "--replica", "=redis://a"]),
            "--replica: replica[0].region: must not be empty"
        );
        assert_eq!(
            flag_err(&["--primary", P, "--replica", "a.b=redis://a"]),
            "--replica: replica[0].region: invalid region 'a.b' (use letters, digits, '-' and '_')"
        );
        let base = format!("[primary]\nurl = \"{P}\"\n");
        assert_eq!(
            file_err(&format!("{base}[[replica]]\nurl = \"redis://a\"\n")),
            "config/x.toml: replica[0].region: required"
        );
        assert_eq!(
            file_err(&format!("{base}[[replica]]\nregion = \"ams\"\n")),
            "config/x.toml: replica[0].url: required"
        );
    }

    #[test]
    fn region_errors() {
        assert_eq!(
            flag_err(&["--primary", P, "--region", "m d"]),
            "--region: region: invalid region 'm d' (use letters, digits, '-' and '_')"
        );
        assert_eq!(
            Config::from_parts(&args(&["--primary", P]), None, Some("a/b".into()))
                .unwrap_err()
                .to_string(),
            "FLY_REGION: region: invalid region 'a/b' (use letters, digits, '-' and '_')"
        );
        assert_eq!(
            flag_err(&["--primary", P, "--primary-region", ""]),
            "--primary-region: primary.region: must not be empty"
        );
    }

    #[test]
    fn socket_address_errors() {
        assert_eq!(
            flag_err(&["--primary", P, "--listen", "localhost:6379"]),
            "--listen: listen: invalid socket address 'localhost:6379' (expected IP:PORT, e.g. 127.0.0.1:6379 or [::1]:6379)"
        );
        assert_eq!(
            file_err(&format!("admin = \"9121\"\n[primary]\nurl = \"{P}\"\n")),
            "config/x.toml: admin: invalid socket address '9121' (expected IP:PORT, e.g. 127.0.0.1:6379 or [::1]:6379)"
        );
        let c = Config::from_parts(
            &args(&["--primary", P, "--listen", "[::1]:7000"]),
            None,
            None,
        )
        .unwrap();
        assert_eq!(c.listen, "[::1]:7000".parse().unwrap());
    }

    #[test]
    fn non_loopback_listen_needs_auth() {
        assert_eq!(
            flag_err(&["--primary", P, "--listen", "0.0.0.0:6379"]),
            "--listen: listen: 0.0.0.0:6379 is not a loopback address; set --requirepass or --allow-unauthenticated"
        );
        assert_eq!(
            file_err(&format!(
                "listen = \"[::]:6379\"\n[primary]\nurl = \"{P}\"\n"
            )),
            "config/x.toml: listen: [::]:6379 is not a loopback address; set --requirepass or --allow-unauthenticated"
        );
        let ok = Config::from_parts(
            &args(&[
                "--primary",
                P,
                "--listen",
                "0.0.0.0:6379",
                "--requirepass",
                "x",
            ]),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            ok.security.requirepass.as_ref().map(Secret::expose),
            Some("x")
        );
        let ok = Config::from_parts(
            &args(&[
                "--primary",
                P,
                "--listen",
                "0.0.0.0:6379",
                "--allow-unauthenticated",
            ]),
            None,
            None,
        )
        .unwrap();
        assert!(ok.security.allow_unauthenticated);
        let ok = from_file(
            &args(&["--listen", "0.0.0.0:1"]),
            &format!("[primary]\nurl = \"{P}\"\n[security]\nallow_unauthenticated = true\n"),
        )
        .unwrap();
        assert!(ok.security.allow_unauthenticated);
    }

    #[test]
    fn numeric_bounds() {
        let base = ["--primary", P];
        let e = |extra: &[&str]| flag_err(&[&base[..], extra].concat());
        assert_eq!(
            e(&["--rise", "0"]),
            "--rise: health.rise: must be at least 1, got 0"
        );
        assert_eq!(
            e(&["--fall", "0"]),
            "--fall: health.fall: must be at least 1, got 0"
        );
        assert_eq!(
            e(&["--probe-interval-ms", "9"]),
            "--probe-interval-ms: health.probe_interval_ms: must be at least 10, got 9"
        );
        assert_eq!(
            e(&["--connect-timeout-ms", "0"]),
            "--connect-timeout-ms: timeouts.connect_timeout_ms: must be at least 1, got 0"
        );
        assert_eq!(
            e(&["--request-timeout-ms", "0"]),
            "--request-timeout-ms: timeouts.request_timeout_ms: must be at least 1, got 0"
        );
        assert_eq!(
            e(&["--max-clients", "0"]),
            "--max-clients: limits.max_clients: must be at least 1, got 0"
        );
        assert_eq!(
            e(&["--proto-max-bulk-len", "0"]),
            "--proto-max-bulk-len: limits.proto_max_bulk_len: must be at least 1, got 0"
        );
        assert_eq!(
            e(&["--max-inflight", "0"]),
            "--max-inflight: limits.max_inflight: must be at least 1, got 0"
        );
        assert_eq!(
            e(&["--threads", "0"]),
            "--threads: threads: must be at least 1, got 0"
        );
        assert_eq!(
            e(&["--max-staleness-ms", "18446744073709551615"]),
            "--max-staleness-ms: routing.max_staleness_ms: must be at most 9223372036854775807, got 18446744073709551615"
        );
        assert_eq!(
            file_err(&format!("[primary]\nurl = \"{P}\"\n[health]\nrise = 0\n")),
            "config/x.toml: health.rise: must be at least 1, got 0"
        );
        let c = Config::from_parts(
            &args(
                &[
                    &base[..],
                    &["--latency-window-ms", "0", "--max-staleness-ms", "0"],
                ]
                .concat(),
            ),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            (c.routing.latency_window_ms, c.routing.max_staleness_ms),
            (0, 0)
        );
    }

    #[test]
    fn dns_defaults_file_and_flags() {
        let c = Config::from_parts(&args(&["--primary", P]), None, None).unwrap();
        assert_eq!(c.dns, DnsConfig::default());
        assert_eq!(
            (c.dns.min_ttl_s, c.dns.max_ttl_s, c.dns.timeout_ms),
            (5, 300, 2000)
        );
        let text = c.to_redacted_toml();
        assert!(
            text.contains("[dns]\nmin_ttl_s = 5\nmax_ttl_s = 300\ntimeout_ms = 2000\n"),
            "{text}"
        );
        assert!(!text.contains("server = "), "{text}");
        assert_eq!(from_file(&ConfigArgs::default(), &text).unwrap().dns, c.dns);

        let c = from_file(&ConfigArgs::default(), FULL).unwrap();
        assert_eq!(
            c.dns,
            DnsConfig {
                server: Some("10.0.0.2:5353".parse().unwrap()),
                min_ttl_s: 2,
                max_ttl_s: 120,
                timeout_ms: 800,
            }
        );
        // Flags win over the file, key by key.
        let c = from_file(
            &args(&["--dns-server", "[::1]:53", "--dns-min-ttl-s", "1"]),
            FULL,
        )
        .unwrap();
        assert_eq!(c.dns.server, Some("[::1]:53".parse().unwrap()));
        assert_eq!((c.dns.min_ttl_s, c.dns.max_ttl_s), (1, 120));
        // A bare IP means port 53.
        let c = Config::from_parts(
            &args(&["--primary", P, "--dns-server", " 127.0.0.53 "]),
            None,
            None,
        )
        .unwrap();
        assert_eq!(c.dns.server, Some("127.0.0.53:53".parse().unwrap()));
        // A floor above the default ceiling lifts the ceiling with it.
        let c = Config::from_parts(
            &args(&["--primary", P, "--dns-min-ttl-s", "600"]),
            None,
            None,
        )
        .unwrap();
        assert_eq!((c.dns.min_ttl_s, c.dns.max_ttl_s), (600, 600));
    }

    #[test]
    fn dns_errors_name_the_key() {
        let base = ["--primary", P];
        let e = |extra: &[&str]| flag_err(&[&base[..], extra].concat());
        assert_eq!(
            e(&["--dns-server", "dns.internal:53"]),
            "--dns-server: dns.server: invalid nameserver address 'dns.internal:53' (expected IP or IP:PORT, e.g. 127.0.0.1:53 or [::1]:5353)"
        );
        assert_eq!(
            e(&["--dns-min-ttl-s", "0"]),
            "--dns-min-ttl-s: dns.min_ttl_s: must be at least 1, got 0"
        );
        assert_eq!(
            e(&["--dns-max-ttl-s", "0"]),
            "--dns-max-ttl-s: dns.max_ttl_s: must be at least 1, got 0"
        );
        assert_eq!(
            e(&["--dns-min-ttl-s", "10", "--dns-max-ttl-s", "9"]),
            "--dns-max-ttl-s: dns.max_ttl_s: must be at least dns.min_ttl_s (10), got 9"
        );
        assert_eq!(
            e(&["--dns-max-ttl-s", "86401"]),
            "--dns-max-ttl-s: dns.max_ttl_s: must be at most 86400, got 86401"
        );
        assert_eq!(
            e(&["--dns-timeout-ms", "0"]),
            "--dns-timeout-ms: dns.timeout_ms: must be at least 1, got 0"
        );
        assert_eq!(
            file_err(&format!(
                "[primary]\nurl = \"{P}\"\n[dns]\nmin_ttl_s = 100000\n"
            )),
            "config/x.toml: dns.min_ttl_s: must be at most 86400, got 100000"
        );
        assert_eq!(
            file_err(&format!(
                "[primary]\nurl = \"{P}\"\n[dns]\nmin_ttl_s = 30\nmax_ttl_s = 20\n"
            )),
            "config/x.toml: dns.max_ttl_s: must be at least dns.min_ttl_s (30), got 20"
        );
        assert_eq!(
            file_err(&format!(
                "[primary]\nurl = \"{P}\"\n[dns]\nserver = \"x\"\n"
            )),
            "config/x.toml: dns.server: invalid nameserver address 'x' (expected IP or IP:PORT, e.g. 127.0.0.1:53 or [::1]:5353)"
        );
        let e = file_err(&format!("[primary]\nurl = \"{P}\"\n[dns]\nttl = 3\n"));
        assert!(
            e.starts_with("config/x.toml: dns.ttl: unknown field `ttl`, expected one of `server`, `min_ttl_s`, `max_ttl_s`, `timeout_ms`"),
            "{e}"
        );
    }

    #[test]
    fn enum_errors() {
        let base = ["--primary", P];
        let e = |extra: &[&str]| flag_err(&[&base[..], extra].concat());
        assert_eq!(
            e(&["--read-from", "replica"]),
            "--read-from: routing.read_from: invalid value 'replica' (expected nearest or primary)"
        );
        assert_eq!(
            e(&["--consistency", "strong"]),
            "--consistency: routing.consistency: invalid value 'strong' (expected eventual or read-your-writes)"
        );
        assert_eq!(
            e(&["--consistency-scope", "global"]),
            "--consistency-scope: routing.consistency_scope: invalid value 'global' (expected connection or sidecar)"
        );
        assert_eq!(
            e(&["--subscribe-from", "x"]),
            "--subscribe-from: routing.subscribe_from: invalid value 'x' (expected primary or nearest)"
        );
        assert_eq!(
            e(&["--log-format", "xml"]),
            "--log-format: log_format: invalid value 'xml' (expected text or json)"
        );
        assert_eq!(
            file_err(&format!(
                "[primary]\nurl = \"{P}\"\n[routing]\nconsistency = \"ryw\"\n"
            )),
            "config/x.toml: routing.consistency: invalid value 'ryw' (expected eventual or read-your-writes)"
        );
    }

    #[test]
    fn requirepass_rules() {
        let dir = std::env::temp_dir().join(format!("nearby-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pass_file = dir.join("pass");
        std::fs::write(&pass_file, "from-file\r\n").unwrap();
        let pf = pass_file.to_str().unwrap();

        let c = Config::from_parts(
            &args(&["--primary", P, "--requirepass-file", pf]),
            None,
            None,
        )
        .unwrap();
        assert_eq!(
            c.security.requirepass.as_ref().map(Secret::expose),
            Some("from-file")
        );

        assert_eq!(
            flag_err(&[
                "--primary",
                P,
                "--requirepass",
                "x",
                "--requirepass-file",
                pf
            ]),
            "--requirepass: security.requirepass: set either requirepass or requirepass_file, not both"
        );
        let both = format!(
            "[primary]\nurl = \"{P}\"\n[security]\nrequirepass = \"x\"\nrequirepass_file = \"{pf}\"\n"
        );
        assert_eq!(
            file_err(&both),
            "config/x.toml: security.requirepass: set either requirepass or requirepass_file, not both"
        );
        // A flag replaces the file's pair as a whole.
        let c = from_file(&args(&["--requirepass", "flagpass"]), &both).unwrap();
        assert_eq!(
            c.security.requirepass.as_ref().map(Secret::expose),
            Some("flagpass")
        );

        let missing = dir.join("missing");
        let e = flag_err(&[
            "--primary",
            P,
            "--requirepass-file",
            missing.to_str().unwrap(),
        ]);
        assert!(
            e.starts_with(&format!(
                "--requirepass-file: security.requirepass_file: cannot read '{}': ",
                missing.display()
            )),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1);

        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert_eq!(
            file_err(&format!(
                "[primary]\nurl = \"{P}\"\n[security]\nrequirepass_file = \"{}\"\n",
                empty.display()
            )),
            format!(
                "config/x.toml: security.requirepass_file: '{}' is empty",
                empty.display()
            )
        );
        assert_eq!(
            flag_err(&["--primary", P, "--requirepass", ""]),
            "--requirepass: security.requirepass: must not be empty"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_pairing() {
        assert_eq!(
            flag_err(&["--primary", P, "--tls-cert-file", "/c.pem"]),
            "--tls-cert-file: tls.key_file: required when tls.cert_file is set"
        );
        assert_eq!(
            file_err(&format!(
                "[primary]\nurl = \"{P}\"\n[tls]\nkey_file = \"/k.pem\"\n"
            )),
            "config/x.toml: tls.cert_file: required when tls.key_file is set"
        );
        let c = Config::from_parts(
            &args(&[
                "--primary",
                "rediss://:pw@h:6380",
                "--tls-ca-file",
                "/nonexistent/ca.pem",
            ]),
            None,
            None,
        )
        .unwrap();
        assert!(c.primary.url.tls);
        assert_eq!(
            c.tls.ca_file.as_deref(),
            Some(Path::new("/nonexistent/ca.pem"))
        );
    }

    #[test]
    fn toml_type_errors_name_the_key_and_line() {
        let text = format!(
            "[primary]\nurl = \"{P}\"\n\n[routing]\nread_from = \"nearest\"\nlatency_window_ms = \"x\"\n"
        );
        assert_eq!(
            file_err(&text),
            "config/x.toml: routing.latency_window_ms: invalid type: string \"x\", expected u64 (line 6, column 21)"
        );
        let text = format!(
            "[primary]\nurl = \"{P}\"\n[[replica]]\nregion = \"a\"\nurl = \"redis://a\"\n[[replica]]\nregion = 5\n"
        );
        assert_eq!(
            file_err(&text),
            "config/x.toml: replica[1].region: invalid type: integer `5`, expected a string (line 7, column 10)"
        );
        assert_eq!(
            file_err("threads = -1\n"),
            "config/x.toml: threads: invalid value: integer `-1`, expected usize (line 1, column 11)"
        );
    }

    #[test]
    fn toml_unknown_keys_are_rejected() {
        let e = file_err(&format!(
            "[primary]\nurl = \"{P}\"\n[health]\nrise = 2\nfal = 3\n"
        ));
        assert!(
            e.starts_with("config/x.toml: health.fal: unknown field `fal`, expected one of `probe_interval_ms`, `rise`, `fall` (line 5, column 1)"),
            "{e}"
        );
        let e = file_err("[primary]\nurl = \"redis://h\"\n[healthz]\nrise = 2\n");
        assert!(
            e.starts_with("config/x.toml: healthz: unknown field `healthz`"),
            "{e}"
        );
        assert!(e.ends_with("(line 3, column 2)"), "{e}");
        let e = file_err("replicas = []\n");
        assert!(
            e.starts_with("config/x.toml: replicas: unknown field `replicas`"),
            "{e}"
        );
    }

    #[test]
    fn toml_syntax_errors_are_one_line_with_position() {
        let e = file_err("[primary]\nurl = redis://h\n");
        assert!(e.starts_with("config/x.toml: primary.url: "), "{e}");
        assert!(e.contains("(line 2, column 7)"), "{e}");
        assert_eq!(e.lines().count(), 1);
        let e = file_err("[routing\nread_from = \"nearest\"\n");
        assert!(e.contains("(line 1, "), "{e}");
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn toml_syntax_error_keys() {
        assert_eq!(
            file_err("[routing\nread_from = \"nearest\"\n"),
            "config/x.toml: routing: unclosed table, expected `]` (line 1, column 9)"
        );
        assert_eq!(
            file_err("[health]\nrise = 1\nrise = 2\n"),
            "config/x.toml: health.rise: duplicate key (line 3, column 1)"
        );
        assert_eq!(
            file_err("primary = 5\n"),
            "config/x.toml: primary: invalid type: integer `5`, expected a table (line 1, column 11)"
        );
    }

    #[test]
    fn load_reports_unreadable_config() {
        let a = args(&["--config", "/nonexistent/nearby.toml"]);
        let e = Config::load(&a, None).unwrap_err().to_string();
        assert!(
            e.starts_with("--config: config: cannot read '/nonexistent/nearby.toml': "),
            "{e}"
        );
    }

    #[test]
    fn secrets_never_shown() {
        let c = from_file(
            &args(&["--replica", "ams=redis://u:replicasecret@a:1"]),
            FULL,
        )
        .unwrap();
        for text in [format!("{c:?}"), format!("{c:#?}"), c.to_redacted_toml()] {
            for secret in ["filesecret", "clientsecret", "replicasecret"] {
                assert!(!text.contains(secret), "{secret} leaked in:\n{text}");
            }
            assert!(text.contains("***"));
        }
        let e = flag_err(&["--primary", "redis://u:hunter2@h:99999"]);
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn redacted_toml_round_trips() {
        let c = from_file(&ConfigArgs::default(), FULL).unwrap();
        let text = c.to_redacted_toml();
        assert!(
            text.contains("url = \"redis://default:***@primary.example.internal:6379/0\""),
            "{text}"
        );
        assert!(text.contains("requirepass = \"***\""), "{text}");
        assert!(text.contains("read_from = \"primary\""), "{text}");
        assert!(
            text.contains("consistency = \"read-your-writes\""),
            "{text}"
        );
        let back =
            from_file(&ConfigArgs::default(), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            back.security.requirepass.as_ref().map(Secret::expose),
            Some("***")
        );
        assert_eq!(
            back.primary.url.password.as_ref().map(Secret::expose),
            Some("***")
        );
        assert_eq!(back.replicas, c.replicas);
        assert_eq!(back.routing, c.routing);
        assert_eq!(back.health, c.health);
        assert_eq!(back.limits, c.limits);
        assert_eq!(back.tls, c.tls);
        assert_eq!(back.dns, c.dns);
        assert!(text.contains("[dns]\nserver = \"10.0.0.2:5353\""), "{text}");
        assert_eq!(
            (back.listen, back.admin, back.threads),
            (c.listen, c.admin, c.threads)
        );

        let minimal = Config::from_parts(&args(&["--primary", P]), None, None).unwrap();
        let text = minimal.to_redacted_toml();
        assert!(!text.contains("region = \"\""), "{text}");
        from_file(&ConfigArgs::default(), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    }

    #[test]
    fn example_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let fly = Some("lhr".to_owned());
            let c = Config::from_parts(&ConfigArgs::default(), Some((&path, &text)), fly)
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(c.region.is_some(), "{}", path.display());
            names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
        for expected in [
            "minimal.toml",
            "fly.toml",
            "tls.toml",
            "read-your-writes.toml",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "config/{expected} missing"
            );
        }
    }
}
