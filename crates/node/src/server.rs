//! A party that serves ceremony requests through its ports: the pipelines of
//! [`crate::sign`], [`crate::keygen`] and [`crate::reshare`] are methods of one [`Server`],
//! so every ceremony is checked, decided, admitted, unsealed (last), run and recorded in
//! the same order, and a daemon only wires its stores to it.

use cosigner_party::{Member, PartyKeys, VaultRecord};

use crate::sign::Rules;

/// A party's identity, stores and limits, borrowed for one request.
pub struct Server<'a, S, J, D, R, C, O> {
    pub keys: &'a PartyKeys,
    pub shares: &'a S,
    pub journal: &'a J,
    pub decider: &'a D,
    pub relays: &'a R,
    pub clock: &'a C,
    pub observer: &'a O,
    pub max_clock_skew_ms: i64,
    pub rules: Rules,
    /// The Bitcoin network each vault's PSBTs must name.
    pub networks: &'a crate::payload::Networks,
    /// Who may request a keygen here, or bring this party into a vault it holds nothing
    /// of (it cannot check the old record against its own).
    pub allowed_requesters: &'a [[u8; 32]],
}

impl<S, J, D, R, C, O> Server<'_, S, J, D, R, C, O> {
    pub fn me(&self) -> [u8; 32] {
        self.keys.party_id()
    }

    /// This party as a roster names it: its keys, and its name in `record` if it has one.
    pub fn me_member(&self, record: Option<&VaultRecord>) -> Member {
        let name = record
            .and_then(|r| r.member(&self.me()).map(|m| m.name.clone()))
            .unwrap_or_default();
        self.keys.member(&name)
    }

    /// Whether `requester` is listed in `allowed_requesters`.
    pub fn allowed(&self, requester: &[u8; 32]) -> bool {
        self.allowed_requesters.contains(requester)
    }
}
