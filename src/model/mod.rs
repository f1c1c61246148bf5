//! Shared state types: the upstreams, the topology snapshot and what the
//! sidecar mirrors from the primary. No I/O and no tasks.
pub mod topology;
