//! The passphrase box: one file format for every secret a person carries away from a TPM
//! (share backups, the device party's file).
//!
//! ```text
//! "CPBX" | version u8 | kind u8 | Argon2id m_cost u32 | t_cost u32 | p_cost u32
//!        | salt[16] | nonce[12] | meta_len u32 | meta (JSON, clear) | ciphertext
//! ```
//! (integers big-endian). The key is Argon2id(passphrase, salt) with the recorded costs; the
//! cipher is ChaCha20-Poly1305 with everything before the ciphertext as associated data, so
//! the clear metadata, the kind and the costs are authenticated: none can be changed without
//! the file failing to open. The metadata is readable without the passphrase (an operator
//! must be able to see which vault, party and epoch a file holds before typing anything),
//! but it is only trusted once the file opened.

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

const MAGIC: &[u8; 4] = b"CPBX";
const VERSION: u8 = 1;
/// Bytes before the metadata.
const FIXED: usize = 4 + 1 + 1 + 12 + 16 + 12 + 4;
const TAG: usize = 16;
/// Clear metadata is small (a committee of 255 names); anything larger is not ours.
const MAX_META: usize = 64 * 1024;
/// Shares are ~105 KB; committees of 255 parties a few MB at most.
const MAX_FILE: usize = 64 << 20;
/// Passphrases shorter than this are refused when a file is written.
pub const MIN_PASSPHRASE: usize = 12;

/// What a box holds; part of the authenticated header, so one kind cannot be passed off as
/// another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ShareBackup = 1,
    PartyFile = 2,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::ShareBackup),
            2 => Some(Kind::PartyFile),
            _ => None,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::ShareBackup => "a share backup",
            Kind::PartyFile => "a device party file",
        }
    }
}

/// Argon2id costs, recorded in each file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Costs {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Costs {
    /// 64 MiB, 3 passes, 1 lane: RFC 9106's second recommended option.
    pub const DEFAULT: Costs = Costs {
        m_kib: 64 * 1024,
        t: 3,
        p: 1,
    };
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BoxError {
    #[error("not a cosigner passphrase file ({0})")]
    Format(String),
    #[error("this is {found}, not {expected}")]
    Kind {
        expected: &'static str,
        found: &'static str,
    },
    #[error("wrong passphrase, or the file was altered (it does not authenticate)")]
    Open,
    #[error("the file asks for unreasonable Argon2 costs (m={m_kib} KiB, t={t}, p={p}); refusing")]
    Costs { m_kib: u32, t: u32, p: u32 },
    #[error("the passphrase must have at least {MIN_PASSPHRASE} characters")]
    ShortPassphrase,
    #[error("encryption: {0}")]
    Crypto(String),
}

/// The readable part of a box.
#[derive(Debug)]
pub struct Header<'a> {
    pub kind: Kind,
    pub costs: Costs,
    pub meta: &'a [u8],
    /// Everything before the ciphertext (the associated data).
    aad: &'a [u8],
    salt: &'a [u8],
    nonce: &'a [u8],
    ciphertext: &'a [u8],
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// Reads the header without the passphrase.
pub fn header(bytes: &[u8]) -> Result<Header<'_>, BoxError> {
    let fmt = |m: &str| BoxError::Format(m.to_string());
    if bytes.len() > MAX_FILE {
        return Err(fmt("larger than any backup"));
    }
    if bytes.len() < FIXED || &bytes[..4] != MAGIC {
        return Err(fmt("bad magic"));
    }
    if bytes[4] != VERSION {
        return Err(BoxError::Format(format!(
            "version {}; this build reads version {VERSION}",
            bytes[4]
        )));
    }
    let kind = Kind::from_u8(bytes[5])
        .ok_or_else(|| BoxError::Format(format!("unknown kind {}", bytes[5])))?;
    let costs = Costs {
        m_kib: u32_at(bytes, 6),
        t: u32_at(bytes, 10),
        p: u32_at(bytes, 14),
    };
    let meta_len = u32_at(bytes, FIXED - 4) as usize;
    if meta_len > MAX_META {
        return Err(fmt("metadata too large"));
    }
    let end = FIXED + meta_len;
    if bytes.len() < end + TAG {
        return Err(fmt("truncated"));
    }
    Ok(Header {
        kind,
        costs,
        meta: &bytes[FIXED..end],
        aad: &bytes[..end],
        salt: &bytes[18..34],
        nonce: &bytes[34..46],
        ciphertext: &bytes[end..],
    })
}

fn derive(pass: &[u8], salt: &[u8], c: Costs) -> Result<Zeroizing<[u8; 32]>, BoxError> {
    // Bounds (1 GiB, 16 passes): a file must not make the reader allocate gigabytes or
    // spin for hours.
    if c.m_kib > 1 << 20 || c.t == 0 || c.t > 16 || c.p == 0 || c.p > 16 {
        return Err(BoxError::Costs {
            m_kib: c.m_kib,
            t: c.t,
            p: c.p,
        });
    }
    let params = Params::new(c.m_kib, c.t, c.p, Some(32)).map_err(|_| BoxError::Costs {
        m_kib: c.m_kib,
        t: c.t,
        p: c.p,
    })?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(pass, salt, key.as_mut())
        .map_err(|e| BoxError::Crypto(format!("argon2: {e}")))?;
    Ok(key)
}

/// Encrypts `secret` under `pass` with a fresh salt and nonce.
pub fn seal(
    kind: Kind,
    meta: &[u8],
    secret: &[u8],
    pass: &[u8],
    costs: Costs,
) -> Result<Vec<u8>, BoxError> {
    if String::from_utf8_lossy(pass).chars().count() < MIN_PASSPHRASE {
        return Err(BoxError::ShortPassphrase);
    }
    if meta.len() > MAX_META {
        return Err(BoxError::Format("metadata too large".into()));
    }
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let key = derive(pass, &salt, costs)?;
    let mut out = Vec::with_capacity(FIXED + meta.len() + secret.len() + TAG);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    for v in [costs.m_kib, costs.t, costs.p] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&salt);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    out.extend_from_slice(meta);
    let ct = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: secret,
                aad: &out,
            },
        )
        .map_err(|_| BoxError::Crypto("ChaCha20-Poly1305 refused to encrypt".into()))?;
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens a box of the `expected` kind. Wrong passphrase and altered file are the same error
/// (an AEAD cannot tell them apart, and saying more would help a guesser).
pub fn open<'a>(
    bytes: &'a [u8],
    expected: Kind,
    pass: &[u8],
) -> Result<(Header<'a>, Zeroizing<Vec<u8>>), BoxError> {
    let h = header(bytes)?;
    if h.kind != expected {
        return Err(BoxError::Kind {
            expected: expected.describe(),
            found: h.kind.describe(),
        });
    }
    let key = derive(pass, h.salt, h.costs)?;
    let plain = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
        .decrypt(
            Nonce::from_slice(h.nonce),
            Payload {
                msg: h.ciphertext,
                aad: h.aad,
            },
        )
        .map_err(|_| BoxError::Open)?;
    Ok((h, Zeroizing::new(plain)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHEAP: Costs = Costs {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    const PASS: &[u8] = b"correct horse battery";

    #[test]
    fn round_trip_and_every_altered_byte_is_refused() {
        let b = seal(Kind::ShareBackup, b"{\"a\":1}", b"secret!", PASS, CHEAP).unwrap();
        let (h, plain) = open(&b, Kind::ShareBackup, PASS).unwrap();
        assert_eq!(h.meta, b"{\"a\":1}");
        assert_eq!(plain.as_slice(), b"secret!");
        assert_eq!(h.costs, CHEAP);
        for i in 0..b.len() {
            let mut x = b.clone();
            x[i] ^= 0x01;
            assert!(open(&x, Kind::ShareBackup, PASS).is_err(), "byte {i}");
        }
        assert_eq!(
            open(&b, Kind::ShareBackup, b"wrong passphrase!").unwrap_err(),
            BoxError::Open
        );
        assert!(matches!(
            open(&b, Kind::PartyFile, PASS).unwrap_err(),
            BoxError::Kind { .. }
        ));
        for n in 0..b.len() {
            assert!(open(&b[..n], Kind::ShareBackup, PASS).is_err(), "{n}");
        }
    }

    #[test]
    fn refuses_short_passphrases_and_absurd_costs() {
        assert_eq!(
            seal(Kind::ShareBackup, b"", b"x", b"short", CHEAP).unwrap_err(),
            BoxError::ShortPassphrase
        );
        let mut b = seal(Kind::ShareBackup, b"", b"x", PASS, CHEAP).unwrap();
        b[6..10].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            open(&b, Kind::ShareBackup, PASS).unwrap_err(),
            BoxError::Costs { .. }
        ));
    }
}
