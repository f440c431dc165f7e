//! Harness for end-to-end tests: real `cosignerd` and `cosignerctl` processes, real
//! certificates from `cosignerctl certs init`, real gRPC over mutual TLS on loopback.
//!
//! The binaries are taken from the same target directory as the test executable. The test
//! command (`scripts/test.sh`) builds them first with `cargo build --workspace --bins`; a
//! missing binary is reported with that instruction rather than a confusing spawn error.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
pub use cosigner_test_support::swtpm::SwTpm;
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Path of a workspace binary next to the running test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` before the end-to-end tests (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Runs `cosignerctl` with `args`, capturing its output.
pub fn ctl(args: &[&str]) -> Output {
    Command::new(bin("cosignerctl"))
        .args(args)
        .env_remove("COSIGNERCTL_ADDR")
        .env_remove("COSIGNERCTL_CERTS")
        .stdin(Stdio::null())
        .output()
        .expect("spawn cosignerctl")
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// A development PKI made by `cosignerctl certs init`, as a user would make it.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// Daemon `cosignerd`, admin `admin`, parties `device-1` and `device-2`.
    pub fn init(parent: &Path, name: &str) -> Result<Pki> {
        let dir = parent.join(name);
        let d = dir.to_str().context("utf-8 path")?;
        let out = ctl(&[
            "certs", "init", "--dir", d, "--party", "device-1", "--party", "device-2",
        ]);
        if !out.status.success() {
            bail!(
                "certs init failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Pki { dir })
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A TLS client channel to `addr` as identity `who` (None: no client certificate).
    pub async fn channel(&self, addr: SocketAddr, who: Option<&str>) -> Result<Channel> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(fs::read(self.file("ca.pem"))?))
            .domain_name("localhost");
        if let Some(who) = who {
            tls = tls.identity(Identity::from_pem(
                fs::read(self.file(&format!("{who}.pem")))?,
                fs::read(self.file(&format!("{who}.key")))?,
            ));
        }
        Ok(Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .connect()
            .await?)
    }
}

/// A `cosignerd` process with its own config, data directory, log file and software TPM.
/// Killed on drop (then its TPM).
pub struct Daemon {
    pub addr: SocketAddr,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    tpm: Option<SwTpm>,
    env: Vec<(String, String)>,
}

/// The `[seal]` section for a TPM reached through `tcti`.
pub fn tpm_seal(tcti: &str) -> String {
    format!("[seal]\nbackend = \"tpm\"\ntcti = \"{tcti}\"\n")
}

/// Writes a config for a daemon in `dir` using the certificates of `pki`. `extra_tls` is
/// appended to the `[tls]` section; `seal` (a whole `[seal]` section) and `extra` to the end.
pub fn write_config(
    dir: &Path,
    pki: &Pki,
    addr: SocketAddr,
    data_dir: &Path,
    extra_tls: &str,
    seal: &str,
    extra: &str,
) -> Result<PathBuf> {
    let path = dir.join("cosignerd.toml");
    fs::write(
        &path,
        format!(
            r#"[server]
listen = "{addr}"

[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
{extra_tls}

[data]
dir = "{data}"

{seal}
{extra}
"#,
            ca = pki.file("ca.pem").display(),
            cert = pki.file("cosignerd.pem").display(),
            key = pki.file("cosignerd.key").display(),
            data = data_dir.display(),
        ),
    )?;
    Ok(path)
}

impl Daemon {
    /// Starts a daemon with its own swtpm and a default config in `dir`, and waits until it
    /// serves.
    pub async fn start(dir: &Path, pki: &Pki) -> Result<Daemon> {
        Self::start_with(dir, pki, "", "").await
    }

    pub async fn start_with(dir: &Path, pki: &Pki, extra_tls: &str, extra: &str) -> Result<Daemon> {
        fs::create_dir_all(dir)?;
        let tpm = SwTpm::start(&dir.join("tpm"))?;
        Self::start_with_seal(
            dir,
            pki,
            extra_tls,
            &tpm_seal(&tpm.tcti()),
            extra,
            Some(tpm),
        )
        .await
    }

    /// As `start_with`, with an explicit `[seal]` section (and the swtpm it uses, if any).
    pub async fn start_with_seal(
        dir: &Path,
        pki: &Pki,
        extra_tls: &str,
        seal: &str,
        extra: &str,
        tpm: Option<SwTpm>,
    ) -> Result<Daemon> {
        fs::create_dir_all(dir)?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let data_dir = dir.join("data");
        let config = write_config(dir, pki, addr, &data_dir, extra_tls, seal, extra)?;
        let mut d = Self::spawn(&config, addr, data_dir, dir.join("cosignerd.log"))?;
        d.tpm = tpm;
        d.env.clear();
        d.wait_serving(pki).await?;
        Ok(d)
    }

    /// Starts the daemon again with the same config, data and TPM (after it exited), and
    /// waits until it serves. The log file is appended to.
    pub async fn respawn(&mut self, pki: &Pki) -> Result<()> {
        self.respawn_with_env(pki, &[]).await
    }

    /// As `respawn`, with extra environment variables for the new process (and later
    /// `respawn`s forget them).
    pub async fn respawn_with_env(&mut self, pki: &Pki, env: &[(&str, &str)]) -> Result<()> {
        self.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.log)?;
        self.child = Some(
            Command::new(bin("cosignerd"))
                .arg("--config")
                .arg(&self.config)
                .env("TSS2_LOG", "all+NONE")
                .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("spawn cosignerd")?,
        );
        self.wait_serving(pki).await
    }

    /// Spawns `cosignerd -c config` without waiting for it.
    pub fn spawn(
        config: &Path,
        addr: SocketAddr,
        data_dir: PathBuf,
        log: PathBuf,
    ) -> Result<Daemon> {
        let child = Command::new(bin("cosignerd"))
            .arg("--config")
            .arg(config)
            .env("TSS2_LOG", "all+NONE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?)
            .spawn()
            .context("spawn cosignerd")?;
        Ok(Daemon {
            addr,
            config: config.to_path_buf(),
            data_dir,
            log,
            child: Some(child),
            tpm: None,
            env: Vec::new(),
        })
    }

    /// Waits (up to `limit`) for the process to exit by itself; its exit status.
    pub async fn exited(&mut self, limit: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The TCTI of this daemon's own swtpm, if it has one.
    pub fn tcti(&self) -> Option<String> {
        self.tpm.as_ref().map(SwTpm::tcti)
    }

    /// Stops this daemon's software TPM (the daemon keeps running without it).
    pub fn stop_tpm(&mut self) {
        self.tpm.take();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls the health service (as the admin) until SERVING, failing early with the log
    /// if the process exits.
    pub async fn wait_serving(&mut self, pki: &Pki) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "cosignerd exited with {status} before serving:\n{}",
                    self.log_text()
                );
            }
            if let Ok(ch) = pki.channel(self.addr, Some("admin")).await {
                let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
                if let Ok(r) = health
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    && r.into_inner().status == 1
                {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("cosignerd did not serve within 30 s:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `cosignerctl` against this daemon as identity `who` of `pki` ("admin", "device-1").
    pub fn ctl(&self, pki: &Pki, who: &str, args: &[&str]) -> Output {
        let addr = format!("https://{}", self.addr);
        let certs = pki.dir.to_string_lossy().into_owned();
        let mut all = vec!["--addr", &addr, "--certs", &certs, "--as", who];
        all.extend_from_slice(args);
        ctl(&all)
    }

    /// SIGTERM, then the exit status; fails if the daemon is still running after 5 s.
    /// Blocks the calling thread (use `block_in_place` from a multi-thread runtime).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.signal(nix::sys::signal::Signal::SIGTERM)?;
        self.wait_exit(Duration::from_secs(5))?
            .with_context(|| format!("still running 5 s after SIGTERM:\n{}", self.log_text()))
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal)?;
        Ok(())
    }

    /// Waits up to `limit` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        let Some(child) = self.child.as_mut() else {
            bail!("daemon already reaped");
        };
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A temporary directory for one test, kept when `COSIGNER_KEEP_TEST_DIRS` is set so a
/// failure can be inspected.
pub fn test_dir() -> TempDir {
    let keep = std::env::var_os("COSIGNER_KEEP_TEST_DIRS").is_some();
    let dir = tempfile::Builder::new()
        .prefix("cosigner-e2e-")
        .disable_cleanup(keep)
        .tempdir()
        .expect("tempdir");
    if keep {
        eprintln!("test dir kept: {}", dir.path().display());
    }
    dir
}

/// A device party (`cosignerctl party`) with its encrypted file, as a wallet would run it.
pub struct Party {
    pub name: String,
    pub file: PathBuf,
    pub pass_file: PathBuf,
}

impl Party {
    /// `party init` in `dir` with a passphrase file.
    pub fn init(dir: &Path, name: &str) -> Result<Party> {
        fs::create_dir_all(dir)?;
        let pass_file = dir.join(format!("{name}.pass"));
        fs::write(&pass_file, "correct horse battery staple\n")?;
        let p = Party {
            name: name.to_string(),
            file: dir.join(format!("{name}.party")),
            pass_file,
        };
        let o = p.run_raw(None, &["init", "--name", name]);
        if !o.status.success() {
            bail!("party init: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(p)
    }

    fn run_raw(&self, pki: Option<&Pki>, args: &[&str]) -> Output {
        let file = self.file.to_string_lossy().into_owned();
        let pass = self.pass_file.to_string_lossy().into_owned();
        let certs = pki.map(|p| p.dir.to_string_lossy().into_owned());
        let mut all: Vec<&str> = Vec::new();
        if let Some(c) = &certs {
            all.extend(["--certs", c, "--as", &self.name]);
        }
        all.extend(["party", "--file", &file, "--passphrase-file", &pass]);
        all.extend_from_slice(args);
        ctl(&all)
    }

    /// `cosignerctl --certs PKI --as NAME party --file ... ARGS`.
    pub fn run(&self, pki: &Pki, args: &[&str]) -> Output {
        self.run_raw(Some(pki), args)
    }

    /// As `run`, with `--round-timeout` first (seconds).
    pub fn run_timeout(&self, pki: &Pki, secs: u64, args: &[&str]) -> Output {
        let s = secs.to_string();
        let mut all = vec!["--round-timeout", s.as_str()];
        all.extend_from_slice(args);
        self.run_raw(Some(pki), &all)
    }

    /// As `run` but spawned, for a party that must run beside others.
    pub fn spawn(&self, pki: &Pki, args: &[&str]) -> Result<Child> {
        let mut all: Vec<String> = vec![
            "--certs".into(),
            pki.dir.to_string_lossy().into_owned(),
            "--as".into(),
            self.name.clone(),
            "party".into(),
            "--file".into(),
            self.file.to_string_lossy().into_owned(),
            "--passphrase-file".into(),
            self.pass_file.to_string_lossy().into_owned(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        Ok(Command::new(bin("cosignerctl"))
            .args(&all)
            .env_remove("COSIGNERCTL_ADDR")
            .env_remove("COSIGNERCTL_CERTS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    }

    /// `party show --json`.
    pub fn show(&self) -> Result<serde_json::Value> {
        let o = self.run_raw(None, &["show", "--json"]);
        if !o.status.success() {
            bail!("party show: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(serde_json::from_slice(&o.stdout)?)
    }

    /// NAME:PARTY_ID:ENCRYPTION_KEY for `--member` and `--add`.
    pub fn member_spec(&self) -> Result<String> {
        let s = self.show()?;
        Ok(format!(
            "{}:{}:{}",
            self.name,
            s["party_id"].as_str().context("party_id")?,
            s["encryption_key"].as_str().context("encryption_key")?
        ))
    }
}

impl Daemon {
    /// NAME:PARTY_ID:ENCRYPTION_KEY of this daemon, from `status --json` (as the admin).
    pub fn member_spec(&self, pki: &Pki, name: &str) -> Result<String> {
        let o = self.ctl(pki, "admin", &["status", "--json"]);
        if !o.status.success() {
            bail!("status: {}", String::from_utf8_lossy(&o.stderr));
        }
        let s: serde_json::Value = serde_json::from_slice(&o.stdout)?;
        Ok(format!(
            "{name}:{}:{}",
            s["party_id"].as_str().context("party_id")?,
            s["encryption_key"].as_str().context("encryption_key")?
        ))
    }

    /// NAME=https://ADDR for `--daemon`.
    pub fn daemon_spec(&self, name: &str) -> String {
        format!("{name}=https://{}", self.addr)
    }
}

/// A copy of deploy/policies/`name` in `dir`, with `data.json` passed through `edit`
/// (tests fill in party ids). Returns the bundle folder.
pub fn policy_bundle(dir: &Path, name: &str, edit: impl Fn(&str) -> String) -> Result<PathBuf> {
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/policies")
        .join(name);
    let to = dir.join(format!("policy-{name}"));
    fs::create_dir_all(&to)?;
    for e in fs::read_dir(&from)? {
        let e = e?;
        let text = fs::read_to_string(e.path())?;
        let text = if e.file_name() == "data.json" {
            edit(&text)
        } else {
            text
        };
        fs::write(to.join(e.file_name()), text)?;
    }
    Ok(to)
}
