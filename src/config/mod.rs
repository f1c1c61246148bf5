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
mod tests;
