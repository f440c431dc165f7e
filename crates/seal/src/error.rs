//! Errors of sealing and of the share files. None of them carries secret material.

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SealError {
    #[error("sealing configuration: {0}")]
    Config(String),
    #[error("TPM: {0}")]
    Tpm(String),
    #[error(
        "the TPM refused to unseal: the PCR policy no longer matches (the measured PCR values changed since the share was sealed)"
    )]
    PcrPolicyMismatch,
    #[error(
        "the TPM refused the sealed key: it was sealed by another TPM (or another TPM state), or it is damaged"
    )]
    ForeignTpm,
    #[error("sealed file format: {0}")]
    Format(String),
    #[error("the sealed share does not belong here: {0}")]
    Binding(String),
    #[error("decryption failed: the file was altered, or belongs to another vault, party or epoch")]
    Decrypt,
    #[error("{path}: {detail}")]
    Io { path: String, detail: String },
    #[error("no {slot} share for vault {vault:?}")]
    Missing { vault: String, slot: &'static str },
    #[error("the sealing service is not running")]
    Stopped,
    #[error("the sealing queue is full; try again")]
    Busy,
}
