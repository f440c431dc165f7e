//! The input document a policy sees (`input` in Rego). Versioned: a bundle can check
//! `input.version` and refuse what it was not written for. docs/policy.md describes every
//! field; amounts are decimal strings in base units.

use serde::Serialize;
use serde_json::json;

use std::collections::BTreeMap;

use crate::decoded::{Decoded, hex};

/// A decimal string of base units ([`cosigner_amount`]); one that is not an amount counts
/// as the most there is, so a limit check fails closed.
pub use cosigner_amount::parse_or_max as parse;

pub const INPUT_VERSION: u32 = 1;

/// One member of the vault committee.
#[derive(Clone, Debug, Serialize)]
pub struct Member {
    pub name: String,
    pub party_id: String,
}

/// The vault as the daemon holds it (absent for keygen).
#[derive(Clone, Debug, Serialize)]
pub struct VaultFacts {
    pub vault_id: String,
    pub public_key: String,
    pub epoch: u64,
    pub threshold: u32,
    pub members: Vec<Member>,
    pub created_at_ms: i64,
    pub last_reshare_at_ms: i64,
}

/// One history window (1h, 24h, 7d) for the vault.
#[derive(Clone, Debug, Serialize)]
pub struct WindowFacts {
    pub requests: u64,
    pub signatures: u64,
    /// Amount signed per asset, decimal strings.
    pub spent: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Request {
    /// "sign", "keygen", "reshare".
    pub kind: String,
    pub vault_id: String,
    pub epoch: u64,
    pub derivation_path: String,
    /// Party ids (hex) of the signers; dealers for a reshare.
    pub parties: Vec<String>,
    /// New committee (keygen, reshare): threshold and members.
    pub committee: Option<(u32, Vec<Member>)>,
    /// A reshare that keeps the committee and threshold (a refresh: new shares, same
    /// holders), which a policy can allow more readily than one that changes who holds
    /// the key.
    pub refresh: bool,
    /// Started by a daemon's rotation schedule, not by a person.
    pub scheduled: bool,
}

pub struct Facts<'a> {
    pub request: Request,
    pub requester_id: [u8; 32],
    pub requester_name: String,
    pub tls_identity: String,
    pub vault: Option<VaultFacts>,
    pub payload: Option<&'a Decoded>,
    pub windows: Vec<(&'static str, WindowFacts)>,
    pub last_reshare_at_ms: Option<i64>,
    pub now_ms: i64,
}

/// Builds the input document.
pub fn document(f: &Facts<'_>) -> serde_json::Value {
    let payload = f.payload.map(|d| {
        json!({
            "chain": d.chain,
            "network": d.network,
            "transfers": d.transfers,
            "fee": d.fee,
            "hashes": d.hashes.iter().map(|h| format!("0x{}", hex(h))).collect::<Vec<_>>(),
            "decoded": d.document,
        })
    });
    // What this request moves per asset (change excluded), and each window's spending with
    // it added, computed exactly here so that limits in Rego compare decimal strings.
    let mut this: BTreeMap<String, u128> = BTreeMap::new();
    if let Some(d) = f.payload {
        for t in d.transfers.iter().filter(|t| !t.is_change) {
            let e = this.entry(t.asset.clone()).or_default();
            *e = e.saturating_add(parse(&t.amount));
        }
    }
    let windows: serde_json::Map<String, serde_json::Value> = f
        .windows
        .iter()
        .map(|(name, w)| {
            let mut with: BTreeMap<String, String> = BTreeMap::new();
            for (asset, amount) in &this {
                let before = w.spent.get(asset).map(|s| parse(s)).unwrap_or(0);
                with.insert(asset.clone(), before.saturating_add(*amount).to_string());
            }
            let mut v = json!(w);
            v["spent_with_this"] = json!(with);
            (name.to_string(), v)
        })
        .collect();
    let totals: BTreeMap<String, String> = this
        .iter()
        .map(|(a, v)| (a.clone(), v.to_string()))
        .collect();
    let committee = f
        .request
        .committee
        .as_ref()
        .map(|(t, m)| json!({"threshold": t, "members": m}));
    json!({
        "version": INPUT_VERSION,
        "now_ms": f.now_ms,
        "request": {
            "kind": f.request.kind,
            "vault_id": f.request.vault_id,
            "epoch": f.request.epoch,
            "derivation_path": f.request.derivation_path,
            "parties": f.request.parties,
            "committee": committee,
            "refresh": f.request.refresh,
            "scheduled": f.request.scheduled,
        },
        "requester": {
            "party_id": hex(&f.requester_id),
            "name": f.requester_name,
            "tls_identity": f.tls_identity,
        },
        "vault": f.vault,
        "payload": payload,
        "totals": totals,
        "history": {
            "windows": windows,
            "last_reshare_at_ms": f.last_reshare_at_ms,
        },
    })
}
