//! cosigner-seal: shares sealed by a TPM 2.0.

mod error;
pub mod swtpm;
pub mod tpm;

pub use error::SealError;
