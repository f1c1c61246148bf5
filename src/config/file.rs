//! The file shape of the structurally special settings (upstreams,
//! security, TLS, DNS), and reading the file. `FileConfig` and the scalar
//! sections are declared by the settings table (`settings.rs`).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::de::DeTable;

use super::ConfigError;
use super::settings::FileConfig;
use super::toml_error::toml_error;

#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileUpstream {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileSecurity {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requirepass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requirepass_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_unauthenticated: Option<bool>,
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
pub(super) struct FileTls {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl FileTls {
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none()
            && self.cert_file.is_none()
            && self.key_file.is_none()
            && self.server_name.is_none()
    }
}

#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileDns {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_ttl_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ttl_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

#[derive(Deserialize, Serialize, Default, Debug)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileCluster {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<String>,
}

impl FileCluster {
    pub fn is_empty(&self) -> bool {
        self.seeds.is_empty()
    }
}

#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileSentinel {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

impl FileSentinel {
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
            && self.master_name.is_none()
            && self.username.is_none()
            && self.password.is_none()
    }
}

impl fmt::Debug for FileSentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSentinel")
            .field("addresses", &self.addresses)
            .field("master_name", &self.master_name)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Parses the config file; errors name the key path and the line.
pub(super) fn parse_file(name: &str, text: &str) -> Result<FileConfig, ConfigError> {
    let (tree, syntax_errors) = DeTable::parse_recoverable(text);
    if let Some(e) = syntax_errors.first() {
        return Err(toml_error(name, text, tree.get_ref(), e));
    }
    toml::from_str::<FileConfig>(text).map_err(|e| toml_error(name, text, tree.get_ref(), &e))
}
