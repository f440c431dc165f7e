//! The one wire message of every ceremony. A transport only routes these bytes: it reads
//! `to` (one party, or every other participant for a broadcast) and nothing else.
//!
//! Encoding: one version byte, then the postcard encoding of [`Message`]. Bodies are
//! postcard encodings of each ceremony's round types; point-to-point bodies can hold secret
//! polynomial fragments, so they are zeroized when the message is dropped (the transport is
//! expected to encrypt them in flight).

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::error::TssError;
use crate::party::PartyId;
use crate::session::{CeremonyKind, SessionId};

/// Version of the message encoding. Decoding refuses any other value.
pub const WIRE_VERSION: u8 = 1;

/// Largest message accepted by [`Message::decode`] (a DKG round-3 message to one party is
/// about 50 KB).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub session: SessionId,
    pub kind: CeremonyKind,
    /// The sender's epoch for the vault, so a stale share is reported as such.
    pub epoch: u64,
    pub round: u8,
    pub from: PartyId,
    /// `None`: a broadcast to every other participant.
    pub to: Option<PartyId>,
    /// Digests of the previous round's broadcasts as the sender received them, by origin:
    /// receivers compare them with their own to detect a party that broadcast different
    /// things to different parties.
    pub echo: Vec<(PartyId, [u8; 32])>,
    /// As serde bytes: one length and a copy, not a sequence of single bytes (which made
    /// encoding a 50 KB message cost as much as a field multiplication per byte).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl Drop for Message {
    fn drop(&mut self) {
        self.body.zeroize();
    }
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("kind", &self.kind)
            .field("round", &self.round)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Message {
    pub fn is_broadcast(&self) -> bool {
        self.to.is_none()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![WIRE_VERSION];
        // Serialising plain data into a Vec cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, TssError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(TssError::Undecodable(format!(
                "{} bytes; at most {MAX_MESSAGE_BYTES}",
                bytes.len()
            )));
        }
        match bytes.split_first() {
            None => Err(TssError::Undecodable("empty message".into())),
            Some((&WIRE_VERSION, rest)) => {
                let (msg, tail): (Message, &[u8]) = postcard::take_from_bytes(rest)
                    .map_err(|e| TssError::Undecodable(e.to_string()))?;
                if !tail.is_empty() {
                    return Err(TssError::Undecodable(format!(
                        "{} trailing bytes",
                        tail.len()
                    )));
                }
                Ok(msg)
            }
            Some((v, _)) => Err(TssError::Undecodable(format!(
                "wire version {v}; this engine speaks {WIRE_VERSION}"
            ))),
        }
    }

    /// Decodes the body as `T`, naming the sender on failure. Trailing bytes are refused:
    /// a body means one thing, and padding cannot inflate what a blame must forward.
    pub(crate) fn body<T: serde::de::DeserializeOwned>(&self) -> Result<T, TssError> {
        let malformed = |detail: String| TssError::Malformed {
            party: self.from,
            detail: format!("round {} body: {detail}", self.round),
        };
        let (v, rest) =
            postcard::take_from_bytes(&self.body).map_err(|e| malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(malformed(format!("{} trailing bytes", rest.len())));
        }
        Ok(v)
    }
}

/// Encodes a round body.
pub(crate) fn encode_body<T: Serialize>(body: &T) -> Vec<u8> {
    postcard::to_allocvec(body).unwrap_or_default()
}
