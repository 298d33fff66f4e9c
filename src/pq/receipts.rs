//! Delivery receipts (PROTOCOL.md §7, §8.2, rev 4): the messages of one peer
//! that wait for theirs.
//!
//! A message is in flight from the moment its first frame is sealed (so a
//! fast receipt always finds it) until its receipt arrives, its sender stops
//! waiting (the delivery timeout), or the peer disconnects (its entry in the
//! peer table, and with it this map, is dropped: every waiter learns at once
//! that no receipt will come). Receipts may arrive on any session of the
//! peer: a receiver answers on its current session, which after a
//! re-handshake is not the one the message came on.

use std::collections::HashMap;

use pqnode_crypto::receipt::ReceiptStatus;
use tokio::sync::oneshot;

/// Messages awaiting a receipt per peer; a send beyond it is `busy`.
pub const IN_FLIGHT_PER_PEER: usize = 1024;

/// Receipts queued for one session's writer; beyond it a receipt is dropped
/// and counted (its sender then times out: never reported delivered).
pub const RECEIPT_QUEUE: usize = 4096;

/// One peer's messages awaiting a receipt.
#[derive(Default)]
pub(crate) struct InFlight {
    waiting: HashMap<u64, oneshot::Sender<ReceiptStatus>>,
}

impl InFlight {
    /// Registers message `id`; false when the peer has too many in flight.
    pub fn insert(&mut self, id: u64, tx: oneshot::Sender<ReceiptStatus>) -> bool {
        if self.waiting.len() >= IN_FLIGHT_PER_PEER {
            return false;
        }
        self.waiting.insert(id, tx);
        true
    }

    /// Hands `status` to the waiter of message `id`. False for a receipt of
    /// no message in flight (to be ignored and counted, §7).
    pub fn resolve(&mut self, id: u64, status: ReceiptStatus) -> bool {
        match self.waiting.remove(&id) {
            Some(tx) => {
                // The waiter may have given up this very moment: the receipt
                // still matched a message that was in flight.
                let _ = tx.send(status);
                true
            }
            None => false,
        }
    }

    /// The sender of message `id` stopped waiting.
    pub fn forget(&mut self, id: u64) {
        self.waiting.remove(&id);
    }

    /// How many messages await a receipt.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_reaches_its_waiter_once_and_unknown_ids_do_not_match() {
        let mut f = InFlight::default();
        let (tx, mut rx) = oneshot::channel();
        assert!(f.insert(7, tx));
        assert!(!f.resolve(8, ReceiptStatus::Stored), "no message 8");
        assert!(f.resolve(7, ReceiptStatus::InboxFull));
        assert_eq!(rx.try_recv(), Ok(ReceiptStatus::InboxFull));
        assert!(!f.resolve(7, ReceiptStatus::Stored), "answered already");
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn in_flight_messages_are_bounded_and_forgotten_on_timeout() {
        let mut f = InFlight::default();
        let mut keep = Vec::new();
        for id in 0..IN_FLIGHT_PER_PEER as u64 {
            let (tx, rx) = oneshot::channel();
            assert!(f.insert(id, tx));
            keep.push(rx);
        }
        let (tx, _rx) = oneshot::channel();
        assert!(!f.insert(u64::MAX, tx), "full");
        f.forget(0);
        let (tx, _rx) = oneshot::channel();
        assert!(f.insert(u64::MAX, tx));
        assert!(!f.resolve(0, ReceiptStatus::Stored), "forgotten");
    }

    #[test]
    fn dropping_the_map_tells_every_waiter() {
        let mut f = InFlight::default();
        let (tx, mut rx) = oneshot::channel();
        f.insert(1, tx);
        drop(f);
        assert_eq!(rx.try_recv(), Err(oneshot::error::TryRecvError::Closed));
    }
}
