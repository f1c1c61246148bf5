//! A scriptable fake upstream for timing corner cases: speaks just enough
//! RESP for nearby's probes and pipes, and can be told to hang.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use nearby::proto::{RequestFramer, RequestLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the fake does with each command.
#[derive(Default)]
pub struct Script {
    /// While set, PING gets no reply (a frozen server, as after SIGSTOP).
    pub ping_hangs: AtomicBool,
    /// While set, GET gets no reply.
    pub get_hangs: AtomicBool,
}

pub struct Fake {
    pub port: u16,
    pub script: Arc<Script>,
}

impl Fake {
    /// Listens on a free loopback port, in the calling runtime.
    pub async fn start() -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = Arc::new(Script::default());
        let s = script.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, s.clone()));
            }
        });
        Fake { port, script }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

async fn serve(mut conn: tokio::net::TcpStream, script: Arc<Script>) {
    let mut framer = RequestFramer::new(RequestLimits::default());
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        while let Ok(Some(cmd)) = framer.next(&mut buf) {
            let reply: &[u8] = if cmd.name_eq("PING") {
                if script.ping_hangs.load(Ordering::SeqCst) {
                    continue;
                }
                b"+PONG\r\n"
            } else if cmd.name_eq("GET") {
                if script.get_hangs.load(Ordering::SeqCst) {
                    continue;
                }
                b"$1\r\nv\r\n"
            } else if cmd.name_eq("INFO") {
                b"$50\r\n# Replication\r\nrole:master\r\nmaster_repl_offset:0\r\n\r\n"
            } else if cmd.name_eq("COMMAND") || cmd.name_eq("CONFIG") {
                // Managed services refuse these; nearby falls back.
                b"-ERR unknown command\r\n"
            } else {
                b"+OK\r\n"
            };
            if conn.write_all(reply).await.is_err() {
                return;
            }
        }
        match conn.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
