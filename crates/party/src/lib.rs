//! cosigner-party: what a party is, apart from any transport.
//!
//! - [`keys`]: the party's Ed25519 identity and X25519 encryption key ([`PartyKeys`], the one
//!   identity key type: the daemon seals it, the device encrypts it in its file), what the
//!   others know of it ([`Member`]), signature checks and hex helpers;
//! - [`record`]: the vault record a party keeps beside its share ([`VaultRecord`], [`Held`]);
//! - [`request`]: request signatures over the exact body bytes;
//! - [`signed`]: the clear records beside a sealed share, signed by the party itself;
//! - [`clock`]: the one wall clock (Unix milliseconds); [`files`]: atomic file writes;
//!   [`vault_id`]: what a vault id may be.
//!
//! It needs neither gRPC nor an async runtime, so the backup format and the sealing layer
//! can use it without pulling in the network stack.

pub mod clock;
pub mod files;
pub mod keys;
#[cfg(feature = "record")]
pub mod record;
#[cfg(feature = "record")]
pub mod request;
pub mod signed;
pub mod vault_id;

pub use keys::{Member, PartyKeys};
#[cfg(feature = "record")]
pub use record::{Held, VaultRecord};
