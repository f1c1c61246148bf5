//! The effective configuration: flags > env > TOML file > defaults.
//!
//! Clap has already folded the environment into [`ConfigArgs`]; this module
//! merges those values with the optional TOML file, applies defaults, and
//! validates everything. Every error is one line naming where the value came
//! from (a flag or the file) and the config key it belongs to.
//!
//! Each setting is declared once, in the table in `settings.rs`; from it
//! `declare.rs` derives the flag, the file key, the default, the merge and
//! the printed config. `merge.rs` (upstreams), `rules.rs` (cross-field
//! checks) and `print.rs` hold what is structurally special; `file.rs` and
//! `toml_error.rs` read the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[macro_use]
mod declare;
mod file;
mod merge;
mod print;
mod rules;
pub mod settings;
mod toml_error;
mod values;

pub use settings::{
    Config, ConfigArgs, FailoverConfig, HealthConfig, LimitsConfig, NearCacheConfig, RoutingConfig,
    TimeoutConfig,
};
pub use values::{
    Consistency, ConsistencyScope, FollowRole, LogFormat, Metrics, NearCache, ReadFrom,
    SubscribeFrom, Value,
};

use crate::url::{RedisUrl, Secret};
use merge::Merger;
use settings::setting;

pub const DEFAULT_LISTEN: &str = setting("listen").default;
pub const DEFAULT_ADMIN: &str = setting("admin").default;
pub const DEFAULT_PRIMARY_REGION: &str = setting("primary.region").default;

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

/// One upstream: the primary or a read replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub region: String,
    pub url: RedisUrl,
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

/// Redis Sentinel: where the primary (and the replicas) come from instead
/// of a fixed `--primary`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentinelConfig {
    /// Each sentinel (only host and port are used).
    pub addresses: Vec<RedisUrl>,
    pub master_name: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

/// Redis Cluster: seed nodes instead of a primary and replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    pub seeds: Vec<RedisUrl>,
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
        let default = |key| u64::from_default(setting(key).default);
        DnsConfig {
            server: None,
            min_ttl_s: default("dns.min_ttl_s"),
            max_ttl_s: default("dns.max_ttl_s"),
            timeout_ms: default("dns.timeout_ms"),
        }
    }
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
            None => settings::FileConfig::default(),
            Some((_, text)) => file::parse_file(file_name.as_deref().unwrap_or("config"), text)?,
        };
        let m = Merger {
            file_name: file_name.as_deref(),
        };
        let config = Config::merge(args, &fc, &m, fly_region)?;
        let listen_source = m.source(
            args.listen.is_some(),
            setting("listen").flag,
            fc.listen.is_some(),
        );
        rules::loopback_needs_auth(&config, listen_source)?;
        rules::near_cache_alone(&config.near_cache, config.cluster.is_some())?;
        Ok(config)
    }
}

#[cfg(test)]
mod readme_tests;
#[cfg(test)]
mod tests;
