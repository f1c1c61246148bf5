//! The structurally special settings whose checks span fields: the client
//! password (requirepass or requirepass_file), TLS (cert/key pairs), DNS
//! (TTL bounds), and listening beyond loopback (needs auth).

use super::file::{FileCluster, FileDns, FileSecurity, FileSentinel, FileTls};
use super::merge::{Merger, parse_nameserver};
use super::settings::{Setting, setting};
use super::{
    ClusterConfig, Config, ConfigArgs, ConfigError, DnsConfig, SecurityConfig, SentinelConfig,
    TlsConfig,
};
use crate::url::{RedisUrl, Secret};

/// Redis Cluster: seed URLs (flag list, or the file's); not with Sentinel.
pub(super) fn cluster(
    a: &ConfigArgs,
    fc: &FileCluster,
    m: &Merger<'_>,
) -> Result<Option<ClusterConfig>, ConfigError> {
    const SEEDS: &Setting = setting("cluster.seeds");
    let (list, source) = if a.cluster.is_empty() {
        (fc.seeds.clone(), m.file_source())
    } else {
        (a.cluster.clone(), SEEDS.flag.to_owned())
    };
    if list.is_empty() {
        return Ok(None);
    }
    if !a.sentinels.is_empty() {
        return Err(ConfigError::new(
            &source,
            SEEDS.key,
            "a cluster has no Sentinel; use one or the other",
        ));
    }
    let mut seeds = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let url = entry
            .trim()
            .parse::<RedisUrl>()
            .map_err(|e| ConfigError::new(&source, format!("{}[{i}]", SEEDS.key), e.to_string()))?;
        seeds.push(url);
    }
    Ok(Some(ClusterConfig { seeds }))
}

/// The near-cache fronts one primary and its replicas; a cluster's
/// shards are not cached yet, and silently not caching would mislead.
pub(super) fn near_cache_alone(
    nc: &super::NearCacheConfig,
    cluster: bool,
) -> Result<(), ConfigError> {
    const MODE: &Setting = setting("near_cache.mode");
    if cluster && nc.mode == super::NearCache::On {
        return Err(ConfigError::new(
            MODE.flag,
            MODE.key,
            "not supported with --cluster yet",
        ));
    }
    Ok(())
}

/// Sentinel: the addresses (flag list, or the file's) and the master name
/// they monitor; the name is required with any address.
pub(super) fn sentinel(
    a: &ConfigArgs,
    fs: &FileSentinel,
    m: &Merger<'_>,
) -> Result<Option<SentinelConfig>, ConfigError> {
    const ADDRS: &Setting = setting("sentinel.addresses");
    const NAME: &Setting = setting("sentinel.master_name");
    const USER: &Setting = setting("sentinel.username");
    const PASS: &Setting = setting("sentinel.password");
    let (list, source) = if a.sentinels.is_empty() {
        (fs.addresses.clone(), m.file_source())
    } else {
        (a.sentinels.clone(), ADDRS.flag.to_owned())
    };
    let name = m.pick(a.sentinel_master.clone(), NAME.flag, fs.master_name.clone());
    if list.is_empty() {
        if let Some(n) = name {
            return Err(ConfigError::new(
                n.source,
                NAME.key,
                "set, but no sentinel is (--sentinel HOST:PORT or [sentinel] addresses)",
            ));
        }
        return Ok(None);
    }
    let mut addresses = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let entry = entry.trim();
        let url = format!("redis://{entry}")
            .parse::<RedisUrl>()
            .ok()
            .filter(|_| !entry.contains(['/', '@']))
            .ok_or_else(|| {
                ConfigError::new(
                    &source,
                    format!("{}[{i}]", ADDRS.key),
                    format!("expected HOST:PORT, got '{entry}'"),
                )
            })?;
        addresses.push(url);
    }
    let master_name = name
        .ok_or_else(|| {
            ConfigError::new(
                &source,
                NAME.key,
                "required with --sentinel (--sentinel-master NAME or [sentinel] master_name)",
            )
        })?
        .value;
    let username = m
        .pick(a.sentinel_username.clone(), USER.flag, fs.username.clone())
        .map(|s| s.value);
    let password = m
        .pick(
            a.sentinel_password.clone(),
            PASS.flag,
            fs.password.clone().map(Secret::new),
        )
        .map(|s| s.value);
    Ok(Some(SentinelConfig {
        addresses,
        master_name,
        username,
        password,
    }))
}

/// Listening beyond loopback needs client authentication, or an explicit
/// opt-out.
pub(super) fn loopback_needs_auth(c: &Config, listen_source: String) -> Result<(), ConfigError> {
    if !c.listen.ip().is_loopback()
        && c.security.requirepass.is_none()
        && !c.security.allow_unauthenticated
    {
        return Err(ConfigError::new(
            listen_source,
            "listen",
            format!(
                "{} is not a loopback address; set --requirepass or --allow-unauthenticated",
                c.listen
            ),
        ));
    }
    Ok(())
}

/// TLS: carried as given; only the cert/key pairing is checked.
pub(super) fn tls(
    a: &ConfigArgs,
    ftls: &FileTls,
    m: &Merger<'_>,
) -> Result<TlsConfig, ConfigError> {
    const CA: &str = setting("tls.ca_file").flag;
    const CERT: &str = setting("tls.cert_file").flag;
    const KEY: &str = setting("tls.key_file").flag;
    const SERVER_NAME: &str = setting("tls.server_name").flag;
    let ca_file = m.pick(a.tls_ca_file.clone(), CA, ftls.ca_file.clone());
    let cert_file = m.pick(a.tls_cert_file.clone(), CERT, ftls.cert_file.clone());
    let key_file = m.pick(a.tls_key_file.clone(), KEY, ftls.key_file.clone());
    let server_name = m.pick(
        a.tls_server_name.clone(),
        SERVER_NAME,
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
    Ok(TlsConfig {
        ca_file: ca_file.map(|s| s.value),
        cert_file: cert_file.map(|s| s.value),
        key_file: key_file.map(|s| s.value),
        server_name: server_name.map(|s| s.value),
    })
}

pub(super) fn dns(a: &ConfigArgs, fd: &FileDns, m: &Merger<'_>) -> Result<DnsConfig, ConfigError> {
    const SERVER: &Setting = setting("dns.server");
    const MIN_TTL: &Setting = setting("dns.min_ttl_s");
    const MAX_TTL: &Setting = setting("dns.max_ttl_s");
    const TIMEOUT: &Setting = setting("dns.timeout_ms");
    let d = DnsConfig::default();
    let server = match m.pick(a.dns_server.as_ref(), SERVER.flag, fd.server.as_ref()) {
        None => None,
        Some(s) => Some(parse_nameserver(s.value, &s.source, SERVER.key)?),
    };
    // A day at most: DNS TTLs beyond that are clamped by resolvers anyway.
    const MAX_TTL_S: u64 = 86_400;
    let at_most_a_day = |v: u64, flag: Option<u64>, s: &Setting| {
        if v <= MAX_TTL_S {
            return Ok(v);
        }
        let source = if flag.is_some() {
            s.flag.to_owned()
        } else {
            m.file_source()
        };
        Err(ConfigError::new(
            source,
            s.key,
            format!("must be at most {MAX_TTL_S}, got {v}"),
        ))
    };
    let min_ttl_s = m.setting(
        a.dns_min_ttl_s.as_ref(),
        MIN_TTL.flag,
        fd.min_ttl_s.as_ref(),
        MIN_TTL.key,
        d.min_ttl_s,
        Some(1),
    )?;
    let min_ttl_s = at_most_a_day(min_ttl_s, a.dns_min_ttl_s, MIN_TTL)?;
    // The ceiling must not be below the floor; with only the floor set
    // above the default ceiling, the ceiling follows it.
    let max_ttl_s = match m.pick(a.dns_max_ttl_s, MAX_TTL.flag, fd.max_ttl_s) {
        None => d.max_ttl_s.max(min_ttl_s),
        Some(s) => {
            let v = m.setting(Some(&s.value), &s.source, None, MAX_TTL.key, 1, Some(1))?;
            let v = at_most_a_day(v, a.dns_max_ttl_s, MAX_TTL)?;
            if v < min_ttl_s {
                return Err(ConfigError::new(
                    s.source,
                    MAX_TTL.key,
                    format!("must be at least dns.min_ttl_s ({min_ttl_s}), got {v}"),
                ));
            }
            v
        }
    };
    let timeout_ms = m.setting(
        a.dns_timeout_ms.as_ref(),
        TIMEOUT.flag,
        fd.timeout_ms.as_ref(),
        TIMEOUT.key,
        d.timeout_ms,
        Some(1),
    )?;
    Ok(DnsConfig {
        server,
        min_ttl_s,
        max_ttl_s,
        timeout_ms,
    })
}

pub(super) fn security(
    a: &ConfigArgs,
    fs: &FileSecurity,
    m: &Merger<'_>,
) -> Result<SecurityConfig, ConfigError> {
    const PASS: &str = setting("security.requirepass").flag;
    const PASS_FILE: &str = setting("security.requirepass_file").flag;
    // requirepass and requirepass_file are one setting: flags (either one)
    // override the file's pair as a whole.
    let (pass, pass_file, source) = if a.requirepass.is_some() || a.requirepass_file.is_some() {
        let src = if a.requirepass.is_some() {
            PASS
        } else {
            PASS_FILE
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
            let source = if source == PASS {
                PASS_FILE.to_owned()
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
