//! What a party refuses when a share backup is restored into it, the daemon and the device
//! alike. A restore is the one way a share enters a party other than a ceremony, so it
//! refuses whatever would weaken the vault, each time saying why:
//! - an epoch older than the newest this party has seen or its floor: every reshare
//!   replaced all shares, and an old share only brings a retired secret back;
//! - a second share of a vault the party already holds (two of the t shares in one place);
//! - a backup of another party into a party that holds any vault (a party is one party:
//!   only an empty one takes the backup's identity, to replace a lost machine).
//!
//! These are local and cheap; the other parties' word on the epoch
//! ([`crate::peers::ask`]) comes after them.

use cosigner_relay::keys::short;

use crate::error::{Code, NodeError};

/// What the restoring party knows, read without unsealing.
pub struct Restoring<'a> {
    /// What this party is, for the messages ("daemon", "party file").
    pub this: &'a str,
    /// This party's id.
    pub me: [u8; 32],
    /// The newest epoch of the vault this party has seen or held, if any.
    pub newest_seen: Option<u64>,
    /// The epoch floor of the vault here, if any (an epoch this party moved past).
    pub floor: Option<u64>,
    /// The epoch of a share of the vault this party holds in any slot, if any.
    pub held: Option<u64>,
    /// Every vault this party holds something of.
    pub vaults: &'a [String],
}

/// The backup to restore, as its metadata and keys say.
pub struct Backup<'a> {
    pub party: [u8; 32],
    pub party_name: &'a str,
    pub vault: &'a str,
    pub epoch: u64,
}

/// Checks a restore; Ok(true) when the party takes the backup's identity (it is another
/// party's backup, restored into an empty party).
pub fn check(b: &Backup<'_>, here: &Restoring<'_>) -> Result<bool, NodeError> {
    let (vault, epoch, this) = (b.vault, b.epoch, here.this);
    if let Some(newest) = here.newest_seen
        && epoch < newest
    {
        return Err(NodeError::precondition(format!(
            "the backup is of epoch {epoch}, but this {this} has seen vault {vault:?} at epoch {newest}: every reshare replaced all shares, so an epoch-{epoch} share cannot sign with the other parties and restoring it would only bring a retired secret back into use; use a backup of epoch {newest} or later"
        )));
    }
    if let Some(floor) = here.floor
        && epoch < floor
    {
        return Err(NodeError::precondition(format!(
            "the backup is of epoch {epoch}, below this {this}'s floor {floor} for vault {vault:?}: that epoch was replaced here and its share must not come back"
        )));
    }
    if let Some(held) = here.held {
        return Err(NodeError::new(
            Code::AlreadyExists,
            format!(
                "this {this} already holds a share of vault {vault:?} (epoch {held}); a second share of the same vault in one place would put two of its shares below the threshold's protection. Restore only into the {this} that replaces party {}, and only if it holds no share of this vault",
                short(&b.party)
            ),
        ));
    }
    if b.party == here.me {
        return Ok(false);
    }
    if !here.vaults.is_empty() {
        return Err(NodeError::precondition(format!(
            "this {this} is party {} and holds vault(s) {}; a {this} is one party, so a backup of party {} ({:?}) can only be restored into a {this} that holds no vault (a fresh one that replaces the lost machine)",
            short(&here.me),
            here.vaults.join(", "),
            short(&b.party),
            b.party_name
        )));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(epoch: u64, party: u8) -> Backup<'static> {
        Backup {
            party: [party; 32],
            party_name: "p",
            vault: "v",
            epoch,
        }
    }

    fn here(vaults: &[String]) -> Restoring<'_> {
        Restoring {
            this: "daemon",
            me: [1; 32],
            newest_seen: None,
            floor: None,
            held: None,
            vaults,
        }
    }

    #[test]
    fn every_refusal_names_its_reason() {
        let none: Vec<String> = Vec::new();
        let held = vec!["w".to_string()];
        // Stale against what was seen, or against the floor.
        let e = check(
            &backup(1, 1),
            &Restoring {
                newest_seen: Some(2),
                ..here(&none)
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("seen vault \"v\" at epoch 2"), "{e}");
        let e = check(
            &backup(1, 1),
            &Restoring {
                floor: Some(3),
                ..here(&none)
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("floor 3"), "{e}");
        // A second share of the vault.
        let e = check(
            &backup(2, 1),
            &Restoring {
                held: Some(2),
                ..here(&none)
            },
        )
        .unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e}");
        // Another party's backup into a party that holds a vault.
        let e = check(&backup(2, 9), &here(&held)).unwrap_err();
        assert!(
            e.to_string()
                .contains("holds vault(s) w; a daemon is one party"),
            "{e}"
        );
    }

    #[test]
    fn the_own_backup_restores_and_another_partys_only_into_an_empty_one() {
        let none: Vec<String> = Vec::new();
        let held = vec!["w".to_string()];
        assert!(!check(&backup(2, 1), &here(&held)).unwrap());
        assert!(check(&backup(2, 9), &here(&none)).unwrap());
        // The newest epoch seen is fine; a newer one too.
        let at = Restoring {
            newest_seen: Some(2),
            floor: Some(2),
            ..here(&none)
        };
        assert!(check(&backup(2, 9), &at).unwrap());
        assert!(check(&backup(3, 9), &at).unwrap());
    }
}
