//! The party's identity keys: Ed25519 (signs requests and ceremony envelopes; its public key
//! is the party id) and X25519 (receives encrypted point-to-point messages). Created at first
//! start and sealed like a share, in `<data>/identity`.

use std::fs;
use std::path::Path;

use ed25519_dalek::SigningKey;
use rand::rngs::OsRng;
use x25519_dalek::{PublicKey as XPublic, StaticSecret};
use zeroize::Zeroizing;

use crate::actor::Sealer;
use crate::envelope::{Binding, Envelope, Purpose};
use crate::error::SealError;

pub struct Identity {
    signing: SigningKey,
    encryption: StaticSecret,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        f.debug_struct("Identity")
            .field("party_id", &hex(&self.party_id()))
            .field("encryption_key", &hex(&self.encryption_public()))
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The Ed25519 public key: this party's id everywhere.
    pub fn party_id(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    pub fn encryption_public(&self) -> [u8; 32] {
        XPublic::from(&self.encryption).to_bytes()
    }

    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    pub fn encryption_secret(&self) -> &StaticSecret {
        &self.encryption
    }

    fn binding(party_id: [u8; 32]) -> Binding {
        Binding {
            purpose: Purpose::Identity,
            slot: None,
            vault_id: String::new(),
            party_id,
            epoch: 0,
        }
    }

    /// Keys from their 64 secret bytes (Ed25519 seed, then X25519 secret).
    fn from_secret(secret: &[u8]) -> Identity {
        let mut sk = Zeroizing::new([0u8; 32]);
        sk.copy_from_slice(&secret[..32]);
        let mut xk = Zeroizing::new([0u8; 32]);
        xk.copy_from_slice(&secret[32..64]);
        Identity {
            signing: SigningKey::from_bytes(&sk),
            encryption: StaticSecret::from(*xk),
        }
    }

    /// Replaces `<data_dir>/identity` with the keys in `secret` (Ed25519 seed, then X25519
    /// secret), sealed to this machine's backend. Used when a replacement machine takes over
    /// a lost party's identity from its backup; the caller checks that nothing here depends
    /// on the old identity.
    pub async fn adopt(
        data_dir: &Path,
        sealer: &Sealer,
        secret: &[u8; 64],
    ) -> Result<Identity, SealError> {
        let id = Self::from_secret(secret);
        let file = sealer.seal(&Self::binding(id.party_id()), secret).await?;
        crate::slots::write_atomic(data_dir, "identity", &file, &|_| {})?;
        Ok(id)
    }

    /// Loads `<data_dir>/identity`, or creates and seals new keys if there is none.
    /// Returns the identity and whether it was created now.
    pub async fn load_or_create(
        data_dir: &Path,
        sealer: &Sealer,
    ) -> Result<(Identity, bool), SealError> {
        let path = data_dir.join("identity");
        let io = |e: std::io::Error| SealError::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        };
        match fs::read(&path) {
            Ok(file) => {
                let party = Envelope::parse(&file)?.binding.party_id;
                let secret = sealer.unseal(&file, &Self::binding(party)).await?;
                if secret.len() != 64 {
                    return Err(SealError::Format(
                        "identity holds the wrong number of bytes".into(),
                    ));
                }
                let id = Self::from_secret(&secret);
                if id.party_id() != party {
                    return Err(SealError::Binding(
                        "the identity file's header names another key".into(),
                    ));
                }
                Ok((id, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = Zeroizing::new([0u8; 32]);
                rand::RngCore::fill_bytes(&mut OsRng, seed.as_mut());
                let id = Identity {
                    signing: SigningKey::from_bytes(&seed),
                    encryption: StaticSecret::random_from_rng(OsRng),
                };
                let mut secret = Zeroizing::new(Vec::with_capacity(64));
                secret.extend_from_slice(&id.signing.to_bytes());
                secret.extend_from_slice(id.encryption.as_bytes());
                let file = sealer.seal(&Self::binding(id.party_id()), &secret).await?;
                crate::slots::write_atomic(data_dir, "identity", &file, &|_| {})?;
                Ok((id, true))
            }
            Err(e) => Err(io(e)),
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
    let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
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
