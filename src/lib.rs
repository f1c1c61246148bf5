//! nearby: a region-aware Redis sidecar proxy.
//!
//! Reads go to the nearest healthy replica, writes to the primary; see
//! `../shared/DESIGN.md` for the architecture. Pure logic (framing,
//! classification, selection) lives in modules without I/O; sockets and tasks
//! live in `server`, `session`, `pipe` and `dedicated`.
#![forbid(unsafe_code)]
pub mod admin;
pub mod cli;
pub mod command;
pub mod config;
pub mod consistency;
pub mod dedicated;
pub mod discovery;
pub mod framer;
pub mod health;
pub mod lab;
pub mod lag;
pub mod latency;
pub mod metrics;
pub mod net;
pub mod pipe;
pub mod relay;
pub mod reload;
pub mod resp;
pub mod select;
pub mod server;
pub mod session;
pub mod status;
pub mod tls;
pub mod topology;
pub mod upstream;
pub mod url;
