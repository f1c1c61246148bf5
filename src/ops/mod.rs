//! The operator's view: the admin HTTP server and `nearby status`.
pub mod admin;
pub mod status;
