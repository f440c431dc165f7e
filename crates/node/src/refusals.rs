//! How many refused requests a party writes down: refusals cost nothing to send, so their
//! records are rate-limited per caller (an identity the transport authenticates, not the
//! requester a request claims) and over all callers, as token buckets. A refusal over the
//! limit is still answered, only not recorded; the next one recorded says how many were
//! not, so the record shows that a flood happened without keeping an entry per request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

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
    fn many_callers_together_are_held_to_the_global_burst() {
        let r = RefusalLimit::default();
        let t0 = Instant::now();
        let written = (0..10_000)
            .filter(|i| r.admit(&format!("spiffe://x/party/{i}"), t0).is_some())
            .count();
        assert_eq!(written, ALL_BURST as usize);
    }
}
