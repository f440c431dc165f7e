//! The `cosigner.v1.Cosigner` service.
//!
//! Status, vaults, keygen, sign, reshare, backups and the history RPCs exist in this build. Every other RPC answers UNIMPLEMENTED
//! with the issue that brings it, so a client learns what is missing instead of getting a
//! fake success. The README lists the same table.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cosigner_history::History;

use cosigner_api::v1::cosigner_server::Cosigner;
use cosigner_api::v1::*;
use tonic::{Request, Response, Status};

use crate::auth;
use crate::backup::Backups;
use crate::ceremony::Ceremonies;
use crate::history_rpc::{self, blocking};
use crate::me::Me;
use crate::policy::Policy;
use crate::rotation::Rotations;
use crate::vaults::Vaults;
use cosigner_node::ports::Kind;
use cosigner_node::refusals::Refusal;

/// RPCs that later issues implement, with what brings them. Kept in one list so the status
/// RPC, the UNIMPLEMENTED messages and the tests agree.
pub const NOT_YET: &[(&str, &str)] = &[(
    "Refresh",
    "a later release (a Reshare to the same committee refreshes every share today)",
)];

fn not_yet(method: &str) -> Status {
    let when = NOT_YET
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, w)| *w)
        .unwrap_or("a later release");
    Status::unimplemented(format!(
        "cosigner.v1.Cosigner/{method} is not implemented in this build of cosignerd; it arrives with {when}"
    ))
}

/// What the daemon is, for status: fixed at start.
pub struct DaemonInfo {
    pub identity_uri: String,
    /// "tpm" or "software", as GetStatus promises.
    pub sealing: &'static str,
    /// TCTI and PCR binding, or the software key's file.
    pub sealing_detail: String,
}

pub struct CosignerService {
    info: DaemonInfo,
    started: Instant,
    started_at_ms: i64,
    history: Arc<History>,
    vaults: Arc<Vaults>,
    ceremonies: Arc<Ceremonies>,
    policy: Arc<Policy>,
    backups: Arc<Backups>,
    rotations: Arc<Rotations>,
    me: Arc<Me>,
    relay_enabled: bool,
}

impl CosignerService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        info: DaemonInfo,
        history: Arc<History>,
        vaults: Arc<Vaults>,
        ceremonies: Arc<Ceremonies>,
        policy: Arc<Policy>,
        backups: Arc<Backups>,
        rotations: Arc<Rotations>,
        relay_enabled: bool,
    ) -> Self {
        let started_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        CosignerService {
            info,
            started: Instant::now(),
            started_at_ms,
            history,
            vaults,
            ceremonies,
            policy,
            me: backups.me.clone(),
            backups,
            rotations,
            relay_enabled,
        }
    }
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Cosigner for CosignerService {
    async fn get_status(
        &self,
        request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let caller = auth::caller(&request)?;
        tracing::debug!(caller = %caller.uri, "status");
        let (history_entries, history_bytes) =
            blocking(&self.history, |h| Ok((h.len()?, h.size_on_disk()?))).await?;
        let vaults = self.vaults.list().await?;
        let mut backups = Vec::with_capacity(vaults.len());
        for v in &vaults {
            let newest = crate::backup::newest_export(&self.history, &v.vault_id).await?;
            backups.push(BackupStatus {
                vault_id: v.vault_id.clone(),
                epoch: v.epoch,
                has_backup: newest.is_some(),
                backup_epoch: newest.unwrap_or(0),
                backup_renewal_needed: newest.is_none_or(|e| e < v.epoch),
            });
        }
        let recent_ceremonies = blocking(&self.history, recent_ceremonies).await?;
        Ok(Response::new(GetStatusResponse {
            recent_ceremonies,
            rotations: self.rotations.status(),
            backups,
            history_entries,
            history_bytes,
            version: env!("CARGO_PKG_VERSION").to_string(),
            identity: self.info.identity_uri.clone(),
            party_id: self.me.party_id().to_vec(),
            encryption_key: self.me.encryption_public().to_vec(),
            started_at_ms: self.started_at_ms,
            uptime_seconds: self.started.elapsed().as_secs(),
            sealing_backend: self.info.sealing.to_string(),
            sealing_detail: self.info.sealing_detail.clone(),
            policy_hash: self.policy.hash(),
            vaults,
            relay_enabled: self.relay_enabled,
            unavailable: NOT_YET
                .iter()
                .map(|(m, w)| format!("{m}: arrives with {w}"))
                .collect(),
        }))
    }

    async fn list_vaults(
        &self,
        _: Request<ListVaultsRequest>,
    ) -> Result<Response<ListVaultsResponse>, Status> {
        Ok(Response::new(ListVaultsResponse {
            vaults: self.vaults.list().await?,
        }))
    }

    async fn get_vault(
        &self,
        request: Request<GetVaultRequest>,
    ) -> Result<Response<Vault>, Status> {
        let caller = auth::caller(&request)?;
        if caller.identity.role != cosigner_pki::Role::Admin {
            // A TLS identity is not a party id, so a party caller cannot be matched to a
            // committee yet; refuse rather than show vaults to any certificate holder.
            return Err(Status::permission_denied(
                "GetVault is for admin callers in this build (a party's TLS identity cannot be matched to its party id yet)",
            ));
        }
        let vault = request.into_inner().vault_id;
        cosigner_seal::check_vault_id(&vault)
            .map_err(|e| Status::invalid_argument(format!("vault_id: {e}")))?;
        Ok(Response::new(self.vaults.describe(&vault).await?))
    }

    async fn keygen(
        &self,
        request: Request<KeygenRequest>,
    ) -> Result<Response<KeygenResponse>, Status> {
        let caller = auth::caller(&request)?;
        let c = self.ceremonies.clone();
        let req = request.into_inner();
        // Detached: a client that hangs up must not cut a ceremony short (the other
        // parties would be left waiting, and the outcome would go unrecorded).
        let refused = Refusal::new(Kind::Keygen, &caller.uri, &req.body, req.auth.as_ref());
        let r = tokio::spawn(async move { c.gated(refused, c.keygen(&caller, req)).await })
            .await
            .map_err(|e| Status::internal(format!("ceremony task failed: {e}")))??;
        Ok(Response::new(r))
    }

    async fn sign(&self, request: Request<SignRequest>) -> Result<Response<SignResponse>, Status> {
        let caller = auth::caller(&request)?;
        let c = self.ceremonies.clone();
        let req = request.into_inner();
        // Detached: a client that hangs up must not cut a ceremony short (the other
        // parties would be left waiting, and the outcome would go unrecorded).
        let refused = Refusal::new(Kind::Sign, &caller.uri, &req.body, req.auth.as_ref());
        let r = tokio::spawn(async move { c.gated(refused, c.sign(&caller, req)).await })
            .await
            .map_err(|e| Status::internal(format!("ceremony task failed: {e}")))??;
        Ok(Response::new(r))
    }

    async fn reshare(
        &self,
        request: Request<ReshareRequest>,
    ) -> Result<Response<ReshareResponse>, Status> {
        let caller = auth::caller(&request)?;
        let c = self.ceremonies.clone();
        let req = request.into_inner();
        // Detached: a client that hangs up must not cut a ceremony short (the other
        // parties would be left waiting, and the outcome would go unrecorded).
        let refused = Refusal::new(Kind::Reshare, &caller.uri, &req.body, req.auth.as_ref());
        let r = tokio::spawn(async move { c.gated(refused, c.reshare(&caller, req)).await })
            .await
            .map_err(|e| Status::internal(format!("ceremony task failed: {e}")))??;
        Ok(Response::new(r))
    }

    async fn resolve_pending(
        &self,
        request: Request<ResolvePendingRequest>,
    ) -> Result<Response<ResolvePendingResponse>, Status> {
        let caller = auth::caller(&request)?;
        let r = self
            .ceremonies
            .resolve_pending(&caller, request.into_inner())
            .await?;
        Ok(Response::new(r))
    }

    async fn get_vault_record(
        &self,
        request: Request<VaultRecordRequest>,
    ) -> Result<Response<VaultRecordResponse>, Status> {
        let caller = auth::caller(&request)?;
        let r = self
            .ceremonies
            .vault_record(&caller, request.into_inner())
            .await?;
        Ok(Response::new(r))
    }

    async fn refresh(
        &self,
        _: Request<RefreshRequest>,
    ) -> Result<Response<ReshareResponse>, Status> {
        Err(not_yet("Refresh"))
    }

    async fn drop_previous_share(
        &self,
        request: Request<DropPreviousShareRequest>,
    ) -> Result<Response<DropPreviousShareResponse>, Status> {
        let caller = auth::caller(&request)?;
        let vault = request.into_inner().vault_id;
        let dropped_epoch = self.ceremonies.drop_previous(&caller, &vault).await?;
        Ok(Response::new(DropPreviousShareResponse { dropped_epoch }))
    }

    async fn list_history(
        &self,
        request: Request<ListHistoryRequest>,
    ) -> Result<Response<ListHistoryResponse>, Status> {
        let req = request.into_inner();
        let q = history_rpc::query_from(req.filter)?;
        let token = (!req.page_token.is_empty()).then_some(req.page_token);
        let page = blocking(&self.history, move |h| {
            h.list(&q, req.page_size, token.as_deref())
        })
        .await?;
        Ok(Response::new(ListHistoryResponse {
            entries: page
                .entries
                .iter()
                .map(|(e, hash)| history_rpc::entry_to_proto(e, hash, history_rpc::Detail::Listing))
                .collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn get_history_entry(
        &self,
        request: Request<GetHistoryEntryRequest>,
    ) -> Result<Response<HistoryEntry>, Status> {
        let seq = request.into_inner().seq;
        let (e, hash) = blocking(&self.history, move |h| h.get(seq)).await?;
        Ok(Response::new(history_rpc::entry_to_proto(
            &e,
            &hash,
            history_rpc::Detail::Full,
        )))
    }

    async fn verify_history(
        &self,
        _: Request<VerifyHistoryRequest>,
    ) -> Result<Response<VerifyHistoryResponse>, Status> {
        let v = blocking(&self.history, |h| h.verify()).await?;
        if let Some((seq, why)) = &v.first_bad {
            tracing::error!(seq, problem = %why, "history verification failed");
        }
        let (first_bad_seq, problem) = v.first_bad.unwrap_or_default();
        Ok(Response::new(VerifyHistoryResponse {
            ok: problem.is_empty(),
            entries_checked: v.checked,
            first_bad_seq,
            problem,
        }))
    }

    type ExportHistoryStream = Stream<ExportHistoryChunk>;

    async fn export_history(
        &self,
        request: Request<ExportHistoryRequest>,
    ) -> Result<Response<Self::ExportHistoryStream>, Status> {
        let q = history_rpc::query_from(request.into_inner().filter)?;
        Ok(Response::new(Box::pin(history_rpc::export_stream(
            self.history.clone(),
            q,
        ))))
    }

    async fn evaluate_policy(
        &self,
        request: Request<EvaluatePolicyRequest>,
    ) -> Result<Response<EvaluatePolicyResponse>, Status> {
        let caller = auth::caller(&request)?;
        let r = self
            .ceremonies
            .evaluate(&caller, request.into_inner())
            .await?;
        Ok(Response::new(r))
    }

    async fn reload_policy(
        &self,
        request: Request<ReloadPolicyRequest>,
    ) -> Result<Response<ReloadPolicyResponse>, Status> {
        let caller = auth::caller(&request)?;
        let r = self.policy.reload(&caller.uri).await;
        Ok(Response::new(ReloadPolicyResponse {
            replaced: r.replaced,
            policy_hash: r.hash,
            error: r.error,
        }))
    }

    async fn export_backup(
        &self,
        request: Request<ExportBackupRequest>,
    ) -> Result<Response<ExportBackupResponse>, Status> {
        let caller = auth::caller(&request)?;
        let mut r = request.into_inner();
        let pass = zeroize::Zeroizing::new(std::mem::take(&mut r.passphrase));
        let (backup, epoch) = self.backups.export(&caller, &r.vault_id, pass).await?;
        Ok(Response::new(ExportBackupResponse { backup, epoch }))
    }

    async fn import_backup(
        &self,
        request: Request<ImportBackupRequest>,
    ) -> Result<Response<ImportBackupResponse>, Status> {
        let caller = auth::caller(&request)?;
        let mut r = request.into_inner();
        let pass = zeroize::Zeroizing::new(std::mem::take(&mut r.passphrase));
        let vault = self
            .backups
            .import(
                &caller,
                r.backup,
                pass,
                r.replaces_party,
                r.peers,
                r.offline,
            )
            .await?;
        Ok(Response::new(ImportBackupResponse { vault: Some(vault) }))
    }
}

/// How many finished ceremonies `GetStatus` shows.
const RECENT_CEREMONIES: usize = 10;

/// The newest finished ceremonies of every kind, newest first. Each kind is queried through
/// its index (a STARTED record precedes each outcome, so twice the count is read).
fn recent_ceremonies(
    h: &cosigner_history::History,
) -> Result<Vec<cosigner_api::v1::HistoryEntry>, cosigner_history::HistoryError> {
    use cosigner_history::{Kind, Outcome, Query};
    let mut found = Vec::new();
    for kind in [Kind::Keygen, Kind::Sign, Kind::Reshare, Kind::Refresh] {
        let q = Query {
            kind: Some(kind),
            ..Query::default()
        };
        let page = h.list(&q, (2 * RECENT_CEREMONIES) as u32, None)?;
        found.extend(
            page.entries
                .into_iter()
                .filter(|(e, _)| !matches!(e.record.outcome, Outcome::Started | Outcome::Refused)),
        );
    }
    found.sort_by_key(|e| std::cmp::Reverse(e.0.seq));
    found.truncate(RECENT_CEREMONIES);
    Ok(found
        .iter()
        .map(|(e, hash)| {
            crate::history_rpc::entry_to_proto(e, hash, crate::history_rpc::Detail::Listing)
        })
        .collect())
}
