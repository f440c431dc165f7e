//! Who takes part: party identifiers and committees.
//!
//! The engine names parties by an opaque 32-byte identifier (in cosigner, the party's
//! Ed25519 identity key) and never by the small integer index the protocol uses, so every
//! error can name the party at fault in terms an operator recognises. Indices are derived
//! deterministically from the sorted identifiers, so every party computes the same ones
//! without negotiating them.

use std::collections::BTreeSet;
use std::fmt;

use dkls23::protocols::PartyIndex;
use serde::{Deserialize, Serialize};

use crate::error::TssError;

/// A party's stable identifier (32 bytes; cosigner uses the Ed25519 identity key).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartyId(pub [u8; 32]);

impl fmt::Display for PartyId {
    /// The first 8 bytes in hex: enough to tell parties apart in logs and errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PartyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PartyId({self})")
    }
}

/// The parties that hold shares of one epoch, and how many of them must sign.
///
/// Parties are kept sorted; a party's protocol index is its position + 1.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Committee {
    threshold: u8,
    parties: Vec<PartyId>,
}

impl Committee {
    /// Validates `2 <= threshold <= n <= 255` and distinct parties.
    pub fn new(
        threshold: u8,
        parties: impl IntoIterator<Item = PartyId>,
    ) -> Result<Self, TssError> {
        let mut sorted: Vec<PartyId> = parties.into_iter().collect();
        let n = sorted.len();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != n {
            return Err(TssError::InvalidCommittee("a party appears twice".into()));
        }
        if n > 255 {
            return Err(TssError::InvalidCommittee(format!(
                "{n} parties; at most 255"
            )));
        }
        if threshold < 2 || usize::from(threshold) > n {
            return Err(TssError::InvalidCommittee(format!(
                "threshold {threshold} with {n} parties; need 2 <= threshold <= parties"
            )));
        }
        Ok(Committee {
            threshold,
            parties: sorted,
        })
    }

    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// Number of parties (n).
    pub fn size(&self) -> u8 {
        // `new` bounds n by 255.
        self.parties.len() as u8
    }

    pub fn parties(&self) -> &[PartyId] {
        &self.parties
    }

    pub fn contains(&self, p: &PartyId) -> bool {
        self.parties.binary_search(p).is_ok()
    }

    /// The protocol index (1-based) of `p`, if it is a member.
    pub fn index_of(&self, p: &PartyId) -> Option<PartyIndex> {
        let pos = self.parties.binary_search(p).ok()?;
        PartyIndex::new(pos as u8 + 1).ok()
    }

    /// The party at protocol index `i`.
    pub fn party_at(&self, i: PartyIndex) -> Option<PartyId> {
        self.parties.get(usize::from(i.as_u8()) - 1).copied()
    }

    pub(crate) fn params(&self) -> Result<dkls23::protocols::Parameters, TssError> {
        dkls23::protocols::Parameters::new(self.threshold, self.size())
            .map_err(|e| TssError::InvalidCommittee(e.to_string()))
    }

    /// Checks that `subset` has no duplicates and only members; returns it sorted.
    pub(crate) fn subset(&self, what: &str, subset: &[PartyId]) -> Result<Vec<PartyId>, TssError> {
        let set: BTreeSet<PartyId> = subset.iter().copied().collect();
        if set.len() != subset.len() {
            return Err(TssError::InvalidCommittee(format!(
                "a party appears twice among the {what}"
            )));
        }
        if let Some(outsider) = set.iter().find(|p| !self.contains(p)) {
            return Err(TssError::NotInCommittee { party: *outsider });
        }
        Ok(set.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> PartyId {
        PartyId([b; 32])
    }

    #[test]
    fn indices_follow_sorted_ids() {
        let c = Committee::new(2, [id(9), id(3), id(5)]).unwrap();
        assert_eq!(c.index_of(&id(3)).unwrap().as_u8(), 1);
        assert_eq!(c.index_of(&id(9)).unwrap().as_u8(), 3);
        assert_eq!(c.party_at(PartyIndex::new(2).unwrap()), Some(id(5)));
        assert!(c.index_of(&id(1)).is_none());
    }

    #[test]
    fn bad_committees_are_refused() {
        assert!(Committee::new(1, [id(1), id(2)]).is_err());
        assert!(Committee::new(3, [id(1), id(2)]).is_err());
        assert!(Committee::new(2, [id(1), id(1)]).is_err());
        assert!(Committee::new(2, (0..=255u8).map(id).chain([PartyId([7; 32])])).is_err());
    }
}
