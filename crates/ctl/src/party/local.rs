//! What a device does on its own file: identity and vaults shown, its shares exported to
//! and imported from backups.

use super::*;
use cosigner_node::standing::Standing;

pub(super) fn backup_export(
    ctx: &Ctx<'_>,
    vault: &str,
    out: &Path,
    pass: Option<&Path>,
) -> Result<()> {
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

/// The device's side of an import, with the daemon's refusals ([`cosigner_node::restore`]):
/// another party's backup only into an empty file, never a second share of a vault, never
/// an epoch older than one this file has held; then the peers' word on the epoch.
pub(super) async fn backup_import(
    ctx: &mut Ctx<'_>,
    path: &Path,
    pass: Option<&Path>,
    peers: &[String],
    offline: bool,
) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let pass = file::passphrase_from(pass, crate::backup::PASSPHRASE_ENV)?;
    let b = cosigner_backup::open(&bytes, pass.as_bytes())
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let vault = b.meta.vault_id.clone();
    let party = b.keys.party_id();
    // The same refusals as a daemon's restore (cosigner_node::restore). A file keeps no
    // history: what it has seen is what it holds and what its commit record says.
    let (held, newest_seen) = match ctx.file.slots(&vault) {
        Some(s) => {
            let e = super::store::epochs(s);
            (
                e.current.max(e.pending).max(e.previous),
                super::store::newest_seen(s)?,
            )
        }
        None => (None, None),
    };
    let vaults: Vec<String> = ctx
        .file
        .vaults
        .iter()
        .filter(|v| v.holds_anything())
        .map(|v| v.vault_id.clone())
        .collect();
    let adopt = cosigner_node::restore::check(
        &cosigner_node::restore::Backup {
            party,
            party_name: &b.meta.party_name,
            vault: &vault,
            epoch: b.meta.epoch,
        },
        &cosigner_node::restore::Restoring {
            this: "party file",
            me: ctx.file.keys.party_id(),
            newest_seen,
            floor: None,
            held,
            vaults: &vaults,
        },
    )?;
    // Only the other parties can tell whether a reshare replaced every share since the
    // backup: each peer is asked as the backup's party, with a fresh challenge its signed
    // report must carry (the same rule as a daemon's import: cosigner_node::peers).
    let connect = ctx.connect;
    let confirmed = cosigner_node::peers::ask(
        peers,
        &b.keys,
        &vault,
        b.meta.epoch,
        &b.held.record,
        offline,
        |addr| async move {
            let timeout = Duration::from_secs(connect.timeout.max(1));
            connect
                .channel_to(&addr, Some(timeout))
                .await
                .map(CosignerClient::new)
                .map_err(|e| format!("{e:#}"))
        },
    )
    .await?;
    if !confirmed {
        eprintln!(
            "cosignerctl: importing vault {vault:?} at epoch {} offline: no peer confirmed that epoch",
            b.meta.epoch
        );
    }
    if adopt {
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

pub(super) fn print_identity(f: &PartyFile, json: bool) {
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
pub(super) fn vault_state(v: &VaultSlots) -> (&'static str, Option<CommitState>, Option<String>) {
    match v.commit_state() {
        Err(e) => ("damaged", None, Some(format!("{e:#}"))),
        Ok(state) => {
            // A device's file is written whole: a commit it stopped in is in doubt.
            let state = state.map(CommitState::ended);
            let standing =
                cosigner_node::standing::standing(&super::store::epochs(v), state.as_ref(), None);
            let problem = match &standing {
                Standing::InDoubt(why) => Some(format!(
                    "{why}; run `cosignerctl party resolve --vault {}`",
                    v.vault_id
                )),
                _ => None,
            };
            (standing.as_str(), state, problem)
        }
    }
}

pub(super) fn show(f: &PartyFile, json: bool) {
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
