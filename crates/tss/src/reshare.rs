//! Resharing to a new committee and threshold, keeping the public key and chain code.
//!
//! dkls23 has no resharing; this builds it on its DKG (see docs/reshare.md for the argument).
//! Participants are the dealers D (exactly t_old members of the old committee, fixed before
//! round one and bound into the session id) and the new committee N'.
//!
//! Round 1: every participant deals a polynomial of degree t'-1 and broadcasts Feldman
//! commitments to its coefficients. A dealer i in D uses constant term lambda_i * x_i (its
//! share times its Lagrange coefficient over D, at old indices); a participant outside D
//! uses 0. Each sends the value of its polynomial at every new index j' to that party.
//! Every receiver checks each fragment against the sender's commitments and each constant
//! commitment against lambda_i * X_i (X_i from the old public record) or the identity, and
//! names the sender on a mismatch. Sum over i of lambda_i * x_i is the old key, so the sums
//! of fragments are shares of the old key on a fresh polynomial of degree t'-1.
//!
//! Rounds 2-4: dkls23's DKG phases for N' (fresh OT and zero-share set-up), started from the
//! summed fragments. Each new party checks the resulting public key equals the old one and
//! keeps the old chain code. Parties in D but not in N' are done after round 1.

use std::collections::BTreeMap;

use dkls23::utilities::rng::get_rng;
use k256::elliptic_curve::Field;
use k256::{ProjectivePoint, Scalar};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::curve::{
    PointBytes, decode_point, decode_scalar, encode_point, encode_scalar, eval_commitments,
    eval_poly, lagrange_at_zero, mul_base,
};
use crate::dkg::{DkgRounds, deal, fragment_of, public_shares};
use crate::error::TssError;
use crate::inbox::{Inbox, RoundSpec};
use crate::machine::{Ceremony, Lifecycle, Progress, Rounds, Step};
use crate::message::{Message, encode_body};
use crate::party::{Committee, PartyId};
use crate::session::{CeremonyKind, SessionId, Transcript};
use crate::share::{KeyShare, VaultPublic};

pub struct ReshareParams {
    /// The vault at the old epoch. New parties take it from the vault's committee record.
    pub old: VaultPublic,
    /// Exactly t_old members of the old committee.
    pub dealers: Vec<PartyId>,
    pub new_committee: Committee,
    /// Chosen by the initiator, the same for every participant.
    pub nonce: [u8; 32],
}

impl ReshareParams {
    pub fn session_id(&self) -> SessionId {
        let mut dealers = self.dealers.clone();
        dealers.sort();
        let mut t = Transcript::new(CeremonyKind::Reshare);
        t.bytes(self.old.vault_id.as_bytes())
            .u64(self.old.epoch)
            .committee(&self.old.committee)
            .bytes(&self.old.public_key.0)
            .bytes(&self.old.chain_code)
            .parties(&dealers)
            .committee(&self.new_committee)
            .bytes(&self.nonce);
        t.finish()
    }
}

/// What a participant ends with.
#[derive(Debug)]
pub enum ReshareOutput {
    /// This party is in the new committee: its share of the new epoch.
    NewShare(Box<KeyShare>),
    /// This party only dealt (it is not in the new committee) and holds nothing new.
    Dealt,
}

#[derive(Serialize, Deserialize)]
struct R1Bcast {
    /// Feldman commitments a_k * G, constant term first (t' points).
    commitments: Vec<PointBytes>,
}

pub struct Reshare {
    me: PartyId,
    old: VaultPublic,
    dealers: Vec<PartyId>,
    new_committee: Committee,
    participants: Vec<PartyId>,
    session: SessionId,
    inbox: Inbox,
    /// lambda_i * x_i for a dealer; zero otherwise. Consumed by `start`.
    constant: Zeroizing<[u8; 32]>,
    own_fragment: Zeroizing<[u8; 32]>,
    dkg: Option<DkgRounds>,
    life: Lifecycle,
}

impl Reshare {
    /// `old_share` is required when `me` is a dealer, and ignored otherwise.
    pub fn new(
        params: ReshareParams,
        me: PartyId,
        old_share: Option<&KeyShare>,
    ) -> Result<Reshare, TssError> {
        let old = &params.old;
        let dealers = old.committee.subset("dealers", &params.dealers)?;
        if dealers.len() != usize::from(old.committee.threshold()) {
            return Err(TssError::InvalidParameters(format!(
                "{} dealers; exactly the old threshold ({}) must deal",
                dealers.len(),
                old.committee.threshold()
            )));
        }
        if old.verifying_shares.len() != usize::from(old.committee.size()) {
            return Err(TssError::InvalidParameters(
                "the old record lacks public shares".into(),
            ));
        }
        let mut participants: Vec<PartyId> = dealers
            .iter()
            .chain(params.new_committee.parties())
            .copied()
            .collect();
        participants.sort();
        participants.dedup();
        if !participants.contains(&me) {
            return Err(TssError::NotInCommittee { party: me });
        }
        let session = params.session_id();
        let mut constant = Zeroizing::new([0u8; 32]);
        if dealers.contains(&me) {
            let share = old_share.ok_or_else(|| {
                TssError::InvalidParameters("this party deals but was given no old share".into())
            })?;
            let sp = share.public();
            if sp.vault_id != old.vault_id {
                return Err(TssError::ShareVault {
                    share_vault: sp.vault_id.clone(),
                    ceremony_vault: old.vault_id.clone(),
                });
            }
            if sp.epoch != old.epoch {
                return Err(TssError::ShareEpoch {
                    share_epoch: sp.epoch,
                    ceremony_epoch: old.epoch,
                });
            }
            if sp != old || share.party() != me {
                return Err(TssError::InvalidParameters(
                    "the old share's public record differs from the ceremony's".into(),
                ));
            }
            let lambda = dealer_lambda(old, &dealers, &me)?;
            *constant = encode_scalar(&(lambda * share.state.poly_point));
        }
        let inbox = Inbox::new(
            me,
            session,
            CeremonyKind::Reshare,
            old.epoch,
            &participants,
            // Receivers hear from every other participant in round 1; a dealer that is not
            // receiving waits for nothing.
            if params.new_committee.contains(&me) {
                RoundSpec::from_all(&participants, &me, true, true)
            } else {
                RoundSpec::default()
            },
        );
        Ok(Reshare {
            me,
            old: params.old,
            dealers,
            new_committee: params.new_committee,
            participants,
            session,
            inbox,
            constant,
            own_fragment: Zeroizing::new([0; 32]),
            dkg: None,
            life: Lifecycle::default(),
        })
    }

    /// What every receiver expects dealer `p`'s constant commitment to be.
    fn expected_constant(&self, p: &PartyId) -> Result<ProjectivePoint, TssError> {
        if !self.dealers.contains(p) {
            return Ok(ProjectivePoint::IDENTITY);
        }
        let lambda = dealer_lambda(&self.old, &self.dealers, p)?;
        let x = self
            .old
            .verifying_share(p)
            .and_then(|b| decode_point(&b))
            .ok_or_else(|| {
                TssError::InvalidParameters("the old record lacks a dealer's public share".into())
            })?;
        Ok(ProjectivePoint::from(x) * lambda)
    }

    /// Round 1 for a receiver: check every dealing, sum the fragments, start the DKG.
    fn receive_dealings(
        &mut self,
        p2p: BTreeMap<PartyId, Message>,
        bcast: BTreeMap<PartyId, Message>,
    ) -> Result<Vec<Message>, TssError> {
        let my_new = self
            .new_committee
            .index_of(&self.me)
            .ok_or(TssError::NotInCommittee { party: self.me })?
            .as_u8();
        let degree_plus_one = usize::from(self.new_committee.threshold());
        let mut fragments: Zeroizing<Vec<Scalar>> =
            Zeroizing::new(Vec::with_capacity(p2p.len() + 1));
        let mut constants = ProjectivePoint::IDENTITY;
        for (from, m) in &bcast {
            let frag_msg = p2p.get(from).ok_or(TssError::Missing {
                parties: vec![*from],
            })?;
            let (points, fragment) = open_dealing(m, frag_msg, degree_plus_one, my_new)?;
            if points[0] != self.expected_constant(from)? {
                return Err(TssError::BadConstantTerm { dealer: *from });
            }
            constants += points[0];
            fragments.push(fragment);
        }
        let own = decode_scalar(&self.own_fragment)
            .ok_or_else(|| TssError::ProtocolUnattributed("own fragment lost".into()))?;
        fragments.push(own);
        constants += self.expected_constant(&self.me)?;
        // The constant terms add up to the old key (sum of lambda_i * X_i over D).
        if encode_point(&constants.to_affine()) != self.old.public_key {
            return Err(TssError::ProtocolUnattributed(
                "the dealers' constant terms do not add up to the vault key: the old record is inconsistent".into(),
            ));
        }
        let mut dkg = DkgRounds::new(self.new_committee.clone(), self.me, self.session)?;
        self.inbox.advance(&bcast, dkg.spec());
        let out = dkg.round2(&mut self.inbox, &fragments)?;
        self.dkg = Some(dkg);
        Ok(out)
    }
}

/// Checks one dealing as its receiver would: the dealer's broadcast commitments (one per
/// coefficient of a polynomial of the new threshold) and the fragment it sent to the party
/// at 1-based index `receiver` of the new committee must agree. Returns the commitments
/// and the fragment. Also what a third party runs on forwarded evidence
/// ([`check_dealing`]), so that a blamed dealer is judged by the same code that blamed it.
fn open_dealing(
    bcast: &Message,
    p2p: &Message,
    degree_plus_one: usize,
    receiver: u8,
) -> Result<(Vec<ProjectivePoint>, Scalar), TssError> {
    let from = bcast.from;
    let commitments = bcast.body::<R1Bcast>()?.commitments;
    if commitments.len() != degree_plus_one {
        return Err(TssError::Malformed {
            party: from,
            detail: format!(
                "{} commitments; the new threshold needs {degree_plus_one}",
                commitments.len()
            ),
        });
    }
    let points = commitments
        .iter()
        .map(|c| decode_point(c).map(ProjectivePoint::from))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| TssError::Malformed {
            party: from,
            detail: "a commitment is not a curve point".into(),
        })?;
    let fragment = fragment_of(p2p).map_err(|_| TssError::BadFragment { dealer: from })?;
    if ProjectivePoint::from(mul_base(&fragment)) != eval_commitments(&points, receiver) {
        return Err(TssError::BadFragment { dealer: from });
    }
    Ok((points, fragment))
}

/// Re-checks a reshare dealing from its two messages (the dealer's round-1 broadcast and
/// its round-1 fragment to `receiver`), for a party or an operator judging a blame from
/// forwarded evidence. `Ok` means the dealing is consistent (the blame for a bad fragment
/// does not hold); the error is what the receiver would have found.
pub fn check_dealing(
    new_committee: &Committee,
    receiver: &PartyId,
    bcast: &Message,
    p2p: &Message,
) -> Result<(), TssError> {
    if bcast.kind != CeremonyKind::Reshare
        || p2p.kind != CeremonyKind::Reshare
        || bcast.round != 1
        || p2p.round != 1
        || bcast.to.is_some()
        || p2p.to != Some(*receiver)
        || bcast.from != p2p.from
        || bcast.session != p2p.session
    {
        return Err(TssError::InvalidParameters(
            "not a round-1 reshare dealing (a broadcast and a fragment of one dealer and one session, the fragment to the receiver)".into(),
        ));
    }
    let idx = new_committee
        .index_of(receiver)
        .ok_or(TssError::NotInCommittee { party: *receiver })?
        .as_u8();
    open_dealing(bcast, p2p, usize::from(new_committee.threshold()), idx).map(|_| ())
}

/// Lagrange coefficient of dealer `p` over the dealer set, at old indices.
fn dealer_lambda(old: &VaultPublic, dealers: &[PartyId], p: &PartyId) -> Result<Scalar, TssError> {
    let idx = |q: &PartyId| {
        old.committee
            .index_of(q)
            .map(|i| i.as_u8())
            .ok_or(TssError::NotInCommittee { party: *q })
    };
    let set = dealers.iter().map(idx).collect::<Result<Vec<u8>, _>>()?;
    lagrange_at_zero(idx(p)?, &set)
        .ok_or_else(|| TssError::InvalidParameters("duplicate dealer index".into()))
}

impl Rounds for Reshare {
    type Output = ReshareOutput;

    fn inbox(&mut self) -> &mut Inbox {
        &mut self.inbox
    }

    fn complete_round(&mut self) -> Result<Progress<ReshareOutput>, TssError> {
        let (p2p, bcast) = self.inbox.take();
        match self.inbox.round() {
            1 => Ok(Progress::Sent(self.receive_dealings(p2p, bcast)?)),
            2 => {
                let mut dkg = self.dkg.take().ok_or(TssError::Finished)?;
                let out = dkg.round3(&mut self.inbox, p2p, bcast);
                self.dkg = Some(dkg);
                Ok(Progress::Sent(out?))
            }
            _ => {
                let dkg = self.dkg.take().ok_or(TssError::Finished)?;
                let (mut party, pkg) = dkg.finish(p2p, bcast)?;
                let got = encode_point(pkg.verifying_key());
                if got != self.old.public_key {
                    return Err(TssError::PublicKeyMismatch {
                        expected: format!("{:?}", self.old.public_key),
                        got: format!("{got:?}"),
                    });
                }
                // The DKG tossed a fresh chain code; a reshare keeps the vault's.
                party.derivation_data.chain_code = self.old.chain_code;
                let c = &self.new_committee;
                let verifying_shares = public_shares(c, &pkg)?;
                let public = VaultPublic {
                    vault_id: self.old.vault_id.clone(),
                    epoch: self.old.epoch + 1,
                    committee: c.clone(),
                    public_key: self.old.public_key,
                    chain_code: self.old.chain_code,
                    verifying_shares,
                };
                Ok(Progress::Done(ReshareOutput::NewShare(Box::new(
                    KeyShare::new(public, self.me, party)?,
                ))))
            }
        }
    }
}

impl Ceremony for Reshare {
    type Output = ReshareOutput;

    crate::machine::ceremony_plumbing!(ReshareOutput);

    fn start(&mut self) -> Result<Step<ReshareOutput>, TssError> {
        let mut rng = get_rng();
        let constant = decode_scalar(&self.constant)
            .ok_or_else(|| TssError::ProtocolUnattributed("dealer constant lost".into()))?;
        self.constant.zeroize();
        let mut coeffs: Zeroizing<Vec<Scalar>> = Zeroizing::new(vec![constant]);
        for _ in 1..self.new_committee.threshold() {
            coeffs.push(Scalar::random(&mut rng));
        }
        let commitments = coeffs
            .iter()
            .map(|a| encode_point(&mul_base(a)))
            .collect::<Vec<_>>();
        let mut out = Vec::with_capacity(self.new_committee.parties().len() + 1);
        out.push(self.inbox.send(None, encode_body(&R1Bcast { commitments })));
        let receivers = self.new_committee.parties().to_vec();
        let values: Zeroizing<Vec<Scalar>> = Zeroizing::new(
            (1..=receivers.len())
                .map(|x| eval_poly(&coeffs, x as u8))
                .collect(),
        );
        out.extend(deal(
            &mut self.inbox,
            &receivers,
            &self.me,
            &values,
            &mut self.own_fragment,
        )?);
        if !self.new_committee.contains(&self.me) {
            self.life = Lifecycle::finished();
            return Ok(Step::Done(ReshareOutput::Dealt, out));
        }
        Ok(Step::Continue(out))
    }
}

impl Reshare {
    /// Every participant of the ceremony (dealers and new committee), sorted.
    pub fn participants(&self) -> &[PartyId] {
        &self.participants
    }
}

crate::machine::public_debug!(Reshare);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keygen::{Keygen, KeygenParams};
    use crate::local::{self, Order};

    fn id(i: u8) -> PartyId {
        PartyId([i; 32])
    }

    fn keygen(t: u8, parties: &[PartyId]) -> Vec<KeyShare> {
        let committee = Committee::new(t, parties.iter().copied()).unwrap();
        let machines = parties
            .iter()
            .map(|p| {
                Keygen::new(
                    KeygenParams {
                        vault_id: "unit".into(),
                        committee: committee.clone(),
                        nonce: [1; 32],
                    },
                    *p,
                )
                .unwrap()
            })
            .collect();
        local::run(machines).unwrap().0
    }

    fn params(old: &VaultPublic, dealers: &[PartyId], new: &Committee) -> ReshareParams {
        ReshareParams {
            old: old.clone(),
            dealers: dealers.to_vec(),
            new_committee: new.clone(),
            nonce: [2; 32],
        }
    }

    #[test]
    fn dealer_with_a_wrong_constant_term_is_named() {
        let p = [id(1), id(2), id(3)];
        let old = keygen(2, &p);
        let public = old[0].public().clone();
        let committee = public.committee.clone();
        let mut machines: Vec<Reshare> = old
            .iter()
            .map(|s| {
                Reshare::new(params(&public, &p[..2], &committee), s.party(), Some(s)).unwrap()
            })
            .collect();
        // Dealer p[0] shifts its constant term: its fragments stay consistent with its own
        // commitments, so only the lambda_i * X_i check can catch it.
        let c = decode_scalar(&machines[0].constant).unwrap() + Scalar::ONE;
        *machines[0].constant = encode_scalar(&c);
        let run = local::run_with(machines, Order::Fifo, &mut |_, m| vec![m]);
        for (i, out) in run.outputs.iter().enumerate().skip(1) {
            assert_eq!(
                out.as_ref().unwrap_err(),
                &TssError::BadConstantTerm { dealer: p[0] },
                "party {i}"
            );
        }
    }

    #[test]
    fn below_threshold_shares_do_not_determine_the_key() {
        let p = [id(1), id(2), id(3)];
        let old = keygen(2, &p);
        let public = old[0].public().clone();
        let new = Committee::new(3, [id(1), id(2), id(3), id(4)]).unwrap();
        let mut machines: Vec<Reshare> = old
            .iter()
            .map(|s| Reshare::new(params(&public, &p[1..], &new), s.party(), Some(s)).unwrap())
            .collect();
        machines.push(Reshare::new(params(&public, &p[1..], &new), id(4), None).unwrap());
        let (outs, _) = local::run(machines).unwrap();
        let shares: Vec<KeyShare> = outs
            .into_iter()
            .map(|o| match o {
                ReshareOutput::NewShare(s) => *s,
                ReshareOutput::Dealt => panic!("everyone is in the new committee"),
            })
            .collect();
        let pk = decode_point(&public.public_key).unwrap();
        let interpolate = |subset: &[usize]| {
            let idx: Vec<u8> = subset
                .iter()
                .map(|&i| shares[i].state.party_index.as_u8())
                .collect();
            let mut acc = Scalar::ZERO;
            for (&i, &x) in subset.iter().zip(&idx) {
                acc += lagrange_at_zero(x, &idx).unwrap() * shares[i].state.poly_point;
            }
            mul_base(&acc)
        };
        for pair in [[0, 1], [0, 3], [2, 3], [1, 2]] {
            assert_ne!(
                interpolate(&pair),
                pk,
                "2 shares of a 3-of-4 vault rebuilt the key"
            );
        }
        for triple in [[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]] {
            assert_eq!(interpolate(&triple), pk, "3 shares did not rebuild the key");
        }
        // The old shares (epoch 0) interpolate to the same key, but only among themselves:
        // they are a different polynomial, which is why they must be deleted after a reshare.
        let mixed = {
            let x = [1u8, 2];
            lagrange_at_zero(1, &x).unwrap() * old[0].state.poly_point
                + lagrange_at_zero(2, &x).unwrap() * shares[1].state.poly_point
        };
        assert_ne!(mul_base(&mixed), pk);
    }
}
