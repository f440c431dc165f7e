//! This daemon's party identity, shared by the vaults, the ceremonies and status.
//!
//! It is fixed for the life of a daemon except in one case: importing a share backup into a
//! daemon that holds no vault at all makes the daemon that backup's party (a replacement
//! machine takes over the lost one's identity, which the other parties know it by). The
//! keys sit behind a lock so that swap is one step; every user takes a copy per operation,
//! so a ceremony runs with one identity from start to end.

use std::sync::RwLock;

use cosigner_relay::PartyKeys;

pub struct Me(RwLock<PartyKeys>);

impl Me {
    pub fn new(keys: PartyKeys) -> Me {
        Me(RwLock::new(keys))
    }

    pub fn keys(&self) -> PartyKeys {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn party_id(&self) -> [u8; 32] {
        self.0.read().unwrap_or_else(|p| p.into_inner()).party_id()
    }

    pub fn encryption_public(&self) -> [u8; 32] {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .encryption_public()
    }

    /// Only for a backup import into a daemon with no vaults (see `backup.rs`).
    pub(crate) fn replace(&self, keys: PartyKeys) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = keys;
    }
}
