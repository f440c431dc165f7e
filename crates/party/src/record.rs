//! The vault record: what a party must know about a vault besides its secret share.
//!
//! The engine's `VaultPublic` holds the key, chain code, committee (party ids) and public
//! shares; a party also needs every member's encryption key (to address point-to-point
//! messages) and name. The record travels in reshare requests (new parties start from it)
//! and is kept sealed together with the share ([`Held`]), so a ceremony only ever uses a
//! record that was authenticated by the sealing layer.

use cosigner_api::v1 as api;
use cosigner_tss::{Committee, KeyShare, PartyId, VaultPublic};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::keys::{Member, short};

const RECORD_MAGIC: &[u8; 4] = b"CVRC";
const HELD_MAGIC: &[u8; 4] = b"CHLD";
const VERSION: u8 = 1;
/// Larger than any real record (255 members); refuses absurd lengths before decoding.
const MAX_RECORD_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("vault record: {0}")]
    Format(String),
    #[error("vault record: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultRecord {
    pub public: VaultPublic,
    /// One per committee party, in the committee's (sorted id) order.
    pub members: Vec<Member>,
    pub created_at_ms: i64,
    pub last_reshare_at_ms: i64,
}

impl VaultRecord {
    pub fn new(
        public: VaultPublic,
        mut members: Vec<Member>,
        created_at_ms: i64,
        last_reshare_at_ms: i64,
    ) -> Result<Self, RecordError> {
        members.sort_by_key(|m| m.id);
        let ids: Vec<PartyId> = members.iter().map(|m| PartyId(m.id)).collect();
        if ids != public.committee.parties() {
            return Err(RecordError::Invalid(
                "members do not match the committee".into(),
            ));
        }
        Ok(VaultRecord {
            public,
            members,
            created_at_ms,
            last_reshare_at_ms,
        })
    }

    pub fn vault_id(&self) -> &str {
        &self.public.vault_id
    }

    pub fn epoch(&self) -> u64 {
        self.public.epoch
    }

    pub fn member(&self, id: &[u8; 32]) -> Option<&Member> {
        self.members.iter().find(|m| &m.id == id)
    }

    /// SHA-256 of what every party of the epoch agrees on: the engine's public record and
    /// every member's id, encryption key and name. Local times (`created_at_ms`,
    /// `last_reshare_at_ms`) are left out: each party sets its own. Endorsements and READY
    /// statements are over this hash.
    pub fn public_hash(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"cosigner/v1/vault-record\0");
        let public = postcard::to_allocvec(&self.public).unwrap_or_default();
        h.update((public.len() as u64).to_be_bytes());
        h.update(&public);
        h.update((self.members.len() as u64).to_be_bytes());
        for m in &self.members {
            h.update(m.id);
            h.update(m.encryption_key);
            h.update((m.name.len() as u64).to_be_bytes());
            h.update(m.name.as_bytes());
        }
        h.finalize().into()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = RECORD_MAGIC.to_vec();
        out.push(VERSION);
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(RecordError::Format(format!(
                "{} bytes; at most {MAX_RECORD_BYTES}",
                bytes.len()
            )));
        }
        let rest = bytes
            .strip_prefix(RECORD_MAGIC.as_slice())
            .ok_or_else(|| RecordError::Format("not a vault record (bad magic)".into()))?;
        let (v, rest) = rest
            .split_first()
            .ok_or_else(|| RecordError::Format("truncated".into()))?;
        if *v != VERSION {
            return Err(RecordError::Format(format!(
                "version {v}; this build reads {VERSION}"
            )));
        }
        let r: VaultRecord =
            postcard::from_bytes(rest).map_err(|e| RecordError::Format(e.to_string()))?;
        // Re-validate: the members must be the committee.
        VaultRecord::new(r.public, r.members, r.created_at_ms, r.last_reshare_at_ms)
    }

    /// The API view, with this party's slot epochs.
    pub fn to_api(&self, slots: Option<api::ShareSlots>) -> api::Vault {
        api::Vault {
            vault_id: self.public.vault_id.clone(),
            scheme: api::Scheme::EcdsaSecp256k1 as i32,
            public_key: self.public.public_key.0.to_vec(),
            chain_code: self.public.chain_code.to_vec(),
            committee: Some(committee_to_api(&self.public.committee, &self.members)),
            epoch: self.public.epoch,
            slots,
            created_at_ms: self.created_at_ms,
            last_reshare_at_ms: self.last_reshare_at_ms,
            state: "active".into(),
            problem: String::new(),
        }
    }
}

/// A committee as the API carries it, with indices from the sorted ids.
pub fn committee_to_api(c: &Committee, members: &[Member]) -> api::Committee {
    let mut out = members_to_api(u32::from(c.threshold()), members);
    for p in &mut out.parties {
        if let Ok(id) = <[u8; 32]>::try_from(p.party_id.as_slice()) {
            p.index = c
                .index_of(&PartyId(id))
                .map(|i| u32::from(i.as_u8()))
                .unwrap_or(0);
        }
    }
    out
}

/// A committee for a request (indices 0: every party recomputes them from the sorted ids).
pub fn members_to_api(threshold: u32, members: &[Member]) -> api::Committee {
    api::Committee {
        threshold,
        parties: members
            .iter()
            .map(|m| api::Party {
                party_id: m.id.to_vec(),
                encryption_key: m.encryption_key.to_vec(),
                name: m.name.clone(),
                index: 0,
            })
            .collect(),
    }
}

/// Reads a committee from a request: ids and encryption keys of 32 bytes, names checked,
/// threshold valid. Indices in the request are ignored (recomputed from the sorted ids).
pub fn committee_from_api(c: &api::Committee) -> Result<(Committee, Vec<Member>), RecordError> {
    let mut members = Vec::with_capacity(c.parties.len());
    for (i, p) in c.parties.iter().enumerate() {
        let id: [u8; 32] = p.party_id.as_slice().try_into().map_err(|_| {
            RecordError::Invalid(format!(
                "committee party {i}: party_id is {} bytes, not 32",
                p.party_id.len()
            ))
        })?;
        let encryption_key: [u8; 32] = p.encryption_key.as_slice().try_into().map_err(|_| {
            RecordError::Invalid(format!(
                "committee party {} ({i}): encryption_key is {} bytes, not 32",
                short(&id),
                p.encryption_key.len()
            ))
        })?;
        if p.name.len() > 64 || p.name.chars().any(|c| c.is_control()) {
            return Err(RecordError::Invalid(format!(
                "committee party {}: name must be at most 64 printable characters",
                short(&id)
            )));
        }
        members.push(Member {
            id,
            encryption_key,
            name: p.name.clone(),
        });
    }
    let threshold = u8::try_from(c.threshold)
        .map_err(|_| RecordError::Invalid(format!("threshold {} is too large", c.threshold)))?;
    let committee = Committee::new(threshold, members.iter().map(|m| PartyId(m.id)))
        .map_err(|e| RecordError::Invalid(e.to_string()))?;
    members.sort_by_key(|m| m.id);
    Ok((committee, members))
}

/// A share and its record, as one party keeps them (sealed by the daemon, passphrase-
/// encrypted by the device party). The encoding holds the secret share.
pub struct Held {
    pub record: VaultRecord,
    pub share: KeyShare,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("vault", &self.record.vault_id())
            .field("epoch", &self.record.epoch())
            .finish_non_exhaustive()
    }
}

impl Held {
    pub fn new(record: VaultRecord, share: KeyShare) -> Result<Self, RecordError> {
        if share.public() != &record.public {
            return Err(RecordError::Invalid(
                "the share and the record describe different vaults or epochs".into(),
            ));
        }
        Ok(Held { record, share })
    }

    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let record = self.record.encode();
        let share = self.share.encode();
        let mut out = Zeroizing::new(Vec::with_capacity(9 + record.len() + share.len()));
        out.extend_from_slice(HELD_MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&(record.len() as u32).to_be_bytes());
        out.extend_from_slice(&record);
        out.extend_from_slice(&share);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let rest = bytes
            .strip_prefix(HELD_MAGIC.as_slice())
            .ok_or_else(|| RecordError::Format("not a held share (bad magic)".into()))?;
        let (v, rest) = rest
            .split_first()
            .ok_or_else(|| RecordError::Format("truncated".into()))?;
        if *v != VERSION {
            return Err(RecordError::Format(format!(
                "held share version {v}; this build reads {VERSION}"
            )));
        }
        if rest.len() < 4 {
            return Err(RecordError::Format("truncated".into()));
        }
        let (len, rest) = rest.split_at(4);
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > rest.len() {
            return Err(RecordError::Format("truncated record".into()));
        }
        let (record, share) = rest.split_at(len);
        let record = VaultRecord::decode(record)?;
        let share = KeyShare::decode(share).map_err(|e| RecordError::Format(e.to_string()))?;
        Held::new(record, share)
    }
}
