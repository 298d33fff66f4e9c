//! Refusals exactly as PROTOCOL.md §8.3 says, between real nodes started
//! through `App` (issue 23, faults 3 and 4).

mod common;
mod pqsupport;

use common::eventually;
use pqnode::pq::policy::RefuseReason;
use pqnode::pq::reasons::HandshakeFailure;
use pqsupport::{Opts, TEST_TIMEOUT, TestNode, start, tempdir};

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out");
}

/// Waits until `node` has refused `peer` for `reason` (and it left).
async fn until_refused(node: &TestNode, peer: libp2p::PeerId, reason: RefuseReason) {
    eventually(|| async {
        node.pq
            .recent_refusals()
            .iter()
            .any(|(p, r, _)| *p == peer && *r == reason)
            .then_some(())
    })
    .await;
}

/// Fault 4: under `pq.allow_unpinned = false` an unpinned peer's Init gets
/// Reject 2 (policy) before any KEM or signature work, and is counted once,
/// as `unpinned` — never as `auth-failed`. Dialling such a peer refuses it
/// before any stream is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpinned_peer_gets_reject_policy_at_init_and_no_pq_work() {
    bounded(async {
        let closed = Opts {
            allow_unpinned: false,
            ..Opts::default()
        };
        let (dr, da) = (tempdir(), tempdir());
        let r = start(dr.path(), closed.clone()).await;
        let a = start(da.path(), Opts::default()).await;
        // A dials, so A initiates and R answers its Init.
        a.connect(&r).await;
        until_refused(&r, a.peer_id, RefuseReason::Unpinned).await;
        let m = r.pq.metrics();
        assert_eq!(m.handshake_failure_count(HandshakeFailure::Unpinned), 1);
        assert_eq!(m.refused_count(RefuseReason::AuthFailed), 0);
        assert_eq!(
            m.responses_signed.get(),
            0,
            "no Resp made: no KEM, no signature"
        );
        assert_eq!(r.pq.refused_total(), 1, "counted once");
        // A heard why: a policy Reject, not an authentication failure.
        eventually(|| async {
            (a.pq
                .metrics()
                .handshake_failure_count(HandshakeFailure::RejectedByPeer)
                >= 1)
                .then_some(())
        })
        .await;

        // The other way: R dials an unpinned peer and refuses it before any
        // handshake stream.
        let db = tempdir();
        let b = start(db.path(), Opts::default()).await;
        r.connect(&b).await;
        until_refused(&r, b.peer_id, RefuseReason::Unpinned).await;
        assert_eq!(r.pq.metrics().responses_signed.get(), 0);
        assert_eq!(
            b.pq.metrics().responses_signed.get(),
            0,
            "B never answered an Init"
        );
        assert_eq!(r.pq.metrics().refused_count(RefuseReason::AuthFailed), 0);
        assert_eq!(r.pq.refused_total(), 2);
        for n in [a, b, r] {
            n.stop().await;
        }
    })
    .await;
}

/// Fault 7 (recovery): a handshake answered `Reject busy` on a live
/// connection is retried with back-off, so the peer gets its session once
/// there is room, without reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_answer_is_retried_until_a_session_once_there_is_room() {
    bounded(async {
        let (dr, db) = (tempdir(), tempdir());
        let r = start(
            dr.path(),
            Opts {
                max_handshakes: 1,
                handshake_timeout: std::time::Duration::from_secs(2),
                ..Opts::default()
            },
        )
        .await;
        // A peer takes R's only inbound handshake slot and stalls in it
        // until R's handshake timeout (2 s) frees it.
        let staller =
            pqsupport::raw_peer(libp2p::identity::Keypair::generate_ed25519(), r.full_addr()).await;
        assert!(
            staller
                .wait_connected(std::time::Duration::from_secs(15))
                .await
        );
        let mut control = staller.control.clone().expect("control");
        let _stalled = control
            .open_stream(r.peer_id, pqnode::pq::PQ_PROTOCOL)
            .await
            .expect("PQ stream");
        eventually(|| async {
            (r.pq.metrics().inbound_handshakes_in_progress.get() == 1).then_some(())
        })
        .await;

        let b = start(db.path(), Opts::default()).await;
        let t = std::time::Instant::now();
        b.connect(&r).await;
        // 5x the 2 s the slot is held, for a loaded machine.
        let session =
            b.pq.wait_for_session(&r.peer_id, std::time::Duration::from_secs(10))
                .await;
        assert!(session.is_some(), "no session after the busy answer");
        println!("session after a busy answer in {:?}", t.elapsed());
        assert!(
            r.pq.metrics()
                .handshake_failure_count(HandshakeFailure::Busy)
                >= 1,
            "R answered busy first"
        );
        assert!(
            b.pq.metrics()
                .handshake_failure_count(HandshakeFailure::RejectedByPeer)
                >= 1
        );
        assert_eq!(b.pq.refused_total(), 0, "busy is never a reason to refuse");
        b.stop().await;
        r.stop().await;
    })
    .await;
}
