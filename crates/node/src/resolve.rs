//! Carrying out the decision on an interrupted commit ([`cosigner_relay::commit::decide`]
//! over the other parties' signed reports), for the daemon (`ResolvePending`) and the
//! device (`party resolve`) alike. The decision is recorded before the slots move, so a
//! crash in between is finished at the next start: with a certificate, pending becomes
//! current (a new party) or the old share retires (a dealer that left); without one, once
//! every new party reported, the pending share is deleted (a dealer keeps its old share).

use std::future::Future;

use cosigner_relay::commit::{CommitState, Phase, ReadyStatement, Role};
use cosigner_relay::finish::CommitStore;

/// A store that can also record a discard.
pub trait Discard: CommitStore {
    /// Records `state` (phase Discarded) and deletes the pending share of its target epoch,
    /// if there is one. A leaving dealer keeps its old share current (it retires only with
    /// a certificate; a store that had moved it anyway puts it back).
    fn discard(&mut self, state: &CommitState) -> impl Future<Output = Result<(), String>> + Send;
}

/// What the decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A certificate: the pending share is current.
    Promoted,
    /// A certificate: this dealer left the committee.
    Retired,
    /// No certificate anywhere: the pending share is deleted.
    Discarded,
    /// No certificate anywhere: this dealer's old share is in use again.
    Reactivated,
}

impl Applied {
    pub fn as_str(self) -> &'static str {
        match self {
            Applied::Promoted => "promoted",
            Applied::Retired => "retired",
            Applied::Discarded => "discarded",
            Applied::Reactivated => "reactivated",
        }
    }
}

/// What to do: promote (or retire) on this certificate, or discard.
pub enum Verdict {
    Promote(Vec<ReadyStatement>),
    Discard,
}

/// Records the verdict in `state`, then moves the slots. Returns what it did and the state
/// as recorded.
pub async fn apply<S: Discard>(
    store: &mut S,
    mut state: CommitState,
    verdict: Verdict,
    now_ms: i64,
) -> Result<(Applied, CommitState), String> {
    let dealer = state.role == Role::LeavingDealer;
    let vault = state.target.vault_id.clone();
    state.updated_at_ms = now_ms;
    match verdict {
        Verdict::Promote(cert) => {
            state.received = cert;
            state.phase = if dealer {
                Phase::Retired
            } else {
                Phase::Committed
            };
            // The certificate first: a crash before the move is finished at the next start.
            store.save(&state).await?;
            if dealer {
                store.retire(&vault).await?;
                Ok((Applied::Retired, state))
            } else {
                store.promote(&vault).await?;
                Ok((Applied::Promoted, state))
            }
        }
        Verdict::Discard => {
            state.phase = Phase::Discarded;
            store.discard(&state).await?;
            Ok((
                if dealer {
                    Applied::Reactivated
                } else {
                    Applied::Discarded
                },
                state,
            ))
        }
    }
}
