//! Refused ceremony requests in the history.
//!
//! A request refused before its ceremony starts (a forged or stale signature, a replayed
//! nonce or session, a requester not allowed, an unknown vault, a caller outside the
//! committee, a payload whose hash is not the expected one, a malformed body, no free slot)
//! leaves a `refused` history entry with the reason, the TLS identity, the requester it
//! *claims* (unauthenticated when the signature is what failed) and the SHA-256 of the body.
//! Policy denials and everything after admission are recorded by the ceremony itself.
//!
//! A refused entry carries neither the nonce nor the session id: those are indexed to
//! refuse replays, and a forged request must not be able to burn a nonce or a session that
//! someone else is about to use. It does not count towards a vault's request-rate window.
//!
//! Refusals cost nothing to send, so they are rate-limited: per TLS identity (which mutual
//! TLS authenticates, unlike the claimed requester) and over all callers, as token buckets.
//! A refusal over the limit is still answered and logged at debug level, and counted in
//! `cosigner_refusals_dropped_total`, but not written: a flood cannot fill the disk.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use cosigner_api::v1::{KeygenBody, RequestAuth, ReshareBody, SignBody};
use cosigner_history::Kind;
use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::auth::Caller;

tokio::task_local! {
    /// Set once the request has an entry of its own (STARTED or DENIED): from then on its
    /// end is recorded by the ceremony, and a refusal entry would be a second one.
    static ADMITTED: Cell<bool>;
}

/// Marks the current request as recorded by its ceremony (no-op outside [`Refusals::gate`]).
pub fn mark_recorded() {
    let _ = ADMITTED.try_with(|c| c.set(true));
}

/// Refusal entries one TLS identity may write at once, and per second after that.
const PER_CALLER_BURST: f64 = 30.0;
const PER_CALLER_RATE: f64 = 0.5;
/// The same over every caller together.
const ALL_BURST: f64 = 300.0;
const ALL_RATE: f64 = 5.0;
/// Callers tracked; beyond this, unknown callers share the global bucket only.
const MAX_CALLERS: usize = 4096;

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, burst: f64, rate: f64, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.at = now;
    }
}

struct Buckets {
    callers: HashMap<String, Bucket>,
    all: Bucket,
    /// Refusals not written since the last one that was: the next written entry says so,
    /// so the history shows that a flood happened even though it kept no entry per request.
    dropped: u64,
}

/// What a refused request says about itself, taken before the ceremony consumes it.
pub struct Refused {
    pub kind: Kind,
    pub tls_identity: String,
    /// The requester the request names (not authenticated if its signature failed).
    pub requester: Vec<u8>,
    pub vault_id: String,
    pub payload_digest: Vec<u8>,
}

impl Refused {
    pub fn new(kind: Kind, caller: &Caller, body: &[u8], auth: Option<&RequestAuth>) -> Refused {
        let vault_id = match kind {
            Kind::Keygen => KeygenBody::decode(body).map(|b| b.vault_id).ok(),
            Kind::Sign => SignBody::decode(body).map(|b| b.vault_id).ok(),
            Kind::Reshare | Kind::Refresh => ReshareBody::decode(body).map(|b| b.vault_id).ok(),
            _ => None,
        }
        .filter(|v| cosigner_seal::check_vault_id(v).is_ok())
        .unwrap_or_default();
        Refused {
            kind,
            tls_identity: caller.uri.clone(),
            requester: auth
                .map(|a| a.requester.clone())
                .filter(|r| r.len() == 32)
                .unwrap_or_default(),
            vault_id,
            payload_digest: Sha256::digest(body).to_vec(),
        }
    }
}

pub struct Refusals {
    buckets: Mutex<Buckets>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            buckets: Mutex::new(Buckets {
                callers: HashMap::new(),
                all: Bucket::full(ALL_BURST, Instant::now()),
                dropped: 0,
            }),
        }
    }
}

impl Refusals {
    /// Runs one request; returns its result and whether the ceremony recorded it.
    pub async fn gate<T>(fut: impl std::future::Future<Output = T>) -> (T, bool) {
        ADMITTED
            .scope(Cell::new(false), async {
                let r = fut.await;
                (r, ADMITTED.with(Cell::get))
            })
            .await
    }

    /// Whether a refusal from `caller` may be written now (takes a token if so): with how
    /// many refusals (from any caller) were not written since the last written one.
    pub fn admit(&self, caller: &str, now: Instant) -> Option<u64> {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let ok = Self::take(&mut b, caller, now);
        if ok {
            Some(std::mem::take(&mut b.dropped))
        } else {
            b.dropped = b.dropped.saturating_add(1);
            None
        }
    }

    fn take(b: &mut Buckets, caller: &str, now: Instant) -> bool {
        b.all.refill(ALL_BURST, ALL_RATE, now);
        if b.all.tokens < 1.0 {
            return false;
        }
        if !b.callers.contains_key(caller) && b.callers.len() >= MAX_CALLERS {
            // Forget callers whose buckets are full again (they lose nothing by it).
            b.callers.retain(|_, x| {
                x.refill(PER_CALLER_BURST, PER_CALLER_RATE, now);
                x.tokens < PER_CALLER_BURST
            });
        }
        if b.callers.len() >= MAX_CALLERS && !b.callers.contains_key(caller) {
            b.all.tokens -= 1.0;
            return true;
        }
        let mine = b
            .callers
            .entry(caller.to_string())
            .or_insert_with(|| Bucket::full(PER_CALLER_BURST, now));
        mine.refill(PER_CALLER_BURST, PER_CALLER_RATE, now);
        if mine.tokens < 1.0 {
            return false;
        }
        mine.tokens -= 1.0;
        b.all.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_caller_is_held_to_its_burst_then_its_rate() {
        let r = Refusals::default();
        let t0 = Instant::now();
        let written = (0..100)
            .filter(|_| r.admit("spiffe://x/party/a", t0).is_some())
            .count();
        assert_eq!(written, PER_CALLER_BURST as usize);
        // Another caller is not held back by the first one's flood.
        // The first written after the flood says how many were not.
        assert_eq!(
            r.admit("spiffe://x/party/b", t0),
            Some(100 - PER_CALLER_BURST as u64)
        );
        assert_eq!(r.admit("spiffe://x/party/b", t0), Some(0));
        // Four seconds later the first has earned two more.
        let t1 = t0 + Duration::from_secs(4);
        let more = (0..10)
            .filter(|_| r.admit("spiffe://x/party/a", t1).is_some())
            .count();
        assert_eq!(more, 2);
    }

    #[test]
    fn many_callers_together_are_held_to_the_global_burst() {
        let r = Refusals::default();
        let t0 = Instant::now();
        let written = (0..10_000)
            .filter(|i| r.admit(&format!("spiffe://x/party/{i}"), t0).is_some())
            .count();
        assert_eq!(written, ALL_BURST as usize);
    }
}
