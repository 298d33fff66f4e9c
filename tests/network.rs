//! Multi-node networks on 127.0.0.1, every node started through `App`:
//! a bootstrap node and ten nodes learning each other's PQ records (DHT
//! and gossip) and reaching each other by PeerId alone; a private node
//! whose addresses appear nowhere; a network that loses its bootstrap.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pqnode::app::App;
use pqnode::config::{Config, Role};

/// A node of a test network: loopback addresses count as reachable
/// (`publish_private_addrs`, as on a LAN), bootstrap through `boot`.
fn member_config(dir: &std::path::Path, boot: Option<&App>) -> Config {
    let mut c = test_config(dir);
    c.publish_private_addrs = true;
    c.min_connected = 1;
    // Every node is 127.0.0.1: the per-IP limits (8 concurrent inbound,
    // 30 a minute) are meant for distinct hosts.
    c.limits.max_connections_per_ip = 64;
    c.limits.max_new_connections_per_ip_per_minute = 600;
    if let Some(b) = boot {
        c.bootstrap = vec![tcp_addr(b)];
    }
    c
}

async fn start_bootstrap(dir: &std::path::Path) -> App {
    let mut c = member_config(dir, None);
    c.role = Role::Bootstrap;
    start_pq_node(&c).await
}

async fn send(from: &App, to: libp2p::PeerId, text: &str) -> Response {
    let token = from.state().token.expose().to_owned();
    let body = serde_json::json!({ "to": to.to_base58(), "body": text }).to_string();
    http(
        from.api_addr(),
        "POST",
        "/api/messages",
        Some(&token),
        Some(&body),
    )
    .await
}

/// The ports a node listens on: none of them may show up anywhere when it
/// is private.
fn ports(app: &App) -> Vec<String> {
    app.listen_addrs()
        .iter()
        .filter_map(|a| {
            a.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::Tcp(port) => Some(format!("/tcp/{port}")),
                libp2p::multiaddr::Protocol::Udp(port) => Some(format!("/udp/{port}")),
                _ => None,
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_learn_each_others_records_and_reach_each_other_by_peer_id() {
    tokio::time::timeout(Duration::from_secs(150), async {
        let dirs: Vec<tempfile::TempDir> = (0..11).map(|_| tempfile::tempdir().unwrap()).collect();
        let boot = start_bootstrap(dirs[0].path()).await;
        let t0 = Instant::now();
        let mut nodes = Vec::new();
        for d in &dirs[1..] {
            nodes.push(start_pq_node(&member_config(d.path(), Some(&boot))).await);
        }
        let started = t0.elapsed();
        let ids: Vec<libp2p::PeerId> = nodes.iter().map(|n| n.peer_id()).collect();
        // Every node has a verified record of every other one, learned by
        // itself (gossip, or the DHT sweep over its routing table).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let missing: usize = nodes
                .iter()
                .map(|n| {
                    ids.iter()
                        .filter(|id| **id != n.peer_id() && !n.state().records.contains(id))
                        .count()
                })
                .sum();
            if missing == 0 {
                break;
            }
            if Instant::now() >= deadline {
                for n in &nodes {
                    let rt = n.node().routing_table().await.unwrap();
                    let d = n.state().records.metrics();
                    eprintln!(
                        "node {}: book {} routing {} mode {} gossip acc {} pub {} gets found {} nf {}",
                        n.peer_id(),
                        n.state().records.len(),
                        rt.nodes.len(),
                        rt.mode,
                        d.gossip_count("accepted"),
                        d.gossip_published.get(),
                        d.get_count("found"),
                        d.get_count("not_found"),
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "after 60 s, {missing} of 90 records are still unknown"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let known = t0.elapsed();
        eprintln!(
            "10 nodes started in {:.1} s; all records known {:.1} s after the first start",
            started.as_secs_f64(),
            known.as_secs_f64()
        );
        let gossip: u64 = nodes
            .iter()
            .map(|n| n.state().records.metrics().gossip_count("accepted"))
            .sum();
        assert!(gossip > 0, "gossip carried records");
        // The API says the same: a record, its suite and addresses.
        let j = http(
            nodes[0].api_addr(),
            "GET",
            &format!("/api/peers/{}", ids[9]),
            None,
            None,
        )
        .await
        .json();
        // Each node publishes one record per enabled suite and the book keeps
        // the newest one per peer: either suite may be the one shown.
        let suite = j["record"]["suite"].as_str().unwrap_or_default();
        assert!(
            pqnode_crypto::Suite::DEFAULT_PREFERENCE
                .iter()
                .any(|s| s.name() == suite),
            "the record's suite is one node 9 enabled (both, by default): {j}"
        );
        assert!(
            j["record"]["addresses"][0]
                .as_str()
                .unwrap()
                .starts_with("/ip4/127.0.0.1/"),
            "{j}"
        );
        // A message by PeerId alone to a peer it never connected to: PQ.
        for (i, from) in nodes.iter().enumerate() {
            let to = ids[(i + 3) % ids.len()];
            let r = send(from, to, "by PeerId alone").await;
            assert_eq!(r.status, 200, "node {i} -> {to}: {}", r.body);
            assert_eq!(r.json()["security"], "pq", "{}", r.body);
        }
        for n in nodes {
            n.shutdown(Duration::from_secs(5)).await.unwrap();
        }
        boot.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("test exceeded its time bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_nodes_addresses_appear_nowhere() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let (db, dn, dp) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let boot = start_bootstrap(db.path()).await;
        let n = start_pq_node(&member_config(dn.path(), Some(&boot))).await;
        let mut pc = member_config(dp.path(), Some(&boot));
        pc.private = true;
        let p = start_pq_node(&pc).await;
        let p_id = p.peer_id();
        // P reaches N by PeerId through the DHT: a PQ session.
        let r = eventually(|| async {
            let r = send(&p, n.peer_id(), "from a private node").await;
            (r.status == 200).then_some(r)
        })
        .await;
        assert_eq!(r.json()["security"], "pq");
        // P's own record in the DHT carries no address.
        let j = eventually(|| async {
            let j = http(
                n.api_addr(),
                "GET",
                &format!("/api/peers/{p_id}"),
                None,
                None,
            )
            .await
            .json();
            (!j["record"].is_null()).then_some(j)
        })
        .await;
        assert_eq!(j["record"]["addresses"], serde_json::json!([]), "{j}");
        // Give gossip, identify and the DHT time to spread whatever they would.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let secret = ports(&p);
        for (who, app) in [("bootstrap", &boot), ("node", &n)] {
            for path in [
                "/api/peers".to_owned(),
                "/api/dht/nodes".to_owned(),
                format!("/api/peers/{p_id}"),
            ] {
                let body = http(app.api_addr(), "GET", &path, None, None).await.body;
                for port in &secret {
                    assert!(
                        !body.contains(&format!("127.0.0.1{port}")),
                        "{who} {path} shows the private node's {port}: {body}"
                    );
                }
            }
            let entry = app.peer_cache().get(&p_id).unwrap();
            assert!(entry.is_none(), "{who} cached the private node: {entry:?}");
            assert!(
                app.state()
                    .records
                    .get(&p_id)
                    .is_none_or(|r| r.addrs.is_empty())
            );
        }
        // And P announced nothing on gossip.
        assert_eq!(p.state().records.metrics().gossip_published.get(), 0);
        for app in [p, n, boot] {
            app.shutdown(Duration::from_secs(5)).await.unwrap();
        }
    })
    .await
    .expect("test exceeded its time bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_losing_its_bootstrap_a_restarted_node_reconnects_from_its_cache() {
    tokio::time::timeout(Duration::from_secs(90), async {
        let (db, da, dc) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let boot = start_bootstrap(db.path()).await;
        let a_config = member_config(da.path(), Some(&boot));
        let a = start_pq_node(&a_config).await;
        let c = start_pq_node(&member_config(dc.path(), Some(&boot))).await;
        let c_id = c.peer_id();
        // The network forms: A learns C and talks to it (PQ).
        let r = eventually(|| async {
            let r = send(&a, c_id, "before").await;
            (r.status == 200).then_some(r)
        })
        .await;
        assert_eq!(r.json()["security"], "pq");
        let cache = a.peer_cache();
        eventually(|| {
            let cache = cache.clone();
            async move { cache.get(&c_id).unwrap().filter(|e| !e.addrs.is_empty()) }
        })
        .await;
        drop(cache);
        boot.shutdown(Duration::from_secs(5)).await.unwrap();
        a.shutdown(Duration::from_secs(5)).await.unwrap();
        // A comes back; its bootstrap is gone, its cache is not.
        let a = start_pq_node(&a_config).await;
        let t = Instant::now();
        eventually(|| async { a.pq().session(&c_id).map(|_| ()) }).await;
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "reconnected after {:?}",
            t.elapsed()
        );
        let r = send(&a, c_id, "after").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["security"], "pq");
        let peers = http(a.api_addr(), "GET", "/api/peers", None, None)
            .await
            .json();
        let c_view = peers["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["peerId"] == c_id.to_string())
            .cloned()
            .unwrap_or_else(|| panic!("C not listed: {peers}"));
        assert_eq!(c_view["source"], "cache", "{c_view}");
        a.shutdown(Duration::from_secs(5)).await.unwrap();
        c.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("test exceeded its time bound");
}

mod hostile {
    use libp2p::kad::store::MemoryStore;
    use libp2p::swarm::NetworkBehaviour;
    use libp2p::{gossipsub, kad};

    #[derive(NetworkBehaviour)]
    pub struct Hostile {
        pub kad: kad::Behaviour<MemoryStore>,
        pub gossipsub: gossipsub::Behaviour,
    }
}

/// A hostile stock libp2p peer speaks our DHT and gossip protocols and
/// tries to plant a forged record of B (B's real record, one bit flipped)
/// in A's DHT store and on gossip. Neither is stored or propagated, and its
/// gossip score on A drops below zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_records_are_neither_stored_nor_propagated() {
    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    use libp2p::{gossipsub, kad};
    tokio::time::timeout(Duration::from_secs(90), async {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = start_pq_node(&member_config(da.path(), None)).await;
        let b = start_pq_node(&member_config(db.path(), Some(&a))).await;
        let (a_id, b_id) = (a.peer_id(), b.peer_id());
        // The network formed: A and B hold each other's records.
        eventually(|| async {
            (a.state().records.contains(&b_id) && b.state().records.contains(&a_id)).then_some(())
        })
        .await;
        let (suite, real) = b.pq().own_records().into_iter().next().expect("a record");
        let mut forged = real.clone();
        let mid = forged.len() / 2;
        forged[mid] ^= 1;
        let key = pqnode_keys::record::dht_key(suite, &b_id);
        let b_received_before = b.state().records.metrics().gossip_count("accepted")
            + b.state().records.metrics().gossip_count("rejected");

        let mut h = stock_swarm(|k| {
            let id = k.public().to_peer_id();
            let mut kad = kad::Behaviour::with_config(
                id,
                libp2p::kad::store::MemoryStore::new(id),
                kad::Config::new(pqnode::node::behaviour::KAD_PROTOCOL),
            );
            kad.set_mode(Some(kad::Mode::Server));
            let mut gossipsub = gossipsub::Behaviour::new(
                gossipsub::MessageAuthenticity::Signed(k.clone()),
                gossipsub::Config::default(),
            )
            .unwrap();
            gossipsub
                .subscribe(&pqnode::discovery::gossip::topic())
                .unwrap();
            hostile::Hostile { kad, gossipsub }
        });
        let h_id = *h.local_peer_id();
        let a_tcp = tcp_addr(&a);
        let bare: libp2p::Multiaddr = a_tcp
            .iter()
            .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
            .collect();
        h.behaviour_mut().kad.add_address(&a_id, bare);
        h.dial(a_tcp).unwrap();
        // Wait until A shares the topic with us, then attack both ways.
        loop {
            if let SwarmEvent::Behaviour(hostile::HostileEvent::Gossipsub(
                gossipsub::Event::Subscribed { peer_id, .. },
            )) = h.select_next_some().await
                && peer_id == a_id
            {
                break;
            }
        }
        let mut record = kad::Record::new(kad::RecordKey::new(&key), forged.clone());
        record.publisher = Some(h_id);
        h.behaviour_mut()
            .kad
            .put_record(record, kad::Quorum::One)
            .unwrap();
        h.behaviour_mut()
            .gossipsub
            .publish(pqnode::discovery::gossip::topic(), forged.clone())
            .unwrap();
        let driver = tokio::spawn(async move {
            loop {
                h.select_next_some().await;
            }
        });
        // A rejects the gossip message and the hostile peer's score drops.
        let score = eventually(|| async {
            let s = a.node().gossip(Some(h_id)).await.ok()?.score?;
            (s < 0.0).then_some(s)
        })
        .await;
        assert!(score < 0.0);
        assert!(a.state().records.metrics().gossip_count("rejected") >= 1);
        // The DHT PUT was rejected: A serves B's real record, never the forged one.
        eventually(|| async {
            let m = http(a.api_addr(), "GET", "/metrics", None, None).await.body;
            m.lines()
                .find(|l| l.starts_with("pqnode_node_dht_records_rejected_total"))
                .filter(|l| !l.ends_with(" 0"))
                .map(|_| ())
        })
        .await;
        let values = a.node().get_record(key.clone()).await.unwrap();
        assert!(!values.contains(&forged), "A stored the forged record");
        // Nothing reached B: the forged message was not propagated, and
        // B's record of B is B's.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let b_received_after = b.state().records.metrics().gossip_count("accepted")
            + b.state().records.metrics().gossip_count("rejected");
        assert_eq!(
            b_received_before, b_received_after,
            "A propagated the forged record"
        );
        assert!(a.state().records.get(&h_id).is_none());
        driver.abort();
        b.shutdown(Duration::from_secs(5)).await.unwrap();
        a.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("test exceeded its time bound");
}
