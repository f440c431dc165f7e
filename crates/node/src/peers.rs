//! What the other parties say about a vault's epoch, read from their signed commit reports:
//! the check a restored backup passes before it is imported (by a daemon or a device), so a
//! stale share is not brought back. A machine that restores a backup has no history of the
//! vault; only the others can tell it that a reshare replaced every share since.

use std::future::Future;

use cosigner_api::v1::cosigner_client::CosignerClient;
use cosigner_api::v1::{VaultRecordBody, VaultRecordRequest, VaultRecordResponse};
use cosigner_party::keys::short;
use cosigner_party::{PartyKeys, VaultRecord};
use cosigner_relay::commit::Report;
use tonic::transport::Channel;

use crate::coordinator::{sign_request, status_text};
use crate::error::NodeError;
use crate::request::GET_VAULT_RECORD;

/// What one peer's answer shows about a backup of `epoch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Word {
    /// A committee member holds the vault at exactly that epoch.
    Confirms(String),
    /// A party has seen a later epoch: the backup is stale.
    Stale { party: String, seen: u64 },
    /// The answer says nothing usable (why).
    Nothing(String),
}

/// Reads one peer's answer to a record request about `vault` that carried `challenge`
/// (fresh, so a replayed report cannot answer it). `record`: the backup's record, whose
/// committee says who may confirm.
pub fn read(
    addr: &str,
    vault: &str,
    epoch: u64,
    record: &VaultRecord,
    challenge: &[u8; 32],
    answer: &VaultRecordResponse,
) -> Word {
    let report = match Report::decode(&answer.commit_report) {
        Ok(r)
            if r.verify()
                && r.vault_id == vault
                && r.party.as_slice() == answer.party_id
                && r.about == Some(*challenge) =>
        {
            r
        }
        _ => {
            return Word::Nothing(format!(
                "{addr}: its commit report is missing or not signed by it"
            ));
        }
    };
    let seen = report
        .epoch_seen
        .max(report.current_epoch)
        .max(report.pending_epoch);
    match seen {
        Some(seen) if seen > epoch => Word::Stale {
            party: format!("{} (at {addr})", short(&report.party)),
            seen,
        },
        Some(seen) if seen == epoch && record.member(&report.party).is_some() => {
            Word::Confirms(short(&report.party))
        }
        _ => Word::Nothing(format!(
            "{addr}: party {} does not confirm epoch {epoch} (it shows {})",
            short(&report.party),
            seen.map_or("nothing".into(), |e| e.to_string())
        )),
    }
}

/// The verdict over every peer's word: a stale word refuses at once; otherwise at least
/// one confirmation is needed, unless the operator said `offline`. Returns whether any
/// peer confirmed.
pub fn conclude(vault: &str, epoch: u64, words: &[Word], offline: bool) -> Result<bool, NodeError> {
    if let Some(Word::Stale { party, seen }) =
        words.iter().find(|w| matches!(w, Word::Stale { .. }))
    {
        return Err(NodeError::precondition(format!(
            "the backup is of epoch {epoch}, but party {party} holds vault {vault:?} at epoch {seen}: the backup is stale (a reshare replaced every share since); its share would only bring a retired secret back. Use a backup of epoch {seen} or later"
        )));
    }
    let confirmed = words.iter().any(|w| matches!(w, Word::Confirms(_)));
    if !confirmed && !offline {
        let problems: Vec<&str> = words
            .iter()
            .filter_map(|w| match w {
                Word::Nothing(why) => Some(why.as_str()),
                _ => None,
            })
            .collect();
        return Err(NodeError::precondition(format!(
            "no other party confirmed that epoch {epoch} is still vault {vault:?}'s epoch{}; name reachable committee members with --peer, or pass --offline to import without confirmation (a stale backup cannot then be told apart)",
            if problems.is_empty() {
                " (no peer was named)".to_string()
            } else {
                format!(": {}", problems.join("; "))
            }
        )));
    }
    Ok(confirmed)
}

/// Asks every peer in `addrs` about a backup of `vault` at `epoch`, as the backup's party
/// (`keys`, so each member answers a request from a member), with one fresh challenge, and
/// concludes ([`conclude`]). `connect` opens a client to an address (the caller's TLS
/// settings and time limits); a peer that cannot be reached says nothing. The daemon's
/// ImportBackup and the device's `party backup-import` both ask this way.
pub async fn ask<F, Fut>(
    addrs: &[String],
    keys: &PartyKeys,
    vault: &str,
    epoch: u64,
    record: &VaultRecord,
    offline: bool,
    connect: F,
) -> Result<bool, NodeError>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<CosignerClient<Channel>, String>>,
{
    // A fresh challenge: a report replayed from an earlier answer cannot carry it.
    let challenge: [u8; 32] = rand::random();
    let body = VaultRecordBody {
        vault_id: vault.to_string(),
        about: challenge.to_vec(),
    };
    let mut words = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let mut client = match connect(addr.clone()).await {
            Ok(c) => c,
            Err(e) => {
                words.push(Word::Nothing(format!("{addr}: unreachable: {e}")));
                continue;
            }
        };
        let signed = sign_request(
            keys,
            GET_VAULT_RECORD,
            &body,
            cosigner_party::clock::now_ms(),
        );
        let answer = client
            .get_vault_record(VaultRecordRequest {
                body: signed.body,
                auth: Some(signed.auth),
            })
            .await;
        words.push(match answer {
            Ok(a) => read(addr, vault, epoch, record, &challenge, a.get_ref()),
            Err(s) => Word::Nothing(format!("{addr}: {}", status_text(&s))),
        });
    }
    conclude(vault, epoch, &words, offline)
}
