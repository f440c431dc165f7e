//! `cosignerctl`: the operator's command line for cosignerd.

mod backup;
mod bench;
mod connect;
mod history;
mod party;
mod payload;
mod policy;
mod status;
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
        Command::Vault { command } => {
            vault::run(&cli.connect, cli.connect.channel().await?, command).await
        }
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
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status::to_json(&s)).context("JSON")?
                );
            } else {
                print!("{}", status::render(&s));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
