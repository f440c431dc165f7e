//! The systemd watchdog (`WatchdogSec=` in the unit): a keep-alive only when the daemon can
//! do its job.
//!
//! A keep-alive sent by a timer alone would prove only that a timer runs. Each interval this
//! task proves the parts a ceremony needs instead: the sealing thread takes a request and
//! the TPM answers a command (a queue that no longer drains, or a TPM that stopped
//! answering, fails it), and the history answers a read on the blocking pool (a wedged sled
//! or an exhausted pool fails it). Only when every probe answers within its time does it
//! send `WATCHDOG=1`; otherwise it logs which probe failed and stays silent, and systemd
//! restarts the daemon once `WatchdogSec` passes without a keep-alive. A relay-only daemon
//! has neither part, so for it the keep-alive proves the runtime schedules work.

use std::sync::Arc;
use std::time::Duration;

use cosigner_history::History;
use cosigner_seal::Sealer;

use crate::metrics::Metrics;

/// What the watchdog probes; `None` for parts this daemon does not run.
pub struct Probes {
    pub sealer: Option<Sealer>,
    pub history: Option<Arc<History>>,
}

impl Probes {
    /// Runs every probe, each within `limit`; the first failure, named.
    pub async fn check(&self, limit: Duration) -> Result<(), String> {
        if let Some(s) = &self.sealer {
            match tokio::time::timeout(limit, s.probe()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("the TPM did not answer a probe: {e}")),
                Err(_) => {
                    return Err(format!(
                        "the sealing thread did not answer within {limit:?}"
                    ));
                }
            }
        }
        if let Some(h) = &self.history {
            let h = h.clone();
            match tokio::time::timeout(limit, tokio::task::spawn_blocking(move || h.len())).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(e))) => return Err(format!("the history cannot be read: {e}")),
                Ok(Err(e)) => return Err(format!("the history probe task failed: {e}")),
                Err(_) => return Err(format!("the history did not answer within {limit:?}")),
            }
        }
        Ok(())
    }
}

/// Feeds the watchdog at half its interval while the probes pass. Returns at once when the
/// service manager asked for no watchdog (no `WATCHDOG_USEC` for this process).
pub async fn run(probes: Probes, metrics: Arc<Metrics>) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    // Half the interval between keep-alives (as sd_watchdog_enabled(3) advises), each probe
    // allowed a quarter, so one slow round still leaves time for the next.
    let every = (interval / 2).max(Duration::from_millis(100));
    let limit = (interval / 4).max(Duration::from_millis(50));
    tracing::info!(?interval, ?every, "systemd watchdog enabled");
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match probes.check(limit).await {
            Ok(()) => {
                if failing {
                    tracing::info!("watchdog probes pass again");
                    failing = false;
                }
                if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]) {
                    tracing::warn!(error = %e, "systemd watchdog notification failed");
                }
            }
            Err(why) => {
                failing = true;
                metrics.watchdog_failure();
                tracing::error!(
                    error = %why,
                    "watchdog keep-alive withheld: systemd restarts the daemon if this lasts WatchdogSec"
                );
            }
        }
    }
}
