//! DKG rounds 2 to 4 of dkls23, shared by keygen and by the receivers of a reshare.
//!
//! Round 1 differs (keygen deals random polynomials; a reshare deals Feldman-checked
//! polynomials whose constant terms add up to the old key). From the summed fragments on,
//! both run the same steps: commitments to a proof of the new public share, zero-share and
//! OT set-up for the multiplications of later signatures, and the chain-code coin toss.
//!
//! Commit, then reveal: round 2 broadcasts only the hash commitment to the proof of the new
//! public share; round 3 broadcasts the proof, checked against the round-2 commitment, so no
//! party can choose its public share after seeing the others'.

use std::collections::BTreeMap;

use dkls23::DkgSession;
use dkls23::protocols::dkg::{
    BroadcastDerivationPhase2to4, BroadcastDerivationPhase3to4, ProofCommitment,
    TransmitInitMulPhase3to4, TransmitInitZeroSharePhase2to4, TransmitInitZeroSharePhase3to4,
};
use dkls23::protocols::{PartyIndex, PublicKeyPackage};
use dkls23::utilities::hashes::HashOutput;
use k256::Secp256k1;
use serde::{Deserialize, Serialize};

use zeroize::Zeroizing;

use crate::curve::{PointBytes, decode_scalar, encode_point, encode_scalar};
use crate::error::TssError;
use crate::inbox::{Inbox, RoundSpec};
use crate::machine::{check_route, map_abort};
use crate::message::{Message, encode_body};
use crate::party::{Committee, PartyId};
use crate::secp::Party;
use crate::session::SessionId;

/// Round-1 body of keygen, refresh and reshare: one polynomial value for the recipient.
#[derive(Serialize, Deserialize)]
pub(crate) struct Fragment {
    pub fragment: [u8; 32],
}

/// Sends `values[i]` to the i-th of `parties` and keeps ours in `own`.
pub(crate) fn deal(
    inbox: &mut Inbox,
    parties: &[PartyId],
    me: &PartyId,
    values: &[k256::Scalar],
    own: &mut [u8; 32],
) -> Result<Vec<Message>, TssError> {
    if values.len() != parties.len() {
        return Err(TssError::ProtocolUnattributed(
            "one value per party is needed".into(),
        ));
    }
    let mut out = Vec::with_capacity(parties.len());
    for (p, v) in parties.iter().zip(values) {
        let fragment = Zeroizing::new(encode_scalar(v));
        if p == me {
            *own = *fragment;
        } else {
            out.push(inbox.send(
                Some(*p),
                encode_body(&Fragment {
                    fragment: *fragment,
                }),
            ));
        }
    }
    Ok(out)
}

/// One received fragment as a scalar, naming the sender if it is not one.
pub(crate) fn fragment_of(m: &Message) -> Result<k256::Scalar, TssError> {
    let raw = Zeroizing::new(m.body::<Fragment>()?.fragment);
    decode_scalar(&raw).ok_or_else(|| TssError::Malformed {
        party: m.from,
        detail: "fragment is not a scalar".into(),
    })
}

/// The round-1 fragments received, plus our own.
pub(crate) fn collect_fragments(
    p2p: &BTreeMap<PartyId, Message>,
    own: &[u8; 32],
) -> Result<Zeroizing<Vec<k256::Scalar>>, TssError> {
    let mut frags = Zeroizing::new(Vec::with_capacity(p2p.len() + 1));
    for m in p2p.values() {
        frags.push(fragment_of(m)?);
    }
    frags.push(
        decode_scalar(own)
            .ok_or_else(|| TssError::ProtocolUnattributed("own fragment lost".into()))?,
    );
    Ok(frags)
}

/// Every member's public share from a DKG result, in committee order.
pub(crate) fn public_shares(
    committee: &Committee,
    pkg: &PublicKeyPackage<Secp256k1>,
) -> Result<Vec<PointBytes>, TssError> {
    committee
        .parties()
        .iter()
        .map(|p| {
            committee
                .index_of(p)
                .and_then(|i| pkg.verifying_share(i))
                .map(encode_point)
                .ok_or_else(|| TssError::ProtocolUnattributed("missing public share".into()))
        })
        .collect()
}

#[derive(Serialize, Deserialize)]
struct R2P2p {
    zero: TransmitInitZeroSharePhase2to4,
}

#[derive(Serialize, Deserialize)]
struct R2Bcast {
    proof_commitment: HashOutput,
    bip: BroadcastDerivationPhase2to4,
}

#[derive(Serialize, Deserialize)]
struct R3P2p {
    zero: TransmitInitZeroSharePhase3to4,
    mul: TransmitInitMulPhase3to4<Secp256k1>,
}

#[derive(Serialize, Deserialize)]
struct R3Bcast {
    proof: ProofCommitment<Secp256k1>,
    bip: BroadcastDerivationPhase3to4,
}

pub(crate) struct DkgRounds {
    pub committee: Committee,
    me: PartyId,
    idx: PartyIndex,
    session: DkgSession<Secp256k1>,
    own_proof: Option<ProofCommitment<Secp256k1>>,
    commitments: BTreeMap<PartyId, HashOutput>,
    zero2: Vec<TransmitInitZeroSharePhase2to4>,
    bip2: BTreeMap<PartyIndex, BroadcastDerivationPhase2to4>,
    own_bip3: Option<BroadcastDerivationPhase3to4>,
}

impl DkgRounds {
    pub(crate) fn new(
        committee: Committee,
        me: PartyId,
        session: SessionId,
    ) -> Result<Self, TssError> {
        let idx = committee
            .index_of(&me)
            .ok_or(TssError::NotInCommittee { party: me })?;
        let params = committee.params()?;
        Ok(DkgRounds {
            session: DkgSession::new(params, idx, session.0.to_vec()),
            committee,
            me,
            idx,
            own_proof: None,
            commitments: BTreeMap::new(),
            zero2: Vec::new(),
            bip2: BTreeMap::new(),
            own_bip3: None,
        })
    }

    /// Keygen's round 1: this party's random polynomial evaluated at every index.
    pub(crate) fn random_fragments(&self) -> Vec<k256::Scalar> {
        self.session.phase1()
    }

    fn idx_of(&self, p: &PartyId) -> Result<PartyIndex, TssError> {
        self.committee
            .index_of(p)
            .ok_or(TssError::NotInCommittee { party: *p })
    }

    /// Phase 2 from the fragments this party received (its own included). The inbox must
    /// already be at round 2.
    pub(crate) fn round2(
        &mut self,
        inbox: &mut Inbox,
        fragments: &[k256::Scalar],
    ) -> Result<Vec<Message>, TssError> {
        let (proof, zero, bip) = self
            .session
            .phase2(fragments)
            .map_err(|a| map_abort(a, &self.committee))?;
        let mut out = Vec::with_capacity(zero.len() + 1);
        for z in zero {
            let to = self.committee.party_at(z.parties.receiver).ok_or_else(|| {
                TssError::ProtocolUnattributed("dkls23 addressed an unknown index".into())
            })?;
            out.push(inbox.send(Some(to), encode_body(&R2P2p { zero: z })));
        }
        self.commitments.insert(self.me, proof.commitment);
        self.bip2.insert(self.idx, bip.clone());
        out.push(inbox.send(
            None,
            encode_body(&R2Bcast {
                proof_commitment: proof.commitment,
                bip,
            }),
        ));
        self.own_proof = Some(proof);
        Ok(out)
    }

    pub(crate) fn spec(&self) -> RoundSpec {
        RoundSpec::from_all(self.committee.parties(), &self.me, true, true)
    }

    /// Phase 3, from the round-2 messages.
    pub(crate) fn round3(
        &mut self,
        inbox: &mut Inbox,
        p2p: BTreeMap<PartyId, Message>,
        bcast: BTreeMap<PartyId, Message>,
    ) -> Result<Vec<Message>, TssError> {
        for (from, m) in &p2p {
            let body: R2P2p = m.body()?;
            check_route(&body.zero.parties, *from, self.idx_of(from)?, self.idx)?;
            self.zero2.push(body.zero);
        }
        for (from, m) in &bcast {
            let body: R2Bcast = m.body()?;
            let fi = self.idx_of(from)?;
            if body.bip.sender_index != fi {
                return Err(TssError::Malformed {
                    party: *from,
                    detail: "derivation broadcast names another sender".into(),
                });
            }
            self.commitments.insert(*from, body.proof_commitment);
            self.bip2.insert(fi, body.bip);
        }
        inbox.advance(&bcast, self.spec());
        let (zero, mul, bip) = self
            .session
            .phase3()
            .map_err(|a| map_abort(a, &self.committee))?;
        let mut muls: BTreeMap<PartyIndex, TransmitInitMulPhase3to4<Secp256k1>> =
            mul.into_iter().map(|m| (m.parties.receiver, m)).collect();
        let mut out = Vec::with_capacity(zero.len() + 1);
        for z in zero {
            let receiver = z.parties.receiver;
            let (Some(to), Some(mul)) = (self.committee.party_at(receiver), muls.remove(&receiver))
            else {
                return Err(TssError::ProtocolUnattributed(
                    "dkls23 round 3 output is incomplete".into(),
                ));
            };
            out.push(inbox.send(Some(to), encode_body(&R3P2p { zero: z, mul })));
        }
        let proof = self
            .own_proof
            .clone()
            .ok_or_else(|| TssError::ProtocolUnattributed("round 3 before round 2".into()))?;
        self.own_bip3 = Some(bip.clone());
        out.push(inbox.send(None, encode_body(&R3Bcast { proof, bip })));
        Ok(out)
    }

    /// Phase 4, from the round-3 messages: the new share and the public key package.
    pub(crate) fn finish(
        self,
        p2p: BTreeMap<PartyId, Message>,
        bcast: BTreeMap<PartyId, Message>,
    ) -> Result<(Party, PublicKeyPackage<Secp256k1>), TssError> {
        let mut zero3 = Vec::with_capacity(p2p.len());
        let mut mul3 = Vec::with_capacity(p2p.len());
        for (from, m) in &p2p {
            let body: R3P2p = m.body()?;
            let fi = self.idx_of(from)?;
            check_route(&body.zero.parties, *from, fi, self.idx)?;
            check_route(&body.mul.parties, *from, fi, self.idx)?;
            zero3.push(body.zero);
            mul3.push(body.mul);
        }
        let own = self
            .own_proof
            .clone()
            .ok_or_else(|| TssError::ProtocolUnattributed("finish before round 2".into()))?;
        let mut proofs = vec![own];
        let mut bip3 = BTreeMap::new();
        for (from, m) in &bcast {
            let body: R3Bcast = m.body()?;
            let fi = self.idx_of(from)?;
            if body.proof.index != fi || body.bip.sender_index != fi {
                return Err(TssError::Malformed {
                    party: *from,
                    detail: "round-3 broadcast names another sender".into(),
                });
            }
            if self.commitments.get(from) != Some(&body.proof.commitment) {
                return Err(TssError::Protocol {
                    party: *from,
                    reason: "its proof does not open its round-2 commitment".into(),
                });
            }
            proofs.push(body.proof);
            bip3.insert(fi, body.bip);
        }
        // dkls23 wants everyone's derivation broadcast, ours included.
        let own_bip3 = self
            .own_bip3
            .clone()
            .ok_or_else(|| TssError::ProtocolUnattributed("finish before round 3".into()))?;
        bip3.insert(self.idx, own_bip3);
        let DkgRounds {
            committee,
            session,
            zero2,
            bip2,
            ..
        } = self;
        session
            .phase4(&proofs, &zero2, &zero3, &mul3, &bip2, &bip3, |_| {
                String::new()
            })
            .map_err(|a| map_abort(a, &committee))
    }
}
