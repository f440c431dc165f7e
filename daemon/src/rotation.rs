//! Scheduled rotation: on a cron schedule per vault, this daemon starts a refresh of the
//! vault's committee (a reshare to the same committee and threshold) with its peer daemons.
//!
//! A leaked share expires by itself at the next rotation, because every share changes and
//! shares of different epochs do not combine. The run is an ordinary reshare request, signed
//! by this daemon's party key and marked `scheduled`, sent to every other member and to this
//! daemon's own ceremony gate, so each party's policy decides whether it joins and each
//! party records it. Every member must be a daemon listed in `rotation.peers`: devices have
//! no push channel and cannot join a run nobody is watching.
//!
//! When a run is due is computed from the vault's own record: the first scheduled time after
//! the last reshare (or the creation). A time that passed while the daemon was down is a
//! missed run and starts at once. A failed run (a peer offline, a refusal, a timeout) is
//! recorded and retried with exponential back-off; a success resets it and reminds the
//! operator that backups of the old epoch are now useless.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use cosigner_api::v1 as api;
use cosigner_api::v1::cosigner_client::CosignerClient;
use cosigner_history::{History, Kind, Outcome, Record, ResultRecord};
use cosigner_node::coordinator::{Calls, SESSION_TTL_SECONDS, Session, sign_request, status_text};
use cosigner_relay::keys::short;
use cosigner_relay::record::members_to_api;
use tonic::transport::Endpoint;

use crate::auth::Caller;
use crate::ceremony::{Ceremonies, RESHARE};
use crate::config::{RotationSchedule, RotationSettings};
use crate::history_rpc::blocking;
use crate::me::Me;
use crate::now_ms;
use crate::vaults::Vaults;

/// This daemon's own part, as the run's errors name it.
const OWN: &str = "this daemon";

#[derive(Clone, Default)]
struct JobState {
    next_run_at_ms: i64,
    last_attempt_at_ms: i64,
    last_success_at_ms: i64,
    last_error: String,
    consecutive_failures: u32,
    runs_succeeded: u64,
    runs_failed: u64,
    epoch: u64,
}

struct Job {
    schedule: RotationSchedule,
    state: Mutex<JobState>,
}

pub struct Rotations {
    jobs: Vec<Arc<Job>>,
    settings: RotationSettings,
    ceremonies: Arc<Ceremonies>,
    vaults: Arc<Vaults>,
    me: Arc<Me>,
    history: Arc<History>,
    /// This daemon's TLS identity, recorded as who asked.
    identity: cosigner_pki::Identity,
    identity_uri: String,
}

/// Why a run did not happen or failed.
enum RunError {
    /// This daemon holds no share of the vault (yet): nothing to rotate, not a failure.
    NoShare,
    Failed(String),
}

impl Rotations {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        settings: RotationSettings,
        ceremonies: Arc<Ceremonies>,
        vaults: Arc<Vaults>,
        me: Arc<Me>,
        history: Arc<History>,
        identity: cosigner_pki::Identity,
        identity_uri: String,
    ) -> Arc<Rotations> {
        let jobs = settings
            .schedules
            .iter()
            .map(|s| {
                Arc::new(Job {
                    schedule: s.clone(),
                    state: Mutex::new(JobState::default()),
                })
            })
            .collect();
        let r = Arc::new(Rotations {
            jobs,
            settings,
            ceremonies,
            vaults,
            me,
            history,
            identity,
            identity_uri,
        });
        for job in &r.jobs {
            tokio::spawn(r.clone().run_job(job.clone()));
        }
        r
    }

    pub fn status(&self) -> Vec<api::RotationStatus> {
        self.jobs
            .iter()
            .map(|j| {
                let s = j.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
                api::RotationStatus {
                    vault_id: j.schedule.vault.clone(),
                    schedule: j.schedule.cron.clone(),
                    next_run_at_ms: s.next_run_at_ms,
                    last_attempt_at_ms: s.last_attempt_at_ms,
                    last_success_at_ms: s.last_success_at_ms,
                    last_error: s.last_error,
                    consecutive_failures: s.consecutive_failures,
                    runs_succeeded: s.runs_succeeded,
                    runs_failed: s.runs_failed,
                    epoch: s.epoch,
                }
            })
            .collect()
    }

    /// The first scheduled time after `after_ms`.
    fn next_after(job: &Job, after_ms: i64) -> Option<i64> {
        let after: DateTime<Utc> = DateTime::from_timestamp_millis(after_ms)?;
        job.schedule
            .schedule
            .after(&after)
            .next()
            .map(|t| t.timestamp_millis())
    }

    /// When the next run is due: the first scheduled time after the vault's last reshare
    /// (or creation); now if that time has passed (a missed run).
    async fn due(&self, job: &Job) -> Option<i64> {
        let now = now_ms();
        let since = match self.vaults.active_record(&job.schedule.vault).await {
            Ok(Some(r)) => r.last_reshare_at_ms.max(r.created_at_ms),
            _ => now,
        };
        let next = Self::next_after(job, since)?;
        if next < now {
            tracing::warn!(
                vault = %job.schedule.vault,
                missed_at_ms = next,
                "a scheduled rotation was missed (the daemon was down or the last run failed); running now"
            );
            return Some(now);
        }
        Some(next)
    }

    fn backoff(&self, failures: u32) -> Duration {
        let min = self.settings.retry_min;
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        min.saturating_mul(factor).min(self.settings.retry_max)
    }

    async fn run_job(self: Arc<Self>, job: Arc<Job>) {
        let vault = job.schedule.vault.clone();
        loop {
            let failures = job
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .consecutive_failures;
            let due = if failures > 0 {
                now_ms() + self.backoff(failures).as_millis() as i64
            } else {
                match self.due(&job).await {
                    Some(t) => t,
                    None => {
                        tracing::error!(%vault, schedule = %job.schedule.cron, "the rotation schedule has no future time; rotation stopped");
                        return;
                    }
                }
            };
            job.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .next_run_at_ms = due;
            let wait = (due - now_ms()).max(0) as u64;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            let started = now_ms();
            job.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last_attempt_at_ms = started;
            match self.attempt(&vault).await {
                Ok(epoch) => {
                    {
                        let mut s = job.state.lock().unwrap_or_else(|p| p.into_inner());
                        s.last_success_at_ms = now_ms();
                        s.last_error.clear();
                        s.consecutive_failures = 0;
                        s.runs_succeeded += 1;
                        s.epoch = epoch;
                    }
                    tracing::info!(%vault, epoch, "scheduled rotation succeeded");
                    tracing::warn!(
                        %vault,
                        epoch,
                        "every share of the vault changed: backups of earlier epochs are useless now; export new backups (`cosignerctl backup export`)"
                    );
                    self.record(&vault, epoch, started, Ok(())).await;
                }
                Err(RunError::NoShare) => {
                    // Nothing to rotate (not a failure): the loop waits for the next
                    // scheduled time, since a vault not held has no last reshare.
                    job.state
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .last_error = format!("this daemon holds no share of vault {vault:?} yet");
                }
                Err(RunError::Failed(why)) => {
                    let failures = {
                        let mut s = job.state.lock().unwrap_or_else(|p| p.into_inner());
                        s.last_error = why.clone();
                        s.consecutive_failures += 1;
                        s.runs_failed += 1;
                        s.consecutive_failures
                    };
                    tracing::warn!(%vault, error = %why, failures, retry_in = ?self.backoff(failures), "scheduled rotation failed");
                    let epoch = self
                        .vaults
                        .slots(&vault)
                        .await
                        .ok()
                        .and_then(|s| s.current)
                        .unwrap_or(0);
                    self.record(&vault, epoch, started, Err(why)).await;
                }
            }
        }
    }

    /// One history entry per run (the reshare itself records its own entries too).
    async fn record(&self, vault: &str, epoch: u64, started: i64, r: Result<(), String>) {
        let (outcome, result) = match r {
            Ok(()) => (Outcome::Succeeded, None),
            Err(e) => (Outcome::Failed, Some(ResultRecord::Error(e))),
        };
        let rec = Record {
            vault_id: vault.to_string(),
            epoch,
            tls_identity: self.identity_uri.clone(),
            requester: self.me.party_id().to_vec(),
            started_at_ms: started,
            ended_at_ms: now_ms(),
            result,
            ..Record::new(Kind::Refresh, outcome)
        };
        if let Err(e) = blocking(&self.history, move |h| h.append(rec)).await {
            tracing::error!(error = %e.message(), "cannot record the rotation run");
        }
    }

    async fn attempt(&self, vault: &str) -> Result<u64, RunError> {
        let fail = |m: String| RunError::Failed(m);
        let slots = self
            .vaults
            .slots(vault)
            .await
            .map_err(|s| fail(s.message().to_string()))?;
        if let Some(p) = slots.pending {
            return Err(fail(format!(
                "a pending share of epoch {p} waits for repair (`cosignerctl vault resolve`)"
            )));
        }
        let record = match self.vaults.active_record(vault).await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(RunError::NoShare),
            Err(s) => return Err(fail(s.message().to_string())),
        };
        let me = self.me.party_id();
        let tls = self.ceremonies.client_tls();
        // Every other member must be a peer daemon we can reach, before anything starts.
        let mut clients = Vec::new();
        for m in record.members.iter().filter(|m| m.id != me) {
            let addr = self.settings.peers.get(&m.id).ok_or_else(|| {
                fail(format!(
                    "committee member {} ({:?}) has no address in rotation.peers: every member must be a daemon for a scheduled rotation (devices cannot join by themselves)",
                    short(&m.id),
                    m.name
                ))
            })?;
            let channel = Endpoint::from_shared(addr.clone())
                .map_err(|e| fail(format!("rotation.peers address {addr:?}: {e}")))?
                .tls_config(tls.clone())
                .map_err(|e| fail(format!("TLS: {e}")))?
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .map_err(|e| {
                    fail(format!(
                        "peer {:?} ({}) at {addr} is unreachable: {e}",
                        m.name,
                        short(&m.id)
                    ))
                })?;
            clients.push((m.name.clone(), CosignerClient::new(channel)));
        }
        let t = record.public.committee.threshold();
        let mut dealers = vec![me];
        dealers.extend(
            record
                .members
                .iter()
                .map(|m| m.id)
                .filter(|id| *id != me)
                .take(usize::from(t).saturating_sub(1)),
        );
        let (relay, relay_addr) = self
            .ceremonies
            .relay_client(&self.settings.relay)
            .await
            .map_err(|s| fail(format!("relay: {}", s.message())))?;
        let session = Session::create(
            relay,
            relay_addr,
            record.members.iter().map(|m| m.id),
            SESSION_TTL_SECONDS,
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
        let body = api::ReshareBody {
            vault_id: vault.to_string(),
            old_epoch: record.epoch(),
            dealers: dealers.iter().map(|d| d.to_vec()).collect(),
            new_committee: Some(members_to_api(u32::from(t), &record.members)),
            relay: Some(session.relay_ref()),
            old_vault: record.encode(),
            scheduled: true,
            // Same committee: every party holds the vault and checks its own record.
            old_vault_endorsements: Vec::new(),
        };
        let signed = sign_request(&self.me.keys(), RESHARE, &body, now_ms());
        let req = api::ReshareRequest {
            body: signed.body,
            auth: Some(signed.auth),
        };
        let caller = Caller {
            identity: self.identity.clone(),
            uri: self.identity_uri.clone(),
        };
        // This daemon's own part first, so its error (often the cause) is named first.
        let mut calls = Calls::new();
        let (c, own) = (self.ceremonies.clone(), req.clone());
        calls.push(OWN.into(), async move {
            c.reshare(&caller, own).await.map_err(|s| status_text(&s))
        });
        for (name, mut client) in clients {
            let r = req.clone();
            calls.push(name, async move {
                client
                    .reshare(r)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| status_text(&s))
            });
        }
        // Bounded: a peer that takes the call and never answers must not stop the schedule
        // (the relay session ends by then anyway).
        let answers = calls
            .settle(Duration::from_secs(u64::from(SESSION_TTL_SECONDS)))
            .await;
        let mut epoch = 0;
        let mut errors = Vec::new();
        for (name, r) in answers {
            match r {
                Ok(resp) if name == OWN => epoch = resp.vault.map_or(0, |v| v.epoch),
                Ok(_) => {}
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(epoch)
        } else {
            Err(fail(errors.join("; ")))
        }
    }
}
