//! `cosignerctl`: the operator's command line for cosignerd.

mod backup;
mod bench;
mod connect;
mod history;
mod party;
mod payload;
mod policy;
mod vault;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use cosigner_api::v1::GetStatusRequest;
use cosigner_api::v1::cosigner_client::CosignerClient;
use cosigner_pki::devca::{self, DevPkiSpec};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use connect::ConnectArgs;

#[derive(Parser, Debug)]
#[command(
    name = "cosignerctl",
    version,
    about = "Operator tool and reference client for cosignerd"
)]
struct Cli {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Ask the daemon's standard gRPC health service; exits 0 only when SERVING.
    Health {
        /// Service to ask about ("" = the whole daemon).
        #[arg(long, default_value = "")]
        service: String,
    },
    /// The daemon's identity, version, uptime and what this build does not do yet.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Read, verify and export the daemon's ceremony history (admin).
    History {
        #[command(subcommand)]
        command: history::HistoryCommand,
    },
    /// A device party: keys and shares in a passphrase-encrypted file; starts or joins
    /// keygen, sign and reshare.
    Party(party::PartyArgs),
    /// A daemon's share backups: export, import, inspect.
    Backup {
        #[command(subcommand)]
        command: backup::BackupCommand,
    },
    /// Emergency recovery, offline: rebuild a vault's private key from t backups of one
    /// epoch. The end of that vault's threshold protection; see the README.
    Recover(backup::RecoverArgs),
    /// Benchmarks against running daemons.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Policy bundles: test one locally, dry-run a request on a daemon, reload (admin).
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// The daemon's vaults and share slots (admin).
    Vault {
        #[command(subcommand)]
        command: vault::VaultCommand,
    },
    /// Certificates for local set-ups and tests.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
}

#[derive(Subcommand, Debug)]
enum CertsCommand {
    /// Make a development CA and certificates for daemons, admins and parties.
    ///
    /// Writes DIR/ca.pem, DIR/ca.key and DIR/<name>.pem, DIR/<name>.key for each identity.
    /// Daemon certificates serve TLS for --host names and act as `party` clients; admin
    /// certificates carry the `admin` role.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, default_value = "cosigner")]
        trust_domain: String,
        /// Daemon identities (repeatable).
        #[arg(long = "daemon", value_name = "NAME", default_values = ["cosignerd"])]
        daemons: Vec<String>,
        /// Operator identities (repeatable).
        #[arg(long = "admin", value_name = "NAME", default_values = ["admin"])]
        admins: Vec<String>,
        /// Party identities: user devices and other clients (repeatable).
        #[arg(long = "party", value_name = "NAME", default_values = ["device-1"])]
        parties: Vec<String>,
        /// DNS names or IP addresses in the daemons' certificates (repeatable).
        #[arg(long = "host", value_name = "HOST", default_values = ["localhost", "127.0.0.1", "::1"])]
        hosts: Vec<String>,
        /// Validity of the certificates in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Replace an existing CA in DIR (every certificate it issued stops being trusted).
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let hint = cli.connect.hint();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cosignerctl: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cosignerctl: {}", describe(&e));
            if let Some(hint) = hint
                && e.downcast_ref::<tonic::Status>().is_some()
            {
                eprintln!("{hint}");
            }
            ExitCode::FAILURE
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// gRPC errors print as `CODE: message`, the way operators search for them.
fn describe(e: &anyhow::Error) -> String {
    if let Some(status) = e.downcast_ref::<tonic::Status>() {
        // A refused TLS handshake surfaces as UNKNOWN "transport error"; the cause (for
        // example "certificate required" or "UnknownIssuer") is in the source chain.
        let mut text = format!("{}: {}", code_name(status.code()), status.message());
        let mut source = std::error::Error::source(status);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        return text;
    }
    format!("{e:#}")
}

fn code_name(code: tonic::Code) -> String {
    // tonic's Debug is CamelCase; operators know the SCREAMING_CASE names of the gRPC spec.
    let camel = format!("{code:?}");
    let mut out = String::new();
    for (i, ch) in camel.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Certs {
            command:
                CertsCommand::Init {
                    dir,
                    trust_domain,
                    daemons,
                    admins,
                    parties,
                    hosts,
                    days,
                    force,
                },
        } => {
            let spec = DevPkiSpec {
                trust_domain,
                daemons,
                admins,
                parties,
                hosts,
                validity_days: days,
            };
            let issued = devca::init(&dir, &spec, force)?;
            println!("development CA: {}", issued.ca_cert.display());
            for f in &issued.files {
                println!("  wrote {}", f.display());
            }
            println!(
                "These are for local set-ups and tests only: the CA key sits beside them unprotected."
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::History { command } => history::run(cli.connect.channel().await?, command).await,
        Command::Vault { command } => vault::run(cli.connect.channel().await?, command).await,
        Command::Backup { command } => match command {
            backup::BackupCommand::Inspect { .. } => {
                // Offline: no daemon needed to read a file's metadata.
                backup::run_offline(command)?;
                Ok(ExitCode::SUCCESS)
            }
            _ => {
                backup::run(cli.connect.channel().await?, command).await?;
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Recover(args) => {
            backup::recover(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy { command } => policy::run(&cli.connect, command).await,
        Command::Bench { command } => {
            bench::run(&cli.connect, command).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Party(args) => {
            party::run(&cli.connect, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Health { service } => {
            let channel = cli.connect.channel().await?;
            let resp = HealthClient::new(channel)
                .check(HealthCheckRequest { service })
                .await?
                .into_inner();
            let status = ServingStatus::try_from(resp.status).unwrap_or(ServingStatus::Unknown);
            println!("{}", status.as_str_name());
            Ok(if status == ServingStatus::Serving {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Status { json } => {
            let channel = cli.connect.channel().await?;
            let s = CosignerClient::new(channel)
                .get_status(GetStatusRequest {})
                .await?
                .into_inner();
            if json {
                let v = serde_json::json!({
                    "version": s.version,
                    "identity": s.identity,
                    "started_at_ms": s.started_at_ms,
                    "uptime_seconds": s.uptime_seconds,
                    "sealing_backend": s.sealing_backend,
                    "policy_hash": s.policy_hash,
                    "relay_enabled": s.relay_enabled,
                    "party_id": hex(&s.party_id),
                    "encryption_key": hex(&s.encryption_key),
                    "history_entries": s.history_entries,
                    "history_bytes": s.history_bytes,
                    "vaults": s.vaults.iter().map(|v| serde_json::json!({
                        "vault_id": v.vault_id,
                        "epoch": v.epoch,
                    })).collect::<Vec<_>>(),
                    "unavailable": s.unavailable,
                    "rotations": s.rotations.iter().map(|r| serde_json::json!({
                        "vault_id": r.vault_id,
                        "schedule": r.schedule,
                        "next_run_at_ms": r.next_run_at_ms,
                        "last_attempt_at_ms": r.last_attempt_at_ms,
                        "last_success_at_ms": r.last_success_at_ms,
                        "last_error": r.last_error,
                        "consecutive_failures": r.consecutive_failures,
                        "runs_succeeded": r.runs_succeeded,
                        "runs_failed": r.runs_failed,
                        "epoch": r.epoch,
                    })).collect::<Vec<_>>(),
                    "backups": s.backups.iter().map(|b| serde_json::json!({
                        "vault_id": b.vault_id,
                        "epoch": b.epoch,
                        "backup_epoch": b.has_backup.then_some(b.backup_epoch),
                        "backup_renewal_needed": b.backup_renewal_needed,
                    })).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&v).context("JSON")?);
            } else {
                let rows = [
                    ("identity", s.identity),
                    ("party id", hex(&s.party_id)),
                    ("version", s.version),
                    ("uptime", format!("{} s", s.uptime_seconds)),
                    ("sealing", s.sealing_backend),
                    (
                        "policy",
                        if s.policy_hash.is_empty() {
                            "none".into()
                        } else {
                            s.policy_hash
                        },
                    ),
                    (
                        "relay",
                        if s.relay_enabled { "enabled" } else { "off" }.into(),
                    ),
                    ("vaults", s.vaults.len().to_string()),
                    (
                        "history",
                        format!(
                            "{} entries, {} bytes on disk",
                            s.history_entries, s.history_bytes
                        ),
                    ),
                ];
                for (k, v) in rows {
                    println!("{k:<10} {v}");
                }
                for r in &s.rotations {
                    println!(
                        "rotation   {} on \"{}\": {} ok, {} failed; next in {} s{}",
                        r.vault_id,
                        r.schedule,
                        r.runs_succeeded,
                        r.runs_failed,
                        ((r.next_run_at_ms - s.started_at_ms) / 1000 - s.uptime_seconds as i64)
                            .max(0),
                        if r.last_error.is_empty() {
                            String::new()
                        } else {
                            format!("; last error: {}", r.last_error)
                        }
                    );
                }
                for b in s.backups.iter().filter(|b| b.backup_renewal_needed) {
                    println!(
                        "backup     {} is at epoch {} but {}: export a new backup",
                        b.vault_id,
                        b.epoch,
                        if b.has_backup {
                            format!("the newest backup is of epoch {}", b.backup_epoch)
                        } else {
                            "no backup was exported".to_string()
                        }
                    );
                }
                if !s.unavailable.is_empty() {
                    println!("not in this build:");
                    for u in s.unavailable {
                        println!("  {u}");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
