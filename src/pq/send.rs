//! Sending messages: over the peer's PQ session, or classically where §8.2
//! allows it, and why a message could not be sent.

use super::reasons::Undelivered;
use super::*;
use pqnode_crypto::receipt::ReceiptStatus;

/// Why a message could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Larger than the configured maximum.
    #[error("message of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// No PQ session and the policy forbids classical delivery.
    #[error("no PQ session with {peer} and the policy is `required`: refusing to send classically")]
    PqRequired {
        /// The peer.
        peer: PeerId,
    },
    /// The peer is pinned (it proved PQ before) but has no PQ session now.
    #[error("{peer} is pinned to a PQ key but has no PQ session: refusing to send classically")]
    PinnedWithoutSession {
        /// The peer.
        peer: PeerId,
    },
    /// The peer's PQ status did not settle in time (a handshake in flight).
    #[error(
        "the PQ handshake with {peer} has not finished: not sending until it has a PQ session or is known to lack PQ"
    )]
    StatusPending {
        /// The peer.
        peer: PeerId,
    },
    /// The peer was refused.
    #[error("{peer} was refused ({reason}): not sending")]
    Refused {
        /// The peer.
        peer: PeerId,
        /// Why it was refused.
        reason: RefuseReason,
    },
    /// Not connected (connect to it first).
    #[error("{peer} is not connected; connect to it first")]
    NotConnected {
        /// The peer.
        peer: PeerId,
    },
    /// The stream could not be opened.
    #[error("cannot reach {peer}: {reason}")]
    Unreachable {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The session ended before the message was written.
    #[error("the session with {peer} ended: {reason}")]
    SessionEnded {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: String,
    },
    /// The session's queue is full.
    #[error("the session with {peer} is busy")]
    Busy {
        /// The peer.
        peer: PeerId,
    },
    /// The layer is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The peer's receipt says it did not store the message (§7 rev 4).
    #[error("{peer} did not store the message: {status} ({})", explain(*status))]
    NotDelivered {
        /// The peer.
        peer: PeerId,
        /// What its receipt said.
        status: ReceiptStatus,
    },
    /// No receipt came (§7 rev 4): the message was sent, but whether the
    /// peer stored it is unknown, so it is not reported delivered.
    #[error("no receipt from {peer}: {reason}; the message may not have been delivered")]
    NoReceipt {
        /// The peer.
        peer: PeerId,
        /// Why none came.
        reason: String,
    },
}

/// A message the peer stored: its receipt said so (§7 rev 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// How it travelled (with the suite, or why classically).
    pub security: Security,
    /// The message id it travelled with (§7).
    pub message_id: u64,
}

impl PqLayer {
    /// Sends `body` to `peer`: over its PQ session, or classically where
    /// §8.2 allows it. Rev 3: while the peer's PQ status is open this waits
    /// (at most the handshake timeout, `limits.handshake_timeout_secs`) and
    /// never sends classically.
    pub async fn send(&self, peer: PeerId, body: Vec<u8>) -> Result<Delivery, SendError> {
        let inner = &self.inner;
        if inner.shutting_down.load(Ordering::Relaxed) {
            return Err(SendError::ShuttingDown);
        }
        if body.len() > inner.limits.max_message_size {
            return Err(SendError::TooLarge {
                size: body.len(),
                max: inner.limits.max_message_size,
            });
        }
        // Rev 3 (§5): an open status is waited for up to the handshake
        // timeout, then the send is refused, never made classical.
        let deadline = tokio::time::Instant::now() + inner.limits.handshake_timeout;
        // Sessions tried that could not take the message (none of it left).
        let mut unsent = 0;
        loop {
            let (status, rx) = {
                let table = inner.table();
                match table.get(&peer) {
                    Some(e) => ((true, e.status.clone()), table.watch(&peer)),
                    None => {
                        let status = table
                            .recent_refusal(&peer)
                            .map_or(PqStatus::Unknown, PqStatus::Refused);
                        ((false, status), None)
                    }
                }
            };
            let (connected, status) = status;
            let pinned = !matches!(status, PqStatus::Pq(_)) && inner.verifier.is_pinned(&peer);
            match policy::send_decision(inner.policy, connected, pinned, status.kind()) {
                SendDecision::Pq => match self.send_pq(peer, &body).await {
                    Attempt::Done(r) => return r,
                    // The session ended or was replaced before any of the
                    // message left: it goes on the session that replaced
                    // it, a bounded number of times, and only once the
                    // session changed (never spinning on one whose writer
                    // is gone); a session that ended without a successor
                    // fails the send with its reason.
                    Attempt::Unsent { session, error } => {
                        unsent += 1;
                        if unsent >= MAX_SESSIONS_TRIED
                            || !self.replaced(&peer, session, deadline).await
                        {
                            return Err(error);
                        }
                    }
                },
                SendDecision::Classical(reason) => {
                    let security = Security::Classical { reason };
                    let message_id = classical::send(inner, peer, &body, security)
                        .await
                        .inspect_err(|e| inner.count_undelivered(e))?;
                    inner.touch(&peer);
                    return Ok(Delivery {
                        security,
                        message_id,
                    });
                }
                SendDecision::Wait => {
                    let Some(mut rx) = rx else {
                        continue;
                    };
                    // Until it changes (or the peer disconnects: then the
                    // next round answers "not connected").
                    if tokio::time::timeout_at(deadline, rx.changed())
                        .await
                        .is_err()
                    {
                        return Err(SendError::StatusPending { peer });
                    }
                }
                SendDecision::Refuse(r) => return Err(refusal(peer, r)),
            }
        }
    }

    /// Waits until `peer`'s session is no longer session `id`, until
    /// `deadline`. Returns whether another session took its place.
    async fn replaced(&self, peer: &PeerId, id: u64, deadline: tokio::time::Instant) -> bool {
        let current = |table: &state::PeerTable| {
            table
                .get(peer)
                .and_then(|e| e.session.as_ref().map(|s| s.id))
        };
        let mut rx = {
            let table = self.inner.table();
            match (current(&table), table.watch(peer)) {
                (Some(now), Some(rx)) if now == id => rx,
                (now, _) => return now.is_some(),
            }
        };
        // Every end or replacement of a session changes the status.
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            return false;
        }
        current(&self.inner.table()).is_some_and(|now| now != id)
    }

    /// One attempt to send `body` over `peer`'s current PQ session. The
    /// whole attempt, the write and the receipt, takes at most
    /// `limits.delivery_timeout_secs`.
    async fn send_pq(&self, peer: PeerId, body: &[u8]) -> Attempt {
        let inner = &self.inner;
        let timeout = inner.limits.delivery_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let session = inner.table().get(&peer).and_then(|e| {
            e.session
                .as_ref()
                .map(|s| (s.id, s.tx.clone(), s.info.suite))
        });
        let Some((session, tx, suite)) = session else {
            return Attempt::Done(Err(SendError::SessionEnded {
                peer,
                reason: "no session".into(),
            }));
        };
        let (ack, done) = oneshot::channel();
        let (receipt, receipt_rx) = oneshot::channel();
        let queued = tx.try_send(WriterCmd::Send {
            body: body.to_vec(),
            ack,
            receipt,
        });
        match queued {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Attempt::Done(Err(SendError::Busy { peer }));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Attempt::Unsent {
                    session,
                    error: SendError::SessionEnded {
                        peer,
                        reason: "session closed".into(),
                    },
                };
            }
        }
        let message_id = match tokio::time::timeout_at(deadline, done).await {
            Ok(Ok(Ok(id))) => id,
            Ok(Ok(Err(WriteFailed::Unsent(error)))) => return Attempt::Unsent { session, error },
            Ok(Ok(Err(WriteFailed::Interrupted(reason)))) => {
                return Attempt::Done(Err(SendError::SessionEnded {
                    peer,
                    reason: format!(
                        "{reason}; part of the message may have reached the peer, so it is not sent again"
                    ),
                }));
            }
            // The writer went without answering (the node is stopping):
            // whether it began writing is unknown, so it is not retried.
            Ok(Err(_)) => {
                return Attempt::Done(Err(SendError::SessionEnded {
                    peer,
                    reason: "session closed".into(),
                }));
            }
            // Dropping `done` tells the writer not to begin it late; if it
            // is being written, it may still arrive.
            Err(_) => {
                let e = SendError::NoReceipt {
                    peer,
                    reason: format!(
                        "not written within {} s (limits.delivery_timeout_secs): the peer is not taking data",
                        timeout.as_secs()
                    ),
                };
                inner.count_undelivered(&e);
                return Attempt::Done(Err(e));
            }
        };
        inner.count_sent(Security::Pq { suite });
        inner.touch(&peer);
        let outcome = tokio::time::timeout_at(deadline, receipt_rx).await;
        let result = match outcome {
            Ok(Ok(status)) if status.is_delivered() => Ok(Delivery {
                security: Security::Pq { suite },
                message_id,
            }),
            Ok(Ok(status)) => Err(SendError::NotDelivered { peer, status }),
            Ok(Err(_)) => Err(SendError::NoReceipt {
                peer,
                reason: "the peer disconnected first".into(),
            }),
            Err(_) => {
                if let Some(e) = inner.table().get_mut(&peer) {
                    e.in_flight.forget(message_id);
                }
                Err(SendError::NoReceipt {
                    peer,
                    reason: format!("none within {} s", timeout.as_secs()),
                })
            }
        };
        Attempt::Done(result.inspect_err(|e| inner.count_undelivered(e)))
    }
}

/// How many sessions one send tries when each ends before taking the
/// message (a re-handshake replacing one, then another).
const MAX_SESSIONS_TRIED: u32 = 3;

/// What one attempt on a session came to.
enum Attempt {
    /// Sent or failed for good.
    Done(Result<Delivery, SendError>),
    /// Session `session` could not take it and none of it left: it may go
    /// on the peer's next session.
    Unsent { session: u64, error: SendError },
}

pub(super) fn refusal(peer: PeerId, r: SendRefusal) -> SendError {
    match r {
        SendRefusal::NotConnected => SendError::NotConnected { peer },
        SendRefusal::PqRequired => SendError::PqRequired { peer },
        SendRefusal::PinnedWithoutSession => SendError::PinnedWithoutSession { peer },
        SendRefusal::StatusUnknown => SendError::StatusPending { peer },
        SendRefusal::Refused(reason) => SendError::Refused { peer, reason },
    }
}

impl Inner {
    /// Counts a message sent but not delivered, by what its receipt said
    /// (or `no-receipt`).
    pub(super) fn count_undelivered(&self, e: &SendError) {
        let reason = match e {
            SendError::NotDelivered { status, .. } => Undelivered::of(*status),
            SendError::NoReceipt { .. } => Some(Undelivered::NoReceipt),
            _ => None,
        };
        if let Some(reason) = reason {
            self.metrics.undelivered(reason);
        }
    }

    pub(super) fn count_sent(&self, security: Security) {
        self.metrics
            .messages_sent
            .get_or_create(&metrics::SecurityLabels {
                security: security.into(),
            })
            .inc();
    }
}
/// What a receipt's status means, for the sender.
fn explain(status: ReceiptStatus) -> &'static str {
    match status {
        ReceiptStatus::Stored => "stored",
        ReceiptStatus::InboxFull => "the peer's inbox has no room for it now; try again later",
        ReceiptStatus::TooLarge => "larger than the peer's limits.max_message_size",
        ReceiptStatus::Refused => "the peer's policy does not take messages from this node",
        ReceiptStatus::Incomplete => "it did not reach the peer whole",
        ReceiptStatus::Unspecified(_) => "a status this node does not know",
    }
}
