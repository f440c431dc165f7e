//! Request authentication: a ceremony request is signed by the party that asks for it, over
//! the exact body bytes it carries (see `RequestAuth` in types.proto), so it is
//! authenticated end to end and not only by the TLS hop.

use cosigner_api::v1::RequestAuth;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::keys::{PartyKeys, short, verify};

const TAG: &[u8] = b"cosigner/v1/request";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("the request carries no auth (RequestAuth is required)")]
    Missing,
    #[error("auth.{field}: {problem}")]
    Field {
        field: &'static str,
        problem: String,
    },
    #[error("the request's signature by {requester} does not verify over this method and body")]
    BadSignature { requester: String },
    #[error(
        "the request's timestamp is {skew_ms} ms away from this daemon's clock; at most {max_ms} ms is allowed"
    )]
    Clock { skew_ms: i64, max_ms: i64 },
}

/// The signed bytes: tag, method, SHA-256 of the body, timestamp, nonce.
pub fn signed_bytes(method: &str, body: &[u8], timestamp_ms: i64, nonce: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TAG.len() + method.len() + 2 + 32 + 8 + nonce.len());
    out.extend_from_slice(TAG);
    out.push(0);
    out.extend_from_slice(method.as_bytes());
    out.push(0);
    out.extend_from_slice(&Sha256::digest(body));
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(nonce);
    out
}

/// Signs a request body now, with a fresh 32-byte nonce.
pub fn sign(keys: &PartyKeys, method: &str, body: &[u8], now_ms: i64) -> RequestAuth {
    let mut nonce = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let signature = keys
        .sign(&signed_bytes(method, body, now_ms, &nonce))
        .to_vec();
    RequestAuth {
        requester: keys.party_id().to_vec(),
        timestamp_ms: now_ms,
        nonce,
        signature,
    }
}

/// Checks shape, clock skew and signature; returns the requester. The caller still checks
/// that the requester may ask, and that the nonce is new.
pub fn check(
    auth: Option<&RequestAuth>,
    method: &str,
    body: &[u8],
    now_ms: i64,
    max_skew_ms: i64,
) -> Result<[u8; 32], RequestError> {
    let auth = auth.ok_or(RequestError::Missing)?;
    let requester: [u8; 32] =
        auth.requester
            .as_slice()
            .try_into()
            .map_err(|_| RequestError::Field {
                field: "requester",
                problem: format!("{} bytes; a party id is 32", auth.requester.len()),
            })?;
    if !(16..=32).contains(&auth.nonce.len()) {
        return Err(RequestError::Field {
            field: "nonce",
            problem: format!("{} bytes; 16 to 32 are required", auth.nonce.len()),
        });
    }
    if auth.signature.len() != 64 {
        return Err(RequestError::Field {
            field: "signature",
            problem: format!("{} bytes; an Ed25519 signature is 64", auth.signature.len()),
        });
    }
    let skew = now_ms.saturating_sub(auth.timestamp_ms).saturating_abs();
    if skew > max_skew_ms {
        return Err(RequestError::Clock {
            skew_ms: skew,
            max_ms: max_skew_ms,
        });
    }
    if !verify(
        &requester,
        &signed_bytes(method, body, auth.timestamp_ms, &auth.nonce),
        &auth.signature,
    ) {
        return Err(RequestError::BadSignature {
            requester: short(&requester),
        });
    }
    Ok(requester)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_requests_verify_and_alterations_do_not() {
        let k = PartyKeys::generate();
        let a = sign(&k, "/cosigner.v1.Cosigner/Sign", b"body", 1_000_000);
        assert_eq!(
            check(
                Some(&a),
                "/cosigner.v1.Cosigner/Sign",
                b"body",
                1_000_100,
                300_000
            ),
            Ok(k.party_id())
        );
        assert!(matches!(
            check(
                Some(&a),
                "/cosigner.v1.Cosigner/Keygen",
                b"body",
                1_000_100,
                300_000
            ),
            Err(RequestError::BadSignature { .. })
        ));
        assert!(matches!(
            check(
                Some(&a),
                "/cosigner.v1.Cosigner/Sign",
                b"bodz",
                1_000_100,
                300_000
            ),
            Err(RequestError::BadSignature { .. })
        ));
        assert!(matches!(
            check(
                Some(&a),
                "/cosigner.v1.Cosigner/Sign",
                b"body",
                2_000_000,
                300_000
            ),
            Err(RequestError::Clock { .. })
        ));
        assert_eq!(check(None, "/x", b"", 0, 1), Err(RequestError::Missing));
    }
}
