//! The sealing service: one dedicated thread owns the backend (a TPM context blocks and must
//! not be used concurrently), fed by a bounded queue; async callers await their replies.
//! Data keys cross the channel in `Zeroizing` buffers; share plaintext never does (it is
//! encrypted and decrypted by the caller with the data key).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::envelope::{self, BackendKind, Binding, Envelope};
use crate::error::SealError;
use crate::software::SoftwareKey;
use crate::tpm::{SealedKey, TpmBackend};

/// Which backend to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendConfig {
    /// A TPM 2.0 through a TCTI; `pcrs` bind new seals to those PCRs' current values.
    Tpm { tcti: String, pcrs: Vec<u8> },
    /// Development only: a master key in a file.
    Software { key_file: PathBuf },
}

/// A backend operation, as reported to a [`SealObserver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealOp {
    Seal,
    Unseal,
    /// The watchdog's liveness probe ([`Sealer::probe`]).
    Probe,
}

impl SealOp {
    pub fn as_str(self) -> &'static str {
        match self {
            SealOp::Seal => "seal",
            SealOp::Unseal => "unseal",
            SealOp::Probe => "probe",
        }
    }
}

/// Told how long each backend operation took and whether it succeeded, so the daemon can
/// export TPM latency without this crate knowing about metrics. Runs on the sealing thread
/// between requests: it must be quick and must not block.
pub type SealObserver = Arc<dyn Fn(SealOp, Duration, bool) + Send + Sync>;

enum Backend {
    Tpm(Box<TpmBackend>),
    Software(SoftwareKey),
}

enum Request {
    Seal(
        Zeroizing<[u8; 32]>,
        oneshot::Sender<Result<SealedKey, SealError>>,
    ),
    Unseal(
        SealedKey,
        oneshot::Sender<Result<Zeroizing<[u8; 32]>, SealError>>,
    ),
    PcrExtend(u8, Vec<u8>, oneshot::Sender<Result<(), SealError>>),
    PcrReset(u8, oneshot::Sender<Result<(), SealError>>),
    Probe(oneshot::Sender<Result<(), SealError>>),
    Stop(oneshot::Sender<()>),
}

/// Handle to the sealing thread. Cheap to clone; the thread stops when the last handle is
/// dropped (and flushes what it holds in the TPM).
#[derive(Clone)]
pub struct Sealer {
    tx: mpsc::Sender<Request>,
    kind: BackendKind,
    primary_name: Option<Vec<u8>>,
}

impl Backend {
    fn seal(&mut self, key: &[u8; 32]) -> Result<SealedKey, SealError> {
        match self {
            Backend::Tpm(t) => t.seal_key(key),
            Backend::Software(s) => s.seal_key(key),
        }
    }

    fn unseal(&mut self, k: &SealedKey) -> Result<Zeroizing<[u8; 32]>, SealError> {
        match self {
            Backend::Tpm(t) => t.unseal_key(k),
            Backend::Software(s) => s.unseal_key(k),
        }
    }

    fn probe(&mut self) -> Result<(), SealError> {
        match self {
            Backend::Tpm(t) => t.probe(),
            Backend::Software(_) => Ok(()),
        }
    }

    fn tpm(&mut self) -> Result<&mut TpmBackend, SealError> {
        match self {
            Backend::Tpm(t) => Ok(t),
            Backend::Software(_) => Err(SealError::Config("PCRs exist only on a TPM".into())),
        }
    }
}

impl Sealer {
    /// Starts the sealing thread and connects the backend on it. `queue` bounds the requests
    /// waiting for the thread; further callers wait for room.
    pub fn start(config: BackendConfig, queue: usize) -> Result<Sealer, SealError> {
        Sealer::start_observed(config, queue, None)
    }

    /// [`Sealer::start`], telling `observer` the duration of every seal, unseal and probe.
    pub fn start_observed(
        config: BackendConfig,
        queue: usize,
        observer: Option<SealObserver>,
    ) -> Result<Sealer, SealError> {
        let (tx, mut rx) = mpsc::channel::<Request>(queue.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let kind = match config {
            BackendConfig::Tpm { .. } => BackendKind::Tpm,
            BackendConfig::Software { .. } => BackendKind::Software,
        };
        std::thread::Builder::new()
            .name("cosigner-seal".into())
            .spawn(move || {
                let backend = match &config {
                    BackendConfig::Tpm { tcti, pcrs } => {
                        TpmBackend::connect(tcti, pcrs).map(|t| Backend::Tpm(Box::new(t)))
                    }
                    BackendConfig::Software { key_file } => {
                        SoftwareKey::open_or_create(key_file).map(Backend::Software)
                    }
                };
                let mut backend = match backend {
                    Ok(b) => {
                        let name = match &b {
                            Backend::Tpm(t) => Some(t.primary_name().to_vec()),
                            Backend::Software(_) => None,
                        };
                        let _ = ready_tx.send(Ok(name));
                        b
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let timed = |op: SealOp, started: Instant, ok: bool| {
                    if let Some(o) = &observer {
                        o(op, started.elapsed(), ok);
                    }
                };
                while let Some(req) = rx.blocking_recv() {
                    match req {
                        Request::Seal(key, reply) => {
                            let t = Instant::now();
                            let r = backend.seal(&key);
                            timed(SealOp::Seal, t, r.is_ok());
                            let _ = reply.send(r);
                        }
                        Request::Unseal(k, reply) => {
                            let t = Instant::now();
                            let r = backend.unseal(&k);
                            timed(SealOp::Unseal, t, r.is_ok());
                            let _ = reply.send(r);
                        }
                        Request::Probe(reply) => {
                            let t = Instant::now();
                            let r = backend.probe();
                            timed(SealOp::Probe, t, r.is_ok());
                            let _ = reply.send(r);
                        }
                        Request::PcrExtend(pcr, data, reply) => {
                            let _ =
                                reply.send(backend.tpm().and_then(|t| t.pcr_extend(pcr, &data)));
                        }
                        Request::PcrReset(pcr, reply) => {
                            let _ = reply.send(backend.tpm().and_then(|t| t.pcr_reset(pcr)));
                        }
                        Request::Stop(ack) => {
                            rx.close();
                            drop(backend); // flushes the primary and closes the TPM
                            let _ = ack.send(());
                            return;
                        }
                    }
                }
            })
            .map_err(|e| SealError::Tpm(format!("cannot start the sealing thread: {e}")))?;
        let primary_name = ready_rx.recv().map_err(|_| SealError::Stopped)??;
        Ok(Sealer {
            tx,
            kind,
            primary_name,
        })
    }

    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    /// The TPM storage primary's name (None for the software sealer).
    pub fn primary_name(&self) -> Option<&[u8]> {
        self.primary_name.as_deref()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SealError>>) -> Request,
    ) -> Result<T, SealError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| SealError::Stopped)?;
        rx.await.map_err(|_| SealError::Stopped)?
    }

    /// Seals `plaintext` bound to `binding`: a fresh data key, sealed by the backend, and
    /// the plaintext encrypted under it. Returns the file's bytes.
    pub async fn seal(&self, binding: &Binding, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.seal_with(binding, &[], plaintext).await
    }

    /// As [`Sealer::seal`], with `clear` readable from the file without unsealing.
    pub async fn seal_with(
        &self,
        binding: &Binding,
        clear: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let mut data_key = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, data_key.as_mut());
        let sealed = self.ask(|r| Request::Seal(data_key.clone(), r)).await?;
        envelope::seal(self.kind, binding, clear, &sealed, &data_key, plaintext)
    }

    /// Seals in the version-1 format (tests of the migration only).
    #[doc(hidden)]
    pub async fn seal_legacy(
        &self,
        binding: &Binding,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let mut data_key = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, data_key.as_mut());
        let sealed = self.ask(|r| Request::Seal(data_key.clone(), r)).await?;
        envelope::seal_legacy(self.kind, binding, &sealed, &data_key, plaintext)
    }

    /// Opens a sealed file that must be bound to `expected`.
    pub async fn unseal(
        &self,
        file: &[u8],
        expected: &Binding,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let env = Envelope::parse(file)?;
        if env.backend != self.kind {
            return Err(SealError::Binding(format!(
                "it was sealed by the {:?} backend, this daemon uses {:?}",
                env.backend, self.kind
            )));
        }
        env.check_binding(expected)?;
        let key = self
            .ask(|r| Request::Unseal(env.sealed_key.clone(), r))
            .await?;
        env.open(file, &key)
    }

    /// Stops the sealing thread after the requests already queued, flushing what it holds in
    /// the TPM and closing the connection, and returns once that is done. Later calls on any
    /// clone fail with [`SealError::Stopped`]. (Dropping every handle also stops the thread,
    /// but without waiting for it: a TPM that serves one client at a time, like swtpm, may
    /// then still be busy with the old connection when the next user connects.)
    pub async fn stop(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Request::Stop(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Proves the sealing thread and the TPM answer (one TPM GetRandom; nothing for the
    /// software backend). The watchdog feeds systemd only after this succeeds.
    pub async fn probe(&self) -> Result<(), SealError> {
        self.ask(Request::Probe).await
    }

    /// Extends a PCR (TPM only; diagnostics and tests).
    pub async fn pcr_extend(&self, pcr: u8, data: &[u8]) -> Result<(), SealError> {
        let data = data.to_vec();
        self.ask(|r| Request::PcrExtend(pcr, data, r)).await
    }

    /// Resets a resettable PCR (TPM only; diagnostics and tests).
    pub async fn pcr_reset(&self, pcr: u8) -> Result<(), SealError> {
        self.ask(|r| Request::PcrReset(pcr, r)).await
    }
}
