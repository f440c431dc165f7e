//! What a sign request may ask to sign, and the hash the daemon computes for it.
//!
//! The daemon never signs a hash it cannot explain. This build understands EIP-191 personal
//! messages; transaction decoding (Ethereum, Bitcoin PSBT, EIP-712) and the policy that may
//! allow raw hashes arrive with issue #7, and until then those payloads are refused.

use cosigner_api::v1::{Payload, payload::Kind};
use sha3::{Digest, Keccak256};
use tonic::Status;

/// Largest personal message accepted.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// The hash to sign and a short description for the history.
#[derive(Debug)]
pub struct Hashed {
    pub hash: [u8; 32],
    pub chain: &'static str,
    /// SHA-256 of the payload's bytes (recorded in the history).
    pub digest: Vec<u8>,
}

pub fn hash(p: Option<&Payload>) -> Result<Hashed, Status> {
    let kind = p
        .and_then(|p| p.kind.as_ref())
        .ok_or_else(|| Status::invalid_argument("payload: missing (nothing to sign)"))?;
    match kind {
        Kind::PersonalMessage(m) => {
            if m.message.len() > MAX_MESSAGE_BYTES {
                return Err(Status::invalid_argument(format!(
                    "payload.personal_message: {} bytes; at most {MAX_MESSAGE_BYTES}",
                    m.message.len()
                )));
            }
            let mut h = Keccak256::new();
            h.update(b"\x19Ethereum Signed Message:\n");
            h.update(m.message.len().to_string().as_bytes());
            h.update(&m.message);
            Ok(Hashed {
                hash: h.finalize().into(),
                chain: "message",
                digest: <sha2::Sha256 as Digest>::digest(&m.message).to_vec(),
            })
        }
        Kind::RawHash(_) => Err(Status::permission_denied(
            "payload.raw_hash: blind signing is refused; only a signing policy (issue #7) can allow it for a requester",
        )),
        Kind::EthereumTransaction(_) | Kind::BitcoinPsbt(_) | Kind::TypedData(_) => {
            Err(Status::unimplemented(
                "payload: this build decodes only personal messages; Ethereum transactions, Bitcoin PSBTs and EIP-712 typed data arrive with the signing policy (issue #7)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cosigner_api::v1::PersonalMessage;

    #[test]
    fn eip191_hash_matches_a_known_vector() {
        // keccak256("\x19Ethereum Signed Message:\n11hello world"), as ethers/web3 compute it.
        let p = Payload {
            kind: Some(Kind::PersonalMessage(PersonalMessage {
                message: b"hello world".to_vec(),
            })),
        };
        let h = hash(Some(&p)).unwrap();
        let hex: String = h.hash.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "d9eba16ed0ecae432b71fe008c98cc872bb4cc214d3220a36f365326cf807d68"
        );
        assert_eq!(hash(None).unwrap_err().code(), tonic::Code::InvalidArgument);
        let raw = Payload {
            kind: Some(Kind::RawHash(vec![0; 32])),
        };
        assert_eq!(
            hash(Some(&raw)).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }
}
