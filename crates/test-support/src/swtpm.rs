//! A private software TPM per test: `swtpm` on two free loopback ports with its own state
//! directory, stopped when dropped. Tests and benchmarks use it; production uses
//! `device:/dev/tpmrm0`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct SwTpm {
    child: Child,
    port: u16,
    state_dir: PathBuf,
}

/// Two consecutive free ports (server, control).
fn free_port_pair() -> std::io::Result<u16> {
    for _ in 0..200 {
        let a = TcpListener::bind("127.0.0.1:0")?;
        let port = a.local_addr()?.port();
        if port < 65535 && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::other(
        "no two consecutive free loopback ports",
    ))
}

impl SwTpm {
    /// Starts swtpm with its TPM state in `state_dir` (created if missing). Starting again
    /// on the same directory is the same TPM (same seeds), as after a reboot.
    pub fn start(state_dir: &Path) -> std::io::Result<SwTpm> {
        std::fs::create_dir_all(state_dir)?;
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port_pair()?;
            let child = Command::new("swtpm")
                .arg("socket")
                .arg("--tpm2")
                .arg("--tpmstate")
                .arg(format!("dir={}", state_dir.display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .arg("--flags")
                .arg("not-need-init,startup-clear")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot run swtpm (apt-get install swtpm): {e}"),
                    )
                })?;
            let mut tpm = SwTpm {
                child,
                port,
                state_dir: state_dir.to_path_buf(),
            };
            match tpm.wait_ready() {
                Ok(()) => return Ok(tpm),
                Err(e) => last_err = Some(e), // a port race: drop (kills it) and retry
            }
        }
        Err(last_err.unwrap_or_else(|| std::io::Error::other("swtpm did not start")))
    }

    fn wait_ready(&mut self) -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(std::io::Error::other(format!("swtpm exited with {status}")));
            }
            let up = |p: u16| {
                TcpStream::connect_timeout(&([127, 0, 0, 1], p).into(), Duration::from_millis(200))
                    .is_ok()
            };
            // Probe only the control port: the server port serves one client at a time and
            // a probe connection there would be that client.
            if up(self.port + 1) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(
                    "swtpm did not open its ports within 10 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The TCTI string for tss-esapi.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}

impl Drop for SwTpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
