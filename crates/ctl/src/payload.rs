//! What to sign, as given on the command line, and the hash a device signs for it.
//!
//! `party sign` and `policy evaluate` take the same payload options; a device computes the
//! hash with the daemon's own decoder and never signs a hash it cannot show its user.

use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use clap::Args;
use cosigner_api::v1 as api;
use cosigner_relay::VaultRecord;
use cosigner_tss::DerivationPath;

/// One payload: exactly one of the options.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct PayloadArgs {
    /// An EIP-191 personal message.
    #[arg(long)]
    pub message: Option<String>,
    /// An unsigned Ethereum transaction (hex of its signing RLP, with the type byte).
    #[arg(long, value_name = "HEX")]
    pub eth_tx: Option<String>,
    /// A file with EIP-712 typed data (JSON).
    #[arg(long, value_name = "FILE")]
    pub typed_data: Option<PathBuf>,
    /// A file with a Bitcoin PSBT (binary, or base64 as wallets export it). Its one vault
    /// input is signed with the key at the request's path.
    #[arg(long, value_name = "FILE")]
    pub psbt: Option<PathBuf>,
}

/// The network a PSBT's addresses are shown for.
#[derive(Args, Debug, Clone)]
pub struct NetworkArg {
    /// bitcoin, testnet, testnet4, signet or regtest (PSBTs only).
    #[arg(long, default_value = "bitcoin")]
    pub network: String,
}

impl PayloadArgs {
    pub fn to_api(&self, network: &NetworkArg) -> Result<api::Payload> {
        use api::payload::Kind as K;
        let kind = if let Some(m) = &self.message {
            K::PersonalMessage(api::PersonalMessage {
                message: m.clone().into_bytes(),
            })
        } else if let Some(h) = &self.eth_tx {
            K::EthereumTransaction(api::EthereumTransaction {
                unsigned_rlp: cosigner_relay::keys::unhex(h)
                    .ok_or_else(|| anyhow!("--eth-tx is not hex"))?,
            })
        } else if let Some(f) = &self.typed_data {
            K::TypedData(api::TypedData {
                json: std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read {}", f.display()))?,
            })
        } else if let Some(f) = &self.psbt {
            K::BitcoinPsbt(api::BitcoinPsbt {
                psbt: read_psbt(f)?,
                network: network.network.clone(),
            })
        } else {
            bail!("give --message, --eth-tx, --typed-data or --psbt");
        };
        Ok(api::Payload { kind: Some(kind) })
    }
}

/// A PSBT file: the binary form starts with the magic `psbt\xff`; otherwise base64.
fn read_psbt(f: &PathBuf) -> Result<Vec<u8>> {
    let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
    if bytes.starts_with(b"psbt\xff") {
        return Ok(bytes);
    }
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| anyhow!("{} is neither a binary PSBT nor base64", f.display()))?;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| anyhow!("{} is neither a binary PSBT nor base64 ({e})", f.display()))
}

/// The one hash a device signs for a payload at `path`, computed by the same decoder the
/// daemon uses ([`cosigner_node::payload`]). A raw hash is refused: a device never signs
/// what it cannot show its user.
pub fn payload_hash(p: &api::Payload, vault: &VaultRecord, path: &str) -> Result<[u8; 32]> {
    if cosigner_node::payload::is_raw_hash(Some(p)) {
        bail!("a device never signs a raw hash");
    }
    let key = cosigner_node::payload::vault_key(vault);
    let d =
        cosigner_node::payload::decode(Some(p), Some(&key)).map_err(|e| anyhow!("payload: {e}"))?;
    let path = DerivationPath::parse(path)?;
    d.single_hash(&path.0).map_err(|e| anyhow!("payload: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_psbt_file_is_binary_or_base64() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("a.psbt");
        let raw = b"psbt\xff\x01\x02".to_vec();
        std::fs::write(&bin, &raw).unwrap();
        assert_eq!(read_psbt(&bin).unwrap(), raw);
        let b64 = dir.path().join("a.txt");
        std::fs::write(&b64, "cHNidP8BAg==\n").unwrap();
        assert_eq!(read_psbt(&b64).unwrap(), raw);
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "not a psbt!").unwrap();
        let e = read_psbt(&junk).unwrap_err().to_string();
        assert!(e.contains("neither a binary PSBT nor base64"), "{e}");
        assert!(read_psbt(&dir.path().join("missing")).is_err());
    }
}
