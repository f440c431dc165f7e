//! secp256k1 helpers: fixed-size encodings and the few formulas the engine computes itself
//! (Lagrange coefficients, Feldman checks, ECDSA verification).

use k256::elliptic_curve::PrimeField;
use k256::elliptic_curve::group::GroupEncoding;
use k256::{AffinePoint, ProjectivePoint, Scalar};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A SEC1 compressed point (33 bytes). Serialized as bytes because serde derives stop at
/// 32-element arrays.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PointBytes(pub [u8; 33]);

impl std::fmt::Debug for PointBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", hex(&self.0))
    }
}

impl Serialize for PointBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for PointBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PointBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("33 bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<PointBytes, E> {
                v.try_into()
                    .map(PointBytes)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(V)
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    ::hex::encode(b)
}

pub(crate) fn encode_point(p: &AffinePoint) -> PointBytes {
    let mut out = [0u8; 33];
    out.copy_from_slice(p.to_bytes().as_slice());
    PointBytes(out)
}

/// Decodes a compressed point. The identity is 33 zero bytes (k256's fixed-width form);
/// callers that need a non-identity point check for it.
pub(crate) fn decode_point(b: &PointBytes) -> Option<AffinePoint> {
    let mut repr = <AffinePoint as GroupEncoding>::Repr::default();
    AsMut::<[u8]>::as_mut(&mut repr).copy_from_slice(&b.0);
    Option::from(AffinePoint::from_bytes(&repr))
}

pub(crate) fn encode_scalar(s: &Scalar) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(s.to_repr().as_slice());
    out
}

pub(crate) fn decode_scalar(b: &[u8; 32]) -> Option<Scalar> {
    let mut repr = <Scalar as PrimeField>::Repr::default();
    AsMut::<[u8]>::as_mut(&mut repr).copy_from_slice(b);
    Option::from(Scalar::from_repr(repr))
}

/// Lagrange coefficient at zero of index `i` over the index set `set` (which contains `i`).
pub(crate) fn lagrange_at_zero(i: u8, set: &[u8]) -> Option<Scalar> {
    let xi = Scalar::from(u64::from(i));
    let mut num = Scalar::ONE;
    let mut den = Scalar::ONE;
    for &j in set.iter().filter(|&&j| j != i) {
        let xj = Scalar::from(u64::from(j));
        num *= xj;
        den *= xj - xi;
    }
    Option::<Scalar>::from(den.invert()).map(|inv| num * inv)
}

/// Evaluates the polynomial with `coeffs` (constant term first) at `x`.
pub(crate) fn eval_poly(coeffs: &[Scalar], x: u8) -> Scalar {
    let x = Scalar::from(u64::from(x));
    coeffs.iter().rev().fold(Scalar::ZERO, |acc, c| acc * x + c)
}

/// Evaluates Feldman commitments (constant term first) "in the exponent" at `x`.
pub(crate) fn eval_commitments(commitments: &[ProjectivePoint], x: u8) -> ProjectivePoint {
    let x = Scalar::from(u64::from(x));
    commitments
        .iter()
        .rev()
        .fold(ProjectivePoint::IDENTITY, |acc, c| acc * x + c)
}

pub(crate) fn mul_base(s: &Scalar) -> AffinePoint {
    (ProjectivePoint::GENERATOR * s).to_affine()
}

/// Verifies an ECDSA signature (r, s) over a 32-byte prehash with k256's own verifier,
/// independently of the threshold library that produced it.
pub fn verify_ecdsa(public_key: &PointBytes, hash: &[u8; 32], r: &[u8; 32], s: &[u8; 32]) -> bool {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let Ok(vk) = k256::ecdsa::VerifyingKey::from_sec1_bytes(&public_key.0) else {
        return false;
    };
    let mut rs = [0u8; 64];
    rs[..32].copy_from_slice(r);
    rs[32..].copy_from_slice(s);
    let Ok(sig) = k256::ecdsa::Signature::from_slice(&rs) else {
        return false;
    };
    vk.verify_prehash(hash, &sig).is_ok()
}

/// DER encoding of an ECDSA signature (SEQUENCE of two positive INTEGERs), as Bitcoin and
/// OpenSSL expect it.
pub fn der_signature(r: &[u8; 32], s: &[u8; 32]) -> Vec<u8> {
    fn int(v: &[u8]) -> Vec<u8> {
        let mut v: Vec<u8> = v.iter().copied().skip_while(|b| *b == 0).collect();
        if v.is_empty() || v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, v.len() as u8];
        out.extend(v);
        out
    }
    let (r, s) = (int(r), int(s));
    let mut out = vec![0x30, (r.len() + s.len()) as u8];
    out.extend(r);
    out.extend(s);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lagrange_reconstructs_constant_term() {
        let coeffs = [Scalar::from(7u64), Scalar::from(3u64), Scalar::from(11u64)];
        let set = [2u8, 4, 5];
        let mut acc = Scalar::ZERO;
        for &i in &set {
            acc += lagrange_at_zero(i, &set).unwrap() * eval_poly(&coeffs, i);
        }
        assert_eq!(acc, coeffs[0]);
    }

    #[test]
    fn feldman_matches_evaluation() {
        let coeffs = [Scalar::from(5u64), Scalar::from(9u64)];
        let comms: Vec<ProjectivePoint> = coeffs
            .iter()
            .map(|c| ProjectivePoint::GENERATOR * c)
            .collect();
        assert_eq!(
            eval_commitments(&comms, 3).to_affine(),
            mul_base(&eval_poly(&coeffs, 3))
        );
    }

    #[test]
    fn point_round_trip_and_garbage() {
        let p = mul_base(&Scalar::from(42u64));
        assert_eq!(decode_point(&encode_point(&p)), Some(p));
        assert_eq!(decode_point(&PointBytes([0xff; 33])), None);
        assert_eq!(decode_scalar(&[0xff; 32]), None);
    }
}
