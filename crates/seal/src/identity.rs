//! The party's identity keys: Ed25519 (signs requests and ceremony envelopes; its public key
//! is the party id) and X25519 (receives encrypted point-to-point messages). Created at first
//! start and sealed like a share, in `<data>/identity`.

use std::fs;
use std::path::Path;

use cosigner_party::PartyKeys;
use zeroize::Zeroizing;

use crate::actor::Sealer;
use crate::envelope::{Binding, Envelope, Purpose};
use crate::error::SealError;

/// The daemon's identity file: [`PartyKeys`] (the one identity key type, shared with the
/// device party and the backups) sealed like a share, in `<data_dir>/identity`.
pub struct Identity;

impl Identity {
    fn binding(party_id: [u8; 32]) -> Binding {
        Binding {
            purpose: Purpose::Identity,
            slot: None,
            vault_id: String::new(),
            party_id,
            epoch: 0,
        }
    }

    async fn write(data_dir: &Path, sealer: &Sealer, keys: &PartyKeys) -> Result<(), SealError> {
        let secret = keys.to_secret_bytes();
        let file = sealer
            .seal(&Self::binding(keys.party_id()), secret.as_ref())
            .await?;
        crate::slots::write_atomic(data_dir, "identity", &file, &|_| {})
    }

    /// Replaces `<data_dir>/identity` with `keys`, sealed to this machine's backend. Used
    /// when a replacement machine takes over a lost party's identity from its backup; the
    /// caller checks that nothing here depends on the old identity.
    pub async fn adopt(
        data_dir: &Path,
        sealer: &Sealer,
        keys: &PartyKeys,
    ) -> Result<(), SealError> {
        Self::write(data_dir, sealer, keys).await
    }

    /// Loads `<data_dir>/identity`, or creates and seals new keys if there is none.
    /// Returns the keys and whether they were created now.
    pub async fn load_or_create(
        data_dir: &Path,
        sealer: &Sealer,
    ) -> Result<(PartyKeys, bool), SealError> {
        let path = data_dir.join("identity");
        match fs::read(&path) {
            Ok(file) => {
                let party = Envelope::parse(&file)?.binding.party_id;
                let secret = sealer.unseal(&file, &Self::binding(party)).await?;
                let bytes: Zeroizing<[u8; 64]> =
                    Zeroizing::new(secret.as_slice().try_into().map_err(|_| {
                        SealError::Format("identity holds the wrong number of bytes".into())
                    })?);
                let keys = PartyKeys::from_secret_bytes(&bytes);
                if keys.party_id() != party {
                    return Err(SealError::Binding(
                        "the identity file's header names another key".into(),
                    ));
                }
                Ok((keys, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let keys = PartyKeys::generate();
                Self::write(data_dir, sealer, &keys).await?;
                Ok((keys, true))
            }
            Err(e) => Err(SealError::Io {
                path: path.display().to_string(),
                detail: e.to_string(),
            }),
        }
    }
}

/// Pins the TPM's storage primary to the data directory: its name is written to
/// `<data_dir>/tpm-primary` at the first start and compared at every later one, before
/// anything is unsealed. Sessions are salted to that primary, so a different primary means
/// another TPM, a cleared owner hierarchy, or something in the middle that would receive
/// the unsealed keys; the daemon refuses to use it. Returns true when the pin was written
/// now. The software sealer has no primary and nothing is pinned.
pub fn check_primary(data_dir: &Path, sealer: &Sealer) -> Result<bool, SealError> {
    let Some(name) = sealer.primary_name() else {
        return Ok(false);
    };
    let path = data_dir.join("tpm-primary");
    let hex = ::hex::encode(name);
    match fs::read_to_string(&path) {
        Ok(pinned) if pinned.trim() == hex => Ok(false),
        Ok(pinned) => Err(SealError::Tpm(format!(
            "the TPM's storage primary ({hex}) is not the one pinned in {} at this data directory's first start ({}): this is another TPM, its owner hierarchy was cleared, or something stands between the daemon and the TPM. Nothing was unsealed. If the TPM was replaced on purpose, restore the vaults from backups into a fresh data directory",
            path.display(),
            pinned.trim()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::slots::write_atomic(
                data_dir,
                "tpm-primary",
                format!("{hex}\n").as_bytes(),
                &|_| {},
            )?;
            Ok(true)
        }
        Err(e) => Err(SealError::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        }),
    }
}
