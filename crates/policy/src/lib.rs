//! cosigner-policy: what a signing request asks for, and whether the owner allows it.
//!
//! - [`eth`], [`btc`], [`message`]: decode a payload and compute the hashes the daemon will
//!   sign (it never signs a hash it cannot explain).
//! - [`rego`]: the policy bundle (Rego via regorus): load, self-test, evaluate.
//! - [`input`]: the versioned input document the policy sees.

pub mod btc;
pub mod decoded;
pub mod eth;
pub mod message;

pub use btc::VaultKey;
pub use decoded::{DecodeError, Decoded, Transfer};
pub mod input;
pub mod rego;

pub use rego::{Bundle, BundleError, Decision, Verdict};

/// A payload as the daemon received it.
pub enum Payload<'a> {
    Ethereum(&'a [u8]),
    /// A PSBT and the network its addresses are shown for ("" is mainnet).
    Psbt {
        psbt: &'a [u8],
        network: &'a str,
    },
    PersonalMessage(&'a [u8]),
    TypedData(&'a str),
    RawHash(&'a [u8]),
}

/// Decodes a payload and computes the hashes to sign. The vault's key lets the Bitcoin
/// decoder recognise the vault's own inputs and change; a PSBT is refused without it.
pub fn decode(p: &Payload<'_>, vault: Option<&VaultKey>) -> Result<Decoded, DecodeError> {
    match p {
        Payload::Ethereum(b) => eth::decode(b),
        Payload::PersonalMessage(m) => message::personal(m),
        Payload::TypedData(j) => message::typed_data(j),
        Payload::RawHash(h) => message::raw_hash(h),
        Payload::Psbt { psbt, network } => match vault {
            Some(v) => btc::decode(psbt, network, v),
            None => Err(DecodeError::Unsupported(
                "a PSBT is decoded against the vault that signs it; name the vault".into(),
            )),
        },
    }
}
