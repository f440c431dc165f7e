//! Distributed key generation: all n parties, t-of-n, dkls23's DKG.
//!
//! Rounds: (1) each party sends every other party its random polynomial's value at their
//! index; (2)-(3) the shared DKG rounds ([`crate::dkg`]); the result is the party's share of
//! epoch 0 and the vault's public record.

use k256::Scalar;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::curve::{decode_scalar, encode_point, encode_scalar};
use crate::dkg::DkgRounds;
use crate::error::TssError;
use crate::inbox::{Inbox, RoundSpec};
use crate::machine::{Ceremony, Lifecycle, Progress, Rounds, Step, pump};
use crate::message::{Message, encode_body};
use crate::party::{Committee, PartyId};
use crate::session::{CeremonyKind, SessionId, Transcript};
use crate::share::{KeyShare, VaultPublic};

pub struct KeygenParams {
    pub vault_id: String,
    pub committee: Committee,
    /// Chosen by the initiator, the same for every party: makes the session unique.
    pub nonce: [u8; 32],
}

impl KeygenParams {
    pub fn session_id(&self) -> SessionId {
        let mut t = Transcript::new(CeremonyKind::Keygen);
        t.bytes(self.vault_id.as_bytes())
            .u64(0)
            .committee(&self.committee)
            .bytes(&self.nonce);
        t.finish()
    }
}

#[derive(Serialize, Deserialize)]
struct R1 {
    fragment: [u8; 32],
}

pub struct Keygen {
    vault_id: String,
    me: PartyId,
    session: SessionId,
    inbox: Inbox,
    dkg: Option<DkgRounds>,
    own_fragment: Zeroizing<[u8; 32]>,
    life: Lifecycle,
}

impl Keygen {
    pub fn new(params: KeygenParams, me: PartyId) -> Result<Keygen, TssError> {
        if params.vault_id.is_empty() {
            return Err(TssError::InvalidParameters("empty vault id".into()));
        }
        let session = params.session_id();
        let parties = params.committee.parties().to_vec();
        let dkg = DkgRounds::new(params.committee, me, session)?;
        Ok(Keygen {
            vault_id: params.vault_id,
            me,
            session,
            inbox: Inbox::new(
                me,
                session,
                CeremonyKind::Keygen,
                0,
                &parties,
                RoundSpec::from_all(&parties, &me, true, false),
            ),
            dkg: Some(dkg),
            own_fragment: Zeroizing::new([0; 32]),
            life: Lifecycle::default(),
        })
    }

    fn dkg(&mut self) -> Result<&mut DkgRounds, TssError> {
        self.dkg.as_mut().ok_or(TssError::Finished)
    }
}

impl Rounds for Keygen {
    type Output = KeyShare;

    fn inbox(&mut self) -> &mut Inbox {
        &mut self.inbox
    }

    fn complete_round(&mut self) -> Result<Progress<KeyShare>, TssError> {
        let (p2p, bcast) = self.inbox.take();
        match self.inbox.round() {
            1 => {
                let mut frags: Zeroizing<Vec<Scalar>> =
                    Zeroizing::new(Vec::with_capacity(p2p.len() + 1));
                for m in p2p.values() {
                    let body: Zeroizing<[u8; 32]> = Zeroizing::new(m.body::<R1>()?.fragment);
                    frags.push(decode_scalar(&body).ok_or_else(|| TssError::Malformed {
                        party: m.from,
                        detail: "fragment is not a scalar".into(),
                    })?);
                }
                frags.push(
                    decode_scalar(&self.own_fragment).ok_or_else(|| {
                        TssError::ProtocolUnattributed("own fragment lost".into())
                    })?,
                );
                let spec = self.dkg()?.spec();
                self.inbox.advance(&bcast, spec);
                let mut dkg = self.dkg.take().ok_or(TssError::Finished)?;
                let out = dkg.round2(&mut self.inbox, &frags);
                self.dkg = Some(dkg);
                Ok(Progress::Sent(out?))
            }
            2 => {
                let mut dkg = self.dkg.take().ok_or(TssError::Finished)?;
                let out = dkg.round3(&mut self.inbox, p2p, bcast);
                self.dkg = Some(dkg);
                Ok(Progress::Sent(out?))
            }
            _ => {
                let dkg = self.dkg.take().ok_or(TssError::Finished)?;
                let committee = dkg.committee.clone();
                let (party, pkg) = dkg.finish(p2p, bcast)?;
                let verifying_shares = committee
                    .parties()
                    .iter()
                    .map(|p| {
                        committee
                            .index_of(p)
                            .and_then(|i| pkg.verifying_share(i))
                            .map(encode_point)
                            .ok_or_else(|| {
                                TssError::ProtocolUnattributed("missing public share".into())
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let public = VaultPublic {
                    vault_id: self.vault_id.clone(),
                    epoch: 0,
                    committee,
                    public_key: encode_point(pkg.verifying_key()),
                    chain_code: party.derivation_data.chain_code,
                    verifying_shares,
                };
                Ok(Progress::Done(KeyShare::new(public, self.me, party)?))
            }
        }
    }
}

impl Ceremony for Keygen {
    type Output = KeyShare;

    fn session(&self) -> SessionId {
        self.session
    }

    fn me(&self) -> PartyId {
        self.me
    }

    fn start(&mut self) -> Result<Step<KeyShare>, TssError> {
        let me = self.me;
        let dkg = self.dkg.as_ref().ok_or(TssError::Finished)?;
        let committee = dkg.committee.clone();
        let frags = Zeroizing::new(dkg.random_fragments());
        let mut out = Vec::with_capacity(frags.len());
        for (i, p) in committee.parties().iter().enumerate() {
            let f = frags
                .get(i)
                .ok_or_else(|| TssError::ProtocolUnattributed("short phase 1".into()))?;
            if *p == me {
                *self.own_fragment = encode_scalar(f);
            } else {
                let body = Zeroizing::new(encode_body(&R1 {
                    fragment: encode_scalar(f),
                }));
                out.push(self.inbox.send(Some(*p), body.to_vec()));
            }
        }
        Ok(Step::Continue(out))
    }

    fn handle(&mut self, msg: Message) -> Result<Step<KeyShare>, TssError> {
        let mut life = std::mem::take(&mut self.life);
        let r = life.run(|| pump(self, msg));
        self.life = life;
        r
    }

    fn waiting_for(&self) -> Vec<PartyId> {
        self.inbox.waiting_for()
    }
}

crate::machine::public_debug!(Keygen);
