//! The device party's file: its identity keys and shares, encrypted under a passphrase.
//!
//! Format: `CPTY | version | m_cost | t_cost | p_cost | salt(16) | nonce(12) | ciphertext`.
//! The key is Argon2id(passphrase, salt) with the recorded costs; the cipher is
//! ChaCha20-Poly1305 with the header as associated data, so costs and salt cannot be
//! changed without the file failing to open. A fresh salt and nonce are drawn at every
//! write. Writes go to a temporary file that is synced and renamed over the old one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use cosigner_relay::{Held, PartyKeys};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

const MAGIC: &[u8; 4] = b"CPTY";
const VERSION: u8 = 1;
const HEADER: usize = 4 + 1 + 12 + 16 + 12;
/// Argon2id costs for new files: 64 MiB, 3 passes (RFC 9106's second recommendation).
const M_COST: u32 = 64 * 1024;
const T_COST: u32 = 3;
const P_COST: u32 = 1;
pub const MIN_PASSPHRASE: usize = 12;

/// One vault's slots on the device (the same life cycle as the daemon's).
#[derive(Serialize, Deserialize, Default)]
pub struct VaultSlots {
    pub vault_id: String,
    pub current: Option<Vec<u8>>,
    pub pending: Option<Vec<u8>>,
    pub previous: Option<Vec<u8>>,
}

impl Drop for VaultSlots {
    fn drop(&mut self) {
        for s in [&mut self.current, &mut self.pending, &mut self.previous]
            .into_iter()
            .flatten()
        {
            s.zeroize();
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Body {
    name: String,
    secret: Vec<u8>,
    vaults: Vec<VaultSlots>,
}

impl Drop for Body {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

/// The opened file.
pub struct PartyFile {
    pub name: String,
    pub keys: PartyKeys,
    pub vaults: Vec<VaultSlots>,
}

fn derive(pass: &[u8], salt: &[u8], m: u32, t: u32, p: u32) -> Result<Zeroizing<[u8; 32]>> {
    if m > 1 << 22 || t > 64 || p > 16 {
        bail!("the file asks for unreasonable Argon2 costs (m={m} KiB, t={t}, p={p}); refusing");
    }
    let params = Params::new(m, t, p, Some(32)).map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(pass, salt, key.as_mut())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(key)
}

impl PartyFile {
    pub fn create(name: &str) -> PartyFile {
        PartyFile {
            name: name.to_string(),
            keys: PartyKeys::generate(),
            vaults: Vec::new(),
        }
    }

    pub fn open(path: &Path, pass: &[u8]) -> Result<PartyFile> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read party file {}", path.display()))?;
        if bytes.len() < HEADER + 16 || &bytes[..4] != MAGIC {
            bail!("{} is not a cosigner party file", path.display());
        }
        if bytes[4] != VERSION {
            bail!(
                "{}: party file version {}; this build reads {VERSION}",
                path.display(),
                bytes[4]
            );
        }
        let u = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let (m, t, p) = (u(5), u(9), u(13));
        let salt = &bytes[17..33];
        let nonce = &bytes[33..45];
        let key = derive(pass, salt, m, t, p)?;
        let plain = Zeroizing::new(
            ChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: &bytes[HEADER..],
                        aad: &bytes[..HEADER],
                    },
                )
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{}: wrong passphrase, or the file was altered",
                        path.display()
                    )
                })?,
        );
        let body: Body = postcard::from_bytes(&plain)
            .with_context(|| format!("{}: damaged contents", path.display()))?;
        let secret: [u8; 64] = body
            .secret
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("{}: damaged identity", path.display()))?;
        let secret = Zeroizing::new(secret);
        let mut body = body;
        Ok(PartyFile {
            name: std::mem::take(&mut body.name),
            keys: PartyKeys::from_secret_bytes(&secret),
            vaults: std::mem::take(&mut body.vaults),
        })
    }

    pub fn save(&mut self, path: &Path, pass: &[u8]) -> Result<()> {
        let mut salt = [0u8; 16];
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let key = derive(pass, &salt, M_COST, T_COST, P_COST)?;
        let mut header = Vec::with_capacity(HEADER);
        header.extend_from_slice(MAGIC);
        header.push(VERSION);
        for v in [M_COST, T_COST, P_COST] {
            header.extend_from_slice(&v.to_be_bytes());
        }
        header.extend_from_slice(&salt);
        header.extend_from_slice(&nonce);
        let body = Body {
            name: self.name.clone(),
            secret: self.keys.to_secret_bytes().to_vec(),
            vaults: std::mem::take(&mut self.vaults),
        };
        let plain = Zeroizing::new(postcard::to_allocvec(&body).context("encoding")?);
        let mut body = body;
        self.vaults = std::mem::take(&mut body.vaults);
        let ct = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &header,
                },
            )
            .map_err(|_| anyhow::anyhow!("encryption failed"))?;
        header.extend_from_slice(&ct);
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("party")
        ));
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            f.write_all(&header)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
        Ok(())
    }

    pub fn slots(&self, vault: &str) -> Option<&VaultSlots> {
        self.vaults.iter().find(|v| v.vault_id == vault)
    }

    pub fn slots_mut(&mut self, vault: &str) -> &mut VaultSlots {
        if let Some(i) = self.vaults.iter().position(|v| v.vault_id == vault) {
            return &mut self.vaults[i];
        }
        let mut slots = VaultSlots::default();
        slots.vault_id = vault.to_string();
        self.vaults.push(slots);
        let last = self.vaults.len() - 1;
        &mut self.vaults[last]
    }

    pub fn current(&self, vault: &str) -> Result<Held> {
        let bytes = self
            .slots(vault)
            .and_then(|s| s.current.as_ref())
            .ok_or_else(|| anyhow::anyhow!("this party holds no share of vault {vault:?}"))?;
        Held::decode(bytes).map_err(|e| anyhow::anyhow!("vault {vault:?}: {e}"))
    }
}

/// The passphrase: from a file (first line) or COSIGNERCTL_PASSPHRASE. Never from an argument
/// (it would show in `ps` and shell history).
pub fn passphrase(file: Option<&Path>) -> Result<Zeroizing<String>> {
    let p = match file {
        Some(f) => {
            let s = Zeroizing::new(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read passphrase file {}", f.display()))?,
            );
            Zeroizing::new(s.lines().next().unwrap_or("").to_string())
        }
        None => Zeroizing::new(std::env::var("COSIGNERCTL_PASSPHRASE").map_err(|_| {
            anyhow::anyhow!(
                "no passphrase: pass --passphrase-file FILE or set COSIGNERCTL_PASSPHRASE"
            )
        })?),
    };
    if p.chars().count() < MIN_PASSPHRASE {
        bail!("the passphrase must have at least {MIN_PASSPHRASE} characters");
    }
    Ok(p)
}
