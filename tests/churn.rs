//! Churn: 30 real pqnodes connect to a hub, handshake, disconnect and
//! reconnect in random order for 20 s while messages flow; afterwards the
//! hub's `/api/peers` agrees exactly with its swarm's connections, every
//! message it received is labelled with how its sender can speak, and no
//! PQ state is left for a peer that is gone (issue 19).

mod common;
mod pqsupport;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use pqnode::pq::{PqStatus, SecurityLevel};
use pqsupport::{Opts, TEST_TIMEOUT, TestNode, start, tempdir};

/// Peers around the hub; the first `PQ_PEERS` can do PQ, the others run as
/// a binary without PQ would (§8.4) and talk classically.
const PEERS: usize = 30;
const PQ_PEERS: usize = 22;
const CHURN: Duration = Duration::from_secs(20);
/// A peer's connection is toggled at most this often, which keeps each
/// peer within the hub's per-peer handshake limits (10 inbound a minute).
const MIN_TOGGLE: Duration = Duration::from_secs(2);
/// How long the hub's PQ statuses may take to settle after the churn.
const SETTLE: Duration = Duration::from_secs(30);

/// A small deterministic generator; the seed is printed for a rerun.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// The peers the hub's swarm is connected to.
async fn swarm_peers(hub: &TestNode) -> BTreeSet<PeerId> {
    hub.handle
        .peers()
        .await
        .expect("peers")
        .into_iter()
        .map(|p| p.peer_id)
        .collect()
}

fn connected(node: &TestNode, other: &PeerId) -> bool {
    node.pq.peer(other).is_some_and(|p| p.connections > 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_peers_churning_leave_the_hub_consistent() {
    let seed = std::env::var("CHURN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64 | 1)
                .unwrap_or(0x9e37_79b9)
        });
    println!("churn seed {seed} (CHURN_SEED={seed} reruns it)");
    tokio::time::timeout(TEST_TIMEOUT + CHURN + SETTLE, async move {
        let mut dirs = Vec::new();
        let hub_dir = tempdir();
        let hub = start(
            hub_dir.path(),
            Opts {
                // A peer without PQ that dials the hub waits for the hub to
                // try PQ first; do not let that take 5 s.
                listener_open_delay: Duration::from_millis(300),
                ..Opts::default()
            },
        )
        .await;
        let mut peers = Vec::new();
        for i in 0..PEERS {
            let dir = tempdir();
            let node = start(
                dir.path(),
                Opts {
                    pq_available: i < PQ_PEERS,
                    listener_open_delay: Duration::from_millis(300),
                    ..Opts::default()
                },
            )
            .await;
            dirs.push(dir);
            peers.push(Arc::new(node));
        }
        let hub = Arc::new(hub);
        let index: BTreeMap<PeerId, usize> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.peer_id, i))
            .collect();

        // Messages flow to the hub from whichever peers are connected.
        let stop = Arc::new(AtomicBool::new(false));
        let sent_ok = Arc::new(AtomicU64::new(0));
        let sender = {
            let (hub, peers, stop, sent_ok) =
                (hub.clone(), peers.clone(), stop.clone(), sent_ok.clone());
            tokio::spawn(async move {
                let mut rng = Rng(seed ^ 0x5555);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let i = rng.below(PEERS);
                    let peer = &peers[i];
                    if !connected(peer, &hub.peer_id) {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    n += 1;
                    let body = format!("{i}:{n}").into_bytes();
                    let sent = tokio::time::timeout(
                        Duration::from_secs(5),
                        peer.pq.send(hub.peer_id, body),
                    )
                    .await;
                    if let Ok(Ok(delivery)) = sent {
                        let expected = if i < PQ_PEERS {
                            SecurityLevel::Pq
                        } else {
                            SecurityLevel::Classical
                        };
                        assert_eq!(delivery.security.level(), expected, "peer {i} sent {n}");
                        sent_ok.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };

        // Churn: connect or disconnect a random peer, from either side.
        let mut rng = Rng(seed);
        let mut last_toggle = vec![Instant::now() - MIN_TOGGLE; PEERS];
        let (mut connects, mut disconnects) = (0u32, 0u32);
        let started = Instant::now();
        while started.elapsed() < CHURN {
            let i = rng.below(PEERS);
            if last_toggle[i].elapsed() < MIN_TOGGLE {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            last_toggle[i] = Instant::now();
            let peer = &peers[i];
            if connected(peer, &hub.peer_id) || connected(&hub, &peer.peer_id) {
                disconnects += 1;
                if rng.below(2) == 0 {
                    let _ = peer.handle.disconnect(hub.peer_id).await;
                } else {
                    let _ = hub.handle.disconnect(peer.peer_id).await;
                }
            } else {
                connects += 1;
                if rng.below(2) == 0 {
                    let _ = peer.handle.dial(hub.full_addr()).await;
                } else {
                    let _ = hub.handle.dial(peer.full_addr()).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.store(true, Ordering::Relaxed);
        sender.await.expect("the sender's checks");
        println!(
            "churn: {connects} connects, {disconnects} disconnects, {} messages sent",
            sent_ok.load(Ordering::Relaxed)
        );

        // Settled: every peer the hub's swarm is connected to has its final
        // status, and the hub's API and PQ table say exactly that.
        let expected = |peer: &PeerId| match index.get(peer) {
            Some(&i) if i < PQ_PEERS => "pq",
            Some(_) => "classical",
            None => "a peer that is not one of ours",
        };
        let deadline = Instant::now() + SETTLE;
        let api = hub.app.api_addr();
        let (swarm, listed) = loop {
            let swarm = swarm_peers(&hub).await;
            let body = common::http(api, "GET", "/api/peers", None, None)
                .await
                .json();
            let listed: BTreeMap<PeerId, String> = body["peers"]
                .as_array()
                .expect("peers")
                .iter()
                .map(|p| {
                    (
                        p["peerId"].as_str().expect("id").parse().expect("PeerId"),
                        p["security"].as_str().expect("security").to_owned(),
                    )
                })
                .collect();
            let table: BTreeSet<PeerId> = hub.pq.peers().into_iter().map(|p| p.peer).collect();
            let agrees = listed.keys().cloned().collect::<BTreeSet<_>>() == swarm
                && table == swarm
                && listed.iter().all(|(p, s)| s == expected(p));
            if agrees {
                break (swarm, listed);
            }
            assert!(
                Instant::now() < deadline,
                "after {SETTLE:?}: swarm {swarm:?}\napi {listed:?}\npq table {table:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        println!("settled: {} peers connected to the hub", swarm.len());
        for (peer, security) in &listed {
            let status = hub.pq.peer(peer).expect("in the table").status;
            match security.as_str() {
                "pq" => assert!(matches!(status, PqStatus::Pq(_)), "{peer}: {status:?}"),
                _ => assert!(
                    matches!(status, PqStatus::Classical(_)),
                    "{peer}: {status:?}"
                ),
            }
        }

        // Every message that arrived is labelled as its sender can speak.
        let messages = hub.pq.inbox().list(None, 0, usize::MAX);
        let mut by_security = [0usize; 2];
        for m in &messages {
            let i = *index.get(&m.from).expect("a message from one of ours");
            let body = String::from_utf8_lossy(&m.body);
            assert!(
                body.starts_with(&format!("{i}:")),
                "body {body} from peer {i}"
            );
            if i < PQ_PEERS {
                assert_eq!(
                    m.security.level(),
                    SecurityLevel::Pq,
                    "message {body} from PQ peer {i}"
                );
                by_security[0] += 1;
            } else {
                assert_eq!(
                    m.security.level(),
                    SecurityLevel::Classical,
                    "message {body} from classical peer {i}"
                );
                by_security[1] += 1;
            }
        }
        println!(
            "hub received {} PQ and {} classical messages",
            by_security[0], by_security[1]
        );
        assert!(
            by_security[0] > 0 && by_security[1] > 0,
            "messages flowed both ways: {by_security:?}"
        );
        assert!(connects > 20 && disconnects > 20, "it churned");
    })
    .await
    .expect("test timed out");
}

/// A burst of 500 connection events (300 stock peers connect, 200 of them
/// leave) changes no outcome: the PQ layer takes every connection event
/// from the swarm synchronously (`ConnectionObserver`), so there is no
/// channel to overflow and nothing to lose. Afterwards every remaining peer
/// is labelled classical (`no-pq-protocol`), the peers that left have no
/// state, and the API agrees with the swarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_500_connection_events_changes_no_outcome() {
    const JOIN: usize = 300;
    const LEAVE: usize = 200;
    /// Dials at once: below the hub's 128 pending inbound connections.
    const WAVE: usize = 60;
    tokio::time::timeout(TEST_TIMEOUT + SETTLE, async {
        let hub_dir = tempdir();
        let hub = start(
            hub_dir.path(),
            Opts {
                listener_open_delay: Duration::from_millis(300),
                max_connections_per_ip: 1000,
                ..Opts::default()
            },
        )
        .await;

        let mut peers = Vec::new();
        for wave in 0..JOIN.div_ceil(WAVE) {
            let joined = futures::future::join_all(
                (0..WAVE.min(JOIN - wave * WAVE)).map(|_| pqsupport::stock_peer(hub.full_addr())),
            )
            .await;
            for p in &joined {
                assert!(
                    p.wait_connected(Duration::from_secs(20)).await,
                    "stock peer {} of wave {wave} never connected",
                    p.peer_id
                );
            }
            peers.extend(joined);
        }
        // All labelled before 200 leave at once.
        let all_labelled = hub
            .until(SETTLE, |h| {
                h.pq.peers()
                    .iter()
                    .filter(|p| matches!(p.status, PqStatus::Classical(_)))
                    .count()
                    == JOIN
            })
            .await;
        assert!(all_labelled, "the hub labelled all {JOIN} peers classical");
        let gone: Vec<PeerId> = peers.drain(..LEAVE).map(|p| p.peer_id).collect();
        let stay: BTreeSet<PeerId> = peers.iter().map(|p| p.peer_id).collect();

        let deadline = Instant::now() + SETTLE;
        let api = hub.app.api_addr();
        loop {
            let swarm = swarm_peers(&hub).await;
            let table: BTreeMap<PeerId, PqStatus> = hub
                .pq
                .peers()
                .into_iter()
                .map(|p| (p.peer, p.status))
                .collect();
            let body = common::http(api, "GET", "/api/peers", None, None)
                .await
                .json();
            let listed: BTreeSet<PeerId> = body["peers"]
                .as_array()
                .expect("peers")
                .iter()
                .map(|p| p["peerId"].as_str().expect("id").parse().expect("PeerId"))
                .collect();
            let settled = swarm == stay
                && listed == stay
                && table.keys().cloned().collect::<BTreeSet<_>>() == stay
                && table.values().all(|s| {
                    *s == PqStatus::Classical(pqnode::pq::policy::ClassicalReason::NoPqProtocol)
                });
            if settled {
                break;
            }
            if Instant::now() >= deadline {
                let left: Vec<_> = gone.iter().filter(|p| table.contains_key(p)).collect();
                let odd: Vec<_> = table
                    .iter()
                    .filter(|(_, s)| !matches!(s, PqStatus::Classical(_)))
                    .collect();
                panic!(
                    "after {SETTLE:?}: swarm {} peers (want {}), API {}, table {}; \
                     gone but in the table: {left:?}; not classical: {odd:?}",
                    swarm.len(),
                    stay.len(),
                    listed.len(),
                    table.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let classical = hub.pq.metrics().classical_sessions.get();
        assert_eq!(
            classical, JOIN as u64,
            "each of the {JOIN} peers labelled classical once"
        );
        hub.stop().await;
    })
    .await
    .expect("test timed out");
}
