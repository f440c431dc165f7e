//! The ceremony driver: runs one engine state machine over the relay.
//!
//! A [`Driver`] is one party's view of one relay session. It subscribes to its mailbox,
//! exchanges HELLO envelopes (each party's epoch, so a party holding a share of another
//! epoch is named before any protocol work), pumps the engine's messages through signed and
//! encrypted envelopes, and for a reshare exchanges the READY confirmations that make the
//! new epoch atomic. Any failure is broadcast as a signed ABORT so the other parties stop at
//! once instead of waiting for their timeouts; a party that vanishes is named by whoever
//! times out first, who then aborts everyone else.
//!
//! The engine runs on the blocking pool under `catch_unwind`: its rounds take milliseconds
//! to seconds of CPU, and a panic inside the threshold library on hostile input must end
//! this ceremony, not the process.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use cosigner_api::v1::relay_client::RelayClient;
use cosigner_api::v1::{
    CloseSessionRequest, Delivery, EnvelopeKind, PostRequest, SubscribeRequest,
};
use cosigner_tss::{Ceremony, Message, PartyId, Step, TssError};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::envelope::{EnvelopeError, Opened, Opener, seal};
use crate::keys::{Member, PartyKeys, short};
use crate::mailbox::{close_bytes, subscribe_bytes};

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("relay: {0}")]
    Relay(String),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("ceremony: {0}")]
    Engine(#[from] TssError),
    #[error("{party} aborted the ceremony: {reason}")]
    Aborted { party: String, reason: String },
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
    #[error("{party} confirmed a different result: {detail}")]
    Ready { party: String, detail: String },
    #[error("the threshold engine failed internally (a bug; the ceremony is abandoned): {0}")]
    Panicked(String),
}

impl DriveError {
    /// True when the error came from another party's ABORT (no need to abort again).
    fn is_remote_abort(&self) -> bool {
        matches!(self, DriveError::Aborted { .. })
    }
}

/// The engine's per-ceremony nonce, derived from the relay session id the initiator chose,
/// so that the engine's session id is bound to the relay session. Every party (daemon or
/// device) must derive it the same way.
pub fn engine_nonce(session: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"cosigner/v1/engine-nonce");
    h.update(session);
    h.finalize().into()
}

/// What a party says first: the epoch it holds for the vault (None: it holds no share, a
/// party joining at a reshare or keygen) and a pending epoch from an interrupted reshare.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub epoch: Option<u64>,
    pub pending: Option<u64>,
}

/// A new party's confirmation that it sealed its new share: the new public key and epoch.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct Ready {
    public_key: Vec<u8>,
    epoch: u64,
}

/// Called with the name of each point a party reaches ("hello", "round-1", ..., "ready")
/// just before it posts there. Crash tests use it to kill a process at an exact round.
pub type FaultHook = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

pub struct SessionSpec {
    pub session_id: Vec<u8>,
    /// Everyone who takes part, this party included.
    pub participants: Vec<Member>,
    pub round_timeout: Duration,
    pub fault: Option<FaultHook>,
}

pub struct Driver {
    client: RelayClient<Channel>,
    keys: PartyKeys,
    session: Vec<u8>,
    members: BTreeMap<[u8; 32], Member>,
    opener: Opener,
    stream: tonic::Streaming<Delivery>,
    counter: u64,
    timeout: Duration,
    /// Envelopes that arrived ahead of the stage that consumes them.
    early: VecDeque<Opened>,
    hellos: BTreeMap<[u8; 32], Hello>,
    readies: BTreeMap<[u8; 32], Ready>,
    fault: Option<FaultHook>,
    last_round_posted: u32,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn relay_err(what: &str, s: tonic::Status) -> DriveError {
    DriveError::Relay(format!("{what}: {} ({:?})", s.message(), s.code()))
}

impl Driver {
    /// Subscribes to this party's mailbox in the session.
    pub async fn open(
        mut client: RelayClient<Channel>,
        keys: PartyKeys,
        spec: SessionSpec,
    ) -> Result<Driver, DriveError> {
        let me = keys.party_id();
        if !spec.participants.iter().any(|m| m.id == me) {
            return Err(DriveError::Relay(
                "this party is not a participant of the session".into(),
            ));
        }
        let ts = now_ms();
        let signature = keys
            .sign(&subscribe_bytes(&spec.session_id, &me, 0, ts))
            .to_vec();
        let stream = client
            .subscribe(SubscribeRequest {
                session_id: spec.session_id.clone(),
                party_id: me.to_vec(),
                after_seq: 0,
                timestamp_ms: ts,
                signature,
            })
            .await
            .map_err(|s| relay_err("subscribe", s))?
            .into_inner();
        let opener = Opener::new(keys.clone(), &spec.session_id, &spec.participants);
        Ok(Driver {
            client,
            keys,
            session: spec.session_id,
            members: spec.participants.into_iter().map(|m| (m.id, m)).collect(),
            opener,
            stream,
            counter: 0,
            timeout: spec.round_timeout,
            early: VecDeque::new(),
            hellos: BTreeMap::new(),
            readies: BTreeMap::new(),
            fault: spec.fault,
            last_round_posted: 0,
        })
    }

    pub fn me(&self) -> [u8; 32] {
        self.keys.party_id()
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
    ) -> Result<(), DriveError> {
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
            recipient.as_ref(),
            round,
            self.counter,
            kind,
            payload,
        )?;
        self.client
            .post(PostRequest {
                envelope: Some(env),
            })
            .await
            .map_err(|s| relay_err("post", s))?;
        Ok(())
    }

    /// Broadcasts a signed ABORT (best effort: the relay may be what failed).
    pub async fn abort(&mut self, reason: &str) {
        let reason: String = reason.chars().take(1000).collect();
        let post = self.post(None, 0, EnvelopeKind::Abort, reason.as_bytes());
        if let Ok(Err(e)) | Err(e) = tokio::time::timeout(Duration::from_secs(2), post)
            .await
            .map_err(|_| DriveError::Relay("timed out".into()))
        {
            tracing::debug!(error = %e, "could not post the abort");
        }
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

    /// The next verified envelope, or None on timeout. HELLO and READY envelopes are
    /// recorded as they come, whatever the stage; ABORT ends the ceremony.
    async fn next(&mut self) -> Result<Option<Opened>, DriveError> {
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
        let opened = self.opener.open(&env)?;
        match opened.kind {
            EnvelopeKind::Abort => Err(DriveError::Aborted {
                party: self.who(&opened.sender),
                reason: String::from_utf8_lossy(&opened.payload).into_owned(),
            }),
            _ => Ok(Some(opened)),
        }
    }

    /// Runs `f`, and on a local failure tells everyone else.
    async fn guarded<T>(&mut self, r: Result<T, DriveError>) -> Result<T, DriveError> {
        if let Err(e) = &r
            && !e.is_remote_abort()
        {
            let reason = format!("{} failed: {e}", self.who(&self.me()));
            self.abort(&reason).await;
        }
        r
    }

    /// Sends this party's HELLO and waits for everyone's. `expect` says which epoch each
    /// party must hold (None: no requirement, e.g. a party joining the committee).
    pub async fn hello(
        &mut self,
        mine: Hello,
        expect: &(dyn Fn(&[u8; 32]) -> Option<u64> + Sync),
    ) -> Result<BTreeMap<[u8; 32], Hello>, DriveError> {
        let r = self.hello_inner(mine, expect).await;
        self.guarded(r).await
    }

    async fn hello_inner(
        &mut self,
        mine: Hello,
        expect: &(dyn Fn(&[u8; 32]) -> Option<u64> + Sync),
    ) -> Result<BTreeMap<[u8; 32], Hello>, DriveError> {
        let me = self.me();
        let payload = postcard::to_allocvec(&mine).unwrap_or_default();
        self.post(None, 0, EnvelopeKind::Hello, &payload).await?;
        self.hellos.insert(me, mine);
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
            self.take(o)?;
        }
        for (id, h) in &self.hellos {
            if let Some(want) = expect(id)
                && h.epoch != Some(want)
            {
                let theirs = h.epoch.map_or("no share".into(), |e| e.to_string());
                let hint = match (h.epoch, h.pending) {
                    (_, Some(p)) if p == want => format!(
                        "it holds a pending share of epoch {p} from an interrupted reshare; its operator promotes it (cosignerctl vault resolve --promote) once the other new parties are at epoch {p}"
                    ),
                    (Some(e), _) if e > want => format!(
                        "this side is behind: if this party holds a pending share of epoch {e}, promote it (cosignerctl vault resolve --promote); otherwise it was left out of a reshare and needs a new reshare that includes it"
                    ),
                    (Some(e), _) => format!(
                        "{} missed a reshare (it is at epoch {e}); it must be reshared into the current committee, or promote its pending share if it has one",
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
        Ok(self.hellos.clone())
    }

    /// Files a HELLO or READY; keeps protocol envelopes for the protocol stage.
    fn take(&mut self, o: Opened) -> Result<(), DriveError> {
        match o.kind {
            EnvelopeKind::Hello => {
                let h: Hello =
                    postcard::from_bytes(&o.payload).map_err(|e| EnvelopeError::Malformed {
                        sender: self.who(&o.sender),
                        detail: format!("HELLO: {e}"),
                    })?;
                if self.hellos.insert(o.sender, h).is_some() {
                    return Err(EnvelopeError::Malformed {
                        sender: self.who(&o.sender),
                        detail: "a second HELLO".into(),
                    }
                    .into());
                }
            }
            EnvelopeKind::Ready => {
                let r: Ready =
                    postcard::from_bytes(&o.payload).map_err(|e| EnvelopeError::Malformed {
                        sender: self.who(&o.sender),
                        detail: format!("READY: {e}"),
                    })?;
                self.readies.insert(o.sender, r);
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
        let r = self.run_inner(ceremony).await;
        self.guarded(r).await
    }

    async fn run_inner<C>(&mut self, ceremony: C) -> Result<C::Output, DriveError>
    where
        C: Ceremony + Send + 'static,
        C::Output: Send + 'static,
    {
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

    /// After a reshare: says this party sealed its new share (if it is a new party) and
    /// waits until every new party has said the same, with the same key and epoch.
    pub async fn ready(
        &mut self,
        new_parties: &[[u8; 32]],
        mine: Option<(&[u8], u64)>,
        expected_key: &[u8],
        expected_epoch: u64,
    ) -> Result<(), DriveError> {
        let r = self
            .ready_inner(new_parties, mine, expected_key, expected_epoch)
            .await;
        self.guarded(r).await
    }

    async fn ready_inner(
        &mut self,
        new_parties: &[[u8; 32]],
        mine: Option<(&[u8], u64)>,
        expected_key: &[u8],
        expected_epoch: u64,
    ) -> Result<(), DriveError> {
        let me = self.me();
        if let Some((key, epoch)) = mine {
            let r = Ready {
                public_key: key.to_vec(),
                epoch,
            };
            self.post(
                None,
                0,
                EnvelopeKind::Ready,
                &postcard::to_allocvec(&r).unwrap_or_default(),
            )
            .await?;
            self.readies.insert(me, r);
        }
        let wanted: BTreeSet<[u8; 32]> = new_parties.iter().copied().collect();
        // Protocol envelopes still queued are late final-round messages; nothing needs them.
        while let Some(o) = self.early.pop_front() {
            if o.kind != EnvelopeKind::Protocol {
                self.take(o)?;
            }
        }
        loop {
            for (id, r) in &self.readies {
                if r.public_key != expected_key || r.epoch != expected_epoch {
                    return Err(DriveError::Ready {
                        party: self.who(id),
                        detail: format!(
                            "epoch {} instead of {expected_epoch}, or another public key",
                            r.epoch
                        ),
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
