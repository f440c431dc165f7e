//! The daemon's side of the ceremony layer's ports ([`cosigner_node::ports`]): the shares
//! are the TPM-sealed store, the journal is the sled history with the gate's session and
//! nonce memory, the decider is the loaded policy bundle, the relays are this daemon's
//! client connections. And the one place where the layer's errors become gRPC statuses.

use std::sync::Arc;

use cosigner_api::v1::RelayRef;
use cosigner_history::{BlameRecord, Kind, Outcome, Record, ResultRecord, SignatureRecord};
use cosigner_node::gate::{self, End, Ending, Ledger};
use cosigner_node::ports::{self, Admission};
use cosigner_node::{Code, NodeError, facts::Windows};
use cosigner_relay::commit::CommitState;
use cosigner_relay::finish::CommitStore;
use cosigner_relay::roster::Roster;
use cosigner_relay::{DriveError, Driver, Held, VaultRecord};
use cosigner_seal::Slot;
use tonic::Status;

use crate::ceremony::{Begun, Ceremonies, committee_record, summary};
use crate::history_rpc::blocking;
use crate::policy::Policy;
use crate::vaults::Vaults;

/// The one mapping of the ceremony layer's errors to gRPC statuses.
pub fn status(e: &NodeError) -> Status {
    let code = match e.code() {
        Code::InvalidArgument => tonic::Code::InvalidArgument,
        Code::FailedPrecondition => tonic::Code::FailedPrecondition,
        Code::PermissionDenied => tonic::Code::PermissionDenied,
        Code::Unauthenticated => tonic::Code::Unauthenticated,
        Code::NotFound => tonic::Code::NotFound,
        Code::AlreadyExists => tonic::Code::AlreadyExists,
        Code::ResourceExhausted => tonic::Code::ResourceExhausted,
        Code::Aborted => tonic::Code::Aborted,
        Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        Code::Unavailable => tonic::Code::Unavailable,
        Code::Unimplemented => tonic::Code::Unimplemented,
        Code::DataLoss => tonic::Code::DataLoss,
        Code::Internal => tonic::Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// A status from the daemon's own stores, as the layer's error (the code is kept).
pub fn from_status(s: Status) -> NodeError {
    let code = match s.code() {
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Code::InvalidArgument,
        tonic::Code::FailedPrecondition => Code::FailedPrecondition,
        tonic::Code::PermissionDenied => Code::PermissionDenied,
        tonic::Code::Unauthenticated => Code::Unauthenticated,
        tonic::Code::NotFound => Code::NotFound,
        tonic::Code::AlreadyExists => Code::AlreadyExists,
        tonic::Code::ResourceExhausted => Code::ResourceExhausted,
        tonic::Code::Aborted | tonic::Code::Cancelled => Code::Aborted,
        tonic::Code::DeadlineExceeded => Code::DeadlineExceeded,
        tonic::Code::Unavailable => Code::Unavailable,
        tonic::Code::Unimplemented => Code::Unimplemented,
        tonic::Code::DataLoss => Code::DataLoss,
        _ => Code::Internal,
    };
    NodeError::new(code, s.message())
}

/// The sealed shares, read without unsealing until [`ports::Shares::unseal`].
pub struct SealedShares<'a>(pub &'a Ceremonies);

impl ports::Shares for SealedShares<'_> {
    async fn signing_record(&self, vault: &str) -> Result<VaultRecord, NodeError> {
        self.0
            .vaults()
            .signing_record(vault)
            .await
            .map_err(from_status)
    }

    async fn pending(&self, vault: &str) -> Result<Option<u64>, NodeError> {
        Ok(self
            .0
            .vaults()
            .slots(vault)
            .await
            .map_err(from_status)?
            .pending)
    }

    async fn unseal(&self, vault: &str) -> Result<Held, NodeError> {
        self.0
            .vaults()
            .load(vault, Slot::Current)
            .await
            .map_err(from_status)
    }

    async fn vacant(&self, vault: &str) -> Result<(), NodeError> {
        let vaults = self.0.vaults();
        let slots = vaults.slots(vault).await.map_err(from_status)?;
        if slots.current.is_some() || slots.pending.is_some() || slots.previous.is_some() {
            return Err(NodeError::new(
                Code::AlreadyExists,
                format!("this daemon already holds a share of vault {vault:?}"),
            ));
        }
        if let Some(c) = vaults.commit_state(vault).await.map_err(from_status)?
            && c.phase.needs_resolve()
        {
            return Err(NodeError::new(
                Code::FailedPrecondition,
                format!(
                    "an earlier keygen of vault {vault:?} is in doubt here; resolve it first (`cosignerctl vault resolve`)"
                ),
            ));
        }
        Ok(())
    }

    async fn reshare_record(&self, vault: &str) -> Result<Option<VaultRecord>, NodeError> {
        let vaults = self.0.vaults();
        // In doubt or a rolled-back share refuses here.
        let record = vaults.reshare_record(vault).await.map_err(from_status)?;
        if record.is_none()
            && let Some(c) = vaults.commit_state(vault).await.map_err(from_status)?
            && c.phase.needs_resolve()
        {
            return Err(NodeError::new(
                Code::FailedPrecondition,
                format!(
                    "a keygen or reshare of vault {vault:?} is in doubt here; resolve it first (`cosignerctl vault resolve`)"
                ),
            ));
        }
        Ok(record)
    }

    async fn slots(&self, vault: &str) -> Result<ports::Slots, NodeError> {
        let s = self.0.vaults().slots(vault).await.map_err(from_status)?;
        Ok(crate::vaults::epochs(&s))
    }

    async fn commit_state(&self, vault: &str) -> Result<Option<CommitState>, NodeError> {
        self.0
            .vaults()
            .commit_state(vault)
            .await
            .map_err(from_status)
    }

    async fn check_pending(&self, vault: &str) -> Result<(), NodeError> {
        self.0
            .vaults()
            .load(vault, Slot::Pending)
            .await
            .map(drop)
            .map_err(from_status)
    }

    async fn view(&self, vault: &str) -> Result<Option<ports::View>, NodeError> {
        match self.0.vaults().view(vault).await {
            Ok(v) => Ok(v.record.map(|record| ports::View {
                record,
                slots: crate::vaults::epochs(&v.slots),
                commit: v.commit,
                standing: v.state,
            })),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(from_status(s)),
        }
    }

    type Commit = DaemonCommit;

    fn commit(&self, kind: ports::Kind, new_epoch: u64) -> DaemonCommit {
        DaemonCommit {
            vaults: self.0.vaults_arc(),
            new_epoch,
            fault: self.0.fault_hook(history_kind(kind)),
        }
    }
}

/// The daemon's side of [`cosigner_relay::finish`]: the commit record and the TPM-sealed
/// slots.
pub struct DaemonCommit {
    pub vaults: Arc<Vaults>,
    /// The epoch a retiring dealer's floor rises to.
    pub new_epoch: u64,
    pub fault: Option<cosigner_relay::driver::FaultHook>,
}

impl CommitStore for DaemonCommit {
    type Pending = Held;
    type Error = NodeError;

    async fn save(&mut self, state: &CommitState) -> Result<(), NodeError> {
        self.vaults.save_commit(state).await.map_err(from_status)
    }

    async fn seal_pending(&mut self, pending: Held) -> Result<(), NodeError> {
        self.vaults
            .seal_pending(&pending)
            .await
            .map_err(from_status)
    }

    async fn promote(&mut self, vault: &str) -> Result<(), NodeError> {
        self.vaults.promote(vault).await.map_err(from_status)
    }

    async fn retire(&mut self, vault: &str) -> Result<(), NodeError> {
        self.vaults
            .retire(vault, self.new_epoch)
            .await
            .map_err(from_status)
    }

    fn fault(&self, point: &str) {
        if let Some(f) = &self.fault {
            f(point);
        }
    }
}

impl cosigner_node::resolve::Discard for DaemonCommit {
    async fn discard(&mut self, state: &CommitState) -> Result<(), NodeError> {
        let vault = &state.target.vault_id;
        self.vaults.save_commit(state).await.map_err(from_status)?;
        let slots = self.vaults.slots(vault).await.map_err(from_status)?;
        if slots.pending == Some(state.target.epoch) {
            self.vaults
                .discard_pending(vault)
                .await
                .map_err(from_status)?;
        }
        Ok(())
    }
}

pub(crate) fn history_kind(k: ports::Kind) -> Kind {
    match k {
        ports::Kind::Keygen => Kind::Keygen,
        ports::Kind::Sign => Kind::Sign,
        ports::Kind::Reshare => Kind::Reshare,
        ports::Kind::Resolve => Kind::Resolve,
    }
}

/// The history record of an admitted (or denied) request.
fn record_of(a: &Admission<'_>, decision: &cosigner_policy::Decision) -> Record {
    Record {
        vault_id: a.vault_id.to_string(),
        epoch: a.epoch,
        committee: a.committee.map(committee_record),
        payload_digest: a
            .payload
            .map(|p| cosigner_node::payload::digest(Some(p)).to_vec())
            .unwrap_or_default(),
        summary: a.decoded.and_then(summary),
        policy: Some(crate::policy::record(decision)),
        requester: a.requester.to_vec(),
        nonce: a.nonce.to_vec(),
        tls_identity: a.tls_identity.to_string(),
        session_id: a.relay.session_id.clone(),
        started_at_ms: crate::now_ms(),
        ..Record::new(history_kind(a.kind), Outcome::Started)
    }
}

/// The gate's ledger is the history: used sessions and nonces are indexed there, and
/// every admitted or denied request is an entry.
impl Ledger for Ceremonies {
    type Entry = Record;

    async fn session_seen(&self, session: &[u8]) -> Result<Option<u64>, NodeError> {
        let sid = session.to_vec();
        blocking(self.history(), move |h| h.session_seen(&sid))
            .await
            .map_err(from_status)
    }

    async fn nonce_seen(
        &self,
        requester: &[u8; 32],
        nonce: &[u8],
    ) -> Result<Option<u64>, NodeError> {
        let (r, n) = (requester.to_vec(), nonce.to_vec());
        blocking(self.history(), move |h| h.nonce_seen(&r, &n))
            .await
            .map_err(from_status)
    }

    async fn denied(
        &self,
        a: &Admission<'_>,
        decision: &cosigner_policy::Decision,
    ) -> Result<u64, NodeError> {
        // Recorded with the nonce, so it cannot be replayed, and answered with the reasons.
        let reasons = decision.reasons().join("; ");
        let denied = Record {
            outcome: Outcome::Denied,
            ended_at_ms: crate::now_ms(),
            result: Some(ResultRecord::Error(reasons.clone())),
            ..record_of(a, decision)
        };
        let kind = denied.kind.as_str();
        let receipt = blocking(self.history(), move |h| h.append(denied))
            .await
            .map_err(from_status)?;
        self.metrics().ceremony(kind, "denied", None);
        tracing::info!(seq = receipt.seq, %reasons, "request denied by the policy");
        Ok(receipt.seq)
    }

    async fn started(
        &self,
        a: &Admission<'_>,
        decision: &cosigner_policy::Decision,
    ) -> Result<Record, NodeError> {
        let record = record_of(a, decision);
        let started = record.clone();
        blocking(self.history(), move |h| h.append(started))
            .await
            .map_err(from_status)?;
        Ok(record)
    }

    async fn ended(&self, begun: &Begun, end: End) -> Result<u64, NodeError> {
        let mut rec = begun.entry.clone();
        rec.outcome = match end.outcome {
            gate::Outcome::Succeeded => Outcome::Succeeded,
            gate::Outcome::Failed => Outcome::Failed,
            gate::Outcome::Aborted => Outcome::Aborted,
            gate::Outcome::InDoubt => Outcome::InDoubt,
        };
        rec.ended_at_ms = crate::now_ms();
        if let Some(e) = end.epoch {
            rec.epoch = e;
        }
        let (kind, outcome) = (rec.kind.as_str(), rec.outcome);
        rec.result = Some(match end.ending {
            Ending::Signatures(s) => ResultRecord::Signatures(
                s.iter()
                    .map(|s| SignatureRecord {
                        hash: s.hash.to_vec(),
                        r: s.r.to_vec(),
                        s: s.s.to_vec(),
                        recovery_id: u32::from(s.recovery_id),
                    })
                    .collect(),
            ),
            Ending::PublicKey(key) => ResultRecord::PublicKey(key),
            Ending::Error(e) => ResultRecord::Error(e),
            Ending::Blame {
                error,
                accuser,
                accused,
                finding,
                abort,
            } => ResultRecord::Blame(BlameRecord {
                error,
                accuser: accuser.to_vec(),
                accused: accused.map(|a| a.to_vec()).unwrap_or_default(),
                finding,
                abort,
            }),
        });
        if let Some(ResultRecord::Error(e) | ResultRecord::Blame(BlameRecord { error: e, .. })) =
            &rec.result
        {
            tracing::warn!(
                kind,
                outcome = outcome.as_str(),
                vault = %begun.vault_id,
                session = %cosigner_relay::keys::short(&begun.session),
                error = %e,
                "ceremony failed"
            );
        }
        let receipt = blocking(self.history(), move |h| h.append(rec))
            .await
            .map_err(from_status)?;
        self.metrics()
            .ceremony(kind, outcome.as_str(), Some(begun.admitted.elapsed()));
        Ok(receipt.seq)
    }

    async fn windows(&self, vault: &str, now_ms: i64) -> Result<Windows, NodeError> {
        self.windows_at(vault, now_ms).await.map_err(from_status)
    }
}

impl cosigner_node::ports::Decider for Policy {
    fn decide(&self, document: serde_json::Value) -> cosigner_policy::Decision {
        Policy::decide(self, document)
    }
}

/// Policy decisions counted by kind and verdict.
impl ports::Observer for crate::metrics::Metrics {
    fn decided(&self, kind: ports::Kind, decision: &cosigner_policy::Decision) {
        self.decision(
            history_kind(kind).as_str(),
            match decision.verdict {
                cosigner_policy::Verdict::Allow => "allow",
                cosigner_policy::Verdict::Deny(_) => "deny",
                cosigner_policy::Verdict::NeedsApproval(_) => "needs_approval",
            },
        );
    }
}

impl ports::Relays for Ceremonies {
    async fn open(
        &self,
        kind: ports::Kind,
        relay: &RelayRef,
        roster: Roster,
    ) -> Result<Driver, DriveError> {
        self.driver(history_kind(kind), relay, roster).await
    }
}

impl ports::Clock for Ceremonies {
    fn now_ms(&self) -> i64 {
        crate::now_ms()
    }
}
