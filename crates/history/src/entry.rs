//! What one history entry records, and how it is hashed into the chain.
//!
//! The stored form is postcard (compact, deterministic for a given value). An entry's hash is
//! SHA-256 over a domain tag, the previous entry's hash and the stored bytes of its body, so
//! changing any byte of any entry, reordering, inserting or removing entries breaks the chain
//! at the first entry affected.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    Keygen,
    Sign,
    Reshare,
    Refresh,
    PolicyReload,
    BackupExport,
    BackupImport,
    ConfigStart,
    DropPrevious,
    /// The end of an interrupted keygen or reshare commit, decided on evidence.
    Resolve,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Keygen,
        Kind::Sign,
        Kind::Reshare,
        Kind::Refresh,
        Kind::PolicyReload,
        Kind::BackupExport,
        Kind::BackupImport,
        Kind::ConfigStart,
        Kind::DropPrevious,
        Kind::Resolve,
    ];

    pub(crate) fn tag(self) -> u8 {
        self as u8
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Keygen => "keygen",
            Kind::Sign => "sign",
            Kind::Reshare => "reshare",
            Kind::Refresh => "refresh",
            Kind::PolicyReload => "policy_reload",
            Kind::BackupExport => "backup_export",
            Kind::BackupImport => "backup_import",
            Kind::ConfigStart => "config_start",
            Kind::DropPrevious => "drop_previous",
            Kind::Resolve => "resolve",
        }
    }
}

/// How it ended (or that it started).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Outcome {
    /// Recorded before a ceremony runs; a later entry of the same session holds the end.
    Started,
    Succeeded,
    Denied,
    Failed,
    Aborted,
    /// A keygen or reshare ended without a certificate: the new share is kept as pending
    /// until a resolve decides.
    InDoubt,
    /// Refused before it started (authentication, replay, membership, allow list, unknown
    /// vault, malformed request): the reason and the caller, nothing indexed.
    Refused,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Started,
        Outcome::Succeeded,
        Outcome::Denied,
        Outcome::Failed,
        Outcome::Aborted,
        Outcome::InDoubt,
        Outcome::Refused,
    ];

    pub(crate) fn tag(self) -> u8 {
        self as u8
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Started => "started",
            Outcome::Succeeded => "succeeded",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
            Outcome::Aborted => "aborted",
            Outcome::InDoubt => "in_doubt",
            Outcome::Refused => "refused",
        }
    }
}

/// The committee a ceremony ran with.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CommitteeRecord {
    pub threshold: u32,
    /// Party ids (identity keys).
    pub parties: Vec<Vec<u8>>,
}

/// What the daemon decoded from a payload, as the policy saw it.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    pub chain: String,
    pub network: String,
    pub recipient: String,
    /// "native" or a token contract address.
    pub asset: String,
    /// Decimal string in base units.
    pub amount: String,
}

/// The policy's decision.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// "allow", "deny", "needs_approval".
    pub decision: String,
    pub reasons: Vec<String>,
    /// SHA-256 of the policy bundle (hex).
    pub bundle_hash: String,
}

/// One signature of a sign ceremony.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SignatureRecord {
    pub hash: Vec<u8>,
    pub r: Vec<u8>,
    pub s: Vec<u8>,
    pub recovery_id: u32,
}

/// What a ceremony produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResultRecord {
    Signatures(Vec<SignatureRecord>),
    PublicKey(Vec<u8>),
    Error(String),
    /// A failure that ended with an ABORT carrying evidence against a party. Added last, so
    /// entries written before it decode unchanged.
    Blame(BlameRecord),
}

/// An ABORT with evidence, kept whole so an operator can check the blame again later
/// without trusting this daemon (`cosignerctl history blame`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlameRecord {
    /// The error, as the caller was told.
    pub error: String,
    pub accuser: Vec<u8>,
    pub accused: Vec<u8>,
    /// What checking the evidence found, when the daemon recorded it.
    pub finding: String,
    /// The signed ABORT envelope (protobuf), evidence included.
    pub abort: Vec<u8>,
}

/// The caller's part of an entry: everything except what the store assigns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub kind: Kind,
    pub outcome: Outcome,
    pub vault_id: String,
    pub epoch: u64,
    pub session_id: Vec<u8>,
    /// TLS identity (SPIFFE URI) of the caller.
    pub tls_identity: String,
    /// Party id of the requesting party, if a party asked.
    pub requester: Vec<u8>,
    pub committee: Option<CommitteeRecord>,
    /// SHA-256 of the payload bytes.
    pub payload_digest: Vec<u8>,
    pub summary: Option<Summary>,
    pub policy: Option<PolicyRecord>,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    pub result: Option<ResultRecord>,
    /// The request's nonce (replay protection).
    pub nonce: Vec<u8>,
}

impl Record {
    /// A record with only kind and outcome set; fill in the rest with struct update syntax.
    pub fn new(kind: Kind, outcome: Outcome) -> Record {
        Record {
            kind,
            outcome,
            vault_id: String::new(),
            epoch: 0,
            session_id: Vec::new(),
            tls_identity: String::new(),
            requester: Vec::new(),
            committee: None,
            payload_digest: Vec::new(),
            summary: None,
            policy: None,
            started_at_ms: 0,
            ended_at_ms: 0,
            result: None,
            nonce: Vec::new(),
        }
    }
}

/// A stored entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub seq: u64,
    /// When the store wrote it (Unix ms). Non-decreasing along the chain: a wall clock that
    /// steps back shows as equal times, so time windows are contiguous runs of entries.
    pub at_ms: i64,
    pub prev_hash: [u8; 32],
    pub record: Record,
}

/// Entry plus its hash, as kept in sled.
#[derive(Serialize, Deserialize)]
pub(crate) struct Stored {
    pub body: Vec<u8>,
    pub hash: [u8; 32],
}

pub(crate) fn encode_body(e: &Entry) -> Vec<u8> {
    // Plain data: postcard cannot fail on it.
    postcard::to_allocvec(e).unwrap_or_default()
}

pub(crate) fn chain_hash(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cosigner/history/v1/entry");
    h.update(prev);
    h.update((body.len() as u64).to_be_bytes());
    h.update(body);
    h.finalize().into()
}

pub(crate) fn hex(b: &[u8]) -> String {
    ::hex::encode(b)
}

impl Entry {
    /// The entry as one JSON object (bytes as hex), for export.
    pub fn to_json(&self, hash: &[u8; 32]) -> serde_json::Value {
        let r = &self.record;
        let result = match &r.result {
            None => serde_json::Value::Null,
            Some(ResultRecord::Signatures(sigs)) => serde_json::json!({
                "signatures": sigs.iter().map(|s| serde_json::json!({
                    "hash": hex(&s.hash), "r": hex(&s.r), "s": hex(&s.s), "recovery_id": s.recovery_id,
                })).collect::<Vec<_>>()
            }),
            Some(ResultRecord::PublicKey(pk)) => serde_json::json!({ "public_key": hex(pk) }),
            Some(ResultRecord::Error(e)) => serde_json::json!({ "error": e }),
            Some(ResultRecord::Blame(b)) => serde_json::json!({
                "error": b.error,
                "blame": {
                    "accuser": hex(&b.accuser), "accused": hex(&b.accused),
                    "finding": b.finding, "abort_envelope": hex(&b.abort),
                },
            }),
        };
        serde_json::json!({
            "seq": self.seq,
            "at_ms": self.at_ms,
            "kind": r.kind.as_str(),
            "outcome": r.outcome.as_str(),
            "vault_id": r.vault_id,
            "epoch": r.epoch,
            "session_id": hex(&r.session_id),
            "tls_identity": r.tls_identity,
            "requester": hex(&r.requester),
            "committee": r.committee.as_ref().map(|c| serde_json::json!({
                "threshold": c.threshold,
                "parties": c.parties.iter().map(|p| hex(p)).collect::<Vec<_>>(),
            })),
            "payload_digest": hex(&r.payload_digest),
            "summary": r.summary.as_ref().map(|s| serde_json::json!({
                "chain": s.chain, "network": s.network, "recipient": s.recipient,
                "asset": s.asset, "amount": s.amount,
            })),
            "policy": r.policy.as_ref().map(|p| serde_json::json!({
                "decision": p.decision, "reasons": p.reasons, "bundle_hash": p.bundle_hash,
            })),
            "started_at_ms": r.started_at_ms,
            "ended_at_ms": r.ended_at_ms,
            "result": result,
            "nonce": hex(&r.nonce),
            "prev_hash": hex(&self.prev_hash),
            "hash": hex(hash),
        })
    }
}
