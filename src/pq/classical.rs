//! The classical message path (PROTOCOL.md §8.2): `/pqnode/msg-classical/1.0.0`,
//! frames `u32 length || §7 fragment`, protected only by Noise. Never used
//! with a pinned peer or one that has a PQ session.

use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncWriteExt, StreamExt};
use libp2p::PeerId;
use libp2p_stream::{IncomingStreams, OpenStreamError};
use pqnode_crypto::channel::MAX_BODY;

use super::fragment::{self, HEADER_LEN, Reassembler};
use super::framing::{FrameError, read_frame, write_frame};
use super::inbox::Security;
use super::{CLASSICAL_PROTOCOL, Inner, SendError, spawn_on};

/// How long a classical stream may sit idle between frames.
const IDLE: Duration = Duration::from_secs(30);

/// Accepts classical message streams.
pub(crate) async fn accept_loop(inner: Arc<Inner>, mut incoming: IncomingStreams) {
    while let Some((peer, mut stream)) = incoming.next().await {
        if inner.verifier.is_pinned(&peer) || inner.has_session(&peer) {
            inner.metrics.downgrade_refused.inc();
            inner.metrics.refuse("classical-from-pq-peer");
            tracing::warn!(peer = %peer, "classical message stream from a pinned or PQ peer refused");
            spawn_on(&inner, async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), stream.close()).await;
            });
            continue;
        }
        let Ok(permit) = inner.classical_permits.clone().try_acquire_owned() else {
            tracing::warn!(peer = %peer, "too many classical message streams; dropping one");
            continue;
        };
        let inner2 = inner.clone();
        spawn_on(&inner, async move {
            let mut reassembler = Reassembler::new(inner2.limits.max_message_size);
            loop {
                let frame =
                    match tokio::time::timeout(IDLE, read_frame(&mut stream, HEADER_LEN, MAX_BODY))
                        .await
                    {
                        Ok(Ok(f)) => f,
                        Ok(Err(FrameError::Closed)) => break,
                        Ok(Err(e)) => {
                            tracing::warn!(peer = %peer, error = %e, "bad classical message frame");
                            break;
                        }
                        Err(_) => break,
                    };
                match reassembler.push(&frame) {
                    Ok(Some((_, message))) => {
                        inner2
                            .inbox
                            .deliver(peer, Security::Classical, None, message);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(peer = %peer, error = %e, "bad classical message fragment");
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
