//! Delivered application messages: a bounded inbox per peer (oldest dropped
//! and counted when full), a bounded number of peers, and bounded queues for
//! followers (`GET /api/messages/stream`, [`super::followers`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use libp2p::PeerId;
use pqnode_crypto::Suite;
use pqnode_crypto::receipt::ReceiptStatus;

use super::followers::{Follower, Followers, TooManyFollowers};
use super::metrics::PqMetrics;
use super::policy::ClassicalReason;

/// How a message travelled: the one type the PQ layer, the API's JSON and
/// the metrics labels share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Under a PQ session (hybrid keys) of this suite.
    Pq {
        /// The session's suite.
        suite: Suite,
    },
    /// Protected only by libp2p's Noise (PROTOCOL.md §8.2), because the
    /// peer is labelled classical for this reason.
    Classical {
        /// Why the peer has no PQ session.
        reason: ClassicalReason,
    },
}

impl Security {
    /// The level: `pq` or `classical` (the `security` metric label and
    /// JSON field).
    pub const fn as_str(self) -> &'static str {
        match self {
            Security::Pq { .. } => "pq",
            Security::Classical { .. } => "classical",
        }
    }

    /// The level alone.
    pub const fn level(self) -> SecurityLevel {
        match self {
            Security::Pq { .. } => SecurityLevel::Pq,
            Security::Classical { .. } => SecurityLevel::Classical,
        }
    }

    /// The suite, for PQ.
    pub const fn suite(self) -> Option<Suite> {
        match self {
            Security::Pq { suite } => Some(suite),
            Security::Classical { .. } => None,
        }
    }

    /// Why it went classically, for classical.
    pub const fn classical_reason(self) -> Option<ClassicalReason> {
        match self {
            Security::Pq { .. } => None,
            Security::Classical { reason } => Some(reason),
        }
    }
}

/// A [`Security`] without its suite or reason: the metric label (suites
/// and reasons would multiply the series).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SecurityLevel {
    /// `pq`.
    Pq,
    /// `classical`.
    Classical,
}

impl From<Security> for SecurityLevel {
    fn from(s: Security) -> Self {
        s.level()
    }
}

impl prometheus_client::encoding::EncodeLabelValue for SecurityLevel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), fmt::Error> {
        let name = match self {
            SecurityLevel::Pq => "pq",
            SecurityLevel::Classical => "classical",
        };
        fmt::Write::write_str(encoder, name)
    }
}

/// A whole message received from a peer.
#[derive(Clone)]
pub struct InboundMessage {
    /// Local, increasing id (for `since` queries).
    pub seq: u64,
    /// The sender.
    pub from: PeerId,
    /// How it travelled (with the suite, or why classically).
    pub security: Security,
    /// When it was delivered.
    pub received_at: SystemTime,
    /// The body. Never logged.
    pub body: Arc<Vec<u8>>,
}

impl fmt::Debug for InboundMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundMessage")
            .field("seq", &self.seq)
            .field("from", &self.from)
            .field("security", &self.security)
            .field("len", &self.body.len())
            .finish()
    }
}

/// What a stored message costs beside its body, counted in the byte caps
/// with it (its entries in both indexes, the `Arc` and `Vec` headers, the
/// sender's id; rounded up): without it, 2,000 peers × 1,024 empty
/// messages held about 400 MB beyond the 256 MiB (issue 29, item 5).
pub const MESSAGE_OVERHEAD: usize = 256;

/// Peers with stored messages at most (each holds at least one message,
/// so the byte cap bounds them too).
pub const MAX_PEERS: usize = 65_536;

/// The bytes a message of `len` body bytes counts for.
const fn charge(len: usize) -> usize {
    len.saturating_add(MESSAGE_OVERHEAD)
}

/// One peer's undelivered messages: their ids, oldest first, and bytes
/// (with their overhead).
#[derive(Default)]
struct PeerQueue {
    seqs: VecDeque<u64>,
    bytes: usize,
}

/// Every undelivered message, in id order, with each peer's share: a page
/// of the listing is a range of `all` (or of one peer's ids), never a copy
/// of everything (issue 23, fault 7).
#[derive(Default)]
struct Queues {
    all: BTreeMap<u64, InboundMessage>,
    by_peer: HashMap<PeerId, PeerQueue>,
    bytes: usize,
}

impl Queues {
    fn peer_bytes(&self, peer: &PeerId) -> usize {
        self.by_peer.get(peer).map_or(0, |q| q.bytes)
    }

    fn peer_count(&self, peer: &PeerId) -> usize {
        self.by_peer.get(peer).map_or(0, |q| q.seqs.len())
    }

    fn push(&mut self, msg: InboundMessage) {
        let size = charge(msg.body.len());
        let q = self.by_peer.entry(msg.from).or_default();
        q.seqs.push_back(msg.seq);
        q.bytes += size;
        self.bytes += size;
        self.all.insert(msg.seq, msg);
    }

    /// Drops `peer`'s oldest message; false if it has none.
    fn drop_oldest(&mut self, peer: &PeerId) -> bool {
        let Some(q) = self.by_peer.get_mut(peer) else {
            return false;
        };
        let Some(seq) = q.seqs.pop_front() else {
            return false;
        };
        let size = self.all.remove(&seq).map_or(0, |m| charge(m.body.len()));
        q.bytes -= size;
        self.bytes -= size;
        if q.seqs.is_empty() {
            self.by_peer.remove(peer);
        }
        true
    }

    /// Up to `limit` messages with `seq > since` (of `from` only, if
    /// given), oldest first, and whether more follow.
    fn page(&self, from: Option<PeerId>, since: u64, limit: usize) -> (Vec<InboundMessage>, bool) {
        let mut out = Vec::with_capacity(limit.min(64));
        let mut more = false;
        match from {
            None => {
                for m in self.all.range(since.saturating_add(1)..).map(|(_, m)| m) {
                    if out.len() == limit {
                        more = true;
                        break;
                    }
                    out.push(m.clone());
                }
            }
            Some(peer) => {
                if let Some(q) = self.by_peer.get(&peer) {
                    let first = q.seqs.partition_point(|s| *s <= since);
                    for seq in q.seqs.range(first..) {
                        if out.len() == limit {
                            more = true;
                            break;
                        }
                        if let Some(m) = self.all.get(seq) {
                            out.push(m.clone());
                        }
                    }
                }
            }
        }
        (out, more)
    }
}

/// The inbox.
#[derive(Clone)]
pub struct Inbox {
    inner: Arc<InboxInner>,
}

struct InboxInner {
    per_peer: usize,
    max_peers: usize,
    max_bytes: usize,
    peer_max_bytes: usize,
    next_seq: AtomicU64,
    accepting: std::sync::atomic::AtomicBool,
    queues: Mutex<Queues>,
    followers: Arc<Followers>,
    metrics: PqMetrics,
}

impl fmt::Debug for Inbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("per_peer", &self.inner.per_peer)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// An inbox keeping `per_peer` messages for each of at most `max_peers`
    /// peers, at most `max_bytes` of bodies in all and `peer_max_bytes` per
    /// peer (§9 rev 4: 256 MiB and 32 MiB); each follower may have
    /// `follower_budget` bytes queued ([`super::followers::budget`]).
    pub fn new(
        per_peer: usize,
        max_peers: usize,
        max_bytes: usize,
        peer_max_bytes: usize,
        follower_budget: usize,
        metrics: PqMetrics,
    ) -> Self {
        Inbox {
            inner: Arc::new(InboxInner {
                per_peer: per_peer.max(1),
                max_peers: max_peers.max(1),
                max_bytes,
                peer_max_bytes,
                next_seq: AtomicU64::new(1),
                accepting: std::sync::atomic::AtomicBool::new(true),
                queues: Mutex::new(Queues::default()),
                followers: Followers::new(follower_budget, metrics.clone()),
                metrics,
            }),
        }
    }

    /// From now on, messages are neither stored nor streamed, only counted
    /// as dropped (`role = "bootstrap"`).
    pub fn stop_accepting(&self) {
        self.inner.accepting.store(false, Ordering::Relaxed);
        self.inner.followers.close_all();
    }

    /// Whether messages are stored and streamed.
    pub fn is_accepting(&self) -> bool {
        self.inner.accepting.load(Ordering::Relaxed)
    }

    /// Delivers a message; returns what its receipt says (§7 rev 4).
    pub fn deliver(&self, from: PeerId, security: Security, body: Vec<u8>) -> ReceiptStatus {
        let mut msg = InboundMessage {
            // Numbered under the lock below, so ids are in storing order.
            seq: 0,
            from,
            security,
            received_at: SystemTime::now(),
            body: Arc::new(body),
        };
        if !self.is_accepting() {
            // A bootstrap node takes no messages (its role, a policy).
            self.inner.metrics.inbox_dropped.inc();
            return ReceiptStatus::Refused;
        }
        {
            let mut q = self
                .inner
                .queues
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let metrics = &self.inner.metrics;
            let size = charge(msg.body.len());
            // §9 rev 4: a peer over its share loses its own oldest
            // messages, never another peer's; a message that cannot fit
            // even so is refused (receipt status 1), and nothing is dropped.
            // So is the message of a new peer when every peer slot is
            // taken: another peer's receipted messages never make room.
            let own = q.peer_bytes(&from);
            let others = q.bytes - own;
            let no_slot = !q.by_peer.contains_key(&from) && q.by_peer.len() >= self.inner.max_peers;
            if no_slot || size > self.inner.peer_max_bytes || others + size > self.inner.max_bytes {
                metrics.inbox_dropped.inc();
                return ReceiptStatus::InboxFull;
            }
            loop {
                let count = q.peer_count(&from);
                let own = q.peer_bytes(&from);
                let over = count >= self.inner.per_peer
                    || own + size > self.inner.peer_max_bytes
                    || q.bytes + size > self.inner.max_bytes;
                if !over || !q.drop_oldest(&from) {
                    break;
                }
                metrics.inbox_dropped.inc();
            }
            msg.seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
            q.push(msg.clone());
            // Still under the lock: followers see messages in id order, so
            // the `since` of a lagged one misses nothing.
            self.inner.followers.push(&msg);
        }
        self.inner
            .metrics
            .messages_received
            .get_or_create(&super::metrics::SecurityLabels {
                security: security.into(),
            })
            .inc();
        ReceiptStatus::Stored
    }

    /// Messages with `seq > since`, optionally only from `from`, oldest first,
    /// at most `limit`, and whether more follow. Only those are copied
    /// (their bodies shared), in O(log n + limit) under the lock.
    pub fn page(
        &self,
        from: Option<PeerId>,
        since: u64,
        limit: usize,
    ) -> (Vec<InboundMessage>, bool) {
        self.inner
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .page(from, since, limit)
    }

    /// [`Inbox::page`] without whether more follow.
    pub fn list(&self, from: Option<PeerId>, since: u64, limit: usize) -> Vec<InboundMessage> {
        self.page(from, since, limit).0
    }

    /// Follows new messages: each is queued for the follower until taken,
    /// within its budget (beyond it, the follower is dropped as lagged).
    pub fn follow(&self) -> Result<Follower, TooManyFollowers> {
        self.inner.followers.follow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PQ: Security = Security::Pq {
        suite: Suite::Kyber1024Dilithium5,
    };
    const CLASSICAL: Security = Security::Classical {
        reason: ClassicalReason::NoPqProtocol,
    };

    #[test]
    fn bounded_per_peer_and_in_peers() {
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = PqMetrics::register(&mut reg);
        let inbox = Inbox::new(3, 2, 1 << 20, 1 << 20, 1 << 20, metrics.clone());
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        for i in 0..5u8 {
            inbox.deliver(a, PQ, vec![i]);
        }
        let got = inbox.list(Some(a), 0, 100);
        assert_eq!(
            got.iter().map(|m| m.body[0]).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(metrics.inbox_dropped.get(), 2);
        assert_eq!(inbox.deliver(b, CLASSICAL, vec![9]), ReceiptStatus::Stored);
        // A third peer finds no slot: refused, and nobody else's stored
        // (receipted) message goes.
        assert_eq!(
            inbox.deliver(c, CLASSICAL, vec![8]),
            ReceiptStatus::InboxFull
        );
        assert_eq!(inbox.list(Some(a), 0, 100).len(), 3);
        assert!(inbox.list(Some(c), 0, 100).is_empty());
        assert_eq!(inbox.list(None, 0, 100).len(), 4);
        let since = inbox.list(None, 0, 1)[0].seq;
        assert_eq!(inbox.list(None, since, 100).len(), 3);
        assert!(!format!("{:?}", inbox.list(None, 0, 1)[0]).contains("[9]"));
    }

    #[test]
    fn a_peer_over_its_byte_share_loses_only_its_own_messages() {
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = PqMetrics::register(&mut reg);
        // 10,000 bytes in all, 5,000 per peer; `n(x)` is a body that counts
        // for x bytes with its overhead.
        let inbox = Inbox::new(100, 10, 10_000, 5_000, 1 << 20, metrics.clone());
        let n = |x: usize, b: u8| vec![b; x - MESSAGE_OVERHEAD];
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        assert_eq!(inbox.deliver(a, PQ, n(4000, 1)), ReceiptStatus::Stored);
        inbox.deliver(b, PQ, n(3000, 2));
        inbox.deliver(b, PQ, n(1000, 3));
        // B over its share: its own oldest goes, never A's.
        assert_eq!(inbox.deliver(b, PQ, n(2000, 4)), ReceiptStatus::Stored);
        let bodies = |p| {
            inbox
                .list(Some(p), 0, 100)
                .iter()
                .map(|m| m.body[0])
                .collect::<Vec<_>>()
        };
        assert_eq!(bodies(a), vec![1]);
        assert_eq!(bodies(b), vec![3, 4]);
        assert_eq!(metrics.inbox_dropped.get(), 1);
        // 7,000 held; C's 4,000 fits under its share but not in all:
        // refused, and nobody loses anything.
        assert_eq!(inbox.deliver(c, PQ, n(4000, 5)), ReceiptStatus::InboxFull);
        assert_eq!(bodies(a), vec![1]);
        assert_eq!(bodies(b), vec![3, 4]);
        assert!(bodies(c).is_empty());
        // Larger than a share: refused outright.
        assert_eq!(inbox.deliver(a, PQ, n(5001, 6)), ReceiptStatus::InboxFull);
        assert_eq!(bodies(a), vec![1]);
        // A makes room from its own: 4,000 + 3,000 > 5,000 drops its 4,000.
        assert_eq!(inbox.deliver(a, PQ, n(3000, 7)), ReceiptStatus::Stored);
        assert_eq!(bodies(a), vec![7]);
        assert_eq!(bodies(b), vec![3, 4]);
    }

    #[test]
    fn empty_messages_count_their_overhead() {
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = PqMetrics::register(&mut reg);
        // Room for 100 empty messages in all, whatever the per-peer count.
        let inbox = Inbox::new(
            1024,
            1000,
            100 * MESSAGE_OVERHEAD,
            1 << 20,
            1 << 20,
            metrics,
        );
        let stored = (0..200)
            .filter(|_| inbox.deliver(PeerId::random(), PQ, Vec::new()) == ReceiptStatus::Stored)
            .count();
        assert_eq!(stored, 100);
    }

    #[test]
    fn two_hundred_sixty_mib_from_one_peer_leave_another_peers_message() {
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = PqMetrics::register(&mut reg);
        let inbox = Inbox::new(1024, 10, 256 << 20, 32 << 20, 1 << 20, metrics);
        let (flood, quiet) = (PeerId::random(), PeerId::random());
        inbox.deliver(quiet, PQ, b"still here".to_vec());
        for _ in 0..260 {
            assert_eq!(
                inbox.deliver(flood, PQ, vec![0; 1 << 20]),
                ReceiptStatus::Stored
            );
        }
        assert_eq!(inbox.list(Some(quiet), 0, 10).len(), 1);
        // 32 MiB hold 31 messages of 1 MiB with their overhead.
        assert_eq!(inbox.list(Some(flood), 0, 1000).len(), 31);
    }

    #[test]
    fn pages_walk_every_message_once_in_order_with_or_without_a_peer() {
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = PqMetrics::register(&mut reg);
        let inbox = Inbox::new(1024, 10, 1 << 20, 1 << 20, 1 << 20, metrics);
        let peers = [PeerId::random(), PeerId::random(), PeerId::random()];
        for i in 0..100u8 {
            inbox.deliver(peers[usize::from(i) % 3], PQ, vec![i]);
        }
        let walk = |from: Option<PeerId>| {
            let (mut since, mut got) = (0, Vec::new());
            loop {
                let (page, more) = inbox.page(from, since, 7);
                assert!(page.len() <= 7);
                got.extend(page.iter().map(|m| m.body[0]));
                match (more, page.last()) {
                    (true, Some(last)) => since = last.seq,
                    _ => return got,
                }
            }
        };
        assert_eq!(walk(None), (0..100).collect::<Vec<u8>>());
        assert_eq!(
            walk(Some(peers[1])),
            (0..100).filter(|i| i % 3 == 1).collect::<Vec<u8>>()
        );
        assert!(walk(Some(PeerId::random())).is_empty());
        // An exact last page says no more follow.
        let (page, more) = inbox.page(None, 0, 100);
        assert_eq!((page.len(), more), (100, false));
    }
}
