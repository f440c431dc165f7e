//! What every ceremony request starts with: the requester's signature over the exact body
//! bytes (and the clock), then the body decoded with a vault id that may name files.

use cosigner_api::v1::RequestAuth;
use prost::Message;

use crate::error::{Code, NodeError};

/// The signed method name of a request for a party's record of a vault (endorsements,
/// commit reports, the peer check of a restored backup).
pub const GET_VAULT_RECORD: &str = "/cosigner.v1.Cosigner/GetVaultRecord";

/// A request whose signature holds: who signed it, and its body.
#[derive(Debug)]
pub struct Parsed<B> {
    pub requester: [u8; 32],
    pub body: B,
}

/// The request signature for `method` over `body`, within `max_skew_ms` of `now_ms`; the
/// requester it names.
pub fn requester(
    auth: Option<&RequestAuth>,
    method: &str,
    body: &[u8],
    now_ms: i64,
    max_skew_ms: i64,
) -> Result<[u8; 32], NodeError> {
    cosigner_party::request::check(auth, method, body, now_ms, max_skew_ms)
        .map_err(|e| NodeError::new(Code::Unauthenticated, e.to_string()))
}

/// The request's nonce (empty without a signature), as the gate records it.
pub fn nonce(auth: Option<&RequestAuth>) -> &[u8] {
    auth.map(|a| a.nonce.as_slice()).unwrap_or(&[])
}

/// A body of type `B` (`what` names it in the error), whose vault id (`vault_id`) is valid.
pub fn body<B: Message + Default>(
    bytes: &[u8],
    what: &str,
    vault_id: impl Fn(&B) -> &str,
) -> Result<B, NodeError> {
    let body =
        B::decode(bytes).map_err(|e| NodeError::invalid("body", format!("not a {what} ({e})")))?;
    cosigner_party::vault_id::check(vault_id(&body))
        .map_err(|e| NodeError::invalid("vault_id", e))?;
    Ok(body)
}
