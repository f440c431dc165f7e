//! Session identifiers: one hash that binds everything a ceremony is about.
//!
//! Two ceremonies that differ in anything (kind, vault, epoch, committee, threshold, dealer
//! set, signers, message, derivation path, or the initiator's nonce) get different session
//! ids, and every message carries its session id, so a message can never be replayed into
//! another ceremony. The id is also handed to dkls23, which binds its own proofs to it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::party::{Committee, PartyId};

/// 32-byte session identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionId(pub [u8; 32]);

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "..)")
    }
}

/// What a ceremony does. Part of every session id and message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CeremonyKind {
    Keygen,
    Sign,
    Refresh,
    Reshare,
}

impl CeremonyKind {
    fn tag(self) -> &'static [u8] {
        match self {
            CeremonyKind::Keygen => b"keygen",
            CeremonyKind::Sign => b"sign",
            CeremonyKind::Refresh => b"refresh",
            CeremonyKind::Reshare => b"reshare",
        }
    }
}

/// A length-prefixed, domain-separated hash transcript. Length prefixes make the encoding
/// injective: no two different field sequences hash the same bytes.
pub(crate) struct Transcript(Sha256);

impl Transcript {
    pub(crate) fn new(kind: CeremonyKind) -> Self {
        let mut t = Transcript(Sha256::new());
        t.bytes(b"cosigner/tss/v1/session");
        t.bytes(kind.tag());
        t
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.update((b.len() as u64).to_be_bytes());
        self.0.update(b);
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_be_bytes())
    }

    pub(crate) fn parties(&mut self, ps: &[PartyId]) -> &mut Self {
        self.u64(ps.len() as u64);
        for p in ps {
            self.bytes(&p.0);
        }
        self
    }

    pub(crate) fn committee(&mut self, c: &Committee) -> &mut Self {
        self.u64(u64::from(c.threshold())).parties(c.parties())
    }

    pub(crate) fn finish(self) -> SessionId {
        SessionId(self.0.finalize().into())
    }
}
