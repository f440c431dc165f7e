//! `cosignerctl bench sign`: end-to-end signing latency between daemons, beside the engine's
//! own in-process signing time measured in the same run (the machines are shared and
//! noisy, so only the ratio carries over between runs).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use cosigner_api::v1 as api;
use cosigner_node::coordinator::{Calls, Session, sign_request};
use cosigner_relay::keys::hex;
use cosigner_tss::{
    Committee, DerivationPath, Keygen, KeygenParams, PartyId, Sign, SignParams, local,
};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::connect::ConnectArgs;
use crate::party::{SIGN, file};

/// A bench signature takes milliseconds; its relay session need not outlive two minutes.
const BENCH_SESSION_TTL_SECONDS: u32 = 120;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Signatures between daemons, coordinated by a device party that does not sign.
    Sign(SignArgs),
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// The requesting party's file (it must be in the vault's committee).
    #[arg(long, env = "COSIGNERCTL_PARTY_FILE", value_name = "FILE")]
    pub file: PathBuf,
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    #[arg(long)]
    pub vault: String,
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// The signing daemons: NAME=https://host:port (exactly the vault's threshold of them).
    #[arg(long = "daemon", value_name = "NAME=ADDR")]
    pub daemons: Vec<String>,
    /// Relay address (default: the first daemon's).
    #[arg(long)]
    pub relay: Option<String>,
    /// In-process engine signatures to time (2-of-3, same machine, same run).
    #[arg(long, default_value_t = 50)]
    pub in_process: usize,
    #[arg(long)]
    pub json: bool,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The engine alone: a 2-of-3 keygen, then `n` signatures with all parties in this thread.
fn in_process(n: usize) -> Result<Vec<f64>> {
    let ids: Vec<PartyId> = (1..=3u8).map(|i| PartyId([i; 32])).collect();
    let committee = Committee::new(2, ids.clone())?;
    let parties = ids
        .iter()
        .map(|me| {
            Keygen::new(
                KeygenParams {
                    vault_id: "bench".into(),
                    committee: committee.clone(),
                    nonce: [1; 32],
                },
                *me,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (shares, _) = local::run(parties)?;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut nonce = [0u8; 32];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let t = Instant::now();
        let signers = shares[..2]
            .iter()
            .map(|s| {
                Sign::new(
                    s,
                    SignParams {
                        signers: ids[..2].to_vec(),
                        message_hash: [7; 32],
                        path: DerivationPath::default(),
                        nonce,
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        local::run(signers)?;
        out.push(ms(t.elapsed()));
    }
    Ok(out)
}

pub async fn run(connect: &ConnectArgs, cmd: BenchCommand) -> Result<()> {
    let BenchCommand::Sign(a) = cmd;
    let pass = file::passphrase(a.passphrase_file.as_deref())?;
    let f = file::PartyFile::open(&a.file, pass.as_bytes())?;
    let held = f.current(&a.vault)?;
    let record = held.record.clone();
    drop(held);
    let keys = f.keys.clone();
    let daemons: Vec<(String, String)> = a
        .daemons
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(n, x)| (n.to_string(), x.to_string()))
                .ok_or_else(|| anyhow!("--daemon {s:?}: expected NAME=https://host:port"))
        })
        .collect::<Result<_>>()?;
    if daemons.len() != usize::from(record.public.committee.threshold()) {
        bail!(
            "give exactly {} --daemon signers (the vault's threshold)",
            record.public.committee.threshold()
        );
    }
    let mut signers = Vec::new();
    let mut clients = Vec::new();
    for (name, addr) in &daemons {
        let m = record
            .members
            .iter()
            .find(|m| &m.name == name)
            .ok_or_else(|| anyhow!("no member named {name:?} in vault {}", a.vault))?;
        signers.push(m.id);
        clients.push((
            name.clone(),
            api::cosigner_client::CosignerClient::new(connect.channel_to(addr, None).await?),
        ));
    }
    let relay_addr = a.relay.clone().unwrap_or_else(|| daemons[0].1.clone());
    let relay = api::relay_client::RelayClient::new(connect.channel_to(&relay_addr, None).await?);
    let key = record.public.public_key;
    let epoch = record.epoch();

    let record = Arc::new(record);
    let one = {
        let (keys, signers, clients, relay, relay_addr, vault, record) = (
            keys.clone(),
            signers.clone(),
            clients.clone(),
            relay.clone(),
            relay_addr.clone(),
            a.vault.clone(),
            record.clone(),
        );
        Arc::new(move |i: usize| {
            let (keys, signers, clients, relay, relay_addr, vault, record) = (
                keys.clone(),
                signers.clone(),
                clients.clone(),
                relay.clone(),
                relay_addr.clone(),
                vault.clone(),
                record.clone(),
            );
            async move {
                let t = Instant::now();
                let mut session = Session::create(
                    relay,
                    relay_addr,
                    signers.iter().copied(),
                    BENCH_SESSION_TTL_SECONDS,
                )
                .await?;
                let payload = api::Payload {
                    kind: Some(api::payload::Kind::PersonalMessage(api::PersonalMessage {
                        message: format!("bench signature {i}").into_bytes(),
                    })),
                };
                let hash = crate::payload::payload_hash(&payload, &record, "")?;
                let body = api::SignBody {
                    vault_id: vault,
                    epoch,
                    signers: signers.iter().map(|s| s.to_vec()).collect(),
                    payload: Some(payload),
                    derivation_path: String::new(),
                    expected_hashes: vec![hash.to_vec()],
                    relay: Some(session.relay_ref()),
                };
                let signed = sign_request(&keys, SIGN, &body, now_ms());
                let request = api::SignRequest {
                    body: signed.body,
                    auth: Some(signed.auth),
                };
                let calls = Calls::spawn(clients, |mut c| {
                    let req = request.clone();
                    async move { c.sign(req).await }
                });
                let answers = calls.collect().await;
                // Closed on failure too: a failed iteration must not hold a relay session.
                session.close().await;
                let sigs: Vec<_> = answers?.into_iter().map(|(_, r)| r.signatures).collect();
                let s0 = sigs
                    .first()
                    .and_then(|s| s.first())
                    .ok_or_else(|| anyhow!("no signature"))?;
                if sigs.iter().any(|s| s.first() != Some(s0)) {
                    bail!("the daemons returned different signatures");
                }
                let r: [u8; 32] = s0.r.as_slice().try_into()?;
                let s: [u8; 32] = s0.s.as_slice().try_into()?;
                if !cosigner_tss::verify_ecdsa(&key, &hash, &r, &s) {
                    bail!("a signature does not verify");
                }
                Ok::<_, anyhow::Error>(ms(t.elapsed()))
            }
        })
    };

    // Warm up connections and caches.
    for i in 0..2 {
        one(usize::MAX - i).await?;
    }
    let sem = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(a.count);
    for i in 0..a.count {
        let permit = sem.clone().acquire_owned().await?;
        let one = one.clone();
        tasks.push(tokio::spawn(async move {
            let r = one(i).await;
            drop(permit);
            r
        }));
    }
    let mut lat = Vec::new();
    let mut failures = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(ms)) => lat.push(ms),
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let wall = started.elapsed();
    lat.sort_by(f64::total_cmp);
    let mut inproc = tokio::task::spawn_blocking(move || in_process(a.in_process)).await??;
    inproc.sort_by(f64::total_cmp);
    let report = json!({
        "vault_id": a.vault,
        "public_key": hex(&key.0),
        "count": a.count,
        "concurrency": a.concurrency,
        "failures": failures.len(),
        "end_to_end_ms": {"p50": percentile(&lat, 0.5), "p95": percentile(&lat, 0.95), "p99": percentile(&lat, 0.99)},
        "signatures_per_second": lat.len() as f64 / wall.as_secs_f64(),
        "in_process_ms": {"p50": percentile(&inproc, 0.5), "p95": percentile(&inproc, 0.95), "p99": percentile(&inproc, 0.99)},
        "ratio_p50": percentile(&lat, 0.5) / percentile(&inproc, 0.5),
    });
    if a.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if let Some(f) = failures.first() {
        bail!(
            "{} of {} signatures failed; first: {f}",
            failures.len(),
            a.count
        );
    }
    Ok(())
}

use cosigner_relay::clock::now_ms;
