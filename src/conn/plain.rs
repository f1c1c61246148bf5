//! A plain request/reply connection to a server that is not an upstream
//! (a sentinel, a cluster node asked for its slot map): TCP, optional AUTH,
//! no metrics, no TLS.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::connect::Connector;
use crate::proto::{Command, Reply, ReplyFramer, ReplyLimits};
use crate::url::Host;

pub struct Plain {
    stream: TcpStream,
    buf: BytesMut,
    framer: ReplyFramer,
}

impl Plain {
    /// Connects to `host:port` and AUTHs with `auth` (user, password).
    pub async fn open(
        connector: &Connector,
        host: &Host,
        port: u16,
        auth: Option<(Option<&str>, &str)>,
        timeout: Duration,
    ) -> Result<Plain, String> {
        let stream = connector
            .resolver
            .connect(host, port, timeout)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let mut c = Plain {
            stream,
            buf: BytesMut::with_capacity(4096),
            framer: ReplyFramer::new(ReplyLimits::default()),
        };
        if let Some((user, pass)) = auth {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = user {
                args.push(user.as_bytes());
            }
            args.push(pass.as_bytes());
            let r = c.call(&args, timeout).await?;
            if r.is_error() {
                return Err(format!(
                    "AUTH refused: {}",
                    String::from_utf8_lossy(&r.raw).trim_end()
                ));
            }
        }
        Ok(c)
    }

    pub async fn send(&mut self, args: &[&[u8]]) -> Result<(), String> {
        self.stream
            .write_all(Command::from_args(args).raw())
            .await
            .map_err(|e| e.to_string())
    }

    /// The next reply (or pushed frame) on the connection.
    pub async fn next(&mut self) -> Result<Reply, String> {
        loop {
            match self.framer.next(&mut self.buf) {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => return Err(e.to_string()),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Err("closed by the server".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    pub async fn call(&mut self, args: &[&[u8]], timeout: Duration) -> Result<Reply, String> {
        tokio::time::timeout(timeout, async {
            self.send(args).await?;
            self.next().await
        })
        .await
        .map_err(|_| format!("no reply within {} ms", timeout.as_millis()))?
    }
}
