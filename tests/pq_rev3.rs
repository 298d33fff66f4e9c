//! PROTOCOL.md revision 3 on real nodes started through `App` on 127.0.0.1:
//! no classical message before negotiation failed, pins across suites,
//! per-peer handshake limits, re-handshakes.

mod common;
mod pqsupport;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pqnode::app::{App, AppOptions};
use pqnode::config::Config;
use pqnode::pq::framing::{read_frame, write_frame};
use pqnode::pq::policy::RefuseReason;
use pqnode::pq::reasons::HandshakeFailure;
use pqnode::pq::{PQ_PROTOCOL, SecurityLevel, SendError};
use pqnode_crypto::Suite;
use pqnode_crypto::channel::KeyUpdatePolicy;
use pqnode_crypto::handshake::{
    Credential, HandshakeConfig, Initiator,
    messages::{FirstToResponder, MAX_MESSAGE_LEN, Retry},
};
use pqnode_crypto::rng::system_rng;
use pqnode_crypto::sign::SigningKey;
use pqnode_keys::store::{KeyStore, StoreOptions};
use pqsupport::{Opts, Permissive, TEST_TIMEOUT, recv, start, tempdir};

const WAIT: Duration = Duration::from_secs(15);

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test exceeded its time bound");
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A default configuration, but on loopback with port 0 and without mDNS
/// (tests talk to 127.0.0.1 only).
fn default_config(dir: &std::path::Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        api: "127.0.0.1:0".parse().expect("api"),
        mdns: false,
        ..Config::default()
    }
}

/// POSTs one message through the API; returns (status, security label).
async fn post(app: &App, to: libp2p::PeerId, text: &str) -> (u16, Option<String>, String) {
    let body = serde_json::json!({ "to": to.to_base58(), "body": text }).to_string();
    let token = app.state().token.expose().to_owned();
    let r = common::http(
        app.api_addr(),
        "POST",
        "/api/messages",
        Some(&token),
        Some(&body),
    )
    .await;
    let security = serde_json::from_str::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|j| j["security"].as_str().map(str::to_owned));
    (r.status, security, r.body)
}

/// Sends from `from` to `to` from the first moment until one message went
/// over PQ: every answer must be `pq` or a 409 refusal, never classical.
async fn send_until_pq(from: &App, to: libp2p::PeerId, round: usize, who: &str) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut refused = 0;
    for i in 0.. {
        let (status, security, body) = post(from, to, &format!("{who} {round}.{i}")).await;
        match (status, security.as_deref()) {
            (200, Some("pq")) => return refused,
            (409, _) => {
                // A refusal names its reason.
                let j: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let (code, message) = (j["error"]["code"].as_str(), j["error"]["message"].as_str());
                assert!(
                    matches!(code, Some(c) if !c.is_empty())
                        && matches!(message, Some(m) if !m.is_empty()),
                    "round {round}, {who}: a 409 without a reason: {body}"
                );
                refused += 1;
            }
            other => panic!("round {round}, {who}: message {i} answered {other:?}: {body}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "round {round}, {who}: no PQ session within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    unreachable!()
}

/// `pqnode run --peer` between two default nodes, 20 times with fresh data
/// directories: from the moment the API answers, every message either goes
/// over PQ or is refused with 409 — in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_peer_never_sends_a_message_classically() {
    bounded(async {
        let mut took = Vec::with_capacity(20);
        for round in 0..20 {
            let t0 = tokio::time::Instant::now();
            let (da, db) = (tempdir(), tempdir());
            let a = App::start(&default_config(da.path()), AppOptions::default())
                .await
                .expect("A starts");
            let mut cb = default_config(db.path());
            cb.peers = vec![a.dial_addr("tcp").expect("tcp addr")];
            let b = App::start(&cb, AppOptions::default())
                .await
                .expect("B starts");
            // The dialler to the listener, and the listener to the dialler,
            // concurrently from the first moment.
            let (r1, r2) = tokio::join!(
                send_until_pq(&b, a.peer_id(), round, "dialler"),
                send_until_pq(&a, b.peer_id(), round, "listener"),
            );
            took.push((t0.elapsed(), r1 + r2));
            for m in a.pq().inbox().list(None, 0, 10_000) {
                assert_eq!(
                    m.security.level(),
                    SecurityLevel::Pq,
                    "A received a classical message"
                );
            }
            for m in b.pq().inbox().list(None, 0, 10_000) {
                assert_eq!(
                    m.security.level(),
                    SecurityLevel::Pq,
                    "B received a classical message"
                );
            }
            assert_eq!(
                a.pq()
                    .metrics()
                    .messages_sent
                    .get_or_create(&pqnode::pq::metrics::SecurityLabels {
                        security: SecurityLevel::Classical
                    })
                    .get(),
                0
            );
            let _ = b.shutdown(Duration::from_secs(4)).await;
            let _ = a.shutdown(Duration::from_secs(4)).await;
        }
        let ms: Vec<u128> = took.iter().map(|(d, _)| d.as_millis()).collect();
        let refused: usize = took.iter().map(|(_, r)| r).sum();
        eprintln!(
            "20 start-ups, from A's start to a PQ message both ways (ms): {ms:?}; \
             {refused} sends refused with 409 meanwhile, none classical"
        );
    })
    .await;
}

/// A pins B under the first suite; B comes back enabling only the other
/// suite (its own key): A refuses it as `key-mismatch`, sends nothing, and
/// the pin stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_peer_switching_suites_is_refused_and_the_pin_is_unchanged() {
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let a = start(da.path(), Opts::default()).await;
        let b = start(db.path(), Opts::default()).await;
        a.connect(&b).await;
        let s =
            a.pq.wait_for_session(&b.peer_id, WAIT)
                .await
                .expect("first session");
        assert_eq!(s.suite, Suite::Kyber1024Dilithium5);
        assert!(a.until(WAIT, |n| n.pq.is_pinned(&b.peer_id)).await);
        let pins_before = a.pq.pins().pins_of(&b.peer_id).expect("pins");
        assert_eq!(pins_before.len(), 1);
        assert_eq!(pins_before[0].0, Some(Suite::Kyber1024Dilithium5));
        let b_id = b.peer_id;
        b.stop().await;
        assert!(
            a.until(WAIT, |n| n.pq.peer(&b_id).is_none()).await,
            "A noticed B left"
        );

        // B again, same keys, only the other suite enabled. (B may dial A
        // itself from its peer cache as it starts.)
        let before = a.pq.metrics().refused_count(RefuseReason::KeyMismatch);
        let mismatches = a.pq.metrics().key_mismatch.get();
        let b = start(
            db.path(),
            Opts {
                suites: vec![Suite::Mlkem1024Mldsa87],
                ..Opts::default()
            },
        )
        .await;
        let _ = a.handle.dial(b.full_addr()).await;
        assert!(
            a.until(WAIT, |n| n
                .pq
                .metrics()
                .refused_count(RefuseReason::KeyMismatch)
                > before)
                .await,
            "A refuses B as key-mismatch"
        );
        assert!(
            a.pq.metrics().key_mismatch.get() > mismatches,
            "pqnode_pq_key_mismatch counts it"
        );
        assert!(a.pq.session(&b.peer_id).is_none());
        match a.pq.send(b.peer_id, b"never".to_vec()).await {
            Ok(d) => panic!("sent {d:?} to a refused peer"),
            Err(
                SendError::Refused { .. }
                | SendError::Unreachable { .. }
                | SendError::PinnedWithoutSession { .. }
                | SendError::NotConnected { .. },
            ) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
        assert_eq!(a.pq.pins().pins_of(&b.peer_id).expect("pins"), pins_before);
        assert!(b.pq.inbox().list(None, 0, 100).is_empty());
        b.stop().await;
        a.stop().await;
    })
    .await;
}

/// Whoever holds B's Ed25519 key presents a fresh PQ key for the suite B is
/// not pinned under: A refuses it (`key-mismatch`), the pin is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_identity_with_a_fresh_key_for_the_other_suite_is_refused() {
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let a = start(da.path(), Opts::default()).await;
        let b = start(db.path(), Opts::default()).await;
        a.connect(&b).await;
        a.pq.wait_for_session(&b.peer_id, WAIT)
            .await
            .expect("first session");
        assert!(a.until(WAIT, |n| n.pq.is_pinned(&b.peer_id)).await);
        let pins_before = a.pq.pins().pins_of(&b.peer_id).expect("pins");
        let b_id = b.peer_id;
        b.stop().await;
        assert!(a.until(WAIT, |n| n.pq.peer(&b_id).is_none()).await);

        // The thief: B's identity, a fresh ML-DSA key, a record for it
        // signed with B's Ed25519 key.
        let stolen = KeyStore::open(db.path(), StoreOptions::default()).expect("B's store");
        let identity = stolen.identity().clone();
        drop(stolen);
        let fresh = SigningKey::generate(Suite::Mlkem1024Mldsa87).expect("fresh key");
        let rec = pqnode_keys::record::build(
            &identity,
            &fresh,
            None,
            &pqnode_keys::record::RecordParams {
                seq: u64::MAX / 2,
                issued_at: now(),
                expires_at: now() + 3600,
                addrs: &[],
            },
        )
        .expect("the thief's record")
        .envelope_bytes()
        .to_vec();
        let config = Arc::new(HandshakeConfig {
            local_peer_id: identity.public().to_peer_id().to_bytes(),
            credentials: vec![Credential {
                signing_key: Arc::new(fresh),
                record: rec,
            }],
            key_update: KeyUpdatePolicy::default(),
        });
        let before = a.pq.metrics().refused_count(RefuseReason::KeyMismatch);
        let (h, _listing) = pqsupport::raw_peer_listing_pq(identity, a.full_addr()).await;
        let mut s = h
            .control
            .clone()
            .expect("control")
            .open_stream(a.peer_id, PQ_PROTOCOL)
            .await
            .expect("stream");
        let mut rng = system_rng();
        let (state, init) =
            Initiator::start(config, &a.peer_id.to_bytes(), &mut rng).expect("start");
        write_frame(&mut s, &init).await.expect("write init");
        let answer = read_frame(&mut s, 1, MAX_MESSAGE_LEN)
            .await
            .expect("answer");
        // A allows a peer pinned under Kyber1024-Dilithium5 that suite only:
        // Reject 1 (no common suite).
        assert_eq!(answer, vec![5, 1], "Reject: no common suite");
        assert!(
            state.handle(&answer, &Permissive, &mut rng).is_err(),
            "no session"
        );
        assert!(
            a.until(WAIT, |n| n
                .pq
                .metrics()
                .refused_count(RefuseReason::KeyMismatch)
                > before)
                .await
        );
        assert!(a.pq.session(&h.peer_id).is_none());
        assert_eq!(a.pq.pins().pins_of(&b_id).expect("pins"), pins_before);
        a.stop().await;
    })
    .await;
}

/// The same theft from the other side: A dials the thief (B's Ed25519
/// key), offering only the suite B is pinned under; the thief answers with
/// a Retry to the other suite. A refuses it as `key-mismatch` (Reject 5),
/// counts it, and the pin is unchanged (§5 rev 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_to_a_suite_the_peer_is_not_pinned_under_is_key_mismatch() {
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let a = start(
            da.path(),
            Opts {
                listener_open_delay: Duration::from_millis(300),
                ..Opts::default()
            },
        )
        .await;
        let b = start(db.path(), Opts::default()).await;
        a.connect(&b).await;
        let s =
            a.pq.wait_for_session(&b.peer_id, WAIT)
                .await
                .expect("first session");
        assert_eq!(s.suite, Suite::Kyber1024Dilithium5);
        assert!(a.until(WAIT, |n| n.pq.is_pinned(&b.peer_id)).await);
        let pins_before = a.pq.pins().pins_of(&b.peer_id).expect("pins");
        let b_id = b.peer_id;
        b.stop().await;
        assert!(a.until(WAIT, |n| n.pq.peer(&b_id).is_none()).await);

        let stolen = KeyStore::open(db.path(), StoreOptions::default()).expect("B's store");
        let identity = stolen.identity().clone();
        drop(stolen);
        let (refused, mismatches) = (
            a.pq.metrics().refused_count(RefuseReason::KeyMismatch),
            a.pq.metrics().key_mismatch.get(),
        );
        // Listing PQ from the start: A opens the stream after its listener
        // delay, never finding the protocol missing (a downgrade).
        let (_thief, mut incoming) = pqsupport::raw_peer_listing_pq(identity, a.full_addr()).await;
        let (from, mut stream) =
            tokio::time::timeout(WAIT, futures::StreamExt::next(&mut incoming))
                .await
                .expect("A opens the PQ stream")
                .expect("stream");
        assert_eq!(from, a.peer_id);
        let init = read_frame(&mut stream, 1, MAX_MESSAGE_LEN)
            .await
            .expect("Init");
        let Ok(FirstToResponder::Init(init)) = FirstToResponder::decode(&init) else {
            panic!("an Init");
        };
        assert_eq!(
            init.suites,
            vec![Suite::Kyber1024Dilithium5.id()],
            "toward a pinned peer only its pinned suites are offered"
        );
        let retry = Retry {
            suite: Suite::Mlkem1024Mldsa87.id(),
        }
        .encode();
        write_frame(&mut stream, &retry).await.expect("write Retry");
        let answer = read_frame(&mut stream, 1, MAX_MESSAGE_LEN)
            .await
            .expect("A's answer");
        assert_eq!(answer, vec![5, 5], "Reject 5 (auth-failed)");
        assert!(
            a.until(WAIT, |n| n
                .pq
                .metrics()
                .refused_count(RefuseReason::KeyMismatch)
                > refused)
                .await,
            "A refuses the thief as key-mismatch"
        );
        assert!(a.pq.metrics().key_mismatch.get() > mismatches);
        assert!(a.pq.session(&b_id).is_none());
        assert_eq!(a.pq.pins().pins_of(&b_id).expect("pins"), pins_before);
        a.stop().await;
    })
    .await;
}

/// 100,001 first-use pins in the database (one over the limit): the node
/// starts, the next new peer gets a PQ session, unpinned, and `pins_full`
/// is counted once (§8.3 rev 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pin_store_never_stops_a_node_and_new_peers_run_unpinned() {
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let t0 = std::time::Instant::now();
        {
            let state = pqnode_keys::db::StateDb::open(da.path(), false).expect("database");
            let pins = state.pins(pqnode_keys::db::DEFAULT_FIRST_USE_LIMIT);
            let written = pins
                .import_first_use_batch(
                    (0..100_001u64).map(|i| {
                        let mut fp = [0u8; 32];
                        fp[..8].copy_from_slice(&i.to_be_bytes());
                        (
                            libp2p::PeerId::random(),
                            Suite::Kyber1024Dilithium5,
                            pqnode_keys::Fingerprint::from_array(fp),
                        )
                    }),
                    now(),
                )
                .expect("pins written");
            assert_eq!(written, 100_001);
            assert_eq!(pins.counts().expect("counts").first_use, 100_001);
        }
        let written = t0.elapsed();
        let t1 = std::time::Instant::now();
        let a = start(da.path(), Opts::default()).await;
        eprintln!(
            "100,001 pins written in {written:?}; the node started on them in {:?}",
            t1.elapsed()
        );
        let b = start(db.path(), Opts::default()).await;
        a.connect(&b).await;
        a.pq.wait_for_session(&b.peer_id, WAIT)
            .await
            .expect("a PQ session with a new peer");
        assert!(
            a.until(WAIT, |n| n.pq.metrics().pins_full.get() >= 1).await,
            "pins_full counted"
        );
        assert_eq!(a.pq.metrics().pins_full.get(), 1);
        assert!(!a.pq.is_pinned(&b.peer_id), "the new peer runs unpinned");
        let sent =
            a.pq.send(b.peer_id, b"over pq".to_vec())
                .await
                .expect("sent");
        assert_eq!(sent.security.level(), SecurityLevel::Pq);
        b.stop().await;
        a.stop().await;
    })
    .await;
}

/// A peer that opens PQ streams and never finishes a handshake holds at
/// most one slot: an honest peer still gets a session within 2 s, and the
/// abusive one is disconnected and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshakes_cannot_exhaust_the_slots() {
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let a = start(
            da.path(),
            Opts {
                max_handshakes: 8,
                ..Opts::default()
            },
        )
        .await;
        let abuser =
            pqsupport::raw_peer(libp2p::identity::Keypair::generate_ed25519(), a.full_addr()).await;
        assert!(abuser.wait_connected(WAIT).await);
        let mut streams = Vec::new();
        let control = abuser.control.clone().expect("control");
        for _ in 0..64 {
            let mut c = control.clone();
            match tokio::time::timeout(
                Duration::from_secs(2),
                c.open_stream(a.peer_id, PQ_PROTOCOL),
            )
            .await
            {
                Ok(Ok(s)) => streams.push(s),
                _ => break,
            }
        }
        assert!(
            a.until(WAIT, |n| n
                .pq
                .metrics()
                .refused_count(RefuseReason::Abusive)
                >= 1)
                .await,
            "the abusive peer is refused and counted"
        );
        assert!(
            abuser.until_disconnected(WAIT).await,
            "the abusive peer is disconnected"
        );
        let b = start(db.path(), Opts::default()).await;
        let t = std::time::Instant::now();
        b.connect(&a).await;
        assert!(
            b.pq.wait_for_session(&a.peer_id, Duration::from_secs(2))
                .await
                .is_some(),
            "an honest peer gets a session within 2 s"
        );
        assert!(t.elapsed() < Duration::from_secs(2));
        drop(streams);
        b.stop().await;
        a.stop().await;
    })
    .await;
}

/// Sends message `i` over PQ. A send caught between two sessions (busy, or
/// the status open) is retried by the caller, at most `max_tries` times; a
/// message is never half-sent.
async fn send_pq_retrying(
    from: &pqnode::pq::PqLayer,
    to: libp2p::PeerId,
    body: Vec<u8>,
    i: usize,
    max_tries: u32,
) {
    let mut tries = 0;
    loop {
        match from.send(to, body.clone()).await {
            Ok(d) => {
                assert_eq!(d.security.level(), SecurityLevel::Pq);
                return;
            }
            Err(e @ (SendError::Busy { .. } | SendError::StatusPending { .. })) => {
                tries += 1;
                assert!(tries < max_tries, "message {i}: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("message {i}: {e}"),
        }
    }
}

/// Everything `node` holds from `from`, oldest first. Each send above
/// returned only on the receiver's receipt (rev 4), so nothing is still on
/// its way.
fn received(node: &pqsupport::TestNode, from: libp2p::PeerId) -> Vec<pqnode::pq::InboundMessage> {
    node.pq.inbox().list(Some(from), 0, 10_000)
}

/// Re-handshakes (§5.1) replace the session while messages flow both ways:
/// none is lost, duplicated or reordered, and the new session has a new
/// transcript (so new keys).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rehandshake_replaces_the_session_without_losing_messages() {
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let opts = Opts {
            rehandshake_after: Duration::from_secs(1),
            ..Opts::default()
        };
        let a = start(da.path(), opts.clone()).await;
        let b = start(db.path(), opts).await;
        a.connect(&b).await;
        let first =
            a.pq.wait_for_session(&b.peer_id, WAIT)
                .await
                .expect("session");
        let (pa, pb) = (a.pq.clone(), b.pq.clone());
        let (a_id, b_id) = (a.peer_id, b.peer_id);
        const N: usize = 300;
        let send_all = |from: pqnode::pq::PqLayer, to: libp2p::PeerId| async move {
            for i in 0..N {
                send_pq_retrying(&from, to, format!("{i}").into_bytes(), i, 100).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::join!(send_all(pa.clone(), b_id), send_all(pb.clone(), a_id));
        for (node, from) in [(&b, a_id), (&a, b_id)] {
            let got = received(node, from);
            let bodies: Vec<String> = got
                .iter()
                .map(|m| String::from_utf8(m.body.to_vec()).expect("utf8"))
                .collect();
            let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
            assert_eq!(bodies, want, "every message once, in order");
        }
        assert!(pa.metrics().rehandshakes.get() + pb.metrics().rehandshakes.get() >= 1);
        let last = pa.session(&b_id).expect("still a session");
        assert_ne!(last.id, first.id, "a new session with a new transcript");
        // The API shows it: re-handshakes counted on the peer, the current
        // session's age and bytes.
        let peers = common::http(a.app.api_addr(), "GET", "/api/peers", None, None)
            .await
            .json();
        let view = peers["peers"]
            .as_array()
            .expect("peers")
            .iter()
            .find(|p| p["peerId"] == b_id.to_string().as_str())
            .expect("B listed")
            .clone();
        assert_eq!(view["security"], "pq", "{view}");
        assert!(view["rehandshakes"].as_u64().expect("count") >= 1, "{view}");
        assert!(view["sessionAgeSecs"].as_u64().is_some(), "{view}");
        assert!(view["sessionBytesSent"].as_u64().is_some(), "{view}");
        assert!(view["sessionBytesReceived"].as_u64().is_some(), "{view}");
        let metrics = common::http(a.app.api_addr(), "GET", "/metrics", None, None)
            .await
            .body;
        assert!(
            metrics.contains("pqnode_pq_rehandshake_failures_total "),
            "{metrics}"
        );
        let _ = recv(&a, b_id, 0, Duration::from_millis(1)).await;
        b.stop().await;
        a.stop().await;
    })
    .await;
}

/// A node shutting down closes its sessions before its connections. Its
/// peers re-handshake meanwhile; they must be told `busy`, never see the PQ
/// protocol vanish (to a peer that pinned it, that is a downgrade, and the
/// refusal would be remembered against a node that merely restarted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shutting_down_is_not_mistaken_for_a_downgrade() {
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let a = start(da.path(), Opts::default()).await;
        let b = start(db.path(), Opts::default()).await;
        b.connect(&a).await;
        b.pq.wait_for_session(&a.peer_id, WAIT)
            .await
            .expect("session");
        assert!(b.pq.is_pinned(&a.peer_id));
        // A's PQ layer stops; the swarm, and so the connection, stays.
        a.pq.shutdown(Duration::from_secs(5)).await;
        // B lost the session and re-handshakes after 1 s, then 2 s.
        let retried = b
            .until(WAIT, |b| b.pq.metrics().handshakes_started.get() >= 3)
            .await;
        assert!(retried, "B retried the lost session");
        assert_eq!(b.pq.metrics().downgrade_refused.get(), 0);
        assert_eq!(b.pq.refused_total(), 0);
        assert_ne!(b.level(&a.peer_id), Some("refused"));
        let a_id = a.peer_id;
        a.stop().await;
        // A is gone; nothing was held against it.
        assert!(b.until(WAIT, |b| b.pq.peer(&a_id).is_none()).await);
        let r = b.pq.send(a_id, b"after".to_vec()).await;
        assert!(matches!(r, Err(SendError::NotConnected { .. })), "{r:?}");
        b.stop().await;
    })
    .await;
}

/// Re-handshakes under traffic (§5.1), by time and by bytes: with a 2 s and
/// 1 MiB limit, messages of 16 KiB flow both ways through at least 5
/// re-handshakes; none is lost, duplicated or reordered, and every session
/// has its own transcript (its id, the first bytes of the transcript hash
/// its keys derive from, is never repeated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_rehandshakes_under_traffic_lose_nothing_and_never_reuse_keys() {
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let opts = Opts {
            rehandshake_after: Duration::from_secs(2),
            rehandshake_bytes: 1 << 20,
            ..Opts::default()
        };
        let a = start(da.path(), opts.clone()).await;
        let b = start(db.path(), opts).await;
        a.connect(&b).await;
        a.pq.wait_for_session(&b.peer_id, WAIT)
            .await
            .expect("session");
        let (pa, pb) = (a.pq.clone(), b.pq.clone());
        let (a_id, b_id) = (a.peer_id, b.peer_id);

        // Every session id A sees, sampled as the sessions change.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (pa, done) = (pa.clone(), done.clone());
            tokio::spawn(async move {
                let mut ids: Vec<String> = Vec::new();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Some(s) = pa.session(&b_id)
                        && ids.last() != Some(&s.id)
                    {
                        ids.push(s.id);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                ids
            })
        };

        const N: usize = 400;
        let send_all = |from: pqnode::pq::PqLayer, to: libp2p::PeerId| async move {
            for i in 0..N {
                let mut body = format!("{i:06}").into_bytes();
                body.resize(16 << 10, b'.');
                send_pq_retrying(&from, to, body, i, 200).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::join!(send_all(pa.clone(), b_id), send_all(pb.clone(), a_id));
        for (node, from) in [(&b, a_id), (&a, b_id)] {
            let got = received(node, from);
            let numbers: Vec<String> = got
                .iter()
                .map(|m| String::from_utf8_lossy(&m.body[..6]).into_owned())
                .collect();
            let want: Vec<String> = (0..N).map(|i| format!("{i:06}")).collect();
            assert_eq!(numbers, want, "every message once, in order");
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let ids = sampler.await.expect("sampler");
        let replaced = pa.metrics().rehandshakes.get();
        println!(
            "{} sessions seen by A, {replaced} re-handshakes counted by A, {} by B",
            ids.len(),
            pb.metrics().rehandshakes.get()
        );
        assert!(replaced >= 5, "at least 5 re-handshakes: {replaced}");
        // The responder sees the same re-handshakes as replacements, not as
        // sessions lost and new ones made (at most the last one may still
        // be finishing on its side).
        let b_counted = pb.metrics().rehandshakes.get();
        let b_listed = u64::from(pb.peer(&a_id).expect("A connected to B").rehandshakes);
        assert!(
            b_counted + 1 >= replaced && b_listed == b_counted,
            "B counted {b_counted} and lists {b_listed} re-handshakes; A counted {replaced}"
        );
        let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "no session id twice: {ids:?}");
        assert!(ids.len() >= 6, "at least 6 sessions seen: {ids:?}");
        b.stop().await;
        a.stop().await;
    })
    .await;
}

/// Re-handshake limits shorter than a peer admits (10 inbound handshakes a
/// minute from one peer, §9 rev 3) are paced by the initiator: the peer
/// never answers busy, nobody is disconnected, and the session stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rehandshakes_faster_than_a_peer_admits_are_paced_not_refused() {
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let opts = Opts {
            rehandshake_after: Duration::from_secs(1),
            ..Opts::default()
        };
        let a = start(da.path(), opts.clone()).await;
        let b = start(db.path(), opts).await;
        a.connect(&b).await;
        a.pq.wait_for_session(&b.peer_id, WAIT)
            .await
            .expect("session");
        // Whichever side initiated, its tenth handshake start within a
        // minute is held back.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let paced =
            || a.pq.metrics().handshakes_paced.get() + b.pq.metrics().handshakes_paced.get();
        while paced() == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no handshake was paced; re-handshakes counted: {} and {}",
                a.pq.metrics().rehandshakes.get(),
                b.pq.metrics().rehandshakes.get()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (node, other) in [(&a, b.peer_id), (&b, a.peer_id)] {
            assert_eq!(
                node.pq
                    .metrics()
                    .handshake_failure_count(HandshakeFailure::PeerBusy),
                0
            );
            assert_eq!(node.pq.refused_total(), 0);
            assert_eq!(
                node.pq.metrics().rehandshakes.get(),
                8,
                "9 starts in the window"
            );
            assert!(node.pq.session(&other).is_some(), "the session stays");
        }
        b.stop().await;
        a.stop().await;
    })
    .await;
}
