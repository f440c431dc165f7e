//! The one shape every ceremony has, and the translation of dkls23's aborts into our errors.

use dkls23::protocols::{Abort, AbortKind, AbortReason, PartiesMessage, PartyIndex};

use crate::error::TssError;
use crate::message::Message;
use crate::party::{Committee, PartyId};
use crate::session::SessionId;

/// What a ceremony answers to `start` and to each incoming message.
#[derive(Debug)]
pub enum Step<T> {
    /// Send these messages (possibly none) and wait for more.
    Continue(Vec<Message>),
    /// The ceremony is over for this party: the result, and last messages to send.
    Done(T, Vec<Message>),
}

/// A ceremony as explicit rounds of typed messages, with no I/O of its own:
/// `start -> messages`, then `handle(message) -> messages | result`. A transport routes the
/// encoded messages; a driver decides how long to wait ([`Ceremony::waiting_for`] names who
/// it is waiting on when it gives up).
pub trait Ceremony {
    type Output;

    fn session(&self) -> SessionId;
    fn me(&self) -> PartyId;

    /// The first round's messages. Call once.
    fn start(&mut self) -> Result<Step<Self::Output>, TssError>;

    /// One incoming message. An error ends the ceremony for this party: it names the party
    /// at fault where that can be known.
    fn handle(&mut self, msg: Message) -> Result<Step<Self::Output>, TssError>;

    /// Parties whose messages the current round still lacks.
    fn waiting_for(&self) -> Vec<PartyId>;

    /// The error to report when a driver times out.
    fn missing(&self) -> TssError {
        TssError::Missing {
            parties: self.waiting_for(),
        }
    }
}

/// Maps a dkls23 abort to an error naming the counterparty, when dkls23 names one.
pub(crate) fn map_abort(abort: Abort, committee: &Committee) -> TssError {
    use AbortReason::*;
    let culprit: Option<PartyIndex> = match (&abort.kind, &abort.reason) {
        (AbortKind::BanCounterparty(i), _) => Some(*i),
        (
            _,
            ProofVerificationFailed { counterparty }
            | CommitmentMismatch { counterparty }
            | TrivialInstancePoint { counterparty }
            | OtConsistencyCheckFailed { counterparty }
            | MultiplicationVerificationFailed { counterparty, .. }
            | GammaUInconsistency { counterparty }
            | ZeroShareDecommitFailed { counterparty }
            | SessionBindingMismatch { counterparty },
        ) => Some(*counterparty),
        (_, UnexpectedSender { sender } | DuplicateSender { sender }) => Some(*sender),
        (_, MissingCommittedPoint { party } | ChainCodeCommitmentFailed { party }) => Some(*party),
        // Not the named party's fault: this party's own state for it is missing or
        // malformed (dkls23 says so of InvalidLocalState), or a message the machine should
        // have gathered is absent, which a relay can cause as well as the sender. Naming
        // the counterparty here would put an honest party in a blame.
        (_, InvalidLocalState { .. } | MissingMulState { .. } | MissingMessageFromParty { .. }) => {
            None
        }
        _ => None,
    };
    let reason = abort.reason.to_string();
    match culprit.and_then(|i| committee.party_at(i)) {
        Some(party) => TssError::Protocol { party, reason },
        None => TssError::ProtocolUnattributed(reason),
    }
}

/// A dkls23 point-to-point message must say it is from the authenticated sender and to us.
pub(crate) fn check_route(
    parties: &PartiesMessage,
    from: PartyId,
    from_idx: PartyIndex,
    my_idx: PartyIndex,
) -> Result<(), TssError> {
    if parties.sender != from_idx || parties.receiver != my_idx {
        return Err(TssError::Malformed {
            party: from,
            detail: format!(
                "claims to be from index {} to {}, but it is from {} to {}",
                parties.sender, parties.receiver, from_idx, my_idx
            ),
        });
    }
    Ok(())
}

/// What finishing a round produced.
pub(crate) enum Progress<T> {
    Sent(Vec<Message>),
    Done(T),
}

/// The part of a ceremony that reacts to completed rounds.
pub(crate) trait Rounds {
    type Output;
    fn inbox(&mut self) -> &mut crate::inbox::Inbox;
    /// Called when the inbox's current round is complete: process it, advance the inbox,
    /// and return the next round's messages or the result.
    fn complete_round(&mut self) -> Result<Progress<Self::Output>, TssError>;
}

/// Feeds one message, then completes as many rounds as the buffered messages allow.
pub(crate) fn pump<R: Rounds>(r: &mut R, msg: Message) -> Result<Step<R::Output>, TssError> {
    if !r.inbox().accept(msg)? {
        return Ok(Step::Continue(Vec::new()));
    }
    let mut out = Vec::new();
    loop {
        match r.complete_round()? {
            Progress::Sent(m) => {
                out.extend(m);
                if !r.inbox().replay_early()? {
                    return Ok(Step::Continue(out));
                }
            }
            Progress::Done(v) => return Ok(Step::Done(v, out)),
        }
    }
}

/// Tracks whether a ceremony may still take input: after its result or its first error it
/// refuses everything, so a late or hostile message cannot act on a finished state.
#[derive(Default)]
pub(crate) struct Lifecycle {
    over: bool,
}

impl Lifecycle {
    pub(crate) fn finished() -> Self {
        Lifecycle { over: true }
    }

    pub(crate) fn run<T>(
        &mut self,
        f: impl FnOnce() -> Result<Step<T>, TssError>,
    ) -> Result<Step<T>, TssError> {
        if self.over {
            return Err(TssError::Finished);
        }
        let r = f();
        if !matches!(r, Ok(Step::Continue(_))) {
            self.over = true;
        }
        r
    }
}

/// The `Ceremony` methods every ceremony implements the same way (its struct has `session`,
/// `me`, `inbox` and `life` fields and implements [`Rounds`]).
macro_rules! ceremony_plumbing {
    ($out:ty) => {
        fn session(&self) -> $crate::session::SessionId {
            self.session
        }

        fn me(&self) -> $crate::party::PartyId {
            self.me
        }

        fn handle(
            &mut self,
            msg: $crate::message::Message,
        ) -> Result<$crate::machine::Step<$out>, $crate::error::TssError> {
            let mut life = std::mem::take(&mut self.life);
            let r = life.run(|| $crate::machine::pump(self, msg));
            self.life = life;
            r
        }

        fn waiting_for(&self) -> Vec<$crate::party::PartyId> {
            self.inbox.waiting_for()
        }
    };
}
pub(crate) use ceremony_plumbing;

/// `Debug` for a ceremony: session, party and round only, never its secret state.
macro_rules! public_debug {
    ($t:ty) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("session", &self.session)
                    .field("me", &self.me)
                    .field("round", &self.inbox.round())
                    .finish_non_exhaustive()
            }
        }
    };
}
pub(crate) use public_debug;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn committee() -> Committee {
        Committee::new(2, [PartyId([1; 32]), PartyId([2; 32]), PartyId([3; 32])]).unwrap()
    }

    #[test]
    fn a_fault_in_this_partys_own_state_names_nobody() {
        let (me, them) = (PartyIndex::new(1).unwrap(), PartyIndex::new(2).unwrap());
        for reason in [
            AbortReason::InvalidLocalState {
                counterparty: them,
                detail: "x".into(),
            },
            AbortReason::MissingMulState { counterparty: them },
            AbortReason::MissingMessageFromParty { party: them },
        ] {
            let e = map_abort(Abort::recoverable(me, reason), &committee());
            assert!(matches!(e, TssError::ProtocolUnattributed(_)), "{e}");
            assert_eq!(e.accused(), None);
        }
    }

    #[test]
    fn a_failed_proof_names_its_sender() {
        let (me, them) = (PartyIndex::new(1).unwrap(), PartyIndex::new(2).unwrap());
        let e = map_abort(
            Abort::recoverable(
                me,
                AbortReason::ProofVerificationFailed { counterparty: them },
            ),
            &committee(),
        );
        assert_eq!(e.accused(), committee().party_at(them));
        assert!(e.accused().is_some());
    }
}
