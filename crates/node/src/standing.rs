//! Where a party stands with a vault, from what it holds and its commit record, read
//! without unsealing. One derivation for the daemon (`Vault.state`, GetVaultRecord, which
//! share may sign) and the device (`party show`), so the two cannot disagree on whether a
//! vault is in doubt or retired.

use cosigner_relay::commit::{CommitState, Phase, Role};
use cosigner_relay::keys::hex;

use crate::ports::Slots;

/// A vault's standing at this party.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The current share signs and deals.
    Active,
    /// A commit needs a resolve; the reason says what ended it.
    InDoubt(String),
    /// A dealer that left the committee at this (new) epoch.
    Retired(u64),
    /// The current share is refused (rolled back below the floor); the reason says why.
    Damaged(String),
    /// Nothing of the vault is held here.
    Empty,
}

impl Standing {
    /// The word `Vault.state` and `party show` use.
    pub fn as_str(&self) -> &'static str {
        match self {
            Standing::Active => "active",
            Standing::InDoubt(_) => "in_doubt",
            Standing::Retired(_) => "retired",
            Standing::Damaged(_) => "damaged",
            Standing::Empty => "empty",
        }
    }
}

/// The standing of a vault whose slots are `slots` and whose latest commit record is
/// `commit`. `below_floor` is the reason the current share is refused, when the party
/// keeps an epoch floor and the current share is below it.
///
/// The order matters: an unfinished commit outranks a current share (a party in doubt
/// signs nothing), and a current share outranks a retired commit record (a dealer that
/// left can be dealt back in later).
pub fn standing(
    slots: &Slots,
    commit: Option<&CommitState>,
    below_floor: Option<String>,
) -> Standing {
    if let Some(c) = commit {
        // A certificate is recorded but the pending share was not made current: a crash
        // between the two; a restart or a resolve finishes it.
        if c.phase == Phase::Committed && slots.pending == Some(c.target.epoch) {
            return Standing::InDoubt(format!(
                "the promotion to epoch {} (certificate recorded) did not finish",
                c.target.epoch
            ));
        }
        if c.phase.needs_resolve() {
            let kind = if c.old_epoch.is_some() || c.role == Role::LeavingDealer {
                "reshare"
            } else {
                "keygen"
            };
            return Standing::InDoubt(format!(
                "the {kind} of epoch {} (ceremony context {}) ended without proof that every new party holds its share ({})",
                c.target.epoch,
                hex(&c.target.context),
                c.phase.as_str()
            ));
        }
    }
    if slots.current.is_some() {
        return match below_floor {
            None => Standing::Active,
            Some(why) => Standing::Damaged(why),
        };
    }
    match commit {
        Some(c) if c.phase == Phase::Retired => Standing::Retired(c.target.epoch),
        _ if slots.pending.is_some() => {
            Standing::InDoubt("a pending share that no open commit accounts for".into())
        }
        _ => match slots.previous {
            Some(p) => Standing::Retired(p + 1),
            None => Standing::Empty,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cosigner_relay::commit::CommitTarget;

    fn commit(phase: Phase, epoch: u64, role: Role, old: Option<u64>) -> CommitState {
        let target = CommitTarget {
            vault_id: "v".into(),
            context: [7; 32],
            epoch,
            public_key: Vec::new(),
            record_hash: None,
            new_parties: Vec::new(),
        };
        let mut c = CommitState::new(target, role, old, 0);
        c.phase = phase;
        c
    }

    fn slots(current: Option<u64>, pending: Option<u64>, previous: Option<u64>) -> Slots {
        Slots::new(current, pending, previous)
    }

    #[test]
    fn an_unfinished_commit_outranks_a_current_share() {
        let c = commit(Phase::ReadySent, 2, Role::NewParty, Some(1));
        let s = standing(&slots(Some(1), Some(2), None), Some(&c), None);
        assert!(
            matches!(&s, Standing::InDoubt(why) if why.starts_with("the reshare of epoch 2")),
            "{s:?}"
        );
        let k = commit(Phase::Sealed, 0, Role::NewParty, None);
        let s = standing(&slots(None, Some(0), None), Some(&k), None);
        assert!(
            matches!(&s, Standing::InDoubt(why) if why.starts_with("the keygen of epoch 0")),
            "{s:?}"
        );
    }

    #[test]
    fn a_certified_commit_with_its_share_still_pending_is_in_doubt() {
        let c = commit(Phase::Committed, 2, Role::NewParty, Some(1));
        let s = standing(&slots(Some(1), Some(2), None), Some(&c), None);
        assert!(
            matches!(&s, Standing::InDoubt(why) if why.contains("promotion to epoch 2")),
            "{s:?}"
        );
        // Promoted: active.
        let s = standing(&slots(Some(2), None, Some(1)), Some(&c), None);
        assert_eq!(s, Standing::Active);
    }

    #[test]
    fn a_share_below_the_floor_is_damaged_not_active() {
        let s = standing(
            &slots(Some(1), None, None),
            None,
            Some("rolled back".into()),
        );
        assert_eq!(s, Standing::Damaged("rolled back".into()));
    }

    #[test]
    fn retired_empty_and_orphaned_pending() {
        let c = commit(Phase::Retired, 3, Role::LeavingDealer, Some(2));
        assert_eq!(
            standing(&slots(None, None, Some(2)), Some(&c), None),
            Standing::Retired(3)
        );
        assert_eq!(
            standing(&slots(None, None, Some(4)), None, None),
            Standing::Retired(5)
        );
        assert_eq!(
            standing(&slots(None, None, None), None, None),
            Standing::Empty
        );
        assert!(matches!(
            standing(&slots(None, Some(1), None), None, None),
            Standing::InDoubt(_)
        ));
        // A discarded commit leaves whatever is held to decide.
        let d = commit(Phase::Discarded, 3, Role::NewParty, Some(2));
        assert_eq!(
            standing(&slots(Some(2), None, None), Some(&d), None),
            Standing::Active
        );
    }
}
