//! `cosignerctl party`: a device party, the reference client for wallets.
//!
//! It keeps its identity and shares in a passphrase-encrypted file ([`file`]), and it can
//! start a ceremony (create the relay session, send the signed request to the daemons that
//! take part, and take part itself) or join one from a request file another party wrote.
//! It runs the same engine, driver, roster rules and commit steps as the daemon: every
//! roster is built by `cosigner_relay::roster` from the device's own record, and keygen and
//! reshare end with `cosigner_relay::finish` over the party file ([`store`]).

pub mod file;
pub mod store;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use cosigner_api::v1 as api;
use cosigner_api::v1::cosigner_client::CosignerClient;
use cosigner_api::v1::relay_client::RelayClient;
use cosigner_node::reshare::Part;
use cosigner_relay::commit::{CommitState, Decision, Holding, Phase, Report, Role, decide};
use cosigner_relay::finish::{self, CommitEnd, CommitStore};
use cosigner_relay::keys::{hex, parse_id, short};
use cosigner_relay::record::{committee_from_api, members_to_api};
use cosigner_relay::roster::{self, Roster};
use cosigner_relay::{Driver, Held, Member, SessionSpec, VaultRecord};
use cosigner_tss::DerivationPath;
use prost::Message as _;
use rand::RngCore;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::connect::ConnectArgs;
use crate::payload::{NetworkArg, PayloadArgs, payload_hash};
use file::{PartyFile, VaultSlots, epoch_of, put};
use store::FileStore;

pub const KEYGEN: &str = "/cosigner.v1.Cosigner/Keygen";
pub const SIGN: &str = "/cosigner.v1.Cosigner/Sign";
pub const RESHARE: &str = "/cosigner.v1.Cosigner/Reshare";
pub const GET_VAULT_RECORD: &str = "/cosigner.v1.Cosigner/GetVaultRecord";

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
    /// Print this party's id, encryption key and vaults (each with its state and commit phase).
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
    /// Write this party's signed report on its latest keygen or reshare of a vault, for
    /// the other parties' resolve (`party resolve --evidence`, `vault resolve --evidence`).
    Evidence {
        #[arg(long)]
        vault: String,
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The ceremony context (64 hex) the party in doubt is resolving, as its `vault
        /// show` problem or `party show` names it. A report about another ceremony than
        /// the one being resolved counts only when it names that ceremony.
        #[arg(long, value_name = "HEX")]
        about: Option<String>,
    },
    /// End an interrupted keygen or reshare of a vault from the other parties' signed
    /// reports: promote (or retire) on a certificate, discard when every new party reported
    /// none, otherwise say whom it waits for (exit status 1).
    Resolve {
        #[arg(long)]
        vault: String,
        /// A daemon to ask for its report (repeatable): https://host:port.
        #[arg(long = "peer", value_name = "ADDR")]
        peers: Vec<String>,
        /// A report file another device wrote with `party evidence` (repeatable).
        #[arg(long = "evidence", value_name = "FILE")]
        evidence: Vec<PathBuf>,
        /// A new party that is gone for good (name or 64-hex party id; repeatable): its
        /// report is not waited for.
        #[arg(long = "lost", value_name = "NAME_OR_ID")]
        lost: Vec<String>,
    },
}

use cosigner_relay::clock::now_ms;

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

/// A party named on the command line: a 64-hex party id, or a name among `known`.
pub fn party_ref(s: &str, known: &[(String, [u8; 32])]) -> Result<[u8; 32]> {
    if let Some(id) = parse_id(s) {
        return Ok(id);
    }
    let mut ids: Vec<[u8; 32]> = known
        .iter()
        .filter(|(n, _)| n == s)
        .map(|(_, id)| *id)
        .collect();
    ids.sort();
    ids.dedup();
    match ids.as_slice() {
        [id] => Ok(*id),
        [] => bail!("{s:?} is neither a party id (64 hex characters) nor a known member's name"),
        _ => bail!("several parties are named {s:?}; give the party id (64 hex characters)"),
    }
}

fn session_id() -> Vec<u8> {
    let mut s = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

/// The advice printed whenever a vault's commit is in doubt on this device.
fn resolve_hint(vault: &str) -> String {
    format!(
        "once the other parties can be reached, run `cosignerctl party resolve --vault {vault} --peer https://DAEMON:PORT ...` (other devices' reports: `--evidence FILE`, written there with `cosignerctl party evidence --vault {vault} --out FILE`)"
    )
}

/// What a ceremony will do with a vault, for the checks before it starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Keygen,
    Sign,
    Reshare,
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

    /// The party file as the commit steps use it.
    fn store(&mut self) -> FileStore<'_> {
        FileStore {
            file: &mut self.file,
            path: self.path,
            pass: self.pass.as_bytes(),
        }
    }

    fn pending_epoch(&self, vault: &str) -> Option<u64> {
        self.file.slots(vault).and_then(|s| epoch_of(&s.pending))
    }

    /// Refuses a ceremony the vault's state here does not allow: a commit in doubt blocks
    /// everything until a resolve; a retired party no longer signs; a keygen needs a vault
    /// this party holds nothing of.
    fn check_usable(&self, vault: &str, what: Use) -> Result<()> {
        let Some(slots) = self.file.slots(vault) else {
            return Ok(());
        };
        let state = slots.commit_state()?.map(CommitState::ended);
        if let Some(s) = &state
            && s.phase.needs_resolve()
        {
            bail!(
                "vault {vault:?}: its last keygen or reshare (to epoch {}) ended without proof that every new party holds the new share (commit phase {}); this party takes part in nothing of the vault until that is resolved: {}",
                s.target.epoch,
                s.phase.as_str(),
                resolve_hint(vault)
            );
        }
        match what {
            Use::Keygen => {
                if slots.current.is_some() || slots.pending.is_some() {
                    bail!("this party already holds a share of vault {vault:?}");
                }
            }
            Use::Sign => {
                if slots.current.is_none()
                    && state.as_ref().is_some_and(|s| s.phase == Phase::Retired)
                {
                    bail!(
                        "this party retired from vault {vault:?} (it dealt in the reshare to epoch {} that left it out of the committee); it no longer signs",
                        state.as_ref().map_or(0, |s| s.target.epoch)
                    );
                }
            }
            Use::Reshare => {}
        }
        Ok(())
    }

    /// Members this party knows of a vault (any slot's record), by name and id.
    fn known_members(&self, vault: &str) -> Vec<(String, [u8; 32])> {
        let Some(s) = self.file.slots(vault) else {
            return Vec::new();
        };
        [&s.current, &s.pending, &s.previous]
            .into_iter()
            .filter_map(|b| b.as_deref().and_then(|b| Held::decode(b).ok()))
            .flat_map(|h| {
                h.record
                    .members
                    .iter()
                    .map(|m| (m.name.clone(), m.id))
                    .collect::<Vec<_>>()
            })
            .collect()
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

    /// Records the session in the party file (a session is taken part in once), then
    /// subscribes to this party's mailbox in it.
    async fn open_driver(&mut self, relay: RelayClient<Channel>, roster: Roster) -> Result<Driver> {
        self.file.remember_session(&roster.relay_session)?;
        self.save()?;
        Driver::open(
            relay,
            self.file.keys.clone(),
            SessionSpec {
                roster,
                round_timeout: self.round_timeout,
                fault: None,
            },
        )
        .await
        .map_err(|e| anyhow!("{e}"))
    }

    /// Asks a daemon for its record of a vault, its endorsement and its commit report, with
    /// a request signed by this party.
    async fn vault_record(
        &self,
        addr: &str,
        vault: &str,
        about: Option<[u8; 32]>,
    ) -> Result<api::VaultRecordResponse> {
        let body = api::VaultRecordBody {
            vault_id: vault.to_string(),
            about: about.map(|a| a.to_vec()).unwrap_or_default(),
        }
        .encode_to_vec();
        let auth =
            cosigner_relay::request::sign(&self.file.keys, GET_VAULT_RECORD, &body, now_ms());
        let channel = self
            .connect
            .channel_to(addr, Some(Duration::from_secs(self.connect.timeout.max(1))))
            .await?;
        Ok(CosignerClient::new(channel)
            .get_vault_record(api::VaultRecordRequest {
                body,
                auth: Some(auth),
            })
            .await
            .map_err(|s| anyhow!("{addr}: {} ({:?})", s.message(), s.code()))?
            .into_inner())
    }
}

/// One daemon's call, by the daemon's name.
type DaemonCall<T> = (
    String,
    tokio::task::JoinHandle<std::result::Result<T, tonic::Status>>,
);

fn status_text(s: &tonic::Status) -> String {
    format!("{} ({:?})", s.message(), s.code())
}

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
            let who = name.clone();
            let handle = tokio::spawn(async move {
                let r = fut.await.map(|r| r.into_inner());
                if let Err(s) = &r {
                    let _ = fail.send(format!("{who}: {}", status_text(s))).await;
                }
                r
            });
            (name, handle)
        })
        .collect()
}

/// Every daemon's answer, waiting at most `limit` in all.
async fn settle<T>(
    calls: Vec<DaemonCall<T>>,
    limit: Duration,
) -> Vec<(String, std::result::Result<T, String>)> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut out = Vec::with_capacity(calls.len());
    for (name, mut handle) in calls {
        let r = match tokio::time::timeout_at(deadline, &mut handle).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(s))) => Err(status_text(&s)),
            Ok(Err(e)) => Err(format!("the call failed: {e}")),
            Err(_) => {
                handle.abort();
                Err(format!("no answer within {} s", limit.as_secs()))
            }
        };
        out.push((name, r));
    }
    out
}

/// Every daemon's answer; any failure is the command's error.
async fn collect<T>(calls: Vec<DaemonCall<T>>) -> Result<Vec<(String, T)>> {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for (name, handle) in calls {
        match handle.await {
            Ok(Ok(v)) => ok.push((name, v)),
            Ok(Err(s)) => errors.push(format!("{name}: {}", status_text(&s))),
            Err(e) => errors.push(format!("{name}: the call failed: {e}")),
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

/// On a failure before the commit: waits (bounded) for the daemons to end their part too,
/// so their errors are reported with this party's.
async fn failed<U>(e: anyhow::Error, calls: Vec<DaemonCall<U>>, limit: Duration) -> anyhow::Error {
    let errors: Vec<String> = settle(calls, limit)
        .await
        .into_iter()
        .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e}")))
        .collect();
    if errors.is_empty() {
        e
    } else {
        e.context(format!("daemons: {}", errors.join("; ")))
    }
}

/// One party's outcome of a keygen or reshare, as printed at the end.
struct PartyOutcome {
    party: String,
    ok: bool,
    text: String,
}

impl PartyOutcome {
    fn json(&self) -> Value {
        json!({"party": self.party, "ok": self.ok, "outcome": self.text})
    }
}

/// This party's outcome from its commit end.
fn own_outcome(name: &str, end: &CommitEnd, new_epoch: u64, dealer: bool) -> PartyOutcome {
    let (ok, text) = match end {
        CommitEnd::Committed => (true, format!("committed: holds epoch {new_epoch}")),
        CommitEnd::Retired => (
            true,
            format!("retired: dealt epoch {new_epoch} and left the committee"),
        ),
        CommitEnd::InDoubt(why) if dealer => (
            false,
            format!("in doubt ({why}): keeps its old share, unused, until a resolve"),
        ),
        CommitEnd::InDoubt(why) => (
            false,
            format!("in doubt ({why}): keeps the new share of epoch {new_epoch} pending"),
        ),
        CommitEnd::Failed(why) => (false, format!("failed: {why}")),
    };
    PartyOutcome {
        party: format!("{name} (this device)"),
        ok,
        text,
    }
}

/// A daemon's outcome from its answer.
fn daemon_outcome(name: &str, r: &std::result::Result<Option<api::Vault>, String>) -> PartyOutcome {
    let (ok, text) = match r {
        Err(e) => (false, format!("failed: {e}")),
        Ok(None) => (true, "done".to_string()),
        Ok(Some(v)) => match v.state.as_str() {
            "in_doubt" => (
                false,
                format!(
                    "in doubt{}: resolve it with `cosignerctl vault resolve {} --peer ...` on that daemon",
                    if v.problem.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", v.problem)
                    },
                    v.vault_id
                ),
            ),
            "damaged" => (false, format!("damaged: {}", v.problem)),
            "retired" => (
                true,
                format!("retired: left the committee at epoch {}", v.epoch),
            ),
            _ => (true, format!("committed: holds epoch {}", v.epoch)),
        },
    };
    PartyOutcome {
        party: name.to_string(),
        ok,
        text,
    }
}

/// Prints every party's outcome, then maps this party's commit end to the command's
/// result: a certificate is success; in doubt or failed is an error that says what to do.
#[allow(clippy::too_many_arguments)]
fn conclude(
    ctx: &Ctx<'_>,
    vault: &str,
    new_epoch: u64,
    dealer: bool,
    end: &CommitEnd,
    outcomes: &[PartyOutcome],
    mut result: Value,
    text: String,
    json: bool,
) -> Result<()> {
    let all_ok = outcomes.iter().all(|o| o.ok);
    if end.is_done() && all_ok {
        if json {
            result["parties"] = outcomes.iter().map(PartyOutcome::json).collect();
            println!("{result}");
        } else {
            println!("{text}");
            for o in outcomes {
                println!("  {}: {}", o.party, o.text);
            }
        }
        return Ok(());
    }
    for o in outcomes {
        eprintln!("  {}: {}", o.party, o.text);
    }
    match end {
        CommitEnd::Committed | CommitEnd::Retired => {
            let others: Vec<&str> = outcomes
                .iter()
                .filter(|o| !o.ok)
                .map(|o| o.party.as_str())
                .collect();
            bail!(
                "vault {vault:?}: this party {} epoch {new_epoch}, but not every party confirmed it did ({}); a party in doubt is resolved with the others' reports (this device's: `cosignerctl party evidence --vault {vault} --out FILE`)",
                if dealer { "retired at" } else { "holds" },
                others.join(", ")
            )
        }
        CommitEnd::InDoubt(why) => bail!(
            "vault {vault:?}: the commit of epoch {new_epoch} is in doubt here ({why}). {} This party takes part in nothing of the vault until it is resolved: {}",
            if dealer {
                "It keeps its old share, unused."
            } else {
                "The new share is kept pending (never discarded without evidence)."
            },
            resolve_hint(vault)
        ),
        CommitEnd::Failed(why) => {
            let in_doubt = ctx
                .file
                .commit_state(vault)
                .ok()
                .flatten()
                .is_some_and(|s| s.ended().phase.needs_resolve());
            if in_doubt {
                bail!(
                    "vault {vault:?}: the commit failed here before this party confirmed the new share: {why}; its record stays in doubt for the other parties: {}",
                    resolve_hint(vault)
                )
            }
            bail!("vault {vault:?}: the commit failed here: {why}")
        }
    }
}

pub async fn run(connect: &ConnectArgs, args: PartyArgs) -> Result<()> {
    // One command at a time on a party file, held until this function returns.
    let _lock = file::lock(&args.file)?;
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
    // A promotion (or retirement) whose certificate was recorded before an interruption is
    // finished before anything else.
    let finished = store::finish_recorded(&mut ctx.file);
    if !finished.is_empty() {
        ctx.save()?;
        for line in finished {
            eprintln!("cosignerctl: {line}");
        }
    }
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
        PartyCommand::Evidence { vault, out, about } => {
            evidence(&ctx, &vault, &out, about.as_deref())
        }
        PartyCommand::Resolve {
            vault,
            peers,
            evidence,
            lost,
        } => resolve(&mut ctx, &vault, &peers, &evidence, &lost).await,
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
            .filter(|v| v.holds_anything())
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
    put(
        &mut ctx.file.slots_mut(&vault).current,
        Some(b.held.encode().to_vec()),
    );
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

/// Where this party stands with a vault: its state ("active", "in_doubt", "retired",
/// "damaged" or "empty"), its commit phase and what is wrong.
fn vault_state(v: &VaultSlots) -> (&'static str, Option<CommitState>, Option<String>) {
    match v.commit_state() {
        Err(e) => ("damaged", None, Some(format!("{e:#}"))),
        Ok(state) => {
            let state = state.map(CommitState::ended);
            let s = if state.as_ref().is_some_and(|s| s.phase.needs_resolve()) {
                "in_doubt"
            } else if v.current.is_some() {
                "active"
            } else if state.as_ref().is_some_and(|s| s.phase == Phase::Retired)
                || v.previous.is_some()
            {
                "retired"
            } else {
                "empty"
            };
            let problem = (s == "in_doubt").then(|| {
                format!(
                    "the commit of epoch {} ended without a certificate; run `cosignerctl party resolve --vault {}`",
                    state.as_ref().map_or(0, |s| s.target.epoch),
                    v.vault_id
                )
            });
            (s, state, problem)
        }
    }
}

fn show(f: &PartyFile, json: bool) {
    let vaults: Vec<Value> = f
        .vaults
        .iter()
        .map(|v| {
            let current = v.current.as_ref().and_then(|b| Held::decode(b).ok());
            let (state, commit, problem) = vault_state(v);
            json!({
                "vault_id": v.vault_id,
                "state": state,
                "problem": problem,
                "commit_phase": commit.as_ref().map(|c| c.phase.as_str()),
                "commit_epoch": commit.as_ref().map(|c| c.target.epoch),
                "public_key": current.as_ref().map(|h| hex(&h.record.public.public_key.0)),
                "epoch": epoch_of(&v.current),
                "pending_epoch": epoch_of(&v.pending),
                "previous_epoch": epoch_of(&v.previous),
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

/// `party evidence`: this party's signed report on its latest commit of a vault.
fn evidence(ctx: &Ctx<'_>, vault: &str, out: &Path, about: Option<&str>) -> Result<()> {
    let about = about
        .map(|a| {
            cosigner_relay::keys::parse_id(a)
                .ok_or_else(|| anyhow!("--about: {a:?} is not 64 hex characters"))
        })
        .transpose()?;
    // Under the file lock no ceremony runs here, so the record describes an ended one.
    let state = ctx.file.commit_state(vault)?.map(CommitState::ended);
    let current = ctx.file.held_current(vault)?.map(|h| h.record.epoch());
    let pending = ctx
        .file
        .slots(vault)
        .and_then(|s| file::epoch_of(&s.pending));
    let report = Report::answer(
        &ctx.file.keys,
        vault,
        state.as_ref(),
        Holding {
            current_epoch: current,
            pending_epoch: pending,
        },
        about,
        now_ms(),
    );
    file::write_private(out, &report.encode())?;
    println!(
        "{}",
        json!({
            "file": out,
            "vault_id": vault,
            "party_id": hex(&report.party),
            "phase": report.phase.map(Phase::as_str),
            "current_epoch": report.current_epoch,
            "epoch_seen": report.epoch_seen,
            "readies": report.readies.len(),
            "digest": hex(&report.digest()),
        })
    );
    Ok(())
}

/// `party resolve`: decides an interrupted commit from the other parties' reports.
async fn resolve(
    ctx: &mut Ctx<'_>,
    vault: &str,
    peers: &[String],
    evidence: &[PathBuf],
    lost: &[String],
) -> Result<()> {
    let Some(state) = ctx.file.commit_state(vault)?.map(CommitState::ended) else {
        bail!("this party has no commit record of vault {vault:?}: nothing to resolve");
    };
    if !state.phase.needs_resolve() {
        println!(
            "{}",
            json!({"vault_id": vault, "decision": "none", "phase": state.phase.as_str(), "detail": "nothing to resolve: the last commit ended here"})
        );
        return Ok(());
    }
    let mut reports = Vec::new();
    for addr in peers {
        match ctx
            .vault_record(addr, vault, Some(state.target.context))
            .await
        {
            Ok(r) if r.commit_report.is_empty() => {
                eprintln!("cosignerctl: {addr}: no commit report for vault {vault:?}");
            }
            Ok(r) => match Report::decode(&r.commit_report) {
                Ok(rep) => reports.push(rep),
                Err(e) => eprintln!("cosignerctl: {addr}: {e}"),
            },
            Err(e) => eprintln!("cosignerctl: cannot ask {addr}: {e:#}"),
        }
    }
    for f in evidence {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        reports.push(Report::decode(&bytes).map_err(|e| anyhow!("{}: {e}", f.display()))?);
    }
    let known = ctx.known_members(vault);
    let lost: Vec<[u8; 32]> = lost
        .iter()
        .map(|l| party_ref(l, &known).with_context(|| format!("--lost {l:?}")))
        .collect::<Result<_>>()?;
    let me = ctx.file.keys.party_id();
    let dealer = state.role == Role::LeavingDealer;
    let epoch = state.target.epoch;
    let (decision, detail) = match decide(&state, &reports, &lost, me) {
        Decision::Promote(cert) => {
            let mut st = state;
            st.received = cert;
            st.phase = if dealer {
                Phase::Retired
            } else {
                Phase::Committed
            };
            st.updated_at_ms = now_ms();
            // The certificate first: a crash before the move is finished at the next start.
            let mut store = ctx.store();
            store.save(&st).await.map_err(|e| anyhow!("{e}"))?;
            if dealer {
                store.retire(vault).await.map_err(|e| anyhow!("{e}"))?;
                (
                    "retired",
                    format!("a certificate for epoch {epoch}: this party left the committee"),
                )
            } else {
                store.promote(vault).await.map_err(|e| anyhow!("{e}"))?;
                (
                    "promoted",
                    format!("a certificate for epoch {epoch}: the pending share is current"),
                )
            }
        }
        Decision::Discard => {
            let mut st = state;
            let old_epoch = st.old_epoch;
            st.phase = Phase::Discarded;
            st.updated_at_ms = now_ms();
            let bytes = st.encode();
            let s = ctx.file.slots_mut(vault);
            let outcome = if dealer {
                // It never retired without a certificate; put the old share back if needed.
                if s.current.is_none() && old_epoch.is_some() && epoch_of(&s.previous) == old_epoch
                {
                    s.current = s.previous.take();
                }
                (
                    "reactivated",
                    format!(
                        "no certificate for epoch {epoch} exists: this party keeps its share of epoch {}",
                        old_epoch.unwrap_or_default()
                    ),
                )
            } else {
                if epoch_of(&s.pending) == Some(epoch) {
                    put(&mut s.pending, None);
                }
                (
                    "discarded",
                    format!(
                        "no certificate for epoch {epoch} exists: the pending share is deleted"
                    ),
                )
            };
            // The record and the slots in one write.
            s.commit = Some(bytes);
            ctx.save()?;
            outcome
        }
        Decision::Undecided(why) => {
            println!(
                "{}",
                json!({"vault_id": vault, "decision": "undecided", "detail": why})
            );
            bail!("vault {vault:?}: undecided: {why}");
        }
    };
    let current = ctx.file.slots(vault).and_then(|s| epoch_of(&s.current));
    println!(
        "{}",
        json!({"vault_id": vault, "decision": decision, "detail": detail, "epoch": current})
    );
    Ok(())
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

/// Closes the session (the coordinator, once the daemons answered) unless device parties
/// joining from a request file may still be using it; then it expires by itself.
async fn close_session(d: &mut Driver, request_out: &Option<PathBuf>) {
    if request_out.is_none() {
        let _ = d.close().await;
    }
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
    ctx.check_usable(vault, Use::Keygen)?;
    let daemons = parse_daemons(daemons)?;
    let me = ctx.file.keys.member(&ctx.file.name);
    let mut all = vec![me.clone()];
    for m in members {
        all.push(parse_member(m)?);
    }
    let api_c = members_to_api(threshold, &all);
    let (_, all) = committee_from_api(&api_c).map_err(|e| anyhow!("{e}"))?;
    for (name, _) in &daemons {
        member_by_name(&all, name)?;
    }
    let relay_addr = relay_addr(relay, &daemons)?;
    let mut relay = ctx.relay(&relay_addr).await?;
    let sid = ctx.create_session(&mut relay, &all).await?;
    let body_msg = api::KeygenBody {
        vault_id: vault.to_string(),
        scheme: api::Scheme::EcdsaSecp256k1 as i32,
        committee: Some(api_c.clone()),
        relay: Some(api::RelayRef {
            address: relay_addr.clone(),
            session_id: sid.clone(),
        }),
    };
    let body = body_msg.encode_to_vec();
    // The coordinator checks its own request as every other party will.
    let checked = cosigner_node::keygen::check(
        &body,
        cosigner_node::keygen::Parsed {
            requester: me.id,
            body: body_msg,
        },
        &me,
    )?;
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
    let clients = daemon_clients(ctx, &daemons, &checked.plan.members).await?;
    let calls = spawn_calls(clients, fail_tx, |mut c| {
        let req = api::KeygenRequest {
            body: body.clone(),
            auth: Some(auth.clone()),
        };
        async move { c.keygen(req).await }
    });
    let limit = ctx.round_timeout * 3;
    let (mut d, record, end) = match take_part_keygen(ctx, relay, &checked, &mut fail_rx).await {
        Ok(x) => x,
        Err(e) => return Err(failed(e, calls, limit).await),
    };
    let answers = settle(calls, limit).await;
    close_session(&mut d, &request_out).await;
    let mut outcomes = vec![own_outcome(&ctx.file.name, &end, record.epoch(), false)];
    outcomes.extend(
        answers
            .into_iter()
            .map(|(n, r)| daemon_outcome(&n, &r.map(|r| r.vault))),
    );
    conclude(
        ctx,
        vault,
        record.epoch(),
        false,
        &end,
        &outcomes,
        vault_value(&record),
        vault_line(&record),
        json,
    )
}

/// This party's part of a keygen ([`cosigner_node::keygen::take_part`]), racing the
/// daemons' answers, then the commit (pending, READY, promote) in the party file. A
/// failure before the commit has told the others (ABORT).
async fn take_part_keygen(
    ctx: &mut Ctx<'_>,
    relay: RelayClient<Channel>,
    c: &cosigner_node::keygen::Checked,
    fail_rx: &mut mpsc::Receiver<String>,
) -> Result<(Driver, VaultRecord, CommitEnd)> {
    let mut d = ctx.open_driver(relay, c.plan.roster.clone()).await?;
    let me = ctx.file.keys.party_id();
    let held = own_part(fail_rx, async {
        Ok(cosigner_node::keygen::take_part(&mut d, c, me, now_ms()).await?)
    })
    .await;
    let held = aborted(&mut d, held).await?;
    let record = held.record.clone();
    let new_parties: Vec<[u8; 32]> = record.members.iter().map(|m| m.id).collect();
    let keys = ctx.file.keys.clone();
    let (end, _) = finish::new_party(
        &mut d,
        &keys,
        &mut ctx.store(),
        &record,
        held,
        new_parties,
        None,
    )
    .await;
    Ok((d, record, end))
}

fn vault_value(r: &VaultRecord) -> Value {
    json!({
        "vault_id": r.vault_id(),
        "public_key": hex(&r.public.public_key.0),
        "chain_code": hex(&r.public.chain_code),
        "epoch": r.epoch(),
        "threshold": r.public.committee.threshold(),
        "members": r.members.iter().map(|m| json!({"name": m.name, "party_id": hex(&m.id)})).collect::<Vec<_>>(),
    })
}

fn vault_line(r: &VaultRecord) -> String {
    format!(
        "vault {} epoch {}: public key {}",
        r.vault_id(),
        r.epoch(),
        hex(&r.public.public_key.0)
    )
}

fn print_vault(r: &VaultRecord, json: bool) {
    if json {
        println!("{}", vault_value(r));
    } else {
        println!("{}", vault_line(r));
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
    ctx.check_usable(vault, Use::Sign)?;
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
    let body_msg = api::SignBody {
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
    };
    let body = body_msg.encode_to_vec();
    // A signer checks its own request as every other party will (not a signer: it only
    // coordinates, and needs no roster).
    let checked = if i_sign {
        Some(cosigner_node::sign::check(
            &body,
            cosigner_node::sign::Parsed {
                requester: me,
                body: body_msg.clone(),
            },
            record.clone(),
            me,
            cosigner_node::sign::Rules { raw_hash: false },
        )?)
    } else {
        None
    };
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
    let calls = spawn_calls(clients, fail_tx, |mut c| {
        let req = api::SignRequest {
            body: body.clone(),
            auth: Some(auth.clone()),
        };
        async move { c.sign(req).await }
    });
    let derivation = DerivationPath::parse(path)?;
    let public_key = record.public.derive(&derivation)?;
    let epoch = record.epoch();
    let (own, d) = match &checked {
        Some(c) => {
            let r = take_part_sign(ctx, relay.clone(), c, held, &mut fail_rx).await;
            match r {
                Ok((d, sig)) => (Some(sig), Some(d)),
                Err(e) => return Err(failed(e, calls, ctx.round_timeout * 3).await),
            }
        }
        None => (None, None),
    };
    let results = collect(calls).await?;
    match d {
        Some(mut d) => close_session(&mut d, &request_out).await,
        // Not a participant: close the session as its creator.
        None if request_out.is_none() => {
            let _ = relay
                .close_session(api::CloseSessionRequest {
                    session_id: sid.clone(),
                    ..Default::default()
                })
                .await;
        }
        None => {}
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

/// This party's part of a signature ([`cosigner_node::sign::take_part`]), racing the
/// daemons' answers: a daemon that refuses stops it. On failure the others have been told
/// (ABORT).
async fn take_part_sign(
    ctx: &mut Ctx<'_>,
    relay: RelayClient<Channel>,
    c: &cosigner_node::sign::Checked,
    held: Held,
    fail_rx: &mut mpsc::Receiver<String>,
) -> Result<(Driver, cosigner_tss::Signature)> {
    let pending = ctx.pending_epoch(c.record.vault_id());
    let mut d = ctx.open_driver(relay, c.plan.roster.clone()).await?;
    let sig = own_part(fail_rx, async {
        Ok(cosigner_node::sign::take_part(&mut d, held, c, pending).await?)
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

/// Endorsements of the old record for parties that hold nothing of the vault: this
/// party's own, and (when `ask`) those of the old members' daemons it was given.
async fn endorsements(
    ctx: &Ctx<'_>,
    old: &VaultRecord,
    daemons: &[(String, String)],
    ask: bool,
) -> Vec<api::Endorsement> {
    let me = ctx.file.keys.party_id();
    let mut out = vec![roster::endorse(&ctx.file.keys, old)];
    if !ask {
        return out;
    }
    for (name, addr) in daemons {
        if !old.members.iter().any(|m| &m.name == name && m.id != me) {
            continue;
        }
        match ctx.vault_record(addr, old.vault_id(), None).await {
            Ok(r) => match r.endorsement {
                Some(e) if roster::check_endorsements(old, std::slice::from_ref(&e)) == Ok(1) => {
                    if !out.iter().any(|x| x.party_id == e.party_id) {
                        out.push(e);
                    }
                }
                Some(_) => eprintln!(
                    "cosignerctl: {name} endorsed another record of vault {:?} than this party's (epoch {}); its endorsement is left out",
                    old.vault_id(),
                    old.epoch()
                ),
                None => eprintln!(
                    "cosignerctl: {name} sent no endorsement of vault {:?} (its state: {:?})",
                    old.vault_id(),
                    r.state
                ),
            },
            Err(e) => eprintln!("cosignerctl: cannot ask {name} for its endorsement: {e:#}"),
        }
    }
    out
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
    ctx.check_usable(vault, Use::Reshare)?;
    let daemons = parse_daemons(daemons)?;
    let held = ctx.file.current(vault)?;
    let old = held.record.clone();
    for r in remove {
        member_by_name(&old.members, r)?;
    }
    let mut new_members: Vec<Member> = old
        .members
        .iter()
        .filter(|m| !remove.contains(&m.name))
        .cloned()
        .collect();
    for a in add {
        new_members.push(parse_member(a)?);
    }
    let t = threshold.unwrap_or(u32::from(old.public.committee.threshold()));
    let api_new = members_to_api(t, &new_members);
    let (_, new_members) = committee_from_api(&api_new).map_err(|e| anyhow!("{e}"))?;
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
    // Parties that hold nothing of the vault take the old record only with endorsements
    // by at least the old threshold of its members.
    let joiners: Vec<&str> = new_members
        .iter()
        .filter(|m| old.member(&m.id).is_none())
        .map(|m| m.name.as_str())
        .collect();
    let endorsements = endorsements(ctx, &old, &daemons, !joiners.is_empty()).await;
    let t_old = usize::from(old.public.committee.threshold());
    if !joiners.is_empty() && endorsements.len() < t_old {
        bail!(
            "new member(s) {} hold nothing of vault {vault:?} and take its record only with endorsements by at least {t_old} old members; {} could be collected (this device's and those of the old members' daemons given with --daemon NAME=ADDR)",
            joiners.join(", "),
            endorsements.len()
        );
    }
    let relay_addr = relay_addr(relay, &daemons)?;
    let mut relay = ctx.relay(&relay_addr).await?;
    let sid = ctx.create_session(&mut relay, &participants).await?;
    let body_msg = api::ReshareBody {
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
        old_vault_endorsements: endorsements,
    };
    let body = body_msg.encode_to_vec();
    let me = ctx.file.keys.member(&ctx.file.name);
    // The coordinator checks its own request as every other party will.
    let checked = cosigner_node::reshare::check(
        &body,
        cosigner_node::reshare::Parsed {
            requester: me.id,
            body: body_msg,
        },
        Some(&held.record),
        &me,
    )?;
    let auth = cosigner_relay::request::sign(&ctx.file.keys, RESHARE, &body, now_ms());
    let request = api::ReshareRequest {
        body: body.clone(),
        auth: Some(auth),
    };
    if let Some(out) = &request_out {
        write_request(out, RESHARE, &request)?;
    }
    let (fail_tx, mut fail_rx) = mpsc::channel(8);
    let others: Vec<Member> = checked
        .plan
        .roster
        .participants
        .iter()
        .filter(|m| m.id != me.id)
        .cloned()
        .collect();
    let clients = daemon_clients(ctx, &daemons, &others).await?;
    let calls = spawn_calls(clients, fail_tx, |mut c| {
        let req = request.clone();
        async move { c.reshare(req).await }
    });
    let limit = ctx.round_timeout * 3;
    let (mut d, part, end) =
        match take_part_reshare(ctx, relay, &checked, Some(held), &mut fail_rx).await {
            Ok(x) => x,
            Err(e) => return Err(failed(e, calls, limit).await),
        };
    let answers = settle(calls, limit).await;
    close_session(&mut d, &request_out).await;
    let daemons: Vec<PartyOutcome> = answers
        .into_iter()
        .map(|(n, r)| daemon_outcome(&n, &r.map(|r| r.vault)))
        .collect();
    finish_reshare(ctx, vault, part, &end, daemons, json)
}

/// Prints a reshare's outcomes and maps this party's commit end to the result.
fn finish_reshare(
    ctx: &Ctx<'_>,
    vault: &str,
    part: Part,
    end: &CommitEnd,
    daemons: Vec<PartyOutcome>,
    json: bool,
) -> Result<()> {
    let (vault, epoch, dealer, value, line) = match &part {
        Part::New(r) => (
            r.vault_id().to_string(),
            r.epoch(),
            false,
            vault_value(r),
            vault_line(r),
        ),
        Part::Left { new_epoch } => (
            vault.to_string(),
            *new_epoch,
            true,
            json!({"vault_id": vault, "dealt": true, "retired": end.is_done(), "new_epoch": new_epoch}),
            format!("vault {vault}: dealt epoch {new_epoch} and left the committee"),
        ),
    };
    let mut outcomes = vec![own_outcome(&ctx.file.name, end, epoch, dealer)];
    outcomes.extend(daemons);
    conclude(
        ctx, &vault, epoch, dealer, end, &outcomes, value, line, json,
    )
}

/// This party's part of a reshare ([`cosigner_node::reshare::take_part`]), racing the
/// daemons' answers, then the commit ([`cosigner_node::reshare::commit`]) in the party
/// file: a new party keeps its new share pending, sends READY and promotes on a
/// certificate; a dealer that leaves retires on one.
async fn take_part_reshare(
    ctx: &mut Ctx<'_>,
    relay: RelayClient<Channel>,
    c: &cosigner_node::reshare::Checked,
    held: Option<Held>,
    fail_rx: &mut mpsc::Receiver<String>,
) -> Result<(Driver, Part, CommitEnd)> {
    let me = ctx.file.keys.party_id();
    let my_epoch = held.as_ref().map(|h| h.record.epoch());
    let mine = cosigner_node::reshare::Mine {
        epoch: my_epoch,
        pending: ctx.pending_epoch(&c.body.vault_id),
        // Only a dealer needs its share in the rounds.
        share: held.filter(|_| c.plan.is_dealer),
    };
    let mut d = ctx.open_driver(relay, c.plan.roster.clone()).await?;
    let dealt = own_part(fail_rx, async {
        Ok(cosigner_node::reshare::take_part(&mut d, c, me, mine, now_ms()).await?)
    })
    .await;
    let dealt = aborted(&mut d, dealt).await?;
    let keys = ctx.file.keys.clone();
    let (end, part) =
        cosigner_node::reshare::commit(&mut d, &keys, &mut ctx.store(), c, dealt, my_epoch).await;
    Ok((d, part, end))
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

/// How old a request file may be when a device joins it: files wait for their owner, so
/// ten minutes rather than a daemon's clock skew.
const JOIN_SKEW_MS: i64 = 600_000;

async fn join_keygen(ctx: &mut Ctx<'_>, bytes: &[u8], json: bool) -> Result<()> {
    let req = api::KeygenRequest::decode(bytes).context("not a keygen request")?;
    // Request files may wait a while before a device joins; allow ten minutes.
    let parsed = cosigner_node::keygen::parse(&req, now_ms(), JOIN_SKEW_MS)?;
    ctx.check_usable(&parsed.body.vault_id, Use::Keygen)?;
    let me = ctx.file.keys.member(&ctx.file.name);
    let c = cosigner_node::keygen::check(&req.body, parsed, &me)?;
    let relay = ctx.relay(&c.relay.address).await?;
    let (_tx, mut rx) = mpsc::channel(1);
    let (_, record, end) = take_part_keygen(ctx, relay, &c, &mut rx).await?;
    let outcomes = [own_outcome(&ctx.file.name, &end, record.epoch(), false)];
    conclude(
        ctx,
        &c.body.vault_id,
        record.epoch(),
        false,
        &end,
        &outcomes,
        vault_value(&record),
        vault_line(&record),
        json,
    )
}

async fn join_sign(ctx: &mut Ctx<'_>, bytes: &[u8], json: bool) -> Result<()> {
    use cosigner_node::sign;
    let req = api::SignRequest::decode(bytes).context("not a sign request")?;
    // Request files may wait a while before a device joins; allow ten minutes.
    let parsed = sign::parse(&req, now_ms(), JOIN_SKEW_MS)?;
    ctx.check_usable(&parsed.body.vault_id, Use::Sign)?;
    let held = ctx.file.current(&parsed.body.vault_id)?;
    // The same checks as a daemon's, against this party's own record; never blind-sign:
    // the hash is computed here from the payload, and a raw hash is refused.
    let c = sign::check(
        &req.body,
        parsed,
        held.record.clone(),
        ctx.file.keys.party_id(),
        sign::Rules { raw_hash: false },
    )?;
    let relay_ref = c
        .body
        .relay
        .as_ref()
        .ok_or_else(|| anyhow!("the request names no relay"))?;
    let relay = ctx.relay(&relay_ref.address).await?;
    let (_tx, mut rx) = mpsc::channel(1);
    let (_, sig) = take_part_sign(ctx, relay, &c, held, &mut rx).await?;
    sign::verify(&c, &sig)?;
    print_signature(
        &c.body.vault_id,
        c.record.epoch(),
        &c.public_key,
        &c.message_hash,
        &sig.r,
        &sig.s,
        u32::from(sig.recovery_id),
        &c.plan.signers,
        json,
    );
    Ok(())
}

async fn join_reshare(ctx: &mut Ctx<'_>, bytes: &[u8], json: bool) -> Result<()> {
    let req = api::ReshareRequest::decode(bytes).context("not a reshare request")?;
    let parsed = cosigner_node::reshare::parse(&req, now_ms(), JOIN_SKEW_MS)?;
    ctx.check_usable(&parsed.body.vault_id, Use::Reshare)?;
    // This party's own record when it holds the vault: the request's is only compared.
    let held = ctx.file.held_current(&parsed.body.vault_id)?;
    let me = ctx.file.keys.member(&ctx.file.name);
    let c =
        cosigner_node::reshare::check(&req.body, parsed, held.as_ref().map(|h| &h.record), &me)?;
    let relay = ctx.relay(&c.relay.address).await?;
    let (_tx, mut rx) = mpsc::channel(1);
    let (_, part, end) = take_part_reshare(ctx, relay, &c, held, &mut rx).await?;
    finish_reshare(ctx, &c.body.vault_id, part, &end, Vec::new(), json)
}
