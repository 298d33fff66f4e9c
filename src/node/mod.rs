//! The libp2p swarm of a pqnode and its event loop.
//!
//! [`Node::build`] builds the swarm (see [`behaviour`]) without listening or
//! dialling and returns a [`PendingNode`] whose [`NodeHandle`] can already
//! register stream protocols; [`PendingNode::start`] then listens, waits
//! until every listener has an address, dials the configured peers and
//! spawns the event loop, handing connection events to a
//! [`ConnectionObserver`]. The handle is the only way to talk to the swarm:
//!
//! - commands ([`NodeHandle::dial`], [`NodeHandle::peers`],
//!   [`NodeHandle::routing_table`], [`NodeHandle::stats`],
//!   [`NodeHandle::disconnect`], [`NodeHandle::shutdown`]) over a bounded
//!   channel;
//! - [`NodeHandle::stream_control`]: the `libp2p_stream` [`Control`] the PQ
//!   layer uses to open and accept its streams;
//! - [`ConnectionObserver`]: [`NodeEvent`]s (connections established and
//!   closed, identify results, listen addresses), handed over synchronously
//!   by the event loop, in order; none is queued or lost.

pub mod addr_policy;
pub mod behaviour;
pub mod configured;
mod event_loop;
pub mod ip_limits;
pub mod record_quota;
pub mod records;
pub mod refused;
pub mod transport;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use libp2p::identity::Keypair;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
pub use libp2p_stream::Control;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics::{NodeMetrics, Registry};
pub use pqnode_keys::peercache::Source;

/// Capacity of the command channel.
pub const COMMAND_CAPACITY: usize = 256;
/// How long a command may wait for the event loop's answer.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dial may take, from command to outcome.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(15);

/// Errors of the node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A transport could not be set up.
    #[error("transport setup failed: {0}")]
    Transport(String),
    /// mDNS could not start.
    #[error("mDNS could not start: {0}")]
    Mdns(std::io::Error),
    /// A listen address was refused.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// No listener reported an address in time.
    #[error("listeners did not start within {0:?}")]
    ListenTimeout(Duration),
    /// The event loop has stopped.
    #[error("the node is not running")]
    Stopped,
    /// The event loop did not answer in time.
    #[error("the node did not answer within {0:?}")]
    Timeout(Duration),
    /// The command queue is full.
    #[error("the node is busy")]
    Busy,
    /// A dial failed.
    #[error("dial failed: {0}")]
    Dial(String),
}

/// The direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// We dialled.
    Outbound,
    /// They dialled.
    Inbound,
}

/// Something the swarm did that other parts (the PQ layer) may react to.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum NodeEvent {
    /// A connection was established.
    ConnectionEstablished {
        /// The peer.
        peer_id: PeerId,
        /// The connection.
        connection_id: ConnectionId,
        /// Who dialled.
        direction: Direction,
        /// The remote address.
        remote_addr: Multiaddr,
        /// Established connections to this peer, this one included.
        num_established: u32,
        /// How the connection came about.
        source: Source,
    },
    /// A connection was closed.
    ConnectionClosed {
        /// The peer.
        peer_id: PeerId,
        /// The connection.
        connection_id: ConnectionId,
        /// Connections to this peer still established.
        remaining_established: u32,
    },
    /// identify told us about a peer.
    Identified {
        /// The peer.
        peer_id: PeerId,
        /// Its agent version.
        agent_version: String,
        /// The protocols it supports.
        protocols: Vec<StreamProtocol>,
        /// The addresses it listens on.
        listen_addrs: Vec<Multiaddr>,
    },
    /// We listen on a new address.
    NewListenAddr {
        /// The address.
        address: Multiaddr,
    },
    /// A peer's signed PQ record arrived by gossip and passed the §4
    /// checks (with its author as the expected PeerId). Not pinned.
    RecordLearned(LearnedRecord),
}

/// A verified PQ record of another peer (from gossip or the DHT).
#[derive(Clone, Debug)]
pub struct LearnedRecord {
    /// The peer.
    pub peer_id: PeerId,
    /// Its suite.
    pub suite: pqnode_crypto::Suite,
    /// Its sequence number.
    pub seq: u64,
    /// Fingerprint of its PQ signing key.
    pub fingerprint: String,
    /// When it was issued and expires, unix seconds.
    pub issued_at: u64,
    /// See `issued_at`.
    pub expires_at: u64,
    /// The addresses it names.
    pub addrs: Vec<Multiaddr>,
    /// Where it came from.
    pub source: Source,
    /// The peer that relayed it, when not its author (a gossip
    /// neighbour): what it brings to the peer cache is capped per minute.
    pub via: Option<PeerId>,
}

impl LearnedRecord {
    /// The summary of a verified record.
    pub fn from_verified(r: &pqnode_keys::record::VerifiedRecord, source: Source) -> Self {
        LearnedRecord {
            peer_id: *r.peer_id(),
            suite: r.suite(),
            seq: r.seq(),
            fingerprint: r.fingerprint().to_string(),
            issued_at: r.issued_at(),
            expires_at: r.expires_at(),
            addrs: r.addrs().to_vec(),
            source,
            via: None,
        }
    }
}

/// Receives the node's events from its event loop, synchronously and in
/// order. Implementations must not block (take a short lock, spawn tasks).
pub trait ConnectionObserver: Send + Sync + 'static {
    /// One event.
    fn on_node_event(&self, event: &NodeEvent);
}

/// A connected peer, as the swarm sees it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerInfo {
    /// The peer.
    #[serde(serialize_with = "ser_display")]
    pub peer_id: PeerId,
    /// Remote addresses of its established connections.
    pub addresses: Vec<Multiaddr>,
    /// Addresses it listens on (from identify).
    pub listen_addrs: Vec<Multiaddr>,
    /// Who dialled the first connection.
    pub direction: Direction,
    /// How the first connection came about (`bootstrap`, `cache`, `mdns`,
    /// `dht`, `gossip`, `manual`, `inbound`).
    #[serde(serialize_with = "ser_source")]
    pub source: Source,
    /// Established connections.
    pub connections: u32,
    /// Agent version (from identify).
    pub agent_version: Option<String>,
    /// Its protocols (from identify).
    #[serde(serialize_with = "ser_protocols")]
    pub protocols: Vec<StreamProtocol>,
    /// Last ping round trip.
    #[serde(rename = "latencyMs", serialize_with = "ser_millis")]
    pub latency: Option<Duration>,
    /// When the first connection was established.
    #[serde(serialize_with = "ser_unix")]
    pub connected_since: SystemTime,
}

/// One entry of the Kademlia routing table.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingEntry {
    /// The peer.
    #[serde(serialize_with = "ser_display")]
    pub peer_id: PeerId,
    /// Its known addresses.
    pub addresses: Vec<Multiaddr>,
    /// Whether it is connected.
    pub connected: bool,
    /// The k-bucket index (by distance).
    pub bucket: u32,
}

/// A snapshot of the Kademlia routing table.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutingTable {
    /// The entries.
    pub nodes: Vec<RoutingEntry>,
    /// Non-empty buckets.
    pub buckets: u32,
    /// Records in the local store.
    pub records: u32,
    /// `server` or `client`.
    pub mode: String,
    /// The DHT protocol.
    pub protocol: String,
    /// The seed's summary of the table.
    pub stats: DhtStats,
}

/// `stats` of [`RoutingTable`], in the seed's shape.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DhtStats {
    /// Peers in the routing table.
    pub total_nodes: usize,
    /// Non-empty k-buckets.
    pub buckets_used: u32,
    /// Routing-table peers that are on the bootstrap list.
    pub bootstrap_nodes: usize,
}

/// Counters of the swarm, cheap to compute.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// Our PeerId.
    #[serde(serialize_with = "ser_display")]
    pub peer_id: PeerId,
    /// Addresses we listen on.
    pub listen_addrs: Vec<Multiaddr>,
    /// Confirmed external addresses.
    pub external_addrs: Vec<Multiaddr>,
    /// Connected peers.
    pub connected_peers: u32,
    /// Established connections.
    pub connections: u32,
    /// Peers in the routing table.
    pub routing_table_size: u32,
    /// `server` or `client`.
    pub kad_mode: String,
    /// The PeerIds of the configured `peers` known so far: from an address's
    /// `/p2p/` part, or learned when a dial to it connected.
    #[serde(serialize_with = "ser_display_seq")]
    pub configured_peers: Vec<PeerId>,
    /// Each configured peer's redial state.
    pub configured: Vec<configured::ConfiguredPeer>,
}

/// Values kept per DHT lookup at most.
pub const MAX_RECORD_VALUES: usize = 8;
/// How long a DHT lookup may take.
pub const GET_RECORD_TIMEOUT: Duration = Duration::from_secs(10);

/// Gossip state, for the API and tests.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GossipStats {
    /// Peers subscribed to the announcement topic.
    pub topic_peers: usize,
    /// The asked peer's score (`None`: unknown peer or scoring off).
    pub score: Option<f64>,
}

/// The outcome of a dial.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DialOutcome {
    /// The peer reached.
    #[serde(serialize_with = "ser_display")]
    pub peer_id: PeerId,
    /// Whether we were connected to it already.
    pub already_connected: bool,
}

fn ser_display<S: serde::Serializer, T: std::fmt::Display>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn ser_display_seq<S: serde::Serializer, T: std::fmt::Display>(
    v: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| x.to_string()))
}

fn ser_source<S: serde::Serializer>(v: &Source, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_str())
}

fn ser_protocols<S: serde::Serializer>(v: &[StreamProtocol], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|p| p.as_ref()))
}

fn ser_millis<S: serde::Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
        None => s.serialize_none(),
    }
}

fn ser_unix<S: serde::Serializer>(v: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let secs = v
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    s.serialize_u64(secs)
}

/// Commands to the event loop. Each carries a reply channel.
#[derive(Debug)]
#[non_exhaustive]
pub enum NodeCommand {
    /// Dial an address; the reply comes when the connection is established or failed.
    Dial {
        /// The address (may end with `/p2p/<PeerId>`).
        addr: Multiaddr,
        /// Why we dial (shown as the peer's `source`).
        source: Source,
        /// The outcome.
        reply: oneshot::Sender<Result<DialOutcome, NodeError>>,
    },
    /// Dial a peer by PeerId at `addrs` and at whatever Kademlia knows.
    DialPeer {
        /// The peer.
        peer_id: PeerId,
        /// Addresses to try (may be empty).
        addrs: Vec<Multiaddr>,
        /// Why we dial.
        source: Source,
        /// The outcome.
        reply: oneshot::Sender<Result<DialOutcome, NodeError>>,
    },
    /// Look a key up in the DHT: the values found (unverified), at most
    /// [`MAX_RECORD_VALUES`].
    GetRecord {
        /// The key.
        key: Vec<u8>,
        /// The values.
        reply: oneshot::Sender<Result<Vec<Vec<u8>>, NodeError>>,
    },
    /// Our own signed records: kept in the DHT and announced on gossip.
    SetOwnRecords {
        /// (DHT key, envelope, expiry unix seconds).
        records: Vec<crate::discovery::dht::OwnRecord>,
        /// Acknowledged.
        reply: oneshot::Sender<()>,
    },
    /// Gossip counters and a peer's gossip score.
    Gossip {
        /// The peer whose score is asked, if any.
        peer_id: Option<PeerId>,
        /// The answer.
        reply: oneshot::Sender<GossipStats>,
    },
    /// List connected peers.
    Peers {
        /// The peers.
        reply: oneshot::Sender<Vec<PeerInfo>>,
    },
    /// Snapshot the routing table.
    RoutingTable {
        /// The snapshot.
        reply: oneshot::Sender<RoutingTable>,
    },
    /// Counters.
    Stats {
        /// The counters.
        reply: oneshot::Sender<NodeStats>,
    },
    /// Close every connection to a peer.
    Disconnect {
        /// The peer.
        peer_id: PeerId,
        /// Whether it was connected.
        reply: oneshot::Sender<bool>,
    },
    /// The PQ layer refused a peer: close its connections, and dial it
    /// again only after a back-off (configured-peer redials included).
    Refuse {
        /// The peer.
        peer_id: PeerId,
        /// Whether it was connected.
        reply: oneshot::Sender<bool>,
    },
    /// Stop listening, close connections and end the event loop.
    Shutdown {
        /// Sent once the loop is about to end.
        reply: oneshot::Sender<()>,
    },
}

/// The handle to a running node. Cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    peer_id: PeerId,
    commands: mpsc::Sender<NodeCommand>,
    control: Control,
    addr_policy: Arc<addr_policy::AddrPolicy>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// Which addresses the node keeps and dials.
    pub fn addr_policy(&self) -> &Arc<addr_policy::AddrPolicy> {
        &self.addr_policy
    }

    /// Our PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// A `libp2p_stream` control for opening and accepting streams. Each
    /// clone has its own back-pressure slot; clone one per task, not per stream.
    pub fn stream_control(&self) -> Control {
        self.control.clone()
    }

    /// Whether the event loop is still running.
    pub fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }

    async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> NodeCommand,
        timeout: Duration,
    ) -> Result<T, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.commands.try_send(make(tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => NodeError::Busy,
            mpsc::error::TrySendError::Closed(_) => NodeError::Stopped,
        })?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(NodeError::Stopped),
            Err(_) => Err(NodeError::Timeout(timeout)),
        }
    }

    /// Dials `addr` (on the operator's behalf: source `manual`) and waits
    /// for the connection (at most [`DIAL_TIMEOUT`]).
    pub async fn dial(&self, addr: Multiaddr) -> Result<DialOutcome, NodeError> {
        self.dial_from(addr, Source::Manual).await
    }

    /// Dials `addr`, recording why (`source`).
    pub async fn dial_from(
        &self,
        addr: Multiaddr,
        source: Source,
    ) -> Result<DialOutcome, NodeError> {
        self.request(
            |reply| NodeCommand::Dial {
                addr,
                source,
                reply,
            },
            DIAL_TIMEOUT,
        )
        .await?
    }

    /// Dials `peer_id` at `addrs` and at the addresses Kademlia knows.
    pub async fn dial_peer(
        &self,
        peer_id: PeerId,
        addrs: Vec<Multiaddr>,
        source: Source,
    ) -> Result<DialOutcome, NodeError> {
        self.request(
            |reply| NodeCommand::DialPeer {
                peer_id,
                addrs,
                source,
                reply,
            },
            DIAL_TIMEOUT,
        )
        .await?
    }

    /// Looks `key` up in the DHT (at most [`GET_RECORD_TIMEOUT`]): the
    /// values found, unverified, at most [`MAX_RECORD_VALUES`].
    pub async fn get_record(&self, key: Vec<u8>) -> Result<Vec<Vec<u8>>, NodeError> {
        self.request(
            |reply| NodeCommand::GetRecord { key, reply },
            GET_RECORD_TIMEOUT + Duration::from_secs(1),
        )
        .await?
    }

    /// Hands the node our own records (DHT and gossip).
    pub async fn set_own_records(
        &self,
        records: Vec<crate::discovery::dht::OwnRecord>,
    ) -> Result<(), NodeError> {
        self.request(
            |reply| NodeCommand::SetOwnRecords { records, reply },
            COMMAND_TIMEOUT,
        )
        .await
    }

    /// Gossip state, and `peer`'s score.
    pub async fn gossip(&self, peer_id: Option<PeerId>) -> Result<GossipStats, NodeError> {
        self.request(
            |reply| NodeCommand::Gossip { peer_id, reply },
            COMMAND_TIMEOUT,
        )
        .await
    }

    /// The connected peers.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, NodeError> {
        self.request(|reply| NodeCommand::Peers { reply }, COMMAND_TIMEOUT)
            .await
    }

    /// A snapshot of the Kademlia routing table.
    pub async fn routing_table(&self) -> Result<RoutingTable, NodeError> {
        self.request(|reply| NodeCommand::RoutingTable { reply }, COMMAND_TIMEOUT)
            .await
    }

    /// Counters (answers quickly; used by health checks).
    pub async fn stats(&self) -> Result<NodeStats, NodeError> {
        self.request(|reply| NodeCommand::Stats { reply }, COMMAND_TIMEOUT)
            .await
    }

    /// Closes every connection to `peer_id`. Returns whether it was connected.
    pub async fn disconnect(&self, peer_id: PeerId) -> Result<bool, NodeError> {
        self.request(
            |reply| NodeCommand::Disconnect { peer_id, reply },
            COMMAND_TIMEOUT,
        )
        .await
    }

    /// Closes every connection to `peer_id`, which this node refuses: nothing
    /// dials it again for a back-off (1 s doubling to 5 min). Returns
    /// whether it was connected.
    pub async fn refuse(&self, peer_id: PeerId) -> Result<bool, NodeError> {
        self.request(
            |reply| NodeCommand::Refuse { peer_id, reply },
            COMMAND_TIMEOUT,
        )
        .await
    }

    /// Stops the node: listeners are removed and connections closed. Returns
    /// once the event loop has acknowledged; await the [`Node`]'s task to
    /// know it has ended.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        match self
            .request(|reply| NodeCommand::Shutdown { reply }, COMMAND_TIMEOUT)
            .await
        {
            Ok(()) | Err(NodeError::Stopped) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A started node: its handle and its event-loop task.
#[derive(Debug)]
pub struct Node {
    /// The handle.
    pub handle: NodeHandle,
    /// The event loop; it ends after [`NodeHandle::shutdown`].
    pub task: JoinHandle<()>,
    /// The addresses the node listens on, once every listener started.
    pub listen_addrs: Vec<Multiaddr>,
}

/// A built swarm that neither listens nor dials yet.
pub struct PendingNode {
    handle: NodeHandle,
    swarm: libp2p::Swarm<behaviour::Behaviour>,
    commands: mpsc::Receiver<NodeCommand>,
    metrics: NodeMetrics,
    discovery: crate::discovery::metrics::Metrics,
    libp2p_metrics: libp2p::metrics::Metrics,
    config: Config,
}

impl PendingNode {
    /// Lets connection trimming ask `policy` (the PQ layer) which peers
    /// to keep.
    pub fn set_trim_policy(
        &mut self,
        policy: std::sync::Arc<dyn crate::discovery::trim::TrimPolicy>,
    ) {
        self.swarm.behaviour_mut().trim.set_policy(policy);
    }
}

impl std::fmt::Debug for PendingNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingNode")
            .field("peer_id", &self.handle.peer_id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Builds the swarm for `config` with identity `key` and registers its
    /// metrics (libp2p's and [`NodeMetrics`]) in `registry`. Nothing
    /// listens or dials yet: register stream protocols on the handle first.
    pub fn build(
        config: &Config,
        key: Keypair,
        registry: &mut Registry,
    ) -> Result<PendingNode, NodeError> {
        let peer_id = key.public().to_peer_id();
        let metrics = NodeMetrics::register(registry);
        // Both add their own `libp2p` prefix.
        let libp2p_metrics = libp2p::metrics::Metrics::new(registry);
        let policy = addr_policy::AddrPolicy::new(&config.listen, config.publish_private_addrs);
        // What the operator configured is dialled as given.
        for addr in config.peers.iter().chain(&config.bootstrap) {
            policy.permit(addr);
        }
        let (swarm, discovery) =
            behaviour::build_swarm(key, config, &metrics, registry, policy.clone())?;
        let control = swarm.behaviour().stream.new_control();
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
        Ok(PendingNode {
            handle: NodeHandle {
                peer_id,
                commands: cmd_tx,
                control,
                addr_policy: policy,
            },
            swarm,
            commands: cmd_rx,
            metrics,
            discovery,
            libp2p_metrics,
            config: config.clone(),
        })
    }
}

impl PendingNode {
    /// The handle (commands are answered once the node is started).
    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }

    /// The discovery counters (`pqnode_discovery_*`).
    pub fn discovery_metrics(&self) -> &crate::discovery::metrics::Metrics {
        &self.discovery
    }

    /// Listens on `config.listen`, waits until each listener has an address
    /// (at most 5 s), dials `config.peers` and spawns the event loop, which
    /// hands its events to `observer`.
    pub async fn start(
        self,
        observer: Option<Arc<dyn ConnectionObserver>>,
    ) -> Result<Node, NodeError> {
        let PendingNode {
            handle,
            mut swarm,
            commands,
            metrics,
            discovery,
            libp2p_metrics,
            config,
        } = self;
        // Bootstrap peers with a known PeerId seed the routing table, like
        // configured peers (a client-mode node does not announce Kademlia,
        // so identify alone would not add it).
        for addr in &config.bootstrap {
            if let Some(libp2p::multiaddr::Protocol::P2p(peer)) = addr.iter().last() {
                let bare: Multiaddr = addr
                    .iter()
                    .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                    .collect();
                swarm.behaviour_mut().kad.add_address(&peer, bare);
            }
        }
        let mut listeners = Vec::with_capacity(config.listen.len());
        for addr in &config.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            listeners.push((id, addr.clone()));
        }
        let mut event_loop = event_loop::EventLoop::new(
            swarm,
            commands,
            observer,
            metrics,
            discovery,
            libp2p_metrics,
            &config,
            handle.addr_policy.clone(),
        );
        let listen_addrs = event_loop
            .wait_for_listeners(listeners, Duration::from_secs(5))
            .await?;
        // `publish_private_addrs`: the operator says our own addresses are
        // reachable (a LAN, a test network): they count as confirmed
        // external addresses, so Kademlia serves (a private node never).
        if config.publish_private_addrs && !config.private {
            event_loop.confirm_own_addrs();
        }
        event_loop.dial_configured_peers();
        let task = tokio::spawn(event_loop.run());
        Ok(Node {
            handle,
            task,
            listen_addrs,
        })
    }
}
