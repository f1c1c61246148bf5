//! Refreshes what the sidecar mirrors from the primary (`model::facts`):
//! the command table (`COMMAND`), the version and the number of databases.
//! Each part is optional: a managed Redis may refuse CONFIG.

use std::sync::Arc;
use std::time::Duration;

use redis_protocol::resp2::types::BytesFrame;

use crate::conn::control::Control;
use crate::model::facts::ServerFacts;
use crate::proto::reply::decode_resp2;
use crate::route::command::CommandTable;

pub async fn refresh(facts: &ServerFacts, c: &mut Control, timeout: Duration) {
    match c.call(&[b"COMMAND"], timeout).await {
        Ok(r) if !r.is_error() => match decode_resp2(&r.raw)
            .map_err(|e| e.to_string())
            .and_then(|f| CommandTable::from_command_reply(&f))
        {
            Ok(t) => {
                tracing::debug!(commands = t.len(), "command table read from the primary");
                facts.commands.store(Arc::new(t));
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read COMMAND; using the built-in table")
            }
        },
        // Busy with a script: the table in use stays; asked again on the
        // next connection.
        Ok(r) if r.raw.starts_with(b"-BUSY") => {
            tracing::debug!("COMMAND refused while Redis is busy; keeping the current table")
        }
        Ok(r) => {
            tracing::warn!(reply = %String::from_utf8_lossy(&r.raw).trim_end(), "COMMAND refused; using the built-in table")
        }
        Err(e) => tracing::warn!(error = %e, "COMMAND failed; using the built-in table"),
    }
    if let Ok(r) = c.call(&[b"INFO", b"server"], timeout).await {
        let text = String::from_utf8_lossy(&r.raw);
        if let Some(v) = text.lines().find_map(|l| l.strip_prefix("redis_version:")) {
            facts.set_version(v.trim());
        }
    }
    if let Ok(r) = c.call(&[b"CONFIG", b"GET", b"databases"], timeout).await
        && let Ok(BytesFrame::Array(v)) = decode_resp2(&r.raw)
        && let Some(BytesFrame::BulkString(n)) = v.get(1)
        && let Some(n) = std::str::from_utf8(n).ok().and_then(|s| s.parse().ok())
    {
        facts.set_databases(n);
    }
}
