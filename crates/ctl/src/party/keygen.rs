//! `party keygen` (start one, with the daemons named) and joining one from a request file:
//! the same checks and part as a daemon ([`cosigner_node::keygen`]), then the commit in
//! the party file.

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) async fn keygen(
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
    let session = ctx.create_session(&relay_addr, &all).await?;
    let body_msg = api::KeygenBody {
        vault_id: vault.to_string(),
        scheme: api::Scheme::EcdsaSecp256k1 as i32,
        committee: Some(api_c.clone()),
        relay: Some(session.relay_ref()),
    };
    let signed = sign_request(&ctx.file.keys, KEYGEN, &body_msg, now_ms());
    // The coordinator checks its own request as every other party will.
    let checked = cosigner_node::keygen::check(
        &signed.body,
        cosigner_node::keygen::Parsed {
            requester: me.id,
            body: body_msg,
        },
        &me,
    )?;
    let request = api::KeygenRequest {
        body: signed.body,
        auth: Some(signed.auth),
    };
    if let Some(out) = &request_out {
        write_request(out, KEYGEN, &request)?;
    }
    let clients = daemon_clients(ctx, &daemons, &checked.plan.members).await?;
    let mut calls = Calls::spawn(clients, |mut c| {
        let req = request.clone();
        async move { c.keygen(req).await }
    });
    let limit = ctx.round_timeout * 3;
    let (mut d, record, end) =
        match take_part_keygen(ctx, session.relay, &checked, &mut calls).await {
            Ok(x) => x,
            Err(e) => return Err(failed(e, calls, limit).await),
        };
    let answers = calls.settle(limit).await;
    close_session(&mut d, &request_out).await;
    let mut outcomes = vec![own_outcome(&ctx.file.name, &end, record.epoch(), false)];
    outcomes.extend(
        answers
            .into_iter()
            .map(|(n, r)| daemon_outcome(&n, &r.map(|r| r.vault))),
    );
    finish_keygen(ctx, &record, &end, &outcomes, json)
}

/// Prints a keygen's outcomes and maps this party's commit end to the result.
fn finish_keygen(
    ctx: &Ctx<'_>,
    record: &VaultRecord,
    end: &CommitEnd,
    outcomes: &[PartyOutcome],
    json: bool,
) -> Result<()> {
    conclude(
        ctx,
        record.vault_id(),
        record.epoch(),
        false,
        end,
        outcomes,
        vault_value(record),
        vault_line(record),
        json,
    )
}

/// This party's part of a keygen ([`cosigner_node::keygen::take_part`]), racing the
/// daemons' answers, then the commit (pending, READY, promote) in the party file. A
/// failure before the commit has told the others (ABORT).
pub(super) async fn take_part_keygen(
    ctx: &mut Ctx<'_>,
    relay: RelayClient<Channel>,
    c: &cosigner_node::keygen::Checked,
    calls: &mut Calls<api::KeygenResponse>,
) -> Result<(Driver, VaultRecord, CommitEnd)> {
    let mut d = ctx.open_driver(relay, c.plan.roster.clone()).await?;
    let me = ctx.file.keys.party_id();
    let held = calls
        .watch(async { Ok(cosigner_node::keygen::take_part(&mut d, c, me, now_ms()).await?) })
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

pub(super) async fn join_keygen(ctx: &mut Ctx<'_>, bytes: &[u8], json: bool) -> Result<()> {
    let req = api::KeygenRequest::decode(bytes).context("not a keygen request")?;
    // Request files may wait a while before a device joins; allow ten minutes.
    let parsed = cosigner_node::keygen::parse(&req, now_ms(), JOIN_SKEW_MS)?;
    ctx.check_usable(&parsed.body.vault_id, Use::Keygen)?;
    let me = ctx.file.keys.member(&ctx.file.name);
    let c = cosigner_node::keygen::check(&req.body, parsed, &me)?;
    let relay = ctx.relay(&c.relay.address).await?;
    let (_, record, end) = take_part_keygen(ctx, relay, &c, &mut Calls::new()).await?;
    let outcomes = [own_outcome(&ctx.file.name, &end, record.epoch(), false)];
    finish_keygen(ctx, &record, &end, &outcomes, json)
}
