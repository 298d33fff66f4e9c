//! Waiting for a peer's PQ outcome: on its status `watch` (and, for a peer
//! not connected yet, on the table's join signal), with a deadline — never
//! by polling.

use std::time::Duration;

use libp2p::PeerId;
use tokio::sync::watch;

use super::{PqLayer, PqStatus, SessionInfo};

impl PqLayer {
    /// Waits up to `timeout` for `peer`'s status to settle (a session,
    /// classical or refused) and returns it; `None` when it does not
    /// connect within `timeout` (or disconnects meanwhile).
    pub async fn wait_settled(&self, peer: &PeerId, timeout: Duration) -> Option<PqStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.watch_or_wait_join(peer, deadline).await?;
        let settled = tokio::time::timeout_at(deadline, async {
            rx.wait_for(PqStatus::is_settled).await.map(|s| s.clone())
        })
        .await;
        match settled {
            Ok(Ok(s)) => Some(s),
            Ok(Err(_)) => None,
            Err(_) => Some(rx.borrow().clone()),
        }
    }

    /// `peer`'s status receiver; when it is not connected, waits (until
    /// `deadline`) for it to connect.
    async fn watch_or_wait_join(
        &self,
        peer: &PeerId,
        deadline: tokio::time::Instant,
    ) -> Option<watch::Receiver<PqStatus>> {
        loop {
            let mut joins = {
                let table = self.inner.table();
                if let Some(rx) = table.watch(peer) {
                    return Some(rx);
                }
                table.joins()
            };
            match tokio::time::timeout_at(deadline, joins.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Waits up to `timeout` for a PQ session with `peer`; a peer that is
    /// not connected yet is waited for too.
    pub async fn wait_for_session(&self, peer: &PeerId, timeout: Duration) -> Option<SessionInfo> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut rx = self.watch_or_wait_join(peer, deadline).await?;
            let r =
                tokio::time::timeout_at(deadline, rx.wait_for(|s| matches!(s, PqStatus::Pq(_))))
                    .await;
            match r {
                Ok(Ok(s)) => {
                    if let PqStatus::Pq(info) = &*s {
                        return Some(info.clone());
                    }
                }
                // The peer disconnected: it may come back (a redial), which
                // the next `watch_or_wait_join` waits for.
                Ok(Err(_)) => {}
                Err(_) => return None,
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
        }
    }
}
