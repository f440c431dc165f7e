//! cosigner-seal: the daemon's secrets at rest, useless to anyone who copies the disk.
//!
//! - [`tpm`]: a TPM 2.0 seals a 32-byte data key (salted sessions, optional PCR policy).
//! - [`software`]: development only, a master key file instead of a TPM.
//! - [`envelope`]: the file format; the secret is AES-256-GCM encrypted under the data key
//!   with the vault, party and epoch as associated data.
//! - [`actor`]: one thread owns the backend; async callers queue requests ([`Sealer`]).
//! - [`slots`]: per-vault `current`/`pending`/`previous` shares, written atomically.
//! - [`identity`]: the party's Ed25519 and X25519 keys, sealed the same way.

pub mod actor;
pub mod envelope;
mod error;
pub mod identity;
pub mod slots;
pub mod software;
pub mod tpm;

pub use actor::{BackendConfig, SealObserver, SealOp, Sealer};
pub use envelope::{BackendKind, Binding, Purpose};
pub use error::SealError;
pub use identity::Identity;
pub use slots::{ShareStore, Slot, SlotEpochs, check_vault_id};
