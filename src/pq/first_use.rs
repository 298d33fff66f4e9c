//! First-use pins per source network (issue 29, item 9).
//!
//! The store takes at most 100,000 first-use pins (§9 rev 3); beyond that
//! every new peer stays unpinned. Handshakes from throwaway identities cost
//! an attacker little, so one network could spend the whole budget. Each
//! network (an IPv4 /24, an IPv6 /64) therefore makes at most
//! `per_hour` new first-use pins an hour; beyond, the session goes on
//! unpinned, as at the store's limit, and is counted
//! (`pqnode_pq_pins_source_limited`). Operator pins are never limited.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use crate::node::addr_policy::Network;

/// Networks whose hour is tracked at once.
pub const MAX_NETWORKS: usize = 4096;
/// The window.
const HOUR: Duration = Duration::from_secs(3600);

/// The per-network budget of new first-use pins.
#[derive(Debug)]
pub struct FirstUseRate {
    per_hour: u32,
    nets: Mutex<HashMap<Network, (Instant, u32)>>,
}

impl FirstUseRate {
    /// At most `per_hour` new first-use pins per network an hour.
    pub fn new(per_hour: u32) -> Self {
        FirstUseRate {
            per_hour,
            nets: Mutex::default(),
        }
    }

    /// Takes one pin from `net`'s budget at `now`, if it has one left. A
    /// full table forgets networks whose hour is over; when every tracked
    /// one is recent, a new network is refused (the session goes on
    /// unpinned) rather than forgetting a busy one.
    pub fn take(&self, net: Network, now: Instant) -> bool {
        let mut nets = self.nets.lock().unwrap_or_else(PoisonError::into_inner);
        if !nets.contains_key(&net) && nets.len() >= MAX_NETWORKS {
            nets.retain(|_, (since, _)| now.saturating_duration_since(*since) < HOUR);
            if nets.len() >= MAX_NETWORKS {
                return false;
            }
        }
        let (since, used) = nets.entry(net).or_insert((now, 0));
        if now.saturating_duration_since(*since) >= HOUR {
            *since = now;
            *used = 0;
        }
        if *used >= self.per_hour {
            return false;
        }
        *used += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_network_gets_its_share_an_hour() {
        let r = FirstUseRate::new(3);
        let (a, b) = (Network::V4([10, 0, 0]), Network::V4([10, 0, 1]));
        let t = Instant::now();
        assert!((0..3).all(|_| r.take(a, t)));
        assert!(!r.take(a, t), "its share is spent");
        assert!(r.take(b, t), "another network is not");
        assert!(r.take(a, t + HOUR), "an hour later, again");
    }

    #[test]
    fn the_table_is_bounded() {
        let r = FirstUseRate::new(1);
        let t = Instant::now();
        for i in 0..MAX_NETWORKS as u32 {
            let [_, a, b, c] = i.to_be_bytes();
            assert!(r.take(Network::V4([a, b, c]), t));
        }
        assert!(!r.take(Network::V6([1; 8]), t), "full of recent ones");
        assert!(r.take(Network::V6([1; 8]), t + HOUR), "the old ones go");
    }
}
