//! The software sealer, for development only: the data key is encrypted under a 32-byte
//! master key kept in a file (mode 0600). Anyone who copies the data directory *and* that
//! file has the shares; the daemon refuses this backend unless the configuration says
//! `allow_insecure_software_seal = true`, and warns at every start.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::error::SealError;
use crate::tpm::SealedKey;

const AAD: &[u8] = b"cosigner/seal/v1/software";
const PUBLIC_TAG: &[u8] = b"software-v1";

pub struct SoftwareKey {
    key: Zeroizing<[u8; 32]>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SealError + '_ {
    move |e| SealError::Io {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

impl SoftwareKey {
    /// Loads the master key, creating it (mode 0600) if the file does not exist. A key file
    /// readable by group or others is refused.
    pub fn open_or_create(path: &Path) -> Result<SoftwareKey, SealError> {
        match std::fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(SealError::Config(format!(
                        "{}: mode {mode:o} lets others read the software seal key; chmod 600 it",
                        path.display()
                    )));
                }
                let bytes = Zeroizing::new(std::fs::read(path).map_err(io(path))?);
                let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    SealError::Config(format!(
                        "{}: a software seal key is exactly 32 bytes",
                        path.display()
                    ))
                })?;
                Ok(SoftwareKey {
                    key: Zeroizing::new(key),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = Zeroizing::new([0u8; 32]);
                rand::rngs::OsRng.fill_bytes(key.as_mut());
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io(path))?;
                f.write_all(key.as_ref()).map_err(io(path))?;
                f.sync_all().map_err(io(path))?;
                Ok(SoftwareKey { key })
            }
            Err(e) => Err(io(path)(e)),
        }
    }

    pub fn seal_key(&self, data_key: &[u8; 32]) -> Result<SealedKey, SealError> {
        let cipher =
            Aes256Gcm::new_from_slice(self.key.as_ref()).map_err(|_| SealError::Decrypt)?;
        let mut nonce = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: data_key,
                    aad: AAD,
                },
            )
            .map_err(|_| SealError::Format("encryption failed".into()))?;
        let mut private = nonce.to_vec();
        private.extend(ct);
        Ok(SealedKey {
            private,
            public: PUBLIC_TAG.to_vec(),
        })
    }

    pub fn unseal_key(&self, sealed: &SealedKey) -> Result<Zeroizing<[u8; 32]>, SealError> {
        if sealed.public != PUBLIC_TAG || sealed.private.len() < 12 {
            return Err(SealError::Format("not a software-sealed key".into()));
        }
        let cipher =
            Aes256Gcm::new_from_slice(self.key.as_ref()).map_err(|_| SealError::Decrypt)?;
        let (nonce, ct) = sealed.private.split_at(12);
        let pt = Zeroizing::new(
            cipher
                .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: AAD })
                .map_err(|_| SealError::ForeignTpm)?,
        );
        let key: [u8; 32] = pt.as_slice().try_into().map_err(|_| SealError::Decrypt)?;
        Ok(Zeroizing::new(key))
    }
}
