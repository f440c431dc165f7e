//! `cosignerctl status`: what an operator checks first, as tables or JSON.
//!
//! The tables answer, in order: which daemon and party this is and how its secrets are kept
//! (sealing) and judged (policy hash); which vaults it holds, at which epoch, with which
//! pending or previous share; when each rotation runs next and how the last went; and what
//! the last ceremonies did. `--json` has the same facts with full values, for scripts.

use cosigner_api::v1 as pb;
use serde_json::{Value, json};

use crate::history::{entry_json, format_time, hex, kind_name, outcome_name};

/// `02ab12…ef90`: enough to tell keys apart in a table; `--json` has them whole.
fn short_hex(b: &[u8]) -> String {
    let h = hex(b);
    if h.len() <= 16 {
        h
    } else {
        format!("{}…{}", &h[..8], &h[h.len() - 6..])
    }
}

fn when(ms: i64) -> String {
    if ms <= 0 { "-".into() } else { format_time(ms) }
}

fn uptime(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s => format!("{} days {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    // Every cell padded to its column's width plus two; the line's trailing blanks dropped.
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (c, w) in cells.iter().zip(&width) {
            s.push_str(c);
            s.push_str(&" ".repeat(w - c.chars().count() + 2));
        }
        s.trim_end().to_string() + "\n"
    };
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = line(&header);
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

fn slot(has: bool, epoch: u64) -> String {
    if has {
        format!("epoch {epoch}")
    } else {
        "-".into()
    }
}

fn backup_of<'a>(s: &'a pb::GetStatusResponse, vault: &str) -> Option<&'a pb::BackupStatus> {
    s.backups.iter().find(|b| b.vault_id == vault)
}

/// The human form.
pub fn render(s: &pb::GetStatusResponse) -> String {
    let mut out = String::new();
    let policy = if s.policy_hash.is_empty() {
        "NONE loaded: every ceremony request is refused".to_string()
    } else {
        s.policy_hash.clone()
    };
    for (k, v) in [
        (
            "daemon",
            format!("cosignerd {}, up {}", s.version, uptime(s.uptime_seconds)),
        ),
        ("identity", s.identity.clone()),
        ("party id", hex(&s.party_id)),
        (
            "sealing",
            if s.sealing_detail.is_empty() {
                s.sealing_backend.clone()
            } else {
                format!("{} ({})", s.sealing_backend, s.sealing_detail)
            },
        ),
        ("policy", policy),
        (
            "relay",
            if s.relay_enabled {
                "hosted here"
            } else {
                "not hosted"
            }
            .into(),
        ),
        (
            "history",
            format!(
                "{} entries, {} bytes on disk",
                s.history_entries, s.history_bytes
            ),
        ),
    ] {
        out.push_str(&format!("{k:<10} {v}\n"));
    }

    out.push('\n');
    if s.vaults.is_empty() {
        out.push_str("VAULTS: none held\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .vaults
            .iter()
            .map(|v| {
                let slots = v.slots.unwrap_or_default();
                let (t, n) = v
                    .committee
                    .as_ref()
                    .map(|c| (c.threshold, c.parties.len()))
                    .unwrap_or((0, 0));
                let backup = match backup_of(s, &v.vault_id) {
                    Some(b) if !b.has_backup => "NONE: export one".into(),
                    Some(b) if b.backup_renewal_needed => {
                        format!("epoch {}: RENEW", b.backup_epoch)
                    }
                    Some(b) => format!("epoch {}", b.backup_epoch),
                    None => "-".into(),
                };
                vec![
                    v.vault_id.clone(),
                    if v.state.is_empty() {
                        "-".into()
                    } else {
                        v.state.clone()
                    },
                    v.epoch.to_string(),
                    format!("{t} of {n}"),
                    short_hex(&v.public_key),
                    slot(slots.has_pending, slots.pending_epoch),
                    slot(slots.has_previous, slots.previous_epoch),
                    when(v.last_reshare_at_ms),
                    backup,
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "VAULT",
                "STATE",
                "EPOCH",
                "THRESHOLD",
                "PUBLIC KEY",
                "PENDING",
                "PREVIOUS",
                "LAST RESHARE",
                "BACKUP",
            ],
            &rows,
        ));
        for v in s.vaults.iter().filter(|v| !v.problem.is_empty()) {
            out.push_str(&format!("  {}: {}\n", v.vault_id, first_line(&v.problem)));
        }
    }

    out.push('\n');
    if s.rotations.is_empty() {
        out.push_str("ROTATION: no schedule on this daemon\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .rotations
            .iter()
            .map(|r| {
                vec![
                    r.vault_id.clone(),
                    r.schedule.clone(),
                    when(r.next_run_at_ms),
                    when(r.last_success_at_ms),
                    format!("{} / {}", r.runs_succeeded, r.runs_failed),
                    if r.last_error.is_empty() {
                        "-".into()
                    } else {
                        r.last_error.clone()
                    },
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "ROTATION",
                "SCHEDULE (UTC)",
                "NEXT RUN",
                "LAST SUCCESS",
                "OK / FAILED",
                "LAST ERROR",
            ],
            &rows,
        ));
    }

    out.push('\n');
    if s.recent_ceremonies.is_empty() {
        out.push_str("RECENT CEREMONIES: none yet\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .recent_ceremonies
            .iter()
            .map(|e| {
                let took = if e.ended_at_ms >= e.started_at_ms && e.started_at_ms > 0 {
                    format!("{} ms", e.ended_at_ms - e.started_at_ms)
                } else {
                    "-".into()
                };
                vec![
                    e.seq.to_string(),
                    when(e.recorded_at_ms),
                    kind_name(e.kind),
                    e.vault_id.clone(),
                    e.epoch.to_string(),
                    outcome_name(e.outcome),
                    took,
                    first_line(&e.error),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "SEQ", "WHEN", "KIND", "VAULT", "EPOCH", "OUTCOME", "TOOK", "ERROR",
            ],
            &rows,
        ));
    }

    if !s.unavailable.is_empty() {
        out.push_str("\nnot in this build:\n");
        for u in &s.unavailable {
            out.push_str(&format!("  {u}\n"));
        }
    }
    out
}

/// Errors in a table cell: the first line, at most 80 characters.
fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("");
    if l.chars().count() > 80 {
        format!("{}…", l.chars().take(79).collect::<String>())
    } else {
        l.to_string()
    }
}

/// The `--json` form.
pub fn to_json(s: &pb::GetStatusResponse) -> Value {
    json!({
        "version": s.version,
        "identity": s.identity,
        "started_at_ms": s.started_at_ms,
        "uptime_seconds": s.uptime_seconds,
        "sealing_backend": s.sealing_backend,
        "sealing_detail": s.sealing_detail,
        "policy_hash": s.policy_hash,
        "relay_enabled": s.relay_enabled,
        "party_id": hex(&s.party_id),
        "encryption_key": hex(&s.encryption_key),
        "history_entries": s.history_entries,
        "history_bytes": s.history_bytes,
        "vaults": s.vaults.iter().map(|v| {
            let slots = v.slots.unwrap_or_default();
            json!({
                "vault_id": v.vault_id,
                "state": v.state,
                "problem": (!v.problem.is_empty()).then_some(&v.problem),
                "epoch": v.epoch,
                "public_key": hex(&v.public_key),
                "threshold": v.committee.as_ref().map(|c| c.threshold),
                "committee": v.committee.as_ref().map(|c| c.parties.iter().map(|p| json!({
                    "name": p.name,
                    "party_id": hex(&p.party_id),
                })).collect::<Vec<_>>()),
                "current_epoch": slots.current_epoch,
                "pending_epoch": slots.has_pending.then_some(slots.pending_epoch),
                "previous_epoch": slots.has_previous.then_some(slots.previous_epoch),
                "created_at_ms": v.created_at_ms,
                "last_reshare_at_ms": (v.last_reshare_at_ms > 0).then_some(v.last_reshare_at_ms),
            })
        }).collect::<Vec<_>>(),
        "unavailable": s.unavailable,
        "rotations": s.rotations.iter().map(|r| json!({
            "vault_id": r.vault_id,
            "schedule": r.schedule,
            "next_run_at_ms": r.next_run_at_ms,
            "last_attempt_at_ms": r.last_attempt_at_ms,
            "last_success_at_ms": r.last_success_at_ms,
            "last_error": r.last_error,
            "consecutive_failures": r.consecutive_failures,
            "runs_succeeded": r.runs_succeeded,
            "runs_failed": r.runs_failed,
            "epoch": r.epoch,
        })).collect::<Vec<_>>(),
        "backups": s.backups.iter().map(|b| json!({
            "vault_id": b.vault_id,
            "epoch": b.epoch,
            "backup_epoch": b.has_backup.then_some(b.backup_epoch),
            "backup_renewal_needed": b.backup_renewal_needed,
        })).collect::<Vec<_>>(),
        "recent_ceremonies": s.recent_ceremonies.iter().map(entry_json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_show_every_part() {
        let s = pb::GetStatusResponse {
            version: "0.1.0".into(),
            policy_hash: String::new(),
            vaults: vec![pb::Vault {
                vault_id: "treasury".into(),
                epoch: 3,
                public_key: vec![2; 33],
                committee: Some(pb::Committee {
                    threshold: 2,
                    parties: vec![pb::Party::default(); 3],
                }),
                slots: Some(pb::ShareSlots {
                    current_epoch: 3,
                    has_previous: true,
                    previous_epoch: 2,
                    ..Default::default()
                }),
                state: "in_doubt".into(),
                problem: "a reshare ended without a certificate".into(),
                ..Default::default()
            }],
            backups: vec![pb::BackupStatus {
                vault_id: "treasury".into(),
                epoch: 3,
                has_backup: true,
                backup_epoch: 2,
                backup_renewal_needed: true,
            }],
            ..Default::default()
        };
        let text = render(&s);
        assert!(text.contains("NONE loaded"), "{text}");
        let header = text.lines().find(|l| l.starts_with("VAULT ")).unwrap();
        let row = text.lines().find(|l| l.starts_with("treasury")).unwrap();
        // Columns line up: each cell starts under its header (counted in characters: the
        // shortened key has a multi-byte ellipsis).
        let col = |h: &str| header[..header.find(h).unwrap()].chars().count();
        for (h, cell) in [
            ("STATE", "in_doubt"),
            ("EPOCH", "3"),
            ("THRESHOLD", "2 of 3"),
            ("PENDING", "-"),
            ("PREVIOUS", "epoch 2"),
            ("BACKUP", "epoch 2: RENEW"),
        ] {
            let at: String = row.chars().skip(col(h)).collect();
            assert!(at.starts_with(cell), "{h}: {at:?}\n{text}");
        }
        assert!(
            text.contains("  treasury: a reshare ended without a certificate"),
            "{text}"
        );
        assert!(text.contains("ROTATION: no schedule"));
        assert!(text.contains("RECENT CEREMONIES: none yet"));
    }
}
