//! At most one identical log line per peer per 10 s (§9 rev 3).

use super::*;

/// At most one identical log line per peer per 10 s (§9 rev 3); the rest
/// are counted, and the next line that gets through says how many were left
/// out. Bounded: forgets everything when full.
#[derive(Default)]
pub(super) struct LogLimiter {
    /// Per (peer, kind): the last line logged and the lines left out since.
    last: std::collections::HashMap<(PeerId, &'static str), (std::time::Instant, u64)>,
}

const LOG_INTERVAL: Duration = Duration::from_secs(10);
const LOG_LIMITER_MAX: usize = 4096;

impl LogLimiter {
    /// `Some(n)`: log now, `n` such lines were left out since the last one;
    /// `None`: leave this one out.
    pub(super) fn allow(
        &mut self,
        peer: PeerId,
        what: &'static str,
        now: std::time::Instant,
    ) -> Option<u64> {
        if self.last.len() >= LOG_LIMITER_MAX && !self.last.contains_key(&(peer, what)) {
            self.last
                .retain(|_, (t, _)| now.duration_since(*t) < LOG_INTERVAL);
            if self.last.len() >= LOG_LIMITER_MAX {
                self.last.clear();
            }
        }
        match self.last.get_mut(&(peer, what)) {
            Some((t, left_out)) if now.duration_since(*t) < LOG_INTERVAL => {
                *left_out += 1;
                None
            }
            Some((t, left_out)) => {
                *t = now;
                Some(std::mem::take(left_out))
            }
            None => {
                self.last.insert((peer, what), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// §9 rev 3: a peer that causes 10,000 identical lines within 10 s gets
    /// one logged; the next one after the interval says 9,999 were left out.
    #[test]
    fn a_flood_of_identical_lines_is_one_line_and_a_count() {
        let mut limiter = LogLimiter::default();
        let (peer, other) = (PeerId::random(), PeerId::random());
        let t0 = std::time::Instant::now();
        let logged = (0..10_000u64)
            .filter(|i| {
                limiter
                    .allow(peer, "bad-frame", t0 + Duration::from_micros(*i))
                    .is_some()
            })
            .count();
        assert_eq!(logged, 1);
        // Another peer, or another kind of line, is not held back.
        assert_eq!(limiter.allow(other, "bad-frame", t0), Some(0));
        assert_eq!(limiter.allow(peer, "refused", t0), Some(0));
        // After the interval: logged again, with what was left out.
        let later = t0 + LOG_INTERVAL + Duration::from_millis(1);
        assert_eq!(limiter.allow(peer, "bad-frame", later), Some(9_999));
        assert_eq!(limiter.allow(peer, "bad-frame", later), None);
    }

    #[test]
    fn the_log_limiter_is_bounded() {
        let mut limiter = LogLimiter::default();
        let t0 = std::time::Instant::now();
        for _ in 0..(LOG_LIMITER_MAX + 10) {
            limiter.allow(PeerId::random(), "x", t0);
        }
        assert!(limiter.last.len() <= LOG_LIMITER_MAX);
    }
}
