//! Carrying out the decision on an interrupted commit ([`cosigner_relay::commit::decide`]
//! over the other parties' signed reports), for the daemon (`ResolvePending`) and the
//! device (`party resolve`) alike. The decision is recorded before the slots move, so a
//! crash in between is finished at the next start: with a certificate, pending becomes
//! current (a new party) or the old share retires (a dealer that left); without one, once
//! every new party reported, the pending share is deleted (a dealer keeps its old share).

use std::future::Future;

use cosigner_relay::commit::{CommitState, Decision, Phase, ReadyStatement, Report, Role, decide};
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

    /// What happened, for the operator: the commit to `epoch` (from `old_epoch`), and
    /// whether this party still has a current share after a discard.
    pub fn detail(self, epoch: u64, old_epoch: Option<u64>, has_current: bool) -> String {
        match self {
            Applied::Retired => format!(
                "every new party's READY is known (a certificate): this dealer left the committee at epoch {epoch}"
            ),
            Applied::Promoted => format!(
                "every new party's READY is known (a certificate): epoch {epoch} is current"
            ),
            Applied::Reactivated => format!(
                "every new party reported and no certificate exists: the reshare to epoch {epoch} did not happen; this party's epoch {} share is in use again",
                old_epoch.unwrap_or(0)
            ),
            Applied::Discarded => format!(
                "every new party reported (or was declared lost) and no certificate exists: the pending share of epoch {epoch} is deleted{}",
                if has_current {
                    "; the current share stays in use"
                } else {
                    ""
                }
            ),
        }
    }
}

/// The verdict on `state` from the other parties' signed `reports` (and the parties
/// declared `lost`), or why there is none yet. A certified move that a crash interrupted
/// (`unfinished_move`) is finished without asking anyone: the certificate is on record.
pub fn verdict(
    state: &CommitState,
    reports: &[Report],
    lost: &[[u8; 32]],
    me: [u8; 32],
    unfinished_move: bool,
) -> Result<Verdict, String> {
    let decision = if unfinished_move {
        Decision::Promote(state.received.clone())
    } else {
        decide(state, reports, lost, me)
    };
    match decision {
        Decision::Promote(cert) => Ok(Verdict::Promote(cert)),
        Decision::Discard => Ok(Verdict::Discard),
        Decision::Undecided(why) => Err(why),
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

    #[test]
    fn only_a_recorded_certificate_or_the_reports_decide() {
        let st = state(Role::NewParty);
        // No reports and a new party not heard from: nothing is decided, naming why.
        let why = verdict(&st, &[], &[], [9; 32], false).err().unwrap();
        assert!(!why.is_empty());
        // A certified move a crash interrupted is finished on the recorded certificate.
        assert!(matches!(
            verdict(&st, &[], &[], [9; 32], true),
            Ok(Verdict::Promote(_))
        ));
        // The new party declared lost, with no certificate anywhere: discard.
        assert!(matches!(
            verdict(&st, &[], &[[3; 32]], [9; 32], false),
            Ok(Verdict::Discard)
        ));
    }
}
