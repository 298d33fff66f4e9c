//! Quotas on the DHT records this node stores for others (issue 29, item
//! 6).
//!
//! Any peer may PUT valid self-signed records (it makes up identities for
//! free), up to the store's 8,192, each living up to 7 days: one peer
//! could fill the store and have honest records refused. So a record PUT
//! by a peer other than its author counts against that source: at most
//! [`PER_PEER`] records per source peer and [`PER_NETWORK`] per source
//! network (an IPv4 /24, an IPv6 /64). A record PUT by its own author (a
//! node publishing itself, one per suite) counts against nothing, and when
//! the store is full it takes the place of a record from the source that
//! holds the most. Sans-IO: the event loop says what it stored and asks.

use std::collections::HashMap;

use libp2p::PeerId;
use libp2p::kad::RecordKey;

use super::addr_policy::Network;

/// Records stored for one source peer at most.
pub const PER_PEER: usize = 64;
/// Records stored for one source network at most.
pub const PER_NETWORK: usize = 256;

/// Who stored a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Origin {
    peer: PeerId,
    network: Network,
}

/// The sources of the records stored for others.
#[derive(Debug, Default)]
pub struct RecordQuota {
    origins: HashMap<RecordKey, Origin>,
    per_peer: HashMap<PeerId, usize>,
    per_network: HashMap<Network, usize>,
}

impl RecordQuota {
    /// Whether `peer` (from `network`) may store another author's record
    /// under `key`: a record it stored there already may be replaced.
    pub fn admits(&self, key: &RecordKey, peer: PeerId, network: Network) -> bool {
        if self.origins.get(key).is_some_and(|o| o.peer == peer) {
            return true;
        }
        self.per_peer.get(&peer).copied().unwrap_or(0) < PER_PEER
            && self.per_network.get(&network).copied().unwrap_or(0) < PER_NETWORK
    }

    /// A record under `key` was stored for `peer` (from `network`); `None`
    /// when its author stored it (it counts against nobody).
    pub fn stored(&mut self, key: RecordKey, by: Option<(PeerId, Network)>) {
        self.forget(&key);
        if let Some((peer, network)) = by {
            *self.per_peer.entry(peer).or_insert(0) += 1;
            *self.per_network.entry(network).or_insert(0) += 1;
            self.origins.insert(key, Origin { peer, network });
        }
    }

    /// The record under `key` is gone.
    pub fn forget(&mut self, key: &RecordKey) {
        let Some(o) = self.origins.remove(key) else {
            return;
        };
        if let Some(n) = self.per_peer.get_mut(&o.peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&o.peer);
            }
        }
        if let Some(n) = self.per_network.get_mut(&o.network) {
            *n -= 1;
            if *n == 0 {
                self.per_network.remove(&o.network);
            }
        }
    }

    /// A record to give up for an author's own one when the store is full:
    /// one of the source holding the most.
    pub fn evictable(&self) -> Option<RecordKey> {
        let (busiest, _) = self.per_peer.iter().max_by_key(|(_, n)| **n)?;
        self.origins
            .iter()
            .find(|(_, o)| o.peer == *busiest)
            .map(|(k, _)| k.clone())
    }

    /// Forgets the origins of records no longer stored (expired, removed).
    pub fn retain(&mut self, mut stored: impl FnMut(&RecordKey) -> bool) {
        let gone: Vec<RecordKey> = self
            .origins
            .keys()
            .filter(|k| !stored(k))
            .cloned()
            .collect();
        for k in gone {
            self.forget(&k);
        }
    }

    /// Records stored for others, in all.
    pub fn len(&self) -> usize {
        self.origins.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> RecordKey {
        RecordKey::new(&format!("/pqnode/record/k{i}"))
    }

    #[test]
    fn one_source_stores_at_most_its_share_and_may_replace_its_own() {
        let mut q = RecordQuota::default();
        let (p, net) = (PeerId::random(), Network::V4([10, 0, 0]));
        for i in 0..PER_PEER {
            assert!(q.admits(&key(i), p, net));
            q.stored(key(i), Some((p, net)));
        }
        assert!(!q.admits(&key(PER_PEER), p, net), "its share is full");
        assert!(q.admits(&key(3), p, net), "it may replace what it stored");
        assert!(
            q.admits(&key(PER_PEER), PeerId::random(), Network::V4([10, 0, 1])),
            "another source is not limited by it"
        );
        q.forget(&key(0));
        assert!(q.admits(&key(PER_PEER), p, net));
    }

    #[test]
    fn one_network_stores_at_most_its_share_across_peers() {
        let mut q = RecordQuota::default();
        let net = Network::V6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 1]);
        let mut i = 0;
        while q.len() < PER_NETWORK {
            let p = PeerId::random();
            for _ in 0..PER_PEER {
                if q.len() < PER_NETWORK {
                    q.stored(key(i), Some((p, net)));
                    i += 1;
                }
            }
        }
        assert!(!q.admits(&key(i), PeerId::random(), net));
        assert!(q.admits(&key(i), PeerId::random(), Network::V4([1, 2, 3])));
    }

    #[test]
    fn an_authors_own_record_counts_against_nobody_and_evicts_the_busiest() {
        let mut q = RecordQuota::default();
        let (busy, quiet) = (PeerId::random(), PeerId::random());
        let net = Network::V4([10, 0, 0]);
        for i in 0..10 {
            q.stored(key(i), Some((busy, net)));
        }
        q.stored(key(100), Some((quiet, Network::V4([10, 0, 9]))));
        let victim = q.evictable().expect("one");
        assert!(
            (0..10).map(key).any(|k| k == victim),
            "the busiest source's"
        );
        // The author stores its own over what a source had put there.
        q.stored(key(100), None);
        assert_eq!(q.len(), 10);
        q.retain(|k| *k != key(1));
        assert_eq!(q.len(), 9);
    }
}
