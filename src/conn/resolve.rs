//! Name resolution with hickory (never the blocking std resolver), and
//! connecting to a host by trying each of its addresses.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver as Hickory, TokioResolver};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::socket::connect_addr;
use crate::config::DnsConfig;
use crate::url::Host;

/// The resolver every lookup of one sidecar uses, and the bound for one
/// lookup. Built once at startup (a reload keeps it: see `control::reload`).
pub struct Resolver {
    /// Or why it could not be built: every lookup then fails with that.
    inner: Result<TokioResolver, String>,
    timeout: Duration,
}

impl Resolver {
    /// The configured nameserver, or the system configuration
    /// (`/etc/resolv.conf`, `/etc/hosts`); building sends no packets.
    pub fn new(cfg: &DnsConfig) -> io::Result<Resolver> {
        Ok(Resolver {
            inner: Ok(build_resolver(cfg)?),
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
        })
    }

    /// `new`, falling back to the system defaults with a log line; when even
    /// those cannot be read, a resolver whose lookups fail with the reason
    /// (IP-literal upstreams need none).
    pub fn new_or_default(cfg: &DnsConfig) -> Resolver {
        Resolver::new(cfg).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot configure the DNS resolver; using the system defaults");
            let d = DnsConfig::default();
            Resolver::new(&d).unwrap_or_else(|e| Resolver {
                inner: Err(e.to_string()),
                timeout: Duration::from_millis(d.timeout_ms),
            })
        })
    }
}

fn build_resolver(cfg: &DnsConfig) -> io::Result<TokioResolver> {
    let mut b = match cfg.server {
        // UDP, and TCP for truncated answers.
        Some(server) => {
            let conns = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                .into_iter()
                .map(|mut c| {
                    c.port = server.port();
                    c
                })
                .collect();
            let ns = NameServerConfig::new(server.ip(), true, conns);
            Hickory::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        // /etc/resolv.conf and /etc/hosts; building sends no packets.
        None => TokioResolver::builder_tokio()
            .map_err(|e| io::Error::other(format!("reading the system DNS configuration: {e}")))?,
    };
    let o = b.options_mut();
    let timeout = Duration::from_millis(cfg.timeout_ms.max(1));
    // Two attempts fit in one lookup's time, so a lost UDP packet is retried.
    o.timeout = (timeout / 2).max(Duration::from_millis(1));
    o.attempts = 2;
    // Both families, every address kept: `resolve` orders them, discovery
    // makes an upstream of each.
    o.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // The cache follows discovery's floor and ceiling, so a re-resolution
    // at the (clamped) TTL asks the server instead of the cache.
    let floor = Duration::from_secs(cfg.min_ttl_s);
    let ceiling = Duration::from_secs(cfg.max_ttl_s.max(cfg.min_ttl_s));
    o.positive_min_ttl = Some(floor);
    o.positive_max_ttl = Some(ceiling);
    o.negative_max_ttl = Some(floor);
    b.build()
        .map_err(|e| io::Error::other(format!("building the DNS resolver: {e}")))
}

/// The addresses a name has now, in the order the resolver gave them (A
/// records, then AAAA), without duplicates.
#[derive(Clone, Debug)]
pub struct Lookup {
    pub ips: Vec<IpAddr>,
    /// When the answer expires (the smallest TTL, within the resolver's
    /// floor and ceiling).
    pub valid_until: Instant,
}

impl Resolver {
    /// Looks `name` up with the configured resolver, bounded by the DNS timeout
    /// (and by `limit`, when given). An answer without addresses is an error.
    pub async fn lookup(&self, name: &str, limit: Option<Duration>) -> io::Result<Lookup> {
        let resolver = self
            .inner
            .as_ref()
            .map_err(|e| io::Error::other(e.clone()))?;
        let limit = limit.map_or(self.timeout, |l| l.min(self.timeout));
        let found = tokio::time::timeout(limit, resolver.lookup_ip(name))
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("resolving {name} timed out after {} ms", limit.as_millis()),
                )
            })?
            .map_err(|e| io::Error::other(format!("resolving {name}: {e}")))?;
        let mut ips: Vec<IpAddr> = Vec::new();
        for ip in found.iter() {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        if ips.is_empty() {
            return Err(io::Error::other(format!("{name} has no addresses")));
        }
        Ok(Lookup {
            ips,
            valid_until: Instant::from_std(found.valid_until()),
        })
    }

    /// Addresses for a host, IPv4 first: a Redis bound only to 127.0.0.1 would
    /// otherwise fail on `::1` for `localhost`. Every address is kept, so
    /// [`connect`] can try the next one.
    pub async fn resolve(
        &self,
        host: &Host,
        port: u16,
        limit: Duration,
    ) -> io::Result<Vec<SocketAddr>> {
        let name = match host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, port)]),
            Host::Name(n) => n,
        };
        let mut ips = self.lookup(name.as_str(), Some(limit)).await?.ips;
        ips.sort_by_key(|ip| ip.is_ipv6());
        Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }

    /// Resolves and tries every address in order until one connects.
    pub async fn connect(&self, host: &Host, port: u16, limit: Duration) -> io::Result<TcpStream> {
        let addrs = self.resolve(host, port, limit).await?;
        let mut last = None;
        for addr in addrs {
            match connect_addr(addr, limit).await {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no address to connect to")))
    }
}
