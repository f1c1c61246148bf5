//! The integration tests, in one binary: each module was once a file of its
//! own under `tests/`, and the harness (`common`) is compiled once.
//!
//! Kept apart in their own binaries: `tests/scale.rs` (it needs most of the
//! process's file descriptors) and `tests/alloc.rs` (it installs a counting
//! `#[global_allocator]`, which would count every test in the binary).
//!
//! Run one module with `cargo test --test it routing::`.

// This tier drives real processes and waits on wall-clock time in plain
// threads; `src/` uses tokio's pausable clock only (clippy.toml).
#![allow(clippy::disallowed_types)]

mod common;

mod bad_input;
mod cli;
mod clients;
mod cluster;
mod cluster_harness;
mod consistency;
mod consistency_bench;
mod deploy;
mod differential;
mod dns;
mod failover;
mod failures;
mod faults;
mod harness_log_check;
mod harness_smoke;
mod inproc;
mod lab;
mod lifecycle;
mod near_cache;
mod nearest;
mod observability;
mod routing;
mod sentinel_harness;
mod stateful;
mod tls;
mod transparency;
