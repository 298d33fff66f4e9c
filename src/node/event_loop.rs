//! The event loop: owns the swarm, answers commands, publishes events.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::kad::{self, store::RecordStore};
use libp2p::metrics::Recorder;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns, ping};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use super::records::validate_dht_record;
use super::{
    DialOutcome, Direction, NodeCommand, NodeError, NodeEvent, NodeStats, PeerInfo, RoutingEntry,
    RoutingTable,
};
use crate::config::Config;
use crate::metrics::NodeMetrics;

/// At most this many API dials wait for their outcome at once.
const MAX_PENDING_DIALS: usize = 256;
/// Addresses and protocols kept per peer from identify.
const MAX_ADDRS_PER_PEER: usize = 16;
const MAX_PROTOCOLS_PER_PEER: usize = 64;
/// mDNS discoveries dialled per event.
const MAX_MDNS_DIALS: usize = 16;
/// Redial back-off for configured peers.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// A configured peer (`peers`), redialled with back-off while disconnected.
struct ManualPeer {
    addr: Multiaddr,
    peer_id: Option<PeerId>,
    state: ManualState,
    backoff: Duration,
}

enum ManualState {
    Waiting(Instant),
    Dialing(ConnectionId),
    Connected,
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

fn kad_mode(swarm: &Swarm<Behaviour>) -> String {
    match swarm.behaviour().kad.mode() {
        kad::Mode::Server => "server".to_owned(),
        kad::Mode::Client => "client".to_owned(),
    }
}

pub(super) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<NodeCommand>,
    events: broadcast::Sender<NodeEvent>,
    metrics: NodeMetrics,
    libp2p_metrics: libp2p::metrics::Metrics,
    peers: HashMap<PeerId, PeerInfo>,
    connections: HashMap<ConnectionId, PeerId>,
    listen_addrs: Vec<Multiaddr>,
    listeners: Vec<ListenerId>,
    pending_dials: HashMap<ConnectionId, oneshot::Sender<Result<DialOutcome, NodeError>>>,
    manual: Vec<ManualPeer>,
    max_peers: usize,
}

impl EventLoop {
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<NodeCommand>,
        events: broadcast::Sender<NodeEvent>,
        metrics: NodeMetrics,
        libp2p_metrics: libp2p::metrics::Metrics,
        config: &Config,
    ) -> Self {
        let manual = config
            .peers
            .iter()
            .map(|addr| ManualPeer {
                addr: addr.clone(),
                peer_id: peer_of(addr),
                state: ManualState::Waiting(Instant::now()),
                backoff: BACKOFF_MIN,
            })
            .collect();
        EventLoop {
            swarm,
            commands,
            events,
            metrics,
            libp2p_metrics,
            peers: HashMap::new(),
            connections: HashMap::new(),
            listen_addrs: Vec::new(),
            listeners: Vec::new(),
            pending_dials: HashMap::new(),
            manual,
            max_peers: config.limits.max_established as usize,
        }
    }

    /// Drives the swarm until each listener has reported an address.
    pub(super) async fn wait_for_listeners(
        &mut self,
        listeners: Vec<(ListenerId, Multiaddr)>,
        timeout: Duration,
    ) -> Result<Vec<Multiaddr>, NodeError> {
        self.listeners = listeners.iter().map(|(id, _)| *id).collect();
        let mut waiting: HashMap<ListenerId, Multiaddr> = listeners.into_iter().collect();
        let deadline = tokio::time::Instant::now() + timeout;
        while !waiting.is_empty() {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .map_err(|_| NodeError::ListenTimeout(timeout))?;
            match &event {
                SwarmEvent::NewListenAddr { listener_id, .. } => {
                    waiting.remove(listener_id);
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } => {
                    if let Some(addr) = waiting.remove(listener_id) {
                        return Err(NodeError::Listen {
                            addr,
                            reason: match reason {
                                Ok(()) => "listener closed".to_owned(),
                                Err(e) => e.to_string(),
                            },
                        });
                    }
                }
                SwarmEvent::ListenerError { listener_id, error } => {
                    if let Some(addr) = waiting.remove(listener_id) {
                        return Err(NodeError::Listen {
                            addr,
                            reason: error.to_string(),
                        });
                    }
                }
                _ => {}
            }
            self.on_swarm_event(event);
        }
        Ok(self.listen_addrs.clone())
    }

    /// Adds the configured peers to Kademlia and dials them.
    pub(super) fn dial_configured_peers(&mut self) {
        for p in &self.manual {
            if let Some(peer) = p.peer_id {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, without_p2p(&p.addr));
            }
        }
        self.redial_manual_peers();
    }

    pub(super) async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(NodeCommand::Shutdown { reply }) => {
                        self.shutdown();
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.on_command(command),
                    None => {
                        self.shutdown();
                        break;
                    }
                },
                _ = tick.tick() => self.redial_manual_peers(),
            }
        }
        tracing::info!("node event loop stopped");
    }

    fn shutdown(&mut self) {
        for id in std::mem::take(&mut self.listeners) {
            self.swarm.remove_listener(id);
        }
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for peer in peers {
            let _ = self.swarm.disconnect_peer_id(peer);
        }
        for (_, reply) in self.pending_dials.drain() {
            let _ = reply.send(Err(NodeError::Stopped));
        }
    }

    fn publish(&self, event: NodeEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    fn redial_manual_peers(&mut self) {
        let now = Instant::now();
        for i in 0..self.manual.len() {
            let p = &self.manual[i];
            let ManualState::Waiting(at) = p.state else {
                continue;
            };
            if at > now {
                continue;
            }
            if let Some(peer) = p.peer_id
                && self.swarm.is_connected(&peer)
            {
                self.manual[i].state = ManualState::Connected;
                continue;
            }
            let opts = match p.peer_id {
                Some(peer) => DialOpts::peer_id(peer)
                    .addresses(vec![p.addr.clone()])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
                None => DialOpts::unknown_peer_id().address(p.addr.clone()).build(),
            };
            let id = opts.connection_id();
            let addr = p.addr.clone();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    tracing::debug!(%addr, "dialling configured peer");
                    self.manual[i].state = ManualState::Dialing(id);
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "dial of configured peer not started");
                    self.schedule_redial(i);
                }
            }
        }
    }

    fn schedule_redial(&mut self, i: usize) {
        let p = &mut self.manual[i];
        p.state = ManualState::Waiting(Instant::now() + p.backoff);
        p.backoff = (p.backoff * 2).min(BACKOFF_MAX);
    }

    fn on_command(&mut self, command: NodeCommand) {
        match command {
            NodeCommand::Dial { addr, reply } => self.dial(addr, reply),
            NodeCommand::Peers { reply } => {
                let mut peers: Vec<PeerInfo> = self.peers.values().cloned().collect();
                peers.sort_by_key(|p| p.connected_since);
                let _ = reply.send(peers);
            }
            NodeCommand::RoutingTable { reply } => {
                let _ = reply.send(self.routing_table());
            }
            NodeCommand::Stats { reply } => {
                let _ = reply.send(self.stats());
            }
            NodeCommand::Disconnect { peer_id, reply } => {
                let _ = reply.send(self.swarm.disconnect_peer_id(peer_id).is_ok());
            }
            NodeCommand::Shutdown { reply } => {
                // Handled in `run`.
                let _ = reply.send(());
            }
        }
    }

    fn dial(&mut self, addr: Multiaddr, reply: oneshot::Sender<Result<DialOutcome, NodeError>>) {
        if let Some(peer) = peer_of(&addr)
            && self.swarm.is_connected(&peer)
        {
            let _ = reply.send(Ok(DialOutcome {
                peer_id: peer,
                already_connected: true,
            }));
            return;
        }
        if self.pending_dials.len() >= MAX_PENDING_DIALS {
            let _ = reply.send(Err(NodeError::Busy));
            return;
        }
        let opts = match peer_of(&addr) {
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Always)
                .build(),
            None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(NodeError::Dial(e.to_string())));
            }
        }
    }

    fn stats(&mut self) -> NodeStats {
        let routing_table_size = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| b.num_entries())
            .sum::<usize>();
        NodeStats {
            peer_id: *self.swarm.local_peer_id(),
            listen_addrs: self.listen_addrs.clone(),
            external_addrs: self.swarm.external_addresses().cloned().collect(),
            connected_peers: u32::try_from(self.peers.len()).unwrap_or(u32::MAX),
            connections: u32::try_from(self.connections.len()).unwrap_or(u32::MAX),
            routing_table_size: u32::try_from(routing_table_size).unwrap_or(u32::MAX),
            kad_mode: kad_mode(&self.swarm),
        }
    }

    fn routing_table(&mut self) -> RoutingTable {
        let mode = kad_mode(&self.swarm);
        let kad = &mut self.swarm.behaviour_mut().kad;
        let mut nodes = Vec::new();
        let mut buckets = 0u32;
        for bucket in kad.kbuckets() {
            buckets += 1;
            let index = bucket.range().0.ilog2().unwrap_or(0);
            for entry in bucket.iter() {
                nodes.push(RoutingEntry {
                    peer_id: *entry.node.key.preimage(),
                    addresses: entry.node.value.iter().cloned().collect(),
                    connected: matches!(entry.status, kad::NodeStatus::Connected),
                    bucket: index,
                });
            }
        }
        let records = kad.store_mut().records().count();
        RoutingTable {
            nodes,
            buckets,
            records: u32::try_from(records).unwrap_or(u32::MAX),
            mode,
            protocol: KAD_PROTOCOL.to_string(),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.libp2p_metrics.record(&event);
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address.clone());
                }
                self.publish(NodeEvent::NewListenAddr { address });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ListenerError { error, .. } => {
                tracing::warn!(%error, "listener error");
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => self.on_established(peer_id, connection_id, endpoint, num_established.get()),
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                self.connections.remove(&connection_id);
                match &cause {
                    Some(cause) => {
                        tracing::info!(peer = %peer_id, %cause, remaining = num_established, "connection closed")
                    }
                    None => {
                        tracing::info!(peer = %peer_id, remaining = num_established, "connection closed")
                    }
                }
                if num_established == 0 {
                    self.peers.remove(&peer_id);
                    for p in &mut self.manual {
                        if p.peer_id == Some(peer_id) && matches!(p.state, ManualState::Connected) {
                            p.state = ManualState::Waiting(Instant::now() + p.backoff);
                        }
                    }
                } else if let Some(info) = self.peers.get_mut(&peer_id) {
                    info.connections = num_established;
                }
                self.metrics.connected_peers.set(self.peers.len() as i64);
                self.publish(NodeEvent::ConnectionClosed {
                    peer_id,
                    connection_id,
                    remaining_established: num_established,
                });
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                tracing::debug!(peer = ?peer_id, %error, "outgoing connection failed");
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(NodeError::Dial(error.to_string())));
                }
                if let Some(i) = self.manual.iter().position(
                    |p| matches!(p.state, ManualState::Dialing(id) if id == connection_id),
                ) {
                    self.schedule_redial(i);
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                tracing::debug!(remote = %send_back_addr, %error, "incoming connection failed");
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
            }
            _ => {}
        }
    }

    fn on_established(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        endpoint: ConnectedPoint,
        num_established: u32,
    ) {
        let (direction, remote_addr) = match &endpoint {
            ConnectedPoint::Dialer { address, .. } => (Direction::Outbound, address.clone()),
            ConnectedPoint::Listener { send_back_addr, .. } => {
                (Direction::Inbound, send_back_addr.clone())
            }
        };
        tracing::info!(peer = %peer_id, remote = %remote_addr, ?direction, "connection established");
        self.connections.insert(connection_id, peer_id);
        if let Some(reply) = self.pending_dials.remove(&connection_id) {
            let _ = reply.send(Ok(DialOutcome {
                peer_id,
                already_connected: false,
            }));
        }
        for p in &mut self.manual {
            let ours = matches!(p.state, ManualState::Dialing(id) if id == connection_id)
                || p.peer_id == Some(peer_id);
            if ours {
                p.peer_id = Some(peer_id);
                p.state = ManualState::Connected;
                p.backoff = BACKOFF_MIN;
            }
        }
        if self.peers.len() < self.max_peers || self.peers.contains_key(&peer_id) {
            let info = self.peers.entry(peer_id).or_insert_with(|| PeerInfo {
                peer_id,
                addresses: Vec::new(),
                listen_addrs: Vec::new(),
                direction,
                connections: 0,
                agent_version: None,
                protocols: Vec::new(),
                latency: None,
                connected_since: SystemTime::now(),
            });
            info.connections = num_established;
            if info.addresses.len() < MAX_ADDRS_PER_PEER && !info.addresses.contains(&remote_addr) {
                info.addresses.push(remote_addr.clone());
            }
        }
        self.metrics.connected_peers.set(self.peers.len() as i64);
        self.publish(NodeEvent::ConnectionEstablished {
            peer_id,
            connection_id,
            direction,
            remote_addr,
            num_established,
        });
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(event) => {
                self.libp2p_metrics.record(&event);
                if let identify::Event::Received { peer_id, info, .. } = event {
                    self.on_identified(peer_id, info);
                }
            }
            BehaviourEvent::Ping(event) => {
                self.libp2p_metrics.record(&event);
                let ping::Event { peer, result, .. } = event;
                if let (Ok(rtt), Some(info)) = (result, self.peers.get_mut(&peer)) {
                    info.latency = Some(rtt);
                }
            }
            BehaviourEvent::Kad(event) => {
                self.libp2p_metrics.record(&event);
                self.on_kad_event(event);
            }
            BehaviourEvent::Autonat(event) => {
                if let libp2p::autonat::Event::StatusChanged { old, new } = event {
                    tracing::info!(?old, ?new, "NAT status changed");
                }
            }
            BehaviourEvent::RelayClient(event) => {
                tracing::debug!(?event, "relay client");
            }
            BehaviourEvent::RelayServer(event) => {
                self.libp2p_metrics.record(&event);
                tracing::debug!(?event, "relay server");
            }
            BehaviourEvent::Dcutr(event) => {
                self.libp2p_metrics.record(&event);
                tracing::debug!(?event, "dcutr");
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                let mut dialled = 0;
                for (peer, addr) in found {
                    if peer == *self.swarm.local_peer_id() {
                        continue;
                    }
                    self.swarm.add_peer_address(peer, addr.clone());
                    if !self.swarm.is_connected(&peer) && dialled < MAX_MDNS_DIALS {
                        dialled += 1;
                        tracing::debug!(%peer, %addr, "mDNS discovered a peer");
                        let opts = DialOpts::peer_id(peer)
                            .addresses(vec![addr])
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build();
                        let _ = self.swarm.dial(opts);
                    }
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Expired(_)) => {}
            BehaviourEvent::IpLimits(never)
            | BehaviourEvent::ConnectionLimits(never)
            | BehaviourEvent::MemoryLimits(never) => libp2p::core::util::unreachable(never),
            BehaviourEvent::Stream(()) => {}
        }
    }

    fn on_identified(&mut self, peer_id: PeerId, info: identify::Info) {
        let speaks_kad = info.protocols.contains(&KAD_PROTOCOL);
        if speaks_kad {
            for addr in info.listen_addrs.iter().take(MAX_ADDRS_PER_PEER) {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer_id, addr.clone());
            }
        }
        let protocols: Vec<_> = info
            .protocols
            .iter()
            .take(MAX_PROTOCOLS_PER_PEER)
            .cloned()
            .collect();
        let listen_addrs: Vec<_> = info
            .listen_addrs
            .iter()
            .take(MAX_ADDRS_PER_PEER)
            .cloned()
            .collect();
        tracing::debug!(peer = %peer_id, agent = %info.agent_version, speaks_kad, "identified");
        if let Some(p) = self.peers.get_mut(&peer_id) {
            p.agent_version = Some(info.agent_version.chars().take(128).collect());
            p.protocols = protocols.clone();
            p.listen_addrs = listen_addrs.clone();
        }
        self.publish(NodeEvent::Identified {
            peer_id,
            agent_version: info.agent_version.chars().take(128).collect(),
            protocols,
            listen_addrs,
        });
    }

    fn on_validated_record(
        &mut self,
        source: PeerId,
        record: kad::Record,
        verdict: Result<(), super::records::DhtRecordError>,
    ) {
        match verdict {
            Ok(()) => match self.swarm.behaviour_mut().kad.store_mut().put(record) {
                Ok(()) => {
                    self.metrics.dht_records_stored.inc();
                }
                Err(e) => {
                    self.metrics.dht_records_rejected.inc();
                    tracing::debug!(peer = %source, error = %e, "DHT record not stored");
                }
            },
            Err(e) => {
                self.metrics.dht_records_rejected.inc();
                tracing::debug!(peer = %source, error = %e, "DHT record rejected");
            }
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => {
                let existing = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .get(&record.key)
                    .map(|r| r.value.clone());
                let verdict = validate_dht_record(
                    record.key.as_ref(),
                    &record.value,
                    existing.as_deref(),
                    pqnode_keys::time::unix_now(),
                );
                self.on_validated_record(source, record, verdict);
            }
            kad::Event::RoutingUpdated {
                peer, is_new_peer, ..
            } if is_new_peer => {
                tracing::debug!(%peer, "added to the routing table");
            }
            kad::Event::ModeChanged { new_mode } => {
                tracing::info!(mode = %new_mode, "Kademlia mode changed");
            }
            _ => {}
        }
    }
}
