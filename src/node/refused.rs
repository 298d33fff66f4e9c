//! No dial to a peer this node refused, or that refused it, for a back-off
//! (issue 29, item 10).
//!
//! A peer the PQ layer refuses (a wrong pin, a suite it no longer offers,
//! abuse) is disconnected; but Kademlia (the peer is in the routing table),
//! the record sweep and the peer cache would dial it again within a second
//! or two, only for it to be refused again, forever. The same holds the
//! other way round: a peer that refuses this node closes each connection a
//! moment after it is established. This behaviour denies every outbound
//! dial to such a peer until its back-off has passed: 1 s after the first
//! refusal (or a connection that lasted less than [`QUICK_CLOSE`]),
//! doubling with each further one up to 5 min; a peer not refused for an
//! hour starts afresh. The dials the operator
//! asks for (`POST /api/peers/connect`) and the configured peers' own
//! redials (which keep the same back-off themselves) are exempt. Like
//! `ip_limits`, it denies before any work; its maps are bounded.

use std::collections::{HashMap, HashSet, VecDeque};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionError, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// The first wait after a refusal.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A peer not refused for this long starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Refused peers remembered at most (the earliest refused go first).
pub const MAX_REFUSED: usize = 4096;
/// Exempt dials in flight remembered at most.
const MAX_EXEMPT: usize = 1024;
/// A peer's last connection that ends sooner than this after it was
/// established counts as a refusal (an idle connection lives for the idle
/// timeout, 10 s by default; a refused one a few milliseconds).
pub const QUICK_CLOSE: Duration = Duration::from_secs(3);

/// A dial denied because the peer was refused recently.
#[derive(Debug, thiserror::Error)]
#[error("{peer} was refused by this node; not dialled again for {} s", .retry_in.as_secs())]
pub struct RefusedRecently {
    /// The peer.
    pub peer: PeerId,
    /// How long until it may be dialled.
    pub retry_in: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    until: Instant,
    backoff: Duration,
    refused_at: Instant,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Behaviour {
    refused: HashMap<PeerId, Entry>,
    order: VecDeque<(PeerId, Instant)>,
    exempt: HashSet<ConnectionId>,
    exempt_order: VecDeque<ConnectionId>,
    /// Live connections and when each was established (bounded by the
    /// connection limits).
    live: HashMap<ConnectionId, Instant>,
}

impl Behaviour {
    /// This node refused `peer` at `now`: no dial to it for its back-off.
    pub fn refused(&mut self, peer: PeerId, now: Instant) {
        let backoff = match self.refused.get(&peer) {
            Some(e) if now.saturating_duration_since(e.refused_at) < FORGET_AFTER => {
                (e.backoff * 2).min(BACKOFF_MAX)
            }
            _ => BACKOFF_MIN,
        };
        self.refused.insert(
            peer,
            Entry {
                until: now + backoff,
                backoff,
                refused_at: now,
            },
        );
        self.order.push_back((peer, now));
        while self.refused.len() > MAX_REFUSED || self.order.len() > 2 * MAX_REFUSED {
            let Some((p, at)) = self.order.pop_front() else {
                break;
            };
            if self.refused.get(&p).is_some_and(|e| e.refused_at == at) {
                self.refused.remove(&p);
            }
        }
    }

    /// Dial `id` is the operator's or a configured peer's redial: not
    /// denied.
    pub fn exempt(&mut self, id: ConnectionId) {
        if self.exempt.insert(id) {
            self.exempt_order.push_back(id);
            if self.exempt_order.len() > MAX_EXEMPT
                && let Some(old) = self.exempt_order.pop_front()
            {
                self.exempt.remove(&old);
            }
        }
    }

    /// Whether a dial `id` to `peer` may go out at `now`.
    fn check(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        now: Instant,
    ) -> Result<(), RefusedRecently> {
        if self.exempt.remove(&id) {
            return Ok(());
        }
        let Some(peer) = peer else {
            return Ok(());
        };
        match self.refused.get(&peer) {
            Some(e) if now < e.until => Err(RefusedRecently {
                peer,
                retry_in: e.until - now,
            }),
            _ => Ok(()),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        _addresses: &[Multiaddr],
        _effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        match self.check(connection_id, maybe_peer, Instant::now()) {
            Ok(()) => Ok(Vec::new()),
            Err(e) => {
                tracing::debug!(peer = %e.peer, retry_in_secs = e.retry_in.as_secs(), "dial to a recently refused peer denied");
                Err(ConnectionDenied::new(e))
            }
        }
    }

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
            FromSwarm::DialFailure(e) => {
                self.exempt.remove(&e.connection_id);
            }
            FromSwarm::ConnectionEstablished(e) => {
                self.live.insert(e.connection_id, Instant::now());
            }
            FromSwarm::ConnectionClosed(e) => {
                let now = Instant::now();
                let quick = self
                    .live
                    .remove(&e.connection_id)
                    .is_some_and(|since| now.saturating_duration_since(since) < QUICK_CLOSE);
                // Closed by the remote (this node's own closes have no
                // cause; its refusals come through `refused`).
                let by_remote = e
                    .cause
                    .is_some_and(|c| !matches!(c, ConnectionError::KeepAliveTimeout));
                if quick && by_remote && e.remaining_established == 0 {
                    self.refused(e.peer_id, now);
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
        _cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    #[test]
    fn a_refused_peer_is_not_dialled_for_a_doubling_back_off() {
        let mut b = Behaviour::default();
        let p = PeerId::random();
        let t = Instant::now();
        assert!(b.check(id(1), Some(p), t).is_ok());
        let mut waits = Vec::new();
        let mut now = t;
        for n in 0..10 {
            b.refused(p, now);
            assert!(b.check(id(10 + n), Some(p), now).is_err(), "round {n}");
            let until = b.refused[&p].until;
            waits.push((until - now).as_secs());
            now = until;
            assert!(b.check(id(20 + n), Some(p), now).is_ok());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        // An hour without a refusal: afresh.
        b.refused(p, now + FORGET_AFTER);
        assert_eq!(b.refused[&p].backoff, BACKOFF_MIN);
    }

    #[test]
    fn exempt_dials_and_other_peers_go_out() {
        let mut b = Behaviour::default();
        let (p, q) = (PeerId::random(), PeerId::random());
        let t = Instant::now();
        b.refused(p, t);
        b.exempt(id(5));
        assert!(b.check(id(5), Some(p), t).is_ok(), "the operator's dial");
        assert!(b.check(id(6), Some(p), t).is_err(), "exempt once");
        assert!(b.check(id(7), Some(q), t).is_ok());
        assert!(b.check(id(8), None, t).is_ok(), "no PeerId known");
    }

    #[test]
    fn bounded() {
        let mut b = Behaviour::default();
        let t = Instant::now();
        for _ in 0..MAX_REFUSED + 10 {
            b.refused(PeerId::random(), t);
        }
        assert_eq!(b.refused.len(), MAX_REFUSED);
        for n in 0..MAX_EXEMPT + 10 {
            b.exempt(id(n));
        }
        assert_eq!(b.exempt.len(), MAX_EXEMPT);
    }
}
