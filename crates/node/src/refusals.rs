//! Refused requests, and how many of them a party writes down.
//!
//! A request refused before its ceremony starts (a forged or stale signature, a replayed
//! nonce or session, a requester not allowed, an unknown vault, a caller outside the
//! committee, a payload whose hash is not the expected one, a malformed body, no free slot)
//! is recorded as a refusal with the reason, the TLS identity, the requester it *claims*
//! (unauthenticated when the signature is what failed) and the SHA-256 of the body
//! ([`Refusal`]). Policy denials and everything after admission are recorded by the
//! ceremony itself: the gate marks such a request ([`mark_recorded`]), so it never gets a
//! second entry. A refusal does not count towards a vault's request-rate window.
//!
//! Refusals cost nothing to send, so their records are rate-limited ([`RefusalLimit`]) per
//! caller (an identity the transport authenticates, not the requester a request claims)
//! and over all callers, as token buckets. A refusal over the limit is still answered, only
//! not recorded; the next one recorded says how many were not, so the record shows that a
//! flood happened without keeping an entry per request.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use cosigner_api::v1::{KeygenBody, RequestAuth, ReshareBody, SignBody};
use prost::Message as _;
use sha2::{Digest, Sha256};

use crate::ports::Kind;

tokio::task_local! {
    /// Set once the request has an entry of its own (STARTED or DENIED): from then on its
    /// end is recorded by the ceremony, and a refusal entry would be a second one.
    static ADMITTED: Cell<bool>;
}

/// Marks the current request as recorded by its ceremony (the gate does, once the ledger
/// took its STARTED or DENIED entry). No-op outside [`watch`].
pub fn mark_recorded() {
    let _ = ADMITTED.try_with(|c| c.set(true));
}

/// Runs one request; returns its result and whether its ceremony recorded it (if not, a
/// failure is a refusal to record).
pub async fn watch<T>(request: impl std::future::Future<Output = T>) -> (T, bool) {
    ADMITTED
        .scope(Cell::new(false), async {
            let r = request.await;
            (r, ADMITTED.with(Cell::get))
        })
        .await
}

/// What a refused request says about itself, taken before the ceremony consumes it. It
/// carries neither the nonce nor the session id: those are indexed to refuse replays, and
/// a forged request must not burn a nonce or a session someone else is about to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: Kind,
    /// The caller as the transport authenticated it.
    pub tls_identity: String,
    /// The requester the request names (not authenticated if its signature failed).
    pub requester: Vec<u8>,
    /// The vault it names, if the body decodes and the id is valid.
    pub vault_id: String,
    /// SHA-256 of the body bytes.
    pub payload_digest: Vec<u8>,
}

impl Refusal {
    pub fn new(kind: Kind, tls_identity: &str, body: &[u8], auth: Option<&RequestAuth>) -> Refusal {
        let vault_id = match kind {
            Kind::Keygen => KeygenBody::decode(body).map(|b| b.vault_id).ok(),
            Kind::Sign => SignBody::decode(body).map(|b| b.vault_id).ok(),
            Kind::Reshare => ReshareBody::decode(body).map(|b| b.vault_id).ok(),
            Kind::Resolve => None,
        }
        .filter(|v| cosigner_party::vault_id::check(v).is_ok())
        .unwrap_or_default();
        Refusal {
            kind,
            tls_identity: tls_identity.to_string(),
            requester: auth
                .map(|a| a.requester.clone())
                .filter(|r| r.len() == 32)
                .unwrap_or_default(),
            vault_id,
            payload_digest: Sha256::digest(body).to_vec(),
        }
    }
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

/// The refusal-record limits of one party.
pub struct RefusalLimit {
    buckets: Mutex<Buckets>,
}

impl Default for RefusalLimit {
    fn default() -> Self {
        RefusalLimit {
            buckets: Mutex::new(Buckets {
                callers: HashMap::new(),
                all: Bucket::full(ALL_BURST, Instant::now()),
                dropped: 0,
            }),
        }
    }
}

impl RefusalLimit {
    /// The reason to record for `refusal` at `now`, or None when the limit says not to
    /// write it: printable and bounded (a refusal's text can echo what the caller sent),
    /// and saying how many refusals before it were not written.
    pub fn reason(&self, refusal: &Refusal, error: &str, now: Instant) -> Option<String> {
        let dropped = self.admit(&refusal.tls_identity, now)?;
        let mut reason = cosigner_relay::driver::sanitize(error);
        if dropped > 0 {
            reason.push_str(&format!(
                " ({dropped} refused request(s) before this one were not written: refusal rate limit)"
            ));
        }
        Some(reason)
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
        let r = RefusalLimit::default();
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
    fn a_refusal_names_what_the_request_claims_and_its_reason_is_bounded() {
        let body = prost::Message::encode_to_vec(&SignBody {
            vault_id: "vault-1".into(),
            ..SignBody::default()
        });
        let auth = RequestAuth {
            requester: vec![7; 32],
            ..RequestAuth::default()
        };
        let r = Refusal::new(Kind::Sign, "spiffe://x/party/a", &body, Some(&auth));
        assert_eq!(r.vault_id, "vault-1");
        assert_eq!(r.requester, vec![7; 32]);
        assert_eq!(r.payload_digest, Sha256::digest(&body).to_vec());
        // A body that does not decode, or names no valid vault, records no vault id; a
        // requester of another length is not kept.
        let bad = Refusal::new(
            Kind::Keygen,
            "spiffe://x/party/a",
            b"\xff\xff",
            Some(&RequestAuth {
                requester: vec![1; 3],
                ..RequestAuth::default()
            }),
        );
        assert!(bad.vault_id.is_empty() && bad.requester.is_empty());

        let limit = RefusalLimit::default();
        let t0 = Instant::now();
        let reason = limit.reason(&r, "bad\nline\u{1b}[31m", t0).unwrap();
        assert!(
            !reason.contains('\n') && !reason.contains('\u{1b}'),
            "{reason:?}"
        );
        for _ in 0..PER_CALLER_BURST as usize + 5 {
            limit.reason(&r, "flood", t0);
        }
        // Another caller's next record says how many were not written.
        let other = Refusal {
            tls_identity: "spiffe://x/party/b".into(),
            ..r.clone()
        };
        let next = limit.reason(&other, "after", t0).unwrap();
        assert!(next.contains("6 refused request(s)"), "{next}");
    }

    #[tokio::test]
    async fn only_a_request_its_gate_recorded_is_marked() {
        let ((), recorded) = watch(async {}).await;
        assert!(!recorded);
        let ((), recorded) = watch(async { mark_recorded() }).await;
        assert!(recorded);
        // Outside a watched request, marking does nothing (and does not panic).
        mark_recorded();
    }

    #[test]
    fn many_callers_together_are_held_to_the_global_burst() {
        let r = RefusalLimit::default();
        let t0 = Instant::now();
        let written = (0..10_000)
            .filter(|i| r.admit(&format!("spiffe://x/party/{i}"), t0).is_some())
            .count();
        assert_eq!(written, ALL_BURST as usize);
    }
}
