//! Refusals exactly as PROTOCOL.md §8.3 says, between real nodes started
//! through `App` (issue 23, faults 3 and 4).

mod common;
mod pqsupport;

use common::eventually;
use pqnode::pq::policy::RefuseReason;
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
        assert_eq!(m.handshake_failure_count("unpinned"), 1);
        assert_eq!(m.handshake_failure_count("auth-failed"), 0);
        assert_eq!(
            m.responses_signed.get(),
            0,
            "no Resp made: no KEM, no signature"
        );
        assert_eq!(r.pq.refused_total(), 1, "counted once");
        // A heard why: a policy Reject, not an authentication failure.
        eventually(|| async {
            (a.pq.metrics().handshake_failure_count("rejected-by-peer") >= 1).then_some(())
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
        assert_eq!(r.pq.metrics().handshake_failure_count("auth-failed"), 0);
        assert_eq!(r.pq.refused_total(), 2);
        for n in [a, b, r] {
            n.stop().await;
        }
    })
    .await;
}
