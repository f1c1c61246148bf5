//! Opening a connection to an upstream: connect, then bring the connection
//! to the state a client expects (AUTH, SELECT, HELLO) before any client
//! byte is sent on it.

use std::time::Duration;

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::model::topology::Upstream;
use crate::proto::Proto;
use crate::proto::{Command, ReplyFramer, ReplyLimits};

use crate::conn::resolve::Resolver;
use crate::conn::tls::Tls;

pub use crate::conn::stream::{UpstreamReadHalf, UpstreamStream, UpstreamWriteHalf};

/// Why an upstream could not serve a request. The text ends up in the
/// client's `-ERR`, after the upstream's role, region and address.
#[derive(Debug, Clone, Error)]
pub enum UpstreamError {
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("handshake failed: {0}")]
    Handshake(String),
    #[error("connection lost: {0}")]
    Lost(String),
    #[error("no reply within {0} ms")]
    Timeout(u64),
    #[error("protocol error in reply: {0}")]
    Protocol(String),
    /// `rediss://`: the TLS configuration could not be loaded, or the TLS
    /// handshake failed (certificate, protocol, timeout).
    #[error("TLS: {0}")]
    Tls(String),
}

/// The credentials and state a new upstream connection is brought to.
#[derive(Clone, Debug, Default)]
pub struct Handshake {
    /// `(username, password)`; `None` uses the URL's credentials.
    pub auth: Option<(Option<String>, String)>,
    pub db: u32,
    pub proto: Option<Proto>,
    /// CLIENT SETNAME, so that Redis shows the client's own name (CLIENT
    /// LIST, SLOWLOG) on its dedicated connection.
    pub name: Option<bytes::Bytes>,
}

/// How one sidecar reaches its upstreams: its resolver and its TLS
/// settings. Owned values handed out by `app`, so two sidecars in one
/// process (the in-process tests) share neither.
pub struct Connector {
    pub resolver: Resolver,
    pub tls: Tls,
}

/// Connects (with TLS for `rediss://`) and runs the handshake. Returns the
/// stream and any bytes read past the handshake replies (none, in
/// practice).
pub async fn open(
    connector: &Connector,
    up: &Upstream,
    hs: &Handshake,
    connect_timeout: Duration,
) -> Result<(UpstreamStream, BytesMut), UpstreamError> {
    let start = Instant::now();
    let mut stream = connect(connector, up, connect_timeout).await?;
    let (out, expected) = handshake_commands(up, hs);
    exchange(
        &mut stream,
        out,
        expected,
        connect_timeout.saturating_sub(start.elapsed()),
    )
    .await
    .map(|buf| (stream, buf))
}

/// A connection whose handshake is written but not yet answered: the
/// caller writes `unsent` ahead of its first requests and takes the first
/// `unanswered` replies as the handshake's, so the first request leaves
/// with the handshake instead of a round trip later. A session's first
/// blocking command then reaches Redis about as soon as a command another
/// client sends right after it on a warm pipe, as with direct clients.
pub struct Opened {
    pub stream: UpstreamStream,
    /// Bytes read past the handshake replies (TLS: the handshake is done).
    pub read: BytesMut,
    pub unsent: BytesMut,
    pub unanswered: usize,
}

/// Connects and prepares the handshake without waiting for its replies.
/// TLS connections run the whole handshake first (see `open`: a refused
/// client certificate must fail here, not on a request).
pub async fn open_pipelined(
    connector: &Connector,
    up: &Upstream,
    hs: &Handshake,
    connect_timeout: Duration,
) -> Result<Opened, UpstreamError> {
    if up.url.tls {
        let (stream, read) = open(connector, up, hs, connect_timeout).await?;
        return Ok(Opened {
            stream,
            read,
            unsent: BytesMut::new(),
            unanswered: 0,
        });
    }
    let start = Instant::now();
    let mut stream = connect(connector, up, connect_timeout).await?;
    // AUTH is waited for: a request sent behind a refused AUTH could run
    // as whatever user the connection is left with (ACL `default`).
    let (auth, n) = auth_command(up, hs);
    let read = if n > 0 {
        exchange(
            &mut stream,
            auth,
            n,
            connect_timeout.saturating_sub(start.elapsed()),
        )
        .await?
    } else {
        BytesMut::with_capacity(4096)
    };
    // The rest cannot change who runs the requests, and the session has
    // checked it against the server's facts (SELECT's range, HELLO).
    let (unsent, unanswered) = state_commands(up, hs);
    Ok(Opened {
        stream,
        read,
        unsent,
        unanswered,
    })
}

/// The TCP connection, and TLS over it for `rediss://`, within the timeout.
async fn connect(
    connector: &Connector,
    up: &Upstream,
    connect_timeout: Duration,
) -> Result<UpstreamStream, UpstreamError> {
    let start = Instant::now();
    let connected = match up.addr {
        Some(addr) => crate::conn::socket::connect_addr(addr, connect_timeout).await,
        None => {
            connector
                .resolver
                .connect(&up.url.host, up.url.port, connect_timeout)
                .await
        }
    };
    let tcp = connected.map_err(|e| UpstreamError::Connect(e.to_string()))?;
    let stream = if up.url.tls {
        // TCP connect and TLS handshake share the connect timeout.
        let left = connect_timeout.saturating_sub(start.elapsed());
        let tls = tokio::time::timeout(left, connector.tls.connect(tcp, &up.url.host))
            .await
            .map_err(|_| {
                UpstreamError::Tls(format!(
                    "handshake timed out (connect timeout {} ms)",
                    connect_timeout.as_millis()
                ))
            })?
            .map_err(UpstreamError::Tls)?;
        UpstreamStream::tls(tls)
    } else {
        UpstreamStream::Tcp(tcp)
    };
    Ok(stream)
}

/// What opens a connection with the state `hs`, and how many replies it
/// gets: AUTH, SELECT, HELLO 3, CLIENT SETNAME, READONLY as needed.
fn handshake_commands(up: &Upstream, hs: &Handshake) -> (BytesMut, usize) {
    let (mut out, mut expected) = auth_command(up, hs);
    let (state, n) = state_commands(up, hs);
    out.extend_from_slice(&state);
    expected += n;
    (out, expected)
}

/// AUTH with the client's credentials, else the URL's, if any.
fn auth_command(up: &Upstream, hs: &Handshake) -> (BytesMut, usize) {
    let mut out = BytesMut::new();
    let mut expected = 0;
    let auth: Option<(Option<&str>, &str)> = match &hs.auth {
        Some((user, pass)) => Some((user.as_deref(), pass.as_str())),
        None => up
            .url
            .password
            .as_ref()
            .map(|p| (up.url.username.as_deref(), p.expose())),
    };
    if let Some((user, pass)) = auth {
        let cmd = match user {
            Some(u) => Command::from_args(&[b"AUTH", u.as_bytes(), pass.as_bytes()]),
            None => Command::from_args(&[b"AUTH", pass.as_bytes()]),
        };
        out.extend_from_slice(cmd.raw());
        expected += 1;
    }
    (out, expected)
}

/// The rest of the state: SELECT, HELLO 3, CLIENT SETNAME, READONLY.
fn state_commands(up: &Upstream, hs: &Handshake) -> (BytesMut, usize) {
    let mut out = BytesMut::new();
    let mut expected = 0;
    if hs.db != 0 {
        out.extend_from_slice(Command::from_args(&[b"SELECT", hs.db.to_string().as_bytes()]).raw());
        expected += 1;
    }
    if let Some(Proto::Resp3) = hs.proto {
        out.extend_from_slice(Command::from_args(&[b"HELLO", b"3"]).raw());
        expected += 1;
    }
    if let Some(name) = &hs.name {
        out.extend_from_slice(Command::from_args(&[b"CLIENT", b"SETNAME", name]).raw());
        expected += 1;
    }
    if up.needs_readonly() {
        // A cluster replica redirects reads with MOVED unless asked.
        out.extend_from_slice(Command::from_args(&[b"READONLY"]).raw());
        expected += 1;
    }
    (out, expected)
}

/// Writes the handshake `out` and reads its `expected` replies.
async fn exchange(
    stream: &mut UpstreamStream,
    mut out: BytesMut,
    mut expected: usize,
    connect_timeout: Duration,
) -> Result<BytesMut, UpstreamError> {
    // With TLS 1.3 the server checks the client certificate after the
    // client considers the handshake done: a PING round trip makes a
    // rejection fail here, as a TLS error, rather than on the first request.
    // Any reply, even an error (-NOAUTH), proves the session was accepted.
    let probe = stream.is_tls() && expected == 0;
    if probe {
        out.extend_from_slice(Command::from_args(&[b"PING"]).raw());
        expected += 1;
    }
    let mut buf = BytesMut::with_capacity(4096);
    if expected > 0 {
        let exchange = async {
            stream.write_all(&out).await?;
            let mut framer = ReplyFramer::new(ReplyLimits::default());
            let mut got = 0;
            while got < expected {
                match framer.next(&mut buf) {
                    Ok(Some(reply)) => {
                        if reply.is_error() && !probe {
                            let text = String::from_utf8_lossy(&reply.raw[1..])
                                .trim_end()
                                .to_string();
                            return Err(std::io::Error::other(text));
                        }
                        got += 1;
                    }
                    Ok(None) => {
                        if stream.read_buf(&mut buf).await? == 0 {
                            return Err(std::io::Error::other("closed during handshake"));
                        }
                    }
                    Err(e) => return Err(std::io::Error::other(e.to_string())),
                }
            }
            Ok(())
        };
        tokio::time::timeout(connect_timeout, exchange)
            .await
            .map_err(|_| UpstreamError::Handshake("timed out".into()))?
            .map_err(|e| {
                // A TLS alert (a refused client certificate) or a TLS
                // protocol error, rather than a Redis reply.
                let tls_error = e
                    .get_ref()
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
                if tls_error {
                    UpstreamError::Tls(format!("the server refused the session: {e}"))
                } else {
                    UpstreamError::Handshake(e.to_string())
                }
            })?;
    }
    Ok(buf)
}
