//! This daemon's vaults: sealed `Held` shares (share + vault record) in the slot store,
//! each with a signed public record beside it, the commit record of the latest keygen or
//! reshare, and the epoch floor kept in the history.
//!
//! The public record (the vault record without the share, signed by this party's identity
//! key) sits in the clear part of each sealed file, so every cheap check of a request
//! (membership, epoch, roster, policy) runs before anything is unsealed; the sealed copy is
//! compared with it when a ceremony finally unseals. The floor is the lowest epoch this
//! party may use as current: promoting or retiring raises it, so a share file rolled back
//! to an older epoch (a stale copy of the data directory, an old backup) is refused.

use std::sync::Arc;

use cosigner_api::v1 as api;
use cosigner_history::History;
use cosigner_relay::commit::{CommitState, Phase};
use cosigner_relay::{Held, VaultRecord};
use cosigner_seal::{SealError, ShareStore, Slot, SlotEpochs};
use tonic::Status;

use crate::history_rpc::blocking;
use crate::me::Me;

use cosigner_party::signed::{self, COMMIT_RECORD as COMMIT_TAG, PUBLIC_RECORD as PUBLIC_TAG};

pub struct Vaults {
    store: Arc<ShareStore>,
    me: Arc<Me>,
    history: Arc<History>,
}

pub use cosigner_node::standing::Standing as State;

/// What is known of a vault here without unsealing anything.
pub struct View {
    /// The record of the current share, else the pending one, else the previous one.
    pub record: Option<VaultRecord>,
    pub slots: SlotEpochs,
    pub commit: Option<CommitState>,
    pub state: State,
}

/// A sealed file that unseals but does not decode is damage, not a missing share.
fn damaged(vault: &str, e: impl std::fmt::Display) -> Status {
    Status::data_loss(format!(
        "the share files of vault {vault:?} are unusable: {e}"
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

/// The slots as the ceremony layer reads them.
pub fn epochs(s: &SlotEpochs) -> cosigner_node::ports::Slots {
    cosigner_node::ports::Slots::new(s.current, s.pending, s.previous)
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
    pub fn new(store: ShareStore, me: Arc<Me>, history: Arc<History>) -> Self {
        Vaults {
            store: Arc::new(store),
            me,
            history,
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

    /// `bytes` signed by this party for `vault` under `tag` ([`signed::sign`]).
    fn signed_blob(&self, tag: &[u8], vault: &str, bytes: &[u8]) -> Vec<u8> {
        signed::sign(&self.me.keys(), tag, vault, bytes)
    }

    /// The bytes of a blob this party signed for `vault` under `tag`.
    fn open_signed<'a>(
        &self,
        tag: &[u8],
        what: &str,
        vault: &str,
        blob: &'a [u8],
    ) -> Result<&'a [u8], String> {
        signed::open(&self.me.party_id(), tag, what, vault, blob)
    }

    /// The clear part written beside a share: the record, signed by this party.
    fn public_blob(&self, record: &VaultRecord) -> Vec<u8> {
        self.signed_blob(PUBLIC_TAG, record.vault_id(), &record.encode())
    }

    fn open_public(&self, vault: &str, blob: &[u8]) -> Result<VaultRecord, String> {
        if blob.is_empty() {
            return Err("no public record beside the share (run the daemon once to add it)".into());
        }
        let rec = self.open_signed(PUBLIC_TAG, "public record", vault, blob)?;
        let r = VaultRecord::decode(rec).map_err(|e| format!("public record: {e}"))?;
        if r.vault_id() != vault {
            return Err(format!("the public record names vault {:?}", r.vault_id()));
        }
        Ok(r)
    }

    pub async fn slots(&self, vault: &str) -> Result<SlotEpochs, Status> {
        let v = vault.to_string();
        self.blocking(move |s| s.slots(&v)).await
    }

    /// The signed public record of one slot (nothing is unsealed). None if it is empty.
    pub async fn record(&self, vault: &str, slot: Slot) -> Result<Option<VaultRecord>, Status> {
        let v = vault.to_string();
        let Some((epoch, blob)) = self.blocking(move |s| s.public(&v, slot)).await? else {
            return Ok(None);
        };
        let r = self
            .open_public(vault, &blob)
            .map_err(|e| damaged(vault, e))?;
        if r.epoch() != epoch {
            return Err(damaged(
                vault,
                format!(
                    "the {} file is sealed at epoch {epoch} but its record says {}",
                    slot.name(),
                    r.epoch()
                ),
            ));
        }
        Ok(Some(r))
    }

    pub async fn floor(&self, vault: &str) -> Result<Option<u64>, Status> {
        let v = vault.to_string();
        blocking(&self.history, move |h| h.floor(&v)).await
    }

    /// Refuses a current share older than the floor (a rolled-back file).
    async fn check_floor(&self, vault: &str, epoch: u64) -> Result<(), Status> {
        match self.floor(vault).await? {
            Some(f) if epoch < f => Err(Status::failed_precondition(format!(
                "the current share of vault {vault:?} is at epoch {epoch}, below this party's floor {f} (recorded in its history when epoch {f} was reached): the share file was rolled back (a stale copy or backup); it is refused"
            ))),
            _ => Ok(()),
        }
    }

    /// The vault's commit record (None: no keygen or reshare recorded one).
    pub async fn commit_state(&self, vault: &str) -> Result<Option<CommitState>, Status> {
        let v = vault.to_string();
        let Some(bytes) = self.blocking(move |s| s.read_commit(&v)).await? else {
            return Ok(None);
        };
        let bytes = self
            .open_signed(COMMIT_TAG, "commit record", vault, &bytes)
            .map_err(|e| damaged(vault, e))?;
        let state = CommitState::decode(bytes).map_err(|e| damaged(vault, e))?;
        if state.target.vault_id != vault {
            return Err(damaged(vault, "the commit record names another vault"));
        }
        Ok(Some(state))
    }

    pub async fn save_commit(&self, state: &CommitState) -> Result<(), Status> {
        let v = state.target.vault_id.clone();
        let bytes = self.signed_blob(COMMIT_TAG, &v, &state.encode());
        self.blocking(move |s| s.write_commit(&v, &bytes)).await
    }

    /// Everything known of a vault without unsealing. `Err(NotFound)` if it holds nothing.
    pub async fn view(&self, vault: &str) -> Result<View, Status> {
        let slots = self.slots(vault).await?;
        let commit = self.commit_state(vault).await?;
        let mut record = None;
        for slot in [Slot::Current, Slot::Pending, Slot::Previous] {
            if let Some(r) = self.record(vault, slot).await? {
                record = Some(r);
                break;
            }
        }
        if record.is_none() {
            return Err(Status::not_found(format!("no vault {vault:?} here")));
        }
        let below_floor = match slots.current {
            Some(e) => self
                .check_floor(vault, e)
                .await
                .err()
                .map(|s| s.message().to_string()),
            None => None,
        };
        let state = match cosigner_node::standing::standing(
            &epochs(&slots),
            commit.as_ref(),
            below_floor,
        ) {
            State::InDoubt(why) => State::InDoubt(format!(
                "{why}; nothing signs for it until `cosignerctl vault resolve` decides (a device gives its report with `cosignerctl party evidence --about` the ceremony context; a restart also finishes a promotion whose certificate is recorded)"
            )),
            s => s,
        };
        Ok(View {
            record,
            slots,
            commit,
            state,
        })
    }

    /// The record of the share this party signs and deals with, after every check that
    /// needs no unsealing: no commit in doubt, not retired, not below the floor.
    pub async fn active_record(&self, vault: &str) -> Result<Option<VaultRecord>, Status> {
        let view = match self.view(vault).await {
            Ok(v) => v,
            Err(s) if s.code() == tonic::Code::NotFound => return Ok(None),
            Err(s) => return Err(s),
        };
        match view.state {
            State::Active => self.record(vault, Slot::Current).await,
            State::InDoubt(why) => Err(Status::failed_precondition(format!(
                "vault {vault:?} is in doubt here: {why}"
            ))),
            State::Retired(e) => Err(Status::failed_precondition(format!(
                "this party left the committee of vault {vault:?} at epoch {e} (it dealt in a reshare that did not keep it); its old share is retired and signs nothing"
            ))),
            State::Damaged(why) => Err(Status::failed_precondition(why)),
            State::Empty => Ok(None),
        }
    }

    /// The active record of a vault a request wants signed with; NotFound if none.
    pub async fn signing_record(&self, vault: &str) -> Result<VaultRecord, Status> {
        self.active_record(vault).await?.ok_or_else(|| {
            Status::not_found(format!("this daemon holds no share of vault {vault:?}"))
        })
    }

    /// The record a reshare starts from: the active one; None for a party that holds
    /// nothing or retired from the vault (it can only join again as a new member).
    pub async fn reshare_record(&self, vault: &str) -> Result<Option<VaultRecord>, Status> {
        match self.view(vault).await {
            Ok(v) if matches!(v.state, State::Retired(_)) => Ok(None),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s),
            Ok(_) => self.active_record(vault).await,
        }
    }

    /// Unseals one slot and checks it against its public record. The current slot is also
    /// checked against the floor.
    pub async fn load(&self, vault: &str, slot: Slot) -> Result<Held, Status> {
        let record = self.record(vault, slot).await?.ok_or_else(|| {
            Status::not_found(format!("vault {vault:?} has no {} share", slot.name()))
        })?;
        if slot == Slot::Current {
            self.check_floor(vault, record.epoch()).await?;
        }
        let (_, bytes) = self
            .store
            .load(vault, slot, self.me.party_id(), Some(record.epoch()))
            .await
            .map_err(seal_status)?;
        let held = Held::decode(&bytes).map_err(|e| damaged(vault, e))?;
        if held.record.vault_id() != vault || held.share.party().0 != self.me.party_id() {
            return Err(damaged(vault, "it names another vault or party"));
        }
        if held.record.public != record.public || held.record.members != record.members {
            return Err(damaged(
                vault,
                "the sealed share's record differs from the signed public record beside it",
            ));
        }
        Ok(held)
    }

    pub async fn seal_pending(&self, held: &Held) -> Result<(), Status> {
        let bytes = held.encode();
        let public = self.public_blob(&held.record);
        let vault = held.record.vault_id().to_string();
        let epoch = held.record.epoch();
        self.store
            .seal_pending(&vault, self.me.party_id(), epoch, &bytes, &public)
            .await
            .map_err(seal_status)
    }

    /// Pending becomes current (idempotent); the floor rises to its epoch.
    pub async fn promote(&self, vault: &str) -> Result<(), Status> {
        let slots = self.slots(vault).await?;
        let epoch = match (slots.pending, slots.current) {
            (Some(p), _) => p,
            (None, Some(c)) => c, // a promotion that finished before a crash
            (None, None) => {
                return Err(Status::failed_precondition(format!(
                    "vault {vault:?} has no pending share to promote"
                )));
            }
        };
        if slots.pending.is_some() {
            self.store
                .promote(vault, self.me.party_id())
                .await
                .map_err(seal_status)?;
        }
        let v = vault.to_string();
        blocking(&self.history, move |h| h.raise_floor(&v, epoch)).await?;
        Ok(())
    }

    /// A dealer that left at `new_epoch`: current becomes previous, the floor rises to
    /// `new_epoch` (so the old share is never current again). Idempotent.
    pub async fn retire(&self, vault: &str, new_epoch: u64) -> Result<(), Status> {
        self.store
            .retire(vault, self.me.party_id())
            .await
            .map_err(seal_status)?;
        let v = vault.to_string();
        blocking(&self.history, move |h| h.raise_floor(&v, new_epoch)).await?;
        Ok(())
    }

    pub async fn discard_pending(&self, vault: &str) -> Result<(), Status> {
        let v = vault.to_string();
        self.blocking(move |s| s.discard_pending(&v)).await
    }

    pub async fn drop_previous(&self, vault: &str) -> Result<(), Status> {
        let v = vault.to_string();
        self.blocking(move |s| s.drop_previous(&v)).await
    }

    /// The API view of one vault (from its public records; nothing is unsealed).
    pub async fn describe(&self, vault: &str) -> Result<api::Vault, Status> {
        let view = self.view(vault).await?;
        let Some(record) = &view.record else {
            return Err(Status::not_found(format!("no vault {vault:?} here")));
        };
        let mut v = record.to_api(Some(slots_to_api(&view.slots)));
        v.state = view.state.as_str().to_string();
        match &view.state {
            State::InDoubt(why) | State::Damaged(why) => v.problem = why.clone(),
            State::Retired(e) => v.epoch = *e,
            State::Active | State::Empty => {}
        }
        Ok(v)
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

    /// Vaults whose commit needs a resolve (blocking; for metrics).
    pub fn in_doubt_count(&self) -> Result<usize, SealError> {
        let mut n = 0;
        for id in self.store.vaults()? {
            let doubt = match self.store.read_commit(&id)? {
                // Metrics only: the framing is skipped, the signature not checked (an
                // unreadable record counts as in doubt).
                Some(b) => b
                    .get(4..b.len().saturating_sub(64))
                    .and_then(|s| CommitState::decode(s).ok())
                    .is_none_or(|s| s.phase.needs_resolve()),
                None => false,
            };
            if doubt {
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

    /// Every vault; one whose files cannot be read is listed as damaged, not an error.
    pub async fn list(&self) -> Result<Vec<api::Vault>, Status> {
        let ids = self.blocking(|s| s.vaults()).await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.describe(&id).await {
                Ok(v) => out.push(v),
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => out.push(api::Vault {
                    vault_id: id.clone(),
                    state: State::Damaged(String::new()).as_str().to_string(),
                    problem: s.message().to_string(),
                    ..Default::default()
                }),
            }
        }
        Ok(out)
    }

    /// At start: re-seals format-1 files, adds the signed public record beside shares that
    /// have none, and finishes any move whose certificate is recorded (a crash between the
    /// certificate and the promotion). Returns one line per thing done.
    pub async fn upgrade(&self) -> Result<Vec<String>, Status> {
        let mut done = Vec::new();
        let party = self.me.party_id();
        for (vault, slot) in self.store.migrate(party).await.map_err(seal_status)? {
            done.push(format!(
                "vault {vault}: re-sealed the {} share with its slot",
                slot.name()
            ));
        }
        for vault in self.blocking(|s| s.vaults()).await? {
            if let Err(s) = self.upgrade_vault(&vault, &mut done).await {
                done.push(format!(
                    "vault {vault}: cannot be checked at start: {}",
                    s.message()
                ));
            }
        }
        Ok(done)
    }

    async fn upgrade_vault(&self, vault: &str, done: &mut Vec<String>) -> Result<(), Status> {
        let party = self.me.party_id();
        let vault = vault.to_string();
        {
            for slot in Slot::ALL {
                let v = vault.clone();
                let Some((_, blob)) = self.blocking(move |s| s.public(&v, slot)).await? else {
                    continue;
                };
                if !blob.is_empty() {
                    continue;
                }
                let (_, bytes) = self
                    .store
                    .load(&vault, slot, party, None)
                    .await
                    .map_err(seal_status)?;
                let held = Held::decode(&bytes).map_err(|e| damaged(&vault, e))?;
                let public = self.public_blob(&held.record);
                self.store
                    .set_public(&vault, slot, party, &public)
                    .await
                    .map_err(seal_status)?;
                done.push(format!(
                    "vault {vault}: added the public record to the {} share",
                    slot.name()
                ));
            }
            let slots = self.slots(&vault).await?;
            if let Some(c) = slots.current
                && self.floor(&vault).await?.is_none()
            {
                let v = vault.clone();
                blocking(&self.history, move |h| h.raise_floor(&v, c)).await?;
            }
            let Some(state) = self.commit_state(&vault).await? else {
                return Ok(());
            };
            let ended = state.clone().ended();
            let certified = ended.target.certificate(&ended.received).is_some();
            match ended.phase {
                Phase::Discarded if slots.pending == Some(ended.target.epoch) => {
                    self.discard_pending(&vault).await?;
                    done.push(format!(
                        "vault {vault}: finished discarding the pending share of epoch {}",
                        ended.target.epoch
                    ));
                }
                Phase::Committed if certified && slots.pending == Some(ended.target.epoch) => {
                    self.promote(&vault).await?;
                    done.push(format!("vault {vault}: finished the promotion to epoch {} (its certificate was recorded before a crash)", ended.target.epoch));
                }
                Phase::Retired
                    if certified && slots.current.is_some_and(|c| c < ended.target.epoch) =>
                {
                    self.retire(&vault, ended.target.epoch).await?;
                    done.push(format!(
                        "vault {vault}: finished retiring at epoch {}",
                        ended.target.epoch
                    ));
                }
                _ => {}
            }
            if ended != state {
                self.save_commit(&ended).await?;
                done.push(format!(
                    "vault {vault}: the keygen or reshare of epoch {} was interrupted; it is in doubt until `cosignerctl vault resolve`",
                    ended.target.epoch
                ));
            }
        }
        Ok(())
    }
}
