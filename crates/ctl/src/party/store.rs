//! The device's [`CommitStore`]: its commit records and slots live in the party file, and
//! every step writes the whole file durably before it returns (the order of the steps is
//! the safety argument, see `cosigner_relay::finish`).

use std::path::Path;

use cosigner_relay::Held;
use cosigner_relay::commit::{CommitState, Phase, Role};
use cosigner_relay::finish::CommitStore;

use super::file::{PartyFile, VaultSlots, epoch_of, put};

pub struct FileStore<'a> {
    pub file: &'a mut PartyFile,
    pub path: &'a Path,
    pub pass: &'a [u8],
}

impl FileStore<'_> {
    /// Changes one vault's slots and writes the file; if the write fails the change is
    /// undone in memory too, so a later write cannot carry it to disk.
    fn change(&mut self, vault: &str, f: impl FnOnce(&mut VaultSlots)) -> Result<(), String> {
        let before = self.file.slots(vault).cloned();
        f(self.file.slots_mut(vault));
        let r = self
            .file
            .save(self.path, self.pass)
            .map_err(|e| format!("{e:#}"));
        if r.is_err() {
            match before {
                Some(b) => *self.file.slots_mut(vault) = b,
                None => self.file.vaults.retain(|v| v.vault_id != vault),
            }
        }
        r
    }
}

/// Pending becomes current, current becomes previous. Nothing pending: nothing to do.
pub fn promote_slots(s: &mut VaultSlots) {
    if let Some(p) = s.pending.take() {
        if let Some(c) = s.current.take() {
            put(&mut s.previous, Some(c));
        }
        s.current = Some(p);
    }
}

/// Current becomes previous; nothing is current. Nothing current: nothing to do.
pub fn retire_slots(s: &mut VaultSlots) {
    if let Some(c) = s.current.take() {
        put(&mut s.previous, Some(c));
    }
}

/// After a crash or kill between recording a certificate and moving the slots: finishes
/// the move. Returns a line per vault it finished.
pub fn finish_recorded(file: &mut PartyFile) -> Vec<String> {
    let mut done = Vec::new();
    for s in &mut file.vaults {
        let Ok(Some(state)) = s.commit_state() else {
            continue;
        };
        // Only a recorded certificate finishes a move.
        if state.target.certificate(&state.received).is_none() {
            continue;
        }
        match state.phase {
            Phase::Committed if epoch_of(&s.pending) == Some(state.target.epoch) => {
                promote_slots(s);
                done.push(format!(
                    "vault {:?}: finished the promotion to epoch {} (its certificate was recorded before an interruption)",
                    s.vault_id, state.target.epoch
                ));
            }
            Phase::Retired
                if state.old_epoch.is_some() && epoch_of(&s.current) == state.old_epoch =>
            {
                retire_slots(s);
                done.push(format!(
                    "vault {:?}: finished retiring from epoch {} (its certificate was recorded before an interruption)",
                    s.vault_id,
                    state.old_epoch.unwrap_or_default()
                ));
            }
            _ => {}
        }
    }
    done
}

/// A vault's slots by epoch, as the shared rules read them.
pub fn epochs(s: &VaultSlots) -> cosigner_node::ports::Slots {
    cosigner_node::ports::Slots::new(
        epoch_of(&s.current),
        epoch_of(&s.pending),
        epoch_of(&s.previous),
    )
}

/// The newest epoch of a vault this file knows of: the shares it holds, and its commit
/// record, which outlives a destroyed previous share (a certified move's epoch, or the
/// epoch a move started from). A restore of an older epoch is refused by it. A commit
/// record that does not decode is an error: a restore is refused rather than guessed.
pub fn newest_seen(s: &VaultSlots) -> anyhow::Result<Option<u64>> {
    let e = epochs(s);
    let held = e.current.max(e.pending).max(e.previous);
    let from_commit = s.commit_state()?.and_then(|c| {
        let reached =
            matches!(c.phase, Phase::Committed | Phase::Retired).then_some(c.target.epoch);
        reached.max(c.old_epoch)
    });
    Ok(held.max(from_commit))
}

/// Destroys the previous shares the shared rules ([`cosigner_node::previous`]) are done
/// with: after a verified signature at the current epoch (`signed`: vault and epoch), or
/// a week after the certified commit that replaced them. Returns a line per share dropped;
/// the caller writes the file.
pub fn drop_done_previous(
    file: &mut PartyFile,
    signed: Option<(&str, u64)>,
    now_ms: i64,
) -> Vec<String> {
    use cosigner_node::previous;
    let mut done = Vec::new();
    for s in &mut file.vaults {
        let slots = epochs(s);
        let by_signature = signed
            .filter(|(v, _)| *v == s.vault_id)
            .and_then(|(_, epoch)| previous::after_signature(&slots, epoch));
        let why = match by_signature {
            Some(p) => format!("epoch {p}: the new epoch signed here"),
            None => {
                let commit = s.commit_state().ok().flatten();
                match previous::expired(
                    &slots,
                    commit.as_ref(),
                    now_ms,
                    previous::KEEP_AFTER_COMMIT_MS,
                ) {
                    Some(e) => format!(
                        "epoch {}: {} days after the certified commit of epoch {}",
                        e.previous,
                        e.age_ms / 86_400_000,
                        e.certified_epoch
                    ),
                    None => continue,
                }
            }
        };
        put(&mut s.previous, None);
        done.push(format!(
            "vault {:?}: dropped the previous share ({why})",
            s.vault_id
        ));
    }
    done
}

impl CommitStore for FileStore<'_> {
    type Pending = Held;
    type Error = String;

    async fn save(&mut self, state: &CommitState) -> Result<(), String> {
        let bytes = state.encode();
        self.change(&state.target.vault_id, |s| s.commit = Some(bytes))
    }

    async fn seal_pending(&mut self, pending: Held) -> Result<(), String> {
        let vault = pending.record.vault_id().to_string();
        let bytes = pending.encode().to_vec();
        drop(pending);
        self.change(&vault, |s| put(&mut s.pending, Some(bytes)))
    }

    async fn promote(&mut self, vault: &str) -> Result<(), String> {
        self.change(vault, promote_slots)
    }

    async fn retire(&mut self, vault: &str) -> Result<(), String> {
        self.change(vault, retire_slots)
    }
}

impl cosigner_node::resolve::Discard for FileStore<'_> {
    /// The record and the slots in one write: the pending share of the target epoch goes;
    /// a dealer (which never retired without a certificate) gets its old share back as
    /// current if it had been moved.
    async fn discard(&mut self, state: &CommitState) -> Result<(), String> {
        let bytes = state.encode();
        let epoch = state.target.epoch;
        let old_epoch = state.old_epoch;
        let dealer = state.role == Role::LeavingDealer;
        self.change(&state.target.vault_id, |s| {
            if dealer {
                if s.current.is_none() && old_epoch.is_some() && epoch_of(&s.previous) == old_epoch
                {
                    s.current = s.previous.take();
                }
            } else if epoch_of(&s.pending) == Some(epoch) {
                put(&mut s.pending, None);
            }
            s.commit = Some(bytes);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cosigner_relay::commit::{CommitTarget, Role};
    use cosigner_relay::{PartyKeys, VaultRecord};
    use cosigner_tss::{Committee, Keygen, KeygenParams, PartyId, local};

    const PASS: &[u8] = b"a long test passphrase";

    /// A 2-of-2 keygen in one process: each party's share and record.
    fn keygen() -> Vec<Held> {
        let keys: Vec<PartyKeys> = (0..2).map(|_| PartyKeys::generate()).collect();
        let members: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| k.member(&format!("p{i}")))
            .collect();
        let committee = Committee::new(2, members.iter().map(|m| PartyId(m.id))).unwrap();
        let parties = members
            .iter()
            .map(|m| {
                Keygen::new(
                    KeygenParams {
                        vault_id: "v".into(),
                        committee: committee.clone(),
                        nonce: [7; 32],
                    },
                    PartyId(m.id),
                )
                .unwrap()
            })
            .collect();
        let (shares, _) = local::run(parties).unwrap();
        shares
            .into_iter()
            .map(|s| {
                let r = VaultRecord::new(s.public().clone(), members.clone(), 0, 0).unwrap();
                Held::new(r, s).unwrap()
            })
            .collect()
    }

    /// A commit record; Committed and Retired ones hold a certificate (one new party's
    /// READY), as `finish` writes them.
    fn state(phase: Phase, role: Role, epoch: u64, old_epoch: Option<u64>) -> CommitState {
        let other = PartyKeys::generate();
        let mut s = CommitState::new(
            CommitTarget {
                vault_id: "v".into(),
                context: [1; 32],
                epoch,
                public_key: vec![2; 33],
                record_hash: None,
                new_parties: vec![other.party_id()],
            },
            role,
            old_epoch,
            0,
        );
        s.phase = phase;
        if matches!(phase, Phase::Committed | Phase::Retired) {
            s.received = vec![cosigner_relay::commit::ReadyStatement::sign(
                &other, "v", [1; 32], epoch, &[2; 33], [0; 32],
            )];
        }
        s
    }

    #[tokio::test]
    async fn the_store_writes_every_step_and_a_restart_finishes_a_recorded_move() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.party");
        let mut file = PartyFile::create("p0");
        let held = keygen().remove(0);
        let epoch = held.record.epoch();
        let mut store = FileStore {
            file: &mut file,
            path: &path,
            pass: PASS,
        };
        store
            .save(&state(Phase::Sealed, Role::NewParty, epoch, None))
            .await
            .unwrap();
        store.seal_pending(held).await.unwrap();
        // The certificate is recorded, then the process dies before the promotion.
        store
            .save(&state(Phase::Committed, Role::NewParty, epoch, None))
            .await
            .unwrap();
        let mut back = PartyFile::open(&path, PASS).unwrap();
        assert_eq!(epoch_of(&back.slots("v").unwrap().pending), Some(epoch));
        assert!(back.slots("v").unwrap().current.is_none());
        assert_eq!(finish_recorded(&mut back).len(), 1);
        let s = back.slots("v").unwrap();
        assert_eq!(epoch_of(&s.current), Some(epoch));
        assert!(s.pending.is_none() && s.previous.is_none());
        // Nothing left to finish.
        assert!(finish_recorded(&mut back).is_empty());

        // A dealer that saw a certificate but died before retiring.
        back.slots_mut("v").commit =
            Some(state(Phase::Retired, Role::LeavingDealer, epoch + 1, Some(epoch)).encode());
        assert_eq!(finish_recorded(&mut back).len(), 1);
        let s = back.slots("v").unwrap();
        assert!(s.current.is_none());
        assert_eq!(epoch_of(&s.previous), Some(epoch));

        // A commit in doubt is left alone.
        back.slots_mut("v").commit =
            Some(state(Phase::ReadySent, Role::NewParty, epoch + 1, Some(epoch)).encode());
        assert!(finish_recorded(&mut back).is_empty());
        // So is a "committed" record without a certificate (it proves nothing).
        let mut bare = state(Phase::Committed, Role::NewParty, epoch, None);
        bare.received.clear();
        back.slots_mut("v").commit = Some(bare.encode());
        back.slots_mut("v").pending = back.slots("v").unwrap().previous.clone();
        assert_eq!(epoch_of(&back.slots("v").unwrap().pending), Some(epoch));
        assert!(finish_recorded(&mut back).is_empty());
    }

    #[tokio::test]
    async fn a_failed_write_is_undone_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        // The file's directory does not exist: every write fails.
        let path = dir.path().join("missing").join("d.party");
        let mut file = PartyFile::create("p0");
        let mut store = FileStore {
            file: &mut file,
            path: &path,
            pass: PASS,
        };
        assert!(
            store
                .save(&state(Phase::Sealed, Role::NewParty, 1, None))
                .await
                .is_err()
        );
        assert!(store.file.slots("v").is_none());
        store.file.slots_mut("v").current = Some(vec![1]);
        store.file.slots_mut("v").pending = Some(vec![2]);
        assert!(store.promote("v").await.is_err());
        let s = store.file.slots("v").unwrap();
        assert_eq!(s.current.as_deref(), Some(&[1u8][..]));
        assert_eq!(s.pending.as_deref(), Some(&[2u8][..]));
    }

    #[test]
    fn the_newest_epoch_seen_outlives_a_destroyed_previous_share() {
        let mut s = VaultSlots::default();
        s.vault_id = "v".into();
        assert_eq!(newest_seen(&s).unwrap(), None);
        // A dealer that left at epoch 1 and whose epoch-0 share was destroyed since.
        s.commit = Some(state(Phase::Retired, Role::LeavingDealer, 1, Some(0)).encode());
        assert_eq!(newest_seen(&s).unwrap(), Some(1));
        // A move to epoch 2 that was discarded: epoch 1 is the newest it reached.
        s.commit = Some(state(Phase::Discarded, Role::NewParty, 2, Some(1)).encode());
        assert_eq!(newest_seen(&s).unwrap(), Some(1));
        // A damaged commit record refuses rather than guesses.
        s.commit = Some(vec![1, 2, 3]);
        assert!(newest_seen(&s).is_err());
    }

    #[test]
    fn promote_and_retire_move_the_slots() {
        let mut s = VaultSlots {
            vault_id: "v".into(),
            current: Some(vec![1]),
            pending: Some(vec![2]),
            previous: Some(vec![0]),
            commit: None,
        };
        promote_slots(&mut s);
        assert_eq!(
            (
                s.previous.as_deref(),
                s.current.as_deref(),
                s.pending.as_deref()
            ),
            (Some(&[1u8][..]), Some(&[2u8][..]), None)
        );
        promote_slots(&mut s); // idempotent
        assert_eq!(s.current.as_deref(), Some(&[2u8][..]));
        retire_slots(&mut s);
        assert_eq!(
            (s.current.as_deref(), s.previous.as_deref()),
            (None, Some(&[2u8][..]))
        );
        retire_slots(&mut s);
        assert_eq!(s.previous.as_deref(), Some(&[2u8][..]));
    }
}
