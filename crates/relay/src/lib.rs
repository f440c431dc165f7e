//! cosigner-relay: how parties meet and talk during a ceremony.
//!
//! - [`mailbox`] and [`service`]: the relay itself (sessions, per-recipient mailboxes,
//!   limits), hosted by cosignerd or run alone. It sees only signed envelopes and ciphertext.
//! - [`envelope`]: the signed, encrypted envelope every party posts, and its checks.
//! - [`driver`]: runs one engine ceremony over the relay (HELLO, rounds, ABORT, READY);
//!   [`blame`]: the evidence an ABORT carries against a faulty party, and its check.
//! - [`roster`]: who takes part in a ceremony, built only from authenticated sources, and
//!   the hash every participant signs into its HELLO.
//! - [`commit`]: READY statements, certificates, reports, and the rule that ends a keygen
//!   or reshare without ever stranding the vault; [`finish`]: that commit as a party runs it.
//! - [`keys`], [`record`], [`request`]: party identities, the vault record a party keeps
//!   with its share, and request signatures (from `cosigner-party`, re-exported).

pub mod blame;
pub mod commit;
pub mod driver;
pub mod envelope;
pub mod finish;
pub mod mailbox;
pub mod roster;
pub mod service;

pub use cosigner_party::{clock, files, keys, record, request};
pub use driver::{DriveError, Driver, Hello, ReadyOutcome, SessionSpec};
pub use keys::{Member, PartyKeys};
pub use record::{Held, VaultRecord};
