//! Configuration: a TOML file, then `COSIGNER_*` environment variables over it.
//!
//! Environment keys use `__` between sections: `COSIGNER_SERVER__LISTEN=0.0.0.0:7443`
//! overrides `[server] listen`. Unknown keys are errors (a typo must not silently fall back
//! to a default on a signing server), and every error names the key or file at fault, on one
//! line, so `cosignerd --check-config` and a failed start say exactly what to fix.
//!
//! Relative paths in the file are resolved against the file's directory, so a config and its
//! certificates can move together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0}: not found")]
    NotFound(PathBuf),
    #[error("config file {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("config key `{key}`: {why}")]
    Invalid { key: &'static str, why: String },
    #[error("config key `{key}`: cannot read {path}: {source}")]
    Unreadable {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The whole configuration, as loaded and validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub shutdown_grace: Duration,
    pub tls: TlsSettings,
    pub data_dir: PathBuf,
    /// The daemon's own identity, read from its certificate.
    pub identity: cosigner_pki::Identity,
    pub log: LogSettings,
    /// Prune history entries older than this many days; 0 keeps everything.
    pub history_retention_days: u32,
    /// None only for a relay-only daemon (`relay.only = true`), which holds no secrets.
    pub seal: Option<SealSettings>,
    pub relay: RelaySettings,
    pub ceremonies: CeremonySettings,
    pub policy: PolicySettings,
    pub rotation: RotationSettings,
    /// Where the Prometheus endpoint listens (plain HTTP, GET /metrics); None: no endpoint.
    pub metrics_listen: Option<SocketAddr>,
}

/// Scheduled rotation: on each schedule this daemon starts a refresh of the vault's
/// committee (a reshare to the same committee and threshold) with its peer daemons.
#[derive(Debug, Clone, Default)]
pub struct RotationSettings {
    /// Relay address every party can reach; empty: this daemon's own relay.
    pub relay: String,
    /// Peer daemons by party id.
    pub peers: std::collections::BTreeMap<[u8; 32], String>,
    pub schedules: Vec<RotationSchedule>,
    /// Back-off after a failed run: doubles from `retry_min` up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

#[derive(Debug, Clone)]
pub struct RotationSchedule {
    pub vault: String,
    /// The cron expression as written (sec min hour day-of-month month day-of-week [year]).
    pub cron: String,
    pub schedule: cron::Schedule,
}

/// The policy bundle (a folder of .rego and .json files) and how it is watched.
#[derive(Debug, Clone)]
pub struct PolicySettings {
    /// None: no bundle, every ceremony request is refused (default deny).
    pub bundle: Option<PathBuf>,
    /// How often the folder is checked for changes (0: only SIGHUP and ReloadPolicy).
    pub watch: Duration,
}

/// The embedded relay (hosted by this daemon) and its limits.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub enabled: bool,
    /// Run only the relay: no sealing, history, vaults or ceremonies.
    pub only: bool,
    pub limits: cosigner_relay::mailbox::Limits,
}

/// Who may ask for ceremonies and how they run.
#[derive(Debug, Clone)]
pub struct CeremonySettings {
    /// Party ids allowed to request a keygen (there is no committee to check yet); sign
    /// and reshare requesters must be committee members. Empty refuses every keygen.
    pub allowed_requesters: Vec<[u8; 32]>,
    /// How long a ceremony waits for the next message before naming who is missing.
    pub round_timeout: Duration,
    /// Ceremonies running at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_concurrent: usize,
    /// How far a request's timestamp may be from this daemon's clock.
    pub max_clock_skew: Duration,
    /// How long after a certified commit the previous epoch's share is dropped even if
    /// this daemon has not signed at the new epoch (None: only on a signature or by hand).
    pub drop_previous_after: Option<Duration>,
    /// The Bitcoin network each vault's PSBTs must name (a request's label is covered by
    /// no signature).
    pub bitcoin_networks: cosigner_node::payload::Networks,
}

/// How shares and identity keys are sealed.
#[derive(Debug, Clone)]
pub struct SealSettings {
    pub backend: cosigner_seal::BackendConfig,
    /// True for the development-only software sealer (warned about at every start).
    pub insecure: bool,
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub trust_domain: String,
    pub client_auth: ClientAuth,
}

/// Whether a client certificate is needed to open a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Every connection presents a certificate chaining to the CA (the default).
    #[default]
    Required,
    /// Connections without a certificate are accepted but may call only the standard
    /// health service (for load balancers and orchestrators that probe without a
    /// certificate). Every other RPC still needs a certificate.
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter directive ("info", "cosignerd=debug,info").
    pub level: String,
}

// The raw, serde-facing shape of the file. Kept apart from `Config` so validation turns
// strings into typed values in one place, with the key name in every error.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: RawServer,
    tls: RawTls,
    data: RawData,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    history: RawHistory,
    #[serde(default)]
    seal: Option<RawSeal>,
    #[serde(default)]
    relay: RawRelay,
    #[serde(default)]
    ceremonies: RawCeremonies,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    rotation: RawRotation,
    #[serde(default)]
    metrics: RawMetrics,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    #[serde(default)]
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRotation {
    relay: String,
    peers: std::collections::BTreeMap<String, String>,
    schedule: Vec<RawRotationSchedule>,
    retry_min_secs: u64,
    retry_max_secs: u64,
}

impl Default for RawRotation {
    fn default() -> Self {
        RawRotation {
            relay: String::new(),
            peers: Default::default(),
            schedule: Vec::new(),
            retry_min_secs: 5,
            retry_max_secs: 600,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRotationSchedule {
    vault: String,
    cron: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPolicy {
    bundle: Option<PathBuf>,
    watch_secs: u64,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            bundle: None,
            watch_secs: 2,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRelay {
    enabled: bool,
    only: bool,
    max_payload_bytes: usize,
    mailbox_depth: usize,
    sessions_per_client: usize,
    max_sessions: usize,
    default_ttl_secs: u64,
}

impl Default for RawRelay {
    fn default() -> Self {
        let l = cosigner_relay::mailbox::Limits::default();
        RawRelay {
            enabled: true,
            only: false,
            max_payload_bytes: l.max_payload_bytes,
            mailbox_depth: l.mailbox_depth,
            sessions_per_client: l.sessions_per_client,
            max_sessions: l.max_sessions,
            default_ttl_secs: l.default_ttl.as_secs(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCeremonies {
    allowed_requesters: Vec<String>,
    round_timeout_secs: u64,
    max_concurrent: usize,
    max_clock_skew_secs: u64,
    drop_previous_after_secs: u64,
    bitcoin_network: String,
    bitcoin_networks: std::collections::BTreeMap<String, String>,
}

impl Default for RawCeremonies {
    fn default() -> Self {
        RawCeremonies {
            allowed_requesters: Vec::new(),
            round_timeout_secs: 30,
            max_concurrent: 64,
            max_clock_skew_secs: 300,
            drop_previous_after_secs: (cosigner_node::previous::KEEP_AFTER_COMMIT_MS / 1000) as u64,
            bitcoin_network: "mainnet".into(),
            bitcoin_networks: std::collections::BTreeMap::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeal {
    backend: SealBackend,
    #[serde(default)]
    tcti: Option<String>,
    #[serde(default)]
    pcrs: Vec<u8>,
    #[serde(default)]
    allow_insecure_software_seal: bool,
    #[serde(default)]
    software_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum SealBackend {
    Tpm,
    Software,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHistory {
    #[serde(default)]
    retention_days: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: String,
    #[serde(default = "default_grace")]
    shutdown_grace_secs: u64,
}

fn default_grace() -> u64 {
    3
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    #[serde(default = "default_trust_domain")]
    trust_domain: String,
    #[serde(default)]
    client_auth: ClientAuth,
}

fn default_trust_domain() -> String {
    "cosigner".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    dir: PathBuf,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    format: LogFormat,
    #[serde(default)]
    level: Option<String>,
}

impl Config {
    /// Loads `path`, applies the environment, and validates everything that can be checked
    /// without side effects (addresses, readable and parseable certificate files).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        if !path.is_file() {
            return Err(ConfigError::NotFound(path.to_path_buf()));
        }
        let env: config::Map<String, String> = env
            .into_iter()
            // Every key lives in a section, so only SECTION__KEY names are config: other
            // COSIGNER_* variables (scripts, tools) must not be mistaken for unknown keys.
            .filter(|(k, _)| k.starts_with("COSIGNER_") && k.contains("__"))
            .collect();
        let load_err = |e: config::ConfigError| ConfigError::Load {
            path: path.to_path_buf(),
            message: one_line(&e.to_string()),
        };
        let raw: RawConfig = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("COSIGNER")
                    .prefix_separator("_")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(env)),
            )
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(load_err)?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let base = std::path::absolute(parent).map_err(|e| ConfigError::Load {
            path: path.to_path_buf(),
            message: format!("cannot resolve its directory: {e}"),
        })?;
        Self::validate(raw, &base)
    }

    fn validate(raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
        let listen: SocketAddr = raw
            .server
            .listen
            .parse()
            .map_err(|e| ConfigError::Invalid {
                key: "server.listen",
                why: format!(
                    "{:?} is not an address:port ({e}); example: \"127.0.0.1:7443\"",
                    raw.server.listen
                ),
            })?;
        if !(1..=60).contains(&raw.server.shutdown_grace_secs) {
            return Err(ConfigError::Invalid {
                key: "server.shutdown_grace_secs",
                why: format!(
                    "{} is outside 1..=60 seconds",
                    raw.server.shutdown_grace_secs
                ),
            });
        }
        cosigner_pki::validate_name("trust domain", &raw.tls.trust_domain).map_err(|e| {
            ConfigError::Invalid {
                key: "tls.trust_domain",
                why: e.to_string(),
            }
        })?;
        let tls = TlsSettings {
            ca: base.join(&raw.tls.ca),
            cert: base.join(&raw.tls.cert),
            key: base.join(&raw.tls.key),
            trust_domain: raw.tls.trust_domain,
            client_auth: raw.tls.client_auth,
        };
        let cas = read_certs("tls.ca", &tls.ca)?;
        let chain = read_certs("tls.cert", &tls.cert)?;
        read_key("tls.key", &tls.key)?;
        let identity =
            cosigner_pki::identity_from_der(&chain[0], &tls.trust_domain).map_err(|e| {
                ConfigError::Invalid {
                    key: "tls.cert",
                    why: format!("{}: {e}", tls.cert.display()),
                }
            })?;
        drop(cas);
        if raw.data.dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data.dir",
                why: "must not be empty".into(),
            });
        }
        if (1..=7).contains(&raw.history.retention_days) {
            return Err(ConfigError::Invalid {
                key: "history.retention_days",
                why: format!(
                    "{} days would cut into the 7-day spending window; use 0 (keep everything) or at least 8",
                    raw.history.retention_days
                ),
            });
        }
        let data_dir = base.join(&raw.data.dir);
        let relay = validate_relay(raw.relay)?;
        let seal = match (raw.seal, relay.only) {
            (Some(_), true) => {
                return Err(ConfigError::Invalid {
                    key: "seal",
                    why: "a relay-only daemon (relay.only = true) holds no secrets; remove [seal]"
                        .into(),
                });
            }
            (None, true) => None,
            (None, false) => {
                return Err(ConfigError::Invalid {
                    key: "seal",
                    why: "missing: the [seal] section is required (backend = \"tpm\"), unless relay.only = true".into(),
                });
            }
            (Some(raw_seal), false) => Some(validate_seal(raw_seal, base, &data_dir)?),
        };
        let level = raw.log.level.unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
            return Err(ConfigError::Invalid {
                key: "log.level",
                why: format!("{level:?} is not a tracing filter (try \"info\" or \"debug\")"),
            });
        }
        let ceremonies = validate_ceremonies(raw.ceremonies)?;
        if raw.policy.watch_secs > 3600 {
            return Err(ConfigError::Invalid {
                key: "policy.watch_secs",
                why: format!("{} is more than 3600", raw.policy.watch_secs),
            });
        }
        let bundle = raw.policy.bundle.map(|b| base.join(b));
        if let Some(b) = &bundle
            && !b.is_dir()
        {
            return Err(ConfigError::Invalid {
                key: "policy.bundle",
                why: format!(
                    "{} is not a directory of .rego and .json files",
                    b.display()
                ),
            });
        }
        let policy = PolicySettings {
            bundle,
            watch: Duration::from_secs(raw.policy.watch_secs),
        };
        let rotation = validate_rotation(raw.rotation)?;
        if !rotation.schedules.is_empty() && rotation.relay.is_empty() && !relay.enabled {
            return Err(ConfigError::Invalid {
                key: "rotation.relay",
                why: "rotation schedules need a relay: set rotation.relay or relay.enabled = true"
                    .into(),
            });
        }
        let metrics_listen = match raw.metrics.listen.trim() {
            "" => None,
            a => Some(a.parse::<SocketAddr>().map_err(|e| ConfigError::Invalid {
                key: "metrics.listen",
                why: format!(
                    "{a:?} is not an address:port ({e}); example: \"127.0.0.1:9464\", or empty for no endpoint"
                ),
            })?),
        };
        if metrics_listen == Some(listen) {
            return Err(ConfigError::Invalid {
                key: "metrics.listen",
                why:
                    "is the same address as server.listen; the metrics endpoint needs its own port"
                        .into(),
            });
        }
        Ok(Config {
            metrics_listen,
            rotation,
            policy,
            relay,
            ceremonies,
            listen,
            shutdown_grace: Duration::from_secs(raw.server.shutdown_grace_secs),
            tls,
            data_dir,
            identity,
            log: LogSettings {
                format: raw.log.format,
                level,
            },
            history_retention_days: raw.history.retention_days,
            seal,
        })
    }
}

fn validate_seal(
    raw_seal: RawSeal,
    base: &Path,
    data_dir: &Path,
) -> Result<SealSettings, ConfigError> {
    let seal = match raw_seal.backend {
        SealBackend::Tpm => {
            if let Some(p) = raw_seal.pcrs.iter().find(|p| **p > 23) {
                return Err(ConfigError::Invalid {
                    key: "seal.pcrs",
                    why: format!("PCR {p} does not exist (0-23)"),
                });
            }
            if raw_seal.software_key_file.is_some() || raw_seal.allow_insecure_software_seal {
                return Err(ConfigError::Invalid {
                    key: "seal.backend",
                    why: "software seal keys are set but the backend is \"tpm\"; remove them"
                        .into(),
                });
            }
            SealSettings {
                backend: cosigner_seal::BackendConfig::Tpm {
                    tcti: raw_seal.tcti.unwrap_or_else(|| "device:/dev/tpmrm0".into()),
                    pcrs: raw_seal.pcrs,
                },
                insecure: false,
            }
        }
        SealBackend::Software => {
            if !raw_seal.allow_insecure_software_seal {
                return Err(ConfigError::Invalid {
                        key: "seal.allow_insecure_software_seal",
                        why: "the software sealer keeps the key to every share in a file beside the data, so a copy of the disk is a copy of the shares; set it to true only for development".into(),
                    });
            }
            if raw_seal.tcti.is_some() || !raw_seal.pcrs.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "seal.backend",
                    why: "tcti and pcrs need the \"tpm\" backend".into(),
                });
            }
            SealSettings {
                backend: cosigner_seal::BackendConfig::Software {
                    key_file: raw_seal
                        .software_key_file
                        .map(|f| base.join(f))
                        .unwrap_or_else(|| data_dir.join("software-seal.key")),
                },
                insecure: true,
            }
        }
    };
    Ok(seal)
}

fn validate_relay(r: RawRelay) -> Result<RelaySettings, ConfigError> {
    let range = |key: &'static str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                key,
                why: format!("{v} is outside {lo}..={hi}"),
            })
        }
    };
    range(
        "relay.max_payload_bytes",
        r.max_payload_bytes as u64,
        64 * 1024,
        16 << 20,
    )?;
    range("relay.mailbox_depth", r.mailbox_depth as u64, 16, 1 << 20)?;
    range(
        "relay.sessions_per_client",
        r.sessions_per_client as u64,
        1,
        1 << 20,
    )?;
    range("relay.max_sessions", r.max_sessions as u64, 1, 1 << 20)?;
    range("relay.default_ttl_secs", r.default_ttl_secs, 1, 3600)?;
    if r.only && !r.enabled {
        return Err(ConfigError::Invalid {
            key: "relay.only",
            why: "a relay-only daemon needs relay.enabled = true".into(),
        });
    }
    Ok(RelaySettings {
        enabled: r.enabled,
        only: r.only,
        limits: cosigner_relay::mailbox::Limits {
            max_payload_bytes: r.max_payload_bytes,
            mailbox_depth: r.mailbox_depth,
            sessions_per_client: r.sessions_per_client,
            max_sessions: r.max_sessions,
            default_ttl: Duration::from_secs(r.default_ttl_secs),
            ..Default::default()
        },
    })
}

fn validate_ceremonies(c: RawCeremonies) -> Result<CeremonySettings, ConfigError> {
    let mut allowed = Vec::with_capacity(c.allowed_requesters.len());
    for (i, s) in c.allowed_requesters.iter().enumerate() {
        let id = cosigner_relay::keys::parse_id(s).ok_or_else(|| ConfigError::Invalid {
            key: "ceremonies.allowed_requesters",
            why: format!(
                "entry {i} ({s:?}) is not a party id (64 hex characters, as `cosignerctl party show` prints)"
            ),
        })?;
        allowed.push(id);
    }
    if !(1..=600).contains(&c.round_timeout_secs) {
        return Err(ConfigError::Invalid {
            key: "ceremonies.round_timeout_secs",
            why: format!("{} is outside 1..=600", c.round_timeout_secs),
        });
    }
    if !(1..=4096).contains(&c.max_concurrent) {
        return Err(ConfigError::Invalid {
            key: "ceremonies.max_concurrent",
            why: format!("{} is outside 1..=4096", c.max_concurrent),
        });
    }
    if !(1..=3600).contains(&c.max_clock_skew_secs) {
        return Err(ConfigError::Invalid {
            key: "ceremonies.max_clock_skew_secs",
            why: format!("{} is outside 1..=3600", c.max_clock_skew_secs),
        });
    }
    if c.drop_previous_after_secs > 366 * 86_400 {
        return Err(ConfigError::Invalid {
            key: "ceremonies.drop_previous_after_secs",
            why: format!(
                "{} is more than a year (0 turns the timed drop off)",
                c.drop_previous_after_secs
            ),
        });
    }
    // Canonical names, so the check compares what the decoder reports.
    // Canonical names, so the check compares what the decoder reports; an empty name is
    // refused rather than read as mainnet.
    let canonical = |key: &'static str, what: &str, name: &str| {
        (!name.is_empty())
            .then(|| cosigner_policy::btc::network(name).ok())
            .flatten()
            .map(cosigner_policy::btc::network_name)
            .ok_or_else(|| ConfigError::Invalid {
                key,
                why: format!(
                    "{what}{name:?} is not one of mainnet, testnet, testnet4, signet, regtest{}",
                    if what.is_empty() {
                        " (or \"any\": not bound)"
                    } else {
                        " (\"any\" is for ceremonies.bitcoin_network only)"
                    }
                ),
            })
    };
    let default = match c.bitcoin_network.as_str() {
        "any" => None,
        name => Some(canonical("ceremonies.bitcoin_network", "", name)?),
    };
    let mut by_vault = std::collections::BTreeMap::new();
    for (vault, name) in &c.bitcoin_networks {
        cosigner_seal::check_vault_id(vault).map_err(|e| ConfigError::Invalid {
            key: "ceremonies.bitcoin_networks",
            why: format!("{vault:?}: {e}"),
        })?;
        let what = format!("vault {vault:?}: ");
        by_vault.insert(
            vault.clone(),
            canonical("ceremonies.bitcoin_networks", &what, name)?,
        );
    }
    Ok(CeremonySettings {
        bitcoin_networks: cosigner_node::payload::Networks { default, by_vault },
        allowed_requesters: allowed,
        round_timeout: Duration::from_secs(c.round_timeout_secs),
        max_concurrent: c.max_concurrent,
        max_clock_skew: Duration::from_secs(c.max_clock_skew_secs),
        drop_previous_after: (c.drop_previous_after_secs > 0)
            .then(|| Duration::from_secs(c.drop_previous_after_secs)),
    })
}

fn validate_rotation(r: RawRotation) -> Result<RotationSettings, ConfigError> {
    use std::str::FromStr;
    let mut peers = std::collections::BTreeMap::new();
    for (id, addr) in r.peers {
        let pid = cosigner_relay::keys::parse_id(&id).ok_or_else(|| ConfigError::Invalid {
            key: "rotation.peers",
            why: format!(
                "{id:?} is not a party id (64 hex characters, as `cosignerctl status` prints)"
            ),
        })?;
        if !(addr.starts_with("https://") && addr.len() > 8) {
            return Err(ConfigError::Invalid {
                key: "rotation.peers",
                why: format!("the address of {id:.16}... ({addr:?}) must be https://host:port"),
            });
        }
        peers.insert(pid, addr);
    }
    if !r.relay.is_empty() && !r.relay.starts_with("https://") {
        return Err(ConfigError::Invalid {
            key: "rotation.relay",
            why: format!(
                "{:?} must be https://host:port (or empty for this daemon's relay)",
                r.relay
            ),
        });
    }
    let mut schedules: Vec<RotationSchedule> = Vec::new();
    for (i, s) in r.schedule.into_iter().enumerate() {
        cosigner_seal::check_vault_id(&s.vault).map_err(|e| ConfigError::Invalid {
            key: "rotation.schedule.vault",
            why: format!("entry {i}: {e}"),
        })?;
        if schedules.iter().any(|x| x.vault == s.vault) {
            return Err(ConfigError::Invalid {
                key: "rotation.schedule.vault",
                why: format!("vault {:?} has two schedules", s.vault),
            });
        }
        let schedule = cron::Schedule::from_str(&s.cron).map_err(|e| ConfigError::Invalid {
            key: "rotation.schedule.cron",
            why: format!(
                "entry {i} ({:?}): {e}; the form is \"sec min hour day-of-month month day-of-week\", e.g. \"0 0 3 * * Sun\"",
                s.cron
            ),
        })?;
        schedules.push(RotationSchedule {
            vault: s.vault,
            cron: s.cron,
            schedule,
        });
    }
    if !(1..=86_400).contains(&r.retry_min_secs)
        || r.retry_max_secs < r.retry_min_secs
        || r.retry_max_secs > 86_400
    {
        return Err(ConfigError::Invalid {
            key: "rotation.retry_min_secs",
            why: format!(
                "retry_min_secs {} and retry_max_secs {} must satisfy 1 <= min <= max <= 86400",
                r.retry_min_secs, r.retry_max_secs
            ),
        });
    }
    Ok(RotationSettings {
        relay: r.relay,
        peers,
        schedules,
        retry_min: Duration::from_secs(r.retry_min_secs),
        retry_max: Duration::from_secs(r.retry_max_secs),
    })
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Unreadable {
        key,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a PEM file of one or more certificates.
fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read_file(key, path)?;
    let invalid = |why: String| ConfigError::Invalid {
        key,
        why: format!("{}: {why}", path.display()),
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(invalid("contains no PEM certificate".into()));
    }
    Ok(certs)
}

/// Checks that a PEM private key parses. Its bytes are dropped at once and never echoed:
/// a key must not end up in an error message.
fn read_key(key: &'static str, path: &Path) -> Result<(), ConfigError> {
    let pem = read_file(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| ConfigError::Invalid {
        key,
        why: format!("{}: not a PEM private key ({e})", path.display()),
    })?;
    Ok(())
}

/// The `config` crate sometimes spreads an error over lines; operators and tests read one.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(body: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let spec = cosigner_pki::devca::DevPkiSpec {
            daemons: vec!["d".into()],
            ..Default::default()
        };
        cosigner_pki::devca::init(dir.path(), &spec, false).unwrap();
        let path = dir.path().join("cosignerd.toml");
        std::fs::write(&path, body).unwrap();
        (dir, path)
    }

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:7443"
[tls]
ca = "ca.pem"
cert = "d.pem"
key = "d.key"
[data]
dir = "data"
[seal]
backend = "tpm"
tcti = "swtpm:host=127.0.0.1,port=2321"
"#;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn good_config_resolves_paths_and_defaults() {
        let (dir, path) = setup(GOOD);
        let c = Config::load_with_env(&path, no_env()).unwrap();
        assert_eq!(c.listen.port(), 7443);
        assert_eq!(c.data_dir, dir.path().join("data"));
        assert_eq!(c.tls.trust_domain, "cosigner");
        assert_eq!(c.tls.client_auth, ClientAuth::Required);
        assert_eq!(c.shutdown_grace, Duration::from_secs(3));
        assert_eq!(c.log.format, LogFormat::Human);
        assert_eq!(c.identity.name, "d");
    }

    #[test]
    fn bitcoin_networks_are_bound_by_default_and_named_canonically() {
        let (_dir, path) = setup(GOOD);
        let c = Config::load_with_env(&path, no_env()).unwrap();
        let n = &c.ceremonies.bitcoin_networks;
        assert_eq!(n.bound("any-vault"), Some("mainnet"));
        let body = format!(
            "{GOOD}[ceremonies]\nbitcoin_network = \"bitcoin\"\n[ceremonies.bitcoin_networks]\nv1 = \"regtest\"\n"
        );
        let (_dir, path) = setup(&body);
        let c = Config::load_with_env(&path, no_env()).unwrap();
        let n = &c.ceremonies.bitcoin_networks;
        assert_eq!(
            (n.bound("v1"), n.bound("v2")),
            (Some("regtest"), Some("mainnet"))
        );
        let (_dir, path) = setup(&format!("{GOOD}[ceremonies]\nbitcoin_network = \"any\"\n"));
        let c = Config::load_with_env(&path, no_env()).unwrap();
        assert_eq!(c.ceremonies.bitcoin_networks.bound("v1"), None);
        for bad in [
            "bitcoin_network = \"moon\"",
            "[ceremonies.bitcoin_networks]\nv1 = \"moon\"",
            "[ceremonies.bitcoin_networks]\n\"../x\" = \"regtest\"",
            "bitcoin_network = \"\"",
            "[ceremonies.bitcoin_networks]\nv1 = \"any\"",
        ] {
            let (_dir, path) = setup(&format!("{GOOD}[ceremonies]\n{bad}\n"));
            let e = Config::load_with_env(&path, no_env())
                .unwrap_err()
                .to_string();
            assert!(e.contains("ceremonies.bitcoin_network"), "{bad}: {e}");
        }
    }

    #[test]
    fn environment_overrides_file() {
        let (_dir, path) = setup(GOOD);
        let env = vec![
            ("COSIGNER_SERVER__LISTEN".into(), "127.0.0.1:9999".into()),
            ("COSIGNER_LOG__FORMAT".into(), "json".into()),
            ("UNRELATED".into(), "x".into()),
        ];
        let c = Config::load_with_env(&path, env).unwrap();
        assert_eq!(c.listen.port(), 9999);
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("listen = \"127.0.0.1:7443\"", "listen = \"nope\""),
            ("[data]", "bogus = 1\n[data]"),
            ("key = \"d.key\"", "key = \"missing.key\""),
            ("ca = \"ca.pem\"", "ca = \"d.key\""),
            ("[data]", "trust_domain = \"a/b\"\n[data]"),
            ("[data]", "trust_domain = \"elsewhere\"\n[data]"),
            ("key = \"d.key\"", "key = \"d.pem\""),
            ("[data]", "[history]\nretention_days = 3\n[data]"),
            ("backend = \"tpm\"", "backend = \"software\""),
            ("backend = \"tpm\"", "backend = \"tpm\"\npcrs = [24]"),
            ("backend = \"tpm\"", "backend = \"floppy\""),
            ("[data]", "[metrics]\nlisten = \"9464\"\n[data]"),
            ("[data]", "[metrics]\nlisten = \"127.0.0.1:7443\"\n[data]"),
        ];
        let expect = [
            "server.listen",
            "bogus",
            "tls.key",
            "tls.ca",
            "tls.trust_domain",
            "tls.cert",
            "tls.key",
            "history.retention_days",
            "seal.allow_insecure_software_seal",
            "seal.pcrs",
            "floppy",
            "metrics.listen",
            "metrics.listen",
        ];
        for ((from, to), want) in cases.iter().zip(expect) {
            let (_dir, path) = setup(&GOOD.replace(from, to));
            let err = Config::load_with_env(&path, no_env())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err:?} does not name {want}");
            assert!(!err.contains('\n'), "{err:?} is not one line");
        }
    }

    #[test]
    fn relay_only_needs_no_seal_and_refuses_one() {
        let start = GOOD.find("[seal]").unwrap();
        let end = GOOD[start..]
            .find("\n\n")
            .map(|e| start + e)
            .unwrap_or(GOOD.len());
        let no_seal = format!("{}{}", &GOOD[..start], &GOOD[end..]);
        let (_dir, path) = setup(&no_seal);
        let err = Config::load_with_env(&path, no_env())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`seal`") && err.contains("relay.only"),
            "{err}"
        );
        std::fs::write(&path, format!("{no_seal}\n[relay]\nonly = true\n")).unwrap();
        let c = Config::load_with_env(&path, no_env()).unwrap();
        assert!(c.seal.is_none() && c.relay.only);
        std::fs::write(&path, format!("{GOOD}\n[relay]\nonly = true\n")).unwrap();
        let err = Config::load_with_env(&path, no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("remove [seal]"), "{err}");
    }

    #[test]
    fn seal_backends() {
        let (dir, path) = setup(GOOD);
        let c = Config::load_with_env(&path, no_env()).unwrap();
        let seal = c.seal.unwrap();
        assert!(!seal.insecure);
        assert_eq!(
            seal.backend,
            cosigner_seal::BackendConfig::Tpm {
                tcti: "swtpm:host=127.0.0.1,port=2321".into(),
                pcrs: vec![]
            }
        );
        let soft = GOOD.replace(
            "backend = \"tpm\"\ntcti = \"swtpm:host=127.0.0.1,port=2321\"",
            "backend = \"software\"\nallow_insecure_software_seal = true",
        );
        std::fs::write(&path, soft).unwrap();
        let c = Config::load_with_env(&path, no_env()).unwrap();
        let seal = c.seal.unwrap();
        assert!(seal.insecure);
        assert_eq!(
            seal.backend,
            cosigner_seal::BackendConfig::Software {
                key_file: dir.path().join("data/software-seal.key")
            }
        );
        // Mixed settings are refused rather than half-applied.
        let mixed = GOOD.replace(
            "backend = \"tpm\"",
            "backend = \"tpm\"\nallow_insecure_software_seal = true",
        );
        std::fs::write(&path, mixed).unwrap();
        let err = Config::load_with_env(&path, no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("seal.backend"), "{err}");
    }

    #[test]
    fn unknown_environment_key_is_an_error() {
        let (_dir, path) = setup(GOOD);
        let env = vec![("COSIGNER_SERVER__LISTN".into(), "x".into())];
        let err = Config::load_with_env(&path, env).unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = Config::load_with_env(Path::new("/nonexistent/c.toml"), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/c.toml"), "{err}");
    }

    #[test]
    fn rotation_schedules_peers_and_their_errors() {
        let peer = "ab".repeat(32);
        let good = format!(
            "{GOOD}[relay]\nenabled = true\n[rotation]\nretry_min_secs = 2\n[rotation.peers]\n\"{peer}\" = \"https://b.example:7443\"\n[[rotation.schedule]]\nvault = \"v1\"\ncron = \"*/5 * * * * *\"\n"
        );
        let (_d, path) = setup(&good);
        let c = Config::load_with_env(&path, no_env()).unwrap();
        assert_eq!(c.rotation.schedules.len(), 1);
        assert_eq!(c.rotation.schedules[0].vault, "v1");
        assert_eq!(c.rotation.peers.len(), 1);
        assert_eq!(c.rotation.retry_min, Duration::from_secs(2));
        for (bad, key, why) in [
            (
                good.replace("*/5 * * * * *", "every day"),
                "rotation.schedule.cron",
                "sec min hour",
            ),
            (
                good.replace(&peer, "abc"),
                "rotation.peers",
                "not a party id",
            ),
            (
                good.replace("https://b.example", "b.example"),
                "rotation.peers",
                "https://",
            ),
            (
                good.replace("\"v1\"", "\"../x\""),
                "rotation.schedule.vault",
                "vault id",
            ),
            (
                good.replace("enabled = true", "enabled = false"),
                "rotation.relay",
                "need a relay",
            ),
            (
                good.replace("retry_min_secs = 2", "retry_min_secs = 0"),
                "rotation.retry_min_secs",
                "min <= max",
            ),
        ] {
            let (_d, path) = setup(&bad);
            let e = Config::load_with_env(&path, no_env())
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains(why), "{e}");
        }
    }
}
