//! Faults a remote peer can cause (issue 29), each against real nodes
//! started through `App` as `pqnode run` starts them.

mod common;
mod pqsupport;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::http;
use futures::AsyncWriteExt;
use libp2p::identity::Keypair;
use pqnode::config::TrustedPeer;
use pqnode::pq::PQ_PROTOCOL;
use pqnode::pq::policy::RefuseReason;
use pqnode::pq::reasons::SessionError;
use pqsupport::{Opts, TEST_TIMEOUT, TestNode, raw_peer, start, start_with, tempdir};
use tokio::sync::oneshot;

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out");
}

fn token(node: &TestNode) -> String {
    node.app.state().token.expose().to_owned()
}

async fn post(from: &TestNode, to: libp2p::PeerId, text: &str) -> common::Response {
    let body = format!(r#"{{"to":"{to}","body":"{text}"}}"#);
    http(
        from.app.api_addr(),
        "POST",
        "/api/messages",
        Some(&token(from)),
        Some(&body),
    )
    .await
}

/// A node on a runtime and thread of its own, which the test can freeze
/// the way SIGSTOP freezes a process: while frozen nothing of it runs, so
/// it reads nothing from its sockets.
struct Freezable {
    node: Option<TestNode>,
    rt: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Freezable {
    async fn start(dir: PathBuf, opts: Opts) -> Self {
        let (started, node) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let node = rt.block_on(start(&dir, opts));
            let _ = started.send((node, rt.handle().clone()));
            rt.block_on(async {
                let _ = stopped.await;
            });
        });
        let (node, rt) = node.await.expect("node started");
        Freezable {
            node: Some(node),
            rt,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn node(&self) -> &TestNode {
        self.node.as_ref().expect("running")
    }

    /// Freezes the node's runtime; it runs again when the sender returned
    /// is used or dropped.
    async fn freeze(&self) -> std::sync::mpsc::Sender<()> {
        let (thaw, frozen) = std::sync::mpsc::channel::<()>();
        let (is_frozen, confirmed) = oneshot::channel();
        self.rt.spawn(async move {
            let _ = is_frozen.send(());
            // Blocks the runtime's only thread: every task of the node stops.
            let _ = frozen.recv();
        });
        confirmed.await.expect("frozen");
        thaw
    }

    async fn stop(mut self) {
        if let Some(node) = self.node.take() {
            let _ = self.rt.spawn(node.stop()).await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Item 4: a receiver that stops reading gets a message at most once, and
/// the sender's API answers within `limits.delivery_timeout_secs` instead
/// of hanging; a writer stuck past `limits.partial_message_timeout_secs`
/// ends the session, which comes back when the receiver reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_stops_reading_gets_each_message_at_most_once_and_the_send_answers_in_time()
{
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let delivery = Duration::from_secs(2);
        let stall = Duration::from_secs(6);
        let opts = Opts {
            delivery_timeout: delivery,
            partial_message_timeout: stall,
            ..Opts::default()
        };
        let a = start(da.path(), opts.clone()).await;
        let b = Freezable::start(db.path().to_path_buf(), opts).await;
        let b_id = b.node().peer_id;
        a.connect(b.node()).await;
        let session =
            a.pq.wait_for_session(&b_id, Duration::from_secs(15))
                .await
                .expect("a session with B");
        b.node()
            .pq
            .wait_for_session(&a.peer_id, Duration::from_secs(15))
            .await
            .expect("a session with A");

        let thaw = b.freeze().await;
        // Far more than the stream's window: the write cannot finish.
        let big = "x".repeat(1_000_000);
        let t0 = Instant::now();
        let r = post(&a, b_id, &big).await;
        let took = t0.elapsed();
        assert_eq!(r.status, 504, "{}", r.body);
        assert_eq!(r.json()["error"]["code"], "no_receipt", "{}", r.body);
        assert!(
            took < delivery * 5,
            "the API answered after {took:?}, not within 5 × {delivery:?}"
        );
        // Queued behind the stuck one: answered in time too, never
        // written late.
        let t0 = Instant::now();
        let r = post(&a, b_id, "queued").await;
        assert_eq!(r.status, 504, "{}", r.body);
        assert!(t0.elapsed() < delivery * 5, "{:?}", t0.elapsed());

        // The stuck writer ends the session.
        let ended = a
            .until(stall * 5, |a| {
                a.pq.metrics()
                    .session_error_count(SessionError::WriteStalled)
                    >= 1
                    && a.pq.session(&b_id).is_none_or(|s| s.id != session.id)
            })
            .await;
        assert!(ended, "the session with the frozen peer did not end");

        drop(thaw);
        // B reads again: a new session, and a message over it arrives.
        let mut resumed = false;
        for _ in 0..3 {
            if a.pq
                .wait_for_session(&b_id, Duration::from_secs(20))
                .await
                .is_some()
            {
                resumed = true;
                break;
            }
            let _ = a.handle.dial(b.node().full_addr()).await;
        }
        assert!(resumed, "no new session with B after it read again");
        let r = post(&a, b_id, "after").await;
        assert_eq!(r.status, 200, "{}", r.body);

        let bodies: Vec<Vec<u8>> = b
            .node()
            .pq
            .inbox()
            .list(Some(a.peer_id), 0, 100)
            .into_iter()
            .map(|m| m.body.as_ref().clone())
            .collect();
        let copies = |text: &str| {
            bodies
                .iter()
                .filter(|m| m.as_slice() == text.as_bytes())
                .count()
        };
        assert!(
            copies(&big) <= 1,
            "B holds {} copies of one message",
            copies(&big)
        );
        assert_eq!(
            copies("queued"),
            0,
            "a message given up on was written late"
        );
        assert_eq!(copies("after"), 1);
        a.stop().await;
        b.stop().await;
    })
    .await;
}

/// Item 10: a configured peer that this node refuses (the operator pinned a
/// wrong fingerprint for it) was redialled every second or two, forever:
/// the back-off was reset when the connection was established, a moment
/// before the refusal. The refusal now counts as a failed dial (1 s
/// doubling), and `/api/peers` and `/api/health/ready` name the peer and
/// why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_configured_peer_is_redialled_with_back_off() {
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let a = start(da.path(), Opts::default()).await;
        let opts = Opts::default();
        let mut config = pqsupport::config(db.path(), &opts);
        config.peers = vec![a.full_addr()];
        config.trusted_peers = vec![TrustedPeer {
            peer_id: a.peer_id,
            fingerprint: [0x5a; 32],
            suite: None,
        }];
        let b = start_with(db.path(), config, &opts).await;
        let refusals = || b.pq.metrics().refused_count(RefuseReason::KeyMismatch);
        assert!(
            b.until(Duration::from_secs(20), |_| refusals() >= 1).await,
            "the configured peer is refused for its key"
        );
        // Dials 1, 2, 4 and 8 s apart (each after the refusal): at most 5
        // refusals in 15.5 s; every second or two would be 8 or more.
        let window = Duration::from_millis(15_500);
        tokio::time::sleep(window).await;
        let seen = refusals();
        assert!(
            (2..=5).contains(&seen),
            "{seen} refusals in {window:?}: not backing off"
        );

        let peers = http(b.app.api_addr(), "GET", "/api/peers", None, None).await;
        assert_eq!(peers.status, 200, "{}", peers.body);
        let configured = &peers.json()["configured"][0];
        assert_eq!(configured["peerId"], a.peer_id.to_base58(), "{configured}");
        assert!(
            configured["failures"].as_u64().is_some_and(|n| n >= 2),
            "{configured}"
        );
        assert!(
            configured["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("refused")),
            "{configured}"
        );
        if configured["state"] == "waiting" {
            assert!(
                configured["nextRetrySecs"].as_u64().is_some(),
                "{configured}"
            );
        }
        // Between two redials (a redial in flight is "waiting for the PQ
        // outcome" for a moment).
        let expected = format!("configured peer {}: refused (key-mismatch)", a.peer_id);
        common::eventually(|| async {
            let ready = http(b.app.api_addr(), "GET", "/api/health/ready", None, None).await;
            (ready.json()["reason"] == expected.as_str()).then_some(())
        })
        .await;
        b.stop().await;
        a.stop().await;
    })
    .await;
}

fn abandoned(node: &TestNode) -> u64 {
    node.pq
        .metrics()
        .handshake_failure_count(pqnode::pq::reasons::HandshakeFailure::StreamClosed)
}

/// Opens a PQ stream from `peer` to `node` and closes it without a word:
/// an abandoned handshake, awaited until `node` has counted it.
async fn abandon(node: &TestNode, peer: &pqsupport::Peer) {
    let mut control = peer.control.clone().expect("raw peer");
    let before = abandoned(node);
    let mut s = control
        .open_stream(node.peer_id, PQ_PROTOCOL)
        .await
        .expect("PQ stream");
    let _ = s.close().await;
    drop(s);
    assert!(
        node.until(Duration::from_secs(10), |n| abandoned(n) > before)
            .await,
        "the abandoned handshake is counted"
    );
}

/// Item 7: the per-peer handshake budget (3 failed or abandoned handshakes
/// a minute, §9 rev 3) started afresh on every reconnect, so a peer that
/// abandoned two handshakes per connection and reconnected was never cut
/// off. Now its third abandoned handshake in the minute, on a new
/// connection, gets it refused as abusive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_reconnecting_does_not_reset_its_handshake_budget() {
    bounded(async {
        let da = tempdir();
        let a = start(da.path(), Opts::default()).await;
        let key = Keypair::generate_ed25519();
        let first = raw_peer(key.clone(), a.full_addr()).await;
        assert!(first.wait_connected(Duration::from_secs(10)).await);
        abandon(&a, &first).await;
        abandon(&a, &first).await;
        drop(first);
        assert!(
            a.until(Duration::from_secs(10), |n| n
                .pq
                .peer(&key.public().to_peer_id())
                .is_none())
                .await,
            "the peer left"
        );
        let abusive = a.pq.metrics().refused_count(RefuseReason::Abusive);
        let second = raw_peer(key.clone(), a.full_addr()).await;
        assert!(second.wait_connected(Duration::from_secs(10)).await);
        abandon(&a, &second).await;
        assert!(
            a.until(Duration::from_secs(10), |n| {
                n.pq.metrics().refused_count(RefuseReason::Abusive) > abusive
            })
            .await,
            "the third abandoned handshake in a minute gets the peer refused"
        );
        assert!(second.until_disconnected(Duration::from_secs(10)).await);
        a.stop().await;
    })
    .await;
}
