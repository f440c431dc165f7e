//! A reshare request: parse, check, take part, commit.
//!
//! Whom this party talks to comes from its own record when it holds the vault
//! ([`cosigner_relay::roster::reshare`]): a request can name the parties, never their keys,
//! and one that lists a known member with other keys is refused naming the member. A party
//! that holds nothing relies on the old record only when t old members endorse it, and
//! [`Server::reshare`] lets only a requester on its allow list bring it in. The commit is the
//! one of [`cosigner_relay::finish`]: a new party keeps its share pending until a
//! certificate, a dealer that leaves retires on one.

use std::collections::HashSet;

use cosigner_api::v1::{RelayRef, ReshareBody, ReshareRequest};
use cosigner_party::{Held, Member, PartyKeys, VaultRecord};
use cosigner_relay::finish::{self, CommitEnd, CommitStore};
use cosigner_relay::roster::{self, ResharePlan};
use cosigner_relay::{DriveError, Driver, Hello};
use cosigner_tss::{PartyId, Reshare, ReshareOutput, ReshareParams};

use crate::error::{Code, NodeError};
use crate::facts::{self, Asker};
use crate::ports::{Admission, Clock, Decider, Journal, Kind, Observer, Relays, Shares};
use crate::server::Server;

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

/// A reshare served to its end: the checked request, this party's part, and the journal
/// entry of the outcome.
pub struct Reshared {
    pub checked: Checked,
    pub part: Part,
    pub seq: u64,
}

impl<S, J, D, R, C, O> Server<'_, S, J, D, R, C, O>
where
    S: Shares,
    J: Journal,
    D: Decider,
    R: Relays,
    C: Clock,
    O: Observer,
{
    /// Serves one reshare request: the request signature and body, one keygen or reshare
    /// of the vault at a time, the request checked against this party's own record (or,
    /// holding nothing, against the old members' endorsements, and only for a requester on
    /// the allow list), the policy on the change, the gate, the share unsealed (a dealer
    /// only), the rounds, the commit and its outcome recorded.
    pub async fn reshare(
        &self,
        req: &ReshareRequest,
        tls_identity: &str,
    ) -> Result<Reshared, NodeError> {
        let now = self.clock.now_ms();
        let parsed = parse(req, now, self.max_clock_skew_ms)?;
        let _claim = self.journal.exclusive(&parsed.body.vault_id)?;
        // This party's own record (nothing unsealed), if it holds the vault.
        let held_record = self.shares.reshare_record(&parsed.body.vault_id).await?;
        let c = check(
            &req.body,
            parsed,
            held_record.as_ref(),
            &self.me_member(held_record.as_ref()),
        )?;
        let plan = &c.plan;
        // A party that holds nothing of the vault cannot check the old record against its
        // own: only a requester trusted to start keygens here may bring it in.
        if plan.joins_only && !self.allowed(&c.requester) {
            return Err(NodeError::new(
                Code::PermissionDenied,
                format!(
                    "this party holds no share of vault {:?}; joining it as a new member must be requested by a party in ceremonies.allowed_requesters ({} is not)",
                    c.body.vault_id,
                    cosigner_party::keys::short(&c.requester)
                ),
            ));
        }
        let my_epoch = held_record.as_ref().map(VaultRecord::epoch);
        let windows = self.journal.windows(&c.body.vault_id, now).await?;
        let asker = Asker {
            requester: c.requester,
            tls_identity: tls_identity.to_string(),
        };
        let decision = self
            .decider
            .decide(cosigner_policy::input::document(&facts::reshare(
                &facts::ReshareChange {
                    old: &plan.old,
                    dealers: &plan.dealers,
                    new_committee: &plan.new_committee,
                    new_members: &plan.new_members,
                    refresh: plan.refresh,
                    scheduled: c.body.scheduled,
                },
                &asker,
                windows,
                now,
            )));
        self.observer.decided(Kind::Reshare, &decision);
        let admitted = self
            .journal
            .admit(
                Admission {
                    kind: Kind::Reshare,
                    vault_id: &c.body.vault_id,
                    epoch: plan.old.epoch(),
                    committee: Some(&plan.new_committee),
                    payload: None,
                    decoded: None,
                    requester: c.requester,
                    nonce: crate::request::nonce(req.auth.as_ref()),
                    tls_identity,
                    relay: &c.relay,
                },
                &decision,
            )
            .await?;
        // Unsealed last, and by a dealer only.
        let run = async {
            let share = if plan.is_dealer {
                Some(self.shares.unseal(&c.body.vault_id).await?)
            } else {
                None
            };
            let pending = self.shares.pending(&c.body.vault_id).await?;
            let mut d = self
                .relays
                .open(Kind::Reshare, &c.relay, plan.roster.clone())
                .await?;
            let mine = Mine {
                epoch: my_epoch,
                pending,
                share,
            };
            let dealt = take_part(&mut d, &c, self.me(), mine, self.clock.now_ms()).await?;
            Ok::<_, NodeError>((d, dealt))
        };
        let (mut d, dealt) = match Box::pin(run).await {
            Ok(v) => v,
            Err(e) => return Err(self.journal.failed(&admitted, e).await),
        };
        let new_epoch = plan.old.epoch() + 1;
        let mut store = self.shares.commit(Kind::Reshare, new_epoch);
        let (end, part) = commit(&mut d, self.keys, &mut store, &c, dealt, my_epoch).await;
        let seq = self
            .journal
            .committed(&admitted, end, new_epoch, &plan.old.public.public_key.0)
            .await?;
        Ok(Reshared {
            checked: c,
            part,
            seq,
        })
    }
}
