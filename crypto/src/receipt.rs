//! Delivery receipts (PROTOCOL.md §7 and §8.2, rev 4).
//!
//! ```text
//! receipt body = u64 message id || u8 status
//! ```
//!
//! The receiver of a whole message (or of the first fragment it refuses)
//! answers with one receipt: inside a record of kind 4 on a PQ session
//! (§6), framed `u32 length || body` on the classical stream (§8.2). Only
//! status 0 means delivered.

use std::fmt;

/// Length of a receipt body; a receipt of any other length is an error.
pub const RECEIPT_LEN: usize = 9;

/// What became of a message (the receipt's status byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReceiptStatus {
    /// 0: in the receiver's inbox. The only status that means delivered.
    Stored,
    /// 1: the receiver's inbox (or the sender's share of it, or of its
    /// classical streams) is full.
    InboxFull,
    /// 2: larger than the receiver accepts.
    TooLarge,
    /// 3: refused by the receiver's policy.
    Refused,
    /// 4: the message did not complete (its partial message timed out, or
    /// the session ended first).
    Incomplete,
    /// Any other value: refused, for a reason this version does not name.
    Unspecified(u8),
}

impl ReceiptStatus {
    /// The status of byte `b`.
    pub const fn from_byte(b: u8) -> Self {
        match b {
            0 => ReceiptStatus::Stored,
            1 => ReceiptStatus::InboxFull,
            2 => ReceiptStatus::TooLarge,
            3 => ReceiptStatus::Refused,
            4 => ReceiptStatus::Incomplete,
            other => ReceiptStatus::Unspecified(other),
        }
    }

    /// The byte sent for this status.
    pub const fn to_byte(self) -> u8 {
        match self {
            ReceiptStatus::Stored => 0,
            ReceiptStatus::InboxFull => 1,
            ReceiptStatus::TooLarge => 2,
            ReceiptStatus::Refused => 3,
            ReceiptStatus::Incomplete => 4,
            ReceiptStatus::Unspecified(b) => b,
        }
    }

    /// Whether the message was delivered (status 0).
    pub const fn is_delivered(self) -> bool {
        matches!(self, ReceiptStatus::Stored)
    }

    /// A stable, low-cardinality name: `stored`, `inbox-full`, `too-large`,
    /// `refused`, `incomplete` or `unspecified`.
    pub const fn name(self) -> &'static str {
        match self {
            ReceiptStatus::Stored => "stored",
            ReceiptStatus::InboxFull => "inbox-full",
            ReceiptStatus::TooLarge => "too-large",
            ReceiptStatus::Refused => "refused",
            ReceiptStatus::Incomplete => "incomplete",
            ReceiptStatus::Unspecified(_) => "unspecified",
        }
    }
}

impl fmt::Display for ReceiptStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReceiptStatus::Unspecified(b) => write!(f, "unspecified ({b})"),
            other => f.write_str(other.name()),
        }
    }
}

/// One receipt: which message, and what became of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The sender's message id (§7).
    pub message_id: u64,
    /// What became of it.
    pub status: ReceiptStatus,
}

/// A receipt body that is not exactly [`RECEIPT_LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("receipt of {0} bytes, not {RECEIPT_LEN}")]
pub struct BadReceipt(pub usize);

impl Receipt {
    /// The 9-byte body.
    pub fn encode(&self) -> [u8; RECEIPT_LEN] {
        let mut b = [0u8; RECEIPT_LEN];
        b[..8].copy_from_slice(&self.message_id.to_be_bytes());
        b[8] = self.status.to_byte();
        b
    }

    /// Parses a body; anything but exactly 9 bytes is an error.
    pub fn decode(body: &[u8]) -> Result<Self, BadReceipt> {
        let b: &[u8; RECEIPT_LEN] = body.try_into().map_err(|_| BadReceipt(body.len()))?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&b[..8]);
        Ok(Receipt {
            message_id: u64::from_be_bytes(id),
            status: ReceiptStatus::from_byte(b[8]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_byte_round_trips_and_only_zero_is_delivered() {
        for b in 0..=u8::MAX {
            let s = ReceiptStatus::from_byte(b);
            assert_eq!(s.to_byte(), b);
            assert_eq!(s.is_delivered(), b == 0);
            assert_eq!(matches!(s, ReceiptStatus::Unspecified(_)), b > 4);
        }
    }

    #[test]
    fn a_receipt_is_exactly_nine_bytes() {
        let r = Receipt {
            message_id: 0x0102_0304_0506_0708,
            status: ReceiptStatus::TooLarge,
        };
        let body = r.encode();
        assert_eq!(body, [1, 2, 3, 4, 5, 6, 7, 8, 2]);
        assert_eq!(Receipt::decode(&body), Ok(r));
        assert_eq!(Receipt::decode(&body[..8]), Err(BadReceipt(8)));
        assert_eq!(Receipt::decode(&[0; 10]), Err(BadReceipt(10)));
        assert_eq!(Receipt::decode(&[]), Err(BadReceipt(0)));
    }
}
