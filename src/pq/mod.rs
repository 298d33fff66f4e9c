//! The PQ layer on libp2p streams (PROTOCOL.md §5–§9).
//!
//! - `/pqnode/pq/1.0.0`: one long-lived stream per peer carrying the hybrid
//!   handshake ([`pqnode_crypto::handshake`]) and then the record layer.
//!   The side that dialled opens it as soon as the connection is up; a
//!   listener opens it itself 5 s after identify listed the protocol, at
//!   once when identify did not list it (a probe: only a failed negotiation
//!   proves a peer lacks PQ, rev 3), and 10 s after the connection when no
//!   identify came. If both end up with a session, the one initiated by the
//!   lower PeerId wins. Sessions are replaced by re-handshakes after 1 h or
//!   4 GiB (§5.1), and a lost session is re-established with back-off while
//!   the peer stays connected.
//! - `/pqnode/msg-classical/1.0.0`: messages to peers known to lack PQ under
//!   the `preferred` policy, never to a pinned peer, never while a peer's
//!   status is still open.
//! - [`state`] owns every peer's status (one table, one lock, fed by
//!   connection events that cannot be lost); every change goes through
//!   [`transition`]'s one function; [`policy`] decides (§8) as pure
//!   functions.
//! - One file per job: `connection` (connection events → outcomes),
//!   `handshake_io` (handshake streams), `session` (a session's reader and
//!   writer, re-handshakes), `send` and `classical` (delivery), [`inbox`],
//!   [`verifier`] (records and pins), [`metrics`], `limits`, `log_limit`.
//! - Limits (§9): concurrent handshakes globally and per peer, inbound
//!   handshakes per peer per minute, a 10 s handshake deadline, bounded
//!   inboxes, message sizes and partial messages.
//!
//! Handshake cryptography and pin writes run on tokio's blocking pool,
//! never on the swarm's event loop; the handshake semaphores bound them.

mod classical;
mod connection;
mod first_use;
pub mod followers;
pub mod fragment;
pub mod framing;
mod handshake_io;
pub mod inbox;
mod limits;
mod log_limit;
pub mod metrics;
pub mod policy;
pub mod reasons;
mod receipts;
mod send;
mod session;
pub mod setup;
pub mod state;
pub mod transition;
mod trim;
pub mod verifier;
mod wait;
mod writer;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use libp2p::{PeerId, StreamProtocol};
use pqnode_crypto::Suite;
use pqnode_crypto::handshake::HandshakeConfig;
use pqnode_keys::db::PinDb;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;

use crate::config::PqPolicy;
use crate::node::{ConnectionObserver, Direction, NodeEvent, NodeHandle};
use crate::status::SharedCryptoStatus;

use connection::Observer;
pub use followers::{Follower, TooManyFollowers};
pub use fragment::PartialBudget;
pub use inbox::{InboundMessage, Inbox, Security, SecurityLevel};
pub use limits::{PqLimits, PqSetup};
use log_limit::LogLimiter;
pub use metrics::PqMetrics;
use policy::{ConnectionAction, RefuseReason, SendDecision, SendRefusal};
pub use send::{Delivery, SendError};
use state::{PeerLimits, PeerTable};
pub use state::{PeerSnapshot, PqStatus};
use transition::Event;
pub use trim::TRIM_PROTECT_ACTIVE;
pub use verifier::PeerVerifier;

/// The PQ stream protocol.
pub const PQ_PROTOCOL: StreamProtocol = StreamProtocol::new("/pqnode/pq/1.0.0");
/// The classical message protocol (§8.2).
pub const CLASSICAL_PROTOCOL: StreamProtocol = StreamProtocol::new("/pqnode/msg-classical/1.0.0");

/// Queued outgoing messages per session.
const SESSION_QUEUE: usize = 64;
/// Concurrent tasks writing `Reject busy` to streams beyond the handshake
/// limits (each lives at most about a second).
const MAX_BUSY_REJECTS: usize = 256;
/// Concurrent inbound classical message streams (§9 rev 4), in all ...
const MAX_CLASSICAL_STREAMS: usize = 64;
/// ... and per peer.
const MAX_CLASSICAL_STREAMS_PER_PEER: usize = 4;
/// The layer's tasks (handshakes, sessions, timers) at most.
const MAX_TASKS: usize = 32_768;
/// A listener opens the PQ stream itself this long after an inbound
/// connection when identify never told it anything.
const NO_IDENTIFY_PROBE: Duration = Duration::from_secs(10);

/// A snapshot of one PQ session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The suite.
    pub suite: Suite,
    /// Whether this node initiated the handshake.
    pub local_initiated: bool,
    /// When it was established.
    pub since: SystemTime,
    /// The first 8 bytes of the session's transcript hash TH4, in hex: a
    /// public name of the session (its keys derive from the whole
    /// transcript, so a new session has a new id and new keys).
    pub id: String,
    /// SHA-256 of the PQ signing key the peer authenticated with.
    pub peer_key: pqnode_keys::Fingerprint,
}

/// Why a session's writer did not write a message.
pub(crate) enum WriteFailed {
    /// No frame of it left: it may go on the peer's next session.
    Unsent(SendError),
    /// Writing it began and failed: frames may have reached the peer, so
    /// it is never sent again: at most once, since PROTOCOL.md gives a
    /// receiver no way to recognise a message it already stored.
    Interrupted(String),
}

pub(crate) enum WriterCmd {
    /// Seal and write a message; `ack` gets its message id once written,
    /// `receipt` the peer's receipt for it (§7 rev 4).
    Send {
        body: Vec<u8>,
        ack: oneshot::Sender<Result<u64, WriteFailed>>,
        receipt: oneshot::Sender<pqnode_crypto::receipt::ReceiptStatus>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

struct Inner {
    local: PeerId,
    node: NodeHandle,
    policy: PqPolicy,
    handshake: Mutex<Option<Arc<HandshakeConfig>>>,
    verifier: Arc<PeerVerifier>,
    limits: PqLimits,
    table: Mutex<PeerTable>,
    inbound_permits: Arc<Semaphore>,
    outbound_permits: Arc<Semaphore>,
    classical_slots: classical::Slots,
    reject_permits: Arc<Semaphore>,
    next_session_id: AtomicU64,
    next_message_id: AtomicU64,
    partial_budget: Arc<PartialBudget>,
    /// New first-use pins per source network an hour.
    first_use: Arc<first_use::FirstUseRate>,
    inbox: Inbox,
    metrics: PqMetrics,
    status: SharedCryptoStatus,
    log_limiter: Mutex<LogLimiter>,
    tasks: Mutex<JoinSet<()>>,
    /// The accept loops: they outlive [`PqLayer::shutdown`] (answering
    /// `busy`) until [`PqLayer::release`], so a peer never sees the PQ
    /// protocol vanish from a live connection (a downgrade, to a pinned peer).
    acceptors: Mutex<JoinSet<()>>,
    shutting_down: AtomicBool,
    shutdown: tokio_util::sync::CancellationToken,
    /// Blocking work (crypto, pin commits) started by handshakes.
    blocking: tokio_util::task::TaskTracker,
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
    /// Creates the layer for `node` and registers the stream protocols the
    /// policy allows, so that they are accepted before the swarm listens or
    /// dials (§5 rev 3). Connection events reach it through
    /// [`PqLayer::observer`], which the node must be started with.
    pub fn start(
        node: NodeHandle,
        setup: PqSetup,
        status: SharedCryptoStatus,
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
            table: Mutex::new(PeerTable::new(limits.max_peers, limits.per_peer)),
            inbound_permits: Arc::new(Semaphore::new(limits.max_concurrent_handshakes)),
            outbound_permits: Arc::new(Semaphore::new(limits.max_concurrent_handshakes)),
            classical_slots: classical::Slots::new(
                MAX_CLASSICAL_STREAMS,
                MAX_CLASSICAL_STREAMS_PER_PEER,
            ),
            reject_permits: Arc::new(Semaphore::new(MAX_BUSY_REJECTS)),
            next_session_id: AtomicU64::new(1),
            next_message_id: AtomicU64::new(1),
            partial_budget: PartialBudget::new(limits.partial_max_bytes),
            first_use: Arc::new(first_use::FirstUseRate::new(
                limits.first_use_per_network_per_hour,
            )),
            inbox: Inbox::new(
                limits.inbox_per_peer,
                inbox::MAX_PEERS,
                limits.inbox_max_bytes,
                limits.inbox_peer_max_bytes,
                followers::budget(limits.max_message_size),
                metrics.clone(),
            ),
            metrics,
            status,
            log_limiter: Mutex::new(LogLimiter::default()),
            limits,
            node,
            tasks: Mutex::new(JoinSet::new()),
            acceptors: Mutex::new(JoinSet::new()),
            shutting_down: AtomicBool::new(false),
            shutdown: tokio_util::sync::CancellationToken::new(),
            blocking: tokio_util::task::TaskTracker::new(),
        });
        let layer = PqLayer { inner };
        let mut control = layer.inner.node.stream_control();
        if layer.inner.pq_enabled() {
            let incoming = control
                .accept(PQ_PROTOCOL)
                .map_err(|_| PqError::AlreadyRegistered(PQ_PROTOCOL))?;
            lock(&layer.inner.acceptors)
                .spawn(handshake_io::accept_loop(layer.inner.clone(), incoming));
        }
        if layer.inner.policy != PqPolicy::Required {
            let incoming = control
                .accept(CLASSICAL_PROTOCOL)
                .map_err(|_| PqError::AlreadyRegistered(CLASSICAL_PROTOCOL))?;
            lock(&layer.inner.acceptors)
                .spawn(classical::accept_loop(layer.inner.clone(), incoming));
        }
        layer.inner.status.update(|s| {
            let pairs = layer
                .inner
                .hs()
                .map(|h| h.credentials.len() as u32)
                .unwrap_or(0);
            s.initialized = pairs > 0;
            s.key_pairs = pairs;
        });
        Ok(layer)
    }

    /// What the node hands its connection events to (synchronously, in
    /// order, from its event loop: none can be lost).
    pub fn observer(&self) -> Arc<dyn ConnectionObserver> {
        Arc::new(Observer(self.inner.clone()))
    }

    /// The inbox of delivered messages.
    pub fn inbox(&self) -> &Inbox {
        &self.inner.inbox
    }

    /// The layer's metrics.
    pub fn metrics(&self) -> &PqMetrics {
        &self.inner.metrics
    }

    /// The policy.
    pub fn policy(&self) -> PqPolicy {
        self.inner.policy
    }

    /// The largest application message (`limits.max_message_size`).
    pub fn max_message_size(&self) -> usize {
        self.inner.limits.max_message_size
    }

    /// The pin database.
    pub fn pins(&self) -> &PinDb {
        self.inner.verifier.pins()
    }

    /// The PQ session with `peer`, if any.
    pub fn session(&self, peer: &PeerId) -> Option<SessionInfo> {
        match self.inner.table().get(peer).map(|e| &e.status) {
            Some(PqStatus::Pq(info)) => Some(info.clone()),
            _ => None,
        }
    }

    /// `peer`'s PQ state, if it is connected.
    pub fn peer(&self, peer: &PeerId) -> Option<PeerSnapshot> {
        self.inner.table().snapshot(peer)
    }

    /// `peer`'s settled PQ outcome, if it has one: a session, `classical`
    /// (while connected) or `refused` (while connected, or remembered for
    /// 10 minutes, also while it reconnects without settling otherwise).
    /// `None` while its status is open or it is unknown.
    pub fn outcome(&self, peer: &PeerId) -> Option<PqStatus> {
        let table = self.inner.table();
        match table.get(peer).map(|e| &e.status) {
            Some(status) if status.is_settled() => Some(status.clone()),
            _ => table.recent_refusal(peer).map(PqStatus::Refused),
        }
    }

    /// Peers refused within the last 10 minutes that are no longer
    /// connected: the peer, why, and how long ago.
    pub fn recent_refusals(&self) -> Vec<(PeerId, policy::RefuseReason, Duration)> {
        self.inner.table().recent_refusals()
    }

    /// Every connected peer's PQ state.
    pub fn peers(&self) -> Vec<PeerSnapshot> {
        self.inner.table().snapshots()
    }

    /// Number of open PQ sessions.
    pub fn session_count(&self) -> usize {
        self.inner.table().counts().pq as usize
    }

    /// After an operator pin for `peer` (§8.3): a live session under a key
    /// that the pins no longer allow ends, and the peer is refused as
    /// `key-mismatch`. Returns whether it was.
    pub async fn enforce_pins(&self, peer: PeerId) -> bool {
        let Some(session) = self.session(&peer) else {
            return false;
        };
        let pins = self.inner.verifier.pins().clone();
        let suite = session.suite;
        let allowed = tokio::task::spawn_blocking(move || pins.pins_of(&peer)).await;
        let pins = match allowed {
            Ok(Ok(pins)) => pins,
            Ok(Err(e)) => {
                tracing::error!(peer = %peer, error = %e, "cannot read pins; refusing the peer rather than keep an unchecked session");
                self.inner.refuse(peer, RefuseReason::KeyMismatch).await;
                return true;
            }
            Err(_) => return false,
        };
        let applying = pins
            .iter()
            .find(|(s, _)| *s == Some(suite))
            .or_else(|| pins.iter().find(|(s, _)| s.is_none()));
        let mismatch = match applying {
            Some((_, pin)) => pin.fingerprint != session.peer_key,
            // Pinned only under other suites (rev 3).
            None => !pins.is_empty(),
        };
        if mismatch {
            tracing::warn!(peer = %peer, suite = %suite, "the session's key does not match the new pin");
            self.inner.refuse(peer, RefuseReason::KeyMismatch).await;
        }
        mismatch
    }

    /// Peers refused since start.
    pub fn refused_total(&self) -> u64 {
        self.inner.table().counts().refused_total
    }

    /// Whether `peer` is pinned (a database error counts as pinned).
    pub fn is_pinned(&self, peer: &PeerId) -> bool {
        self.inner.verifier.is_pinned(peer)
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

    /// Our signed records, one per suite (empty when PQ is off).
    pub fn own_records(&self) -> Vec<(Suite, Vec<u8>)> {
        self.inner
            .hs()
            .map(|h| {
                h.credentials
                    .iter()
                    .map(|c| (c.signing_key.suite(), c.record.clone()))
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
    /// `timeout`) and stops the layer's tasks. Its accept loops keep
    /// answering new handshakes with `busy` until [`PqLayer::release`]:
    /// call that once the node has closed its connections.
    pub async fn shutdown(&self, timeout: Duration) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
        self.inner.shutdown.cancel();
        let senders = self.inner.table().writers();
        let mut waits = Vec::with_capacity(senders.len());
        for tx in senders {
            let (done, wait) = oneshot::channel();
            if tx.try_send(WriterCmd::Close { done }).is_ok() {
                waits.push(wait);
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let _ = tokio::time::timeout_at(deadline, futures::future::join_all(waits)).await;
        self.drain(deadline + Duration::from_secs(1)).await;
    }

    /// Stops the accept loops and whatever they started since
    /// [`PqLayer::shutdown`], and waits for them, so nothing they hold (pins,
    /// the database) outlives the layer's owner.
    pub async fn release(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
        let mut acceptors = std::mem::take(&mut *lock(&self.inner.acceptors));
        acceptors.abort_all();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let _ = tokio::time::timeout_at(deadline, async {
            while acceptors.join_next().await.is_some() {}
        })
        .await;
        self.drain(deadline).await;
    }

    /// Aborts the running tasks and waits (until `deadline`) until they and
    /// the blocking work they started are gone.
    async fn drain(&self, deadline: tokio::time::Instant) {
        let mut tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        tasks.abort_all();
        self.inner.blocking.close();
        let drained = async {
            while tasks.join_next().await.is_some() {}
            // Blocking closures cannot be aborted: they end by themselves.
            self.inner.blocking.wait().await;
        };
        let _ = tokio::time::timeout_at(deadline, drained).await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn spawn_on(inner: &Arc<Inner>, fut: impl std::future::Future<Output = ()> + Send + 'static) {
    let mut tasks = lock(&inner.tasks);
    // Reap finished tasks so the set stays as small as what is running.
    while tasks.try_join_next().is_some() {}
    if tasks.len() >= MAX_TASKS {
        tracing::error!(
            limit = MAX_TASKS,
            "PQ layer task limit reached; dropping work"
        );
        return;
    }
    tasks.spawn(fut);
}

impl Inner {
    fn table(&self) -> std::sync::MutexGuard<'_, PeerTable> {
        lock(&self.table)
    }

    /// The current handshake credentials, if PQ is on.
    fn hs(&self) -> Option<Arc<HandshakeConfig>> {
        lock(&self.handshake).clone()
    }

    fn pq_enabled(&self) -> bool {
        lock(&self.handshake).is_some()
    }

    /// Whether a line about `peer` of kind `what` may be logged now:
    /// `Some(n)` with the number of such lines left out since the last one
    /// (log it as `suppressed = n`), `None` to leave this one out (counted
    /// in `pqnode_pq_log_suppressed`).
    fn may_log(&self, peer: PeerId, what: &'static str) -> Option<u64> {
        let ok = lock(&self.log_limiter).allow(peer, what, std::time::Instant::now());
        if ok.is_none() {
            self.metrics.log_suppressed.inc();
        }
        ok
    }

    /// Notes that a message went to or came from `peer` (for trimming).
    pub(crate) fn touch(&self, peer: &PeerId) {
        if let Some(e) = self.table().get_mut(peer) {
            e.last_message = Some(std::time::Instant::now());
        }
    }
}
