//! Prometheus metrics, served on their own plain-HTTP listener (`metrics.listen`).
//!
//! Why a separate listener: scrapers rarely hold a client certificate of the vault's CA, and
//! the gRPC port must never accept a connection without one. What is exported is chosen so
//! that the endpoint can be open to a monitoring network: counts, durations and sizes, with
//! labels from small fixed sets (ceremony kind, outcome, policy result, TPM operation). No
//! vault id, party id, session id, address, amount or policy reason ever becomes a label;
//! they would tell an observer who transacts and when, and they are in the history for
//! those entitled to it.
//!
//! Event metrics (ceremonies, decisions, TPM latency, reloads) are updated where the event
//! happens; state metrics (relay, history, vaults, running ceremonies) are read at scrape
//! time by [`Live`], so they cannot drift from the truth.

use std::sync::Arc;
use std::time::Duration;

use cosigner_history::History;
use cosigner_relay::mailbox::Relay;
use cosigner_seal::{SealObserver, SealOp};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The OpenMetrics text format, which Prometheus scrapes natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Scrapes served at once; more wait (a scraper needs one, a burst of junk cannot pile up).
const MAX_CONNECTIONS: usize = 8;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CeremonyLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TpmLabels {
    op: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Ceremonies from a tenth of a second (a signature) to minutes (a large reshare).
fn ceremony_histogram() -> Histogram {
    Histogram::new([
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ])
}

/// TPM commands take milliseconds; a slow or contended TPM shows in the upper buckets.
fn tpm_histogram() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0])
}

/// The event metrics. Cheap to share: every family is reference-counted inside.
pub struct Metrics {
    ceremonies: Family<CeremonyLabels, Counter>,
    ceremony_seconds: Histograms<CeremonyLabels>,
    decisions: Family<DecisionLabels, Counter>,
    tpm_seconds: Histograms<TpmLabels>,
    policy_reloads: Family<ResultLabel, Counter>,
    watchdog_failures: Counter,
    refusals_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            ceremonies: Family::default(),
            ceremony_seconds: Family::new_with_constructor(ceremony_histogram),
            decisions: Family::default(),
            tpm_seconds: Family::new_with_constructor(tpm_histogram),
            policy_reloads: Family::default(),
            watchdog_failures: Counter::default(),
            refusals_dropped: Counter::default(),
        }
    }
}

impl Metrics {
    /// A ceremony reached an outcome (`refused`, `denied`, `succeeded`, `failed`, `aborted`). Its
    /// duration, from admission to the recorded outcome, is given for those that ran.
    pub fn ceremony(&self, kind: &'static str, outcome: &'static str, took: Option<Duration>) {
        let labels = CeremonyLabels { kind, outcome };
        self.ceremonies.get_or_create(&labels).inc();
        if let Some(t) = took {
            self.ceremony_seconds
                .get_or_create(&labels)
                .observe(t.as_secs_f64());
        }
    }

    /// The policy decided a ceremony request (`allow`, `deny`, `needs_approval`). Dry runs
    /// (`EvaluatePolicy`) are not counted: they decide nothing.
    pub fn decision(&self, kind: &'static str, result: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels { kind, result })
            .inc();
    }

    /// A policy reload attempt: `replaced`, `unchanged` or `refused` (a bad bundle, kept out).
    pub fn policy_reload(&self, result: &'static str) {
        self.policy_reloads
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// The watchdog withheld a keep-alive because a probe failed.
    pub fn watchdog_failure(&self) {
        self.watchdog_failures.inc();
    }

    /// A refused request was answered but not written to the history (refusal rate limit).
    pub fn refusal_dropped(&self) {
        self.refusals_dropped.inc();
    }

    /// An observer for the sealing thread: every seal, unseal and probe, timed on the TPM
    /// side of the queue (queueing excluded, so it measures the TPM, not the load).
    pub fn seal_observer(self: &Arc<Self>) -> SealObserver {
        let tpm = self.tpm_seconds.clone();
        Arc::new(move |op: SealOp, took: Duration, ok: bool| {
            let labels = TpmLabels {
                op: op.as_str(),
                result: if ok { "ok" } else { "error" },
            };
            tpm.get_or_create(&labels).observe(took.as_secs_f64());
        })
    }

    /// The registry a scrape encodes: the event metrics and the live state.
    pub fn registry(&self, live: Live) -> Registry {
        let mut r = Registry::with_prefix("cosigner");
        r.register(
            "build",
            "The cosignerd version running",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register(
            "ceremonies",
            "Ceremony requests that reached an outcome, by kind and outcome (denied: refused by the policy)",
            self.ceremonies.clone(),
        );
        r.register_with_unit(
            "ceremony_duration",
            "Time from admission to the recorded outcome of ceremonies that ran",
            Unit::Seconds,
            self.ceremony_seconds.clone(),
        );
        r.register(
            "policy_decisions",
            "Policy decisions on ceremony requests, by kind and result",
            self.decisions.clone(),
        );
        r.register(
            "policy_reloads",
            "Policy reload attempts (SIGHUP, file change, ReloadPolicy), by result",
            self.policy_reloads.clone(),
        );
        r.register_with_unit(
            "tpm_operation_duration",
            "Sealing backend operations (seal, unseal, watchdog probe) as timed on the sealing thread",
            Unit::Seconds,
            self.tpm_seconds.clone(),
        );
        r.register(
            "watchdog_failures",
            "Watchdog intervals in which a health probe failed and no keep-alive was sent",
            self.watchdog_failures.clone(),
        );
        r.register(
            "refusals_dropped",
            "Refused ceremony requests answered but not written to the history (refusal rate limit)",
            self.refusals_dropped.clone(),
        );
        r.register_collector(Box::new(live));
        r
    }
}

/// The daemon's state, read at each scrape.
#[derive(Clone)]
pub struct Live {
    pub relay: Option<Arc<Relay>>,
    pub history: Option<Arc<History>>,
    pub vaults: Option<Arc<crate::vaults::Vaults>>,
    pub running: Option<Arc<dyn Fn() -> usize + Send + Sync>>,
    pub policy_loaded: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for Live {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(relay) = &self.relay {
            let s = relay.stats();
            gauge(
                &mut e,
                "relay_sessions",
                "Relay sessions open and within their time to live",
                clamp(s.live_sessions),
            )?;
            gauge(
                &mut e,
                "relay_mailbox_envelopes",
                "Envelopes held in all relay mailboxes (kept until a session is forgotten)",
                clamp(s.envelopes),
            )?;
            gauge(
                &mut e,
                "relay_mailbox_depth_max",
                "Envelopes in the fullest relay mailbox (compare with relay.mailbox_depth)",
                clamp(s.deepest_mailbox),
            )?;
            let mut f = e.encode_descriptor(
                "relay_envelopes",
                "Envelopes posted to the relay, by result",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (result, n) in [("accepted", s.posted), ("refused", s.refused)] {
                let labels = ResultLabel { result };
                ConstCounter::new(n).encode(f.encode_family(&labels)?)?;
            }
        }
        if let Some(h) = &self.history {
            // A read failure leaves the sample out (and is logged) rather than reporting a
            // made-up value; the history's own health is the daemon's, not the scraper's.
            match (h.len(), h.size_on_disk()) {
                (Ok(n), Ok(bytes)) => {
                    gauge(
                        &mut e,
                        "history_entries",
                        "Entries in the history",
                        clamp(n),
                    )?;
                    gauge(
                        &mut e,
                        "history_disk_bytes",
                        "Bytes the history's sled database uses on disk",
                        clamp(bytes),
                    )?;
                }
                (Err(err), _) | (_, Err(err)) => {
                    tracing::warn!(error = %err, "metrics: cannot read the history's size");
                }
            }
        }
        if let Some(vaults) = &self.vaults {
            match vaults.held_count() {
                Ok(n) => gauge(
                    &mut e,
                    "vaults",
                    "Vaults with a current share on this daemon",
                    clamp(n as u64),
                )?,
                Err(err) => tracing::warn!(error = %err, "metrics: cannot list the vaults"),
            }
            match vaults.in_doubt_count() {
                Ok(n) => gauge(
                    &mut e,
                    "vaults_in_doubt",
                    "Vaults whose last keygen or reshare awaits `cosignerctl vault resolve` (they sign nothing)",
                    clamp(n as u64),
                )?,
                Err(err) => tracing::warn!(error = %err, "metrics: cannot read the commit records"),
            }
        }
        if let Some(running) = &self.running {
            gauge(
                &mut e,
                "ceremonies_running",
                "Ceremonies admitted and not yet finished",
                clamp(running() as u64),
            )?;
        }
        if let Some(loaded) = &self.policy_loaded {
            gauge(
                &mut e,
                "policy_bundle_loaded",
                "1 when a policy bundle is loaded; 0 means every request is refused",
                i64::from(loaded()),
            )?;
        }
        Ok(())
    }
}

/// Encodes the whole registry in the OpenMetrics text format.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// Serves `GET /metrics` until the task is dropped. HTTP/1.1 only; requests must arrive
/// within 10 seconds; anything else gets 404 or 405.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let registry = registry.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(req, registry).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics: connection ended with an error");
            }
            drop(permit);
        });
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn answer(req: Request<Incoming>, registry: Arc<Registry>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET /metrics\n");
    }
    // The collector reads sled and the share directory: off the async threads.
    let body = tokio::task::spawn_blocking(move || render(&registry)).await;
    match body {
        Ok(Ok(text)) => {
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(CONTENT_TYPE),
            );
            r
        }
        _ => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn empty_live() -> Live {
        Live {
            relay: None,
            history: None,
            vaults: None,
            running: None,
            policy_loaded: None,
        }
    }

    #[test]
    fn events_move_their_counters_and_histograms() {
        let m = Arc::new(Metrics::default());
        m.ceremony("sign", "succeeded", Some(Duration::from_millis(30)));
        m.ceremony("sign", "denied", None);
        m.decision("sign", "allow");
        (m.seal_observer())(SealOp::Unseal, Duration::from_millis(7), true);
        let text = render(&m.registry(empty_live())).unwrap();
        assert!(
            text.contains(r#"cosigner_ceremonies_total{kind="sign",outcome="succeeded"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"cosigner_ceremonies_total{kind="sign",outcome="denied"} 1"#));
        assert!(text.contains(
            r#"cosigner_ceremony_duration_seconds_count{kind="sign",outcome="succeeded"} 1"#
        ));
        // Denials did not run: no duration.
        assert!(
            !text.contains(
                r#"cosigner_ceremony_duration_seconds_count{kind="sign",outcome="denied"}"#
            )
        );
        assert!(text.contains(r#"cosigner_policy_decisions_total{kind="sign",result="allow"} 1"#));
        assert!(text.contains(
            r#"cosigner_tpm_operation_duration_seconds_bucket{le="0.01",op="unseal",result="ok"} 1"#
        ) || text.contains(
            r#"cosigner_tpm_operation_duration_seconds_bucket{op="unseal",result="ok",le="0.01"} 1"#
        ), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn live_state_comes_from_the_relay() {
        let relay = Arc::new(Relay::new(cosigner_relay::mailbox::Limits::default()));
        let m = Metrics::default();
        let live = Live {
            relay: Some(relay),
            running: Some(Arc::new(|| 3)),
            policy_loaded: Some(Arc::new(|| false)),
            ..empty_live()
        };
        let text = render(&m.registry(live)).unwrap();
        assert!(text.contains("cosigner_relay_sessions 0\n"), "{text}");
        assert!(text.contains(r#"cosigner_relay_envelopes_total{result="refused"} 0"#));
        assert!(text.contains("cosigner_ceremonies_running 3\n"));
        assert!(text.contains("cosigner_policy_bundle_loaded 0\n"));
    }
}
