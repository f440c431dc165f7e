//! The `cosigner.v1.Cosigner` service.
//!
//! Only status exists in this build. Every other RPC answers UNIMPLEMENTED with the issue that
//! brings it, so a client learns what is missing instead of getting a fake success. The
//! README lists the same table.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cosigner_api::v1::cosigner_server::Cosigner;
use cosigner_api::v1::*;
use tonic::{Request, Response, Status};

use crate::auth;

/// RPCs that later issues implement, with what brings them. Kept in one list so the status
/// RPC, the UNIMPLEMENTED messages and the tests agree.
pub const NOT_YET: &[(&str, &str)] = &[
    ("ListVaults", "vault ceremonies (issue #6)"),
    ("GetVault", "vault ceremonies (issue #6)"),
    ("Keygen", "vault ceremonies over the relay (issue #6)"),
    ("Sign", "vault ceremonies over the relay (issue #6)"),
    ("Reshare", "atomic reshare (issue #6)"),
    ("Refresh", "atomic reshare (issue #6)"),
    ("DropPreviousShare", "atomic reshare (issue #6)"),
    ("ListHistory", "the ceremony history (issue #5)"),
    ("GetHistoryEntry", "the ceremony history (issue #5)"),
    ("VerifyHistory", "the ceremony history (issue #5)"),
    ("ExportHistory", "the ceremony history (issue #5)"),
    ("EvaluatePolicy", "the signing policy (issue #7)"),
    ("ReloadPolicy", "the signing policy (issue #7)"),
    ("ExportBackup", "share backups (issue #8)"),
    ("ImportBackup", "share backups (issue #8)"),
];

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

pub struct CosignerService {
    identity_uri: String,
    started: Instant,
    started_at_ms: i64,
}

impl CosignerService {
    pub fn new(identity_uri: String) -> Self {
        let started_at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        CosignerService {
            identity_uri,
            started: Instant::now(),
            started_at_ms,
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
        Ok(Response::new(GetStatusResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
            identity: self.identity_uri.clone(),
            started_at_ms: self.started_at_ms,
            uptime_seconds: self.started.elapsed().as_secs(),
            sealing_backend: "none".into(),
            policy_hash: String::new(),
            vaults: Vec::new(),
            relay_enabled: false,
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
        Err(not_yet("ListVaults"))
    }

    async fn get_vault(&self, _: Request<GetVaultRequest>) -> Result<Response<Vault>, Status> {
        Err(not_yet("GetVault"))
    }

    async fn keygen(&self, _: Request<KeygenRequest>) -> Result<Response<KeygenResponse>, Status> {
        Err(not_yet("Keygen"))
    }

    async fn sign(&self, _: Request<SignRequest>) -> Result<Response<SignResponse>, Status> {
        Err(not_yet("Sign"))
    }

    async fn reshare(
        &self,
        _: Request<ReshareRequest>,
    ) -> Result<Response<ReshareResponse>, Status> {
        Err(not_yet("Reshare"))
    }

    async fn refresh(
        &self,
        _: Request<RefreshRequest>,
    ) -> Result<Response<ReshareResponse>, Status> {
        Err(not_yet("Refresh"))
    }

    async fn drop_previous_share(
        &self,
        _: Request<DropPreviousShareRequest>,
    ) -> Result<Response<DropPreviousShareResponse>, Status> {
        Err(not_yet("DropPreviousShare"))
    }

    async fn list_history(
        &self,
        _: Request<ListHistoryRequest>,
    ) -> Result<Response<ListHistoryResponse>, Status> {
        Err(not_yet("ListHistory"))
    }

    async fn get_history_entry(
        &self,
        _: Request<GetHistoryEntryRequest>,
    ) -> Result<Response<HistoryEntry>, Status> {
        Err(not_yet("GetHistoryEntry"))
    }

    async fn verify_history(
        &self,
        _: Request<VerifyHistoryRequest>,
    ) -> Result<Response<VerifyHistoryResponse>, Status> {
        Err(not_yet("VerifyHistory"))
    }

    type ExportHistoryStream = Stream<ExportHistoryChunk>;

    async fn export_history(
        &self,
        _: Request<ExportHistoryRequest>,
    ) -> Result<Response<Self::ExportHistoryStream>, Status> {
        Err(not_yet("ExportHistory"))
    }

    async fn evaluate_policy(
        &self,
        _: Request<EvaluatePolicyRequest>,
    ) -> Result<Response<EvaluatePolicyResponse>, Status> {
        Err(not_yet("EvaluatePolicy"))
    }

    async fn reload_policy(
        &self,
        _: Request<ReloadPolicyRequest>,
    ) -> Result<Response<ReloadPolicyResponse>, Status> {
        Err(not_yet("ReloadPolicy"))
    }

    async fn export_backup(
        &self,
        _: Request<ExportBackupRequest>,
    ) -> Result<Response<ExportBackupResponse>, Status> {
        Err(not_yet("ExportBackup"))
    }

    async fn import_backup(
        &self,
        _: Request<ImportBackupRequest>,
    ) -> Result<Response<ImportBackupResponse>, Status> {
        Err(not_yet("ImportBackup"))
    }
}
