//! `nearby status`: fetch `/status` from a running sidecar and print it like
//! a managed service's status page.

use std::fmt::Write as _;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::ops::admin::{Status, UpstreamStatus};

/// GETs `path` from the admin server at `addr` (hyper client, HTTP/1.1).
pub async fn fetch(addr: &str, path: &str) -> Result<(u16, String), String> {
    let stream = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| format!("connecting to {addr} timed out"))?
    .map_err(|e| format!("cannot reach the admin server at {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let code = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 10.0 => format!("{v:.1} ms"),
        Some(v) => format!("{v:.0} ms"),
        None => "-".into(),
    }
}

/// The human table.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    if !s.shards.is_empty() {
        let _ = writeln!(
            out,
            "this region: {}   Redis Cluster: {} shards   ready: {}   clients: {}   commands today: {} of {} free",
            s.region.as_deref().unwrap_or("(unset)"),
            s.shards.len(),
            s.ready,
            s.clients,
            s.commands_today,
            s.free_commands_per_day
        );
        render_shards(&mut out, s);
        return out;
    }
    let _ = writeln!(
        out,
        "this region: {}   primary region: {}   read regions: {}",
        s.region.as_deref().unwrap_or("(unset)"),
        s.primary_region,
        if s.read_regions.is_empty() {
            "(none)".to_string()
        } else {
            s.read_regions.join(", ")
        }
    );
    let why = s
        .reads_go_to
        .fallback
        .as_deref()
        .map(|f| format!(" (fallback: {f})"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "reads go to: {} {} {}{}   ready: {}",
        s.reads_go_to.region, s.reads_go_to.role, s.reads_go_to.upstream, why, s.ready
    );
    let p = &s.primary;
    let epoch = if p.source == "sentinel" {
        format!(" (epoch {})", p.epoch)
    } else {
        String::new()
    };
    let last = p.last_switch.as_ref().map_or_else(
        || "never".to_string(),
        |l| {
            let ago = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
                .saturating_sub(l.at_unix_ms);
            format!(
                "{} -> {} by {}, {:.0} s ago{}",
                l.from,
                l.to,
                l.source,
                ago as f64 / 1000.0,
                if l.writes_at_risk > 0 {
                    format!(", {} writes at risk", l.writes_at_risk)
                } else {
                    String::new()
                }
            )
        },
    );
    let _ = writeln!(
        out,
        "primary: {} from {}{}   writes: {}   last switch: {}",
        p.address, p.source, epoch, p.writes, last
    );
    if let Some(c) = &s.near_cache {
        let _ = writeln!(
            out,
            "near-cache: {:.1}% hits ({} of {})   {} entries   {:.1} of {:.1} MiB",
            c.hit_ratio * 100.0,
            c.hits,
            c.hits + c.misses,
            c.entries,
            c.bytes as f64 / (1024.0 * 1024.0),
            c.max_bytes as f64 / (1024.0 * 1024.0)
        );
    }
    let _ = writeln!(
        out,
        "clients: {}   commands today: {} of {} free\n",
        s.clients, s.commands_today, s.free_commands_per_day
    );
    let _ = writeln!(
        out,
        "{:<10} {:<8} {:<24} {:<14} {:>9} {:>9} {:>10} {:>9} {:>9}",
        "REGION", "ROLE", "ADDRESS", "HEALTH", "RTT", "LAG", "READS/1m", "READS", "WRITES"
    );
    for u in &s.upstreams {
        let _ = writeln!(
            out,
            "{:<10} {:<8} {:<24} {:<14} {:>9} {:>9} {:>9.0}% {:>9} {:>9}",
            u.region,
            u.role,
            u.address,
            health(u),
            ms(u.rtt_ms),
            lag(u),
            u.read_share_1m * 100.0,
            u.reads,
            u.writes
        );
    }
    out
}

/// `up`, or why the upstream takes no reads.
fn health(u: &UpstreamStatus) -> String {
    u.unusable.clone().unwrap_or_else(|| "up".into())
}

fn lag(u: &UpstreamStatus) -> String {
    u.lag_ms
        .map(|l| format!("{:.1} s", l as f64 / 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// The shards of a cluster: slot ranges, where reads go, each node.
fn render_shards(out: &mut String, s: &Status) {
    for (i, shard) in s.shards.iter().enumerate() {
        let ranges = if shard.slots.is_empty() {
            "(no slots)".to_string()
        } else {
            shard.slots.join(",")
        };
        let _ = writeln!(
            out,
            "\nshard {i}: slots {ranges}; reads go to {} {}",
            shard.reads_go_to.role, shard.reads_go_to.upstream
        );
        for u in &shard.upstreams {
            let _ = writeln!(
                out,
                "  {:<8} {:<10} {:<24} {:<14} rtt {:>9} lag {:>7}",
                u.role,
                u.region,
                u.address,
                health(u),
                ms(u.rtt_ms),
                lag(u)
            );
        }
    }
}

/// Runs `nearby status`; returns the process exit code.
pub async fn run(admin: &str, json: bool) -> u8 {
    match fetch(admin, "/status").await {
        Ok((200, body)) => {
            if json {
                println!("{body}");
                return 0;
            }
            match serde_json::from_str::<Status>(&body) {
                Ok(s) => {
                    print!("{}", render(&s));
                    0
                }
                Err(e) => {
                    eprintln!("nearby status: unexpected /status reply: {e}");
                    1
                }
            }
        }
        Ok((code, body)) => {
            eprintln!("nearby status: /status answered {code}: {body}");
            1
        }
        Err(e) => {
            eprintln!("nearby status: {e}");
            1
        }
    }
}
