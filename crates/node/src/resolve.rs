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
    fn discard(
        &mut self,
        state: &CommitState,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;
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
) -> Result<(Applied, CommitState), S::Error> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cosigner_party::Held;
    use cosigner_relay::commit::CommitTarget;

    /// A store that logs every step, with slots named by epoch.
    #[derive(Default)]
    struct Log {
        steps: Vec<String>,
        current: Option<u64>,
        pending: Option<u64>,
        previous: Option<u64>,
    }

    impl CommitStore for Log {
        type Pending = Held;
        type Error = String;

        async fn save(&mut self, state: &CommitState) -> Result<(), String> {
            self.steps.push(format!("save {}", state.phase.as_str()));
            Ok(())
        }

        async fn seal_pending(&mut self, _: Held) -> Result<(), String> {
            Err("not used here".into())
        }

        async fn promote(&mut self, _: &str) -> Result<(), String> {
            self.steps.push("promote".into());
            if let Some(p) = self.pending.take() {
                self.previous = self.current.replace(p);
            }
            Ok(())
        }

        async fn retire(&mut self, _: &str) -> Result<(), String> {
            self.steps.push("retire".into());
            self.previous = self.current.take();
            Ok(())
        }

        fn fault(&self, _: &str) {}
    }

    impl Discard for Log {
        async fn discard(&mut self, state: &CommitState) -> Result<(), String> {
            self.steps.push(format!("discard {}", state.phase.as_str()));
            if self.pending == Some(state.target.epoch) {
                self.pending = None;
            }
            Ok(())
        }
    }

    fn state(role: Role) -> CommitState {
        let target = CommitTarget {
            vault_id: "v".into(),
            context: [1; 32],
            epoch: 2,
            public_key: vec![2; 33],
            record_hash: None,
            new_parties: vec![[3; 32]],
        };
        CommitState::new(target, role, Some(1), 0)
    }

    fn store(pending: Option<u64>) -> Log {
        Log {
            current: Some(1),
            pending,
            ..Log::default()
        }
    }

    #[tokio::test]
    async fn each_verdict_is_recorded_before_the_slots_move() {
        // A new party with a certificate: recorded, then promoted.
        let mut s = store(Some(2));
        let (applied, st) = apply(&mut s, state(Role::NewParty), Verdict::Promote(vec![]), 5)
            .await
            .unwrap();
        assert_eq!(applied, Applied::Promoted);
        assert_eq!((st.phase, st.updated_at_ms), (Phase::Committed, 5));
        assert_eq!(s.steps, vec!["save committed", "promote"]);
        assert_eq!((s.current, s.previous), (Some(2), Some(1)));
        // A leaving dealer with a certificate: recorded, then retired.
        let mut s = store(None);
        let (applied, st) = apply(
            &mut s,
            state(Role::LeavingDealer),
            Verdict::Promote(vec![]),
            5,
        )
        .await
        .unwrap();
        assert_eq!((applied, st.phase), (Applied::Retired, Phase::Retired));
        assert_eq!(s.steps, vec!["save retired", "retire"]);
        assert_eq!((s.current, s.previous), (None, Some(1)));
        // No certificate anywhere: a new party's pending share goes, the current stays.
        let mut s = store(Some(2));
        let (applied, st) = apply(&mut s, state(Role::NewParty), Verdict::Discard, 5)
            .await
            .unwrap();
        assert_eq!((applied, st.phase), (Applied::Discarded, Phase::Discarded));
        assert_eq!(s.steps, vec!["discard discarded"]);
        assert_eq!((s.current, s.pending), (Some(1), None));
        // ...and a leaving dealer keeps its old share in use.
        let mut s = store(None);
        let (applied, _) = apply(&mut s, state(Role::LeavingDealer), Verdict::Discard, 5)
            .await
            .unwrap();
        assert_eq!(applied, Applied::Reactivated);
        assert_eq!(s.current, Some(1));
    }
}
