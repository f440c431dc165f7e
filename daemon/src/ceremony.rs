//! Keygen, sign and reshare as this daemon takes part in them.
//!
//! Every request goes through the same gate: the request signature over the exact body
//! bytes, the requester on the keygen allow list or in the vault's committee, the payload
//! decoded and hashed here, then ([`Ceremonies::begin`]) a nonce never seen before, a free
//! ceremony slot, a session id not already used here, the policy's decision (a denial is
//! recorded and answered with its reasons) and a STARTED entry in the history (if that
//! write fails, nothing runs). The ceremony then runs over the relay ([`cosigner_relay::Driver`]) with the share
//! unsealed only for its duration, the result is verified, and the outcome is recorded
//! before the answer leaves (fail closed: no record, no answer).
//!
//! Whom this daemon talks to comes only from its own record ([`cosigner_relay::roster`]):
//! a request can name the parties, never their keys. Every participant signs the hash of
//! the participant list into its HELLO, so parties shown different requests stop before
//! round one. The share is unsealed last, after every other check.
//!
//! Keygen and reshare end with the commit of [`cosigner_relay::finish`]: each new party
//! records the commit, seals its share as *pending*, signs and sends READY, and promotes
//! only with a certificate (a valid READY from every new party). Without one it stays *in
//! doubt*, keeps pending, and signs nothing until `ResolvePending` decides from the other
//! parties' signed reports (docs/ceremonies.md). A dealer that leaves the committee retires
//! its old share only with a certificate.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::refusals::{Refusals, Refused};
use cosigner_api::v1::relay_client::RelayClient;
use cosigner_api::v1::*;
use cosigner_history::{
    BlameRecord, CommitteeRecord, History, Kind, Outcome, Record, ResultRecord, Summary,
};
use cosigner_node::facts::{self, Asker, Windows};
use cosigner_policy::input::{self, WindowFacts};
use cosigner_policy::{Decision as PolicyVerdict, Verdict};

use crate::metrics::Metrics;
use cosigner_relay::commit::{self, CommitState, Holding, Phase, Report, Role};
use cosigner_relay::finish::{self, CommitEnd, CommitStore};
use cosigner_relay::record::{committee_from_api, committee_to_api};
use cosigner_relay::roster::{self, Roster};
use cosigner_relay::{DriveError, Driver, Held, Member, SessionSpec, VaultRecord};
use cosigner_seal::{Slot, check_vault_id};
use cosigner_tss::Committee;
use prost::Message as _;
use tonic::Status;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::auth::Caller;
use crate::config::CeremonySettings;
use crate::history_rpc::blocking;
use crate::me::Me;
use crate::now_ms;
use crate::policy::Policy;
use crate::ports::{SealedShares, from_status, outcome, status};
use crate::vaults::{Vaults, slots_to_api};
use cosigner_node::NodeError;
use cosigner_node::ports::Admission;
use cosigner_node::resolve::{Applied, Verdict as Resolution};

const KEYGEN: &str = cosigner_node::keygen::METHOD;
pub(crate) const GET_RECORD: &str = cosigner_node::request::GET_VAULT_RECORD;
pub(crate) const RESHARE: &str = cosigner_node::reshare::METHOD;

fn short(b: &[u8]) -> String {
    cosigner_relay::keys::short(b)
}

fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

fn party_ids(field: &str, v: &[Vec<u8>]) -> Result<Vec<[u8; 32]>, Status> {
    v.iter()
        .enumerate()
        .map(|(i, p)| {
            p.as_slice().try_into().map_err(|_| {
                invalid(
                    &format!("{field}[{i}]"),
                    format!("{} bytes; a party id is 32", p.len()),
                )
            })
        })
        .collect()
}

pub(crate) fn committee_record(c: &Committee) -> CommitteeRecord {
    CommitteeRecord {
        threshold: u32::from(c.threshold()),
        parties: c.parties().iter().map(|p| p.0.to_vec()).collect(),
    }
}

/// The crash-test point from `COSIGNERD_TEST_KILL_AT`, in a build with the `test-hooks`
/// feature only; elsewhere the variable is ignored (with a warning).
fn test_kill_point() -> Option<String> {
    let v = std::env::var("COSIGNERD_TEST_KILL_AT").ok()?;
    if cfg!(feature = "test-hooks") {
        Some(v)
    } else {
        tracing::warn!("COSIGNERD_TEST_KILL_AT is set but this build has no test hooks; ignored");
        None
    }
}

/// How a ceremony failed, as a status and a history outcome (the ceremony layer's one
/// mapping: [`crate::ports::status`]).
fn drive_status(e: &DriveError) -> (Status, Outcome) {
    let (code, stopped) = cosigner_node::error::ceremony_code(e);
    let status = crate::ports::status(&cosigner_node::NodeError::new(code, e.to_string()));
    (
        status,
        if stopped {
            Outcome::Aborted
        } else {
            Outcome::Failed
        },
    )
}

/// Connections to relays, one channel per address (channels multiplex calls).
struct RelayConnector {
    own: Option<String>,
    tls: ClientTlsConfig,
    channels: Mutex<HashMap<String, Channel>>,
}

impl RelayConnector {
    async fn client(&self, address: &str) -> Result<RelayClient<Channel>, Status> {
        let addr = if address.is_empty() {
            self.own.clone().ok_or_else(|| {
                Status::failed_precondition(
                    "relay.address is empty but this daemon hosts no relay (relay.enabled = false); name the relay",
                )
            })?
        } else {
            address.to_string()
        };
        let cached = self
            .channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&addr)
            .cloned();
        let channel = match cached {
            Some(c) => c,
            None => {
                let c = Endpoint::from_shared(addr.clone())
                    .map_err(|e| invalid("relay.address", format!("{addr:?}: {e}")))?
                    .tls_config(self.tls.clone())
                    .map_err(|e| Status::internal(format!("relay TLS: {e}")))?
                    .connect_timeout(Duration::from_secs(5))
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|e| {
                        Status::unavailable(format!("cannot reach the relay at {addr}: {e}"))
                    })?;
                self.channels
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(addr, c.clone());
                c
            }
        };
        Ok(RelayClient::new(channel)
            .max_decoding_message_size(8 << 20)
            .max_encoding_message_size(8 << 20))
    }
}

/// A ceremony admitted by the gate, with its history record: holds its slot until dropped.
/// (Its session id stays used: a session runs once per daemon lifetime.)
pub type Begun = cosigner_node::gate::Ticket<Record>;

pub struct Ceremonies {
    vaults: Arc<Vaults>,
    history: Arc<History>,
    policy: Arc<Policy>,
    settings: CeremonySettings,
    me: Arc<Me>,
    relays: RelayConnector,
    /// Replay and session memory, ceremony slots ([`cosigner_node::gate`]).
    gate: cosigner_node::gate::Gate,
    kill_at: Option<String>,
    /// Vaults with a keygen or reshare in progress here: at most one at a time per vault
    /// (two would fight over the same pending slot).
    changing: Arc<Mutex<HashSet<String>>>,
    metrics: Arc<Metrics>,
    /// Rate limits for writing refused requests to the history.
    refusals: Refusals,
}

/// Holds a vault's "keygen or reshare in progress" mark; released on drop.
pub(crate) struct Changing {
    set: Arc<Mutex<HashSet<String>>>,
    vault: String,
}

impl Drop for Changing {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.vault);
    }
}

/// The daemon's side of [`finish`]: the commit record and the TPM-sealed slots.
struct DaemonCommit<'a> {
    vaults: &'a Vaults,
    /// The epoch a retiring dealer's floor rises to.
    new_epoch: u64,
    fault: Option<cosigner_relay::driver::FaultHook>,
}

impl CommitStore for DaemonCommit<'_> {
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

impl cosigner_node::resolve::Discard for DaemonCommit<'_> {
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

pub struct RelayTls {
    pub ca: Vec<u8>,
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl Ceremonies {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vaults: Arc<Vaults>,
        history: Arc<History>,
        policy: Arc<Policy>,
        settings: CeremonySettings,
        me: Arc<Me>,
        own_relay: Option<String>,
        tls: RelayTls,
        metrics: Arc<Metrics>,
    ) -> Self {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(tls.ca))
            .identity(Identity::from_pem(tls.cert, tls.key));
        Ceremonies {
            vaults,
            history,
            policy,
            gate: cosigner_node::gate::Gate::new(settings.max_concurrent),
            settings,
            me,
            relays: RelayConnector {
                own: own_relay,
                tls,
                channels: Mutex::new(HashMap::new()),
            },
            kill_at: test_kill_point(),
            changing: Arc::new(Mutex::new(HashSet::new())),
            metrics,
            refusals: Refusals::default(),
        }
    }

    /// Runs one ceremony request (keygen, sign, reshare). A request refused before its
    /// ceremony recorded anything (STARTED or DENIED) gets a `refused` history entry with
    /// the reason, within the refusal rate limit ([`crate::refusals`]).
    pub async fn gated<T>(
        &self,
        refused: Refused,
        request: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let (r, recorded) = Refusals::gate(request).await;
        if let Err(status) = &r
            && !recorded
        {
            self.record_refusal(refused, status).await;
        }
        r
    }

    async fn record_refusal(&self, f: Refused, status: &Status) {
        let kind = f.kind.as_str();
        self.metrics.ceremony(kind, "refused", None);
        let Some(dropped) = self
            .refusals
            .admit(&f.tls_identity, std::time::Instant::now())
        else {
            self.metrics.refusal_dropped();
            tracing::debug!(kind, caller = %f.tls_identity, reason = %status.message(), "request refused (not recorded: refusal rate limit)");
            return;
        };
        let now = now_ms();
        // Bounded and printable: a refusal's text can echo what the caller sent.
        let mut reason = cosigner_relay::driver::sanitize(status.message());
        if dropped > 0 {
            reason.push_str(&format!(
                " ({dropped} refused request(s) before this one were not written: refusal rate limit)"
            ));
        }
        let rec = Record {
            vault_id: f.vault_id,
            tls_identity: f.tls_identity,
            requester: f.requester,
            payload_digest: f.payload_digest,
            started_at_ms: now,
            ended_at_ms: now,
            result: Some(ResultRecord::Error(reason)),
            ..Record::new(f.kind, Outcome::Refused)
        };
        match blocking(&self.history, move |h| h.append(rec)).await {
            Ok(receipt) => {
                tracing::info!(seq = receipt.seq, kind, reason = %status.message(), "request refused")
            }
            Err(e) => {
                tracing::warn!(kind, error = %e.message(), "could not record a refused request")
            }
        }
    }

    fn me(&self) -> [u8; 32] {
        self.me.party_id()
    }

    pub(crate) fn history(&self) -> &Arc<History> {
        &self.history
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// How far a request's timestamp may be from this daemon's clock.
    fn skew_ms(&self) -> i64 {
        self.settings.max_clock_skew.as_millis() as i64
    }

    /// The vault's history windows (1h, 24h, 7d) and last reshare, for the policy.
    pub(crate) async fn windows_at(&self, vault: &str, now: i64) -> Result<Windows, Status> {
        let v = vault.to_string();
        let a = blocking(&self.history, move |h| h.aggregates(&v, now)).await?;
        let windows = a
            .windows
            .into_iter()
            .map(|w| {
                (
                    w.name,
                    WindowFacts {
                        requests: w.requests,
                        signatures: w.signatures,
                        spent: w.spent.into_iter().filter(|(k, _)| !k.is_empty()).collect(),
                    },
                )
            })
            .collect();
        Ok(Windows {
            windows,
            last_reshare_at_ms: a.last_reshare_ms,
        })
    }

    /// A relay client (`address` empty: this daemon's own relay) and the address used.
    pub(crate) async fn relay_client(
        &self,
        address: &str,
    ) -> Result<(RelayClient<Channel>, String), Status> {
        let addr = if address.is_empty() {
            self.relays.own.clone().unwrap_or_default()
        } else {
            address.to_string()
        };
        Ok((self.relays.client(&addr).await?, addr))
    }

    /// The TLS settings this daemon uses as a client (its own certificate).
    pub(crate) fn client_tls(&self) -> ClientTlsConfig {
        self.relays.tls.clone()
    }

    /// How many ceremonies are running on this daemon now.
    pub(crate) fn running(&self) -> usize {
        self.gate.running()
    }

    /// Marks `vault` as being generated or reshared here, or refuses if it already is.
    pub(crate) fn exclusive(&self, vault: &str) -> Result<Changing, Status> {
        let mut set = self.changing.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(vault.to_string()) {
            return Err(Status::aborted(format!(
                "a keygen or reshare of vault {vault:?} is already running on this daemon; retry when it ends"
            )));
        }
        Ok(Changing {
            set: self.changing.clone(),
            vault: vault.to_string(),
        })
    }

    /// First check of every request: its signature over the exact body, and the allow
    /// list. Returns the requester.
    fn authenticate(
        &self,
        method: &str,
        body: &[u8],
        auth: Option<&RequestAuth>,
    ) -> Result<[u8; 32], Status> {
        let requester =
            cosigner_relay::request::check(auth, method, body, now_ms(), self.skew_ms())
                .map_err(|e| Status::unauthenticated(e.to_string()))?;
        // Sign and reshare requesters must be in the vault's committee (checked by each
        // ceremony); a keygen has no committee yet, so its requesters are listed.
        if method == KEYGEN && !self.settings.allowed_requesters.contains(&requester) {
            return Err(Status::permission_denied(format!(
                "party {} may not request a keygen here (not in ceremonies.allowed_requesters)",
                short(&requester)
            )));
        }
        Ok(requester)
    }

    /// The rest of the gate ([`cosigner_node::gate`]): session id, a free slot, a fresh
    /// nonce; the decision recorded (DENIED, or STARTED and admitted).
    pub(crate) async fn begin(
        &self,
        a: Admission<'_>,
        decision: &PolicyVerdict,
    ) -> Result<Begun, Status> {
        self.metrics.decision(
            crate::ports::history_kind(a.kind).as_str(),
            match decision.verdict {
                Verdict::Allow => "allow",
                Verdict::Deny(_) => "deny",
                Verdict::NeedsApproval(_) => "needs_approval",
            },
        );
        self.gate
            .admit(self, a, decision)
            .await
            .map_err(|e| status(&e))
    }

    /// Records the outcome; only then may the answer leave.
    pub(crate) async fn finish(
        &self,
        begun: &Begun,
        outcome: Outcome,
        result: Option<ResultRecord>,
        epoch: Option<u64>,
    ) -> Result<u64, Status> {
        let mut rec = begun.entry.clone();
        rec.outcome = outcome;
        rec.ended_at_ms = now_ms();
        rec.result = result;
        if let Some(e) = epoch {
            rec.epoch = e;
        }
        let receipt = blocking(&self.history, move |h| h.append(rec)).await?;
        self.metrics.ceremony(
            begun.entry.kind.as_str(),
            outcome.as_str(),
            Some(begun.admitted.elapsed()),
        );
        Ok(receipt.seq)
    }

    /// A ceremony that failed in the driver: recorded with the ABORT's evidence when it
    /// ended with one, so the blame can be checked again from the history.
    pub(crate) async fn fail_drive(&self, begun: &Begun, e: DriveError) -> Status {
        let (status, outcome) = drive_status(&e);
        let result = match e.blamed() {
            None => ResultRecord::Error(status.message().to_string()),
            Some(b) => ResultRecord::Blame(BlameRecord {
                error: status.message().to_string(),
                accuser: b.verdict.accuser.to_vec(),
                accused: b.verdict.accused.map(|a| a.to_vec()).unwrap_or_default(),
                finding: b.verdict.summary(),
                abort: prost::Message::encode_to_vec(&b.abort),
            }),
        };
        self.fail_with(begun, status, outcome, result).await
    }

    /// A failure of the ceremony layer: recorded with its blame when the ceremony ran.
    pub(crate) async fn fail_node(&self, begun: &Begun, e: NodeError) -> Status {
        match e {
            NodeError::Ceremony(e) => self.fail_drive(begun, e).await,
            e => self.fail(begun, status(&e), outcome(&e)).await,
        }
    }

    pub(crate) async fn fail(&self, begun: &Begun, status: Status, outcome: Outcome) -> Status {
        let result = ResultRecord::Error(status.message().to_string());
        self.fail_with(begun, status, outcome, result).await
    }

    async fn fail_with(
        &self,
        begun: &Begun,
        status: Status,
        outcome: Outcome,
        result: ResultRecord,
    ) -> Status {
        tracing::warn!(
            kind = begun.entry.kind.as_str(),
            vault = %begun.entry.vault_id,
            session = %short(&begun.session),
            error = %status.message(),
            blame = matches!(result, ResultRecord::Blame(_)),
            "ceremony failed"
        );
        match self.finish(begun, outcome, Some(result), None).await {
            Ok(_) => status,
            Err(e) => e,
        }
    }

    /// The crash-test hook: with `COSIGNERD_TEST_KILL_AT=<kind>:<point>` in its environment
    /// (testing only; see docs/ceremonies.md) the daemon SIGKILLs itself at that point of
    /// that ceremony kind, so tests can kill a party at an exact round.
    fn fault_hook(&self, kind: Kind) -> Option<cosigner_relay::driver::FaultHook> {
        let target = self.kill_at.clone()?;
        let kind = kind.as_str();
        Some(Arc::new(move |point: &str| {
            if target == format!("{kind}:{point}") {
                tracing::warn!(%target, "COSIGNERD_TEST_KILL_AT reached: killing this process");
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
            }
        }))
    }

    pub(crate) async fn driver(
        &self,
        kind: Kind,
        relay: &RelayRef,
        roster: Roster,
    ) -> Result<Driver, DriveError> {
        let client = self
            .relays
            .client(&relay.address)
            .await
            .map_err(|s| DriveError::Relay(s.message().to_string()))?;
        Driver::open(
            client,
            self.me.keys(),
            SessionSpec {
                roster,
                round_timeout: self.settings.round_timeout,
                fault: self.fault_hook(kind),
            },
        )
        .await
    }

    /// This daemon as the roster names it (its name is what its record says, if any).
    fn me_member(&self, record: Option<&VaultRecord>) -> Member {
        let keys = self.me.keys();
        let name = record
            .and_then(|r| r.member(&keys.party_id()).map(|m| m.name.clone()))
            .unwrap_or_default();
        keys.member(&name)
    }

    /// Runs the commit of a keygen or reshare and records how it ended. Returns the
    /// history sequence of the outcome on success.
    async fn run_commit(
        &self,
        begun: &Begun,
        end: CommitEnd,
        new_epoch: u64,
        result: ResultRecord,
    ) -> Result<u64, Status> {
        match end {
            CommitEnd::Committed | CommitEnd::Retired => {
                self.finish(begun, Outcome::Succeeded, Some(result), Some(new_epoch))
                    .await
            }
            CommitEnd::InDoubt(why) => {
                let msg = format!(
                    "the {} of vault {:?} (epoch {new_epoch}) is in doubt: {why}. This daemon keeps its new share as pending and signs nothing for the vault until `cosignerctl vault resolve` decides from the other parties' reports",
                    begun.entry.kind.as_str(),
                    begun.entry.vault_id
                );
                self.metrics.ceremony(
                    begun.entry.kind.as_str(),
                    Outcome::InDoubt.as_str(),
                    Some(begun.admitted.elapsed()),
                );
                let mut rec = begun.entry.clone();
                rec.outcome = Outcome::InDoubt;
                rec.ended_at_ms = now_ms();
                rec.epoch = new_epoch;
                rec.result = Some(ResultRecord::Error(msg.clone()));
                blocking(&self.history, move |h| h.append(rec)).await?;
                tracing::warn!(vault = %begun.entry.vault_id, epoch = new_epoch, %why, "commit in doubt");
                Err(Status::unavailable(msg))
            }
            CommitEnd::Failed(why) => Err(self
                .fail(begun, Status::aborted(why), Outcome::Failed)
                .await),
        }
    }

    // ---- keygen ----

    pub async fn keygen(
        &self,
        caller: &Caller,
        req: KeygenRequest,
    ) -> Result<KeygenResponse, Status> {
        let requester = cosigner_node::request::requester(
            req.auth.as_ref(),
            cosigner_node::keygen::METHOD,
            &req.body,
            now_ms(),
            self.skew_ms(),
        )
        .map_err(|e| status(&e))?;
        // A keygen has no committee yet, so its requesters are listed: checked before
        // anything else is read of the request.
        if !self.settings.allowed_requesters.contains(&requester) {
            return Err(Status::permission_denied(format!(
                "party {} may not request a keygen here (not in ceremonies.allowed_requesters)",
                short(&requester)
            )));
        }
        let parsed = cosigner_node::keygen::Parsed {
            requester,
            body: cosigner_node::keygen::parse_body(&req.body).map_err(|e| status(&e))?,
        };
        let _changing = self.exclusive(&parsed.body.vault_id)?;
        let checked = cosigner_node::keygen::check(&req.body, parsed, &self.me_member(None))
            .map_err(|e| status(&e))?;
        let (requester, body, relay, plan) = (
            checked.requester,
            &checked.body,
            &checked.relay,
            &checked.plan,
        );
        let (committee, members) = (plan.committee.clone(), plan.members.clone());
        let slots = self.vaults.slots(&body.vault_id).await?;
        if slots.current.is_some() || slots.pending.is_some() || slots.previous.is_some() {
            return Err(Status::already_exists(format!(
                "this daemon already holds a share of vault {:?}",
                body.vault_id
            )));
        }
        if let Some(c) = self.vaults.commit_state(&body.vault_id).await?
            && c.phase.needs_resolve()
        {
            return Err(Status::failed_precondition(format!(
                "an earlier keygen of vault {:?} is in doubt here; resolve it first (`cosignerctl vault resolve`)",
                body.vault_id
            )));
        }
        let asker = Asker {
            requester,
            tls_identity: caller.uri.clone(),
        };
        let decision = self.policy.decide(input::document(&facts::keygen(
            &body.vault_id,
            &committee,
            &members,
            &asker,
            now_ms(),
        )));
        let begun = self
            .begin(
                Admission {
                    kind: cosigner_node::ports::Kind::Keygen,
                    vault_id: &body.vault_id,
                    epoch: 0,
                    committee: Some(&committee),
                    payload: None,
                    decoded: None,
                    requester,
                    nonce: req.auth.as_ref().map(|a| a.nonce.as_slice()).unwrap_or(&[]),
                    tls_identity: &caller.uri,
                    relay,
                },
                &decision,
            )
            .await?;
        let vault_id = body.vault_id.clone();
        let run = async {
            let mut d = self
                .driver(Kind::Keygen, relay, plan.roster.clone())
                .await?;
            let held =
                cosigner_node::keygen::take_part(&mut d, &checked, self.me(), now_ms()).await?;
            Ok::<_, NodeError>((d, held))
        };
        let (mut d, held) = match Box::pin(run).await {
            Ok(v) => v,
            Err(e) => return Err(self.fail_node(&begun, e).await),
        };
        let record = held.record.clone();
        let parties: Vec<[u8; 32]> = committee.parties().iter().map(|p| p.0).collect();
        let mut store = DaemonCommit {
            vaults: &self.vaults,
            new_epoch: 0,
            fault: self.fault_hook(Kind::Keygen),
        };
        let keys = self.me.keys();
        let (end, _) =
            finish::new_party(&mut d, &keys, &mut store, &record, held, parties, None).await;
        let seq = self
            .run_commit(
                &begun,
                end,
                0,
                ResultRecord::PublicKey(record.public.public_key.0.to_vec()),
            )
            .await?;
        // Committed and recorded: the answer says so even if the slots cannot be listed.
        let slots = self.vaults.slots(&vault_id).await.ok();
        tracing::info!(vault = %vault_id, seq, "keygen succeeded");
        Ok(KeygenResponse {
            vault: Some(record.to_api(slots.as_ref().map(slots_to_api))),
            history_seq: seq,
        })
    }

    // ---- sign ----

    pub async fn sign(&self, caller: &Caller, req: SignRequest) -> Result<SignResponse, Status> {
        let server = cosigner_node::sign::Server {
            me: self.me(),
            shares: &SealedShares(&self.vaults),
            journal: self,
            decider: &*self.policy,
            relays: self,
            clock: self,
            max_clock_skew_ms: self.skew_ms(),
            rules: cosigner_node::sign::Rules { raw_hash: true },
        };
        let signed = Box::pin(server.sign(&req, &caller.uri))
            .await
            .map_err(|e| crate::ports::status(&e))?;
        let c = &signed.checked;
        let sig = &signed.signature;
        self.drop_previous_after_first_signature(&c.body.vault_id, c.record.epoch(), caller)
            .await;
        Ok(SignResponse {
            signatures: vec![Signature {
                hash: c.message_hash.to_vec(),
                r: sig.r.to_vec(),
                s: sig.s.to_vec(),
                recovery_id: u32::from(sig.recovery_id),
                der: cosigner_tss::der_signature(&sig.r, &sig.s),
            }],
            public_key: c.public_key.0.to_vec(),
            decoded: Some(cosigner_node::payload::to_api(&c.decoded)),
            history_seq: signed.seq,
        })
    }

    /// The previous epoch's share is kept until the new epoch has produced a verified
    /// signature: now it has.
    async fn drop_previous_after_first_signature(&self, vault: &str, epoch: u64, caller: &Caller) {
        let Ok(slots) = self.vaults.slots(vault).await else {
            return;
        };
        // Only a signature at the current epoch proves the new epoch works (a signature
        // at the old epoch that ended after a promotion does not).
        let Some(previous) = slots
            .previous
            .filter(|p| slots.current == Some(epoch) && *p < epoch)
        else {
            return;
        };
        match self.vaults.drop_previous(vault).await {
            Ok(()) => {
                let rec = drop_record(vault, previous, &caller.uri, None);
                if let Err(e) = blocking(&self.history, move |h| h.append(rec)).await {
                    tracing::error!(error = %e.message(), "could not record dropping the previous share");
                }
                tracing::info!(
                    vault,
                    dropped = previous,
                    epoch,
                    "epoch signed once; previous share dropped"
                );
            }
            Err(e) => {
                tracing::warn!(vault, error = %e.message(), "could not drop the previous share")
            }
        }
    }

    // ---- reshare ----

    pub async fn reshare(
        &self,
        caller: &Caller,
        req: ReshareRequest,
    ) -> Result<ReshareResponse, Status> {
        let skew = self.settings.max_clock_skew.as_millis() as i64;
        let parsed = cosigner_node::reshare::parse(&req, now_ms(), skew).map_err(|e| status(&e))?;
        let _changing = self.exclusive(&parsed.body.vault_id)?;
        let me = self.me();
        // This daemon's own record (no unsealing), if it holds the vault; in doubt or a
        // rolled-back share refuses here.
        let held_record = self.vaults.reshare_record(&parsed.body.vault_id).await?;
        if held_record.is_none()
            && let Some(c) = self.vaults.commit_state(&parsed.body.vault_id).await?
            && c.phase.needs_resolve()
        {
            return Err(Status::failed_precondition(format!(
                "a keygen or reshare of vault {:?} is in doubt here; resolve it first (`cosignerctl vault resolve`)",
                parsed.body.vault_id
            )));
        }
        let checked = cosigner_node::reshare::check(
            &req.body,
            parsed,
            held_record.as_ref(),
            &self.me_member(held_record.as_ref()),
        )
        .map_err(|e| status(&e))?;
        let (requester, body, relay, plan) = (
            checked.requester,
            &checked.body,
            &checked.relay,
            &checked.plan,
        );
        // A party that holds nothing of the vault cannot check the old record against its
        // own: only a requester trusted to start keygens here may bring it in.
        if plan.joins_only && !self.settings.allowed_requesters.contains(&requester) {
            return Err(Status::permission_denied(format!(
                "this daemon holds no share of vault {:?}; joining it as a new member must be requested by a party in ceremonies.allowed_requesters ({} is not)",
                body.vault_id,
                short(&requester)
            )));
        }
        let (old, new_committee, new_members, dealers) = (
            &plan.old,
            &plan.new_committee,
            &plan.new_members,
            &plan.dealers,
        );
        let my_epoch = held_record.as_ref().map(|h| h.epoch());
        let windows = self.windows_at(&body.vault_id, now_ms()).await?;
        let asker = Asker {
            requester,
            tls_identity: caller.uri.clone(),
        };
        let decision = self.policy.decide(input::document(&facts::reshare(
            &facts::ReshareChange {
                old,
                dealers,
                new_committee,
                new_members,
                refresh: plan.refresh,
                scheduled: body.scheduled,
            },
            &asker,
            windows,
            now_ms(),
        )));
        let begun = self
            .begin(
                Admission {
                    kind: cosigner_node::ports::Kind::Reshare,
                    vault_id: &body.vault_id,
                    epoch: old.epoch(),
                    committee: Some(new_committee),
                    payload: None,
                    decoded: None,
                    requester,
                    nonce: req.auth.as_ref().map(|a| a.nonce.as_slice()).unwrap_or(&[]),
                    tls_identity: &caller.uri,
                    relay,
                },
                &decision,
            )
            .await?;
        // Unsealed last (a dealer only).
        let run = async {
            let share = if plan.is_dealer {
                Some(
                    self.vaults
                        .load(&body.vault_id, Slot::Current)
                        .await
                        .map_err(crate::ports::from_status)?,
                )
            } else {
                None
            };
            let pending = self
                .vaults
                .slots(&body.vault_id)
                .await
                .map_err(crate::ports::from_status)?
                .pending;
            let mut d = self
                .driver(Kind::Reshare, relay, plan.roster.clone())
                .await?;
            let mine = cosigner_node::reshare::Mine {
                epoch: my_epoch,
                pending,
                share,
            };
            let dealt =
                cosigner_node::reshare::take_part(&mut d, &checked, me, mine, now_ms()).await?;
            Ok::<_, NodeError>((d, dealt))
        };
        let (mut d, dealt) = match Box::pin(run).await {
            Ok(v) => v,
            Err(e) => return Err(self.fail_node(&begun, e).await),
        };
        let new_epoch = old.epoch() + 1;
        let public_key = old.public.public_key.0.to_vec();
        let mut store = DaemonCommit {
            vaults: &self.vaults,
            new_epoch,
            fault: self.fault_hook(Kind::Reshare),
        };
        let keys = self.me.keys();
        let (end, part) =
            cosigner_node::reshare::commit(&mut d, &keys, &mut store, &checked, dealt, my_epoch)
                .await;
        let vault = match part {
            cosigner_node::reshare::Part::New(record) => record.to_api(None),
            cosigner_node::reshare::Part::Left { new_epoch } => {
                let mut v = old.to_api(None);
                v.committee = Some(committee_to_api(new_committee, new_members));
                v.epoch = new_epoch;
                v.state = "retired".into();
                v
            }
        };
        let seq = self
            .run_commit(&begun, end, new_epoch, ResultRecord::PublicKey(public_key))
            .await?;
        let mut vault = vault;
        vault.slots = self
            .vaults
            .slots(&body.vault_id)
            .await
            .ok()
            .map(|s| slots_to_api(&s));
        tracing::info!(vault = %body.vault_id, epoch = new_epoch, seq, "reshare succeeded");
        Ok(ReshareResponse {
            vault: Some(vault),
            history_seq: seq,
        })
    }

    // ---- dry run ----

    /// EvaluatePolicy: decodes the body, builds the same input document a real request
    /// would get, and asks the policy; signs nothing and records nothing.
    pub async fn evaluate(
        &self,
        caller: &Caller,
        req: EvaluatePolicyRequest,
    ) -> Result<EvaluatePolicyResponse, Status> {
        let requester: [u8; 32] = req
            .requester
            .as_slice()
            .try_into()
            .map_err(|_| invalid("requester", "a party id is 32 bytes"))?;
        let kind = CeremonyKind::try_from(req.kind).unwrap_or(CeremonyKind::Unspecified);
        let asker = Asker {
            requester,
            tls_identity: caller.uri.clone(),
        };
        // The same facts the real gate builds (cosigner_node::facts), from this daemon's
        // own record: its epoch, the requester's name in its committee, its windows.
        let (doc, decoded) = match kind {
            CeremonyKind::Sign => {
                let body = cosigner_node::sign::parse_body(&req.body)
                    .map_err(|e| crate::ports::status(&e))?;
                let record = self.vaults.signing_record(&body.vault_id).await?;
                let decoded = cosigner_node::payload::decode(
                    body.payload.as_ref(),
                    Some(&cosigner_node::payload::vault_key(&record)),
                )
                .map_err(|e| crate::ports::status(&e))?;
                let signers =
                    cosigner_node::sign::signers(&record, &body.signers).map_err(|e| status(&e))?;
                let now = now_ms();
                let windows = self.windows_at(&body.vault_id, now).await?;
                let doc = input::document(&facts::sign(
                    &record,
                    &body.derivation_path,
                    &signers,
                    &decoded,
                    &asker,
                    windows,
                    now,
                ));
                (doc, Some(cosigner_node::payload::to_api(&decoded)))
            }
            CeremonyKind::Keygen => {
                let body = KeygenBody::decode(req.body.as_slice())
                    .map_err(|e| invalid("body", format!("not a KeygenBody ({e})")))?;
                let (committee, members) = committee_from_api(
                    body.committee
                        .as_ref()
                        .ok_or_else(|| invalid("committee", "missing"))?,
                )
                .map_err(|e| invalid("committee", e))?;
                let doc = input::document(&facts::keygen(
                    &body.vault_id,
                    &committee,
                    &members,
                    &asker,
                    now_ms(),
                ));
                (doc, None)
            }
            other => {
                return Err(invalid(
                    "kind",
                    format!("{other:?}: dry runs exist for SIGN and KEYGEN requests"),
                ));
            }
        };
        let d = self.policy.decide(doc.clone());
        let decision = match d.verdict {
            Verdict::Allow => Decision::Allow,
            Verdict::Deny(_) => Decision::Deny,
            Verdict::NeedsApproval(_) => Decision::NeedsApproval,
        };
        Ok(EvaluatePolicyResponse {
            decision: Some(PolicyDecision {
                decision: decision as i32,
                reasons: d.reasons(),
                approvals_required: match d.verdict {
                    Verdict::NeedsApproval(n) => n,
                    _ => 0,
                },
                policy_hash: d.bundle_hash.clone(),
            }),
            decoded,
            input_json: doc.to_string(),
        })
    }

    // ---- operator repairs ----

    /// Decides an interrupted commit from the other parties' signed reports
    /// ([`commit::decide`]): promote (or retire) with a certificate, discard when every new
    /// party reported and none holds one, otherwise say whom it waits for. An operator's
    /// word alone decides nothing.
    pub async fn resolve_pending(
        &self,
        caller: &Caller,
        req: ResolvePendingRequest,
    ) -> Result<ResolvePendingResponse, Status> {
        let vault = req.vault_id.as_str();
        check_vault_id(vault).map_err(|e| invalid("vault_id", e))?;
        let mut reports = Vec::with_capacity(req.reports.len());
        for (i, r) in req.reports.iter().enumerate() {
            let rep = Report::decode(r).map_err(|e| invalid(&format!("reports[{i}]"), e))?;
            if !rep.verify() {
                return Err(invalid(
                    &format!("reports[{i}]"),
                    format!("the report by {} does not verify", short(&rep.party)),
                ));
            }
            reports.push(rep);
        }
        let lost = party_ids("lost", &req.lost)?;
        let _changing = self.exclusive(vault)?;
        let Some(state) = self.vaults.commit_state(vault).await? else {
            return Err(Status::failed_precondition(format!(
                "vault {vault:?} has no keygen or reshare to resolve here"
            )));
        };
        let slots = self.vaults.slots(vault).await?;
        let certified = state.target.certificate(&state.received).is_some();
        let unfinished_move = certified
            && match state.phase {
                Phase::Committed => slots.pending == Some(state.target.epoch),
                Phase::Retired => slots.current.is_some_and(|c| c < state.target.epoch),
                _ => false,
            };
        if state.phase == Phase::Discarded && slots.pending == Some(state.target.epoch) {
            // A discard decided before a crash: finish it.
            self.vaults.discard_pending(vault).await?;
        }
        if !state.phase.needs_resolve() && !unfinished_move {
            return Err(Status::failed_precondition(format!(
                "the commit of vault {vault:?} at epoch {} is already decided here ({})",
                state.target.epoch,
                state.phase.as_str()
            )));
        }
        let me = self.me();
        let decision = if unfinished_move {
            commit::Decision::Promote(state.received.clone())
        } else {
            commit::decide(&state, &reports, &lost, me)
        };
        let retiring = state.role == Role::LeavingDealer;
        let verdict = match decision {
            commit::Decision::Undecided(why) => {
                return Ok(ResolvePendingResponse {
                    vault: self.vaults.describe(vault).await.ok(),
                    decision: "undecided".into(),
                    detail: why,
                });
            }
            commit::Decision::Promote(cert) => {
                // A pending share that does not open is never promoted.
                if !retiring {
                    self.vaults.load(vault, Slot::Pending).await?;
                }
                Resolution::Promote(cert)
            }
            commit::Decision::Discard => Resolution::Discard,
        };
        let mut store = DaemonCommit {
            vaults: &self.vaults,
            new_epoch: state.target.epoch,
            fault: None,
        };
        // A store error keeps its kind (a busy TPM, a damaged file, a full disk).
        let (applied, state) = cosigner_node::resolve::apply(&mut store, state, verdict, now_ms())
            .await
            .map_err(|e| status(&e))?;
        let epoch = state.target.epoch;
        let detail = match applied {
            Applied::Retired => format!(
                "every new party's READY is known (a certificate): this dealer left the committee at epoch {epoch}"
            ),
            Applied::Promoted => format!(
                "every new party's READY is known (a certificate): epoch {epoch} is current"
            ),
            Applied::Reactivated => format!(
                "every new party reported and no certificate exists: the reshare to epoch {epoch} did not happen; this party's epoch {} share is in use again",
                state.old_epoch.unwrap_or(0)
            ),
            Applied::Discarded => format!(
                "every new party reported (or was declared lost) and no certificate exists: the pending share of epoch {epoch} is deleted{}",
                if slots.current.is_some() {
                    "; the current share stays in use"
                } else {
                    ""
                }
            ),
        };
        let word = applied.as_str();
        let rec = Record {
            vault_id: vault.to_string(),
            epoch: state.target.epoch,
            tls_identity: caller.uri.clone(),
            started_at_ms: now_ms(),
            ended_at_ms: now_ms(),
            result: Some(ResultRecord::Error(format!(
                "{word}: {detail} ({} report(s), {} declared lost)",
                reports.len(),
                lost.len()
            ))),
            ..Record::new(Kind::Resolve, Outcome::Succeeded)
        };
        blocking(&self.history, move |h| h.append(rec)).await?;
        tracing::info!(vault, decision = word, %detail, "commit resolved");
        let vault = match self.vaults.describe(vault).await {
            Ok(v) => Some(v),
            // Discarding the only share of a vault (an unfinished keygen) leaves nothing.
            Err(s) if s.code() == tonic::Code::NotFound => None,
            Err(s) => return Err(s),
        };
        Ok(ResolvePendingResponse {
            vault,
            decision: word.into(),
            detail,
        })
    }

    /// This party's public record of a vault, its endorsement and its signed commit report.
    /// A party caller must be a member of the vault (as this party's record says); a party
    /// that holds nothing of it answers anyone with a report that says so.
    pub async fn vault_record(
        &self,
        caller: &Caller,
        req: VaultRecordRequest,
    ) -> Result<VaultRecordResponse, Status> {
        let requester = if caller.identity.role == cosigner_pki::Role::Party {
            Some(self.authenticate(GET_RECORD, &req.body, req.auth.as_ref())?)
        } else {
            None
        };
        let body = VaultRecordBody::decode(req.body.as_slice())
            .map_err(|e| invalid("body", format!("not a VaultRecordBody ({e})")))?;
        let vault = body.vault_id.as_str();
        check_vault_id(vault).map_err(|e| invalid("vault_id", e))?;
        // A ceremony in progress here would make the report stale at once. (Only checked,
        // not held: a caller asking in a loop must not keep ceremonies from starting.)
        if self
            .changing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(vault)
        {
            return Err(Status::unavailable(format!(
                "a keygen or reshare of vault {vault:?} is running here; ask again when it has ended"
            )));
        }
        let about = match body.about.len() {
            0 => None,
            32 => body.about.as_slice().try_into().ok(),
            n => return Err(invalid("about", format!("{n} bytes; 32 or none"))),
        };
        let keys = self.me.keys();
        let view = match self.vaults.view(vault).await {
            Ok(v) => v,
            // Holding nothing is an answer too: a keygen or reshare that never reached this
            // party's commit must not wait for its report forever.
            Err(s) if s.code() == tonic::Code::NotFound => {
                let commit = self.vaults.commit_state(vault).await?;
                let report = Report::answer(
                    &keys,
                    vault,
                    commit.as_ref(),
                    Holding::default(),
                    about,
                    now_ms(),
                );
                return Ok(VaultRecordResponse {
                    party_id: keys.party_id().to_vec(),
                    record: Vec::new(),
                    endorsement: None,
                    commit_report: report.encode(),
                    state: "none".into(),
                    epoch: 0,
                });
            }
            Err(s) => return Err(s),
        };
        let record = view
            .record
            .ok_or_else(|| Status::not_found(format!("no vault {vault:?} here")))?;
        if let Some(r) = requester
            && record.member(&r).is_none()
        {
            return Err(Status::permission_denied(format!(
                "party {} is not in the committee of vault {vault:?}",
                short(&r)
            )));
        }
        let active = view.state == crate::vaults::State::Active;
        let epoch = match view.state {
            crate::vaults::State::Retired(e) => e,
            _ => record.epoch(),
        };
        let report = Report::answer(
            &keys,
            vault,
            view.commit.as_ref(),
            Holding {
                current_epoch: view.slots.current,
                pending_epoch: view.slots.pending,
            },
            about,
            now_ms(),
        );
        Ok(VaultRecordResponse {
            party_id: keys.party_id().to_vec(),
            record: record.encode(),
            // Only a record in use is endorsed.
            endorsement: active.then(|| roster::endorse(&keys, &record)),
            commit_report: report.encode(),
            state: view.state.as_str().to_string(),
            epoch,
        })
    }

    /// Drops previous-epoch shares whose commit was certified more than
    /// `ceremonies.drop_previous_after_secs` ago: the certificate shows every new party holds
    /// the new epoch, so the old share only adds risk (a daemon never chosen as a signer,
    /// or a retired dealer, would otherwise keep it for ever). Each drop is recorded.
    pub async fn drop_stale_previous(&self) {
        let Some(limit) = self.settings.drop_previous_after else {
            return;
        };
        let ids = match self.vaults.ids().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e.message(), "timed drop of previous shares: cannot list the vaults");
                return;
            }
        };
        for vault in ids {
            let Ok(slots) = self.vaults.slots(&vault).await else {
                continue;
            };
            let Some(previous) = slots.previous else {
                continue;
            };
            let Ok(Some(state)) = self.vaults.commit_state(&vault).await else {
                continue;
            };
            let certified = matches!(state.phase, Phase::Committed | Phase::Retired)
                && state.target.certificate(&state.received).is_some()
                && previous < state.target.epoch
                && slots.pending.is_none();
            let age = now_ms().saturating_sub(state.updated_at_ms);
            if !certified || age < limit.as_millis() as i64 {
                continue;
            }
            // Not while a keygen or reshare of the vault runs here.
            let Ok(_changing) = self.exclusive(&vault) else {
                continue;
            };
            if let Err(e) = self.vaults.drop_previous(&vault).await {
                tracing::warn!(vault, error = %e.message(), "could not drop the previous share");
                continue;
            }
            let note = format!(
                "dropped {} s after the certified commit of epoch {} (ceremonies.drop_previous_after_secs)",
                age / 1000,
                state.target.epoch
            );
            let rec = drop_record(&vault, previous, "", Some(note));
            if let Err(e) = blocking(&self.history, move |h| h.append(rec)).await {
                tracing::error!(error = %e.message(), "could not record dropping the previous share");
            }
            tracing::info!(
                vault,
                dropped = previous,
                "previous share dropped after the configured time"
            );
        }
    }

    pub async fn drop_previous(&self, caller: &Caller, vault: &str) -> Result<u64, Status> {
        check_vault_id(vault).map_err(|e| invalid("vault_id", e))?;
        let slots = self.vaults.slots(vault).await?;
        let Some(previous) = slots.previous else {
            return Err(Status::failed_precondition(format!(
                "vault {vault:?} has no previous share here"
            )));
        };
        self.vaults.drop_previous(vault).await?;
        let rec = drop_record(vault, previous, &caller.uri, None);
        blocking(&self.history, move |h| h.append(rec)).await?;
        Ok(previous)
    }
}

/// The history entry for a dropped previous share (`note`: why, if not asked by a caller).
fn drop_record(vault: &str, previous: u64, tls_identity: &str, note: Option<String>) -> Record {
    Record {
        vault_id: vault.to_string(),
        epoch: previous,
        tls_identity: tls_identity.to_string(),
        started_at_ms: now_ms(),
        ended_at_ms: now_ms(),
        result: note.map(ResultRecord::Error),
        ..Record::new(Kind::DropPrevious, Outcome::Succeeded)
    }
}

/// The history's one-line view of a payload: what it moves of the asset of its first
/// transfer (change excluded), which the spending aggregates add up. A payload moving two
/// assets at once (an Ethereum transaction with both a value and an ERC-20 call) records
/// the first only; the policy saw both in `totals`.
pub(crate) fn summary(d: &cosigner_policy::Decoded) -> Option<Summary> {
    let moved: Vec<_> = d.transfers.iter().filter(|t| !t.is_change).collect();
    let first = moved.first();
    let asset = first.map(|t| t.asset.clone()).unwrap_or_default();
    let same: Vec<_> = moved.iter().filter(|t| t.asset == asset).collect();
    // One transfer keeps its exact string; several are summed saturating at u128::MAX,
    // as the history's aggregates do (too much counts as too much, never as nothing).
    let amount = match same.as_slice() {
        [one] => one.amount.clone(),
        many => many
            .iter()
            .fold(0u128, |acc, t| acc.saturating_add(input::parse(&t.amount)))
            .to_string(),
    };
    let recipient = match same.as_slice() {
        [] => String::new(),
        [one] => one.recipient.clone(),
        [one, rest @ ..] => format!("{} (+{} more)", one.recipient, rest.len()),
    };
    Some(Summary {
        chain: d.chain.clone(),
        network: d.network.clone(),
        recipient,
        asset,
        amount: if first.is_some() {
            amount
        } else {
            String::new()
        },
    })
}
