//! `pqnode run`: start the node and its API, run until SIGINT or SIGTERM.
//!
//! [`start`] is the whole start-up without the signal handling, so that
//! integration tests run the same code as the binary.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args as ClapArgs;
use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use pqnode_keys::keyfile::Passphrase;
use pqnode_keys::lock::DataDirLock;
use pqnode_keys::store::{KeyStore, StoreOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::ConfigFlags;
use crate::api::{self, AppState};
use crate::config::{Config, LogFormat, PqPolicy};
use crate::metrics;
use crate::node::{Node, NodeHandle};
use crate::pq::PqLayer;
use crate::status::{
    CryptoStatus, PeerSecurityTable, PqAvailability, SelfTestStatus, SharedCryptoStatus,
    SuiteSelfTest,
};

/// How long a graceful shutdown may take before the process exits anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Period of the summary log line.
pub const SUMMARY_PERIOD: Duration = Duration::from_secs(60);

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

/// The local PQ availability from the start-up self-test (PROTOCOL.md §8.4).
pub fn run_selftest(config: &Config) -> PqAvailability {
    let report = pqnode_crypto::selftest::run(&config.pq.suites);
    let self_test = SelfTestStatus {
        ran: true,
        passed: report.passed(),
        duration_ms: Some(u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX)),
        suites: report
            .suites
            .iter()
            .map(|s| SuiteSelfTest {
                suite: s.suite.name().to_owned(),
                passed: s.passed,
                error: s.failure.clone(),
            })
            .collect(),
    };
    match report.unavailable_reason() {
        None => PqAvailability::Available { self_test },
        Some(reason) => PqAvailability::Unavailable { reason, self_test },
    }
}

/// Opens the key store in the data directory, creating it on first start:
/// the libp2p identity and one PQ signing key per configured suite
/// (passphrase from `PQNODE_KEY_PASSPHRASE` if the files are encrypted).
///
/// If the PQ keys cannot be loaded or made and the policy is not
/// `required`, the store is opened with the identity only and the reason is
/// returned: the node then runs in `classical-fallback` mode (PROTOCOL.md
/// §8.4). Nothing that exists is ever overwritten.
pub fn open_key_store(config: &Config) -> anyhow::Result<(KeyStore, Option<String>)> {
    let options = |suites| -> anyhow::Result<StoreOptions> {
        Ok(StoreOptions {
            suites,
            passphrase: Passphrase::from_env()?,
            ..StoreOptions::default()
        })
    };
    let dir = &config.data_dir;
    match KeyStore::open_or_create(dir, options(config.pq.suites.clone())?) {
        Ok(store) => Ok((store, None)),
        Err(e) if config.pq.policy != PqPolicy::Required => {
            let store = KeyStore::open_or_create(dir, options(Vec::new())?)
                .with_context(|| format!("key store in {}", dir.display()))?;
            Ok((store, Some(format!("PQ keys could not be loaded: {e}"))))
        }
        Err(e) => Err(e).with_context(|| format!("key store in {}", dir.display())),
    }
}

/// A started node with its API.
#[derive(Debug)]
pub struct Running {
    /// The node's handle.
    pub node: NodeHandle,
    /// The addresses the node listens on.
    pub listen_addrs: Vec<Multiaddr>,
    /// The API's bound address.
    pub api_addr: SocketAddr,
    /// The API's state (status snapshots, token, registry).
    pub state: AppState,
    /// The PQ layer, when started with a key store.
    pub pq: Option<PqLayer>,
    node_task: JoinHandle<()>,
    api_task: JoinHandle<std::io::Result<()>>,
    summary_task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

/// Starts a node and its API for `config`, with identity `key` and the
/// given local PQ availability. With a key `store` (whose identity must be
/// `key`), the PQ layer is started on the node; without, the node runs
/// without it (tests of the swarm and the API).
pub async fn start(
    config: &Config,
    key: Keypair,
    availability: PqAvailability,
    store: Option<&mut KeyStore>,
) -> anyhow::Result<Running> {
    if config.pq.policy == PqPolicy::Required
        && let PqAvailability::Unavailable { reason, .. } = &availability
    {
        bail!("pq.policy is `required` but PQ is unavailable locally: {reason}");
    }
    let token = api::auth::load_or_create_token(&config.data_dir)
        .with_context(|| format!("data directory {}", config.data_dir.display()))?;
    let peer_id = key.public().to_peer_id();
    let mut registry = metrics::new_registry();
    let Node {
        handle,
        task: node_task,
        listen_addrs,
    } = Node::start(config, key, &mut registry)
        .await
        .context("cannot start the node")?;

    let crypto =
        SharedCryptoStatus::new(CryptoStatus::initial(&config.pq, &availability, &peer_id));
    let peer_security = PeerSecurityTable::new(config.limits.max_established as usize);

    // The PQ layer registers its metrics before the registry is shared.
    let pq = match store {
        Some(store) => Some(
            crate::pq::setup::start_for_node(
                config,
                store,
                &availability,
                &handle,
                &listen_addrs,
                &crypto,
                &peer_security,
                &mut registry,
            )
            .context("cannot start the PQ layer")?,
        ),
        None => None,
    };

    let registry = metrics::share(registry);
    let state = AppState {
        node: handle.clone(),
        crypto,
        peer_security,
        registry,
        token: Arc::new(token),
        started: Instant::now(),
        data_dir: config.data_dir.clone(),
        alone_by_design: config.peers.is_empty(),
        pq: pq.clone(),
    };
    let listener = tokio::net::TcpListener::bind(config.api)
        .await
        .with_context(|| format!("cannot bind the API to {}", config.api))?;
    let api_addr = listener.local_addr().context("API address")?;
    let (stop, stop_rx) = watch::channel(false);
    let mut api_stop = stop_rx.clone();
    let api_task = tokio::spawn(api::serve(
        listener,
        api::create_app(state.clone()),
        async move {
            let _ = api_stop.wait_for(|s| *s).await;
        },
    ));
    let summary_task = tokio::spawn(summary_loop(state.clone(), stop_rx));
    Ok(Running {
        node: handle,
        listen_addrs,
        api_addr,
        state,
        pq,
        node_task,
        api_task,
        summary_task,
        stop,
    })
}

impl Running {
    /// Stops the API, the PQ layer (close frames, pins flushed) and the
    /// node, waiting at most `grace`.
    pub async fn shutdown(self, grace: Duration) -> anyhow::Result<()> {
        let Running {
            node,
            pq,
            node_task,
            api_task,
            summary_task,
            stop,
            ..
        } = self;
        let _ = stop.send(true);
        let all = async {
            if let Some(pq) = &pq {
                pq.shutdown(grace / 2).await;
            }
            let _ = node.shutdown().await;
            let _ = node_task.await;
            let _ = api_task.await;
            let _ = summary_task.await;
        };
        tokio::time::timeout(grace, all)
            .await
            .map_err(|_| anyhow::anyhow!("shutdown took longer than {grace:?}"))
    }
}

async fn summary_loop(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SUMMARY_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let crypto = state.crypto.snapshot();
        match state.node.stats().await {
            Ok(s) => tracing::info!(
                peers = s.connected_peers,
                connections = s.connections,
                routing_table = s.routing_table_size,
                kad_mode = %s.kad_mode,
                pq_mode = crypto.mode.as_str(),
                pq_sessions = crypto.sessions.pq,
                classical_sessions = crypto.sessions.classical,
                refused = crypto.sessions.refused,
                handshakes = state.pq.as_ref().map(|p| p.metrics().handshakes_started.get()).unwrap_or(0),
                handshake_failures = state.pq.as_ref().map(|p| p.metrics().handshake_failures_all.get()).unwrap_or(0),
                "summary"
            ),
            Err(e) => tracing::warn!(error = %e, "summary: node not answering"),
        }
    }
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
    // One process per data directory, for the whole run: the keys, the
    // record `seq` and the pins have one writer.
    let _lock = DataDirLock::acquire(&config.data_dir, "run", false)?;
    let selftest_config = config.clone();
    let availability = tokio::task::spawn_blocking(move || run_selftest(&selftest_config))
        .await
        .context("self-test task")?;
    match &availability {
        PqAvailability::Available { self_test } => {
            tracing::info!(duration_ms = self_test.duration_ms, "self-test passed")
        }
        PqAvailability::Unavailable { reason, .. } => {
            tracing::warn!(%reason, policy = %config.pq.policy, "PQ unavailable locally")
        }
    }
    let (mut store, key_problem) = open_key_store(&config)?;
    let availability = match (key_problem, availability) {
        (Some(reason), a) => {
            tracing::warn!(%reason, "PQ unavailable locally");
            PqAvailability::Unavailable {
                reason,
                self_test: a.self_test().clone(),
            }
        }
        (None, a) => a,
    };
    let key = store.identity().clone();
    let running = start(&config, key, availability, Some(&mut store)).await?;
    // Records are valid for a day: sign fresh ones well before that.
    let refresh = running.pq.clone().map(|pq| {
        tokio::spawn(crate::pq::setup::refresh_records(
            pq,
            store,
            running.listen_addrs.clone(),
            crate::pq::setup::RECORD_REFRESH,
        ))
    });

    println!("PeerId: {}", running.node.peer_id());
    for addr in &running.listen_addrs {
        println!("Listening on {addr}/p2p/{}", running.node.peer_id());
    }
    for (suite, fp) in &running.state.crypto.snapshot().identity.fingerprints {
        println!("Fingerprint {suite}: {fp}");
    }
    println!("API: http://{}", running.api_addr);
    println!(
        "API token: {}",
        config.data_dir.join(api::auth::TOKEN_FILE).display()
    );
    tracing::info!(peer = %running.node.peer_id(), api = %running.api_addr, "pqnode running");

    let signal = signals.wait().await?;
    tracing::info!(signal, "shutting down");
    if let Some(refresh) = refresh {
        refresh.abort();
    }
    running
        .shutdown(SHUTDOWN_GRACE - Duration::from_millis(500))
        .await?;
    tracing::info!("stopped");
    Ok(())
}
