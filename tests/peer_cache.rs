//! The peer cache through `App`: a node that once joined finds its peer
//! again after a restart with no configured peers, and talks PQ to it.

mod common;

use std::time::Duration;

use common::*;
use pqnode_crypto::Suite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_reconnects_from_its_cache() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = start_pq_node(&test_config(da.path())).await;
        let mut with_peer = test_config(db.path());
        with_peer.peers = vec![tcp_addr(&a)];
        let b = start_pq_node(&with_peer).await;
        b.pq()
            .wait_for_session(&a.peer_id(), Duration::from_secs(10))
            .await
            .expect("first PQ session");

        // B's cache learns A: its addresses, and the suite of the session.
        let cache = b.peer_cache();
        let entry = eventually(|| {
            let cache = cache.clone();
            let a_id = a.peer_id();
            async move {
                cache
                    .get(&a_id)
                    .unwrap()
                    .filter(|e| e.suite.is_some() && !e.addrs.is_empty())
            }
        })
        .await;
        assert_eq!(entry.suite, Some(Suite::Kyber1024Dilithium5));
        assert!(entry.successes >= 1);
        drop(cache);
        b.shutdown(Duration::from_secs(5)).await.unwrap();

        // B again, with no configured peer: the cache brings A back.
        let started = tokio::time::Instant::now();
        let b = start_pq_node(&test_config(db.path())).await;
        let session = b
            .pq()
            .wait_for_session(&a.peer_id(), Duration::from_secs(10))
            .await
            .expect("PQ session from the cache within 10 s");
        assert_eq!(session.suite, Suite::Kyber1024Dilithium5);
        assert!(started.elapsed() < Duration::from_secs(10));
        let token = b.state().token.expose().to_owned();
        let body = format!(r#"{{"to":"{}","body":"back"}}"#, a.peer_id());
        let r = http(
            b.api_addr(),
            "POST",
            "/api/messages",
            Some(&token),
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["security"], "pq");

        // A peer whose addresses no longer answer has its failure counted.
        let a_id = a.peer_id();
        b.shutdown(Duration::from_secs(5)).await.unwrap();
        a.shutdown(Duration::from_secs(5)).await.unwrap();
        let b = start_pq_node(&test_config(db.path())).await;
        let cache = b.peer_cache();
        let failed = eventually(|| {
            let cache = cache.clone();
            async move { cache.get(&a_id).unwrap().filter(|e| e.failures >= 1) }
        })
        .await;
        assert!(failed.success_rate() < 1.0);
        drop(cache);
        b.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("test exceeded its time bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_to_a_known_unconnected_peer_dials_it_and_an_unknown_one_is_404() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = start_pq_node(&test_config(da.path())).await;
        let b = start_pq_node(&test_config(db.path())).await;
        b.node().dial(tcp_addr(&a)).await.unwrap();
        b.pq()
            .wait_for_session(&a.peer_id(), Duration::from_secs(10))
            .await
            .expect("PQ session");
        let cache = b.peer_cache();
        let a_id = a.peer_id();
        eventually(|| {
            let cache = cache.clone();
            async move { cache.get(&a_id).unwrap().filter(|e| !e.addrs.is_empty()) }
        })
        .await;
        drop(cache);
        // B lets A go; A is now known but not connected.
        b.node().disconnect(a_id).await.unwrap();
        eventually(|| {
            let node = b.node().clone();
            async move {
                node.peers()
                    .await
                    .ok()
                    .filter(|p| p.iter().all(|i| i.peer_id != a_id))
            }
        })
        .await;
        let token = b.state().token.expose().to_owned();
        let send = |to: String| {
            let token = token.clone();
            let api = b.api_addr();
            async move {
                let body = format!(r#"{{"to":"{to}","body":"by PeerId"}}"#);
                http(api, "POST", "/api/messages", Some(&token), Some(&body)).await
            }
        };
        // /api/peers lists it as cached.
        let peers = http(b.api_addr(), "GET", "/api/peers", None, None)
            .await
            .json();
        let cached = peers["cached"].as_array().expect("cached");
        let entry = cached
            .iter()
            .find(|c| c["peerId"] == a_id.to_string())
            .unwrap_or_else(|| panic!("A not in cached: {peers}"));
        assert_eq!(entry["suite"], "kyber1024-dilithium5");
        assert_eq!(entry["pinned"], true);
        assert_eq!(entry["successRate"], 1.0);
        assert!(
            entry["addresses"][0]
                .as_str()
                .unwrap()
                .starts_with("/ip4/127.0.0.1/tcp/")
        );
        let r = send(a_id.to_string()).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["security"], "pq");
        let got = eventually(|| {
            let inbox = a.pq().inbox().list(Some(b.peer_id()), 0, 10);
            async move { inbox.into_iter().next() }
        })
        .await;
        assert_eq!(got.body.as_slice(), b"by PeerId");

        // A PeerId nobody knows: 404, named.
        let stranger = libp2p::PeerId::random();
        let r = send(stranger.to_string()).await;
        assert_eq!(r.status, 404, "{}", r.body);
        assert_eq!(r.json()["error"]["code"], "unknown_peer");
        assert!(r.body.contains(&stranger.to_string()));

        // Known but gone: 502 after the bounded wait, the failure counted.
        a.shutdown(Duration::from_secs(5)).await.unwrap();
        eventually(|| {
            let node = b.node().clone();
            async move { node.peers().await.ok().filter(|p| p.is_empty()) }
        })
        .await;
        let r = send(a_id.to_string()).await;
        assert_eq!(r.status, 502, "{}", r.body);
        assert_eq!(r.json()["error"]["code"], "unreachable");
        assert!(b.peer_cache().get(&a_id).unwrap().unwrap().failures >= 1);

        // Issue 29, item 2: three anonymous peers that connected once (a
        // success rate of 1, seen last) used to rank above A, pinned and
        // PQ-proven with one failed dial; the cache ranks by evidence now.
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let mut anonymous = Vec::new();
        for d in &dirs {
            let n = start_node(&test_config(d.path())).await;
            n.node().dial(tcp_addr(&b)).await.unwrap();
            anonymous.push(n);
        }
        let cache = b.peer_cache();
        let ids: Vec<libp2p::PeerId> = anonymous.iter().map(|n| n.peer_id()).collect();
        eventually(|| {
            let (cache, ids) = (cache.clone(), ids.clone());
            async move {
                ids.iter()
                    .all(|p| cache.get(p).unwrap().is_some_and(|e| !e.addrs.is_empty()))
                    .then_some(())
            }
        })
        .await;
        drop(cache);
        let peers = http(b.api_addr(), "GET", "/api/peers", None, None)
            .await
            .json();
        let cached = peers["cached"].as_array().expect("cached");
        assert_eq!(cached[0]["peerId"], a_id.to_string(), "{peers}");
        assert_eq!(cached[0]["evidence"], "pinned", "{peers}");
        for n in anonymous {
            n.shutdown(Duration::from_secs(5)).await.unwrap();
        }
        b.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("test exceeded its time bound");
}
