//! Why something failed, as types: each reason the PQ layer counts or
//! reports is a variant here, with one stable name used for the metric
//! label (`reason="…"`) and in logs. Modules pass these, never strings.

use std::fmt;

use pqnode_crypto::handshake::HandshakeError;
use pqnode_crypto::receipt::ReceiptStatus;

/// Defines a reason enum: its variants, their stable names, `Display` and
/// the metric label encoding.
macro_rules! reasons {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $label:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every reason, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stable name (metric label, logs).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl prometheus_client::encoding::EncodeLabelValue for $name {
            fn encode(
                &self,
                encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
            ) -> Result<(), fmt::Error> {
                fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

reasons! {
    /// Why a PQ handshake failed (`pqnode_pq_handshake_failures{reason}`).
    HandshakeFailure {
        /// A handshake message could not be decoded.
        Decode => "decode",
        /// The peer answered Reject.
        RejectedByPeer => "rejected-by-peer",
        /// No suite both sides enable.
        NoCommonSuite => "no-common-suite",
        /// A message out of the protocol's order or shape.
        Protocol => "protocol",
        /// The peer offered a suite it is not pinned under.
        UnpinnedSuite => "unpinned-suite",
        /// The peer's signed record was refused.
        Record => "record",
        /// A transcript signature did not verify.
        Signature => "signature",
        /// A key-confirmation MAC did not verify.
        Mac => "mac",
        /// A low-order X25519 key.
        LowOrderKey => "low-order-key",
        /// This node failed (randomness, a key operation).
        Local => "local",
        /// The stream closed mid-handshake.
        StreamClosed => "stream-closed",
        /// Stream I/O failed.
        Io => "io",
        /// The handshake did not finish within its deadline.
        Timeout => "timeout",
        /// The remote does not speak the PQ protocol.
        Unsupported => "unsupported",
        /// The stream could not be opened.
        OpenStream => "open-stream",
        /// A key other than the pinned one, or no pinned suite enabled.
        KeyMismatch => "key-mismatch",
        /// No pin, and `pq.allow_unpinned = false`.
        Unpinned => "unpinned",
        /// This node answered Reject busy (§9).
        Busy => "busy",
        /// The peer answered Reject busy.
        PeerBusy => "peer-busy",
    }
}

impl From<&HandshakeError> for HandshakeFailure {
    fn from(e: &HandshakeError) -> Self {
        match e {
            HandshakeError::Decode(_) => HandshakeFailure::Decode,
            HandshakeError::Rejected(_) => HandshakeFailure::RejectedByPeer,
            HandshakeError::NoCommonSuite { .. } => HandshakeFailure::NoCommonSuite,
            HandshakeError::Protocol(_) => HandshakeFailure::Protocol,
            HandshakeError::UnpinnedSuite { .. } => HandshakeFailure::UnpinnedSuite,
            HandshakeError::Record(_) => HandshakeFailure::Record,
            HandshakeError::BadSignature => HandshakeFailure::Signature,
            HandshakeError::BadMac => HandshakeFailure::Mac,
            HandshakeError::LowOrderKey => HandshakeFailure::LowOrderKey,
            HandshakeError::Local(_) => HandshakeFailure::Local,
            // A kind added to the crypto crate later: counted as a
            // protocol failure until it gets a name here.
            _ => HandshakeFailure::Protocol,
        }
    }
}

reasons! {
    /// Why a PQ session ended on an error (`pqnode_pq_session_errors{reason}`).
    SessionError {
        /// The peer rejected our Fin (§5 rev 3).
        Rejected => "rejected",
        /// A partial message did not complete in time (§9 rev 3).
        PartialTimeout => "partial-timeout",
        /// The peer took nothing of what this node was writing for
        /// `limits.partial_message_timeout_secs`: it stopped reading.
        WriteStalled => "write-stalled",
        /// A record frame's length outside the allowed range.
        BadFrameLength => "bad-frame-length",
        /// A replayed, dropped or reordered record.
        UnexpectedSeq => "unexpected-seq",
        /// A record that did not authenticate.
        ForgedFrame => "forged-frame",
        /// A record of an unknown kind or a bad body.
        InvalidRecord => "invalid-record",
        /// A record after the peer's close.
        FrameAfterClose => "frame-after-close",
        /// Another record-layer error.
        RecordLayer => "record-layer",
        /// A fragment breaking §7's order.
        BadFragment => "bad-fragment",
    }
}

reasons! {
    /// What was wrong with a malformed inbound message
    /// (`pqnode_pq_malformed_messages{reason}`).
    Malformed {
        /// A frame length outside the allowed range.
        Frame => "frame",
        /// A bad fragment header or sequence.
        Fragment => "fragment",
        /// A classical message not whole within
        /// `limits.partial_message_timeout_secs`.
        Incomplete => "incomplete",
    }
}

reasons! {
    /// Why a sent message was not delivered
    /// (`pqnode_pq_messages_undelivered{reason}`): its receipt's status, or
    /// no receipt.
    Undelivered {
        /// Receipt status 1.
        InboxFull => "inbox-full",
        /// Receipt status 2.
        TooLarge => "too-large",
        /// Receipt status 3.
        Refused => "refused",
        /// Receipt status 4.
        Incomplete => "incomplete",
        /// Another receipt status.
        Unspecified => "unspecified",
        /// No receipt within the delivery timeout.
        NoReceipt => "no-receipt",
    }
}

impl Undelivered {
    /// The reason a receipt with `status` gives (`None`: stored).
    pub fn of(status: ReceiptStatus) -> Option<Self> {
        match status {
            ReceiptStatus::Stored => None,
            ReceiptStatus::InboxFull => Some(Undelivered::InboxFull),
            ReceiptStatus::TooLarge => Some(Undelivered::TooLarge),
            ReceiptStatus::Refused => Some(Undelivered::Refused),
            ReceiptStatus::Incomplete => Some(Undelivered::Incomplete),
            ReceiptStatus::Unspecified(_) => Some(Undelivered::Unspecified),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_match_the_crypto_errors_and_receipts() {
        fn unique(names: impl Iterator<Item = &'static str>) {
            let mut seen = HashSet::new();
            for n in names {
                assert!(seen.insert(n), "{n} twice");
            }
        }
        unique(HandshakeFailure::ALL.iter().map(|r| r.as_str()));
        unique(SessionError::ALL.iter().map(|r| r.as_str()));
        unique(Malformed::ALL.iter().map(|r| r.as_str()));
        unique(Undelivered::ALL.iter().map(|r| r.as_str()));
        // The crypto crate's own names stay the labels they always were.
        for e in [
            HandshakeError::BadSignature,
            HandshakeError::BadMac,
            HandshakeError::LowOrderKey,
        ] {
            assert_eq!(HandshakeFailure::from(&e).as_str(), e.name());
        }
        for status in [
            ReceiptStatus::InboxFull,
            ReceiptStatus::TooLarge,
            ReceiptStatus::Refused,
            ReceiptStatus::Incomplete,
            ReceiptStatus::Unspecified(9),
        ] {
            assert_eq!(
                Undelivered::of(status).map(|u| u.as_str()),
                Some(status.name())
            );
        }
        assert_eq!(Undelivered::of(ReceiptStatus::Stored), None);
    }
}
