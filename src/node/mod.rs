//! The libp2p swarm of a pqnode and its event loop.
//!
//! [`Node::start`] builds the swarm (see [`behaviour`]), starts listening,
//! waits until every listener has an address, and spawns the event loop. It
//! returns a [`NodeHandle`], the only way to talk to the running swarm:
//!
//! - commands ([`NodeHandle::dial`], [`NodeHandle::peers`],
//!   [`NodeHandle::routing_table`], [`NodeHandle::stats`],
//!   [`NodeHandle::disconnect`], [`NodeHandle::shutdown`]) over a bounded
//!   channel;
//! - [`NodeHandle::stream_control`]: the `libp2p_stream` [`Control`] the PQ
//!   layer uses to open and accept its streams;
//! - [`NodeHandle::subscribe`]: a bounded broadcast of [`NodeEvent`]s
//!   (connections established and closed, identify results, listen
//!   addresses). A slow subscriber loses the oldest events and is told so
//!   (`RecvError::Lagged`).

pub mod behaviour;
mod event_loop;
pub mod ip_limits;
pub mod records;

use std::time::{Duration, SystemTime};

use libp2p::identity::Keypair;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
pub use libp2p_stream::Control;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics::{NodeMetrics, Registry};

/// Capacity of the command channel.
pub const COMMAND_CAPACITY: usize = 256;
/// Capacity of the event broadcast.
pub const EVENT_CAPACITY: usize = 1024;
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
        /// The outcome.
        reply: oneshot::Sender<Result<DialOutcome, NodeError>>,
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
    /// Close every connection to a peer (e.g. refused by PQ policy).
    Disconnect {
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
    events: broadcast::Sender<NodeEvent>,
    control: Control,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl NodeHandle {
    /// Our PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// A `libp2p_stream` control for opening and accepting streams. Each
    /// clone has its own back-pressure slot; clone one per task, not per stream.
    pub fn stream_control(&self) -> Control {
        self.control.clone()
    }

    /// Subscribes to [`NodeEvent`]s from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
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

    /// Dials `addr` and waits for the connection (at most [`DIAL_TIMEOUT`]).
    pub async fn dial(&self, addr: Multiaddr) -> Result<DialOutcome, NodeError> {
        self.request(|reply| NodeCommand::Dial { addr, reply }, DIAL_TIMEOUT)
            .await?
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

impl Node {
    /// Builds the swarm for `config` with identity `key`, registers its
    /// metrics (libp2p's and [`NodeMetrics`]) in `registry`, listens on
    /// `config.listen`, waits until each listener has an address (at most
    /// 5 s), dials `config.peers` and spawns the event loop.
    pub async fn start(
        config: &Config,
        key: Keypair,
        registry: &mut Registry,
    ) -> Result<Node, NodeError> {
        let peer_id = key.public().to_peer_id();
        let metrics = NodeMetrics::register(registry);
        // Both add their own `libp2p` prefix.
        let libp2p_metrics = libp2p::metrics::Metrics::new(registry);
        let mut swarm = behaviour::build_swarm(key, config, &metrics, registry)?;
        let control = swarm.behaviour().stream.new_control();
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
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (ev_tx, _) = broadcast::channel(EVENT_CAPACITY);
        let mut event_loop = event_loop::EventLoop::new(
            swarm,
            cmd_rx,
            ev_tx.clone(),
            metrics,
            libp2p_metrics,
            config,
        );
        let listen_addrs = event_loop
            .wait_for_listeners(listeners, Duration::from_secs(5))
            .await?;
        event_loop.dial_configured_peers();
        let task = tokio::spawn(event_loop.run());
        Ok(Node {
            handle: NodeHandle {
                peer_id,
                commands: cmd_tx,
                events: ev_tx,
                control,
            },
            task,
            listen_addrs,
        })
    }
}
