//! Sealed shares on disk: per vault, a `current`, a `pending` and a `previous` file.
//!
//! These are the moves the atomic reshare makes: a new share is sealed as `pending`; when
//! every new party has confirmed, `promote` makes it `current` and keeps the old one as
//! `previous` (until the new epoch has signed once, then `drop_previous`); if the reshare
//! fails, `discard_pending`. Every write is a new file written, fsynced, renamed over the
//! old name and followed by an fsync of the directory, so a crash at any point leaves a
//! readable `current` (old or new, never half of one).
//!
//! ```text
//! <data>/shares/<vault_id>/current | pending | previous
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::actor::Sealer;
use crate::envelope::{Binding, Envelope, Purpose};
use crate::error::SealError;

/// A slot of a vault's share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Current,
    Pending,
    Previous,
}

impl Slot {
    pub fn name(self) -> &'static str {
        match self {
            Slot::Current => "current",
            Slot::Pending => "pending",
            Slot::Previous => "previous",
        }
    }
}

/// Which slots hold a share, with their epochs (read from the files' authenticated
/// headers; nothing is unsealed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotEpochs {
    pub current: Option<u64>,
    pub pending: Option<u64>,
    pub previous: Option<u64>,
}

/// Called at named points between writes; tests use it to kill the process there.
pub type FaultHook = Arc<dyn Fn(&str) + Send + Sync>;

pub struct ShareStore {
    root: PathBuf,
    sealer: Sealer,
    fault: Option<FaultHook>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SealError + '_ {
    move |e| SealError::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Vault ids become directory names: 1-64 characters of [A-Za-z0-9._-], not starting with
/// a dot, so none can escape the shares directory.
pub fn check_vault_id(v: &str) -> Result<(), SealError> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && !v.starts_with('.')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(SealError::Config(format!(
            "vault id {v:?} must be 1-64 characters of A-Z a-z 0-9 . _ - and not start with '.'"
        )))
    }
}

/// Writes `bytes` as `dir/name` atomically: a temporary file (mode 0600) written and
/// fsynced, renamed over the name, then the directory fsynced. `fault` is called between
/// the steps (tests kill the process there).
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    fault: &dyn Fn(&str),
) -> Result<(), SealError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fault(&format!("{name}: temporary file written"));
    fs::rename(&tmp, &target).map_err(io(&target))?;
    fault(&format!("{name}: renamed"));
    fsync_dir(dir)?;
    fault(&format!("{name}: directory synced"));
    Ok(())
}

fn fsync_dir(dir: &Path) -> Result<(), SealError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

impl ShareStore {
    /// `data_dir/shares`, created with mode 0700.
    pub fn open(data_dir: &Path, sealer: Sealer) -> Result<ShareStore, SealError> {
        let root = data_dir.join("shares");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(io(&root))?;
        Ok(ShareStore {
            root,
            sealer,
            fault: None,
        })
    }

    /// Installs a hook called at each step of the writes (tests inject crashes with it).
    pub fn set_fault_hook(&mut self, hook: FaultHook) {
        self.fault = Some(hook);
    }

    fn fault(&self, point: &str) {
        if let Some(f) = &self.fault {
            f(point);
        }
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    fn vault_dir(&self, vault: &str) -> Result<PathBuf, SealError> {
        check_vault_id(vault)?;
        Ok(self.root.join(vault))
    }

    fn path(&self, vault: &str, slot: Slot) -> Result<PathBuf, SealError> {
        Ok(self.vault_dir(vault)?.join(slot.name()))
    }

    fn write_atomic(&self, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SealError> {
        write_atomic(dir, name, bytes, &|point| self.fault(point))
    }

    /// Seals `share` as the vault's pending share (replacing an older pending one).
    pub async fn seal_pending(
        &self,
        vault: &str,
        party: [u8; 32],
        epoch: u64,
        share: &[u8],
    ) -> Result<(), SealError> {
        let dir = self.vault_dir(vault)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io(&dir))?;
        let binding = Binding {
            purpose: Purpose::Share,
            vault_id: vault.to_string(),
            party_id: party,
            epoch,
        };
        let file = self.sealer.seal(&binding, share).await?;
        self.write_atomic(&dir, Slot::Pending.name(), &file)
    }

    /// Unseals a slot. `epoch` (if given) must match the file's; the vault and party always
    /// must. Returns the file's epoch and the share.
    pub async fn load(
        &self,
        vault: &str,
        slot: Slot,
        party: [u8; 32],
        epoch: Option<u64>,
    ) -> Result<(u64, Zeroizing<Vec<u8>>), SealError> {
        let path = self.path(vault, slot)?;
        let file = match fs::read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SealError::Missing {
                    vault: vault.to_string(),
                    slot: slot.name(),
                });
            }
            Err(e) => return Err(io(&path)(e)),
        };
        let file_epoch = Envelope::parse(&file)?.binding.epoch;
        let expected = Binding {
            purpose: Purpose::Share,
            vault_id: vault.to_string(),
            party_id: party,
            epoch: epoch.unwrap_or(file_epoch),
        };
        let share = self.sealer.unseal(&file, &expected).await?;
        Ok((file_epoch, share))
    }

    /// The epochs in each slot, from the files' headers.
    pub fn slots(&self, vault: &str) -> Result<SlotEpochs, SealError> {
        let read = |slot: Slot| -> Result<Option<u64>, SealError> {
            let path = self.path(vault, slot)?;
            match fs::read(&path) {
                Ok(f) => Ok(Some(Envelope::parse(&f)?.binding.epoch)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io(&path)(e)),
            }
        };
        Ok(SlotEpochs {
            current: read(Slot::Current)?,
            pending: read(Slot::Pending)?,
            previous: read(Slot::Previous)?,
        })
    }

    /// Vaults with a share directory.
    pub fn vaults(&self) -> Result<Vec<String>, SealError> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.root).map_err(io(&self.root))? {
            let e = e.map_err(io(&self.root))?;
            if let Some(name) = e.file_name().to_str()
                && check_vault_id(name).is_ok()
                && e.path().is_dir()
            {
                out.push(name.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// Pending becomes current; the old current (if any) becomes previous. At every step the
    /// vault has a readable current share.
    pub fn promote(&self, vault: &str) -> Result<(), SealError> {
        let dir = self.vault_dir(vault)?;
        let pending = dir.join(Slot::Pending.name());
        let current = dir.join(Slot::Current.name());
        let new = fs::read(&pending).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SealError::Missing {
                vault: vault.to_string(),
                slot: "pending",
            },
            _ => io(&pending)(e),
        })?;
        Envelope::parse(&new)?; // never promote a file we could not read back
        match fs::read(&current) {
            Ok(old) => self.write_atomic(&dir, Slot::Previous.name(), &old)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&current)(e)),
        }
        self.fault("current: about to be replaced by pending");
        fs::rename(&pending, &current).map_err(io(&current))?;
        self.fault("current: renamed from pending");
        fsync_dir(&dir)?;
        self.fault("current: directory synced");
        Ok(())
    }

    /// Forgets a pending share (a reshare that did not complete).
    pub fn discard_pending(&self, vault: &str) -> Result<(), SealError> {
        self.remove(vault, Slot::Pending)
    }

    /// Forgets the previous epoch's share.
    pub fn drop_previous(&self, vault: &str) -> Result<(), SealError> {
        self.remove(vault, Slot::Previous)
    }

    fn remove(&self, vault: &str, slot: Slot) -> Result<(), SealError> {
        let dir = self.vault_dir(vault)?;
        let path = dir.join(slot.name());
        match fs::remove_file(&path) {
            Ok(()) => fsync_dir(&dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SealError::Missing {
                vault: vault.to_string(),
                slot: slot.name(),
            }),
            Err(e) => Err(io(&path)(e)),
        }
    }
}
