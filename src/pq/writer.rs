//! A PQ session's writer task: the only one writing to the session's
//! stream. It seals and writes queued messages (registered in the peer's
//! in-flight map before their first frame), receipts ahead of them, and
//! the close frame; when the session ends it fails what is still queued
//! with the reason, and still sends the receipts it owes.
//!
//! A peer that stops reading cannot hold it: a message or a batch of
//! receipts not taken whole within `limits.partial_message_timeout_secs`
//! (the time the peer itself gives a partial message) ends the session.
//! A message whose writing began is never reported "unsent", so it is
//! never sent twice ([`WriteFailed`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::AsyncWriteExt;
use futures::io::WriteHalf;
use libp2p::{PeerId, Stream};
use pqnode_crypto::channel::{MAX_FRAME, Sealer};
use pqnode_crypto::receipt::Receipt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::fragment;
use super::reasons::SessionError;
use super::state::SessionStats;
use super::{Inner, SendError, WriteFailed, WriterCmd};

/// Flush the write buffer once it holds this much.
const WRITE_CHUNK: usize = 256 * 1024;

/// Writes the session's stream until it ends (see the module docs).
#[allow(clippy::too_many_arguments)]
pub(super) async fn writer(
    inner: Arc<Inner>,
    peer: PeerId,
    mut sealer: Sealer,
    mut w: WriteHalf<Stream>,
    mut rx: mpsc::Receiver<WriterCmd>,
    mut receipts: mpsc::Receiver<Receipt>,
    started: Instant,
    stats: Arc<SessionStats>,
    cancel: SessionEnd,
) {
    let mut buf = Vec::with_capacity(WRITE_CHUNK + MAX_FRAME);
    let limit = inner.limits.rehandshake_bytes;
    let stall = inner.limits.partial_message_timeout;
    // Why the session failed, if it did: every message still queued then
    // fails with it.
    let mut failed: Option<String> = None;
    loop {
        // Receipts go first: they are small, and a peer waits for each.
        let next = tokio::select! {
            biased;
            _ = cancel.ended() => {
                failed = Some(cancel.reason());
                break;
            }
            Some(first) = receipts.recv() => Next::Receipt(first),
            cmd = rx.recv() => Next::Cmd(cmd),
        };
        let cmd = match next {
            Next::Receipt(first) => {
                let now_ms = started.elapsed().as_millis() as u64;
                let write =
                    write_receipts(&mut sealer, &mut w, &mut buf, first, &mut receipts, now_ms);
                let result = tokio::select! {
                    biased;
                    _ = cancel.ended() => Err(cancel.reason()),
                    r = tokio::time::timeout(stall, write) => r.unwrap_or_else(|_| Err(stalled(&inner, &cancel, stall))),
                };
                if let Err(reason) = result {
                    failed = Some(reason);
                    break;
                }
                continue;
            }
            Next::Cmd(None) => break,
            Next::Cmd(Some(cmd)) => cmd,
        };
        match cmd {
            WriterCmd::Send { body, ack, receipt } => {
                if ack.is_closed() {
                    // Its sender gave up waiting (the session was not
                    // taking data): it is not written late.
                    continue;
                }
                let msg_id = inner.next_message_id.fetch_add(1, Ordering::Relaxed);
                // In flight before its first frame leaves, so that even
                // the fastest receipt finds it.
                let registered = inner
                    .table()
                    .get_mut(&peer)
                    .map(|e| e.in_flight.insert(msg_id, receipt));
                match registered {
                    Some(true) => {}
                    Some(false) => {
                        let _ = ack.send(Err(WriteFailed::Unsent(SendError::Busy { peer })));
                        continue;
                    }
                    None => {
                        let _ =
                            ack.send(Err(WriteFailed::Unsent(SendError::NotConnected { peer })));
                        continue;
                    }
                }
                let now_ms = started.elapsed().as_millis() as u64;
                // A write stuck on a peer that stopped reading is abandoned
                // when the session ends.
                let write = write_message(&mut sealer, &mut w, &mut buf, msg_id, &body, now_ms);
                let result = tokio::select! {
                    biased;
                    _ = cancel.ended() => Err(cancel.reason()),
                    r = tokio::time::timeout(stall, write) => r.unwrap_or_else(|_| Err(stalled(&inner, &cancel, stall))),
                }
                // The connection may close (the peer is being disconnected)
                // before this task sees the end: say why, not "closed".
                .map_err(|e| {
                    if cancel.is_ended() {
                        cancel.reason()
                    } else {
                        e
                    }
                });
                match &result {
                    Ok(()) => stats.add_sent(body.len() as u64, limit),
                    Err(reason) => {
                        if let Some(e) = inner.table().get_mut(&peer) {
                            e.in_flight.forget(msg_id);
                        }
                        failed = Some(reason.clone());
                    }
                }
                let answered = ack.send(result.map(|()| msg_id).map_err(WriteFailed::Interrupted));
                if answered.is_err() {
                    // Its sender stopped waiting meanwhile: no one waits
                    // for its receipt either.
                    if let Some(e) = inner.table().get_mut(&peer) {
                        e.in_flight.forget(msg_id);
                    }
                }
                if failed.is_some() {
                    break;
                }
            }
            WriterCmd::Close { done } => {
                flush_receipts(&mut sealer, &mut w, &mut buf, &mut receipts, &started).await;
                close(&mut sealer, &mut w).await;
                let _ = done.send(());
                return;
            }
        }
    }
    if let Some(reason) = failed {
        // The session ended (its reader found why): what is queued fails,
        // saying why; the receipts it owes are still sent, best effort and
        // bounded in time.
        rx.close();
        while let Some(cmd) = rx.recv().await {
            match cmd {
                WriterCmd::Send { ack, .. } => {
                    let _ = ack.send(Err(WriteFailed::Unsent(SendError::SessionEnded {
                        peer,
                        reason: reason.clone(),
                    })));
                }
                WriterCmd::Close { done } => {
                    let _ = done.send(());
                }
            }
        }
        flush_receipts(&mut sealer, &mut w, &mut buf, &mut receipts, &started).await;
        return;
    }
    // The session was replaced or ended: what was queued is written, and
    // the receipts already owed; tell the peer, best effort.
    flush_receipts(&mut sealer, &mut w, &mut buf, &mut receipts, &started).await;
    close(&mut sealer, &mut w).await;
}

/// The peer did not take a message (or receipts) within `stall`: the
/// session ends (its reader stops too, and the initiator re-establishes it
/// like a lost one).
fn stalled(inner: &Inner, cancel: &SessionEnd, stall: Duration) -> String {
    inner.metrics.session_error(SessionError::WriteStalled);
    cancel.end(format!(
        "the peer did not take what this node wrote within {} s (limits.partial_message_timeout_secs): it stopped reading; session ended",
        stall.as_secs()
    ));
    cancel.reason()
}

enum Next {
    Receipt(Receipt),
    Cmd(Option<WriterCmd>),
}

/// Seals `first` and every receipt queued behind it, then writes them.
async fn write_receipts(
    sealer: &mut Sealer,
    w: &mut WriteHalf<Stream>,
    buf: &mut Vec<u8>,
    first: Receipt,
    queued: &mut mpsc::Receiver<Receipt>,
    now_ms: u64,
) -> Result<(), String> {
    buf.clear();
    let mut next = Some(first);
    while let Some(r) = next {
        sealer
            .seal_receipt(&r, now_ms, buf)
            .map_err(|e| e.to_string())?;
        if buf.len() >= WRITE_CHUNK {
            break;
        }
        next = queued.try_recv().ok();
    }
    w.write_all(buf).await.map_err(|e| e.to_string())?;
    buf.clear();
    w.flush().await.map_err(|e| e.to_string())
}

/// Writes the receipts still queued when the session is replaced or ends
/// (bounded in time, like the close frame).
async fn flush_receipts(
    sealer: &mut Sealer,
    w: &mut WriteHalf<Stream>,
    buf: &mut Vec<u8>,
    queued: &mut mpsc::Receiver<Receipt>,
    started: &Instant,
) {
    queued.close();
    let now_ms = started.elapsed().as_millis() as u64;
    while let Ok(first) = queued.try_recv() {
        let write = write_receipts(sealer, w, buf, first, queued, now_ms);
        if !matches!(
            tokio::time::timeout(Duration::from_secs(2), write).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}

/// How a session ended, shared by its reader (which finds out) and its
/// writer (which fails what is queued with the reason).
#[derive(Clone, Default)]
pub(super) struct SessionEnd {
    token: CancellationToken,
    reason: Arc<std::sync::OnceLock<String>>,
}

impl SessionEnd {
    /// Ends the session for `reason` (the first reason given stays).
    pub(super) fn end(&self, reason: impl Into<String>) {
        let _ = self.reason.set(reason.into());
        self.token.cancel();
    }

    fn is_ended(&self) -> bool {
        self.token.is_cancelled()
    }

    pub(super) async fn ended(&self) {
        self.token.cancelled().await;
    }

    pub(super) fn reason(&self) -> String {
        self.reason
            .get()
            .cloned()
            .unwrap_or_else(|| "the session ended".to_owned())
    }
}

async fn write_message(
    sealer: &mut Sealer,
    w: &mut WriteHalf<Stream>,
    buf: &mut Vec<u8>,
    msg_id: u64,
    body: &[u8],
    now_ms: u64,
) -> Result<(), String> {
    buf.clear();
    for frag in fragment::fragments(msg_id, body) {
        sealer
            .seal_data(&frag, now_ms, buf)
            .map_err(|e| e.to_string())?;
        if buf.len() >= WRITE_CHUNK {
            w.write_all(buf).await.map_err(|e| e.to_string())?;
            buf.clear();
        }
    }
    w.write_all(buf).await.map_err(|e| e.to_string())?;
    buf.clear();
    w.flush().await.map_err(|e| e.to_string())
}

async fn close(sealer: &mut Sealer, w: &mut WriteHalf<Stream>) {
    let mut out = Vec::new();
    if sealer.seal_close(&mut out).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            let _ = w.write_all(&out).await;
            let _ = w.flush().await;
            let _ = w.close().await;
        })
        .await;
    }
}
