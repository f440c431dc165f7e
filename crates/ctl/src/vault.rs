//! `cosignerctl vault ...`: the daemon's vaults and the repairs an operator may need.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use cosigner_api::v1 as pb;
use cosigner_api::v1::cosigner_client::CosignerClient;
use cosigner_relay::keys::hex;
use serde_json::json;
use tonic::transport::Channel;

#[derive(Subcommand, Debug)]
pub enum VaultCommand {
    /// Every vault this daemon holds a share of, as JSON lines.
    List,
    /// One vault: key, committee, epoch and slots (JSON).
    Show { vault: String },
    /// After an interrupted reshare: promote the pending share (the other new parties are
    /// at the new epoch) or discard it (they are not).
    Resolve {
        vault: String,
        #[arg(long, conflicts_with = "discard", required_unless_present = "discard")]
        promote: bool,
        #[arg(long)]
        discard: bool,
    },
    /// Forget the previous epoch's share now (it is dropped by itself after the new
    /// epoch's first signature).
    DropPrevious { vault: String },
}

pub fn vault_json(v: &pb::Vault) -> serde_json::Value {
    let slots = v.slots.unwrap_or_default();
    json!({
        "vault_id": v.vault_id,
        "public_key": hex(&v.public_key),
        "chain_code": hex(&v.chain_code),
        "epoch": v.epoch,
        "threshold": v.committee.as_ref().map(|c| c.threshold),
        "members": v.committee.as_ref().map(|c| c.parties.iter().map(|p| json!({
            "name": p.name, "party_id": hex(&p.party_id), "encryption_key": hex(&p.encryption_key), "index": p.index,
        })).collect::<Vec<_>>()),
        "slots": {
            "current_epoch": slots.current_epoch,
            "pending_epoch": slots.has_pending.then_some(slots.pending_epoch),
            "previous_epoch": slots.has_previous.then_some(slots.previous_epoch),
        },
        "created_at_ms": v.created_at_ms,
        "last_reshare_at_ms": v.last_reshare_at_ms,
    })
}

pub async fn run(channel: Channel, command: VaultCommand) -> Result<ExitCode> {
    let mut c = CosignerClient::new(channel);
    match command {
        VaultCommand::List => {
            for v in c
                .list_vaults(pb::ListVaultsRequest {})
                .await?
                .into_inner()
                .vaults
            {
                println!("{}", vault_json(&v));
            }
        }
        VaultCommand::Show { vault } => {
            let v = c
                .get_vault(pb::GetVaultRequest { vault_id: vault })
                .await?
                .into_inner();
            println!("{}", vault_json(&v));
        }
        VaultCommand::Resolve { vault, promote, .. } => {
            let v = c
                .resolve_pending(pb::ResolvePendingRequest {
                    vault_id: vault,
                    promote,
                })
                .await?
                .into_inner();
            if let Some(v) = v.vault {
                println!("{}", vault_json(&v));
            }
        }
        VaultCommand::DropPrevious { vault } => {
            let r = c
                .drop_previous_share(pb::DropPreviousShareRequest { vault_id: vault })
                .await?
                .into_inner();
            println!("{}", json!({"dropped_epoch": r.dropped_epoch}));
        }
    }
    Ok(ExitCode::SUCCESS)
}
