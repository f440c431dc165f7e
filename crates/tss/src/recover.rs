//! Emergency recovery: the vault's private key rebuilt from t shares of one epoch.
//!
//! This is the end of the threshold property for that vault: whoever holds the output holds
//! the whole key, alone. It exists for the day the co-signing infrastructure is gone (the
//! service shut down, the devices lost beyond t - 1), so funds are not lost with it. The key
//! is only returned after it was checked against the vault's public key, so a wrong mix of
//! shares cannot hand back a plausible-looking but useless key.

use zeroize::{Zeroize, Zeroizing};

use crate::curve::{PointBytes, encode_point, encode_scalar, lagrange_at_zero, mul_base};
use crate::derive::DerivationPath;
use crate::error::TssError;
use crate::share::KeyShare;

/// The rebuilt key. Zeroized on drop; `Debug` prints the public key only.
pub struct RecoveredKey {
    secret: Zeroizing<[u8; 32]>,
    public_key: PointBytes,
    chain_code: [u8; 32],
}

impl std::fmt::Debug for RecoveredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveredKey")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// One derived private key: its 32-byte secret and SEC1 compressed public key.
pub struct DerivedKey {
    pub secret: Zeroizing<[u8; 32]>,
    pub public_key: PointBytes,
}

fn refuse(m: impl Into<String>) -> TssError {
    TssError::InvalidParameters(m.into())
}

/// Rebuilds the key from `shares`: all of one vault and one epoch, at least its threshold,
/// from distinct parties. Every share was already checked against its own public record
/// when it was decoded; here the records must be the same one.
pub fn recover_key(shares: &[&KeyShare]) -> Result<RecoveredKey, TssError> {
    let Some(first) = shares.first() else {
        return Err(refuse("no shares given"));
    };
    let public = first.public();
    for s in &shares[1..] {
        if s.vault_id() != public.vault_id {
            return Err(refuse(format!(
                "shares of two vaults ({:?} and {:?}); recovery needs shares of one vault",
                public.vault_id,
                s.vault_id()
            )));
        }
        if s.epoch() != public.epoch {
            return Err(refuse(format!(
                "shares of epochs {} and {} of vault {:?}; shares of different epochs do not combine (every reshare replaced them all); use backups of one epoch",
                public.epoch,
                s.epoch(),
                public.vault_id
            )));
        }
        if s.public() != public {
            return Err(refuse(format!(
                "two shares of vault {:?} epoch {} disagree on the vault's public record",
                public.vault_id, public.epoch
            )));
        }
    }
    let t = usize::from(public.committee.threshold());
    let mut indices: Vec<u8> = shares.iter().map(|s| s.state.party_index.as_u8()).collect();
    indices.sort_unstable();
    indices.dedup();
    if indices.len() != shares.len() {
        return Err(refuse(
            "the same party's share was given twice; each backup must be of another party",
        ));
    }
    if shares.len() < t {
        return Err(refuse(format!(
            "{} share(s) of a {t}-of-{} vault; at least {t} are needed",
            shares.len(),
            public.committee.size()
        )));
    }
    // Any t of them determine the polynomial; use exactly t (more would add nothing).
    let used = &shares[..t];
    let set: Vec<u8> = used.iter().map(|s| s.state.party_index.as_u8()).collect();
    let mut secret = k256::Scalar::ZERO;
    for s in used {
        let i = s.state.party_index.as_u8();
        let l = lagrange_at_zero(i, &set).ok_or_else(|| refuse("repeated party index"))?;
        secret += l * s.state.poly_point;
    }
    let key = RecoveredKey {
        secret: Zeroizing::new(encode_scalar(&secret)),
        public_key: public.public_key,
        chain_code: public.chain_code,
    };
    secret.zeroize();
    if encode_point(&mul_base(&key.scalar())) != public.public_key {
        return Err(refuse(
            "the rebuilt key does not match the vault's public key: a share is damaged or forged",
        ));
    }
    Ok(key)
}

impl RecoveredKey {
    fn scalar(&self) -> k256::Scalar {
        crate::curve::decode_scalar(&self.secret).unwrap_or(k256::Scalar::ZERO)
    }

    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    pub fn public_key(&self) -> &PointBytes {
        &self.public_key
    }

    /// The private key at a non-hardened BIP-32 path (the same derivation the vault signs
    /// with), checked against the public derivation.
    pub fn derive(&self, path: &DerivationPath) -> Result<DerivedKey, TssError> {
        use dkls23::protocols::derivation::DerivData;
        let pk = crate::curve::decode_point(&self.public_key)
            .ok_or_else(|| refuse("the vault public key is not a valid point"))?;
        let mut data = DerivData::<k256::Secp256k1> {
            depth: 0,
            child_number: 0,
            parent_fingerprint: [0; 4],
            poly_point: self.scalar(),
            pk,
            chain_code: self.chain_code,
        };
        for &child in &path.0 {
            data = data.derive_child(child).map_err(|e| TssError::Derivation {
                path: path.to_string(),
                reason: e.description,
            })?;
        }
        let public_key = encode_point(&data.pk);
        if encode_point(&mul_base(&data.poly_point)) != public_key {
            return Err(refuse(format!("derivation at {path} is inconsistent")));
        }
        let out = DerivedKey {
            secret: Zeroizing::new(encode_scalar(&data.poly_point)),
            public_key,
        };
        data.poly_point.zeroize();
        Ok(out)
    }
}
