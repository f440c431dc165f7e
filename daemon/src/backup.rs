//! Share backups: export this daemon's current share of a vault under a passphrase, and
//! import one (sealing it to this machine's TPM).
//!
//! An import refuses a backup of another party than the one the operator says it replaces,
//! then what every restore refuses ([`cosigner_node::restore`]: a stale epoch, a second
//! share, another party's backup into a daemon that holds a vault), then asks the other
//! parties whether the epoch is still the vault's ([`cosigner_node::peers`]). A daemon
//! that holds no vault takes the backup's identity (the other parties know the replaced
//! machine by it). Every export and import, refused or not, is recorded.

use std::path::PathBuf;
use std::sync::Arc;

use cosigner_api::v1 as api;
use cosigner_backup::{BackupError, BoxError};
use cosigner_history::{History, Kind, Outcome, Query, Record, ResultRecord};
use cosigner_relay::keys::{hex, short};
use cosigner_seal::{Identity, Sealer, Slot, check_vault_id};
use tonic::Status;
use zeroize::Zeroizing;

use crate::auth::Caller;
use crate::ceremony::Ceremonies;
use crate::history_rpc::blocking;
use crate::me::Me;
use crate::now_ms;
use crate::vaults::Vaults;

pub struct Backups {
    pub me: Arc<Me>,
    pub vaults: Arc<Vaults>,
    pub history: Arc<History>,
    pub ceremonies: Arc<Ceremonies>,
    pub sealer: Sealer,
    pub data_dir: PathBuf,
    /// Written into each backup's metadata ("cosignerd <TLS identity>").
    pub source: String,
}

fn backup_status(e: BackupError) -> Status {
    match e {
        BackupError::Box(BoxError::ShortPassphrase) => {
            Status::invalid_argument(format!("passphrase: {e}"))
        }
        BackupError::Box(BoxError::Open) => Status::permission_denied(format!("backup: {e}")),
        _ => Status::invalid_argument(format!("backup: {e}")),
    }
}

/// The newest epoch of `vault` in this daemon's history (any ceremony, export or import
/// that succeeded), or None if it never saw the vault.
pub async fn newest_epoch_seen(history: &Arc<History>, vault: &str) -> Result<Option<u64>, Status> {
    let v = vault.to_string();
    blocking(history, move |h| {
        let mut newest = None;
        for kind in [
            Kind::Keygen,
            Kind::Sign,
            Kind::Reshare,
            Kind::Refresh,
            Kind::BackupExport,
            Kind::BackupImport,
        ] {
            let q = Query {
                vault_id: Some(v.clone()),
                kind: Some(kind),
                outcome: Some(Outcome::Succeeded),
                ..Query::default()
            };
            if let Some((e, _)) = h.list(&q, 1, None)?.entries.first() {
                newest = newest.max(Some(e.record.epoch));
            }
        }
        Ok(newest)
    })
    .await
}

/// The newest epoch of `vault` exported as a backup from this daemon.
pub async fn newest_export(history: &Arc<History>, vault: &str) -> Result<Option<u64>, Status> {
    let v = vault.to_string();
    blocking(history, move |h| {
        let q = Query {
            vault_id: Some(v),
            kind: Some(Kind::BackupExport),
            outcome: Some(Outcome::Succeeded),
            ..Query::default()
        };
        Ok(h.list(&q, 1, None)?
            .entries
            .first()
            .map(|(e, _)| e.record.epoch))
    })
    .await
}

impl Backups {
    async fn record(
        &self,
        kind: Kind,
        caller: &Caller,
        vault: &str,
        epoch: u64,
        started_at_ms: i64,
        result: &Result<Vec<u8>, Status>,
    ) -> Result<u64, Status> {
        let (outcome, result) = match result {
            Ok(pk) => (Outcome::Succeeded, ResultRecord::PublicKey(pk.clone())),
            Err(s) => (
                Outcome::Failed,
                ResultRecord::Error(s.message().to_string()),
            ),
        };
        let rec = Record {
            vault_id: vault.to_string(),
            epoch,
            tls_identity: caller.uri.clone(),
            requester: self.me.party_id().to_vec(),
            started_at_ms,
            ended_at_ms: now_ms(),
            result: Some(result),
            ..Record::new(kind, outcome)
        };
        Ok(blocking(&self.history, move |h| h.append(rec)).await?.seq)
    }

    /// ExportBackup: the current share of `vault`, encrypted under `pass`.
    pub async fn export(
        &self,
        caller: &Caller,
        vault: &str,
        pass: Zeroizing<String>,
    ) -> Result<(Vec<u8>, u64), Status> {
        check_vault_id(vault).map_err(|e| Status::invalid_argument(format!("vault_id: {e}")))?;
        let started = now_ms();
        let slots = self.vaults.slots(vault).await?;
        let epoch = slots.current.unwrap_or(0);
        let result = self.export_inner(vault, slots.pending, pass).await;
        let pk = result
            .as_ref()
            .map(|(_, pk)| pk.clone())
            .map_err(Clone::clone);
        let seq = self
            .record(Kind::BackupExport, caller, vault, epoch, started, &pk)
            .await?;
        let (bytes, _) = result?;
        tracing::info!(vault, epoch, seq, "backup exported");
        Ok((bytes, epoch))
    }

    async fn export_inner(
        &self,
        vault: &str,
        pending: Option<u64>,
        pass: Zeroizing<String>,
    ) -> Result<(Vec<u8>, Vec<u8>), Status> {
        if let Some(p) = pending {
            return Err(Status::failed_precondition(format!(
                "vault {vault:?} has a pending share of epoch {p} (a reshare did not finish); resolve it first (`cosignerctl vault resolve`), or the backup could be of an epoch that is about to end"
            )));
        }
        if self.vaults.active_record(vault).await?.is_none() {
            return Err(Status::not_found(format!(
                "this daemon holds no share of vault {vault:?}"
            )));
        }
        let held = self.vaults.load(vault, Slot::Current).await?;
        let pk = held.record.public.public_key.0.to_vec();
        let keys = self.me.keys();
        let source = self.source.clone();
        let bytes = tokio::task::spawn_blocking(move || {
            cosigner_backup::export(&keys, &held, pass.as_bytes(), &source, now_ms())
        })
        .await
        .map_err(|e| Status::internal(format!("backup task failed: {e}")))?
        .map_err(backup_status)?;
        Ok((bytes, pk))
    }

    /// A replacement machine has no history of the vault, so only the other parties can
    /// tell it whether the backup is stale. Each peer is asked (as the backup's party, with
    /// a signed request) for its signed commit report; a backup older than the newest epoch
    /// any peer shows is refused. With no confirming peer the import is refused unless the
    /// operator says `offline` (recorded in the history).
    async fn check_peers(
        &self,
        backup: &cosigner_backup::ShareBackup,
        peers: &[String],
        offline: bool,
    ) -> Result<(), Status> {
        let (vault, epoch) = (&backup.meta.vault_id, backup.meta.epoch);
        let tls = self.ceremonies.client_tls();
        let confirmed = cosigner_node::peers::ask(
            peers,
            &backup.keys,
            vault,
            epoch,
            &backup.held.record,
            offline,
            |addr| {
                let tls = tls.clone();
                async move {
                    let channel = tonic::transport::Endpoint::from_shared(addr)
                        .map_err(|e| e.to_string())?
                        .tls_config(tls)
                        .map_err(|e| format!("TLS: {e}"))?
                        .connect_timeout(std::time::Duration::from_secs(5))
                        .timeout(std::time::Duration::from_secs(10))
                        .connect()
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(api::cosigner_client::CosignerClient::new(channel))
                }
            },
        )
        .await
        .map_err(|e| crate::ports::status(&e))?;
        if !confirmed {
            tracing::warn!(vault = %vault, epoch, "backup imported offline: no peer confirmed its epoch");
        }
        Ok(())
    }

    /// ImportBackup: checks, then seals the share (and, on an empty daemon, the identity).
    pub async fn import(
        &self,
        caller: &Caller,
        bytes: Vec<u8>,
        pass: Zeroizing<String>,
        replaces: Vec<u8>,
        peers: Vec<String>,
        offline: bool,
    ) -> Result<api::Vault, Status> {
        // The clear metadata first: a file that is not a backup costs no Argon2 run and is
        // not recorded against any vault.
        let meta = cosigner_backup::inspect(&bytes).map_err(backup_status)?;
        check_vault_id(&meta.vault_id)
            .map_err(|e| Status::invalid_argument(format!("backup: vault_id: {e}")))?;
        let started = now_ms();
        let result = self
            .import_inner(bytes, pass, replaces, &peers, offline)
            .await;
        let pk = result
            .as_ref()
            .map(|v| v.public_key.clone())
            .map_err(Clone::clone);
        let seq = self
            .record(
                Kind::BackupImport,
                caller,
                &meta.vault_id,
                meta.epoch,
                started,
                &pk,
            )
            .await?;
        match &result {
            Ok(_) => {
                tracing::info!(vault = %meta.vault_id, epoch = meta.epoch, seq, "backup imported")
            }
            Err(s) => {
                tracing::warn!(vault = %meta.vault_id, epoch = meta.epoch, seq, error = %s.message(), "backup import refused")
            }
        }
        result
    }

    async fn import_inner(
        &self,
        bytes: Vec<u8>,
        pass: Zeroizing<String>,
        replaces: Vec<u8>,
        peers: &[String],
        offline: bool,
    ) -> Result<api::Vault, Status> {
        let replaces: [u8; 32] = replaces.as_slice().try_into().map_err(|_| {
            Status::invalid_argument(format!(
                "replaces_party: {} bytes; the party id (32 bytes) of the party this machine replaces is required",
                replaces.len()
            ))
        })?;
        let backup =
            tokio::task::spawn_blocking(move || cosigner_backup::open(&bytes, pass.as_bytes()))
                .await
                .map_err(|e| Status::internal(format!("backup task failed: {e}")))?
                .map_err(backup_status)?;
        let party = backup.keys.party_id();
        let vault = backup.meta.vault_id.clone();
        let epoch = backup.meta.epoch;
        if party != replaces {
            return Err(Status::failed_precondition(format!(
                "the backup is the share of party {} ({:?}), but the request replaces party {}: importing it would make this machine another party than the one it replaces",
                short(&party),
                backup.meta.party_name,
                short(&replaces)
            )));
        }
        let _changing = self.ceremonies.exclusive(&vault)?;
        let slots = self.vaults.slots(&vault).await?;
        let vaults = self.vaults.ids().await?;
        let adopt = cosigner_node::restore::check(
            &cosigner_node::restore::Backup {
                party,
                party_name: &backup.meta.party_name,
                vault: &vault,
                epoch,
            },
            &cosigner_node::restore::Restoring {
                this: "daemon",
                me: self.me.party_id(),
                newest_seen: newest_epoch_seen(&self.history, &vault).await?,
                floor: self.vaults.floor(&vault).await?,
                held: slots.current.or(slots.pending).or(slots.previous),
                vaults: &vaults,
            },
        )
        .map_err(|e| crate::ports::status(&e))?;
        self.check_peers(&backup, peers, offline).await?;
        if adopt {
            if self.ceremonies.running() > 0 {
                return Err(Status::unavailable(
                    "ceremonies are running on this daemon; import when they have finished",
                ));
            }
            Identity::adopt(&self.data_dir, &self.sealer, &backup.keys)
                .await
                .map_err(crate::vaults::seal_status)?;
            self.me.replace(backup.keys.clone());
            tracing::warn!(
                party_id = %hex(&party),
                "this daemon now acts as the backup's party (identity replaced)"
            );
        }
        self.vaults.seal_pending(&backup.held).await?;
        self.vaults.promote(&vault).await?;
        self.vaults.describe(&vault).await
    }
}
