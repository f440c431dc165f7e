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
//! Refusals cost nothing to send, so they are rate-limited ([`cosigner_node::refusals`]):
//! per TLS identity (which mutual TLS authenticates, unlike the claimed requester) and over
//! all callers. A refusal over the limit is still answered and logged at debug level, and
//! counted in `cosigner_refusals_dropped_total`, but not written: a flood cannot fill the
//! disk.

use std::cell::Cell;
use std::time::Instant;

use cosigner_api::v1::{KeygenBody, RequestAuth, ReshareBody, SignBody};
use cosigner_history::Kind;
use cosigner_node::refusals::RefusalLimit;
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

/// Refused requests: the rate limit of their records ([`cosigner_node::refusals`]).
#[derive(Default)]
pub struct Refusals {
    limit: RefusalLimit,
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

    /// Whether a refusal from `caller` may be written now, with how many were not since
    /// the last one that was.
    pub fn admit(&self, caller: &str, now: Instant) -> Option<u64> {
        self.limit.admit(caller, now)
    }
}
