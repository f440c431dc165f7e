//! `cosignerctl party`: a device party, the reference client for wallets.
//!
//! It keeps its identity and shares in a passphrase-encrypted file ([`file`]), and it can
//! start a ceremony (create the relay session, send the signed request to the daemons that
//! take part, and take part itself) or join one from a request file another party wrote.
//! It runs the same engine, driver, roster rules and commit steps as the daemon: every
//! roster is built by `cosigner_relay::roster` from the device's own record, and keygen and
//! reshare end with `cosigner_relay::finish` over the party file ([`store`]).

pub mod file;
mod keygen;
mod local;
mod reshare;
mod resolve;
mod sign;
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
use cosigner_node::coordinator::{Calls, SESSION_TTL_SECONDS, Session, sign_request};
use cosigner_node::reshare::Part;
use cosigner_relay::commit::{CommitState, Holding, Phase, Report};
use cosigner_relay::finish::{self, CommitEnd};
use cosigner_relay::keys::{hex, parse_id};
use cosigner_relay::record::{committee_from_api, members_to_api};
use cosigner_relay::roster::{self, Roster};
use cosigner_relay::{Driver, Held, Member, PartyKeys, SessionSpec, VaultRecord};
use cosigner_tss::DerivationPath;
use prost::Message as _;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::connect::ConnectArgs;
use crate::payload::{NetworkArg, PayloadArgs, payload_hash};
use file::{PartyFile, VaultSlots, epoch_of, put};
use store::FileStore;

use keygen::*;
use local::*;
use reshare::*;
use resolve::*;
use sign::*;

pub const KEYGEN: &str = cosigner_node::keygen::METHOD;
pub const SIGN: &str = cosigner_node::sign::METHOD;
pub const RESHARE: &str = cosigner_node::reshare::METHOD;
pub const GET_VAULT_RECORD: &str = cosigner_node::request::GET_VAULT_RECORD;

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
        /// A committee daemon to ask whether the backup's epoch is still the vault's
        /// (repeatable): a stale backup is refused, and one confirmation is needed.
        #[arg(long = "peer", value_name = "ADDR")]
        peers: Vec<String>,
        /// Import without any confirmation (no peer reachable); a stale backup cannot then
        /// be told apart.
        #[arg(long)]
        offline: bool,
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

    /// After a verified signature at `epoch`: the previous share of `vault` is destroyed
    /// ([`cosigner_node::previous::after_signature`]). The signature stands either way;
    /// a file that cannot be written is reported, and the next command tries again.
    pub(super) fn signed_at(&mut self, vault: &str, epoch: u64) {
        let dropped = store::drop_done_previous(&mut self.file, Some((vault, epoch)), now_ms());
        if dropped.is_empty() {
            return;
        }
        match self.save() {
            Ok(()) => dropped.iter().for_each(|l| eprintln!("cosignerctl: {l}")),
            Err(e) => eprintln!(
                "cosignerctl: warning: could not write the party file after dropping the previous share of vault {vault:?}: {e:#}"
            ),
        }
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

    /// A fresh relay session for exactly `participants` ([`Session::create`]).
    async fn create_session(&self, relay_addr: &str, participants: &[Member]) -> Result<Session> {
        let relay = self.relay(relay_addr).await?;
        Ok(Session::create(
            relay,
            relay_addr.to_string(),
            participants.iter().map(|m| m.id),
            SESSION_TTL_SECONDS,
        )
        .await?)
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
        self.vault_record_as(&self.file.keys, addr, vault, about)
            .await
    }

    /// A signed record request as `keys` (a restored backup's party asks as itself).
    async fn vault_record_as(
        &self,
        keys: &PartyKeys,
        addr: &str,
        vault: &str,
        about: Option<[u8; 32]>,
    ) -> Result<api::VaultRecordResponse> {
        let body = api::VaultRecordBody {
            vault_id: vault.to_string(),
            about: about.map(|a| a.to_vec()).unwrap_or_default(),
        }
        .encode_to_vec();
        let auth = cosigner_relay::request::sign(keys, GET_VAULT_RECORD, &body, now_ms());
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

/// Tells the other parties this one stopped, then returns the error.
async fn aborted<T>(d: &mut Driver, r: Result<T>) -> Result<T> {
    if let Err(e) = &r {
        d.abort(&format!("{e}")).await;
    }
    r
}

/// On a failure before the commit: waits (bounded) for the daemons to end their part too,
/// so their errors are reported with this party's.
async fn failed<U: Send + 'static>(
    e: anyhow::Error,
    calls: Calls<U>,
    limit: Duration,
) -> anyhow::Error {
    match calls.errors(limit).await {
        None => e,
        Some(errors) => e.context(format!("daemons: {errors}")),
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
    // Previous shares whose time is up are destroyed; a file that cannot be written now
    // does not stop a command that only reads (the next write carries the drop).
    let dropped = store::drop_done_previous(&mut ctx.file, None, now_ms());
    if !dropped.is_empty() {
        match ctx.save() {
            Ok(()) => dropped.iter().for_each(|l| eprintln!("cosignerctl: {l}")),
            Err(e) => eprintln!(
                "cosignerctl: warning: could not write the party file to drop a previous share: {e:#}"
            ),
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
            peers,
            offline,
        } => {
            backup_import(
                &mut ctx,
                &backup,
                backup_passphrase_file.as_deref(),
                &peers,
                offline,
            )
            .await
        }
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
