//! Followers of the inbox (`GET /api/messages/stream`): each gets its own
//! queue of new messages, bounded in bytes and in count. A follower that
//! falls that far behind is dropped: its queue is freed at once and it is
//! told so with one last [`Next::Lagged`], naming the last message it got
//! so it can catch up with `GET /api/messages?since=` (issue 23, fault 7).
//!
//! Every follower queues a suffix of the same sequence of messages (their
//! bodies shared with the inbox), so the memory all followers hold beyond
//! the inbox's own cap is at most one follower's budget.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::inbox::InboundMessage;
use super::metrics::PqMetrics;

/// Most followers at once; beyond, following is refused.
pub const MAX_FOLLOWERS: usize = 16;

/// Most messages queued for one follower.
pub const MAX_QUEUED: usize = 4096;

/// What a queued message costs besides its body (its metadata and the
/// queue's slot), so that many tiny messages are bounded too.
const PER_MESSAGE: usize = 256;

/// The bytes queued for one follower: 16 MiB, or twice the largest message
/// so that one always fits.
pub fn budget(max_message_size: usize) -> usize {
    (16usize << 20).max(max_message_size.saturating_mul(2))
}

fn cost(m: &InboundMessage) -> usize {
    m.body.len() + PER_MESSAGE
}

/// Following refused: [`MAX_FOLLOWERS`] follow already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{max} followers of the message stream already; close one or poll GET /api/messages")]
pub struct TooManyFollowers {
    /// [`MAX_FOLLOWERS`].
    pub max: usize,
}

/// What a follower gets next.
#[derive(Debug)]
pub enum Next {
    /// A new message.
    Message(InboundMessage),
    /// The follower fell too far behind and was dropped; nothing follows.
    Lagged {
        /// Messages it missed (dropped from its queue, and the one that did
        /// not fit).
        missed: u64,
        /// The id of the last message it was given (0: none), for
        /// `GET /api/messages?since=`.
        since: u64,
    },
    /// The inbox stopped.
    Closed,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<InboundMessage>,
    bytes: usize,
    /// Set when dropped: (missed, since).
    lagged: Option<(u64, u64)>,
    /// The seq of the last message taken.
    taken: u64,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Every follower of one inbox.
pub struct Followers {
    list: Mutex<Vec<(u64, Arc<Shared>)>>,
    next_id: AtomicU64,
    budget: usize,
    metrics: PqMetrics,
}

impl Followers {
    /// Followers with `budget` bytes each.
    pub fn new(budget: usize, metrics: PqMetrics) -> Arc<Self> {
        Arc::new(Followers {
            list: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            budget,
            metrics,
        })
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Arc<Shared>)>> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new follower, getting every message pushed from now on.
    pub fn follow(self: &Arc<Self>) -> Result<Follower, TooManyFollowers> {
        let mut list = self.list();
        if list.len() >= MAX_FOLLOWERS {
            return Err(TooManyFollowers { max: MAX_FOLLOWERS });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
        });
        list.push((id, shared.clone()));
        self.metrics.followers.set(list.len() as i64);
        Ok(Follower {
            id,
            shared,
            followers: Arc::downgrade(self),
        })
    }

    /// Queues `m` for every follower; one it would put over its budget is
    /// dropped instead (its queue freed) and told it lagged.
    pub fn push(&self, m: &InboundMessage) {
        let cost = cost(m);
        let mut list = self.list();
        let before = list.len();
        list.retain(|(_, f)| {
            let mut q = f.lock();
            if q.bytes + cost > self.budget || q.messages.len() >= MAX_QUEUED {
                let missed = q.messages.len() as u64 + 1;
                let freed = std::mem::take(&mut q.messages);
                self.metrics.follower_queued_bytes.dec_by(q.bytes as i64);
                q.bytes = 0;
                q.lagged = Some((missed, q.taken));
                drop(q);
                drop(freed);
                f.ready.notify_one();
                false
            } else {
                q.messages.push_back(m.clone());
                q.bytes += cost;
                self.metrics.follower_queued_bytes.inc_by(cost as i64);
                drop(q);
                f.ready.notify_one();
                true
            }
        });
        let dropped = before - list.len();
        if dropped > 0 {
            self.metrics.followers_lagged.inc_by(dropped as u64);
            self.metrics.followers.set(list.len() as i64);
            // Not the delivering peer's doing: outside its session's span.
            tracing::warn!(
                parent: None,
                dropped,
                budget = self.budget,
                "message stream follower(s) fell behind by more than their queue holds; dropped"
            );
        }
    }

    /// Ends every follower (the inbox stops taking messages).
    pub fn close_all(&self) {
        let mut list = self.list();
        for (_, f) in list.drain(..) {
            let mut q = f.lock();
            self.metrics.follower_queued_bytes.dec_by(q.bytes as i64);
            q.bytes = 0;
            q.messages.clear();
            q.closed = true;
            drop(q);
            f.ready.notify_one();
        }
        self.metrics.followers.set(0);
    }

    fn remove(&self, id: u64) {
        let mut list = self.list();
        if let Some(i) = list.iter().position(|(f, _)| *f == id) {
            let (_, f) = list.swap_remove(i);
            let mut q = f.lock();
            self.metrics.follower_queued_bytes.dec_by(q.bytes as i64);
            q.bytes = 0;
            q.messages.clear();
            self.metrics.followers.set(list.len() as i64);
        }
    }
}

/// One follower; dropping it stops following.
pub struct Follower {
    id: u64,
    shared: Arc<Shared>,
    followers: std::sync::Weak<Followers>,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower").field("id", &self.id).finish()
    }
}

impl Follower {
    /// The next message, or why there is none.
    pub async fn next(&mut self) -> Next {
        loop {
            let notified = self.shared.ready.notified();
            if let Some(next) = self.try_next() {
                return next;
            }
            notified.await;
        }
    }

    fn try_next(&self) -> Option<Next> {
        let mut q = self.shared.lock();
        if let Some(m) = q.messages.pop_front() {
            let c = cost(&m);
            q.bytes -= c;
            q.taken = m.seq;
            if let Some(f) = self.followers.upgrade() {
                f.metrics.follower_queued_bytes.dec_by(c as i64);
            }
            return Some(Next::Message(m));
        }
        if let Some((missed, since)) = q.lagged {
            return Some(Next::Lagged { missed, since });
        }
        if q.closed {
            return Some(Next::Closed);
        }
        None
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(f) = self.followers.upgrade() {
            f.remove(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pq::inbox::Security;
    use libp2p::PeerId;
    use std::time::SystemTime;

    fn message(seq: u64, len: usize) -> InboundMessage {
        InboundMessage {
            seq,
            from: PeerId::random(),
            security: Security::Pq {
                suite: pqnode_crypto::Suite::Kyber1024Dilithium5,
            },
            received_at: SystemTime::now(),
            body: Arc::new(vec![0; len]),
        }
    }

    fn setup(budget: usize) -> (Arc<Followers>, PqMetrics) {
        let mut reg = prometheus_client::registry::Registry::default();
        let metrics = PqMetrics::register(&mut reg);
        (Followers::new(budget, metrics.clone()), metrics)
    }

    #[tokio::test]
    async fn a_follower_that_keeps_up_gets_everything_in_order() {
        let (followers, metrics) = setup(10_000);
        let mut f = followers.follow().expect("follow");
        for seq in 1..=100 {
            followers.push(&message(seq, 1000));
            match f.next().await {
                Next::Message(m) => assert_eq!(m.seq, seq),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(metrics.follower_queued_bytes.get(), 0);
        assert_eq!(metrics.followers_lagged.get(), 0);
    }

    #[tokio::test]
    async fn a_slow_follower_is_dropped_and_told_where_to_resume() {
        let (followers, metrics) = setup(3 * (1000 + PER_MESSAGE));
        let mut slow = followers.follow().expect("follow");
        let mut fast = followers.follow().expect("follow");
        followers.push(&message(1, 1000));
        assert!(matches!(slow.next().await, Next::Message(m) if m.seq == 1));
        assert!(matches!(fast.next().await, Next::Message(m) if m.seq == 1));
        for seq in 2..=10 {
            followers.push(&message(seq, 1000));
            assert!(matches!(fast.next().await, Next::Message(m) if m.seq == seq));
            assert!(
                metrics.follower_queued_bytes.get() <= 3 * (1000 + PER_MESSAGE) as i64,
                "bounded"
            );
        }
        // 2, 3, 4 queued; 5 did not fit: 4 missed, resume after 1.
        match slow.next().await {
            Next::Lagged { missed, since } => assert_eq!((missed, since), (4, 1)),
            other => panic!("{other:?}"),
        }
        // It stays told, holds nothing, and no longer counts.
        assert!(matches!(slow.next().await, Next::Lagged { .. }));
        assert_eq!(metrics.followers.get(), 1);
        assert_eq!(metrics.followers_lagged.get(), 1);
        assert_eq!(metrics.follower_queued_bytes.get(), 0);
        drop(fast);
        assert_eq!(metrics.followers.get(), 0);
    }

    #[tokio::test]
    async fn followers_are_bounded_in_number_and_closed_on_stop() {
        let (followers, metrics) = setup(1 << 20);
        let mut all: Vec<_> = (0..MAX_FOLLOWERS)
            .map(|_| followers.follow().expect("follow"))
            .collect();
        assert_eq!(
            followers.follow().err(),
            Some(TooManyFollowers { max: MAX_FOLLOWERS })
        );
        all.pop();
        let _again = followers.follow().expect("room again");
        followers.push(&message(1, 10));
        followers.close_all();
        assert!(matches!(all[0].next().await, Next::Closed));
        assert_eq!(metrics.followers.get(), 0);
        assert_eq!(metrics.follower_queued_bytes.get(), 0);
    }

    #[tokio::test]
    async fn many_tiny_messages_are_bounded_by_count() {
        let (followers, _) = setup(1 << 30);
        let mut f = followers.follow().expect("follow");
        for seq in 1..=MAX_QUEUED as u64 + 1 {
            followers.push(&message(seq, 0));
        }
        assert!(matches!(
            f.next().await,
            Next::Lagged { missed, since: 0 } if missed == MAX_QUEUED as u64 + 1
        ));
    }
}
