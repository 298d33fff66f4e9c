//! The PQ layer on libp2p streams (PROTOCOL.md §5–§9).
//!
//! - `/pqnode/pq/1.0.0`: one long-lived stream per peer carrying the hybrid
//!   handshake ([`pqnode_crypto::handshake`]) and then the record layer.
//!   The side that dialled opens it as soon as the connection is up; a
//!   listener whose peer advertises the protocol but has not opened it 5 s
//!   after identify opens it itself. If both end up with a session, the one
//!   initiated by the lower PeerId wins.
//! - `/pqnode/msg-classical/1.0.0`: messages to peers without PQ under the
//!   `preferred` policy, never to a pinned peer.
//! - Policy (§8.1), pinning and downgrade refusal (§8.3), local PQ
//!   unavailability (§8.4), limits (§9): a bounded number of concurrent
//!   handshakes (beyond it: Reject busy), a 10 s handshake deadline, bounded
//!   per-peer inboxes and message sizes.
//!
//! Handshake cryptography runs on tokio's blocking pool, never on the
//! swarm's event loop; the handshake semaphores bound how much of it runs.

mod classical;
pub mod fragment;
pub mod framing;
mod handshake_io;
pub mod inbox;
pub mod metrics;
mod session;
pub mod setup;
pub mod verifier;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use libp2p::{PeerId, StreamProtocol};
use pqnode_crypto::Suite;
use pqnode_crypto::handshake::HandshakeConfig;
use pqnode_keys::pins::PinStore;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::config::PqPolicy;
use crate::node::{Direction, NodeEvent, NodeHandle};
use crate::status::{PeerSecurity, PeerSecurityTable, SecurityLevel, SharedCryptoStatus};

pub use inbox::{InboundMessage, Inbox, Security};
pub use metrics::PqMetrics;
pub use verifier::PeerVerifier;

/// The PQ stream protocol.
pub const PQ_PROTOCOL: StreamProtocol = StreamProtocol::new("/pqnode/pq/1.0.0");
/// The classical message protocol (§8.2).
pub const CLASSICAL_PROTOCOL: StreamProtocol = StreamProtocol::new("/pqnode/msg-classical/1.0.0");

/// Queued outgoing messages per session.
const SESSION_QUEUE: usize = 64;
/// Concurrent tasks writing `Reject busy` to streams beyond the handshake
/// limit (each lives at most about a second).
const MAX_BUSY_REJECTS: usize = 256;
/// Concurrent inbound classical message streams.
const MAX_CLASSICAL_STREAMS: usize = 64;
/// How long a send waits for a handshake in progress.
const SEND_WAIT_FOR_HANDSHAKE: Duration = Duration::from_secs(10);
/// How long a send waits for its frames to be written.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Limits of the PQ layer (§9).
#[derive(Debug, Clone)]
pub struct PqLimits {
    /// Concurrent inbound handshakes (and, separately, outbound ones).
    pub max_concurrent_handshakes: usize,
    /// Deadline of a whole handshake.
    pub handshake_timeout: Duration,
    /// Largest application message.
    pub max_message_size: usize,
    /// Undelivered messages kept per peer.
    pub inbox_per_peer: usize,
    /// Peers with sessions, inboxes or labels (the connection limit).
    pub max_peers: usize,
    /// How long a listener waits for the dialler to open the PQ stream.
    pub listener_open_delay: Duration,
    /// Bytes of undelivered messages kept in all inboxes together; beyond
    /// it the oldest are dropped and counted.
    pub inbox_max_bytes: usize,
}

impl Default for PqLimits {
    fn default() -> Self {
        PqLimits {
            max_concurrent_handshakes: 64,
            handshake_timeout: Duration::from_secs(10),
            max_message_size: 1 << 20,
            inbox_per_peer: 1024,
            max_peers: 2000,
            listener_open_delay: Duration::from_secs(5),
            inbox_max_bytes: 256 << 20,
        }
    }
}

/// Everything the PQ layer needs to start.
#[derive(Debug)]
pub struct PqSetup {
    /// The operator's policy.
    pub policy: PqPolicy,
    /// The handshake credentials, or `None` when PQ is unavailable locally
    /// (or disabled).
    pub handshake: Option<Arc<HandshakeConfig>>,
    /// Why PQ is unavailable, when `handshake` is `None` and the policy is
    /// not `disabled`.
    pub unavailable_reason: Option<String>,
    /// Refuse peers whose key is not pinned (closed networks).
    pub allow_unpinned: bool,
    /// The pins.
    pub pins: PinStore,
    /// Limits.
    pub limits: PqLimits,
}

/// Why a message could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Larger than the configured maximum.
    #[error("message of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// No PQ session and the policy forbids classical delivery.
    #[error("no PQ session with {peer} and the policy is `required`: refusing to send classically")]
    PqRequired {
        /// The peer.
        peer: PeerId,
    },
    /// The peer is pinned (it proved PQ before) but has no PQ session now.
    #[error("{peer} is pinned to a PQ key but has no PQ session: refusing to send classically")]
    PinnedWithoutSession {
        /// The peer.
        peer: PeerId,
    },
    /// Not connected, or the stream could not be opened.
    #[error("cannot reach {peer}: {reason}")]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The session ended before the message was written.
    #[error("the session with {peer} ended: {reason}")]
    SessionEnded {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The session's queue is full.
    #[error("the session with {peer} is busy")]
    Busy {
        /// The peer.
        peer: PeerId,
    },
    /// The layer is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
}

/// How a message was delivered to the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// `pq` or `classical`.
    pub security: Security,
    /// The suite, for PQ.
    pub suite: Option<Suite>,
}

/// A snapshot of one PQ session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The suite.
    pub suite: Suite,
    /// Whether this node initiated the handshake.
    pub local_initiated: bool,
    /// When it was established.
    pub since: SystemTime,
}

enum WriterCmd {
    Send {
        body: Vec<u8>,
        ack: oneshot::Sender<Result<(), SendError>>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

struct SessionEntry {
    id: u64,
    info: SessionInfo,
    tx: mpsc::Sender<WriterCmd>,
}

struct Inner {
    local: PeerId,
    node: NodeHandle,
    policy: PqPolicy,
    handshake: Mutex<Option<Arc<HandshakeConfig>>>,
    verifier: Arc<PeerVerifier>,
    limits: PqLimits,
    sessions: Mutex<HashMap<PeerId, SessionEntry>>,
    outbound_pending: Mutex<HashSet<PeerId>>,
    inbound_pending: Mutex<HashMap<PeerId, usize>>,
    connected: Mutex<HashSet<PeerId>>,
    inbound_permits: Arc<Semaphore>,
    outbound_permits: Arc<Semaphore>,
    classical_permits: Arc<Semaphore>,
    reject_permits: Arc<Semaphore>,
    next_session_id: AtomicU64,
    next_message_id: AtomicU64,
    refused_total: AtomicU64,
    inbox: Inbox,
    metrics: PqMetrics,
    status: SharedCryptoStatus,
    security: PeerSecurityTable,
    tasks: Mutex<JoinSet<()>>,
    shutting_down: std::sync::atomic::AtomicBool,
    shutdown: tokio_util::sync::CancellationToken,
}

/// The running PQ layer. Cheap to clone.
#[derive(Clone)]
pub struct PqLayer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PqLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PqLayer")
            .field("local", &self.inner.local)
            .finish_non_exhaustive()
    }
}

/// Why the PQ layer could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PqError {
    /// The policy is `required` but PQ is unavailable locally (§8.1).
    #[error("pq.policy is `required` but post-quantum cryptography is unavailable: {0}")]
    RequiredButUnavailable(String),
    /// A stream protocol was already registered.
    #[error("stream protocol {0} already registered")]
    AlreadyRegistered(StreamProtocol),
}

impl PqLayer {
    /// Starts the layer on `node`: registers the stream protocols the policy
    /// allows and spawns the acceptor and event tasks.
    pub fn start(
        node: NodeHandle,
        setup: PqSetup,
        status: SharedCryptoStatus,
        security: PeerSecurityTable,
        metrics: PqMetrics,
    ) -> Result<PqLayer, PqError> {
        let handshake = match setup.policy {
            PqPolicy::Disabled => None,
            _ => setup.handshake,
        };
        if setup.policy == PqPolicy::Required && handshake.is_none() {
            return Err(PqError::RequiredButUnavailable(
                setup
                    .unavailable_reason
                    .unwrap_or_else(|| "no PQ credentials".into()),
            ));
        }
        let enabled: Vec<Suite> = handshake
            .as_ref()
            .map(|h| {
                h.credentials
                    .iter()
                    .map(|c| c.signing_key.suite())
                    .collect()
            })
            .unwrap_or_default();
        let verifier =
            PeerVerifier::new(enabled, setup.allow_unpinned, setup.pins, metrics.clone());
        let limits = setup.limits;
        let inner = Arc::new(Inner {
            local: node.peer_id(),
            policy: setup.policy,
            handshake: Mutex::new(handshake),
            verifier,
            sessions: Mutex::new(HashMap::new()),
            outbound_pending: Mutex::new(HashSet::new()),
            inbound_pending: Mutex::new(HashMap::new()),
            connected: Mutex::new(HashSet::new()),
            inbound_permits: Arc::new(Semaphore::new(limits.max_concurrent_handshakes)),
            outbound_permits: Arc::new(Semaphore::new(limits.max_concurrent_handshakes)),
            classical_permits: Arc::new(Semaphore::new(MAX_CLASSICAL_STREAMS)),
            reject_permits: Arc::new(Semaphore::new(MAX_BUSY_REJECTS)),
            next_session_id: AtomicU64::new(1),
            next_message_id: AtomicU64::new(1),
            refused_total: AtomicU64::new(0),
            inbox: Inbox::new(
                limits.inbox_per_peer,
                limits.max_peers,
                limits.inbox_max_bytes,
                metrics.clone(),
            ),
            metrics,
            status,
            security,
            limits,
            node,
            tasks: Mutex::new(JoinSet::new()),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            shutdown: tokio_util::sync::CancellationToken::new(),
        });
        let layer = PqLayer { inner };
        let mut control = layer.inner.node.stream_control();
        if layer.inner.pq_enabled() {
            let incoming = control
                .accept(PQ_PROTOCOL)
                .map_err(|_| PqError::AlreadyRegistered(PQ_PROTOCOL))?;
            layer.spawn(handshake_io::accept_loop(layer.inner.clone(), incoming));
        }
        if layer.inner.policy != PqPolicy::Required {
            let incoming = control
                .accept(CLASSICAL_PROTOCOL)
                .map_err(|_| PqError::AlreadyRegistered(CLASSICAL_PROTOCOL))?;
            layer.spawn(classical::accept_loop(layer.inner.clone(), incoming));
        }
        let events = layer.inner.node.subscribe();
        layer.spawn(event_loop(layer.inner.clone(), events));
        layer.inner.status.update(|s| {
            s.initialized = true;
            s.key_pairs = layer
                .inner
                .hs()
                .map(|h| h.credentials.len() as u32)
                .unwrap_or(0);
        });
        Ok(layer)
    }

    fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        spawn_on(&self.inner, fut);
    }

    /// The inbox of delivered messages.
    pub fn inbox(&self) -> &Inbox {
        &self.inner.inbox
    }

    /// The layer's metrics.
    pub fn metrics(&self) -> &PqMetrics {
        &self.inner.metrics
    }

    /// The PQ session with `peer`, if any.
    pub fn session(&self, peer: &PeerId) -> Option<SessionInfo> {
        lock(&self.inner.sessions).get(peer).map(|e| e.info.clone())
    }

    /// Number of open PQ sessions.
    pub fn session_count(&self) -> usize {
        lock(&self.inner.sessions).len()
    }

    /// Peers refused since start.
    pub fn refused_total(&self) -> u64 {
        self.inner.refused_total.load(Ordering::Relaxed)
    }

    /// Whether `peer` is pinned.
    pub fn is_pinned(&self, peer: &PeerId) -> bool {
        self.inner.verifier.is_pinned(peer)
    }

    /// Waits up to `timeout` for a PQ session with `peer`.
    pub async fn wait_for_session(&self, peer: &PeerId, timeout: Duration) -> Option<SessionInfo> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.session(peer) {
                return Some(s);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `body` to `peer`: over its PQ session, or classically where the
    /// policy allows it and the peer is not pinned (§8.2).
    pub async fn send(&self, peer: PeerId, body: Vec<u8>) -> Result<Delivery, SendError> {
        let inner = &self.inner;
        if inner.shutting_down.load(Ordering::Relaxed) {
            return Err(SendError::ShuttingDown);
        }
        if body.len() > inner.limits.max_message_size {
            return Err(SendError::TooLarge {
                size: body.len(),
                max: inner.limits.max_message_size,
            });
        }
        // With PQ on, a message goes classically only to a peer known to lack
        // PQ (labelled classical). While a connected peer's status is still
        // open — a handshake in flight, identify not yet in — wait for it.
        if self.session(&peer).is_none() && inner.pq_enabled() {
            self.wait_for_pq_status(
                &peer,
                SEND_WAIT_FOR_HANDSHAKE.min(inner.limits.handshake_timeout),
            )
            .await;
        }
        let session = lock(&inner.sessions)
            .get(&peer)
            .map(|e| (e.tx.clone(), e.info.suite));
        if let Some((tx, suite)) = session {
            let (ack, done) = oneshot::channel();
            tx.try_send(WriterCmd::Send { body, ack })
                .map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => SendError::Busy { peer },
                    mpsc::error::TrySendError::Closed(_) => SendError::SessionEnded {
                        peer,
                        reason: "session closed".into(),
                    },
                })?;
            return match tokio::time::timeout(SEND_TIMEOUT, done).await {
                Ok(Ok(Ok(()))) => {
                    inner
                        .metrics
                        .messages_sent
                        .get_or_create(&metrics::SecurityLabels { security: "pq" })
                        .inc();
                    Ok(Delivery {
                        security: Security::Pq,
                        suite: Some(suite),
                    })
                }
                Ok(Ok(Err(e))) => Err(e),
                Ok(Err(_)) => Err(SendError::SessionEnded {
                    peer,
                    reason: "session closed".into(),
                }),
                Err(_) => Err(SendError::SessionEnded {
                    peer,
                    reason: "write timed out".into(),
                }),
            };
        }
        if inner.policy == PqPolicy::Required {
            return Err(SendError::PqRequired { peer });
        }
        if inner.verifier.is_pinned(&peer) {
            return Err(SendError::PinnedWithoutSession { peer });
        }
        let known_classical = inner
            .security
            .get(&peer)
            .is_some_and(|s| s.level == SecurityLevel::Classical);
        if inner.pq_enabled() && !known_classical {
            // Never classical to a peer whose PQ status is unknown.
            return Err(SendError::Unreachable {
                peer,
                reason:
                    "not connected, or its PQ handshake did not finish in time; connect to it first"
                        .into(),
            });
        }
        classical::send(inner, peer, &body).await?;
        inner
            .metrics
            .messages_sent
            .get_or_create(&metrics::SecurityLabels {
                security: "classical",
            })
            .inc();
        Ok(Delivery {
            security: Security::Classical,
            suite: None,
        })
    }

    fn handshake_expected(&self, peer: &PeerId) -> bool {
        lock(&self.inner.outbound_pending).contains(peer)
            || lock(&self.inner.inbound_pending).contains_key(peer)
    }

    /// Whether `peer` is connected: as the events told us, or, since events
    /// may trail a dial that just returned, as the swarm says.
    async fn is_connected(&self, peer: &PeerId) -> bool {
        if lock(&self.inner.connected).contains(peer) {
            return true;
        }
        match self.inner.node.peers().await {
            Ok(peers) => peers.iter().any(|p| p.peer_id == *peer),
            Err(_) => false,
        }
    }

    /// Waits until `peer` has a PQ session or is known to lack PQ (labelled
    /// classical), at most `timeout`. Returns at once for a peer with no
    /// connection and no handshake in flight (there is nothing to wait for).
    async fn wait_for_pq_status(&self, peer: &PeerId, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.session(peer).is_some()
                || self
                    .inner
                    .security
                    .get(peer)
                    .is_some_and(|s| s.level == SecurityLevel::Classical)
            {
                return;
            }
            if !self.handshake_expected(peer) && !self.is_connected(peer).await {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The suites of the current credentials, in preference order (empty
    /// when PQ is off).
    pub fn suites(&self) -> Vec<Suite> {
        self.inner
            .hs()
            .map(|h| {
                h.credentials
                    .iter()
                    .map(|c| c.signing_key.suite())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Resolves once [`PqLayer::shutdown`] has begun (long-lived readers such
    /// as the API's event stream end on it).
    pub fn shutdown_signal(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.inner.shutdown.clone().cancelled_owned()
    }

    /// Replaces the handshake credentials (fresh records before the old ones
    /// expire). Only possible while PQ is on; sessions in progress keep the
    /// credentials they started with.
    pub fn replace_credentials(&self, config: Arc<HandshakeConfig>) -> bool {
        let mut hs = lock(&self.inner.handshake);
        if hs.is_none() {
            return false;
        }
        *hs = Some(config);
        true
    }

    /// Closes every PQ session with a close frame (waiting at most
    /// `timeout`) and stops the layer's tasks.
    pub async fn shutdown(&self, timeout: Duration) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
        self.inner.shutdown.cancel();
        let senders: Vec<mpsc::Sender<WriterCmd>> = lock(&self.inner.sessions)
            .values()
            .map(|e| e.tx.clone())
            .collect();
        let mut waits = Vec::with_capacity(senders.len());
        for tx in senders {
            let (done, wait) = oneshot::channel();
            if tx.try_send(WriterCmd::Close { done }).is_ok() {
                waits.push(wait);
            }
        }
        let _ = tokio::time::timeout(timeout, futures::future::join_all(waits)).await;
        lock(&self.inner.tasks).abort_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn spawn_on(inner: &Arc<Inner>, fut: impl std::future::Future<Output = ()> + Send + 'static) {
    let mut tasks = lock(&inner.tasks);
    // Reap finished tasks so the set stays as small as what is running.
    while tasks.try_join_next().is_some() {}
    tasks.spawn(fut);
}

impl Inner {
    /// The current handshake credentials, if PQ is on.
    fn hs(&self) -> Option<Arc<HandshakeConfig>> {
        lock(&self.handshake).clone()
    }

    fn pq_enabled(&self) -> bool {
        lock(&self.handshake).is_some()
    }

    fn refresh_counts(&self) {
        let pq = lock(&self.sessions).len() as u64;
        let (_, classical) = self.security.counts();
        let refused = self.refused_total.load(Ordering::Relaxed);
        self.metrics.open_sessions.set(pq as i64);
        self.status.update(|s| {
            s.sessions.pq = pq;
            s.sessions.classical = classical as u64;
            s.sessions.refused = refused;
        });
    }

    fn label(&self, peer: PeerId, level: SecurityLevel, suite: Option<Suite>) {
        let changed = self.security.get(&peer).map(|s| s.level) != Some(level);
        self.security.set(
            peer,
            PeerSecurity {
                level,
                suite,
                since: SystemTime::now(),
            },
        );
        if changed && level == SecurityLevel::Classical {
            self.metrics.classical_sessions.inc();
            tracing::info!(peer = %peer, "peer has no PQ session: labelled classical");
        }
        self.refresh_counts();
    }

    /// Refuses `peer`: counts it under `reason` and closes its connections.
    async fn refuse(self: &Arc<Self>, peer: PeerId, reason: &'static str) {
        self.metrics.refuse(reason);
        if reason == "downgrade" {
            self.metrics.downgrade_refused.inc();
        }
        self.refused_total.fetch_add(1, Ordering::Relaxed);
        self.security.remove(&peer);
        self.refresh_counts();
        tracing::warn!(peer = %peer, reason, "peer refused; disconnecting");
        if let Err(e) = self.node.disconnect(peer).await {
            tracing::debug!(peer = %peer, error = %e, "disconnect failed");
        }
    }

    /// The remote does not speak PQ (or shares no suite with us): §8.1/§8.3.
    async fn no_pq(self: &Arc<Self>, peer: PeerId, why: &str) {
        if self.verifier.is_pinned(&peer) {
            tracing::warn!(peer = %peer, why, "pinned peer offers no PQ session");
            self.refuse(peer, "downgrade").await;
            return;
        }
        match self.policy {
            PqPolicy::Required => {
                tracing::info!(peer = %peer, why, "no PQ session under policy required");
                self.refuse(peer, "policy").await;
            }
            PqPolicy::Preferred | PqPolicy::Disabled => {
                self.label(peer, SecurityLevel::Classical, None)
            }
        }
    }

    fn has_session(&self, peer: &PeerId) -> bool {
        lock(&self.sessions).contains_key(peer)
    }
}

/// Reacts to connections and identify results (who initiates, §5; fallback, §8).
async fn event_loop(inner: Arc<Inner>, mut events: tokio::sync::broadcast::Receiver<NodeEvent>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "PQ layer missed node events");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        match event {
            NodeEvent::ConnectionEstablished {
                peer_id, direction, ..
            } => {
                lock(&inner.connected).insert(peer_id);
                if !inner.pq_enabled() {
                    // PQ disabled or unavailable locally: everyone is classical,
                    // except pinned peers, which are never served classically.
                    if inner.verifier.is_pinned(&peer_id) && inner.policy != PqPolicy::Disabled {
                        tracing::warn!(peer = %peer_id, "pinned peer, but PQ is unavailable locally");
                    }
                    inner.label(peer_id, SecurityLevel::Classical, None);
                } else if direction == Direction::Outbound && !inner.has_session(&peer_id) {
                    handshake_io::spawn_initiator(&inner, peer_id);
                }
            }
            NodeEvent::Identified {
                peer_id, protocols, ..
            } => {
                if !inner.pq_enabled() || inner.has_session(&peer_id) {
                    continue;
                }
                if protocols.contains(&PQ_PROTOCOL) {
                    // Give the dialler its chance to open the stream first.
                    let inner2 = inner.clone();
                    spawn_on(&inner, async move {
                        tokio::time::sleep(inner2.limits.listener_open_delay).await;
                        if !inner2.has_session(&peer_id) {
                            handshake_io::spawn_initiator(&inner2, peer_id);
                        }
                    });
                } else if !lock(&inner.outbound_pending).contains(&peer_id) {
                    inner
                        .no_pq(peer_id, "identify lists no /pqnode/pq/1.0.0")
                        .await;
                }
            }
            NodeEvent::ConnectionClosed {
                peer_id,
                remaining_established: 0,
                ..
            } => {
                lock(&inner.connected).remove(&peer_id);
                session::end(&inner, &peer_id, None);
                inner.security.remove(&peer_id);
                inner.refresh_counts();
            }
            _ => {}
        }
    }
}
