//! `cosignerctl history ...`: read, verify and export the daemon's ceremony history.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use cosigner_api::v1 as pb;
use cosigner_api::v1::cosigner_client::CosignerClient;
use tonic::transport::Channel;

#[derive(Subcommand, Debug)]
pub enum HistoryCommand {
    /// Entries, newest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Entries per page (1-1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue from a page token printed by a previous call.
        #[arg(long)]
        page_token: Option<String>,
        /// Follow page tokens to the end.
        #[arg(long)]
        all: bool,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One entry in full.
    Show {
        seq: u64,
        #[arg(long)]
        json: bool,
    },
    /// Walk the hash chain; exits 1 and names the first bad entry if it does not match.
    Verify,
    /// Check again, here, the evidence of an ABORT that blamed a party (an entry whose
    /// `blame` is set): the accused's own signatures decide, not the accuser's word or
    /// this daemon's. Prints JSON; exits 1 when the evidence does not hold.
    Blame {
        seq: u64,
        /// Also write the signed ABORT envelope (protobuf) to FILE, for others to check.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// One line of JSON instead of indented JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every matching entry, oldest first, as JSON lines.
    Export {
        #[command(flatten)]
        filter: FilterArgs,
        /// Write to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Args, Debug, Default)]
pub struct FilterArgs {
    #[arg(long)]
    vault: Option<String>,
    /// keygen, sign, reshare, refresh, policy_reload, backup_export, backup_import,
    /// config_start, drop_previous.
    #[arg(long)]
    kind: Option<String>,
    /// started, succeeded, denied, failed, aborted, in_doubt, refused.
    #[arg(long)]
    outcome: Option<String>,
    /// Start of the time range: a duration back from now (30m, 24h, 7d), RFC 3339, or Unix ms.
    #[arg(long)]
    since: Option<String>,
    /// End of the time range (exclusive), same forms.
    #[arg(long)]
    until: Option<String>,
}

use cosigner_relay::clock::now_ms;

/// "24h" -> now - 24 h; RFC 3339; or plain Unix milliseconds.
fn parse_time(s: &str) -> Result<i64> {
    let unit = |c: char| match c {
        's' => Some(1_000),
        'm' => Some(60_000),
        'h' => Some(3_600_000),
        'd' => Some(86_400_000),
        _ => None,
    };
    if let Some(last) = s.chars().last()
        && let Some(mult) = unit(last)
        && let Ok(n) = s[..s.len() - 1].parse::<i64>()
    {
        return Ok(now_ms() - n * mult);
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("{s:?} is not a duration (24h), RFC 3339 time or Unix ms"))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

pub(crate) fn format_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

impl FilterArgs {
    fn to_proto(&self) -> Result<pb::HistoryFilter> {
        let kind = match &self.kind {
            None => 0,
            Some(k) => {
                pb::CeremonyKind::from_str_name(&format!("CEREMONY_KIND_{}", k.to_uppercase()))
                    .with_context(|| format!("unknown kind {k:?}"))? as i32
            }
        };
        let outcome = match &self.outcome {
            None => 0,
            Some(o) => pb::Outcome::from_str_name(&format!("OUTCOME_{}", o.to_uppercase()))
                .with_context(|| format!("unknown outcome {o:?}"))? as i32,
        };
        Ok(pb::HistoryFilter {
            vault_id: self.vault.clone().unwrap_or_default(),
            kind,
            outcome,
            from_ms: self
                .since
                .as_deref()
                .map(parse_time)
                .transpose()?
                .unwrap_or(0),
            to_ms: self
                .until
                .as_deref()
                .map(parse_time)
                .transpose()?
                .unwrap_or(0),
        })
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    ::hex::encode(b)
}

fn name(s: &str, prefix: &str) -> String {
    s.strip_prefix(prefix).unwrap_or(s).to_lowercase()
}

pub(crate) fn kind_name(v: i32) -> String {
    pb::CeremonyKind::try_from(v)
        .map(|k| name(k.as_str_name(), "CEREMONY_KIND_"))
        .unwrap_or_else(|_| v.to_string())
}

pub(crate) fn outcome_name(v: i32) -> String {
    pb::Outcome::try_from(v)
        .map(|o| name(o.as_str_name(), "OUTCOME_"))
        .unwrap_or_else(|_| v.to_string())
}

pub(crate) fn entry_json(e: &pb::HistoryEntry) -> serde_json::Value {
    serde_json::json!({
        "seq": e.seq,
        "recorded_at": format_time(e.recorded_at_ms),
        "kind": kind_name(e.kind),
        "outcome": outcome_name(e.outcome),
        "vault_id": e.vault_id,
        "epoch": e.epoch,
        "session_id": hex(&e.session_id),
        "tls_identity": e.tls_identity,
        "requester": hex(&e.requester),
        "payload_digest": hex(&e.payload_digest),
        "transfers": e.decoded.as_ref().map(|d| d.transfers.iter().map(|t| serde_json::json!({
            "asset": t.asset, "recipient": t.recipient, "amount": t.amount,
        })).collect::<Vec<_>>()),
        "policy": e.policy.as_ref().map(|p| serde_json::json!({
            "decision": pb::Decision::try_from(p.decision)
                .map(|d| name(d.as_str_name(), "DECISION_"))
                .unwrap_or_else(|_| p.decision.to_string()),
            "reasons": p.reasons, "policy_hash": p.policy_hash,
        })),
        "signatures": e.signatures.iter().map(|s| serde_json::json!({
            "hash": hex(&s.hash), "r": hex(&s.r), "s": hex(&s.s), "recovery_id": s.recovery_id,
        })).collect::<Vec<_>>(),
        "public_key": hex(&e.public_key),
        "error": e.error,
        "blame": e.blame.as_ref().map(|b| serde_json::json!({
            "accuser": hex(&b.accuser), "accused": hex(&b.accused), "finding": b.finding,
        })),
        "nonce": hex(&e.nonce),
        "prev_hash": hex(&e.prev_hash),
        "entry_hash": hex(&e.entry_hash),
    })
}

fn row(e: &pb::HistoryEntry) -> String {
    let detail = if !e.error.is_empty() {
        e.error.clone()
    } else if let Some(t) = e.decoded.as_ref().and_then(|d| d.transfers.first()) {
        format!("{} {} -> {}", t.amount, t.asset, t.recipient)
    } else if !e.tls_identity.is_empty() {
        e.tls_identity.clone()
    } else {
        String::new()
    };
    format!(
        "{:>7}  {:<24}  {:<14} {:<10} {:<16} {:>5}  {}",
        e.seq,
        format_time(e.recorded_at_ms),
        kind_name(e.kind),
        outcome_name(e.outcome),
        if e.vault_id.is_empty() {
            "-"
        } else {
            &e.vault_id
        },
        e.epoch,
        detail
    )
}

pub async fn run(channel: Channel, cmd: HistoryCommand) -> Result<ExitCode> {
    let mut client = CosignerClient::new(channel);
    match cmd {
        HistoryCommand::List {
            filter,
            limit,
            page_token,
            all,
            json,
        } => {
            let filter = filter.to_proto()?;
            let mut token = page_token.unwrap_or_default();
            if !json {
                println!(
                    "{:>7}  {:<24}  {:<14} {:<10} {:<16} {:>5}  detail",
                    "seq", "recorded", "kind", "outcome", "vault", "epoch"
                );
            }
            loop {
                let page = client
                    .list_history(pb::ListHistoryRequest {
                        filter: Some(filter.clone()),
                        page_size: limit,
                        page_token: token.clone(),
                    })
                    .await?
                    .into_inner();
                for e in &page.entries {
                    if json {
                        println!("{}", entry_json(e));
                    } else {
                        println!("{}", row(e));
                    }
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                if !all {
                    if !json {
                        println!("more: --page-token {}", page.next_page_token);
                    }
                    break;
                }
                token = page.next_page_token;
            }
            Ok(ExitCode::SUCCESS)
        }
        HistoryCommand::Show { seq, json } => {
            let e = client
                .get_history_entry(pb::GetHistoryEntryRequest { seq })
                .await?
                .into_inner();
            let v = entry_json(&e);
            if json {
                println!("{v}");
            } else {
                println!("{}", serde_json::to_string_pretty(&v).context("JSON")?);
            }
            Ok(ExitCode::SUCCESS)
        }
        HistoryCommand::Verify => {
            let v = client
                .verify_history(pb::VerifyHistoryRequest {})
                .await?
                .into_inner();
            if v.ok {
                println!(
                    "history OK: {} entries, hash chain intact",
                    v.entries_checked
                );
                Ok(ExitCode::SUCCESS)
            } else {
                println!(
                    "history BROKEN at entry {}: {} ({} entries before it check out)",
                    v.first_bad_seq, v.problem, v.entries_checked
                );
                Ok(ExitCode::FAILURE)
            }
        }
        HistoryCommand::Blame { seq, out, json } => {
            let e = client
                .get_history_entry(pb::GetHistoryEntryRequest { seq })
                .await?
                .into_inner();
            let b = e.blame.with_context(|| {
                format!("entry {seq} carries no blame evidence (only ceremonies that ended with an ABORT blaming a party do)")
            })?;
            if let Some(p) = &out {
                std::fs::write(p, &b.abort_envelope)
                    .with_context(|| format!("cannot write {}", p.display()))?;
            }
            let env = <pb::Envelope as prost::Message>::decode(b.abort_envelope.as_slice())
                .context("the stored ABORT is not an envelope")?;
            let v = cosigner_relay::blame::judge(&env, None)
                .map_err(|e| anyhow::anyhow!("the stored ABORT: {e}"))?;
            use cosigner_relay::blame::Finding;
            let (finding, detail) = match &v.finding {
                Finding::NoEvidence => ("no_evidence", String::new()),
                Finding::Upheld(d) => ("upheld", d.clone()),
                Finding::Authentic => ("authentic", String::new()),
                Finding::Rejected(d) => ("rejected", d.clone()),
            };
            let report = serde_json::json!({
                    "seq": seq,
                    "accuser": hex(&v.accuser),
                    "accused": v.accused.map(|a| hex(&a)),
                    "claim": v.claim,
                    "exhibits": v.exhibits,
                    "truncated": v.truncated,
                    "finding": finding,
                    "detail": detail,
                    "summary": v.summary(),
                    "daemon_finding": b.finding,
            });
            if json {
                println!("{report}");
            } else {
                println!("{}", serde_json::to_string_pretty(&report).context("JSON")?);
            }
            Ok(if matches!(v.finding, Finding::Rejected(_)) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        HistoryCommand::Export { filter, output } => {
            let mut stream = client
                .export_history(pb::ExportHistoryRequest {
                    filter: Some(filter.to_proto()?),
                })
                .await?
                .into_inner();
            let mut out: Box<dyn Write> = match &output {
                Some(p) => Box::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut lines = 0usize;
            while let Some(chunk) = stream.message().await? {
                lines += chunk.jsonl.iter().filter(|b| **b == b'\n').count();
                out.write_all(&chunk.jsonl).context("write")?;
            }
            out.flush().context("write")?;
            if let Some(p) = output {
                eprintln!("exported {lines} entries to {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
