//! Every upstream socket: name resolution, TLS, connection setup, the shared
//! pipes and the dedicated connections.
pub mod connect;
pub mod control;
pub mod dedicated;
pub mod event;
pub mod fill;
pub mod mailbox;
pub mod pipe;
pub mod plain;
pub mod pool;
pub mod resolve;
pub mod socket;
pub mod stream;
pub mod tls;
pub mod trackers;
