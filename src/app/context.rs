//! The composition root's parts list: every shared piece is built here,
//! once, and each task gets the narrow handles it needs.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{Config, NearCache as NearCacheMode};
use crate::conn::connect::Connector;
use crate::conn::fill::FillPool;
use crate::conn::pipe::Timeouts;
use crate::conn::pool::PipePool;
use crate::conn::resolve::Resolver;
use crate::conn::tls::Tls;
use crate::control::ControlEnv;
use crate::metrics::Global;
use crate::model::SharedConfig;
use crate::model::clients::Clients;
use crate::model::cluster::ClusterCell;
use crate::model::facts::ServerFacts;
use crate::model::near_cache::NearCache;
use crate::model::replication::Replication;
use crate::model::topology::TopologyCell;
use crate::ops::admin::AdminEnv;
use crate::session::SessionEnv;

pub struct Context {
    pub config: SharedConfig,
    pub topology: Arc<TopologyCell>,
    pub facts: Arc<ServerFacts>,
    pub replication: Arc<Replication>,
    pub pipes: Arc<PipePool>,
    pub clients: Arc<Clients>,
    pub metrics: Arc<Global>,
    /// Set once on shutdown: sessions stop reading and finish what they have.
    pub shutdown: watch::Sender<bool>,
    /// Set when fronting a Redis Cluster.
    pub cluster: Option<Arc<ClusterCell>>,
    /// The sidecar's tracking connections: the near-cache's fills, and
    /// the reads of clients whose CLIENT TRACKING the sidecar emulates.
    pub fills: Arc<FillPool>,
}

impl Context {
    /// Fails when the TLS files cannot be used (the message names them).
    pub fn new(config: Config) -> Result<Context, String> {
        // The resolver is ready before any prober resolves a name.
        let connector = Arc::new(Connector {
            resolver: Resolver::new_or_default(&config.dns),
            tls: Tls::new(&config.tls)?,
        });
        let timeouts = Timeouts {
            connect: Duration::from_millis(config.timeouts.connect_timeout_ms),
            request: Duration::from_millis(config.timeouts.request_timeout_ms),
        };
        let cache = (config.near_cache.mode == NearCacheMode::On).then(|| {
            Arc::new(NearCache::new(
                config.near_cache.max_bytes,
                Duration::from_millis(config.near_cache.max_ttl_ms),
            ))
        });
        Ok(Context {
            fills: Arc::new(FillPool::new(cache, connector.clone(), timeouts)),
            topology: Arc::new(TopologyCell::from_config(&config)),
            facts: Arc::new(ServerFacts::default()),
            replication: Arc::new(Replication::default()),
            pipes: Arc::new(PipePool::new(connector, timeouts)),
            clients: Arc::new(Clients::default()),
            metrics: Arc::new(Global::new(
                config.region.as_deref().unwrap_or(""),
                config.limits.free_commands_per_day,
            )),
            shutdown: watch::channel(false).0,
            cluster: config
                .cluster
                .as_ref()
                .map(|_| Arc::new(ClusterCell::default())),
            config: Arc::new(ArcSwap::from_pointee(config)),
        })
    }

    pub fn session_env(&self) -> Arc<SessionEnv> {
        Arc::new(SessionEnv {
            config: self.config.clone(),
            topology: self.topology.clone(),
            facts: self.facts.clone(),
            replication: self.replication.clone(),
            pipes: self.pipes.clone(),
            clients: self.clients.clone(),
            metrics: self.metrics.clone(),
            shutdown: self.shutdown.subscribe(),
            cluster: self.cluster.clone(),
            fills: self.fills.clone(),
        })
    }

    pub fn control_env(&self) -> ControlEnv {
        ControlEnv {
            config: self.config.clone(),
            topology: self.topology.clone(),
            facts: self.facts.clone(),
            replication: self.replication.clone(),
            pipes: self.pipes.clone(),
        }
    }

    pub fn admin_env(&self) -> AdminEnv {
        AdminEnv {
            config: self.config.clone(),
            topology: self.topology.clone(),
            clients: self.clients.clone(),
            metrics: self.metrics.clone(),
            cluster: self.cluster.clone(),
            near_cache: self.fills.cache.clone(),
        }
    }
}
