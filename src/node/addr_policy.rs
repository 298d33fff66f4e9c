//! Which addresses this node dials, keeps and hands out (issue 29, item 1).
//!
//! A remote peer must not choose where this node opens connections: an
//! address it claims in identify, in a Kademlia reply, in a gossip or DHT
//! record would otherwise make the node connect to the operator's own
//! loopback services or LAN, every few seconds and at every restart. One
//! policy, two places:
//!
//! - [`AddrPolicy::admits_learned`] filters what a remote tells the node
//!   (identify, records, the peer cache) before it is kept, used or served
//!   in Kademlia replies;
//! - [`DialGuard`](super::transport::DialGuard), a transport wrapper below
//!   DNS resolution, checks every address the swarm dials, Kademlia's own
//!   query dials included, after a name is resolved (so a name that
//!   resolves to a private address is caught when dialled, whatever it
//!   resolved to when learned).
//!
//! Globally routable addresses pass. Loopback passes only for a node whose
//! own listen addresses are all loopback (a node on one host, as in tests)
//! and, when learned, only from a peer connected over loopback. Private,
//! shared (100.64/10) and link-local ranges pass with
//! `publish_private_addrs = true` (a node in a private network). Addresses
//! the operator gave (`peers`, `bootstrap`, `POST /api/peers/connect`) and
//! those mDNS found on the local network are dialled as given. Reserved,
//! documentation, multicast and unspecified addresses never pass.

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;

/// Addresses the operator or mDNS gave, remembered at most.
const MAX_PERMITTED: usize = 1024;

/// What kind of network an address is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Routable on the internet.
    Global,
    /// RFC 1918, 100.64/10 (shared), fc00::/7 (unique local).
    Private,
    /// 169.254/16, fe80::/10.
    LinkLocal,
    /// 127/8, ::1.
    Loopback,
    /// Unspecified, multicast, broadcast, documentation, reserved.
    Unroutable,
    /// A DNS name: what it resolves to is checked when it is dialled.
    Dns,
    /// Not an IP or DNS address (memory transport, for instance).
    Other,
}

impl Scope {
    /// Its name, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Private => "private",
            Scope::LinkLocal => "link-local",
            Scope::Loopback => "loopback",
            Scope::Unroutable => "unroutable",
            Scope::Dns => "dns",
            Scope::Other => "other",
        }
    }
}

/// The scope of `addr`, from its first component (a relayed address is in
/// its relay's scope).
pub fn scope(addr: &Multiaddr) -> Scope {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => v4_scope(ip),
        Some(Protocol::Ip6(ip)) => v6_scope(ip),
        Some(Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dnsaddr(_)) => {
            Scope::Dns
        }
        _ => Scope::Other,
    }
}

fn v4_scope(ip: Ipv4Addr) -> Scope {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        Scope::Loopback
    } else if ip.is_link_local() {
        Scope::LinkLocal
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Scope::Private
    } else if ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
    {
        Scope::Unroutable
    } else {
        Scope::Global
    }
}

fn v6_scope(ip: Ipv6Addr) -> Scope {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_scope(v4);
    }
    let s = ip.segments();
    if ip.is_loopback() {
        Scope::Loopback
    } else if ip.is_unspecified() || ip.is_multicast() || (s[0] == 0x2001 && s[1] == 0x0db8) {
        Scope::Unroutable
    } else if s[0] & 0xffc0 == 0xfe80 {
        Scope::LinkLocal
    } else if s[0] & 0xfe00 == 0xfc00 {
        Scope::Private
    } else if s[0] & 0xe000 == 0x2000 {
        Scope::Global
    } else {
        Scope::Unroutable
    }
}

/// Where a peer connects from, for budgets kept per network (first-use
/// pins, DHT records): an IPv4 /24 or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Network {
    /// An IPv4 /24.
    V4([u8; 3]),
    /// An IPv6 /64.
    V6([u8; 8]),
    /// No IP (a relayed or memory connection): one shared budget.
    Unknown,
}

impl Network {
    /// The network of a connection's remote address.
    pub fn of(addr: &Multiaddr) -> Network {
        let ip = match addr.iter().next() {
            Some(Protocol::Ip4(ip)) => IpAddr::V4(ip),
            Some(Protocol::Ip6(ip)) => match ip.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(ip),
            },
            _ => return Network::Unknown,
        };
        if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
            return Network::Unknown;
        }
        match ip {
            IpAddr::V4(v4) => {
                let [a, b, c, _] = v4.octets();
                Network::V4([a, b, c])
            }
            IpAddr::V6(v6) => {
                let o = v6.octets();
                let mut n = [0u8; 8];
                n.copy_from_slice(&o[..8]);
                Network::V6(n)
            }
        }
    }
}

/// The IP and port an address dials, if it names both.
fn socket(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut it = addr.iter();
    let ip = match it.next()? {
        Protocol::Ip4(ip) => IpAddr::V4(ip),
        Protocol::Ip6(ip) => IpAddr::V6(ip),
        _ => return None,
    };
    match it.next()? {
        Protocol::Tcp(port) | Protocol::Udp(port) => Some(SocketAddr::new(ip, port)),
        _ => None,
    }
}

/// The node's address policy; shared by the swarm's transport and its
/// event loop.
#[derive(Debug)]
pub struct AddrPolicy {
    allow_private: bool,
    allow_loopback: bool,
    /// Given by the operator or mDNS: dialled as given.
    permitted: Mutex<Permitted>,
}

#[derive(Debug, Default)]
struct Permitted {
    set: HashSet<SocketAddr>,
    order: VecDeque<SocketAddr>,
}

impl AddrPolicy {
    /// The policy of a node listening on `listen`: private ranges with
    /// `allow_private` (`publish_private_addrs`), loopback when every
    /// listen address is loopback.
    pub fn new(listen: &[Multiaddr], allow_private: bool) -> Arc<Self> {
        let allow_loopback =
            !listen.is_empty() && listen.iter().all(|a| scope(a) == Scope::Loopback);
        Arc::new(AddrPolicy {
            allow_private,
            allow_loopback,
            permitted: Mutex::default(),
        })
    }

    fn permitted(&self) -> std::sync::MutexGuard<'_, Permitted> {
        self.permitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `addr` was given by the operator (or found by mDNS): it may be
    /// dialled whatever its scope.
    pub fn permit(&self, addr: &Multiaddr) {
        let Some(sock) = socket(addr) else {
            return;
        };
        let mut p = self.permitted();
        if p.set.insert(sock) {
            p.order.push_back(sock);
            if p.order.len() > MAX_PERMITTED
                && let Some(old) = p.order.pop_front()
            {
                p.set.remove(&old);
            }
        }
    }

    fn scope_allowed(&self, scope: Scope) -> bool {
        match scope {
            Scope::Global | Scope::Dns | Scope::Other => true,
            Scope::Private | Scope::LinkLocal => self.allow_private,
            Scope::Loopback => self.allow_loopback,
            Scope::Unroutable => false,
        }
    }

    /// Whether `addr`, told by a remote peer connected over `teller` (its
    /// connection's remote address; `None` when not known, as for a record
    /// from the DHT), may be kept, used and handed on. Loopback never from
    /// a peer that is not on loopback itself.
    pub fn admits_learned(&self, addr: &Multiaddr, teller: Option<&Multiaddr>) -> bool {
        let s = scope(addr);
        if s == Scope::Loopback && teller.is_some_and(|t| scope(t) != Scope::Loopback) {
            return false;
        }
        self.scope_allowed(s)
    }

    /// Whether the transport may dial `addr` (a resolved address).
    pub fn permits_dial(&self, addr: &Multiaddr) -> bool {
        let s = scope(addr);
        self.scope_allowed(s)
            || socket(addr).is_some_and(|sock| self.permitted().set.contains(&sock))
    }

    /// `addrs` without those [`AddrPolicy::admits_learned`] refuses, at
    /// most `cap`, in their order.
    pub fn filter_learned<'a>(
        &self,
        addrs: impl IntoIterator<Item = &'a Multiaddr>,
        teller: Option<&Multiaddr>,
        cap: usize,
    ) -> Vec<Multiaddr> {
        addrs
            .into_iter()
            .filter(|a| self.admits_learned(a, teller))
            .take(cap)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().expect("multiaddr")
    }

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        assert_eq!(
            Network::of(&ma("/ip4/192.0.2.7/tcp/1")),
            Network::of(&ma("/ip4/192.0.2.200/tcp/9"))
        );
        assert_ne!(
            Network::of(&ma("/ip4/192.0.2.7/tcp/1")),
            Network::of(&ma("/ip4/192.0.3.7/tcp/1"))
        );
        assert_eq!(
            Network::of(&ma("/ip6/2001:db8:1:2::1/tcp/1")),
            Network::of(&ma("/ip6/2001:db8:1:2:ffff::9/udp/1/quic-v1"))
        );
        assert_ne!(
            Network::of(&ma("/ip6/2001:db8:1:2::1/tcp/1")),
            Network::of(&ma("/ip6/2001:db8:1:3::1/tcp/1"))
        );
        assert_eq!(Network::of(&ma("/memory/4")), Network::Unknown);
    }

    #[test]
    fn scopes() {
        for (addr, want) in [
            ("/ip4/8.8.8.8/tcp/1", Scope::Global),
            ("/ip4/127.0.0.1/tcp/1", Scope::Loopback),
            ("/ip4/127.9.9.9/tcp/1", Scope::Loopback),
            ("/ip4/10.1.2.3/tcp/1", Scope::Private),
            ("/ip4/172.16.0.1/tcp/1", Scope::Private),
            ("/ip4/172.32.0.1/tcp/1", Scope::Global),
            ("/ip4/192.168.1.1/udp/1/quic-v1", Scope::Private),
            ("/ip4/100.64.0.1/tcp/1", Scope::Private),
            ("/ip4/100.128.0.1/tcp/1", Scope::Global),
            ("/ip4/169.254.1.1/tcp/1", Scope::LinkLocal),
            ("/ip4/0.0.0.0/tcp/1", Scope::Unroutable),
            ("/ip4/255.255.255.255/tcp/1", Scope::Unroutable),
            ("/ip4/224.0.0.1/tcp/1", Scope::Unroutable),
            ("/ip4/192.0.2.1/tcp/1", Scope::Unroutable),
            ("/ip4/198.18.0.1/tcp/1", Scope::Unroutable),
            ("/ip4/240.0.0.1/tcp/1", Scope::Unroutable),
            ("/ip6/::1/tcp/1", Scope::Loopback),
            ("/ip6/::/tcp/1", Scope::Unroutable),
            ("/ip6/fe80::1/tcp/1", Scope::LinkLocal),
            ("/ip6/fd00::1/tcp/1", Scope::Private),
            ("/ip6/2001:db8::1/tcp/1", Scope::Unroutable),
            ("/ip6/2606:4700::1111/tcp/1", Scope::Global),
            ("/ip6/::ffff:127.0.0.1/tcp/1", Scope::Loopback),
            ("/ip6/ff02::1/tcp/1", Scope::Unroutable),
            ("/dns4/example.com/tcp/1", Scope::Dns),
            ("/memory/5", Scope::Other),
        ] {
            assert_eq!(scope(&ma(addr)), want, "{addr}");
        }
    }

    #[test]
    fn a_node_on_the_internet_keeps_and_dials_only_global_addresses_from_remotes() {
        let p = AddrPolicy::new(&[ma("/ip4/0.0.0.0/tcp/4001")], false);
        let remote = ma("/ip4/8.8.4.4/tcp/5000");
        for (addr, kept) in [
            ("/ip4/1.2.3.4/tcp/4001", true),
            ("/dns4/peer.example/tcp/4001", true),
            ("/ip4/127.0.0.1/tcp/22", false),
            ("/ip4/10.0.0.5/tcp/4001", false),
            ("/ip4/169.254.169.254/tcp/80", false),
            ("/ip4/0.0.0.0/tcp/4001", false),
        ] {
            assert_eq!(p.admits_learned(&ma(addr), Some(&remote)), kept, "{addr}");
            assert_eq!(p.permits_dial(&ma(addr)), kept, "{addr}");
        }
        // What the operator gave is dialled as given.
        let own = ma("/ip4/10.0.0.7/tcp/4001");
        assert!(!p.permits_dial(&own));
        p.permit(&own);
        assert!(p.permits_dial(&own));
        assert!(
            !p.permits_dial(&ma("/ip4/10.0.0.7/tcp/4002")),
            "that port only"
        );
    }

    #[test]
    fn loopback_only_for_a_node_on_loopback_and_only_from_a_peer_on_loopback() {
        let p = AddrPolicy::new(&[ma("/ip4/127.0.0.1/tcp/0")], false);
        let lo = ma("/ip4/127.0.0.1/tcp/7000");
        assert!(p.admits_learned(&lo, Some(&ma("/ip4/127.0.0.1/tcp/5"))));
        assert!(!p.admits_learned(&lo, Some(&ma("/ip4/8.8.8.8/tcp/5"))));
        assert!(p.admits_learned(&lo, None), "a loopback node's DHT records");
        assert!(p.permits_dial(&lo));
        let private = AddrPolicy::new(&[ma("/ip4/10.0.0.1/tcp/0")], true);
        assert!(private.admits_learned(&ma("/ip4/10.0.0.2/tcp/1"), None));
        assert!(!private.permits_dial(&lo));
        assert!(!private.admits_learned(&lo, Some(&ma("/ip4/10.0.0.2/tcp/1"))));
    }

    #[test]
    fn learned_addresses_are_capped_per_peer() {
        let p = AddrPolicy::new(&[ma("/ip4/0.0.0.0/tcp/4001")], false);
        let addrs: Vec<Multiaddr> = (1..=20)
            .map(|i| ma(&format!("/ip4/1.2.3.{i}/tcp/4001")))
            .chain([ma("/ip4/127.0.0.1/tcp/1")])
            .collect();
        let kept = p.filter_learned(&addrs, None, 8);
        assert_eq!(kept.len(), 8);
        assert!(kept.iter().all(|a| scope(a) == Scope::Global));
    }

    #[test]
    fn permitted_addresses_are_bounded() {
        let p = AddrPolicy::new(&[ma("/ip4/0.0.0.0/tcp/4001")], false);
        for port in 0..(MAX_PERMITTED as u16 + 10) {
            p.permit(&ma(&format!("/ip4/10.0.0.1/tcp/{port}")));
        }
        assert_eq!(p.permitted().set.len(), MAX_PERMITTED);
        assert!(
            !p.permits_dial(&ma("/ip4/10.0.0.1/tcp/0")),
            "the oldest went"
        );
    }
}
