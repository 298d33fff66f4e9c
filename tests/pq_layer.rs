//! The PQ layer end to end: real pqnodes on 127.0.0.1, real handshakes,
//! real messages; stock and hostile rust-libp2p peers.

mod common;
mod pqsupport;

use std::sync::Arc;
use std::time::Duration;

use futures::AsyncWriteExt;
use libp2p::identity::Keypair;
use pqnode::config::PqPolicy;
use pqnode::pq::framing::{read_frame, write_frame};
use pqnode::pq::policy::RefuseReason;
use pqnode::pq::reasons::HandshakeFailure;
use pqnode::pq::{PQ_PROTOCOL, Security, SecurityLevel, SendError};
use pqnode_crypto::Suite;
use pqnode_crypto::handshake::{
    HandshakeConfig, Initiator, InitiatorStep, Responder, ResponderStep, messages::MAX_MESSAGE_LEN,
};
use pqnode_crypto::rng::system_rng;
use pqnode_keys::store::{KeyStore, StoreOptions};
use pqsupport::{Opts, Permissive, TEST_TIMEOUT, hostile_config, recv, start, tempdir};

const WAIT: Duration = Duration::from_secs(15);

/// `GET /api/peers` of `node`.
async fn api_peers(node: &pqsupport::TestNode) -> serde_json::Value {
    let r = common::http(node.app.api_addr(), "GET", "/api/peers", None, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test exceeded its time bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_reach_pq_sessions_in_both_suites_and_exchange_messages() {
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let a = start(da.path(), Opts::default()).await;
        let b = start(
            db.path(),
            Opts {
                suites: vec![Suite::Mlkem1024Mldsa87, Suite::Kyber1024Dilithium5],
                ..Opts::default()
            },
        )
        .await;
        // A dials: A initiates with its first suite. A message sent the
        // moment the dial returns waits for the handshake: it never goes
        // classically to a peer whose PQ status is still open.
        a.connect(&b).await;
        let first =
            a.pq.send(b.peer_id, b"first contact".to_vec())
                .await
                .expect("send");
        assert_eq!(first.security.level(), SecurityLevel::Pq);
        // The same from the listening side, which learns of the connection
        // before the dialler's PQ stream arrives.
        let (de, df) = (tempdir(), tempdir());
        let e = start(de.path(), Opts::default()).await;
        let f = start(df.path(), Opts::default()).await;
        e.connect(&f).await;
        // As soon as F's swarm has the connection (its PQ status still open).
        let deadline = tokio::time::Instant::now() + WAIT;
        while !f
            .handle
            .peers()
            .await
            .expect("peers")
            .iter()
            .any(|p| p.peer_id == e.peer_id)
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "F never saw the connection"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let back =
            f.pq.send(e.peer_id, b"listener first".to_vec())
                .await
                .expect("send");
        assert_eq!(
            back.security.level(),
            SecurityLevel::Pq,
            "the listener waited for the handshake"
        );
        e.stop().await;
        f.stop().await;
        let sa =
            a.pq.wait_for_session(&b.peer_id, WAIT)
                .await
                .expect("A has a session");
        let sb =
            b.pq.wait_for_session(&a.peer_id, WAIT)
                .await
                .expect("B has a session");
        assert_eq!(
            (sa.suite, sb.suite),
            (Suite::Kyber1024Dilithium5, Suite::Kyber1024Dilithium5)
        );
        assert!(sa.local_initiated && !sb.local_initiated);
        assert_eq!(a.level(&b.peer_id), Some("pq"));

        // Both ways, small and 1 MiB.
        let big: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 7 % 256) as u8).collect();
        let d =
            a.pq.send(b.peer_id, b"hello from A".to_vec())
                .await
                .expect("send");
        assert_eq!(d.security.level(), SecurityLevel::Pq);
        let m = recv(&b, a.peer_id, 0, WAIT).await.expect("B receives");
        assert_eq!(&m.body[..], b"first contact");
        let m = recv(&b, a.peer_id, m.seq, WAIT).await.expect("B receives");
        assert_eq!(&m.body[..], b"hello from A");
        assert_eq!(
            m.security,
            Security::Pq {
                suite: Suite::Kyber1024Dilithium5
            }
        );
        b.pq.send(a.peer_id, big.clone()).await.expect("send 1 MiB");
        let m = recv(&a, b.peer_id, 0, WAIT)
            .await
            .expect("A receives 1 MiB");
        assert_eq!(m.body.len(), big.len());
        assert!(m.body[..] == big[..], "1 MiB arrives intact");
        assert_eq!(m.security.level(), SecurityLevel::Pq);
        let too_big = vec![0u8; (1 << 20) + 1];
        assert!(matches!(
            a.pq.send(b.peer_id, too_big).await,
            Err(SendError::TooLarge { .. })
        ));

        // B (ML-KEM first) dials a third node: ML-KEM-1024 / ML-DSA-87.
        let dc = tempdir();
        let c = start(dc.path(), Opts::default()).await;
        b.connect(&c).await;
        let sc =
            c.pq.wait_for_session(&b.peer_id, WAIT)
                .await
                .expect("C has a session");
        assert_eq!(sc.suite, Suite::Mlkem1024Mldsa87);
        c.pq.send(b.peer_id, b"over ML-KEM".to_vec())
            .await
            .expect("send");
        let m = recv(&b, c.peer_id, 0, WAIT).await.expect("B receives");
        assert_eq!(
            m.security,
            Security::Pq {
                suite: Suite::Mlkem1024Mldsa87
            }
        );
        assert!(b.crypto.snapshot().sessions.pq >= 2);
        assert!(
            a.pq.is_pinned(&b.peer_id),
            "first verified record pins the key"
        );
        for n in [a, b, c] {
            n.stop().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_libp2p_peer_under_each_policy() {
    bounded(async {
        // preferred: stays connected, labelled classical.
        let d = tempdir();
        let node = start(d.path(), Opts::default()).await;
        let stock = pqsupport::stock_peer(node.full_addr()).await;
        assert!(stock.wait_connected(WAIT).await);
        assert!(
            node.until(WAIT, |n| n.level(&stock.peer_id) == Some("classical"))
                .await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            stock.is_connected(),
            "preferred keeps a classical peer for DHT, identify, ping"
        );
        assert_eq!(node.pq.refused_total(), 0);
        // `/api/peers` says so, with the reason.
        let entry = api_peers(&node).await["peers"]
            .as_array()
            .and_then(|l| {
                l.iter()
                    .find(|p| p["peerId"] == stock.peer_id.to_base58())
                    .cloned()
            })
            .unwrap_or_default();
        assert_eq!(
            (entry["security"].as_str(), entry["reason"].as_str()),
            (Some("classical"), Some("no-pq-protocol")),
            "{entry}"
        );
        // We dial it too: the PQ stream is refused (unsupported), still classical.
        node.stop().await;

        // required: disconnected and counted as refused.
        let d = tempdir();
        let node = start(
            d.path(),
            Opts {
                policy: PqPolicy::Required,
                ..Opts::default()
            },
        )
        .await;
        let stock = pqsupport::stock_peer(node.full_addr()).await;
        assert!(
            node.until(WAIT, |n| n.pq.refused_total() >= 1).await,
            "refused"
        );
        assert_eq!(node.pq.metrics().refused_count(RefuseReason::Policy), 1);
        assert!(
            node.until(WAIT, |_| !stock.is_connected()).await,
            "disconnected"
        );
        assert_eq!(node.crypto.snapshot().sessions.refused, 1);
        // Gone from `peers`, listed under `refused` with the reason.
        let peers = api_peers(&node).await;
        let me = stock.peer_id.to_base58();
        assert!(
            !peers["peers"]
                .as_array()
                .is_some_and(|l| l.iter().any(|p| p["peerId"] == me)),
            "{peers}"
        );
        let refused = peers["refused"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["peerId"] == me).cloned())
            .unwrap_or_default();
        assert_eq!(refused["reason"], "policy", "{peers}");
        let err = node
            .pq
            .send(stock.peer_id, b"x".to_vec())
            .await
            .unwrap_err();
        assert!(matches!(err, SendError::PqRequired { .. }), "{err}");
        node.stop().await;

        // disabled: no handshake attempted, classical.
        let d = tempdir();
        let node = start(
            d.path(),
            Opts {
                policy: PqPolicy::Disabled,
                ..Opts::default()
            },
        )
        .await;
        let stock = pqsupport::stock_peer(node.full_addr()).await;
        assert!(
            node.until(WAIT, |n| n.level(&stock.peer_id) == Some("classical"))
                .await
        );
        let m = node.pq.metrics();
        assert_eq!(m.handshakes_started.get(), 0, "no handshake attempted");
        assert_eq!(node.pq.session_count(), 0);
        assert_eq!(node.crypto.snapshot().mode.as_str(), "disabled");
        node.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_pq_falls_back_visibly_or_is_refused() {
    bounded(async {
        let (dx, dy) = (tempdir(), tempdir());
        // X cannot do PQ (§8.4); Y can. Under preferred: classical both ways.
        let x = start(
            dx.path(),
            Opts {
                pq_available: false,
                ..Opts::default()
            },
        )
        .await;
        assert_eq!(x.crypto.snapshot().mode.as_str(), "classical-fallback");
        assert!(x.crypto.snapshot().unavailable_reason.is_some());
        let y = start(dy.path(), Opts::default()).await;
        y.connect(&x).await;
        assert!(
            y.until(WAIT, |n| n.level(&x.peer_id) == Some("classical"))
                .await
        );
        let d =
            y.pq.send(x.peer_id, b"classical hello".to_vec())
                .await
                .expect("classical send");
        assert_eq!(d.security.level(), SecurityLevel::Classical);
        let m = recv(&x, y.peer_id, 0, WAIT).await.expect("X receives");
        assert_eq!(
            (&m.body[..], m.security.level()),
            (&b"classical hello"[..], SecurityLevel::Classical)
        );
        x.pq.send(y.peer_id, vec![3u8; 200_000])
            .await
            .expect("classical send back");
        let m = recv(&y, x.peer_id, 0, WAIT).await.expect("Y receives");
        assert_eq!(
            (m.body.len(), m.security.level()),
            (200_000, SecurityLevel::Classical)
        );
        y.stop().await;

        // Under required, Z refuses X: no messages, a clear error.
        let dz = tempdir();
        let z = start(
            dz.path(),
            Opts {
                policy: PqPolicy::Required,
                ..Opts::default()
            },
        )
        .await;
        let _ = z.handle.dial(x.full_addr()).await;
        assert!(z.until(WAIT, |n| n.pq.refused_total() >= 1).await);
        let err = z.pq.send(x.peer_id, b"no".to_vec()).await.unwrap_err();
        assert!(matches!(err, SendError::PqRequired { .. }));
        assert!(err.to_string().contains("required"), "{err}");
        // And X cannot push classical messages into Z either.
        let err = x.pq.send(z.peer_id, b"no".to_vec()).await.unwrap_err();
        // Z closed the connection when it refused X.
        assert!(
            matches!(
                err,
                SendError::NotConnected { .. } | SendError::Unreachable { .. }
            ),
            "{err}"
        );
        assert!(z.pq.inbox().list(None, 0, 10).is_empty());
        z.stop().await;
        x.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_peer_returning_without_pq_is_refused() {
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let a = start(da.path(), Opts::default()).await;
        let b = start(db.path(), Opts::default()).await;
        b.connect(&a).await;
        a.pq.wait_for_session(&b.peer_id, WAIT)
            .await
            .expect("PQ session");
        assert!(a.pq.is_pinned(&b.peer_id));
        let b_id = b.peer_id;
        b.stop().await;
        assert!(a.until(WAIT, |n| n.pq.session(&b_id).is_none()).await);

        // B comes back with the same identity but without PQ. B itself has A
        // pinned, and a pinned peer met while PQ is unavailable locally is
        // disconnected (§8.3): B refuses A, never labels it classical.
        let b = start(
            db.path(),
            Opts {
                pq_available: false,
                ..Opts::default()
            },
        )
        .await;
        assert_eq!(b.peer_id, b_id);
        let _ = b.handle.dial(a.full_addr()).await;
        assert!(
            b.until(WAIT, |n| n.pq.metrics().downgrade_refused.get() >= 1)
                .await,
            "B counts its own downgrade"
        );
        assert_ne!(b.level(&a.peer_id), Some("classical"));
        let err =
            b.pq.send(a.peer_id, b"downgraded".to_vec())
                .await
                .unwrap_err();
        assert!(
            matches!(
                err,
                SendError::Refused {
                    reason: RefuseReason::Downgrade,
                    ..
                }
            ),
            "{err}"
        );
        b.stop().await;

        // B again without PQ, and with its pins lost: now A meets a pinned
        // peer offering no PQ and refuses it.
        for f in ["state.redb", "pins.json"] {
            let _ = std::fs::remove_file(db.path().join(f));
        }
        let b = start(
            db.path(),
            Opts {
                pq_available: false,
                ..Opts::default()
            },
        )
        .await;
        let _ = b.handle.dial(a.full_addr()).await;
        assert!(
            a.until(WAIT, |n| n.pq.metrics().downgrade_refused.get() >= 1)
                .await,
            "downgrade counted"
        );
        assert_eq!(a.pq.metrics().refused_count(RefuseReason::Downgrade), 1);
        assert_ne!(
            a.level(&b_id),
            Some("classical"),
            "never labelled classical"
        );
        let err = a.pq.send(b_id, b"secret".to_vec()).await.unwrap_err();
        assert!(
            matches!(
                err,
                SendError::PinnedWithoutSession { .. }
                    | SendError::Refused {
                        reason: RefuseReason::Downgrade,
                        ..
                    }
            ),
            "{err}"
        );
        // B's classical message to A is refused too.
        let _ = b.pq.send(a.peer_id, b"downgraded".to_vec()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(a.pq.inbox().list(Some(b_id), 0, 10).is_empty());
        a.stop().await;
        b.stop().await;
    })
    .await;
}

/// Runs the initiator over `stream`. The responder answers a bad Fin with
/// Reject and a good one with silence, so with `expect_reject` this waits
/// (bounded) for the Reject and returns it, and otherwise returns the session
/// at once; the caller confirms it on the node's side.
async fn hostile_handshake(
    config: Arc<HandshakeConfig>,
    target: libp2p::PeerId,
    stream: &mut libp2p::Stream,
    expect_reject: bool,
) -> Result<pqnode_crypto::handshake::Established, Vec<u8>> {
    let mut rng = system_rng();
    let (state, init) = Initiator::start(config, &target.to_bytes(), &mut rng).expect("start");
    write_frame(stream, &init).await.expect("write init");
    let resp = read_frame(stream, 1, MAX_MESSAGE_LEN).await.expect("resp");
    match state
        .handle(&resp, &Permissive, &mut rng)
        .expect("honest responder")
    {
        InitiatorStep::Done { fin, session } => {
            write_frame(stream, &fin).await.expect("write fin");
            if !expect_reject {
                return Ok(*session);
            }
            let reject = tokio::time::timeout(WAIT, read_frame(stream, 1, MAX_MESSAGE_LEN))
                .await
                .expect("the responder answers within the wait")
                .expect("a Reject");
            Err(reject)
        }
        InitiatorStep::Retry { .. } => panic!("unexpected Retry"),
    }
}

/// A Fin whose transcript signature does not verify: Reject 5, the peer is
/// refused as `auth-failed`, and no pin is written for it (§5, and §8.3 rev
/// 3: the responder pins only after verifying Fin).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fin_with_a_bad_signature_gets_reject_5_and_pins_nothing() {
    bounded(async {
        let (da, dh) = (tempdir(), tempdir());
        let a = start(da.path(), Opts::default()).await;
        let own = KeyStore::open_or_create(dh.path(), StoreOptions::default()).expect("store");
        let mut own_for_record = KeyStore::open(dh.path(), StoreOptions::default()).expect("store");
        let cfg = hostile_config(&own, &mut own_for_record, false);
        let h = pqsupport::raw_peer(own.identity().clone(), a.full_addr()).await;
        let mut s = h
            .control
            .clone()
            .expect("control")
            .open_stream(a.peer_id, PQ_PROTOCOL)
            .await
            .expect("stream");
        let failed = |n: &pqsupport::TestNode| {
            let m = n.pq.metrics();
            m.handshake_failure_count(HandshakeFailure::Mac)
                + m.handshake_failure_count(HandshakeFailure::Signature)
        };
        let (refused, bad_fins) = (
            a.pq.metrics().refused_count(RefuseReason::AuthFailed),
            failed(&a),
        );
        let mut rng = system_rng();
        let (state, init) = Initiator::start(cfg, &a.peer_id.to_bytes(), &mut rng).expect("start");
        write_frame(&mut s, &init).await.expect("write Init");
        let resp = read_frame(&mut s, 1, MAX_MESSAGE_LEN).await.expect("Resp");
        let InitiatorStep::Done { mut fin, .. } = state
            .handle(&resp, &Permissive, &mut rng)
            .expect("A's Resp verifies")
        else {
            panic!("no Retry expected")
        };
        // Fin = type, record_i (u32 length), sig_i (u16 length, 4627
        // bytes), mac_i (32 bytes): flip a bit in sig_i. mac_i covers TH4,
        // which includes sig_i, so the responder finds it at the MAC check,
        // before the signature (a bad signature under a correct MAC takes
        // the handshake keys: crypto's unit tests cover that one).
        let at = fin.len() - 32 - 2000;
        fin[at] ^= 0x01;
        write_frame(&mut s, &fin).await.expect("write Fin");
        let reject = tokio::time::timeout(WAIT, read_frame(&mut s, 1, MAX_MESSAGE_LEN))
            .await
            .expect("A answers within the wait")
            .expect("a Reject");
        assert_eq!(reject, vec![5, 5], "Reject 5 (auth-failed)");
        assert!(
            a.until(WAIT, |n| failed(n) > bad_fins).await,
            "counted as a failed Fin"
        );
        assert!(
            a.until(WAIT, |n| n
                .pq
                .metrics()
                .refused_count(RefuseReason::AuthFailed)
                > refused)
                .await,
            "refused as auth-failed"
        );
        assert!(a.pq.session(&h.peer_id).is_none());
        assert!(
            a.pq.pins().pins_of(&h.peer_id).expect("pins").is_empty(),
            "no pin written for a peer whose Fin failed"
        );
        a.stop().await;
    })
    .await;
}

/// §5 rev 3, the initiator's side: A's Fin is answered with Reject 5 while
/// messages to that peer are queued (the peer reads nothing, so the stream's
/// window is full). The session ends, the peer is refused as
/// `rejected-by-peer`, and every queued message fails with an error saying
/// that the peer rejected the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reject_after_fin_fails_the_queued_messages_with_a_clear_error() {
    bounded(async {
        let (da, dh) = (tempdir(), tempdir());
        let a = start(
            da.path(),
            Opts {
                listener_open_delay: Duration::from_millis(200),
                ..Opts::default()
            },
        )
        .await;
        let own = KeyStore::open_or_create(dh.path(), StoreOptions::default()).expect("store");
        let mut own_for_record = KeyStore::open(dh.path(), StoreOptions::default()).expect("store");
        let cfg = hostile_config(&own, &mut own_for_record, false);
        let h = pqsupport::raw_peer(own.identity().clone(), a.full_addr()).await;
        let mut incoming = h
            .control
            .clone()
            .expect("control")
            .accept(PQ_PROTOCOL)
            .expect("accept");
        let (from, mut s) = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut incoming))
            .await
            .expect("A opens the PQ stream")
            .expect("stream");
        assert_eq!(from, a.peer_id);
        let mut rng = system_rng();
        let init = read_frame(&mut s, 1, MAX_MESSAGE_LEN).await.expect("Init");
        let responder = Responder::start(cfg, &a.peer_id.to_bytes()).expect("responder");
        let ResponderStep::Resp { resp, .. } = responder.handle(&init, &mut rng).expect("Resp")
        else {
            panic!("no Retry expected")
        };
        write_frame(&mut s, &resp).await.expect("write Resp");
        read_frame(&mut s, 1, MAX_MESSAGE_LEN).await.expect("Fin");
        a.pq.wait_for_session(&h.peer_id, WAIT)
            .await
            .expect("A holds a session after its Fin");

        // Queue messages until the session's queue is full: the peer reads
        // nothing, so A's writer is stuck on the stream's window.
        let mut queued = Vec::new();
        loop {
            let mut send = Box::pin(a.pq.send(h.peer_id, vec![7u8; 64 << 10]));
            match futures::poll!(&mut send) {
                std::task::Poll::Pending => queued.push(send),
                std::task::Poll::Ready(Err(SendError::Busy { .. })) => break,
                std::task::Poll::Ready(other) => panic!("unexpected at once: {other:?}"),
            }
            assert!(queued.len() <= 1000, "the session queue never filled");
        }
        let refused = a.pq.metrics().refused_count(RefuseReason::RejectedByPeer);
        write_frame(&mut s, &[5, 5]).await.expect("write Reject 5");

        let mut failed = 0;
        let pending = queued.len();
        for send in queued {
            match tokio::time::timeout(WAIT, send)
                .await
                .expect("every send ends")
            {
                // Written before the window filled: the peer never sent a
                // receipt (rev 4), so never reported delivered.
                Ok(d) => panic!("reported delivered without a receipt: {d:?}"),
                Err(SendError::NoReceipt { .. }) => {}
                Err(SendError::SessionEnded { reason, .. }) => {
                    assert!(
                        reason.contains("rejected the session after our Fin"),
                        "{reason}"
                    );
                    failed += 1;
                }
                Err(e) => panic!("unclear error for a queued message: {e}"),
            }
        }
        assert!(
            failed >= 32,
            "only {failed} of {pending} queued messages failed"
        );
        assert!(
            a.until(WAIT, |n| n
                .pq
                .metrics()
                .refused_count(RefuseReason::RejectedByPeer)
                > refused)
                .await,
            "refused as rejected-by-peer"
        );
        assert!(a.pq.session(&h.peer_id).is_none());
        a.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_refused_while_an_honest_peer_is_served() {
    bounded(async {
        let (da, dc) = (tempdir(), tempdir());
        let a = start(da.path(), Opts::default()).await;
        let c = start(dc.path(), Opts::default()).await;
        c.connect(&a).await;
        a.pq.wait_for_session(&c.peer_id, WAIT)
            .await
            .expect("honest session");
        let mut since = 0;
        let mut check_honest = async |round: u8| {
            c.pq.send(a.peer_id, vec![round; 1000])
                .await
                .expect("honest send");
            let m = recv(&a, c.peer_id, since, WAIT)
                .await
                .expect("honest message arrives");
            assert_eq!(&m.body[..], &[round; 1000][..]);
            since = m.seq;
        };
        check_honest(0).await;

        // 1. A malformed Init.
        let h = pqsupport::raw_peer(Keypair::generate_ed25519(), a.full_addr()).await;
        let mut s = h
            .control
            .clone()
            .expect("control")
            .open_stream(a.peer_id, PQ_PROTOCOL)
            .await
            .expect("stream");
        write_frame(&mut s, &[1, 1, 0, 0]).await.expect("write");
        let reply = match read_frame(&mut s, 1, MAX_MESSAGE_LEN).await {
            Ok(reply) => reply,
            Err(e) => panic!(
                "no Reject ({e}); the node counted decode failures: {}",
                a.pq.metrics()
                    .handshake_failure_count(HandshakeFailure::Decode)
            ),
        };
        assert_eq!(reply, vec![5, 4], "Reject: bad message");
        assert!(
            a.until(WAIT, |n| n
                .pq
                .metrics()
                .handshake_failure_count(HandshakeFailure::Decode)
                >= 1)
                .await
        );
        check_honest(1).await;

        // 2. A record for another PeerId, and 3. a forged (bit-flipped) record.
        for (flip, expect) in [
            (false, HandshakeFailure::Record),
            (true, HandshakeFailure::Record),
        ] {
            let (dh, dother) = (tempdir(), tempdir());
            let own = KeyStore::open_or_create(dh.path(), StoreOptions::default()).expect("store");
            let mut other =
                KeyStore::open_or_create(dother.path(), StoreOptions::default()).expect("store");
            let mut own_for_record =
                KeyStore::open(dh.path(), StoreOptions::default()).expect("store");
            let cfg = if flip {
                hostile_config(&own, &mut own_for_record, true)
            } else {
                hostile_config(&own, &mut other, false)
            };
            let h = pqsupport::raw_peer(own.identity().clone(), a.full_addr()).await;
            let mut s = h
                .control
                .clone()
                .expect("control")
                .open_stream(a.peer_id, PQ_PROTOCOL)
                .await
                .expect("stream");
            let before = a.pq.metrics().handshake_failure_count(expect);
            let outcome = hostile_handshake(cfg, a.peer_id, &mut s, true).await;
            assert_eq!(
                outcome.err(),
                Some(vec![5, 5]),
                "Reject: auth failed (flip = {flip})"
            );
            assert!(
                a.until(WAIT, |n| n.pq.metrics().handshake_failure_count(expect)
                    > before)
                    .await
            );
            assert!(a.pq.session(&h.peer_id).is_none());
            check_honest(2 + flip as u8).await;
        }

        // 4. An honest handshake, then a bit-flipped frame.
        let dh = tempdir();
        let mut own = KeyStore::open_or_create(dh.path(), StoreOptions::default()).expect("store");
        let own2 = KeyStore::open(dh.path(), StoreOptions::default()).expect("store");
        let cfg = hostile_config(&own2, &mut own, false);
        let h = pqsupport::raw_peer(own.identity().clone(), a.full_addr()).await;
        let mut s = h
            .control
            .clone()
            .expect("control")
            .open_stream(a.peer_id, PQ_PROTOCOL)
            .await
            .expect("stream");
        let mut session = hostile_handshake(cfg, a.peer_id, &mut s, false)
            .await
            .expect("honest handshake");
        assert!(a.pq.wait_for_session(&h.peer_id, WAIT).await.is_some());
        let mut out = Vec::new();
        let frag: Vec<u8> = pqnode::pq::fragment::fragments(1, b"tampered")
            .next()
            .expect("fragment");
        session
            .channel
            .sealer
            .seal_data(&frag, 0, &mut out)
            .expect("seal");
        let last = out.len() - 1;
        out[last] ^= 0x01;
        s.write_all(&out).await.expect("write");
        s.flush().await.expect("flush");
        assert!(
            a.until(WAIT, |n| n.pq.session(&h.peer_id).is_none()).await,
            "session ended"
        );
        assert!(
            a.pq.inbox().list(Some(h.peer_id), 0, 10).is_empty(),
            "nothing delivered"
        );
        assert!(a.pq.metrics().refused_count(RefuseReason::SessionError) >= 1);
        check_honest(9).await;
        assert_eq!(
            a.pq.session(&c.peer_id).map(|s| s.suite),
            Some(Suite::Kyber1024Dilithium5)
        );
        a.stop().await;
        c.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inbound_handshakes_never_exceed_the_limit() {
    bounded(async {
        let d = tempdir();
        let limit = 3;
        let a = start(
            d.path(),
            Opts {
                max_handshakes: limit,
                handshake_timeout: Duration::from_secs(3),
                ..Opts::default()
            },
        )
        .await;
        let in_progress =
            |n: &pqsupport::TestNode| n.pq.metrics().inbound_handshakes_in_progress.get();
        let raw = || async {
            let p = pqsupport::raw_peer(Keypair::generate_ed25519(), a.full_addr()).await;
            assert!(p.wait_connected(WAIT).await);
            p
        };

        // 1. One at a time: `limit` peers each open a stream that never
        // sends Init and so takes a slot; the next peer is turned away at
        // once with Reject busy (global limit), and so is a second stream of
        // a peer already in a handshake (rev 3 §9: one inbound per peer).
        let mut holders = Vec::new();
        let mut peers = Vec::new();
        for i in 1..=limit {
            let p = raw().await;
            let mut control = p.control.clone().expect("control");
            holders.push(
                control
                    .open_stream(a.peer_id, PQ_PROTOCOL)
                    .await
                    .expect("stream"),
            );
            assert!(
                a.until(WAIT, |n| in_progress(n) == i64::from(i)).await,
                "stream {i} holds a slot"
            );
            peers.push(p);
        }
        let busy_reply = |mut s: libp2p::Stream| async move {
            tokio::time::timeout(WAIT, read_frame(&mut s, 1, MAX_MESSAGE_LEN))
                .await
                .expect("answered at once")
                .expect("a frame")
        };
        let extra_peer = raw().await;
        let extra = extra_peer
            .control
            .clone()
            .expect("control")
            .open_stream(a.peer_id, PQ_PROTOCOL)
            .await
            .expect("stream");
        assert_eq!(busy_reply(extra).await, vec![5, 3], "Reject busy");
        assert_eq!(
            a.pq.metrics()
                .handshake_failure_count(HandshakeFailure::Busy),
            1
        );
        let second = peers[0]
            .control
            .clone()
            .expect("control")
            .open_stream(a.peer_id, PQ_PROTOCOL)
            .await
            .expect("stream");
        assert_eq!(busy_reply(second).await, vec![5, 3], "per-peer Reject busy");
        assert_eq!(
            a.pq.metrics()
                .handshake_failure_count(HandshakeFailure::PeerBusy),
            1
        );
        assert_eq!(in_progress(&a), i64::from(limit));
        // The holders are let go at the 3 s handshake deadline.
        for mut s in holders {
            let ended = tokio::time::timeout(WAIT, read_frame(&mut s, 1, MAX_MESSAGE_LEN)).await;
            assert!(ended.is_ok(), "a stream was left hanging past the deadline");
        }
        assert!(
            a.until(WAIT, |n| n
                .pq
                .metrics()
                .handshake_failure_count(HandshakeFailure::Timeout)
                >= u64::from(limit))
                .await
        );
        assert!(a.until(WAIT, |n| in_progress(n) == 0).await);
        drop((peers, extra_peer));

        // 2. A burst of 12 such streams from 12 peers: at most `limit` of them may occupy
        // handshake slots (until the deadline); every other one is turned
        // away at once, with Reject busy — or closed by libp2p-stream
        // itself, whose accept channel has no buffer for a burst.
        let mut burst = Vec::new();
        for _ in 0..12 {
            burst.push(raw().await);
        }
        let mut tasks = Vec::new();
        for p in &burst {
            let mut control = p.control.clone().expect("control");
            let target = a.peer_id;
            tasks.push(tokio::spawn(async move {
                let mut s = control
                    .open_stream(target, PQ_PROTOCOL)
                    .await
                    .expect("stream");
                let started = tokio::time::Instant::now();
                let reply = tokio::time::timeout(
                    Duration::from_secs(8),
                    read_frame(&mut s, 1, MAX_MESSAGE_LEN),
                )
                .await;
                (started.elapsed(), reply)
            }));
        }
        let mut max_seen = 0;
        for _ in 0..60 {
            max_seen = max_seen.max(in_progress(&a));
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let (mut busy, mut held, mut turned_away) = (0, 0, 0);
        for t in tasks {
            let (elapsed, reply) = t.await.expect("task");
            match reply {
                Ok(Ok(r)) if r == vec![5, 3] => busy += 1,
                Ok(_) if elapsed >= Duration::from_millis(2500) => held += 1,
                Ok(_) => turned_away += 1,
                Err(_) => panic!("a stream was left hanging past the handshake deadline"),
            }
        }
        assert!(
            max_seen <= i64::from(limit),
            "{max_seen} handshakes at once (limit {limit})"
        );
        assert!(max_seen >= 1);
        assert!(held <= limit as usize, "{held} streams held a slot");
        assert_eq!(
            busy + held + turned_away,
            12,
            "busy {busy}, held {held}, closed {turned_away}"
        );
        // The burst's Reject busy, plus the one of part 1.
        assert!(
            a.pq.metrics()
                .handshake_failure_count(HandshakeFailure::Busy)
                > busy as u64
        );
        assert!(
            a.until(WAIT, |n| n
                .pq
                .metrics()
                .handshake_failure_count(HandshakeFailure::Timeout)
                >= u64::from(limit) + held as u64)
                .await
        );
        a.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_records_are_signed_and_used() {
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let a = start(da.path(), Opts::default()).await;
        let store = KeyStore::open(da.path(), StoreOptions::default()).expect("store");
        let seq_before = store.last_seq();
        let refresh = tokio::spawn(pqnode::pq::setup::refresh_records(
            a.pq.clone(),
            store,
            vec![a.addr.clone()],
            Duration::from_millis(200),
        ));
        let dir = da.path().to_path_buf();
        assert!(
            a.until(WAIT, |_| KeyStore::open(&dir, StoreOptions::default())
                .map(|s| s.last_seq() >= seq_before + 4)
                .unwrap_or(false))
                .await,
            "two refreshes of two suites sign four new records"
        );
        refresh.abort();
        // A peer handshaking now verifies the refreshed record.
        let b = start(db.path(), Opts::default()).await;
        b.connect(&a).await;
        assert!(b.pq.wait_for_session(&a.peer_id, WAIT).await.is_some());
        a.stop().await;
        b.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_initiates_after_identify_but_never_redials_a_peer_that_left() {
    bounded(async {
        let d = tempdir();
        let a = start(d.path(), Opts::default()).await;

        // A peer that lists /pqnode/pq/1.0.0 (it accepts the protocol) but,
        // though it dialled, never opens the stream: after identify plus
        // 5 s, A opens it and sends Init (PROTOCOL.md §5).
        let h = pqsupport::raw_peer(Keypair::generate_ed25519(), a.full_addr()).await;
        let mut incoming = h
            .control
            .clone()
            .expect("control")
            .accept(PQ_PROTOCOL)
            .expect("accept");
        assert!(h.wait_connected(WAIT).await);
        let started = tokio::time::Instant::now();
        let (from, mut s) = tokio::time::timeout(
            Duration::from_secs(12),
            futures::StreamExt::next(&mut incoming),
        )
        .await
        .expect("A opened the PQ stream")
        .expect("stream");
        assert_eq!(from, a.peer_id);
        assert!(
            started.elapsed() >= Duration::from_secs(4),
            "A waited for the dialler first"
        );
        let init = read_frame(&mut s, 1, MAX_MESSAGE_LEN).await.expect("Init");
        assert_eq!(init[0], 1, "an Init");
        drop(s);
        drop(h);

        // Another such peer leaves right after identify: A must not dial it
        // back when its 5 s are up.
        let h = pqsupport::raw_peer(Keypair::generate_ed25519(), a.full_addr()).await;
        let _incoming = h
            .control
            .clone()
            .expect("control")
            .accept(PQ_PROTOCOL)
            .expect("accept");
        assert!(h.wait_connected(WAIT).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let gone = h.peer_id;
        assert!(a.handle.disconnect(gone).await.expect("disconnect"));
        tokio::time::sleep(Duration::from_secs(7)).await;
        let peers = a.handle.peers().await.expect("peers");
        assert!(
            !peers.iter().any(|p| p.peer_id == gone),
            "A reconnected to a peer that left"
        );
        a.stop().await;
    })
    .await;
}

/// A partial message that never completes ends its session after
/// `limits.partial_message_timeout_secs` (1 s here; 30 s by default), is
/// dropped, and costs the peer nothing else: it stays connected, is not
/// refused, and its next handshake gets a new session (§9 rev 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_partial_message_ends_its_session_and_a_new_one_follows() {
    bounded(async {
        let da = tempdir();
        let a = start(
            da.path(),
            Opts {
                partial_message_timeout: Duration::from_secs(1),
                ..Opts::default()
            },
        )
        .await;
        let dh = tempdir();
        let mut own = KeyStore::open_or_create(dh.path(), StoreOptions::default()).expect("store");
        let own2 = KeyStore::open(dh.path(), StoreOptions::default()).expect("store");
        let cfg = hostile_config(&own2, &mut own, false);
        let (h, _listing) =
            pqsupport::raw_peer_listing_pq(own.identity().clone(), a.full_addr()).await;
        let mut control = h.control.clone().expect("control");
        let mut s = control
            .open_stream(a.peer_id, PQ_PROTOCOL)
            .await
            .expect("stream");
        let mut session = hostile_handshake(cfg.clone(), a.peer_id, &mut s, false)
            .await
            .expect("honest handshake");
        let first =
            a.pq.wait_for_session(&h.peer_id, WAIT)
                .await
                .expect("session");

        // The first fragment of a two-fragment message, then nothing.
        let big = vec![0x5au8; pqnode::pq::fragment::MAX_CHUNK + 1000];
        let frag = pqnode::pq::fragment::fragments(1, &big)
            .next()
            .expect("fragment");
        let mut out = Vec::new();
        session
            .channel
            .sealer
            .seal_data(&frag, 0, &mut out)
            .expect("seal");
        s.write_all(&out).await.expect("write");
        s.flush().await.expect("flush");
        let stalled_at = tokio::time::Instant::now();
        // 5× the timeout.
        assert!(
            a.until(Duration::from_secs(5), |n| n
                .pq
                .session(&h.peer_id)
                .is_none())
                .await,
            "the session ended"
        );
        println!("session ended {:?} after the stall", stalled_at.elapsed());
        // The message is answered as incomplete (§7 rev 4) before the
        // session's stream closes.
        let receipt = tokio::time::timeout(WAIT, async {
            loop {
                let frame = read_frame(&mut s, 1, 1 << 20)
                    .await
                    .expect("a frame before the stream ends");
                if let Ok(pqnode_crypto::channel::Inbound::Receipt(r)) =
                    session.channel.opener.open(&frame)
                {
                    return r;
                }
            }
        })
        .await
        .expect("a receipt in time");
        assert_eq!(
            (receipt.message_id, receipt.status),
            (1, pqnode_crypto::receipt::ReceiptStatus::Incomplete)
        );
        assert!(
            a.pq.inbox().list(Some(h.peer_id), 0, 10).is_empty(),
            "nothing delivered"
        );
        assert!(h.is_connected(), "the peer stays connected");
        assert_eq!(
            a.pq.metrics().refused_count(RefuseReason::SessionError),
            0,
            "not refused"
        );
        let metrics = common::http(a.app.api_addr(), "GET", "/metrics", None, None)
            .await
            .body;
        assert!(
            metrics.contains("pqnode_pq_session_errors_total{reason=\"partial-timeout\"} 1"),
            "{metrics}"
        );

        // Its initiator (the peer) re-establishes it: a new session.
        let mut s2 = control
            .open_stream(a.peer_id, PQ_PROTOCOL)
            .await
            .expect("second stream");
        hostile_handshake(cfg, a.peer_id, &mut s2, false)
            .await
            .expect("second handshake");
        let second =
            a.pq.wait_for_session(&h.peer_id, WAIT)
                .await
                .expect("a new session");
        assert_ne!(second.id, first.id);
        a.stop().await;
    })
    .await;
}
