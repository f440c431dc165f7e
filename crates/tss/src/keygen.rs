//! Distributed key generation: all n parties, t-of-n, dkls23's DKG.
//!
//! Rounds: (1) each party sends every other party its random polynomial's value at their
//! index; (2)-(3) the shared DKG rounds ([`crate::dkg`]); the result is the party's share of
//! epoch 0 and the vault's public record.

use zeroize::Zeroizing;

use crate::curve::encode_point;
use crate::dkg::{DkgRounds, collect_fragments, deal, public_shares};
use crate::error::TssError;
use crate::inbox::{Inbox, RoundSpec};
use crate::machine::{Ceremony, Lifecycle, Progress, Rounds, Step};

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
                let frags = collect_fragments(&p2p, &self.own_fragment)?;
                let dkg = self.dkg.as_mut().ok_or(TssError::Finished)?;
                self.inbox.advance(&bcast, dkg.spec());
                Ok(Progress::Sent(dkg.round2(&mut self.inbox, &frags)?))
            }
            2 => {
                let dkg = self.dkg.as_mut().ok_or(TssError::Finished)?;
                Ok(Progress::Sent(dkg.round3(&mut self.inbox, p2p, bcast)?))
            }
            _ => {
                let dkg = self.dkg.take().ok_or(TssError::Finished)?;
                let committee = dkg.committee.clone();
                let (party, pkg) = dkg.finish(p2p, bcast)?;
                let public = VaultPublic {
                    vault_id: self.vault_id.clone(),
                    epoch: 0,
                    verifying_shares: public_shares(&committee, &pkg)?,
                    committee,
                    public_key: encode_point(pkg.verifying_key()),
                    chain_code: party.derivation_data.chain_code,
                };
                Ok(Progress::Done(KeyShare::new(public, self.me, party)?))
            }
        }
    }
}

impl Ceremony for Keygen {
    type Output = KeyShare;

    crate::machine::ceremony_plumbing!(KeyShare);

    fn start(&mut self) -> Result<Step<KeyShare>, TssError> {
        let dkg = self.dkg.as_ref().ok_or(TssError::Finished)?;
        let values = Zeroizing::new(dkg.random_fragments());
        let parties = dkg.committee.parties().to_vec();
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

crate::machine::public_debug!(Keygen);
