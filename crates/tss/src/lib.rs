//! cosigner-tss: the threshold ECDSA engine (secp256k1, DKLs23 via the `dkls23` crate).
//!
//! Sans-IO: no network, no disk, no TPM, no clock. Every ceremony is a state machine of the
//! same shape ([`Ceremony`]): `start` gives the first messages, `handle` takes one incoming
//! message and gives the next messages or the result. Messages ([`Message`]) are versioned,
//! addressed to one party or broadcast, and carry the session id, so a transport only routes
//! bytes. The daemon, the CLI's device party and the tests all drive this same code.
//!
//! Ceremonies: [`Keygen`] (all n parties), [`Sign`] (exactly t, optionally at a BIP-32 path),
//! [`Refresh`] (same committee, new shares), [`Reshare`] (t old parties to a new committee
//! and threshold, same key; built here on dkls23's DKG, see docs/reshare.md).

mod curve;
pub mod derive;
mod dkg;
mod error;
mod inbox;
pub mod keygen;
pub mod local;
mod machine;
mod message;
mod party;
pub mod recover;
pub mod refresh;
pub mod reshare;
mod session;
mod share;
pub mod sign;

/// The dkls23 party state on secp256k1 (a share's secret part).
pub(crate) mod secp {
    pub type Party = dkls23::protocols::Party<k256::Secp256k1>;
}

pub use curve::{PointBytes, der_signature, verify_ecdsa};
pub use derive::DerivationPath;
pub use error::TssError;
pub use keygen::{Keygen, KeygenParams};
pub use machine::{Ceremony, Step};
pub use message::{MAX_MESSAGE_BYTES, Message, WIRE_VERSION};
pub use party::{Committee, PartyId};
pub use recover::{DerivedKey, RecoveredKey, recover_key};
pub use refresh::{Refresh, RefreshParams};
pub use reshare::{Reshare, ReshareOutput, ReshareParams};
pub use session::{CeremonyKind, SessionId};
pub use share::{KeyShare, SHARE_MAGIC, SHARE_VERSION, VaultPublic};
pub use sign::{Sign, SignParams, Signature};
