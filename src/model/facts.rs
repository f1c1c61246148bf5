//! What the sidecar mirrors from the primary: its command table, its version
//! (for HELLO) and its number of databases (the bound for SELECT). The
//! primary's prober refreshes them (`control::facts`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;

use crate::route::command::CommandTable;

pub struct ServerFacts {
    /// Swapped whole, so classification never locks.
    pub commands: ArcSwap<CommandTable>,
    version: RwLock<String>,
    databases: AtomicU32,
}

impl Default for ServerFacts {
    /// The built-in table and Redis's defaults, until the primary answers.
    fn default() -> ServerFacts {
        ServerFacts {
            commands: ArcSwap::from_pointee(CommandTable::builtin()),
            version: RwLock::new("7.0.0".into()),
            databases: AtomicU32::new(16),
        }
    }
}

/// The command table of shared facts, as a handle `arc_swap::Cache` can
/// hold: a session's own view of it costs one pointer comparison per
/// command while the table does not change.
#[derive(Clone)]
pub struct CommandsOf(pub Arc<ServerFacts>);

impl std::ops::Deref for CommandsOf {
    type Target = ArcSwap<CommandTable>;

    fn deref(&self) -> &ArcSwap<CommandTable> {
        &self.0.commands
    }
}

impl ServerFacts {
    pub fn commands(&self) -> arc_swap::Guard<Arc<CommandTable>> {
        self.commands.load()
    }

    /// `redis_version` of the primary.
    pub fn version(&self) -> String {
        self.version
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_version(&self, v: &str) {
        *self.version.write().unwrap_or_else(|p| p.into_inner()) = v.to_string();
    }

    /// The primary's `databases` setting.
    pub fn databases(&self) -> u32 {
        self.databases.load(Ordering::Relaxed)
    }

    pub fn set_databases(&self, n: u32) {
        self.databases.store(n, Ordering::Relaxed);
    }
}
