//! A connection to an upstream, plain TCP or TLS, and its halves.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::client::TlsStream;

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
