//! Configured peers (`peers`): redialled with back-off while disconnected.
//!
//! Sans-IO: the event loop tells it what happened (a dial started, failed,
//! a connection established, this node refused the peer, the last
//! connection closed) with the time, and asks it which peers are due. A
//! connection that this node refused, or that ended within [`STABLE`] of
//! being established, counts as a failed dial: the back-off (1 s doubling
//! to 5 min) is reset only by a connection that lasted. Without that, a
//! refused peer was redialled every second or two, forever (issue 29, item
//! 10): the connection was established a millisecond before the refusal.

use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use serde::Serialize;

/// The first redial comes this long after a failure; each further failure
/// doubles it, up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait between two dials of a configured peer.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A connection that lasted this long resets the back-off when it ends.
pub const STABLE: Duration = Duration::from_secs(30);
/// The longest error kept per peer (a dial error lists every address).
const MAX_ERROR_LEN: usize = 512;

/// What one configured peer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Dialled again at this time.
    Waiting(Instant),
    Dialing(ConnectionId),
    /// Connected since this time.
    Connected(Instant),
}

#[derive(Debug)]
struct Entry {
    addr: Multiaddr,
    peer_id: Option<PeerId>,
    state: State,
    /// The wait after the next failure.
    backoff: Duration,
    /// Failed attempts since the last connection that lasted.
    failures: u32,
    /// This node refused the peer on its current connection.
    refused: bool,
    last_error: Option<String>,
}

/// A failed attempt, for the log line the event loop writes (one per
/// back-off step).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The configured address.
    pub addr: Multiaddr,
    /// Why.
    pub error: String,
    /// Failed attempts in a row.
    pub failures: u32,
    /// When it is dialled again.
    pub retry_in: Duration,
}

/// One configured peer as `/api/peers` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfiguredPeer {
    /// The address from `peers`.
    pub address: String,
    /// Its PeerId, from the address or learned when a dial connected.
    #[serde(serialize_with = "ser_peer")]
    pub peer_id: Option<PeerId>,
    /// `connected`, `dialing` or `waiting`.
    pub state: &'static str,
    /// Failed attempts since the last connection that lasted (a refusal
    /// counts as one).
    pub failures: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Seconds until the next dial (while waiting).
    pub next_retry_secs: Option<u64>,
}

/// The configured peers.
#[derive(Debug, Default)]
pub struct ConfiguredPeers {
    peers: Vec<Entry>,
}

fn ser_peer<S: serde::Serializer>(v: &Option<PeerId>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(id) => s.collect_str(id),
        None => s.serialize_none(),
    }
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

impl ConfiguredPeers {
    /// `addrs`, each due for a dial at `now`.
    pub fn new(addrs: &[Multiaddr], now: Instant) -> Self {
        ConfiguredPeers {
            peers: addrs
                .iter()
                .map(|addr| Entry {
                    addr: addr.clone(),
                    peer_id: peer_of(addr),
                    state: State::Waiting(now),
                    backoff: BACKOFF_MIN,
                    failures: 0,
                    refused: false,
                    last_error: None,
                })
                .collect(),
        }
    }

    /// The PeerIds known so far.
    pub fn peer_ids(&self) -> Vec<PeerId> {
        self.peers.iter().filter_map(|p| p.peer_id).collect()
    }

    /// Those with a known PeerId: (PeerId, address), for Kademlia.
    pub fn known(&self) -> impl Iterator<Item = (PeerId, &Multiaddr)> {
        self.peers
            .iter()
            .filter_map(|p| p.peer_id.map(|id| (id, &p.addr)))
    }

    /// The peers due for a dial at `now`: (index, PeerId if known, address).
    pub fn due(&self, now: Instant) -> Vec<(usize, Option<PeerId>, Multiaddr)> {
        self.peers
            .iter()
            .enumerate()
            .filter(|(_, p)| matches!(p.state, State::Waiting(at) if at <= now))
            .map(|(i, p)| (i, p.peer_id, p.addr.clone()))
            .collect()
    }

    /// Peer `i` turned out to be connected already (an inbound connection).
    pub fn already_connected(&mut self, i: usize, now: Instant) {
        if let Some(p) = self.peers.get_mut(i) {
            p.state = State::Connected(now);
        }
    }

    /// Dial `id` to peer `i` started.
    pub fn dialing(&mut self, i: usize, id: ConnectionId) {
        if let Some(p) = self.peers.get_mut(i) {
            p.state = State::Dialing(id);
        }
    }

    /// The dial to peer `i` could not start.
    pub fn not_started(&mut self, i: usize, error: String, now: Instant) -> Option<Failure> {
        let p = self.peers.get_mut(i)?;
        Some(p.failed(error, now))
    }

    /// Dial `old` failed and was made again as `new` (from a new port).
    pub fn redialled(&mut self, old: ConnectionId, new: ConnectionId) {
        for p in &mut self.peers {
            if p.state == State::Dialing(old) {
                p.state = State::Dialing(new);
            }
        }
    }

    /// Dial `id` failed: the peer it was for, if any, waits its back-off.
    pub fn dial_failed(
        &mut self,
        id: ConnectionId,
        error: String,
        now: Instant,
    ) -> Option<Failure> {
        let p = self
            .peers
            .iter_mut()
            .find(|p| p.state == State::Dialing(id))?;
        Some(p.failed(error, now))
    }

    /// A connection to `peer` (dial `id`, or inbound) was established.
    pub fn established(&mut self, peer: PeerId, id: ConnectionId, now: Instant) {
        for p in &mut self.peers {
            let ours = p.state == State::Dialing(id) || p.peer_id == Some(peer);
            if ours {
                p.peer_id = Some(peer);
                if !matches!(p.state, State::Connected(_)) {
                    p.state = State::Connected(now);
                }
            }
        }
    }

    /// This node refused `peer` and disconnects it: when its connection
    /// closes, that counts as a failed dial.
    pub fn refused(&mut self, peer: PeerId) {
        for p in &mut self.peers {
            if p.peer_id == Some(peer) && matches!(p.state, State::Connected(_)) {
                p.refused = true;
            }
        }
    }

    /// `peer`'s last connection closed. One that was refused or ended
    /// within [`STABLE`] is a failure (returned, for the log); one that
    /// lasted resets the back-off.
    pub fn closed(&mut self, peer: PeerId, now: Instant) -> Vec<Failure> {
        let mut failures = Vec::new();
        for p in &mut self.peers {
            if p.peer_id != Some(peer) {
                continue;
            }
            let State::Connected(since) = p.state else {
                continue;
            };
            let lasted = now.saturating_duration_since(since);
            if p.refused {
                failures.push(p.failed("refused by this node's PQ policy".into(), now));
            } else if lasted < STABLE {
                failures.push(p.failed(
                    format!(
                        "the connection ended after {} ms (the peer closed it or refused this node)",
                        lasted.as_millis()
                    ),
                    now,
                ));
            } else {
                p.failures = 0;
                p.state = State::Waiting(now + BACKOFF_MIN);
                p.backoff = (BACKOFF_MIN * 2).min(BACKOFF_MAX);
            }
        }
        failures
    }

    /// Every configured peer, for `/api/peers`.
    pub fn views(&self, now: Instant) -> Vec<ConfiguredPeer> {
        self.peers
            .iter()
            .map(|p| ConfiguredPeer {
                address: p.addr.to_string(),
                peer_id: p.peer_id,
                state: match p.state {
                    State::Waiting(_) => "waiting",
                    State::Dialing(_) => "dialing",
                    State::Connected(_) => "connected",
                },
                failures: p.failures,
                last_error: p.last_error.clone(),
                next_retry_secs: match p.state {
                    State::Waiting(at) => Some(at.saturating_duration_since(now).as_secs()),
                    _ => None,
                },
            })
            .collect()
    }
}

impl Entry {
    fn failed(&mut self, mut error: String, now: Instant) -> Failure {
        if error.len() > MAX_ERROR_LEN {
            let mut end = MAX_ERROR_LEN;
            while !error.is_char_boundary(end) {
                end -= 1;
            }
            error.truncate(end);
            error.push('…');
        }
        let retry_in = self.backoff;
        self.state = State::Waiting(now + retry_in);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        self.failures = self.failures.saturating_add(1);
        self.refused = false;
        self.last_error = Some(error.clone());
        Failure {
            addr: self.addr.clone(),
            error,
            failures: self.failures,
            retry_in,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> (PeerId, Multiaddr) {
        let id = PeerId::random();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{id}")
            .parse()
            .expect("addr");
        (id, addr)
    }

    fn conn(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    /// How long peer 0 waits from `now` until its next dial.
    fn waits(c: &ConfiguredPeers, now: Instant) -> Option<Duration> {
        c.peers.first().and_then(|p| match p.state {
            State::Waiting(at) => Some(at.saturating_duration_since(now)),
            _ => None,
        })
    }

    #[test]
    fn a_refused_peer_backs_off_like_a_failed_dial() {
        let (id, addr) = peer();
        let t0 = Instant::now();
        let mut c = ConfiguredPeers::new(&[addr], t0);
        let mut now = t0;
        let mut waited = Vec::new();
        for n in 0..10 {
            assert_eq!(c.due(now).len(), 1, "due at round {n}");
            c.dialing(0, conn(n));
            c.established(id, conn(n), now);
            // Refused a moment later, every time.
            c.refused(id);
            now += Duration::from_millis(5);
            let f = c.closed(id, now);
            assert_eq!(f.len(), 1);
            assert_eq!(f[0].failures, n as u32 + 1);
            let wait = waits(&c, now).expect("waiting");
            assert_eq!(c.due(now).len(), 0, "not due at once");
            waited.push(wait.as_secs());
            now += wait;
        }
        assert_eq!(waited, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        let view = &c.views(now)[0];
        assert_eq!(view.failures, 10);
        assert_eq!(
            view.last_error.as_deref(),
            Some("refused by this node's PQ policy")
        );
    }

    #[test]
    fn a_connection_dropped_at_once_counts_as_a_failure_and_one_that_lasted_resets() {
        let (id, addr) = peer();
        let t0 = Instant::now();
        let mut c = ConfiguredPeers::new(&[addr], t0);
        let mut now = t0;
        for n in 0..3 {
            c.dialing(0, conn(n));
            c.established(id, conn(n), now);
            now += Duration::from_millis(200);
            assert_eq!(c.closed(id, now).len(), 1);
            now += waits(&c, now).expect("waiting");
        }
        assert_eq!(c.views(now)[0].failures, 3);
        c.dialing(0, conn(9));
        c.established(id, conn(9), now);
        assert_eq!(c.views(now)[0].state, "connected");
        now += STABLE;
        assert!(c.closed(id, now).is_empty(), "a connection that lasted");
        assert_eq!(waits(&c, now), Some(BACKOFF_MIN));
        assert_eq!(c.views(now)[0].failures, 0);
    }

    #[test]
    fn failed_dials_double_the_wait_and_a_new_port_dial_keeps_its_peer() {
        let (_, addr) = peer();
        let t0 = Instant::now();
        let mut c = ConfiguredPeers::new(&[addr], t0);
        c.dialing(0, conn(1));
        c.redialled(conn(1), conn(2));
        assert!(c.dial_failed(conn(1), "old".into(), t0).is_none());
        let f = c
            .dial_failed(conn(2), "connection refused".into(), t0)
            .expect("ours");
        assert_eq!((f.failures, f.retry_in), (1, BACKOFF_MIN));
        c.dialing(0, conn(3));
        let f = c.dial_failed(conn(3), "x".repeat(2000), t0).expect("ours");
        assert_eq!(f.retry_in, BACKOFF_MIN * 2);
        assert!(f.error.len() <= MAX_ERROR_LEN + '…'.len_utf8());
        let view = &c.views(t0)[0];
        assert_eq!((view.state, view.next_retry_secs), ("waiting", Some(2)));
    }

    #[test]
    fn an_inbound_connection_from_a_configured_peer_counts() {
        let (id, addr) = peer();
        let t0 = Instant::now();
        let mut c = ConfiguredPeers::new(&[addr], t0);
        c.established(id, conn(7), t0);
        assert_eq!(c.views(t0)[0].state, "connected");
        assert!(c.due(t0).is_empty());
    }
}
