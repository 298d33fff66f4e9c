//! What the connection trimmer may close: the PQ layer's view of a peer.

use std::time::Duration;

use libp2p::PeerId;

use super::{PqLayer, PqStatus};

/// Peers that exchanged messages this recently are never trimmed.
pub const TRIM_PROTECT_ACTIVE: Duration = Duration::from_secs(300);

impl crate::discovery::trim::TrimPolicy for PqLayer {
    /// Protected: a live PQ session to a pinned key, or messages within
    /// [`TRIM_PROTECT_ACTIVE`]; useful: another PQ session.
    fn protection(&self, peer: &PeerId) -> crate::discovery::trim::Protection {
        use crate::discovery::trim::Protection;
        let (pq, recent) = match self.inner.table().get(peer) {
            Some(e) => (
                matches!(e.status, PqStatus::Pq(_)),
                e.last_message
                    .is_some_and(|t| t.elapsed() < TRIM_PROTECT_ACTIVE),
            ),
            None => (false, false),
        };
        if recent || (pq && self.is_pinned(peer)) {
            Protection::Protected
        } else if pq {
            Protection::Useful
        } else {
            Protection::None
        }
    }
}
