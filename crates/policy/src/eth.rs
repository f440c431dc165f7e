//! Ethereum: unsigned legacy (EIP-155), EIP-2930 and EIP-1559 transactions, and ERC-20
//! calls in their calldata.
//!
//! The daemon never signs a hash it did not compute: it decodes the unsigned transaction,
//! re-encodes it and refuses any difference from the bytes it was given (alloy's decoder
//! is permissive: a legacy transaction's EIP-155 fields are taken as they come, trailing
//! data may be ignored), then signs keccak256 of the signing encoding.

use alloy_consensus::{SignableTransaction, Transaction, TypedTransaction};
use alloy_primitives::{Address, TxKind, U256};
use alloy_sol_types::{SolInterface, sol};
use serde_json::json;

use crate::decoded::{DecodeError, Decoded, Transfer, hex, invalid};

sol! {
    /// The ERC-20 calls the policy understands (the rest of the interface moves nothing).
    interface IERC20 {
        function transfer(address to, uint256 amount) returns (bool);
        function transferFrom(address from, address to, uint256 amount) returns (bool);
        function approve(address spender, uint256 amount) returns (bool);
    }
}

/// Largest unsigned transaction accepted (calldata included).
pub const MAX_TX_BYTES: usize = 128 * 1024;

/// `ethereum:<chain id>:native` or `ethereum:<chain id>:0x<token>`: the same contract
/// address (or the native coin) on two chains is two assets, counted apart by limits.
pub fn asset_id(chain_id: u64, asset: &str) -> String {
    format!("ethereum:{chain_id}:{asset}")
}

fn addr(a: &Address) -> String {
    format!("0x{}", hex(a.as_slice()))
}

/// An ERC-20 call recognised in calldata.
fn erc20(
    chain_id: u64,
    token: &Address,
    data: &[u8],
) -> Option<(serde_json::Value, Option<Transfer>)> {
    // Dispatch on the selector and decode strictly; any other call is not an ERC-20 move.
    let call = IERC20::IERC20Calls::abi_decode(data).ok()?;
    let token_s = addr(token);
    let asset = asset_id(chain_id, &token_s);
    let moved = |to: &Address, amount: &U256| Transfer {
        asset: asset.clone(),
        recipient: addr(to),
        amount: amount.to_string(),
        is_change: false,
    };
    match call {
        IERC20::IERC20Calls::transfer(c) => {
            let t = moved(&c.to, &c.amount);
            Some((
                json!({"function": "transfer", "token": token_s, "to": t.recipient, "amount": t.amount}),
                Some(t),
            ))
        }
        IERC20::IERC20Calls::transferFrom(c) => {
            let t = moved(&c.to, &c.amount);
            Some((
                json!({"function": "transferFrom", "token": token_s, "from": addr(&c.from), "to": t.recipient, "amount": t.amount}),
                Some(t),
            ))
        }
        IERC20::IERC20Calls::approve(c) => Some((
            json!({"function": "approve", "token": token_s, "spender": addr(&c.spender), "amount": c.amount.to_string()}),
            None,
        )),
    }
}

pub fn decode(unsigned: &[u8]) -> Result<Decoded, DecodeError> {
    const F: &str = "payload.ethereum_transaction.unsigned_rlp";
    if unsigned.is_empty() {
        return Err(invalid(F, "empty"));
    }
    if unsigned.len() > MAX_TX_BYTES {
        return Err(invalid(
            F,
            format!("{} bytes; at most {MAX_TX_BYTES}", unsigned.len()),
        ));
    }
    let mut buf = unsigned;
    let tx = TypedTransaction::decode_unsigned(&mut buf).map_err(|e| invalid(F, e))?;
    if !buf.is_empty() {
        return Err(invalid(
            F,
            format!("{} bytes after the transaction", buf.len()),
        ));
    }
    let (kind, encoded, hash) = match &tx {
        TypedTransaction::Legacy(t) => {
            if t.chain_id.is_none() {
                return Err(invalid(
                    F,
                    "a legacy transaction without an EIP-155 chain id (replayable on every chain) is refused",
                ));
            }
            ("legacy", t.encoded_for_signing(), t.signature_hash())
        }
        TypedTransaction::Eip2930(t) => ("eip2930", t.encoded_for_signing(), t.signature_hash()),
        TypedTransaction::Eip1559(t) => ("eip1559", t.encoded_for_signing(), t.signature_hash()),
        TypedTransaction::Eip4844(_) => {
            return Err(DecodeError::Unsupported(
                "EIP-4844 blob transactions are not supported".into(),
            ));
        }
        TypedTransaction::Eip7702(_) => {
            return Err(DecodeError::Unsupported(
                "EIP-7702 transactions (code delegation) are not supported".into(),
            ));
        }
    };
    if encoded != unsigned {
        return Err(invalid(
            F,
            "does not re-encode to the same bytes (non-canonical RLP, or EIP-155 fields other than chain id, 0, 0)",
        ));
    }
    let chain_id = tx.chain_id().unwrap_or(0);
    let to = match tx.kind() {
        TxKind::Call(a) => Some(a),
        TxKind::Create => None,
    };
    let value = tx.value();
    let data = tx.input();
    let fee = U256::from(tx.gas_limit()) * U256::from(tx.max_fee_per_gas());
    let mut transfers = Vec::new();
    if value > U256::ZERO {
        transfers.push(Transfer {
            asset: asset_id(chain_id, "native"),
            recipient: to
                .as_ref()
                .map(addr)
                .unwrap_or_else(|| "contract-creation".into()),
            amount: value.to_string(),
            is_change: false,
        });
    }
    let call = match &to {
        Some(token) if !data.is_empty() => erc20(chain_id, token, data),
        _ => None,
    };
    // Calldata that is not a recognised ERC-20 call: a policy may refuse unknown calls.
    let unknown_call = !data.is_empty() && call.is_none();
    let (call_json, erc20_transfer) = match call {
        Some((j, t)) => (Some(j), t),
        None => (None, None),
    };
    transfers.extend(erc20_transfer);
    let document = json!({
        "type": kind,
        "chain_id": chain_id.to_string(),
        "nonce": tx.nonce().to_string(),
        "to": to.as_ref().map(addr),
        "value": value.to_string(),
        "gas_limit": tx.gas_limit().to_string(),
        "max_fee_per_gas": tx.max_fee_per_gas().to_string(),
        "data": format!("0x{}", hex(data)),
        "contract_creation": to.is_none(),
        "erc20": call_json,
        "unknown_call": unknown_call,
    });
    Ok(Decoded {
        chain: "ethereum".into(),
        network: chain_id.to_string(),
        transfers,
        fee: fee.to_string(),
        document,
        hashes: vec![hash.0],
        key_paths: Vec::new(),
    })
}
