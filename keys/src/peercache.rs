//! The peer cache (issue 8): peers this node has been connected to, kept
//! in the state database so that a restarted node finds its network again
//! without its bootstrap peers.
//!
//! Table `peers_v1`: PeerId bytes → `version u8 (3) || last_seen u64 ||
//! successes u32 || failures u32 || suite u16 (0: no PQ session seen) ||
//! source u8 || flags u8 (bit 0: a PQ session was seen) || count u8 ||
//! (len u16 || multiaddr bytes) × count`, big-endian. Version 1 rows (no
//! `source`) and version 2 rows (no `flags`) are still read.
//!
//! Ranked by evidence (issue 29, item 2): pinned peers first, then peers
//! that held a PQ session with this node, then peers that connected, then
//! peers only learned of (a record); within a rank, usable before expired,
//! the higher success rate, the more recently seen. A new entry never
//! evicts one of a higher rank, so self-made identities arriving by gossip
//! cannot push out peers the node has proof of; and one source (the peer
//! that relayed the records) adds at most [`NEW_PER_SOURCE_PER_MINUTE`] new
//! entries a minute.
//!
//! Bounded: at most [`MAX_PEERS`] entries, each with at most [`MAX_ADDRS`]
//! addresses of at most [`MAX_ADDR_LEN`] bytes; an entry not seen for
//! [`TTL_SECS`] is no longer offered and is removed when room is needed. A
//! new peer beyond the limit replaces the least useful entry (expired
//! first, then the lowest rank, success rate, the oldest). A row that does
//! not decode is skipped when reading and removed when writing; it never
//! stops the node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use libp2p::identity::PeerId;
use pqnode_crypto::Suite;
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::db::{DbError, StateDb};

/// Peers kept at most.
pub const MAX_PEERS: usize = 1000;
/// Addresses kept per peer.
pub const MAX_ADDRS: usize = 8;
/// Bytes per address at most.
pub const MAX_ADDR_LEN: usize = 128;
/// How long an entry stays usable after the peer was last seen: 7 days.
pub const TTL_SECS: u64 = 7 * 24 * 3600;

const PEERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("peers_v1");
const VERSION: u8 = 3;
const FIXED_V1: usize = 1 + 8 + 4 + 4 + 2 + 1;
const FIXED_V2: usize = FIXED_V1 + 1;
const FIXED: usize = FIXED_V2 + 1;
/// `flags` bit 0: a PQ session with this node was seen.
const FLAG_PQ: u8 = 1;

/// New entries one source (the peer that relayed their records) may add
/// per minute.
pub const NEW_PER_SOURCE_PER_MINUTE: u32 = 16;
/// Sources whose additions are counted at once.
const MAX_SOURCES: usize = 1024;

/// How much this node knows of a peer, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Evidence {
    /// Only a record named it.
    Learned,
    /// It connected to this node, or this node to it.
    Connected,
    /// It held a PQ session with this node.
    PqProven,
    /// A PQ key of it is pinned (first use or the operator).
    Pinned,
}

/// How the node first learned of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// Not recorded (entries written before sources were).
    Unknown,
    /// It connected to us.
    Inbound,
    /// It is on the bootstrap list.
    Bootstrap,
    /// We dialled it from this cache.
    Cache,
    /// mDNS found it on the local network.
    Mdns,
    /// Its record came from the DHT (or Kademlia dialled it).
    Dht,
    /// Its record came in a gossip announcement.
    Gossip,
    /// A configured peer, or one the operator dialled.
    Manual,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 8] = [
        Source::Unknown,
        Source::Inbound,
        Source::Bootstrap,
        Source::Cache,
        Source::Mdns,
        Source::Dht,
        Source::Gossip,
        Source::Manual,
    ];

    /// Its name in the API and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Unknown => "unknown",
            Source::Inbound => "inbound",
            Source::Bootstrap => "bootstrap",
            Source::Cache => "cache",
            Source::Mdns => "mdns",
            Source::Dht => "dht",
            Source::Gossip => "gossip",
            Source::Manual => "manual",
        }
    }

    fn to_byte(self) -> u8 {
        Source::ALL.iter().position(|s| *s == self).unwrap_or(0) as u8
    }

    fn from_byte(b: u8) -> Source {
        Source::ALL
            .get(usize::from(b))
            .copied()
            .unwrap_or(Source::Unknown)
    }
}

/// One cached peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedPeer {
    /// The peer.
    pub peer: PeerId,
    /// Its addresses (multiaddr bytes), most useful first.
    pub addrs: Vec<Vec<u8>>,
    /// When it was last seen connected, unix seconds.
    pub last_seen: u64,
    /// Dials or connections that worked.
    pub successes: u32,
    /// Dials that failed.
    pub failures: u32,
    /// The suite of its last PQ session, if it ever had one with us (or
    /// of its verified record).
    pub suite: Option<Suite>,
    /// How we first learned of it.
    pub source: Source,
    /// Whether it held a PQ session with this node.
    pub pq_proven: bool,
}

impl Evidence {
    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Evidence::Learned => "learned",
            Evidence::Connected => "connected",
            Evidence::PqProven => "pq-proven",
            Evidence::Pinned => "pinned",
        }
    }
}

impl CachedPeer {
    fn new(peer: PeerId, now: u64, source: Source) -> CachedPeer {
        CachedPeer {
            peer,
            addrs: Vec::new(),
            last_seen: now,
            successes: 0,
            failures: 0,
            suite: None,
            source,
            pq_proven: false,
        }
    }

    /// What this node knows of it (`pinned`: whether a key of it is).
    pub fn evidence(&self, pinned: bool) -> Evidence {
        if pinned {
            Evidence::Pinned
        } else if self.pq_proven {
            Evidence::PqProven
        } else if self.successes > 0 {
            Evidence::Connected
        } else {
            Evidence::Learned
        }
    }

    /// Successes over attempts, in [0, 1] (1 for a peer never dialled).
    pub fn success_rate(&self) -> f64 {
        let attempts = u64::from(self.successes) + u64::from(self.failures);
        if attempts == 0 {
            1.0
        } else {
            f64::from(self.successes) / attempts as f64
        }
    }

    /// Whether it is still offered at `now`.
    pub fn usable(&self, now: u64) -> bool {
        self.last_seen.saturating_add(TTL_SECS) >= now && !self.addrs.is_empty()
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED + self.addrs.len() * 40);
        out.push(VERSION);
        out.extend_from_slice(&self.last_seen.to_be_bytes());
        out.extend_from_slice(&self.successes.to_be_bytes());
        out.extend_from_slice(&self.failures.to_be_bytes());
        out.extend_from_slice(&self.suite.map_or(0, Suite::id).to_be_bytes());
        out.push(self.source.to_byte());
        out.push(if self.pq_proven { FLAG_PQ } else { 0 });
        let addrs: Vec<&Vec<u8>> = self
            .addrs
            .iter()
            .filter(|a| !a.is_empty() && a.len() <= MAX_ADDR_LEN)
            .take(MAX_ADDRS)
            .collect();
        out.push(addrs.len() as u8);
        for a in addrs {
            out.extend_from_slice(&(a.len() as u16).to_be_bytes());
            out.extend_from_slice(a);
        }
        out
    }

    fn decode(peer: PeerId, bytes: &[u8]) -> Result<CachedPeer, String> {
        let (fixed, source, flags) = match bytes.first() {
            Some(1) if bytes.len() >= FIXED_V1 => (FIXED_V1, Source::Unknown, None),
            Some(2) if bytes.len() >= FIXED_V2 => (FIXED_V2, Source::from_byte(bytes[19]), None),
            Some(&VERSION) if bytes.len() >= FIXED => {
                (FIXED, Source::from_byte(bytes[19]), Some(bytes[20]))
            }
            _ => return Err("bad header".into()),
        };
        let u32_at =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let mut last = [0u8; 8];
        last.copy_from_slice(&bytes[1..9]);
        let suite_id = u16::from_be_bytes([bytes[17], bytes[18]]);
        let suite = match suite_id {
            0 => None,
            id => Some(Suite::from_id(id).ok_or_else(|| format!("unknown suite {id}"))?),
        };
        let count = usize::from(bytes[fixed - 1]);
        if count > MAX_ADDRS {
            return Err(format!("{count} addresses"));
        }
        let mut rest = &bytes[fixed..];
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            if rest.len() < 2 {
                return Err("truncated address".into());
            }
            let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
            if len == 0 || len > MAX_ADDR_LEN || rest.len() < 2 + len {
                return Err("bad address length".into());
            }
            addrs.push(rest[2..2 + len].to_vec());
            rest = &rest[2 + len..];
        }
        if !rest.is_empty() {
            return Err("trailing bytes".into());
        }
        let successes = u32_at(9);
        Ok(CachedPeer {
            peer,
            addrs,
            last_seen: u64::from_be_bytes(last),
            successes,
            failures: u32_at(13),
            suite,
            source,
            // Older rows: a suite beside a success is the best evidence
            // they kept of a session.
            pq_proven: match flags {
                Some(f) => f & FLAG_PQ != 0,
                None => suite.is_some() && successes > 0,
            },
        })
    }
}

/// What happened with a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Connected (by our dial or theirs) at `now`, listening on `addrs`
    /// (replacing the known ones when not empty), with a PQ session of
    /// `suite` if known (a `None` keeps the suite seen before).
    Connected {
        /// Its listen addresses (multiaddr bytes).
        addrs: Vec<Vec<u8>>,
        /// The suite of its PQ session.
        suite: Option<Suite>,
        /// How the connection came about (kept only for a new entry).
        source: Source,
    },
    /// Its verified record (from the DHT or gossip) names `addrs` and
    /// `suite`. Not a success: nobody connected. A new entry is seen `now`;
    /// a known one keeps its addresses unless it has none.
    Learned {
        /// The record's addresses (multiaddr bytes).
        addrs: Vec<Vec<u8>>,
        /// The record's suite.
        suite: Suite,
        /// Where the record came from.
        source: Source,
        /// The peer that relayed it (a gossip neighbour), if another than
        /// its author: at most [`NEW_PER_SOURCE_PER_MINUTE`] new entries a
        /// minute come through one.
        via: Option<PeerId>,
    },
    /// Our dial failed. Only counted for a peer already in the cache.
    DialFailed,
}

/// The peer cache over a [`StateDb`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PeerCache {
    db: StateDb,
    /// New entries per source in the current minute.
    added: Arc<Mutex<Additions>>,
}

/// How many new entries each source added in the minute that began at
/// `since` (unix seconds).
#[derive(Debug, Default)]
struct Additions {
    since: u64,
    by_source: HashMap<PeerId, u32>,
}

impl Additions {
    /// Whether `source` may add one more entry at `now` (and counts it).
    fn allow(&mut self, source: PeerId, now: u64) -> bool {
        if now.saturating_sub(self.since) >= 60 {
            self.since = now;
            self.by_source.clear();
        }
        if !self.by_source.contains_key(&source) && self.by_source.len() >= MAX_SOURCES {
            return false;
        }
        let n = self.by_source.entry(source).or_insert(0);
        if *n >= NEW_PER_SOURCE_PER_MINUTE {
            return false;
        }
        *n += 1;
        true
    }
}

fn redb(db: &StateDb) -> impl Fn(&dyn std::fmt::Display) -> DbError + '_ {
    move |e| DbError::Redb {
        path: db.path().to_path_buf(),
        reason: e.to_string(),
    }
}

/// An entry with what the node knows of it.
struct Ranked {
    entry: CachedPeer,
    evidence: Evidence,
}

/// Order of usefulness: usable before expired, more evidence, higher
/// success rate, then more recently seen (`Less`: `a` first).
fn better(a: &Ranked, b: &Ranked, now: u64) -> std::cmp::Ordering {
    b.entry
        .usable(now)
        .cmp(&a.entry.usable(now))
        .then(b.evidence.cmp(&a.evidence))
        .then(b.entry.success_rate().total_cmp(&a.entry.success_rate()))
        .then(b.entry.last_seen.cmp(&a.entry.last_seen))
}

impl PeerCache {
    /// The cache in `db`.
    pub fn new(db: StateDb) -> PeerCache {
        PeerCache {
            db,
            added: Arc::default(),
        }
    }

    /// Whether a key of `peer` is pinned (an unreadable pin store counts
    /// as not pinned: the cache only ranks with it).
    fn pinned(&self, peer: &PeerId) -> bool {
        self.db.pins(u64::MAX).is_pinned(peer).unwrap_or(false)
    }

    fn ranked(&self, entry: CachedPeer) -> Ranked {
        let evidence = entry.evidence(self.pinned(&entry.peer));
        Ranked { entry, evidence }
    }

    /// Applies outcomes in one write transaction (one fsync for a batch).
    pub fn record(&self, outcomes: &[(PeerId, Outcome)], now: u64) -> Result<(), DbError> {
        let err = redb(&self.db);
        let txn = self.db.database().begin_write().map_err(|e| err(&e))?;
        {
            let mut table = txn.open_table(PEERS).map_err(|e| err(&e))?;
            for (peer, outcome) in outcomes {
                let key = peer.to_bytes();
                let stored = table
                    .get(&key[..])
                    .map_err(|e| err(&e))?
                    .map(|v| CachedPeer::decode(*peer, v.value()).ok());
                let is_new = stored.is_none();
                if is_new
                    && let Outcome::Learned { via: Some(via), .. } = outcome
                    && !self
                        .added
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .allow(*via, now)
                {
                    continue;
                }
                let entry = match (stored.flatten(), outcome) {
                    (None, Outcome::DialFailed) => continue,
                    (Some(mut e), Outcome::DialFailed) => {
                        e.failures = e.failures.saturating_add(1);
                        e
                    }
                    // Nothing to dial: no new entry.
                    (None, Outcome::Learned { addrs, .. } | Outcome::Connected { addrs, .. })
                        if addrs.is_empty() =>
                    {
                        continue;
                    }
                    (
                        old,
                        Outcome::Learned {
                            addrs,
                            suite,
                            source,
                            ..
                        },
                    ) => {
                        let mut e = old.unwrap_or_else(|| CachedPeer::new(*peer, now, *source));
                        if e.addrs.is_empty() {
                            e.addrs = addrs.clone();
                        }
                        e.suite.get_or_insert(*suite);
                        e
                    }
                    (
                        old,
                        Outcome::Connected {
                            addrs,
                            suite,
                            source,
                        },
                    ) => {
                        let mut e = old.unwrap_or_else(|| CachedPeer::new(*peer, now, *source));
                        e.successes = e.successes.saturating_add(1);
                        e.last_seen = e.last_seen.max(now);
                        if !addrs.is_empty() {
                            e.addrs = addrs.clone();
                        }
                        if suite.is_some() {
                            e.suite = *suite;
                            e.pq_proven = true;
                        }
                        e
                    }
                };
                if is_new
                    && table.len().map_err(|e| err(&e))? >= MAX_PEERS as u64
                    && !self.evict_one(&mut table, &self.ranked(entry.clone()), now, &err)?
                {
                    // Everything held is better known than the newcomer.
                    continue;
                }
                table
                    .insert(&key[..], &entry.encode()[..])
                    .map_err(|e| err(&e))?;
            }
        }
        txn.commit().map_err(|e| err(&e))?;
        Ok(())
    }

    /// The usable peers at `now`, most useful first, at most `limit`.
    pub fn best(&self, now: u64, limit: usize) -> Result<Vec<CachedPeer>, DbError> {
        let mut all: Vec<Ranked> = self
            .all()?
            .into_iter()
            .filter(|p| p.usable(now))
            .map(|p| self.ranked(p))
            .collect();
        all.sort_by(|a, b| better(a, b, now));
        all.truncate(limit);
        Ok(all.into_iter().map(|r| r.entry).collect())
    }

    /// One peer's entry.
    pub fn get(&self, peer: &PeerId) -> Result<Option<CachedPeer>, DbError> {
        let err = redb(&self.db);
        let txn = self.db.database().begin_read().map_err(|e| err(&e))?;
        let table = match txn.open_table(PEERS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(&e)),
        };
        let key = peer.to_bytes();
        Ok(table
            .get(&key[..])
            .map_err(|e| err(&e))?
            .and_then(|v| CachedPeer::decode(*peer, v.value()).ok()))
    }

    /// Entries in the cache (usable or not).
    pub fn len(&self) -> Result<u64, DbError> {
        let err = redb(&self.db);
        let txn = self.db.database().begin_read().map_err(|e| err(&e))?;
        match txn.open_table(PEERS) {
            Ok(t) => t.len().map_err(|e| err(&e)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(err(&e)),
        }
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> Result<bool, DbError> {
        Ok(self.len()? == 0)
    }

    /// Removes the least useful entry (an undecodable row first) to make
    /// room for `newcomer`; none when every entry is usable and better
    /// known than it. Returns whether there is room now.
    fn evict_one(
        &self,
        table: &mut redb::Table<&[u8], &[u8]>,
        newcomer: &Ranked,
        now: u64,
        err: &impl Fn(&dyn std::fmt::Display) -> DbError,
    ) -> Result<bool, DbError> {
        let mut worst: Option<(Vec<u8>, Option<Ranked>)> = None;
        for row in table.iter().map_err(|e| err(&e))? {
            let (k, v) = row.map_err(|e| err(&e))?;
            let key = k.value().to_vec();
            let decoded = PeerId::from_bytes(&key)
                .ok()
                .and_then(|p| CachedPeer::decode(p, v.value()).ok());
            let Some(entry) = decoded else {
                worst = Some((key, None));
                break;
            };
            let entry = self.ranked(entry);
            let replace = match &worst {
                None => true,
                Some((_, Some(w))) => better(&entry, w, now) == std::cmp::Ordering::Greater,
                Some((_, None)) => false,
            };
            if replace {
                worst = Some((key, Some(entry)));
            }
        }
        match worst {
            Some((_, Some(w))) if w.entry.usable(now) && w.evidence > newcomer.evidence => {
                Ok(false)
            }
            Some((key, _)) => {
                table.remove(&key[..]).map_err(|e| err(&e))?;
                Ok(true)
            }
            None => Ok(true),
        }
    }

    fn all(&self) -> Result<Vec<CachedPeer>, DbError> {
        let err = redb(&self.db);
        let txn = self.db.database().begin_read().map_err(|e| err(&e))?;
        let table = match txn.open_table(PEERS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(err(&e)),
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| err(&e))? {
            let (k, v) = row.map_err(|e| err(&e))?;
            let Ok(peer) = PeerId::from_bytes(k.value()) else {
                continue;
            };
            if let Ok(p) = CachedPeer::decode(peer, v.value()) {
                out.push(p);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> (tempfile::TempDir, PeerCache) {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path(), false).unwrap();
        (dir, PeerCache::new(db))
    }

    fn connected(addr: &[u8], suite: Option<Suite>) -> Outcome {
        Outcome::Connected {
            addrs: vec![addr.to_vec()],
            suite,
            source: Source::Inbound,
        }
    }

    #[test]
    fn outcomes_update_rate_suite_and_addresses() {
        let (_d, c) = cache();
        let p = PeerId::random();
        c.record(&[(p, Outcome::DialFailed)], 10).unwrap();
        assert!(c.get(&p).unwrap().is_none(), "a failure alone adds nothing");
        c.record(&[(p, connected(b"a1", Some(Suite::Mlkem1024Mldsa87)))], 10)
            .unwrap();
        c.record(&[(p, Outcome::DialFailed)], 11).unwrap();
        c.record(&[(p, connected(b"a2", None))], 12).unwrap();
        let e = c.get(&p).unwrap().unwrap();
        assert_eq!((e.successes, e.failures, e.last_seen), (2, 1, 12));
        assert_eq!(e.suite, Some(Suite::Mlkem1024Mldsa87), "kept");
        assert_eq!(e.addrs, vec![b"a2".to_vec()]);
        assert!((e.success_rate() - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn best_first_and_expired_ones_are_not_offered() {
        let (_d, c) = cache();
        let (good, flaky, old) = (PeerId::random(), PeerId::random(), PeerId::random());
        c.record(&[(old, connected(b"o", None))], 1).unwrap();
        let now = 1 + TTL_SECS + 10;
        c.record(
            &[
                (good, connected(b"g", Some(Suite::Kyber1024Dilithium5))),
                (flaky, connected(b"f", None)),
                (flaky, Outcome::DialFailed),
            ],
            now,
        )
        .unwrap();
        let best: Vec<PeerId> = c.best(now, 10).unwrap().iter().map(|p| p.peer).collect();
        assert_eq!(best, vec![good, flaky]);
        assert_eq!(c.len().unwrap(), 3);
    }

    #[test]
    fn bounded_the_least_useful_goes_first() {
        let (_d, c) = cache();
        let now = 1_000_000;
        let peers: Vec<PeerId> = (0..MAX_PEERS).map(|_| PeerId::random()).collect();
        let batch: Vec<_> = peers.iter().map(|p| (*p, connected(b"x", None))).collect();
        c.record(&batch, now).unwrap();
        // One of them fails: it is now the least useful.
        c.record(&[(peers[7], Outcome::DialFailed)], now).unwrap();
        let newcomer = PeerId::random();
        c.record(&[(newcomer, connected(b"n", None))], now).unwrap();
        assert_eq!(c.len().unwrap(), MAX_PEERS as u64);
        assert!(c.get(&peers[7]).unwrap().is_none());
        assert!(c.get(&newcomer).unwrap().is_some());
    }

    #[test]
    fn codec_is_strict_and_bounded() {
        let p = PeerId::random();
        let e = CachedPeer {
            peer: p,
            addrs: vec![vec![1; MAX_ADDR_LEN], vec![2; MAX_ADDR_LEN + 1], vec![3]],
            last_seen: 9,
            successes: 1,
            failures: 2,
            suite: Some(Suite::Kyber1024Dilithium5),
            source: Source::Gossip,
            pq_proven: true,
        };
        let bytes = e.encode();
        let back = CachedPeer::decode(p, &bytes).unwrap();
        assert_eq!(
            back.addrs,
            vec![vec![1; MAX_ADDR_LEN], vec![3]],
            "oversized dropped"
        );
        for cut in 0..bytes.len() {
            assert!(
                CachedPeer::decode(p, &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(CachedPeer::decode(p, &longer).is_err());
        let mut bad_suite = bytes.clone();
        bad_suite[18] = 9;
        assert!(CachedPeer::decode(p, &bad_suite).is_err());
        assert_eq!(back.source, Source::Gossip);
        assert!(back.pq_proven);
        // A version-2 row: no flags byte; a version-1 row: no source either.
        let mut v2 = bytes[..20].to_vec();
        v2[0] = 2;
        v2.extend_from_slice(&bytes[21..]);
        let old = CachedPeer::decode(p, &v2).unwrap();
        assert_eq!(old.source, Source::Gossip);
        assert!(old.pq_proven, "a suite beside a success");
        let mut v1 = bytes[..19].to_vec();
        v1[0] = 1;
        v1.extend_from_slice(&bytes[21..]);
        let old = CachedPeer::decode(p, &v1).unwrap();
        assert_eq!(old.source, Source::Unknown);
        assert_eq!(old.addrs, back.addrs);
    }

    #[test]
    fn learned_records_add_peers_without_counting_a_success() {
        let (_d, c) = cache();
        let p = PeerId::random();
        let learned = |addr: &[u8]| Outcome::Learned {
            addrs: if addr.is_empty() {
                vec![]
            } else {
                vec![addr.to_vec()]
            },
            suite: Suite::Mlkem1024Mldsa87,
            source: Source::Gossip,
            via: None,
        };
        c.record(&[(p, learned(b""))], 5).unwrap();
        assert!(c.get(&p).unwrap().is_none(), "no address: nothing to dial");
        c.record(&[(p, learned(b"g1"))], 5).unwrap();
        let e = c.get(&p).unwrap().unwrap();
        assert_eq!((e.successes, e.failures, e.last_seen), (0, 0, 5));
        assert_eq!(e.source, Source::Gossip);
        assert_eq!(e.suite, Some(Suite::Mlkem1024Mldsa87));
        // A connection later keeps the first source, takes its addresses.
        c.record(&[(p, connected(b"c1", None))], 6).unwrap();
        c.record(&[(p, learned(b"g2"))], 7).unwrap();
        let e = c.get(&p).unwrap().unwrap();
        assert_eq!(e.source, Source::Gossip);
        assert_eq!(
            e.addrs,
            vec![b"c1".to_vec()],
            "a record does not replace known addresses"
        );
        assert_eq!(e.successes, 1);
    }

    fn learned_via(via: PeerId) -> Outcome {
        Outcome::Learned {
            addrs: vec![b"l".to_vec()],
            suite: Suite::Mlkem1024Mldsa87,
            source: Source::Gossip,
            via: Some(via),
        }
    }

    /// Pins a key of `peer` in the cache's database.
    fn pin(c: &PeerCache, peer: PeerId) {
        c.db.pins(u64::MAX)
            .add_operator(&peer, None, crate::Fingerprint::of_bytes(b"key"), 1)
            .unwrap();
    }

    #[test]
    fn evidence_ranks_before_success_rate() {
        let (_d, c) = cache();
        let now = 1_000;
        let (pinned, proven, fresh) = (PeerId::random(), PeerId::random(), PeerId::random());
        // The pinned PQ peer and the proven one each failed once since.
        for p in [pinned, proven] {
            c.record(
                &[(p, connected(b"p", Some(Suite::Kyber1024Dilithium5)))],
                now,
            )
            .unwrap();
            c.record(&[(p, Outcome::DialFailed)], now).unwrap();
        }
        pin(&c, pinned);
        let anonymous: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        for p in &anonymous {
            c.record(&[(*p, connected(b"a", None))], now + 5).unwrap();
        }
        c.record(&[(fresh, learned_via(PeerId::random()))], now + 9)
            .unwrap();
        let best: Vec<PeerId> = c
            .best(now + 10, 10)
            .unwrap()
            .iter()
            .map(|e| e.peer)
            .collect();
        assert_eq!(&best[..2], &[pinned, proven]);
        assert_eq!(best.last(), Some(&fresh), "only learned of: last");
    }

    #[test]
    fn unproven_newcomers_never_evict_proven_entries() {
        let (_d, c) = cache();
        let now = 1_000_000;
        let proven: Vec<_> = (0..MAX_PEERS)
            .map(|_| {
                (
                    PeerId::random(),
                    connected(b"x", Some(Suite::Mlkem1024Mldsa87)),
                )
            })
            .collect();
        c.record(&proven, now).unwrap();
        // A flood of learned identities: none gets in.
        let flood: Vec<_> = (0..50)
            .map(|_| (PeerId::random(), learned_via(PeerId::random())))
            .collect();
        c.record(&flood, now).unwrap();
        assert_eq!(c.len().unwrap(), MAX_PEERS as u64);
        for (p, _) in &flood {
            assert!(c.get(p).unwrap().is_none());
        }
        // A peer that proved PQ takes the place of the least useful one.
        let newcomer = PeerId::random();
        c.record(&[(proven[3].0, Outcome::DialFailed)], now)
            .unwrap();
        c.record(
            &[(newcomer, connected(b"n", Some(Suite::Mlkem1024Mldsa87)))],
            now,
        )
        .unwrap();
        assert!(c.get(&newcomer).unwrap().is_some());
        assert!(c.get(&proven[3].0).unwrap().is_none());
    }

    #[test]
    fn one_source_adds_at_most_so_many_new_entries_a_minute() {
        let (_d, c) = cache();
        let (relay, other) = (PeerId::random(), PeerId::random());
        let now = 5_000;
        let batch: Vec<_> = (0..100)
            .map(|_| (PeerId::random(), learned_via(relay)))
            .collect();
        c.record(&batch, now).unwrap();
        assert_eq!(c.len().unwrap(), u64::from(NEW_PER_SOURCE_PER_MINUTE));
        // Another source is counted on its own; a minute later, again.
        c.record(&[(PeerId::random(), learned_via(other))], now)
            .unwrap();
        c.record(&[(PeerId::random(), learned_via(relay))], now + 60)
            .unwrap();
        assert_eq!(c.len().unwrap(), u64::from(NEW_PER_SOURCE_PER_MINUTE) + 2);
    }
}
