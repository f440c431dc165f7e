//! Bitcoin: partially signed transactions (BIP-174, version 0).
//!
//! The daemon signs only what it can explain: every output's address and amount, the fee,
//! which outputs come back to the vault (change), and for each input the vault signs, the
//! BIP-143 sighash it computes itself. An input is the vault's when its BIP-32 derivation
//! names the vault's fingerprint and a non-hardened path from the vault key, the key at that
//! path is the one listed, and the input's script pays that key. Claims that do not hold
//! are refused rather than ignored: a PSBT that lies about what is the vault's is an attack
//! on the policy.
//!
//! Supported vault inputs are segwit v0 (P2WPKH, P2SH-P2WPKH, P2WSH, P2SH-P2WSH) with
//! SIGHASH_ALL. Taproot needs a Schnorr signature, which a DKLs23 (ECDSA) vault cannot
//! make; legacy inputs sign a hash that does not commit to the amount spent. Both are
//! refused when they are the vault's.
//!
//! Amounts: a segwit v0 signature commits to its own input's amount only, so a PSBT that
//! carries only `witness_utxo` can understate the fee over two signing rounds
//! (CVE-2020-14199). An amount is "proven" when the input carries the whole previous
//! transaction and its txid matches; `fee_proven` tells the policy whether every input is.

use bitcoin::bip32::{ChainCode, ChildNumber, DerivationPath, Fingerprint, KeySource, Xpub};
use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt;
use bitcoin::script::Instruction;
use bitcoin::secp256k1::{PublicKey, Secp256k1, VerifyOnly};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    Address, Amount, CompressedPublicKey, Network, NetworkKind, Script, ScriptBuf, Transaction,
    TxOut,
};
use serde_json::json;

use crate::decoded::{DecodeError, Decoded, Transfer, hex, invalid, show_path as steps_path};

/// Largest PSBT accepted (previous transactions included).
pub const MAX_PSBT_BYTES: usize = 1024 * 1024;

const F: &str = "payload.bitcoin_psbt.psbt";

/// The vault's public key and BIP-32 chain code: what recognises its inputs and change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultKey {
    /// Compressed SEC1 point.
    pub public_key: [u8; 33],
    pub chain_code: [u8; 32],
}

/// The vault key as a BIP-32 root.
struct Root {
    secp: Secp256k1<VerifyOnly>,
    xpub: Xpub,
    fingerprint: Fingerprint,
}

impl Root {
    fn new(v: &VaultKey) -> Result<Self, DecodeError> {
        let public_key = PublicKey::from_slice(&v.public_key)
            .map_err(|e| invalid("vault.public_key", format!("not a secp256k1 point ({e})")))?;
        let xpub = Xpub {
            network: NetworkKind::Main,
            depth: 0,
            parent_fingerprint: Fingerprint::default(),
            child_number: ChildNumber::Normal { index: 0 },
            public_key,
            chain_code: ChainCode::from(v.chain_code),
        };
        Ok(Root {
            secp: Secp256k1::verification_only(),
            fingerprint: xpub.fingerprint(),
            xpub,
        })
    }

    /// Whether `(key, origin)` is a claim about the vault: `Ok(Some(path))` when it names
    /// the vault's fingerprint and holds, `Ok(None)` when it names another wallet, an
    /// error when it names the vault and does not hold.
    fn check(
        &self,
        what: &str,
        key: &PublicKey,
        origin: &KeySource,
    ) -> Result<Option<Vec<u32>>, DecodeError> {
        let (fingerprint, path) = origin;
        if *fingerprint != self.fingerprint {
            return Ok(None);
        }
        let mut steps = Vec::new();
        for c in path {
            match c {
                ChildNumber::Normal { index } => steps.push(*index),
                ChildNumber::Hardened { .. } => {
                    return Err(invalid(
                        F,
                        format!(
                            "{what}: derivation {} from the vault's fingerprint {} is hardened; a threshold key derives only non-hardened children",
                            show_bip32(path),
                            self.fingerprint
                        ),
                    ));
                }
            }
        }
        let derived = self
            .xpub
            .derive_pub(&self.secp, path)
            .map_err(|e| invalid(F, format!("{what}: deriving {}: {e}", show_bip32(path))))?;
        if derived.public_key != *key {
            return Err(invalid(
                F,
                format!(
                    "{what}: claims the vault key at {} but that path gives {}, not {}",
                    show_bip32(path),
                    hex(&derived.public_key.serialize()),
                    hex(&key.serialize())
                ),
            ));
        }
        Ok(Some(steps))
    }
}

fn show_bip32(p: &DerivationPath) -> String {
    if p.is_empty() {
        "m".into()
    } else {
        format!("m/{p}")
    }
}

/// Parses the network a request names ("", "bitcoin" and "mainnet" mean mainnet).
pub fn network(name: &str) -> Result<Network, DecodeError> {
    match name {
        "" | "mainnet" => Ok(Network::Bitcoin),
        other => other.parse::<Network>().map_err(|_| {
            invalid(
                "payload.bitcoin_psbt.network",
                format!(
                    "{name:?} is not one of bitcoin (mainnet), testnet, testnet4, signet, regtest"
                ),
            )
        }),
    }
}

/// The network as the policy sees it: "mainnet", "testnet", "testnet4", "signet", "regtest".
pub fn network_name(n: Network) -> String {
    match n {
        Network::Bitcoin => "mainnet".into(),
        other => other.to_string(),
    }
}

/// `bitcoin:<network>:native`: testnet coins never count against a mainnet limit.
pub fn asset_id(n: Network) -> String {
    format!("bitcoin:{}:native", network_name(n))
}

/// How an output script pays, and to whom.
fn script_type(s: &Script) -> &'static str {
    if s.is_p2wpkh() {
        "p2wpkh"
    } else if s.is_p2wsh() {
        "p2wsh"
    } else if s.is_p2tr() {
        "p2tr"
    } else if s.is_p2sh() {
        "p2sh"
    } else if s.is_p2pkh() {
        "p2pkh"
    } else if s.is_p2pk() {
        "p2pk"
    } else if s.is_op_return() {
        "op_return"
    } else if s.is_witness_program() {
        "witness_unknown"
    } else {
        "nonstandard"
    }
}

/// The output's address on `net`, or `script:<hex>` for scripts without one (OP_RETURN,
/// bare multisig), so that a policy allowlist never matches them by accident.
fn recipient(s: &Script, net: Network) -> String {
    match Address::from_script(s, net) {
        Ok(a) => a.to_string(),
        Err(_) => format!("script:{}", hex(s.as_bytes())),
    }
}

/// Whether a script pushes `key` (a vault key inside a P2WSH script).
fn pushes(script: &Script, key: &PublicKey) -> bool {
    let want = key.serialize();
    script
        .instructions()
        .any(|i| matches!(i, Ok(Instruction::PushBytes(p)) if p.as_bytes() == want))
}

fn p2wpkh(key: &PublicKey) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&CompressedPublicKey(*key).wpubkey_hash())
}

/// The previous output an input spends, and whether its amount is proven.
fn spent_output(
    i: usize,
    tx: &Transaction,
    input: &bitcoin::psbt::Input,
) -> Result<(TxOut, bool), DecodeError> {
    let outpoint = tx.input[i].previous_output;
    let from_tx = match &input.non_witness_utxo {
        Some(prev) => {
            if prev.compute_txid() != outpoint.txid {
                return Err(invalid(
                    F,
                    format!(
                        "input {i}: its previous transaction has txid {}, the input spends {}",
                        prev.compute_txid(),
                        outpoint.txid
                    ),
                ));
            }
            let out = usize::try_from(outpoint.vout)
                .ok()
                .and_then(|v| prev.output.get(v))
                .ok_or_else(|| {
                    invalid(
                        F,
                        format!(
                            "input {i}: its previous transaction has no output {}",
                            outpoint.vout
                        ),
                    )
                })?;
            Some(out.clone())
        }
        None => None,
    };
    match (from_tx, &input.witness_utxo) {
        (Some(a), Some(b)) if a != *b => Err(invalid(
            F,
            format!("input {i}: witness_utxo differs from the output of its previous transaction"),
        )),
        (Some(a), _) => Ok((a, true)),
        (None, Some(b)) => Ok((b.clone(), false)),
        (None, None) => Err(invalid(
            F,
            format!(
                "input {i} carries no UTXO (neither non_witness_utxo nor witness_utxo): its amount, and so the fee, cannot be known"
            ),
        )),
    }
}

/// What the vault signs for one of its inputs: how, and the script code.
enum Spend {
    P2wpkh(ScriptBuf),
    P2wsh(ScriptBuf),
}

/// Checks that a vault input's script pays `key` and says how it is spent.
fn vault_spend(
    i: usize,
    input: &bitcoin::psbt::Input,
    spk: &Script,
    key: &PublicKey,
) -> Result<(Spend, &'static str), DecodeError> {
    let bad = |m: String| invalid(F, format!("input {i}: {m}"));
    let wpkh = p2wpkh(key);
    let wsh = |inner: &Script| -> Result<ScriptBuf, DecodeError> {
        let ws = input
            .witness_script
            .as_ref()
            .ok_or_else(|| bad("P2WSH without its witness_script".into()))?;
        if ws.to_p2wsh() != *inner {
            return Err(bad(
                "the witness_script does not hash to the spent script".into()
            ));
        }
        if !pushes(ws, key) {
            return Err(bad(format!(
                "the witness_script does not contain the vault key {}",
                hex(&key.serialize())
            )));
        }
        Ok(ws.clone())
    };
    if spk.is_p2wpkh() {
        if *spk != wpkh {
            return Err(bad("names the vault key but pays another key".into()));
        }
        return Ok((Spend::P2wpkh(wpkh), "p2wpkh"));
    }
    if spk.is_p2wsh() {
        return Ok((Spend::P2wsh(wsh(spk)?), "p2wsh"));
    }
    if spk.is_p2sh() {
        let rs = input
            .redeem_script
            .as_ref()
            .ok_or_else(|| bad("P2SH without its redeem_script".into()))?;
        if rs.to_p2sh() != *spk {
            return Err(bad(
                "the redeem_script does not hash to the spent script".into()
            ));
        }
        if rs.is_p2wpkh() {
            if *rs != wpkh {
                return Err(bad("names the vault key but pays another key".into()));
            }
            return Ok((Spend::P2wpkh(wpkh), "p2sh-p2wpkh"));
        }
        if rs.is_p2wsh() {
            return Ok((Spend::P2wsh(wsh(rs)?), "p2sh-p2wsh"));
        }
        return Err(bad(
            "a legacy P2SH script is not signed: its sighash does not commit to the amount".into(),
        ));
    }
    if spk.is_p2tr() {
        return Err(bad(
            "taproot needs a Schnorr signature; this vault signs ECDSA (DKLs23)".into(),
        ));
    }
    Err(bad(format!(
        "a {} input is not signed: only segwit v0 (P2WPKH, P2WSH, nested in P2SH or not) commits to the amount",
        script_type(spk)
    )))
}

/// Decodes a PSBT against the vault that is asked to sign it.
///
/// `hashes` holds the sighash of every vault input, in input order, and `key_paths` the
/// derivation path of the vault key each one is signed with.
pub fn decode(bytes: &[u8], net: &str, vault: &VaultKey) -> Result<Decoded, DecodeError> {
    let d = analyse(bytes, net, vault)?;
    if d.hashes.is_empty() {
        return Err(invalid(
            F,
            "no input is the vault's (none carries a BIP-32 derivation from the vault key); nothing to sign",
        ));
    }
    Ok(d)
}

/// Everything [`decode`] checks and computes, without requiring a vault input (a PSBT
/// that only pays the vault can still be evaluated).
pub fn analyse(bytes: &[u8], net: &str, vault: &VaultKey) -> Result<Decoded, DecodeError> {
    let net = network(net)?;
    if bytes.is_empty() {
        return Err(invalid(F, "empty"));
    }
    if bytes.len() > MAX_PSBT_BYTES {
        return Err(invalid(
            F,
            format!("{} bytes; at most {MAX_PSBT_BYTES}", bytes.len()),
        ));
    }
    let psbt = Psbt::deserialize(bytes).map_err(|e| invalid(F, format!("not a PSBT: {e}")))?;
    let root = Root::new(vault)?;
    let tx = &psbt.unsigned_tx;
    if tx.input.is_empty() || tx.output.is_empty() {
        return Err(invalid(F, "a transaction needs inputs and outputs"));
    }
    // The parser gives one map per input and output; the indexing below relies on it.
    if psbt.inputs.len() != tx.input.len() || psbt.outputs.len() != tx.output.len() {
        return Err(invalid(
            F,
            "the PSBT's input and output maps do not match its transaction",
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(tx.input.len());
    if let Some(dup) = tx.input.iter().find(|i| !seen.insert(i.previous_output)) {
        return Err(invalid(
            F,
            format!(
                "spends {} twice (an invalid transaction whose inputs would be counted twice)",
                dup.previous_output
            ),
        ));
    }

    let mut cache = SighashCache::new(tx);
    let mut total_in: u64 = 0;
    let mut all_proven = true;
    let mut inputs = Vec::with_capacity(tx.input.len());
    let mut hashes = Vec::new();
    let mut key_paths = Vec::new();
    for (i, input) in psbt.inputs.iter().enumerate() {
        let (utxo, proven) = spent_output(i, tx, input)?;
        let amount = checked_amount(&format!("input {i}"), utxo.value)?;
        total_in = total_in
            .checked_add(amount)
            .ok_or_else(|| invalid(F, "the inputs add up to more than 21 million bitcoin"))?;
        all_proven &= proven;

        for (key, (_, origin)) in &input.tap_key_origins {
            if origin.0 == root.fingerprint {
                return Err(invalid(
                    F,
                    format!(
                        "input {i}: taproot key {key} is derived from the vault; taproot needs a Schnorr signature, this vault signs ECDSA (DKLs23)"
                    ),
                ));
            }
        }
        let mut mine = Vec::new();
        for (key, origin) in &input.bip32_derivation {
            if let Some(path) = root.check(&format!("input {i}"), key, origin)? {
                mine.push((key, path));
            }
        }
        let spk = &utxo.script_pubkey;
        let mut entry = json!({
            "index": i,
            "outpoint": tx.input[i].previous_output.to_string(),
            "amount": amount.to_string(),
            "amount_proven": proven,
            "address": recipient(spk, net),
            "script_type": script_type(spk),
            "sequence": tx.input[i].sequence.0,
            "vault_path": null,
            "sighash": null,
        });
        match mine.as_slice() {
            [] => {}
            [(key, path)] => {
                let ty = input
                    .ecdsa_hash_ty()
                    .map_err(|e| invalid(F, format!("input {i}: {e}")))?;
                if ty != EcdsaSighashType::All {
                    return Err(invalid(
                        F,
                        format!(
                            "input {i}: sighash {ty} lets others change what this signature covers; only SIGHASH_ALL is signed"
                        ),
                    ));
                }
                let (spend, kind) = vault_spend(i, input, spk, key)?;
                let hash = match &spend {
                    Spend::P2wpkh(s) => cache
                        .p2wpkh_signature_hash(i, s, utxo.value, ty)
                        .map(|h| h.to_byte_array())
                        .map_err(|e| invalid(F, format!("input {i}: {e}"))),
                    Spend::P2wsh(ws) => cache
                        .p2wsh_signature_hash(i, ws, utxo.value, ty)
                        .map(|h| h.to_byte_array())
                        .map_err(|e| invalid(F, format!("input {i}: {e}"))),
                }?;
                entry["script_type"] = json!(kind);
                entry["vault_path"] = json!(steps_path(path));
                entry["sighash"] = json!(format!("0x{}", hex(&hash)));
                hashes.push(hash);
                key_paths.push(path.clone());
            }
            _ => {
                return Err(invalid(
                    F,
                    format!(
                        "input {i} names {} vault keys; one signature per input is all this vault makes",
                        mine.len()
                    ),
                ));
            }
        }
        inputs.push(entry);
    }

    let mut total_out: u64 = 0;
    let mut outputs = Vec::with_capacity(tx.output.len());
    let mut transfers = Vec::with_capacity(tx.output.len());
    for (o, (out, meta)) in tx.output.iter().zip(&psbt.outputs).enumerate() {
        let amount = checked_amount(&format!("output {o}"), out.value)?;
        total_out = total_out
            .checked_add(amount)
            .ok_or_else(|| invalid(F, "the outputs add up to more than 21 million bitcoin"))?;
        let mut change: Option<Vec<u32>> = None;
        for (key, origin) in &meta.bip32_derivation {
            if let Some(path) = root.check(&format!("output {o}"), key, origin)? {
                let w = p2wpkh(key);
                if out.script_pubkey != w && out.script_pubkey != w.to_p2sh() {
                    return Err(invalid(
                        F,
                        format!(
                            "output {o}: claims to come back to the vault key at {} but pays another script",
                            steps_path(&path)
                        ),
                    ));
                }
                change = Some(path);
            }
        }
        let to = recipient(&out.script_pubkey, net);
        outputs.push(json!({
            "index": o,
            "address": to,
            "script_type": script_type(&out.script_pubkey),
            "amount": amount.to_string(),
            "is_change": change.is_some(),
            "vault_path": change.as_deref().map(steps_path),
        }));
        transfers.push(Transfer {
            asset: asset_id(net),
            recipient: to,
            amount: amount.to_string(),
            is_change: change.is_some(),
        });
    }
    let fee = total_in.checked_sub(total_out).ok_or_else(|| {
        invalid(
            F,
            format!("the outputs ({total_out} sat) spend more than the inputs ({total_in} sat)"),
        )
    })?;
    let network_name = network_name(net);
    let document = json!({
        "type": "psbt",
        "network": network_name,
        "txid": tx.compute_txid().to_string(),
        "version": tx.version.0,
        "lock_time": tx.lock_time.to_consensus_u32(),
        "inputs": inputs,
        "outputs": outputs,
        "input_total": total_in.to_string(),
        "output_total": total_out.to_string(),
        "fee": fee.to_string(),
        "fee_proven": all_proven,
        "vault_fingerprint": root.fingerprint.to_string(),
    });
    Ok(Decoded {
        chain: "bitcoin".into(),
        network: network_name,
        transfers,
        fee: fee.to_string(),
        document,
        hashes,
        key_paths,
    })
}

fn checked_amount(what: &str, a: Amount) -> Result<u64, DecodeError> {
    if a > Amount::MAX_MONEY {
        return Err(invalid(
            F,
            format!("{what}: {} sat is more than 21 million bitcoin", a.to_sat()),
        ));
    }
    Ok(a.to_sat())
}

/// The vault key's BIP-32 fingerprint (what PSBT derivations name).
pub fn fingerprint(vault: &VaultKey) -> Result<[u8; 4], DecodeError> {
    Ok(Root::new(vault)?.fingerprint.to_bytes())
}
