//! The API payload as the policy decoder reads it, written once for the daemon's gate, its
//! dry run and the device party, so all three compute the same hashes from the same bytes.

use cosigner_api::v1::{DecodedPayload, Payload, Transfer, payload::Kind as K};
use cosigner_party::VaultRecord;
use cosigner_policy::{Decoded, VaultKey};
use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::error::NodeError;

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
