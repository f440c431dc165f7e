//! Keygen, sign, reshare, the policy dry run, resolve and GetVaultRecord as this daemon
//! serves them.
//!
//! The pipelines are `cosigner_node::server::Server`'s (check against the own record,
//! the policy's decision, the gate, the share unsealed last, the run, the commit, the
//! record), and the gate and journal are `cosigner_node::journal::Gated` over this
//! daemon's history as the ledger ([`crate::ports`]: if a write fails, nothing runs, and
//! no answer leaves unrecorded). This file wires the ports to them and builds the answers.
//! Its own parts: the refusal records ([`Ceremonies::gated`]), the resolve's history entry
//! and drop-previous (on request, after a signature, on a timer).
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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cosigner_api::v1::relay_client::RelayClient;
use cosigner_api::v1::*;
use cosigner_history::{CommitteeRecord, History, Kind, Outcome, Record, ResultRecord, Summary};
use cosigner_node::facts::Windows;
use cosigner_node::refusals::{Refusal, RefusalLimit};
use cosigner_policy::Verdict;
use cosigner_policy::input::{self, WindowFacts};

use crate::metrics::Metrics;
use cosigner_relay::record::committee_to_api;
use cosigner_relay::roster::Roster;
use cosigner_relay::{DriveError, Driver, PartyKeys, SessionSpec};
use cosigner_seal::check_vault_id;
use cosigner_tss::Committee;
use tonic::Status;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::auth::Caller;
use crate::config::CeremonySettings;
use crate::history_rpc::blocking;
use crate::me::Me;
use crate::now_ms;
use crate::policy::Policy;
use crate::ports::{SealedShares, status};
use crate::vaults::{Vaults, epochs, slots_to_api};
use cosigner_node::dry_run::{DryRun, Evaluated};
use cosigner_node::gate::Claim;
use cosigner_node::journal::Gated;
use cosigner_node::resolve::Resolution;

pub(crate) const RESHARE: &str = cosigner_node::reshare::METHOD;

fn invalid(field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
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
    /// Vaults with a keygen, reshare or resolve in progress here: at most one at a time
    /// per vault (two would fight over the same pending slot).
    changing: cosigner_node::gate::Changing,
    metrics: Arc<Metrics>,
    /// Rate limits for writing refused requests to the history.
    refusals: RefusalLimit,
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
            changing: cosigner_node::gate::Changing::default(),
            metrics,
            refusals: RefusalLimit::default(),
        }
    }

    /// Runs one ceremony request (keygen, sign, reshare). A request refused before its
    /// ceremony recorded anything (STARTED or DENIED) gets a `refused` history entry with
    /// the reason, within the refusal rate limit ([`cosigner_node::refusals`]).
    pub async fn gated<T>(
        &self,
        refusal: Refusal,
        request: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let (r, recorded) = cosigner_node::refusals::watch(request).await;
        if let Err(status) = &r
            && !recorded
        {
            self.record_refusal(refusal, status).await;
        }
        r
    }

    async fn record_refusal(&self, f: Refusal, status: &Status) {
        let kind = crate::ports::history_kind(f.kind);
        self.metrics.ceremony(kind.as_str(), "refused", None);
        let now = std::time::Instant::now();
        let Some(reason) = self.refusals.reason(&f, status.message(), now) else {
            self.metrics.refusal_dropped();
            tracing::debug!(kind = kind.as_str(), caller = %f.tls_identity, reason = %status.message(), "request refused (not recorded: refusal rate limit)");
            return;
        };
        let now = now_ms();
        let rec = Record {
            vault_id: f.vault_id,
            tls_identity: f.tls_identity,
            requester: f.requester,
            payload_digest: f.payload_digest,
            started_at_ms: now,
            ended_at_ms: now,
            result: Some(ResultRecord::Error(reason)),
            ..Record::new(kind, Outcome::Refused)
        };
        match blocking(&self.history, move |h| h.append(rec)).await {
            Ok(receipt) => {
                tracing::info!(seq = receipt.seq, kind = kind.as_str(), reason = %status.message(), "request refused")
            }
            Err(e) => {
                tracing::warn!(kind = kind.as_str(), error = %e.message(), "could not record a refused request")
            }
        }
    }

    pub(crate) fn vaults(&self) -> &Vaults {
        &self.vaults
    }

    pub(crate) fn vaults_arc(&self) -> Arc<Vaults> {
        self.vaults.clone()
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

    /// The pipelines' journal: the gate, this daemon's history as the ledger, the claims.
    fn journal(&self) -> Gated<'_, Self> {
        Gated {
            gate: &self.gate,
            ledger: self,
            changing: &self.changing,
        }
    }

    /// Marks `vault` as being generated, reshared or resolved here, or refuses if it
    /// already is.
    pub(crate) fn exclusive(&self, vault: &str) -> Result<Claim, Status> {
        self.changing.claim(vault).map_err(|e| status(&e))
    }

    /// The crash-test hook: with `COSIGNERD_TEST_KILL_AT=<kind>:<point>` in its environment
    /// (testing only; see docs/ceremonies.md) the daemon SIGKILLs itself at that point of
    /// that ceremony kind, so tests can kill a party at an exact round.
    pub(crate) fn fault_hook(&self, kind: Kind) -> Option<cosigner_relay::driver::FaultHook> {
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

    // ---- keygen ----

    /// The party this daemon is, serving requests through its ports
    /// ([`cosigner_node::server`]).
    fn server<'a>(
        &'a self,
        keys: &'a PartyKeys,
        shares: &'a SealedShares<'a>,
        journal: &'a Gated<'a, Self>,
    ) -> cosigner_node::server::Server<
        'a,
        SealedShares<'a>,
        Gated<'a, Self>,
        Policy,
        Self,
        Self,
        Metrics,
    > {
        cosigner_node::server::Server {
            keys,
            shares,
            journal,
            decider: &self.policy,
            relays: self,
            clock: self,
            observer: &self.metrics,
            max_clock_skew_ms: self.skew_ms(),
            rules: cosigner_node::sign::Rules { raw_hash: true },
            networks: &self.settings.bitcoin_networks,
            allowed_requesters: &self.settings.allowed_requesters,
        }
    }

    pub async fn keygen(
        &self,
        caller: &Caller,
        req: KeygenRequest,
    ) -> Result<KeygenResponse, Status> {
        let keys = self.me.keys();
        let shares = SealedShares(self);
        let journal = self.journal();
        let generated = Box::pin(
            self.server(&keys, &shares, &journal)
                .keygen(&req, &caller.uri),
        )
        .await
        .map_err(|e| status(&e))?;
        let record = generated.record;
        // Committed and recorded: the answer says so even if the slots cannot be listed.
        let slots = self.vaults.slots(record.vault_id()).await.ok();
        tracing::info!(vault = %record.vault_id(), seq = generated.seq, "keygen succeeded");
        Ok(KeygenResponse {
            vault: Some(record.to_api(slots.as_ref().map(slots_to_api))),
            history_seq: generated.seq,
        })
    }

    // ---- sign ----

    pub async fn sign(&self, caller: &Caller, req: SignRequest) -> Result<SignResponse, Status> {
        let keys = self.me.keys();
        let shares = SealedShares(self);
        let journal = self.journal();
        let server = self.server(&keys, &shares, &journal);
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
        let Some(previous) = cosigner_node::previous::after_signature(&epochs(&slots), epoch)
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
        let keys = self.me.keys();
        let shares = SealedShares(self);
        let journal = self.journal();
        let done = Box::pin(
            self.server(&keys, &shares, &journal)
                .reshare(&req, &caller.uri),
        )
        .await
        .map_err(|e| status(&e))?;
        let (c, plan) = (&done.checked, &done.checked.plan);
        let mut vault = match done.part {
            cosigner_node::reshare::Part::New(record) => record.to_api(None),
            cosigner_node::reshare::Part::Left { new_epoch } => {
                let mut v = plan.old.to_api(None);
                v.committee = Some(committee_to_api(&plan.new_committee, &plan.new_members));
                v.epoch = new_epoch;
                v.state = "retired".into();
                v
            }
        };
        vault.slots = self
            .vaults
            .slots(&c.body.vault_id)
            .await
            .ok()
            .map(|s| slots_to_api(&s));
        tracing::info!(vault = %c.body.vault_id, epoch = plan.old.epoch() + 1, seq = done.seq, "reshare succeeded");
        Ok(ReshareResponse {
            vault: Some(vault),
            history_seq: done.seq,
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
        let kind = match CeremonyKind::try_from(req.kind).unwrap_or(CeremonyKind::Unspecified) {
            CeremonyKind::Sign => DryRun::Sign,
            CeremonyKind::Keygen => DryRun::Keygen,
            other => {
                return Err(invalid(
                    "kind",
                    format!("{other:?}: dry runs exist for SIGN and KEYGEN requests"),
                ));
            }
        };
        let keys = self.me.keys();
        let shares = SealedShares(self);
        let journal = self.journal();
        let Evaluated {
            document,
            decision: d,
            decoded,
        } = self
            .server(&keys, &shares, &journal)
            .evaluate(kind, &req.body, requester, &caller.uri)
            .await
            .map_err(|e| status(&e))?;
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
            decoded: decoded.as_ref().map(cosigner_node::payload::to_api),
            input_json: document.to_string(),
        })
    }

    // ---- operator repairs ----

    /// Decides an interrupted commit from the other parties' signed reports
    /// ([`cosigner_node::resolve::verdict`]): promote (or retire) with a certificate, discard when every new
    /// party reported and none holds one, otherwise say whom it waits for. An operator's
    /// word alone decides nothing.
    pub async fn resolve_pending(
        &self,
        caller: &Caller,
        req: ResolvePendingRequest,
    ) -> Result<ResolvePendingResponse, Status> {
        let vault = req.vault_id.as_str();
        let (reports, lost) =
            cosigner_node::resolve::evidence(&req.reports, &req.lost).map_err(|e| status(&e))?;
        let keys = self.me.keys();
        let shares = SealedShares(self);
        let journal = self.journal();
        let resolved = self
            .server(&keys, &shares, &journal)
            .resolve(vault, &reports, &lost)
            .await
            .map_err(|e| status(&e))?;
        let (applied, state, detail) = match resolved {
            Resolution::Undecided(why) => {
                return Ok(ResolvePendingResponse {
                    vault: self.vaults.describe(vault).await.ok(),
                    decision: "undecided".into(),
                    detail: why,
                });
            }
            Resolution::Applied {
                applied,
                state,
                detail,
            } => (applied, state, detail),
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

    /// GetVaultRecord ([`cosigner_node::record`]).
    pub async fn vault_record(
        &self,
        caller: &Caller,
        req: VaultRecordRequest,
    ) -> Result<VaultRecordResponse, Status> {
        let keys = self.me.keys();
        let shares = SealedShares(self);
        let journal = self.journal();
        self.server(&keys, &shares, &journal)
            .vault_record(&req, caller.identity.role == cosigner_pki::Role::Party)
            .await
            .map_err(|e| status(&e))
    }

    /// Drops previous-epoch shares whose commit was certified more than
    /// `ceremonies.drop_previous_after_secs` ago: the certificate shows every new party holds
    /// the new epoch, so the old share only adds risk (a daemon never chosen as a signer,
    /// or a retired dealer, would otherwise keep it for ever). Each drop is recorded.
    pub async fn drop_stale_previous(&self) {
        let Some(limit) = self.settings.drop_previous_after else {
            return;
        };
        let limit_ms = i64::try_from(limit.as_millis()).unwrap_or(i64::MAX);
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
            let Ok(commit) = self.vaults.commit_state(&vault).await else {
                continue;
            };
            let Some(e) = cosigner_node::previous::expired(
                &epochs(&slots),
                commit.as_ref(),
                now_ms(),
                limit_ms,
            ) else {
                continue;
            };
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
                e.age_ms / 1000,
                e.certified_epoch
            );
            let rec = drop_record(&vault, e.previous, "", Some(note));
            if let Err(e) = blocking(&self.history, move |h| h.append(rec)).await {
                tracing::error!(error = %e.message(), "could not record dropping the previous share");
            }
            tracing::info!(
                vault,
                dropped = e.previous,
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
