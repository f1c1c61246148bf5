//! Redis Cluster, the pure parts: key slots, the slot map as the nodes
//! report it, redirections, splitting multi-key commands across slots and
//! merging their replies, and what a cluster-aware client is told.
pub mod facade;
pub mod map;
pub mod redirect;
pub mod slot;
pub mod split;
