//! The coordinator's half of a ceremony, written once for every party that starts one: the
//! device (`cosignerctl party keygen|sign|reshare`), a daemon's scheduled rotation and
//! `cosignerctl bench sign`.
//!
//! A coordinator creates a fresh relay session for exactly the participants, signs the
//! request body once with its party key (every party receives the same bytes, so parties
//! shown different requests stop at HELLO), calls each daemon that takes part, and
//! collects their answers. It decides nothing for the others: every callee runs its own
//! gate, checks and policy. A callee that fails is reported at once ([`Calls::watch`]), so
//! a coordinator that also takes part can stop its own part and abort the session rather
//! than wait for a round timeout.

use std::future::Future;
use std::time::Duration;

use cosigner_api::v1::relay_client::RelayClient;
use cosigner_api::v1::{CloseSessionRequest, CreateSessionRequest, RelayRef, RequestAuth};
use cosigner_relay::PartyKeys;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// How long a coordinator's relay session lives: long enough for device parties that join
/// from a request file, bounded so an abandoned session goes away by itself.
pub const SESSION_TTL_SECONDS: u32 = 900;

/// What went wrong on the coordinator's side.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("relay: cannot create the session: {0}")]
    Session(String),
    /// A callee failed while the coordinator's own part ran.
    #[error("a daemon failed: {0}")]
    Failed(String),
    /// One or more callees failed; each named, joined by "; ".
    #[error("{0}")]
    Calls(String),
}

/// A gRPC status as the coordinator reports it: the message and the code.
pub fn status_text(s: &tonic::Status) -> String {
    format!("{} ({:?})", s.message(), s.code())
}

/// A 32-byte random relay session id.
pub fn session_id() -> Vec<u8> {
    use rand::RngCore as _;
    let mut s = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut s);
    s
}

/// A relay session this coordinator created.
pub struct Session {
    pub relay: RelayClient<Channel>,
    pub address: String,
    pub id: Vec<u8>,
}

impl Session {
    /// Creates a session for exactly `participants` on the relay at `address`.
    pub async fn create(
        mut relay: RelayClient<Channel>,
        address: String,
        participants: impl IntoIterator<Item = [u8; 32]>,
        ttl_seconds: u32,
    ) -> Result<Session, CoordinatorError> {
        let id = session_id();
        relay
            .create_session(CreateSessionRequest {
                session_id: id.clone(),
                participants: participants.into_iter().map(|p| p.to_vec()).collect(),
                ttl_seconds,
            })
            .await
            .map_err(|s| CoordinatorError::Session(s.message().to_string()))?;
        Ok(Session { relay, address, id })
    }

    /// The relay reference every party's request carries.
    pub fn relay_ref(&self) -> RelayRef {
        RelayRef {
            address: self.address.clone(),
            session_id: self.id.clone(),
        }
    }

    /// Closes the session as its creator (best effort: a session not closed expires).
    pub async fn close(&mut self) {
        let _ = self
            .relay
            .close_session(CloseSessionRequest {
                session_id: self.id.clone(),
                ..Default::default()
            })
            .await;
    }
}

/// A request body and its signature by the coordinator's party key: the same bytes go to
/// every party.
#[derive(Clone)]
pub struct Signed {
    pub body: Vec<u8>,
    pub auth: RequestAuth,
}

/// Signs `body` for `method` ([`cosigner_relay::request::sign`]) at `now_ms`.
pub fn sign_request(
    keys: &PartyKeys,
    method: &str,
    body: &impl prost::Message,
    now_ms: i64,
) -> Signed {
    let body = body.encode_to_vec();
    let auth = cosigner_relay::request::sign(keys, method, &body, now_ms);
    Signed { body, auth }
}

/// One callee's call, by its name.
type Call<T> = (String, JoinHandle<Result<T, String>>);

/// The calls to the parties that take part, running concurrently.
pub struct Calls<T> {
    calls: Vec<Call<T>>,
    failed: mpsc::Receiver<String>,
    fail: mpsc::Sender<String>,
}

impl<T: Send + 'static> Default for Calls<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + 'static> Calls<T> {
    /// No calls yet (a party that joins from a request file calls nobody).
    pub fn new() -> Self {
        let (fail, failed) = mpsc::channel(16);
        Calls {
            calls: Vec::new(),
            failed,
            fail,
        }
    }

    /// One call per callee, each started at once.
    pub fn spawn<C, F, Fut>(callees: Vec<(String, C)>, f: F) -> Self
    where
        F: Fn(C) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
    {
        let mut calls = Self::new();
        for (name, client) in callees {
            let fut = f(client);
            calls.push(name, async move {
                fut.await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| status_text(&s))
            });
        }
        calls
    }

    /// Adds a call (for example this daemon's own part, run in process).
    pub fn push(
        &mut self,
        name: String,
        call: impl Future<Output = Result<T, String>> + Send + 'static,
    ) {
        let fail = self.fail.clone();
        let who = name.clone();
        let handle = tokio::spawn(async move {
            let r = call.await;
            if let Err(e) = &r {
                // Only the first failure matters to `watch`; never block on a full channel.
                let _ = fail.try_send(format!("{who}: {e}"));
            }
            r
        });
        self.calls.push((name, handle));
    }

    /// How many calls are running.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Runs the coordinator's own part while watching the calls: the first callee that
    /// fails ends it, with that callee's error (the caller then aborts the session, so the
    /// other parties stop too).
    pub async fn watch<R, E: From<CoordinatorError>>(
        &mut self,
        part: impl Future<Output = Result<R, E>>,
    ) -> Result<R, E> {
        tokio::select! {
            r = part => r,
            Some(f) = self.failed.recv() => Err(E::from(CoordinatorError::Failed(f))),
        }
    }

    /// Every callee's answer, waiting at most `limit` in all; a call still running then is
    /// stopped and reported as unanswered.
    pub async fn settle(self, limit: Duration) -> Vec<(String, Result<T, String>)> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut out = Vec::with_capacity(self.calls.len());
        for (name, mut handle) in self.calls {
            let r = match tokio::time::timeout_at(deadline, &mut handle).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(format!("the call failed: {e}")),
                Err(_) => {
                    handle.abort();
                    Err(format!("no answer within {} s", limit.as_secs()))
                }
            };
            out.push((name, r));
        }
        out
    }

    /// Every callee's answer; any failure is the error, naming each callee that failed.
    pub async fn collect(self) -> Result<Vec<(String, T)>, CoordinatorError> {
        let mut ok = Vec::new();
        let mut errors = Vec::new();
        for (name, handle) in self.calls {
            match handle.await {
                Ok(Ok(v)) => ok.push((name, v)),
                Ok(Err(e)) => errors.push(format!("{name}: {e}")),
                Err(e) => errors.push(format!("{name}: the call failed: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(ok)
        } else {
            Err(CoordinatorError::Calls(errors.join("; ")))
        }
    }

    /// After the coordinator's own part failed: the callees' errors (waiting at most
    /// `limit`), joined, or None when none failed.
    pub async fn errors(self, limit: Duration) -> Option<String> {
        let errors: Vec<String> = self
            .settle(limit)
            .await
            .into_iter()
            .filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e}")))
            .collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_callee_stops_the_own_part_and_is_named() {
        let mut calls: Calls<u32> = Calls::new();
        calls.push("ok".into(), async { Ok(1) });
        calls.push("bad".into(), async { Err("refused by policy".to_string()) });
        let own: Result<(), CoordinatorError> = calls.watch(std::future::pending()).await;
        assert_eq!(
            own.err().map(|e| e.to_string()).as_deref(),
            Some("a daemon failed: bad: refused by policy")
        );
        let err = calls.collect().await.err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("bad: refused by policy"));
    }

    #[tokio::test]
    async fn settle_stops_a_callee_that_does_not_answer() {
        let mut calls: Calls<u32> = Calls::new();
        calls.push("slow".into(), std::future::pending());
        calls.push("fast".into(), async { Ok(7) });
        let out = calls.settle(Duration::from_millis(50)).await;
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].0, "slow");
        assert!(out[0].1.as_ref().is_err_and(|e| e.contains("no answer")));
        assert_eq!(out[1].1.as_ref().ok(), Some(&7));
    }

    #[tokio::test]
    async fn more_failures_than_the_channel_holds_block_no_call() {
        // The failure channel holds 16; nobody reads it here. A call that blocked on a
        // full channel would never finish, and `collect` would hang.
        let mut calls: Calls<u32> = Calls::new();
        for i in 0..40 {
            calls.push(format!("c{i}"), async move { Err(format!("refused {i}")) });
        }
        let out = tokio::time::timeout(Duration::from_secs(10), calls.collect())
            .await
            .expect("every call finished");
        let err = out.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("c0: refused 0") && err.contains("c39: refused 39"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn watch_returns_the_own_part_when_every_callee_answers() {
        let mut calls: Calls<u32> = Calls::new();
        calls.push("a".into(), async { Ok(1) });
        let own: Result<u8, CoordinatorError> = calls.watch(async { Ok(5) }).await;
        assert_eq!(own.ok(), Some(5));
        assert_eq!(calls.errors(Duration::from_secs(1)).await, None);
    }
}
