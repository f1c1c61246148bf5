//! A plain request/reply connection for the sidecar's own commands (probes,
//! COMMAND, INFO, CONFIG GET).

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::connect::{self as upstream, Connector, Handshake, UpstreamError};
use crate::model::upstream::Upstream;
use crate::proto::{Command, Reply, ReplyFramer, ReplyLimits};

/// A plain request/reply connection for the sidecar's own commands.
pub struct Control {
    stream: upstream::UpstreamStream,
    buf: BytesMut,
    framer: ReplyFramer,
    /// A request timed out: its reply may still come, and would be taken
    /// for the next one's. The connection is not used again.
    broken: bool,
}

impl Control {
    pub async fn open(
        connector: &Connector,
        up: &Upstream,
        timeout: Duration,
    ) -> Result<Control, UpstreamError> {
        let (stream, buf) = upstream::open(connector, up, &Handshake::default(), timeout).await?;
        Ok(Control {
            stream,
            buf,
            framer: ReplyFramer::new(ReplyLimits::default()),
            broken: false,
        })
    }

    /// `call`, with an error reply (a refusal) returned as an error. Any
    /// reply, even an error (BUSY, LOADING), tells `up` the server is alive.
    pub async fn call_ok(
        &mut self,
        up: &Upstream,
        args: &[&[u8]],
        timeout: Duration,
    ) -> Result<Reply, UpstreamError> {
        let reply = self.call(args, timeout).await?;
        up.heard(tokio::time::Instant::now());
        if reply.is_error() {
            return Err(refused(&reply));
        }
        Ok(reply)
    }

    pub async fn call(
        &mut self,
        args: &[&[u8]],
        timeout: Duration,
    ) -> Result<Reply, UpstreamError> {
        if self.broken {
            return Err(UpstreamError::Lost(
                "an earlier request on this connection timed out".into(),
            ));
        }
        let cmd = Command::from_args(args);
        let exchange = async {
            self.stream
                .write_all(cmd.raw())
                .await
                .map_err(|e| UpstreamError::Lost(e.to_string()))?;
            loop {
                match self.framer.next(&mut self.buf) {
                    Ok(Some(r)) if r.is_push() => continue,
                    Ok(Some(r)) => return Ok(r),
                    Ok(None) => {}
                    Err(e) => return Err(UpstreamError::Protocol(e.to_string())),
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) => return Err(UpstreamError::Lost("closed by the upstream".into())),
                    Ok(_) => {}
                    Err(e) => return Err(UpstreamError::Lost(e.to_string())),
                }
            }
        };
        let res = tokio::time::timeout(timeout, exchange).await;
        if res.is_err() {
            self.broken = true;
        }
        res.map_err(|_| UpstreamError::Timeout(timeout.as_millis() as u64))?
    }
}

pub(crate) fn refused(reply: &Reply) -> UpstreamError {
    UpstreamError::Protocol(String::from_utf8_lossy(&reply.raw).trim_end().to_string())
}
