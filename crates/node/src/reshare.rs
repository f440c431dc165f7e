//! A reshare request: parse, check, take part, commit.
//!
//! Whom this party talks to comes from its own record when it holds the vault
//! ([`cosigner_relay::roster::reshare`]): a request can name the parties, never their keys,
//! and one that lists a known member with other keys is refused naming the member. A party
//! that holds nothing relies on the old record only when t old members endorse it; who may
//! bring such a party in is the caller's rule (a daemon's allow list). The commit is the
//! one of [`cosigner_relay::finish`]: a new party keeps its share pending until a
//! certificate, a dealer that leaves retires on one.

use std::collections::HashSet;

use cosigner_api::v1::{RelayRef, ReshareBody, ReshareRequest};
use cosigner_party::{Held, Member, PartyKeys, VaultRecord};
use cosigner_relay::finish::{self, CommitEnd, CommitStore};
use cosigner_relay::roster::{self, ResharePlan};
use cosigner_relay::{DriveError, Driver, Hello};
use cosigner_tss::{PartyId, Reshare, ReshareOutput, ReshareParams};

use crate::error::NodeError;

/// The gRPC method a reshare request is signed for.
pub const METHOD: &str = "/cosigner.v1.Cosigner/Reshare";

pub type Parsed = crate::request::Parsed<ReshareBody>;

/// The request's signature over the exact body bytes (within `max_skew_ms`), then the body.
pub fn parse(req: &ReshareRequest, now_ms: i64, max_skew_ms: i64) -> Result<Parsed, NodeError> {
    let requester =
        crate::request::requester(req.auth.as_ref(), METHOD, &req.body, now_ms, max_skew_ms)?;
    let body = crate::request::body(&req.body, "ReshareBody", |b: &ReshareBody| &b.vault_id)?;
    Ok(Parsed { requester, body })
}

#[derive(Debug)]
pub struct Checked {
    pub requester: [u8; 32],
    pub body: ReshareBody,
    pub relay: RelayRef,
    pub plan: ResharePlan,
}

/// The request against `held`, this party's own record if it holds the vault (read
/// without unsealing), as `me` (named as its record names it).
pub fn check(
    body_bytes: &[u8],
    parsed: Parsed,
    held: Option<&VaultRecord>,
    me: &Member,
) -> Result<Checked, NodeError> {
    let Parsed { requester, body } = parsed;
    let relay = body
        .relay
        .clone()
        .ok_or_else(|| NodeError::invalid("relay", "missing"))?;
    let plan = roster::reshare(
        &roster::ReshareRequest {
            body: body_bytes,
            vault_id: &body.vault_id,
            old_epoch: body.old_epoch,
            old_vault: &body.old_vault,
            endorsements: &body.old_vault_endorsements,
            dealers: &body.dealers,
            new_committee: body.new_committee.as_ref(),
            relay_session: &relay.session_id,
            requester,
        },
        held,
        me,
    )?;
    Ok(Checked {
        requester,
        body,
        relay,
        plan,
    })
}

/// What this party came out of the rounds with.
pub enum Dealt {
    /// It is in the new committee: its new share with the new record, for the commit.
    NewShare(Box<Held>),
    /// A dealer that leaves the committee.
    Left,
}

/// What this party brings to the rounds.
pub struct Mine {
    /// The epoch of the record it holds (None: it holds nothing of the vault).
    pub epoch: Option<u64>,
    /// A pending epoch left by an interrupted ceremony.
    pub pending: Option<u64>,
    /// Its current share, unsealed, when it deals (dropped once the engine holds its own
    /// copy); None otherwise.
    pub share: Option<Held>,
}

/// This party's part: HELLO (at its epoch; dealers must hold the old one), the engine's
/// rounds, and the new record with its new share. A failure after the rounds is announced
/// (ABORT) before it returns.
pub async fn take_part(
    d: &mut Driver,
    c: &Checked,
    me: [u8; 32],
    mine: Mine,
    now_ms: i64,
) -> Result<Dealt, NodeError> {
    let plan = &c.plan;
    let old_epoch = plan.old.epoch();
    let Mine {
        epoch: my_epoch,
        pending,
        share: held,
    } = mine;
    let dealers: HashSet<[u8; 32]> = plan.dealers.iter().copied().collect();
    d.hello(
        Hello {
            epoch: my_epoch,
            pending,
        },
        &|id| dealers.contains(id).then_some(old_epoch),
    )
    .await?;
    let params = ReshareParams {
        old: plan.old.public.clone(),
        dealers: plan.dealers.iter().map(|id| PartyId(*id)).collect(),
        new_committee: plan.new_committee.clone(),
        nonce: d.engine_nonce()?,
    };
    let ceremony = Reshare::new(params, PartyId(me), held.as_ref().map(|h| &h.share))
        .map_err(DriveError::from)?;
    drop(held);
    let out = d.run(ceremony).await?;
    let stop = |why: String| async move {
        d.abort(&why).await;
        Err(NodeError::internal(why))
    };
    match out {
        ReshareOutput::NewShare(share) => match VaultRecord::new(
            share.public().clone(),
            plan.new_members.clone(),
            plan.old.created_at_ms,
            now_ms,
        )
        .and_then(|r| Held::new(r, *share))
        {
            Ok(h) => Ok(Dealt::NewShare(Box::new(h))),
            Err(e) => {
                stop(format!(
                    "{} could not record the vault: {e}",
                    cosigner_party::keys::short(&me)
                ))
                .await
            }
        },
        ReshareOutput::Dealt if plan.in_new_committee => {
            stop("the engine only dealt, but this party is in the new committee".into()).await
        }
        ReshareOutput::Dealt => Ok(Dealt::Left),
    }
}

/// How this party's part ended, for its answer.
pub enum Part {
    /// In the new committee: the new record (current, or pending while in doubt).
    New(VaultRecord),
    /// A dealer that left the committee.
    Left { new_epoch: u64 },
}

/// The commit ([`cosigner_relay::finish`]): a new party seals its share pending, sends
/// READY and promotes on a certificate; a dealer that leaves retires on one. It never
/// fails: the end says what happened (in doubt included).
pub async fn commit<S: CommitStore<Pending = Held>>(
    d: &mut Driver,
    keys: &PartyKeys,
    store: &mut S,
    c: &Checked,
    dealt: Dealt,
    my_epoch: Option<u64>,
) -> (CommitEnd, Part) {
    let plan = &c.plan;
    let new_parties: Vec<[u8; 32]> = plan.new_committee.parties().iter().map(|p| p.0).collect();
    let old_epoch = plan.old.epoch();
    let new_epoch = old_epoch + 1;
    match dealt {
        Dealt::NewShare(held) => {
            let record = held.record.clone();
            let (end, _) =
                finish::new_party(d, keys, store, &record, *held, new_parties, my_epoch).await;
            (end, Part::New(record))
        }
        Dealt::Left => {
            let (end, _) = finish::leaving_dealer(
                d,
                store,
                &c.body.vault_id,
                new_epoch,
                &plan.old.public.public_key.0,
                new_parties,
                old_epoch,
            )
            .await;
            (end, Part::Left { new_epoch })
        }
    }
}
