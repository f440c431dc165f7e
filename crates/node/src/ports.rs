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
use cosigner_relay::roster::Roster;
use cosigner_relay::{DriveError, Driver};
use cosigner_tss::Committee;

use crate::error::NodeError;
use crate::facts::Windows;

/// The shares this party holds.
pub trait Shares {
    /// The signed public record of the share this party would sign with, read without
    /// unsealing. Refuses a vault it holds nothing of, one in doubt, retired or damaged.
    async fn signing_record(&self, vault: &str) -> Result<VaultRecord, NodeError>;
    /// A pending epoch left by an interrupted ceremony (announced in HELLO).
    async fn pending(&self, vault: &str) -> Result<Option<u64>, NodeError>;
    /// The current share, unsealed. Called only after [`Journal::admit`].
    async fn unseal(&self, vault: &str) -> Result<Held, NodeError>;
}

/// Which ceremony a journal entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Keygen,
    Sign,
    Reshare,
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
}

/// The owner's policy.
pub trait Decider {
    fn decide(&self, document: serde_json::Value) -> cosigner_policy::Decision;
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
