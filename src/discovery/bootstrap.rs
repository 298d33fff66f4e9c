//! The bootstrap list (`bootstrap` in the configuration): dialled until
//! `min_connected` of its peers are connected, each failed entry retried
//! with exponential back-off and jitter (30 s base, doubling, capped at
//! 10 min, times a random factor in [0.5, 1.5)), a dial that has not
//! finished within 10 s counted as failed.
//!
//! [`Plan`] is the decision logic, sans-IO: it is told what happened and
//! asked [`Plan::next`] what to dial now. [`Behaviour`] is the
//! `NetworkBehaviour` that feeds it from the swarm and turns its answers
//! into dials; the event loop only dispatches.

use std::collections::HashMap;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

pub use super::metrics::{Metrics, OutcomeLabels};

/// First retry delay after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(30);
/// Longest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(600);
/// A dial not finished within this is a failure.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// May be dialled from this instant.
    Idle {
        due: Instant,
    },
    /// Being dialled since.
    Dialing {
        since: Instant,
    },
    Connected,
}

#[derive(Debug)]
struct Entry {
    addr: Multiaddr,
    peer: Option<PeerId>,
    state: State,
    failures: u32,
}

/// The sans-IO bootstrap plan.
#[derive(Debug)]
pub struct Plan {
    entries: Vec<Entry>,
    min_connected: usize,
    rng: u64,
}

/// What [`Plan::on_dial_failed`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// When the entry is due again.
    pub at: Instant,
    /// Failures in a row so far.
    pub failures: u32,
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => Some(peer),
        _ => None,
    }
}

impl Plan {
    /// A plan for `addrs` (deduplicated), wanting `min_connected` of them
    /// (at most all of them) connected; `seed` drives the jitter.
    pub fn new(addrs: &[Multiaddr], min_connected: usize, now: Instant, seed: u64) -> Plan {
        let mut entries: Vec<Entry> = Vec::new();
        for a in addrs {
            if entries.iter().any(|e| &e.addr == a) {
                continue;
            }
            entries.push(Entry {
                addr: a.clone(),
                peer: peer_of(a),
                state: State::Idle { due: now },
                failures: 0,
            });
        }
        let min_connected = min_connected.min(entries.len());
        Plan {
            entries,
            min_connected,
            rng: seed | 1,
        }
    }

    /// Entries whose peer is connected.
    pub fn connected(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.state == State::Connected)
            .count()
    }

    /// The connection target.
    pub fn min_connected(&self) -> usize {
        self.min_connected
    }

    /// Whether `peer` is one of the bootstrap peers.
    pub fn is_bootstrap(&self, peer: &PeerId) -> bool {
        self.entries.iter().any(|e| e.peer.as_ref() == Some(peer))
    }

    /// The next dial to start now, if any: while fewer than
    /// `min_connected` are connected, the due idle entry that failed least
    /// (then in list order), counting dials in flight toward the target.
    /// Dials older than [`DIAL_TIMEOUT`] are failed first.
    pub fn next(&mut self, now: Instant) -> Option<(usize, Multiaddr)> {
        for i in 0..self.entries.len() {
            if let State::Dialing { since } = self.entries[i].state
                && now.saturating_duration_since(since) >= DIAL_TIMEOUT
            {
                self.fail(i, now);
            }
        }
        let busy = self
            .entries
            .iter()
            .filter(|e| matches!(e.state, State::Connected | State::Dialing { .. }))
            .count();
        if busy >= self.min_connected {
            return None;
        }
        let pick = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e.state, State::Idle { due } if due <= now))
            .min_by_key(|(i, e)| (e.failures, *i))
            .map(|(i, _)| i)?;
        self.entries[pick].state = State::Dialing { since: now };
        Some((pick, self.entries[pick].addr.clone()))
    }

    /// When [`Plan::next`] may have something new to say (a retry falls
    /// due or a dial times out); `None` when nothing is pending.
    pub fn next_wakeup(&self) -> Option<Instant> {
        // With enough connected or in flight, a due retry changes nothing.
        let busy = self
            .entries
            .iter()
            .filter(|e| matches!(e.state, State::Connected | State::Dialing { .. }))
            .count();
        let retries_matter = busy < self.min_connected;
        self.entries
            .iter()
            .filter_map(|e| match e.state {
                State::Idle { due } if retries_matter => Some(due),
                State::Idle { .. } => None,
                State::Dialing { since } => Some(since + DIAL_TIMEOUT),
                State::Connected => None,
            })
            .min()
    }

    /// Entry `index` connected, to `peer`.
    pub fn on_connected(&mut self, index: usize, peer: PeerId) {
        if let Some(e) = self.entries.get_mut(index) {
            e.state = State::Connected;
            e.failures = 0;
            e.peer.get_or_insert(peer);
        }
    }

    /// A connection to `peer` (however it came about) is established: a
    /// bootstrap entry for it counts as connected.
    pub fn on_peer_connected(&mut self, peer: PeerId) {
        for e in &mut self.entries {
            if e.peer == Some(peer) {
                e.state = State::Connected;
                e.failures = 0;
            }
        }
    }

    /// The dial of entry `index` failed.
    pub fn on_dial_failed(&mut self, index: usize, now: Instant) -> Option<Retry> {
        if !matches!(
            self.entries.get(index).map(|e| e.state),
            Some(State::Dialing { .. })
        ) {
            return None;
        }
        Some(self.fail(index, now))
    }

    /// The last connection to `peer` closed: its entries are due again now.
    pub fn on_peer_disconnected(&mut self, peer: PeerId, now: Instant) {
        for e in &mut self.entries {
            if e.peer == Some(peer) && e.state == State::Connected {
                e.state = State::Idle { due: now };
            }
        }
    }

    fn fail(&mut self, index: usize, now: Instant) -> Retry {
        let jitter = self.jitter();
        let e = &mut self.entries[index];
        e.failures = e.failures.saturating_add(1);
        let exp = BACKOFF_BASE
            .saturating_mul(1u32 << (e.failures - 1).min(16))
            .min(BACKOFF_CAP);
        let delay = exp.mul_f64(jitter);
        let at = now + delay;
        e.state = State::Idle { due: at };
        Retry {
            at,
            failures: e.failures,
        }
    }

    /// A factor in [0.5, 1.5) (splitmix64).
    fn jitter(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        0.5 + (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The `NetworkBehaviour` around [`Plan`].
pub struct Behaviour {
    plan: Plan,
    dialing: HashMap<ConnectionId, usize>,
    timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    metrics: Metrics,
    logged_below: bool,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("bootstrap::Behaviour")
            .field("plan", &self.plan)
            .finish()
    }
}

impl Behaviour {
    /// Dials `addrs` until `min_connected` are connected.
    pub fn new(addrs: &[Multiaddr], min_connected: usize, metrics: Metrics) -> Behaviour {
        let mut seed = [0u8; 8];
        // Jitter only: without OS randomness the seed is the clock.
        if rand_core::TryRng::try_fill_bytes(&mut pqnode_crypto::rng::system_rng().0, &mut seed)
            .is_err()
        {
            seed = (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64))
            .to_le_bytes();
        }
        Behaviour {
            plan: Plan::new(
                addrs,
                min_connected,
                Instant::now(),
                u64::from_le_bytes(seed),
            ),
            dialing: HashMap::new(),
            timer: None,
            metrics,
            logged_below: false,
        }
    }

    /// The plan (for status and tests).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    fn arm_timer(&mut self, cx: &mut Context<'_>) {
        let Some(at) = self.plan.next_wakeup() else {
            self.timer = None;
            return;
        };
        let deadline = tokio::time::Instant::from_std(at.max(Instant::now()));
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        // Registers the waker; if already due, poll again soon.
        if timer.as_mut().poll(cx).is_ready() {
            cx.waker().wake_by_ref();
            self.timer = None;
        }
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
                if let Some(index) = self.dialing.remove(&e.connection_id) {
                    self.plan.on_connected(index, e.peer_id);
                    self.metrics
                        .dials
                        .get_or_create(&OutcomeLabels {
                            outcome: "connected",
                        })
                        .inc();
                } else {
                    self.plan.on_peer_connected(e.peer_id);
                }
                self.metrics.connected.set(self.plan.connected() as i64);
            }
            FromSwarm::DialFailure(e) => {
                if let Some(index) = self.dialing.remove(&e.connection_id)
                    && let Some(retry) = self.plan.on_dial_failed(index, Instant::now())
                {
                    self.metrics
                        .dials
                        .get_or_create(&OutcomeLabels { outcome: "failed" })
                        .inc();
                    tracing::info!(
                        error = %e.error,
                        failures = retry.failures,
                        retry_in_secs = retry.at.saturating_duration_since(Instant::now()).as_secs(),
                        "bootstrap peer unreachable"
                    );
                }
            }
            FromSwarm::ConnectionClosed(e) if e.remaining_established == 0 => {
                self.plan.on_peer_disconnected(e.peer_id, Instant::now());
                self.metrics.connected.set(self.plan.connected() as i64);
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
        let now = Instant::now();
        if let Some((index, addr)) = self.plan.next(now) {
            let opts = DialOpts::unknown_peer_id().address(addr).build();
            self.dialing.insert(opts.connection_id(), index);
            return Poll::Ready(ToSwarm::Dial { opts });
        }
        let below = self.plan.connected() < self.plan.min_connected();
        if below && !self.logged_below && self.dialing.is_empty() {
            tracing::warn!(
                connected = self.plan.connected(),
                wanted = self.plan.min_connected(),
                "fewer bootstrap peers connected than min_connected; retrying with back-off"
            );
            self.logged_below = true;
        } else if !below {
            self.logged_below = false;
        }
        self.arm_timer(cx);
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<Multiaddr> {
        (0..n)
            .map(|i| format!("/ip4/127.0.0.1/tcp/{}", 4000 + i).parse().unwrap())
            .collect()
    }

    #[test]
    fn dials_until_min_connected_counting_dials_in_flight() {
        let t0 = Instant::now();
        let mut p = Plan::new(&addrs(5), 3, t0, 7);
        let a = p.next(t0).unwrap().0;
        let b = p.next(t0).unwrap().0;
        let c = p.next(t0).unwrap().0;
        assert_eq!((a, b, c), (0, 1, 2));
        assert_eq!(p.next(t0), None, "3 in flight are enough");
        p.on_connected(a, PeerId::random());
        p.on_connected(b, PeerId::random());
        assert!(p.on_dial_failed(c, t0).is_some());
        assert_eq!(p.next(t0).map(|x| x.0), Some(3), "the next unfailed entry");
        assert_eq!(p.connected(), 2);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let t0 = Instant::now();
        let mut p = Plan::new(&addrs(1), 1, t0, 42);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..10 {
            let (i, _) = p.next(now).expect("due");
            let r = p.on_dial_failed(i, now).unwrap();
            let d = r.at - now;
            delays.push(d);
            assert_eq!(p.next(now), None, "not before the retry");
            assert_eq!(p.next_wakeup(), Some(r.at));
            now = r.at;
        }
        for (k, d) in delays.iter().enumerate() {
            let exp = (BACKOFF_BASE * (1 << k.min(16))).min(BACKOFF_CAP);
            assert!(
                *d >= exp / 2 && *d < exp.mul_f64(1.5),
                "failure {}: {d:?} outside [{:?}, {:?})",
                k + 1,
                exp / 2,
                exp.mul_f64(1.5)
            );
        }
        assert!(delays.iter().all(|d| *d < BACKOFF_CAP.mul_f64(1.5)));
        // Jitter: not all capped delays are equal.
        assert!(delays[6..].windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn a_stalled_dial_times_out_and_a_lost_peer_is_redialled() {
        let t0 = Instant::now();
        let mut p = Plan::new(&addrs(1), 1, t0, 1);
        let (i, _) = p.next(t0).unwrap();
        assert_eq!(p.next_wakeup(), Some(t0 + DIAL_TIMEOUT));
        assert_eq!(p.next(t0 + DIAL_TIMEOUT), None, "failed, backing off");
        assert!(p.next_wakeup().unwrap() >= t0 + DIAL_TIMEOUT + BACKOFF_BASE / 2);
        let later = t0 + Duration::from_secs(3600);
        let (j, _) = p.next(later).unwrap();
        assert_eq!(i, j);
        let peer = PeerId::random();
        p.on_connected(j, peer);
        assert!(p.is_bootstrap(&peer));
        assert_eq!(p.next(later), None);
        p.on_peer_disconnected(peer, later);
        assert_eq!(p.next(later).map(|x| x.0), Some(j), "redialled at once");
    }

    #[test]
    fn min_connected_is_at_most_the_list_and_duplicates_count_once() {
        let t0 = Instant::now();
        let mut list = addrs(2);
        list.push(list[0].clone());
        let p = Plan::new(&list, 3, t0, 1);
        assert_eq!(p.min_connected(), 2);
        let empty = Plan::new(&[], 3, t0, 1);
        assert_eq!(empty.next_wakeup(), None);
    }
}
