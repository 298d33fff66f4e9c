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
        // Nothing of B dials A sooner than 1, 2, 4, 8 s after a refusal
        // (its configured-peer redials, Kademlia, the record sweep): at most
        // 5 refusals in 15.5 s, one more if A's Kademlia dials B meanwhile
        // (B refuses that connection too). A redial every second or two
        // made 10. Fewer is fine: A may cut B off as abusive first, and
        // then B's attempts fail without a refusal of its own (they are
        // counted in `failures` below).
        let window = Duration::from_millis(15_500);
        tokio::time::sleep(window).await;
        let seen = refusals();
        assert!(
            (1..=6).contains(&seen),
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

/// A stock rust-libp2p peer that lies about where it and others listen:
/// identify and Kademlia (speaking pqnode's protocol, in server mode) name
/// a loopback port of the node's host.
#[derive(libp2p::swarm::NetworkBehaviour)]
struct Liar {
    identify: libp2p::identify::Behaviour,
    kad: libp2p::kad::Behaviour<libp2p::kad::store::MemoryStore>,
    ping: libp2p::ping::Behaviour,
}

/// A metric's value in `/metrics` text (0 when absent).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Item 1: a remote peer chose the addresses the node dialled. A peer
/// claiming, in identify and in Kademlia replies, to be reachable on a
/// loopback port of the node's host made the node open TCP connections
/// there (the record sweep, Kademlia queries, the cache at restart, a
/// send). Now nothing connects to that port: across the peer's visit, a
/// restart and a send, while the policy's counters show it refused.
///
/// The node must not itself be a loopback-only node (those dial loopback),
/// so the test runs in a network namespace it makes (as the per-IP test in
/// node.rs does): the node on 10.77.0.1 (a private network, so
/// `publish_private_addrs = true`), the liar on 10.77.0.2, a plain TCP
/// listener on the namespace's 127.0.0.1.
#[test]
fn a_remote_peer_cannot_make_the_node_dial_loopback() {
    if !common::in_own_netns(
        "a_remote_peer_cannot_make_the_node_dial_loopback",
        TEST_TIMEOUT,
    ) {
        return;
    }
    let ip = common::ip;
    ip(&["link", "set", "lo", "up"]);
    for a in ["10.77.0.1/32", "10.77.0.2/32"] {
        ip(&["addr", "add", a, "dev", "lo"]);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bounded(async {
        use futures::StreamExt;
        use libp2p::{identify, kad, ping};

        // The trap: anything connecting to it is the fault. The liar claims
        // in identify to listen there.
        let trap = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("trap");
        let trap_port = trap.local_addr().expect("addr").port();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((_, from)) = trap.accept().await {
                eprintln!("trap: connection from {from}");
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let lie: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{trap_port}")
            .parse()
            .expect("addr");
        // Where its Kademlia replies place others: a second port, which the
        // liar's own Kademlia dials too (so it is not asserted on: the
        // node's refused dials there are counted instead).
        let decoy = std::net::TcpListener::bind("127.0.0.1:0").expect("decoy");
        let decoy_addr: libp2p::Multiaddr = format!(
            "/ip4/127.0.0.1/tcp/{}",
            decoy.local_addr().expect("addr").port()
        )
        .parse()
        .expect("addr");

        let dir = tempdir();
        let mut config = common::test_config(dir.path());
        config.listen = vec!["/ip4/10.77.0.1/tcp/0".parse().expect("addr")];
        // A node in a private network: private addresses are kept and
        // dialled (the liar's own is), loopback ones still never.
        config.publish_private_addrs = true;
        let node = common::start_node(&config).await;
        let target = common::tcp_addr(&node);

        let mut liar = common::stock_swarm(|k| {
            let id = k.public().to_peer_id();
            let mut kad = kad::Behaviour::with_config(
                id,
                kad::store::MemoryStore::new(id),
                kad::Config::new(libp2p::StreamProtocol::new("/pqnode/kad/1.0.0")),
            );
            kad.set_mode(Some(kad::Mode::Server));
            // Others it "knows", all on the node's loopback.
            for _ in 0..4 {
                kad.add_address(&libp2p::PeerId::random(), decoy_addr.clone());
            }
            Liar {
                identify: identify::Behaviour::new(identify::Config::new(
                    "/ipfs/id/1.0.0".into(),
                    k.public(),
                )),
                kad,
                ping: ping::Behaviour::default(),
            }
        });
        let liar_id = *liar.local_peer_id();
        liar.listen_on("/ip4/10.77.0.2/tcp/0".parse().expect("addr"))
            .expect("listen");
        // What identify will claim it listens on.
        liar.add_external_address(lie.clone());
        liar.dial(target).expect("dial");
        let driver = tokio::spawn(async move {
            loop {
                let _ = liar.select_next_some().await;
            }
        });

        let metrics = |node: &pqnode::app::App| {
            let api = node.api_addr();
            async move { common::http(api, "GET", "/metrics", None, None).await.body }
        };
        // The liar is met and its claims are refused: kept nowhere (its
        // loopback address), dialled nowhere (Kademlia's query dials).
        common::eventually(|| async {
            let m = metrics(&node).await;
            (metric(&m, r#"pqnode_node_addrs_dropped_total{scope="loopback"}"#) >= 1
                && metric(&m, r#"pqnode_node_dials_denied_total{scope="loopback"}"#) >= 1)
                .then_some(())
        })
        .await;
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0);

        // A restart: the cache dials what it kept.
        node.shutdown(Duration::from_secs(5)).await.expect("stop");
        let node = common::start_node(&config).await;
        let cached = node
            .peer_cache()
            .get(&liar_id)
            .expect("cache")
            .map(|e| e.addrs)
            .unwrap_or_default();
        assert!(
            cached
                .iter()
                .filter_map(|a| libp2p::Multiaddr::try_from(a.clone()).ok())
                .all(|a| !a.to_string().starts_with("/ip4/127.")),
            "no loopback address of the liar is cached"
        );
        // A send to the liar: dials what is known of it.
        let token = node.state().token.expose().to_owned();
        let body = format!(r#"{{"to":"{liar_id}","body":"hello"}}"#);
        // Whatever becomes of it (the liar takes no classical messages).
        let _ = common::http(
            node.api_addr(),
            "POST",
            "/api/messages",
            Some(&token),
            Some(&body),
        )
        .await;
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "nothing connected to the loopback port"
        );
        driver.abort();
        drop(decoy);
        node.shutdown(Duration::from_secs(5)).await.expect("stop");
    }));
}

/// Item 9: first-use pins could be spent for good by throwaway identities
/// from one place. One network (here 127.0.0.0/24) makes at most its share
/// an hour (2 in this test, 100 by default); beyond, the session goes on
/// unpinned and is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_network_makes_only_its_share_of_first_use_pins() {
    bounded(async {
        let da = tempdir();
        let a = start(
            da.path(),
            Opts {
                first_use_per_network_per_hour: 2,
                ..Opts::default()
            },
        )
        .await;
        let dirs: Vec<_> = (0..3).map(|_| tempdir()).collect();
        let mut peers = Vec::new();
        for d in &dirs {
            let p = start(d.path(), Opts::default()).await;
            p.connect(&a).await;
            a.pq.wait_for_session(&p.peer_id, Duration::from_secs(15))
                .await
                .expect("a PQ session, pinned or not");
            peers.push(p);
        }
        let settled = a
            .until(Duration::from_secs(10), |a| {
                a.pq.metrics().pins_source_limited.get() == 1
                    && peers.iter().filter(|p| a.pq.is_pinned(&p.peer_id)).count() == 2
            })
            .await;
        assert!(
            settled,
            "{} of 3 pinned, {} limited",
            peers.iter().filter(|p| a.pq.is_pinned(&p.peer_id)).count(),
            a.pq.metrics().pins_source_limited.get()
        );
        for p in peers {
            p.stop().await;
        }
        a.stop().await;
    })
    .await;
}
