//! A party's key share and the vault's public record, with a versioned encoding.
//!
//! Encoding of a share: `b"CSHR"`, one format-version byte, the postcard encoding of
//! (public record, party id, dkls23 party state), and a SHA-256 checksum of everything
//! before it. The checksum catches corruption (a flipped bit in the vault id would otherwise
//! decode as another, valid-looking share); protection against deliberate tampering is the
//! sealing layer's AEAD. The dkls23 state is that crate's own serde
//! form, which is why dkls23 is pinned with `=`: a new dkls23 needs a new format version and
//! a migration, never a silent reinterpretation. Decoding re-checks that the secret state
//! agrees with the public record (index, threshold, public key, chain code, own public
//! share), so a corrupted or mismatched file is refused, not used.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::curve::{PointBytes, decode_point, encode_point, mul_base};
use crate::derive::{DerivationPath, derive_public_key};
use crate::error::TssError;
use crate::party::{Committee, PartyId};
use crate::secp::Party;

/// Magic bytes at the start of an encoded share.
pub const SHARE_MAGIC: &[u8; 4] = b"CSHR";
/// Current share format version.
pub const SHARE_VERSION: u8 = 1;

/// What everyone may know about a vault at one epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VaultPublic {
    pub vault_id: String,
    pub epoch: u64,
    pub committee: Committee,
    /// The vault key; never changes across refresh and reshare.
    pub public_key: PointBytes,
    /// BIP-32 chain code; never changes either.
    pub chain_code: [u8; 32],
    /// The public share of each committee member, in protocol-index order (1..=n). The
    /// reshare checks each dealer's commitment against these.
    pub verifying_shares: Vec<PointBytes>,
}

impl VaultPublic {
    /// The public share of `p` at this epoch.
    pub fn verifying_share(&self, p: &PartyId) -> Option<PointBytes> {
        let i = self.committee.index_of(p)?;
        self.verifying_shares
            .get(usize::from(i.as_u8()) - 1)
            .copied()
    }

    /// The public key at a BIP-32 path (see [`crate::derive`]).
    pub fn derive(&self, path: &DerivationPath) -> Result<PointBytes, TssError> {
        derive_public_key(&self.public_key, &self.chain_code, path)
    }
}

/// One party's share of one vault at one epoch. Zeroized on drop (by dkls23's own `Drop`);
/// `Debug` prints only public facts.
pub struct KeyShare {
    pub(crate) public: VaultPublic,
    pub(crate) me: PartyId,
    pub(crate) state: Party,
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShare")
            .field("vault_id", &self.public.vault_id)
            .field("epoch", &self.public.epoch)
            .field("party", &self.me)
            .field("public_key", &self.public.public_key)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct WireRef<'a> {
    public: &'a VaultPublic,
    me: PartyId,
    state: &'a Party,
}

#[derive(Deserialize)]
struct Wire {
    public: VaultPublic,
    me: PartyId,
    state: Party,
}

impl KeyShare {
    pub(crate) fn new(public: VaultPublic, me: PartyId, state: Party) -> Result<Self, TssError> {
        let share = KeyShare { public, me, state };
        share.check()?;
        Ok(share)
    }

    pub fn public(&self) -> &VaultPublic {
        &self.public
    }

    pub fn party(&self) -> PartyId {
        self.me
    }

    pub fn epoch(&self) -> u64 {
        self.public.epoch
    }

    pub fn vault_id(&self) -> &str {
        &self.public.vault_id
    }

    /// The versioned encoding. Holds the secret share: seal it, never log or store it as is.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let wire = WireRef {
            public: &self.public,
            me: self.me,
            state: &self.state,
        };
        let body = Zeroizing::new(postcard::to_allocvec(&wire).unwrap_or_default());
        let mut out = Zeroizing::new(Vec::with_capacity(body.len() + 5 + 32));
        out.extend_from_slice(SHARE_MAGIC);
        out.push(SHARE_VERSION);
        out.extend_from_slice(&body);
        let sum: [u8; 32] = Sha256::digest(out.as_slice()).into();
        out.extend_from_slice(&sum);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<KeyShare, TssError> {
        let fmt = |m: String| TssError::ShareFormat(m);
        let rest = bytes
            .strip_prefix(SHARE_MAGIC.as_slice())
            .ok_or_else(|| fmt("not a cosigner key share (bad magic)".into()))?;
        let (version, body) = rest
            .split_first()
            .ok_or_else(|| fmt("truncated before the version byte".into()))?;
        if *version != SHARE_VERSION {
            return Err(fmt(format!(
                "format version {version}; this build reads version {SHARE_VERSION}"
            )));
        }
        let Some(split) = body.len().checked_sub(32) else {
            return Err(fmt("truncated before the checksum".into()));
        };
        let (body, sum) = body.split_at(split);
        let expected: [u8; 32] = Sha256::digest(&bytes[..bytes.len() - 32]).into();
        if !bool::from(expected.as_slice().ct_eq(sum)) {
            return Err(fmt(
                "checksum mismatch: the share is corrupted or truncated".into(),
            ));
        }
        let (wire, tail): (Wire, &[u8]) = postcard::take_from_bytes(body)
            .map_err(|e| fmt(format!("corrupt or truncated share ({e})")))?;
        if !tail.is_empty() {
            return Err(fmt(format!(
                "{} trailing bytes after the share",
                tail.len()
            )));
        }
        KeyShare::new(wire.public, wire.me, wire.state)
    }

    /// The secret state agrees with the public record.
    fn check(&self) -> Result<(), TssError> {
        let bad = |m: &str| Err(TssError::ShareFormat(format!("inconsistent share: {m}")));
        let c = &self.public.committee;
        let Some(idx) = c.index_of(&self.me) else {
            return bad("the party is not in the committee");
        };
        if self.state.party_index != idx {
            return bad("party index differs from the committee's");
        }
        if self.state.parameters.threshold != c.threshold()
            || self.state.parameters.share_count != c.size()
        {
            return bad("threshold or party count differs from the committee's");
        }
        if self.public.verifying_shares.len() != usize::from(c.size()) {
            return bad("one public share per party is needed");
        }
        if encode_point(&self.state.pk) != self.public.public_key {
            return bad("public key differs from the record");
        }
        if self.state.derivation_data.chain_code != self.public.chain_code {
            return bad("chain code differs from the record");
        }
        let own = self.public.verifying_shares[usize::from(idx.as_u8()) - 1];
        if decode_point(&own) != Some(mul_base(&self.state.poly_point)) {
            return bad("the secret share does not match this party's public share");
        }
        Ok(())
    }
}
