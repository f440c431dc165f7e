//! Fast refresh: the same committee gets new shares of the same key (dkls23's refresh,
//! which re-randomises the OT set-up instead of redoing it).
//!
//! Every party deals a random polynomial with zero constant term; each share moves by the
//! sum of its fragments, so the key is unchanged while every old share becomes useless with
//! the new ones. The new epoch is the old one plus one, and each party's public share moves
//! by the public point of its correction (taken from the proofs), so the record stays
//! checkable for a later reshare.

use std::collections::BTreeMap;

use dkls23::protocols::PartyIndex;
use dkls23::protocols::dkg::ProofCommitment;
use dkls23::protocols::refresh::{
    KeepRefreshPhase2to3, KeepRefreshPhase3to4, TransmitRefreshPhase2to4, TransmitRefreshPhase3to4,
};
use dkls23::utilities::hashes::HashOutput;
use k256::{ProjectivePoint, Secp256k1};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::curve::{decode_point, decode_scalar, encode_point, encode_scalar};
use crate::dkg::{collect_fragments, deal};
use crate::error::TssError;
use crate::inbox::{Inbox, RoundSpec};
use crate::machine::{Ceremony, Lifecycle, Progress, Rounds, Step, check_route, map_abort};
use crate::message::encode_body;
use crate::party::{Committee, PartyId};
use crate::secp::Party;
use crate::session::{CeremonyKind, SessionId, Transcript};
use crate::share::{KeyShare, VaultPublic};

pub struct RefreshParams {
    /// Chosen by the initiator, the same for every party.
    pub nonce: [u8; 32],
}

#[derive(Serialize, Deserialize)]
struct R2P2p {
    t: TransmitRefreshPhase2to4,
}

#[derive(Serialize, Deserialize)]
struct R2Bcast {
    proof_commitment: HashOutput,
}

#[derive(Serialize, Deserialize)]
struct R3P2p {
    t: TransmitRefreshPhase3to4,
}

#[derive(Serialize, Deserialize)]
struct R3Bcast {
    proof: ProofCommitment<Secp256k1>,
}

pub struct Refresh {
    me: PartyId,
    idx: PartyIndex,
    public: VaultPublic,
    party: Party,
    session: SessionId,
    inbox: Inbox,
    own_fragment: Zeroizing<[u8; 32]>,
    correction: Zeroizing<[u8; 32]>,
    own_proof: Option<ProofCommitment<Secp256k1>>,
    commitments: BTreeMap<PartyId, HashOutput>,
    keep2: Option<BTreeMap<PartyIndex, KeepRefreshPhase2to3>>,
    keep3: Option<BTreeMap<PartyIndex, KeepRefreshPhase3to4>>,
    recv2: Vec<TransmitRefreshPhase2to4>,
    life: Lifecycle,
}

impl Refresh {
    pub fn new(share: &KeyShare, params: RefreshParams) -> Result<Refresh, TssError> {
        let public = share.public().clone();
        let me = share.party();
        let idx = public
            .committee
            .index_of(&me)
            .ok_or(TssError::NotInCommittee { party: me })?;
        let mut t = Transcript::new(CeremonyKind::Refresh);
        t.bytes(public.vault_id.as_bytes())
            .u64(public.epoch)
            .committee(&public.committee)
            .bytes(&public.public_key.0)
            .bytes(&params.nonce);
        let session = t.finish();
        let parties = public.committee.parties().to_vec();
        Ok(Refresh {
            me,
            idx,
            party: share.state.clone(),
            session,
            inbox: Inbox::new(
                me,
                session,
                CeremonyKind::Refresh,
                public.epoch,
                &parties,
                RoundSpec::from_all(&parties, &me, true, false),
            ),
            public,
            own_fragment: Zeroizing::new([0; 32]),
            correction: Zeroizing::new([0; 32]),
            own_proof: None,
            commitments: BTreeMap::new(),
            keep2: None,
            keep3: None,
            recv2: Vec::new(),
            life: Lifecycle::default(),
        })
    }

    fn committee(&self) -> &Committee {
        &self.public.committee
    }

    fn idx_of(&self, p: &PartyId) -> Result<PartyIndex, TssError> {
        self.committee()
            .index_of(p)
            .ok_or(TssError::NotInCommittee { party: *p })
    }

    fn to(&self, i: PartyIndex) -> Result<PartyId, TssError> {
        self.committee().party_at(i).ok_or_else(|| {
            TssError::ProtocolUnattributed(format!("dkls23 addressed unknown index {i}"))
        })
    }

    fn spec(&self, p2p: bool, bcast: bool) -> RoundSpec {
        RoundSpec::from_all(self.committee().parties(), &self.me, p2p, bcast)
    }
}

impl Rounds for Refresh {
    type Output = KeyShare;

    fn inbox(&mut self) -> &mut Inbox {
        &mut self.inbox
    }

    fn complete_round(&mut self) -> Result<Progress<KeyShare>, TssError> {
        let (p2p, bcast) = self.inbox.take();
        match self.inbox.round() {
            1 => {
                let frags = collect_fragments(&p2p, &self.own_fragment)?;
                let (correction, proof, keep, transmit) =
                    self.party.refresh_phase2(&self.session.0, &frags);
                *self.correction = encode_scalar(&correction);
                self.keep2 = Some(keep);
                self.commitments.insert(self.me, proof.commitment);
                let spec = self.spec(true, true);
                self.inbox.advance(&bcast, spec);
                let mut out = Vec::with_capacity(transmit.len() + 1);
                for t in transmit {
                    let to = self.to(t.parties.receiver)?;
                    out.push(self.inbox.send(Some(to), encode_body(&R2P2p { t })));
                }
                out.push(self.inbox.send(
                    None,
                    encode_body(&R2Bcast {
                        proof_commitment: proof.commitment,
                    }),
                ));
                self.own_proof = Some(proof);
                Ok(Progress::Sent(out))
            }
            2 => {
                for (from, m) in &p2p {
                    let body: R2P2p = m.body()?;
                    check_route(&body.t.parties, *from, self.idx_of(from)?, self.idx)?;
                    self.recv2.push(body.t);
                }
                for (from, m) in &bcast {
                    self.commitments
                        .insert(*from, m.body::<R2Bcast>()?.proof_commitment);
                }
                let keep2 = self.keep2.take().ok_or(TssError::Finished)?;
                let (keep3, transmit) = self.party.refresh_phase3(&keep2);
                self.keep3 = Some(keep3);
                let spec = self.spec(true, true);
                self.inbox.advance(&bcast, spec);
                let mut out = Vec::with_capacity(transmit.len() + 1);
                for t in transmit {
                    let to = self.to(t.parties.receiver)?;
                    out.push(self.inbox.send(Some(to), encode_body(&R3P2p { t })));
                }
                let proof = self.own_proof.clone().ok_or(TssError::Finished)?;
                out.push(self.inbox.send(None, encode_body(&R3Bcast { proof })));
                Ok(Progress::Sent(out))
            }
            _ => {
                let mut recv3 = Vec::with_capacity(p2p.len());
                for (from, m) in &p2p {
                    let body: R3P2p = m.body()?;
                    check_route(&body.t.parties, *from, self.idx_of(from)?, self.idx)?;
                    recv3.push(body.t);
                }
                let mut proofs = vec![self.own_proof.clone().ok_or(TssError::Finished)?];
                for (from, m) in &bcast {
                    let proof = m.body::<R3Bcast>()?.proof;
                    if proof.index != self.idx_of(from)? {
                        return Err(TssError::Malformed {
                            party: *from,
                            detail: "proof names another sender".into(),
                        });
                    }
                    if self.commitments.get(from) != Some(&proof.commitment) {
                        return Err(TssError::Protocol {
                            party: *from,
                            reason: "its proof does not open its round-2 commitment".into(),
                        });
                    }
                    proofs.push(proof);
                }
                let correction = decode_scalar(&self.correction)
                    .ok_or_else(|| TssError::ProtocolUnattributed("own correction lost".into()))?;
                let keep3 = self.keep3.take().ok_or(TssError::Finished)?;
                let new_party = self
                    .party
                    .refresh_phase4(
                        &self.session.0,
                        &correction,
                        &proofs,
                        &keep3,
                        &self.recv2,
                        &recv3,
                    )
                    .map_err(|a| map_abort(a, &self.public.committee))?;
                // Each public share moves by the public point of that party's correction.
                let mut verifying_shares = self.public.verifying_shares.clone();
                for proof in &proofs {
                    let i = usize::from(proof.index.as_u8()) - 1;
                    let old = verifying_shares
                        .get(i)
                        .and_then(decode_point)
                        .ok_or_else(|| {
                            TssError::ProtocolUnattributed("bad public share in the record".into())
                        })?;
                    let moved =
                        ProjectivePoint::from(old) + ProjectivePoint::from(proof.proof.point);
                    verifying_shares[i] =
                        encode_point(&k256::elliptic_curve::group::Curve::to_affine(&moved));
                }
                let public = VaultPublic {
                    epoch: self.public.epoch + 1,
                    verifying_shares,
                    ..self.public.clone()
                };
                Ok(Progress::Done(KeyShare::new(public, self.me, new_party)?))
            }
        }
    }
}

impl Ceremony for Refresh {
    type Output = KeyShare;

    crate::machine::ceremony_plumbing!(KeyShare);

    fn start(&mut self) -> Result<Step<KeyShare>, TssError> {
        let values = Zeroizing::new(self.party.refresh_phase1());
        let parties = self.committee().parties().to_vec();
        let out = deal(
            &mut self.inbox,
            &parties,
            &self.me,
            &values,
            &mut self.own_fragment,
        )?;
        Ok(Step::Continue(out))
    }
}

crate::machine::public_debug!(Refresh);
