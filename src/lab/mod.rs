//! `nearby lab`: a local world on one machine. Real redis-server processes
//! on loopback (a primary region and replica regions via REPLICAOF), each
//! behind the region simulator, the sidecar in front, and a live table.
//! Ctrl-C or SIGTERM stops everything it started and removes its files.
//! With `--sentinel`, three Redis Sentinels watch the primary and the
//! sidecar follows them ([`sentinel`]); `nearby lab failover` asks one to
//! fail over. With `--cluster`, a three-shard Redis Cluster instead, a
//! primary per shard in the primary region and a replica in each other
//! ([`cluster`]).

pub mod cluster;
pub mod relay;
pub mod sentinel;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::cli::{ConfigArgs, LabAction, LabArgs};
use crate::config::Config;
use crate::lab::relay::Relay;
use crate::proto::{Command as Cmd, ReplyFramer, ReplyLimits};

/// One simulated region: a name and its round trip from this host.
#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    pub name: String,
    pub rtt: Duration,
}

/// Parses `iad=80,ams=5,syd=150` (the first is the primary's region).
pub fn parse_regions(text: &str) -> Result<Vec<Region>, String> {
    let regions: Vec<Region> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|part| {
            let (name, ms) = part
                .split_once('=')
                .ok_or_else(|| format!("--regions: expected NAME=RTT_MS, got '{part}'"))?;
            let ms: u64 = ms
                .trim()
                .parse()
                .map_err(|_| format!("--regions: '{ms}' is not a number of milliseconds"))?;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(format!("--regions: invalid region name '{name}'"));
            }
            Ok(Region {
                name: name.to_string(),
                rtt: Duration::from_millis(ms),
            })
        })
        .collect::<Result<_, _>>()?;
    if regions.len() < 2 {
        return Err("--regions: need a primary region and at least one replica region".into());
    }
    Ok(regions)
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Server {
    region: Region,
    port: u16,
    child: Child,
    /// The region's relay in front of the server: how the sidecar (and the
    /// sentinels) reach it, `region.rtt` away.
    front: Relay,
}

impl Server {
    fn front_addr(&self) -> SocketAddr {
        self.front.local_addr()
    }
}

/// Starts a redis-server on a free port, with its front relay, and waits
/// until it answers. The port is chosen first and the relay started to it,
/// so that with `announce` the server can give the relay's port as its
/// replica address (`--replica-announce-port`): the sentinels then find it
/// there. The port is free when picked but another process may take it
/// before Redis binds it: then Redis exits, and another port is tried.
///
/// Every server gets a (first empty) config file in its directory, so that
/// `CONFIG REWRITE` (a sentinel sends one with each `REPLICAOF`) works.
async fn start_redis(
    bin: &Path,
    dir: &Path,
    region: &Region,
    replica_of: Option<SocketAddr>,
    announce: bool,
) -> Result<Server, String> {
    let mut last = String::new();
    let rdir = dir.join(&region.name);
    std::fs::create_dir_all(&rdir).map_err(|e| e.to_string())?;
    let conf = rdir.join("redis.conf");
    std::fs::write(&conf, "").map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
    for _ in 0..5 {
        let port = free_port().map_err(|e| e.to_string())?;
        let target: SocketAddr = ([127, 0, 0, 1], port).into();
        let front = Relay::start(([127, 0, 0, 1], 0).into(), target, region.rtt)
            .await
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.arg(&conf)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&rdir)
            .arg("--logfile")
            .arg(rdir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        if let Some(p) = replica_of {
            cmd.args(["--replicaof", &p.ip().to_string(), &p.port().to_string()]);
        }
        if announce {
            let f = front.local_addr();
            cmd.args(["--replica-announce-ip", &f.ip().to_string()])
                .args(["--replica-announce-port", &f.port().to_string()]);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let end = Instant::now() + Duration::from_secs(10);
        last.clear();
        while Instant::now() < end {
            if let Ok(Some(status)) = child.try_wait() {
                last = format!(
                    "redis-server for {} exited ({status}); see {}",
                    region.name,
                    rdir.join("redis.log").display()
                );
                break;
            }
            if query(port, &[b"PING"])
                .await
                .is_ok_and(|r| r.starts_with("+PONG"))
            {
                return Ok(Server {
                    region: region.clone(),
                    port,
                    child,
                    front,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if last.is_empty() {
            last = format!(
                "redis-server for {} did not answer within 10 s",
                region.name
            );
        }
        let _ = child.kill().await;
    }
    Err(last)
}

/// One command on a fresh connection to 127.0.0.1; the reply's text.
async fn query(port: u16, args: &[&[u8]]) -> std::io::Result<String> {
    let raw = query_addr(&format!("127.0.0.1:{port}"), args).await?;
    Ok(String::from_utf8_lossy(&raw).into_owned())
}

/// One command on a fresh connection to `addr` (HOST:PORT); the raw reply.
/// Gives up after 3 s.
async fn query_addr(addr: &str, args: &[&[u8]]) -> std::io::Result<Vec<u8>> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(Cmd::from_args(args).raw()).await?;
        let mut buf = BytesMut::new();
        let mut framer = ReplyFramer::new(ReplyLimits::default());
        loop {
            if let Some(r) = framer.next(&mut buf).map_err(std::io::Error::other)? {
                return Ok(r.raw.to_vec());
            }
            if s.read_buf(&mut buf).await? == 0 {
                return Err(std::io::Error::other("closed"));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("no reply within 3 s")))
}

async fn wait_for(
    what: &str,
    limit: Duration,
    mut ok: impl AsyncFnMut() -> bool,
) -> Result<(), String> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if ok().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "{what} did not happen within {} s",
        limit.as_secs()
    ))
}

/// Runs the lab; returns the process exit code.
pub async fn run(args: LabArgs) -> u8 {
    if let Some(LabAction::Failover { sentinel }) = &args.action {
        return sentinel::failover(sentinel).await;
    }
    let Some(bin) = find_on_path("redis-server") else {
        eprintln!(
            "nearby lab: redis-server is not installed. Install it with `sudo apt-get install -y redis-server` (scripts/lab.sh does this for you)."
        );
        return 1;
    };
    let regions = match parse_regions(&args.regions) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nearby lab: {e}");
            return 2;
        }
    };
    if args.cluster && args.sentinel {
        eprintln!("nearby lab: --cluster and --sentinel cannot be combined");
        return 2;
    }
    let dir = std::env::temp_dir().join(format!("nearby-lab-{}", std::process::id()));
    let started = if args.cluster {
        cluster::lab(&args, &bin, &dir, &regions).await
    } else {
        lab(&args, &bin, &dir, &regions).await
    };
    let code = match started {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("nearby lab: {e}");
            1
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    code
}

async fn lab(args: &LabArgs, bin: &Path, dir: &Path, regions: &[Region]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let any = "127.0.0.1:0".parse::<SocketAddr>().expect("literal");
    let io = |e: std::io::Error| e.to_string();
    // With sentinels, every server announces its front relay as its replica
    // address: the sentinels (and so the sidecar) see it there.
    let announce = args.sentinel;

    // The primary, and a relay per replica for its replication link: the
    // link is as long as the replica's and the primary's distances added
    // (both regions reach each other through this host's "network").
    // With sentinels, a replica replicates from the primary's front relay
    // instead (a link as long as the primary's distance): a sentinel moves
    // a replica whose master is not at the address it monitors there anyway
    // (`+fix-slave-config`, some 10 s after the start), and after a failover
    // it points the replicas at the new primary's front relay.
    let primary_region = &regions[0];
    let mut servers = vec![start_redis(bin, dir, primary_region, None, announce).await?];
    let primary_addr: SocketAddr = ([127, 0, 0, 1], servers[0].port).into();
    let mut relays = Vec::new();
    for region in &regions[1..] {
        let upstream = if args.sentinel {
            servers[0].front_addr()
        } else {
            let link = Relay::start(any, primary_addr, primary_region.rtt + region.rtt)
                .await
                .map_err(io)?;
            let addr = link.local_addr();
            relays.push(link);
            addr
        };
        let server = start_redis(bin, dir, region, Some(upstream), announce).await?;
        servers.push(server);
    }
    for s in &servers[1..] {
        let port = s.port;
        wait_for(
            &format!("replication to {}", s.region.name),
            Duration::from_secs(20),
            async || {
                query(port, &[b"INFO", b"replication"])
                    .await
                    .is_ok_and(|r| r.contains("master_link_status:up"))
            },
        )
        .await?;
    }

    // The sentinels watch the primary at its front relay and find the
    // replicas at theirs.
    let mut sentinels = if args.sentinel {
        let replicas: Vec<SocketAddr> = servers[1..].iter().map(Server::front_addr).collect();
        Some(
            sentinel::start(
                bin,
                dir,
                args.sentinel_port,
                servers[0].front_addr(),
                &replicas,
            )
            .await?,
        )
    } else {
        None
    };

    // The sidecar reaches every server through its region's relay. With
    // sentinels, the primary and the replicas come from them; these entries
    // give the servers they name their regions.
    let mut cfg_args = ConfigArgs {
        listen: Some(args.listen.clone()),
        admin: Some(args.admin.clone()),
        region: Some(args.region.clone()),
        primary: Some(format!("redis://{}", servers[0].front_addr())),
        primary_region: Some(primary_region.name.clone()),
        replicas: servers[1..]
            .iter()
            .map(|s| format!("{}=redis://{}", s.region.name, s.front_addr()))
            .collect(),
        probe_interval_ms: Some(500),
        mode: args.near_cache.then(|| "on".to_string()),
        ..ConfigArgs::default()
    };
    if let Some(s) = &sentinels {
        cfg_args.sentinels = s.addrs();
        cfg_args.sentinel_master = Some(sentinel::MASTER.to_string());
    }
    let config = Config::from_parts(&cfg_args, None, None).map_err(|e| e.to_string())?;

    println!(
        "nearby lab: {} regions, data in {}",
        regions.len(),
        dir.display()
    );
    for s in &servers {
        let role = if s.region == regions[0] {
            "primary"
        } else {
            "replica"
        };
        let seen_at = if sentinels.is_some() {
            format!(", seen at {}", s.front_addr())
        } else {
            String::new()
        };
        println!(
            "  {:<8} {:<8} redis-server on 127.0.0.1:{} behind {} ms{seen_at}",
            s.region.name,
            role,
            s.port,
            s.region.rtt.as_millis()
        );
    }
    if let Some(s) = &sentinels {
        let addrs = s.addrs();
        println!(
            "sentinels on {} watch {} (quorum 2); nearby follows them\nfail over: nearby lab failover --sentinel {} (or redis-cli -p {} sentinel failover {})",
            addrs.join(", "),
            sentinel::MASTER,
            addrs[0],
            args.sentinel_port,
            sentinel::MASTER
        );
    }
    let result = serve(args, config).await;
    // The sentinels first: none may fail over while the servers go.
    if let Some(s) = &mut sentinels {
        s.kill().await;
    }
    for s in &mut servers {
        let _ = s.child.kill().await;
    }
    drop(servers);
    drop(relays);
    println!("nearby lab: stopped; removed {}", dir.display());
    result
}

/// Says how to reach the lab's sidecar, then runs it (and the live table)
/// until the lab stops.
pub(super) async fn serve(args: &LabArgs, config: Config) -> Result<(), String> {
    println!(
        "nearby listens on {} (this region: {}); admin on http://{}\ntry: redis-cli -p {} set k v; redis-cli -p {} get k; nearby status --admin {}",
        args.listen,
        args.region,
        args.admin,
        port_of(&args.listen),
        port_of(&args.listen),
        args.admin
    );

    let stop = stop_signal(args.duration_s);
    let table = print_table(args.admin.clone(), args.table_ms);
    tokio::select! {
        r = crate::app::run_until(config, stop, None) => r.map_err(|e| format!("the sidecar stopped: {e}")),
        _ = table => Ok(()),
    }
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or(addr)
}

async fn stop_signal(duration_s: u64) {
    use tokio::signal::unix::{SignalKind, signal};
    let timer = async {
        if duration_s == 0 {
            std::future::pending::<()>().await
        } else {
            tokio::time::sleep(Duration::from_secs(duration_s)).await
        }
    };
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = timer => {}
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Prints the status table every `every_ms` (never returns).
async fn print_table(admin: String, every_ms: u64) {
    if every_ms == 0 {
        return std::future::pending().await;
    }
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut tick = tokio::time::interval(Duration::from_millis(every_ms));
    loop {
        tick.tick().await;
        if let Ok((200, body)) = crate::ops::status::fetch(&admin, "/status").await
            && let Ok(status) = serde_json::from_str::<crate::ops::admin::Status>(&body)
        {
            if tty {
                print!("\x1b[2J\x1b[H");
            }
            println!("{}", crate::ops::status::render(&status));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_parse_with_the_primary_first() {
        let r = parse_regions("iad=80, ams=5,syd=150").unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(
            r[0],
            Region {
                name: "iad".into(),
                rtt: Duration::from_millis(80)
            }
        );
        assert_eq!(r[2].rtt, Duration::from_millis(150));
        assert_eq!(
            parse_regions("iad=80").unwrap_err(),
            "--regions: need a primary region and at least one replica region"
        );
        assert_eq!(
            parse_regions("iad=80,ams").unwrap_err(),
            "--regions: expected NAME=RTT_MS, got 'ams'"
        );
        assert_eq!(
            parse_regions("iad=x,ams=1").unwrap_err(),
            "--regions: 'x' is not a number of milliseconds"
        );
    }
}
