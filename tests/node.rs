//! The swarm with real nodes on 127.0.0.1: connecting, Kademlia on
//! `/pqnode/kad/1.0.0`, per-IP limits.

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{SwarmEvent, dummy};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::sync::mpsc;

fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_connect_and_list_each_other() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = start_node(&test_config(da.path())).await;
        let mut cb = test_config(db.path());
        cb.peers = vec![tcp_addr(&a)];
        let b = start_node(&cb).await;

        for (api, other) in [
            (a.api_addr(), b.node().peer_id()),
            (b.api_addr(), a.node().peer_id()),
        ] {
            let peer = eventually(move || async move {
                let r = http(api, "GET", "/api/peers", None, None).await;
                assert_eq!(r.status, 200, "{}", r.body);
                let j = r.json();
                j["peers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| {
                        p["peerId"] == other.to_string()
                            && p["agentVersion"]
                                .as_str()
                                .is_some_and(|v| v.starts_with("pqnode/"))
                    })
                    .cloned()
            })
            .await;
            // These nodes run with PQ simulated unavailable: visibly classical.
            assert_eq!(peer["security"], "classical");
            assert_eq!(peer["reason"], "local-pq-unavailable");
            assert!(peer["connections"].as_u64().unwrap() >= 1);
            assert!(!peer["addresses"].as_array().unwrap().is_empty());
            assert!(
                peer["protocols"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p == "/ipfs/id/1.0.0")
            );
        }
        // The configured peer is in B's routing table.
        let r = http(b.api_addr(), "GET", "/api/dht/nodes", None, None).await;
        assert_eq!(r.status, 200);
        let j = r.json();
        assert_eq!(j["protocol"], "/pqnode/kad/1.0.0");
        assert!(
            j["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["peerId"] == a.node().peer_id().to_string())
        );

        b.shutdown(Duration::from_secs(5)).await.unwrap();
        a.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("test timed out");
}

/// A stock Kademlia client speaking `protocol`, knowing `target` at `addr`.
fn stock_kad_client(
    protocol: &'static str,
    target: PeerId,
    addr: Multiaddr,
) -> libp2p::Swarm<kad::Behaviour<MemoryStore>> {
    let mut swarm = stock_swarm(|k| {
        let id = k.public().to_peer_id();
        let mut kad = kad::Behaviour::with_config(
            id,
            MemoryStore::new(id),
            kad::Config::new(StreamProtocol::new(protocol)),
        );
        kad.set_mode(Some(kad::Mode::Client));
        kad
    });
    swarm.behaviour_mut().add_address(&target, addr);
    swarm
}

/// Runs one FIND_NODE query from a stock Kademlia client speaking
/// `protocol` to `target`; returns how many peers answered.
async fn stock_kad_query(protocol: &'static str, target: PeerId, addr: Multiaddr) -> u32 {
    let mut swarm = stock_kad_client(protocol, target, addr);
    swarm.behaviour_mut().get_closest_peers(PeerId::random());
    loop {
        if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
            result: kad::QueryResult::GetClosestPeers(_),
            stats,
            step,
            ..
        }) = swarm.select_next_some().await
            && step.last
        {
            return stats.num_successes();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_node_answers_kademlia_on_pqnode_protocol() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.role = pqnode::config::Role::Bootstrap;
        let node = start_node(&config).await;
        let addr = without_p2p(&tcp_addr(&node));
        let peer = node.node().peer_id();

        let answered = stock_kad_query("/pqnode/kad/1.0.0", peer, addr.clone()).await;
        assert_eq!(
            answered, 1,
            "the bootstrap node answers on /pqnode/kad/1.0.0"
        );
        let answered = stock_kad_query("/ipfs/kad/1.0.0", peer, addr).await;
        assert_eq!(answered, 0, "and not on the IPFS DHT's protocol");

        let r = http(node.api_addr(), "GET", "/api/dht/nodes", None, None).await;
        assert_eq!(r.json()["mode"], "server");
        node.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("test timed out");
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Connected,
    Failed(String),
}

/// A stock client that dials `addr` and keeps its connection open until
/// its task is aborted; reports the outcome.
fn spawn_client(addr: Multiaddr, tx: mpsc::Sender<Outcome>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut swarm = stock_swarm(|_| dummy::Behaviour);
        swarm.dial(addr).unwrap();
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => {
                    let _ = tx.send(Outcome::Connected).await;
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    let _ = tx.send(Outcome::Failed(error.to_string())).await;
                }
                _ => {}
            }
        }
    })
}

async fn wait_for_connected_peers(node: &pqnode::app::App, n: u32) {
    eventually(|| async {
        let stats = node.node().stats().await.unwrap();
        (stats.connected_peers == n).then_some(())
    })
    .await;
}

/// A full per-IP rate table still admits a connection from a new address:
/// it forgets the least recently seen IP and counts that (issue 17).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_per_ip_table_admits_a_new_address_and_counts_the_eviction() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.limits.max_tracked_ips = 2;
        let node = start_node(&config).await;
        let port = node
            .listen_addrs()
            .iter()
            .find_map(|a| {
                a.iter().find_map(|p| match p {
                    Protocol::Tcp(port) => Some(port),
                    _ => None,
                })
            })
            .expect("a TCP port");
        let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        // Four source addresses of 127/8 into a table of two.
        let mut held = Vec::new();
        for n in 2..=5u8 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket
                .bind(std::net::SocketAddr::from(([127, 0, 0, n], 0)))
                .unwrap();
            held.push(socket.connect(target).await.expect("accepted"));
        }
        let api = node.api_addr();
        let metrics = eventually(move || async move {
            let m = http(api, "GET", "/metrics", None, None).await.body;
            m.contains("pqnode_node_ip_limit_evicted_total 2")
                .then_some(m)
        })
        .await;
        assert!(
            !metrics.contains("pqnode_node_ip_limit_denied_total{"),
            "no address was denied"
        );
        drop(held);
        node.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_limit_denies_the_ninth_concurrent_connection() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let node = start_node(&test_config(dir.path())).await;
        let addr = tcp_addr(&node);
        let (tx, mut rx) = mpsc::channel(16);
        let mut clients = Vec::new();
        for i in 0..8 {
            clients.push(spawn_client(addr.clone(), tx.clone()));
            assert_eq!(rx.recv().await, Some(Outcome::Connected), "client {i}");
        }
        // A client sees its connection established before the node has
        // finished its side of the upgrade: wait for the node to count all 8,
        // or the later check for 7 could pass before any client has left.
        wait_for_connected_peers(&node, 8).await;
        let ninth = spawn_client(addr.clone(), tx.clone());
        let ninth_outcome = rx.recv().await;
        assert!(
            matches!(ninth_outcome, Some(Outcome::Failed(_))),
            "the 9th is denied: {ninth_outcome:?}"
        );
        ninth.abort();

        let r = http(node.api_addr(), "GET", "/metrics", None, None).await;
        assert!(
            r.body
                .contains("pqnode_node_ip_limit_denied_total{reason=\"concurrent\"} 1"),
            "{}",
            r.body
        );

        // Once one closes, another may connect.
        clients.remove(0).abort();
        wait_for_connected_peers(&node, 7).await;
        clients.push(spawn_client(addr.clone(), tx.clone()));
        let outcome = rx.recv().await;
        if outcome != Some(Outcome::Connected) {
            let r = http(node.api_addr(), "GET", "/metrics", None, None).await;
            panic!("after a slot freed: {outcome:?}\n{}", r.body);
        }

        for c in clients {
            c.abort();
        }
        node.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_peer_is_redialled_until_it_answers() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        // A's identity and port are known before A runs.
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let peer_a = identity_in(da.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr_a: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();

        let mut cb = test_config(db.path());
        cb.peers = vec![addr_a.clone().with(Protocol::P2p(peer_a))];
        let b = start_node(&cb).await;
        // The first dial fails: nobody listens yet.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(b.node().peers().await.unwrap().is_empty());
        let health = http(b.api_addr(), "GET", "/api/health/ready", None, None).await;
        assert_eq!(health.status, 503, "not alone by design, not connected");
        assert_eq!(health.json()["reason"], "no configured peer connected yet");

        let mut ca = test_config(da.path());
        ca.listen = vec![addr_a];
        let a = start_node(&ca).await;
        eventually(|| async {
            let peers = b.node().peers().await.unwrap();
            peers.iter().any(|p| p.peer_id == peer_a).then_some(())
        })
        .await;
        // Ready once the configured peer's PQ status has settled: these
        // nodes run without PQ, so it is `classical`.
        let ready = eventually(|| async {
            let health = http(b.api_addr(), "GET", "/api/health/ready", None, None).await;
            (health.status == 200).then_some(health)
        })
        .await;
        let reason = ready.json()["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            reason.starts_with(&format!("configured peer {peer_a}: classical")),
            "{reason}"
        );

        a.shutdown(Duration::from_secs(5)).await.unwrap();
        b.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_connect_over_quic() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = start_node(&test_config(da.path())).await;
        let b = start_node(&test_config(db.path())).await;
        let quic = a
            .listen_addrs()
            .iter()
            .find(|addr| addr.iter().any(|p| matches!(p, Protocol::QuicV1)))
            .unwrap()
            .clone()
            .with(Protocol::P2p(a.node().peer_id()));
        let outcome = b.node().dial(quic).await.unwrap();
        assert_eq!(outcome.peer_id, a.node().peer_id());
        assert!(!outcome.already_connected);
        let peers = b.node().peers().await.unwrap();
        assert_eq!(peers.len(), 1);
        assert!(peers[0].addresses[0].to_string().contains("/quic-v1"));
        // Dialling a connected peer again is reported, not repeated.
        let again = b.node().dial(tcp_addr(&a)).await.unwrap();
        assert!(again.already_connected);

        a.shutdown(Duration::from_secs(5)).await.unwrap();
        b.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("test timed out");
}

/// Stores `record` on `target` from a stock Kademlia client; returns whether
/// the client saw the PUT succeed.
async fn stock_kad_put(target: PeerId, addr: Multiaddr, record: kad::Record) -> bool {
    let mut swarm = stock_kad_client("/pqnode/kad/1.0.0", target, addr);
    swarm
        .behaviour_mut()
        .put_record(record, kad::Quorum::One)
        .unwrap();
    loop {
        if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
            result: kad::QueryResult::PutRecord(result),
            step,
            ..
        }) = swarm.select_next_some().await
            && step.last
        {
            return result.is_ok();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dht_records_are_validated_before_they_are_stored() {
    use pqnode_crypto::Suite;
    use pqnode_keys::record::{RecordParams, build, dht_key};

    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.role = pqnode::config::Role::Bootstrap;
        let node = start_node(&config).await;
        let addr = without_p2p(&tcp_addr(&node));
        let peer = node.node().peer_id();
        let records = || async {
            let r = http(node.api_addr(), "GET", "/api/dht/nodes", None, None).await;
            r.json()["records"].as_u64().unwrap()
        };

        // A signed PQ record, valid for an hour.
        let suite = Suite::Mlkem1024Mldsa87;
        let identity = libp2p::identity::Keypair::generate_ed25519();
        let owner = identity.public().to_peer_id();
        let signing = pqnode_crypto::sign::SigningKey::generate(suite).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let signed = build(
            &identity,
            &signing,
            None,
            &RecordParams {
                seq: 1,
                issued_at: now,
                expires_at: now + 3600,
                addrs: &[],
            },
        )
        .unwrap();
        let value = signed.envelope_bytes().to_vec();

        // Forged: the same record under another peer's key; a flipped bit;
        // a malformed key; a key outside /pqnode/record/ (rev 3: refused).
        let other = PeerId::random();
        let mut flipped = value.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let forged = [
            kad::Record::new(dht_key(suite, &other), value.clone()),
            kad::Record::new(dht_key(suite, &owner), flipped),
            kad::Record::new(b"/pqnode/record/1/x".to_vec(), value.clone()),
            kad::Record::new(b"/ipfs/anything".to_vec(), value.clone()),
        ];
        for record in forged {
            stock_kad_put(peer, addr.clone(), record).await;
        }
        let api = node.api_addr();
        eventually(move || async move {
            let m = http(api, "GET", "/metrics", None, None).await;
            m.body
                .contains("pqnode_node_dht_records_rejected_total 4")
                .then_some(())
        })
        .await;
        assert_eq!(records().await, 0, "nothing forged was stored");

        let ok = stock_kad_put(
            peer,
            addr.clone(),
            kad::Record::new(dht_key(suite, &owner), value),
        )
        .await;
        assert!(ok);
        eventually(|| async { (records().await == 1).then_some(()) }).await;

        node.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("test timed out");
}

/// A value byte-identical to the stored one is stored again without being
/// verified again, but only until the record's own signed expiry: after it,
/// re-sending the same bytes removes the record instead of keeping it alive
/// (issue 17, §9 rev 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identical_dht_value_is_not_verified_again_nor_kept_past_its_expiry() {
    use pqnode_crypto::Suite;
    use pqnode_keys::record::{RecordParams, build, dht_key};

    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.role = pqnode::config::Role::Bootstrap;
        let node = start_node(&config).await;
        let addr = without_p2p(&tcp_addr(&node));
        let peer = node.node().peer_id();
        let api = node.api_addr();
        let records = || async {
            let r = http(api, "GET", "/api/dht/nodes", None, None).await;
            r.json()["records"].as_u64().unwrap()
        };
        let metrics_show = |line: &'static str| async move {
            eventually(move || async move {
                let m = http(api, "GET", "/metrics", None, None).await;
                m.body.contains(line).then_some(())
            })
            .await
        };

        // A signed record valid for 3 more seconds.
        let suite = Suite::Mlkem1024Mldsa87;
        let identity = libp2p::identity::Keypair::generate_ed25519();
        let owner = identity.public().to_peer_id();
        let signing = pqnode_crypto::sign::SigningKey::generate(suite).unwrap();
        let unix_now = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        let now = unix_now();
        let expires_at = now + 3;
        let value = build(
            &identity,
            &signing,
            None,
            &RecordParams {
                seq: 1,
                issued_at: now,
                expires_at,
                addrs: &[],
            },
        )
        .unwrap()
        .envelope_bytes()
        .to_vec();
        let record = kad::Record::new(dht_key(suite, &owner), value);

        assert!(stock_kad_put(peer, addr.clone(), record.clone()).await);
        metrics_show("pqnode_node_dht_records_stored_total 1").await;
        assert!(stock_kad_put(peer, addr.clone(), record.clone()).await);
        metrics_show("pqnode_node_dht_records_identical_total 1").await;
        metrics_show("pqnode_node_dht_records_stored_total 2").await;
        assert_eq!(records().await, 1);

        // Past its signed expiry, the same bytes again: removed.
        eventually(|| async { (unix_now() > expires_at).then_some(()) }).await;
        stock_kad_put(peer, addr.clone(), record).await;
        metrics_show("pqnode_node_dht_records_rejected_total 1").await;
        assert_eq!(records().await, 0, "the expired record is gone");
        let m = http(api, "GET", "/metrics", None, None).await.body;
        assert!(
            m.contains("pqnode_node_dht_records_identical_total 1"),
            "{m}"
        );

        node.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("test timed out");
}

/// Ten connections from ten addresses of one IPv6 /64 hit the per-IP limit
/// of eight, while an address of another /64 is still admitted (issue 17).
///
/// IPv6 has one loopback address, so the test needs addresses of its own:
/// it runs itself again inside a network namespace it creates
/// (`unshare --net`; as a user namespace's root when not run as root), puts
/// `fd00:64::1`–`fd00:64::10` and `fd00:65::1` on that namespace's loopback
/// interface with `ip`, and talks only there.
#[test]
fn ten_connections_from_one_ipv6_64_hit_the_per_ip_limit() {
    if !in_own_netns(
        "ten_connections_from_one_ipv6_64_hit_the_per_ip_limit",
        TEST_TIMEOUT,
    ) {
        return;
    }
    // Inside the namespace: loopback up, the test's addresses on it.
    ip(&["link", "set", "lo", "up"]);
    let same_64: Vec<std::net::Ipv6Addr> = (1..=10u16)
        .map(|n| std::net::Ipv6Addr::new(0xfd00, 0x64, 0, 0, 0, 0, 0, n))
        .collect();
    let other_64 = std::net::Ipv6Addr::new(0xfd00, 0x65, 0, 0, 0, 0, 0, 1);
    for a in same_64.iter().chain([&other_64]) {
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{a}/128"),
            "dev",
            "lo",
            "nodad",
        ]);
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(TEST_TIMEOUT, async {
            let dir = tempfile::tempdir().unwrap();
            let mut config = test_config(dir.path());
            config.listen = vec!["/ip6/::1/tcp/0".parse().unwrap()];
            config.limits.max_connections_per_ip = 8;
            config.limits.max_new_connections_per_ip_per_minute = 1000;
            let node = start_node(&config).await;
            let port = node
                .listen_addrs()
                .iter()
                .find_map(|a| {
                    a.iter().find_map(|p| match p {
                        Protocol::Tcp(port) => Some(port),
                        _ => None,
                    })
                })
                .expect("a TCP port");
            let target = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));

            // Each client opens libp2p's first negotiation; an admitted
            // connection is answered, a denied one is closed unanswered.
            let mut held = Vec::new();
            let mut answered = Vec::new();
            for source in same_64.iter().chain([&other_64]) {
                let (stream, admitted) = connect_from(*source, target).await;
                held.push(stream);
                answered.push(admitted);
            }
            assert_eq!(
                answered,
                [
                    true, true, true, true, true, true, true, true, false, false, true
                ],
                "eight of fd00:64::/64 admitted, its 9th and 10th address denied, \
                 fd00:65::1 admitted"
            );
            let r = http(node.api_addr(), "GET", "/metrics", None, None).await;
            assert!(
                r.body
                    .contains("pqnode_node_ip_limit_denied_total{reason=\"concurrent\"} 2"),
                "{}",
                r.body
            );
            drop(held);
            node.shutdown(Duration::from_secs(5)).await.unwrap();
        })
        .await
        .expect("test timed out")
    });
}

/// A TCP connection from `source` to `target` that sends multistream-select's
/// header; whether the node answered (admitted) or closed it (denied).
async fn connect_from(
    source: std::net::Ipv6Addr,
    target: std::net::SocketAddr,
) -> (tokio::net::TcpStream, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v6().unwrap();
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .unwrap_or_else(|e| panic!("bind {source}: {e}"));
    let mut stream = socket
        .connect(target)
        .await
        .unwrap_or_else(|e| panic!("connect from {source}: {e}"));
    stream
        .write_all(b"\x13/multistream/1.0.0\n")
        .await
        .unwrap_or_else(|e| panic!("write from {source}: {e}"));
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut byte))
        .await
        .unwrap_or_else(|_| panic!("the node neither answered nor closed {source}"));
    (stream, matches!(read, Ok(n) if n > 0))
}

/// The TCP port of a `/ip4/…/tcp/PORT…` address.
fn tcp_port(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a TCP address")
}

/// A node dials from its listen port (port reuse, for hole punching). A
/// connection between that port and the remote's that already exists (a
/// simultaneous dial, a socket left from a restart) does not make the dial
/// fail: it goes out from a new port. Here a plain socket holds the same
/// two ports. (Linux refuses that socket with EADDRNOTAVAIL, which
/// libp2p-tcp handles; for EADDRINUSE, which it does not, the node redials
/// from a new port itself — see `reused_port_in_use`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_whose_reused_port_is_taken_goes_out_from_a_new_port() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = start_node(&test_config(da.path())).await;
        let b = start_node(&test_config(db.path())).await;
        let (a_addr, b_addr) = (tcp_addr(&a), tcp_addr(&b));
        // The connection B's listen port would make to A, held by a plain
        // socket (port reuse lets it share B's port).
        let holder = tokio::net::TcpSocket::new_v4().expect("socket");
        holder.set_reuseaddr(true).expect("reuseaddr");
        holder.set_reuseport(true).expect("reuseport");
        holder
            .bind(([127, 0, 0, 1], tcp_port(&b_addr)).into())
            .expect("bind to B's listen port");
        let _held = holder
            .connect(([127, 0, 0, 1], tcp_port(&a_addr)).into())
            .await
            .expect("connect to A");

        let dialled = b.node().dial(a_addr).await;
        assert!(dialled.is_ok(), "{dialled:?}");
        assert!(
            b.node()
                .peers()
                .await
                .expect("peers")
                .iter()
                .any(|p| p.peer_id == a.node().peer_id()),
            "B is connected to A"
        );
        let _ = a.shutdown(Duration::from_secs(4)).await;
        let _ = b.shutdown(Duration::from_secs(4)).await;
    })
    .await
    .expect("test timed out");
}
