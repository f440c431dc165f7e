//! `cosignerctl backup ...` (a daemon's share backups) and `cosignerctl recover` (offline
//! emergency recovery of a vault's key from t backups).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use cosigner_api::v1 as pb;
use cosigner_api::v1::cosigner_client::CosignerClient;
use cosigner_backup::{BackupMeta, ShareBackup};
use cosigner_relay::keys::{hex, parse_id};
use cosigner_tss::{DerivationPath, KeyShare, recover_key};
use serde_json::json;
use tonic::transport::Channel;
use zeroize::Zeroizing;

use crate::party::file::passphrase_from;
use crate::vault::vault_json;

/// Where backup passphrases come from when no file is given.
pub const PASSPHRASE_ENV: &str = "COSIGNERCTL_BACKUP_PASSPHRASE";

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Export the daemon's current share of a vault, encrypted under a passphrase (admin).
    Export {
        #[arg(long)]
        vault: String,
        /// Where to write the backup (mode 0600; refuses to overwrite).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// File whose first line is the backup passphrase (default: $COSIGNERCTL_BACKUP_PASSPHRASE).
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Import a backup into the daemon, which seals it to its own TPM (admin). A daemon
    /// holding no vault takes the backup's party identity.
    Import {
        #[arg(long, value_name = "FILE")]
        backup: PathBuf,
        /// The party id (hex) of the party this machine replaces; must be the backup's.
        #[arg(long, value_name = "PARTY_ID")]
        replaces: String,
        #[arg(long, value_name = "FILE")]
        passphrase_file: Option<PathBuf>,
        /// Another committee daemon (repeatable: https://host:port): the importing daemon
        /// asks each for its epoch of the vault and refuses a backup older than any answer.
        #[arg(long = "peer", value_name = "ADDR")]
        peers: Vec<String>,
        /// Import although no peer could confirm the epoch (recorded in the history).
        #[arg(long)]
        offline: bool,
    },
    /// Print a backup's clear metadata (no passphrase needed; trusted only once opened).
    Inspect {
        #[arg(long, value_name = "FILE")]
        backup: PathBuf,
    },
}

/// `cosignerctl recover`: offline; talks to no daemon.
#[derive(Args, Debug)]
pub struct RecoverArgs {
    /// A backup of one party (repeat: at least the vault's threshold, all of one epoch).
    #[arg(long = "backup", value_name = "FILE", required = true)]
    pub backups: Vec<PathBuf>,
    /// Passphrase file: one for all backups, or one per backup in the same order
    /// (default: $COSIGNERCTL_BACKUP_PASSPHRASE for all).
    #[arg(long = "passphrase-file", value_name = "FILE")]
    pub passphrase_files: Vec<PathBuf>,
    /// A BIP-32 non-hardened path the vault used ("m/44/60/0/0/0"); repeatable. The root
    /// key is always printed.
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// Print the keys as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn meta_json(m: &BackupMeta) -> serde_json::Value {
    json!({
        "vault_id": m.vault_id,
        "scheme": m.scheme,
        "public_key": m.public_key,
        "chain_code": m.chain_code,
        "party_id": m.party_id,
        "party_name": m.party_name,
        "epoch": m.epoch,
        "threshold": m.threshold,
        "committee": m.committee.iter().map(|p| json!({"party_id": p.party_id, "name": p.name})).collect::<Vec<_>>(),
        "created_at_ms": m.created_at_ms,
        "source": m.source,
    })
}

/// Writes a new file; never replaces one (an older backup must not vanish by mistake).
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    match cosigner_relay::files::write_new(path, bytes) {
        Err(e) if e.source.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "{} exists; choose another name (backups are never overwritten)",
            path.display()
        ),
        r => r.with_context(|| format!("cannot write {}", path.display())),
    }
}

pub async fn run(channel: Channel, command: BackupCommand) -> Result<()> {
    let mut c = CosignerClient::new(channel);
    match command {
        BackupCommand::Export {
            vault,
            out,
            passphrase_file,
            json,
        } => {
            if out.exists() {
                bail!("{} exists; choose another name", out.display());
            }
            let pass = passphrase_from(passphrase_file.as_deref(), PASSPHRASE_ENV)?;
            let r = c
                .export_backup(pb::ExportBackupRequest {
                    vault_id: vault.clone(),
                    passphrase: pass.to_string(),
                })
                .await?
                .into_inner();
            write_new(&out, &r.backup)?;
            let meta = cosigner_backup::inspect(&r.backup).map_err(|e| anyhow!("{e}"))?;
            if json {
                println!("{}", json!({"file": out, "backup": meta_json(&meta)}));
            } else {
                println!(
                    "wrote {}: vault {} epoch {} party {} ({})",
                    out.display(),
                    meta.vault_id,
                    meta.epoch,
                    meta.party_name,
                    &meta.party_id[..16]
                );
                println!(
                    "Keep it with its passphrase apart from the machine. It stops being useful at the vault's next reshare or rotation (epoch {}): export again then.",
                    meta.epoch + 1
                );
            }
        }
        BackupCommand::Import {
            backup,
            replaces,
            passphrase_file,
            peers,
            offline,
        } => {
            let bytes = std::fs::read(&backup)
                .with_context(|| format!("cannot read {}", backup.display()))?;
            let replaces = parse_id(&replaces)
                .ok_or_else(|| anyhow!("--replaces must be a party id (64 hex characters)"))?;
            let pass = passphrase_from(passphrase_file.as_deref(), PASSPHRASE_ENV)?;
            let v = c
                .import_backup(pb::ImportBackupRequest {
                    backup: bytes,
                    passphrase: pass.to_string(),
                    replaces_party: replaces.to_vec(),
                    peers,
                    offline,
                })
                .await?
                .into_inner()
                .vault
                .ok_or_else(|| anyhow!("the daemon answered without the vault"))?;
            println!("{}", vault_json(&v));
        }
        BackupCommand::Inspect { .. } => run_offline(command)?,
    }
    Ok(())
}

/// The commands that need no daemon.
pub fn run_offline(command: BackupCommand) -> Result<()> {
    if let BackupCommand::Inspect { backup } = command {
        let bytes =
            std::fs::read(&backup).with_context(|| format!("cannot read {}", backup.display()))?;
        let meta =
            cosigner_backup::inspect(&bytes).map_err(|e| anyhow!("{}: {e}", backup.display()))?;
        println!("{}", meta_json(&meta));
    }
    Ok(())
}

fn open_all(args: &RecoverArgs) -> Result<Vec<ShareBackup>> {
    let n = args.backups.len();
    let files = &args.passphrase_files;
    if !(files.is_empty() || files.len() == 1 || files.len() == n) {
        bail!(
            "{} passphrase files for {n} backups: give one for all, or one per backup",
            files.len()
        );
    }
    // Metadata first: refuse a mix of vaults or epochs before asking Argon2 for anything.
    let mut bytes = Vec::with_capacity(n);
    let mut metas = Vec::with_capacity(n);
    for f in &args.backups {
        let b = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        metas.push(cosigner_backup::inspect(&b).map_err(|e| anyhow!("{}: {e}", f.display()))?);
        bytes.push(b);
    }
    let first = &metas[0];
    for (m, f) in metas.iter().zip(&args.backups).skip(1) {
        if m.vault_id != first.vault_id || m.public_key != first.public_key {
            bail!(
                "{} is a backup of vault {:?}, {} of vault {:?}: recovery needs backups of one vault",
                f.display(),
                m.vault_id,
                args.backups[0].display(),
                first.vault_id
            );
        }
        if m.epoch != first.epoch {
            bail!(
                "{} is of epoch {}, {} of epoch {}: shares of different epochs do not combine (each reshare replaced them all); use backups of one epoch",
                f.display(),
                m.epoch,
                args.backups[0].display(),
                first.epoch
            );
        }
    }
    if (n as u32) < first.threshold {
        bail!(
            "{n} backup(s) of a {}-of-{} vault: at least {} are needed",
            first.threshold,
            first.committee.len(),
            first.threshold
        );
    }
    let mut out = Vec::with_capacity(n);
    for (i, (b, f)) in bytes.iter().zip(&args.backups).enumerate() {
        let pf = match files.len() {
            0 => None,
            1 => Some(files[0].as_path()),
            _ => Some(files[i].as_path()),
        };
        let pass = passphrase_from(pf, PASSPHRASE_ENV)?;
        out.push(
            cosigner_backup::open(b, pass.as_bytes())
                .map_err(|e| anyhow!("{}: {e}", f.display()))?,
        );
    }
    Ok(out)
}

/// Ethereum address (EIP-55 mixed case) of a compressed secp256k1 key.
fn eth_address(compressed: &[u8; 33]) -> Result<String> {
    let pk = bitcoin::secp256k1::PublicKey::from_slice(compressed)
        .map_err(|e| anyhow!("public key: {e}"))?;
    let raw = pk.serialize_uncompressed();
    Ok(alloy_primitives::Address::from_raw_public_key(&raw[1..]).to_checksum(None))
}

fn key_json(path: &str, secret: &[u8; 32], public: &[u8; 33]) -> Result<serde_json::Value> {
    use bitcoin::{CompressedPublicKey, NetworkKind, PrivateKey};
    let sk = bitcoin::secp256k1::SecretKey::from_slice(secret)
        .map_err(|e| anyhow!("secret key: {e}"))?;
    let cpk = CompressedPublicKey::from_slice(public).map_err(|e| anyhow!("public key: {e}"))?;
    Ok(json!({
        "path": path,
        "private_key_hex": hex(secret),
        "public_key": hex(public),
        "bitcoin_wif_mainnet": PrivateKey::new(sk, NetworkKind::Main).to_wif(),
        "bitcoin_wif_testnet": PrivateKey::new(sk, NetworkKind::Test).to_wif(),
        "bitcoin_p2wpkh_mainnet": bitcoin::Address::p2wpkh(&cpk, bitcoin::Network::Bitcoin).to_string(),
        "ethereum_address": eth_address(public)?,
    }))
}

pub fn recover(args: RecoverArgs) -> Result<()> {
    let backups = open_all(&args)?;
    let shares: Vec<&KeyShare> = backups.iter().map(|b| &b.held.share).collect();
    let key = recover_key(&shares).map_err(|e| anyhow!("{e}"))?;
    let meta = &backups[0].meta;
    let mut keys = vec![key_json("m", key.secret(), &key.public_key().0)?];
    for p in &args.paths {
        let path = DerivationPath::parse(p).map_err(|e| anyhow!("--path {p}: {e}"))?;
        let d = key.derive(&path).map_err(|e| anyhow!("{e}"))?;
        keys.push(key_json(&path.to_string(), &d.secret, &d.public_key.0)?);
    }
    let out = Zeroizing::new(
        json!({
            "vault_id": meta.vault_id,
            "epoch": meta.epoch,
            "public_key": meta.public_key,
            "checked": "the rebuilt key's public key equals the vault's",
            "keys": keys,
        })
        .to_string(),
    );
    if !args.json {
        eprintln!(
            "WARNING: this is the whole private key of vault {:?}. Whoever reads it can spend alone; the vault's threshold protection is gone for good. Move the funds to a new vault and retire this one.",
            meta.vault_id
        );
    }
    println!("{}", out.as_str());
    Ok(())
}
