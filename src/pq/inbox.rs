//! Delivered application messages: a bounded inbox per peer (oldest dropped
//! and counted when full), a bounded number of peers, and a broadcast for
//! followers (`GET /api/messages/stream`).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use libp2p::PeerId;
use pqnode_crypto::Suite;
use pqnode_crypto::receipt::ReceiptStatus;
use tokio::sync::broadcast;

use super::metrics::PqMetrics;

/// How a message travelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Under a PQ session (hybrid keys).
    Pq,
    /// Protected only by libp2p's Noise (PROTOCOL.md §8.2).
    Classical,
}

impl Security {
    /// `pq` or `classical`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Security::Pq => "pq",
            Security::Classical => "classical",
        }
    }
}

/// A whole message received from a peer.
#[derive(Clone)]
pub struct InboundMessage {
    /// Local, increasing id (for `since` queries).
    pub seq: u64,
    /// The sender.
    pub from: PeerId,
    /// How it travelled.
    pub security: Security,
    /// The suite, for PQ messages.
    pub suite: Option<Suite>,
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

/// Every peer's undelivered messages and their total size.
#[derive(Default)]
struct Queues {
    by_peer: HashMap<PeerId, VecDeque<InboundMessage>>,
    bytes: usize,
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
    next_seq: AtomicU64,
    accepting: std::sync::atomic::AtomicBool,
    queues: Mutex<Queues>,
    follow: broadcast::Sender<InboundMessage>,
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
    /// peers, and at most `max_bytes` of bodies in all.
    pub fn new(per_peer: usize, max_peers: usize, max_bytes: usize, metrics: PqMetrics) -> Self {
        let (follow, _) = broadcast::channel(256);
        Inbox {
            inner: Arc::new(InboxInner {
                per_peer: per_peer.max(1),
                max_peers: max_peers.max(1),
                max_bytes,
                next_seq: AtomicU64::new(1),
                accepting: std::sync::atomic::AtomicBool::new(true),
                queues: Mutex::new(Queues::default()),
                follow,
                metrics,
            }),
        }
    }

    /// From now on, messages are neither stored nor streamed, only counted
    /// as dropped (`role = "bootstrap"`).
    pub fn stop_accepting(&self) {
        self.inner.accepting.store(false, Ordering::Relaxed);
    }

    /// Whether messages are stored and streamed.
    pub fn is_accepting(&self) -> bool {
        self.inner.accepting.load(Ordering::Relaxed)
    }

    /// Delivers a message; returns what its receipt says (§7 rev 4).
    pub fn deliver(
        &self,
        from: PeerId,
        security: Security,
        suite: Option<Suite>,
        body: Vec<u8>,
    ) -> ReceiptStatus {
        let msg = InboundMessage {
            seq: self.inner.next_seq.fetch_add(1, Ordering::Relaxed),
            from,
            security,
            suite,
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
            if !q.by_peer.contains_key(&from) && q.by_peer.len() >= self.inner.max_peers {
                // Evict the peer whose newest message is oldest.
                if let Some(victim) = q
                    .by_peer
                    .iter()
                    .min_by_key(|(_, m)| m.back().map(|m| m.seq).unwrap_or(0))
                    .map(|(p, _)| *p)
                    && let Some(gone) = q.by_peer.remove(&victim)
                {
                    q.bytes -= gone.iter().map(|m| m.body.len()).sum::<usize>();
                    metrics.inbox_dropped.inc_by(gone.len() as u64);
                }
            }
            let size = msg.body.len();
            let queue = q.by_peer.entry(from).or_default();
            let mut freed = 0;
            if queue.len() >= self.inner.per_peer
                && let Some(old) = queue.pop_front()
            {
                freed += old.body.len();
                metrics.inbox_dropped.inc();
            }
            queue.push_back(msg.clone());
            q.bytes = q.bytes + size - freed;
            // The byte bound over every inbox: drop the oldest message anywhere.
            while q.bytes > self.inner.max_bytes {
                let Some(oldest) = q
                    .by_peer
                    .iter()
                    .filter_map(|(p, m)| m.front().map(|m| (m.seq, *p)))
                    .min()
                    .map(|(_, p)| p)
                else {
                    break;
                };
                let Some(queue) = q.by_peer.get_mut(&oldest) else {
                    break;
                };
                let Some(old) = queue.pop_front() else { break };
                if queue.is_empty() {
                    q.by_peer.remove(&oldest);
                }
                q.bytes -= old.body.len();
                metrics.inbox_dropped.inc();
            }
        }
        self.inner
            .metrics
            .messages_received
            .get_or_create(&super::metrics::SecurityLabels {
                security: security.as_str(),
            })
            .inc();
        let _ = self.inner.follow.send(msg);
        ReceiptStatus::Stored
    }

    /// Messages with `seq > since`, optionally only from `from`, oldest first,
    /// at most `limit`.
    pub fn list(&self, from: Option<PeerId>, since: u64, limit: usize) -> Vec<InboundMessage> {
        let queues = self
            .inner
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<InboundMessage> = queues
            .by_peer
            .iter()
            .filter(|(p, _)| from.is_none_or(|f| f == **p))
            .flat_map(|(_, q)| q.iter().filter(|m| m.seq > since).cloned())
            .collect();
        out.sort_by_key(|m| m.seq);
        out.truncate(limit);
        out
    }

    /// Follows new messages.
    pub fn subscribe(&self) -> broadcast::Receiver<InboundMessage> {
        self.inner.follow.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_per_peer_and_in_peers() {
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = PqMetrics::register(&mut reg);
        let inbox = Inbox::new(3, 2, 1 << 20, metrics.clone());
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        for i in 0..5u8 {
            inbox.deliver(a, Security::Pq, None, vec![i]);
        }
        let got = inbox.list(Some(a), 0, 100);
        assert_eq!(
            got.iter().map(|m| m.body[0]).collect::<Vec<_>>(),
            vec![2, 3, 4]
        );
        assert_eq!(metrics.inbox_dropped.get(), 2);
        inbox.deliver(b, Security::Classical, None, vec![9]);
        inbox.deliver(c, Security::Classical, None, vec![8]);
        assert!(
            inbox.list(Some(a), 0, 100).is_empty(),
            "oldest peer evicted"
        );
        assert_eq!(inbox.list(None, 0, 100).len(), 2);
        let since = inbox.list(None, 0, 1)[0].seq;
        assert_eq!(inbox.list(None, since, 100).len(), 1);
        assert!(!format!("{:?}", inbox.list(None, 0, 1)[0]).contains("[9]"));
    }

    #[test]
    fn bounded_in_bytes_across_peers() {
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = PqMetrics::register(&mut reg);
        let inbox = Inbox::new(100, 10, 1000, metrics.clone());
        let (a, b) = (PeerId::random(), PeerId::random());
        inbox.deliver(a, Security::Pq, None, vec![1; 400]);
        inbox.deliver(b, Security::Pq, None, vec![2; 400]);
        inbox.deliver(b, Security::Pq, None, vec![3; 400]);
        // 1200 > 1000: the oldest (A's) went.
        let all = inbox.list(None, 0, 100);
        assert_eq!(
            all.iter().map(|m| m.body[0]).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(metrics.inbox_dropped.get(), 1);
        // A message larger than the bound evicts everything, itself last.
        inbox.deliver(a, Security::Pq, None, vec![4; 1001]);
        assert!(inbox.list(None, 0, 100).is_empty());
        inbox.deliver(a, Security::Pq, None, vec![5; 10]);
        assert_eq!(inbox.list(None, 0, 100).len(), 1);
    }
}
