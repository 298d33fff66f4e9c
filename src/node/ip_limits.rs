//! Per-IP limits on inbound connections, which rust-libp2p does not have.
//!
//! A [`NetworkBehaviour`] that denies a pending inbound connection in
//! `handle_pending_inbound_connection`, before any handshake work, when its
//! remote IP already has `max_concurrent` inbound connections (pending or
//! established), or has opened more than `max_per_minute` new ones in the
//! last minute (a `governor` keyed rate limiter, GCRA).
//!
//! Relayed connections (`/p2p-circuit`) are not counted: their IP is the
//! relay's. Both maps are bounded: the concurrent map holds only IPs with
//! live connections, at most `max_tracked_ips`; the rate limiter's state is
//! pruned of recovered IPs, and a new IP is denied while the table is full.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

use crate::metrics::{IpDenyLabels, NodeMetrics};

/// How often the rate limiter's state is pruned, at most.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// The limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpLimits {
    /// Concurrent inbound connections (pending and established) per IP.
    pub max_concurrent: u32,
    /// New inbound connections per IP per minute.
    pub max_per_minute: u32,
    /// Distinct IPs tracked at once; beyond it new IPs are denied.
    pub max_tracked_ips: usize,
}

impl Default for IpLimits {
    fn default() -> Self {
        IpLimits {
            max_concurrent: 8,
            max_per_minute: 30,
            max_tracked_ips: 65_536,
        }
    }
}

/// Why a connection was denied (the `cause` of [`ConnectionDenied`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpLimitExceeded {
    /// The IP has `limit` inbound connections already.
    #[error("too many concurrent connections from this IP (limit {limit})")]
    Concurrent {
        /// The limit.
        limit: u32,
    },
    /// The IP opened too many connections in the last minute.
    #[error("too many new connections from this IP (limit {limit} per minute)")]
    Rate {
        /// The limit.
        limit: u32,
    },
    /// Too many distinct IPs are tracked.
    #[error("per-IP table full")]
    TableFull,
}

impl IpLimitExceeded {
    fn label(self) -> &'static str {
        match self {
            IpLimitExceeded::Concurrent { .. } => "concurrent",
            IpLimitExceeded::Rate { .. } => "rate",
            IpLimitExceeded::TableFull => "table_full",
        }
    }
}

/// The per-IP limits behaviour.
pub struct Behaviour {
    limits: IpLimits,
    /// Live inbound connections per IP.
    per_ip: HashMap<IpAddr, u32>,
    /// The IP of each live inbound connection we counted.
    connections: HashMap<ConnectionId, IpAddr>,
    rate: DefaultKeyedRateLimiter<IpAddr>,
    last_prune: Instant,
    metrics: Option<NodeMetrics>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ip_limits::Behaviour")
            .field("limits", &self.limits)
            .field("ips", &self.per_ip.len())
            .field("connections", &self.connections.len())
            .finish()
    }
}

/// The IP of a remote address, unless it is relayed.
fn remote_ip(addr: &Multiaddr) -> Option<IpAddr> {
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    match addr.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(match ip.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(ip),
        }),
        _ => None,
    }
}

impl Behaviour {
    /// A behaviour enforcing `limits`; denials are counted in `metrics` if given.
    pub fn new(limits: IpLimits, metrics: Option<NodeMetrics>) -> Self {
        let per_minute = NonZeroU32::new(limits.max_per_minute).unwrap_or(NonZeroU32::MIN);
        Behaviour {
            limits,
            per_ip: HashMap::new(),
            connections: HashMap::new(),
            rate: RateLimiter::keyed(Quota::per_minute(per_minute)),
            last_prune: Instant::now(),
            metrics,
        }
    }

    /// Inbound connections currently counted for `ip`.
    pub fn connections_from(&self, ip: &IpAddr) -> u32 {
        self.per_ip.get(ip).copied().unwrap_or(0)
    }

    fn prune(&mut self, force: bool) {
        if force || self.last_prune.elapsed() >= PRUNE_INTERVAL {
            self.rate.retain_recent();
            self.rate.shrink_to_fit();
            self.last_prune = Instant::now();
        }
    }

    fn check(&mut self, ip: IpAddr) -> Result<(), IpLimitExceeded> {
        let current = self.connections_from(&ip);
        if current >= self.limits.max_concurrent {
            return Err(IpLimitExceeded::Concurrent {
                limit: self.limits.max_concurrent,
            });
        }
        self.prune(false);
        if current == 0
            && (self.per_ip.len() >= self.limits.max_tracked_ips
                || self.rate.len() >= self.limits.max_tracked_ips)
        {
            self.prune(true);
            if self.per_ip.len() >= self.limits.max_tracked_ips
                || self.rate.len() >= self.limits.max_tracked_ips
            {
                return Err(IpLimitExceeded::TableFull);
            }
        }
        if self.rate.check_key(&ip).is_err() {
            return Err(IpLimitExceeded::Rate {
                limit: self.limits.max_per_minute,
            });
        }
        Ok(())
    }

    fn release(&mut self, connection_id: ConnectionId) {
        let Some(ip) = self.connections.remove(&connection_id) else {
            return;
        };
        if let Entry::Occupied(mut e) = self.per_ip.entry(ip) {
            *e.get_mut() = e.get().saturating_sub(1);
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = std::convert::Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = remote_ip(remote_addr) else {
            return Ok(());
        };
        match self.check(ip) {
            Ok(()) => {
                *self.per_ip.entry(ip).or_insert(0) += 1;
                self.connections.insert(connection_id, ip);
                Ok(())
            }
            Err(e) => {
                tracing::debug!(%ip, reason = %e, "inbound connection denied by per-IP limits");
                if let Some(m) = &self.metrics {
                    m.ip_limit_denied
                        .get_or_create(&IpDenyLabels { reason: e.label() })
                        .inc();
                }
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
            FromSwarm::ConnectionClosed(e) => self.release(e.connection_id),
            FromSwarm::ListenFailure(e) => self.release(e.connection_id),
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

    fn addr(ip: &str) -> Multiaddr {
        format!("/ip4/{ip}/tcp/1234").parse().unwrap()
    }

    #[test]
    fn concurrent_limit_and_release() {
        let mut b = Behaviour::new(
            IpLimits {
                max_concurrent: 2,
                max_per_minute: 100,
                max_tracked_ips: 10,
            },
            None,
        );
        let local = addr("127.0.0.1");
        let (a, c) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        assert!(
            b.handle_pending_inbound_connection(a, &local, &addr("10.0.0.1"))
                .is_ok()
        );
        assert!(
            b.handle_pending_inbound_connection(c, &local, &addr("10.0.0.1"))
                .is_ok()
        );
        let third = ConnectionId::new_unchecked(3);
        assert!(
            b.handle_pending_inbound_connection(third, &local, &addr("10.0.0.1"))
                .is_err()
        );
        // Another IP is unaffected.
        assert!(
            b.handle_pending_inbound_connection(
                ConnectionId::new_unchecked(4),
                &local,
                &addr("10.0.0.2")
            )
            .is_ok()
        );
        b.release(a);
        assert_eq!(b.connections_from(&"10.0.0.1".parse().unwrap()), 1);
        assert!(
            b.handle_pending_inbound_connection(third, &local, &addr("10.0.0.1"))
                .is_ok()
        );
        b.release(c);
        b.release(third);
        b.release(third);
        assert_eq!(b.connections_from(&"10.0.0.1".parse().unwrap()), 0);
        assert!(!b.per_ip.contains_key(&"10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn rate_limit() {
        let mut b = Behaviour::new(
            IpLimits {
                max_concurrent: 100,
                max_per_minute: 3,
                max_tracked_ips: 10,
            },
            None,
        );
        let local = addr("127.0.0.1");
        for i in 0..3 {
            let id = ConnectionId::new_unchecked(i);
            assert!(
                b.handle_pending_inbound_connection(id, &local, &addr("10.0.0.1"))
                    .is_ok()
            );
            b.release(id);
        }
        let err = b
            .handle_pending_inbound_connection(
                ConnectionId::new_unchecked(9),
                &local,
                &addr("10.0.0.1"),
            )
            .unwrap_err();
        assert!(err.to_string().contains("per minute") || format!("{err:?}").contains("Rate"));
    }

    #[test]
    fn relayed_connections_are_not_counted() {
        let mut b = Behaviour::new(
            IpLimits {
                max_concurrent: 1,
                max_per_minute: 1,
                max_tracked_ips: 10,
            },
            None,
        );
        let relayed: Multiaddr = "/ip4/10.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
            .parse()
            .unwrap();
        for i in 0..5 {
            assert!(
                b.handle_pending_inbound_connection(
                    ConnectionId::new_unchecked(i),
                    &relayed,
                    &relayed
                )
                .is_ok()
            );
        }
    }
}
