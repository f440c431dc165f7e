//! What the daemon understood from a payload: the hashes it will sign and the fields the
//! policy sees. Amounts are decimal strings in base units (JSON and Rego numbers lose
//! precision above 2^53).

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Transfer {
    /// `<chain>:<network>:native` or `ethereum:<chain id>:0x<token>` (lower-case hex), e.g.
    /// `ethereum:1:native`, `ethereum:1:0xa0b8...eb48`, `bitcoin:mainnet:native`.
    pub asset: String,
    pub recipient: String,
    /// Decimal string in base units.
    pub amount: String,
    /// The recipient is one of the vault's own addresses (Bitcoin change).
    pub is_change: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decoded {
    /// "ethereum", "bitcoin", "message", "raw".
    pub chain: String,
    /// Chain id (Ethereum), network name (Bitcoin: mainnet, testnet, testnet4, signet,
    /// regtest); the domain's chain id or empty for messages.
    pub network: String,
    pub transfers: Vec<Transfer>,
    /// Fee in base units of the chain's native asset (the most the payload allows).
    pub fee: String,
    /// The whole decoded document (what the policy sees as `input.payload`).
    pub document: serde_json::Value,
    /// The hashes to sign, in signing order.
    #[serde(skip)]
    pub hashes: Vec<[u8; 32]>,
    /// The derivation path of the vault key each hash is signed with, when the payload
    /// says (a PSBT names its inputs' keys); empty when the request's path applies.
    #[serde(skip)]
    pub key_paths: Vec<Vec<u32>>,
}

/// Why a payload was refused. Each names the field at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("{0}")]
    Unsupported(String),
}

pub(crate) fn invalid(field: &'static str, problem: impl std::fmt::Display) -> DecodeError {
    DecodeError::Invalid {
        field,
        problem: problem.to_string(),
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    ::hex::encode(b)
}

impl Decoded {
    /// The one hash a request signs with the vault key at `path`. A payload with several
    /// hashes (a PSBT with several vault inputs) is not signed by one request; a PSBT
    /// whose vault input uses another key than the request's path is refused, so that the
    /// signature is made with the key the input pays.
    pub fn single_hash(&self, path: &[u32]) -> Result<[u8; 32], DecodeError> {
        let [hash] = self.hashes[..] else {
            return Err(DecodeError::Unsupported(format!(
                "this payload needs {} signatures; one request signs exactly one hash (a PSBT with one vault input)",
                self.hashes.len()
            )));
        };
        if let Some(key_path) = self.key_paths.first()
            && key_path.as_slice() != path
        {
            return Err(invalid(
                "derivation_path",
                format!(
                    "the PSBT's vault input is signed with the key at {}, the request names {}",
                    show_path(key_path),
                    show_path(path)
                ),
            ));
        }
        Ok(hash)
    }
}

/// `m/1/2` for a list of non-hardened steps.
pub fn show_path(steps: &[u32]) -> String {
    std::iter::once("m".to_string())
        .chain(steps.iter().map(u32::to_string))
        .collect::<Vec<_>>()
        .join("/")
}
