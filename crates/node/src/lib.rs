//! cosigner-node: the ceremony layer, shared by the daemon and the device party.
//!
//! The engine (`cosigner-tss`) knows rounds and messages; the relay crate knows envelopes,
//! rosters and the driver. This crate knows what a *party* does with a request: check it
//! against its own signed public record before anything else, build the facts its policy
//! decides on (one builder for the real gate and the dry run), take part, verify the
//! result. It talks to the world through small traits ([`ports`]): the shares (public
//! record without unsealing; unseal only after admission), the journal (windows, the gate's
//! admission and the outcome), the policy, the relays and the clock. It knows no gRPC
//! server, TPM or database, so it is tested in process, with n parties in memory.
//!
//! - [`coordinator`]: starting a ceremony others take part in: the relay session, the
//!   request signed once, one call per daemon, the answers collected;
//! - [`dry_run`]: the policy's answer to a request, without running it (EvaluatePolicy);
//! - [`error`]: one typed error with a status code, mapped to a gRPC status in one place;
//! - [`payload`]: the API payload as the policy decoder reads it, written once;
//! - [`peers`]: the other parties' word on a restored backup's epoch;
//! - [`previous`]: when a previous-epoch share is destroyed (daemon and device alike);
//! - [`record`]: GetVaultRecord: the public record, endorsement and commit report;
//! - [`refusals`]: the rate limit on recording refused requests;
//! - [`request`]: a request's signature and body, as every ceremony reads them;
//! - [`facts`]: the policy input for keygen, sign and reshare;
//! - [`gate`]: replay and session memory, ceremony slots, the decision recorded;
//! - [`journal`]: the gate and a ledger as the pipelines' journal: how each ending is
//!   recorded and answered, decided once;
//! - [`keygen`]: a keygen request parsed, checked and taken part in;
//! - [`reshare`]: a reshare request parsed, checked, taken part in and committed;
//! - [`restore`]: what a party refuses when a share backup is restored into it;
//! - [`resolve`]: the decision on an interrupted commit, carried out;
//! - [`server`]: a party serving requests through its ports; the sign, keygen and reshare
//!   pipelines are its methods;
//! - [`standing`]: where a party stands with a vault (active, in doubt, retired, damaged,
//!   empty), one derivation for the daemon and the device;
//! - [`sign`]: a sign request, from bytes to a verified signature, through a pipeline that
//!   only goes down: parse, check, decide, admit, unseal, run, verify, record.

pub mod coordinator;
pub mod dry_run;
pub mod error;
pub mod facts;
pub mod gate;
pub mod journal;
pub mod keygen;
pub mod payload;
pub mod peers;
pub mod ports;
pub mod previous;
pub mod record;
pub mod refusals;
pub mod request;
pub mod reshare;
pub mod resolve;
pub mod restore;
pub mod server;
pub mod sign;
pub mod standing;

pub use error::{Code, NodeError};
