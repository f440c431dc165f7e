//! cosignerd's internals. The binary (`main.rs`) parses arguments and hands over to
//! [`server::run`]; everything here is wiring around the library crates.

pub mod auth;
pub mod backup;
pub mod ceremony;
pub mod config;
pub mod cosigner_service;
pub mod datadir;
pub mod history_rpc;
pub mod me;
pub mod metrics;
pub mod policy;
pub mod ports;
pub mod rotation;
pub mod server;
pub mod vaults;
pub mod watchdog;

/// Wall-clock Unix milliseconds, as the history and request timestamps use them (0 if the
/// clock is before 1970).
pub(crate) use cosigner_relay::clock::now_ms;
