//! A share backup: one party's current share of one vault, with the party's identity keys,
//! in a passphrase box whose clear metadata says what it is.
//!
//! The identity keys travel with the share because the other parties know this party by its
//! identity key (party id) and address it by its encryption key: a restored share is only
//! usable by a machine that can act as that party. The metadata (vault, key, party, epoch,
//! threshold, committee, creation time) is authenticated by the box and checked against the
//! decrypted share when the backup is opened, so what an operator reads before opening is
//! what they get.

use cosigner_party::keys::hex;
use cosigner_party::{Held, PartyKeys};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::passbox::{self, BoxError, Costs, Kind};

/// What the `format` field says, so a stray JSON file is not taken for metadata.
const FORMAT: &str = "cosigner share backup v1";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackupError {
    #[error(transparent)]
    Box(#[from] BoxError),
    #[error("backup metadata: {0}")]
    Meta(String),
    #[error("the backup's contents are damaged: {0}")]
    Damaged(String),
    #[error("the backup's metadata does not match its share ({0}); refusing a forged file")]
    Mismatch(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaMember {
    pub party_id: String,
    pub name: String,
}

/// The clear, authenticated facts of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupMeta {
    pub format: String,
    pub vault_id: String,
    pub scheme: String,
    /// SEC1 compressed, hex.
    pub public_key: String,
    pub chain_code: String,
    /// The party whose share this is (its Ed25519 identity key, hex).
    pub party_id: String,
    pub party_name: String,
    pub epoch: u64,
    pub threshold: u32,
    pub committee: Vec<MetaMember>,
    pub created_at_ms: i64,
    /// Who wrote it ("cosignerd spiffe://...", "device <name>").
    pub source: String,
}

impl BackupMeta {
    fn of(held: &Held, source: &str, now_ms: i64) -> BackupMeta {
        let r = &held.record;
        let me = held.share.party().0;
        BackupMeta {
            format: FORMAT.into(),
            vault_id: r.vault_id().to_string(),
            scheme: "ecdsa-secp256k1".into(),
            public_key: hex(&r.public.public_key.0),
            chain_code: hex(&r.public.chain_code),
            party_id: hex(&me),
            party_name: r.member(&me).map(|m| m.name.clone()).unwrap_or_default(),
            epoch: r.epoch(),
            threshold: u32::from(r.public.committee.threshold()),
            committee: r
                .members
                .iter()
                .map(|m| MetaMember {
                    party_id: hex(&m.id),
                    name: m.name.clone(),
                })
                .collect(),
            created_at_ms: now_ms,
            source: source.to_string(),
        }
    }

    /// The facts that must equal the share's (everything but time and source).
    fn same_facts(&self, other: &BackupMeta) -> Result<(), String> {
        let pairs = [
            ("vault_id", &self.vault_id, &other.vault_id),
            ("public_key", &self.public_key, &other.public_key),
            ("chain_code", &self.chain_code, &other.chain_code),
            ("party_id", &self.party_id, &other.party_id),
            ("party_name", &self.party_name, &other.party_name),
        ];
        for (name, a, b) in pairs {
            if a != b {
                return Err(format!("{name} {a:?} vs {b:?}"));
            }
        }
        if self.epoch != other.epoch {
            return Err(format!("epoch {} vs {}", self.epoch, other.epoch));
        }
        if self.threshold != other.threshold || self.committee != other.committee {
            return Err("committee or threshold differ".into());
        }
        Ok(())
    }
}

/// An opened backup. Holds secrets: the identity keys and the share (both zeroized on drop).
pub struct ShareBackup {
    pub meta: BackupMeta,
    pub keys: PartyKeys,
    pub held: Held,
}

impl std::fmt::Debug for ShareBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareBackup")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// Writes a backup of `held` (which must be `keys`'s share) under `pass`.
pub fn export(
    keys: &PartyKeys,
    held: &Held,
    pass: &[u8],
    source: &str,
    now_ms: i64,
) -> Result<Vec<u8>, BackupError> {
    export_with(keys, held, pass, source, now_ms, Costs::DEFAULT)
}

/// As [`export`] with explicit Argon2 costs (tests use cheap ones).
pub fn export_with(
    keys: &PartyKeys,
    held: &Held,
    pass: &[u8],
    source: &str,
    now_ms: i64,
    costs: Costs,
) -> Result<Vec<u8>, BackupError> {
    if held.share.party().0 != keys.party_id() {
        return Err(BackupError::Mismatch(
            "the share is not this party's".into(),
        ));
    }
    let meta = BackupMeta::of(held, source, now_ms);
    let meta = serde_json::to_vec(&meta).map_err(|e| BackupError::Meta(e.to_string()))?;
    let identity = keys.to_secret_bytes();
    let share = held.encode();
    let mut secret = Zeroizing::new(Vec::with_capacity(64 + share.len()));
    secret.extend_from_slice(identity.as_ref());
    secret.extend_from_slice(&share);
    Ok(passbox::seal(
        Kind::ShareBackup,
        &meta,
        &secret,
        pass,
        costs,
    )?)
}

/// The clear metadata, without the passphrase. Not yet trusted: only [`open`] checks it.
pub fn inspect(bytes: &[u8]) -> Result<BackupMeta, BackupError> {
    let h = passbox::header(bytes)?;
    if h.kind != Kind::ShareBackup {
        return Err(BoxError::Kind {
            expected: Kind::ShareBackup.describe(),
            found: h.kind.describe(),
        }
        .into());
    }
    parse_meta(h.meta)
}

fn parse_meta(meta: &[u8]) -> Result<BackupMeta, BackupError> {
    let m: BackupMeta =
        serde_json::from_slice(meta).map_err(|e| BackupError::Meta(e.to_string()))?;
    if m.format != FORMAT {
        return Err(BackupError::Meta(format!(
            "format {:?}; this build reads {FORMAT:?}",
            m.format
        )));
    }
    Ok(m)
}

/// Opens a backup: decrypts, decodes the identity and the share, and checks that the
/// metadata describes exactly that share and that the share is the identity's.
pub fn open(bytes: &[u8], pass: &[u8]) -> Result<ShareBackup, BackupError> {
    let (h, plain) = passbox::open(bytes, Kind::ShareBackup, pass)?;
    let meta = parse_meta(h.meta)?;
    if plain.len() < 64 {
        return Err(BackupError::Damaged("truncated identity".into()));
    }
    let mut id = Zeroizing::new([0u8; 64]);
    id.copy_from_slice(&plain[..64]);
    let keys = PartyKeys::from_secret_bytes(&id);
    let held = Held::decode(&plain[64..]).map_err(|e| BackupError::Damaged(e.to_string()))?;
    if held.share.party().0 != keys.party_id() {
        return Err(BackupError::Mismatch(
            "the share belongs to another party than the identity".into(),
        ));
    }
    let own = held
        .record
        .member(&keys.party_id())
        .ok_or_else(|| BackupError::Mismatch("the party is not in the vault's committee".into()))?;
    if own.encryption_key != keys.encryption_public() {
        return Err(BackupError::Mismatch(
            "the identity's encryption key is not the committee's".into(),
        ));
    }
    meta.same_facts(&BackupMeta::of(&held, "", 0))
        .map_err(BackupError::Mismatch)?;
    Ok(ShareBackup { meta, keys, held })
}
