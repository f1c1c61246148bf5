//! Merging one setting: flag (or its env twin, which clap has folded in) >
//! file > default, remembering where the value came from for messages.
//! Also the upstream settings (region, primary, replicas), which are
//! structurally special.

use std::net::SocketAddr;

use super::file::FileUpstream;
use super::settings::{Setting, setting};
use super::{ConfigArgs, ConfigError, UpstreamConfig, Value};
use crate::url::{RedisUrl, redact_loose};

/// The value of one setting and where it came from.
pub(super) struct Sourced<T> {
    pub value: T,
    pub source: String,
}

pub(super) struct Merger<'a> {
    pub file_name: Option<&'a str>,
}

impl Merger<'_> {
    /// Flag (or its env twin) first, then the file.
    pub fn pick<T>(&self, flag: Option<T>, flag_name: &str, file: Option<T>) -> Option<Sourced<T>> {
        match (flag, file) {
            (Some(value), _) => Some(Sourced {
                value,
                source: flag_name.to_owned(),
            }),
            (None, Some(value)) => Some(Sourced {
                value,
                source: self.file_source(),
            }),
            (None, None) => None,
        }
    }

    pub fn file_source(&self) -> String {
        self.file_name.unwrap_or("config").to_owned()
    }

    /// Where a setting's value came from: the flag, the file or "default".
    pub fn source(&self, flag_set: bool, flag_name: &str, file_set: bool) -> String {
        match (flag_set, file_set) {
            (true, _) => flag_name.to_owned(),
            (false, true) => self.file_source(),
            (false, false) => "default".to_owned(),
        }
    }

    /// One table-driven setting, checked by its [`Value`] type.
    pub fn setting<T: Value>(
        &self,
        flag: Option<&T::Raw>,
        flag_name: &str,
        file: Option<&T::Raw>,
        key: &str,
        default: T,
        min: Option<T::Raw>,
    ) -> Result<T, ConfigError> {
        match self.pick(flag, flag_name, file) {
            None => Ok(default),
            Some(s) => {
                T::from_raw(s.value.clone(), min).map_err(|m| ConfigError::new(s.source, key, m))
            }
        }
    }
}

/// A nameserver: `IP:PORT`, or a bare IP for port 53.
pub(super) fn parse_nameserver(
    s: &str,
    source: &str,
    key: &str,
) -> Result<SocketAddr, ConfigError> {
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

/// Region of this sidecar: flag, file, then `$FLY_REGION`.
pub(super) fn region(
    a: &ConfigArgs,
    file: Option<&String>,
    m: &Merger<'_>,
    fly_region: Option<String>,
) -> Result<Option<String>, ConfigError> {
    const REGION: &str = setting("region").flag;
    Ok(match m.pick(a.region.as_ref(), REGION, file) {
        Some(s) => Some(check_region(s.value, &s.source, "region")?),
        None => match fly_region.filter(|r| !r.is_empty()) {
            Some(r) => Some(check_region(&r, "FLY_REGION", "region")?),
            None => None,
        },
    })
}

/// Stands for the primary's address until the sentinels name it (the
/// `.invalid` domain never resolves). With Sentinel, `--primary` is
/// optional and only lends its credentials, database and scheme.
pub const SENTINEL_PLACEHOLDER: &str = "redis://sentinel-primary.invalid:6379";

pub(super) fn primary(
    a: &ConfigArgs,
    fp: &FileUpstream,
    m: &Merger<'_>,
    sentinel: bool,
) -> Result<UpstreamConfig, ConfigError> {
    const URL: &Setting = setting("primary.url");
    const REGION: &Setting = setting("primary.region");
    let url = match m.pick(a.primary.as_ref(), URL.flag, fp.url.as_ref()) {
        Some(u) => parse_url(u.value, &u.source, URL.key)?,
        None if sentinel => parse_url(SENTINEL_PLACEHOLDER, "default", URL.key)?,
        None => {
            return Err(ConfigError::new(
                m.file_name.unwrap_or(URL.flag),
                URL.key,
                "required (--primary, NEARBY_PRIMARY or [primary] url; or --sentinel)",
            ));
        }
    };
    let region = match m.pick(a.primary_region.as_ref(), REGION.flag, fp.region.as_ref()) {
        Some(s) => check_region(s.value, &s.source, REGION.key)?,
        None => REGION.default.to_owned(),
    };
    Ok(UpstreamConfig { region, url })
}

/// Replicas: the flag list (or `NEARBY_REPLICAS`) replaces the file's.
pub(super) fn replicas(
    a: &ConfigArgs,
    fr: &[FileUpstream],
    m: &Merger<'_>,
) -> Result<Vec<UpstreamConfig>, ConfigError> {
    const FLAG: &str = setting("replica").flag;
    let mut replicas = Vec::new();
    if !a.replicas.is_empty() {
        for (i, entry) in a.replicas.iter().enumerate() {
            let key = format!("replica[{i}]");
            let entry = entry.trim();
            let Some((region, url)) = entry.split_once('=').filter(|(_, u)| u.contains("://"))
            else {
                return Err(ConfigError::new(
                    FLAG,
                    key,
                    format!("expected REGION=URL, got '{}'", redact_loose(entry)),
                ));
            };
            let region = check_region(region.trim(), FLAG, &format!("{key}.region"))?;
            let url = parse_url(url.trim(), FLAG, &format!("{key}.url"))?;
            replicas.push(UpstreamConfig { region, url });
        }
    } else {
        let src = m.file_source();
        for (i, r) in fr.iter().enumerate() {
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
    Ok(replicas)
}
