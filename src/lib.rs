//! nearby: a region-aware Redis sidecar proxy.
//!
//! Reads go to the nearest healthy replica, writes to the primary; see
//! `../shared/DESIGN.md` for the architecture. Modules are layered and import
//! only downward (`src/layering.rs` checks it):
//!
//! ```text
//! url, config, cli       leaves: URLs, settings (declared once), the command line
//! proto                  RESP bytes: framers, encoders, refusals; no tokio
//! route                  pure decisions: classify, select, latency, lag, consistency
//! metrics                names and handles
//! model                  shared state: upstreams, topology, server facts
//! conn                   every upstream socket: connect, TLS, pipes, dedicated
//! session, control, ops  one client; background upkeep; admin and status
//! app                    the composition root: builds the pieces, runs them
//! lab                    `nearby lab` and the region relay
//! ```
#![forbid(unsafe_code)]
pub mod url;

pub mod config;

pub mod cli;

pub mod proto;

pub mod route;

pub mod metrics;

pub mod model;

pub mod conn;

pub mod control;
pub mod ops;
pub mod session;

pub mod app;

pub mod lab;

#[cfg(test)]
mod layering;
