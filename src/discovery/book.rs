//! The record book: the verified PQ records of other peers this node has
//! learned (from gossip and from the DHT), bounded and in memory, newest
//! per peer. Nothing here is pinned (rev 3 §8.3): a record learned this way
//! tells us how to reach a peer and which key it claims, and the handshake
//! checks it again.
//!
//! - [`BookFeed`] fills it from the node's [`NodeEvent::RecordLearned`].
//! - [`fetch_record`] looks a peer's record up in the DHT under
//!   `/pqnode/record/<suite>/<PeerId>`, verifies every value found (§4, on
//!   the blocking pool, the key's PeerId and suite expected), keeps the
//!   newest valid one and adds the peer to the peer cache.
//! - [`sweep`] looks up, a few at a time, the records of peers the node
//!   knows of (routing table, peer cache) but has no record for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashlink::LruCache;
use libp2p::PeerId;
use pqnode_crypto::Suite;
use pqnode_keys::peercache::{Outcome, PeerCache, Source};
use pqnode_keys::record::{self, VerifyContext};
use pqnode_keys::time::unix_now;
use tokio::sync::watch;

use super::metrics::Metrics;
use crate::node::{ConnectionObserver, LearnedRecord, NodeError, NodeEvent, NodeHandle};

/// Records kept at most (one per peer).
pub const MAX_RECORDS: usize = 1000;
/// How often [`sweep`] looks for peers without a record.
pub const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Records [`sweep`] looks up per round, at once.
pub const SWEEP_BATCH: usize = 4;
/// A peer whose record was not found is looked up again after this, the
/// first time (it may have joined a moment ago and not published yet)...
pub const NOT_FOUND_RETRY_FIRST: Duration = Duration::from_secs(10);
/// ... doubling after each miss up to this.
pub const NOT_FOUND_RETRY: Duration = Duration::from_secs(300);

/// How long after its `misses`-th miss in a row a peer is looked up again.
pub fn not_found_retry(misses: u32) -> Duration {
    let doublings = misses.saturating_sub(1).min(16);
    NOT_FOUND_RETRY_FIRST
        .saturating_mul(1 << doublings)
        .min(NOT_FOUND_RETRY)
}

/// Peers whose record was not found: when each is due again, and its misses
/// in a row.
type Missed = HashMap<PeerId, (Instant, u32)>;

/// The verified records of other peers. Cheap to clone.
#[derive(Clone)]
pub struct RecordBook {
    inner: Arc<Mutex<LruCache<PeerId, LearnedRecord>>>,
    metrics: Metrics,
}

impl std::fmt::Debug for RecordBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBook")
            .field("records", &self.len())
            .finish()
    }
}

impl RecordBook {
    /// An empty book counting its lookups in `metrics`.
    pub fn new(metrics: Metrics) -> RecordBook {
        RecordBook {
            inner: Arc::new(Mutex::new(LruCache::new(MAX_RECORDS))),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<PeerId, LearnedRecord>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The discovery counters it counts lookups in.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Keeps `r` unless the book has a newer record of that peer (same
    /// suite: higher seq; another suite: issued later).
    pub fn insert(&self, r: LearnedRecord) {
        let mut book = self.lock();
        let newer = match book.get(&r.peer_id) {
            Some(old) if old.suite == r.suite => r.seq >= old.seq,
            Some(old) => r.issued_at >= old.issued_at,
            None => true,
        };
        if newer {
            book.insert(r.peer_id, r);
        }
    }

    /// `peer`'s record, unless it expired.
    pub fn get(&self, peer: &PeerId) -> Option<LearnedRecord> {
        let mut book = self.lock();
        let r = book.get(peer)?.clone();
        if r.expires_at <= unix_now() {
            book.remove(peer);
            return None;
        }
        Some(r)
    }

    /// Whether the book has a record of `peer`.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.get(peer).is_some()
    }

    /// Records kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The peers it has records of.
    pub fn peers(&self) -> Vec<PeerId> {
        self.lock().iter().map(|(p, _)| *p).collect()
    }
}

/// Fills a [`RecordBook`] from the node's events.
pub struct BookFeed(pub RecordBook);

impl ConnectionObserver for BookFeed {
    fn on_node_event(&self, event: &NodeEvent) {
        if let NodeEvent::RecordLearned(r) = event {
            self.0.insert(r.clone());
        }
    }
}

/// Why [`fetch_record`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The node could not run the lookup.
    #[error("DHT lookup failed: {0}")]
    Node(#[from] NodeError),
}

/// Looks `peer`'s record up in the DHT, one suite of `suites` after the
/// other until one verifies; keeps it in `book` and adds the peer to
/// `cache` (source `dht`). `Ok(None)`: no valid record was found.
pub async fn fetch_record(
    node: &NodeHandle,
    book: &RecordBook,
    cache: &PeerCache,
    peer: PeerId,
    suites: &[Suite],
) -> Result<Option<LearnedRecord>, FetchError> {
    for &suite in suites {
        let values = node.get_record(record::dht_key(suite, &peer)).await?;
        if values.is_empty() {
            continue;
        }
        let best = tokio::task::spawn_blocking(move || {
            let enabled = [suite];
            let mut best: Option<record::VerifiedRecord> = None;
            let mut invalid = 0usize;
            for v in &values {
                let mut ctx = VerifyContext::new(unix_now(), &enabled);
                ctx.expected_peer = Some(peer);
                ctx.negotiated_suite = Some(suite);
                match record::verify(v, &ctx) {
                    Ok(r) if best.as_ref().is_none_or(|b| r.seq() > b.seq()) => best = Some(r),
                    Ok(_) => {}
                    Err(e) => {
                        invalid += 1;
                        tracing::debug!(peer = %peer, reason = e.name(), "invalid record in the DHT");
                    }
                }
            }
            (best, invalid)
        })
        .await;
        let Ok((best, invalid)) = best else {
            continue;
        };
        for _ in 0..invalid {
            book.metrics.get("invalid");
        }
        let Some(best) = best else {
            continue;
        };
        book.metrics.get("found");
        let mut learned = LearnedRecord::from_verified(&best, Source::Dht);
        // Whoever stored it chose these addresses: under the address
        // policy like any a remote gives.
        learned.addrs = node.addr_policy().filter_learned(
            &learned.addrs,
            None,
            pqnode_keys::peercache::MAX_ADDRS,
        );
        book.insert(learned.clone());
        let outcome = Outcome::Learned {
            addrs: learned.addrs.iter().map(|a| a.to_vec()).collect(),
            suite,
            source: Source::Dht,
            // Looked up by this node for this peer: not a flood.
            via: None,
        };
        let c = cache.clone();
        let written =
            tokio::task::spawn_blocking(move || c.record(&[(peer, outcome)], unix_now())).await;
        if let Ok(Err(e)) = written {
            tracing::warn!(error = %e, "peer cache not updated with a DHT record");
        }
        return Ok(Some(learned));
    }
    book.metrics.get("not_found");
    Ok(None)
}

/// Every [`SWEEP_EVERY`] until `stop`: looks up the records of up to
/// [`SWEEP_BATCH`] peers the node knows of (routing table, peer cache) but
/// has none for. A peer whose record was not found waits
/// [`not_found_retry`]: 10 s, doubling to [`NOT_FOUND_RETRY`].
pub async fn sweep(
    node: NodeHandle,
    book: RecordBook,
    cache: PeerCache,
    suites: Vec<Suite>,
    mut stop: watch::Receiver<bool>,
) {
    if suites.is_empty() {
        return;
    }
    let me = node.peer_id();
    let mut missed: Missed = HashMap::new();
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let round = sweep_round(&node, &book, &cache, &suites, &mut missed, me);
        tokio::select! {
            _ = round => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One round of [`sweep`].
async fn sweep_round(
    node: &NodeHandle,
    book: &RecordBook,
    cache: &PeerCache,
    suites: &[Suite],
    missed: &mut Missed,
    me: PeerId,
) {
    let mut known: Vec<PeerId> = match node.routing_table().await {
        Ok(t) => t.nodes.into_iter().map(|n| n.peer_id).collect(),
        Err(_) => return,
    };
    let c = cache.clone();
    if let Ok(Ok(cached)) =
        tokio::task::spawn_blocking(move || c.best(unix_now(), MAX_RECORDS)).await
    {
        known.extend(cached.into_iter().map(|c| c.peer));
    }
    let now = Instant::now();
    // Forget a peer found meanwhile, or not looked up for a long while.
    missed.retain(|p, (due, _)| {
        !book.contains(p) && now.saturating_duration_since(*due) < NOT_FOUND_RETRY
    });
    if missed.len() >= MAX_RECORDS {
        missed.clear();
    }
    known.sort();
    known.dedup();
    let batch: Vec<PeerId> = known
        .into_iter()
        .filter(|p| {
            *p != me && !book.contains(p) && missed.get(p).is_none_or(|(due, _)| now >= *due)
        })
        .take(SWEEP_BATCH)
        .collect();
    let lookups = batch
        .iter()
        .map(|peer| async move { (*peer, fetch_record(node, book, cache, *peer, suites).await) });
    for (peer, r) in futures::future::join_all(lookups).await {
        if matches!(r, Ok(Some(_))) {
            missed.remove(&peer);
        } else {
            let misses = missed.get(&peer).map_or(0, |(_, n)| *n) + 1;
            missed.insert(peer, (now + not_found_retry(misses), misses));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_record_is_looked_up_again_soon_then_less_often() {
        assert_eq!(not_found_retry(1), Duration::from_secs(10));
        assert_eq!(not_found_retry(2), Duration::from_secs(20));
        assert_eq!(not_found_retry(5), Duration::from_secs(160));
        assert_eq!(not_found_retry(6), NOT_FOUND_RETRY);
        assert_eq!(not_found_retry(u32::MAX), NOT_FOUND_RETRY);
    }

    fn rec(peer: PeerId, suite: Suite, seq: u64, issued_at: u64) -> LearnedRecord {
        LearnedRecord {
            peer_id: peer,
            suite,
            seq,
            fingerprint: String::new(),
            issued_at,
            expires_at: u64::MAX,
            addrs: Vec::new(),
            source: Source::Gossip,
            via: None,
        }
    }

    #[test]
    fn the_newest_record_per_peer_is_kept_and_the_book_is_bounded() {
        let book = RecordBook::new(Metrics::default());
        let p = PeerId::random();
        book.insert(rec(p, Suite::Kyber1024Dilithium5, 5, 100));
        book.insert(rec(p, Suite::Kyber1024Dilithium5, 4, 200));
        assert_eq!(book.get(&p).map(|r| r.seq), Some(5), "older seq ignored");
        book.insert(rec(p, Suite::Mlkem1024Mldsa87, 1, 300));
        assert_eq!(book.get(&p).map(|r| r.suite), Some(Suite::Mlkem1024Mldsa87));
        for _ in 0..MAX_RECORDS + 10 {
            book.insert(rec(PeerId::random(), Suite::Kyber1024Dilithium5, 1, 1));
        }
        assert_eq!(book.len(), MAX_RECORDS);
    }

    #[test]
    fn expired_records_are_not_offered() {
        let book = RecordBook::new(Metrics::default());
        let p = PeerId::random();
        let mut r = rec(p, Suite::Kyber1024Dilithium5, 1, 1);
        r.expires_at = 1;
        book.insert(r);
        assert!(book.get(&p).is_none());
        assert!(book.is_empty());
    }
}
