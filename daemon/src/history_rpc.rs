//! The history RPCs: translation between the API's messages and `cosigner-history`, with
//! every storage call on the blocking pool (sled is synchronous).

use std::sync::Arc;

use cosigner_api::v1 as pb;
use cosigner_history::{Entry, History, HistoryError, Kind, Outcome, Query, Record, ResultRecord};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Maps store errors to gRPC codes: bad queries are the caller's, missing entries are
/// NOT_FOUND, a damaged store is DATA_LOSS, anything else INTERNAL.
pub fn status_of(e: HistoryError) -> Status {
    match e {
        HistoryError::InvalidQuery(m) => Status::invalid_argument(m),
        HistoryError::NotFound(seq) => Status::not_found(format!("no history entry {seq}")),
        e @ HistoryError::Corrupt { .. } => Status::data_loss(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

/// Runs a blocking history call off the async threads.
pub async fn blocking<T: Send + 'static>(
    history: &Arc<History>,
    f: impl FnOnce(&History) -> Result<T, HistoryError> + Send + 'static,
) -> Result<T, Status> {
    let h = history.clone();
    tokio::task::spawn_blocking(move || f(&h))
        .await
        .map_err(|e| Status::internal(format!("history task failed: {e}")))?
        .map_err(status_of)
}

pub fn kind_to_proto(k: Kind) -> pb::CeremonyKind {
    use pb::CeremonyKind as C;
    match k {
        Kind::Keygen => C::Keygen,
        Kind::Sign => C::Sign,
        Kind::Reshare => C::Reshare,
        Kind::Refresh => C::Refresh,
        Kind::PolicyReload => C::PolicyReload,
        Kind::BackupExport => C::BackupExport,
        Kind::BackupImport => C::BackupImport,
        Kind::ConfigStart => C::ConfigStart,
        Kind::DropPrevious => C::DropPrevious,
        Kind::Resolve => C::Resolve,
    }
}

fn kind_from_proto(v: i32) -> Result<Option<Kind>, Status> {
    if v == 0 {
        return Ok(None);
    }
    Kind::ALL
        .into_iter()
        .find(|k| kind_to_proto(*k) as i32 == v)
        .map(Some)
        .ok_or_else(|| Status::invalid_argument(format!("unknown ceremony kind {v}")))
}

pub fn outcome_to_proto(o: Outcome) -> pb::Outcome {
    match o {
        Outcome::Started => pb::Outcome::Started,
        Outcome::Succeeded => pb::Outcome::Succeeded,
        Outcome::Denied => pb::Outcome::Denied,
        Outcome::Failed => pb::Outcome::Failed,
        Outcome::Aborted => pb::Outcome::Aborted,
        Outcome::InDoubt => pb::Outcome::InDoubt,
        Outcome::Refused => pb::Outcome::Refused,
    }
}

fn outcome_from_proto(v: i32) -> Result<Option<Outcome>, Status> {
    if v == 0 {
        return Ok(None);
    }
    Outcome::ALL
        .into_iter()
        .find(|o| outcome_to_proto(*o) as i32 == v)
        .map(Some)
        .ok_or_else(|| Status::invalid_argument(format!("unknown outcome {v}")))
}

/// The API filter as a store query; unset fields (empty, 0, UNSPECIFIED) do not filter.
pub fn query_from(filter: Option<pb::HistoryFilter>) -> Result<Query, Status> {
    let f = filter.unwrap_or_default();
    let time = |ms: i64, name: &str| match ms {
        0 => Ok(None),
        ms if ms < 0 => Err(Status::invalid_argument(format!(
            "{name} must not be negative"
        ))),
        ms => Ok(Some(ms)),
    };
    let q = Query {
        vault_id: (!f.vault_id.is_empty()).then_some(f.vault_id),
        kind: kind_from_proto(f.kind)?,
        outcome: outcome_from_proto(f.outcome)?,
        from_ms: time(f.from_ms, "from_ms")?,
        to_ms: time(f.to_ms, "to_ms")?,
    };
    if let (Some(a), Some(b)) = (q.from_ms, q.to_ms)
        && a > b
    {
        return Err(Status::invalid_argument(format!(
            "time range starts ({a}) after it ends ({b})"
        )));
    }
    Ok(q)
}

/// How much of an entry to give: listings leave out the stored ABORT envelope (up to
/// 128 KiB each, evidence included), which only `GetHistoryEntry` returns.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    Listing,
    Full,
}

pub fn entry_to_proto(e: &Entry, hash: &[u8; 32], detail: Detail) -> pb::HistoryEntry {
    let r: &Record = &e.record;
    let decision = |d: &str| match d {
        "allow" => pb::Decision::Allow,
        "deny" => pb::Decision::Deny,
        "needs_approval" => pb::Decision::NeedsApproval,
        _ => pb::Decision::Unspecified,
    };
    let (signatures, public_key, error) = match &r.result {
        Some(ResultRecord::Signatures(sigs)) => (
            sigs.iter()
                .map(|s| pb::Signature {
                    hash: s.hash.clone(),
                    r: s.r.clone(),
                    s: s.s.clone(),
                    recovery_id: s.recovery_id,
                    der: Vec::new(),
                })
                .collect(),
            Vec::new(),
            String::new(),
        ),
        Some(ResultRecord::PublicKey(pk)) => (Vec::new(), pk.clone(), String::new()),
        Some(ResultRecord::Error(m)) => (Vec::new(), Vec::new(), m.clone()),
        Some(ResultRecord::Blame(b)) => (Vec::new(), Vec::new(), b.error.clone()),
        None => (Vec::new(), Vec::new(), String::new()),
    };
    let blame = match &r.result {
        Some(ResultRecord::Blame(b)) => Some(pb::Blame {
            accuser: b.accuser.clone(),
            accused: b.accused.clone(),
            finding: b.finding.clone(),
            abort_envelope: match detail {
                Detail::Full => b.abort.clone(),
                Detail::Listing => Vec::new(),
            },
        }),
        _ => None,
    };
    pb::HistoryEntry {
        seq: e.seq,
        kind: kind_to_proto(r.kind) as i32,
        outcome: outcome_to_proto(r.outcome) as i32,
        vault_id: r.vault_id.clone(),
        epoch: r.epoch,
        session_id: r.session_id.clone(),
        tls_identity: r.tls_identity.clone(),
        requester: r.requester.clone(),
        committee: r.committee.as_ref().map(|c| pb::Committee {
            threshold: c.threshold,
            parties: c
                .parties
                .iter()
                .map(|p| pb::Party {
                    party_id: p.clone(),
                    ..pb::Party::default()
                })
                .collect(),
        }),
        payload_digest: r.payload_digest.clone(),
        decoded: r.summary.as_ref().map(|s| pb::DecodedPayload {
            chain: s.chain.clone(),
            network: s.network.clone(),
            transfers: vec![pb::Transfer {
                asset: s.asset.clone(),
                recipient: s.recipient.clone(),
                amount: s.amount.clone(),
                is_change: false,
            }],
            ..pb::DecodedPayload::default()
        }),
        policy: r.policy.as_ref().map(|p| pb::PolicyDecision {
            decision: decision(&p.decision) as i32,
            reasons: p.reasons.clone(),
            approvals_required: 0,
            policy_hash: p.bundle_hash.clone(),
        }),
        started_at_ms: r.started_at_ms,
        ended_at_ms: r.ended_at_ms,
        signatures,
        public_key,
        error,
        nonce: r.nonce.clone(),
        prev_hash: e.prev_hash.to_vec(),
        entry_hash: hash.to_vec(),
        recorded_at_ms: e.at_ms,
        blame,
    }
}

/// Streams the export as chunks of whole JSON lines (about 64 KB each), produced on the
/// blocking pool; a bounded channel keeps a slow client from buffering the whole history.
pub fn export_stream(
    history: Arc<History>,
    q: Query,
) -> ReceiverStream<Result<pb::ExportHistoryChunk, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let send = |item| tx.blocking_send(item).is_ok();
        let lines = match history.export(&q) {
            Ok(l) => l,
            Err(e) => {
                send(Err(status_of(e)));
                return;
            }
        };
        let mut buf = Vec::with_capacity(64 * 1024);
        for line in lines {
            match line {
                Ok(l) => {
                    buf.extend_from_slice(l.as_bytes());
                    buf.push(b'\n');
                    if buf.len() >= 64 * 1024
                        && !send(Ok(pb::ExportHistoryChunk {
                            jsonl: std::mem::take(&mut buf),
                        }))
                    {
                        return; // the client went away
                    }
                }
                Err(e) => {
                    send(Err(status_of(e)));
                    return;
                }
            }
        }
        if !buf.is_empty() {
            send(Ok(pb::ExportHistoryChunk { jsonl: buf }));
        }
    });
    ReceiverStream::new(rx)
}
