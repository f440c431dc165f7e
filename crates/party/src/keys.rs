//! A party's two keys and what the others know of it.
//!
//! The Ed25519 key is the party's identity: its public half is the party id everywhere
//! (committees, envelopes, request signatures). The X25519 key receives point-to-point
//! ceremony messages. The daemon keeps both sealed by its TPM; the device party keeps them
//! in its passphrase-encrypted file.

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use x25519_dalek::{PublicKey as XPublic, StaticSecret};
use zeroize::Zeroizing;

/// A party's secret keys. Both zeroize on drop (dalek's `zeroize` features).
#[derive(Clone)]
pub struct PartyKeys {
    signing: SigningKey,
    encryption: StaticSecret,
}

impl std::fmt::Debug for PartyKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartyKeys")
            .field("party_id", &hex(&self.party_id()))
            .finish_non_exhaustive()
    }
}

impl PartyKeys {
    pub fn new(signing: SigningKey, encryption: StaticSecret) -> Self {
        PartyKeys {
            signing,
            encryption,
        }
    }

    pub fn generate() -> Self {
        let mut rng = rand::rngs::OsRng;
        PartyKeys {
            signing: SigningKey::generate(&mut rng),
            encryption: StaticSecret::random_from_rng(rng),
        }
    }

    /// The 64 secret bytes (Ed25519 seed, then X25519 secret), for sealing or encrypting.
    pub fn to_secret_bytes(&self) -> Zeroizing<[u8; 64]> {
        let mut out = Zeroizing::new([0u8; 64]);
        out[..32].copy_from_slice(&self.signing.to_bytes());
        out[32..].copy_from_slice(self.encryption.as_bytes());
        out
    }

    pub fn from_secret_bytes(b: &[u8; 64]) -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&b[..32]);
        let mut x = Zeroizing::new([0u8; 32]);
        x.copy_from_slice(&b[32..]);
        PartyKeys {
            signing: SigningKey::from_bytes(&seed),
            encryption: StaticSecret::from(*x),
        }
    }

    /// The Ed25519 public key: this party's id.
    pub fn party_id(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    pub fn encryption_public(&self) -> [u8; 32] {
        XPublic::from(&self.encryption).to_bytes()
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// The X25519 secret, for the envelope layer's key agreement only.
    pub fn encryption_secret(&self) -> &StaticSecret {
        &self.encryption
    }

    /// This party as a committee member.
    pub fn member(&self, name: &str) -> Member {
        Member {
            id: self.party_id(),
            encryption_key: self.encryption_public(),
            name: name.to_string(),
        }
    }
}

/// Checks an Ed25519 signature by `party` (strict verification: no malleable encodings).
pub fn verify(party: &[u8; 32], msg: &[u8], sig: &[u8]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(party) else {
        return false;
    };
    let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
        return false;
    };
    key.verify_strict(msg, &sig).is_ok()
}

/// One member of a committee as every party knows it: public facts only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: [u8; 32],
    pub encryption_key: [u8; 32],
    pub name: String,
}

/// Lower-case hex, for ids in messages and logs (never for secrets).
pub fn hex(b: &[u8]) -> String {
    ::hex::encode(b)
}

/// Short form of a party id for error messages: the first 8 bytes in hex, as the engine
/// prints `PartyId`.
pub fn short(id: &[u8]) -> String {
    hex(&id[..id.len().min(8)])
}

/// Parses hex of any even length, with or without a leading "0x" (surrounding space ignored).
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    ::hex::decode(s.strip_prefix("0x").unwrap_or(s)).ok()
}

/// Parses 32 bytes of lower- or upper-case hex.
pub fn parse_id(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    ::hex::decode_to_slice(s.trim(), &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bytes_round_trip_and_ids_parse() {
        let k = PartyKeys::generate();
        let back = PartyKeys::from_secret_bytes(&k.to_secret_bytes());
        assert_eq!(back.party_id(), k.party_id());
        assert_eq!(back.encryption_public(), k.encryption_public());
        assert_eq!(parse_id(&hex(&k.party_id())), Some(k.party_id()));
        assert_eq!(parse_id("zz"), None);
        assert_eq!(unhex("0x00ff"), Some(vec![0, 255]));
        assert_eq!(unhex("0f0"), None);
        let sig = k.sign(b"m");
        assert!(verify(&k.party_id(), b"m", &sig));
        assert!(!verify(&k.party_id(), b"n", &sig));
    }
}
