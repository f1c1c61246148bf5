//! Pure routing decisions: command classification, replica selection,
//! latency estimates, replication lag and read-your-writes bookkeeping. No
//! sockets, no tasks; every time-dependent function takes `now`.
pub mod cache;
pub mod cluster;
pub mod command;
pub mod consistency;
pub mod failover;
pub mod health;
pub mod latency;
pub mod replication;
pub mod select;
pub mod sentinel;
pub mod tracking;
