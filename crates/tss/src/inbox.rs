//! Collecting one round's messages: the checks every ceremony shares.
//!
//! For each incoming message the inbox checks, in this order: the session (or the epoch, to
//! say *why* the session differs), that the sender is a participant and not us, that it is
//! addressed to us, the round (the current one, or the next one, which is buffered: a fast
//! party may be a round ahead of us, never two; an earlier round is a replay), duplicates,
//! and the sender's echo of the
//! previous round's broadcasts. A round is complete when every expected sender's
//! point-to-point message and broadcast are in.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::error::TssError;
use crate::message::Message;
use crate::party::PartyId;
use crate::session::{CeremonyKind, SessionId};

/// Who must send what in one round.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoundSpec {
    pub p2p_from: BTreeSet<PartyId>,
    pub bcast_from: BTreeSet<PartyId>,
}

impl RoundSpec {
    /// Every party of `from` except `me` sends the given kinds of message.
    pub(crate) fn from_all(from: &[PartyId], me: &PartyId, p2p: bool, bcast: bool) -> RoundSpec {
        let others: BTreeSet<PartyId> = from.iter().filter(|p| *p != me).copied().collect();
        RoundSpec {
            p2p_from: if p2p { others.clone() } else { BTreeSet::new() },
            bcast_from: if bcast { others } else { BTreeSet::new() },
        }
    }
}

pub(crate) struct Inbox {
    me: PartyId,
    session: SessionId,
    kind: CeremonyKind,
    epoch: u64,
    participants: BTreeSet<PartyId>,
    round: u8,
    spec: RoundSpec,
    p2p: BTreeMap<PartyId, Message>,
    bcast: BTreeMap<PartyId, Message>,
    /// Next-round messages that arrived early, replayed after `advance`.
    early: Vec<Message>,
    /// Our own broadcast body of the current round, for the echo.
    own_bcast: Option<[u8; 32]>,
    /// Digests of the previous round's broadcasts (ours included), by origin.
    prev_digests: Vec<(PartyId, [u8; 32])>,
}

fn digest(origin: &PartyId, round: u8, body: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cosigner/tss/v1/echo");
    h.update(origin.0);
    h.update([round]);
    h.update((body.len() as u64).to_be_bytes());
    h.update(body);
    h.finalize().into()
}

impl Inbox {
    pub(crate) fn new(
        me: PartyId,
        session: SessionId,
        kind: CeremonyKind,
        epoch: u64,
        participants: &[PartyId],
        spec: RoundSpec,
    ) -> Inbox {
        Inbox {
            me,
            session,
            kind,
            epoch,
            participants: participants.iter().copied().collect(),
            round: 1,
            spec,
            p2p: BTreeMap::new(),
            bcast: BTreeMap::new(),
            early: Vec::new(),
            own_bcast: None,
            prev_digests: Vec::new(),
        }
    }

    pub(crate) fn round(&self) -> u8 {
        self.round
    }

    /// Builds an outgoing message of the current round. A broadcast is remembered for the
    /// echo of the next round.
    pub(crate) fn send(&mut self, to: Option<PartyId>, body: Vec<u8>) -> Message {
        if to.is_none() {
            self.own_bcast = Some(digest(&self.me, self.round, &body));
        }
        Message {
            session: self.session,
            kind: self.kind,
            epoch: self.epoch,
            round: self.round,
            from: self.me,
            to,
            echo: self.prev_digests.clone(),
            body,
        }
    }

    fn check_header(&self, msg: &Message) -> Result<(), TssError> {
        if !self.participants.contains(&msg.from) || msg.from == self.me {
            return Err(TssError::NotInCommittee { party: msg.from });
        }
        if msg.session != self.session || msg.kind != self.kind {
            if msg.epoch != self.epoch {
                return Err(TssError::EpochMismatch {
                    party: msg.from,
                    theirs: msg.epoch,
                    ours: self.epoch,
                });
            }
            return Err(TssError::WrongSession { party: msg.from });
        }
        if msg.epoch != self.epoch {
            return Err(TssError::EpochMismatch {
                party: msg.from,
                theirs: msg.epoch,
                ours: self.epoch,
            });
        }
        match msg.to {
            Some(to) if to != self.me => Err(TssError::Misrouted { party: msg.from }),
            _ => Ok(()),
        }
    }

    /// Takes one message. Returns true when the current round is complete.
    pub(crate) fn accept(&mut self, msg: Message) -> Result<bool, TssError> {
        self.check_header(&msg)?;
        if msg.round == self.round.wrapping_add(1) {
            let dup = self
                .early
                .iter()
                .any(|m| m.from == msg.from && m.is_broadcast() == msg.is_broadcast());
            if dup {
                return Err(TssError::Duplicate {
                    party: msg.from,
                    round: msg.round,
                });
            }
            self.early.push(msg);
            return Ok(false);
        }
        self.take_current(msg)?;
        Ok(self.complete())
    }

    fn take_current(&mut self, msg: Message) -> Result<(), TssError> {
        if msg.round < self.round {
            // That round is complete, so this sender's message for it was already taken.
            return Err(TssError::Duplicate {
                party: msg.from,
                round: msg.round,
            });
        }
        if msg.round != self.round {
            return Err(TssError::WrongRound {
                party: msg.from,
                got: msg.round,
                expected: self.round,
            });
        }
        let (expected, slot) = if msg.is_broadcast() {
            (&self.spec.bcast_from, &mut self.bcast)
        } else {
            (&self.spec.p2p_from, &mut self.p2p)
        };
        if !expected.contains(&msg.from) {
            return Err(TssError::Malformed {
                party: msg.from,
                detail: format!(
                    "no {} message is expected from it in round {}",
                    if msg.is_broadcast() {
                        "broadcast"
                    } else {
                        "point-to-point"
                    },
                    self.round
                ),
            });
        }
        if slot.contains_key(&msg.from) {
            return Err(TssError::Duplicate {
                party: msg.from,
                round: msg.round,
            });
        }
        // The echo: what the sender says it received in the previous round's broadcasts
        // must be what we received.
        if msg.echo != self.prev_digests {
            let origin = self
                .prev_digests
                .iter()
                .find(|(o, d)| !msg.echo.iter().any(|(eo, ed)| eo == o && ed == d))
                .map(|(o, _)| *o)
                .unwrap_or(msg.from);
            return Err(TssError::InconsistentBroadcast {
                party: msg.from,
                origin,
                round: self.round.wrapping_sub(1),
            });
        }
        slot.insert(msg.from, msg);
        Ok(())
    }

    pub(crate) fn complete(&self) -> bool {
        self.spec.p2p_from.iter().all(|p| self.p2p.contains_key(p))
            && self
                .spec
                .bcast_from
                .iter()
                .all(|p| self.bcast.contains_key(p))
    }

    /// Parties whose messages for the current round are still missing.
    pub(crate) fn waiting_for(&self) -> Vec<PartyId> {
        let mut missing: BTreeSet<PartyId> = self
            .spec
            .p2p_from
            .iter()
            .filter(|p| !self.p2p.contains_key(p))
            .copied()
            .collect();
        missing.extend(
            self.spec
                .bcast_from
                .iter()
                .filter(|p| !self.bcast.contains_key(p)),
        );
        missing.into_iter().collect()
    }

    /// The completed round's messages: (point-to-point, broadcasts), by sender.
    pub(crate) fn take(&mut self) -> (BTreeMap<PartyId, Message>, BTreeMap<PartyId, Message>) {
        (
            std::mem::take(&mut self.p2p),
            std::mem::take(&mut self.bcast),
        )
    }

    /// Moves to the next round with `spec`. Call after `take` and before sending the next
    /// round's messages: the previous round's broadcast digests become the echo.
    pub(crate) fn advance(&mut self, broadcasts: &BTreeMap<PartyId, Message>, spec: RoundSpec) {
        let mut digests: Vec<(PartyId, [u8; 32])> = broadcasts
            .iter()
            .map(|(from, m)| (*from, digest(from, m.round, &m.body)))
            .collect();
        if let Some(own) = self.own_bcast.take() {
            digests.push((self.me, own));
        }
        digests.sort();
        self.prev_digests = digests;
        self.round = self.round.wrapping_add(1);
        self.spec = spec;
    }

    /// Feeds the buffered messages of the (new) current round. Returns true when the round
    /// is complete.
    pub(crate) fn replay_early(&mut self) -> Result<bool, TssError> {
        for msg in std::mem::take(&mut self.early) {
            self.take_current(msg)?;
        }
        Ok(self.complete())
    }
}
