//! The classical message path (PROTOCOL.md §8.2): `/pqnode/msg-classical/1.0.0`,
//! frames `u32 length || §7 fragment`, protected only by Noise. Never used
//! with a pinned peer, one that has a PQ session, or one whose PQ status is
//! still open.

use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use libp2p_stream::{IncomingStreams, OpenStreamError};
use pqnode_crypto::channel::MAX_BODY;
use pqnode_crypto::receipt::{RECEIPT_LEN, Receipt, ReceiptStatus};

use super::fragment::{self, HEADER_LEN, Pushed, Reassembler};
use super::framing::{FrameError, read_frame, write_frame};
use super::inbox::Security;
use super::policy::{self, ClassicalStream};
use super::reasons::Malformed;
use super::{CLASSICAL_PROTOCOL, Inner, PqStatus, SendError, spawn_on};
use tokio::sync::watch;

/// How long a receipt may take to write before the stream is dropped.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an inbound classical stream is held unread while the peer's
/// PQ status is still open.
const STATUS_WAIT: Duration = Duration::from_secs(15);

/// The current decision for an inbound classical stream from `peer`.
fn decide(inner: &Inner, peer: &PeerId) -> (ClassicalStream, Option<watch::Receiver<PqStatus>>) {
    let (status, rx) = {
        let t = inner.table();
        (t.get(peer).map(|e| e.status.clone()), t.watch(peer))
    };
    let Some(status) = status else {
        return (ClassicalStream::Refuse, None);
    };
    let pinned = inner.verifier.is_pinned(peer);
    (
        policy::classical_stream(inner.policy, pinned, status.kind()),
        rx,
    )
}

/// Accepts classical message streams (§8.2): read only from a peer known to
/// lack PQ; held unread (bounded) while its status is open.
pub(crate) async fn accept_loop(inner: Arc<Inner>, mut incoming: IncomingStreams) {
    while let Some((peer, mut stream)) = incoming.next().await {
        if inner
            .shutting_down
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // Shutting down: nothing more is delivered.
            drop(stream);
            continue;
        }
        // A slot of the 64, at most 4 per peer (§9 rev 4): one peer cannot
        // silence everyone else's classical messages.
        let slot = match inner.classical_slots.take(&inner, peer) {
            Ok(slot) => slot,
            Err(full) => {
                if let Some(suppressed) = inner.may_log(peer, "classical-streams-full") {
                    tracing::warn!(peer = %peer, suppressed, limit = full.name(), "too many classical message streams; answering inbox-full");
                }
                refuse_stream(&inner, peer, stream, ReceiptStatus::InboxFull);
                continue;
            }
        };
        let inner2 = inner.clone();
        spawn_on(&inner, async move {
            let mut verdict = decide(&inner2, &peer);
            if let (ClassicalStream::Wait, Some(mut rx)) = verdict {
                let _ = tokio::time::timeout(STATUS_WAIT, rx.wait_for(PqStatus::is_settled)).await;
                verdict = decide(&inner2, &peer);
            }
            let ClassicalStream::Accept(reason) = verdict.0 else {
                drop(slot);
                inner2.metrics.classical_streams_refused.inc();
                if let Some(suppressed) = inner2.may_log(peer, "classical-refused") {
                    tracing::warn!(peer = %peer, suppressed, "classical message stream refused: the peer is pinned, has a PQ session, or its PQ status is open");
                }
                refuse_stream(&inner2, peer, stream, ReceiptStatus::Refused);
                return;
            };
            receive(&inner2, peer, &mut stream, Security::Classical { reason }).await;
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.close()).await;
            drop(slot);
        });
    }
}

/// The inbound classical stream slots: so many in all, so many per peer.
pub(crate) struct Slots {
    total: usize,
    per_peer: usize,
    held: std::sync::Mutex<SlotCounts>,
}

#[derive(Default)]
struct SlotCounts {
    total: usize,
    /// Only peers holding a slot: at most `total` entries.
    by_peer: std::collections::HashMap<PeerId, usize>,
}

/// Which limit a refused stream hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotsFull {
    /// Every slot is taken.
    All,
    /// The peer holds its share.
    Peer,
}

impl SlotsFull {
    fn name(self) -> &'static str {
        match self {
            SlotsFull::All => "all",
            SlotsFull::Peer => "per-peer",
        }
    }
}

impl Slots {
    pub fn new(total: usize, per_peer: usize) -> Self {
        Slots {
            total,
            per_peer,
            held: Default::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, SlotCounts> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a slot for `peer`, counted in
    /// `pqnode_pq_classical_streams_open` while held.
    fn take(&self, inner: &Arc<Inner>, peer: PeerId) -> Result<Slot, SlotsFull> {
        let mut c = self.counts();
        if c.total >= self.total {
            return Err(SlotsFull::All);
        }
        let mine = c.by_peer.entry(peer).or_insert(0);
        if *mine >= self.per_peer {
            return Err(SlotsFull::Peer);
        }
        *mine += 1;
        c.total += 1;
        inner.metrics.classical_streams_open.inc();
        Ok(Slot {
            inner: inner.clone(),
            peer,
        })
    }

    fn give_back(&self, peer: &PeerId) {
        let mut c = self.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_peer.get_mut(peer) {
            *n -= 1;
            if *n == 0 {
                c.by_peer.remove(peer);
            }
        }
    }
}

/// One held classical stream slot; given back on drop.
struct Slot {
    inner: Arc<Inner>,
    peer: PeerId,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner.classical_slots.give_back(&self.peer);
        self.inner.metrics.classical_streams_open.dec();
    }
}

/// Reads the one message of an accepted classical stream and answers it
/// with its receipt (§8.2 rev 4), under the partial-message rules of the
/// PQ path (§9 rev 3): the message must be whole within
/// `limits.partial_message_timeout_secs` of the stream being read, and it
/// reserves its size from the 256 MiB that all partial messages share.
/// The slot is then given back: a sender that keeps a stream open, or
/// trickles fragments, holds it no longer than that (every sender opens a
/// stream per message).
async fn receive(inner: &Arc<Inner>, peer: PeerId, stream: &mut Stream, security: Security) {
    let mut reassembler =
        Reassembler::with_budget(inner.limits.max_message_size, inner.partial_budget.clone());
    let deadline = tokio::time::Instant::now() + inner.limits.partial_message_timeout;
    let receipt = loop {
        let frame = match tokio::time::timeout_at(
            deadline,
            read_frame(stream, HEADER_LEN, MAX_BODY),
        )
        .await
        {
            Ok(Ok(f)) => f,
            Ok(Err(FrameError::Closed)) => return,
            Ok(Err(e)) => {
                if matches!(e, FrameError::BadLength { .. }) {
                    inner.metrics.malformed(Malformed::Frame);
                }
                if let Some(suppressed) = inner.may_log(peer, "classical-bad-frame") {
                    tracing::warn!(peer = %peer, error = %e, suppressed, "bad classical message frame");
                }
                return;
            }
            Err(_) => {
                inner.metrics.malformed(Malformed::Incomplete);
                if let Some(suppressed) = inner.may_log(peer, "classical-incomplete") {
                    tracing::warn!(peer = %peer, suppressed, "classical message not whole in time; its stream closed");
                }
                // The message begun, if any, is answered as incomplete
                // (§7 rev 4) before the stream closes.
                break match reassembler.incomplete() {
                    Some(message_id) => Receipt {
                        message_id,
                        status: ReceiptStatus::Incomplete,
                    },
                    None => return,
                };
            }
        };
        match reassembler.push(&frame) {
            Ok(Pushed::Whole(message_id, message)) => {
                let status = inner.inbox.deliver(peer, security, message);
                inner.touch(&peer);
                break Receipt { message_id, status };
            }
            Ok(Pushed::More) => {}
            // Refused at its first fragment: answered, and the stream
            // closes without reading the rest.
            Ok(Pushed::Refused { id, status }) => {
                break Receipt {
                    message_id: id,
                    status,
                };
            }
            Err(e) => {
                inner.metrics.malformed(Malformed::Fragment);
                if let Some(suppressed) = inner.may_log(peer, "classical-bad-fragment") {
                    tracing::warn!(peer = %peer, error = %e, suppressed, "bad classical message fragment");
                }
                return;
            }
        }
    };
    drop(reassembler);
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, write_frame(stream, &receipt.encode())).await;
}

/// Answers a classical stream that is not read (§8.2 rev 4): its first
/// fragment's message gets `status`, then the stream closes. Bounded like
/// `Reject busy` answers; beyond that the stream is dropped (the sender
/// then has no receipt, and reports the message not delivered).
fn refuse_stream(inner: &Arc<Inner>, peer: PeerId, mut stream: Stream, status: ReceiptStatus) {
    let Ok(p) = inner.reject_permits.clone().try_acquire_owned() else {
        return;
    };
    spawn_on(inner, async move {
        let answer = async {
            let frame = read_frame(&mut stream, HEADER_LEN, MAX_BODY).await.ok()?;
            let message_id = fragment::message_id(&frame)?;
            let r = Receipt { message_id, status };
            write_frame(&mut stream, &r.encode()).await.ok()
        };
        if tokio::time::timeout(Duration::from_secs(2), answer)
            .await
            .is_err()
        {
            tracing::debug!(peer = %peer, "refused classical stream sent nothing in time");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.close()).await;
        drop(p);
    });
}

/// Sends one message over a new classical stream and waits for its receipt
/// (§8.2 rev 4); returns its message id when the peer stored it.
/// `security` says why it goes classically.
pub(crate) async fn send(
    inner: &Arc<Inner>,
    peer: PeerId,
    body: &[u8],
    security: Security,
) -> Result<u64, SendError> {
    let unreachable = |reason: String| SendError::Unreachable { peer, reason };
    let mut control = inner.node.stream_control();
    let mut stream = match tokio::time::timeout(
        Duration::from_secs(10),
        control.open_stream(peer, CLASSICAL_PROTOCOL),
    )
    .await
    {
        Err(_) => return Err(unreachable("opening the stream timed out".into())),
        Ok(Err(OpenStreamError::UnsupportedProtocol(_))) => {
            return Err(unreachable(
                "the peer accepts no classical messages (its policy may be `required`)".into(),
            ));
        }
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Ok(Ok(s)) => s,
    };
    let id = inner
        .next_message_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let write = async {
        for frag in fragment::fragments(id, body) {
            write_frame(&mut stream, &frag).await?;
        }
        stream.close().await?;
        Ok::<(), FrameError>(())
    };
    match tokio::time::timeout(Duration::from_secs(30), write).await {
        Ok(Ok(())) => {}
        // Refused at the first fragment, the receiver may have answered and
        // closed: its receipt says why, so read it before giving up.
        Ok(Err(e)) => {
            if let Ok(Ok(r)) =
                tokio::time::timeout(Duration::from_secs(1), read_receipt(&mut stream)).await
                && r.message_id == id
                && !r.status.is_delivered()
            {
                return Err(SendError::NotDelivered {
                    peer,
                    status: r.status,
                });
            }
            return Err(unreachable(e.to_string()));
        }
        Err(_) => return Err(unreachable("writing timed out".into())),
    }
    inner.count_sent(security);
    let no_receipt = |reason: String| SendError::NoReceipt { peer, reason };
    match tokio::time::timeout(inner.limits.delivery_timeout, read_receipt(&mut stream)).await {
        Ok(Ok(r)) if r.message_id != id => Err(no_receipt(format!(
            "the receipt names message {}, not {id}",
            r.message_id
        ))),
        Ok(Ok(r)) if r.status.is_delivered() => Ok(id),
        Ok(Ok(r)) => Err(SendError::NotDelivered {
            peer,
            status: r.status,
        }),
        Ok(Err(e)) => Err(no_receipt(e)),
        Err(_) => Err(no_receipt(format!(
            "none within {} s",
            inner.limits.delivery_timeout.as_secs()
        ))),
    }
}

/// Reads one receipt frame (`u32 length || 9 bytes`, §8.2 rev 4).
async fn read_receipt(stream: &mut Stream) -> Result<Receipt, String> {
    match read_frame(stream, RECEIPT_LEN, RECEIPT_LEN).await {
        Ok(body) => Receipt::decode(&body).map_err(|e| e.to_string()),
        Err(FrameError::Closed) => Err("the stream closed without one".into()),
        Err(e) => Err(e.to_string()),
    }
}
