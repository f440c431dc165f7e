//! `cosignerctl vault ...`: the daemon's vaults and the repairs an operator may need.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use cosigner_api::v1 as pb;
use cosigner_api::v1::cosigner_client::CosignerClient;
use cosigner_relay::VaultRecord;
use cosigner_relay::commit::{Phase, Report};
use cosigner_relay::keys::hex;
use prost::Message as _;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::connect::ConnectArgs;
use crate::party::file::write_private;
use crate::party::party_ref;

#[derive(Subcommand, Debug)]
pub enum VaultCommand {
    /// Every vault this daemon holds a share of, as JSON lines.
    List,
    /// One vault: key, committee, epoch, slots and state (JSON).
    Show { vault: String },
    /// After an interrupted keygen or reshare: let the daemon decide from the other
    /// parties' signed reports (promote on a certificate, discard when every new party
    /// reported none). Exit status 1 when it stays undecided.
    Resolve {
        vault: String,
        /// Another party's daemon to ask for its report (repeatable): https://host:port.
        #[arg(long = "peer", value_name = "ADDR")]
        peers: Vec<String>,
        /// A report file a device wrote with `party evidence` (repeatable).
        #[arg(long = "evidence", value_name = "FILE")]
        evidence: Vec<PathBuf>,
        /// A new party that is gone for good (name or 64-hex party id; repeatable): its
        /// report is not waited for.
        #[arg(long = "lost", value_name = "NAME_OR_ID")]
        lost: Vec<String>,
    },
    /// The daemon's record of a vault, its endorsement and its signed commit report (JSON).
    Record {
        #[arg(long)]
        vault: String,
        /// Write the signed commit report here (for `vault resolve --evidence` elsewhere).
        #[arg(long, value_name = "FILE")]
        report_out: Option<PathBuf>,
    },
    /// Forget the previous epoch's share now (it is dropped by itself after the new
    /// epoch's first signature).
    DropPrevious { vault: String },
}

pub fn vault_json(v: &pb::Vault) -> Value {
    let slots = v.slots.unwrap_or_default();
    json!({
        "vault_id": v.vault_id,
        "state": v.state,
        "problem": (!v.problem.is_empty()).then_some(&v.problem),
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

fn report_json(r: &Report) -> Value {
    json!({
        "party_id": hex(&r.party),
        "verified": r.verify(),
        "context": r.context.map(|c| hex(&c)),
        "phase": r.phase.map(Phase::as_str),
        "current_epoch": r.current_epoch,
        "pending_epoch": r.pending_epoch,
        "epoch_seen": r.epoch_seen,
        "about": r.about.map(|c| hex(&c)),
        "readies": r.readies.iter().map(|x| hex(&x.party)).collect::<Vec<_>>(),
        "at_ms": r.at_ms,
        "digest": hex(&r.digest()),
    })
}

fn record_json(r: &pb::VaultRecordResponse) -> Value {
    let record = (!r.record.is_empty()).then(|| match VaultRecord::decode(&r.record) {
        Ok(rec) => json!({
            "epoch": rec.epoch(),
            "public_key": hex(&rec.public.public_key.0),
            "threshold": rec.public.committee.threshold(),
            "members": rec.members.iter().map(|m| json!({"name": m.name, "party_id": hex(&m.id)})).collect::<Vec<_>>(),
            "public_hash": hex(&rec.public_hash()),
        }),
        Err(e) => json!({"error": e.to_string()}),
    });
    let report = (!r.commit_report.is_empty()).then(|| match Report::decode(&r.commit_report) {
        Ok(rep) => report_json(&rep),
        Err(e) => json!({"error": e.to_string()}),
    });
    json!({
        "party_id": hex(&r.party_id),
        "state": r.state,
        "epoch": r.epoch,
        "record": record,
        "endorsement": r.endorsement.as_ref().map(|e| hex(&e.party_id)),
        "commit_report": report,
    })
}

/// GetVaultRecord as the admin (no request signature: the admin's TLS identity suffices).
async fn vault_record(
    c: &mut CosignerClient<Channel>,
    vault: &str,
    about: Option<[u8; 32]>,
) -> std::result::Result<pb::VaultRecordResponse, tonic::Status> {
    let body = pb::VaultRecordBody {
        vault_id: vault.to_string(),
        about: about.map(|a| a.to_vec()).unwrap_or_default(),
    }
    .encode_to_vec();
    c.get_vault_record(pb::VaultRecordRequest { body, auth: None })
        .await
        .map(|r| r.into_inner())
}

pub async fn run(
    connect: &ConnectArgs,
    channel: Channel,
    command: VaultCommand,
) -> Result<ExitCode> {
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
        VaultCommand::Record { vault, report_out } => {
            let r = vault_record(&mut c, &vault, None).await?;
            if let Some(out) = &report_out {
                if r.commit_report.is_empty() {
                    bail!("the daemon sent no commit report for vault {vault:?}");
                }
                write_private(out, &r.commit_report)?;
            }
            println!("{}", record_json(&r));
        }
        VaultCommand::Resolve {
            vault,
            peers,
            evidence,
            lost,
        } => return resolve(connect, &mut c, vault, &peers, &evidence, &lost).await,
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

/// Names and ids of a record's members (for `--lost NAME`).
fn record_members(bytes: &[u8]) -> Vec<(String, [u8; 32])> {
    VaultRecord::decode(bytes)
        .map(|r| r.members.iter().map(|m| (m.name.clone(), m.id)).collect())
        .unwrap_or_default()
}

async fn resolve(
    connect: &ConnectArgs,
    c: &mut CosignerClient<Channel>,
    vault: String,
    peers: &[String],
    evidence: &[PathBuf],
    lost: &[String],
) -> Result<ExitCode> {
    let mut reports: Vec<Vec<u8>> = Vec::new();
    let mut known: Vec<(String, [u8; 32])> = Vec::new();
    // The ceremony this daemon is in doubt about: the peers are asked about it, so their
    // reports are fresh (a report about another ceremony counts only if it names this one).
    let mut about = None;
    if let Ok(own) = vault_record(c, &vault, None).await {
        known.extend(record_members(&own.record));
        about = Report::decode(&own.commit_report)
            .ok()
            .and_then(|r| r.context);
    }
    if let Ok(v) = c
        .get_vault(pb::GetVaultRequest {
            vault_id: vault.clone(),
        })
        .await
    {
        for p in v
            .into_inner()
            .committee
            .map(|c| c.parties)
            .unwrap_or_default()
        {
            if let Ok(id) = <[u8; 32]>::try_from(p.party_id.as_slice()) {
                known.push((p.name, id));
            }
        }
    }
    let timeout = Some(Duration::from_secs(connect.timeout.max(1)));
    for addr in peers {
        let answer = match connect.channel_to(addr, timeout).await {
            Ok(ch) => vault_record(&mut CosignerClient::new(ch), &vault, about)
                .await
                .map_err(|s| anyhow!("{} ({:?})", s.message(), s.code())),
            Err(e) => Err(e),
        };
        match answer {
            Ok(r) => {
                known.extend(record_members(&r.record));
                if r.commit_report.is_empty() {
                    eprintln!(
                        "cosignerctl: {addr} ({}) has no commit report for vault {vault:?}",
                        hex(&r.party_id)
                    );
                } else {
                    match Report::decode(&r.commit_report) {
                        Ok(rep) => {
                            eprintln!(
                                "cosignerctl: {addr}: report by {} (phase {}, epoch {})",
                                hex(&rep.party),
                                rep.phase.map_or("none", Phase::as_str),
                                rep.current_epoch
                                    .map_or("none".to_string(), |e| e.to_string())
                            );
                            reports.push(r.commit_report);
                        }
                        Err(e) => eprintln!("cosignerctl: {addr}: {e}"),
                    }
                }
            }
            Err(e) => eprintln!("cosignerctl: cannot ask {addr} for its report: {e:#}"),
        }
    }
    for f in evidence {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        Report::decode(&bytes).map_err(|e| anyhow!("{}: {e}", f.display()))?;
        reports.push(bytes);
    }
    let lost: Vec<Vec<u8>> = lost
        .iter()
        .map(|l| {
            party_ref(l, &known)
                .map(|id| id.to_vec())
                .with_context(|| format!("--lost {l:?}"))
        })
        .collect::<Result<_>>()?;
    let r = c
        .resolve_pending(pb::ResolvePendingRequest {
            vault_id: vault.clone(),
            reports,
            lost,
        })
        .await?
        .into_inner();
    println!(
        "{}",
        json!({
            "vault_id": vault,
            "decision": r.decision,
            "detail": r.detail,
            "vault": r.vault.as_ref().map(vault_json),
        })
    );
    if r.decision == "undecided" {
        eprintln!("cosignerctl: vault {vault:?} stays in doubt: {}", r.detail);
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
