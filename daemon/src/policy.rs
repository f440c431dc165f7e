//! The loaded policy bundle, how it is replaced, and how a decision is asked for.
//!
//! One bundle decides at a time. A reload (SIGHUP, a change in the bundle folder, or the
//! ReloadPolicy RPC) loads the folder again on the blocking pool; the new bundle replaces
//! the old one only if it compiles and its own tests pass. Every reload, good or bad, is
//! logged and recorded in the history with the bundle hash. Without a bundle every request
//! is refused (default deny).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use cosigner_history::{History, Kind, Outcome, PolicyRecord, Record, ResultRecord};
use cosigner_policy::{Bundle, Decision, Verdict};

use crate::history_rpc::blocking;
use crate::now_ms;

pub struct Policy {
    dir: Option<PathBuf>,
    current: RwLock<Option<Arc<Bundle>>>,
    history: Arc<History>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// What a reload did.
pub struct Reloaded {
    pub replaced: bool,
    pub hash: String,
    pub error: String,
}

impl Policy {
    /// Loads the bundle at start; a bundle that does not load stops the daemon (fail
    /// closed, and the operator sees why at once).
    pub async fn start(
        dir: Option<PathBuf>,
        history: Arc<History>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Policy, String> {
        let current = match &dir {
            Some(d) => {
                let d = d.clone();
                let b = tokio::task::spawn_blocking(move || Bundle::load(&d))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                tracing::info!(hash = b.hash(), files = ?b.files(), tests = b.tests(), "policy bundle loaded");
                Some(Arc::new(b))
            }
            None => {
                tracing::warn!(
                    "no policy bundle configured (policy.bundle): every ceremony request will be refused"
                );
                None
            }
        };
        Ok(Policy {
            dir,
            current: RwLock::new(current),
            history,
            reloading: tokio::sync::Mutex::new(()),
            metrics,
        })
    }

    pub fn hash(&self) -> String {
        self.bundle()
            .map(|b| b.hash().to_string())
            .unwrap_or_default()
    }

    fn bundle(&self) -> Option<Arc<Bundle>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The decision for one input document (default deny without a bundle).
    pub fn decide(&self, input: serde_json::Value) -> Decision {
        match self.bundle() {
            Some(b) => b.decide(input),
            None => Decision {
                verdict: Verdict::Deny(vec![
                    "no policy bundle is loaded (policy.bundle); default deny".into(),
                ]),
                bundle_hash: String::new(),
            },
        }
    }

    /// Loads the folder again; replaces the bundle only if it is good. Records the attempt.
    pub async fn reload(&self, trigger: &str) -> Reloaded {
        let _one = self.reloading.lock().await;
        let Some(dir) = self.dir.clone() else {
            return Reloaded {
                replaced: false,
                hash: String::new(),
                error: "no policy bundle is configured (policy.bundle)".into(),
            };
        };
        let started = now_ms();
        let loaded = tokio::task::spawn_blocking(move || Bundle::load(&dir))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let old = self.hash();
        let (out, outcome) = match loaded {
            Ok(b) => {
                let hash = b.hash().to_string();
                let replaced = hash != old;
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(b));
                tracing::info!(trigger, %hash, replaced, "policy bundle reloaded");
                self.metrics
                    .policy_reload(if replaced { "replaced" } else { "unchanged" });
                (
                    Reloaded {
                        replaced,
                        hash,
                        error: String::new(),
                    },
                    Outcome::Succeeded,
                )
            }
            Err(e) => {
                tracing::error!(trigger, error = %e, kept = %old, "policy reload refused; the previous bundle stays");
                self.metrics.policy_reload("refused");
                (
                    Reloaded {
                        replaced: false,
                        hash: old.clone(),
                        error: e,
                    },
                    Outcome::Failed,
                )
            }
        };
        let rec = Record {
            started_at_ms: started,
            ended_at_ms: now_ms(),
            tls_identity: trigger.to_string(),
            policy: Some(PolicyRecord {
                decision: String::new(),
                reasons: Vec::new(),
                bundle_hash: out.hash.clone(),
            }),
            result: (!out.error.is_empty()).then(|| ResultRecord::Error(out.error.clone())),
            ..Record::new(Kind::PolicyReload, outcome)
        };
        if let Err(e) = blocking(&self.history, move |h| h.append(rec)).await {
            tracing::error!(error = %e.message(), "could not record the policy reload");
        }
        out
    }

    /// Polls the bundle folder every `every` and reloads when a file changed.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let Some(dir) = self.dir.clone() else { return };
        let fingerprint = move || -> Vec<(String, u64, Option<SystemTime>)> {
            let mut v: Vec<_> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        m.len(),
                        m.modified().ok(),
                    ))
                })
                .collect();
            v.sort();
            v
        };
        let mut last = fingerprint();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = fingerprint();
            if now != last {
                last = now;
                self.reload("file change").await;
            }
        }
    }
}

/// The history's view of a decision.
pub fn record(d: &Decision) -> PolicyRecord {
    let decision = match &d.verdict {
        Verdict::Allow => "allow",
        Verdict::Deny(_) => "deny",
        Verdict::NeedsApproval(_) => "needs_approval",
    };
    PolicyRecord {
        decision: decision.into(),
        reasons: d.reasons(),
        bundle_hash: d.bundle_hash.clone(),
    }
}
