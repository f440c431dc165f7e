//! cosigner-relay: how parties meet and talk during a ceremony.
//!
//! - [`mailbox`] and [`service`]: the relay itself (sessions, per-recipient mailboxes,
//!   limits), hosted by cosignerd or run alone. It sees only signed envelopes and ciphertext.
//! - [`envelope`]: the signed, encrypted envelope every party posts, and its checks.
//! - [`driver`]: runs one engine ceremony over the relay (HELLO, rounds, ABORT, READY).
//! - [`keys`], [`record`], [`request`]: party identities, the vault record a party keeps
//!   with its share, and request signatures.

pub mod driver;
pub mod envelope;
pub mod keys;
pub mod mailbox;
pub mod record;
pub mod request;
pub mod service;

pub use driver::{DriveError, Driver, Hello, SessionSpec};
pub use keys::{Member, PartyKeys};
pub use record::{Held, VaultRecord};
