//! Every way a ceremony can fail, naming the party at fault when it can be known.

use crate::party::PartyId;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TssError {
    #[error("invalid committee: {0}")]
    InvalidCommittee(String),
    #[error("invalid ceremony parameters: {0}")]
    InvalidParameters(String),
    #[error("party {party} is not a participant of this ceremony")]
    NotInCommittee { party: PartyId },
    #[error("this share is of epoch {share_epoch}, the ceremony is for epoch {ceremony_epoch}")]
    ShareEpoch {
        share_epoch: u64,
        ceremony_epoch: u64,
    },
    #[error(
        "this share belongs to vault {share_vault:?}, the ceremony is for vault {ceremony_vault:?}"
    )]
    ShareVault {
        share_vault: String,
        ceremony_vault: String,
    },
    #[error(
        "party {party} is at epoch {theirs}, this party at epoch {ours}: it holds a share of another epoch"
    )]
    EpochMismatch {
        party: PartyId,
        theirs: u64,
        ours: u64,
    },
    #[error("message from party {party} belongs to another ceremony session")]
    WrongSession { party: PartyId },
    #[error("message from party {party} is for round {got}, expected round {expected}")]
    WrongRound {
        party: PartyId,
        got: u8,
        expected: u8,
    },
    #[error("duplicate round-{round} message from party {party}")]
    Duplicate { party: PartyId, round: u8 },
    #[error("message from party {party} is addressed to another party")]
    Misrouted { party: PartyId },
    #[error("malformed message from party {party}: {detail}")]
    Malformed { party: PartyId, detail: String },
    #[error("undecodable message: {0}")]
    Undecodable(String),
    #[error(
        "party {party} saw a different round-{round} broadcast from {origin} than this party did"
    )]
    InconsistentBroadcast {
        party: PartyId,
        origin: PartyId,
        round: u8,
    },
    #[error("dealer {dealer} sent a fragment that does not match its commitments")]
    BadFragment { dealer: PartyId },
    #[error("dealer {dealer} committed to a constant term other than its share of the old key")]
    BadConstantTerm { dealer: PartyId },
    #[error("party {party} failed the protocol: {reason}")]
    Protocol { party: PartyId, reason: String },
    #[error("protocol failure not attributable to one party: {0}")]
    ProtocolUnattributed(String),
    #[error("the ceremony produced public key {got}, expected {expected}")]
    PublicKeyMismatch { expected: String, got: String },
    #[error("the ceremony's signature does not verify under the vault key")]
    SignatureInvalid,
    #[error("missing messages from {parties:?}")]
    Missing { parties: Vec<PartyId> },
    #[error("derivation path {path:?}: {reason}")]
    Derivation { path: String, reason: String },
    #[error("share encoding: {0}")]
    ShareFormat(String),
    #[error("the ceremony is already finished")]
    Finished,
}

impl TssError {
    /// The party whose own message this error rests on, when it names one: the party a
    /// driver blames, and whose signed messages it forwards as evidence. Not for errors
    /// that rest on silence (missing messages) or on two parties' words (an inconsistent
    /// broadcast: the origin or the reporter may be lying).
    pub fn accused(&self) -> Option<PartyId> {
        match self {
            TssError::WrongSession { party }
            | TssError::WrongRound { party, .. }
            | TssError::Duplicate { party, .. }
            | TssError::Misrouted { party }
            | TssError::Malformed { party, .. }
            | TssError::Protocol { party, .. }
            | TssError::EpochMismatch { party, .. } => Some(*party),
            TssError::BadFragment { dealer } | TssError::BadConstantTerm { dealer } => {
                Some(*dealer)
            }
            _ => None,
        }
    }
}
