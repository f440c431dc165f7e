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
pub mod policy;
pub mod rotation;
pub mod server;
pub mod vaults;
