//! The composed `NetworkBehaviour` and the swarm builder.

use libp2p::identity::Keypair;
use libp2p::kad::store::MemoryStore;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, Swarm, SwarmBuilder, autonat, connection_limits, dcutr, identify, kad, mdns,
    memory_connection_limits, noise, ping, relay, tcp, yamux,
};

use super::NodeError;
use super::ip_limits;
use crate::config::{Config, Role};
use crate::discovery::{bootstrap, trim};
use crate::metrics::NodeMetrics;

/// The Kademlia protocol of pqnode's DHT.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/pqnode/kad/1.0.0");

/// The identify protocol (the standard one, so stock libp2p peers understand it).
pub const IDENTIFY_PROTOCOL: &str = "/ipfs/id/1.0.0";

/// The agent version announced by identify: `pqnode/<version>`.
pub fn agent_version() -> String {
    format!("pqnode/{}", env!("CARGO_PKG_VERSION"))
}

pub use composed::{Behaviour, BehaviourEvent};

/// The derive generates `BehaviourEvent`, one variant per field, named after it.
#[allow(missing_docs)]
mod composed {
    use libp2p::kad::store::MemoryStore;
    use libp2p::swarm::NetworkBehaviour;
    use libp2p::swarm::behaviour::toggle::Toggle;
    use libp2p::{
        autonat, connection_limits, dcutr, gossipsub, identify, kad, mdns,
        memory_connection_limits, ping, relay,
    };

    use crate::discovery::{bootstrap, trim};
    use crate::node::ip_limits;

    /// Every behaviour of a pqnode. The limit behaviours come first so that they
    /// deny connections before the others do any work for them.
    #[derive(NetworkBehaviour)]
    pub struct Behaviour {
        /// Per-IP concurrent and rate limits on inbound connections.
        pub ip_limits: ip_limits::Behaviour,
        /// No dial to a peer this node refused, for a back-off.
        pub refused: crate::node::refused::Behaviour,
        /// Established (total, per peer) and pending connection limits.
        pub connection_limits: connection_limits::Behaviour,
        /// No new connections beyond a share of the system's memory.
        pub memory_limits: memory_connection_limits::Behaviour,
        /// identify, agent `pqnode/<version>`.
        pub identify: identify::Behaviour,
        /// ping (latency; does not keep connections alive).
        pub ping: ping::Behaviour,
        /// Kademlia on `/pqnode/kad/1.0.0`.
        pub kad: kad::Behaviour<MemoryStore>,
        /// AutoNAT (confirms external addresses, which switches Kademlia to server mode).
        pub autonat: autonat::Behaviour,
        /// Circuit relay client.
        pub relay_client: relay::client::Behaviour,
        /// Circuit relay server, when `relay_server` is set.
        pub relay_server: Toggle<relay::Behaviour>,
        /// Direct connection upgrade through relay.
        pub dcutr: dcutr::Behaviour,
        /// mDNS, when `mdns` is set.
        pub mdns: Toggle<mdns::tokio::Behaviour>,
        /// Streams for the PQ layer.
        pub stream: libp2p_stream::Behaviour,
        /// Gossip announcements of PQ records (`pqnode/peers/1`).
        pub gossipsub: gossipsub::Behaviour,
        /// The bootstrap list (dials until `min_connected`).
        pub bootstrap: bootstrap::Behaviour,
        /// Connection trimming (above high water).
        pub trim: trim::Behaviour,
    }
}

/// Records the DHT store keeps at most (a record is about 7.5 KiB: 8192
/// of them are about 60 MiB).
pub const MAX_DHT_RECORDS: usize = 8192;
/// How long one Kademlia query may run.
pub const KAD_QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

fn kad_behaviour(key: &Keypair, role: Role, private: bool) -> kad::Behaviour<MemoryStore> {
    let peer_id = key.public().to_peer_id();
    let mut cfg = kad::Config::new(KAD_PROTOCOL);
    cfg.set_record_filtering(kad::StoreInserts::FilterBoth);
    cfg.set_query_timeout(KAD_QUERY_TIMEOUT);
    // Bootstrap queries run on our schedule (discovery::dht::KadBootstrap).
    cfg.set_periodic_bootstrap_interval(None);
    let store = MemoryStore::with_config(
        peer_id,
        kad::store::MemoryStoreConfig {
            max_records: MAX_DHT_RECORDS,
            max_value_bytes: crate::discovery::gossip::MAX_MESSAGE,
            ..kad::store::MemoryStoreConfig::default()
        },
    );
    let mut kad = kad::Behaviour::with_config(peer_id, store, cfg);
    // A bootstrap node serves from the start; a private one never; others
    // become servers once an external address is confirmed (AutoNAT, or
    // their own addresses with `publish_private_addrs`).
    kad.set_mode(match (role, private) {
        (_, true) => Some(kad::Mode::Client),
        (Role::Bootstrap, false) => Some(kad::Mode::Server),
        (Role::Node, false) => None,
    });
    kad
}

fn gossip_behaviour(key: &Keypair) -> Result<libp2p::gossipsub::Behaviour, NodeError> {
    use crate::discovery::gossip;
    let config = gossip::config().map_err(NodeError::Transport)?;
    let mut g = libp2p::gossipsub::Behaviour::new(
        libp2p::gossipsub::MessageAuthenticity::Signed(key.clone()),
        config,
    )
    .map_err(|e| NodeError::Transport(format!("gossipsub: {e}")))?;
    let (params, thresholds) = gossip::score_params();
    g.with_peer_score(params, thresholds)
        .map_err(|e| NodeError::Transport(format!("gossipsub scoring: {e}")))?;
    g.subscribe(&gossip::topic())
        .map_err(|e| NodeError::Transport(format!("gossipsub subscribe: {e}")))?;
    Ok(g)
}

fn behaviour(
    key: &Keypair,
    relay_client: relay::client::Behaviour,
    config: &Config,
    metrics: &NodeMetrics,
    discovery: &bootstrap::Metrics,
) -> Result<Behaviour, NodeError> {
    let peer_id = key.public().to_peer_id();
    let limits = &config.limits;
    let conn_limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(limits.max_established))
        .with_max_established_per_peer(Some(limits.max_established_per_peer))
        .with_max_pending_incoming(Some(limits.max_pending_incoming))
        .with_max_pending_outgoing(Some(limits.max_pending_outgoing));
    let mdns = if config.mdns {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id)
                .map_err(NodeError::Mdns)?,
        )
    } else {
        None
    };
    let relay_server = config
        .relay_server
        .then(|| relay::Behaviour::new(peer_id, relay::Config::default()));
    Ok(Behaviour {
        ip_limits: ip_limits::Behaviour::new(
            ip_limits::IpLimits {
                max_concurrent: limits.max_connections_per_ip,
                max_per_minute: limits.max_new_connections_per_ip_per_minute,
                max_tracked_ips: limits.max_tracked_ips as usize,
            },
            Some(metrics.clone()),
        ),
        refused: crate::node::refused::Behaviour::default(),
        connection_limits: connection_limits::Behaviour::new(conn_limits),
        memory_limits: memory_connection_limits::Behaviour::with_max_percentage(
            f64::from(limits.max_memory_percent) / 100.0,
        ),
        identify: identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_owned(), key.public())
                .with_agent_version(agent_version())
                // A private node does not tell peers where it listens.
                .with_hide_listen_addrs(config.private),
        ),
        ping: ping::Behaviour::new(ping::Config::new()),
        kad: kad_behaviour(key, config.role, config.private),
        autonat: autonat::Behaviour::new(peer_id, autonat::Config::default()),
        relay_client,
        relay_server: Toggle::from(relay_server),
        dcutr: dcutr::Behaviour::new(peer_id),
        mdns: Toggle::from(mdns),
        stream: libp2p_stream::Behaviour::new(),
        gossipsub: gossip_behaviour(key)?,
        bootstrap: bootstrap::Behaviour::new(
            &config.bootstrap,
            config.min_connected as usize,
            discovery.clone(),
        ),
        trim: trim::Behaviour::new(
            trim::TrimConfig {
                low_water: limits.low_water as usize,
                high_water: limits.high_water as usize,
                grace: limits.trim_grace,
            },
            // Bootstrap and configured peers are never trimmed.
            config
                .bootstrap
                .iter()
                .chain(&config.peers)
                .filter_map(|a| match a.iter().last() {
                    Some(libp2p::multiaddr::Protocol::P2p(p)) => Some(p),
                    _ => None,
                })
                .collect(),
            discovery.trimmed.clone(),
        ),
    })
}

/// Builds the swarm: TCP (Noise + Yamux), QUIC-v1, DNS, the relay client
/// transport and bandwidth metrics, with the behaviours above.
pub fn build_swarm(
    key: Keypair,
    config: &Config,
    metrics: &NodeMetrics,
    registry: &mut prometheus_client::registry::Registry,
    policy: std::sync::Arc<super::addr_policy::AddrPolicy>,
) -> Result<(Swarm<Behaviour>, bootstrap::Metrics), NodeError> {
    let idle = config.idle_timeout;
    let discovery = bootstrap::Metrics::register(registry);
    let mut built: Option<Result<Behaviour, NodeError>> = None;
    let fresh_ports = config.private;
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        // TCP (Noise + Yamux) and QUIC-v1, as `with_tcp` / `with_quic`
        // build them, each wrapped in FreshPorts (a private node dials from
        // new ports, so its listen address is not its connections' source)
        // and in DialGuard (below DNS: the address policy sees every
        // address actually dialled).
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                use libp2p::Transport as _;
                use libp2p::core::muxing::StreamMuxerBox;
                use libp2p::core::upgrade::Version;
                let guard = |t| {
                    super::transport::DialGuard::new(
                        t,
                        policy.clone(),
                        metrics.dials_denied.clone(),
                    )
                };
                let tcp = guard(super::transport::FreshPorts::new(
                    tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)),
                    fresh_ports,
                ))
                .upgrade(Version::V1Lazy)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default())
                .map(|(p, c), _| (p, StreamMuxerBox::new(c)));
                let quic = super::transport::DialGuard::new(
                    super::transport::FreshPorts::new(
                        libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key)),
                        fresh_ports,
                    ),
                    policy.clone(),
                    metrics.dials_denied.clone(),
                )
                .map(|(p, c), _| (p, StreamMuxerBox::new(c)));
                Ok(tcp.or_transport(quic).map(|either, _| either.into_inner()))
            },
        )
        .map_err(|e| NodeError::Transport(e.to_string()))?
        .with_dns()
        .map_err(|e| NodeError::Transport(e.to_string()))?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| NodeError::Transport(e.to_string()))?
        .with_bandwidth_metrics(registry)
        .with_behaviour(|key, relay_client| {
            // The builder wants an infallible-or-boxed-error constructor; keep
            // our typed error by smuggling it out.
            match behaviour(key, relay_client, config, metrics, &discovery) {
                Ok(b) => Ok(b),
                Err(e) => {
                    let msg = e.to_string();
                    built = Some(Err(e));
                    Err(msg.into())
                }
            }
        })
        .map_err(|e| match built.take() {
            Some(Err(inner)) => inner,
            _ => NodeError::Transport(e.to_string()),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    Ok((swarm, discovery))
}
