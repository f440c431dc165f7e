//! The sealed-file format: a sealed data key and the secret encrypted under it.
//!
//! ```text
//! "CSEAL" | version (2) | backend (1 = TPM, 2 = software)
//! | purpose (1 = share, 2 = identity) | slot (0 = none, 1 = current, 2 = pending, 3 = previous)
//! | len vault_id | vault_id | party_id (32) | epoch (u64)
//! | len clear | clear                                    (version 2: public facts)
//! | len private | private | len public | public          (the sealed data key)
//! | nonce (12) | AES-256-GCM ciphertext + tag
//! ```
//! Lengths are u16 big-endian. Everything before the nonce is the associated data, so the
//! vault, party, epoch, slot, purpose and the sealed key blob are authenticated: a file
//! copied to another vault's, party's, epoch's or slot's place (`previous` over `current`,
//! say) is refused before decryption (binding check) and could not be decrypted under
//! another binding anyway (AEAD). Moving a share between slots re-seals it.
//!
//! `clear` is what the caller wants readable without unsealing (for a share: the party's
//! signed public record of the vault, so status and every cheap check run without the TPM).
//! It is authenticated by the AEAD like the rest of the header, but that needs the data
//! key; a reader that does not unseal must check the caller's own signature inside it.
//!
//! Version 1 had no slot byte and no clear part. Version-1 identity files are read as they are; version-1
//! share files are read only by [`crate::ShareStore::migrate`], which re-seals them with
//! their slot.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::error::SealError;
use crate::slots::Slot;
use crate::tpm::SealedKey;

pub const MAGIC: &[u8; 5] = b"CSEAL";
pub const VERSION: u8 = 2;
/// The format before slots were bound.
pub const LEGACY_VERSION: u8 = 1;

/// Which backend sealed the data key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Tpm = 1,
    Software = 2,
}

/// What the file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Share = 1,
    Identity = 2,
}

/// What a sealed file is bound to. Checked on every read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub purpose: Purpose,
    /// The share slot the file may be read from (None: not a share slot, or a version-1
    /// file from before slots were bound).
    pub slot: Option<Slot>,
    pub vault_id: String,
    pub party_id: [u8; 32],
    pub epoch: u64,
}

fn slot_byte(s: Option<Slot>) -> u8 {
    match s {
        None => 0,
        Some(Slot::Current) => 1,
        Some(Slot::Pending) => 2,
        Some(Slot::Previous) => 3,
    }
}

/// A parsed file, before unsealing.
#[derive(Debug)]
pub struct Envelope {
    /// The format version the file was written in.
    pub version: u8,
    pub backend: BackendKind,
    pub binding: Binding,
    /// The clear part (empty in version 1).
    pub clear: Vec<u8>,
    pub sealed_key: SealedKey,
    header_len: usize,
    nonce: [u8; 12],
    ciphertext_at: usize,
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) -> Result<(), SealError> {
    let len = u16::try_from(b.len())
        .map_err(|_| SealError::Format("field longer than 65535 bytes".into()))?;
    out.extend(len.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

/// Encrypts `plaintext` under `data_key` and frames it with the sealed key and `clear`.
pub fn seal(
    backend: BackendKind,
    binding: &Binding,
    clear: &[u8],
    sealed_key: &SealedKey,
    data_key: &[u8; 32],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut out = Vec::with_capacity(plaintext.len() + 512);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(backend as u8);
    out.push(binding.purpose as u8);
    out.push(slot_byte(binding.slot));
    put_bytes(&mut out, binding.vault_id.as_bytes())?;
    out.extend_from_slice(&binding.party_id);
    out.extend(binding.epoch.to_be_bytes());
    put_bytes(&mut out, clear)?;
    put_bytes(&mut out, &sealed_key.private)?;
    put_bytes(&mut out, &sealed_key.public)?;
    encrypt_under_header(out, data_key, plaintext)
}

/// Appends a fresh nonce and `plaintext` encrypted under `data_key` to the header in
/// `out`, which is authenticated as associated data.
fn encrypt_under_header(
    mut out: Vec<u8>,
    data_key: &[u8; 32],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let header_len = out.len();
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let cipher = Aes256Gcm::new_from_slice(data_key)
        .map_err(|_| SealError::Format("bad key length".into()))?;
    let ct = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &out[..header_len],
            },
        )
        .map_err(|_| SealError::Format("encryption failed".into()))?;
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Writes the version-1 format (no slot byte, no clear part). Only tests use it, to show
/// that files written before slots were bound are migrated, not lost.
#[doc(hidden)]
pub fn seal_legacy(
    backend: BackendKind,
    binding: &Binding,
    sealed_key: &SealedKey,
    data_key: &[u8; 32],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let mut out = Vec::with_capacity(plaintext.len() + 512);
    out.extend_from_slice(MAGIC);
    out.push(LEGACY_VERSION);
    out.push(backend as u8);
    out.push(binding.purpose as u8);
    put_bytes(&mut out, binding.vault_id.as_bytes())?;
    out.extend_from_slice(&binding.party_id);
    out.extend(binding.epoch.to_be_bytes());
    put_bytes(&mut out, &sealed_key.private)?;
    put_bytes(&mut out, &sealed_key.public)?;
    encrypt_under_header(out, data_key, plaintext)
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], SealError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| SealError::Format(format!("truncated in the {what}")))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], SealError> {
        let len = self.take(2, what)?;
        let n = usize::from(u16::from_be_bytes([len[0], len[1]]));
        self.take(n, what)
    }
}

impl Envelope {
    /// Parses the framing (no secrets involved yet).
    pub fn parse(file: &[u8]) -> Result<Envelope, SealError> {
        let mut r = Reader { b: file, at: 0 };
        if r.take(5, "magic")? != MAGIC {
            return Err(SealError::Format(
                "not a cosigner sealed file (bad magic)".into(),
            ));
        }
        let version = r.take(1, "version")?[0];
        if version != VERSION && version != LEGACY_VERSION {
            return Err(SealError::Format(format!(
                "format version {version}; this build reads versions {LEGACY_VERSION} and {VERSION}"
            )));
        }
        let backend = match r.take(1, "backend")?[0] {
            1 => BackendKind::Tpm,
            2 => BackendKind::Software,
            b => return Err(SealError::Format(format!("unknown sealing backend {b}"))),
        };
        let purpose = match r.take(1, "purpose")?[0] {
            1 => Purpose::Share,
            2 => Purpose::Identity,
            p => return Err(SealError::Format(format!("unknown purpose {p}"))),
        };
        let slot = if version == LEGACY_VERSION {
            None
        } else {
            match r.take(1, "slot")?[0] {
                0 => None,
                1 => Some(Slot::Current),
                2 => Some(Slot::Pending),
                3 => Some(Slot::Previous),
                b => return Err(SealError::Format(format!("unknown slot {b}"))),
            }
        };
        let vault_id = String::from_utf8(r.bytes("vault id")?.to_vec())
            .map_err(|_| SealError::Format("vault id is not UTF-8".into()))?;
        let party_id: [u8; 32] = r
            .take(32, "party id")?
            .try_into()
            .map_err(|_| SealError::Format("party id".into()))?;
        let epoch_b: [u8; 8] = r
            .take(8, "epoch")?
            .try_into()
            .map_err(|_| SealError::Format("epoch".into()))?;
        let clear = if version == LEGACY_VERSION {
            Vec::new()
        } else {
            r.bytes("clear part")?.to_vec()
        };
        let private = r.bytes("sealed key")?.to_vec();
        let public = r.bytes("sealed key")?.to_vec();
        let header_len = r.at;
        let nonce: [u8; 12] = r
            .take(12, "nonce")?
            .try_into()
            .map_err(|_| SealError::Format("nonce".into()))?;
        if file.len() - r.at < 16 {
            return Err(SealError::Format("truncated in the ciphertext".into()));
        }
        Ok(Envelope {
            version,
            backend,
            binding: Binding {
                purpose,
                slot,
                vault_id,
                party_id,
                epoch: u64::from_be_bytes(epoch_b),
            },
            clear,
            sealed_key: SealedKey { private, public },
            header_len,
            nonce,
            ciphertext_at: r.at,
        })
    }

    /// Refuses a file bound to something else than `expected`, naming the difference.
    pub fn check_binding(&self, expected: &Binding) -> Result<(), SealError> {
        let b = &self.binding;
        if b.purpose != expected.purpose {
            return Err(SealError::Binding(format!(
                "it holds a {:?}, not a {:?}",
                b.purpose, expected.purpose
            )));
        }
        if b.vault_id != expected.vault_id {
            return Err(SealError::Binding(format!(
                "it is sealed for vault {:?}, not {:?}",
                b.vault_id, expected.vault_id
            )));
        }
        if b.party_id != expected.party_id {
            return Err(SealError::Binding("it is sealed for another party".into()));
        }
        if b.epoch != expected.epoch {
            return Err(SealError::Binding(format!(
                "it is of epoch {}, not {}",
                b.epoch, expected.epoch
            )));
        }
        if b.slot != expected.slot {
            let name = |s: Option<Slot>| s.map_or("no slot (format 1)", |s| s.name());
            return Err(SealError::Binding(format!(
                "it was sealed for the {} slot, not {} (a file moved or copied into this place is refused)",
                name(b.slot),
                name(expected.slot)
            )));
        }
        Ok(())
    }

    /// Decrypts with the unsealed data key.
    pub fn open(&self, file: &[u8], data_key: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let cipher = Aes256Gcm::new_from_slice(data_key).map_err(|_| SealError::Decrypt)?;
        cipher
            .decrypt(
                Nonce::from_slice(&self.nonce),
                Payload {
                    msg: &file[self.ciphertext_at..],
                    aad: &file[..self.header_len],
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        Binding {
            purpose: Purpose::Share,
            slot: Some(Slot::Current),
            vault_id: "v1".into(),
            party_id: [3; 32],
            epoch: 7,
        }
    }

    fn sealed() -> (Vec<u8>, [u8; 32]) {
        let key = [9u8; 32];
        let sk = SealedKey {
            private: vec![1, 2, 3],
            public: vec![4, 5],
        };
        (
            seal(
                BackendKind::Software,
                &binding(),
                b"public facts",
                &sk,
                &key,
                b"secret share",
            )
            .unwrap(),
            key,
        )
    }

    #[test]
    fn round_trip() {
        let (file, key) = sealed();
        let env = Envelope::parse(&file).unwrap();
        env.check_binding(&binding()).unwrap();
        assert_eq!(env.clear, b"public facts");
        assert_eq!(env.open(&file, &key).unwrap().as_slice(), b"secret share");
        assert!(!file.windows(12).any(|w| w == b"secret share"));
    }

    #[test]
    fn the_slot_is_bound() {
        let (file, key) = sealed();
        let env = Envelope::parse(&file).unwrap();
        for other in [Some(Slot::Previous), Some(Slot::Pending), None] {
            let e = env
                .check_binding(&Binding {
                    slot: other,
                    ..binding()
                })
                .unwrap_err();
            assert!(matches!(e, SealError::Binding(m) if m.contains("slot")));
        }
        // Relabelling the slot byte fails the AEAD even if the binding check were skipped.
        let mut moved = file.clone();
        moved[8] = 3;
        let env = Envelope::parse(&moved).unwrap();
        assert_eq!(env.binding.slot, Some(Slot::Previous));
        assert_eq!(env.open(&moved, &key).unwrap_err(), SealError::Decrypt);
    }

    #[test]
    fn every_truncation_is_a_clear_error() {
        let (file, key) = sealed();
        for n in 0..file.len() {
            match Envelope::parse(&file[..n]) {
                Err(SealError::Format(_)) => {}
                Ok(env) => assert_eq!(env.open(&file[..n], &key).unwrap_err(), SealError::Decrypt),
                Err(e) => panic!("{n}: {e}"),
            }
        }
    }

    #[test]
    fn any_flipped_byte_is_refused() {
        let (file, key) = sealed();
        for i in 0..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x20;
            let outcome = Envelope::parse(&bad).and_then(|env| {
                env.check_binding(&binding())?;
                env.open(&bad, &key)
            });
            assert!(outcome.is_err(), "byte {i} flipped and still accepted");
        }
    }
}
