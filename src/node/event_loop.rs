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
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::addr_policy::{self, AddrPolicy};
use super::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use super::configured::{ConfiguredPeers, Failure};
use super::record_quota::RecordQuota;
use super::records::validate_dht_record;
use super::{
    ConnectionObserver, DialOutcome, Direction, GossipStats, LearnedRecord, MAX_RECORD_VALUES,
    NodeCommand, NodeError, NodeEvent, NodeStats, PeerInfo, RoutingEntry, RoutingTable, Source,
};
use crate::config::Config;
use crate::discovery::dht::{KadBootstrap, OwnRecord, Publisher};
use crate::discovery::gossip::{self, Announcer};
use crate::metrics::NodeMetrics;
use libp2p::gossipsub;

/// At most this many API dials wait for their outcome at once.
const MAX_PENDING_DIALS: usize = 256;
/// Connection addresses kept per peer, and protocols from identify.
const MAX_ADDRS_PER_PEER: usize = 16;
/// Addresses kept of those a remote gives for one peer (identify, records).
const MAX_LEARNED_ADDRS: usize = 8;
const MAX_PROTOCOLS_PER_PEER: usize = 64;
/// mDNS discoveries dialled per event.
const MAX_MDNS_DIALS: usize = 16;
/// DHT records verified at once on the blocking pool (PROTOCOL.md §9 rev 3:
/// off the event loop, bounded like handshakes); beyond it, a PUT is dropped
/// and counted.
const MAX_RECORD_VERIFICATIONS: usize = 8;
/// DHT lookups in flight at most; beyond, a lookup is refused (busy).
const MAX_PENDING_GETS: usize = 64;
/// Sources of dials in flight remembered at most.
const MAX_DIAL_SOURCES: usize = 1024;
/// Own records handed to the node at most (one per suite).
const MAX_OWN_RECORDS: usize = 8;
fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

/// A failed attempt to reach a configured peer: logged once per back-off
/// step (1 s doubling to 5 min), with the address and the reason.
fn log_configured_failure(f: &Failure) {
    tracing::warn!(
        addr = %f.addr,
        error = %f.error,
        failures = f.failures,
        retry_in_secs = f.retry_in.as_secs(),
        "configured peer not connected; retrying with back-off"
    );
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
    observer: Option<Arc<dyn ConnectionObserver>>,
    metrics: NodeMetrics,
    libp2p_metrics: libp2p::metrics::Metrics,
    peers: HashMap<PeerId, PeerInfo>,
    connections: HashMap<ConnectionId, PeerId>,
    listen_addrs: Vec<Multiaddr>,
    listeners: Vec<ListenerId>,
    pending_dials: HashMap<ConnectionId, oneshot::Sender<Result<DialOutcome, NodeError>>>,
    manual: ConfiguredPeers,
    addr_policy: Arc<AddrPolicy>,
    /// Who stored the DHT records of other authors.
    record_quota: RecordQuota,
    quota_swept: Instant,
    max_peers: usize,
    verify_permits: Arc<tokio::sync::Semaphore>,
    verified_tx: mpsc::Sender<VerifiedPut>,
    verified_rx: mpsc::Receiver<VerifiedPut>,
    discovery: crate::discovery::metrics::Metrics,
    min_connected: usize,
    kad_bootstrap: KadBootstrap,
    publisher: Publisher,
    own_records: Vec<OwnRecord>,
    put_queries: HashMap<kad::QueryId, Vec<u8>>,
    pending_gets: HashMap<kad::QueryId, PendingGet>,
    announcer: Announcer,
    gossip_permits: Arc<tokio::sync::Semaphore>,
    gossip_tx: mpsc::Sender<VerifiedGossip>,
    gossip_rx: mpsc::Receiver<VerifiedGossip>,
    dial_sources: HashMap<ConnectionId, Source>,
    configured: Vec<PeerId>,
    /// Dials retried from a new port after the reused listen port was in
    /// use (each is retried once): at most one per pending dial.
    new_port_dials: std::collections::HashSet<ConnectionId>,
}

/// A DHT lookup in flight.
struct PendingGet {
    values: Vec<Vec<u8>>,
    reply: oneshot::Sender<Result<Vec<Vec<u8>>, NodeError>>,
}

/// A gossip announcement checked off the loop.
struct VerifiedGossip {
    message_id: gossipsub::MessageId,
    propagation_source: PeerId,
    verdict: Result<LearnedRecord, String>,
}

/// A DHT PUT verified off the loop: the record, the value stored under its
/// key when verification began, and the verdict.
struct VerifiedPut {
    source: PeerId,
    record: kad::Record,
    existing: Option<Vec<u8>>,
    /// The record's signed expiry, or why it may not be stored.
    verdict: Result<u64, super::records::DhtRecordError>,
}

impl EventLoop {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<NodeCommand>,
        observer: Option<Arc<dyn ConnectionObserver>>,
        metrics: NodeMetrics,
        discovery: crate::discovery::metrics::Metrics,
        libp2p_metrics: libp2p::metrics::Metrics,
        config: &Config,
        addr_policy: Arc<AddrPolicy>,
    ) -> Self {
        let manual = ConfiguredPeers::new(&config.peers, Instant::now());
        let (verified_tx, verified_rx) = mpsc::channel(MAX_RECORD_VERIFICATIONS);
        let (gossip_tx, gossip_rx) = mpsc::channel(gossip::MAX_VERIFYING);
        let now = Instant::now();
        let configured = config.peers.iter().filter_map(peer_of).collect();
        EventLoop {
            swarm,
            commands,
            observer,
            metrics,
            libp2p_metrics,
            peers: HashMap::new(),
            connections: HashMap::new(),
            listen_addrs: Vec::new(),
            listeners: Vec::new(),
            pending_dials: HashMap::new(),
            manual,
            addr_policy,
            record_quota: RecordQuota::default(),
            quota_swept: Instant::now(),
            max_peers: config.limits.max_established as usize,
            verify_permits: Arc::new(tokio::sync::Semaphore::new(MAX_RECORD_VERIFICATIONS)),
            verified_tx,
            verified_rx,
            discovery,
            min_connected: config.min_connected as usize,
            kad_bootstrap: KadBootstrap::new(now, Duration::from_secs(1)),
            publisher: Publisher::default(),
            own_records: Vec::new(),
            put_queries: HashMap::new(),
            pending_gets: HashMap::new(),
            announcer: Announcer::new(!config.private, now),
            gossip_permits: Arc::new(tokio::sync::Semaphore::new(gossip::MAX_VERIFYING)),
            gossip_tx,
            gossip_rx,
            dial_sources: HashMap::new(),
            new_port_dials: Default::default(),
            configured,
        }
    }

    /// Our listen addresses count as confirmed external addresses
    /// (`publish_private_addrs`): Kademlia switches to server mode and
    /// identify tells peers about them.
    pub(super) fn confirm_own_addrs(&mut self) {
        for addr in self.listen_addrs.clone() {
            let unspecified = addr.iter().any(|p| match p {
                Protocol::Ip4(ip) => ip.is_unspecified(),
                Protocol::Ip6(ip) => ip.is_unspecified(),
                _ => false,
            });
            if !unspecified {
                self.swarm.add_external_address(addr);
            }
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
        let known: Vec<(PeerId, Multiaddr)> = self
            .manual
            .known()
            .map(|(peer, addr)| (peer, without_p2p(addr)))
            .collect();
        for (peer, addr) in known {
            self.swarm.behaviour_mut().kad.add_address(&peer, addr);
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
                _ = tick.tick() => {
                    self.redial_manual_peers();
                    self.discovery_tick();
                    self.sweep_record_quota();
                }
                Some(put) = self.verified_rx.recv() => self.on_verified_put(put),
                Some(g) = self.gossip_rx.recv() => self.on_verified_gossip(g),
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
        for (_, get) in self.pending_gets.drain() {
            let _ = get.reply.send(Err(NodeError::Stopped));
        }
    }

    /// The 1 s tick of discovery: Kademlia bootstrap, our DHT records,
    /// our gossip announcement.
    fn discovery_tick(&mut self) {
        let now = Instant::now();
        if self
            .kad_bootstrap
            .due(now, self.peers.len(), self.min_connected)
        {
            match self.swarm.behaviour_mut().kad.bootstrap() {
                Ok(_) => {
                    self.discovery.kad_bootstraps.inc();
                }
                Err(_) => tracing::debug!("Kademlia bootstrap: no known peers yet"),
            }
        }
        let unix = pqnode_keys::time::unix_now();
        for rec in self.publisher.due(now) {
            let left = rec.expires_at.saturating_sub(unix);
            let record = kad::Record {
                key: kad::RecordKey::new(&rec.key),
                value: rec.value,
                publisher: None,
                expires: Some(now + Duration::from_secs(left)),
            };
            match self
                .swarm
                .behaviour_mut()
                .kad
                .put_record(record, kad::Quorum::One)
            {
                Ok(id) => {
                    self.put_queries.insert(id, rec.key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "our PQ record could not be stored locally");
                    self.discovery.put("failed");
                    self.publisher.done(&rec.key, false, now, unix);
                }
            }
        }
        let topic = gossip::topic().hash();
        let topic_peers = self
            .swarm
            .behaviour()
            .gossipsub
            .all_peers()
            .filter(|(_, topics)| topics.contains(&&topic))
            .count();
        if self
            .announcer
            .due(now, topic_peers, !self.own_records.is_empty())
        {
            let mut sent = false;
            let mut failed = false;
            for rec in &self.own_records {
                match self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(topic.clone(), rec.value.clone())
                {
                    Ok(_) => {
                        sent = true;
                        self.discovery.gossip_published.inc();
                    }
                    // Already sent (same bytes, same id): it is out there.
                    Err(gossipsub::PublishError::Duplicate) => sent = true,
                    Err(e) => {
                        tracing::debug!(error = %e, "gossip announcement not sent yet");
                        failed = true;
                    }
                }
            }
            if sent && !failed {
                tracing::info!(
                    records = self.own_records.len(),
                    peers = topic_peers,
                    "announced our PQ records on gossip"
                );
                self.announcer.published(now);
            } else {
                self.announcer.failed(now);
            }
        }
    }

    /// Hands `event` to the observer, synchronously and in order: nothing
    /// is queued, so nothing can be lost (the observer must not block).
    fn publish(&self, event: NodeEvent) {
        if let Some(o) = &self.observer {
            o.on_node_event(&event);
        }
    }

    fn redial_manual_peers(&mut self) {
        let now = Instant::now();
        for (i, peer, addr) in self.manual.due(now) {
            if let Some(peer) = peer
                && self.swarm.is_connected(&peer)
            {
                self.manual.already_connected(i, now);
                continue;
            }
            let opts = match peer {
                Some(peer) => DialOpts::peer_id(peer)
                    .addresses(vec![addr.clone()])
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
                None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
            };
            let id = opts.connection_id();
            // It keeps its own back-off.
            self.swarm.behaviour_mut().refused.exempt(id);
            match self.swarm.dial(opts) {
                Ok(()) => {
                    tracing::debug!(%addr, "dialling configured peer");
                    self.manual.dialing(i, id);
                }
                Err(e) => {
                    if let Some(f) = self.manual.not_started(i, e.to_string(), now) {
                        log_configured_failure(&f);
                    }
                }
            }
        }
    }

    /// Dials `addrs` again from a new local port, handing the failed dial
    /// `id`'s waiting caller, source and configured-peer state to the new
    /// one; its id, or `None` when the dial could not start.
    fn redial_from_new_port(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addrs: Vec<Multiaddr>,
    ) -> Option<ConnectionId> {
        let opts = match (peer, addrs.first()) {
            (Some(peer), _) => DialOpts::peer_id(peer)
                .addresses(addrs)
                .condition(PeerCondition::Always)
                .allocate_new_port()
                .build(),
            (None, Some(addr)) => DialOpts::unknown_peer_id()
                .address(addr.clone())
                .allocate_new_port()
                .build(),
            (None, None) => return None,
        };
        let new_id = opts.connection_id();
        self.swarm.dial(opts).ok()?;
        if let Some(reply) = self.pending_dials.remove(&id) {
            self.pending_dials.insert(new_id, reply);
        }
        if let Some(source) = self.dial_sources.remove(&id) {
            self.remember_source(new_id, source);
        }
        self.manual.redialled(id, new_id);
        Some(new_id)
    }

    fn on_command(&mut self, command: NodeCommand) {
        match command {
            NodeCommand::Dial {
                addr,
                source,
                reply,
            } => self.dial(addr, source, reply),
            NodeCommand::DialPeer {
                peer_id,
                addrs,
                source,
                reply,
            } => self.dial_peer(peer_id, addrs, source, reply),
            NodeCommand::GetRecord { key, reply } => {
                if self.pending_gets.len() >= MAX_PENDING_GETS {
                    let _ = reply.send(Err(NodeError::Busy));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_record(kad::RecordKey::new(&key));
                self.pending_gets.insert(
                    id,
                    PendingGet {
                        values: Vec::new(),
                        reply,
                    },
                );
            }
            NodeCommand::SetOwnRecords { mut records, reply } => {
                records.truncate(MAX_OWN_RECORDS);
                let now = Instant::now();
                if records != self.own_records {
                    self.announcer.changed(now);
                }
                self.publisher.set(records.clone(), now);
                self.own_records = records;
                let _ = reply.send(());
            }
            NodeCommand::Gossip { peer_id, reply } => {
                let topic = gossip::topic().hash();
                let g = &self.swarm.behaviour().gossipsub;
                let _ = reply.send(GossipStats {
                    topic_peers: g
                        .all_peers()
                        .filter(|(_, topics)| topics.contains(&&topic))
                        .count(),
                    score: peer_id.and_then(|p| g.peer_score(&p)),
                });
            }
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
            NodeCommand::Refuse { peer_id, reply } => {
                // Nothing dials it again for a back-off.
                self.manual.refused(peer_id);
                self.swarm
                    .behaviour_mut()
                    .refused
                    .refused(peer_id, Instant::now());
                let _ = reply.send(self.swarm.disconnect_peer_id(peer_id).is_ok());
            }
            NodeCommand::Shutdown { reply } => {
                // Handled in `run`.
                let _ = reply.send(());
            }
        }
    }

    fn dial_peer(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        source: Source,
        reply: oneshot::Sender<Result<DialOutcome, NodeError>>,
    ) {
        if self.swarm.is_connected(&peer) {
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
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs.into_iter().take(MAX_ADDRS_PER_PEER).collect())
            .extend_addresses_through_behaviour()
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials.insert(id, reply);
                self.remember_source(id, source);
            }
            Err(e) => {
                let _ = reply.send(Err(NodeError::Dial(e.to_string())));
            }
        }
    }

    fn remember_source(&mut self, id: ConnectionId, source: Source) {
        if self.dial_sources.len() < MAX_DIAL_SOURCES {
            self.dial_sources.insert(id, source);
        }
    }

    /// Why a connection exists: the dial's recorded source; bootstrap and
    /// configured peers by membership; otherwise inbound, or Kademlia's
    /// own dials (`dht`).
    fn source_of(&mut self, peer: &PeerId, id: ConnectionId, direction: Direction) -> Source {
        let recorded = self.dial_sources.remove(&id);
        if self.swarm.behaviour().bootstrap.plan().is_bootstrap(peer) {
            return Source::Bootstrap;
        }
        if self.configured.contains(peer) {
            return Source::Manual;
        }
        match (recorded, direction) {
            (Some(s), _) => s,
            (None, Direction::Inbound) => Source::Inbound,
            (None, Direction::Outbound) => Source::Dht,
        }
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        source: Source,
        reply: oneshot::Sender<Result<DialOutcome, NodeError>>,
    ) {
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
        if source == Source::Manual {
            // The operator's (the API's) address: dialled as given, even
            // to a peer refused a moment ago.
            self.addr_policy.permit(&addr);
            self.swarm.behaviour_mut().refused.exempt(id);
        }
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials.insert(id, reply);
                self.remember_source(id, source);
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
            configured_peers: self.manual.peer_ids(),
            configured: self.manual.views(Instant::now()),
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
        let plan = self.swarm.behaviour().bootstrap.plan();
        let stats = super::DhtStats {
            total_nodes: nodes.len(),
            buckets_used: buckets,
            bootstrap_nodes: nodes
                .iter()
                .filter(|n| plan.is_bootstrap(&n.peer_id))
                .count(),
        };
        RoutingTable {
            nodes,
            buckets,
            records: u32::try_from(records).unwrap_or(u32::MAX),
            mode,
            protocol: KAD_PROTOCOL.to_string(),
            stats,
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
                    for f in self.manual.closed(peer_id, Instant::now()) {
                        log_configured_failure(&f);
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
                let retried = self.new_port_dials.remove(&connection_id);
                if !retried
                    && let Some(addrs) = reused_port_in_use(&error)
                    && let Some(new_id) = self.redial_from_new_port(connection_id, peer_id, addrs)
                {
                    tracing::debug!(peer = ?peer_id, "the dial's reused listen port was in use; dialling again from a new port");
                    self.new_port_dials.insert(new_id);
                    return;
                }
                self.dial_sources.remove(&connection_id);
                if let Some(reply) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(NodeError::Dial(error.to_string())));
                }
                if let Some(f) =
                    self.manual
                        .dial_failed(connection_id, error.to_string(), Instant::now())
                {
                    log_configured_failure(&f);
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
        let source = self.source_of(&peer_id, connection_id, direction);
        tracing::info!(peer = %peer_id, remote = %remote_addr, ?direction, source = source.as_str(), "connection established");
        self.connections.insert(connection_id, peer_id);
        if self.peers.is_empty() {
            // The first peer: look the network up now, not in a minute.
            self.kad_bootstrap
                .soon(Instant::now() + Duration::from_secs(1));
        }
        self.manual
            .established(peer_id, connection_id, Instant::now());
        if self.peers.len() < self.max_peers || self.peers.contains_key(&peer_id) {
            let info = self.peers.entry(peer_id).or_insert_with(|| PeerInfo {
                peer_id,
                addresses: Vec::new(),
                listen_addrs: Vec::new(),
                direction,
                source,
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
            source,
        });
        self.new_port_dials.remove(&connection_id);
        // After the observer: when a dial returns, the PQ layer already
        // knows the connection (a send right after it waits for its status).
        if let Some(reply) = self.pending_dials.remove(&connection_id) {
            let _ = reply.send(Ok(DialOutcome {
                peer_id,
                already_connected: false,
            }));
        }
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
                    // Found on the local network, by mDNS the operator
                    // enabled: dialled as found.
                    self.addr_policy.permit(&addr);
                    self.swarm.add_peer_address(peer, addr.clone());
                    if !self.swarm.is_connected(&peer) && dialled < MAX_MDNS_DIALS {
                        dialled += 1;
                        tracing::debug!(%peer, %addr, "mDNS discovered a peer");
                        let opts = DialOpts::peer_id(peer)
                            .addresses(vec![addr])
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build();
                        let id = opts.connection_id();
                        if self.swarm.dial(opts).is_ok() {
                            self.remember_source(id, Source::Mdns);
                        }
                    }
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Expired(_)) => {}
            BehaviourEvent::IpLimits(never)
            | BehaviourEvent::Refused(never)
            | BehaviourEvent::ConnectionLimits(never)
            | BehaviourEvent::MemoryLimits(never)
            | BehaviourEvent::Bootstrap(never)
            | BehaviourEvent::Trim(never) => libp2p::core::util::unreachable(never),
            BehaviourEvent::Stream(()) => {}
            BehaviourEvent::Gossipsub(event) => self.on_gossip_event(event),
        }
    }

    /// `addrs` a remote peer gave about itself or others, without those
    /// the address policy refuses (counted), at most
    /// [`MAX_LEARNED_ADDRS`]. `teller`: the peer it came from.
    fn learned(&self, addrs: &[Multiaddr], teller: &PeerId) -> Vec<Multiaddr> {
        let over = self.peers.get(teller).and_then(|p| p.addresses.first());
        let mut kept = Vec::with_capacity(addrs.len().min(MAX_LEARNED_ADDRS));
        for a in addrs {
            if !self.addr_policy.admits_learned(a, over) {
                self.metrics
                    .addrs_dropped
                    .get_or_create(&crate::metrics::ScopeLabels {
                        scope: addr_policy::scope(a).as_str(),
                    })
                    .inc();
            } else if kept.len() < MAX_LEARNED_ADDRS {
                kept.push(a.clone());
            }
        }
        kept
    }

    fn on_identified(&mut self, peer_id: PeerId, info: identify::Info) {
        let speaks_kad = info.protocols.contains(&KAD_PROTOCOL);
        // What it claims to listen on, under the address policy: kept,
        // dialled and served in Kademlia replies only if allowed.
        let listen_addrs = self.learned(&info.listen_addrs, &peer_id);
        if speaks_kad {
            for addr in &listen_addrs {
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

    /// A verification finished: store the record unless the value under its
    /// key changed meanwhile (then the verdict is stale; the sender may
    /// PUT again).
    fn on_verified_put(&mut self, put: VerifiedPut) {
        let now = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .get(&put.record.key)
            .map(|r| r.value.clone());
        if now != put.existing {
            self.metrics.dht_records_rejected.inc();
            tracing::debug!(peer = %put.source, "DHT record changed during verification; dropped");
            return;
        }
        self.on_validated_record(put.source, put.record, put.verdict);
    }

    fn on_validated_record(
        &mut self,
        source: PeerId,
        record: kad::Record,
        verdict: Result<u64, super::records::DhtRecordError>,
    ) {
        match verdict {
            Ok(expires_at) => {
                // Kept no longer than the record's own signed expiry.
                let mut record = record;
                let left = expires_at.saturating_sub(pqnode_keys::time::unix_now());
                let cap = Instant::now() + Duration::from_secs(left);
                record.expires = Some(record.expires.map_or(cap, |e| e.min(cap)));
                self.store_record(source, record);
            }
            Err(e) => {
                self.metrics.dht_records_rejected.inc();
                tracing::debug!(peer = %source, error = %e, "DHT record rejected");
            }
        }
    }

    /// The network `peer` is connected from (quotas are kept per network).
    fn network_of(&self, peer: &PeerId) -> addr_policy::Network {
        self.peers
            .get(peer)
            .and_then(|p| p.addresses.first())
            .map_or(addr_policy::Network::Unknown, addr_policy::Network::of)
    }

    /// `None` when `source` is the author of the record under `key`;
    /// otherwise who it counts against.
    fn relayer(
        &self,
        key: &kad::RecordKey,
        source: PeerId,
    ) -> Option<(PeerId, addr_policy::Network)> {
        let author = super::records::parse_record_key(key.as_ref())
            .and_then(Result::ok)
            .map(|k| k.peer_id);
        (author != Some(source)).then(|| (source, self.network_of(&source)))
    }

    fn store_record(&mut self, source: PeerId, record: kad::Record) {
        let key = record.key.clone();
        let by = self.relayer(&key, source);
        // Checked again: several of one source's PUTs may have been
        // verified at once.
        if let Some((peer, network)) = by
            && !self.record_quota.admits(&key, peer, network)
        {
            self.metrics.dht_records_rejected.inc();
            self.metrics.dht_records_over_quota.inc();
            return;
        }
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let mut result = store.put(record.clone());
        if matches!(result, Err(kad::store::Error::MaxRecords))
            && by.is_none()
            && let Some(victim) = self.record_quota.evictable()
        {
            // An author's own record takes the place of one of the source
            // holding the most records of others.
            store.remove(&victim);
            self.record_quota.forget(&victim);
            result = store.put(record);
        }
        match result {
            Ok(()) => {
                self.record_quota.stored(key, by);
                self.metrics.dht_records_stored.inc();
            }
            Err(e) => {
                self.metrics.dht_records_rejected.inc();
                tracing::debug!(peer = %source, error = %e, "DHT record not stored");
            }
        }
    }

    /// Forgets the sources of DHT records no longer stored, once a minute.
    fn sweep_record_quota(&mut self) {
        if self.quota_swept.elapsed() < Duration::from_secs(60) {
            return;
        }
        self.quota_swept = Instant::now();
        let store = self.swarm.behaviour_mut().kad.store_mut();
        self.record_quota.retain(|k| store.get(k).is_some());
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
                // A value identical to the stored one was verified when it
                // was stored (§9 rev 3): accept it without verifying again,
                // unless its signed expiry has passed since (then it is
                // dropped: re-sending it must not keep it alive).
                if existing.as_deref() == Some(&record.value[..]) {
                    let now = pqnode_keys::time::unix_now();
                    match super::records::stored_expiry(record.key.as_ref(), &record.value) {
                        Some(expires_at) if expires_at > now => {
                            self.metrics.dht_records_identical.inc();
                            self.on_validated_record(source, record, Ok(expires_at));
                        }
                        _ => {
                            self.swarm
                                .behaviour_mut()
                                .kad
                                .store_mut()
                                .remove(&record.key);
                            self.metrics.dht_records_rejected.inc();
                            tracing::debug!(peer = %source, "DHT record expired; removed, not stored again");
                        }
                    }
                    return;
                }
                // Another author's record: within its source's share, or
                // refused before any verification.
                if let Some((peer, network)) = self.relayer(&record.key, source)
                    && !self.record_quota.admits(&record.key, peer, network)
                {
                    self.metrics.dht_records_rejected.inc();
                    self.metrics.dht_records_over_quota.inc();
                    tracing::debug!(peer = %source, "DHT record of another author beyond its source's share; refused");
                    return;
                }
                let Ok(permit) = self.verify_permits.clone().try_acquire_owned() else {
                    self.metrics.dht_records_rejected.inc();
                    tracing::debug!(peer = %source, "too many DHT records being verified; PUT dropped");
                    return;
                };
                let tx = self.verified_tx.clone();
                tokio::spawn(async move {
                    let key = record.key.clone();
                    let value = record.value.clone();
                    let prev = existing.clone();
                    let verdict = tokio::task::spawn_blocking(move || {
                        validate_dht_record(
                            key.as_ref(),
                            &value,
                            prev.as_deref(),
                            pqnode_keys::time::unix_now(),
                        )
                    })
                    .await;
                    if let Ok(verdict) = verdict {
                        let _ = tx
                            .send(VerifiedPut {
                                source,
                                record,
                                existing,
                                verdict,
                            })
                            .await;
                    }
                    // Held until the loop has the verdict: at most
                    // MAX_RECORD_VERIFICATIONS records are in flight.
                    drop(permit);
                });
            }
            kad::Event::RoutingUpdated {
                peer, is_new_peer, ..
            } if is_new_peer => {
                tracing::debug!(%peer, "added to the routing table");
            }
            kad::Event::ModeChanged { new_mode } => {
                tracing::info!(mode = %new_mode, "Kademlia mode changed");
            }
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => self.on_query_progress(id, result, step.last),
            _ => {}
        }
    }

    fn on_query_progress(&mut self, id: kad::QueryId, result: kad::QueryResult, last: bool) {
        match result {
            kad::QueryResult::PutRecord(r) => {
                let Some(key) = self.put_queries.remove(&id) else {
                    return;
                };
                let stored = r.is_ok();
                match &r {
                    Ok(_) => tracing::debug!("our PQ record is in the DHT"),
                    Err(e) => {
                        tracing::debug!(error = %e, "our PQ record was not stored by any peer yet")
                    }
                }
                self.discovery.put(if stored { "stored" } else { "failed" });
                self.publisher
                    .done(&key, stored, Instant::now(), pqnode_keys::time::unix_now());
            }
            kad::QueryResult::GetRecord(r) => {
                let finished = match r {
                    Ok(kad::GetRecordOk::FoundRecord(found)) => {
                        if let Some(get) = self.pending_gets.get_mut(&id) {
                            if !get.values.contains(&found.record.value) {
                                get.values.push(found.record.value);
                            }
                            get.values.len() >= MAX_RECORD_VALUES
                        } else {
                            false
                        }
                    }
                    Ok(kad::GetRecordOk::FinishedWithNoAdditionalRecord { .. }) | Err(_) => true,
                };
                if finished || last {
                    if let Some(get) = self.pending_gets.remove(&id) {
                        let _ = get.reply.send(Ok(get.values));
                    }
                    if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        q.finish();
                    }
                }
            }
            kad::QueryResult::Bootstrap(Ok(ok)) => {
                tracing::debug!(remaining = ok.num_remaining, "Kademlia bootstrap step");
            }
            kad::QueryResult::Bootstrap(Err(e)) => {
                tracing::debug!(error = %e, "Kademlia bootstrap failed");
            }
            _ => {}
        }
    }

    fn on_gossip_event(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        else {
            return;
        };
        // Cheap checks first, on the loop: our topic, an author (strict
        // signing guarantees it), a bounded size.
        let author = match message.source {
            Some(a) if message.topic == gossip::topic().hash() => a,
            _ => {
                self.validation(
                    &message_id,
                    &propagation_source,
                    Err("no author or foreign topic".into()),
                );
                return;
            }
        };
        if message.data.len() > gossip::MAX_MESSAGE {
            self.validation(&message_id, &propagation_source, Err("too large".into()));
            return;
        }
        let Ok(permit) = self.gossip_permits.clone().try_acquire_owned() else {
            self.discovery.gossip("ignored");
            self.swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(
                    &message_id,
                    &propagation_source,
                    gossipsub::MessageAcceptance::Ignore,
                );
            return;
        };
        let tx = self.gossip_tx.clone();
        tokio::spawn(async move {
            let data = message.data;
            let verdict = tokio::task::spawn_blocking(move || {
                let suites = pqnode_crypto::Suite::ALL;
                let mut ctx =
                    pqnode_keys::record::VerifyContext::new(pqnode_keys::time::unix_now(), &suites);
                ctx.expected_peer = Some(author);
                pqnode_keys::record::verify(&data, &ctx)
                    .map(|r| LearnedRecord::from_verified(&r, Source::Gossip))
                    .map_err(|e| e.name().to_owned())
            })
            .await
            .unwrap_or_else(|e| Err(format!("verification task failed: {e}")));
            let _ = tx
                .send(VerifiedGossip {
                    message_id,
                    propagation_source,
                    verdict,
                })
                .await;
            drop(permit);
        });
    }

    fn on_verified_gossip(&mut self, g: VerifiedGossip) {
        let learned = g.verdict.as_ref().ok().cloned();
        self.validation(&g.message_id, &g.propagation_source, g.verdict.map(|_| ()));
        if let Some(mut record) = learned
            && record.peer_id != *self.swarm.local_peer_id()
        {
            if g.propagation_source != record.peer_id {
                record.via = Some(g.propagation_source);
            }
            record.addrs = self.learned(&record.addrs, &g.propagation_source);
            tracing::debug!(peer = %record.peer_id, suite = record.suite.name(), "PQ record learned from gossip");
            self.publish(NodeEvent::RecordLearned(record));
        }
    }

    /// Tells gossipsub what the checks found: an invalid announcement is
    /// not propagated and lowers the score of the peer that sent it.
    fn validation(
        &mut self,
        id: &gossipsub::MessageId,
        from: &PeerId,
        verdict: Result<(), String>,
    ) {
        let acceptance = match &verdict {
            Ok(()) => {
                self.discovery.gossip("accepted");
                gossipsub::MessageAcceptance::Accept
            }
            Err(reason) => {
                self.discovery.gossip("rejected");
                tracing::debug!(peer = %from, %reason, "invalid gossip announcement rejected");
                gossipsub::MessageAcceptance::Reject
            }
        };
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(id, from, acceptance);
    }
}

/// The addresses of a dial that failed only because its socket, bound to
/// the listen port for port reuse, collided with a connection between the
/// same two ports (EADDRINUSE: one still in TIME_WAIT after a restart or a
/// reconnect, or a simultaneous dial). libp2p-tcp 0.45 dials again from a
/// new port on EADDRNOTAVAIL but not on this. The io error is nested in
/// transport wrappers that hide its kind, so the text of each error in
/// the chain is matched (`io::ErrorKind::AddrInUse`'s OS message on Linux).
fn reused_port_in_use(error: &libp2p::swarm::DialError) -> Option<Vec<Multiaddr>> {
    let libp2p::swarm::DialError::Transport(errors) = error else {
        return None;
    };
    let says_in_use = |e: &libp2p::TransportError<std::io::Error>| {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(c) = cur {
            if c.to_string().contains("Address already in use") {
                return true;
            }
            cur = c.source();
        }
        false
    };
    let in_use = !errors.is_empty() && errors.iter().all(|(_, e)| says_in_use(e));
    in_use.then(|| errors.iter().map(|(a, _)| a.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::TransportError;

    #[test]
    #[cfg(target_os = "linux")]
    fn only_a_dial_refused_for_a_port_in_use_is_made_again() {
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().expect("addr");
        let failed = |codes: &[i32]| {
            libp2p::swarm::DialError::Transport(
                codes
                    .iter()
                    .map(|c| {
                        (
                            addr.clone(),
                            TransportError::Other(std::io::Error::from_raw_os_error(*c)),
                        )
                    })
                    .collect(),
            )
        };
        // EADDRINUSE (98 on Linux) on every address: dial again.
        assert_eq!(reused_port_in_use(&failed(&[98])), Some(vec![addr.clone()]));
        assert_eq!(
            reused_port_in_use(&failed(&[98, 98])).map(|a| a.len()),
            Some(2)
        );
        // Anything else, or only some addresses: the failure stands.
        assert_eq!(reused_port_in_use(&failed(&[111])), None);
        assert_eq!(reused_port_in_use(&failed(&[98, 111])), None);
        assert_eq!(reused_port_in_use(&failed(&[])), None);
        assert_eq!(reused_port_in_use(&libp2p::swarm::DialError::Aborted), None);
    }
}
