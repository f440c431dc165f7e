//! `party reshare` (start one: dealers, new committee, endorsements of the old record for
//! new members) and joining one from a request file: the same checks, part and commit as a
//! daemon ([`cosigner_node::reshare`]).

use super::*;

/// Endorsements of the old record for parties that hold nothing of the vault: this
/// party's own, and (when `ask`) those of the old members' daemons it was given.
pub(super) async fn endorsements(
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
pub(super) async fn reshare(
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
    let session = ctx.create_session(&relay_addr, &participants).await?;
    let body_msg = api::ReshareBody {
        vault_id: vault.to_string(),
        old_epoch: old.epoch(),
        dealers: dealer_members.iter().map(|m| m.id.to_vec()).collect(),
        new_committee: Some(api_new),
        relay: Some(session.relay_ref()),
        old_vault: old.encode(),
        scheduled: false,
        old_vault_endorsements: endorsements,
    };
    let signed = sign_request(&ctx.file.keys, RESHARE, &body_msg, now_ms());
    let me = ctx.file.keys.member(&ctx.file.name);
    // The coordinator checks its own request as every other party will.
    let checked = cosigner_node::reshare::check(
        &signed.body,
        cosigner_node::reshare::Parsed {
            requester: me.id,
            body: body_msg,
        },
        Some(&held.record),
        &me,
    )?;
    let request = api::ReshareRequest {
        body: signed.body,
        auth: Some(signed.auth),
    };
    if let Some(out) = &request_out {
        write_request(out, RESHARE, &request)?;
    }
    let others: Vec<Member> = checked
        .plan
        .roster
        .participants
        .iter()
        .filter(|m| m.id != me.id)
        .cloned()
        .collect();
    let clients = daemon_clients(ctx, &daemons, &others).await?;
    let mut calls = Calls::spawn(clients, |mut c| {
        let req = request.clone();
        async move { c.reshare(req).await }
    });
    let limit = ctx.round_timeout * 3;
    let (mut d, part, end) =
        match take_part_reshare(ctx, session.relay, &checked, Some(held), &mut calls).await {
            Ok(x) => x,
            Err(e) => return Err(failed(e, calls, limit).await),
        };
    let answers = calls.settle(limit).await;
    close_session(&mut d, &request_out).await;
    let daemons: Vec<PartyOutcome> = answers
        .into_iter()
        .map(|(n, r)| daemon_outcome(&n, &r.map(|r| r.vault)))
        .collect();
    finish_reshare(ctx, vault, part, &end, daemons, json)
}

/// Prints a reshare's outcomes and maps this party's commit end to the result.
pub(super) fn finish_reshare(
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
pub(super) async fn take_part_reshare(
    ctx: &mut Ctx<'_>,
    relay: RelayClient<Channel>,
    c: &cosigner_node::reshare::Checked,
    held: Option<Held>,
    calls: &mut Calls<api::ReshareResponse>,
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
    let dealt = calls
        .watch(async {
            Ok(cosigner_node::reshare::take_part(&mut d, c, me, mine, now_ms()).await?)
        })
        .await;
    let dealt = aborted(&mut d, dealt).await?;
    let keys = ctx.file.keys.clone();
    let (end, part) =
        cosigner_node::reshare::commit(&mut d, &keys, &mut ctx.store(), c, dealt, my_epoch).await;
    Ok((d, part, end))
}

pub(super) async fn join_reshare(ctx: &mut Ctx<'_>, bytes: &[u8], json: bool) -> Result<()> {
    let req = api::ReshareRequest::decode(bytes).context("not a reshare request")?;
    let parsed = cosigner_node::reshare::parse(&req, now_ms(), JOIN_SKEW_MS)?;
    ctx.check_usable(&parsed.body.vault_id, Use::Reshare)?;
    // This party's own record when it holds the vault: the request's is only compared.
    let held = ctx.file.held_current(&parsed.body.vault_id)?;
    let me = ctx.file.keys.member(&ctx.file.name);
    let c =
        cosigner_node::reshare::check(&req.body, parsed, held.as_ref().map(|h| &h.record), &me)?;
    let relay = ctx.relay(&c.relay.address).await?;
    let (_, part, end) = take_part_reshare(ctx, relay, &c, held, &mut Calls::new()).await?;
    finish_reshare(ctx, &c.body.vault_id, part, &end, Vec::new(), json)
}
