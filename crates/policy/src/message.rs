//! Messages: EIP-191 personal_sign and EIP-712 typed data, and (policy permitting) a raw hash.

use alloy_dyn_abi::eip712::TypedData;
use alloy_primitives::keccak256;
use serde_json::json;

use crate::decoded::{DecodeError, Decoded, hex, invalid};

pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// EIP-191 version 0x45: "\x19Ethereum Signed Message:\n" || decimal length || message.
pub fn personal(message: &[u8]) -> Result<Decoded, DecodeError> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(invalid(
            "payload.personal_message.message",
            format!("{} bytes; at most {MAX_MESSAGE_BYTES}", message.len()),
        ));
    }
    let mut pre = format!("\x19Ethereum Signed Message:\n{}", message.len()).into_bytes();
    pre.extend_from_slice(message);
    let hash = keccak256(&pre);
    let text = std::str::from_utf8(message).ok();
    Ok(Decoded {
        chain: "message".into(),
        network: String::new(),
        transfers: Vec::new(),
        fee: "0".into(),
        document: json!({
            "type": "personal_sign",
            "text": text,
            "hex": format!("0x{}", hex(message)),
            "length": message.len(),
        }),
        hashes: vec![hash.0],
        key_paths: Vec::new(),
    })
}

/// EIP-712: keccak256("\x19\x01" || domainSeparator || hashStruct(message)).
pub fn typed_data(json_doc: &str) -> Result<Decoded, DecodeError> {
    const F: &str = "payload.typed_data.json";
    if json_doc.len() > MAX_MESSAGE_BYTES {
        return Err(invalid(
            F,
            format!("{} bytes; at most {MAX_MESSAGE_BYTES}", json_doc.len()),
        ));
    }
    let td: TypedData = serde_json::from_str(json_doc).map_err(|e| invalid(F, e))?;
    let hash = td.eip712_signing_hash().map_err(|e| invalid(F, e))?;
    let document: serde_json::Value = serde_json::from_str(json_doc).map_err(|e| invalid(F, e))?;
    let chain_id = td
        .domain()
        .chain_id
        .map(|c| c.to_string())
        .unwrap_or_default();
    Ok(Decoded {
        chain: "message".into(),
        network: chain_id.clone(),
        transfers: Vec::new(),
        fee: "0".into(),
        document: json!({
            "type": "eip712",
            "primary_type": td.primary_type,
            "domain": document.get("domain").cloned().unwrap_or_default(),
            "message": document.get("message").cloned().unwrap_or_default(),
            "chain_id": chain_id,
        }),
        hashes: vec![hash.0],
        key_paths: Vec::new(),
    })
}

/// A bare hash: only the policy can allow signing it (blind signing).
pub fn raw_hash(hash: &[u8]) -> Result<Decoded, DecodeError> {
    let h: [u8; 32] = hash.try_into().map_err(|_| {
        invalid(
            "payload.raw_hash",
            format!("{} bytes; a hash is 32", hash.len()),
        )
    })?;
    Ok(Decoded {
        chain: "raw".into(),
        network: String::new(),
        transfers: Vec::new(),
        fee: "0".into(),
        document: json!({"type": "raw_hash", "hash": format!("0x{}", hex(&h))}),
        hashes: vec![h],
        key_paths: Vec::new(),
    })
}
