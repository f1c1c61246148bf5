//! Every upstream socket: name resolution, TLS, connection setup, the shared
//! pipes and the dedicated connections.
pub mod connect;
pub mod control;
pub mod dedicated;
pub mod event;
pub mod net;
pub mod pipe;
pub mod pool;
pub mod tls;
