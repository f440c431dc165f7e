//! When a party destroys its previous-epoch share.
//!
//! A reshare keeps the public key, so an old share still combines with t-1 other old shares
//! of the same epoch into a signature: the previous share is kept only as long as it may
//! be needed to undo a move that did not work, and then destroyed. One rule set for the
//! daemon and the device, so neither keeps old shares longer than the other:
//! - after the first verified signature at the new epoch here: the new epoch works;
//! - a fixed time after the certified commit (every new party holds the new epoch), for a
//!   party that is never chosen as a signer, or a dealer that left the committee.

use cosigner_relay::commit::{CommitState, Phase};

use crate::ports::Slots;

/// How long a previous share is kept after its certified commit when nothing else drops it
/// (`ceremonies.drop_previous_after_secs`'s default, and the device's rule).
pub const KEEP_AFTER_COMMIT_MS: i64 = 7 * 24 * 3600 * 1000;

/// The previous epoch to drop now that a signature at `signed_epoch` verified, if any.
/// Only a signature at the current epoch proves the new epoch works (a signature at the
/// old epoch that ended after a promotion does not).
pub fn after_signature(slots: &Slots, signed_epoch: u64) -> Option<u64> {
    slots
        .previous
        .filter(|p| slots.current == Some(signed_epoch) && *p < signed_epoch)
}

/// A previous share whose time is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// Its epoch.
    pub previous: u64,
    /// The epoch whose certified commit started the clock.
    pub certified_epoch: u64,
    /// How long ago that commit was recorded.
    pub age_ms: i64,
}

/// The previous share to drop at `now_ms` because the commit that replaced it was
/// certified `keep_ms` or more ago. Nothing while a pending share waits (a later
/// ceremony may still need undoing) or without a certificate on record.
pub fn expired(
    slots: &Slots,
    commit: Option<&CommitState>,
    now_ms: i64,
    keep_ms: i64,
) -> Option<Expired> {
    let previous = slots.previous?;
    let c = commit?;
    let certified = matches!(c.phase, Phase::Committed | Phase::Retired)
        && c.target.certificate(&c.received).is_some()
        && previous < c.target.epoch
        && slots.pending.is_none();
    let age_ms = now_ms.saturating_sub(c.updated_at_ms);
    (certified && age_ms >= keep_ms).then_some(Expired {
        previous,
        certified_epoch: c.target.epoch,
        age_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(current: Option<u64>, pending: Option<u64>, previous: Option<u64>) -> Slots {
        Slots::new(current, pending, previous)
    }

    #[test]
    fn only_a_signature_at_the_current_epoch_drops_the_previous_share() {
        assert_eq!(after_signature(&slots(Some(2), None, Some(1)), 2), Some(1));
        // Signed at the old epoch (a ceremony that began before the promotion).
        assert_eq!(after_signature(&slots(Some(2), None, Some(1)), 1), None);
        assert_eq!(after_signature(&slots(Some(2), None, None), 2), None);
        // A previous share "newer" than the signature's epoch is never dropped by it.
        assert_eq!(after_signature(&slots(Some(2), None, Some(3)), 2), None);
    }

    #[test]
    fn no_certificate_no_expiry() {
        // Without a commit record, or without READYs from every new party, a previous
        // share stays however old (the certificate check is the relay crate's, tested
        // there with real READYs; here a commit with none received).
        assert_eq!(
            expired(&slots(Some(2), None, Some(1)), None, i64::MAX, 0),
            None
        );
    }
}
