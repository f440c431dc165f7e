//! How the ceremony layer reaches the world: small traits the daemon implements over its
//! TPM-sealed store, sled history, policy engine and relay connections, and a test over
//! memory. The order in which the pipelines call them is the safety argument: nothing is
//! unsealed ([`Shares::unseal`]) before the journal admitted the request
//! ([`Journal::admit`]), and nothing is admitted before every check on the public record
//! and the policy's decision.
//!
//! The traits use `async fn`: their implementors are this workspace's daemon and tests, and
//! with a concrete implementor the compiler sees whether each future is `Send`.
#![allow(async_fn_in_trait)]

use cosigner_api::v1::{Payload, RelayRef};
use cosigner_party::{Held, VaultRecord};
use cosigner_policy::Decoded;
use cosigner_relay::commit::CommitState;
use cosigner_relay::finish::{CommitEnd, CommitStore};
use cosigner_relay::roster::Roster;
use cosigner_relay::{DriveError, Driver};
use cosigner_tss::Committee;

use crate::error::NodeError;
use crate::facts::Windows;
use crate::resolve::Discard;

/// The shares this party holds.
pub trait Shares {
    /// The signed public record of the share this party would sign with, read without
    /// unsealing. Refuses a vault it holds nothing of, one in doubt, retired or damaged.
    async fn signing_record(&self, vault: &str) -> Result<VaultRecord, NodeError>;
    /// A pending epoch left by an interrupted ceremony (announced in HELLO).
    async fn pending(&self, vault: &str) -> Result<Option<u64>, NodeError>;
    /// The current share, unsealed. Called only after [`Journal::admit`].
    async fn unseal(&self, vault: &str) -> Result<Held, NodeError>;
    /// Refuses a keygen of `vault` when this party holds any share of it, or when an
    /// earlier keygen of it is in doubt here.
    async fn vacant(&self, vault: &str) -> Result<(), NodeError>;
    /// This party's own record for a reshare, read without unsealing (None: it holds
    /// nothing of the vault). Refuses a vault in doubt, retired or rolled back.
    async fn reshare_record(&self, vault: &str) -> Result<Option<VaultRecord>, NodeError>;
    /// The slots of `vault` (all empty: it holds nothing of it).
    async fn slots(&self, vault: &str) -> Result<Slots, NodeError>;
    /// The commit record of the vault's latest keygen or reshare, if any.
    async fn commit_state(&self, vault: &str) -> Result<Option<CommitState>, NodeError>;
    /// Unseals the pending share only to check that it opens (a resolve never promotes
    /// one that does not). Called only after the verdict.
    async fn check_pending(&self, vault: &str) -> Result<(), NodeError>;
    /// Everything known of the vault without unsealing (None: nothing of it is held).
    async fn view(&self, vault: &str) -> Result<Option<View>, NodeError>;
    /// The commit steps of a keygen or reshare to `new_epoch` over this party's stores.
    type Commit: Discard + CommitStore<Pending = Held, Error = NodeError>;
    fn commit(&self, kind: Kind, new_epoch: u64) -> Self::Commit;
}

/// Which ceremony a journal entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Keygen,
    Sign,
    Reshare,
    /// Deciding an interrupted keygen or reshare commit (no ceremony runs).
    Resolve,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Keygen => "keygen",
            Kind::Sign => "sign",
            Kind::Reshare => "reshare",
            Kind::Resolve => "resolve",
        }
    }
}

/// Which slots of a vault hold a share here, by epoch (read without unsealing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slots {
    pub current: Option<u64>,
    pub pending: Option<u64>,
    pub previous: Option<u64>,
}

impl Slots {
    pub fn new(current: Option<u64>, pending: Option<u64>, previous: Option<u64>) -> Slots {
        Slots {
            current,
            pending,
            previous,
        }
    }
}

/// What a party knows of a vault it holds something of, read without unsealing.
pub struct View {
    /// The record of the current share, else the pending one, else the previous one.
    pub record: VaultRecord,
    pub slots: Slots,
    pub commit: Option<CommitState>,
    pub standing: crate::standing::Standing,
}

/// What the gate records of a request it admits or denies.
pub struct Admission<'a> {
    pub kind: Kind,
    pub vault_id: &'a str,
    pub epoch: u64,
    pub committee: Option<&'a Committee>,
    pub payload: Option<&'a Payload>,
    pub decoded: Option<&'a Decoded>,
    pub requester: [u8; 32],
    pub nonce: &'a [u8],
    pub tls_identity: &'a str,
    pub relay: &'a RelayRef,
}

/// One signature as the journal records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureOut {
    pub hash: [u8; 32],
    pub r: [u8; 32],
    pub s: [u8; 32],
    pub recovery_id: u8,
}

/// The record of requests and ceremonies.
pub trait Journal {
    /// The gate's ticket: holds a ceremony slot until dropped.
    type Admitted;
    /// The vault's recent use, for the policy.
    async fn windows(&self, vault: &str, now_ms: i64) -> Result<Windows, NodeError>;
    /// The gate: a relay session and a nonce never used here, a free slot, and the policy's
    /// decision recorded (a denial recorded and answered with its reasons; an allowed
    /// request recorded as started). Nothing runs that is not recorded.
    async fn admit(
        &self,
        admission: Admission<'_>,
        decision: &cosigner_policy::Decision,
    ) -> Result<Self::Admitted, NodeError>;
    /// Records a signature ceremony's success; only then may the answer leave.
    async fn signed(
        &self,
        admitted: &Self::Admitted,
        signatures: &[SignatureOut],
    ) -> Result<u64, NodeError>;
    /// Records a failure (with any blame evidence) and returns the error to answer with
    /// (another one if the record itself failed).
    async fn failed(&self, admitted: &Self::Admitted, error: NodeError) -> NodeError;
    /// Records how a keygen's or reshare's commit ended. Only a certificate (committed or
    /// retired) is a success; a commit in doubt or failed is recorded as such and answered
    /// with an error that says what to do.
    async fn committed(
        &self,
        admitted: &Self::Admitted,
        end: CommitEnd,
        new_epoch: u64,
        public_key: &[u8],
    ) -> Result<u64, NodeError>;
    /// Held while a keygen or reshare of one vault runs here.
    type Exclusive;
    /// Claims `vault` for a keygen or reshare; refuses while another one runs.
    fn exclusive(&self, vault: &str) -> Result<Self::Exclusive, NodeError>;
    /// Whether a keygen, reshare or resolve of `vault` runs here now (not claimed).
    fn changing(&self, vault: &str) -> bool;
}

/// The owner's policy.
pub trait Decider {
    fn decide(&self, document: serde_json::Value) -> cosigner_policy::Decision;
}

/// What the layer reports for metrics: kinds and verdicts only, never a vault, party or
/// session id. (Outcomes are the journal's: it records them.)
pub trait Observer {
    /// The policy decided on a request of `kind` that passed every check before it.
    fn decided(&self, kind: Kind, decision: &cosigner_policy::Decision);
}

/// Keeps nothing (a party without metrics).
pub struct Unobserved;

impl Observer for Unobserved {
    fn decided(&self, _: Kind, _: &cosigner_policy::Decision) {}
}

/// Where parties meet.
pub trait Relays {
    /// A driver for this party in the session `relay` names, with `roster`, for a
    /// ceremony of `kind`.
    async fn open(
        &self,
        kind: Kind,
        relay: &RelayRef,
        roster: Roster,
    ) -> Result<Driver, DriveError>;
}

/// The wall clock (Unix milliseconds).
pub trait Clock {
    fn now_ms(&self) -> i64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        cosigner_party::clock::now_ms()
    }
}
