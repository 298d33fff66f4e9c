//! Per-IP limits on inbound connections, which rust-libp2p does not have.
//!
//! A [`NetworkBehaviour`] that denies a pending inbound connection in
//! `handle_pending_inbound_connection`, before any handshake work, when its
//! remote IP already has `max_concurrent` inbound connections (pending or
//! established), or has opened more than `max_per_minute` new ones in the
//! last minute (GCRA: a burst of `max_per_minute`, then one per
//! `60 s / max_per_minute`).
//!
//! An IPv6 address counts as its /64 (one host usually holds a whole /64,
//! so per-address limits would not limit it); IPv4 and IPv4-mapped IPv6
//! addresses count per address.
//!
//! Relayed connections (`/p2p-circuit`) are not counted: their IP is the
//! relay's. Both maps are bounded: the concurrent map holds only IPs with
//! live inbound connections (so at most as many as libp2p's pending and
//! established connection limits allow); the rate state is an LRU table of
//! `max_tracked_ips` entries. When it is full, the least recently seen IP
//! is forgotten to make room, so a flood of new addresses can never lock
//! everyone out; the price is that an IP forgotten that way starts with a
//! fresh minute.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, Ipv6Addr};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hashlink::LruCache;
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

use crate::metrics::{IpDenyLabels, NodeMetrics};

/// The limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpLimits {
    /// Concurrent inbound connections (pending and established) per IP.
    pub max_concurrent: u32,
    /// New inbound connections per IP per minute.
    pub max_per_minute: u32,
    /// Distinct IPs whose rate is tracked at once; beyond it the least
    /// recently seen is forgotten.
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
}

impl IpLimitExceeded {
    fn label(self) -> &'static str {
        match self {
            IpLimitExceeded::Concurrent { .. } => "concurrent",
            IpLimitExceeded::Rate { .. } => "rate",
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
    /// GCRA state per IP: its theoretical arrival time. LRU-bounded.
    rate: LruCache<IpAddr, Instant>,
    /// The GCRA emission interval: 60 s / `max_per_minute`.
    interval: Duration,
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
        Protocol::Ip6(ip) => Some(limit_key(IpAddr::V6(ip))),
        _ => None,
    }
}

/// The key an address is limited under: IPv4 (also IPv4-mapped IPv6) per
/// address, IPv6 per /64.
fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

impl Behaviour {
    /// A behaviour enforcing `limits`; denials are counted in `metrics` if given.
    pub fn new(limits: IpLimits, metrics: Option<NodeMetrics>) -> Self {
        let per_minute = limits.max_per_minute.max(1);
        Behaviour {
            limits,
            per_ip: HashMap::new(),
            connections: HashMap::new(),
            rate: LruCache::new(limits.max_tracked_ips.max(1)),
            interval: Duration::from_secs(60) / per_minute,
            metrics,
        }
    }

    /// Inbound connections currently counted for `ip` (for IPv6: its /64).
    pub fn connections_from(&self, ip: &IpAddr) -> u32 {
        self.per_ip.get(&limit_key(*ip)).copied().unwrap_or(0)
    }

    /// IPs whose rate is tracked now.
    pub fn tracked_ips(&self) -> usize {
        self.rate.len()
    }

    fn check(&mut self, ip: IpAddr, now: Instant) -> Result<(), IpLimitExceeded> {
        let current = self.connections_from(&ip);
        if current >= self.limits.max_concurrent {
            return Err(IpLimitExceeded::Concurrent {
                limit: self.limits.max_concurrent,
            });
        }
        // GCRA: allowed while the theoretical arrival time stays within one
        // burst of now. `get` marks the IP as recently seen; `insert` of a
        // new IP into a full table drops the least recently seen one.
        let burst = self.interval * self.limits.max_per_minute.max(1);
        let tat = self.rate.get(&ip).copied().unwrap_or(now).max(now);
        let next = tat + self.interval;
        if next.saturating_duration_since(now) > burst {
            return Err(IpLimitExceeded::Rate {
                limit: self.limits.max_per_minute,
            });
        }
        if !self.rate.contains_key(&ip) && self.rate.len() >= self.limits.max_tracked_ips.max(1) {
            // The insert below forgets the least recently seen IP.
            if let Some(m) = &self.metrics {
                m.ip_limit_evicted.inc();
            }
        }
        self.rate.insert(ip, next);
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
        match self.check(ip, Instant::now()) {
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
    fn ipv6_counts_per_64() {
        let mut b = Behaviour::new(
            IpLimits {
                max_concurrent: 2,
                max_per_minute: 100,
                max_tracked_ips: 10,
            },
            None,
        );
        let local: Multiaddr = "/ip6/::1/tcp/1".parse().unwrap();
        let v6 = |ip: &str| -> Multiaddr { format!("/ip6/{ip}/tcp/1234").parse().unwrap() };
        let ids = |i| ConnectionId::new_unchecked(100 + i);
        // Two addresses of one /64 share its limit.
        for (i, ip) in ["2001:db8:1:2::1", "2001:db8:1:2:ffff::9"]
            .iter()
            .enumerate()
        {
            assert!(
                b.handle_pending_inbound_connection(ids(i), &local, &v6(ip))
                    .is_ok()
            );
        }
        assert!(
            b.handle_pending_inbound_connection(ids(2), &local, &v6("2001:db8:1:2:abcd::1"))
                .is_err(),
            "a third address of the same /64"
        );
        assert_eq!(
            b.connections_from(&"2001:db8:1:2:1234::".parse().unwrap()),
            2
        );
        // The next /64 is another key.
        assert!(
            b.handle_pending_inbound_connection(ids(3), &local, &v6("2001:db8:1:3::1"))
                .is_ok()
        );
        // An IPv4-mapped address counts as its IPv4 address.
        assert_eq!(
            limit_key("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
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

    #[test]
    fn a_full_rate_table_forgets_the_least_recently_seen_ip() {
        let mut b = Behaviour::new(
            IpLimits {
                max_concurrent: 100,
                max_per_minute: 2,
                max_tracked_ips: 3,
            },
            None,
        );
        let now = Instant::now();
        let ip = |i: u8| IpAddr::from([10, 0, 0, i]);
        // 10.0.0.1 uses its burst.
        assert!(b.check(ip(1), now).is_ok());
        assert!(b.check(ip(1), now).is_ok());
        assert!(b.check(ip(1), now).is_err());
        // Many new IPs: none is denied for lack of room, the table stays
        // bounded, and 10.0.0.1 (least recently seen) is forgotten.
        for i in 2..=200 {
            assert_eq!(b.check(ip(i), now), Ok(()), "new IP {i} denied");
            assert!(b.tracked_ips() <= 3);
        }
        assert!(b.check(ip(1), now).is_ok(), "10.0.0.1 was evicted");
        // One recently seen stays tracked: 10.0.0.200 keeps its count.
        assert!(b.check(ip(200), now).is_ok());
        assert!(b.check(ip(200), now).is_err());
        // The rate recovers with time: one new connection per 30 s.
        let later = now + Duration::from_secs(30);
        assert!(b.check(ip(200), later).is_ok());
        assert!(b.check(ip(200), later).is_err());
    }
}
