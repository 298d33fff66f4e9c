//! Connection events from the swarm and the outcomes they lead to: every
//! status change goes through [`Inner::apply`] (see [`super::transition`]).

use super::*;

impl Inner {
    /// Applies `event` to `peer`'s status under the table's one lock (see
    /// [`transition`]) and refreshes the counts in the status snapshot.
    /// Returns whether the status changed.
    pub(super) fn apply(&self, peer: &PeerId, event: Event) -> bool {
        let counts = {
            let mut table = self.table();
            if table.apply(peer, &event).is_none() {
                return false;
            }
            table.counts()
        };
        self.publish_counts(counts);
        true
    }

    pub(super) fn publish_counts(&self, c: state::Counts) {
        self.metrics.open_sessions.set(c.pq as i64);
        self.status.update(|s| {
            s.sessions.pq = c.pq;
            s.sessions.classical = c.classical;
            s.sessions.refused = c.refused_total;
        });
    }

    pub(super) fn label_classical(&self, peer: PeerId, reason: policy::ClassicalReason) {
        // Not while a PQ session exists, nor once refused (`transition`).
        if !self.apply(&peer, Event::NoPq(reason)) {
            return;
        }
        self.metrics.classical_sessions.inc();
        tracing::info!(peer = %peer, reason = reason.as_str(), "peer has no PQ session: labelled classical");
    }

    /// Refuses `peer`: counts it under `reason` and closes its connections.
    pub(super) async fn refuse(self: &Arc<Self>, peer: PeerId, reason: RefuseReason) {
        // Refused once (its first reason stays), its session dropped with
        // it: its writer closes, its reader ends with the connection. A peer
        // that left meanwhile is still counted.
        let (counts, first) = {
            let mut table = self.table();
            let connected = table.get(&peer).is_some();
            let changed = table.apply(&peer, &Event::Refused(reason)).is_some();
            let counted_after_leaving =
                !connected && table.refused_after_leaving(peer, reason, std::time::Instant::now());
            let first = changed || counted_after_leaving;
            (first.then(|| table.counts()), first)
        };
        if let Some(counts) = counts {
            self.publish_counts(counts);
        }
        if first {
            self.metrics.refuse(reason);
            match reason {
                RefuseReason::Downgrade => {
                    self.metrics.downgrade_refused.inc();
                }
                RefuseReason::KeyMismatch => {
                    self.metrics.key_mismatch.inc();
                }
                _ => {}
            }
        }
        if let Some(suppressed) = self.may_log(peer, "refused") {
            tracing::warn!(peer = %peer, reason = reason.as_str(), suppressed, "peer refused; disconnecting");
        }
        if let Err(e) = self.node.refuse(peer).await {
            tracing::debug!(peer = %peer, error = %e, "disconnect failed");
        }
    }

    /// The remote offers no PQ session (§8.1, §8.3).
    pub(super) async fn no_pq(self: &Arc<Self>, peer: PeerId, why: policy::NoPq) {
        let pinned = self.verifier.is_pinned(&peer);
        match policy::on_no_pq(self.policy, pinned, why) {
            policy::NoPqAction::LabelClassical(reason) => self.label_classical(peer, reason),
            policy::NoPqAction::Refuse(reason) => self.refuse(peer, reason).await,
        }
    }

    /// A connection was established: decide (§5, §8) off the event loop.
    pub(super) async fn on_connected(self: &Arc<Self>, peer: PeerId, we_dialled: bool) {
        let local_pq = self.pq_enabled();
        let pinned = self.verifier.is_pinned(&peer);
        match policy::on_connection(self.policy, local_pq, pinned, we_dialled) {
            ConnectionAction::Initiate => handshake_io::spawn_initiator(self, peer),
            ConnectionAction::AwaitInitiator => {
                let inner = self.clone();
                spawn_on(self, async move {
                    tokio::time::sleep(NO_IDENTIFY_PROBE).await;
                    inner.initiate_if_open(peer);
                });
            }
            ConnectionAction::LabelClassical(reason) => self.label_classical(peer, reason),
            ConnectionAction::Refuse(reason) => self.refuse(peer, reason).await,
        }
    }

    /// identify told us about `peer` (a hint for when to open the stream,
    /// never proof of anything, rev 3).
    pub(super) fn on_identified(self: &Arc<Self>, peer: PeerId, lists_pq: bool) {
        if !self.pq_enabled() {
            return;
        }
        if lists_pq {
            // Give the dialler its chance to open the stream first.
            let inner = self.clone();
            spawn_on(self, async move {
                tokio::time::sleep(inner.limits.listener_open_delay).await;
                inner.initiate_if_open(peer);
            });
        } else {
            // Only a failed negotiation proves it lacks PQ: probe now.
            self.initiate_if_open(peer);
        }
    }

    /// Opens the PQ stream to `peer` when it is connected, its status is
    /// still open and no handshake runs either way.
    pub(super) fn initiate_if_open(self: &Arc<Self>, peer: PeerId) {
        let open = {
            let t = self.table();
            t.get(&peer).is_some_and(|e| !e.status.is_settled()) && !t.handshake_in_flight(&peer)
        };
        if open {
            handshake_io::spawn_initiator(self, peer);
        }
    }
}

/// Hands the node's connection events to the PQ state.
pub(super) struct Observer(pub(super) Arc<Inner>);

impl ConnectionObserver for Observer {
    fn on_node_event(&self, event: &NodeEvent) {
        let inner = &self.0;
        match event {
            NodeEvent::ConnectionEstablished {
                peer_id,
                direction,
                remote_addr,
                ..
            } => {
                let peer = *peer_id;
                let we_dialled = *direction == Direction::Outbound;
                let admitted = {
                    let mut t = inner.table();
                    let admitted = t.connected(peer, we_dialled);
                    t.set_network(&peer, super::first_use::Network::of(remote_addr));
                    admitted
                };
                if !admitted {
                    tracing::warn!(peer = %peer, "PQ peer table full; refusing the peer");
                    let inner = inner.clone();
                    spawn_on(&inner.clone(), async move {
                        inner.metrics.refuse(RefuseReason::TableFull);
                        let _ = inner.node.refuse(peer).await;
                    });
                    return;
                }
                let inner2 = inner.clone();
                spawn_on(inner, async move {
                    inner2.on_connected(peer, we_dialled).await;
                });
            }
            NodeEvent::ConnectionClosed {
                peer_id,
                remaining_established,
                ..
            } => {
                let (removed, counts) = {
                    let mut t = inner.table();
                    let removed = t.connection_closed(peer_id, *remaining_established);
                    (removed, t.counts())
                };
                if removed.is_some() {
                    inner.publish_counts(counts);
                }
                // Dropping the entry drops the session's writer handle: the
                // writer sends its close frame and ends.
                drop(removed);
            }
            NodeEvent::Identified {
                peer_id, protocols, ..
            } => {
                inner.on_identified(*peer_id, protocols.contains(&PQ_PROTOCOL));
            }
            _ => {}
        }
    }
}
