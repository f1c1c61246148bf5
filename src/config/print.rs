//! The effective config as TOML (for `check-config`), secrets as `***`.
//! The table-driven settings print themselves (`Config::to_file`); these
//! are the structurally special ones.

use std::path::PathBuf;

use super::file::{FileCluster, FileDns, FileSecurity, FileSentinel, FileTls, FileUpstream};
use super::{
    ClusterConfig, Config, DnsConfig, SecurityConfig, SentinelConfig, TlsConfig, UpstreamConfig,
};

impl Config {
    /// The effective config as TOML, secrets shown as `***` (for
    /// `check-config`). It parses back as a config file.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string(&self.to_file())
            .unwrap_or_else(|e| format!("# cannot print the effective config: {e}\n"))
    }
}

pub(super) fn upstream(u: &UpstreamConfig) -> FileUpstream {
    FileUpstream {
        url: Some(u.url.redacted()),
        region: Some(u.region.clone()),
    }
}

pub(super) fn security(s: &SecurityConfig) -> FileSecurity {
    FileSecurity {
        requirepass: s.requirepass.as_ref().map(|_| "***".to_owned()),
        requirepass_file: None,
        allow_unauthenticated: Some(s.allow_unauthenticated),
    }
}

pub(super) fn tls(t: &TlsConfig) -> FileTls {
    let path = |p: &Option<PathBuf>| {
        p.as_ref()
            .map(|p| PathBuf::from(p.to_string_lossy().into_owned()))
    };
    FileTls {
        ca_file: path(&t.ca_file),
        cert_file: path(&t.cert_file),
        key_file: path(&t.key_file),
        server_name: t.server_name.clone(),
    }
}

pub(super) fn dns(d: &DnsConfig) -> FileDns {
    FileDns {
        server: d.server.map(|a| a.to_string()),
        min_ttl_s: Some(d.min_ttl_s),
        max_ttl_s: Some(d.max_ttl_s),
        timeout_ms: Some(d.timeout_ms),
    }
}

pub(super) fn sentinel(s: Option<&SentinelConfig>) -> FileSentinel {
    let Some(s) = s else {
        return FileSentinel::default();
    };
    FileSentinel {
        addresses: s.addresses.iter().map(|u| u.host_port()).collect(),
        master_name: Some(s.master_name.clone()),
        username: s.username.clone(),
        password: s.password.as_ref().map(|_| "***".to_owned()),
    }
}

pub(super) fn cluster(c: Option<&ClusterConfig>) -> FileCluster {
    FileCluster {
        seeds: c.map_or_else(Vec::new, |c| c.seeds.iter().map(|u| u.redacted()).collect()),
    }
}
