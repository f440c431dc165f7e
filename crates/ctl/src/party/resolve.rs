//! An interrupted commit: this party's signed report (`party evidence`) and deciding from
//! the others' reports (`party resolve`).

use super::*;

/// `party evidence`: this party's signed report on its latest commit of a vault.
pub(super) fn evidence(ctx: &Ctx<'_>, vault: &str, out: &Path, about: Option<&str>) -> Result<()> {
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
pub(super) async fn resolve(
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
    let (epoch, old_epoch) = (state.target.epoch, state.old_epoch);
    let verdict = match cosigner_node::resolve::verdict(&state, &reports, &lost, me, false) {
        Ok(v) => v,
        Err(why) => {
            println!(
                "{}",
                json!({"vault_id": vault, "decision": "undecided", "detail": why})
            );
            bail!("vault {vault:?}: undecided: {why}");
        }
    };
    let (applied, _) = cosigner_node::resolve::apply(&mut ctx.store(), state, verdict, now_ms())
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let has_current = ctx.file.slots(vault).is_some_and(|s| s.current.is_some());
    let detail = applied.detail(epoch, old_epoch, has_current);
    let decision = applied.as_str();
    let current = ctx.file.slots(vault).and_then(|s| epoch_of(&s.current));
    println!(
        "{}",
        json!({"vault_id": vault, "decision": decision, "detail": detail, "epoch": current})
    );
    Ok(())
}
