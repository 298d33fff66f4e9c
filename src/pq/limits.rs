//! The PQ layer's limits (§9) and what it needs to start.

use super::*;

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
    /// How long a listener waits for the dialler to open the PQ stream
    /// after identify listed the protocol.
    pub listener_open_delay: Duration,
    /// Bytes of undelivered messages kept in all inboxes together; beyond
    /// it the oldest are dropped and counted.
    pub inbox_max_bytes: usize,
    /// ... and per peer (§9 rev 4: 32 MiB); a peer over it loses its own
    /// oldest messages, never another peer's.
    pub inbox_peer_max_bytes: usize,
    /// Per-peer handshake limits (rev 3).
    pub per_peer: PeerLimits,
    /// New first-use pins per source network (IPv4 /24, IPv6 /64) an hour.
    pub first_use_per_network_per_hour: u32,
    /// A partial message must complete within this (rev 3: 30 s).
    pub partial_message_timeout: Duration,
    /// A sent message's receipt must come within this (§7 rev 4: 10 s).
    pub delivery_timeout: Duration,
    /// All partial messages together (rev 3: 256 MiB).
    pub partial_max_bytes: usize,
    /// Re-handshake after this long (§5.1: 1 h).
    pub rehandshake_after: Duration,
    /// Re-handshake after this many bytes in either direction (§5.1: 4 GiB).
    pub rehandshake_bytes: u64,
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
            inbox_peer_max_bytes: 32 << 20,
            per_peer: PeerLimits::default(),
            first_use_per_network_per_hour: 100,
            partial_message_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(10),
            partial_max_bytes: 256 << 20,
            rehandshake_after: Duration::from_secs(3600),
            rehandshake_bytes: 4 << 30,
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
    pub pins: PinDb,
    /// Limits.
    pub limits: PqLimits,
}
