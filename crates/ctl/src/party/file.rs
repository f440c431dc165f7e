//! The device party's file: its identity keys and shares, encrypted under a passphrase.
//!
//! It is a passphrase box (`cosigner_backup::passbox`, kind "party file"): the same format,
//! key derivation (Argon2id with recorded costs) and cipher (ChaCha20-Poly1305, header and
//! clear metadata authenticated) as a share backup, so a device's share is protected the
//! same way at rest and when backed up. The clear metadata names the party (name and id);
//! the encrypted body holds the keys and every vault's slots. A fresh salt and nonce are
//! drawn at every write. Writes go to a temporary file that is synced and renamed over the
//! old one.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use cosigner_backup::passbox::{self, Costs, Kind};
use cosigner_relay::{Held, PartyKeys};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

pub const MIN_PASSPHRASE: usize = cosigner_backup::MIN_PASSPHRASE;
const FORMAT: &str = "cosigner party file v1";

#[derive(Serialize, Deserialize)]
struct Meta {
    format: String,
    name: String,
    party_id: String,
}

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
        let (h, plain) = passbox::open(&bytes, Kind::PartyFile, pass)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let meta: Meta = serde_json::from_slice(h.meta)
            .with_context(|| format!("{}: damaged metadata", path.display()))?;
        if meta.format != FORMAT {
            bail!(
                "{}: format {:?}; this build reads {FORMAT:?}",
                path.display(),
                meta.format
            );
        }
        let body: Body = postcard::from_bytes(&plain)
            .with_context(|| format!("{}: damaged contents", path.display()))?;
        let secret: [u8; 64] = body
            .secret
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("{}: damaged identity", path.display()))?;
        let secret = Zeroizing::new(secret);
        let mut body = body;
        let keys = PartyKeys::from_secret_bytes(&secret);
        if cosigner_relay::keys::hex(&keys.party_id()) != meta.party_id {
            bail!(
                "{}: the metadata names another party than the keys",
                path.display()
            );
        }
        Ok(PartyFile {
            name: std::mem::take(&mut body.name),
            keys,
            vaults: std::mem::take(&mut body.vaults),
        })
    }

    pub fn save(&mut self, path: &Path, pass: &[u8]) -> Result<()> {
        let body = Body {
            name: self.name.clone(),
            secret: self.keys.to_secret_bytes().to_vec(),
            vaults: std::mem::take(&mut self.vaults),
        };
        let plain = postcard::to_allocvec(&body).map(Zeroizing::new);
        let mut body = body;
        self.vaults = std::mem::take(&mut body.vaults);
        let plain = plain.context("encoding")?;
        let meta = serde_json::to_vec(&Meta {
            format: FORMAT.into(),
            name: self.name.clone(),
            party_id: cosigner_relay::keys::hex(&self.keys.party_id()),
        })?;
        let file = passbox::seal(Kind::PartyFile, &meta, &plain, pass, Costs::DEFAULT)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        write_private(path, &file)
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

/// Writes `bytes` to `path` (mode 0600) through a synced temporary file renamed over it.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("cosigner")
    ));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
    Ok(())
}

/// The party file's passphrase: from a file (first line) or COSIGNERCTL_PASSPHRASE. Never
/// from an argument (it would show in `ps` and shell history).
pub fn passphrase(file: Option<&Path>) -> Result<Zeroizing<String>> {
    passphrase_from(file, "COSIGNERCTL_PASSPHRASE")
}

/// A passphrase from a file (first line) or the environment variable `env`.
pub fn passphrase_from(file: Option<&Path>, env: &str) -> Result<Zeroizing<String>> {
    let p = match file {
        Some(f) => {
            let s = Zeroizing::new(
                std::fs::read_to_string(f)
                    .with_context(|| format!("cannot read passphrase file {}", f.display()))?,
            );
            Zeroizing::new(s.lines().next().unwrap_or("").to_string())
        }
        None => Zeroizing::new(std::env::var(env).map_err(|_| {
            anyhow::anyhow!("no passphrase: pass --passphrase-file FILE or set {env}")
        })?),
    };
    if p.chars().count() < MIN_PASSPHRASE {
        bail!("the passphrase must have at least {MIN_PASSPHRASE} characters");
    }
    Ok(p)
}
