//! The API payload as the policy decoder reads it, written once for the daemon's gate, its
//! dry run and the device party, so all three compute the same hashes from the same bytes.

use cosigner_api::v1::{DecodedPayload, Payload, Transfer, payload::Kind as K};
use cosigner_party::VaultRecord;
use cosigner_policy::{Decoded, VaultKey};
use prost::Message as _;
use sha2::{Digest, Sha256};

use std::collections::BTreeMap;

use crate::error::NodeError;

/// The Bitcoin network each vault's PSBTs must name, from this party's configuration. A
/// PSBT's network is a label in the request, covered by no sighash: a mainnet PSBT sent as
/// "testnet" would otherwise be counted against testnet limits (its coins are real).
/// Names are canonical (`mainnet`, `testnet`, `testnet4`, `signet`, `regtest`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Networks {
    /// The network of every vault not listed in `by_vault` (None: not bound).
    pub default: Option<String>,
    pub by_vault: BTreeMap<String, String>,
}

impl Networks {
    /// The network `vault` is bound to, if any.
    pub fn bound(&self, vault: &str) -> Option<&str> {
        self.by_vault
            .get(vault)
            .or(self.default.as_ref())
            .map(String::as_str)
    }

    /// Refuses a Bitcoin payload for `vault` that names another network than the bound one.
    pub fn check(&self, vault: &str, decoded: &Decoded) -> Result<(), NodeError> {
        match self.bound(vault) {
            Some(bound) if decoded.chain == "bitcoin" && decoded.network != bound => {
                Err(NodeError::precondition(format!(
                    "payload.bitcoin_psbt.network: the request names {:?}, but vault {vault:?} is bound to {bound:?} here (ceremonies.bitcoin_network): a PSBT's network is covered by no signature, so this party takes it from its own configuration; refusing",
                    decoded.network
                )))
            }
            _ => Ok(()),
        }
    }
}

/// The vault's key as the payload decoders need it (to recognise its Bitcoin inputs and
/// change).
pub fn vault_key(r: &VaultRecord) -> VaultKey {
    VaultKey {
        public_key: r.public.public_key.0,
        chain_code: r.public.chain_code,
    }
}

/// The payload in the decoder's terms; a missing payload is refused by name.
pub fn policy_payload(p: Option<&Payload>) -> Result<cosigner_policy::Payload<'_>, NodeError> {
    use cosigner_policy::Payload as P;
    let kind = p
        .and_then(|p| p.kind.as_ref())
        .ok_or_else(|| NodeError::invalid("payload", "missing (nothing to sign)"))?;
    Ok(match kind {
        K::EthereumTransaction(t) => P::Ethereum(&t.unsigned_rlp),
        K::BitcoinPsbt(b) => P::Psbt {
            psbt: &b.psbt,
            network: &b.network,
        },
        K::PersonalMessage(m) => P::PersonalMessage(&m.message),
        K::TypedData(t) => P::TypedData(&t.json),
        K::RawHash(h) => P::RawHash(h),
    })
}

/// Decodes a payload and computes its hashes (never taken from the request).
pub fn decode(p: Option<&Payload>, vault: Option<&VaultKey>) -> Result<Decoded, NodeError> {
    Ok(cosigner_policy::decode(&policy_payload(p)?, vault)?)
}

/// Whether the payload is a bare hash (which a device never signs: it cannot show it).
pub fn is_raw_hash(p: Option<&Payload>) -> bool {
    matches!(p.and_then(|p| p.kind.as_ref()), Some(K::RawHash(_)))
}

/// SHA-256 of the payload's encoded bytes, for the history.
pub fn digest(p: Option<&Payload>) -> [u8; 32] {
    let bytes = p.map(|p| p.encode_to_vec()).unwrap_or_default();
    Sha256::digest(&bytes).into()
}

/// What the party decoded, as the API returns it.
pub fn to_api(d: &Decoded) -> DecodedPayload {
    DecodedPayload {
        chain: d.chain.clone(),
        network: d.network.clone(),
        transfers: d
            .transfers
            .iter()
            .map(|t| Transfer {
                asset: t.asset.clone(),
                recipient: t.recipient.clone(),
                amount: t.amount.clone(),
                is_change: t.is_change,
            })
            .collect(),
        fee: d.fee.clone(),
        json: d.document.to_string(),
        hashes: d.hashes.iter().map(|h| h.to_vec()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(chain: &str, network: &str) -> Decoded {
        Decoded {
            chain: chain.into(),
            network: network.into(),
            transfers: Vec::new(),
            fee: String::new(),
            document: serde_json::Value::Null,
            hashes: Vec::new(),
            key_paths: Vec::new(),
        }
    }

    #[test]
    fn a_psbt_labelled_with_another_network_than_the_vaults_is_refused() {
        let n = Networks {
            default: Some("mainnet".into()),
            by_vault: [("lab".to_string(), "regtest".to_string())].into(),
        };
        // A mainnet vault's PSBT sent as testnet: refused, naming both networks.
        let e = n.check("v1", &decoded("bitcoin", "testnet")).unwrap_err();
        assert!(
            e.to_string().contains("\"testnet\"") && e.to_string().contains("\"mainnet\""),
            "{e}"
        );
        assert!(n.check("v1", &decoded("bitcoin", "mainnet")).is_ok());
        // The vault with its own binding.
        assert!(n.check("lab", &decoded("bitcoin", "regtest")).is_ok());
        assert!(n.check("lab", &decoded("bitcoin", "mainnet")).is_err());
        // Not Bitcoin: no binding applies (an Ethereum chain id is in the signed bytes).
        assert!(n.check("v1", &decoded("ethereum", "1")).is_ok());
        // Unbound ("any"): the request's label stands.
        assert!(
            Networks::default()
                .check("v1", &decoded("bitcoin", "testnet"))
                .is_ok()
        );
    }
}
