//! Kademlia schedules, sans-IO: when to run a Kademlia bootstrap
//! ([`KadBootstrap`]) and when to put our signed PQ records into the DHT
//! ([`Publisher`]). The event loop asks them on its 1 s tick and turns the
//! answers into `kad` calls; every decision is here and unit-tested.

use std::time::{Duration, Instant};

/// Kademlia bootstrap interval while fewer than `min_connected` peers are
/// connected.
pub const BOOTSTRAP_FAST: Duration = Duration::from_secs(60);
/// ... and once there are enough.
pub const BOOTSTRAP_SLOW: Duration = Duration::from_secs(300);
/// Our records are put again this often (new closest peers, lost ones),
/// and always before they expire.
pub const REPUBLISH: Duration = Duration::from_secs(3600);
/// A put that failed (no peer stored it) is retried after this, doubling.
pub const PUT_RETRY_MIN: Duration = Duration::from_secs(5);
/// ... up to this.
pub const PUT_RETRY_MAX: Duration = Duration::from_secs(300);
/// A record is put again at the latest this long before it expires.
pub const BEFORE_EXPIRY: Duration = Duration::from_secs(600);

/// When to run a Kademlia bootstrap query: soon after start, then every
/// [`BOOTSTRAP_FAST`] while too few peers are connected, every
/// [`BOOTSTRAP_SLOW`] once enough are.
#[derive(Debug)]
pub struct KadBootstrap {
    next: Instant,
}

impl KadBootstrap {
    /// The first query is due `first_after` from `now` (once listeners and
    /// the first dials had a moment).
    pub fn new(now: Instant, first_after: Duration) -> KadBootstrap {
        KadBootstrap {
            next: now + first_after,
        }
    }

    /// Whether a bootstrap query is due at `now`; if so the next one is
    /// scheduled.
    pub fn due(&mut self, now: Instant, connected: usize, min_connected: usize) -> bool {
        if now < self.next {
            return false;
        }
        let period = if connected < min_connected {
            BOOTSTRAP_FAST
        } else {
            BOOTSTRAP_SLOW
        };
        self.next = now + period;
        true
    }

    /// Brings the next query forward to `at` (e.g. the first connection).
    pub fn soon(&mut self, at: Instant) {
        self.next = self.next.min(at);
    }
}

/// One of our records to keep in the DHT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnRecord {
    /// `/pqnode/record/<suite>/<PeerId>`.
    pub key: Vec<u8>,
    /// The envelope.
    pub value: Vec<u8>,
    /// When it expires (unix seconds).
    pub expires_at: u64,
}

#[derive(Debug)]
enum PutState {
    Due(Instant),
    InFlight,
}

#[derive(Debug)]
struct Slot {
    record: OwnRecord,
    state: PutState,
    retry: Duration,
}

/// Keeps our records in the DHT: each is put when it is new or changed,
/// again every [`REPUBLISH`] (and at the latest [`BEFORE_EXPIRY`] before it
/// expires), and after a failure with back-off ([`PUT_RETRY_MIN`] doubling
/// to [`PUT_RETRY_MAX`]). One put per record at a time.
#[derive(Debug, Default)]
pub struct Publisher {
    slots: Vec<Slot>,
}

impl Publisher {
    /// Sets our records (all of them). A record whose bytes are unchanged
    /// keeps its schedule; a new or changed one is due now.
    pub fn set(&mut self, records: Vec<OwnRecord>, now: Instant) {
        let mut old = std::mem::take(&mut self.slots);
        for record in records {
            match old.iter().position(|s| s.record == record) {
                Some(i) => self.slots.push(old.swap_remove(i)),
                None => self.slots.push(Slot {
                    record,
                    state: PutState::Due(now),
                    retry: PUT_RETRY_MIN,
                }),
            }
        }
    }

    /// The records to put now (each is then in flight until
    /// [`Publisher::done`]).
    pub fn due(&mut self, now: Instant) -> Vec<OwnRecord> {
        let mut out = Vec::new();
        for s in &mut self.slots {
            if matches!(s.state, PutState::Due(at) if at <= now) {
                s.state = PutState::InFlight;
                out.push(s.record.clone());
            }
        }
        out
    }

    /// A put of `key` finished; `unix_now` is the wall clock (for expiry).
    pub fn done(&mut self, key: &[u8], stored: bool, now: Instant, unix_now: u64) {
        let Some(s) = self.slots.iter_mut().find(|s| s.record.key == key) else {
            return;
        };
        if stored {
            s.retry = PUT_RETRY_MIN;
            let left = Duration::from_secs(s.record.expires_at.saturating_sub(unix_now));
            let before_expiry = left.saturating_sub(BEFORE_EXPIRY).max(PUT_RETRY_MIN);
            s.state = PutState::Due(now + REPUBLISH.min(before_expiry));
        } else {
            s.state = PutState::Due(now + s.retry);
            s.retry = (s.retry * 2).min(PUT_RETRY_MAX);
        }
    }

    /// How many records it keeps.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it keeps none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, value: &str, expires_at: u64) -> OwnRecord {
        OwnRecord {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
            expires_at,
        }
    }

    #[test]
    fn bootstrap_is_fast_until_enough_peers_then_slow() {
        let t0 = Instant::now();
        let mut b = KadBootstrap::new(t0, Duration::from_secs(2));
        assert!(!b.due(t0, 0, 3));
        assert!(b.due(t0 + Duration::from_secs(2), 0, 3));
        assert!(!b.due(t0 + Duration::from_secs(61), 0, 3));
        assert!(b.due(t0 + Duration::from_secs(62), 3, 3));
        // Enough peers: the next one is 5 min later.
        assert!(!b.due(t0 + Duration::from_secs(62 + 299), 0, 3));
        assert!(b.due(t0 + Duration::from_secs(62 + 300), 0, 3));
        b.soon(t0 + Duration::from_secs(400));
        assert!(b.due(t0 + Duration::from_secs(400), 0, 3));
    }

    #[test]
    fn records_are_put_once_then_republished_before_expiry() {
        let t0 = Instant::now();
        let unix = 1_000_000;
        let mut p = Publisher::default();
        p.set(
            vec![rec("k1", "v1", unix + 7200), rec("k2", "v2", unix + 1200)],
            t0,
        );
        let due = p.due(t0);
        assert_eq!(due.len(), 2);
        assert!(p.due(t0).is_empty(), "in flight: not again");
        p.done(b"k1", true, t0, unix);
        p.done(b"k2", true, t0, unix);
        // k2 expires in 20 min: put again 10 min before, not after 1 h.
        assert!(p.due(t0 + Duration::from_secs(599)).is_empty());
        assert_eq!(p.due(t0 + Duration::from_secs(600))[0].key, b"k2");
        assert_eq!(p.due(t0 + REPUBLISH)[0].key, b"k1");
    }

    #[test]
    fn failures_back_off_and_changes_are_due_at_once() {
        let t0 = Instant::now();
        let mut p = Publisher::default();
        p.set(vec![rec("k", "v1", u64::MAX)], t0);
        assert_eq!(p.due(t0).len(), 1);
        p.done(b"k", false, t0, 0);
        assert!(p.due(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(p.due(t0 + Duration::from_secs(5)).len(), 1);
        p.done(b"k", false, t0 + Duration::from_secs(5), 0);
        assert!(p.due(t0 + Duration::from_secs(14)).is_empty());
        assert_eq!(p.due(t0 + Duration::from_secs(15)).len(), 1);
        p.done(b"k", true, t0 + Duration::from_secs(15), 0);
        // The same record again: its schedule stays.
        p.set(vec![rec("k", "v1", u64::MAX)], t0 + Duration::from_secs(16));
        assert!(p.due(t0 + Duration::from_secs(16)).is_empty());
        // A fresh record (new seq): due now.
        p.set(vec![rec("k", "v2", u64::MAX)], t0 + Duration::from_secs(17));
        assert_eq!(p.due(t0 + Duration::from_secs(17))[0].value, b"v2");
        // A result for a key we no longer keep changes nothing.
        p.done(b"gone", true, t0, 0);
        assert_eq!(p.len(), 1);
    }
}
