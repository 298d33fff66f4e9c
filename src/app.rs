//! The composition root: [`App::start`] builds a whole node — data
//! directory lock, self-test, key store, state database and pins, PQ layer,
//! swarm, API, periodic tasks — in the one order the binary ships, and
//! [`App::shutdown`] takes it down. `pqnode run`, every test and every
//! benchmark start nodes only through it.
//!
//! The order matters (PROTOCOL.md §5 rev 3): the PQ layer registers
//! `/pqnode/pq/1.0.0` and the classical protocol on the swarm *before* the
//! swarm listens or dials, and receives its connection events from the
//! first connection on, so the first identify a peer sees already lists
//! the PQ protocol and no connection is ever handled without a PQ status.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use pqnode_keys::db::{DEFAULT_FIRST_USE_LIMIT, StateDb};
use pqnode_keys::keyfile::Passphrase;
use pqnode_keys::lock::DataDirLock;
use pqnode_keys::peercache::PeerCache;
use pqnode_keys::store::{KeyStore, StoreOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::config::{Config, PqPolicy};
use crate::discovery;
use crate::metrics;
use crate::node::{Node, NodeHandle};
use crate::pq::PqLayer;
use crate::pq::setup::{self, RECORD_REFRESH};
use crate::status::{
    CryptoStatus, PqAvailability, SelfTestStatus, SharedCryptoStatus, SuiteSelfTest,
};

/// Period of the summary log line.
pub const SUMMARY_PERIOD: Duration = Duration::from_secs(60);

/// How a node is started beyond its configuration.
#[derive(Clone, Debug)]
pub struct AppOptions {
    /// Hold the data-directory lock for the node's lifetime (one writer of
    /// keys, record `seq` and pins). Default true; `pqnode run` always does.
    pub lock_data_dir: bool,
    /// Run as if PQ were unavailable locally, with this reason (tests of
    /// PROTOCOL.md §8.4 without a second build).
    pub simulate_pq_unavailable: Option<String>,
    /// First-use pins kept at most (PROTOCOL.md §9 rev 3: 100,000).
    pub first_use_pin_limit: u64,
    /// New first-use pins per source network (IPv4 /24, IPv6 /64) an hour:
    /// 100, so one network cannot spend the store's budget.
    pub first_use_pins_per_network_per_hour: u32,
    /// How long a listener waits after identify before opening the PQ
    /// stream itself (PROTOCOL.md §5: 5 s).
    pub listener_open_delay: Duration,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            lock_data_dir: true,
            simulate_pq_unavailable: None,
            first_use_pin_limit: DEFAULT_FIRST_USE_LIMIT,
            first_use_pins_per_network_per_hour: crate::pq::PqLimits::default()
                .first_use_per_network_per_hour,
            listener_open_delay: crate::pq::PqLimits::default().listener_open_delay,
        }
    }
}

/// Why a node could not start or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// Another process uses the data directory, or it is unusable.
    #[error("data directory {dir}: {source}")]
    Lock {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        source: pqnode_keys::lock::LockError,
    },
    /// The passphrase could not be read.
    #[error("key passphrase: {0}")]
    Passphrase(String),
    /// The key store could not be opened or created.
    #[error("key store in {dir}: {source}")]
    KeyStore {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        source: pqnode_keys::store::StoreError,
    },
    /// `pq.policy = "required"` but PQ is unavailable locally (§8.1).
    #[error("pq.policy is `required` but PQ is unavailable locally: {0}")]
    PqRequired(String),
    /// The state database could not be opened.
    #[error("state database: {0}")]
    Database(#[from] pqnode_keys::db::DbError),
    /// The API token could not be read or created.
    #[error("API token in {dir}: {source}")]
    Token {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        source: api::auth::TokenError,
    },
    /// The swarm could not be built or started.
    #[error("node: {0}")]
    Node(#[from] crate::node::NodeError),
    /// The PQ layer could not start.
    #[error("PQ layer: {0}")]
    Pq(#[from] setup::StartError),
    /// The API could not bind its address.
    #[error("cannot bind the API to {addr}: {source}")]
    ApiBind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A non-loopback API address without `api_allow_remote`.
    #[error(
        "the API address {0} is not a loopback address; give --api-allow-remote \
         (api_allow_remote = true) to expose it, with the token on every endpoint"
    )]
    ApiNotLoopback(SocketAddr),
    /// A blocking start-up step panicked.
    #[error("start-up task failed: {0}")]
    Task(String),
    /// Shutdown did not finish in time.
    #[error("shutdown took longer than {0:?}")]
    ShutdownTimeout(Duration),
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
pub fn open_key_store(config: &Config) -> Result<(KeyStore, Option<String>), AppError> {
    let options = |suites| -> Result<StoreOptions, AppError> {
        Ok(StoreOptions {
            suites,
            passphrase: Passphrase::from_env().map_err(|e| AppError::Passphrase(e.to_string()))?,
            ..StoreOptions::default()
        })
    };
    let dir = &config.data_dir;
    let store_err = |source| AppError::KeyStore {
        dir: dir.clone(),
        source,
    };
    match KeyStore::open_or_create(dir, options(config.pq.suites.clone())?) {
        Ok(store) => Ok((store, None)),
        Err(e) if config.pq.policy != PqPolicy::Required => {
            let store = KeyStore::open_or_create(dir, options(Vec::new())?).map_err(store_err)?;
            Ok((store, Some(format!("PQ keys could not be loaded: {e}"))))
        }
        Err(e) => Err(store_err(e)),
    }
}

/// A running node: swarm, PQ layer, API and periodic tasks.
#[derive(Debug)]
pub struct App {
    peer_id: PeerId,
    listen_addrs: Vec<Multiaddr>,
    api_addr: SocketAddr,
    state: AppState,
    db: StateDb,
    node_task: JoinHandle<()>,
    api_task: JoinHandle<std::io::Result<()>>,
    summary_task: JoinHandle<()>,
    refresh_task: Option<JoinHandle<()>>,
    cache_task: JoinHandle<()>,
    cache_dial_task: JoinHandle<()>,
    /// Own records to the node, record sweeps: they end on `stop`.
    discovery_tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    started: Instant,
    _lock: Option<DataDirLock>,
}

impl App {
    /// Starts a node for `config`.
    pub async fn start(config: &Config, options: AppOptions) -> Result<App, AppError> {
        let started = Instant::now();
        // Config::load refuses this too; a Config built in code must not
        // slip past it.
        if !config.api.ip().is_loopback() && !config.api_allow_remote {
            return Err(AppError::ApiNotLoopback(config.api));
        }
        let lock = if options.lock_data_dir {
            Some(
                DataDirLock::acquire(&config.data_dir, "run", false).map_err(|source| {
                    AppError::Lock {
                        dir: config.data_dir.clone(),
                        source,
                    }
                })?,
            )
        } else {
            None
        };

        // Self-test and keys (§8.4), on the blocking pool.
        let cfg = config.clone();
        let simulate = options.simulate_pq_unavailable.clone();
        let (availability, store) = tokio::task::spawn_blocking(move || {
            let availability = match simulate {
                Some(reason) => PqAvailability::Unavailable {
                    reason,
                    self_test: SelfTestStatus::default(),
                },
                None => run_selftest(&cfg),
            };
            (availability, open_key_store(&cfg))
        })
        .await
        .map_err(|e| AppError::Task(e.to_string()))?;
        let (mut store, key_problem) = store?;
        let availability = match (key_problem, availability) {
            (Some(reason), a) => PqAvailability::Unavailable {
                reason,
                self_test: a.self_test().clone(),
            },
            (None, a) => a,
        };
        match &availability {
            PqAvailability::Available { self_test } => {
                tracing::info!(duration_ms = self_test.duration_ms, "self-test passed")
            }
            PqAvailability::Unavailable { reason, .. } => {
                tracing::warn!(%reason, policy = %config.pq.policy, "PQ unavailable locally")
            }
        }
        // Handshakes to one peer are paced below what the peer admits
        // (§9 rev 3); a re-handshake limit shorter than that pace is not
        // kept, and the operator should know.
        let limits = crate::pq::state::PeerLimits::default();
        let per_window = limits.inbound_per_window.saturating_sub(1).max(1);
        let fastest = limits.window / per_window as u32;
        if config.pq.rehandshake_after < fastest {
            tracing::warn!(
                rehandshake_after_secs = config.pq.rehandshake_after.as_secs(),
                "pq.rehandshake_after_secs is below {:.1} s: handshakes to one peer are paced to {} a minute (the peer admits {}), so sessions will live longer than set",
                fastest.as_secs_f64(),
                per_window,
                limits.inbound_per_window
            );
        }
        if config.pq.policy == PqPolicy::Required
            && let PqAvailability::Unavailable { reason, .. } = &availability
        {
            return Err(AppError::PqRequired(reason.clone()));
        }

        // State database (pins), token.
        let dir = config.data_dir.clone();
        let db = tokio::task::spawn_blocking(move || StateDb::open(&dir, false))
            .await
            .map_err(|e| AppError::Task(e.to_string()))??;
        let pins = db.pins(options.first_use_pin_limit);
        let token = api::auth::load_or_create_token(&config.data_dir, false).map_err(|source| {
            AppError::Token {
                dir: config.data_dir.clone(),
                source,
            }
        })?;

        // The swarm, built but neither listening nor dialling.
        let peer_id = store.peer_id();
        let mut registry = metrics::new_registry();
        let mut pending = Node::build(config, store.identity().clone(), &mut registry)?;
        let node: NodeHandle = pending.handle().clone();
        let crypto =
            SharedCryptoStatus::new(CryptoStatus::initial(&config.pq, &availability, &peer_id));

        // The PQ layer accepts its protocols now, before any connection.
        let pq = setup::start_for_node(
            config,
            &mut store,
            &availability,
            &node,
            &[],
            &crypto,
            pins,
            &mut registry,
            options.listener_open_delay,
            options.first_use_pins_per_network_per_hour,
        )?;

        // Trimming keeps the peers the PQ layer says are worth keeping.
        pending.set_trim_policy(Arc::new(pq.clone()));
        // Now listen and dial, with the PQ layer observing every connection
        // (first), and the peer cache after it.
        let (stop, stop_rx) = watch::channel(false);
        let (feed, feed_input) = discovery::cache_feed();
        let records = discovery::book::RecordBook::new(pending.discovery_metrics().clone());
        let observers: Arc<dyn crate::node::ConnectionObserver> =
            Arc::new(discovery::Observers(vec![
                pq.observer(),
                Arc::new(feed),
                Arc::new(discovery::book::BookFeed(records.clone())),
            ]));
        let running = pending.start(Some(observers)).await?;
        let cache = PeerCache::new(db.clone());
        let cache_task = tokio::spawn(discovery::run_cache_writer(
            cache.clone(),
            pq.clone(),
            feed_input,
            stop_rx.clone(),
        ));
        // Cached peers next to the configured ones (those are dialled
        // already), best first.
        let configured: Vec<PeerId> = config
            .peers
            .iter()
            .filter_map(|a| match a.iter().last() {
                Some(libp2p::multiaddr::Protocol::P2p(p)) => Some(p),
                _ => None,
            })
            .collect();
        let cache_dial_task = tokio::spawn({
            let node = node.clone();
            async move {
                discovery::dial_cached_peers(node, cache, configured).await;
            }
        });
        let listen_addrs = running.listen_addrs.clone();
        // Records carry the addresses we listen on: sign them again now
        // that they are known. Loopback and private addresses stay out
        // unless `publish_private_addrs` (they would mislead remote peers).
        // A private node's records carry no address at all.
        let record_addrs = if config.private {
            Vec::new()
        } else {
            setup::publishable_addrs(&listen_addrs, config.publish_private_addrs)
        };
        if !pq.suites().is_empty() && !record_addrs.is_empty() {
            setup::refresh_once(&pq, &mut store, &record_addrs);
        }

        let listener = tokio::net::TcpListener::bind(config.api)
            .await
            .map_err(|source| AppError::ApiBind {
                addr: config.api,
                source,
            })?;
        let api_addr = listener.local_addr().map_err(|source| AppError::ApiBind {
            addr: config.api,
            source,
        })?;
        if config.api_allow_remote && !api_addr.ip().is_loopback() {
            tracing::warn!(api = %api_addr, "API reachable from the network: every endpoint requires the token");
        }
        let registry = metrics::share(registry);
        let state = AppState {
            node: node.clone(),
            crypto,
            registry,
            token: Arc::new(token),
            started,
            data_dir: config.data_dir.clone(),
            alone_by_design: config.peers.is_empty(),
            pq: pq.clone(),
            exposure: api::Exposure {
                bind: api_addr,
                remote: config.api_allow_remote,
                allowed_hosts: config.api_allowed_hosts.clone().into(),
            },
            node_queries: Arc::new(tokio::sync::Semaphore::new(api::MAX_NODE_QUERIES)),
            node_writes: Arc::new(tokio::sync::Semaphore::new(api::MAX_NODE_WRITES)),
            peer_cache: PeerCache::new(db.clone()),
            records: records.clone(),
            sent: Default::default(),
        };
        let mut api_stop = stop_rx.clone();
        let api_task = tokio::spawn(api::serve(
            listener,
            api::create_app(state.clone()),
            async move {
                let _ = api_stop.wait_for(|s| *s).await;
            },
        ));
        let discovery_tasks = vec![
            tokio::spawn(discovery::sync_own_records(
                pq.clone(),
                node.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(discovery::book::sweep(
                node.clone(),
                records,
                PeerCache::new(db.clone()),
                if pq.suites().is_empty() {
                    pqnode_crypto::Suite::ALL.to_vec()
                } else {
                    pq.suites()
                },
                stop_rx.clone(),
            )),
        ];
        let summary_task = tokio::spawn(summary_loop(state.clone(), stop_rx));
        let refresh_task = (!pq.suites().is_empty()).then(|| {
            tokio::spawn(setup::refresh_records(
                pq.clone(),
                store,
                record_addrs,
                RECORD_REFRESH,
            ))
        });
        tracing::info!(peer = %peer_id, api = %api_addr, start_ms = started.elapsed().as_millis() as u64, "pqnode running");
        Ok(App {
            peer_id,
            listen_addrs,
            api_addr,
            state,
            db,
            node_task: running.task,
            api_task,
            summary_task,
            refresh_task,
            cache_task,
            cache_dial_task,
            discovery_tasks,
            stop,
            started,
            _lock: lock,
        })
    }

    /// The peer cache in the state database.
    pub fn peer_cache(&self) -> PeerCache {
        PeerCache::new(self.db.clone())
    }

    /// Our PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The addresses the swarm listens on.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// The first listen address of `proto` (`"tcp"`, `"quic-v1"`) with
    /// `/p2p/<PeerId>`.
    pub fn dial_addr(&self, proto: &str) -> Option<Multiaddr> {
        self.listen_addrs
            .iter()
            .find(|a| a.iter().any(|p| p.tag() == proto))
            .map(|a| {
                a.clone()
                    .with(libp2p::multiaddr::Protocol::P2p(self.peer_id))
            })
    }

    /// The API's bound address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The handle of the swarm.
    pub fn node(&self) -> &NodeHandle {
        &self.state.node
    }

    /// The PQ layer.
    pub fn pq(&self) -> &PqLayer {
        &self.state.pq
    }

    /// What the API serves.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The state database.
    pub fn db(&self) -> &StateDb {
        &self.db
    }

    /// Since when the node runs.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the API, the periodic tasks, the PQ layer (close frames) and
    /// the swarm, waiting at most `grace`.
    pub async fn shutdown(self, grace: Duration) -> Result<(), AppError> {
        let App {
            state,
            db,
            node_task,
            api_task,
            summary_task,
            refresh_task,
            cache_task,
            cache_dial_task,
            discovery_tasks,
            stop,
            _lock,
            ..
        } = self;
        let deadline = tokio::time::Instant::now() + grace;
        let _ = stop.send(true);
        if let Some(t) = &refresh_task {
            t.abort();
        }
        cache_dial_task.abort();
        let all = async {
            // The cache writer flushes what it holds and stops.
            let _ = cache_task.await;
            let _ = cache_dial_task.await;
            for t in discovery_tasks {
                let _ = t.await;
            }
            state.pq.shutdown(grace / 2).await;
            let _ = state.node.shutdown().await;
            let _ = node_task.await;
            // The connections are closed: the PQ accept loops may stop.
            state.pq.release().await;
            let _ = api_task.await;
            let _ = summary_task.await;
        };
        let r = tokio::time::timeout_at(deadline, all)
            .await
            .map_err(|_| AppError::ShutdownTimeout(grace));
        // Also after a timeout: the accept loops hold the PQ layer (and so
        // the database) until released.
        state.pq.release().await;
        if let Some(t) = refresh_task {
            let _ = t.await;
        }
        // The database closes (its file lock is released) when its last
        // handle goes: here, unless the caller still holds a clone of the
        // PQ layer or the API state.
        drop(state);
        drop(db);
        drop(_lock);
        r
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
        let cache = state.peer_cache.clone();
        let cached_peers = tokio::task::spawn_blocking(move || cache.len().ok())
            .await
            .ok()
            .flatten();
        let d = state.records.metrics();
        match state.node.stats().await {
            Ok(s) => tracing::info!(
                peers = s.connected_peers,
                cached_peers,
                known_records = state.records.len(),
                gossip_published = d.gossip_published.get(),
                gossip_accepted = d.gossip_count("accepted"),
                gossip_rejected = d.gossip_count("rejected"),
                connections = s.connections,
                routing_table = s.routing_table_size,
                kad_mode = %s.kad_mode,
                pq_mode = crypto.mode.as_str(),
                pq_sessions = crypto.sessions.pq,
                classical_sessions = crypto.sessions.classical,
                refused = crypto.sessions.refused,
                handshakes = state.pq.metrics().handshakes_started.get(),
                handshake_failures = state.pq.metrics().handshake_failures_all.get(),
                "summary"
            ),
            Err(e) => tracing::warn!(error = %e, "summary: node not answering"),
        }
    }
}
