//! nearby: a region-aware Redis sidecar proxy.
//!
//! Reads go to the nearest healthy replica, writes to the primary; see
//! `../shared/DESIGN.md` for the architecture. Pure logic (framing,
//! classification, selection) lives in modules without I/O; sockets and tasks
//! live in `server`, `session`, `pipe` and `dedicated`.
#![forbid(unsafe_code)]
pub mod relay;
pub mod cli;
pub mod config;
pub mod url;
pub mod framer;
pub mod command;
pub mod dedicated;
pub mod health;
pub mod net;
pub mod pipe;
pub mod resp;
pub mod server;
pub mod session;
pub mod topology;
pub mod upstream;
