//! The one owner of every connected peer's PQ state.
//!
//! ```text
//! unknown ──handshake──▶ negotiating ──▶ pq session
//!    │                        ├────────▶ classical (reason)   (negotiation failed, §8.1)
//!    └────────────────────────┴────────▶ refused (reason)     (§8.1, §8.3, §9)
//! ```
//!
//! One [`PeerTable`] behind one lock holds, per connected peer, its status,
//! its session, its handshakes in flight and its per-peer handshake limits
//! (§9 rev 3). It is changed only through its methods, from connection
//! events the swarm hands over synchronously (none can be lost) and from the
//! PQ layer's own tasks. Each entry publishes its status on a `watch`
//! channel: waiting for a session is `wait_for`, never polling. The API and
//! metrics read [`PeerSnapshot`]s.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use libp2p::PeerId;
use pqnode_crypto::Suite;
use tokio::sync::{Notify, mpsc, watch};

use super::policy::{ClassicalReason, RefuseReason, StatusKind};
use super::transition::{self, Event};
use super::{SessionInfo, WriterCmd};

/// A peer's PQ status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PqStatus {
    /// Connected; nothing known yet. Nothing is sent to it.
    Unknown,
    /// A handshake with it is in flight.
    Negotiating,
    /// A PQ session exists.
    Pq(SessionInfo),
    /// It has no PQ (negotiation failed) or PQ is off here.
    Classical(ClassicalReason),
    /// It was refused; its connections are being closed.
    Refused(RefuseReason),
}

impl PqStatus {
    /// The status as the policy functions see it.
    pub fn kind(&self) -> StatusKind {
        match self {
            PqStatus::Unknown => StatusKind::Unknown,
            PqStatus::Negotiating => StatusKind::Negotiating,
            PqStatus::Pq(_) => StatusKind::Pq,
            PqStatus::Classical(r) => StatusKind::Classical(*r),
            PqStatus::Refused(r) => StatusKind::Refused(*r),
        }
    }

    /// `unknown`, `negotiating`, `pq`, `classical` or `refused`.
    pub fn name(&self) -> &'static str {
        match self {
            PqStatus::Unknown => "unknown",
            PqStatus::Negotiating => "negotiating",
            PqStatus::Pq(_) => "pq",
            PqStatus::Classical(_) => "classical",
            PqStatus::Refused(_) => "refused",
        }
    }

    /// Whether the status is final for now (a session, classical, refused).
    pub fn is_settled(&self) -> bool {
        !matches!(self, PqStatus::Unknown | PqStatus::Negotiating)
    }

    /// The reason of a classical or refused status.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            PqStatus::Classical(r) => Some(r.as_str()),
            PqStatus::Refused(r) => Some(r.as_str()),
            _ => None,
        }
    }

    /// The suite of a PQ session.
    pub fn suite(&self) -> Option<Suite> {
        match self {
            PqStatus::Pq(info) => Some(info.suite),
            _ => None,
        }
    }
}

/// What the API and metrics see of one peer.
#[derive(Clone, Debug)]
pub struct PeerSnapshot {
    /// The peer.
    pub peer: PeerId,
    /// Its status.
    pub status: PqStatus,
    /// Since when.
    pub since: SystemTime,
    /// Established connections.
    pub connections: u32,
    /// Bytes of the current PQ session: (sent, received) record-layer
    /// frames, for the re-handshake limit (§5.1).
    pub session_bytes: Option<(u64, u64)>,
    /// Sessions with this peer replaced by a re-handshake (§5.1) while it
    /// stayed connected.
    pub rehandshakes: u32,
    /// Re-handshaking: the peer has a PQ session (still carrying its
    /// messages) and a handshake to replace it is pending or in flight,
    /// on either side (§5.1).
    pub rehandshaking: bool,
}

/// Bytes through one session, for the re-handshake limit (§5.1).
#[derive(Debug, Default)]
pub(crate) struct SessionStats {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    /// Woken when a byte counter passes the re-handshake limit.
    pub limit_reached: Notify,
}

impl SessionStats {
    pub fn add_sent(&self, n: u64, limit: u64) {
        if self.sent.fetch_add(n, Ordering::Relaxed) + n >= limit {
            self.limit_reached.notify_one();
        }
    }

    pub fn add_received(&self, n: u64, limit: u64) {
        if self.received.fetch_add(n, Ordering::Relaxed) + n >= limit {
            self.limit_reached.notify_one();
        }
    }

    /// (sent, received) so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }

    pub fn max_bytes(&self) -> u64 {
        self.sent
            .load(Ordering::Relaxed)
            .max(self.received.load(Ordering::Relaxed))
    }
}

/// A running session's handle in the table.
pub(crate) struct Session {
    pub id: u64,
    pub info: SessionInfo,
    pub tx: mpsc::Sender<WriterCmd>,
    /// Receipts for the peer's messages, written by this session's writer
    /// ahead of queued messages (§7 rev 4).
    pub receipts: mpsc::Sender<pqnode_crypto::receipt::Receipt>,
    /// Becomes true when the session's reader has ended (every message of
    /// this session that arrived is delivered).
    pub reader_done: watch::Receiver<bool>,
    /// Its byte counters.
    pub stats: std::sync::Arc<SessionStats>,
}

/// Per-peer handshake limits (PROTOCOL.md §9, rev 3).
#[derive(Clone, Copy, Debug)]
pub struct PeerLimits {
    /// Inbound handshakes started per peer per window.
    pub inbound_per_window: usize,
    /// Failed or abandoned handshakes per window before the peer is
    /// disconnected.
    pub failures_per_window: usize,
    /// The window.
    pub window: Duration,
}

impl Default for PeerLimits {
    fn default() -> Self {
        PeerLimits {
            inbound_per_window: 10,
            failures_per_window: 3,
            window: Duration::from_secs(60),
        }
    }
}

/// Whether an inbound handshake may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Yes; the slot is taken until [`PeerTable::inbound_done`].
    Admitted,
    /// Not now (one in flight, or the rate is exceeded): Reject busy.
    Busy,
    /// The peer exceeded its failure budget: disconnect it.
    Abusive,
}

pub(crate) struct PeerEntry {
    pub connections: u32,
    pub we_dialled: bool,
    pub status: PqStatus,
    pub since: SystemTime,
    pub session: Option<Session>,
    /// Sessions replaced by a re-handshake while connected.
    pub rehandshakes: u32,
    pub inbound_hs: bool,
    /// Follows `inbound_hs`, so a task can await the inbound handshake's
    /// end without polling.
    inbound_hs_watch: watch::Sender<bool>,
    pub outbound_hs: bool,
    /// Its handshake starts and failures in the window: kept for the
    /// window after it leaves ([`PeerTable::connected`]).
    budget: HandshakeBudget,
    /// Back-off before the next attempt to (re-)establish a lost session.
    pub retry_backoff: Duration,
    /// When a message last went to or came from this peer.
    pub last_message: Option<Instant>,
    /// The network of its first connection (first-use pins are counted
    /// per network).
    pub network: Option<super::first_use::Network>,
    /// Our messages awaiting the peer's receipt; dropped with the entry,
    /// which tells their senders at once.
    pub in_flight: super::receipts::InFlight,
    watch: watch::Sender<PqStatus>,
}

impl PeerEntry {
    fn new(we_dialled: bool) -> Self {
        PeerEntry {
            connections: 0,
            we_dialled,
            status: PqStatus::Unknown,
            since: SystemTime::now(),
            session: None,
            rehandshakes: 0,
            inbound_hs: false,
            inbound_hs_watch: watch::channel(false).0,
            outbound_hs: false,
            budget: HandshakeBudget::default(),
            last_message: None,
            network: None,
            in_flight: Default::default(),
            retry_backoff: RETRY_MIN,
            watch: watch::channel(PqStatus::Unknown).0,
        }
    }

    fn snapshot(&self, peer: PeerId) -> PeerSnapshot {
        PeerSnapshot {
            peer,
            status: self.status.clone(),
            since: self.since,
            connections: self.connections,
            session_bytes: self.session.as_ref().map(|s| s.stats.bytes()),
            rehandshakes: self.rehandshakes,
            rehandshaking: self.session.is_some() && (self.inbound_hs || self.outbound_hs),
        }
    }
}

/// One peer's handshake starts and failures within the window (§9 rev 3:
/// 10 inbound starts and 3 failures a minute).
#[derive(Debug, Default, Clone)]
pub(crate) struct HandshakeBudget {
    inbound_starts: VecDeque<Instant>,
    /// Outbound handshakes started in the window (see
    /// [`PeerTable::pace_outbound`]).
    outbound_starts: VecDeque<Instant>,
    failures: VecDeque<Instant>,
}

impl HandshakeBudget {
    fn prune(&mut self, now: Instant, window: Duration) {
        for times in [
            &mut self.inbound_starts,
            &mut self.outbound_starts,
            &mut self.failures,
        ] {
            while times
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= window)
            {
                times.pop_front();
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.inbound_starts.is_empty()
            && self.outbound_starts.is_empty()
            && self.failures.is_empty()
    }
}

/// Peers whose handshake budget is remembered after they left, so that
/// reconnecting does not start it afresh (issue 29, item 7): each for the
/// window, at most [`MAX_DEPARTED`], the earliest to leave forgotten first.
#[derive(Default)]
struct Departed {
    budgets: HashMap<PeerId, (HandshakeBudget, Instant)>,
    /// Departures in order; an entry whose peer left again later, or came
    /// back, is skipped when it comes up.
    order: VecDeque<(PeerId, Instant)>,
}

/// Departed peers whose handshake budget is remembered at most.
pub const MAX_DEPARTED: usize = 4096;

impl Departed {
    fn remember(&mut self, peer: PeerId, budget: HandshakeBudget, now: Instant, window: Duration) {
        while let Some(&(p, at)) = self.order.front() {
            let expired = now.saturating_duration_since(at) >= window;
            if !expired && self.budgets.len() < MAX_DEPARTED && self.order.len() < 2 * MAX_DEPARTED
            {
                break;
            }
            self.order.pop_front();
            if self.budgets.get(&p).is_some_and(|(_, left)| *left == at) {
                self.budgets.remove(&p);
            }
        }
        self.budgets.insert(peer, (budget, now));
        self.order.push_back((peer, now));
    }

    fn take(&mut self, peer: &PeerId) -> Option<HandshakeBudget> {
        self.budgets.remove(peer).map(|(b, _)| b)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.budgets.len()
    }
}

/// Whether an outbound handshake may start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// Yes; the start is recorded.
    Now,
    /// After this long.
    Wait(Duration),
    /// The peer is not connected.
    Gone,
}

/// Smallest and largest back-off between attempts to re-establish a session.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// See [`RETRY_MIN`].
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// Every connected peer's PQ state. Bounded by `capacity` (the connection
/// limit): a peer beyond it is refused by the caller.
pub(crate) struct PeerTable {
    peers: HashMap<PeerId, PeerEntry>,
    capacity: usize,
    limits: PeerLimits,
    refused_total: u64,
    /// Bumped whenever a peer enters the table, so a waiter for a peer that
    /// is not connected yet wakes when it is (no polling).
    joined: watch::Sender<u64>,
    /// Peers refused recently (their connections are gone), so a sender
    /// learns why; bounded by [`RECENT_REFUSALS`], kept [`REFUSAL_MEMORY`].
    recent_refusals: HashMap<PeerId, (RefuseReason, Instant)>,
    departed: Departed,
}

/// How many refused peers are remembered after they disconnect.
pub const RECENT_REFUSALS: usize = 1024;
/// How long a refusal is remembered after the disconnect.
pub const REFUSAL_MEMORY: Duration = Duration::from_secs(600);

/// Session counts, for the status and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Peers with a PQ session.
    pub pq: u64,
    /// Peers labelled classical.
    pub classical: u64,
    /// Peers refused since start.
    pub refused_total: u64,
    /// Connected peers whose status is open.
    pub pending: u64,
}

impl PeerTable {
    pub fn new(capacity: usize, limits: PeerLimits) -> Self {
        PeerTable {
            peers: HashMap::new(),
            capacity,
            limits,
            refused_total: 0,
            joined: watch::channel(0).0,
            recent_refusals: HashMap::new(),
            departed: Departed::default(),
        }
    }

    pub fn get(&self, peer: &PeerId) -> Option<&PeerEntry> {
        self.peers.get(peer)
    }

    pub fn get_mut(&mut self, peer: &PeerId) -> Option<&mut PeerEntry> {
        self.peers.get_mut(peer)
    }

    /// A connection to `peer` was established. Returns false when the table
    /// is full and `peer` is new (the caller refuses it).
    pub fn connected(&mut self, peer: PeerId, we_dialled: bool) -> bool {
        if !self.peers.contains_key(&peer) && self.peers.len() >= self.capacity {
            return false;
        }
        let mut new = false;
        let departed = &mut self.departed;
        let entry = self.peers.entry(peer).or_insert_with(|| {
            new = true;
            let mut e = PeerEntry::new(we_dialled);
            // Back within the window: its budget goes on where it stopped.
            if let Some(budget) = departed.take(&peer) {
                e.budget = budget;
            }
            e
        });
        entry.connections += 1;
        entry.we_dialled |= we_dialled;
        if new {
            // Its refusal stays remembered until it settles otherwise (a
            // refused peer that keeps reconnecting is still named as
            // refused, and why).
            self.joined.send_modify(|g| *g = g.wrapping_add(1));
        }
        true
    }

    /// A connection closed; with none left, the peer's state (and its
    /// session, whose writer then closes) goes. Returns the removed entry.
    pub fn connection_closed(&mut self, peer: &PeerId, remaining: u32) -> Option<PeerEntry> {
        if remaining == 0 {
            let now = Instant::now();
            let mut removed = self.peers.remove(peer);
            if let Some(e) = &mut removed {
                if let PqStatus::Refused(r) = e.status {
                    self.remember_refusal(*peer, r, now);
                }
                e.budget.prune(now, self.limits.window);
                if !e.budget.is_empty() {
                    let budget = std::mem::take(&mut e.budget);
                    self.departed
                        .remember(*peer, budget, now, self.limits.window);
                }
            }
            return removed;
        }
        if let Some(e) = self.peers.get_mut(peer) {
            e.connections = remaining;
        }
        None
    }

    /// Applies `event` to `peer`'s status, if it is connected and
    /// [`transition::next`] allows a change; publishes and returns the new
    /// status. `HandshakesEnded` applies only once no handshake with the
    /// peer is in flight; a refusal drops the peer's session.
    pub fn apply(&mut self, peer: &PeerId, event: &Event) -> Option<PqStatus> {
        let e = self.peers.get_mut(peer)?;
        if *event == Event::HandshakesEnded && (e.inbound_hs || e.outbound_hs) {
            return None;
        }
        let to = transition::next(&e.status, event)?;
        if matches!(to, PqStatus::Refused(_)) {
            self.refused_total += 1;
            e.session = None;
        }
        e.since = SystemTime::now();
        e.status = to.clone();
        e.watch.send_replace(to.clone());
        if matches!(to, PqStatus::Pq(_) | PqStatus::Classical(_)) {
            self.recent_refusals.remove(peer);
        }
        Some(to)
    }

    /// Notes the network `peer` connects from, unless known already.
    pub fn set_network(&mut self, peer: &PeerId, network: super::first_use::Network) {
        if let Some(e) = self.peers.get_mut(peer) {
            e.network.get_or_insert(network);
        }
    }

    /// A receiver of `peer`'s status, if it is connected.
    pub fn watch(&self, peer: &PeerId) -> Option<watch::Receiver<PqStatus>> {
        self.peers.get(peer).map(|e| e.watch.subscribe())
    }

    /// A peer refused after its connections were gone (it left while the
    /// refusal was being decided): counted and remembered like one that was
    /// disconnected — unless it is connected again, or its refusal is
    /// remembered already (counted once). Returns whether it was counted.
    pub fn refused_after_leaving(
        &mut self,
        peer: PeerId,
        reason: RefuseReason,
        now: Instant,
    ) -> bool {
        if self.peers.contains_key(&peer) || self.recent_refusal(&peer).is_some() {
            return false;
        }
        self.refused_total += 1;
        self.remember_refusal(peer, reason, now);
        true
    }

    fn remember_refusal(&mut self, peer: PeerId, reason: RefuseReason, now: Instant) {
        self.recent_refusals
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < REFUSAL_MEMORY);
        if self.recent_refusals.len() >= RECENT_REFUSALS
            && !self.recent_refusals.contains_key(&peer)
        {
            let oldest = self
                .recent_refusals
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                self.recent_refusals.remove(&oldest);
            }
        }
        self.recent_refusals.insert(peer, (reason, now));
    }

    /// Why `peer` was refused, if it was within [`REFUSAL_MEMORY`] and is
    /// not connected now.
    pub fn recent_refusal(&self, peer: &PeerId) -> Option<RefuseReason> {
        self.recent_refusals
            .get(peer)
            .filter(|(_, at)| at.elapsed() < REFUSAL_MEMORY)
            .map(|(r, _)| *r)
    }

    /// Every remembered refusal of a peer that is not connected now: the
    /// peer, why, and how long ago (at most [`RECENT_REFUSALS`]).
    pub fn recent_refusals(&self) -> Vec<(PeerId, RefuseReason, Duration)> {
        self.recent_refusals
            .iter()
            .filter(|(peer, _)| !self.peers.contains_key(peer))
            .map(|(peer, (reason, at))| (*peer, *reason, at.elapsed()))
            .filter(|(_, _, ago)| *ago < REFUSAL_MEMORY)
            .collect()
    }

    /// A receiver that changes whenever a new peer enters the table.
    pub fn joins(&self) -> watch::Receiver<u64> {
        self.joined.subscribe()
    }

    /// May an inbound handshake from `peer` start now (§9 rev 3)?
    pub fn admit_inbound(&mut self, peer: &PeerId, now: Instant) -> Admission {
        let limits = self.limits;
        let Some(e) = self.peers.get_mut(peer) else {
            // Streams only arrive on connections; a stream racing the
            // connection event is treated as busy.
            return Admission::Busy;
        };
        e.budget.prune(now, limits.window);
        if e.budget.failures.len() >= limits.failures_per_window {
            return Admission::Abusive;
        }
        if e.inbound_hs || e.budget.inbound_starts.len() >= limits.inbound_per_window {
            return Admission::Busy;
        }
        e.inbound_hs = true;
        e.inbound_hs_watch.send_replace(true);
        e.budget.inbound_starts.push_back(now);
        Admission::Admitted
    }

    /// The inbound handshake of `peer` ended.
    pub fn inbound_done(&mut self, peer: &PeerId) {
        if let Some(e) = self.peers.get_mut(peer) {
            e.inbound_hs = false;
            e.inbound_hs_watch.send_replace(false);
        }
    }

    /// If an inbound handshake of `peer` is in flight: a receiver that turns
    /// false when it has ended (its session, if any, registered by then).
    pub fn inbound_in_flight(&self, peer: &PeerId) -> Option<watch::Receiver<bool>> {
        self.peers
            .get(peer)
            .filter(|e| e.inbound_hs)
            .map(|e| e.inbound_hs_watch.subscribe())
    }

    /// Takes the outbound handshake slot of `peer`; false if one runs or
    /// the peer is not connected.
    pub fn begin_outbound(&mut self, peer: &PeerId) -> bool {
        match self.peers.get_mut(peer) {
            Some(e) if !e.outbound_hs => {
                e.outbound_hs = true;
                true
            }
            _ => false,
        }
    }

    /// Paces outbound handshakes to `peer` below what it admits (§9 rev 3:
    /// 10 inbound handshakes per peer a minute; one fewer here, so that
    /// starts arriving closer together than they left are admitted too).
    /// Re-handshakes with short limits and retries after lost sessions wait
    /// here instead of being answered busy.
    pub fn pace_outbound(&mut self, peer: &PeerId, now: Instant) -> Pace {
        let limits = self.limits;
        let Some(e) = self.peers.get_mut(peer) else {
            return Pace::Gone;
        };
        e.budget.prune(now, limits.window);
        let allowed = limits.inbound_per_window.saturating_sub(1).max(1);
        if e.budget.outbound_starts.len() >= allowed
            && let Some(oldest) = e.budget.outbound_starts.front()
        {
            return Pace::Wait(limits.window.saturating_sub(now.duration_since(*oldest)));
        }
        e.budget.outbound_starts.push_back(now);
        Pace::Now
    }

    /// The outbound handshake of `peer` ended.
    pub fn outbound_done(&mut self, peer: &PeerId) {
        if let Some(e) = self.peers.get_mut(peer) {
            e.outbound_hs = false;
        }
    }

    /// Counts a failed or abandoned handshake (or a rejected one beyond the
    /// limits). Returns true when the peer has now exceeded its budget.
    pub fn handshake_failed(&mut self, peer: &PeerId, now: Instant) -> bool {
        let limits = self.limits;
        let Some(e) = self.peers.get_mut(peer) else {
            return false;
        };
        e.budget.prune(now, limits.window);
        e.budget.failures.push_back(now);
        e.budget.failures.len() >= limits.failures_per_window
    }

    /// An inbound handshake of `peer` was rejected `busy` (beyond the
    /// per-peer limits). It counts as a failure, unless the peer holds a PQ
    /// session: then it is an honest re-handshake that came too soon (§5.1
    /// with short limits), told to wait, never grounds for a disconnect.
    /// Returns true when the peer has now exceeded its failure budget.
    pub fn rejected_busy(&mut self, peer: &PeerId, now: Instant) -> bool {
        if self.peers.get(peer).is_some_and(|e| e.session.is_some()) {
            return false;
        }
        self.handshake_failed(peer, now)
    }

    /// Whether a handshake with `peer` is in flight either way.
    pub fn handshake_in_flight(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|e| e.inbound_hs || e.outbound_hs)
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            refused_total: self.refused_total,
            ..Counts::default()
        };
        for e in self.peers.values() {
            match e.status {
                PqStatus::Pq(_) => c.pq += 1,
                PqStatus::Classical(_) => c.classical += 1,
                PqStatus::Unknown | PqStatus::Negotiating => c.pending += 1,
                PqStatus::Refused(_) => {}
            }
        }
        c
    }

    pub fn snapshot(&self, peer: &PeerId) -> Option<PeerSnapshot> {
        self.peers.get(peer).map(|e| e.snapshot(*peer))
    }

    pub fn snapshots(&self) -> Vec<PeerSnapshot> {
        self.peers
            .iter()
            .map(|(peer, e)| e.snapshot(*peer))
            .collect()
    }

    /// Every session's writer (for shutdown).
    pub fn writers(&self) -> Vec<mpsc::Sender<WriterCmd>> {
        self.peers
            .values()
            .filter_map(|e| e.session.as_ref().map(|s| s.tx.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
