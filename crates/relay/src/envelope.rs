//! Signed and encrypted envelopes: what parties post to the relay.
//!
//! The relay is not trusted, so every envelope is signed by its sender's identity key over
//! everything that routes it (version, session, ceremony context, sender, recipient, round,
//! counter, the full kind) and its payload, and point-to-point payloads are encrypted to the recipient.
//! Encryption: X25519 between the two parties' keys, HKDF-SHA256 with the session id as salt
//! and, in the info, the *ceremony context*, both ids and the per-sender counter, which gives
//! every message its own key; then ChaCha20-Poly1305 with the counter as nonce and the
//! routing header as associated data. The payload starts with a commitment to that message
//! key (SHA-256 under a tag), and the signature covers commitment and ciphertext, so a
//! receiver checks who sent it before it decrypts anything.
//!
//! One key per message, committed to by the sender's signature, is what makes a blame
//! checkable ([`crate::blame`]): a receiver that accuses a sender reveals the keys of the
//! accused's messages to it, and anyone can then check that the accused signed exactly those
//! bytes and what they say, without learning the long-term X25519 secret or any other
//! message. ChaCha20-Poly1305 alone does not commit to its key (a sender could craft a
//! ciphertext that opens under two keys); the signed commitment removes that ambiguity.
//!
//! The ceremony context is a hash of the participant list and of a fresh random value that
//! every participant announced in its signed HELLO (see [`crate::driver`]). Counters restart
//! at 1 in every ceremony, so without it a relay session id used twice (after a restart, or
//! by a requester who reuses one) would reuse (key, nonce) pairs; with it, each ceremony has
//! its own keys even on the same session id, as long as one participant's value is fresh.
//! Nothing is encrypted before the context exists: point-to-point envelopes need it. Every
//! envelope sent once it exists also carries it in its signed header, so a protocol message
//! names its ceremony, not only its relay session: evidence against a sender
//! ([`crate::blame`]) can be checked to come from one ceremony.
//!
//! [`Opener`] is the receiving side for one session: it refuses foreign sessions, unknown
//! senders, bad signatures, envelopes for someone else, and any counter that is not larger
//! than the last one seen from that sender (a replay, or a relay that reorders).

use std::collections::{BTreeMap, HashMap};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use cosigner_api::v1::{Envelope, EnvelopeKind};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use x25519_dalek::PublicKey as XPublic;
use zeroize::Zeroizing;

use crate::keys::{Member, PartyKeys, short, verify};

pub const ENVELOPE_VERSION: u32 = 4;
const SIGN_TAG: &[u8] = b"cosigner/v1/envelope";
const KDF_INFO: &[u8] = b"cosigner/v3/p2p";
const KEY_COMMIT_TAG: &[u8] = b"cosigner/v3/key-commitment";
/// Length of the key commitment that starts every point-to-point payload.
pub const KEY_COMMITMENT_LEN: usize = 32;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    #[error("envelope version {0}; this build speaks {ENVELOPE_VERSION}")]
    Version(u32),
    #[error("envelope from {sender} belongs to another session")]
    WrongSession { sender: String },
    #[error("envelope from {sender}, who is not a participant of this session")]
    UnknownSender { sender: String },
    #[error("envelope from {sender} has a bad signature (altered in transit, or forged)")]
    BadSignature { sender: String },
    #[error(
        "envelope from {sender} has counter {counter}, not above the last one seen ({last}): a replayed or reordered message"
    )]
    Replay {
        sender: String,
        counter: u64,
        last: u64,
    },
    #[error("envelope from {sender} is addressed to another party")]
    NotForMe { sender: String },
    #[error("envelope from {sender} cannot be decrypted (altered, or not encrypted to this party)")]
    Decrypt { sender: String },
    #[error("envelope from {sender}: {detail}")]
    Malformed { sender: String, detail: String },
    #[error(
        "a point-to-point envelope before every participant's HELLO: there are no ceremony keys yet"
    )]
    NoContext,
    #[error(
        "envelope from {sender} names another ceremony (it was shown other HELLOs than this party, or the message is from an earlier ceremony on this session id)"
    )]
    WrongContext { sender: String },
}

/// The bytes the sender signs (and, without the payload, the AEAD's associated data): the
/// version and the kind as sent (all 32 bits), so neither can be changed in transit.
#[allow(clippy::too_many_arguments)]
fn header(
    version: u32,
    session: &[u8],
    sender: &[u8],
    recipient: &[u8],
    round: u32,
    counter: u64,
    kind: i32,
    context: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGN_TAG.len() + 5 + session.len() + 64 + 52);
    out.extend_from_slice(SIGN_TAG);
    out.push(0);
    out.extend_from_slice(&version.to_be_bytes());
    // Lengths make the concatenation unambiguous (session ids vary from 16 to 64 bytes).
    out.push(session.len() as u8);
    out.extend_from_slice(session);
    out.push(sender.len() as u8);
    out.extend_from_slice(sender);
    out.push(recipient.len() as u8);
    out.extend_from_slice(recipient);
    out.extend_from_slice(&round.to_be_bytes());
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.push(context.len() as u8);
    out.extend_from_slice(context);
    out
}

/// The header of an envelope as it arrived.
fn header_of(env: &Envelope) -> Vec<u8> {
    header(
        env.version,
        &env.session_id,
        &env.sender,
        &env.recipient,
        env.round,
        env.counter,
        env.kind,
        &env.context,
    )
}

/// What the signature covers: the header, then the payload.
pub fn signed_bytes(env: &Envelope) -> Vec<u8> {
    let mut out = header_of(env);
    out.extend_from_slice(&env.payload);
    out
}

/// A ceremony context is absent or 32 bytes: any other length is refused before the
/// signature is checked (a one-byte length prefix must not let bytes move between the
/// context and the payload).
fn context_len_ok(env: &Envelope) -> bool {
    matches!(env.context.len(), 0 | 32)
}

/// Checks the sender's signature (the relay does this too, to refuse junk early).
pub fn signature_ok(env: &Envelope) -> bool {
    if !context_len_ok(env) {
        return false;
    }
    match <[u8; 32]>::try_from(env.sender.as_slice()) {
        Ok(sender) => verify(&sender, &signed_bytes(env), &env.signature),
        Err(_) => false,
    }
}

/// The key of one point-to-point message (`counter` from `sender` to `recipient`).
fn message_key(
    keys: &PartyKeys,
    their_key: &[u8; 32],
    session: &[u8],
    context: &[u8; 32],
    sender: &[u8; 32],
    recipient: &[u8; 32],
    counter: u64,
) -> Option<Zeroizing<[u8; 32]>> {
    let shared = keys
        .encryption_secret()
        .diffie_hellman(&XPublic::from(*their_key));
    if !shared.was_contributory() {
        return None; // a low-order public key: refuse rather than encrypt under a known key
    }
    let hk = Hkdf::<Sha256>::new(Some(session), shared.as_bytes());
    let mut info = Vec::with_capacity(KDF_INFO.len() + 104);
    info.extend_from_slice(KDF_INFO);
    info.extend_from_slice(context);
    info.extend_from_slice(sender);
    info.extend_from_slice(recipient);
    info.extend_from_slice(&counter.to_be_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    hk.expand(&info, key.as_mut()).ok()?;
    Some(key)
}

/// What a sender signs in place of the key: SHA-256 over a tag and the message key.
pub fn key_commitment(key: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(KEY_COMMIT_TAG);
    h.update(key);
    h.finalize().into()
}

/// Opens a point-to-point payload with its message key: the key must match the commitment
/// the sender signed, and the ciphertext must authenticate under it and `env`'s header.
/// Used by the receiver and, with a revealed key, by whoever checks a blame.
pub fn open_with_key(env: &Envelope, key: &[u8; 32]) -> Option<Zeroizing<Vec<u8>>> {
    if env.payload.len() < KEY_COMMITMENT_LEN {
        return None;
    }
    let (commitment, ciphertext) = env.payload.split_at(KEY_COMMITMENT_LEN);
    if commitment != key_commitment(key).as_slice() {
        return None;
    }
    let aad = header_of(env);
    ChaCha20Poly1305::new(Key::from_slice(key))
        .decrypt(
            &nonce(env.counter),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    *Nonce::from_slice(&n)
}

/// Builds one signed envelope; encrypts the payload when it has a recipient, under keys
/// derived with the ceremony `context` (required for point-to-point envelopes).
#[allow(clippy::too_many_arguments)]
pub fn seal(
    keys: &PartyKeys,
    session: &[u8],
    context: Option<&[u8; 32]>,
    recipient: Option<&Member>,
    round: u32,
    counter: u64,
    kind: EnvelopeKind,
    plaintext: &[u8],
) -> Result<Envelope, EnvelopeError> {
    let me = keys.party_id();
    let recipient_id = recipient.map(|m| m.id.to_vec()).unwrap_or_default();
    let kind = kind as i32;
    let context_bytes = context.map(|c| c.to_vec()).unwrap_or_default();
    let payload = match recipient {
        None => plaintext.to_vec(),
        Some(m) => {
            let context = context.ok_or(EnvelopeError::NoContext)?;
            let key = message_key(
                keys,
                &m.encryption_key,
                session,
                context,
                &me,
                &m.id,
                counter,
            )
            .ok_or_else(|| EnvelopeError::Malformed {
                sender: short(&m.id),
                detail: "its encryption key is not a usable X25519 key".into(),
            })?;
            let aad = header(
                ENVELOPE_VERSION,
                session,
                &me,
                &recipient_id,
                round,
                counter,
                kind,
                &context_bytes,
            );
            let ciphertext = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
                .encrypt(
                    &nonce(counter),
                    Payload {
                        msg: plaintext,
                        aad: &aad,
                    },
                )
                .map_err(|_| EnvelopeError::Malformed {
                    sender: short(&me),
                    detail: "encryption failed".into(),
                })?;
            let mut out = Vec::with_capacity(KEY_COMMITMENT_LEN + ciphertext.len());
            out.extend_from_slice(&key_commitment(&key));
            out.extend_from_slice(&ciphertext);
            out
        }
    };
    let mut env = Envelope {
        version: ENVELOPE_VERSION,
        session_id: session.to_vec(),
        sender: me.to_vec(),
        recipient: recipient_id,
        round,
        counter,
        kind,
        payload,
        signature: Vec::new(),
        context: context_bytes,
    };
    env.signature = keys.sign(&signed_bytes(&env)).to_vec();
    Ok(env)
}

/// A verified (and decrypted) envelope.
#[derive(Debug)]
pub struct Opened {
    pub sender: [u8; 32],
    pub kind: EnvelopeKind,
    pub round: u32,
    pub broadcast: bool,
    pub payload: Zeroizing<Vec<u8>>,
    /// Point-to-point: the message key, revealed only as evidence against the sender.
    pub key: Option<Zeroizing<[u8; 32]>>,
}

/// The receiving side of one session.
pub struct Opener {
    keys: PartyKeys,
    session: Vec<u8>,
    participants: BTreeMap<[u8; 32], Member>,
    last: HashMap<[u8; 32], u64>,
    context: Option<[u8; 32]>,
}

impl Opener {
    pub fn new(keys: PartyKeys, session: &[u8], participants: &[Member]) -> Self {
        Opener {
            keys,
            session: session.to_vec(),
            participants: participants.iter().map(|m| (m.id, m.clone())).collect(),
            last: HashMap::new(),
            context: None,
        }
    }

    /// The ceremony context (from every participant's HELLO): point-to-point envelopes can
    /// be opened from now on.
    pub fn set_context(&mut self, context: [u8; 32]) {
        self.context = Some(context);
    }

    /// "name (0123abcd...)" for a known participant, the short id otherwise.
    fn who(&self, id: &[u8]) -> String {
        match <[u8; 32]>::try_from(id)
            .ok()
            .and_then(|i| self.participants.get(&i))
        {
            Some(m) if !m.name.is_empty() => format!("{} ({})", m.name, short(id)),
            _ => short(id),
        }
    }

    /// A HELLO names no context (it comes before one exists); protocol messages and READYs
    /// name this ceremony's; an ABORT names it, or none when sent before every HELLO.
    fn check_context(
        &self,
        env: &Envelope,
        kind: EnvelopeKind,
        sender: &str,
    ) -> Result<(), EnvelopeError> {
        let malformed = |detail: &str| EnvelopeError::Malformed {
            sender: sender.to_string(),
            detail: detail.to_string(),
        };
        if env.context.is_empty() {
            return match kind {
                EnvelopeKind::Hello | EnvelopeKind::Abort => Ok(()),
                _ => Err(malformed("it names no ceremony context")),
            };
        }
        if kind == EnvelopeKind::Hello {
            return Err(malformed("a HELLO that names a ceremony context"));
        }
        match &self.context {
            Some(c) if c.as_slice() == env.context.as_slice() => Ok(()),
            Some(_) => Err(EnvelopeError::WrongContext {
                sender: sender.to_string(),
            }),
            // An ABORT from a party that is ahead: its context cannot be checked yet, and it
            // only stops the ceremony.
            None if kind == EnvelopeKind::Abort => Ok(()),
            None => Err(EnvelopeError::NoContext),
        }
    }

    pub fn open(&mut self, env: &Envelope) -> Result<Opened, EnvelopeError> {
        let sender_short = self.who(&env.sender);
        if env.version != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version(env.version));
        }
        let sender: [u8; 32] =
            env.sender
                .as_slice()
                .try_into()
                .map_err(|_| EnvelopeError::Malformed {
                    sender: sender_short.clone(),
                    detail: "sender is not 32 bytes".into(),
                })?;
        let Some(member) = self.participants.get(&sender) else {
            return Err(EnvelopeError::UnknownSender {
                sender: sender_short,
            });
        };
        if env.session_id != self.session {
            return Err(EnvelopeError::WrongSession {
                sender: sender_short,
            });
        }
        if !context_len_ok(env) {
            return Err(EnvelopeError::Malformed {
                sender: sender_short,
                detail: format!(
                    "a ceremony context of {} bytes (0 or 32)",
                    env.context.len()
                ),
            });
        }
        if !verify(&sender, &signed_bytes(env), &env.signature) {
            return Err(EnvelopeError::BadSignature {
                sender: sender_short,
            });
        }
        let me = self.keys.party_id();
        let broadcast = env.recipient.is_empty();
        if !broadcast && env.recipient.as_slice() != me.as_slice() {
            return Err(EnvelopeError::NotForMe {
                sender: sender_short,
            });
        }
        let kind = EnvelopeKind::try_from(env.kind)
            .ok()
            .filter(|k| *k != EnvelopeKind::Unspecified)
            .ok_or_else(|| EnvelopeError::Malformed {
                sender: sender_short.clone(),
                detail: format!("unknown envelope kind {}", env.kind),
            })?;
        self.check_context(env, kind, &sender_short)?;
        let last = self.last.get(&sender).copied().unwrap_or(0);
        if env.counter <= last {
            return Err(EnvelopeError::Replay {
                sender: sender_short,
                counter: env.counter,
                last,
            });
        }
        let (payload, key) = if broadcast {
            (Zeroizing::new(env.payload.clone()), None)
        } else {
            let context = self.context.as_ref().ok_or(EnvelopeError::NoContext)?;
            let key = message_key(
                &self.keys,
                &member.encryption_key,
                &self.session,
                context,
                &sender,
                &me,
                env.counter,
            )
            .ok_or_else(|| EnvelopeError::Decrypt {
                sender: sender_short.clone(),
            })?;
            let payload = open_with_key(env, &key).ok_or_else(|| EnvelopeError::Decrypt {
                sender: sender_short.clone(),
            })?;
            (payload, Some(key))
        };
        self.last.insert(sender, env.counter);
        Ok(Opened {
            sender,
            kind,
            round: env.round,
            broadcast,
            payload,
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: [u8; 32] = [7; 32];

    fn setup() -> (PartyKeys, PartyKeys, Vec<Member>) {
        let a = PartyKeys::generate();
        let b = PartyKeys::generate();
        let members = vec![a.member("a"), b.member("b")];
        (a, b, members)
    }

    fn opener(k: &PartyKeys, s: &[u8], members: &[Member]) -> Opener {
        let mut o = Opener::new(k.clone(), s, members);
        o.set_context(CTX);
        o
    }

    #[test]
    fn point_to_point_round_trip_and_confidentiality() {
        let (a, b, members) = setup();
        let env = seal(
            &a,
            b"s1s1s1s1s1s1s1s1",
            Some(&CTX),
            Some(&members[1]),
            2,
            1,
            EnvelopeKind::Protocol,
            b"secret fragment",
        )
        .unwrap();
        assert!(!env.payload.windows(6).any(|w| w == b"secret"));
        let mut ob = opener(&b, b"s1s1s1s1s1s1s1s1", &members);
        let o = ob.open(&env).unwrap();
        assert_eq!(o.payload.as_slice(), b"secret fragment");
        assert_eq!(o.sender, a.party_id());
        // Replays and other sessions are refused, naming the sender.
        assert!(matches!(ob.open(&env), Err(EnvelopeError::Replay { .. })));
        let mut other = opener(&b, b"s2s2s2s2s2s2s2s2", &members);
        assert!(matches!(
            other.open(&env),
            Err(EnvelopeError::WrongSession { .. })
        ));
    }

    #[test]
    fn alterations_are_caught() {
        let (a, b, members) = setup();
        let s = b"sessionsession16";
        let base = seal(
            &a,
            s,
            Some(&CTX),
            Some(&members[1]),
            2,
            5,
            EnvelopeKind::Protocol,
            b"x",
        )
        .unwrap();
        let cases: [fn(&mut Envelope); 9] = [
            |e| e.payload[0] ^= 1,
            |e| e.round = 3,
            |e| e.counter = 6,
            |e| e.kind = EnvelopeKind::Abort as i32,
            // A kind that differs only above the low byte (it used to be signed as one byte).
            |e| e.kind += 256,
            |e| e.signature[0] ^= 1,
            |e| e.recipient = vec![],
            // The ceremony context is signed: a message cannot be moved to another ceremony
            // on the same session id, nor stripped of its context.
            |e| e.context = vec![9; 32],
            |e| e.context.clear(),
        ];
        for (i, f) in cases.iter().enumerate() {
            let mut e = base.clone();
            f(&mut e);
            let mut ob = opener(&b, s, &members);
            let err = ob.open(&e).unwrap_err();
            assert!(
                matches!(err, EnvelopeError::BadSignature { .. }),
                "case {i}: {err}"
            );
        }
        // The version is signed too: an envelope relabelled fails the signature, and any
        // other version is refused by number first.
        assert!(signature_ok(&base));
        let mut relabelled = base.clone();
        relabelled.version = 2;
        assert!(!signature_ok(&relabelled));
        assert_eq!(
            opener(&b, s, &members).open(&relabelled).unwrap_err(),
            EnvelopeError::Version(2)
        );
        // A third party cannot read it even with a valid-looking route.
        let c = PartyKeys::generate();
        let mut all = members.clone();
        all.push(c.member("c"));
        let mut oc = opener(&c, s, &all);
        assert!(matches!(
            oc.open(&base),
            Err(EnvelopeError::NotForMe { .. })
        ));
    }

    #[test]
    fn each_ceremony_context_has_its_own_keys() {
        // Same parties, same session id, same counter: only the context differs (two
        // ceremonies on one reused relay session id). The ciphertexts differ, each names its
        // ceremony, and neither opens under the other's context, even relabelled.
        let (a, b, members) = setup();
        let s = b"reusedsession-16";
        let seal_with = |ctx: [u8; 32]| {
            seal(
                &a,
                s,
                Some(&ctx),
                Some(&members[1]),
                1,
                1,
                EnvelopeKind::Protocol,
                b"fragment",
            )
            .unwrap()
        };
        let one = seal_with([1; 32]);
        let two = seal_with([2; 32]);
        assert_ne!(one.payload, two.payload);
        assert_eq!(one.context, vec![1; 32]);
        let mut o = Opener::new(b.clone(), s, &members);
        o.set_context([1; 32]);
        assert!(matches!(
            o.open(&two),
            Err(EnvelopeError::WrongContext { .. })
        ));
        let mut relabelled = two.clone();
        relabelled.context = vec![1; 32];
        assert!(matches!(
            o.open(&relabelled),
            Err(EnvelopeError::BadSignature { .. })
        ));
        let mut o = Opener::new(b, s, &members);
        o.set_context([1; 32]);
        assert_eq!(o.open(&one).unwrap().payload.as_slice(), b"fragment");
    }

    #[test]
    fn nothing_is_encrypted_or_opened_without_a_context() {
        let (a, b, members) = setup();
        let s = b"sessionsession16";
        assert_eq!(
            seal(
                &a,
                s,
                None,
                Some(&members[1]),
                1,
                1,
                EnvelopeKind::Protocol,
                b"x"
            )
            .unwrap_err(),
            EnvelopeError::NoContext
        );
        let env = seal(
            &a,
            s,
            Some(&CTX),
            Some(&members[1]),
            1,
            1,
            EnvelopeKind::Protocol,
            b"x",
        )
        .unwrap();
        let mut o = Opener::new(b, s, &members);
        assert_eq!(o.open(&env).unwrap_err(), EnvelopeError::NoContext);
    }

    #[test]
    fn only_hello_and_an_early_abort_go_without_a_context() {
        let (a, b, members) = setup();
        let s = b"sessionsession16";
        let bare = |kind| seal(&a, s, None, None, 1, 1, kind, b"x").unwrap();
        let named = |kind| seal(&a, s, Some(&CTX), None, 1, 1, kind, b"x").unwrap();
        for kind in [EnvelopeKind::Protocol, EnvelopeKind::Ready] {
            let err = opener(&b, s, &members).open(&bare(kind)).unwrap_err();
            assert!(
                err.to_string().contains("names no ceremony context"),
                "{err}"
            );
            assert!(opener(&b, s, &members).open(&named(kind)).is_ok());
        }
        let err = opener(&b, s, &members)
            .open(&named(EnvelopeKind::Hello))
            .unwrap_err();
        assert!(err.to_string().contains("HELLO that names"), "{err}");
        for env in [bare(EnvelopeKind::Abort), named(EnvelopeKind::Abort)] {
            assert!(opener(&b, s, &members).open(&env).is_ok());
            // Before this party has a context, an ABORT is opened whatever it names.
            assert!(Opener::new(b.clone(), s, &members).open(&env).is_ok());
        }
    }

    #[test]
    fn a_context_of_another_length_is_refused_before_the_signature() {
        // A one-byte length prefix: a relay that moved 256 payload bytes into the context
        // would keep the signed bytes the same. Only 0 or 32 bytes are read at all.
        let (a, b, members) = setup();
        let s = b"sessionsession16";
        let mut env = seal(
            &a,
            s,
            Some(&CTX),
            None,
            1,
            1,
            EnvelopeKind::Protocol,
            &[9; 300],
        )
        .unwrap();
        let mut moved = env.context.clone();
        moved.extend(env.payload.drain(..256));
        env.context = moved;
        assert!(!signature_ok(&env));
        let err = opener(&b, s, &members).open(&env).unwrap_err();
        assert!(
            err.to_string().contains("ceremony context of 288 bytes"),
            "{err}"
        );
    }

    #[test]
    fn strangers_are_refused() {
        let (_, b, members) = setup();
        let stranger = PartyKeys::generate();
        let env = seal(
            &stranger,
            b"sessionsession16",
            None,
            None,
            1,
            1,
            EnvelopeKind::Hello,
            b"",
        )
        .unwrap();
        let mut ob = opener(&b, b"sessionsession16", &members);
        assert!(matches!(
            ob.open(&env),
            Err(EnvelopeError::UnknownSender { .. })
        ));
    }
}
