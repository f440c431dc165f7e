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
//! Keygen and reshare end atomically: each new party seals its share as *pending*, says
//! READY (signed, with the public key), and promotes pending to current only once every
//! new party has said READY; otherwise it discards pending and keeps what it had.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cosigner_api::v1::relay_client::RelayClient;
use cosigner_api::v1::*;
use cosigner_history::{
    CommitteeRecord, History, Kind, Outcome, Record, ResultRecord, SignatureRecord, Summary,
};
use cosigner_policy::input::{self, Facts, Request, VaultFacts, WindowFacts};
use cosigner_policy::{Decision as PolicyVerdict, Verdict};

use crate::metrics::Metrics;
use cosigner_relay::driver::engine_nonce;
use cosigner_relay::record::{committee_from_api, committee_to_api};
use cosigner_relay::{DriveError, Driver, Held, Hello, Member, SessionSpec, VaultRecord};
use cosigner_seal::{Slot, check_vault_id};
use cosigner_tss::{
    Committee, DerivationPath, Keygen, KeygenParams, PartyId, Reshare, ReshareOutput,
    ReshareParams, Sign, SignParams, TssError,
};
use prost::Message as _;
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::auth::Caller;
use crate::config::CeremonySettings;
use crate::history_rpc::blocking;
use crate::me::Me;
use crate::now_ms;
use crate::policy::{self, Policy};
use crate::vaults::{Vaults, slots_to_api};

const KEYGEN: &str = "/cosigner.v1.Cosigner/Keygen";
const SIGN: &str = "/cosigner.v1.Cosigner/Sign";
pub(crate) const RESHARE: &str = "/cosigner.v1.Cosigner/Reshare";
/// How long a used relay session id is remembered (relay sessions live at most an hour).
const SESSION_MEMORY: Duration = Duration::from_secs(2 * 3600);

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

fn committee_record(c: &Committee) -> CommitteeRecord {
    CommitteeRecord {
        threshold: u32::from(c.threshold()),
        parties: c.parties().iter().map(|p| p.0.to_vec()).collect(),
    }
}

/// How a ceremony failed, as a status and a history outcome.
fn drive_status(e: &DriveError) -> (Status, Outcome) {
    let msg = e.to_string();
    match e {
        DriveError::Timeout { .. } => (Status::deadline_exceeded(msg), Outcome::Aborted),
        DriveError::Aborted { .. }
        | DriveError::Envelope(_)
        | DriveError::Engine(_)
        | DriveError::Ready { .. } => (Status::aborted(msg), Outcome::Aborted),
        DriveError::EpochMismatch { .. } => (Status::failed_precondition(msg), Outcome::Failed),
        DriveError::Relay(_) => (Status::unavailable(msg), Outcome::Failed),
        DriveError::Panicked(_) => (Status::internal(msg), Outcome::Failed),
    }
}

fn tss_status(e: TssError) -> Status {
    Status::invalid_argument(format!("ceremony parameters: {e}"))
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

/// Session ids in the order they were used, forgotten after `SESSION_MEMORY`.
#[derive(Default)]
struct UsedSessions {
    set: HashSet<Vec<u8>>,
    order: std::collections::VecDeque<(std::time::Instant, Vec<u8>)>,
}

impl UsedSessions {
    /// False if `id` was used within `SESSION_MEMORY`.
    fn insert(&mut self, id: &[u8]) -> bool {
        let now = std::time::Instant::now();
        while let Some((at, old)) = self.order.front() {
            if now.duration_since(*at) < SESSION_MEMORY {
                break;
            }
            self.set.remove(old);
            self.order.pop_front();
        }
        if !self.set.insert(id.to_vec()) {
            return false;
        }
        self.order.push_back((now, id.to_vec()));
        true
    }
}

/// A ceremony admitted by the gate: holds its slot until dropped. (Its session id stays
/// used: a session runs once per daemon lifetime.)
struct Begun {
    session: Vec<u8>,
    record: Record,
    /// When the gate admitted it: the start of the duration metric.
    started: std::time::Instant,
    _permit: OwnedSemaphorePermit,
}

pub struct Ceremonies {
    vaults: Arc<Vaults>,
    history: Arc<History>,
    policy: Arc<Policy>,
    settings: CeremonySettings,
    me: Arc<Me>,
    relays: RelayConnector,
    slots: Arc<Semaphore>,
    /// Relay session ids used here, with when, so none runs twice. Forgotten after
    /// `SESSION_MEMORY` (longer than any relay session lives; the nonce check still refuses
    /// a replayed request after that).
    sessions: Mutex<UsedSessions>,
    /// Makes "nonce unseen, then record it" one step.
    nonce_gate: tokio::sync::Mutex<()>,
    kill_at: Option<String>,
    /// Vaults with a keygen or reshare in progress here: at most one at a time per vault
    /// (two would fight over the same pending slot).
    changing: Arc<Mutex<HashSet<String>>>,
    metrics: Arc<Metrics>,
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
            slots: Arc::new(Semaphore::new(settings.max_concurrent)),
            settings,
            me,
            relays: RelayConnector {
                own: own_relay,
                tls,
                channels: Mutex::new(HashMap::new()),
            },
            sessions: Mutex::new(UsedSessions::default()),
            nonce_gate: tokio::sync::Mutex::new(()),
            kill_at: std::env::var("COSIGNERD_TEST_KILL_AT").ok(),
            changing: Arc::new(Mutex::new(HashSet::new())),
            metrics,
        }
    }

    fn me(&self) -> [u8; 32] {
        self.me.party_id()
    }

    /// The vault's history windows (1h, 24h, 7d) and last reshare, for the policy.
    async fn windows(
        &self,
        vault: &str,
    ) -> Result<(Vec<(&'static str, WindowFacts)>, Option<i64>), Status> {
        let v = vault.to_string();
        let now = now_ms();
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
        Ok((windows, a.last_reshare_ms))
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
        self.settings
            .max_concurrent
            .saturating_sub(self.slots.available_permits())
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
        let skew = self.settings.max_clock_skew.as_millis() as i64;
        let requester = cosigner_relay::request::check(auth, method, body, now_ms(), skew)
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

    /// The rest of the gate: session id, a free slot, a fresh nonce; records STARTED.
    async fn begin(
        &self,
        requester: [u8; 32],
        auth: Option<&RequestAuth>,
        caller: &Caller,
        relay: &RelayRef,
        mut record: Record,
        decision: &PolicyVerdict,
    ) -> Result<Begun, Status> {
        record.policy = Some(policy::record(decision));
        self.metrics.decision(
            record.kind.as_str(),
            match decision.verdict {
                Verdict::Allow => "allow",
                Verdict::Deny(_) => "deny",
                Verdict::NeedsApproval(_) => "needs_approval",
            },
        );
        if !(16..=64).contains(&relay.session_id.len()) {
            return Err(invalid(
                "relay.session_id",
                format!("{} bytes; 16 to 64 are required", relay.session_id.len()),
            ));
        }
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} ceremonies are already running (ceremonies.max_concurrent)",
                self.settings.max_concurrent
            ))
        })?;
        let nonce = auth.map(|a| a.nonce.clone()).unwrap_or_default();
        let _gate = self.nonce_gate.lock().await;
        {
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            if !sessions.insert(&relay.session_id) {
                return Err(Status::already_exists(format!(
                    "session {} already ran or is running on this daemon; a ceremony uses a fresh session",
                    short(&relay.session_id)
                )));
            }
        }
        let (n, r) = (nonce.clone(), requester.to_vec());
        if let Some(seq) = blocking(&self.history, move |h| h.nonce_seen(&r, &n)).await? {
            return Err(Status::already_exists(format!(
                "this request's nonce was already used (history entry {seq}): a replay"
            )));
        }
        record.requester = requester.to_vec();
        record.nonce = nonce;
        record.tls_identity = caller.uri.clone();
        record.session_id = relay.session_id.clone();
        record.started_at_ms = now_ms();
        if decision.verdict != Verdict::Allow {
            // Refused by the policy: recorded (with the nonce, so it cannot be replayed)
            // and answered with the reasons.
            let reasons = decision.reasons().join("; ");
            let denied = Record {
                outcome: Outcome::Denied,
                ended_at_ms: now_ms(),
                result: Some(ResultRecord::Error(reasons.clone())),
                ..record
            };
            let kind = denied.kind.as_str();
            let receipt = blocking(&self.history, move |h| h.append(denied)).await?;
            self.metrics.ceremony(kind, "denied", None);
            tracing::info!(seq = receipt.seq, %reasons, "request denied by the policy");
            return Err(Status::permission_denied(format!(
                "denied by the policy (history entry {}): {reasons}",
                receipt.seq
            )));
        }
        let started = Record {
            outcome: Outcome::Started,
            ..record.clone()
        };
        blocking(&self.history, move |h| h.append(started)).await?;
        Ok(Begun {
            session: relay.session_id.clone(),
            record,
            started: std::time::Instant::now(),
            _permit: permit,
        })
    }

    /// Records the outcome; only then may the answer leave.
    async fn finish(
        &self,
        begun: &Begun,
        outcome: Outcome,
        result: Option<ResultRecord>,
        epoch: Option<u64>,
    ) -> Result<u64, Status> {
        let mut rec = begun.record.clone();
        rec.outcome = outcome;
        rec.ended_at_ms = now_ms();
        rec.result = result;
        if let Some(e) = epoch {
            rec.epoch = e;
        }
        let receipt = blocking(&self.history, move |h| h.append(rec)).await?;
        self.metrics.ceremony(
            begun.record.kind.as_str(),
            outcome.as_str(),
            Some(begun.started.elapsed()),
        );
        Ok(receipt.seq)
    }

    async fn fail(&self, begun: &Begun, status: Status, outcome: Outcome) -> Status {
        tracing::warn!(
            kind = begun.record.kind.as_str(),
            vault = %begun.record.vault_id,
            session = %short(&begun.session),
            error = %status.message(),
            "ceremony failed"
        );
        match self
            .finish(
                begun,
                outcome,
                Some(ResultRecord::Error(status.message().to_string())),
                None,
            )
            .await
        {
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

    fn fault_point(&self, kind: Kind, point: &str) {
        if let Some(f) = self.fault_hook(kind) {
            f(point);
        }
    }

    async fn driver(
        &self,
        kind: Kind,
        relay: &RelayRef,
        participants: Vec<Member>,
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
                session_id: relay.session_id.clone(),
                participants,
                round_timeout: self.settings.round_timeout,
                fault: self.fault_hook(kind),
            },
        )
        .await
    }

    // ---- keygen ----

    pub async fn keygen(
        &self,
        caller: &Caller,
        req: KeygenRequest,
    ) -> Result<KeygenResponse, Status> {
        let requester = self.authenticate(KEYGEN, &req.body, req.auth.as_ref())?;
        let body = KeygenBody::decode(req.body.as_slice())
            .map_err(|e| invalid("body", format!("not a KeygenBody ({e})")))?;
        check_vault_id(&body.vault_id).map_err(|e| invalid("vault_id", e))?;
        let _changing = self.exclusive(&body.vault_id)?;
        if body.scheme != Scheme::EcdsaSecp256k1 as i32 {
            return Err(invalid(
                "scheme",
                "only SCHEME_ECDSA_SECP256K1 exists in this build",
            ));
        }
        let api_committee = body
            .committee
            .as_ref()
            .ok_or_else(|| invalid("committee", "missing"))?;
        let (committee, members) =
            committee_from_api(api_committee).map_err(|e| invalid("committee", e))?;
        self.check_member(&members)?;
        let slots = self.vaults.slots(&body.vault_id).await?;
        if slots.current.is_some() || slots.pending.is_some() {
            return Err(Status::already_exists(format!(
                "this daemon already holds a share of vault {:?}",
                body.vault_id
            )));
        }
        let relay = body
            .relay
            .clone()
            .ok_or_else(|| invalid("relay", "missing"))?;
        let decision = self.policy.decide(input::document(&Facts {
            request: Request {
                kind: "keygen".into(),
                refresh: false,
                scheduled: false,
                vault_id: body.vault_id.clone(),
                epoch: 0,
                derivation_path: String::new(),
                parties: Vec::new(),
                committee: Some((u32::from(committee.threshold()), input_members(&members))),
            },
            requester_id: requester,
            requester_name: members
                .iter()
                .find(|m| m.id == requester)
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            tls_identity: caller.uri.clone(),
            vault: None,
            payload: None,
            windows: Vec::new(),
            last_reshare_at_ms: None,
            now_ms: now_ms(),
        }));
        let begun = self
            .begin(
                requester,
                req.auth.as_ref(),
                caller,
                &relay,
                Record {
                    vault_id: body.vault_id.clone(),
                    committee: Some(committee_record(&committee)),
                    ..Record::new(Kind::Keygen, Outcome::Started)
                },
                &decision,
            )
            .await?;
        let vault_id = body.vault_id.clone();
        let run = async {
            let mut d = self.driver(Kind::Keygen, &relay, members.clone()).await?;
            d.hello(
                Hello {
                    epoch: None,
                    pending: None,
                },
                &|_| None,
            )
            .await?;
            let keygen = Keygen::new(
                KeygenParams {
                    vault_id: vault_id.clone(),
                    committee: committee.clone(),
                    nonce: engine_nonce(&relay.session_id),
                },
                PartyId(self.me()),
            )?;
            let share = d.run(keygen).await?;
            Ok::<_, DriveError>((d, share))
        };
        let (mut d, share) = match run.await {
            Ok(v) => v,
            Err(e) => {
                let (s, o) = drive_status(&e);
                return Err(self.fail(&begun, s, o).await);
            }
        };
        let record = match VaultRecord::new(share.public().clone(), members, now_ms(), 0)
            .and_then(|r| Held::new(r, share))
        {
            Ok(h) => h,
            Err(e) => {
                d.abort(&format!(
                    "{} could not record the vault: {e}",
                    short(&self.me())
                ))
                .await;
                return Err(self
                    .fail(&begun, Status::internal(e.to_string()), Outcome::Failed)
                    .await);
            }
        };
        let parties: Vec<[u8; 32]> = committee.parties().iter().map(|p| p.0).collect();
        let vault = self.commit(&begun, &mut d, record, &parties).await?;
        let seq = self
            .finish(
                &begun,
                Outcome::Succeeded,
                Some(ResultRecord::PublicKey(vault.public_key.clone())),
                Some(0),
            )
            .await?;
        tracing::info!(vault = %vault_id, seq, "keygen succeeded");
        Ok(KeygenResponse {
            vault: Some(vault),
            history_seq: seq,
        })
    }

    /// The atomic end of keygen and reshare: seal pending, exchange READY, promote. On any
    /// failure the pending share is discarded and the current one (if any) stays.
    async fn commit(
        &self,
        begun: &Begun,
        d: &mut Driver,
        held: Held,
        new_parties: &[[u8; 32]],
    ) -> Result<Vault, Status> {
        let vault_id = held.record.vault_id().to_string();
        let epoch = held.record.epoch();
        let public_key = held.record.public.public_key.0.to_vec();
        if let Err(s) = self.vaults.seal_pending(&held).await {
            d.abort(&format!(
                "{} could not seal its new share",
                short(&self.me())
            ))
            .await;
            return Err(self.fail(begun, s, Outcome::Failed).await);
        }
        if let Err(e) = d
            .ready(new_parties, Some((&public_key, epoch)), &public_key, epoch)
            .await
        {
            let (s, o) = drive_status(&e);
            if let Err(x) = self.vaults.discard_pending(&vault_id).await {
                tracing::error!(vault = %vault_id, error = %x.message(), "could not discard the pending share");
            }
            return Err(self.fail(begun, s, o).await);
        }
        self.fault_point(begun.record.kind, "promote");
        if let Err(s) = self.vaults.promote(&vault_id).await {
            return Err(self.fail(begun, s, Outcome::Failed).await);
        }
        let slots = self.vaults.slots(&vault_id).await?;
        Ok(held.record.to_api(Some(slots_to_api(&slots))))
    }

    fn check_member(&self, members: &[Member]) -> Result<(), Status> {
        let me = self.me();
        match members.iter().find(|m| m.id == me) {
            None => Err(Status::failed_precondition(format!(
                "this daemon (party {}) is not in the committee",
                short(&me)
            ))),
            Some(m) if m.encryption_key != self.me.encryption_public() => {
                Err(Status::failed_precondition(format!(
                    "the committee lists another encryption key for this daemon (party {}); take it from `cosignerctl status`",
                    short(&me)
                )))
            }
            Some(_) => Ok(()),
        }
    }

    // ---- sign ----

    pub async fn sign(&self, caller: &Caller, req: SignRequest) -> Result<SignResponse, Status> {
        let requester = self.authenticate(SIGN, &req.body, req.auth.as_ref())?;
        let body = SignBody::decode(req.body.as_slice())
            .map_err(|e| invalid("body", format!("not a SignBody ({e})")))?;
        check_vault_id(&body.vault_id).map_err(|e| invalid("vault_id", e))?;
        let path = DerivationPath::parse(&body.derivation_path)
            .map_err(|e| invalid("derivation_path", e))?;
        let signers = party_ids("signers", &body.signers)?;
        let relay = body
            .relay
            .clone()
            .ok_or_else(|| invalid("relay", "missing"))?;
        let held = self.vaults.current(&body.vault_id).await?.ok_or_else(|| {
            Status::not_found(format!(
                "this daemon holds no share of vault {:?}",
                body.vault_id
            ))
        })?;
        let decoded = decode_payload(body.payload.as_ref(), Some(&vault_key(&held.record)))?;
        let computed: Vec<Vec<u8>> = decoded.hashes.iter().map(|h| h.to_vec()).collect();
        if !body.expected_hashes.is_empty() && body.expected_hashes != computed {
            return Err(Status::failed_precondition(
                "expected_hashes differ from the hashes this daemon computed from the payload; refusing to sign",
            ));
        }
        let message_hash = decoded.single_hash(&path.0).map_err(decode_status)?;
        let epoch = held.record.epoch();
        if body.epoch != epoch {
            return Err(Status::failed_precondition(format!(
                "the request is for epoch {}, this daemon holds epoch {epoch} of vault {:?}: {}",
                body.epoch,
                body.vault_id,
                if body.epoch < epoch {
                    "the requester missed a reshare and must be reshared in (its old share is useless now)"
                } else {
                    "this daemon missed the end of a reshare: if it holds a pending share of that epoch, an operator runs `cosignerctl vault resolve --promote`"
                }
            )));
        }
        if held.record.member(&requester).is_none() {
            return Err(Status::permission_denied(format!(
                "party {} is not in the committee of vault {:?}",
                short(&requester),
                body.vault_id
            )));
        }
        let mut members = Vec::with_capacity(signers.len());
        for s in &signers {
            members.push(held.record.member(s).cloned().ok_or_else(|| {
                invalid(
                    "signers",
                    format!("{} is not in the vault's committee", short(s)),
                )
            })?);
        }
        let params = SignParams {
            signers: signers.iter().map(|s| PartyId(*s)).collect(),
            message_hash,
            path,
            nonce: engine_nonce(&relay.session_id),
        };
        let ceremony = Sign::new(&held.share, params).map_err(tss_status)?;
        let facts_windows = self.windows(&body.vault_id).await?;
        let facts = Facts {
            request: Request {
                kind: "sign".into(),
                refresh: false,
                scheduled: false,
                vault_id: body.vault_id.clone(),
                epoch,
                derivation_path: body.derivation_path.clone(),
                parties: signers
                    .iter()
                    .map(|s| cosigner_relay::keys::hex(s))
                    .collect(),
                committee: None,
            },
            requester_id: requester,
            requester_name: held
                .record
                .member(&requester)
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            tls_identity: caller.uri.clone(),
            vault: Some(vault_facts(&held.record)),
            payload: Some(&decoded),
            windows: facts_windows.0,
            last_reshare_at_ms: facts_windows.1,
            now_ms: now_ms(),
        };
        let decision = self.policy.decide(input::document(&facts));
        let expected_key = held
            .record
            .public
            .derive(&ceremony_path(&body.derivation_path)?)
            .map_err(tss_status)?;
        let begun = self
            .begin(
                requester,
                req.auth.as_ref(),
                caller,
                &relay,
                Record {
                    vault_id: body.vault_id.clone(),
                    epoch,
                    committee: Some(committee_record(&held.record.public.committee)),
                    payload_digest: payload_digest(body.payload.as_ref()),
                    summary: summary(&decoded),
                    ..Record::new(Kind::Sign, Outcome::Started)
                },
                &decision,
            )
            .await?;
        let pending = self.vaults.slots(&body.vault_id).await?.pending;
        drop(held); // the engine holds its own copy of the secret state from here
        let run = async {
            let mut d = self.driver(Kind::Sign, &relay, members).await?;
            d.hello(
                Hello {
                    epoch: Some(epoch),
                    pending,
                },
                &|_| Some(epoch),
            )
            .await?;
            d.run(ceremony).await
        };
        let sig = match run.await {
            Ok(s) => s,
            Err(e) => {
                let (s, o) = drive_status(&e);
                return Err(self.fail(&begun, s, o).await);
            }
        };
        // Verified again here, independently of the engine's own check, before it leaves.
        if sig.public_key != expected_key
            || !cosigner_tss::verify_ecdsa(&expected_key, &message_hash, &sig.r, &sig.s)
        {
            return Err(self
                .fail(
                    &begun,
                    Status::internal(
                        "the ceremony's signature does not verify under the vault key",
                    ),
                    Outcome::Failed,
                )
                .await);
        }
        let seq = self
            .finish(
                &begun,
                Outcome::Succeeded,
                Some(ResultRecord::Signatures(vec![SignatureRecord {
                    hash: message_hash.to_vec(),
                    r: sig.r.to_vec(),
                    s: sig.s.to_vec(),
                    recovery_id: u32::from(sig.recovery_id),
                }])),
                None,
            )
            .await?;
        self.drop_previous_after_first_signature(&body.vault_id, epoch, caller)
            .await;
        Ok(SignResponse {
            signatures: vec![Signature {
                hash: message_hash.to_vec(),
                r: sig.r.to_vec(),
                s: sig.s.to_vec(),
                recovery_id: u32::from(sig.recovery_id),
                der: cosigner_tss::der_signature(&sig.r, &sig.s),
            }],
            public_key: expected_key.0.to_vec(),
            decoded: Some(decoded_to_api(&decoded)),
            history_seq: seq,
        })
    }

    /// The previous epoch's share is kept until the new epoch has produced a verified
    /// signature: now it has.
    async fn drop_previous_after_first_signature(&self, vault: &str, epoch: u64, caller: &Caller) {
        let Ok(slots) = self.vaults.slots(vault).await else {
            return;
        };
        let Some(previous) = slots.previous else {
            return;
        };
        match self.vaults.drop_previous(vault).await {
            Ok(()) => {
                let rec = Record {
                    vault_id: vault.to_string(),
                    epoch: previous,
                    tls_identity: caller.uri.clone(),
                    started_at_ms: now_ms(),
                    ended_at_ms: now_ms(),
                    ..Record::new(Kind::DropPrevious, Outcome::Succeeded)
                };
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
        let requester = self.authenticate(RESHARE, &req.body, req.auth.as_ref())?;
        let body = ReshareBody::decode(req.body.as_slice())
            .map_err(|e| invalid("body", format!("not a ReshareBody ({e})")))?;
        check_vault_id(&body.vault_id).map_err(|e| invalid("vault_id", e))?;
        let _changing = self.exclusive(&body.vault_id)?;
        let old = VaultRecord::decode(&body.old_vault).map_err(|e| invalid("old_vault", e))?;
        if old.vault_id() != body.vault_id || old.epoch() != body.old_epoch {
            return Err(invalid(
                "old_vault",
                format!(
                    "describes vault {:?} epoch {}, the request vault {:?} epoch {}",
                    old.vault_id(),
                    old.epoch(),
                    body.vault_id,
                    body.old_epoch
                ),
            ));
        }
        let dealers = party_ids("dealers", &body.dealers)?;
        let api_new = body
            .new_committee
            .as_ref()
            .ok_or_else(|| invalid("new_committee", "missing"))?;
        let (new_committee, new_members) =
            committee_from_api(api_new).map_err(|e| invalid("new_committee", e))?;
        let relay = body
            .relay
            .clone()
            .ok_or_else(|| invalid("relay", "missing"))?;
        let me = self.me();
        let held = self.vaults.current(&body.vault_id).await?;
        if let Some(h) = &held
            && h.record.public != old.public
        {
            return Err(Status::failed_precondition(format!(
                "the request's old vault record (epoch {}) differs from this daemon's (epoch {}): {}",
                old.epoch(),
                h.record.epoch(),
                if old.epoch() > h.record.epoch() {
                    "this daemon missed a reshare; if it holds a pending share of that epoch, run `cosignerctl vault resolve --promote`"
                } else {
                    "the requester's record is stale"
                }
            )));
        }
        let is_dealer = dealers.contains(&me);
        if is_dealer && held.is_none() {
            return Err(Status::failed_precondition(format!(
                "this daemon is named as a dealer but holds no share of vault {:?}",
                body.vault_id
            )));
        }
        if new_committee.contains(&PartyId(me)) {
            self.check_member(&new_members)?;
        } else if !is_dealer {
            return Err(Status::failed_precondition(format!(
                "this daemon (party {}) is neither a dealer nor in the new committee",
                short(&me)
            )));
        }
        if old.member(&requester).is_none() && !new_members.iter().any(|m| m.id == requester) {
            return Err(Status::permission_denied(format!(
                "party {} is in neither the old nor the new committee of vault {:?}",
                short(&requester),
                body.vault_id
            )));
        }
        // Everyone who takes part: the dealers (from the old record) and the new committee.
        let mut participants: Vec<Member> = new_members.clone();
        for d in &dealers {
            let m = old.member(d).ok_or_else(|| {
                invalid(
                    "dealers",
                    format!("{} is not in the old committee", short(d)),
                )
            })?;
            match participants.iter().find(|p| p.id == *d) {
                Some(p) if p.encryption_key != m.encryption_key => {
                    return Err(invalid(
                        "new_committee",
                        format!(
                            "{} has another encryption key than in the old committee",
                            short(d)
                        ),
                    ));
                }
                Some(_) => {}
                None => participants.push(m.clone()),
            }
        }
        let params = ReshareParams {
            old: old.public.clone(),
            dealers: dealers.iter().map(|d| PartyId(*d)).collect(),
            new_committee: new_committee.clone(),
            nonce: engine_nonce(&relay.session_id),
        };
        let ceremony = Reshare::new(params, PartyId(me), held.as_ref().map(|h| &h.share))
            .map_err(tss_status)?;
        let my_epoch = held.as_ref().map(|h| h.record.epoch());
        drop(held);
        let (windows, last_reshare_at_ms) = self.windows(&body.vault_id).await?;
        let decision = self.policy.decide(input::document(&Facts {
            request: Request {
                kind: "reshare".into(),
                refresh: new_committee == old.public.committee && new_members == old.members,
                scheduled: body.scheduled,
                vault_id: body.vault_id.clone(),
                epoch: old.epoch(),
                derivation_path: String::new(),
                parties: dealers
                    .iter()
                    .map(|d| cosigner_relay::keys::hex(d))
                    .collect(),
                committee: Some((
                    u32::from(new_committee.threshold()),
                    input_members(&new_members),
                )),
            },
            requester_id: requester,
            requester_name: old
                .member(&requester)
                .or_else(|| new_members.iter().find(|m| m.id == requester))
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            tls_identity: caller.uri.clone(),
            vault: Some(vault_facts(&old)),
            payload: None,
            windows,
            last_reshare_at_ms,
            now_ms: now_ms(),
        }));
        let begun = self
            .begin(
                requester,
                req.auth.as_ref(),
                caller,
                &relay,
                Record {
                    vault_id: body.vault_id.clone(),
                    epoch: old.epoch(),
                    committee: Some(committee_record(&new_committee)),
                    ..Record::new(Kind::Reshare, Outcome::Started)
                },
                &decision,
            )
            .await?;
        let pending = self.vaults.slots(&body.vault_id).await?.pending;
        let old_epoch = old.epoch();
        let dealer_set: HashSet<[u8; 32]> = dealers.iter().copied().collect();
        let run = async {
            let mut d = self.driver(Kind::Reshare, &relay, participants).await?;
            d.hello(
                Hello {
                    epoch: my_epoch,
                    pending,
                },
                &|id| dealer_set.contains(id).then_some(old_epoch),
            )
            .await?;
            let out = d.run(ceremony).await?;
            Ok::<_, DriveError>((d, out))
        };
        let (mut d, out) = match run.await {
            Ok(v) => v,
            Err(e) => {
                let (s, o) = drive_status(&e);
                return Err(self.fail(&begun, s, o).await);
            }
        };
        let new_parties: Vec<[u8; 32]> = new_committee.parties().iter().map(|p| p.0).collect();
        let new_epoch = old_epoch + 1;
        let public_key = old.public.public_key.0.to_vec();
        let vault = match out {
            ReshareOutput::NewShare(share) => {
                let held = match VaultRecord::new(
                    share.public().clone(),
                    new_members,
                    old.created_at_ms,
                    now_ms(),
                )
                .and_then(|r| Held::new(r, *share))
                {
                    Ok(h) => h,
                    Err(e) => {
                        d.abort(&format!("{} could not record the vault: {e}", short(&me)))
                            .await;
                        return Err(self
                            .fail(&begun, Status::internal(e.to_string()), Outcome::Failed)
                            .await);
                    }
                };
                self.commit(&begun, &mut d, held, &new_parties).await?
            }
            ReshareOutput::Dealt => {
                if let Err(e) = d.ready(&new_parties, None, &public_key, new_epoch).await {
                    let (s, o) = drive_status(&e);
                    return Err(self.fail(&begun, s, o).await);
                }
                let mut v = old.to_api(None);
                v.committee = Some(committee_to_api(&new_committee, &new_members_of(api_new)?));
                v.epoch = new_epoch;
                v
            }
        };
        let seq = self
            .finish(
                &begun,
                Outcome::Succeeded,
                Some(ResultRecord::PublicKey(public_key)),
                Some(new_epoch),
            )
            .await?;
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
        let (doc, decoded) = match kind {
            CeremonyKind::Sign => {
                let body = SignBody::decode(req.body.as_slice())
                    .map_err(|e| invalid("body", format!("not a SignBody ({e})")))?;
                check_vault_id(&body.vault_id).map_err(|e| invalid("vault_id", e))?;
                let held = self.vaults.current(&body.vault_id).await?.ok_or_else(|| {
                    Status::not_found(format!(
                        "this daemon holds no share of vault {:?}",
                        body.vault_id
                    ))
                })?;
                let decoded =
                    decode_payload(body.payload.as_ref(), Some(&vault_key(&held.record)))?;
                let record = held.record.clone();
                drop(held);
                let (windows, last_reshare_at_ms) = self.windows(&body.vault_id).await?;
                let doc = input::document(&Facts {
                    request: Request {
                        kind: "sign".into(),
                        refresh: false,
                        scheduled: false,
                        vault_id: body.vault_id.clone(),
                        epoch: body.epoch,
                        derivation_path: body.derivation_path.clone(),
                        parties: body
                            .signers
                            .iter()
                            .map(|s| cosigner_relay::keys::hex(s))
                            .collect(),
                        committee: None,
                    },
                    requester_id: requester,
                    requester_name: record
                        .member(&requester)
                        .map(|m| m.name.clone())
                        .unwrap_or_default(),
                    tls_identity: caller.uri.clone(),
                    vault: Some(vault_facts(&record)),
                    payload: Some(&decoded),
                    windows,
                    last_reshare_at_ms,
                    now_ms: now_ms(),
                });
                (doc, Some(decoded_to_api(&decoded)))
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
                let doc = input::document(&Facts {
                    request: Request {
                        kind: "keygen".into(),
                        refresh: false,
                        scheduled: false,
                        vault_id: body.vault_id.clone(),
                        epoch: 0,
                        derivation_path: String::new(),
                        parties: Vec::new(),
                        committee: Some((
                            u32::from(committee.threshold()),
                            input_members(&members),
                        )),
                    },
                    requester_id: requester,
                    requester_name: String::new(),
                    tls_identity: caller.uri.clone(),
                    vault: None,
                    payload: None,
                    windows: Vec::new(),
                    last_reshare_at_ms: None,
                    now_ms: now_ms(),
                });
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

    pub async fn resolve_pending(
        &self,
        caller: &Caller,
        vault: &str,
        promote: bool,
    ) -> Result<Option<Vault>, Status> {
        check_vault_id(vault).map_err(|e| invalid("vault_id", e))?;
        let _changing = self.exclusive(vault)?;
        let slots = self.vaults.slots(vault).await?;
        let Some(pending) = slots.pending else {
            return Err(Status::failed_precondition(format!(
                "vault {vault:?} has no pending share here"
            )));
        };
        // Unseal it first: never promote a file that does not open.
        self.vaults.load(vault, Slot::Pending).await?;
        if promote {
            self.vaults.promote(vault).await?;
        } else {
            self.vaults.discard_pending(vault).await?;
        }
        let rec = Record {
            vault_id: vault.to_string(),
            epoch: pending,
            tls_identity: caller.uri.clone(),
            started_at_ms: now_ms(),
            ended_at_ms: now_ms(),
            result: Some(ResultRecord::Error(
                if promote {
                    "operator promoted the pending share"
                } else {
                    "operator discarded the pending share"
                }
                .into(),
            )),
            ..Record::new(Kind::Reshare, Outcome::Succeeded)
        };
        blocking(&self.history, move |h| h.append(rec)).await?;
        match self.vaults.describe(vault).await {
            Ok(v) => Ok(Some(v)),
            // Discarding the only share of a vault (an unfinished keygen) leaves nothing.
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s),
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
        let rec = Record {
            vault_id: vault.to_string(),
            epoch: previous,
            tls_identity: caller.uri.clone(),
            started_at_ms: now_ms(),
            ended_at_ms: now_ms(),
            ..Record::new(Kind::DropPrevious, Outcome::Succeeded)
        };
        blocking(&self.history, move |h| h.append(rec)).await?;
        Ok(previous)
    }
}

fn new_members_of(c: &cosigner_api::v1::Committee) -> Result<Vec<Member>, Status> {
    committee_from_api(c)
        .map(|(_, m)| m)
        .map_err(|e| invalid("new_committee", e))
}

fn ceremony_path(p: &str) -> Result<DerivationPath, Status> {
    DerivationPath::parse(p).map_err(|e| invalid("derivation_path", e))
}

/// The vault's key as the payload decoders need it (to recognise its Bitcoin inputs and
/// change).
pub fn vault_key(r: &VaultRecord) -> cosigner_policy::VaultKey {
    cosigner_policy::VaultKey {
        public_key: r.public.public_key.0,
        chain_code: r.public.chain_code,
    }
}

/// The API payload as the policy crate reads it.
pub fn decode_payload(
    p: Option<&Payload>,
    vault: Option<&cosigner_policy::VaultKey>,
) -> Result<cosigner_policy::Decoded, Status> {
    use cosigner_api::v1::payload::Kind as K;
    use cosigner_policy::Payload as P;
    let kind = p
        .and_then(|p| p.kind.as_ref())
        .ok_or_else(|| invalid("payload", "missing (nothing to sign)"))?;
    let payload = match kind {
        K::EthereumTransaction(t) => P::Ethereum(&t.unsigned_rlp),
        K::BitcoinPsbt(b) => P::Psbt {
            psbt: &b.psbt,
            network: &b.network,
        },
        K::PersonalMessage(m) => P::PersonalMessage(&m.message),
        K::TypedData(t) => P::TypedData(&t.json),
        K::RawHash(h) => P::RawHash(h),
    };
    cosigner_policy::decode(&payload, vault).map_err(decode_status)
}

fn decode_status(e: cosigner_policy::DecodeError) -> Status {
    use cosigner_policy::DecodeError;
    match e {
        DecodeError::Invalid { .. } => Status::invalid_argument(e.to_string()),
        DecodeError::Unsupported(m) => Status::unimplemented(m),
    }
}

/// SHA-256 of the payload's encoded bytes, for the history.
fn payload_digest(p: Option<&Payload>) -> Vec<u8> {
    let bytes = p.map(|p| p.encode_to_vec()).unwrap_or_default();
    Sha256::digest(&bytes).to_vec()
}

/// The history's one-line view of a payload: what it moves of the asset of its first
/// transfer (change excluded), which the spending aggregates add up. A payload moving two
/// assets at once (an Ethereum transaction with both a value and an ERC-20 call) records
/// the first only; the policy saw both in `totals`.
fn summary(d: &cosigner_policy::Decoded) -> Option<Summary> {
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

pub fn decoded_to_api(d: &cosigner_policy::Decoded) -> DecodedPayload {
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

pub fn vault_facts(r: &VaultRecord) -> VaultFacts {
    VaultFacts {
        vault_id: r.vault_id().to_string(),
        public_key: cosigner_relay::keys::hex(&r.public.public_key.0),
        epoch: r.epoch(),
        threshold: u32::from(r.public.committee.threshold()),
        members: input_members(&r.members),
        created_at_ms: r.created_at_ms,
        last_reshare_at_ms: r.last_reshare_at_ms,
    }
}

fn input_members(m: &[Member]) -> Vec<input::Member> {
    m.iter()
        .map(|m| input::Member {
            name: m.name.clone(),
            party_id: cosigner_relay::keys::hex(&m.id),
        })
        .collect()
}
