//! `cosignerd`: the co-signer daemon.
//!
//! Exit codes: 0 after a clean shutdown, 78 (EX_CONFIG) for a configuration error, so that
//! systemd's `RestartPreventExitStatus=78` does not restart a daemon that cannot start, and
//! 1 for any other failure.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cosignerd::config::{Config, LogFormat};

#[derive(Parser, Debug)]
#[command(
    name = "cosignerd",
    version,
    about = "Threshold-signature co-signer daemon"
)]
struct Args {
    /// Configuration file (TOML). `COSIGNER_*` environment variables override its keys.
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = "/etc/cosigner/cosignerd.toml"
    )]
    config: PathBuf,

    /// Validate FILE (and the files it names) and exit without starting.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
}

const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(path) = args.check_config {
        return match Config::load(&path) {
            Ok(c) => {
                println!(
                    "{}: OK (listen {}, identity {}, data {})",
                    path.display(),
                    c.listen,
                    c.identity.uri(&c.tls.trust_domain),
                    c.data_dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cosignerd: {e}");
                ExitCode::from(EX_CONFIG)
            }
        };
    }
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cosignerd: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cosignerd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cosignerd::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = anyhow::Error::from(e);
            tracing::error!(error = format!("{msg:#}"), "cosignerd failed");
            eprintln!("cosignerd: {msg:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    // The level was validated with the config, so this parse cannot fail in practice; fall
    // back to "info" rather than panic if it ever does.
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}
