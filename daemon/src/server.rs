//! Wiring: the data-directory lock, TLS, the gRPC services, readiness and shutdown.
//!
//! Shutdown order on SIGTERM/SIGINT: tell systemd we are stopping, mark health NOT_SERVING so
//! balancers stop sending work, stop accepting, give in-flight calls `shutdown_grace` to
//! finish, then drop whatever is left (its clients see the connection close) and release the
//! data-directory lock by exiting.

use std::sync::Arc;
use std::time::Duration;

use cosigner_api::v1::cosigner_server::CosignerServer;
use cosigner_api::v1::relay_server::RelayServer;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::auth::{AuthLayer, Authorizer};
use crate::backup::Backups;
use crate::ceremony::{Ceremonies, RelayTls};
use crate::config::{ClientAuth, Config};
use crate::cosigner_service::{CosignerService, DaemonInfo};
use crate::datadir::{DataDir, DataDirError};
use crate::me::Me;
use crate::metrics::{Live, Metrics};
use crate::now_ms;
use crate::policy::Policy;
use crate::vaults::Vaults;
use crate::watchdog::Probes;
use cosigner_history::{History, HistoryError, Kind, Outcome, Record};
use cosigner_relay::mailbox::Relay;
use cosigner_relay::service::RelayService;
use cosigner_seal::{BackendConfig, Identity as PartyIdentity, SealError, Sealer, ShareStore};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("sealing: {0}")]
    Seal(#[from] SealError),
    #[error("config key `{key}`: cannot read {path}: {source}")]
    Read {
        key: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tls: {0}")]
    Tls(String),
    #[error("reflection: {0}")]
    Reflection(String),
    #[error("config key `{key}`: cannot listen on {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server stopped: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
    #[error("config key `policy.bundle`: {0}")]
    Policy(String),
}

fn read(key: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ServeError> {
    std::fs::read(path).map_err(|source| ServeError::Read {
        key,
        path: path.display().to_string(),
        source,
    })
}

/// What a co-signer (as opposed to a relay-only daemon) runs: sealing, identity, history,
/// vaults and ceremonies.
struct Core {
    sealer: Sealer,
    history: Arc<History>,
    policy: Arc<Policy>,
    vaults: Arc<Vaults>,
    ceremonies: Arc<Ceremonies>,
    service: CosignerService,
    party_id: [u8; 32],
    started_at_ms: i64,
}

async fn start_core(
    config: &Config,
    seal: &crate::config::SealSettings,
    data_dir: &DataDir,
    relay: Option<&Arc<Relay>>,
    identity_uri: &str,
    metrics: &Arc<Metrics>,
) -> Result<Core, ServeError> {
    // Sealing first: the party identity (created and sealed at first start) is part of
    // what the start record says.
    let (sealing, sealing_detail) = match &seal.backend {
        BackendConfig::Tpm { tcti, pcrs } if pcrs.is_empty() => ("tpm", tcti.to_string()),
        BackendConfig::Tpm { tcti, pcrs } => ("tpm", format!("{tcti}, bound to PCRs {pcrs:?}")),
        BackendConfig::Software { key_file } => (
            "software",
            format!("INSECURE, development only; key {}", key_file.display()),
        ),
    };
    if seal.insecure {
        tracing::warn!(
            "INSECURE: shares are sealed with a software key kept on this disk (seal.allow_insecure_software_seal = true); use backend = \"tpm\" for anything but development"
        );
    }
    let backend = seal.backend.clone();
    let observer = metrics.seal_observer();
    let sealer =
        tokio::task::spawn_blocking(move || Sealer::start_observed(backend, 64, Some(observer)))
            .await
            .map_err(|e| SealError::Tpm(format!("sealing start-up task failed: {e}")))??;
    // Before anything is unsealed: the TPM must be the one this data directory started on.
    if cosigner_seal::identity::check_primary(data_dir.path(), &sealer)? {
        tracing::info!("pinned the TPM storage primary to this data directory");
    }
    let (keys, created) = PartyIdentity::load_or_create(data_dir.path(), &sealer).await?;
    let party_id = keys.party_id();
    let party_hex = hex::encode(party_id);
    tracing::info!(backend = %sealing, detail = %sealing_detail, party_id = %party_hex, created, "sealing ready");

    // Fail closed: no history, no service. It is opened (and checked) before anything else
    // runs; the start is recorded once the listener is bound, before the daemon serves.
    let started_at_ms = now_ms();
    let history = Arc::new(History::open(&data_dir.path().join("history"))?);
    if config.history_retention_days > 0 {
        tokio::spawn(prune_periodically(
            history.clone(),
            config.history_retention_days,
        ));
    }

    let me = Arc::new(Me::new(keys));
    let store = ShareStore::open(data_dir.path(), sealer.clone())?;
    let vaults = Arc::new(Vaults::new(store, me.clone(), history.clone()));
    match vaults.upgrade().await {
        Ok(lines) => {
            for line in lines {
                tracing::warn!(%line, "share store at start");
            }
        }
        Err(e) => tracing::error!(error = %e.message(), "cannot list the share store at start"),
    }
    let own_relay = relay.as_ref().map(|_| {
        let host = if config.listen.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            match config.listen.ip() {
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            }
        };
        format!("https://{host}:{}", config.listen.port())
    });
    let policy = Arc::new(
        Policy::start(
            config.policy.bundle.clone(),
            history.clone(),
            metrics.clone(),
        )
        .await
        .map_err(ServeError::Policy)?,
    );
    if !config.policy.watch.is_zero() {
        tokio::spawn(policy.clone().watch(config.policy.watch));
    }
    let ceremonies = Arc::new(Ceremonies::new(
        vaults.clone(),
        history.clone(),
        policy.clone(),
        config.ceremonies.clone(),
        me.clone(),
        own_relay,
        RelayTls {
            ca: read("tls.ca", &config.tls.ca)?,
            cert: read("tls.cert", &config.tls.cert)?,
            key: read("tls.key", &config.tls.key)?,
        },
        metrics.clone(),
    ));
    if let Some(limit) = config.ceremonies.drop_previous_after {
        let c = ceremonies.clone();
        // Checked at a quarter of the limit (between 1 s and 10 min).
        let every = (limit / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                c.drop_stale_previous().await;
            }
        });
    }
    if config.ceremonies.allowed_requesters.is_empty() {
        tracing::warn!(
            "ceremonies.allowed_requesters is empty: every keygen, sign and reshare request will be refused"
        );
    }

    let rotations = crate::rotation::Rotations::start(
        config.rotation.clone(),
        ceremonies.clone(),
        vaults.clone(),
        me.clone(),
        history.clone(),
        config.identity.clone(),
        identity_uri.to_string(),
    );
    let backups = Arc::new(Backups {
        me,
        vaults: vaults.clone(),
        history: history.clone(),
        ceremonies: ceremonies.clone(),
        sealer: sealer.clone(),
        data_dir: data_dir.path().to_path_buf(),
        source: format!("cosignerd {identity_uri}"),
    });
    let service = CosignerService::new(
        DaemonInfo {
            identity_uri: identity_uri.to_string(),
            sealing,
            sealing_detail,
        },
        history.clone(),
        vaults.clone(),
        ceremonies.clone(),
        policy.clone(),
        backups,
        rotations,
        relay.is_some(),
    );
    Ok(Core {
        sealer,
        history,
        policy,
        vaults,
        ceremonies,
        service,
        party_id,
        started_at_ms,
    })
}

/// Runs the daemon until SIGTERM or SIGINT. Returns after the lock is released.
pub async fn run(config: Config) -> Result<(), ServeError> {
    let data_dir = DataDir::open_locked(&config.data_dir)?;
    let identity_uri = config.identity.uri(&config.tls.trust_domain);
    let relay = config
        .relay
        .enabled
        .then(|| Arc::new(Relay::new(config.relay.limits.clone())));
    if let Some(r) = &relay {
        tokio::spawn(sweep_relay(r.clone()));
    }
    let metrics = Arc::new(Metrics::default());
    let core = match &config.seal {
        Some(seal) => Some(
            start_core(
                &config,
                seal,
                &data_dir,
                relay.as_ref(),
                &identity_uri,
                &metrics,
            )
            .await?,
        ),
        None => {
            tracing::info!("relay.only = true: this daemon hosts the relay and nothing else");
            None
        }
    };

    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read("tls.cert", &config.tls.cert)?,
            read("tls.key", &config.tls.key)?,
        ))
        .client_ca_root(Certificate::from_pem(read("tls.ca", &config.tls.ca)?))
        .timeout(Duration::from_secs(10));
    if config.tls.client_auth == ClientAuth::Optional {
        tracing::warn!(
            "tls.client_auth = \"optional\": clients without a certificate may call the health service (and nothing else)"
        );
        tls = tls.client_auth_optional(true);
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<CosignerServer<CosignerService>>()
        .await;
    health.set_serving::<RelayServer<RelayService>>().await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cosigner_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(cosigner_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let (listener, local) = bind("server.listen", config.listen).await?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let policy = core.as_ref().map(|c| c.policy.clone());

    // Metrics: bound before READY so a taken port stops the start, served on their own
    // plain-HTTP listener (see metrics.rs for why).
    let live = Live {
        relay: relay.clone(),
        history: core.as_ref().map(|c| c.history.clone()),
        vaults: core.as_ref().map(|c| c.vaults.clone()),
        running: core.as_ref().map(|c| {
            let ceremonies = c.ceremonies.clone();
            Arc::new(move || ceremonies.running()) as Arc<dyn Fn() -> usize + Send + Sync>
        }),
        policy_loaded: core.as_ref().map(|c| {
            let policy = c.policy.clone();
            Arc::new(move || !policy.hash().is_empty()) as Arc<dyn Fn() -> bool + Send + Sync>
        }),
    };
    if let Some(addr) = config.metrics_listen {
        let (bound, at) = bind("metrics.listen", addr).await?;
        tracing::info!(listen = %at, "metrics at http://{at}/metrics");
        tokio::spawn(crate::metrics::serve(
            bound,
            Arc::new(metrics.registry(live)),
        ));
    }
    let probes = Probes {
        sealer: core.as_ref().map(|c| c.sealer.clone()),
        history: core.as_ref().map(|c| c.history.clone()),
    };
    let (cosigner, sealer) = match core {
        Some(core) => {
            let start = core.history.append(Record {
                tls_identity: identity_uri.clone(),
                requester: core.party_id.to_vec(),
                started_at_ms: core.started_at_ms,
                ended_at_ms: now_ms(),
                ..Record::new(Kind::ConfigStart, Outcome::Succeeded)
            })?;
            tracing::info!(
                seq = start.seq,
                entries = core.history.len()?,
                "start recorded in the history"
            );
            (Some(CosignerServer::new(core.service)), Some(core.sealer))
        }
        None => (None, None),
    };

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .tls_config(tls)
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .concurrency_limit_per_connection(256)
        .layer(AuthLayer::new(Authorizer::new(
            config.tls.trust_domain.clone(),
        )))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_optional_service(cosigner)
        .add_optional_service(relay.map(|r| {
            RelayServer::new(RelayService::new(r, relay_client_key))
                .max_decoding_message_size(8 << 20)
                .max_encoding_message_size(8 << 20)
        }))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    tokio::pin!(server);

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ServeError::Signal)?;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(ServeError::Signal)?;

    tracing::info!(
        listen = %local,
        identity = %identity_uri,
        data_dir = %data_dir.path().display(),
        client_auth = ?config.tls.client_auth,
        "cosignerd ready"
    );
    notify(&[sd_notify::NotifyState::Ready]);
    let watchdog = tokio::spawn(crate::watchdog::run(probes, metrics.clone()));

    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(ServeError::Signal)?;
    let signal = loop {
        tokio::select! {
            res = &mut server => {
                // The server ended without being asked to: an accept-loop failure.
                res?;
                return Ok(());
            }
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = sighup.recv() => {
                // SIGHUP: load the policy bundle again (kept if the new one is bad).
                if let Some(p) = &policy {
                    let p = p.clone();
                    tokio::spawn(async move { p.reload("SIGHUP").await });
                }
            }
        }
    };
    tracing::info!(signal, grace = ?config.shutdown_grace, "shutting down");
    notify(&[sd_notify::NotifyState::Stopping]);
    watchdog.abort();
    health
        .set_not_serving::<CosignerServer<CosignerService>>()
        .await;
    health.set_not_serving::<RelayServer<RelayService>>().await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    let _ = stop_tx.send(());
    match tokio::time::timeout(config.shutdown_grace, &mut server).await {
        Ok(res) => res?,
        Err(_) => tracing::warn!(
            grace = ?config.shutdown_grace,
            "in-flight calls did not finish within the grace period; closing their connections"
        ),
    }
    // Release the TPM cleanly (flush what it holds) before giving up the data directory.
    if let Some(sealer) = sealer {
        sealer.stop().await;
    }
    drop(data_dir);
    tracing::info!("stopped");
    Ok(())
}

/// Binds a listener for config key `key`; the bound address (a port 0 made concrete).
async fn bind(
    key: &'static str,
    addr: std::net::SocketAddr,
) -> Result<(TcpListener, std::net::SocketAddr), ServeError> {
    let err = |source| ServeError::Bind { key, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(err)?;
    let local = listener.local_addr().map_err(err)?;
    Ok((listener, local))
}

/// The relay counts sessions per TLS identity.
fn relay_client_key(ext: &tonic::Extensions) -> Option<String> {
    ext.get::<crate::auth::Caller>().map(|c| c.uri.clone())
}

/// Ends expired relay sessions every second.
async fn sweep_relay(relay: Arc<Relay>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        relay.sweep();
    }
}

/// Prunes history older than the retention once at start and then hourly. A failure is
/// logged and retried at the next tick: keeping entries longer is the safe side.
async fn prune_periodically(history: Arc<History>, days: u32) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let h = history.clone();
        let before = now_ms() - i64::from(days) * 86_400_000;
        match tokio::task::spawn_blocking(move || h.prune(before)).await {
            Ok(Ok(p)) if p.removed > 0 => {
                tracing::info!(
                    removed = p.removed,
                    first_kept = p.first_kept,
                    "history pruned"
                )
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "history pruning failed"),
            Err(e) => tracing::warn!(error = %e, "history pruning task failed"),
        }
    }
}

/// Tells systemd about a state change; a no-op when not run under systemd (no
/// NOTIFY_SOCKET), and never fatal: a daemon that cannot notify still serves.
fn notify(state: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "systemd notification failed");
    }
}
