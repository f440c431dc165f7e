//! This daemon's vaults: sealed `Held` shares (share + vault record) in the slot store.
//!
//! Every read unseals (the record is sealed with the share, so what a ceremony relies on
//! was authenticated by the TPM envelope); every file operation runs on the blocking pool.

use std::sync::Arc;

use cosigner_api::v1 as api;
use cosigner_relay::Held;
use cosigner_seal::{SealError, ShareStore, Slot, SlotEpochs};
use tonic::Status;

use crate::me::Me;

pub struct Vaults {
    store: Arc<ShareStore>,
    me: Arc<Me>,
}

/// A sealed file that unseals but does not decode is damage, not a missing share.
fn damaged(vault: &str, e: impl std::fmt::Display) -> Status {
    Status::data_loss(format!(
        "the sealed share of vault {vault:?} is unreadable: {e}"
    ))
}

pub fn seal_status(e: SealError) -> Status {
    match e {
        SealError::Missing { .. } => Status::not_found(e.to_string()),
        SealError::Config(_) => Status::invalid_argument(e.to_string()),
        SealError::Busy => Status::resource_exhausted(e.to_string()),
        SealError::Stopped => Status::unavailable(e.to_string()),
        _ => Status::internal(format!("sealing: {e}")),
    }
}

pub fn slots_to_api(s: &SlotEpochs) -> api::ShareSlots {
    api::ShareSlots {
        current_epoch: s.current.unwrap_or(0),
        has_pending: s.pending.is_some(),
        pending_epoch: s.pending.unwrap_or(0),
        has_previous: s.previous.is_some(),
        previous_epoch: s.previous.unwrap_or(0),
    }
}

impl Vaults {
    pub fn new(store: ShareStore, me: Arc<Me>) -> Self {
        Vaults {
            store: Arc::new(store),
            me,
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ShareStore) -> Result<T, SealError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Status::internal(format!("share store task failed: {e}")))?
            .map_err(seal_status)
    }

    pub async fn slots(&self, vault: &str) -> Result<SlotEpochs, Status> {
        let v = vault.to_string();
        self.blocking(move |s| s.slots(&v)).await
    }

    /// Unseals one slot.
    pub async fn load(&self, vault: &str, slot: Slot) -> Result<Held, Status> {
        let (_, bytes) = self
            .store
            .load(vault, slot, self.me.party_id(), None)
            .await
            .map_err(seal_status)?;
        let held = Held::decode(&bytes).map_err(|e| damaged(vault, e))?;
        if held.record.vault_id() != vault || held.share.party().0 != self.me.party_id() {
            return Err(damaged(vault, "it names another vault or party"));
        }
        Ok(held)
    }

    /// The current share, or None when this daemon holds no share of the vault.
    pub async fn current(&self, vault: &str) -> Result<Option<Held>, Status> {
        match self.load(vault, Slot::Current).await {
            Ok(h) => Ok(Some(h)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }

    pub async fn seal_pending(&self, held: &Held) -> Result<(), Status> {
        let bytes = held.encode();
        let vault = held.record.vault_id().to_string();
        let epoch = held.record.epoch();
        self.store
            .seal_pending(&vault, self.me.party_id(), epoch, &bytes)
            .await
            .map_err(seal_status)
    }

    pub async fn promote(&self, vault: &str) -> Result<(), Status> {
        let v = vault.to_string();
        self.blocking(move |s| s.promote(&v)).await
    }

    pub async fn discard_pending(&self, vault: &str) -> Result<(), Status> {
        let v = vault.to_string();
        self.blocking(move |s| s.discard_pending(&v)).await
    }

    pub async fn drop_previous(&self, vault: &str) -> Result<(), Status> {
        let v = vault.to_string();
        self.blocking(move |s| s.drop_previous(&v)).await
    }

    /// The API view of one vault (unseals its current share to read the record).
    pub async fn describe(&self, vault: &str) -> Result<api::Vault, Status> {
        let slots = self.slots(vault).await?;
        let held = match slots.current {
            Some(_) => self.load(vault, Slot::Current).await?,
            // Only a pending share (a keygen or reshare that did not finish): show that.
            None if slots.pending.is_some() => self.load(vault, Slot::Pending).await?,
            None => return Err(Status::not_found(format!("no vault {vault:?} here"))),
        };
        Ok(held.record.to_api(Some(slots_to_api(&slots))))
    }

    /// Vaults with a current share (blocking: a directory listing; for metrics).
    pub fn held_count(&self) -> Result<usize, SealError> {
        let mut n = 0;
        for id in self.store.vaults()? {
            if self.store.slots(&id)?.current.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Ids of the vaults with a share directory (any slot).
    pub async fn ids(&self) -> Result<Vec<String>, Status> {
        let ids = self.blocking(|s| s.vaults()).await?;
        let mut out = Vec::new();
        for id in ids {
            let slots = self.slots(&id).await?;
            if slots.current.is_some() || slots.pending.is_some() || slots.previous.is_some() {
                out.push(id);
            }
        }
        Ok(out)
    }

    pub async fn list(&self) -> Result<Vec<api::Vault>, Status> {
        let ids = self.blocking(|s| s.vaults()).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.describe(&id).await {
                Ok(v) => out.push(v),
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(s),
            }
        }
        Ok(out)
    }
}
