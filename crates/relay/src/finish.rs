//! The end of a keygen or reshare as one party runs it: seal the new share as pending,
//! sign and send READY, collect the others', then promote (or retire) with a certificate
//! or stay in doubt. Written once for the daemon and the device party; each gives a
//! [`CommitStore`] (the daemon's TPM slots, the device's passphrase file).
//!
//! The order of writes is the safety argument (docs/ceremonies.md): the commit record is
//! written before the pending share, the READY statement is written before it is sent,
//! and the certificate is written before the promotion, so a crash at any point leaves a
//! record that says what the party may have told the others, and a restart finishes a
//! promotion whose certificate it holds.

use std::future::Future;

use crate::commit::{CommitState, CommitTarget, Phase, ReadyStatement, Role};
use crate::driver::{Driver, ReadyOutcome};
use crate::keys::PartyKeys;
use crate::record::VaultRecord;

/// Where a party keeps its commit record and its slots.
pub trait CommitStore: Send {
    /// What is kept as pending (the new share and its record).
    type Pending: Send;
    /// Why a step failed: the commit only shows it in its outcome's text, while a caller
    /// that drives the steps itself (a resolve) keeps its kind.
    type Error: std::fmt::Display + Send;
    /// Writes the commit record (durably: it must survive a crash).
    fn save(&mut self, state: &CommitState)
    -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Keeps the new share as pending.
    fn seal_pending(
        &mut self,
        pending: Self::Pending,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Pending becomes current (the old current becomes previous). Idempotent.
    fn promote(&mut self, vault: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// A dealer that left: current becomes previous; nothing is current. Idempotent.
    fn retire(&mut self, vault: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
    /// Called at named points (crash tests).
    fn fault(&self, _point: &str) {}
}

/// How a party's part of the commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitEnd {
    /// A certificate: the new share is current here.
    Committed,
    /// A certificate: this dealer left the committee and no longer signs.
    Retired,
    /// No certificate (the reason says what ended the exchange): pending is kept, or the
    /// old share is kept unused, until a resolve decides.
    InDoubt(String),
    /// It failed before this party signed a READY (the reason says why). It holds no
    /// pending share; its record stays in doubt for the others' resolve.
    Failed(String),
}

impl CommitEnd {
    pub fn is_done(&self) -> bool {
        matches!(self, CommitEnd::Committed | CommitEnd::Retired)
    }
}

use cosigner_party::clock::now_ms;

/// A new party's commit. `record` is its new public record and `pending` what the store
/// keeps (the share); `old_epoch` the epoch it held before (None for a keygen or a party
/// that joins). Returns the end and the state as last written.
pub async fn new_party<S: CommitStore>(
    d: &mut Driver,
    keys: &PartyKeys,
    store: &mut S,
    record: &VaultRecord,
    pending: S::Pending,
    new_parties: Vec<[u8; 32]>,
    old_epoch: Option<u64>,
) -> (CommitEnd, Option<CommitState>) {
    let Some(context) = d.context() else {
        return (
            CommitEnd::Failed("the commit started before HELLO".into()),
            None,
        );
    };
    let vault = record.vault_id().to_string();
    let target = CommitTarget {
        vault_id: vault.clone(),
        context,
        epoch: record.epoch(),
        public_key: record.public.public_key.0.to_vec(),
        record_hash: Some(record.public_hash()),
        new_parties,
    };
    let mut state = CommitState::new(target.clone(), Role::NewParty, old_epoch, now_ms());
    // The record first: a crash after the share is sealed leaves a record that says so.
    if let Err(e) = store.save(&state).await {
        d.abort("a party could not record its commit").await;
        return (
            CommitEnd::Failed(format!("cannot record the commit: {e}")),
            None,
        );
    }
    if let Err(e) = store.seal_pending(pending).await {
        d.abort("a party could not keep its new share").await;
        state.phase = Phase::InDoubt;
        let _ = store.save(&state).await;
        return (
            CommitEnd::Failed(format!("cannot keep the new share: {e}")),
            Some(state),
        );
    }
    let ready = ReadyStatement::sign(
        keys,
        &vault,
        context,
        target.epoch,
        &target.public_key,
        target.record_hash.unwrap_or_default(),
    );
    state.own_ready = Some(ready.clone());
    state.phase = Phase::ReadySent;
    // Written before it is sent: from here this party never deletes its pending share.
    if let Err(e) = store.save(&state).await {
        d.abort("a party could not record its READY").await;
        state.own_ready = None;
        state.phase = Phase::InDoubt;
        return (
            CommitEnd::Failed(format!("cannot record the READY: {e}")),
            Some(state),
        );
    }
    let outcome = d.exchange_ready(&target, Some(&ready)).await;
    finish(store, state, outcome).await
}

/// A dealer that is not in the new committee: it sends no READY, and retires only with a
/// certificate.
pub async fn leaving_dealer<S: CommitStore>(
    d: &mut Driver,
    store: &mut S,
    vault: &str,
    new_epoch: u64,
    public_key: &[u8],
    new_parties: Vec<[u8; 32]>,
    old_epoch: u64,
) -> (CommitEnd, Option<CommitState>) {
    let Some(context) = d.context() else {
        return (
            CommitEnd::Failed("the commit started before HELLO".into()),
            None,
        );
    };
    let target = CommitTarget {
        vault_id: vault.to_string(),
        context,
        epoch: new_epoch,
        public_key: public_key.to_vec(),
        record_hash: None,
        new_parties,
    };
    let state = CommitState::new(
        target.clone(),
        Role::LeavingDealer,
        Some(old_epoch),
        now_ms(),
    );
    if let Err(e) = store.save(&state).await {
        d.abort("a dealer could not record its commit").await;
        return (
            CommitEnd::Failed(format!("cannot record the commit: {e}")),
            None,
        );
    }
    let outcome = d.exchange_ready(&target, None).await;
    finish(store, state, outcome).await
}

async fn finish<S: CommitStore>(
    store: &mut S,
    mut state: CommitState,
    outcome: ReadyOutcome,
) -> (CommitEnd, Option<CommitState>) {
    let why = match outcome {
        ReadyOutcome::Complete(received) => {
            state.absorb(&received);
            None
        }
        ReadyOutcome::Incomplete { received, error } => {
            state.absorb(&received);
            Some(error.to_string())
        }
    };
    let pool: Vec<ReadyStatement> = state
        .received
        .iter()
        .chain(state.own_ready.iter())
        .cloned()
        .collect();
    state.updated_at_ms = now_ms();
    let Some(cert) = state.target.certificate(&pool) else {
        state.phase = Phase::InDoubt;
        let why = why.unwrap_or_else(|| "the READYs do not make a certificate".into());
        if let Err(e) = store.save(&state).await {
            return (
                CommitEnd::InDoubt(format!("{why} (and the commit record: {e})")),
                Some(state),
            );
        }
        return (CommitEnd::InDoubt(why), Some(state));
    };
    state.received = cert;
    let vault = state.target.vault_id.clone();
    let retiring = state.role == Role::LeavingDealer;
    state.phase = if retiring {
        Phase::Retired
    } else {
        Phase::Committed
    };
    // The certificate is kept before the move, so a crash here is finished at restart.
    if let Err(e) = store.save(&state).await {
        state.phase = Phase::InDoubt;
        return (
            CommitEnd::InDoubt(format!(
                "a certificate arrived but could not be recorded ({e})"
            )),
            Some(state),
        );
    }
    store.fault("promote");
    let moved = if retiring {
        store.retire(&vault).await
    } else {
        store.promote(&vault).await
    };
    match moved {
        Ok(()) if retiring => (CommitEnd::Retired, Some(state)),
        Ok(()) => (CommitEnd::Committed, Some(state)),
        // The certificate is recorded: a restart or a resolve finishes the move.
        Err(e) => (
            CommitEnd::InDoubt(format!(
                "the certificate is recorded but the move failed ({e}); a restart or `vault resolve` finishes it"
            )),
            Some(state),
        ),
    }
}
