//! Blame with evidence: an ABORT that names a faulty party carries that party's own signed
//! messages, so nobody has to take the accuser's word for it.
//!
//! When the engine stops on a message it can attribute (a fragment that does not match its
//! dealer's commitments, an undecodable body, a dkls23 proof that fails), the driver's ABORT
//! carries, besides its reason, an [`Evidence`]: the accused's signed HELLO, the roster it
//! names, and the accused's protocol envelopes as this party received them, each
//! point-to-point one with its message key ([`crate::envelope`] gives every message its own
//! key, and the sender signed a commitment to it). [`judge`] checks all of it against the
//! accused's signatures alone:
//!
//! - every exhibit is signed by the accused, in the ABORT's relay session; a point-to-point
//!   exhibit is addressed to the accuser, and its revealed key matches the commitment the
//!   accused signed and opens it;
//! - the roster's hash is the one the accused signed in its HELLO, so the committee (and the
//!   receiver's index in it) is one the accused agreed to;
//! - where the fault is a pure function of public data and the opened exhibits (a reshare
//!   dealing), the same engine code that blamed the dealer checks it again
//!   ([`cosigner_tss::reshare::check_dealing`]): the blame is *upheld* or *rejected*.
//!   Otherwise (a dkls23 abort needs the receiver's secret state) the finding is that the
//!   accused really sent those bytes, no more.
//!
//! Every exhibit must come from one ceremony. Honest parties avoid taking part twice on one
//! relay session id (the daemon keeps used ids in its history, the device its last 256),
//! but a restored backup or a device's short memory can repeat one, so the session is not
//! enough: each envelope's signed header names the *ceremony context*, a hash of the roster
//! and of every participant's fresh HELLO value. The evidence carries those fresh values;
//! [`judge`] recomputes the context from them and the roster and requires every exhibit,
//! the accused's HELLO (by its fresh value) and the ABORT itself to name it. An accuser
//! therefore cannot mix an honest party's messages from two ceremonies, nor judge them
//! against another ceremony's participant list.
//!
//! What a revealed key discloses: one message the accuser already holds, of a ceremony that
//! is abandoned at that moment. That is no more than the accuser could publish anyway; the
//! relay learns it too. Only the accused's messages to the accuser are revealed, never the
//! accuser's state or any other pair's traffic.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use cosigner_api::v1::{Envelope, EnvelopeKind};
use cosigner_tss::{Committee, Message, PartyId, TssError};
use prost::Message as _;

use crate::driver::{HelloMessage, ceremony_context};
use crate::envelope::{open_with_key, signature_ok};
use crate::keys::short;
use crate::roster::Roster;

/// Most bytes of exhibits an ABORT carries (a DKG round-3 message to one party is about
/// 50 KB). Older exhibits go first: a dealing fault rests on round one.
pub const MAX_EXHIBIT_BYTES: usize = 48 * 1024;
/// Most bytes of evidence in all (roster, fresh values, HELLO and exhibits): with the
/// reason, an ABORT stays under the smallest relay payload limit (64 KiB). A roster too
/// large to fit leaves the ABORT without evidence.
pub const MAX_EVIDENCE_BYTES: usize = 60 * 1024;
/// Most bytes of an ABORT payload a party decodes, judges or keeps: an honest one is under
/// 64 KiB; anything larger is read as an ABORT without a readable reason.
pub const MAX_ABORT_BYTES: usize = 128 * 1024;

/// The payload of an ABORT envelope.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct AbortMessage {
    /// Why the sender stopped (sanitised before it is shown anywhere).
    pub reason: String,
    pub evidence: Option<Evidence>,
}

impl AbortMessage {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub fn decode(b: &[u8]) -> Result<AbortMessage, BlameError> {
        if b.len() > MAX_ABORT_BYTES {
            return Err(BlameError::Format("ABORT too large".into()));
        }
        postcard::from_bytes(b).map_err(|e| BlameError::Format(format!("ABORT: {e}")))
    }
}

/// What the accuser found wrong.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A reshare dealer's fragment does not match its commitments.
    BadFragment,
    /// Any other attributable fault, as the engine described it.
    Other(String),
}

impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Claim::BadFragment => write!(f, "its fragment does not match its commitments"),
            Claim::Other(s) => write!(f, "{}", crate::driver::sanitize(s)),
        }
    }
}

/// An envelope as received, with its message key when it is point-to-point.
pub type Received = (Envelope, Option<[u8; 32]>);

/// One of the accused's envelopes, as the accuser received it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Exhibit {
    /// The envelope, protobuf-encoded as it came off the relay (its signature covers it).
    pub envelope: Vec<u8>,
    /// Point-to-point: the message key (committed to by the sender's signature).
    pub key: Option<[u8; 32]>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    pub accused: [u8; 32],
    pub claim: Claim,
    /// The participant list as the accuser built it; the accused signed its hash in HELLO.
    pub roster: Roster,
    /// Every participant's fresh HELLO value, by party id in ascending order: with the
    /// roster they give the ceremony context every exhibit must name.
    pub fresh: Vec<([u8; 32], [u8; 32])>,
    /// The accused's signed HELLO envelope (protobuf).
    pub hello: Vec<u8>,
    pub exhibits: Vec<Exhibit>,
    /// Some of the accused's envelopes were left out to respect [`MAX_EXHIBIT_BYTES`].
    pub truncated: bool,
}

impl Evidence {
    /// Evidence against `accused` from what this party received: the oldest exhibits first,
    /// as many as fit. None when the roster alone leaves no room (a very large committee).
    pub fn new(
        accused: [u8; 32],
        claim: Claim,
        roster: Roster,
        fresh: &BTreeMap<[u8; 32], [u8; 32]>,
        hello: &Envelope,
        received: &[Received],
    ) -> Option<Evidence> {
        let mut ev = Evidence {
            accused,
            claim,
            roster,
            fresh: fresh.iter().map(|(id, f)| (*id, *f)).collect(),
            hello: hello.encode_to_vec(),
            exhibits: Vec::new(),
            truncated: false,
        };
        let fixed = postcard::to_allocvec(&ev).ok()?.len();
        let budget = MAX_EVIDENCE_BYTES
            .checked_sub(fixed)?
            .min(MAX_EXHIBIT_BYTES);
        let mut bytes = 0usize;
        for (env, key) in received {
            let b = env.encode_to_vec();
            // An exhibit costs its bytes, a length prefix and its key.
            let cost = b.len() + 4 + key.map_or(1, |_| 33);
            if bytes + cost > budget {
                ev.truncated = true;
                continue;
            }
            bytes += cost;
            ev.exhibits.push(Exhibit {
                envelope: b,
                key: *key,
            });
        }
        Some(ev)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlameError {
    #[error("unreadable: {0}")]
    Format(String),
    #[error("the ABORT itself is not signed by its sender")]
    AbortSignature,
}

/// What checking an accusation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The ABORT carried no evidence: the accuser's word only.
    NoEvidence,
    /// The accused signed these messages, and re-checking them shows the fault.
    Upheld(String),
    /// The accused signed these messages; the fault itself cannot be re-checked from them
    /// (it needs the accuser's secret state), so the claim rests on the accuser's word.
    Authentic,
    /// The evidence does not hold: it is not the accused's, or shows no fault.
    Rejected(String),
}

/// An ABORT with evidence that ended a ceremony (sent or received) and its verdict.
#[derive(Debug, Clone)]
pub struct Blamed {
    pub abort: Envelope,
    pub verdict: Verdict,
}

/// The result of [`judge`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub accuser: [u8; 32],
    /// None when the ABORT carries no evidence.
    pub accused: Option<[u8; 32]>,
    pub claim: String,
    pub exhibits: usize,
    pub truncated: bool,
    pub finding: Finding,
}

impl Verdict {
    /// One line for errors, logs and the history.
    pub fn summary(&self) -> String {
        let accused = self.accused.map(|a| short(&a)).unwrap_or_default();
        match &self.finding {
            Finding::NoEvidence => {
                "the ABORT carries no evidence: it rests on the sender's word".to_string()
            }
            Finding::Upheld(why) => format!(
                "blame of {accused} upheld by its own signed messages ({} exhibit(s)): {why}",
                self.exhibits
            ),
            Finding::Authentic => format!(
                "{accused} signed the {} forwarded message(s), but the fault ({}) cannot be re-checked from them: it rests on the accuser's word",
                self.exhibits, self.claim
            ),
            Finding::Rejected(why) => {
                format!("the evidence against {accused} does not hold: {why}")
            }
        }
    }
}

/// Checks an ABORT envelope and the evidence it carries. `expected_roster`: the roster
/// hash a participant of the ceremony holds (None for an operator checking a stored ABORT,
/// who relies on the accused's signed HELLO instead).
pub fn judge(abort: &Envelope, expected_roster: Option<&[u8; 32]>) -> Result<Verdict, BlameError> {
    if abort.kind != EnvelopeKind::Abort as i32 {
        return Err(BlameError::Format("not an ABORT envelope".into()));
    }
    if abort.version != crate::envelope::ENVELOPE_VERSION {
        // Its signature covers another header layout: checking it here would call an
        // honest ABORT forged.
        return Err(BlameError::Format(format!(
            "an ABORT in envelope version {}, recorded by an earlier release; this build checks version {} evidence only",
            abort.version,
            crate::envelope::ENVELOPE_VERSION
        )));
    }
    if !signature_ok(abort) {
        return Err(BlameError::AbortSignature);
    }
    let accuser: [u8; 32] = abort
        .sender
        .as_slice()
        .try_into()
        .map_err(|_| BlameError::Format("sender is not 32 bytes".into()))?;
    let msg = AbortMessage::decode(&abort.payload)?;
    let Some(ev) = msg.evidence else {
        return Ok(Verdict {
            accuser,
            accused: None,
            claim: String::new(),
            exhibits: 0,
            truncated: false,
            finding: Finding::NoEvidence,
        });
    };
    let verdict = |finding| Verdict {
        accuser,
        accused: Some(ev.accused),
        claim: ev.claim.to_string(),
        exhibits: ev.exhibits.len(),
        truncated: ev.truncated,
        finding,
    };
    match examine(abort, &accuser, &ev, expected_roster) {
        Ok(f) => Ok(verdict(f)),
        Err(why) => Ok(verdict(Finding::Rejected(why))),
    }
}

/// The checks of [`judge`]; an `Err` is why the evidence is rejected.
fn examine(
    abort: &Envelope,
    accuser: &[u8; 32],
    ev: &Evidence,
    expected_roster: Option<&[u8; 32]>,
) -> Result<Finding, String> {
    let accused = &ev.accused;
    if accused == accuser {
        return Err("a party cannot accuse itself".into());
    }
    let roster_hash = ev.roster.hash();
    if let Some(want) = expected_roster
        && *want != roster_hash
    {
        return Err("it is about another participant list than this ceremony's".into());
    }
    if ev.roster.relay_session != abort.session_id {
        return Err("its participant list names another relay session".into());
    }
    for who in [accused, accuser] {
        if ev.roster.member(who).is_none() {
            return Err(format!("{} is not a participant of it", short(who)));
        }
    }
    // The accused agreed to this roster, in this ceremony.
    let hello = decode_env(&ev.hello, "HELLO")?;
    authentic(&hello, accused, &abort.session_id, "its HELLO")?;
    if hello.kind != EnvelopeKind::Hello as i32 {
        return Err("the HELLO exhibit is not a HELLO".into());
    }
    let h: HelloMessage =
        postcard::from_bytes(&hello.payload).map_err(|e| format!("its HELLO: {e}"))?;
    if h.roster_hash != roster_hash {
        return Err("the accused signed another participant list in its HELLO".into());
    }
    // The ceremony: the roster and every participant's fresh value, once each.
    let fresh: BTreeMap<[u8; 32], [u8; 32]> = ev.fresh.iter().copied().collect();
    let listed: BTreeSet<[u8; 32]> = ev.roster.participants.iter().map(|m| m.id).collect();
    if fresh.len() != ev.fresh.len() || !fresh.keys().eq(listed.iter()) {
        return Err("its fresh HELLO values are not one per participant".into());
    }
    let context = ceremony_context(&roster_hash, &fresh);
    if abort.context != context {
        return Err("the ABORT names another ceremony than its evidence".into());
    }
    if fresh.get(accused) != Some(&h.fresh) {
        return Err("the accused's HELLO is from another ceremony".into());
    }
    // Every exhibit is the accused's, in this ceremony, once, in the order it was sent;
    // point-to-point ones to the accuser.
    let mut opened: Vec<Message> = Vec::with_capacity(ev.exhibits.len());
    let mut last_counter = 0u64;
    for (i, x) in ev.exhibits.iter().enumerate() {
        let what = format!("exhibit {}", i + 1);
        let env = decode_env(&x.envelope, &what)?;
        authentic(&env, accused, &abort.session_id, &what)?;
        if env.context != context {
            return Err(format!("{what} belongs to another ceremony"));
        }
        if env.counter <= last_counter {
            return Err(format!(
                "{what} repeats or precedes an earlier exhibit (counter {})",
                env.counter
            ));
        }
        last_counter = env.counter;
        if env.kind != EnvelopeKind::Protocol as i32 {
            return Err(format!("{what} is not a protocol message"));
        }
        let plain = if env.recipient.is_empty() {
            zeroize::Zeroizing::new(env.payload.clone())
        } else {
            if env.recipient.as_slice() != accuser.as_slice() {
                return Err(format!("{what} was not addressed to the accuser"));
            }
            let key = x
                .key
                .ok_or_else(|| format!("{what} is encrypted and comes without its key"))?;
            open_with_key(&env, &key).ok_or_else(|| {
                format!("{what}: the revealed key is not the one the accused committed to")
            })?
        };
        let m = Message::decode(&plain).map_err(|e| format!("{what}: {e}"))?;
        if m.from != PartyId(*accused) || u32::from(m.round) != env.round {
            return Err(format!(
                "{what}: the message inside does not match its envelope"
            ));
        }
        opened.push(m);
    }
    match &ev.claim {
        Claim::BadFragment => match recheck_dealing(&ev.roster, accuser, accused, &opened) {
            // Left out for size (a padded dealing): not the accuser's fault.
            Err(why) if ev.truncated && why.contains("lacks") => Ok(Finding::Authentic),
            other => other,
        },
        Claim::Other(_) => Ok(Finding::Authentic),
    }
}

fn decode_env(b: &[u8], what: &str) -> Result<Envelope, String> {
    Envelope::decode(b).map_err(|e| format!("{what} is not an envelope: {e}"))
}

/// Signed by `party`, in `session`.
fn authentic(env: &Envelope, party: &[u8; 32], session: &[u8], what: &str) -> Result<(), String> {
    if env.sender.as_slice() != party.as_slice() {
        return Err(format!("{what} is not from the accused"));
    }
    if env.session_id != session {
        return Err(format!("{what} belongs to another relay session"));
    }
    if !signature_ok(env) {
        return Err(format!("{what} does not carry the accused's signature"));
    }
    Ok(())
}

/// A reshare dealing re-checked by the engine's own rule.
fn recheck_dealing(
    roster: &Roster,
    accuser: &[u8; 32],
    accused: &[u8; 32],
    opened: &[Message],
) -> Result<Finding, String> {
    let bcast = opened.iter().find(|m| m.round == 1 && m.to.is_none());
    let p2p = opened
        .iter()
        .find(|m| m.round == 1 && m.to == Some(PartyId(*accuser)));
    let (Some(bcast), Some(p2p)) = (bcast, p2p) else {
        return Err("it lacks the dealer's round-1 commitments or its fragment".into());
    };
    let committee = Committee::new(
        roster.threshold,
        roster.committee.iter().map(|c| PartyId(*c)),
    )
    .map_err(|e| format!("its participant list: {e}"))?;
    match cosigner_tss::reshare::check_dealing(&committee, &PartyId(*accuser), bcast, p2p) {
        Ok(()) => Err(format!(
            "{}'s fragment matches its commitments",
            short(accused)
        )),
        Err(e @ (TssError::BadFragment { .. } | TssError::Malformed { .. })) => {
            Ok(Finding::Upheld(e.to_string()))
        }
        Err(e) => Err(e.to_string()),
    }
}
