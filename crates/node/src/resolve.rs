//! Carrying out the decision on an interrupted commit ([`cosigner_relay::commit::decide`]
//! over the other parties' signed reports), for the daemon (`ResolvePending`) and the
//! device (`party resolve`) alike. The decision is recorded before the slots move, so a
//! crash in between is finished at the next start: with a certificate, pending becomes
//! current (a new party) or the old share retires (a dealer that left); without one, once
//! every new party reported, the pending share is deleted (a dealer keeps its old share).

use std::future::Future;

use cosigner_relay::commit::{CommitState, Decision, Phase, ReadyStatement, Report, Role, decide};
use cosigner_relay::finish::CommitStore;

use crate::error::{Code, NodeError};
use crate::ports::{Clock, Journal, Kind, Shares};
use crate::server::Server;

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
/// (`unfinished_move`) is finished without asking anyone, on the certificate on record
/// (checked here: without one, nothing is promoted).
pub fn verdict(
    state: &CommitState,
    reports: &[Report],
    lost: &[[u8; 32]],
    me: [u8; 32],
    unfinished_move: bool,
) -> Result<Verdict, String> {
    let decision = if unfinished_move {
        // Only a certificate on record finishes a move; without one nothing is promoted.
        match state.target.certificate(&state.received) {
            Some(_) => Decision::Promote(state.received.clone()),
            None => {
                return Err(format!(
                    "no certificate for epoch {} is on record here: nothing to finish",
                    state.target.epoch
                ));
            }
        }
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

/// The evidence of a resolve request, checked: every report decodes and carries its
/// party's valid signature, every lost party is a party id. Each error names the item.
pub fn evidence(
    reports: &[Vec<u8>],
    lost: &[Vec<u8>],
) -> Result<(Vec<Report>, Vec<[u8; 32]>), NodeError> {
    let mut out = Vec::with_capacity(reports.len());
    for (i, r) in reports.iter().enumerate() {
        let field = format!("reports[{i}]");
        let rep = Report::decode(r).map_err(|e| NodeError::invalid(&field, e))?;
        if !rep.verify() {
            return Err(NodeError::invalid(
                &field,
                format!(
                    "the report by {} does not verify",
                    cosigner_party::keys::short(&rep.party)
                ),
            ));
        }
        out.push(rep);
    }
    let lost = lost
        .iter()
        .enumerate()
        .map(|(i, p)| {
            p.as_slice().try_into().map_err(|_| {
                NodeError::invalid(
                    &format!("lost[{i}]"),
                    format!("{} bytes; a party id is 32", p.len()),
                )
            })
        })
        .collect::<Result<Vec<[u8; 32]>, _>>()?;
    Ok((out, lost))
}

/// How a resolve ended.
pub enum Resolution {
    /// Nothing decided yet; why (whom it waits for).
    Undecided(String),
    /// The verdict carried out and recorded in the commit record.
    Applied {
        applied: Applied,
        state: Box<CommitState>,
        detail: String,
    },
}

impl<S, J, D, R, C, O> Server<'_, S, J, D, R, C, O>
where
    S: Shares,
    J: Journal,
    C: Clock,
{
    /// Decides this party's interrupted commit of `vault` from the others' signed
    /// `reports` (and the parties declared `lost`), or finishes a certified move or a
    /// discard a crash interrupted, then carries the verdict out. An operator's word alone
    /// decides nothing; a pending share that does not open is never promoted.
    pub async fn resolve(
        &self,
        vault: &str,
        reports: &[Report],
        lost: &[[u8; 32]],
    ) -> Result<Resolution, NodeError> {
        cosigner_party::vault_id::check(vault).map_err(|e| NodeError::invalid("vault_id", e))?;
        let _claim = self.journal.exclusive(vault)?;
        let Some(state) = self.shares.commit_state(vault).await? else {
            return Err(NodeError::new(
                Code::FailedPrecondition,
                format!("vault {vault:?} has no keygen or reshare to resolve here"),
            ));
        };
        let slots = self.shares.slots(vault).await?;
        let epoch = state.target.epoch;
        let certified = state.target.certificate(&state.received).is_some();
        let unfinished_move = certified
            && match state.phase {
                Phase::Committed => slots.pending == Some(epoch),
                Phase::Retired => slots.current.is_some_and(|c| c < epoch),
                _ => false,
            };
        let mut store = self.shares.commit(Kind::Resolve, epoch);
        if state.phase == Phase::Discarded && slots.pending == Some(epoch) {
            // A discard decided before a crash: finish it.
            store.discard(&state).await?;
        }
        if !state.phase.needs_resolve() && !unfinished_move {
            return Err(NodeError::new(
                Code::FailedPrecondition,
                format!(
                    "the commit of vault {vault:?} at epoch {epoch} is already decided here ({})",
                    state.phase.as_str()
                ),
            ));
        }
        let verdict = match verdict(&state, reports, lost, self.me(), unfinished_move) {
            Ok(v) => v,
            Err(why) => return Ok(Resolution::Undecided(why)),
        };
        if matches!(verdict, Verdict::Promote(_)) && state.role != Role::LeavingDealer {
            self.shares.check_pending(vault).await?;
        }
        let old_epoch = state.old_epoch;
        let (applied, state) = apply(&mut store, state, verdict, self.clock.now_ms()).await?;
        Ok(Resolution::Applied {
            detail: applied.detail(epoch, old_epoch, slots.current.is_some()),
            applied,
            state: Box::new(state),
        })
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
        // A move is only finished on a certificate on record: this state has none, so
        // claiming an unfinished move promotes nothing.
        assert!(verdict(&st, &[], &[], [9; 32], true).is_err());
        // The new party declared lost, with no certificate anywhere: discard.
        assert!(matches!(
            verdict(&st, &[], &[[3; 32]], [9; 32], false),
            Ok(Verdict::Discard)
        ));
    }
}
