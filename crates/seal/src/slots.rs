//! Sealed shares on disk: per vault, a `current`, a `pending` and a `previous` file.
//!
//! These are the moves the atomic reshare makes: a new share is sealed as `pending`; when
//! every new party has confirmed, `promote` makes it `current` and keeps the old one as
//! `previous` (until the new epoch has signed once, then `drop_previous`); a reshare that
//! is shown not to have committed anywhere ends with `discard_pending`; a dealer that left
//! the committee `retire`s (current becomes previous). Every write is a new file written,
//! fsynced, renamed over the old name and followed by an fsync of the directory, so a crash
//! at any point leaves a readable `current` (old or new, never half of one).
//!
//! Each sealed file is bound to its slot (see [`crate::envelope`]), so a move re-seals:
//! `previous` copied over `current` by someone who can write the directory is refused at
//! load. Beside each sealed slot the store keeps the party's public record of that epoch
//! (`<slot>.pub`, signed by the caller), so status and every cheap check read public facts
//! without unsealing; and a `commit` file, the caller's signed record of its latest commit.
//!
//! ```text
//! <data>/shares/<vault_id>/current | pending | previous       sealed shares
//!                          current.pub | pending.pub | previous.pub | commit
//! ```

use std::fs;
use std::os::unix::fs::DirBuilderExt;
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

    /// The public record kept beside the sealed slot.
    pub fn public_name(self) -> &'static str {
        match self {
            Slot::Current => "current.pub",
            Slot::Pending => "pending.pub",
            Slot::Previous => "previous.pub",
        }
    }

    pub const ALL: [Slot; 3] = [Slot::Current, Slot::Pending, Slot::Previous];
}

/// The commit record's file name.
pub const COMMIT_FILE: &str = "commit";

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
    cosigner_party::vault_id::check(v).map_err(SealError::Config)
}

/// Writes `bytes` as `dir/name` atomically ([`cosigner_party::files::write_atomic`]).
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    fault: &dyn Fn(&str),
) -> Result<(), SealError> {
    cosigner_party::files::write_atomic(dir, name, bytes, fault).map_err(write_error)
}

fn fsync_dir(dir: &Path) -> Result<(), SealError> {
    cosigner_party::files::sync_dir(dir).map_err(write_error)
}

fn write_error(e: cosigner_party::files::WriteError) -> SealError {
    SealError::Io {
        path: e.path.display().to_string(),
        detail: e.source.to_string(),
    }
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

    fn binding(vault: &str, slot: Slot, party: [u8; 32], epoch: u64) -> Binding {
        Binding {
            purpose: Purpose::Share,
            slot: Some(slot),
            vault_id: vault.to_string(),
            party_id: party,
            epoch,
        }
    }

    fn read(&self, vault: &str, slot: Slot) -> Result<Option<Vec<u8>>, SealError> {
        let path = self.path(vault, slot)?;
        match fs::read(&path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn read_required(&self, vault: &str, slot: Slot) -> Result<Vec<u8>, SealError> {
        self.read(vault, slot)?.ok_or_else(|| SealError::Missing {
            vault: vault.to_string(),
            slot: slot.name(),
        })
    }

    /// Seals `share` as the vault's pending share (replacing an older pending one), with
    /// `public` (the caller's signed public record) readable without unsealing.
    pub async fn seal_pending(
        &self,
        vault: &str,
        party: [u8; 32],
        epoch: u64,
        share: &[u8],
        public: &[u8],
    ) -> Result<(), SealError> {
        let dir = self.vault_dir(vault)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io(&dir))?;
        let binding = Self::binding(vault, Slot::Pending, party, epoch);
        let file = self.sealer.seal_with(&binding, public, share).await?;
        self.write_atomic(&dir, Slot::Pending.name(), &file)
    }

    /// Unseals a slot. `epoch` (if given) must match the file's; the vault, party and slot
    /// always must. Returns the file's epoch and the share.
    pub async fn load(
        &self,
        vault: &str,
        slot: Slot,
        party: [u8; 32],
        epoch: Option<u64>,
    ) -> Result<(u64, Zeroizing<Vec<u8>>), SealError> {
        let file = self.read_required(vault, slot)?;
        let file_epoch = Envelope::parse(&file)?.binding.epoch;
        let expected = Self::binding(vault, slot, party, epoch.unwrap_or(file_epoch));
        let share = self.sealer.unseal(&file, &expected).await?;
        Ok((file_epoch, share))
    }

    /// The clear part of a slot's file (the caller's signed public record) and its epoch,
    /// without unsealing. None if the slot is empty.
    pub fn public(&self, vault: &str, slot: Slot) -> Result<Option<(u64, Vec<u8>)>, SealError> {
        match self.read(vault, slot)? {
            None => Ok(None),
            Some(f) => {
                let env = Envelope::parse(&f)?;
                Ok(Some((env.binding.epoch, env.clear)))
            }
        }
    }

    /// Unseals `from` and seals the same share and public part as `to` (written atomically;
    /// `from` stays until the caller removes it).
    async fn reseal(
        &self,
        vault: &str,
        from: Slot,
        to: Slot,
        party: [u8; 32],
    ) -> Result<u64, SealError> {
        self.reseal_with(vault, from, to, party, None).await
    }

    async fn reseal_with(
        &self,
        vault: &str,
        from: Slot,
        to: Slot,
        party: [u8; 32],
        clear: Option<&[u8]>,
    ) -> Result<u64, SealError> {
        let file = self.read_required(vault, from)?;
        let env = Envelope::parse(&file)?;
        let epoch = env.binding.epoch;
        let share = self
            .sealer
            .unseal(&file, &Self::binding(vault, from, party, epoch))
            .await?;
        let clear = clear.unwrap_or(&env.clear);
        let moved = self
            .sealer
            .seal_with(&Self::binding(vault, to, party, epoch), clear, &share)
            .await?;
        let dir = self.vault_dir(vault)?;
        self.write_atomic(&dir, to.name(), &moved)?;
        Ok(epoch)
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
    /// vault has a readable current share, and running it again after a crash finishes it
    /// (a current of the pending epoch means only the pending file is left to remove).
    pub async fn promote(&self, vault: &str, party: [u8; 32]) -> Result<(), SealError> {
        let pending = self.read_required(vault, Slot::Pending)?;
        let new_epoch = Envelope::parse(&pending)?.binding.epoch;
        let current = match self.read(vault, Slot::Current)? {
            Some(f) => Some(Envelope::parse(&f)?.binding.epoch),
            None => None,
        };
        if current != Some(new_epoch) {
            if current.is_some() {
                self.reseal(vault, Slot::Current, Slot::Previous, party)
                    .await?;
                self.fault("previous: written from current");
            }
            self.fault("current: about to be replaced by pending");
            self.reseal(vault, Slot::Pending, Slot::Current, party)
                .await?;
            self.fault("current: written from pending");
        }
        self.remove(vault, Slot::Pending)?;
        self.fault("pending: removed");
        Ok(())
    }

    /// A dealer that left the committee: current becomes previous (kept until the new epoch
    /// has signed or the drop time passes), and nothing is current any more.
    pub async fn retire(&self, vault: &str, party: [u8; 32]) -> Result<(), SealError> {
        if self.read(vault, Slot::Current)?.is_none() {
            return Ok(()); // already retired (a crash after the move)
        }
        self.reseal(vault, Slot::Current, Slot::Previous, party)
            .await?;
        self.remove(vault, Slot::Current)
    }

    /// Replaces the public part of a slot's file (re-sealing the same share). For files
    /// migrated from format 1, which had none.
    pub async fn set_public(
        &self,
        vault: &str,
        slot: Slot,
        party: [u8; 32],
        public: &[u8],
    ) -> Result<(), SealError> {
        self.reseal_with(vault, slot, slot, party, Some(public))
            .await
            .map(|_| ())
    }

    /// Re-seals version-1 share files (from before slots were bound) with their slot.
    /// Returns what it migrated.
    pub async fn migrate(&self, party: [u8; 32]) -> Result<Vec<(String, Slot)>, SealError> {
        let mut done = Vec::new();
        for vault in self.vaults()? {
            for slot in Slot::ALL {
                let Some(file) = self.read(&vault, slot)? else {
                    continue;
                };
                let env = Envelope::parse(&file)?;
                if env.version != crate::envelope::LEGACY_VERSION {
                    continue;
                }
                let legacy = Binding {
                    slot: None,
                    ..Self::binding(&vault, slot, party, env.binding.epoch)
                };
                let share = self.sealer.unseal(&file, &legacy).await?;
                let moved = self
                    .sealer
                    .seal(
                        &Self::binding(&vault, slot, party, env.binding.epoch),
                        &share,
                    )
                    .await?;
                let dir = self.vault_dir(&vault)?;
                self.write_atomic(&dir, slot.name(), &moved)?;
                done.push((vault.clone(), slot));
            }
        }
        Ok(done)
    }

    /// Forgets a pending share (a keygen or reshare shown not to have committed).
    pub fn discard_pending(&self, vault: &str) -> Result<(), SealError> {
        self.remove(vault, Slot::Pending)
    }

    /// Forgets the previous epoch's share.
    pub fn drop_previous(&self, vault: &str) -> Result<(), SealError> {
        self.remove(vault, Slot::Previous)
    }

    /// Writes the vault's commit record (the caller signs it).
    pub fn write_commit(&self, vault: &str, bytes: &[u8]) -> Result<(), SealError> {
        let dir = self.vault_dir(vault)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io(&dir))?;
        self.write_atomic(&dir, COMMIT_FILE, bytes)
    }

    /// The vault's commit record, if any.
    pub fn read_commit(&self, vault: &str) -> Result<Option<Vec<u8>>, SealError> {
        let path = self.vault_dir(vault)?.join(COMMIT_FILE);
        match fs::read(&path) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
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
