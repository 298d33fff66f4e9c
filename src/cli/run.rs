//! `pqnode run`: start the node through [`App`], print where it is, run
//! until SIGINT or SIGTERM. Everything else lives in `app.rs`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args as ClapArgs;

use super::config::ConfigFlags;
use crate::app::{App, AppOptions};
use crate::config::{Config, LogFormat};

/// How long a graceful shutdown may take before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Arguments of `pqnode run`.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Configuration flags.
    #[command(flatten)]
    pub flags: ConfigFlags,
}

/// Runs `pqnode run`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = super::config::load_for(&args.flags)?;
    init_tracing(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pqnode")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_until_signal(config))?;
    // Do not wait for stray blocking tasks.
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(ExitCode::SUCCESS)
}

/// Installs the global tracing subscriber: `RUST_LOG` (default `info`),
/// human or JSON lines on stderr. Does nothing if one is installed already.
pub fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: log files and journald get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// SIGTERM and SIGINT, caught from the moment this is created: a signal
/// that arrives while the node is still starting is kept, and the node then
/// shuts down gracefully as soon as it is up, instead of being killed by the
/// default action.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
                int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn wait(&mut self) -> anyhow::Result<&'static str> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => Ok("SIGTERM"),
                _ = self.int.recv() => Ok("SIGINT"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.context("Ctrl-C handler")?;
            Ok("Ctrl-C")
        }
    }
}

async fn run_until_signal(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let app = App::start(&config, AppOptions::default()).await?;
    println!("PeerId: {}", app.peer_id());
    for addr in app.listen_addrs() {
        println!("Listening on {addr}/p2p/{}", app.peer_id());
    }
    for (suite, fp) in &app.state().crypto.snapshot().identity.fingerprints {
        println!("Fingerprint {suite}: {fp}");
    }
    println!("API: http://{}", app.api_addr());
    println!(
        "API token: {}",
        config.data_dir.join(crate::api::auth::TOKEN_FILE).display()
    );
    let signal = signals.wait().await?;
    tracing::info!(signal, "shutting down");
    app.shutdown(SHUTDOWN_GRACE - Duration::from_millis(500))
        .await?;
    tracing::info!("stopped");
    Ok(())
}
