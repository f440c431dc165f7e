//! `party sign` (start a signature, as a signer or only as its coordinator) and joining
//! one from a request file: the same parse, check and part as a daemon
//! ([`cosigner_node::sign`]); a device never signs a raw hash.

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) async fn sign(
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
    let mut session = ctx.create_session(&relay_addr, &signer_members).await?;
    let body_msg = api::SignBody {
        vault_id: vault.to_string(),
        epoch: record.epoch(),
        signers: signer_members.iter().map(|m| m.id.to_vec()).collect(),
        payload: Some(payload),
        derivation_path: path.to_string(),
        expected_hashes: vec![expected.unwrap_or_else(|| hash.to_vec())],
        relay: Some(session.relay_ref()),
    };
    let signed = sign_request(&ctx.file.keys, SIGN, &body_msg, now_ms());
    // A signer checks its own request as every other party will (not a signer: it only
    // coordinates, and needs no roster).
    let checked = if i_sign {
        Some(cosigner_node::sign::check(
            &signed.body,
            cosigner_node::sign::Parsed {
                requester: me,
                body: body_msg,
            },
            record.clone(),
            me,
            cosigner_node::sign::Rules { raw_hash: false },
        )?)
    } else {
        None
    };
    let request = api::SignRequest {
        body: signed.body,
        auth: Some(signed.auth),
    };
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
        write_request(out, SIGN, &request)?;
    }
    let mut calls = Calls::spawn(clients, |mut c| {
        let req = request.clone();
        async move { c.sign(req).await }
    });
    let derivation = DerivationPath::parse(path)?;
    let public_key = record.public.derive(&derivation)?;
    let epoch = record.epoch();
    let (own, d) = match &checked {
        Some(c) => {
            let r = take_part_sign(ctx, session.relay.clone(), c, held, &mut calls).await;
            match r {
                Ok((d, sig)) => (Some(sig), Some(d)),
                Err(e) => return Err(failed(e, calls, ctx.round_timeout * 3).await),
            }
        }
        None => (None, None),
    };
    let results = calls.collect().await?;
    match d {
        Some(mut d) => close_session(&mut d, &request_out).await,
        // Not a participant: close the session as its creator.
        None if request_out.is_none() => session.close().await,
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
    if own.is_some() {
        ctx.signed_at(vault, epoch);
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
pub(super) fn print_signature(
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
pub(super) async fn take_part_sign(
    ctx: &mut Ctx<'_>,
    relay: RelayClient<Channel>,
    c: &cosigner_node::sign::Checked,
    held: Held,
    calls: &mut Calls<api::SignResponse>,
) -> Result<(Driver, cosigner_tss::Signature)> {
    let pending = ctx.pending_epoch(c.record.vault_id());
    let mut d = ctx.open_driver(relay, c.plan.roster.clone()).await?;
    let sig = calls
        .watch(async { Ok(cosigner_node::sign::take_part(&mut d, held, c, pending).await?) })
        .await;
    let sig = aborted(&mut d, sig).await?;
    Ok((d, sig))
}

pub(super) async fn join_sign(ctx: &mut Ctx<'_>, bytes: &[u8], json: bool) -> Result<()> {
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
    let (_, sig) = take_part_sign(ctx, relay, &c, held, &mut Calls::new()).await?;
    sign::verify(&c, &sig)?;
    ctx.signed_at(&c.body.vault_id, c.record.epoch());
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
