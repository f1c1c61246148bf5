//! Sockets: the client listener and upstream connections, configured with
//! socket2 (nodelay, keepalive, reuseaddr, backlog), names resolved with
//! hickory (never the blocking std resolver).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::{Resolver, TokioResolver};
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

use crate::config::DnsConfig;
use crate::url::Host;

const BACKLOG: i32 = 1024;

fn keepalive() -> TcpKeepalive {
    TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(3)
}

/// Binds the client listener. Must run inside the tokio runtime.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_tcp_nodelay(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(BACKLOG)?;
    TcpListener::from_std(s.into())
}

/// Options every accepted client socket gets (Linux inherits them from the
/// listener, but that is not portable).
pub fn tune_accepted(stream: &TcpStream) {
    let s = SockRef::from(stream);
    let _ = s.set_tcp_nodelay(true);
    let _ = s.set_tcp_keepalive(&keepalive());
}

/// The process-wide resolver and the bound for one lookup.
struct Dns {
    resolver: TokioResolver,
    timeout: Duration,
}

static DNS: Mutex<Option<Arc<Dns>>> = Mutex::new(None);

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
            Resolver::builder_with_config(
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

/// Installs the resolver every lookup uses from now on: the configured
/// nameserver, or the system configuration. Call it once at startup, before
/// anything resolves; without it the system configuration with default
/// settings is used.
pub fn init_resolver(cfg: &DnsConfig) -> io::Result<()> {
    let dns = Dns {
        resolver: build_resolver(cfg)?,
        timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
    };
    *DNS.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(dns));
    Ok(())
}

fn dns() -> io::Result<Arc<Dns>> {
    let mut slot = DNS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(d) = slot.as_ref() {
        return Ok(d.clone());
    }
    let cfg = DnsConfig::default();
    let dns = Arc::new(Dns {
        resolver: build_resolver(&cfg)?,
        timeout: Duration::from_millis(cfg.timeout_ms),
    });
    *slot = Some(dns.clone());
    Ok(dns)
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

/// Looks `name` up with the configured resolver, bounded by the DNS timeout
/// (and by `limit`, when given). An answer without addresses is an error.
pub async fn lookup(name: &str, limit: Option<Duration>) -> io::Result<Lookup> {
    let dns = dns()?;
    let limit = limit.map_or(dns.timeout, |l| l.min(dns.timeout));
    let found = tokio::time::timeout(limit, dns.resolver.lookup_ip(name))
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
pub async fn resolve(host: &Host, port: u16, limit: Duration) -> io::Result<Vec<SocketAddr>> {
    let name = match host {
        Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, port)]),
        Host::Name(n) => n,
    };
    let mut ips = lookup(name.as_str(), Some(limit)).await?.ips;
    ips.sort_by_key(|ip| ip.is_ipv6());
    Ok(ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect())
}

/// Connects to one address with socket2 options and a tokio timeout.
pub async fn connect_addr(addr: SocketAddr, limit: Duration) -> io::Result<TcpStream> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_tcp_nodelay(true)?;
    s.set_tcp_keepalive(&keepalive())?;
    s.set_nonblocking(true)?;
    let sock = TcpSocket::from_std_stream(std::net::TcpStream::from(s));
    match tokio::time::timeout(limit, sock.connect(addr)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect timed out after {} ms", limit.as_millis()),
        )),
    }
}

/// Resolves and tries every address in order until one connects.
pub async fn connect(host: &Host, port: u16, limit: Duration) -> io::Result<TcpStream> {
    let addrs = resolve(host, port, limit).await?;
    let mut last = None;
    for addr in addrs {
        match connect_addr(addr, limit).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no address to connect to")))
}

// ---------------------------------------------------------------------------
// Upstream streams: plain TCP or TLS

type Tls = TlsStream<TcpStream>;

/// A connection to an upstream: plain TCP (`redis://`) or TLS over TCP
/// (`rediss://`).
pub enum UpstreamStream {
    Tcp(TcpStream),
    Tls(Flushing<Box<Tls>>),
}

/// The read half of an [`UpstreamStream`] (see [`UpstreamStream::into_split`]).
pub enum UpstreamReadHalf {
    Tcp(OwnedReadHalf),
    Tls(tokio::io::ReadHalf<Tls>),
}

/// The write half of an [`UpstreamStream`].
pub enum UpstreamWriteHalf {
    Tcp(OwnedWriteHalf),
    Tls(Flushing<tokio::io::WriteHalf<Tls>>),
}

impl UpstreamStream {
    /// A TLS stream, after its handshake.
    pub fn tls(s: Tls) -> UpstreamStream {
        UpstreamStream::Tls(Flushing::new(Box::new(s)))
    }

    /// Splits into halves a reader and a writer task can own. Plain TCP
    /// splits without a lock; TLS shares one session between the halves.
    pub fn into_split(self) -> (UpstreamReadHalf, UpstreamWriteHalf) {
        match self {
            UpstreamStream::Tcp(s) => {
                let (r, w) = s.into_split();
                (UpstreamReadHalf::Tcp(r), UpstreamWriteHalf::Tcp(w))
            }
            UpstreamStream::Tls(s) => {
                let (r, w) = tokio::io::split(*s.inner);
                (
                    UpstreamReadHalf::Tls(r),
                    UpstreamWriteHalf::Tls(Flushing::new(w)),
                )
            }
        }
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, UpstreamStream::Tls(_))
    }
}

/// A TLS writer whose writes complete only once their records reached the
/// socket.
///
/// tokio-rustls reports a write done as soon as rustls holds the bytes; if
/// the socket was full, the last records wait inside rustls until the next
/// write or flush. The callers here never flush (plain TCP needs none), so a
/// request could sit unsent while its reply is awaited. This wrapper flushes
/// after each write and reports the write only when the flush completed:
/// until then it answers `Pending` and, when polled again with the same
/// buffer (as `write_all` does), returns the count it owes.
pub struct Flushing<W> {
    inner: W,
    /// Bytes accepted by the last write whose flush is still pending, and
    /// the buffer (address, length) they came from.
    owed: Option<(usize, usize, usize)>,
}

impl<W: AsyncWrite + Unpin> Flushing<W> {
    fn new(inner: W) -> Flushing<W> {
        Flushing { inner, owed: None }
    }

    /// Finishes a write: flushes, then reports `n` (or owes it).
    fn settle(
        &mut self,
        cx: &mut Context<'_>,
        n: usize,
        key: (usize, usize),
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                self.owed = Some((n, key.0, key.1));
                Poll::Pending
            }
        }
    }

    /// A write owed from an earlier poll: `None` when there is none.
    fn resume(
        &mut self,
        cx: &mut Context<'_>,
        key: (usize, usize),
    ) -> Option<Poll<io::Result<usize>>> {
        let (n, ptr, len) = self.owed?;
        if (ptr, len) != key {
            self.owed = None;
            return Some(Poll::Ready(Err(io::Error::other(
                "TLS write resumed with different data after an interrupted write",
            ))));
        }
        Some(match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(r) => {
                self.owed = None;
                Poll::Ready(r.map(|()| n))
            }
            Poll::Pending => Poll::Pending,
        })
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Flushing<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let key = (buf.as_ptr() as usize, buf.len());
        if let Some(p) = this.resume(cx, key) {
            return p;
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => this.settle(cx, n, key),
            other => other,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let key = (
            bufs.first().map_or(0, |b| b.as_ptr() as usize),
            bufs.iter().map(|b| b.len()).sum(),
        );
        if let Some(p) = this.resume(cx, key) {
            return p;
        }
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => this.settle(cx, n, key),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Flushing<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// Forwards `AsyncRead` to whichever variant is present.
macro_rules! forward_read {
    ($ty:ident) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Tcp(s) => Pin::new(s).poll_read(cx, buf),
                    $ty::Tls(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
}

/// Forwards `AsyncWrite` (vectored writes included) likewise.
macro_rules! forward_write {
    ($ty:ident) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $ty::Tcp(s) => Pin::new(s).poll_write(cx, buf),
                    $ty::Tls(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $ty::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    $ty::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $ty::Tcp(s) => s.is_write_vectored(),
                    $ty::Tls(s) => s.is_write_vectored(),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Tcp(s) => Pin::new(s).poll_flush(cx),
                    $ty::Tls(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $ty::Tcp(s) => Pin::new(s).poll_shutdown(cx),
                    $ty::Tls(s) => Pin::new(s).poll_shutdown(cx),
                }
            }
        }
    };
}

forward_read!(UpstreamStream);
forward_write!(UpstreamStream);
forward_read!(UpstreamReadHalf);
forward_write!(UpstreamWriteHalf);
