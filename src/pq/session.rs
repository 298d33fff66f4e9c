//! A PQ session: one writer task sealing fragments into frames, one reader
//! task opening frames and reassembling messages into the inbox. Any record
//! or fragment error ends the session (PROTOCOL.md §6) and disconnects.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use pqnode_crypto::Suite;
use pqnode_crypto::channel::{ChannelError, Inbound, MAX_FRAME, MIN_FRAME, Opener, Sealer};
use pqnode_crypto::handshake::Established;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::fragment::{self, Reassembler};
use super::framing::{FrameError, read_frame};
use super::inbox::Security;
use super::metrics::{ReasonLabels, SuiteLabels};
use super::{
    Inner, SESSION_QUEUE, SendError, SessionEntry, SessionInfo, WriterCmd, lock, spawn_on,
};
use crate::status::SecurityLevel;

/// Flush the write buffer once it holds this much.
const WRITE_CHUNK: usize = 256 * 1024;

/// Registers a finished handshake as the peer's session (tie-break of §5)
/// and starts its tasks.
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
    let info = SessionInfo {
        suite,
        local_initiated,
        since: SystemTime::now(),
    };
    {
        let mut sessions = lock(&inner.sessions);
        if let Some(existing) = sessions.get(&peer) {
            let initiator = |local: bool| if local { inner.local } else { peer };
            let (old, new) = (
                initiator(existing.info.local_initiated),
                initiator(local_initiated),
            );
            // Two sessions initiated by different sides: the one initiated
            // by the lower PeerId wins (§5). Two from the same side: the
            // newer replaces the older — only the authenticated peer (or we)
            // can initiate, and an initiator only does so when it has lost
            // its session (a restart while the old connection lingers).
            if old != new && old.to_bytes() < new.to_bytes() {
                tracing::debug!(peer = %peer, "second PQ session loses the tie-break; closing it");
                drop(sessions);
                spawn_on(inner, async move {
                    let mut stream = stream;
                    let _ = stream.close().await;
                });
                return;
            }
            tracing::debug!(peer = %peer, "second PQ session wins the tie-break; replacing the first");
        }
        if sessions.len() >= inner.limits.max_peers && !sessions.contains_key(&peer) {
            drop(sessions);
            tracing::warn!(peer = %peer, "session table full; closing new PQ session");
            return;
        }
        sessions.insert(peer, SessionEntry { id, info, tx });
    }
    inner
        .metrics
        .pq_sessions
        .get_or_create(&SuiteLabels {
            suite: suite.name(),
        })
        .inc();
    inner.label(peer, SecurityLevel::Pq, Some(suite));
    let (sealer, opener) = established.channel.split();
    let (r, w) = stream.split();
    let started = Instant::now();
    let span = tracing::info_span!("pq_session", peer = %peer, suite = %suite, session = id);
    spawn_on(
        inner,
        writer(inner.clone(), peer, sealer, w, rx, started).instrument(span.clone()),
    );
    spawn_on(
        inner,
        reader(inner.clone(), peer, id, suite, opener, r).instrument(span),
    );
}

/// Removes `peer`'s session (only session `id`, when given).
pub(crate) fn end(inner: &Arc<Inner>, peer: &PeerId, id: Option<u64>) -> bool {
    let removed = {
        let mut sessions = lock(&inner.sessions);
        match sessions.get(peer) {
            Some(e) if id.is_none_or(|id| e.id == id) => sessions.remove(peer).is_some(),
            _ => false,
        }
    };
    if removed {
        if inner.security.get(peer).map(|s| s.level) == Some(SecurityLevel::Pq) {
            inner.security.remove(peer);
        }
        inner.refresh_counts();
    }
    removed
}

async fn writer(
    inner: Arc<Inner>,
    peer: PeerId,
    mut sealer: Sealer,
    mut w: WriteHalf<Stream>,
    mut rx: mpsc::Receiver<WriterCmd>,
    started: Instant,
) {
    let mut buf = Vec::with_capacity(WRITE_CHUNK + MAX_FRAME);
    while let Some(cmd) = rx.recv().await {
        match cmd {
            WriterCmd::Send { body, ack } => {
                let msg_id = inner.next_message_id.fetch_add(1, Ordering::Relaxed);
                let now_ms = started.elapsed().as_millis() as u64;
                let result =
                    write_message(&mut sealer, &mut w, &mut buf, msg_id, &body, now_ms).await;
                let failed = result.is_err();
                let _ = ack.send(result.map_err(|reason| SendError::SessionEnded { peer, reason }));
                if failed {
                    break;
                }
            }
            WriterCmd::Close { done } => {
                close(&mut sealer, &mut w).await;
                let _ = done.send(());
                return;
            }
        }
    }
    // The session was replaced or ended: tell the peer, best effort.
    close(&mut sealer, &mut w).await;
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
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            let _ = w.write_all(&out).await;
            let _ = w.flush().await;
            let _ = w.close().await;
        })
        .await;
    }
}

fn channel_error_name(e: &ChannelError) -> &'static str {
    match e {
        ChannelError::BadFrameLength(_) => "bad-frame-length",
        ChannelError::UnexpectedSeq { .. } => "unexpected-seq",
        ChannelError::Forged => "forged-frame",
        ChannelError::InvalidRecord(_) => "invalid-record",
        ChannelError::Closed => "frame-after-close",
        _ => "record-layer",
    }
}

async fn reader(
    inner: Arc<Inner>,
    peer: PeerId,
    id: u64,
    suite: Suite,
    mut opener: Opener,
    mut r: ReadHalf<Stream>,
) {
    let mut reassembler = Reassembler::new(inner.limits.max_message_size);
    let failure: Option<(&'static str, String)> = loop {
        let frame = match read_frame(&mut r, MIN_FRAME, MAX_FRAME).await {
            Ok(f) => f,
            Err(FrameError::Closed) => break None,
            Err(e @ FrameError::BadLength { .. }) => {
                break Some(("bad-frame-length", e.to_string()));
            }
            Err(e) => break Some(("io", e.to_string())),
        };
        match opener.open(&frame) {
            Ok(Inbound::Data(data)) => match reassembler.push(&data) {
                Ok(Some((_, message))) => {
                    inner
                        .inbox
                        .deliver(peer, Security::Pq, Some(suite), message);
                }
                Ok(None) => {}
                Err(e) => break Some(("bad-fragment", e.to_string())),
            },
            Ok(Inbound::KeyUpdate) => tracing::debug!(peer = %peer, "peer updated its traffic key"),
            Ok(Inbound::Close) => break None,
            Err(e) => break Some((channel_error_name(&e), e.to_string())),
        }
    };
    let ended = end(&inner, &peer, Some(id));
    match failure {
        None => {
            if ended {
                tracing::info!(peer = %peer, "PQ session closed by the peer");
            }
        }
        Some((reason, detail)) => {
            inner
                .metrics
                .session_errors
                .get_or_create(&ReasonLabels {
                    reason: reason.to_owned(),
                })
                .inc();
            if reason == "io" {
                tracing::info!(peer = %peer, error = %detail, "PQ session stream ended");
            } else {
                tracing::warn!(peer = %peer, reason, error = %detail, "PQ session ended by a record-layer error");
                inner.refuse(peer, "session-error").await;
            }
        }
    }
}
