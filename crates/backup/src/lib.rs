//! cosigner-backup: what leaves the TPM on purpose, encrypted under a passphrase.
//!
//! [`passbox`] is the one file format (Argon2id + ChaCha20-Poly1305, clear authenticated
//! metadata); [`share`] is a backup of one party's share of one vault (export, inspect,
//! open); the device party's file is a box of another kind. Recovery from backups is the
//! engine's [`cosigner_tss::recover_key`]; this crate only opens the files it needs.

pub mod passbox;
pub mod share;

pub use passbox::{BoxError, Costs, Kind, MIN_PASSPHRASE};
pub use share::{
    BackupError, BackupMeta, MetaMember, ShareBackup, export, export_with, inspect, open,
};
