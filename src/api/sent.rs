//! Sends that did not wait (`POST /api/messages` with `"wait": false`):
//! each gets an id at once, runs in the background, and its outcome is
//! kept for `GET /api/messages/sent/{id}`. Bounded: at most
//! [`MAX_PENDING`] run at a time (beyond: `busy`), and the last
//! [`MAX_KEPT`] outcomes are remembered (the oldest finished one is
//! forgotten first).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::pq::Delivery;

/// Background sends running at once.
pub const MAX_PENDING: usize = 256;
/// Outcomes remembered.
pub const MAX_KEPT: usize = 4096;

/// What became of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Still running (waiting for a session, the write, or the receipt).
    Pending,
    /// The receiver's receipt said it stored the message.
    Delivered(Delivery),
    /// Not delivered: the HTTP status and error code a waiting send would
    /// have answered, and the message.
    Failed {
        /// HTTP status.
        status: u16,
        /// Error code (`no_receipt`, `inbox_full`, ...).
        code: &'static str,
        /// What happened.
        message: String,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    to: PeerId,
    size: usize,
    accepted_at: SystemTime,
    outcome: Outcome,
}

/// The background sends and their outcomes.
#[derive(Debug)]
pub struct SentLog {
    next: AtomicU64,
    pending: Arc<Semaphore>,
    entries: Mutex<BTreeMap<u64, Entry>>,
}

impl Default for SentLog {
    fn default() -> Self {
        SentLog {
            next: AtomicU64::new(1),
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
            entries: Mutex::new(BTreeMap::new()),
        }
    }
}

impl SentLog {
    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a send of `size` bytes to `to`: its id, and the permit to
    /// hold while it runs. `None` when [`MAX_PENDING`] are running.
    pub fn begin(&self, to: PeerId, size: usize) -> Option<(u64, OwnedSemaphorePermit)> {
        let permit = self.pending.clone().try_acquire_owned().ok()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries();
        while entries.len() >= MAX_KEPT {
            // At most MAX_PENDING of them are pending, fewer than MAX_KEPT.
            let oldest_done = entries
                .iter()
                .find(|(_, e)| e.outcome != Outcome::Pending)
                .map(|(id, _)| *id);
            match oldest_done {
                Some(old) => {
                    entries.remove(&old);
                }
                None => break,
            }
        }
        entries.insert(
            id,
            Entry {
                to,
                size,
                accepted_at: SystemTime::now(),
                outcome: Outcome::Pending,
            },
        );
        Some((id, permit))
    }

    /// Records the outcome of send `id`.
    pub fn finish(&self, id: u64, outcome: Outcome) {
        if let Some(e) = self.entries().get_mut(&id) {
            e.outcome = outcome;
        }
    }

    /// Send `id` as JSON, if it is remembered.
    pub fn json(&self, id: u64) -> Option<Value> {
        let e = self.entries().get(&id)?.clone();
        let accepted_ms = e
            .accepted_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut v = json!({
            "id": id,
            "to": e.to.to_base58(),
            "size": e.size,
            "acceptedAt": accepted_ms,
        });
        match e.outcome {
            Outcome::Pending => v["state"] = json!("pending"),
            Outcome::Delivered(d) => {
                v["state"] = json!("delivered");
                v["delivered"] = json!(true);
                v["security"] = json!(d.security.as_str());
                v["suite"] = json!(d.security.suite().map(|s| s.name()));
                if let Some(r) = d.security.classical_reason() {
                    v["reason"] = json!(r.as_str());
                }
                v["messageId"] = json!(d.message_id);
            }
            Outcome::Failed {
                status,
                code,
                message,
            } => {
                v["state"] = json!("failed");
                v["delivered"] = json!(false);
                v["error"] = json!({ "status": status, "code": code, "message": message });
            }
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_sends_are_bounded_and_old_outcomes_forgotten_first() {
        let log = SentLog::default();
        let to = PeerId::random();
        let mut held = Vec::new();
        for _ in 0..MAX_PENDING {
            held.push(log.begin(to, 1).expect("room"));
        }
        assert!(log.begin(to, 1).is_none(), "all running");
        let (first, _) = &held[0];
        let first = *first;
        log.finish(
            first,
            Outcome::Failed {
                status: 504,
                code: "no_receipt",
                message: "none within 10 s".into(),
            },
        );
        assert_eq!(
            log.json(first).expect("kept")["error"]["code"],
            "no_receipt"
        );
        held.clear();
        // Fill the log with finished sends: the oldest finished goes first.
        for _ in 0..MAX_KEPT {
            let (id, _permit) = log.begin(to, 1).expect("room");
            log.finish(id, Outcome::Pending);
            log.finish(
                id,
                Outcome::Failed {
                    status: 502,
                    code: "x",
                    message: String::new(),
                },
            );
        }
        assert!(log.json(first).is_none(), "forgotten");
        assert!(log.entries().len() <= MAX_KEPT);
    }
}
