//! Discovery (issue 8): the bootstrap list ([`bootstrap`]), the persistent
//! peer cache, Kademlia schedules and our records in the DHT ([`dht`]),
//! gossip announcements ([`gossip`]), the records learned from both
//! ([`book`]), connection trimming ([`trim`]).
//!
//! - [`CacheFeed`] observes the node's events (it never blocks the event
//!   loop: a bounded channel, overflow dropped and counted) and hands what
//!   it saw to [`run_cache_writer`], which batches it into the state
//!   database every [`FLUSH_PERIOD`] (one transaction per batch), adding
//!   the suite of the peer's PQ session when it has one.
//! - [`dial_cached_peers`] runs at start: the cached peers, best first, are
//!   dialled before anything else, a few at a time; a peer none of whose
//!   addresses answers has its failure counted.
//!
//! - [`connect_known`] reaches a peer by PeerId alone: from the cache, a
//!   learned record, or a record fetched from the DHT.

pub mod book;
pub mod bootstrap;
pub mod dht;
pub mod gossip;
pub mod metrics;
pub mod trim;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use pqnode_keys::peercache::{self, Outcome, PeerCache};
use pqnode_keys::time::unix_now;
use tokio::sync::{mpsc, watch};

use crate::node::{ConnectionObserver, Direction, NodeEvent, NodeHandle};
use crate::pq::PqLayer;

/// Events queued for the writer at most; beyond, they are dropped (it is a
/// cache) and counted.
pub const FEED_CAPACITY: usize = 1024;
/// Peers with pending updates kept at most between two flushes.
pub const MAX_PENDING: usize = 1024;
/// How often pending updates are written.
pub const FLUSH_PERIOD: Duration = Duration::from_secs(2);
/// Cached peers dialled at start, at most.
pub const START_DIALS: usize = 50;
/// Cached peers dialled at once.
pub const DIAL_CONCURRENCY: usize = 8;

/// What the feed saw.
#[derive(Debug)]
enum Seen {
    /// identify: the addresses it listens on.
    Listening { peer: PeerId, addrs: Vec<Multiaddr> },
    /// A connection, and the address we dialled if we did.
    Connected {
        peer: PeerId,
        dialled: Option<Multiaddr>,
        source: peercache::Source,
    },
    /// Its verified record (gossip, DHT) names these addresses.
    Learned {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        suite: pqnode_crypto::Suite,
        source: peercache::Source,
        /// The gossip neighbour that relayed it.
        via: Option<PeerId>,
    },
}

impl Seen {
    fn peer(&self) -> PeerId {
        match self {
            Seen::Listening { peer, .. }
            | Seen::Connected { peer, .. }
            | Seen::Learned { peer, .. } => *peer,
        }
    }
}

/// Several observers of one node, called in order.
pub struct Observers(pub Vec<Arc<dyn ConnectionObserver>>);

impl ConnectionObserver for Observers {
    fn on_node_event(&self, event: &NodeEvent) {
        for o in &self.0 {
            o.on_node_event(event);
        }
    }
}

/// The node-event side of the peer cache.
pub struct CacheFeed {
    tx: mpsc::Sender<Seen>,
    dropped: Arc<AtomicU64>,
}

/// The writer side: give it to [`run_cache_writer`].
pub struct CacheWriterInput {
    rx: mpsc::Receiver<Seen>,
    dropped: Arc<AtomicU64>,
}

/// A feed and its writer input.
pub fn cache_feed() -> (CacheFeed, CacheWriterInput) {
    let (tx, rx) = mpsc::channel(FEED_CAPACITY);
    let dropped = Arc::new(AtomicU64::new(0));
    (
        CacheFeed {
            tx,
            dropped: dropped.clone(),
        },
        CacheWriterInput { rx, dropped },
    )
}

fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

/// Addresses worth keeping: dialable (not unspecified, not relayed), the
/// known-good one first, no duplicates, bounded.
fn keep(addrs: impl IntoIterator<Item = Multiaddr>) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for a in addrs {
        let a = without_p2p(&a);
        let unusable = a.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_unspecified(),
            Protocol::Ip6(ip) => ip.is_unspecified(),
            Protocol::P2pCircuit => true,
            _ => false,
        });
        let bytes = a.to_vec();
        if unusable || bytes.is_empty() || bytes.len() > peercache::MAX_ADDR_LEN {
            continue;
        }
        if !out.contains(&bytes) {
            out.push(bytes);
        }
        if out.len() == peercache::MAX_ADDRS {
            break;
        }
    }
    out
}

impl ConnectionObserver for CacheFeed {
    fn on_node_event(&self, event: &NodeEvent) {
        let seen = match event {
            NodeEvent::Identified {
                peer_id,
                listen_addrs,
                ..
            } => Seen::Listening {
                peer: *peer_id,
                addrs: listen_addrs.clone(),
            },
            NodeEvent::ConnectionEstablished {
                peer_id,
                direction,
                remote_addr,
                source,
                ..
            } => Seen::Connected {
                peer: *peer_id,
                dialled: (*direction == Direction::Outbound).then(|| remote_addr.clone()),
                source: *source,
            },
            NodeEvent::RecordLearned(r) => Seen::Learned {
                peer: r.peer_id,
                addrs: r.addrs.clone(),
                suite: r.suite,
                source: r.source,
                via: r.via,
            },
            _ => return,
        };
        if self.tx.try_send(seen).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct Pending {
    connected: bool,
    dialled: Option<Multiaddr>,
    listening: Vec<Multiaddr>,
    source: Option<peercache::Source>,
    learned: Option<(pqnode_crypto::Suite, Vec<Multiaddr>, Option<PeerId>)>,
}

/// Writes what the feed saw into `cache` every [`FLUSH_PERIOD`] until
/// `stop`, then once more.
pub async fn run_cache_writer(
    cache: PeerCache,
    pq: PqLayer,
    mut input: CacheWriterInput,
    mut stop: watch::Receiver<bool>,
) {
    let mut pending: HashMap<PeerId, Pending> = HashMap::new();
    let mut tick = tokio::time::interval(FLUSH_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported_drops = 0;
    let mut due = false;
    loop {
        tokio::select! {
            seen = input.rx.recv() => {
                let Some(seen) = seen else { break };
                let peer = seen.peer();
                if pending.len() >= MAX_PENDING && !pending.contains_key(&peer) {
                    input.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let entry = pending.entry(peer).or_default();
                match seen {
                    Seen::Listening { addrs, .. } => {
                        entry.connected = true;
                        entry.listening = addrs;
                    }
                    Seen::Connected { dialled, source, .. } => {
                        entry.connected = true;
                        entry.source.get_or_insert(source);
                        if dialled.is_some() {
                            entry.dialled = dialled;
                        }
                    }
                    Seen::Learned { addrs, suite, source, via, .. } => {
                        entry.source.get_or_insert(source);
                        entry.learned = Some((suite, addrs, via));
                    }
                }
            }
            _ = tick.tick() => due = true,
            _ = stop.wait_for(|s| *s) => break,
        }
        if std::mem::take(&mut due) {
            flush(&cache, &pq, &mut pending).await;
        }
        let dropped = input.dropped.load(Ordering::Relaxed);
        if dropped > reported_drops {
            tracing::warn!(
                dropped,
                "peer cache could not keep up; some updates were dropped"
            );
            reported_drops = dropped;
        }
    }
    flush(&cache, &pq, &mut pending).await;
}

async fn flush(cache: &PeerCache, pq: &PqLayer, pending: &mut HashMap<PeerId, Pending>) {
    if pending.is_empty() {
        return;
    }
    let mut outcomes: Vec<(PeerId, Outcome)> = Vec::with_capacity(pending.len());
    for (peer, p) in pending.drain() {
        let source = p.source.unwrap_or(peercache::Source::Unknown);
        if let Some((suite, addrs, via)) = p.learned {
            outcomes.push((
                peer,
                Outcome::Learned {
                    addrs: keep(addrs),
                    suite,
                    source,
                    via,
                },
            ));
        }
        if p.connected {
            let addrs = keep(p.dialled.into_iter().chain(p.listening));
            let suite = pq.session(&peer).map(|s| s.suite);
            outcomes.push((
                peer,
                Outcome::Connected {
                    addrs,
                    suite,
                    source,
                },
            ));
        }
    }
    let cache = cache.clone();
    let n = outcomes.len();
    match tokio::task::spawn_blocking(move || cache.record(&outcomes, unix_now())).await {
        Ok(Ok(())) => tracing::debug!(peers = n, "peer cache updated"),
        Ok(Err(e)) => tracing::warn!(error = %e, "peer cache not updated"),
        Err(e) => tracing::warn!(error = %e, "peer cache writer failed"),
    }
}

/// Dials the cached peers, best first ([`START_DIALS`] at most,
/// [`DIAL_CONCURRENCY`] at once), skipping `skip` (peers dialled anyway)
/// and peers already connected. Returns how many answered.
pub async fn dial_cached_peers(node: NodeHandle, cache: PeerCache, skip: Vec<PeerId>) -> usize {
    let c = cache.clone();
    let best = match tokio::task::spawn_blocking(move || c.best(unix_now(), START_DIALS)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "peer cache unreadable; not dialling cached peers");
            return 0;
        }
        Err(_) => return 0,
    };
    let connected: Vec<PeerId> = node
        .peers()
        .await
        .map(|p| p.into_iter().map(|i| i.peer_id).collect())
        .unwrap_or_default();
    let candidates: Vec<_> = best
        .into_iter()
        .filter(|p| !skip.contains(&p.peer) && !connected.contains(&p.peer))
        .collect();
    if candidates.is_empty() {
        return 0;
    }
    tracing::info!(peers = candidates.len(), "dialling cached peers");
    let results: Vec<(PeerId, bool)> = futures::stream::iter(candidates)
        .map(|p| {
            let node = node.clone();
            async move {
                for bytes in &p.addrs {
                    let Ok(addr) = Multiaddr::try_from(bytes.clone()) else {
                        continue;
                    };
                    if node
                        .dial_from(addr.with(Protocol::P2p(p.peer)), peercache::Source::Cache)
                        .await
                        .is_ok()
                    {
                        return (p.peer, true);
                    }
                }
                (p.peer, false)
            }
        })
        .buffer_unordered(DIAL_CONCURRENCY)
        .collect()
        .await;
    let answered = results.iter().filter(|(_, ok)| *ok).count();
    let failed: Vec<(PeerId, Outcome)> = results
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(p, _)| (p, Outcome::DialFailed))
        .collect();
    if !failed.is_empty() {
        let _ = tokio::task::spawn_blocking(move || cache.record(&failed, unix_now())).await;
    }
    tracing::info!(answered, "cached peers dialled");
    answered
}

/// How often [`sync_own_records`] looks for fresh records of ours.
pub const OWN_RECORDS_CHECK: Duration = Duration::from_secs(10);

/// Hands our signed records to the node (DHT and gossip) now and whenever
/// the PQ layer signs fresh ones, until `stop`.
pub async fn sync_own_records(pq: PqLayer, node: NodeHandle, mut stop: watch::Receiver<bool>) {
    let me = node.peer_id();
    let mut last: Vec<(pqnode_crypto::Suite, Vec<u8>)> = Vec::new();
    let mut tick = tokio::time::interval(OWN_RECORDS_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = pq.own_records();
        if now == last {
            continue;
        }
        let records: Vec<dht::OwnRecord> = now
            .iter()
            .filter_map(|(suite, bytes)| {
                let decoded = pqnode_keys::record::decode(bytes, &[*suite]).ok()?;
                Some(dht::OwnRecord {
                    key: pqnode_keys::record::dht_key(*suite, &me),
                    value: bytes.clone(),
                    expires_at: decoded.body().expires_at,
                })
            })
            .collect();
        match node.set_own_records(records).await {
            Ok(()) => last = now,
            Err(e) => tracing::debug!(error = %e, "own records not handed to the node yet"),
        }
    }
}

/// How long sending to a known but unconnected peer may spend dialling it
/// and waiting for its PQ session.
pub const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// Why [`connect_known`] could not connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// Not connected, and nothing is known about how to reach it.
    #[error(
        "peer {0} is not connected, not in the peer cache, and no record of it was found \
         in the DHT; connect it first (POST /api/peers/connect with its address)"
    )]
    Unknown(PeerId),
    /// Known, but none of its addresses answered in time.
    #[error("peer {peer} did not answer at its {addrs} known address(es) within {secs} s")]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// Addresses tried.
        addrs: usize,
        /// The time allowed.
        secs: u64,
    },
    /// The peer cache could not be read.
    #[error("peer cache: {0}")]
    Cache(String),
}

/// Connects to `peer` by PeerId alone and waits (all within
/// [`CONNECT_WAIT`]) until its PQ status settles. Its addresses come from
/// the peer cache, else from a record learned by gossip or the DHT, else
/// from a record fetched from the DHT now; Kademlia adds what its routing
/// table knows.
pub async fn connect_known(
    node: &NodeHandle,
    cache: &PeerCache,
    book: &book::RecordBook,
    pq: &PqLayer,
    peer: PeerId,
) -> Result<(), ConnectError> {
    let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
    let c = cache.clone();
    let entry = tokio::task::spawn_blocking(move || c.get(&peer))
        .await
        .map_err(|e| ConnectError::Cache(e.to_string()))?
        .map_err(|e| ConnectError::Cache(e.to_string()))?
        .filter(|e| e.usable(unix_now()));
    let (addrs, source) = match entry {
        Some(e) => (
            e.addrs
                .into_iter()
                .filter_map(|a| Multiaddr::try_from(a).ok())
                .collect::<Vec<_>>(),
            peercache::Source::Cache,
        ),
        None => {
            let learned = match book.get(&peer).filter(|r| !r.addrs.is_empty()) {
                Some(r) => Some(r),
                None => {
                    let mut suites = pq.suites();
                    if suites.is_empty() {
                        suites = pqnode_crypto::Suite::ALL.to_vec();
                    }
                    let fetch = book::fetch_record(node, book, cache, peer, &suites);
                    match tokio::time::timeout_at(deadline, fetch).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "record lookup failed");
                            None
                        }
                        Err(_) => None,
                    }
                }
            };
            match learned {
                Some(r) => (r.addrs, r.source),
                None => (Vec::new(), peercache::Source::Dht),
            }
        }
    };
    if addrs.is_empty() {
        // Only Kademlia's routing table may still know where it is.
        let routed = node.routing_table().await.is_ok_and(|t| {
            t.nodes
                .iter()
                .any(|n| n.peer_id == peer && !n.addresses.is_empty())
        });
        if !routed {
            return Err(ConnectError::Unknown(peer));
        }
    }
    let tried = addrs.len();
    let dialled = tokio::time::timeout_at(deadline, node.dial_peer(peer, addrs, source)).await;
    match dialled {
        Ok(Ok(_)) => {
            // Connected: wait, within what is left, for the status to
            // settle (a session, or a status the send will explain).
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let _ = pq.wait_for_session(&peer, left).await;
            Ok(())
        }
        _ => {
            let c = cache.clone();
            let _ = tokio::task::spawn_blocking(move || {
                c.record(&[(peer, Outcome::DialFailed)], unix_now())
            })
            .await;
            Err(ConnectError::Unreachable {
                peer,
                addrs: tried,
                secs: CONNECT_WAIT.as_secs(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_addresses_are_dialable_deduplicated_and_bounded() {
        let a = |s: &str| -> Multiaddr { s.parse().unwrap() };
        let kept = keep([
            a("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"),
            a("/ip4/127.0.0.1/tcp/4001"),
            a("/ip4/0.0.0.0/tcp/4001"),
            a(
                "/ip4/10.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
            ),
            a("/ip6/::1/udp/4001/quic-v1"),
        ]);
        assert_eq!(
            kept,
            vec![
                a("/ip4/127.0.0.1/tcp/4001").to_vec(),
                a("/ip6/::1/udp/4001/quic-v1").to_vec()
            ]
        );
        let many = (0..20).map(|i| a(&format!("/ip4/127.0.0.1/tcp/{}", 1000 + i)));
        assert_eq!(keep(many).len(), peercache::MAX_ADDRS);
    }
}
