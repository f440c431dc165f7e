//! `cosignerctl party`: a device party, the reference client for wallets.
//!
//! It keeps its identity and shares in a passphrase-encrypted file ([`file`]), and it can
//! start a ceremony (create the relay session, send the signed request to the daemons that
//! take part, and take part itself) or join one from a request file another party wrote.
//! It runs the same engine and the same driver as the daemon, and ends keygen and reshare
//! with the same pending / READY / promote steps.

pub mod file;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use cosigner_api::v1 as api;
use cosigner_api::v1::cosigner_client::CosignerClient;
use cosigner_api::v1::relay_client::RelayClient;
use cosigner_relay::driver::engine_nonce;
use cosigner_relay::keys::{hex, parse_id, short};
use cosigner_relay::record::{committee_from_api, members_to_api};
use cosigner_relay::{Driver, Held, Hello, Member, SessionSpec, VaultRecord};
use cosigner_tss::{
    DerivationPath, Keygen, KeygenParams, PartyId, Reshare, ReshareOutput, ReshareParams, Sign,
    SignParams,
};
use prost::Message as _;
use rand::RngCore;
use serde_json::json;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::connect::ConnectArgs;
use crate::payload::{NetworkArg, PayloadArgs, payload_hash};
use file::PartyFile;

pub const KEYGEN: &str = "/cosigner.v1.Cosigner/Keygen";
pub const SIGN: &str = "/cosigner.v1.Cosigner/Sign";
pub const RESHARE: &str = "/cosigner.v1.Cosigner/Reshare";

#[derive(Args, Debug)]
pub struct PartyArgs {
    /// The party's encrypted file.
    #[arg(long, env = "COSIGNERCTL_PARTY_FILE", value_name = "FILE")]
    pub file: PathBuf,
    /// File whose first line is the passphrase (default: $COSIGNERCTL_PASSPHRASE).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Seconds to wait for the next ceremony message before naming who is missing.
    #[arg(long, default_value_t = 30)]
    pub round_timeout: u64,
    #[command(subcommand)]
    pub command: PartyCommand,
}

#[derive(Subcommand, Debug)]
pub enum PartyCommand {
    /// Create the party file with new identity keys.
    Init {
        /// This party's name in committees ("alice-phone").
        #[arg(long)]
        name: String,
        /// Replace an existing file (its keys and shares are lost).
        #[arg(long)]
        force: bool,
    },
    /// Print this party's id, encryption key and vaults.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Generate a new vault with the given members (this party is always one of them).
    Keygen {
        #[arg(long)]
        vault: String,
        #[arg(long)]
        threshold: u32,
        /// Another member: NAME:PARTY_ID:ENCRYPTION_KEY (hex, as `status` or `party show` print).
        #[arg(long = "member", value_name = "NAME:ID:KEY")]
        members: Vec<String>,
        /// A daemon member to ask: NAME=https://host:port.
        #[arg(long = "daemon", value_name = "NAME=ADDR")]
        daemons: Vec<String>,
        /// Relay address (default: the first daemon's embedded relay).
        #[arg(long)]
        relay: Option<String>,
        /// Write the signed request here for device members that join (`party join`).
        #[arg(long, value_name = "FILE")]
        request_out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Sign a payload with t signers (names from the vault's committee): an EIP-191
    /// message, an unsigned Ethereum transaction, EIP-712 typed data or a Bitcoin PSBT.
    Sign {
        #[arg(long)]
        vault: String,
        #[command(flatten)]
        payload: PayloadArgs,
        #[command(flatten)]
        network: NetworkArg,
        /// The hash the user approved (hex), sent as the request's expected hash instead of
        /// the one computed here: the daemons refuse to sign if theirs differs.
        #[arg(long, value_name = "HEX")]
        expected_hash: Option<String>,
        /// BIP-32 non-hardened path ("m/44/60/0/0/7"); empty for the root key.
        #[arg(long, default_value = "")]
        path: String,
        /// A signer's name in the committee (repeatable; this party's own name includes it).
        #[arg(long = "signer", value_name = "NAME")]
        signers: Vec<String>,
        #[arg(long = "daemon", value_name = "NAME=ADDR")]
        daemons: Vec<String>,
        #[arg(long)]
        relay: Option<String>,
        /// Write the signed request here for device signers that join (`party join`).
        #[arg(long, value_name = "FILE")]
        request_out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Reshare the vault to a new committee and threshold (same public key).
    Reshare {
        #[arg(long)]
        vault: String,
        /// The new threshold (default: the current one).
        #[arg(long)]
        threshold: Option<u32>,
        /// An old member that deals (exactly the old threshold of them).
        #[arg(long = "dealer", value_name = "NAME")]
        dealers: Vec<String>,
        /// A member to add: NAME:PARTY_ID:ENCRYPTION_KEY.
        #[arg(long = "add", value_name = "NAME:ID:KEY")]
        add: Vec<String>,
        /// A member to remove, by name.
        #[arg(long = "remove", value_name = "NAME")]
        remove: Vec<String>,
        #[arg(long = "daemon", value_name = "NAME=ADDR")]
        daemons: Vec<String>,
        #[arg(long)]
        relay: Option<String>,
        /// Write the signed request here for device parties that must join (`party join`).
        #[arg(long, value_name = "FILE")]
        request_out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Write this party's current share of a vault as a share backup (the format a daemon
    /// exports; a daemon or another device can import it).
    BackupExport {
        #[arg(long)]
        vault: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// File whose first line is the backup's passphrase (default: $COSIGNERCTL_BACKUP_PASSPHRASE).
        #[arg(long, value_name = "FILE")]
        backup_passphrase_file: Option<PathBuf>,
    },
    /// Restore a share backup into this party file: this party's own share, or any party's
    /// into a file that holds no vault (the file then takes that party's identity).
    BackupImport {
        #[arg(long, value_name = "FILE")]
        backup: PathBuf,
        #[arg(long, value_name = "FILE")]
        backup_passphrase_file: Option<PathBuf>,
    },
    /// Take part in a keygen, sign or reshare another party started, from its request file.
    Join {
        #[arg(long, value_name = "FILE")]
        request: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn parse_member(s: &str) -> Result<Member> {
    let mut it = s.splitn(3, ':');
    let (Some(name), Some(id), Some(key)) = (it.next(), it.next(), it.next()) else {
        bail!("member {s:?}: expected NAME:PARTY_ID:ENCRYPTION_KEY");
    };
    Ok(Member {
        name: name.to_string(),
        id: parse_id(id)
            .ok_or_else(|| anyhow!("member {name}: party id is not 64 hex characters"))?,
        encryption_key: parse_id(key)
            .ok_or_else(|| anyhow!("member {name}: encryption key is not 64 hex characters"))?,
    })
}

fn parse_daemons(v: &[String]) -> Result<Vec<(String, String)>> {
    v.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(n, a)| (n.to_string(), a.to_string()))
                .ok_or_else(|| anyhow!("--daemon {s:?}: expected NAME=https://host:port"))
        })
        .collect()
}

fn member_by_name<'a>(members: &'a [Member], name: &str) -> Result<&'a Member> {
    members
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| anyhow!("no member named {name:?} in the committee"))
}

fn session_id() -> Vec<u8> {
    let mut s = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

/// What every party command needs: connections and the open file.
pub struct Ctx<'a> {
    pub connect: &'a ConnectArgs,
    pub path: &'a Path,
    pub pass: zeroize::Zeroizing<String>,
    pub file: PartyFile,
    pub round_timeout: Duration,
}

impl Ctx<'_> {
    pub async fn relay(&self, addr: &str) -> Result<RelayClient<Channel>> {
        Ok(RelayClient::new(self.connect.channel_to(addr, None).await?)
            .max_decoding_message_size(8 << 20)
            .max_encoding_message_size(8 << 20))
    }

    pub async fn daemon(&self, addr: &str) -> Result<CosignerClient<Channel>> {
        Ok(CosignerClient::new(
            self.connect.channel_to(addr, None).await?,
        ))
    }

    fn save(&mut self) -> Result<()> {
        self.file.save(self.path, self.pass.as_bytes())
    }

    async fn create_session(
        &self,
        relay: &mut RelayClient<Channel>,
        participants: &[Member],
    ) -> Result<Vec<u8>> {
        let sid = session_id();
        relay
            .create_session(api::CreateSessionRequest {
                session_id: sid.clone(),
                participants: participants.iter().map(|m| m.id.to_vec()).collect(),
                ttl_seconds: 900,
            })
            .await
            .map_err(|s| anyhow!("relay: cannot create the session: {}", s.message()))?;
        Ok(sid)
    }

    async fn driver(
        &self,
        relay: RelayClient<Channel>,
        session: &[u8],
        participants: Vec<Member>,
    ) -> Result<Driver> {
        Driver::open(
            relay,
            self.file.keys.clone(),
            SessionSpec {
                session_id: session.to_vec(),
                participants,
                round_timeout: self.round_timeout,
                fault: None,
            },
        )
        .await
        .map_err(|e| anyhow!("{e}"))
    }

    /// Seal-equivalent for the device: the new share as pending, READY, then promote.
    async fn commit(&mut self, d: &mut Driver, held: Held, new_parties: &[[u8; 32]]) -> Result<()> {
        let vault = held.record.vault_id().to_string();
        let epoch = held.record.epoch();
        let key = held.record.public.public_key.0.to_vec();
        self.file.slots_mut(&vault).pending = Some(held.encode().to_vec());
        if let Err(e) = self.save() {
            d.abort("a device could not save its new share").await;
            return Err(e);
        }
        if let Err(e) = d.ready(new_parties, Some((&key, epoch)), &key, epoch).await {
            self.file.slots_mut(&vault).pending = None;
            self.save()?;
            bail!("{e}");
        }
        let s = self.file.slots_mut(&vault);
        let new = s.pending.take();
        s.previous = s.current.take();
        s.current = new;
        self.save()
    }
}

type DaemonCall<T> = tokio::task::JoinHandle<(String, std::result::Result<T, tonic::Status>)>;

/// Starts one call per daemon; failures are also sent on `fail` so this party can stop its
/// own part of the ceremony at once.
fn spawn_calls<T, F, Fut>(
    daemons: Vec<(String, CosignerClient<Channel>)>,
    fail: mpsc::Sender<String>,
    f: F,
) -> Vec<DaemonCall<T>>
where
    T: Send + 'static,
    F: Fn(CosignerClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>
        + Send
        + 'static,
{
    daemons
        .into_iter()
        .map(|(name, client)| {
            let fut = f(client);
            let fail = fail.clone();
            tokio::spawn(async move {
                let r = fut.await.map(|r| r.into_inner());
                if let Err(s) = &r {
                    let _ = fail
                        .send(format!("{name}: {} ({:?})", s.message(), s.code()))
                        .await;
                }
                (name, r)
            })
        })
        .collect()
}

async fn collect<T>(calls: Vec<DaemonCall<T>>) -> Result<Vec<(String, T)>> {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for c in calls {
        match c.await {
            Ok((name, Ok(v))) => ok.push((name, v)),
            Ok((name, Err(s))) => errors.push(format!("{name}: {} ({:?})", s.message(), s.code())),
            Err(e) => errors.push(format!("a daemon call failed: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(ok)
    } else {
        bail!("{}", errors.join("; "))
    }
}

/// Runs this party's part while watching the daemons: the first daemon failure ends it
/// (the caller then aborts the session, so the other parties stop too).
async fn own_part<T>(
    fail: &mut mpsc::Receiver<String>,
    part: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::select! {
        r = part => r,
        Some(f) = fail.recv() => Err(anyhow!("a daemon failed: {f}")),
    }
}

/// Tells the other parties this one stopped, then returns the error.
async fn aborted<T>(d: &mut Driver, r: Result<T>) -> Result<T> {
    if let Err(e) = &r {
        d.abort(&format!("{e}")).await;
    }
    r
}

/// On failure: waits (bounded) for the daemons to end their part too, so their errors are
/// reported and their outcomes recorded before this command exits.
async fn failed_with<T, U>(
    r: Result<T>,
    calls: &mut Vec<DaemonCall<U>>,
    limit: Duration,
) -> Result<T> {
    let Err(e) = r else { return r };
    let calls = std::mem::take(calls);
    match tokio::time::timeout(limit, collect(calls)).await {
        Ok(Err(daemons)) => Err(e.context(format!("daemons: {daemons}"))),
        _ => Err(e),
    }
}

pub async fn run(connect: &ConnectArgs, args: PartyArgs) -> Result<()> {
    if let PartyCommand::Init { name, force } = &args.command {
        let pass = file::passphrase(args.passphrase_file.as_deref())?;
        if args.file.exists() && !force {
            bail!(
                "{} exists; pass --force to replace it (its keys and shares are lost)",
                args.file.display()
            );
        }
        cosigner_pki::validate_name("party name", name).map_err(|e| anyhow!("{e}"))?;
        let mut f = PartyFile::create(name);
        f.save(&args.file, pass.as_bytes())?;
        print_identity(&f, false);
        return Ok(());
    }
    let pass = file::passphrase(args.passphrase_file.as_deref())?;
    let file = PartyFile::open(&args.file, pass.as_bytes())?;
    let mut ctx = Ctx {
        connect,
        path: &args.file,
        pass,
        file,
        round_timeout: Duration::from_secs(args.round_timeout.max(1)),
    };
    match args.command {
        PartyCommand::Init { .. } => Ok(()),
        PartyCommand::Show { json } => {
            show(&ctx.file, json);
            Ok(())
        }
        PartyCommand::Keygen {
            vault,
            threshold,
            members,
            daemons,
            relay,
            request_out,
            json,
        } => {
            keygen(
                &mut ctx,
                &vault,
                threshold,
                &members,
                &daemons,
                relay,
                request_out,
                json,
            )
            .await
        }
        PartyCommand::Sign {
            vault,
            payload,
            network,
            expected_hash,
            path,
            signers,
            daemons,
            relay,
            request_out,
            json,
        } => {
            let payload = payload.to_api(&network)?;
            let expected = expected_hash
                .map(|h| unhex(&h))
                .transpose()
                .context("--expected-hash is not hex")?;
            sign(
                &mut ctx,
                &vault,
                payload,
                expected,
                &path,
                &signers,
                &daemons,
                relay,
                request_out,
                json,
            )
            .await
        }
        PartyCommand::Reshare {
            vault,
            threshold,
            dealers,
            add,
            remove,
            daemons,
            relay,
            request_out,
            json,
        } => {
            reshare(
                &mut ctx,
                &vault,
                threshold,
                &dealers,
                &add,
                &remove,
                &daemons,
                relay,
                request_out,
                json,
            )
            .await
        }
        PartyCommand::Join { request, json } => join(&mut ctx, &request, json).await,
        PartyCommand::BackupExport {
            vault,
            out,
            backup_passphrase_file,
        } => backup_export(&ctx, &vault, &out, backup_passphrase_file.as_deref()),
        PartyCommand::BackupImport {
            backup,
            backup_passphrase_file,
        } => backup_import(&mut ctx, &backup, backup_passphrase_file.as_deref()),
    }
}

fn backup_export(ctx: &Ctx<'_>, vault: &str, out: &Path, pass: Option<&Path>) -> Result<()> {
    if ctx
        .file
        .slots(vault)
        .and_then(|s| s.pending.as_ref())
        .is_some()
    {
        bail!(
            "vault {vault:?} has a pending share (a reshare did not finish); finish or repair it first"
        );
    }
    let held = ctx.file.current(vault)?;
    if out.exists() {
        bail!("{} exists; choose another name", out.display());
    }
    let pass = file::passphrase_from(pass, crate::backup::PASSPHRASE_ENV)?;
    let bytes = cosigner_backup::export(
        &ctx.file.keys,
        &held,
        pass.as_bytes(),
        &format!("device {}", ctx.file.name),
        now_ms(),
    )
    .map_err(|e| anyhow!("{e}"))?;
    crate::backup::write_new(out, &bytes)?;
    let meta = cosigner_backup::inspect(&bytes).map_err(|e| anyhow!("{e}"))?;
    println!(
        "{}",
        json!({"file": out, "backup": crate::backup::meta_json(&meta)})
    );
    Ok(())
}

/// The device's side of an import, with the daemon's refusals: another party's backup only
/// into an empty file, never a second share of a vault, never an epoch older than one this
/// file has held.
fn backup_import(ctx: &mut Ctx<'_>, path: &Path, pass: Option<&Path>) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let pass = file::passphrase_from(pass, crate::backup::PASSPHRASE_ENV)?;
    let b = cosigner_backup::open(&bytes, pass.as_bytes())
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let vault = b.meta.vault_id.clone();
    if let Some(slots) = ctx.file.slots(&vault) {
        let newest = [&slots.current, &slots.pending, &slots.previous]
            .into_iter()
            .flatten()
            .filter_map(|h| Held::decode(h).ok().map(|h| h.record.epoch()))
            .max();
        if let Some(n) = newest
            && b.meta.epoch < n
        {
            bail!(
                "the backup is of epoch {}, but this party has held vault {vault:?} at epoch {n}: every reshare replaced all shares, so the old share cannot sign with the others",
                b.meta.epoch
            );
        }
        if newest.is_some() {
            bail!(
                "this party already holds a share of vault {vault:?}; a second share of one vault in one place defeats the threshold"
            );
        }
    }
    let party = b.keys.party_id();
    if party != ctx.file.keys.party_id() {
        let held: Vec<&str> = ctx
            .file
            .vaults
            .iter()
            .filter(|v| v.current.is_some() || v.pending.is_some() || v.previous.is_some())
            .map(|v| v.vault_id.as_str())
            .collect();
        if !held.is_empty() {
            bail!(
                "this file is party {} and holds vault(s) {}; a backup of party {} ({:?}) can only be restored into a file that holds no vault",
                short(&ctx.file.keys.party_id()),
                held.join(", "),
                short(&party),
                b.meta.party_name
            );
        }
        ctx.file.keys = b.keys.clone();
        ctx.file.name = b.meta.party_name.clone();
    }
    ctx.file.slots_mut(&vault).current = Some(b.held.encode().to_vec());
    ctx.save()?;
    print_vault(&b.held.record, true);
    Ok(())
}

fn print_identity(f: &PartyFile, json: bool) {
    if json {
        println!(
            "{}",
            json!({"name": f.name, "party_id": hex(&f.keys.party_id()), "encryption_key": hex(&f.keys.encryption_public())})
        );
    } else {
        println!("name:            {}", f.name);
        println!("party id:        {}", hex(&f.keys.party_id()));
        println!("encryption key:  {}", hex(&f.keys.encryption_public()));
        println!(
            "member spec:     {}:{}:{}",
            f.name,
            hex(&f.keys.party_id()),
            hex(&f.keys.encryption_public())
        );
    }
}

fn show(f: &PartyFile, json: bool) {
    let vaults: Vec<serde_json::Value> = f
        .vaults
        .iter()
        .map(|v| {
            let epoch = |b: &Option<Vec<u8>>| b.as_ref().and_then(|b| Held::decode(b).ok()).map(|h| h.record.epoch());
            let current = v.current.as_ref().and_then(|b| Held::decode(b).ok());
            json!({
                "vault_id": v.vault_id,
                "public_key": current.as_ref().map(|h| hex(&h.record.public.public_key.0)),
                "epoch": epoch(&v.current),
                "pending_epoch": epoch(&v.pending),
                "previous_epoch": epoch(&v.previous),
                "threshold": current.as_ref().map(|h| h.record.public.committee.threshold()),
                "members": current.as_ref().map(|h| h.record.members.iter().map(|m| m.name.clone()).collect::<Vec<_>>()),
            })
        })
        .collect();
    if json {
        println!(
            "{}",
            json!({"name": f.name, "party_id": hex(&f.keys.party_id()), "encryption_key": hex(&f.keys.encryption_public()), "vaults": vaults})
        );
    } else {
        print_identity(f, false);
        for v in vaults {
            println!("vault:           {v}");
        }
    }
}

async fn daemon_clients(
    ctx: &Ctx<'_>,
    daemons: &[(String, String)],
    wanted: &[Member],
) -> Result<Vec<(String, CosignerClient<Channel>)>> {
    let mut out = Vec::new();
    for (name, addr) in daemons {
        if wanted.iter().any(|m| &m.name == name) {
            out.push((name.clone(), ctx.daemon(addr).await?));
        }
    }
    Ok(out)
}

fn relay_addr(relay: Option<String>, daemons: &[(String, String)]) -> Result<String> {
    relay
        .or_else(|| daemons.first().map(|(_, a)| a.clone()))
        .ok_or_else(|| anyhow!("no relay: pass --relay ADDR or at least one --daemon"))
}

#[allow(clippy::too_many_arguments)]
async fn keygen(
    ctx: &mut Ctx<'_>,
    vault: &str,
    threshold: u32,
    members: &[String],
    daemons: &[String],
    relay: Option<String>,
    request_out: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    if ctx
        .file
        .slots(vault)
        .and_then(|s| s.current.as_ref())
        .is_some()
    {
        bail!("this party already holds a share of vault {vault:?}");
    }
    let daemons = parse_daemons(daemons)?;
    let mut all = vec![ctx.file.keys.member(&ctx.file.name)];
    for m in members {
        all.push(parse_member(m)?);
    }
    let api_c = members_to_api(threshold, &all);
    let (committee, all) = committee_from_api(&api_c).map_err(|e| anyhow!("{e}"))?;
    for (name, _) in &daemons {
        member_by_name(&all, name)?;
    }
    let relay_addr = relay_addr(relay, &daemons)?;
    let mut relay = ctx.relay(&relay_addr).await?;
    let sid = ctx.create_session(&mut relay, &all).await?;
    let body = api::KeygenBody {
        vault_id: vault.to_string(),
        scheme: api::Scheme::EcdsaSecp256k1 as i32,
        committee: Some(api_c),
        relay: Some(api::RelayRef {
            address: relay_addr.clone(),
            session_id: sid.clone(),
        }),
    }
    .encode_to_vec();
    let auth = cosigner_relay::request::sign(&ctx.file.keys, KEYGEN, &body, now_ms());
    if let Some(out) = &request_out {
        write_request(
            out,
            KEYGEN,
            &api::KeygenRequest {
                body: body.clone(),
                auth: Some(auth.clone()),
            },
        )?;
    }
    let (fail_tx, mut fail_rx) = mpsc::channel(8);
    let clients = daemon_clients(ctx, &daemons, &all).await?;
    let calls = spawn_calls(clients, fail_tx, |mut c| {
        let req = api::KeygenRequest {
            body: body.clone(),
            auth: Some(auth.clone()),
        };
        async move { c.keygen(req).await }
    });
    let r = take_part_keygen(ctx, relay, &sid, vault, committee, all, &mut fail_rx).await;
    let mut calls = calls;
    let record = failed_with(r, &mut calls, ctx.round_timeout * 3).await?;
    collect(calls).await?;
    print_vault(&record, json);
    Ok(())
}

/// This party's part of a keygen: HELLO, the rounds, then pending / READY / promote in the
/// party file. On failure the others have been told (ABORT).
async fn take_part_keygen(
    ctx: &mut Ctx<'_>,
    relay: RelayClient<Channel>,
    sid: &[u8],
    vault: &str,
    committee: cosigner_tss::Committee,
    members: Vec<Member>,
    fail_rx: &mut mpsc::Receiver<String>,
) -> Result<VaultRecord> {
    let mut d = ctx.driver(relay, sid, members.clone()).await?;
    let me = PartyId(ctx.file.keys.party_id());
    let params = KeygenParams {
        vault_id: vault.to_string(),
        committee,
        nonce: engine_nonce(sid),
    };
    let share = own_part(fail_rx, async {
        d_hello_none(&mut d).await?;
        Ok(d.run(Keygen::new(params, me)?).await?)
    })
    .await;
    let share = aborted(&mut d, share).await?;
    let record = VaultRecord::new(share.public().clone(), members, now_ms(), 0)?;
    let held = Held::new(record.clone(), share)?;
    let ids: Vec<[u8; 32]> = record.members.iter().map(|m| m.id).collect();
    ctx.commit(&mut d, held, &ids).await?;
    let _ = d.close().await;
    Ok(record)
}

async fn d_hello_none(d: &mut Driver) -> Result<()> {
    d.hello(
        Hello {
            epoch: None,
            pending: None,
        },
        &|_| None,
    )
    .await?;
    Ok(())
}

fn print_vault(r: &VaultRecord, json: bool) {
    let v = json!({
        "vault_id": r.vault_id(),
        "public_key": hex(&r.public.public_key.0),
        "chain_code": hex(&r.public.chain_code),
        "epoch": r.epoch(),
        "threshold": r.public.committee.threshold(),
        "members": r.members.iter().map(|m| json!({"name": m.name, "party_id": hex(&m.id)})).collect::<Vec<_>>(),
    });
    if json {
        println!("{v}");
    } else {
        println!(
            "vault {} epoch {}: public key {}",
            r.vault_id(),
            r.epoch(),
            hex(&r.public.public_key.0)
        );
    }
}

#[allow(clippy::too_many_arguments)]
async fn sign(
    ctx: &mut Ctx<'_>,
    vault: &str,
    payload: api::Payload,
    expected: Option<Vec<u8>>,
    path: &str,
    signers: &[String],
    daemons: &[String],
    relay: Option<String>,
    request_out: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let daemons = parse_daemons(daemons)?;
    let held = ctx.file.current(vault)?;
    let record = held.record.clone();
    let mut signer_members = Vec::new();
    for s in signers {
        signer_members.push(member_by_name(&record.members, s)?.clone());
    }
    signer_members.sort_by_key(|m| m.id);
    let me = ctx.file.keys.party_id();
    let i_sign = signer_members.iter().any(|m| m.id == me);
    let t = usize::from(record.public.committee.threshold());
    if signer_members.len() != t {
        bail!(
            "{} signers named; vault {vault:?} at epoch {} needs exactly {t} (its threshold)",
            signer_members.len(),
            record.epoch()
        );
    }
    let hash = payload_hash(&payload, &record, path)?;
    let relay_addr = relay_addr(relay, &daemons)?;
    let mut relay = ctx.relay(&relay_addr).await?;
    let sid = ctx.create_session(&mut relay, &signer_members).await?;
    let body = api::SignBody {
        vault_id: vault.to_string(),
        epoch: record.epoch(),
        signers: signer_members.iter().map(|m| m.id.to_vec()).collect(),
        payload: Some(payload),
        derivation_path: path.to_string(),
        expected_hashes: vec![expected.unwrap_or_else(|| hash.to_vec())],
        relay: Some(api::RelayRef {
            address: relay_addr.clone(),
            session_id: sid.clone(),
        }),
    }
    .encode_to_vec();
    let auth = cosigner_relay::request::sign(&ctx.file.keys, SIGN, &body, now_ms());
    let (fail_tx, mut fail_rx) = mpsc::channel(8);
    let others: Vec<Member> = signer_members
        .iter()
        .filter(|m| m.id != me)
        .cloned()
        .collect();
    let clients = daemon_clients(ctx, &daemons, &others).await?;
    if clients.len() != others.len() && request_out.is_none() {
        bail!(
            "every other signer needs a --daemon NAME=ADDR, or --request-out FILE for devices that join with `party join`"
        );
    }
    if let Some(out) = &request_out {
        write_request(
            out,
            SIGN,
            &api::SignRequest {
                body: body.clone(),
                auth: Some(auth.clone()),
            },
        )?;
    }
    let mut calls = spawn_calls(clients, fail_tx, |mut c| {
        let req = api::SignRequest {
            body: body.clone(),
            auth: Some(auth.clone()),
        };
        async move { c.sign(req).await }
    });
    let derivation = DerivationPath::parse(path)?;
    let public_key = record.public.derive(&derivation)?;
    let epoch = record.epoch();
    let own = if i_sign {
        let r = take_part_sign(
            ctx,
            relay.clone(),
            &sid,
            held,
            &signer_members,
            hash,
            derivation,
            &mut fail_rx,
        )
        .await;
        let (mut d, sig) = failed_with(r, &mut calls, ctx.round_timeout * 3).await?;
        let _ = d.close().await;
        Some(sig)
    } else {
        None
    };
    let results = collect(calls).await?;
    if !i_sign {
        // Not a participant: close the session as its creator.
        let _ = relay
            .close_session(api::CloseSessionRequest {
                session_id: sid.clone(),
                ..Default::default()
            })
            .await;
    }
    let (r, s, v) = match (&own, results.first()) {
        (Some(sig), _) => (sig.r.to_vec(), sig.s.to_vec(), u32::from(sig.recovery_id)),
        (None, Some((_, resp))) => {
            let sig = resp
                .signatures
                .first()
                .ok_or_else(|| anyhow!("a daemon answered without a signature"))?;
            (sig.r.clone(), sig.s.clone(), sig.recovery_id)
        }
        (None, None) => bail!("no signer produced a signature"),
    };
    // Every daemon must have produced the same signature, and it must verify.
    for (name, resp) in &results {
        let same = resp
            .signatures
            .first()
            .is_some_and(|x| x.r == r && x.s == s);
        if !same {
            bail!("{name} returned another signature than the other signers");
        }
    }
    let (r32, s32): ([u8; 32], [u8; 32]) = (
        r.as_slice()
            .try_into()
            .map_err(|_| anyhow!("r is not 32 bytes"))?,
        s.as_slice()
            .try_into()
            .map_err(|_| anyhow!("s is not 32 bytes"))?,
    );
    if !cosigner_tss::verify_ecdsa(&public_key, &hash, &r32, &s32) {
        bail!("the signature does not verify under the vault key");
    }
    print_signature(
        vault,
        epoch,
        &public_key,
        &hash,
        &r32,
        &s32,
        v,
        &signer_members,
        json,
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn print_signature(
    vault: &str,
    epoch: u64,
    public_key: &cosigner_tss::PointBytes,
    hash: &[u8; 32],
    r: &[u8; 32],
    s: &[u8; 32],
    v: u32,
    signers: &[Member],
    json: bool,
) {
    if json {
        println!(
            "{}",
            json!({
                "vault_id": vault,
                "epoch": epoch,
                "public_key": hex(&public_key.0),
                "hash": hex(hash),
                "r": hex(r),
                "s": hex(s),
                "recovery_id": v,
                "der": hex(&cosigner_tss::der_signature(r, s)),
                "signers": signers.iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "signature r={} s={} v={v} (verified under {})",
            hex(r),
            hex(s),
            hex(&public_key.0)
        );
    }
}

/// This party's part of a signature: HELLO at its epoch, the rounds, the result (verified
/// by the engine against the derived key). On failure the others have been told (ABORT).
#[allow(clippy::too_many_arguments)]
async fn take_part_sign(
    ctx: &Ctx<'_>,
    relay: RelayClient<Channel>,
    sid: &[u8],
    held: Held,
    signers: &[Member],
    hash: [u8; 32],
    path: DerivationPath,
    fail_rx: &mut mpsc::Receiver<String>,
) -> Result<(Driver, cosigner_tss::Signature)> {
    let epoch = held.record.epoch();
    let ceremony = Sign::new(
        &held.share,
        SignParams {
            signers: signers.iter().map(|m| PartyId(m.id)).collect(),
            message_hash: hash,
            path,
            nonce: engine_nonce(sid),
        },
    )?;
    drop(held); // the ceremony holds its own copy of the secret state
    let mut d = ctx.driver(relay, sid, signers.to_vec()).await?;
    let sig = own_part(fail_rx, async {
        d.hello(
            Hello {
                epoch: Some(epoch),
                pending: None,
            },
            &|_| Some(epoch),
        )
        .await?;
        Ok(d.run(ceremony).await?)
    })
    .await;
    let sig = aborted(&mut d, sig).await?;
    Ok((d, sig))
}

fn write_request(path: &Path, method: &str, req: &impl prost::Message) -> Result<()> {
    let j = JoinFile {
        method: method.into(),
        request: hex(&req.encode_to_vec()),
    };
    std::fs::write(path, serde_json::to_vec(&j)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A request another party wrote for a device that must join.
#[derive(serde::Serialize, serde::Deserialize)]
struct JoinFile {
    method: String,
    request: String,
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    cosigner_relay::keys::unhex(s).ok_or_else(|| anyhow!("not hex"))
}

#[allow(clippy::too_many_arguments)]
async fn reshare(
    ctx: &mut Ctx<'_>,
    vault: &str,
    threshold: Option<u32>,
    dealers: &[String],
    add: &[String],
    remove: &[String],
    daemons: &[String],
    relay: Option<String>,
    request_out: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let daemons = parse_daemons(daemons)?;
    let held = ctx.file.current(vault)?;
    let old = held.record.clone();
    let mut new_members: Vec<Member> = old
        .members
        .iter()
        .filter(|m| !remove.contains(&m.name))
        .cloned()
        .collect();
    for r in remove {
        member_by_name(&old.members, r)?;
    }
    for a in add {
        new_members.push(parse_member(a)?);
    }
    let t = threshold.unwrap_or(u32::from(old.public.committee.threshold()));
    let api_new = members_to_api(t, &new_members);
    let (new_committee, new_members) = committee_from_api(&api_new).map_err(|e| anyhow!("{e}"))?;
    let mut dealer_members = Vec::new();
    for d in dealers {
        dealer_members.push(member_by_name(&old.members, d)?.clone());
    }
    let mut participants = new_members.clone();
    for d in &dealer_members {
        if !participants.iter().any(|p| p.id == d.id) {
            participants.push(d.clone());
        }
    }
    participants.sort_by_key(|m| m.id);
    let relay_addr = relay_addr(relay, &daemons)?;
    let mut relay = ctx.relay(&relay_addr).await?;
    let sid = ctx.create_session(&mut relay, &participants).await?;
    let body = api::ReshareBody {
        vault_id: vault.to_string(),
        old_epoch: old.epoch(),
        dealers: dealer_members.iter().map(|m| m.id.to_vec()).collect(),
        new_committee: Some(api_new),
        relay: Some(api::RelayRef {
            address: relay_addr.clone(),
            session_id: sid.clone(),
        }),
        old_vault: old.encode(),
        scheduled: false,
    }
    .encode_to_vec();
    let auth = cosigner_relay::request::sign(&ctx.file.keys, RESHARE, &body, now_ms());
    let request = api::ReshareRequest {
        body: body.clone(),
        auth: Some(auth.clone()),
    };
    if let Some(out) = &request_out {
        write_request(out, RESHARE, &request)?;
    }
    let (fail_tx, mut fail_rx) = mpsc::channel(8);
    let me = ctx.file.keys.party_id();
    let others: Vec<Member> = participants
        .iter()
        .filter(|m| m.id != me)
        .cloned()
        .collect();
    let clients = daemon_clients(ctx, &daemons, &others).await?;
    let calls = spawn_calls(clients, fail_tx, |mut c| {
        let req = request.clone();
        async move { c.reshare(req).await }
    });
    let params = ReshareParams {
        old: old.public.clone(),
        dealers: dealer_members.iter().map(|m| PartyId(m.id)).collect(),
        new_committee: new_committee.clone(),
        nonce: engine_nonce(&sid),
    };
    let dealer_ids: Vec<[u8; 32]> = dealer_members.iter().map(|m| m.id).collect();
    let result = take_part_reshare(
        ctx,
        relay,
        &sid,
        participants,
        params,
        &dealer_ids,
        new_members,
        Some(held),
        &old,
        &mut fail_rx,
    )
    .await;
    let mut calls = calls;
    let record = failed_with(result, &mut calls, ctx.round_timeout * 3).await?;
    collect(calls).await?;
    match &record {
        Some(r) => print_vault(r, json),
        None => println!("{}", json!({"vault_id": vault, "dealt": true})),
    }
    Ok(())
}

/// This party's part of a reshare: HELLO, the rounds, then READY and the file update.
#[allow(clippy::too_many_arguments)]
async fn take_part_reshare(
    ctx: &mut Ctx<'_>,
    relay: RelayClient<Channel>,
    sid: &[u8],
    participants: Vec<Member>,
    params: ReshareParams,
    dealers: &[[u8; 32]],
    new_members: Vec<Member>,
    held: Option<Held>,
    old: &VaultRecord,
    fail_rx: &mut mpsc::Receiver<String>,
) -> Result<Option<VaultRecord>> {
    let me = PartyId(ctx.file.keys.party_id());
    let new_ids: Vec<[u8; 32]> = new_members.iter().map(|m| m.id).collect();
    let mut d = ctx.driver(relay, sid, participants).await?;
    let my_epoch = held.as_ref().map(|h| h.record.epoch());
    let ceremony = Reshare::new(params, me, held.as_ref().map(|h| &h.share))?;
    drop(held);
    let old_epoch = old.epoch();
    let out = own_part(fail_rx, async {
        d.hello(
            Hello {
                epoch: my_epoch,
                pending: None,
            },
            &|id| dealers.contains(id).then_some(old_epoch),
        )
        .await?;
        Ok(d.run(ceremony).await?)
    })
    .await;
    let out = aborted(&mut d, out).await?;
    let record = match out {
        ReshareOutput::NewShare(share) => {
            let record = VaultRecord::new(
                share.public().clone(),
                new_members,
                old.created_at_ms,
                now_ms(),
            )?;
            let held = Held::new(record.clone(), *share)?;
            ctx.commit(&mut d, held, &new_ids).await?;
            Some(record)
        }
        ReshareOutput::Dealt => {
            let key = old.public.public_key.0.to_vec();
            d.ready(&new_ids, None, &key, old_epoch + 1).await?;
            // Removed from the committee: the old share is useless now; keep it only as
            // previous (never used by a ceremony) until the operator cleans up.
            let s = ctx.file.slots_mut(old.vault_id());
            s.previous = s.current.take();
            ctx.save()?;
            None
        }
    };
    let _ = d.close().await;
    Ok(record)
}

async fn join(ctx: &mut Ctx<'_>, path: &Path, json: bool) -> Result<()> {
    let j: JoinFile = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
    )
    .with_context(|| format!("{} is not a request file", path.display()))?;
    let bytes = unhex(&j.request).with_context(|| format!("{}: request", path.display()))?;
    match j.method.as_str() {
        KEYGEN => join_keygen(ctx, &bytes, json).await,
        SIGN => join_sign(ctx, &bytes, json).await,
        RESHARE => join_reshare(ctx, &bytes, json).await,
        m => bail!("{}: unknown method {m:?}", path.display()),
    }
}

/// Checks a request file's own signature (a device joins only what a party signed).
fn check_request(method: &str, body: &[u8], auth: Option<&api::RequestAuth>) -> Result<[u8; 32]> {
    // Request files may wait a while before a device joins; allow ten minutes.
    cosigner_relay::request::check(auth, method, body, now_ms(), 600_000)
        .map_err(|e| anyhow!("the request's signature: {e}"))
}

async fn join_keygen(ctx: &mut Ctx<'_>, bytes: &[u8], json: bool) -> Result<()> {
    let req = api::KeygenRequest::decode(bytes).context("not a keygen request")?;
    let requester = check_request(KEYGEN, &req.body, req.auth.as_ref())?;
    let body = api::KeygenBody::decode(req.body.as_slice()).context("keygen body")?;
    let api_c = body
        .committee
        .ok_or_else(|| anyhow!("the request has no committee"))?;
    let (committee, members) = committee_from_api(&api_c).map_err(|e| anyhow!("{e}"))?;
    let me = ctx.file.keys.party_id();
    match members.iter().find(|m| m.id == me) {
        Some(m) if m.encryption_key == ctx.file.keys.encryption_public() => {}
        Some(_) => bail!("the committee lists another encryption key for this party"),
        None => bail!("this party is not in the requested committee"),
    }
    if !members.iter().any(|m| m.id == requester) {
        bail!(
            "the request was signed by {}, who is not in the committee",
            short(&requester)
        );
    }
    if ctx
        .file
        .slots(&body.vault_id)
        .and_then(|s| s.current.as_ref())
        .is_some()
    {
        bail!(
            "this party already holds a share of vault {:?}",
            body.vault_id
        );
    }
    let relay_ref = body
        .relay
        .ok_or_else(|| anyhow!("the request names no relay"))?;
    let relay = ctx.relay(&relay_ref.address).await?;
    let (_tx, mut rx) = mpsc::channel(1);
    let record = take_part_keygen(
        ctx,
        relay,
        &relay_ref.session_id,
        &body.vault_id,
        committee,
        members,
        &mut rx,
    )
    .await?;
    print_vault(&record, json);
    Ok(())
}

async fn join_sign(ctx: &mut Ctx<'_>, bytes: &[u8], json: bool) -> Result<()> {
    let req = api::SignRequest::decode(bytes).context("not a sign request")?;
    let requester = check_request(SIGN, &req.body, req.auth.as_ref())?;
    let body = api::SignBody::decode(req.body.as_slice()).context("sign body")?;
    let held = ctx.file.current(&body.vault_id)?;
    let record = held.record.clone();
    if body.epoch != record.epoch() {
        bail!(
            "the request is for epoch {}, this party holds epoch {} of vault {:?}",
            body.epoch,
            record.epoch(),
            body.vault_id
        );
    }
    if record.member(&requester).is_none() {
        bail!(
            "the request was signed by {}, who is not in the vault's committee",
            short(&requester)
        );
    }
    // Never blind-sign: the hash is computed here from the payload.
    let hash = payload_hash(
        &body.payload.unwrap_or_default(),
        &record,
        &body.derivation_path,
    )?;
    if !body.expected_hashes.is_empty() && body.expected_hashes != [hash.to_vec()] {
        bail!("the request's expected hash differs from the message's; refusing to sign");
    }
    let mut signers = Vec::new();
    for s in &body.signers {
        let id: [u8; 32] = s
            .as_slice()
            .try_into()
            .map_err(|_| anyhow!("a signer id is not 32 bytes"))?;
        signers.push(
            record
                .member(&id)
                .cloned()
                .ok_or_else(|| anyhow!("signer {} is not in the committee", short(&id)))?,
        );
    }
    signers.sort_by_key(|m| m.id);
    let derivation = DerivationPath::parse(&body.derivation_path)?;
    let public_key = record.public.derive(&derivation)?;
    let relay_ref = body
        .relay
        .ok_or_else(|| anyhow!("the request names no relay"))?;
    let relay = ctx.relay(&relay_ref.address).await?;
    let (_tx, mut rx) = mpsc::channel(1);
    let (mut d, sig) = take_part_sign(
        ctx,
        relay,
        &relay_ref.session_id,
        held,
        &signers,
        hash,
        derivation,
        &mut rx,
    )
    .await?;
    let _ = d.close().await;
    if !cosigner_tss::verify_ecdsa(&public_key, &hash, &sig.r, &sig.s) {
        bail!("the signature does not verify under the vault key");
    }
    print_signature(
        &body.vault_id,
        record.epoch(),
        &public_key,
        &hash,
        &sig.r,
        &sig.s,
        u32::from(sig.recovery_id),
        &signers,
        json,
    );
    Ok(())
}

async fn join_reshare(ctx: &mut Ctx<'_>, bytes: &[u8], json: bool) -> Result<()> {
    let req = api::ReshareRequest::decode(bytes).context("not a reshare request")?;
    let requester = check_request(RESHARE, &req.body, req.auth.as_ref())?;
    let body = api::ReshareBody::decode(req.body.as_slice()).context("request body")?;
    let old = VaultRecord::decode(&body.old_vault).map_err(|e| anyhow!("{e}"))?;
    if old.member(&requester).is_none() {
        bail!(
            "the request was signed by {}, who is not in the vault's committee",
            short(&requester)
        );
    }
    let api_new = body
        .new_committee
        .clone()
        .ok_or_else(|| anyhow!("the request has no new committee"))?;
    let (new_committee, new_members) = committee_from_api(&api_new).map_err(|e| anyhow!("{e}"))?;
    let dealers: Vec<[u8; 32]> = body
        .dealers
        .iter()
        .map(|d| {
            d.as_slice()
                .try_into()
                .map_err(|_| anyhow!("a dealer id is not 32 bytes"))
        })
        .collect::<Result<_>>()?;
    let mut participants = new_members.clone();
    for d in &dealers {
        if !participants.iter().any(|p| p.id == *d) {
            participants.push(
                old.member(d)
                    .cloned()
                    .ok_or_else(|| anyhow!("dealer {} is not an old member", short(d)))?,
            );
        }
    }
    participants.sort_by_key(|m| m.id);
    let relay_ref = body
        .relay
        .clone()
        .ok_or_else(|| anyhow!("the request names no relay"))?;
    let relay = ctx.relay(&relay_ref.address).await?;
    let held = ctx.file.current(&body.vault_id).ok();
    let params = ReshareParams {
        old: old.public.clone(),
        dealers: dealers.iter().map(|d| PartyId(*d)).collect(),
        new_committee,
        nonce: engine_nonce(&relay_ref.session_id),
    };
    let (_tx, mut rx) = mpsc::channel(1);
    let record = take_part_reshare(
        ctx,
        relay,
        &relay_ref.session_id,
        participants,
        params,
        &dealers,
        new_members,
        held,
        &old,
        &mut rx,
    )
    .await?;
    match record {
        Some(r) => print_vault(&r, json),
        None => println!("{}", json!({"vault_id": body.vault_id, "dealt": true})),
    }
    Ok(())
}
