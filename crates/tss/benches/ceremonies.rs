//! Each ceremony through the engine (all parties in one thread, every message encoded,
//! decoded and checked) beside the same ceremony driven directly on dkls23 (all parties in
//! one thread, messages passed as Rust values). The ratio engine / raw is the engine's cost.
//!
//! The raw reshare has no dkls23 counterpart: it deals the same polynomials by direct
//! evaluation and runs dkls23's DKG phases 2-4, without Feldman commitments, their checks or
//! any framing, so its ratio also contains the verification work the engine adds.
//!
//! Run: `cargo bench -p cosigner-tss --bench ceremonies`. Message bytes per ceremony are
//! printed once at start.
// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use cosigner_tss::local;
use cosigner_tss::*;
use criterion::{Criterion, criterion_group, criterion_main};
use dkls23::DkgSession;
use dkls23::protocols::dkg::{BroadcastDerivationPhase2to4, BroadcastDerivationPhase3to4};
use dkls23::protocols::signing::SignData;
use dkls23::protocols::{Parameters, Party, PartyIndex};
use k256::Secp256k1;
use k256::elliptic_curve::Field;

type P = Party<Secp256k1>;

fn ids(n: usize) -> Vec<PartyId> {
    (0..n).map(|i| PartyId([i as u8 + 1; 32])).collect()
}

// ---------- engine ----------

fn engine_keygen(t: u8, parties: &[PartyId]) -> (Vec<KeyShare>, usize) {
    let committee = Committee::new(t, parties.iter().copied()).unwrap();
    let m = parties
        .iter()
        .map(|p| {
            Keygen::new(
                KeygenParams {
                    vault_id: "bench".into(),
                    committee: committee.clone(),
                    nonce: [1; 32],
                },
                *p,
            )
            .unwrap()
        })
        .collect();
    local::run(m).unwrap()
}

fn engine_sign(shares: &[&KeyShare]) -> usize {
    let signers: Vec<PartyId> = shares.iter().map(|s| s.party()).collect();
    let m = shares
        .iter()
        .map(|s| {
            Sign::new(
                s,
                SignParams {
                    signers: signers.clone(),
                    message_hash: [42; 32],
                    path: DerivationPath::default(),
                    nonce: [2; 32],
                },
            )
            .unwrap()
        })
        .collect();
    local::run(m).unwrap().1
}

fn engine_refresh(shares: &[KeyShare]) -> usize {
    let m = shares
        .iter()
        .map(|s| Refresh::new(s, RefreshParams { nonce: [3; 32] }).unwrap())
        .collect();
    local::run(m).unwrap().1
}

fn engine_reshare_2of3_to_3of4(shares: &[KeyShare]) -> usize {
    let old = shares[0].public().clone();
    let p: Vec<PartyId> = shares.iter().map(|s| s.party()).collect();
    let newcomer = PartyId([99; 32]);
    let committee = Committee::new(3, [p[0], p[1], p[2], newcomer]).unwrap();
    let params = || ReshareParams {
        old: old.clone(),
        dealers: vec![p[0], p[1]],
        new_committee: committee.clone(),
        nonce: [4; 32],
    };
    let mut m: Vec<Reshare> = shares
        .iter()
        .map(|s| Reshare::new(params(), s.party(), Some(s)).unwrap())
        .collect();
    m.push(Reshare::new(params(), newcomer, None).unwrap());
    local::run(m).unwrap().1
}

// ---------- raw dkls23 ----------

fn idx(i: u8) -> PartyIndex {
    PartyIndex::new(i).unwrap()
}

/// dkls23's DKG for all parties from given round-1 fragments (`frags[j]` = what party j+1
/// received).
fn raw_dkg_from(params: &Parameters, sid: &[u8], frags: Vec<Vec<k256::Scalar>>) -> Vec<P> {
    let n = params.share_count;
    let mut sessions: Vec<DkgSession<Secp256k1>> = (1..=n)
        .map(|i| DkgSession::new(params.clone(), idx(i), sid.to_vec()))
        .collect();
    let mut proofs = Vec::new();
    let mut zero2 = Vec::new();
    let mut bip2: BTreeMap<PartyIndex, BroadcastDerivationPhase2to4> = BTreeMap::new();
    for (i, s) in sessions.iter_mut().enumerate() {
        let (pc, z, b) = s.phase2(&frags[i]).unwrap();
        proofs.push(pc);
        zero2.extend(z);
        bip2.insert(idx(i as u8 + 1), b);
    }
    let mut zero3 = Vec::new();
    let mut mul3 = Vec::new();
    let mut bip3: BTreeMap<PartyIndex, BroadcastDerivationPhase3to4> = BTreeMap::new();
    for (i, s) in sessions.iter_mut().enumerate() {
        let (z, m, b) = s.phase3().unwrap();
        zero3.extend(z);
        mul3.extend(m);
        bip3.insert(idx(i as u8 + 1), b);
    }
    sessions
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let me = idx(i as u8 + 1);
            let z2: Vec<_> = zero2
                .iter()
                .filter(|m| m.parties.receiver == me)
                .cloned()
                .collect();
            let z3: Vec<_> = zero3
                .iter()
                .filter(|m| m.parties.receiver == me)
                .cloned()
                .collect();
            let m3: Vec<_> = mul3
                .iter()
                .filter(|m| m.parties.receiver == me)
                .cloned()
                .collect();
            s.phase4(&proofs, &z2, &z3, &m3, &bip2, &bip3, |_| String::new())
                .unwrap()
                .0
        })
        .collect()
}

fn transpose(rows: Vec<Vec<k256::Scalar>>, n: usize) -> Vec<Vec<k256::Scalar>> {
    (0..n)
        .map(|j| rows.iter().map(|r| r[j]).collect())
        .collect()
}

fn raw_keygen(t: u8, n: u8) -> Vec<P> {
    let params = Parameters::new(t, n).unwrap();
    let sid = [1u8; 32];
    let rows: Vec<Vec<k256::Scalar>> = (1..=n)
        .map(|i| DkgSession::<Secp256k1>::new(params.clone(), idx(i), sid.to_vec()).phase1())
        .collect();
    raw_dkg_from(&params, &sid, transpose(rows, usize::from(n)))
}

fn raw_sign(parties: &[&P]) {
    let all: Vec<PartyIndex> = parties.iter().map(|p| p.party_index).collect();
    let data: Vec<SignData> = parties
        .iter()
        .map(|p| SignData {
            sign_id: vec![2; 32],
            counterparties: all
                .iter()
                .copied()
                .filter(|i| *i != p.party_index)
                .collect(),
            message_hash: [42; 32],
        })
        .collect();
    let mut k1 = Vec::new();
    let mut t1 = Vec::new();
    for (p, d) in parties.iter().zip(&data) {
        let (u, k, t) = p.sign_phase1(d).unwrap();
        k1.push((u, k));
        t1.extend(t);
    }
    let mut k2 = Vec::new();
    let mut t2 = Vec::new();
    for ((p, d), (u, k)) in parties.iter().zip(&data).zip(k1) {
        let rx: Vec<_> = t1
            .iter()
            .filter(|m| m.parties.receiver == p.party_index)
            .cloned()
            .collect();
        let (u2, kk, t) = p.sign_phase2(d, u, k, &rx).unwrap();
        k2.push((u2, kk));
        t2.extend(t);
    }
    let mut xs = Vec::new();
    let mut b3 = Vec::new();
    for ((p, d), (u, k)) in parties.iter().zip(&data).zip(k2) {
        let rx: Vec<_> = t2
            .iter()
            .filter(|m| m.parties.receiver == p.party_index)
            .cloned()
            .collect();
        let (x, b) = p.sign_phase3(d, u, k, &rx).unwrap();
        xs.push(x);
        b3.push(b);
    }
    for ((p, d), x) in parties.iter().zip(&data).zip(&xs) {
        black_box(p.sign_phase4(d, x, &b3, true).unwrap());
    }
}

fn raw_refresh(parties: &[P]) {
    let n = parties.len();
    let sid = vec![3u8; 32];
    let frags = transpose(parties.iter().map(|p| p.refresh_phase1()).collect(), n);
    let mut st = Vec::new();
    let mut t2 = Vec::new();
    let mut proofs = Vec::new();
    for (p, f) in parties.iter().zip(&frags) {
        let (c, pc, k, t) = p.refresh_phase2(&sid, f);
        proofs.push(pc);
        st.push((c, k));
        t2.extend(t);
    }
    let mut st3 = Vec::new();
    let mut t3 = Vec::new();
    for (p, (c, k)) in parties.iter().zip(st) {
        let (k3, t) = p.refresh_phase3(&k);
        st3.push((c, k3));
        t3.extend(t);
    }
    for (p, (c, k3)) in parties.iter().zip(st3) {
        let me = p.party_index;
        let r2: Vec<_> = t2
            .iter()
            .filter(|m| m.parties.receiver == me)
            .cloned()
            .collect();
        let r3: Vec<_> = t3
            .iter()
            .filter(|m| m.parties.receiver == me)
            .cloned()
            .collect();
        black_box(p.refresh_phase4(&sid, &c, &proofs, &k3, &r2, &r3).unwrap());
    }
}

/// Dealers 1 and 2 of a 2-of-3 deal to a 3-of-4 committee; the others deal zero.
fn raw_reshare_2of3_to_3of4(old: &[P]) -> Vec<P> {
    let params = Parameters::new(3, 4).unwrap();
    let mut rng = dkls23::utilities::rng::get_rng();
    let lambda = |i: u64, j: u64| {
        let (xi, xj) = (k256::Scalar::from(i), k256::Scalar::from(j));
        xj * (xj - xi).invert().unwrap()
    };
    let consts = [
        lambda(1, 2) * old[0].poly_point,
        lambda(2, 1) * old[1].poly_point,
        k256::Scalar::ZERO,
        k256::Scalar::ZERO,
    ];
    let rows: Vec<Vec<k256::Scalar>> = consts
        .iter()
        .map(|c| {
            let coeffs = [
                *c,
                k256::Scalar::random(&mut rng),
                k256::Scalar::random(&mut rng),
            ];
            (1..=4u64)
                .map(|x| {
                    let x = k256::Scalar::from(x);
                    coeffs
                        .iter()
                        .rev()
                        .fold(k256::Scalar::ZERO, |acc, a| acc * x + a)
                })
                .collect()
        })
        .collect();
    raw_dkg_from(&params, &[4u8; 32], transpose(rows, 4))
}

// ---------- benches ----------

fn benches(c: &mut Criterion) {
    let p3 = ids(3);
    let (shares, keygen_bytes) = engine_keygen(2, &p3);
    let raw = raw_keygen(2, 3);
    eprintln!("message bytes per ceremony (engine, all parties):");
    eprintln!("  keygen 2-of-3: {keygen_bytes}");
    eprintln!("  sign 2-of-3: {}", engine_sign(&[&shares[0], &shares[1]]));
    eprintln!("  refresh 2-of-3: {}", engine_refresh(&shares));
    eprintln!(
        "  reshare 2-of-3 -> 3-of-4: {}",
        engine_reshare_2of3_to_3of4(&shares)
    );
    eprintln!("  share size: {} bytes", shares[0].encode().len());

    let mut g = c.benchmark_group("keygen_2of3");
    g.sample_size(10).measurement_time(Duration::from_secs(40));
    g.bench_function("engine", |b| b.iter(|| black_box(engine_keygen(2, &p3))));
    g.bench_function("raw_dkls23", |b| b.iter(|| black_box(raw_keygen(2, 3))));
    g.finish();

    let mut g = c.benchmark_group("sign_2of3");
    g.sample_size(50).measurement_time(Duration::from_secs(10));
    g.bench_function("engine", |b| {
        b.iter(|| engine_sign(&[&shares[0], &shares[1]]))
    });
    g.bench_function("raw_dkls23", |b| b.iter(|| raw_sign(&[&raw[0], &raw[1]])));
    g.finish();

    let mut g = c.benchmark_group("refresh_2of3");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("engine", |b| b.iter(|| engine_refresh(&shares)));
    g.bench_function("raw_dkls23", |b| b.iter(|| raw_refresh(&raw)));
    g.finish();

    let mut g = c.benchmark_group("reshare_2of3_to_3of4");
    g.sample_size(10).measurement_time(Duration::from_secs(60));
    g.bench_function("engine", |b| {
        b.iter(|| engine_reshare_2of3_to_3of4(&shares))
    });
    g.bench_function("raw_dkls23", |b| {
        b.iter(|| black_box(raw_reshare_2of3_to_3of4(&raw)))
    });
    g.finish();
}

criterion_group!(ceremony_benches, benches);
criterion_main!(ceremony_benches);
