//! Connection trimming: above `high_water` connected peers, close peers
//! down to `low_water`, least useful first, never a peer connected for less
//! than the grace period, a bootstrap peer, a peer with a live PQ session
//! to a pinned key, or a peer that exchanged messages in the last 5
//! minutes ([`Protection`]).
//!
//! [`select`] is the decision, sans-IO and pure; [`Behaviour`] tracks the
//! connections, asks the [`TrimPolicy`] (the PQ layer) how useful each
//! peer is, and closes the chosen ones.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};
use prometheus_client::metrics::counter::Counter;

/// How often the peer count is checked while above high water.
pub const CHECK_PERIOD: Duration = Duration::from_secs(5);

/// The water marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrimConfig {
    /// Trim down to this many peers.
    pub low_water: usize,
    /// Trim when more than this many peers are connected.
    pub high_water: usize,
    /// New connections are never trimmed within this.
    pub grace: Duration,
}

/// How a peer is to be treated by the trimmer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protection {
    /// Nothing known in its favour: trimmed first.
    None,
    /// Useful (an unpinned PQ session): trimmed after the others.
    Useful,
    /// Never trimmed (pinned PQ session, recent messages).
    Protected,
}

/// Tells the trimmer what it cannot see from connections alone.
pub trait TrimPolicy: Send + Sync + 'static {
    /// `peer`'s protection now. Must be quick and must not block.
    fn protection(&self, peer: &PeerId) -> Protection;
}

/// A connected peer as the trimmer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The peer.
    pub peer: PeerId,
    /// When its oldest live connection was established.
    pub since: Instant,
    /// What the policy says.
    pub protection: Protection,
    /// One of the bootstrap peers.
    pub bootstrap: bool,
}

/// The peers to close now: none unless more than `high_water` are
/// connected; then enough to come down to `low_water`, taken from the
/// unprotected peers past their grace, least useful first, newest first
/// among equals (the longest-lived connections are kept).
pub fn select(now: Instant, peers: &[Candidate], config: TrimConfig) -> Vec<PeerId> {
    if peers.len() <= config.high_water {
        return Vec::new();
    }
    let excess = peers.len() - config.low_water.min(peers.len());
    let mut closable: Vec<&Candidate> = peers
        .iter()
        .filter(|c| {
            !c.bootstrap
                && c.protection != Protection::Protected
                && now.saturating_duration_since(c.since) >= config.grace
        })
        .collect();
    closable.sort_by(|a, b| a.protection.cmp(&b.protection).then(b.since.cmp(&a.since)));
    closable.into_iter().take(excess).map(|c| c.peer).collect()
}

/// The trimming `NetworkBehaviour`.
pub struct Behaviour {
    config: TrimConfig,
    policy: Option<Arc<dyn TrimPolicy>>,
    bootstrap: Vec<PeerId>,
    /// Live connections per peer, with the oldest one's time.
    peers: HashMap<PeerId, (u32, Instant)>,
    to_close: Vec<PeerId>,
    next_check: Option<Instant>,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    trimmed: Counter,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("trim::Behaviour")
            .field("config", &self.config)
            .field("peers", &self.peers.len())
            .finish()
    }
}

impl Behaviour {
    /// A trimmer keeping `bootstrap` peers; closures counted in `trimmed`.
    pub fn new(config: TrimConfig, bootstrap: Vec<PeerId>, trimmed: Counter) -> Behaviour {
        Behaviour {
            config,
            policy: None,
            bootstrap,
            peers: HashMap::new(),
            to_close: Vec::new(),
            next_check: None,
            timer: None,
            trimmed,
        }
    }

    /// Sets the policy (the PQ layer, which exists only after the swarm).
    pub fn set_policy(&mut self, policy: Arc<dyn TrimPolicy>) {
        self.policy = Some(policy);
    }

    fn schedule(&mut self, at: Instant) {
        if self.next_check.is_none_or(|t| at < t) {
            self.next_check = Some(at);
        }
    }

    fn check(&mut self, now: Instant) {
        self.next_check = None;
        if self.peers.len() <= self.config.high_water {
            return;
        }
        let candidates: Vec<Candidate> = self
            .peers
            .iter()
            .map(|(peer, (_, since))| Candidate {
                peer: *peer,
                since: *since,
                protection: self
                    .policy
                    .as_ref()
                    .map_or(Protection::None, |p| p.protection(peer)),
                bootstrap: self.bootstrap.contains(peer),
            })
            .collect();
        let chosen = select(now, &candidates, self.config);
        if !chosen.is_empty() {
            tracing::info!(
                peers = self.peers.len(),
                closing = chosen.len(),
                low_water = self.config.low_water,
                high_water = self.config.high_water,
                "above high water: closing the least useful peers"
            );
        }
        self.to_close = chosen;
        // Still above high water (peers in grace, protected): look again.
        self.schedule(now + CHECK_PERIOD);
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _connection_id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                let now = Instant::now();
                self.peers.entry(e.peer_id).or_insert((0, now)).0 += 1;
                if self.peers.len() > self.config.high_water {
                    // Once the newest connection's grace is over at the latest.
                    self.schedule(now);
                }
            }
            FromSwarm::ConnectionClosed(e) => {
                if e.remaining_established == 0 {
                    self.peers.remove(&e.peer_id);
                } else if let Some(entry) = self.peers.get_mut(&e.peer_id) {
                    entry.0 = entry.0.saturating_sub(1);
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer_id: PeerId,
        _connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some(peer) = self.to_close.pop() {
            if self.peers.contains_key(&peer) {
                self.trimmed.inc();
                return Poll::Ready(ToSwarm::CloseConnection {
                    peer_id: peer,
                    connection: CloseConnection::All,
                });
            }
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let now = Instant::now();
        if self.next_check.is_some_and(|t| t <= now) {
            self.check(now);
            if !self.to_close.is_empty() {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        match self.next_check {
            Some(at) => {
                let deadline = tokio::time::Instant::from_std(at);
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    self.timer = None;
                    cx.waker().wake_by_ref();
                }
            }
            None => self.timer = None,
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TrimConfig {
        TrimConfig {
            low_water: 3,
            high_water: 5,
            grace: Duration::from_secs(20),
        }
    }

    fn cand(since: Instant, protection: Protection, bootstrap: bool) -> Candidate {
        Candidate {
            peer: PeerId::random(),
            since,
            protection,
            bootstrap,
        }
    }

    #[test]
    fn nothing_until_above_high_water() {
        let t = Instant::now();
        let peers: Vec<_> = (0..5).map(|_| cand(t, Protection::None, false)).collect();
        assert!(select(t + Duration::from_secs(60), &peers, config()).is_empty());
    }

    #[test]
    fn down_to_low_water_least_useful_and_newest_first() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let old_none = cand(at(0), Protection::None, false);
        let new_none = cand(at(10), Protection::None, false);
        let useful = cand(at(5), Protection::Useful, false);
        let useful_new = cand(at(6), Protection::Useful, false);
        let protected = cand(at(7), Protection::Protected, false);
        let boot = cand(at(8), Protection::None, true);
        let peers = [old_none, new_none, useful, useful_new, protected, boot];
        let now = at(100);
        // 6 peers, low water 3: close 3 — both unprotected ones (newest
        // first), then the newest useful one.
        assert_eq!(
            select(now, &peers, config()),
            vec![new_none.peer, old_none.peer, useful_new.peer]
        );
    }

    #[test]
    fn grace_protected_and_bootstrap_peers_stay_even_above_high_water() {
        let t0 = Instant::now();
        let mut peers: Vec<_> = (0..4)
            .map(|_| cand(t0, Protection::Protected, false))
            .collect();
        peers.push(cand(t0, Protection::None, true));
        peers.push(cand(t0 + Duration::from_secs(15), Protection::None, false));
        peers.push(cand(t0 + Duration::from_secs(15), Protection::None, false));
        let now = t0 + Duration::from_secs(30);
        // Only the two new ones could go, and both are in their grace.
        assert!(select(now, &peers, config()).is_empty());
        let later = t0 + Duration::from_secs(40);
        assert_eq!(select(later, &peers, config()).len(), 2);
    }
}
