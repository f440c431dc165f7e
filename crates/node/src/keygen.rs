//! A keygen request: parse, check, take part. Nobody holds a record yet, so the committee
//! comes from the request ([`cosigner_relay::roster::keygen`]); every member confirms its
//! own key in its signed HELLO. Who may ask: the allow list of [`Server::keygen`] (a
//! device's owner decides for it instead). The commit that follows is
//! [`cosigner_relay::finish::new_party`].

use cosigner_api::v1::{KeygenBody, KeygenRequest, RelayRef, Scheme};
use cosigner_party::{Held, Member, VaultRecord};
use cosigner_relay::roster::{self, KeygenPlan};
use cosigner_relay::{Driver, Hello};
use cosigner_tss::{Keygen, KeygenParams, PartyId};

use cosigner_relay::finish;

use crate::error::{Code, NodeError};
use crate::facts::{self, Asker};
use crate::ports::{Admission, Clock, Decider, Journal, Kind, Observer, Relays, Shares};
use crate::server::Server;

/// The gRPC method a keygen request is signed for.
pub const METHOD: &str = "/cosigner.v1.Cosigner/Keygen";

pub type Parsed = crate::request::Parsed<KeygenBody>;

/// The request's signature over the exact body bytes (within `max_skew_ms`), then the body.
pub fn parse(req: &KeygenRequest, now_ms: i64, max_skew_ms: i64) -> Result<Parsed, NodeError> {
    let requester =
        crate::request::requester(req.auth.as_ref(), METHOD, &req.body, now_ms, max_skew_ms)?;
    Ok(Parsed {
        requester,
        body: parse_body(&req.body)?,
    })
}

/// The body alone: decoded, a valid vault id, a scheme this build has.
pub fn parse_body(bytes: &[u8]) -> Result<KeygenBody, NodeError> {
    let body = crate::request::body(bytes, "KeygenBody", |b: &KeygenBody| &b.vault_id)?;
    if body.scheme != Scheme::EcdsaSecp256k1 as i32 {
        return Err(NodeError::invalid(
            "scheme",
            "only SCHEME_ECDSA_SECP256K1 exists in this build",
        ));
    }
    Ok(body)
}

#[derive(Debug)]
pub struct Checked {
    pub requester: [u8; 32],
    pub body: KeygenBody,
    pub relay: RelayRef,
    pub plan: KeygenPlan,
}

/// The committee as the request names it, with this party (`me`, its name and keys) in it.
pub fn check(body_bytes: &[u8], parsed: Parsed, me: &Member) -> Result<Checked, NodeError> {
    let Parsed { requester, body } = parsed;
    let relay = body
        .relay
        .clone()
        .ok_or_else(|| NodeError::invalid("relay", "missing"))?;
    let plan = roster::keygen(
        body_bytes,
        &body.vault_id,
        &relay.session_id,
        body.committee.as_ref(),
        requester,
        me,
    )?;
    Ok(Checked {
        requester,
        body,
        relay,
        plan,
    })
}

/// This party's part: HELLO (it holds nothing yet), the engine's rounds, and the new
/// vault's record with this party's share, ready for the commit. A failure after the
/// rounds is announced (ABORT) before it returns.
pub async fn take_part(
    d: &mut Driver,
    c: &Checked,
    me: [u8; 32],
    now_ms: i64,
) -> Result<Held, NodeError> {
    d.hello(
        Hello {
            epoch: None,
            pending: None,
        },
        &|_| None,
    )
    .await?;
    let params = KeygenParams {
        vault_id: c.body.vault_id.clone(),
        committee: c.plan.committee.clone(),
        nonce: d.engine_nonce()?,
    };
    let keygen = Keygen::new(params, PartyId(me)).map_err(cosigner_relay::DriveError::from)?;
    let share = d.run(keygen).await?;
    match VaultRecord::new(share.public().clone(), c.plan.members.clone(), now_ms, 0)
        .and_then(|r| Held::new(r, share))
    {
        Ok(held) => Ok(held),
        Err(e) => {
            let why = format!(
                "{} could not record the vault: {e}",
                cosigner_party::keys::short(&me)
            );
            d.abort(&why).await;
            Err(NodeError::internal(why))
        }
    }
}

/// A keygen served to its end: the new vault's record, committed, and the journal entry of
/// the outcome.
#[derive(Debug)]
pub struct Generated {
    pub record: VaultRecord,
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
    /// Serves one keygen request: the request signature, the allow list (a keygen has no
    /// committee to check the requester against), the body, one keygen or reshare of the
    /// vault at a time, the committee with this party in it, nothing held of the vault
    /// yet, the policy, the gate, the rounds, the commit (pending, READY, promote on a
    /// certificate) and its outcome recorded.
    pub async fn keygen(
        &self,
        req: &KeygenRequest,
        tls_identity: &str,
    ) -> Result<Generated, NodeError> {
        let now = self.clock.now_ms();
        let requester = crate::request::requester(
            req.auth.as_ref(),
            METHOD,
            &req.body,
            now,
            self.max_clock_skew_ms,
        )?;
        // Checked before anything else is read of the request.
        if !self.allowed(&requester) {
            return Err(NodeError::new(
                Code::PermissionDenied,
                format!(
                    "party {} may not request a keygen here (not in ceremonies.allowed_requesters)",
                    cosigner_party::keys::short(&requester)
                ),
            ));
        }
        let parsed = Parsed {
            requester,
            body: parse_body(&req.body)?,
        };
        let _claim = self.journal.exclusive(&parsed.body.vault_id)?;
        let c = check(&req.body, parsed, &self.me_member(None))?;
        self.shares.vacant(&c.body.vault_id).await?;
        let asker = Asker {
            requester,
            tls_identity: tls_identity.to_string(),
        };
        let decision = self
            .decider
            .decide(cosigner_policy::input::document(&facts::keygen(
                &c.body.vault_id,
                &c.plan.committee,
                &c.plan.members,
                &asker,
                now,
            )));
        self.observer.decided(Kind::Keygen, &decision);
        let admitted = self
            .journal
            .admit(
                Admission {
                    kind: Kind::Keygen,
                    vault_id: &c.body.vault_id,
                    epoch: 0,
                    committee: Some(&c.plan.committee),
                    payload: None,
                    decoded: None,
                    requester,
                    nonce: crate::request::nonce(req.auth.as_ref()),
                    tls_identity,
                    relay: &c.relay,
                },
                &decision,
            )
            .await?;
        let run = async {
            let mut d = self
                .relays
                .open(Kind::Keygen, &c.relay, c.plan.roster.clone())
                .await?;
            let held = take_part(&mut d, &c, self.me(), self.clock.now_ms()).await?;
            Ok::<_, NodeError>((d, held))
        };
        let (mut d, held) = match Box::pin(run).await {
            Ok(v) => v,
            Err(e) => return Err(self.journal.failed(&admitted, e).await),
        };
        let record = held.record.clone();
        let parties: Vec<[u8; 32]> = record.members.iter().map(|m| m.id).collect();
        let mut store = self.shares.commit(Kind::Keygen, 0);
        let (end, _) =
            finish::new_party(&mut d, self.keys, &mut store, &record, held, parties, None).await;
        let seq = self
            .journal
            .committed(&admitted, end, 0, &record.public.public_key.0)
            .await?;
        Ok(Generated { record, seq })
    }
}
