//! Background tasks that keep the model fresh: probers, DNS discovery and
//! config reload.
pub mod discovery;
pub mod prober;
pub mod reload;
