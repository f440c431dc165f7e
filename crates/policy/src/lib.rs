//! cosigner-policy: what a signing request asks for, and whether the owner allows it.
//!
//! - [`eth`], [`message`]: decode a payload and compute the hashes the daemon will
//!   sign (it never signs a hash it cannot explain).
//! - [`rego`]: the policy bundle (Rego via regorus): load, self-test, evaluate.
//! - [`input`]: the versioned input document the policy sees.

pub mod decoded;
pub mod eth;
pub mod message;

pub use decoded::{DecodeError, Decoded, Transfer};
pub mod input;
pub mod rego;

pub use rego::{Bundle, BundleError, Decision, Verdict};

/// A payload as the daemon received it.
pub enum Payload<'a> {
    Ethereum(&'a [u8]),
    Psbt(&'a [u8]),
    PersonalMessage(&'a [u8]),
    TypedData(&'a str),
    RawHash(&'a [u8]),
}

/// Decodes a payload and computes the hashes to sign. `vault_key` (compressed public key)
/// and `chain_code` let the Bitcoin decoder recognise the vault's own change outputs.
pub fn decode(p: &Payload<'_>) -> Result<Decoded, DecodeError> {
    match p {
        Payload::Ethereum(b) => eth::decode(b),
        Payload::PersonalMessage(m) => message::personal(m),
        Payload::TypedData(j) => message::typed_data(j),
        Payload::RawHash(h) => message::raw_hash(h),
        Payload::Psbt(_) => Err(DecodeError::Unsupported(
            "Bitcoin PSBTs are not decoded in this build yet".into(),
        )),
    }
}
