//! How cosignerctl reaches a daemon: address, CA and client certificate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Connection options shared by every command that talks to a daemon. Environment variables
/// use the `COSIGNERCTL_` prefix so they never collide with the daemon's `COSIGNER_*` keys.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Daemon address.
    #[arg(
        long,
        env = "COSIGNERCTL_ADDR",
        default_value = "https://127.0.0.1:7443",
        global = true
    )]
    pub addr: String,

    /// A `certs init` directory; with --as NAME it supplies --ca, --cert and --key.
    #[arg(long, env = "COSIGNERCTL_CERTS", value_name = "DIR", global = true)]
    pub certs: Option<PathBuf>,

    /// Identity to use from --certs (file stem: "admin", "device-1", ...).
    #[arg(
        long = "as",
        env = "COSIGNERCTL_AS",
        value_name = "NAME",
        default_value = "admin",
        global = true
    )]
    pub as_name: String,

    /// CA certificate that the daemon's certificate must chain to.
    #[arg(long, env = "COSIGNERCTL_CA", value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,

    /// Client certificate (PEM).
    #[arg(long, env = "COSIGNERCTL_CERT", value_name = "FILE", global = true)]
    pub cert: Option<PathBuf>,

    /// Client private key (PEM).
    #[arg(long, env = "COSIGNERCTL_KEY", value_name = "FILE", global = true)]
    pub key: Option<PathBuf>,

    /// Name to verify the daemon's certificate against (default: the address's host).
    #[arg(long, value_name = "NAME", global = true)]
    pub server_name: Option<String>,

    /// Seconds to wait for the connection and for each call.
    #[arg(long, default_value_t = 10, global = true)]
    pub timeout: u64,
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

impl ConnectArgs {
    fn resolved(&self) -> (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>) {
        let from_dir =
            |ext: &str, name: &str| self.certs.as_ref().map(|d| d.join(format!("{name}.{ext}")));
        (
            self.ca.clone().or_else(|| from_dir("pem", "ca")),
            self.cert.clone().or_else(|| from_dir("pem", &self.as_name)),
            self.key.clone().or_else(|| from_dir("key", &self.as_name)),
        )
    }

    /// A hint for a failed call: a daemon with mutual TLS closes connections that present no
    /// certificate, and the client only sees "connection closed".
    pub fn hint(&self) -> Option<&'static str> {
        let (_, cert, _) = self.resolved();
        cert.is_none().then_some(
            "hint: no client certificate was presented (use --certs DIR --as NAME, or --cert and --key); cosignerd requires one",
        )
    }

    /// Opens a mutual-TLS channel. Without a client certificate the channel is still TLS
    /// (the daemon will refuse it unless it allows anonymous health checks).
    pub async fn channel(&self) -> Result<Channel> {
        self.channel_to(&self.addr, Some(Duration::from_secs(self.timeout.max(1))))
            .await
    }

    /// A channel to another address with the same certificates. `call_timeout` None: calls
    /// may run as long as they need (ceremonies, mailbox streams).
    pub async fn channel_to(&self, addr: &str, call_timeout: Option<Duration>) -> Result<Channel> {
        let (ca, cert, key) = self.resolved();
        let Some(ca) = ca else {
            bail!("no CA certificate: pass --ca FILE or --certs DIR");
        };
        let uri: http::Uri = addr
            .parse()
            .with_context(|| format!("address {addr:?} is not a URI like https://host:port"))?;
        if uri.scheme_str() != Some("https") {
            bail!("address {addr:?}: only https:// is supported (the daemon requires TLS)");
        }
        let host = uri
            .host()
            .unwrap_or("localhost")
            .trim_start_matches('[')
            .trim_end_matches(']');
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read("CA certificate", &ca)?))
            .domain_name(self.server_name.clone().unwrap_or_else(|| host.to_string()));
        match (cert, key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read("client certificate", &cert)?,
                    read("client key", &key)?,
                ));
            }
            (None, None) => {}
            _ => bail!("--cert and --key go together"),
        }
        let mut endpoint = Endpoint::from(uri)
            .tls_config(tls)
            .context("TLS configuration")?
            .connect_timeout(Duration::from_secs(self.timeout.max(1)))
            .tcp_nodelay(true);
        if let Some(t) = call_timeout {
            endpoint = endpoint.timeout(t);
        }
        endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {addr}"))
    }
}
