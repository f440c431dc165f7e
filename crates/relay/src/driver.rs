//! The ceremony driver: runs one engine state machine over the relay.
//!
//! A [`Driver`] is one party's view of one relay session. It subscribes to its mailbox,
//! exchanges HELLO envelopes, pumps the engine's messages through signed and encrypted
//! envelopes, and for keygen and reshare exchanges the signed READY statements that the
//! commit is built on ([`crate::commit`]). Any failure is broadcast as a signed ABORT so the
//! other parties stop at once instead of waiting for their timeouts; a party that vanishes
//! is named by whoever times out first, who then aborts everyone else.
//!
//! HELLO is where a ceremony is pinned down before any secret moves. Each participant
//! signs (the envelope signature) the hash of the participant list as *it* built it
//! ([`crate::roster::Roster::hash`]: kind, vault, epochs, thresholds, dealers, every
//! participant's id and encryption key, the relay session and the request body), its own
//! encryption key, and a fresh random value. A party goes on only if every HELLO carries
//! its own roster hash and every sender names the encryption key the roster holds for it;
//! otherwise it aborts before round one, so no fragment is ever encrypted to a key its
//! owner did not sign. The ceremony context, a hash of the roster hash and every fresh
//! value, then keys every point-to-point envelope and seeds the engine's session id
//! ([`Driver::engine_nonce`]): two ceremonies never share keys or a session id, even on a
//! reused relay session id.
//!
//! The engine runs on the blocking pool under `catch_unwind`: its rounds take milliseconds
//! to seconds of CPU, and a panic inside the threshold library on hostile input must end
//! this ceremony, not the process.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use cosigner_api::v1::relay_client::RelayClient;
use cosigner_api::v1::{
    CloseSessionRequest, Delivery, Envelope, EnvelopeKind, PostRequest, SubscribeRequest,
};
use cosigner_tss::{Ceremony, Message, PartyId, Step, TssError};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use crate::blame::{AbortMessage, Blamed, Claim, Evidence, Received, judge};
use crate::commit::{CommitTarget, ReadyStatement};
use crate::envelope::{EnvelopeError, Opened, Opener, seal};
use crate::keys::{Member, PartyKeys, short};
use crate::mailbox::{close_bytes, subscribe_bytes};
use crate::roster::Roster;

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("relay: {0}")]
    Relay(String),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("ceremony: {0}")]
    Engine(#[from] TssError),
    #[error("{party} aborted the ceremony: {reason}{}", if evidence.is_empty() { String::new() } else { format!(" ({evidence})") })]
    Aborted {
        party: String,
        reason: String,
        /// What checking the ABORT's evidence found ([`crate::blame::Verdict::summary`]).
        evidence: String,
    },
    #[error("timed out after {secs} s {stage}, waiting for {waiting}")]
    Timeout {
        secs: u64,
        stage: &'static str,
        waiting: String,
    },
    #[error("{party} holds epoch {theirs}, this party expects epoch {ours}: {hint}")]
    EpochMismatch {
        party: String,
        theirs: String,
        ours: String,
        hint: String,
    },
    #[error(
        "{party} took part with another participant list or request than this party (its signed HELLO names another roster hash): a requester may have sent the parties different requests; stopped before round one"
    )]
    RosterMismatch { party: String },
    #[error(
        "{party} announced another encryption key in its signed HELLO than the participant list holds for it; stopped before round one (nothing was encrypted to that key)"
    )]
    KeyMismatch { party: String },
    #[error("{party} confirmed a different result: {detail}")]
    Ready { party: String, detail: String },
    #[error("the threshold engine failed internally (a bug; the ceremony is abandoned): {0}")]
    Panicked(String),
    /// A failure that ended with an ABORT carrying evidence against a party (sent or
    /// received), and what checking that evidence found.
    #[error("{error}{}", blamed_suffix(error, blamed))]
    Blamed {
        error: Box<DriveError>,
        blamed: Box<Blamed>,
    },
}

/// The verdict, unless the error's text already carries it (a received ABORT).
fn blamed_suffix(error: &DriveError, blamed: &Blamed) -> String {
    match error {
        DriveError::Aborted { .. } => String::new(),
        _ => format!(
            " (this party's ABORT forwards the evidence: {})",
            blamed.verdict.summary()
        ),
    }
}

impl DriveError {
    /// True when the error came from another party's ABORT (no need to abort again).
    fn is_remote_abort(&self) -> bool {
        matches!(self, DriveError::Aborted { .. } | DriveError::Blamed { .. })
    }

    /// The ABORT with evidence this failure ended with, if any.
    pub fn blamed(&self) -> Option<&Blamed> {
        match self {
            DriveError::Blamed { blamed, .. } => Some(blamed),
            _ => None,
        }
    }
}

/// Text another party wrote (an ABORT reason) as it may reach logs, errors and the
/// history: printable characters only (control characters, escapes and line breaks become
/// '?'), at most `MAX_REMOTE_TEXT` characters.
pub fn sanitize(text: &str) -> String {
    const MAX_REMOTE_TEXT: usize = 500;
    let mut out: String = text
        .chars()
        .take(MAX_REMOTE_TEXT)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > MAX_REMOTE_TEXT {
        out.push_str("...");
    }
    out
}

/// What a party says of its state for the vault, in its HELLO.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// The epoch it holds (None: it holds no share, a party joining at a reshare or keygen).
    pub epoch: Option<u64>,
    /// A pending epoch from an interrupted ceremony.
    pub pending: Option<u64>,
}

/// The HELLO on the wire (signed by the envelope).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct HelloMessage {
    pub(crate) roster_hash: [u8; 32],
    pub(crate) encryption_key: [u8; 32],
    pub(crate) fresh: [u8; 32],
    pub(crate) state: Hello,
}

/// The ceremony context: the roster hash and every participant's fresh HELLO value. It keys
/// point-to-point messages and is named in every envelope's signed header, so whoever
/// holds the roster and the fresh values can tell which ceremony a message belongs to.
pub(crate) fn ceremony_context(
    roster_hash: &[u8; 32],
    fresh: &BTreeMap<[u8; 32], [u8; 32]>,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"cosigner/v2/ceremony-context");
    h.update(roster_hash);
    for (id, f) in fresh {
        h.update(id);
        h.update(f);
    }
    h.finalize().into()
}

/// Called with the name of each point a party reaches ("hello", "round-1", ..., "ready")
/// just before it posts there. Crash tests use it to kill a process at an exact round.
pub type FaultHook = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

pub struct SessionSpec {
    /// The participant list, built from this party's own record (see [`crate::roster`]);
    /// its relay session is the session to use.
    pub roster: Roster,
    pub round_timeout: Duration,
    pub fault: Option<FaultHook>,
}

/// How a READY exchange ended.
#[derive(Debug)]
pub enum ReadyOutcome {
    /// A valid READY from every new party (a certificate, if they name one record).
    Complete(Vec<ReadyStatement>),
    /// It ended early (timeout, ABORT, a lying relay, a mismatch): what arrived until then.
    Incomplete {
        received: Vec<ReadyStatement>,
        error: DriveError,
    },
}

pub struct Driver {
    client: RelayClient<Channel>,
    keys: PartyKeys,
    session: Vec<u8>,
    members: BTreeMap<[u8; 32], Member>,
    roster_hash: [u8; 32],
    fresh: [u8; 32],
    /// Every participant's fresh HELLO value (evidence names the ceremony with them).
    fresh_all: BTreeMap<[u8; 32], [u8; 32]>,
    /// Set once every HELLO agreed: keys point-to-point envelopes and the engine session.
    context: Option<[u8; 32]>,
    opener: Opener,
    stream: tonic::Streaming<Delivery>,
    counter: u64,
    timeout: Duration,
    /// Envelopes that arrived before the context existed (opened once it does).
    unopened: VecDeque<Envelope>,
    /// Envelopes that arrived ahead of the stage that consumes them.
    early: VecDeque<Opened>,
    hellos: BTreeMap<[u8; 32], Hello>,
    readies: BTreeMap<[u8; 32], ReadyStatement>,
    fault: Option<FaultHook>,
    last_round_posted: u32,
    /// The participant list (for evidence) and every participant's signed HELLO.
    roster: Roster,
    hello_envelopes: BTreeMap<[u8; 32], Envelope>,
    /// Every protocol envelope received, by sender, with its message key: the evidence an
    /// ABORT carries if that sender's messages make the engine stop.
    received: BTreeMap<[u8; 32], Vec<Received>>,
    /// The ABORT with evidence that ended the ceremony (sent or received), once checked.
    blamed: Option<Blamed>,
}

use cosigner_party::clock::now_ms;

fn relay_err(what: &str, s: tonic::Status) -> DriveError {
    DriveError::Relay(format!("{what}: {} ({:?})", s.message(), s.code()))
}

/// A fresh subscription proof: the relay refuses a replayed one.
pub fn subscription(keys: &PartyKeys, session: &[u8], after_seq: u64) -> SubscribeRequest {
    let me = keys.party_id();
    let ts = now_ms();
    let mut nonce = vec![0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let signature = keys
        .sign(&subscribe_bytes(session, &me, after_seq, ts, &nonce))
        .to_vec();
    SubscribeRequest {
        session_id: session.to_vec(),
        party_id: me.to_vec(),
        after_seq,
        timestamp_ms: ts,
        signature,
        nonce,
    }
}

impl Driver {
    /// Subscribes to this party's mailbox in the session.
    pub async fn open(
        mut client: RelayClient<Channel>,
        keys: PartyKeys,
        spec: SessionSpec,
    ) -> Result<Driver, DriveError> {
        let me = keys.party_id();
        let roster = spec.roster;
        match roster.member(&me) {
            None => {
                return Err(DriveError::Relay(
                    "this party is not a participant of the session".into(),
                ));
            }
            Some(m) if m.encryption_key != keys.encryption_public() => {
                return Err(DriveError::KeyMismatch { party: short(&me) });
            }
            Some(_) => {}
        }
        let session = roster.relay_session.clone();
        let kept_roster = roster.clone();
        let stream = client
            .subscribe(subscription(&keys, &session, 0))
            .await
            .map_err(|s| relay_err("subscribe", s))?
            .into_inner();
        let opener = Opener::new(keys.clone(), &session, &roster.participants);
        let mut fresh = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut fresh);
        Ok(Driver {
            client,
            keys,
            session,
            roster_hash: roster.hash(),
            members: roster.participants.into_iter().map(|m| (m.id, m)).collect(),
            fresh,
            fresh_all: BTreeMap::new(),
            context: None,
            opener,
            stream,
            counter: 0,
            timeout: spec.round_timeout,
            unopened: VecDeque::new(),
            early: VecDeque::new(),
            hellos: BTreeMap::new(),
            readies: BTreeMap::new(),
            fault: spec.fault,
            last_round_posted: 0,
            roster: kept_roster,
            hello_envelopes: BTreeMap::new(),
            received: BTreeMap::new(),
            blamed: None,
        })
    }

    /// The ABORT with evidence that ended this ceremony, sent or received, and what
    /// checking it found: for the history, so an operator can check the blame again.
    pub fn blamed(&self) -> Option<&Blamed> {
        self.blamed.as_ref()
    }

    pub fn me(&self) -> [u8; 32] {
        self.keys.party_id()
    }

    /// The ceremony context (after HELLO): names this ceremony in READY statements.
    pub fn context(&self) -> Option<[u8; 32]> {
        self.context
    }

    /// The engine's per-ceremony nonce (after HELLO): the ceremony context, so the engine's
    /// session id binds the participant list and every participant's fresh value.
    pub fn engine_nonce(&self) -> Result<[u8; 32], DriveError> {
        let ctx = self.context.ok_or_else(|| {
            DriveError::Relay("the engine cannot start before every HELLO arrived".into())
        })?;
        let mut h = Sha256::new();
        h.update(b"cosigner/v2/engine-nonce");
        h.update(ctx);
        Ok(h.finalize().into())
    }

    /// "name (0123abcd...)" for messages.
    pub fn who(&self, id: &[u8; 32]) -> String {
        match self.members.get(id) {
            Some(m) if !m.name.is_empty() => format!("{} ({})", m.name, short(id)),
            _ => short(id),
        }
    }

    fn who_list<'a>(&self, ids: impl IntoIterator<Item = &'a [u8; 32]>) -> String {
        let v: Vec<String> = ids.into_iter().map(|i| self.who(i)).collect();
        if v.is_empty() {
            "nobody".into()
        } else {
            v.join(", ")
        }
    }

    fn fault(&self, point: &str) {
        if let Some(f) = &self.fault {
            f(point);
        }
    }

    async fn post(
        &mut self,
        to: Option<[u8; 32]>,
        round: u32,
        kind: EnvelopeKind,
        payload: &[u8],
    ) -> Result<Envelope, DriveError> {
        match kind {
            EnvelopeKind::Hello => self.fault("hello"),
            EnvelopeKind::Ready => self.fault("ready"),
            EnvelopeKind::Protocol if round != self.last_round_posted => {
                self.last_round_posted = round;
                self.fault(&format!("round-{round}"));
            }
            _ => {}
        }
        self.counter += 1;
        let recipient = match to {
            Some(id) => Some(
                self.members
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| DriveError::Relay(format!("no member {}", short(&id))))?,
            ),
            None => None,
        };
        let env = seal(
            &self.keys,
            &self.session,
            self.context.as_ref(),
            recipient.as_ref(),
            round,
            self.counter,
            kind,
            payload,
        )?;
        self.client
            .post(PostRequest {
                envelope: Some(env.clone()),
            })
            .await
            .map_err(|s| relay_err("post", s))?;
        Ok(env)
    }

    /// Broadcasts a signed ABORT (best effort: the relay may be what failed).
    pub async fn abort(&mut self, reason: &str) {
        self.abort_with(reason, None).await;
    }

    /// An ABORT, with evidence against the party whose messages made this one stop.
    async fn abort_with(&mut self, reason: &str, evidence: Option<Evidence>) {
        let msg = AbortMessage {
            reason: sanitize(reason),
            evidence,
        };
        let with_evidence = msg.evidence.is_some();
        let payload = msg.encode();
        let post = self.post(None, 0, EnvelopeKind::Abort, &payload);
        match tokio::time::timeout(Duration::from_secs(2), post).await {
            Ok(Ok(env)) if with_evidence => {
                // Judged like anyone else would: what this party records is what others see.
                let (abort, hash) = (env.clone(), self.roster_hash);
                let verdict = tokio::task::spawn_blocking(move || judge(&abort, Some(&hash)));
                if let Ok(Ok(verdict)) = verdict.await {
                    self.blamed = Some(Blamed {
                        abort: env,
                        verdict,
                    });
                }
            }
            Ok(Ok(_)) => {}
            failed if with_evidence => {
                // The relay may refuse the evidence (a payload limit below ours) or not
                // answer: the others must still learn at once that the ceremony is over.
                let e = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_string(),
                };
                tracing::debug!(error = %e, "could not post the abort with evidence; sending it bare");
                let bare = AbortMessage {
                    reason: msg.reason,
                    evidence: None,
                }
                .encode();
                let post = self.post(None, 0, EnvelopeKind::Abort, &bare);
                match tokio::time::timeout(Duration::from_secs(2), post).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "could not post the abort"),
                    Err(_) => tracing::debug!("could not post the abort: timed out"),
                }
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "could not post the abort"),
            Err(_) => tracing::debug!("could not post the abort: timed out"),
        }
    }

    /// Evidence for an engine error that names another participant whose HELLO arrived.
    fn evidence_for(&self, e: &DriveError) -> Option<Evidence> {
        let DriveError::Engine(t) = e else {
            return None;
        };
        let accused = t.accused()?.0;
        if accused == self.me() {
            return None;
        }
        let hello = self.hello_envelopes.get(&accused)?;
        let claim = match t {
            TssError::BadFragment { .. } => Claim::BadFragment,
            other => Claim::Other(other.to_string()),
        };
        let all = self
            .received
            .get(&accused)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        // Only what the claim needs, and message keys only where the claim is re-checked:
        // a bad fragment forwards the dealer's round-1 broadcast and its fragment to this
        // party; any other claim forwards the accused's broadcasts (no key is revealed).
        let me = self.me();
        let received: Vec<Received> = all
            .iter()
            .filter(|(env, _)| match claim {
                Claim::BadFragment => {
                    env.round == 1
                        && (env.recipient.is_empty() || env.recipient.as_slice() == me.as_slice())
                }
                Claim::Other(_) => env.recipient.is_empty(),
            })
            .cloned()
            .collect();
        Evidence::new(
            accused,
            claim,
            self.roster.clone(),
            &self.fresh_all,
            hello,
            &received,
        )
    }

    /// Ends the session on the relay (the coordinator does this when everyone is done).
    pub async fn close(&mut self) -> Result<(), DriveError> {
        let me = self.me();
        let ts = now_ms();
        let signature = self
            .keys
            .sign(&close_bytes(&self.session, &me, ts))
            .to_vec();
        self.client
            .close_session(CloseSessionRequest {
                session_id: self.session.clone(),
                party_id: me.to_vec(),
                timestamp_ms: ts,
                signature,
            })
            .await
            .map_err(|s| relay_err("close", s))?;
        Ok(())
    }

    /// Opens one envelope; an ABORT ends the ceremony. Keeps what may become evidence: the
    /// signed HELLOs and every protocol envelope with its message key.
    async fn open_one(&mut self, env: &Envelope) -> Result<Opened, DriveError> {
        let opened = self.opener.open(env)?;
        match opened.kind {
            EnvelopeKind::Abort => {
                let (reason, evidence) = match AbortMessage::decode(&opened.payload) {
                    // Before this party has every HELLO it cannot tell which ceremony the
                    // evidence is about (an ABORT names its context, but there is none here
                    // to compare it with): it stops, and records no blame.
                    Ok(m) if self.context.is_none() => (
                        m.reason,
                        if m.evidence.is_some() {
                            "its evidence was not checked: this party did not have every HELLO yet"
                                .into()
                        } else {
                            String::new()
                        },
                    ),
                    Ok(m) => {
                        // Checking evidence verifies up to a few hundred signatures and may
                        // re-run a dealing check: on the blocking pool, not a runtime worker.
                        let (abort, hash) = (env.clone(), self.roster_hash);
                        let verdict =
                            tokio::task::spawn_blocking(move || judge(&abort, Some(&hash)))
                                .await
                                .map_err(|e| DriveError::Panicked(e.to_string()))?;
                        let summary = match &verdict {
                            Ok(v) if m.evidence.is_some() => v.summary(),
                            Ok(_) => String::new(),
                            Err(e) => format!("its evidence is {e}"),
                        };
                        if let (Ok(verdict), Some(_)) = (verdict, &m.evidence) {
                            self.blamed = Some(Blamed {
                                abort: env.clone(),
                                verdict,
                            });
                        }
                        (m.reason, summary)
                    }
                    Err(e) => (format!("(an unreadable ABORT: {e})"), String::new()),
                };
                Err(DriveError::Aborted {
                    party: self.who(&opened.sender),
                    reason: sanitize(&reason),
                    evidence,
                })
            }
            EnvelopeKind::Hello => {
                self.hello_envelopes.insert(opened.sender, env.clone());
                Ok(opened)
            }
            EnvelopeKind::Protocol => {
                // Kept as possible evidence, up to what an ABORT can carry per sender (the
                // first rounds, where dealing faults are); the rest is not kept.
                let kept = self.received.entry(opened.sender).or_default();
                let bytes: usize = kept.iter().map(|(e, _)| e.payload.len()).sum();
                if bytes + env.payload.len() <= crate::blame::MAX_EXHIBIT_BYTES {
                    kept.push((env.clone(), opened.key.as_deref().copied()));
                }
                Ok(opened)
            }
            _ => Ok(opened),
        }
    }

    /// The next verified envelope, or None on timeout. Before the context exists, only
    /// HELLO and ABORT envelopes are opened; the rest wait (in order) until it does.
    async fn next(&mut self) -> Result<Option<Opened>, DriveError> {
        loop {
            if self.context.is_some()
                && let Some(env) = self.unopened.pop_front()
            {
                return self.open_one(&env).await.map(Some);
            }
            let msg = match tokio::time::timeout(self.timeout, self.stream.message()).await {
                Err(_) => return Ok(None),
                Ok(Err(s)) => return Err(relay_err("mailbox stream", s)),
                Ok(Ok(None)) => {
                    return Err(DriveError::Relay(
                        "the relay ended the session (closed or expired)".into(),
                    ));
                }
                Ok(Ok(Some(d))) => d,
            };
            let env = msg
                .envelope
                .ok_or_else(|| DriveError::Relay("a delivery without an envelope".into()))?;
            let early_kind =
                env.kind == EnvelopeKind::Hello as i32 || env.kind == EnvelopeKind::Abort as i32;
            if self.context.is_none() && !early_kind {
                if self.unopened.len() >= 4096 {
                    return Err(DriveError::Relay(
                        "too many envelopes before every HELLO arrived".into(),
                    ));
                }
                self.unopened.push_back(env);
                continue;
            }
            return self.open_one(&env).await.map(Some);
        }
    }

    /// Runs `f`, and on a local failure tells everyone else.
    async fn guarded<T>(&mut self, r: Result<T, DriveError>) -> Result<T, DriveError> {
        let Err(e) = r else {
            return r;
        };
        if !e.is_remote_abort() {
            let reason = format!("{} failed: {e}", self.who(&self.me()));
            let evidence = self.evidence_for(&e);
            Box::pin(self.abort_with(&reason, evidence)).await;
        }
        Err(match (&e, &self.blamed) {
            (DriveError::Blamed { .. }, _) | (_, None) => e,
            (_, Some(b)) => DriveError::Blamed {
                error: Box::new(e),
                blamed: Box::new(b.clone()),
            },
        })
    }

    /// Sends this party's HELLO and waits for everyone's; checks that every participant
    /// built the same roster and names its own key as the roster does. `expect` says which
    /// epoch each party must hold (None: no requirement, e.g. a party joining).
    pub async fn hello(
        &mut self,
        mine: Hello,
        expect: &(dyn Fn(&[u8; 32]) -> Option<u64> + Sync),
    ) -> Result<BTreeMap<[u8; 32], Hello>, DriveError> {
        // Boxed: the rounds' futures (tonic calls, the engine on the blocking pool) are large,
        // and every caller's future would otherwise carry them inline.
        let r = Box::pin(self.hello_inner(mine, expect)).await;
        self.guarded(r).await
    }

    async fn hello_inner(
        &mut self,
        mine: Hello,
        expect: &(dyn Fn(&[u8; 32]) -> Option<u64> + Sync),
    ) -> Result<BTreeMap<[u8; 32], Hello>, DriveError> {
        let me = self.me();
        let msg = HelloMessage {
            roster_hash: self.roster_hash,
            encryption_key: self.keys.encryption_public(),
            fresh: self.fresh,
            state: mine,
        };
        let payload = postcard::to_allocvec(&msg).unwrap_or_default();
        let sent = self.post(None, 0, EnvelopeKind::Hello, &payload).await?;
        self.hello_envelopes.insert(me, sent);
        self.hellos.insert(me, mine);
        let mut fresh: BTreeMap<[u8; 32], [u8; 32]> = BTreeMap::new();
        fresh.insert(me, self.fresh);
        loop {
            let missing: Vec<[u8; 32]> = self
                .members
                .keys()
                .filter(|id| !self.hellos.contains_key(*id))
                .copied()
                .collect();
            if missing.is_empty() {
                break;
            }
            let Some(o) = self.next().await? else {
                return Err(DriveError::Timeout {
                    secs: self.timeout.as_secs(),
                    stage: "before the ceremony started (HELLO)",
                    waiting: self.who_list(&missing),
                });
            };
            match o.kind {
                EnvelopeKind::Hello => {
                    let h: HelloMessage =
                        postcard::from_bytes(&o.payload).map_err(|e| EnvelopeError::Malformed {
                            sender: self.who(&o.sender),
                            detail: format!("HELLO: {e}"),
                        })?;
                    if h.roster_hash != self.roster_hash {
                        return Err(DriveError::RosterMismatch {
                            party: self.who(&o.sender),
                        });
                    }
                    let listed = self.members.get(&o.sender).map(|m| m.encryption_key);
                    if listed != Some(h.encryption_key) {
                        return Err(DriveError::KeyMismatch {
                            party: self.who(&o.sender),
                        });
                    }
                    if self.hellos.insert(o.sender, h.state).is_some() {
                        return Err(EnvelopeError::Malformed {
                            sender: self.who(&o.sender),
                            detail: "a second HELLO".into(),
                        }
                        .into());
                    }
                    fresh.insert(o.sender, h.fresh);
                }
                // Nothing else is opened before the context exists.
                _ => {
                    return Err(EnvelopeError::Malformed {
                        sender: self.who(&o.sender),
                        detail: "a message before HELLO".into(),
                    }
                    .into());
                }
            }
        }
        for (id, h) in &self.hellos {
            if let Some(want) = expect(id)
                && h.epoch != Some(want)
            {
                let theirs = h.epoch.map_or("no share".into(), |e| e.to_string());
                let hint = match (h.epoch, h.pending) {
                    (_, Some(p)) if p == want => format!(
                        "it holds a pending share of epoch {p} from an interrupted ceremony; resolve it (cosignerctl vault resolve) with the other parties' reports"
                    ),
                    (Some(e), _) if e > want => "this side is behind: resolve this party's interrupted reshare (cosignerctl vault resolve), or reshare it back in".to_string(),
                    (Some(e), _) => format!(
                        "{} missed a reshare (it is at epoch {e}); resolve it, or reshare it into the current committee",
                        self.who(id)
                    ),
                    (None, _) => "it holds no share of this vault".into(),
                };
                return Err(DriveError::EpochMismatch {
                    party: self.who(id),
                    theirs,
                    ours: want.to_string(),
                    hint,
                });
            }
        }
        let context = ceremony_context(&self.roster_hash, &fresh);
        self.fresh_all = fresh;
        self.context = Some(context);
        self.opener.set_context(context);
        Ok(self.hellos.clone())
    }

    /// Files a READY that came early; keeps protocol envelopes for the protocol stage.
    fn take(&mut self, o: Opened) -> Result<(), DriveError> {
        match o.kind {
            EnvelopeKind::Ready => {
                let r =
                    ReadyStatement::decode(&o.payload).map_err(|e| EnvelopeError::Malformed {
                        sender: self.who(&o.sender),
                        detail: e.to_string(),
                    })?;
                if r.party != o.sender {
                    return Err(EnvelopeError::Malformed {
                        sender: self.who(&o.sender),
                        detail: "a READY statement by another party".into(),
                    }
                    .into());
                }
                self.readies.insert(o.sender, r);
            }
            EnvelopeKind::Hello => {
                return Err(EnvelopeError::Malformed {
                    sender: self.who(&o.sender),
                    detail: "a second HELLO".into(),
                }
                .into());
            }
            _ => self.early.push_back(o),
        }
        Ok(())
    }

    /// Runs one ceremony to its result.
    pub async fn run<C>(&mut self, ceremony: C) -> Result<C::Output, DriveError>
    where
        C: Ceremony + Send + 'static,
        C::Output: Send + 'static,
    {
        let r = Box::pin(self.run_inner(ceremony)).await;
        self.guarded(r).await
    }

    async fn run_inner<C>(&mut self, ceremony: C) -> Result<C::Output, DriveError>
    where
        C: Ceremony + Send + 'static,
        C::Output: Send + 'static,
    {
        if self.context.is_none() {
            return Err(DriveError::Relay(
                "the ceremony cannot run before every HELLO arrived".into(),
            ));
        }
        let (mut c, step) = engine(ceremony, |c| c.start()).await?;
        if let Some(v) = self.send_step(step).await? {
            return Ok(v);
        }
        loop {
            let o = match self.early.pop_front() {
                Some(o) => o,
                None => match self.next().await? {
                    Some(o) => o,
                    None => {
                        let waiting: Vec<[u8; 32]> = c.waiting_for().iter().map(|p| p.0).collect();
                        return Err(DriveError::Timeout {
                            secs: self.timeout.as_secs(),
                            stage: "in the protocol rounds",
                            waiting: self.who_list(&waiting),
                        });
                    }
                },
            };
            if o.kind != EnvelopeKind::Protocol {
                self.take(o)?;
                continue;
            }
            let msg = Message::decode(&o.payload)?;
            if msg.from != PartyId(o.sender)
                || msg.is_broadcast() != o.broadcast
                || u32::from(msg.round) != o.round
            {
                return Err(EnvelopeError::Malformed {
                    sender: self.who(&o.sender),
                    detail: "the protocol message inside does not match its envelope (sender, recipient or round)".into(),
                }
                .into());
            }
            let (c2, step) = engine(c, move |c| c.handle(msg)).await?;
            c = c2;
            if let Some(v) = self.send_step(step).await? {
                return Ok(v);
            }
        }
    }

    async fn send_step<T>(&mut self, step: Step<T>) -> Result<Option<T>, DriveError> {
        let (msgs, done) = match step {
            Step::Continue(m) => (m, None),
            Step::Done(v, m) => (m, Some(v)),
        };
        for m in msgs {
            let to = m.to.map(|p| p.0);
            let bytes = zeroize::Zeroizing::new(m.encode());
            self.post(to, u32::from(m.round), EnvelopeKind::Protocol, &bytes)
                .await?;
        }
        Ok(done)
    }

    /// After keygen or reshare: posts this party's READY (a new party, which has sealed
    /// its new share as pending and recorded the statement) and collects every new
    /// party's. Never fails: whatever happens, the caller gets the READYs that arrived, and
    /// decides from them ([`crate::commit`]). A failure is still announced with an ABORT so
    /// the others stop waiting.
    pub async fn exchange_ready(
        &mut self,
        target: &CommitTarget,
        mine: Option<&ReadyStatement>,
    ) -> ReadyOutcome {
        let r = Box::pin(self.ready_inner(target, mine)).await;
        let r = Box::pin(self.guarded(r)).await;
        let received: Vec<ReadyStatement> = self
            .readies
            .values()
            .filter(|s| target.check(s).is_ok())
            .cloned()
            .collect();
        match r {
            Ok(()) => ReadyOutcome::Complete(received),
            Err(error) => ReadyOutcome::Incomplete { received, error },
        }
    }

    async fn ready_inner(
        &mut self,
        target: &CommitTarget,
        mine: Option<&ReadyStatement>,
    ) -> Result<(), DriveError> {
        let me = self.me();
        if let Some(r) = mine {
            self.post(None, 0, EnvelopeKind::Ready, &r.encode()).await?;
            self.readies.insert(me, r.clone());
        }
        let wanted: BTreeSet<[u8; 32]> = target.new_parties.iter().copied().collect();
        // Protocol envelopes still queued are late final-round messages; nothing needs them.
        while let Some(o) = self.early.pop_front() {
            if o.kind != EnvelopeKind::Protocol {
                self.take(o)?;
            }
        }
        loop {
            for (id, r) in &self.readies {
                if let Err(e) = target.check(r) {
                    return Err(DriveError::Ready {
                        party: self.who(id),
                        detail: e.to_string(),
                    });
                }
            }
            let missing: Vec<[u8; 32]> = wanted
                .iter()
                .filter(|id| !self.readies.contains_key(*id))
                .copied()
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            let Some(o) = self.next().await? else {
                return Err(DriveError::Timeout {
                    secs: self.timeout.as_secs(),
                    stage: "waiting for READY from every new party",
                    waiting: self.who_list(&missing),
                });
            };
            if o.kind != EnvelopeKind::Protocol {
                self.take(o)?;
            }
        }
    }
}

/// Runs one engine call on the blocking pool, catching a panic.
async fn engine<C, T, F>(mut c: C, f: F) -> Result<(C, Step<T>), DriveError>
where
    C: Ceremony + Send + 'static,
    T: Send + 'static,
    F: FnOnce(&mut C) -> Result<Step<T>, TssError> + Send + 'static,
{
    let joined = tokio::task::spawn_blocking(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut c)));
        r.map(|r| (c, r))
    })
    .await
    .map_err(|e| DriveError::Panicked(e.to_string()))?;
    match joined {
        Ok((c, Ok(step))) => Ok((c, step)),
        Ok((_, Err(e))) => Err(DriveError::Engine(e)),
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            Err(DriveError::Panicked(what))
        }
    }
}
