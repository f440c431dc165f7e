//! BIP-32 non-hardened derivation, so one vault serves many addresses.
//!
//! Hardened derivation needs the private key in one place, which a threshold key never is;
//! paths with hardened steps are refused with that reason rather than silently mangled.

use dkls23::protocols::derivation::{DerivData, MAX_CHILD_NUMBER};

use crate::curve::{PointBytes, decode_point, encode_point};
use crate::error::TssError;
use crate::secp::Party;

/// A parsed derivation path: the child numbers from the root.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DerivationPath(pub Vec<u32>);

impl DerivationPath {
    /// Parses `m/44/60/0/0/7` (the leading `m` is optional; empty or `m` is the root).
    pub fn parse(path: &str) -> Result<Self, TssError> {
        let err = |reason: String| TssError::Derivation {
            path: path.to_string(),
            reason,
        };
        let trimmed = path.trim();
        let rest = match trimmed {
            "" | "m" => return Ok(DerivationPath(Vec::new())),
            p => p.strip_prefix("m/").unwrap_or(p),
        };
        let mut out = Vec::new();
        for part in rest.split('/') {
            if part.ends_with('\'') || part.ends_with('h') || part.ends_with('H') {
                return Err(err(format!(
                    "step {part:?} is hardened; a threshold key can only derive non-hardened children"
                )));
            }
            let n: u32 = part
                .parse()
                .map_err(|_| err(format!("step {part:?} is not a number")))?;
            if n > MAX_CHILD_NUMBER {
                return Err(err(format!(
                    "step {n} is 2^31 or more (the hardened range)"
                )));
            }
            out.push(n);
        }
        if out.len() > 255 {
            return Err(err(format!("{} steps; at most 255", out.len())));
        }
        Ok(DerivationPath(out))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for DerivationPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "m")?;
        for c in &self.0 {
            write!(f, "/{c}")?;
        }
        Ok(())
    }
}

/// The public key at `path` below (`public_key`, `chain_code`). Public derivation does not
/// depend on any share, so the secret slot of the derivation state is left at zero.
pub fn derive_public_key(
    public_key: &PointBytes,
    chain_code: &[u8; 32],
    path: &DerivationPath,
) -> Result<PointBytes, TssError> {
    let pk = decode_point(public_key).ok_or_else(|| TssError::Derivation {
        path: path.to_string(),
        reason: "the vault public key is not a valid point".into(),
    })?;
    let mut data = DerivData::<k256::Secp256k1> {
        depth: 0,
        child_number: 0,
        parent_fingerprint: [0; 4],
        poly_point: k256::Scalar::ZERO,
        pk,
        chain_code: *chain_code,
    };
    for &child in &path.0 {
        data = data.derive_child(child).map_err(|e| TssError::Derivation {
            path: path.to_string(),
            reason: e.description,
        })?;
    }
    Ok(encode_point(&data.pk))
}

/// This party's share at `path`.
pub(crate) fn derive_party(party: &Party, path: &DerivationPath) -> Result<Party, TssError> {
    let mut current = party.clone();
    for &child in &path.0 {
        current = current
            .derive_child(child, |_| String::new())
            .map_err(|e| TssError::Derivation {
                path: path.to_string(),
                reason: e.description,
            })?;
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paths() {
        assert_eq!(
            DerivationPath::parse("m/44/60/0/0/7").unwrap().0,
            vec![44, 60, 0, 0, 7]
        );
        assert_eq!(DerivationPath::parse("44/60").unwrap().0, vec![44, 60]);
        assert!(DerivationPath::parse("m").unwrap().is_root());
        assert!(DerivationPath::parse("").unwrap().is_root());
        assert_eq!(DerivationPath::parse("m/1/2").unwrap().to_string(), "m/1/2");
    }

    #[test]
    fn refuses_bad_paths() {
        for p in ["m/44'/60", "m/1h", "m/x", "m//1", "m/2147483648", "n/1"] {
            let e = DerivationPath::parse(p).unwrap_err();
            assert!(matches!(e, TssError::Derivation { .. }), "{p}: {e}");
        }
        let long = format!("m{}", "/1".repeat(256));
        assert!(DerivationPath::parse(&long).is_err());
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// BIP-32 test vector 2: master public key and chain code, and the published public key
    /// of m/0. The daemon signs with dkls23's derivation while the Bitcoin decoder finds
    /// the vault's inputs and change with standard BIP-32; both must give this key.
    #[test]
    fn derivation_is_bip32() {
        let pk = PointBytes(
            unhex("03cbcaa9c98c877a26977d00825c956a238e8dddfbd322cce4f74b0b5bd6ace4a7")
                .try_into()
                .unwrap(),
        );
        let cc: [u8; 32] =
            unhex("60499f801b896d83179a4374aeb7822aaeaceaa0db1f85ee3e904c4defbd9689")
                .try_into()
                .unwrap();
        let m0 = derive_public_key(&pk, &cc, &DerivationPath::parse("m/0").unwrap()).unwrap();
        assert_eq!(
            m0.0.to_vec(),
            unhex("02fc9e5af0ac8d9b3cecfe2a888e2117ba3d089d8585886c9c826b6b22a98d12ea")
        );
        let root = derive_public_key(&pk, &cc, &DerivationPath::default()).unwrap();
        assert_eq!(root, pk);
    }
}
