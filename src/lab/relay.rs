//! A delaying TCP relay: the region simulator.
//!
//! The kernel this project is developed and tested on has no `netem`, so the
//! distance between a sidecar and an upstream Redis is simulated in user space.
//! A [`Relay`] listens on one address and forwards every accepted connection to
//! a target, holding each chunk of data for half the configured round-trip time
//! in each direction.
//!
//! The delay is a *latency*, not a throughput limit: each direction has a reader
//! that stamps every chunk with the instant it may be delivered (read time +
//! rtt/2) and a writer that sleeps until that instant and then writes. Many
//! chunks are in flight at once, so a pipeline of 10k commands costs one round
//! trip, not 10k. In-flight data is capped per direction ([`MAX_IN_FLIGHT`]),
//! which applies backpressure to the sender instead of buffering without bound.
//!
//! Used by `nearby lab` and by the integration tests to place upstreams at
//! chosen distances, and to cut them off ([`Relay::set_blackhole`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

/// Bytes allowed in flight (read but not yet written) per direction of one
/// relayed connection. The reader stops reading when this is reached.
pub const MAX_IN_FLIGHT: usize = 16 * 1024 * 1024;

/// Size of one read from a socket.
const READ_CHUNK: usize = 64 * 1024;

/// State shared by the [`Relay`] handle and all of its tasks.
#[derive(Debug)]
struct Shared {
    /// Current round-trip time, in nanoseconds.
    rtt_nanos: AtomicU64,
    /// `true` while the link is a black hole.
    blackhole: watch::Sender<bool>,
    /// Set once by [`Relay::shutdown`].
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn one_way(&self) -> Duration {
        Duration::from_nanos(self.rtt_nanos.load(Ordering::Relaxed)) / 2
    }

    fn blackholed(&self) -> bool {
        *self.blackhole.borrow()
    }
}

/// A delaying TCP relay. Dropping it shuts it down.
#[derive(Debug)]
pub struct Relay {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
    target: SocketAddr,
    accept: AbortHandle,
}

impl Relay {
    /// Listens on `listen` (e.g. `127.0.0.1:0`) and forwards each accepted
    /// connection to `target`, adding `rtt` of round trip (`rtt / 2` each way).
    ///
    /// Must be called from within a tokio runtime; the relay's tasks live on it.
    pub async fn start(listen: SocketAddr, target: SocketAddr, rtt: Duration) -> io::Result<Relay> {
        let listener = TcpListener::bind(listen).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            rtt_nanos: AtomicU64::new(duration_nanos(rtt)),
            blackhole: watch::channel(false).0,
            shutdown: watch::channel(false).0,
        });
        let accept = tokio::spawn(accept_loop(listener, target, shared.clone())).abort_handle();
        Ok(Relay {
            shared,
            local_addr,
            target,
            accept,
        })
    }

    /// The address the relay listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address every connection is forwarded to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Changes the round-trip time. Applies to data read after the change, on
    /// existing and new connections; data already in flight keeps its
    /// delivery time (and order is always preserved).
    pub fn set_rtt(&self, rtt: Duration) {
        self.shared
            .rtt_nanos
            .store(duration_nanos(rtt), Ordering::Relaxed);
    }

    /// The current round-trip time.
    pub fn rtt(&self) -> Duration {
        Duration::from_nanos(self.shared.rtt_nanos.load(Ordering::Relaxed))
    }

    /// Turns the black hole on or off.
    ///
    /// On: bytes are read and silently dropped in both directions, including
    /// bytes already in flight; connections stay open and new ones are
    /// accepted, but nothing arrives (not even a close). Off: traffic flows
    /// again; dropped bytes are gone.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.blackhole.send_replace(on);
    }

    /// Whether the black hole is on.
    pub fn is_blackhole(&self) -> bool {
        self.shared.blackholed()
    }

    /// Stops accepting and closes every relayed connection. Idempotent; also
    /// done on drop.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        self.accept.abort();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Accepts connections until shut down. Owns every connection task (through
/// `conns`), so aborting this task closes every relayed connection.
async fn accept_loop(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|down| *down) => return,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        match accepted {
            Ok((client, _peer)) => {
                conns.spawn(relay_connection(client, target, shared.clone()));
            }
            Err(e) => {
                // Typically EMFILE or a connection reset before accept; back
                // off briefly rather than spin.
                tracing::debug!(error = %e, "relay accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Relays one connection until both directions are done or either fails.
async fn relay_connection(client: TcpStream, target: SocketAddr, shared: Arc<Shared>) {
    let upstream = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, %target, "relay could not reach its target");
            return; // dropping `client` closes it
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client_rd, client_wr) = client.into_split();
    let (upstream_rd, upstream_wr) = upstream.into_split();

    // Four tasks so both directions can use different cores. Dropping the set
    // (on error, or when this task is aborted) aborts them all, which drops
    // the sockets and closes both connections.
    let mut tasks: JoinSet<io::Result<()>> = JoinSet::new();
    spawn_direction(&mut tasks, client_rd, upstream_wr, &shared);
    spawn_direction(&mut tasks, upstream_rd, client_wr, &shared);
    while let Some(res) = tasks.join_next().await {
        match res {
            Ok(Ok(())) => {}
            // An I/O error on either side (or a panic) ends the whole
            // connection: close both sockets now.
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// One chunk in flight: deliver `data` at `deadline`.
struct Chunk {
    deadline: Instant,
    data: Bytes,
    /// Holds `data.len()` bytes of the direction's in-flight budget.
    _permit: OwnedSemaphorePermit,
}

fn spawn_direction(
    tasks: &mut JoinSet<io::Result<()>>,
    rd: OwnedReadHalf,
    wr: OwnedWriteHalf,
    shared: &Arc<Shared>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    tasks.spawn(read_side(rd, tx, budget, shared.clone()));
    tasks.spawn(write_side(wr, rx, shared.clone()));
}

/// Reads chunks, stamps each with its delivery time and queues it. Returns at
/// end of stream, which closes the queue.
async fn read_side(
    mut rd: OwnedReadHalf,
    tx: mpsc::UnboundedSender<Chunk>,
    budget: Arc<Semaphore>,
    shared: Arc<Shared>,
) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        buf.reserve(READ_CHUNK);
        let n = rd.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let data = buf.split().freeze();
        if shared.blackholed() {
            continue;
        }
        let deadline = now + shared.one_way();
        // n <= READ_CHUNK + slack, far below u32::MAX and MAX_IN_FLIGHT.
        let permits = u32::try_from(n.min(MAX_IN_FLIGHT)).unwrap_or(u32::MAX);
        let permit = budget
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| io::Error::other("relay budget closed"))?;
        if tx
            .send(Chunk {
                deadline,
                data,
                _permit: permit,
            })
            .is_err()
        {
            // The writer is gone (it failed); the connection is ending.
            return Ok(());
        }
    }
}

/// Writes each queued chunk once its delivery time has come. When the queue
/// closes (the reader saw end of stream) and everything is flushed, closes the
/// write side, so the peer sees the close too.
async fn write_side(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Chunk>,
    shared: Arc<Shared>,
) -> io::Result<()> {
    while let Some(chunk) = rx.recv().await {
        if chunk.deadline > Instant::now() {
            tokio::time::sleep_until(chunk.deadline).await;
        }
        if shared.blackholed() {
            continue; // lost in flight
        }
        wr.write_all(&chunk.data).await?;
    }
    // A black hole swallows the close as well: deliver it only once the link
    // is back (or never, if the relay is shut down first).
    let mut blackhole = shared.blackhole.subscribe();
    let _ = blackhole.wait_for(|on| !*on).await;
    wr.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback; returns its address.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn relay(rtt_ms: u64) -> Relay {
        let target = echo_server().await;
        Relay::start(
            "127.0.0.1:0".parse().unwrap(),
            target,
            Duration::from_millis(rtt_ms),
        )
        .await
        .unwrap()
    }

    async fn connect(relay: &Relay) -> TcpStream {
        let s = TcpStream::connect(relay.local_addr()).await.unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Sends `msg`, reads it back, returns the elapsed time.
    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
        let start = Instant::now();
        s.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
            .await
            .expect("echo timed out")
            .unwrap();
        assert_eq!(back, msg);
        start.elapsed()
    }

    #[tokio::test]
    async fn round_trip_adds_rtt() {
        let relay = relay(40).await;
        assert_eq!(relay.rtt(), Duration::from_millis(40));
        let mut s = connect(&relay).await;
        for _ in 0..3 {
            let rt = round_trip(&mut s, b"hello").await;
            assert!(rt >= Duration::from_millis(40), "too fast: {rt:?}");
            assert!(rt < Duration::from_millis(70), "too slow: {rt:?}");
        }
    }

    #[tokio::test]
    async fn zero_rtt_passes_through() {
        let relay = relay(0).await;
        let mut s = connect(&relay).await;
        round_trip(&mut s, b"warm").await;
        let rt = round_trip(&mut s, b"hello").await;
        assert!(rt < Duration::from_millis(20), "too slow: {rt:?}");
    }

    #[tokio::test]
    async fn set_rtt_changes_existing_and_new_connections() {
        let relay = relay(0).await;
        let mut s = connect(&relay).await;
        round_trip(&mut s, b"warm").await;

        relay.set_rtt(Duration::from_millis(100));
        assert_eq!(relay.rtt(), Duration::from_millis(100));
        let rt = round_trip(&mut s, b"slow").await;
        assert!(rt >= Duration::from_millis(100), "too fast: {rt:?}");
        assert!(rt < Duration::from_millis(130), "too slow: {rt:?}");

        let mut s2 = connect(&relay).await;
        let rt = round_trip(&mut s2, b"new").await;
        assert!(
            rt >= Duration::from_millis(100),
            "new conn too fast: {rt:?}"
        );

        relay.set_rtt(Duration::from_millis(10));
        let rt = round_trip(&mut s, b"fast").await;
        assert!(rt >= Duration::from_millis(10), "too fast: {rt:?}");
        assert!(rt < Duration::from_millis(40), "too slow: {rt:?}");
    }

    #[tokio::test]
    async fn blackhole_drops_then_recovers() {
        let relay = relay(10).await;
        let mut s = connect(&relay).await;
        round_trip(&mut s, b"before").await;

        relay.set_blackhole(true);
        assert!(relay.is_blackhole());
        s.write_all(b"lost").await.unwrap();
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
        assert!(r.is_err(), "read should time out, got {r:?}");

        // New connections are accepted, but nothing flows.
        let mut s2 = connect(&relay).await;
        s2.write_all(b"also lost").await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(300), s2.read(&mut buf)).await;
        assert!(r.is_err(), "read should time out, got {r:?}");

        relay.set_blackhole(false);
        assert!(!relay.is_blackhole());
        round_trip(&mut s, b"after").await;
        round_trip(&mut s2, b"after too").await;
    }

    #[tokio::test]
    async fn pipeline_is_not_serialised_by_delay() {
        let relay = relay(20).await;
        let mut s = connect(&relay).await;
        let (mut r, mut w) = s.split();
        let n = 1000usize;
        let start = Instant::now();
        let writer = async {
            for i in 0..n {
                w.write_all(format!("msg{i:06}\n").as_bytes())
                    .await
                    .unwrap();
            }
        };
        let reader = async {
            let mut got = vec![0u8; n * 10];
            r.read_exact(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(writer, reader)
        })
        .await
        .expect("pipeline timed out");
        let elapsed = start.elapsed();
        let expected: Vec<u8> = (0..n)
            .flat_map(|i| format!("msg{i:06}\n").into_bytes())
            .collect();
        assert_eq!(got, expected, "order must be preserved");
        assert!(
            elapsed >= Duration::from_millis(20),
            "too fast: {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_millis(300),
            "too slow: {elapsed:?}"
        );
    }

    #[tokio::test]
    async fn large_transfer_respects_budget_and_order() {
        let relay = relay(5).await;
        let mut s = connect(&relay).await;
        let (mut r, mut w) = s.split();
        let data: Vec<u8> = (0..(40 * 1024 * 1024u32))
            .map(|i| (i % 251) as u8)
            .collect();
        let writer = async {
            w.write_all(&data).await.unwrap();
        };
        let reader = async {
            let mut got = vec![0u8; data.len()];
            r.read_exact(&mut got).await.unwrap();
            got
        };
        let ((), got) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(writer, reader)
        })
        .await
        .expect("transfer timed out");
        assert!(got == data, "data corrupted or reordered");
    }

    #[tokio::test]
    async fn upstream_close_reaches_client() {
        // A target that accepts, answers once and closes.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"bye").await.unwrap();
        });
        let relay = Relay::start(
            "127.0.0.1:0".parse().unwrap(),
            target,
            Duration::from_millis(10),
        )
        .await
        .unwrap();
        let mut s = connect(&relay).await;
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut got))
            .await
            .expect("close not propagated")
            .unwrap();
        assert_eq!(got, b"bye");
    }

    #[tokio::test]
    async fn unreachable_target_closes_client() {
        // Reserve a port, then free it so nothing listens there.
        let target = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let relay = Relay::start("127.0.0.1:0".parse().unwrap(), target, Duration::ZERO)
            .await
            .unwrap();
        let mut s = connect(&relay).await;
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("client not closed");
        assert!(matches!(r, Ok(0) | Err(_)), "got {r:?}");
    }

    #[tokio::test]
    async fn shutdown_closes_connections_and_stops_accepting() {
        let relay = relay(0).await;
        let addr = relay.local_addr();
        let mut s = connect(&relay).await;
        round_trip(&mut s, b"up").await;

        relay.shutdown();
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("connection not closed by shutdown");
        assert!(matches!(r, Ok(0) | Err(_)), "got {r:?}");

        // The listener is gone: a connect is refused, or (if it raced the
        // close) the connection is closed without relaying anything.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let _ = s.write_all(b"x").await;
            let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
                .await
                .expect("late connection not closed");
            assert!(matches!(r, Ok(0) | Err(_)), "got {r:?}");
        }
    }

    #[tokio::test]
    async fn drop_shuts_down() {
        let relay = relay(0).await;
        let mut s = connect(&relay).await;
        round_trip(&mut s, b"up").await;
        drop(relay);
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("connection not closed by drop");
        assert!(matches!(r, Ok(0) | Err(_)), "got {r:?}");
    }
}
