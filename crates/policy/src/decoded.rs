//! What the daemon understood from a payload: the hashes it will sign and the fields the
//! policy sees. Amounts are decimal strings in base units (JSON and Rego numbers lose
//! precision above 2^53).

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Transfer {
    /// "native" or the token contract (lower-case hex address).
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
    /// Chain id (Ethereum) or network name (Bitcoin); empty for messages.
    pub network: String,
    pub transfers: Vec<Transfer>,
    /// Fee in base units of the chain's native asset (the most the payload allows).
    pub fee: String,
    /// The whole decoded document (what the policy sees as `input.payload`).
    pub document: serde_json::Value,
    /// The hashes to sign, in signing order.
    #[serde(skip)]
    pub hashes: Vec<[u8; 32]>,
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
    b.iter().map(|x| format!("{x:02x}")).collect()
}
