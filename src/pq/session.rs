//! A PQ session: one writer task sealing fragments into frames, one reader
//! task opening frames and reassembling messages into the inbox, and on the
//! initiating side a re-handshake timer (§5.1). Any record or fragment error
//! ends the session (PROTOCOL.md §6) and disconnects.
//!
//! Replacement (a re-handshake, or a peer that restarted its session): the
//! new session takes the table entry; the old writer, whose handle is gone,
//! writes what was queued on it and then its close frame; the new reader
//! delivers nothing before the old reader has ended, so messages keep their
//! order across the switch.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use futures::io::ReadHalf;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use pqnode_crypto::Suite;
use pqnode_crypto::channel::{ChannelError, Inbound, MAX_FRAME, MIN_FRAME, Opener};
use pqnode_crypto::handshake::{Established, RejectReason};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::fragment::{Pushed, Reassembler};
use super::framing::{FrameError, read_frame};
use super::inbox::Security;
use super::metrics::SuiteLabels;
use super::policy::RefuseReason;
use super::reasons::SessionError;
use super::receipts::RECEIPT_QUEUE;
use super::state::{PqStatus, Session, SessionStats};
use super::transition::Event;
use super::writer::{SessionEnd, writer};
use super::{Inner, SESSION_QUEUE, SessionInfo, handshake_io, spawn_on};
use pqnode_crypto::receipt::{Receipt, ReceiptStatus};

/// How long a new session's reader waits for the session it replaced to
/// deliver its last messages.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// Registers a finished handshake as the peer's session (tie-break of §5,
/// replacement of §5.1) and starts its tasks.
pub(crate) fn start(
    inner: &Arc<Inner>,
    peer: PeerId,
    established: Established,
    stream: Stream,
    local_initiated: bool,
) {
    let id = inner.next_session_id.fetch_add(1, Ordering::Relaxed);
    let suite = established.suite;
    let (tx, rx) = mpsc::channel(SESSION_QUEUE);
    let (receipts_tx, receipts_rx) = mpsc::channel(RECEIPT_QUEUE);
    let (done_tx, done_rx) = watch::channel(false);
    let stats = Arc::new(SessionStats::default());
    let info = SessionInfo {
        suite,
        local_initiated,
        since: SystemTime::now(),
        id: hex::encode(&established.transcript_hash[..8]),
        peer_key: pqnode_keys::Fingerprint::of(&established.peer_key),
    };
    let (previous_done, counts) = {
        let mut table = inner.table();
        let Some(entry) = table.get_mut(&peer) else {
            drop(table);
            tracing::debug!(peer = %peer, "PQ session established after the peer left; closing it");
            close_stream(inner, stream);
            return;
        };
        if matches!(entry.status, PqStatus::Refused(_)) {
            drop(table);
            close_stream(inner, stream);
            return;
        }
        let mut previous = None;
        if let Some(existing) = &entry.session {
            let initiator = |local: bool| if local { inner.local } else { peer };
            let (old, new) = (
                initiator(existing.info.local_initiated),
                initiator(local_initiated),
            );
            // Two sessions initiated by different sides: the one initiated
            // by the lower PeerId wins (§5). Two from the same side: the
            // newer replaces the older (§5.1 re-handshake, or a restart).
            if old != new && old.to_bytes() < new.to_bytes() {
                drop(table);
                tracing::debug!(peer = %peer, "second PQ session loses the tie-break; closing it");
                close_stream(inner, stream);
                return;
            }
            if old == new {
                inner.metrics.rehandshakes.inc();
                entry.rehandshakes = entry.rehandshakes.saturating_add(1);
                tracing::info!(peer = %peer, old = %existing.info.id, new = %info.id, "PQ session replaced by a re-handshake");
            } else {
                tracing::debug!(peer = %peer, "second PQ session wins the tie-break; replacing the first");
            }
            previous = Some(existing.reader_done.clone());
        }
        entry.session = Some(Session {
            id,
            info: info.clone(),
            tx,
            receipts: receipts_tx,
            reader_done: done_rx,
            stats: stats.clone(),
        });
        // The status changes under the same lock as the session.
        table.apply(&peer, &Event::SessionEstablished(info.clone()));
        (previous, table.counts())
    };
    inner.publish_counts(counts);
    inner
        .metrics
        .pq_sessions
        .get_or_create(&SuiteLabels {
            suite: suite.name(),
        })
        .inc();
    let (sealer, opener) = established.channel.split();
    let (r, w) = stream.split();
    let started = Instant::now();
    let cancel = SessionEnd::default();
    // A root span: a session started by a re-handshake (inside the old
    // session's span) must not nest in, and keep alive, its predecessor.
    let span = tracing::info_span!(parent: None, "pq_session", peer = %peer, suite = %suite, session = %info.id);
    spawn_on(
        inner,
        writer(
            inner.clone(),
            peer,
            sealer,
            w,
            rx,
            receipts_rx,
            started,
            stats.clone(),
            cancel.clone(),
        )
        .instrument(span.clone()),
    );
    let reader = Reader {
        inner: inner.clone(),
        peer,
        id,
        suite,
        local_initiated,
        stats: stats.clone(),
        cancel,
        previous_done,
        done: done_tx,
        incomplete: None,
    };
    spawn_on(inner, reader.run(opener, r).instrument(span.clone()));
    if local_initiated {
        spawn_on(
            inner,
            rehandshake_timer(inner.clone(), peer, id, stats).instrument(span),
        );
    }
}

fn close_stream(inner: &Arc<Inner>, stream: Stream) {
    spawn_on(inner, async move {
        let mut stream = stream;
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.close()).await;
    });
}

/// Removes `peer`'s session if it is session `id`. Returns whether it was.
fn end(inner: &Arc<Inner>, peer: &PeerId, id: u64) -> bool {
    let counts = {
        let mut table = inner.table();
        match table.get_mut(peer) {
            Some(e) if e.session.as_ref().is_some_and(|s| s.id == id) => {
                e.session = None;
                // Under the same lock: a newer session cannot slip in
                // between and lose its status.
                table.apply(peer, &Event::SessionEnded);
                Some(table.counts())
            }
            _ => None,
        }
    };
    if let Some(counts) = counts {
        inner.publish_counts(counts);
    }
    counts.is_some()
}

fn is_current(inner: &Arc<Inner>, peer: &PeerId, id: u64) -> bool {
    inner
        .table()
        .get(peer)
        .and_then(|e| e.session.as_ref())
        .is_some_and(|s| s.id == id)
}

/// §5.1 on the initiating side: after the time or byte limit, replace the
/// session by a new handshake; retry with back-off while the old session
/// keeps working, until twice its limits, then end it.
async fn rehandshake_timer(inner: Arc<Inner>, peer: PeerId, id: u64, stats: Arc<SessionStats>) {
    let after = inner.limits.rehandshake_after;
    let bytes = inner.limits.rehandshake_bytes;
    let started = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(started + after) => break,
            _ = stats.limit_reached.notified() => {
                if stats.max_bytes() >= bytes {
                    break;
                }
            }
        }
    }
    let mut backoff = Duration::from_millis(500);
    loop {
        if !is_current(&inner, &peer, id) {
            return;
        }
        let over = started.elapsed() >= after * 2 || stats.max_bytes() >= bytes.saturating_mul(2);
        if over {
            tracing::warn!(peer = %peer, "re-handshake kept failing past twice the session's limits; ending the session");
            if end(&inner, &peer, id) {
                handshake_io::schedule_retry(&inner, peer);
            }
            return;
        }
        if inner.table().begin_outbound(&peer) {
            let span = tracing::info_span!(parent: None, "pq_handshake", peer = %peer, side = "initiator", rehandshake = true);
            match handshake_io::run_initiator(&inner, peer)
                .instrument(span)
                .await
            {
                Ok(()) => return,
                // Retried while the old session works (up to twice its
                // limits, above). A refusal has dropped the session (the
                // next round sees it is gone); any other outcome leaves the
                // old session in place, which must not outlive its limits.
                Err(_) => {
                    inner.metrics.rehandshake_failures.inc();
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

fn channel_error_name(e: &ChannelError) -> SessionError {
    match e {
        ChannelError::BadFrameLength(_) => SessionError::BadFrameLength,
        ChannelError::UnexpectedSeq { .. } => SessionError::UnexpectedSeq,
        ChannelError::Forged => SessionError::ForgedFrame,
        ChannelError::InvalidRecord(_) => SessionError::InvalidRecord,
        ChannelError::Closed => SessionError::FrameAfterClose,
        _ => SessionError::RecordLayer,
    }
}

struct Reader {
    inner: Arc<Inner>,
    peer: PeerId,
    id: u64,
    suite: Suite,
    local_initiated: bool,
    stats: Arc<SessionStats>,
    cancel: SessionEnd,
    /// The replaced session's reader: wait for it before delivering.
    previous_done: Option<watch::Receiver<bool>>,
    done: watch::Sender<bool>,
    /// The message left incomplete when reading ended, if any.
    incomplete: Option<u64>,
}

enum ReadEnd {
    /// Close frame or a clean end of stream.
    Closed,
    /// The responder rejected our Fin (§5 rev 3).
    Rejected(RejectReason),
    /// A partial message did not complete in time (§9 rev 3).
    PartialTimeout,
    /// The writer ended the session: the peer stopped reading.
    WriteStalled,
    /// Stream I/O.
    Io(String),
    /// A protocol violation.
    Violation(SessionError, String),
}

impl Reader {
    async fn run(mut self, mut opener: Opener, mut r: ReadHalf<Stream>) {
        let end = self.read_all(&mut opener, &mut r).await;
        let _ = self.done.send(true);
        let inner = self.inner.clone();
        let peer = self.peer;
        if matches!(end, ReadEnd::Closed | ReadEnd::Io(_)) && !self.local_initiated {
            self.await_replacement().await;
        }
        // A message cut off by the end of its session is answered as
        // incomplete (§7 rev 4), on the peer's current session: this one,
        // whose writer still sends what receipts it owes, or its successor.
        if let Some(message_id) = self.incomplete.take() {
            self.send_receipt(Receipt {
                message_id,
                status: ReceiptStatus::Incomplete,
            });
        }
        let current = end_if_current(&inner, &peer, self.id);
        match end {
            ReadEnd::Closed => {
                if current {
                    tracing::info!(peer = %peer, "PQ session closed by the peer");
                    self.after_loss();
                }
            }
            ReadEnd::Io(detail) => {
                if current {
                    tracing::info!(peer = %peer, error = %detail, "PQ session stream ended");
                    self.after_loss();
                }
            }
            ReadEnd::Rejected(reason) => {
                self.cancel.end(format!(
                    "the peer rejected the session after our Fin (Reject {}): not delivered",
                    reason.name()
                ));
                if let Some(suppressed) = inner.may_log(peer, "rejected-fin") {
                    tracing::warn!(peer = %peer, reason = reason.name(), suppressed, "the peer rejected our Fin; session ended");
                }
                self.count(SessionError::Rejected);
                inner.refuse(peer, RefuseReason::RejectedByPeer).await;
            }
            ReadEnd::PartialTimeout => {
                // The session ends (its partial message is dropped with it)
                // and is re-established, by its initiator, like a lost one;
                // the peer stays connected (§9 rev 3).
                self.cancel.end(
                    "the session ended: a partial message from the peer did not complete in time",
                );
                self.count(SessionError::PartialTimeout);
                if let Some(suppressed) = inner.may_log(peer, "partial-timeout") {
                    tracing::warn!(peer = %peer, suppressed, "a partial message did not complete in time; session ended, to be re-established");
                }
                if current {
                    self.after_loss();
                }
            }
            ReadEnd::WriteStalled => {
                // Counted by the writer, which found it; re-established
                // like a lost session, the peer staying connected.
                if let Some(suppressed) = inner.may_log(peer, "write-stalled") {
                    tracing::warn!(peer = %peer, suppressed, "the peer stopped reading what this node writes; session ended, to be re-established");
                }
                if current {
                    self.after_loss();
                }
            }
            ReadEnd::Violation(reason, detail) => {
                self.cancel.end(format!(
                    "the session ended on a record-layer error ({reason})"
                ));
                self.count(reason);
                if let Some(suppressed) = inner.may_log(peer, "record-layer-error") {
                    tracing::warn!(peer = %peer, %reason, error = %detail, suppressed, "PQ session ended by a record-layer error");
                }
                inner.refuse(peer, RefuseReason::SessionError).await;
            }
        }
    }

    /// A session the peer initiated closes first on the peer's side when
    /// the peer re-handshakes (§5.1): it replaces the session once its Fin
    /// is sent, and closes the old stream, while this side may still be
    /// verifying that Fin. Ending the session here would show the peer
    /// without a session for that moment and count a loss instead of a
    /// re-handshake; so the inbound handshake in flight, if any, is awaited
    /// first (bounded by the handshake timeout). It replaces this session
    /// when it succeeds; when it fails, this session ends as lost.
    async fn await_replacement(&self) {
        let Some(mut in_flight) = self.inner.table().inbound_in_flight(&self.peer) else {
            return;
        };
        let deadline = self.inner.limits.handshake_timeout + Duration::from_secs(1);
        let _ = tokio::time::timeout(deadline, in_flight.wait_for(|busy| !*busy)).await;
    }

    /// A receipt for one of our messages (§7 rev 4): to its sender; one for
    /// no message in flight is ignored and counted.
    fn on_receipt(&self, receipt: Receipt) {
        let matched = self
            .inner
            .table()
            .get_mut(&self.peer)
            .is_some_and(|e| e.in_flight.resolve(receipt.message_id, receipt.status));
        if !matched {
            self.inner.metrics.receipts_unmatched.inc();
            tracing::debug!(peer = %self.peer, message = receipt.message_id, status = %receipt.status, "receipt for no message in flight; ignored");
        }
    }

    /// Answers a message with its receipt, on the peer's current session:
    /// after a re-handshake that is not this one. Without a session, or
    /// with its writer that far behind, the receipt is dropped and counted
    /// (the sender then reports the message unconfirmed, never delivered).
    fn send_receipt(&self, receipt: Receipt) {
        let tx = self
            .inner
            .table()
            .get(&self.peer)
            .and_then(|e| e.session.as_ref().map(|s| s.receipts.clone()));
        let sent = tx.is_some_and(|tx| tx.try_send(receipt).is_ok());
        if !sent {
            self.inner.metrics.receipts_dropped.inc();
        }
    }

    fn count(&self, reason: SessionError) {
        self.inner.metrics.session_error(reason);
    }

    /// The current session was lost while the peer may stay connected: its
    /// initiator re-establishes it with back-off (§5.1).
    fn after_loss(&self) {
        if self.local_initiated {
            handshake_io::schedule_retry(&self.inner, self.peer);
        }
    }

    /// Reads until the session ends; a message left incomplete then is
    /// remembered for its receipt (§7 rev 4: status 4).
    async fn read_all(&mut self, opener: &mut Opener, r: &mut ReadHalf<Stream>) -> ReadEnd {
        let mut reassembler = Reassembler::with_budget(
            self.inner.limits.max_message_size,
            self.inner.partial_budget.clone(),
        );
        let end = self.read_frames(opener, r, &mut reassembler).await;
        self.incomplete = reassembler.incomplete();
        end
    }

    async fn read_frames(
        &mut self,
        opener: &mut Opener,
        r: &mut ReadHalf<Stream>,
        reassembler: &mut Reassembler,
    ) -> ReadEnd {
        let inner = self.inner.clone();
        let limit = inner.limits.rehandshake_bytes;
        let mut first = true;
        loop {
            // Only the initiator may see a Reject (2 bytes) before any
            // record frame: the responder's answer to a bad Fin.
            let min = if first && self.local_initiated {
                2
            } else {
                MIN_FRAME
            };
            let read = read_frame(r, min, MAX_FRAME);
            let read = async {
                match reassembler.partial_since() {
                    Some(since) => {
                        let deadline = since + inner.limits.partial_message_timeout;
                        tokio::time::timeout_at(deadline.into(), read)
                            .await
                            .map_err(|_| ReadEnd::PartialTimeout)
                    }
                    None => Ok(read.await),
                }
            };
            // The writer ends the session when the peer stops reading.
            let frame = tokio::select! {
                biased;
                _ = self.cancel.ended() => return ReadEnd::WriteStalled,
                f = read => match f {
                    Ok(f) => f,
                    Err(end) => return end,
                },
            };
            let frame = match frame {
                Ok(f) => f,
                Err(FrameError::Closed) => return ReadEnd::Closed,
                Err(e @ FrameError::BadLength { .. }) => {
                    return ReadEnd::Violation(SessionError::BadFrameLength, e.to_string());
                }
                Err(e) => return ReadEnd::Io(e.to_string()),
            };
            if first && frame.len() < MIN_FRAME {
                use pqnode_crypto::handshake::messages::ToInitiator;
                return match ToInitiator::decode(&frame) {
                    Ok(ToInitiator::Reject(r)) => ReadEnd::Rejected(r.reason),
                    _ => ReadEnd::Violation(
                        SessionError::BadFrameLength,
                        format!("frame of {} bytes", frame.len()),
                    ),
                };
            }
            first = false;
            self.stats.add_received(frame.len() as u64, limit);
            match opener.open(&frame) {
                Ok(Inbound::Data(data)) => match reassembler.push(&data) {
                    Ok(Pushed::Whole(message_id, message)) => {
                        if let Some(prev) = self.previous_done.take() {
                            wait_done(prev).await;
                        }
                        let status = inner.inbox.deliver(
                            self.peer,
                            Security::Pq { suite: self.suite },
                            message,
                        );
                        inner.touch(&self.peer);
                        self.send_receipt(Receipt { message_id, status });
                    }
                    Ok(Pushed::More) => {}
                    // Refused at its first fragment: answered, its rest
                    // skipped, and the session goes on (§7 rev 4).
                    Ok(Pushed::Refused { id, status }) => {
                        if status == ReceiptStatus::InboxFull {
                            inner.metrics.inbox_dropped.inc();
                        }
                        if let Some(suppressed) = inner.may_log(self.peer, "message-refused") {
                            tracing::warn!(peer = %self.peer, %status, suppressed, max = inner.limits.max_message_size, "message from the peer refused at its first fragment");
                        }
                        self.send_receipt(Receipt {
                            message_id: id,
                            status,
                        });
                    }
                    Err(e) => return ReadEnd::Violation(SessionError::BadFragment, e.to_string()),
                },
                Ok(Inbound::KeyUpdate) => {
                    tracing::debug!(peer = %self.peer, "peer updated its traffic key")
                }
                Ok(Inbound::Receipt(receipt)) => self.on_receipt(receipt),
                Ok(Inbound::Close) => return ReadEnd::Closed,
                Err(e) => return ReadEnd::Violation(channel_error_name(&e), e.to_string()),
            }
        }
    }
}

async fn wait_done(mut prev: watch::Receiver<bool>) {
    let _ = tokio::time::timeout(DRAIN_WAIT, prev.wait_for(|d| *d)).await;
}

fn end_if_current(inner: &Arc<Inner>, peer: &PeerId, id: u64) -> bool {
    end(inner, peer, id)
}
