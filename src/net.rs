//! Sockets: the client listener and upstream connections, configured with
//! socket2 (nodelay, keepalive, reuseaddr, backlog), names resolved with
//! hickory (never the blocking std resolver).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use socket2::{Domain, Protocol, SockRef, Socket, TcpKeepalive, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

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

fn resolver() -> Option<&'static TokioResolver> {
    static R: OnceLock<Option<TokioResolver>> = OnceLock::new();
    R.get_or_init(|| {
        TokioResolver::builder_tokio()
            .ok()
            .and_then(|b| b.build().ok())
    })
    .as_ref()
}

/// Addresses for a host, IPv4 first: a Redis bound only to 127.0.0.1 would
/// otherwise fail on `::1` for `localhost`.
pub async fn resolve(host: &Host, port: u16, limit: Duration) -> io::Result<Vec<SocketAddr>> {
    let name = match host {
        Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, port)]),
        Host::Name(n) => n,
    };
    let r = resolver().ok_or_else(|| io::Error::other("no DNS resolver configuration"))?;
    let found = tokio::time::timeout(limit, r.lookup_ip(name.as_str()))
        .await
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("resolving {name} timed out"),
            )
        })?
        .map_err(|e| io::Error::other(format!("resolving {name}: {e}")))?;
    let mut ips: Vec<IpAddr> = found.iter().collect();
    ips.sort_by_key(|ip| ip.is_ipv6());
    if ips.is_empty() {
        return Err(io::Error::other(format!("{name} has no addresses")));
    }
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
