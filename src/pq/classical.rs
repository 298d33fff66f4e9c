//! The classical message path (PROTOCOL.md §8.2): `/pqnode/msg-classical/1.0.0`,
//! frames `u32 length || §7 fragment`, protected only by Noise. Never used
//! with a pinned peer, one that has a PQ session, or one whose PQ status is
//! still open.

use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use libp2p::PeerId;
use libp2p_stream::{IncomingStreams, OpenStreamError};
use pqnode_crypto::channel::MAX_BODY;

use super::fragment::{self, HEADER_LEN, Reassembler};
use super::framing::{FrameError, read_frame, write_frame};
use super::inbox::Security;
use super::policy::{self, ClassicalStream};
use super::{CLASSICAL_PROTOCOL, Inner, PqStatus, SendError, spawn_on};
use tokio::sync::watch;

/// How long a classical stream may sit idle between frames.
const IDLE: Duration = Duration::from_secs(30);

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
        let Ok(permit) = inner.classical_permits.clone().try_acquire_owned() else {
            if let Some(suppressed) = inner.may_log(peer, "classical-streams-full") {
                tracing::warn!(peer = %peer, suppressed, "too many classical message streams; dropping one");
            }
            continue;
        };
        let inner2 = inner.clone();
        spawn_on(&inner, async move {
            let mut verdict = decide(&inner2, &peer);
            if let (ClassicalStream::Wait, Some(mut rx)) = verdict {
                let _ = tokio::time::timeout(STATUS_WAIT, rx.wait_for(PqStatus::is_settled)).await;
                verdict = decide(&inner2, &peer);
            }
            if verdict.0 != ClassicalStream::Accept {
                inner2.metrics.classical_streams_refused.inc();
                if let Some(suppressed) = inner2.may_log(peer, "classical-refused") {
                    tracing::warn!(peer = %peer, suppressed, "classical message stream refused: the peer is pinned, has a PQ session, or its PQ status is open");
                }
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.close()).await;
                return;
            }
            let mut reassembler = Reassembler::new(inner2.limits.max_message_size);
            loop {
                let frame = match tokio::time::timeout(
                    IDLE,
                    read_frame(&mut stream, HEADER_LEN, MAX_BODY),
                )
                .await
                {
                    Ok(Ok(f)) => f,
                    Ok(Err(FrameError::Closed)) => break,
                    Ok(Err(e)) => {
                        if matches!(e, FrameError::BadLength { .. }) {
                            inner2.metrics.malformed("frame");
                        }
                        if let Some(suppressed) = inner2.may_log(peer, "classical-bad-frame") {
                            tracing::warn!(peer = %peer, error = %e, suppressed, "bad classical message frame");
                        }
                        break;
                    }
                    Err(_) => break,
                };
                match reassembler.push(&frame) {
                    Ok(Some((_, message))) => {
                        inner2
                            .inbox
                            .deliver(peer, Security::Classical, None, message);
                        inner2.touch(&peer);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        inner2.metrics.malformed("fragment");
                        if let Some(suppressed) = inner2.may_log(peer, "classical-bad-fragment") {
                            tracing::warn!(peer = %peer, error = %e, suppressed, "bad classical message fragment");
                        }
                        break;
                    }
                }
            }
            let _ = stream.close().await;
            drop(permit);
        });
    }
}

/// Sends one message over a new classical stream.
pub(crate) async fn send(inner: &Arc<Inner>, peer: PeerId, body: &[u8]) -> Result<(), SendError> {
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
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable("writing timed out".into())),
    }
}
