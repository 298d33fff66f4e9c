//! Drives the sans-IO handshake over `/pqnode/pq/1.0.0` streams: framing,
//! the 10 s deadline, Reject on failure, the concurrency limits, and the
//! blocking pool for the cryptography.

use std::sync::Arc;
use std::time::Instant;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use libp2p_stream::{IncomingStreams, OpenStreamError};
use pqnode_crypto::handshake::{
    Established, HandshakeError, Initiator, InitiatorAwaitingResp, InitiatorStep, RejectReason,
    Responder, ResponderAwaitingFin, ResponderAwaitingInit, ResponderStep,
    messages::MAX_MESSAGE_LEN, reject_message,
};
use pqnode_crypto::rng::system_rng;
use tracing::Instrument;

use super::framing::{FrameError, read_frame, write_frame};
use super::{Inner, PQ_PROTOCOL, lock, session, spawn_on};

/// Why a handshake over a stream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HsFailure {
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("stream: {0}")]
    Frame(#[from] FrameError),
    #[error("handshake did not finish within its deadline")]
    Timeout,
    #[error("the remote does not support {0}")]
    Unsupported(String),
    #[error("could not open the stream: {0}")]
    Open(String),
    #[error("blocking task failed: {0}")]
    Join(String),
}

impl HsFailure {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            HsFailure::Handshake(e) => e.name(),
            HsFailure::Frame(FrameError::Closed) => "stream-closed",
            HsFailure::Frame(FrameError::BadLength { .. }) => "decode",
            HsFailure::Frame(FrameError::Io(_)) => "io",
            HsFailure::Timeout => "timeout",
            HsFailure::Unsupported(_) => "unsupported",
            HsFailure::Open(_) => "open-stream",
            HsFailure::Join(_) => "local",
        }
    }

    /// The §4 record error name, when a record was refused.
    fn record_reason(&self) -> Option<&str> {
        match self {
            HsFailure::Handshake(HandshakeError::Record(r)) => Some(&r.reason),
            _ => None,
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HsFailure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| HsFailure::Join(e.to_string()))
}

async fn read_msg(stream: &mut Stream) -> Result<Vec<u8>, HsFailure> {
    Ok(read_frame(stream, 1, MAX_MESSAGE_LEN).await?)
}

/// How long a stream that was sent a Reject is kept open for the peer to
/// read it and close its side.
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);
/// What a lingering stream may still receive (discarded).
const LINGER_MAX_BYTES: usize = 64 * 1024;

/// After a Reject: wait until the peer closes its side (or `LINGER` passes,
/// or it has sent `LINGER_MAX_BYTES` more). A disconnect right after the
/// Reject can otherwise drop the stream's last frames before the connection
/// has written them: on a loaded single core the peer got a bare close
/// instead of the Reject.
async fn linger(stream: &mut Stream) {
    let _ = tokio::time::timeout(LINGER, async {
        let mut buf = [0u8; 1024];
        let mut total = 0;
        while total < LINGER_MAX_BYTES {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// Best effort: tell the peer why, then close.
async fn reject_and_close(stream: &mut Stream, reason: Option<RejectReason>) {
    if let Some(reason) = reason {
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            write_frame(stream, &reject_message(reason)),
        )
        .await;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.close()).await;
}

/// Accepts inbound PQ streams, bounded by the handshake semaphore.
pub(crate) async fn accept_loop(inner: Arc<Inner>, mut incoming: IncomingStreams) {
    while let Some((peer, mut stream)) = incoming.next().await {
        let Ok(permit) = inner.inbound_permits.clone().try_acquire_owned() else {
            inner.metrics.handshake_failed("busy");
            tracing::warn!(peer = %peer, "too many concurrent inbound PQ handshakes: rejecting (busy)");
            if let Ok(p) = inner.reject_permits.clone().try_acquire_owned() {
                spawn_on(&inner, async move {
                    reject_and_close(&mut stream, Some(RejectReason::Busy)).await;
                    drop(p);
                });
            }
            continue;
        };
        let inner2 = inner.clone();
        spawn_on(
            &inner,
            async move {
                *lock(&inner2.inbound_pending).entry(peer).or_default() += 1;
                inner2.metrics.handshakes_in_progress.inc();
                inner2.metrics.handshakes_started.inc();
                let started = Instant::now();
                let result = tokio::time::timeout(
                    inner2.limits.handshake_timeout,
                    respond(&inner2, peer, &mut stream),
                )
                .await;
                inner2.metrics.handshakes_in_progress.dec();
                {
                    let mut pending = lock(&inner2.inbound_pending);
                    if let Some(n) = pending.get_mut(&peer) {
                        *n -= 1;
                        if *n == 0 {
                            pending.remove(&peer);
                        }
                    }
                }
                let result = result.unwrap_or(Err(HsFailure::Timeout));
                finish(&inner2, peer, stream, result, started, false).await;
                // Held through the Reject and its linger, so they count
                // against the concurrency limit too.
                drop(permit);
            }
            .instrument(tracing::info_span!("pq_handshake", peer = %peer, side = "responder")),
        );
    }
}

/// Opens the PQ stream to `peer` and runs the initiator, unless one runs already.
///
/// Only for a connected peer: libp2p-stream's `open_stream` dials a peer it
/// is not connected to, and the PQ layer must never reconnect to a peer that
/// left (or was refused) on its own initiative.
pub(crate) fn spawn_initiator(inner: &Arc<Inner>, peer: PeerId) {
    if !lock(&inner.connected).contains(&peer) {
        return;
    }
    if !lock(&inner.outbound_pending).insert(peer) {
        return;
    }
    let inner2 = inner.clone();
    spawn_on(inner, async move {
        let Ok(permit) = inner2.outbound_permits.clone().acquire_owned().await else {
            lock(&inner2.outbound_pending).remove(&peer);
            return;
        };
        inner2.metrics.handshakes_in_progress.inc();
        inner2.metrics.handshakes_started.inc();
        let started = Instant::now();
        let mut control = inner2.node.stream_control();
        let opened = tokio::time::timeout(
            inner2.limits.handshake_timeout,
            control.open_stream(peer, PQ_PROTOCOL),
        )
        .await;
        let result = match opened {
            Err(_) => Err(HsFailure::Timeout),
            Ok(Err(OpenStreamError::UnsupportedProtocol(p))) => {
                Err(HsFailure::Unsupported(p.to_string()))
            }
            Ok(Err(e)) => Err(HsFailure::Open(e.to_string())),
            Ok(Ok(mut stream)) => {
                let left = inner2
                    .limits
                    .handshake_timeout
                    .saturating_sub(started.elapsed());
                let r = tokio::time::timeout(left, initiate(&inner2, peer, &mut stream)).await;
                Ok((stream, r.unwrap_or(Err(HsFailure::Timeout))))
            }
        };
        inner2.metrics.handshakes_in_progress.dec();
        drop(permit);
        lock(&inner2.outbound_pending).remove(&peer);
        match result {
            Ok((stream, result)) => finish(&inner2, peer, stream, result, started, true).await,
            Err(HsFailure::Unsupported(p)) => {
                inner2
                    .no_pq(peer, &format!("remote does not support {p}"))
                    .await
            }
            Err(e) => {
                inner2.metrics.handshake_failed(e.name());
                tracing::warn!(peer = %peer, reason = e.name(), error = %e, "PQ handshake could not start");
            }
        }
    }.instrument(tracing::info_span!("pq_handshake", peer = %peer, side = "initiator")));
}

async fn initiate(
    inner: &Arc<Inner>,
    peer: PeerId,
    stream: &mut Stream,
) -> Result<Established, HsFailure> {
    let config = inner.hs().ok_or(HsFailure::Join("PQ unavailable".into()))?;
    let remote = peer.to_bytes();
    let (mut state, init): (InitiatorAwaitingResp, Vec<u8>) = blocking(move || {
        let mut rng = system_rng();
        Initiator::start(config, &remote, &mut rng)
    })
    .await??;
    write_frame(stream, &init).await?;
    loop {
        let msg = read_msg(stream).await?;
        let verifier = inner.verifier.clone();
        let step = blocking(move || {
            let mut rng = system_rng();
            state.handle(&msg, verifier.as_ref(), &mut rng)
        })
        .await??;
        match step {
            InitiatorStep::Retry { state: next, init } => {
                write_frame(stream, &init).await?;
                state = next;
            }
            InitiatorStep::Done { fin, session } => {
                write_frame(stream, &fin).await?;
                return Ok(*session);
            }
        }
    }
}

async fn respond(
    inner: &Arc<Inner>,
    peer: PeerId,
    stream: &mut Stream,
) -> Result<Established, HsFailure> {
    let config = inner.hs().ok_or(HsFailure::Join("PQ unavailable".into()))?;
    let mut state: ResponderAwaitingInit = Responder::start(config, &peer.to_bytes())?;
    let awaiting_fin: ResponderAwaitingFin = loop {
        let msg = read_msg(stream).await?;
        let step = blocking(move || {
            let mut rng = system_rng();
            state.handle(&msg, &mut rng)
        })
        .await??;
        match step {
            ResponderStep::Retry { state: next, retry } => {
                write_frame(stream, &retry).await?;
                state = next;
            }
            ResponderStep::Resp { state, resp } => {
                write_frame(stream, &resp).await?;
                break *state;
            }
        }
    };
    let fin = read_msg(stream).await?;
    let verifier = inner.verifier.clone();
    Ok(blocking(move || awaiting_fin.handle(&fin, verifier.as_ref())).await??)
}

/// After a handshake: start the session, or account for the failure.
async fn finish(
    inner: &Arc<Inner>,
    peer: PeerId,
    mut stream: Stream,
    result: Result<Established, HsFailure>,
    started: Instant,
    local_initiated: bool,
) {
    match result {
        Ok(established) => {
            let elapsed = started.elapsed();
            inner
                .metrics
                .handshake_duration
                .observe(elapsed.as_secs_f64());
            tracing::info!(
                peer = %peer,
                suite = %established.suite,
                initiator = local_initiated,
                duration_ms = elapsed.as_millis() as u64,
                "PQ session established"
            );
            session::start(inner, peer, established, stream, local_initiated);
        }
        Err(e) => {
            let reason = e.name();
            inner.metrics.handshake_failed(reason);
            let reject = match &e {
                HsFailure::Handshake(h) => h.reject_reason(),
                HsFailure::Frame(FrameError::BadLength { .. }) => Some(RejectReason::BadMessage),
                _ => None,
            };
            reject_and_close(&mut stream, reject).await;
            if reject.is_some() {
                // What follows may disconnect the peer: let the Reject arrive first.
                linger(&mut stream).await;
            }
            tracing::warn!(peer = %peer, reason, record = e.record_reason().unwrap_or(""), error = %e, "PQ handshake failed");
            match &e {
                HsFailure::Handshake(HandshakeError::NoCommonSuite { .. })
                | HsFailure::Handshake(HandshakeError::Rejected(RejectReason::NoCommonSuite)) => {
                    inner.no_pq(peer, "no common suite").await;
                }
                _ if e.record_reason() == Some("key-mismatch") => {
                    inner.refuse(peer, "key-mismatch").await
                }
                HsFailure::Handshake(HandshakeError::Record(_))
                | HsFailure::Handshake(HandshakeError::BadSignature)
                | HsFailure::Handshake(HandshakeError::BadMac)
                | HsFailure::Handshake(HandshakeError::Rejected(RejectReason::AuthFailed)) => {
                    inner.refuse(peer, "auth-failed").await
                }
                HsFailure::Handshake(HandshakeError::Decode(_))
                | HsFailure::Handshake(HandshakeError::Protocol(_))
                | HsFailure::Handshake(HandshakeError::LowOrderKey)
                | HsFailure::Frame(FrameError::BadLength { .. }) => {
                    inner.refuse(peer, "bad-handshake").await
                }
                _ => {}
            }
        }
    }
}
