//! The device party's file: its identity keys and shares, encrypted under a passphrase.
//!
//! It is a passphrase box (`cosigner_backup::passbox`, kind "party file"): the same format,
//! key derivation (Argon2id with recorded costs) and cipher (ChaCha20-Poly1305, header and
//! clear metadata authenticated) as a share backup, so a device's share is protected the
//! same way at rest and when backed up. The clear metadata names the party (name and id);
//! the encrypted body holds the keys, every vault's slots and commit record, and the relay
//! sessions this party took part in. A fresh salt and nonce are drawn at every write. Writes
//! go to a temporary file that is synced and renamed over the old one.
//!
//! Format v2 (v1 files are still read; the fields v1 lacks start empty):
//! - per vault: `current`, `pending`, `previous` (encoded `Held`), and `commit`, the encoded
//!   `CommitState` of the vault's latest keygen or reshare;
//! - `used_sessions`: the relay session ids of the last [`MAX_SESSIONS`] ceremonies, so a
//!   replayed request never makes this party take part twice in one session.
//!
//! One command at a time: [`lock`] takes an exclusive lock on a sibling `<file>.lock` for the
//! whole command, so two cosignerctl processes never interleave their writes.

use std::fs::TryLockError;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cosigner_backup::passbox::{self, Costs, Kind};
use cosigner_relay::commit::CommitState;
use cosigner_relay::{Held, PartyKeys};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

pub const MIN_PASSPHRASE: usize = cosigner_backup::MIN_PASSPHRASE;
const FORMAT: &str = "cosigner party file v2";
const FORMAT_V1: &str = "cosigner party file v1";
/// How many relay session ids the file remembers.
pub const MAX_SESSIONS: usize = 256;

#[derive(Serialize, Deserialize)]
struct Meta {
    format: String,
    name: String,
    party_id: String,
}

/// One vault's slots on the device (the same life cycle as the daemon's), and the commit
/// record of its latest keygen or reshare.
#[derive(Serialize, Deserialize, Default, Clone)]
pub struct VaultSlots {
    pub vault_id: String,
    pub current: Option<Vec<u8>>,
    pub pending: Option<Vec<u8>>,
    pub previous: Option<Vec<u8>>,
    /// `CommitState::encode` of the latest keygen or reshare of the vault.
    pub commit: Option<Vec<u8>>,
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

impl VaultSlots {
    /// The commit record, if any.
    pub fn commit_state(&self) -> Result<Option<CommitState>> {
        self.commit
            .as_deref()
            .map(CommitState::decode)
            .transpose()
            .map_err(|e| anyhow::anyhow!("vault {:?}: {e}", self.vault_id))
    }

    pub fn holds_anything(&self) -> bool {
        self.current.is_some() || self.pending.is_some() || self.previous.is_some()
    }
}

/// Sets a secret slot; the bytes it held are wiped.
pub fn put(slot: &mut Option<Vec<u8>>, value: Option<Vec<u8>>) {
    if let Some(mut old) = std::mem::replace(slot, value) {
        old.zeroize();
    }
}

/// The epoch of a slot's share (None: empty or unreadable).
pub fn epoch_of(slot: &Option<Vec<u8>>) -> Option<u64> {
    slot.as_deref()
        .and_then(|b| Held::decode(b).ok())
        .map(|h| h.record.epoch())
}

#[derive(Serialize, Deserialize)]
struct Body {
    name: String,
    secret: Vec<u8>,
    vaults: Vec<VaultSlots>,
    used_sessions: Vec<Vec<u8>>,
}

impl Drop for Body {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

/// Format v1's slots (no commit record).
#[derive(Deserialize)]
struct VaultSlotsV1 {
    vault_id: String,
    current: Option<Vec<u8>>,
    pending: Option<Vec<u8>>,
    previous: Option<Vec<u8>>,
}

/// Format v1's body (no session memory).
#[derive(Deserialize)]
struct BodyV1 {
    name: String,
    secret: Vec<u8>,
    vaults: Vec<VaultSlotsV1>,
}

impl BodyV1 {
    fn upgrade(self) -> Body {
        Body {
            name: self.name,
            secret: self.secret,
            vaults: self
                .vaults
                .into_iter()
                .map(|v| VaultSlots {
                    vault_id: v.vault_id,
                    current: v.current,
                    pending: v.pending,
                    previous: v.previous,
                    commit: None,
                })
                .collect(),
            used_sessions: Vec::new(),
        }
    }
}

/// The opened file.
pub struct PartyFile {
    pub name: String,
    pub keys: PartyKeys,
    pub vaults: Vec<VaultSlots>,
    /// Relay session ids this party took part in, oldest first.
    pub used_sessions: Vec<Vec<u8>>,
}

impl PartyFile {
    pub fn create(name: &str) -> PartyFile {
        PartyFile {
            name: name.to_string(),
            keys: PartyKeys::generate(),
            vaults: Vec::new(),
            used_sessions: Vec::new(),
        }
    }

    pub fn open(path: &Path, pass: &[u8]) -> Result<PartyFile> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read party file {}", path.display()))?;
        let (h, plain) = passbox::open(&bytes, Kind::PartyFile, pass)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let meta: Meta = serde_json::from_slice(h.meta)
            .with_context(|| format!("{}: damaged metadata", path.display()))?;
        let body: Body = match meta.format.as_str() {
            FORMAT => postcard::from_bytes(&plain)
                .with_context(|| format!("{}: damaged contents", path.display()))?,
            FORMAT_V1 => postcard::from_bytes::<BodyV1>(&plain)
                .with_context(|| format!("{}: damaged contents", path.display()))?
                .upgrade(),
            other => bail!(
                "{}: format {other:?}; this build reads {FORMAT:?} and {FORMAT_V1:?}",
                path.display()
            ),
        };
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
            used_sessions: std::mem::take(&mut body.used_sessions),
        })
    }

    /// Writes the whole file (format v2) durably.
    pub fn save(&mut self, path: &Path, pass: &[u8]) -> Result<()> {
        let body = Body {
            name: self.name.clone(),
            secret: self.keys.to_secret_bytes().to_vec(),
            vaults: std::mem::take(&mut self.vaults),
            used_sessions: std::mem::take(&mut self.used_sessions),
        };
        let plain = postcard::to_allocvec(&body).map(Zeroizing::new);
        let mut body = body;
        self.vaults = std::mem::take(&mut body.vaults);
        self.used_sessions = std::mem::take(&mut body.used_sessions);
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
        self.held_current(vault)?
            .ok_or_else(|| anyhow::anyhow!("this party holds no share of vault {vault:?}"))
    }

    /// The current share, if this party holds one (an unreadable one is an error).
    pub fn held_current(&self, vault: &str) -> Result<Option<Held>> {
        self.slots(vault)
            .and_then(|s| s.current.as_deref())
            .map(Held::decode)
            .transpose()
            .map_err(|e| anyhow::anyhow!("vault {vault:?}: {e}"))
    }

    /// The vault's commit record, if any.
    pub fn commit_state(&self, vault: &str) -> Result<Option<CommitState>> {
        match self.slots(vault) {
            Some(s) => s.commit_state(),
            None => Ok(None),
        }
    }

    /// Records that this party takes part in a relay session; refuses one it took part in.
    pub fn remember_session(&mut self, session: &[u8]) -> Result<()> {
        if self.used_sessions.iter().any(|s| s == session) {
            bail!(
                "this party already took part in relay session {}; refusing to take part twice (a replayed request?)",
                cosigner_relay::keys::hex(session)
            );
        }
        self.used_sessions.push(session.to_vec());
        if self.used_sessions.len() > MAX_SESSIONS {
            let extra = self.used_sessions.len() - MAX_SESSIONS;
            self.used_sessions.drain(..extra);
        }
        Ok(())
    }
}

/// An exclusive lock on a party file, held until dropped.
pub struct FileLock {
    _file: std::fs::File,
}

/// The lock file beside `path`: `<file>.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "party".into());
    name.push(".lock");
    path.with_file_name(name)
}

/// Takes the party file's lock, or fails at once if another process holds it.
pub fn lock(path: &Path) -> Result<FileLock> {
    let lp = lock_path(path);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lp)
        .with_context(|| format!("cannot open the lock file {}", lp.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(FileLock { _file: file }),
        Err(TryLockError::WouldBlock) => bail!(
            "party file {} is in use by another cosignerctl process (it holds {}); wait for it to finish",
            path.display(),
            lp.display()
        ),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", lp.display()))
        }
    }
}

/// Writes `bytes` to `path` (mode 0600) through a synced temporary file renamed over it.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} is not a file name", path.display()))?;
    cosigner_relay::files::write_atomic(dir, name, bytes, &|_| {})
        .with_context(|| format!("cannot replace {}", path.display()))
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

#[cfg(test)]
mod tests {
    use super::*;

    const PASS: &[u8] = b"a long test passphrase";

    /// Writes a party file the way format v1 did.
    fn write_v1(path: &Path, keys: &PartyKeys) {
        #[derive(Serialize)]
        struct SlotsV1 {
            vault_id: String,
            current: Option<Vec<u8>>,
            pending: Option<Vec<u8>>,
            previous: Option<Vec<u8>>,
        }
        #[derive(Serialize)]
        struct V1 {
            name: String,
            secret: Vec<u8>,
            vaults: Vec<SlotsV1>,
        }
        let body = V1 {
            name: "old-phone".into(),
            secret: keys.to_secret_bytes().to_vec(),
            vaults: vec![SlotsV1 {
                vault_id: "v1".into(),
                current: Some(vec![1, 2, 3]),
                pending: None,
                previous: Some(vec![4]),
            }],
        };
        let meta = serde_json::to_vec(&Meta {
            format: FORMAT_V1.into(),
            name: "old-phone".into(),
            party_id: cosigner_relay::keys::hex(&keys.party_id()),
        })
        .unwrap();
        let plain = postcard::to_allocvec(&body).unwrap();
        let file = passbox::seal(Kind::PartyFile, &meta, &plain, PASS, Costs::DEFAULT).unwrap();
        std::fs::write(path, file).unwrap();
    }

    #[test]
    fn v1_files_open_and_are_written_back_as_v2() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.party");
        let keys = PartyKeys::generate();
        write_v1(&path, &keys);
        let mut f = PartyFile::open(&path, PASS).unwrap();
        assert_eq!(f.name, "old-phone");
        assert_eq!(f.keys.party_id(), keys.party_id());
        let s = f.slots("v1").unwrap();
        assert_eq!(s.current.as_deref(), Some(&[1u8, 2, 3][..]));
        assert_eq!(s.previous.as_deref(), Some(&[4u8][..]));
        assert!(s.commit.is_none() && f.used_sessions.is_empty());
        assert!(f.commit_state("v1").unwrap().is_none());
        f.slots_mut("v1").commit = Some(b"junk".to_vec());
        f.remember_session(b"session-1").unwrap();
        f.save(&path, PASS).unwrap();
        let f = PartyFile::open(&path, PASS).unwrap();
        assert_eq!(f.used_sessions, vec![b"session-1".to_vec()]);
        assert_eq!(f.slots("v1").unwrap().commit.as_deref(), Some(&b"junk"[..]));
        // A damaged commit record is an error for that vault, not a panic.
        assert!(f.commit_state("v1").is_err());
    }

    #[test]
    fn a_session_is_taken_part_in_once_and_the_memory_is_bounded() {
        let mut f = PartyFile::create("p");
        f.remember_session(b"s").unwrap();
        assert!(f.remember_session(b"s").is_err());
        for i in 0..MAX_SESSIONS {
            f.remember_session(&(i as u64).to_be_bytes()).unwrap();
        }
        assert_eq!(f.used_sessions.len(), MAX_SESSIONS);
        // The oldest was forgotten; the newest are still refused.
        assert!(f.remember_session(b"s").is_ok());
        assert!(
            f.remember_session(&((MAX_SESSIONS - 1) as u64).to_be_bytes())
                .is_err()
        );
    }

    #[test]
    fn a_second_process_cannot_take_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.party");
        let held = lock(&path).unwrap();
        let second = lock(&path).err().unwrap();
        assert!(second.to_string().contains("in use"), "{second}");
        drop(held);
        assert!(lock(&path).is_ok());
        assert!(dir.path().join("d.party.lock").exists());
    }
}
