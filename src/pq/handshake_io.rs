//! Drives the sans-IO handshake over `/pqnode/pq/1.0.0` streams: framing,
//! the 10 s deadline, Reject on failure, the global and per-peer limits
//! (§9 rev 3), the suite rules toward pinned peers (§5 rev 3), pins written
//! only after a whole handshake (§8.3 rev 3), and the blocking pool for the
//! cryptography and the pin database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use libp2p_stream::{IncomingStreams, OpenStreamError};
use pqnode_crypto::handshake::{
    Established, HandshakeError, Initiator, InitiatorAwaitingResp, InitiatorStep, RejectReason,
    Responder, ResponderAwaitingFin, ResponderAwaitingInit, ResponderStep,
    messages::MAX_MESSAGE_LEN, reject_message,
};
use pqnode_crypto::rng::system_rng;
use pqnode_keys::pins::{PinError, PinUpdate};
use pqnode_keys::time::unix_now;
use tracing::Instrument;

use super::framing::{FrameError, read_frame, write_frame};
use super::policy::SuiteRule;
use super::policy::{self, FailureAction, HandshakeOutcome, NoPq, RefuseReason};
use super::reasons::HandshakeFailure;
use super::state::{Admission, Pace, RETRY_MAX};
use super::transition::Event;
use super::{Inner, PQ_PROTOCOL, session, spawn_on};

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
    #[error("the peer is pinned only under suites this node does not enable")]
    NoPinnedSuite,
    #[error("the pin changed during the handshake: {0}")]
    PinMismatch(String),
    #[error("local failure: {0}")]
    Local(String),
    #[error("the peer has no pin and pq.allow_unpinned is false")]
    Unpinned,
}

impl HsFailure {
    pub(crate) fn reason(&self) -> HandshakeFailure {
        match self {
            HsFailure::Handshake(e) => HandshakeFailure::from(e),
            HsFailure::Frame(FrameError::Closed) => HandshakeFailure::StreamClosed,
            HsFailure::Frame(FrameError::BadLength { .. }) => HandshakeFailure::Decode,
            HsFailure::Frame(FrameError::Io(_)) => HandshakeFailure::Io,
            HsFailure::Timeout => HandshakeFailure::Timeout,
            HsFailure::Unsupported(_) => HandshakeFailure::Unsupported,
            HsFailure::Open(_) => HandshakeFailure::OpenStream,
            HsFailure::NoPinnedSuite | HsFailure::PinMismatch(_) => HandshakeFailure::KeyMismatch,
            HsFailure::Local(_) => HandshakeFailure::Local,
            HsFailure::Unpinned => HandshakeFailure::Unpinned,
        }
    }

    /// The §4 record error name, when a record was refused.
    fn record_reason(&self) -> Option<&str> {
        match self {
            HsFailure::Handshake(HandshakeError::Record(r)) => Some(&r.reason),
            _ => None,
        }
    }

    /// The Reject to send.
    fn reject(&self) -> Option<RejectReason> {
        match self {
            HsFailure::Handshake(h) => h.reject_reason(),
            HsFailure::Frame(FrameError::BadLength { .. }) => Some(RejectReason::BadMessage),
            HsFailure::PinMismatch(_) => Some(RejectReason::AuthFailed),
            HsFailure::Unpinned => Some(RejectReason::Policy),
            _ => None,
        }
    }

    /// What the failure means (§8).
    fn outcome(&self) -> HandshakeOutcome {
        use HandshakeError as H;
        match self {
            HsFailure::Handshake(H::NoCommonSuite { .. })
            | HsFailure::Handshake(H::Rejected(RejectReason::NoCommonSuite)) => {
                HandshakeOutcome::NoCommonSuite
            }
            HsFailure::NoPinnedSuite
            | HsFailure::PinMismatch(_)
            | HsFailure::Handshake(H::UnpinnedSuite { .. }) => HandshakeOutcome::KeyMismatch,
            _ if self.record_reason() == Some("key-mismatch") => HandshakeOutcome::KeyMismatch,
            HsFailure::Unpinned => HandshakeOutcome::Unpinned,
            _ if self.record_reason() == Some("unpinned-peer") => HandshakeOutcome::Unpinned,
            _ if self.record_reason() == Some("pin-store") => HandshakeOutcome::Local,
            HsFailure::Handshake(H::Record(_) | H::BadSignature | H::BadMac) => {
                HandshakeOutcome::AuthFailed
            }
            HsFailure::Handshake(H::Rejected(RejectReason::Busy)) => HandshakeOutcome::PeerBusy,
            HsFailure::Handshake(H::Rejected(_)) => HandshakeOutcome::RejectedByPeer,
            HsFailure::Handshake(H::Decode(_) | H::Protocol(_) | H::LowOrderKey)
            | HsFailure::Frame(FrameError::BadLength { .. }) => HandshakeOutcome::BadMessage,
            HsFailure::Timeout
            | HsFailure::Frame(_)
            | HsFailure::Open(_)
            | HsFailure::Unsupported(_) => HandshakeOutcome::Transient,
            HsFailure::Handshake(_) | HsFailure::Local(_) => HandshakeOutcome::Local,
        }
    }
}

/// Runs `f` on the blocking pool, tracked by the layer so that shutdown
/// waits for it (it may hold the pin database).
async fn blocking<T: Send + 'static>(
    inner: &Arc<Inner>,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HsFailure> {
    inner
        .blocking
        .spawn_blocking(f)
        .await
        .map_err(|e| HsFailure::Local(e.to_string()))
}

async fn read_msg(stream: &mut Stream) -> Result<Vec<u8>, HsFailure> {
    Ok(read_frame(stream, 1, MAX_MESSAGE_LEN).await?)
}

/// How long a stream that was sent a Reject is kept open for the peer to
/// read it and close its side.
const LINGER: Duration = Duration::from_secs(1);
/// What a lingering stream may still receive (discarded).
const LINGER_MAX_BYTES: usize = 64 * 1024;

/// After a Reject: wait until the peer closes its side (or `LINGER` passes,
/// or it has sent `LINGER_MAX_BYTES` more), so that a disconnect right after
/// the Reject does not drop it unwritten.
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
            Duration::from_secs(1),
            write_frame(stream, &reject_message(reason)),
        )
        .await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.close()).await;
}

fn reject_busy(inner: &Arc<Inner>, mut stream: Stream) {
    if let Ok(p) = inner.reject_permits.clone().try_acquire_owned() {
        spawn_on(inner, async move {
            reject_and_close(&mut stream, Some(RejectReason::Busy)).await;
            drop(p);
        });
    }
}

/// Marks `peer` negotiating unless its status is already settled.
fn mark_negotiating(inner: &Arc<Inner>, peer: &PeerId) {
    inner.apply(peer, Event::HandshakeStarted);
}

/// After a handshake that did not settle anything: back to unknown (unless
/// another handshake runs or a session exists).
fn unmark_negotiating(inner: &Arc<Inner>, peer: &PeerId) {
    inner.apply(peer, Event::HandshakesEnded);
}

/// Accepts inbound PQ streams, bounded globally and per peer.
pub(crate) async fn accept_loop(inner: Arc<Inner>, mut incoming: IncomingStreams) {
    while let Some((peer, stream)) = incoming.next().await {
        if inner
            .shutting_down
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // Shutting down, connections about to close: `busy`, so the peer
            // retries later instead of seeing the protocol vanish.
            reject_busy(&inner, stream);
            continue;
        }
        let now = Instant::now();
        let admission = inner.table().admit_inbound(&peer, now);
        match admission {
            Admission::Admitted => {}
            Admission::Busy => {
                inner.metrics.handshake_failed(HandshakeFailure::PeerBusy);
                let abusive = inner.table().rejected_busy(&peer, now);
                if let Some(suppressed) = inner.may_log(peer, "busy") {
                    tracing::warn!(peer = %peer, suppressed, "PQ handshake beyond the per-peer limits: rejecting (busy)");
                }
                reject_busy(&inner, stream);
                if abusive {
                    let inner2 = inner.clone();
                    spawn_on(&inner, async move {
                        inner2.refuse(peer, RefuseReason::Abusive).await
                    });
                }
                continue;
            }
            Admission::Abusive => {
                drop(stream);
                let inner2 = inner.clone();
                spawn_on(&inner, async move {
                    inner2.refuse(peer, RefuseReason::Abusive).await
                });
                continue;
            }
        }
        let Ok(permit) = inner.inbound_permits.clone().try_acquire_owned() else {
            inner.table().inbound_done(&peer);
            inner.metrics.handshake_failed(HandshakeFailure::Busy);
            if let Some(suppressed) = inner.may_log(peer, "global-busy") {
                tracing::warn!(peer = %peer, suppressed, "too many concurrent inbound PQ handshakes: rejecting (busy)");
            }
            reject_busy(&inner, stream);
            continue;
        };
        let inner2 = inner.clone();
        spawn_on(
            &inner,
            async move {
                let mut stream = stream;
                mark_negotiating(&inner2, &peer);
                inner2.metrics.handshakes_in_progress.inc();
                inner2.metrics.inbound_handshakes_in_progress.inc();
                inner2.metrics.handshakes_started.inc();
                let started = Instant::now();
                let result = tokio::time::timeout(
                    inner2.limits.handshake_timeout,
                    respond(&inner2, peer, &mut stream),
                )
                .await
                .unwrap_or(Err(HsFailure::Timeout));
                inner2.metrics.handshakes_in_progress.dec();
                inner2.metrics.inbound_handshakes_in_progress.dec();
                match result {
                    Ok(est) => {
                        established(&inner2, peer, stream, est, started, false);
                        // After the session is registered: whoever awaits
                        // this handshake's end sees its outcome.
                        inner2.table().inbound_done(&peer);
                    }
                    Err(e) => {
                        inner2.table().inbound_done(&peer);
                        let abusive = inner2.table().handshake_failed(&peer, Instant::now());
                        reject_and_close(&mut stream, e.reject()).await;
                        if e.reject().is_some() {
                            // What follows may disconnect the peer: let the
                            // Reject arrive first.
                            linger(&mut stream).await;
                        }
                        let action = failed(&inner2, peer, &e, false).await;
                        unmark_negotiating(&inner2, &peer);
                        if abusive && matches!(action, FailureAction::RetryLater) {
                            inner2.refuse(peer, RefuseReason::Abusive).await;
                        }
                    }
                }
                // Held through the Reject and its linger, so they count
                // against the concurrency limit too.
                drop(permit);
            }
            .instrument(
                tracing::info_span!(parent: None, "pq_handshake", peer = %peer, side = "responder"),
            ),
        );
    }
}

/// Opens the PQ stream to `peer` and runs the initiator, unless one runs
/// already; transient failures are retried with back-off while the peer
/// stays connected and its status open.
///
/// Only for a connected peer: libp2p-stream's `open_stream` dials a peer it
/// is not connected to, and the PQ layer must never reconnect to a peer that
/// left (or was refused) on its own initiative.
pub(crate) fn spawn_initiator(inner: &Arc<Inner>, peer: PeerId) {
    if !inner.table().begin_outbound(&peer) {
        return;
    }
    let inner2 = inner.clone();
    spawn_on(
        inner,
        async move {
            if let Err(FailureAction::RetryLater) = run_initiator(&inner2, peer).await {
                schedule_retry(&inner2, peer);
            }
        }
        .instrument(
            tracing::info_span!(parent: None, "pq_handshake", peer = %peer, side = "initiator"),
        ),
    );
}

/// Retries the handshake with `peer` after its back-off (doubling, at most
/// a minute), if it is still connected, open and idle by then.
pub(crate) fn schedule_retry(inner: &Arc<Inner>, peer: PeerId) {
    let delay = {
        let mut t = inner.table();
        let Some(e) = t.get_mut(&peer) else {
            return;
        };
        let d = e.retry_backoff;
        e.retry_backoff = (d * 2).min(RETRY_MAX);
        d
    };
    let inner2 = inner.clone();
    spawn_on(inner, async move {
        tokio::time::sleep(delay).await;
        inner2.initiate_if_open(peer);
    });
}

/// One initiator handshake with `peer`, whose outbound slot the caller has
/// taken (it is given back here). On success the session starts; a failure
/// has been acted upon (refusal, classical label) and is returned.
pub(crate) async fn run_initiator(inner: &Arc<Inner>, peer: PeerId) -> Result<(), FailureAction> {
    if inner.verifier.refuses_unpinned(&peer) {
        // Refused before any stream or PQ work (§8.3).
        inner.table().outbound_done(&peer);
        return Err(failed(inner, peer, &HsFailure::Unpinned, true).await);
    }
    // Never faster than the peer admits (§9 rev 3): a wait, not a `busy`.
    loop {
        let pace = inner.table().pace_outbound(&peer, Instant::now());
        match pace {
            Pace::Now => break,
            Pace::Wait(d) => {
                inner.metrics.handshakes_paced.inc();
                tracing::debug!(peer = %peer, wait_ms = d.as_millis() as u64, "handshake paced to the peer's per-minute limit");
                tokio::time::sleep(d).await;
            }
            Pace::Gone => {
                inner.table().outbound_done(&peer);
                return Err(FailureAction::RetryLater);
            }
        }
    }
    let Ok(permit) = inner.outbound_permits.clone().acquire_owned().await else {
        inner.table().outbound_done(&peer);
        return Err(FailureAction::RetryLater);
    };
    mark_negotiating(inner, &peer);
    inner.metrics.handshakes_in_progress.inc();
    inner.metrics.handshakes_started.inc();
    let started = Instant::now();
    let mut control = inner.node.stream_control();
    let opened = tokio::time::timeout(
        inner.limits.handshake_timeout,
        control.open_stream(peer, PQ_PROTOCOL),
    )
    .await;
    let result = match opened {
        Err(_) => Err((None, HsFailure::Timeout)),
        Ok(Err(OpenStreamError::UnsupportedProtocol(p))) => {
            Err((None, HsFailure::Unsupported(p.to_string())))
        }
        Ok(Err(e)) => Err((None, HsFailure::Open(e.to_string()))),
        Ok(Ok(mut stream)) => {
            let left = inner
                .limits
                .handshake_timeout
                .saturating_sub(started.elapsed());
            match tokio::time::timeout(left, initiate(inner, peer, &mut stream)).await {
                Ok(Ok(est)) => Ok((stream, est)),
                Ok(Err(e)) => Err((Some(stream), e)),
                Err(_) => Err((Some(stream), HsFailure::Timeout)),
            }
        }
    };
    inner.metrics.handshakes_in_progress.dec();
    drop(permit);
    inner.table().outbound_done(&peer);
    match result {
        Ok((stream, est)) => {
            established(inner, peer, stream, est, started, true);
            Ok(())
        }
        Err((_, HsFailure::Unsupported(p))) => {
            tracing::info!(peer = %peer, protocol = %p, "remote does not support the PQ protocol");
            inner.no_pq(peer, NoPq::ProtocolUnsupported).await;
            unmark_negotiating(inner, &peer);
            Err(FailureAction::NoPq(policy::NoPqAction::LabelClassical(
                policy::ClassicalReason::NoPqProtocol,
            )))
        }
        Err((stream, e)) => {
            if let Some(mut stream) = stream {
                reject_and_close(&mut stream, e.reject()).await;
                if e.reject().is_some() {
                    linger(&mut stream).await;
                }
            }
            let action = failed(inner, peer, &e, true).await;
            unmark_negotiating(inner, &peer);
            Err(action)
        }
    }
}

/// The suites `peer` may use (§5 rev 3), or the failure when it is pinned
/// only under suites this node does not enable.
async fn suite_rule(inner: &Arc<Inner>, peer: PeerId) -> Result<SuiteRule, HsFailure> {
    let verifier = inner.verifier.clone();
    blocking(inner, move || verifier.suite_rule(&peer))
        .await?
        .map_err(|e| HsFailure::Handshake(HandshakeError::Record(e)))
}

/// Commits the pin of a whole handshake (§8.3 rev 3) on the blocking pool.
async fn commit_pin(
    inner: &Arc<Inner>,
    verified: Option<super::verifier::Verified>,
) -> Result<(), HsFailure> {
    let Some(v) = verified else {
        return Err(HsFailure::Local("no verified record to pin".into()));
    };
    let peer = v.peer;
    let network = inner
        .table()
        .get(&peer)
        .and_then(|e| e.network)
        .unwrap_or(super::first_use::Network::Unknown);
    let (verifier, rate) = (inner.verifier.clone(), inner.first_use.clone());
    let commit = move || {
        verifier.commit(&v, unix_now(), &mut || {
            rate.take(network, std::time::Instant::now())
        })
    };
    match blocking(inner, commit).await? {
        Ok(PinUpdate::PinsFull) => {
            if let Some(suppressed) = inner.may_log(peer, "pins-full") {
                tracing::warn!(peer = %peer, suppressed, "first-use pin limit reached; session proceeds unpinned");
            }
            Ok(())
        }
        Ok(PinUpdate::SourceLimited) => {
            if let Some(suppressed) = inner.may_log(peer, "pins-source-limited") {
                tracing::warn!(peer = %peer, suppressed, "its network made its first-use pins for this hour; session proceeds unpinned");
            }
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e @ PinError::KeyMismatch { .. }) => Err(HsFailure::PinMismatch(e.to_string())),
        Err(e) => {
            tracing::error!(error = %e, "cannot persist pin; refusing the session rather than run unpinned");
            Err(HsFailure::Local(format!("pin store: {e}")))
        }
    }
}

async fn initiate(
    inner: &Arc<Inner>,
    peer: PeerId,
    stream: &mut Stream,
) -> Result<Established, HsFailure> {
    let config = inner
        .hs()
        .ok_or(HsFailure::Local("PQ unavailable".into()))?;
    let offer = match suite_rule(inner, peer).await? {
        SuiteRule::Any => config
            .credentials
            .iter()
            .map(|c| c.signing_key.suite())
            .collect(),
        SuiteRule::Pinned(suites) if suites.is_empty() => return Err(HsFailure::NoPinnedSuite),
        SuiteRule::Pinned(suites) => suites,
    };
    let remote = peer.to_bytes();
    let (mut state, init): (InitiatorAwaitingResp, Vec<u8>) = blocking(inner, move || {
        let mut rng = system_rng();
        Initiator::start_offering(config, &remote, &offer, &mut rng)
    })
    .await??;
    write_frame(stream, &init).await?;
    loop {
        let msg = read_msg(stream).await?;
        let verifier = Arc::new(inner.verifier.for_handshake());
        let v2 = verifier.clone();
        let step = blocking(inner, move || {
            let mut rng = system_rng();
            state.handle(&msg, v2.as_ref(), &mut rng)
        })
        .await??;
        match step {
            InitiatorStep::Retry { state: next, init } => {
                write_frame(stream, &init).await?;
                state = next;
            }
            InitiatorStep::Done { fin, session } => {
                // Resp verified: the whole handshake succeeded on this side.
                commit_pin(inner, verifier.take()).await?;
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
    let config = inner
        .hs()
        .ok_or(HsFailure::Local("PQ unavailable".into()))?;
    if inner.verifier.refuses_unpinned(&peer) {
        // Reject 2 (policy) at Init: no KEM, no signature (§8.3).
        read_msg(stream).await?;
        return Err(HsFailure::Unpinned);
    }
    let allowed = match suite_rule(inner, peer).await? {
        SuiteRule::Any => None,
        // An empty list makes every Init a Reject 1: §8.3 key-mismatch.
        SuiteRule::Pinned(suites) => Some(suites),
    };
    let mut state: ResponderAwaitingInit =
        Responder::start_allowing(config, &peer.to_bytes(), allowed)?;
    let awaiting_fin: ResponderAwaitingFin = loop {
        let msg = read_msg(stream).await?;
        let step = blocking(inner, move || {
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
                inner.metrics.responses_signed.inc();
                write_frame(stream, &resp).await?;
                break *state;
            }
        }
    };
    let fin = read_msg(stream).await?;
    let verifier = Arc::new(inner.verifier.for_handshake());
    let v2 = verifier.clone();
    let est = blocking(inner, move || awaiting_fin.handle(&fin, v2.as_ref())).await??;
    // Fin verified: the whole handshake succeeded on this side.
    commit_pin(inner, verifier.take()).await?;
    Ok(est)
}

/// A finished handshake: start the session.
fn established(
    inner: &Arc<Inner>,
    peer: PeerId,
    stream: Stream,
    est: Established,
    started: Instant,
    local_initiated: bool,
) {
    let elapsed = started.elapsed();
    inner
        .metrics
        .handshake_duration
        .observe(elapsed.as_secs_f64());
    tracing::info!(
        peer = %peer,
        suite = %est.suite,
        initiator = local_initiated,
        duration_ms = elapsed.as_millis() as u64,
        "PQ session established"
    );
    if let Some(e) = inner.table().get_mut(&peer) {
        e.retry_backoff = super::state::RETRY_MIN;
    }
    session::start(inner, peer, est, stream, local_initiated);
}

/// Accounts for a failed handshake and acts on it (§8); returns the action.
async fn failed(
    inner: &Arc<Inner>,
    peer: PeerId,
    e: &HsFailure,
    local_initiated: bool,
) -> FailureAction {
    let reason = e.reason();
    inner.metrics.handshake_failed(reason);
    if let Some(suppressed) = inner.may_log(peer, "handshake-failed") {
        tracing::warn!(peer = %peer, %reason, initiator = local_initiated, record = e.record_reason().unwrap_or(""), error = %e, suppressed, "PQ handshake failed");
    }
    let pinned = inner.verifier.is_pinned(&peer);
    let action = policy::on_handshake_failure(inner.policy, pinned, e.outcome());
    match action {
        FailureAction::NoPq(policy::NoPqAction::LabelClassical(r)) => {
            // A session that exists (a failed re-handshake) stays.
            if inner
                .table()
                .get(&peer)
                .is_some_and(|p| p.session.is_none())
            {
                inner.label_classical(peer, r);
            }
        }
        FailureAction::NoPq(policy::NoPqAction::Refuse(r)) | FailureAction::Refuse(r) => {
            if r == RefuseReason::KeyMismatch
                && let Some(suppressed) = inner.may_log(peer, "key-mismatch")
            {
                tracing::warn!(peer = %peer, suppressed, "pinned peer showed another key or suite; refusing (pin unchanged)");
            }
            inner.refuse(peer, r).await;
        }
        FailureAction::RetryLater => {}
    }
    action
}
