//! Signing by exactly t parties over a 32-byte hash, optionally at a BIP-32 path.
//!
//! dkls23 binds the message hash from phase 1 (no presignatures), so a signature can only
//! come out for the hash every signer agreed to. Rounds: (1)-(2) point-to-point
//! multiplication messages, (3) a broadcast of each signer's (w, u); the signature is then
//! assembled by every signer and checked with k256's verifier against the (derived) vault key
//! before it is returned.

use std::collections::BTreeMap;

use dkls23::protocols::PartyIndex;
use dkls23::protocols::signing::{
    Broadcast3to4, KeepPhase1to2, KeepPhase2to3, SignData, TransmitPhase1to2, TransmitPhase2to3,
    UniqueKeep1to2, UniqueKeep2to3,
};
use k256::Secp256k1;
use serde::{Deserialize, Serialize};

use crate::curve::{PointBytes, verify_ecdsa};
use crate::derive::{DerivationPath, derive_party};
use crate::error::TssError;
use crate::inbox::{Inbox, RoundSpec};
use crate::machine::{Ceremony, Lifecycle, Progress, Rounds, Step, check_route, map_abort};
use crate::message::encode_body;
use crate::party::{Committee, PartyId};
use crate::secp::Party;
use crate::session::{CeremonyKind, SessionId, Transcript};
use crate::share::KeyShare;

pub struct SignParams {
    /// Exactly `threshold` committee members, this party included.
    pub signers: Vec<PartyId>,
    pub message_hash: [u8; 32],
    pub path: DerivationPath,
    /// Chosen by the initiator, the same for every signer.
    pub nonce: [u8; 32],
}

/// A finished ECDSA signature (low-s), with the key it verifies under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub message_hash: [u8; 32],
    pub r: [u8; 32],
    pub s: [u8; 32],
    /// 0 or 1: recovers `public_key` from (hash, r, s).
    pub recovery_id: u8,
    /// The (derived) public key.
    pub public_key: PointBytes,
}

fn session_id(share: &KeyShare, signers: &[PartyId], p: &SignParams) -> SessionId {
    let public = share.public();
    let mut t = Transcript::new(CeremonyKind::Sign);
    t.bytes(public.vault_id.as_bytes())
        .u64(public.epoch)
        .committee(&public.committee)
        .parties(signers)
        .bytes(&p.message_hash)
        .bytes(p.path.to_string().as_bytes())
        .bytes(&p.nonce);
    t.finish()
}

#[derive(Serialize, Deserialize)]
struct R1 {
    t: TransmitPhase1to2,
}

#[derive(Serialize, Deserialize)]
struct R2 {
    t: TransmitPhase2to3<Secp256k1>,
}

#[derive(Serialize, Deserialize)]
struct R3 {
    b: Broadcast3to4<Secp256k1>,
}

type Keep1 = (
    UniqueKeep1to2<Secp256k1>,
    BTreeMap<PartyIndex, KeepPhase1to2<Secp256k1>>,
);
type Keep2 = (
    UniqueKeep2to3<Secp256k1>,
    BTreeMap<PartyIndex, KeepPhase2to3<Secp256k1>>,
);

pub struct Sign {
    me: PartyId,
    idx: PartyIndex,
    committee: Committee,
    session: SessionId,
    party: Party,
    data: SignData,
    public_key: PointBytes,
    inbox: Inbox,
    keep1: Option<Keep1>,
    keep2: Option<Keep2>,
    x_coord: Option<String>,
    own_bcast: Option<Broadcast3to4<Secp256k1>>,
    life: Lifecycle,
}

impl Sign {
    pub fn new(share: &KeyShare, params: SignParams) -> Result<Sign, TssError> {
        let public = share.public();
        let committee = public.committee.clone();
        let me = share.party();
        let signers = committee.subset("signers", &params.signers)?;
        if signers.len() != usize::from(committee.threshold()) {
            return Err(TssError::InvalidParameters(format!(
                "{} signers; this vault needs exactly {} (its threshold)",
                signers.len(),
                committee.threshold()
            )));
        }
        if !signers.contains(&me) {
            return Err(TssError::InvalidParameters(
                "this party is not among the signers".into(),
            ));
        }
        let idx = committee
            .index_of(&me)
            .ok_or(TssError::NotInCommittee { party: me })?;
        let counterparties = signers
            .iter()
            .filter(|p| **p != me)
            .map(|p| {
                committee
                    .index_of(p)
                    .ok_or(TssError::NotInCommittee { party: *p })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let session = session_id(share, &signers, &params);
        let party = derive_party(&share.state, &params.path)?;
        let public_key = public.derive(&params.path)?;
        Ok(Sign {
            me,
            idx,
            session,
            party,
            data: SignData {
                sign_id: session.0.to_vec(),
                counterparties,
                message_hash: params.message_hash,
            },
            public_key,
            inbox: Inbox::new(
                me,
                session,
                CeremonyKind::Sign,
                public.epoch,
                &signers,
                RoundSpec::from_all(&signers, &me, true, false),
            ),
            committee,
            keep1: None,
            keep2: None,
            x_coord: None,
            own_bcast: None,
            life: Lifecycle::default(),
        })
    }

    fn idx_of(&self, p: &PartyId) -> Result<PartyIndex, TssError> {
        self.committee
            .index_of(p)
            .ok_or(TssError::NotInCommittee { party: *p })
    }

    fn to(&self, i: PartyIndex) -> Result<PartyId, TssError> {
        self.committee.party_at(i).ok_or_else(|| {
            TssError::ProtocolUnattributed(format!("dkls23 addressed unknown index {i}"))
        })
    }

    fn signers(&self) -> Vec<PartyId> {
        let mut s: Vec<PartyId> = self
            .data
            .counterparties
            .iter()
            .filter_map(|i| self.committee.party_at(*i))
            .collect();
        s.push(self.me);
        s
    }
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    ::hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl Rounds for Sign {
    type Output = Signature;

    fn inbox(&mut self) -> &mut Inbox {
        &mut self.inbox
    }

    fn complete_round(&mut self) -> Result<Progress<Signature>, TssError> {
        let (p2p, bcast) = self.inbox.take();
        let abort = |a| map_abort(a, &self.committee);
        match self.inbox.round() {
            1 => {
                let mut received = Vec::with_capacity(p2p.len());
                for (from, m) in &p2p {
                    let body: R1 = m.body()?;
                    check_route(&body.t.parties, *from, self.idx_of(from)?, self.idx)?;
                    received.push(body.t);
                }
                let (uk, k) = self.keep1.take().ok_or(TssError::Finished)?;
                let (uk2, k2, transmit) = self
                    .party
                    .sign_phase2(&self.data, uk, k, &received)
                    .map_err(abort)?;
                self.keep2 = Some((uk2, k2));
                let spec = RoundSpec::from_all(&self.signers(), &self.me, true, false);
                self.inbox.advance(&bcast, spec);
                let mut out = Vec::with_capacity(transmit.len());
                for t in transmit {
                    let to = self.to(t.parties.receiver)?;
                    out.push(self.inbox.send(Some(to), encode_body(&R2 { t })));
                }
                Ok(Progress::Sent(out))
            }
            2 => {
                let mut received = Vec::with_capacity(p2p.len());
                for (from, m) in &p2p {
                    let body: R2 = m.body()?;
                    check_route(&body.t.parties, *from, self.idx_of(from)?, self.idx)?;
                    received.push(body.t);
                }
                let (uk, k) = self.keep2.take().ok_or(TssError::Finished)?;
                let (x, b) = self
                    .party
                    .sign_phase3(&self.data, uk, k, &received)
                    .map_err(abort)?;
                self.x_coord = Some(x);
                let spec = RoundSpec::from_all(&self.signers(), &self.me, false, true);
                self.inbox.advance(&bcast, spec);
                self.own_bcast = Some(b.clone());
                let msg = self.inbox.send(None, encode_body(&R3 { b }));
                Ok(Progress::Sent(vec![msg]))
            }
            _ => {
                let mut received = Vec::with_capacity(bcast.len() + 1);
                for m in bcast.values() {
                    received.push(m.body::<R3>()?.b);
                }
                received.push(self.own_bcast.take().ok_or(TssError::Finished)?);
                let x = self.x_coord.take().ok_or(TssError::Finished)?;
                let (s_hex, recovery_id) = self
                    .party
                    .sign_phase4(&self.data, &x, &received, true)
                    .map_err(abort)?;
                let (Some(r), Some(s)) = (hex32(&x), hex32(&s_hex)) else {
                    return Err(TssError::ProtocolUnattributed(
                        "dkls23 returned a malformed signature".into(),
                    ));
                };
                if !verify_ecdsa(&self.public_key, &self.data.message_hash, &r, &s) {
                    return Err(TssError::SignatureInvalid);
                }
                Ok(Progress::Done(Signature {
                    message_hash: self.data.message_hash,
                    r,
                    s,
                    recovery_id,
                    public_key: self.public_key,
                }))
            }
        }
    }
}

impl Ceremony for Sign {
    type Output = Signature;

    crate::machine::ceremony_plumbing!(Signature);

    fn start(&mut self) -> Result<Step<Signature>, TssError> {
        let (uk, k, transmit) = self
            .party
            .sign_phase1(&self.data)
            .map_err(|a| map_abort(a, &self.committee))?;
        self.keep1 = Some((uk, k));
        let mut out = Vec::with_capacity(transmit.len());
        for t in transmit {
            let to = self.to(t.parties.receiver)?;
            out.push(self.inbox.send(Some(to), encode_body(&R1 { t })));
        }
        Ok(Step::Continue(out))
    }
}

crate::machine::public_debug!(Sign);
