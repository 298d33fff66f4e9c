//! The bootstrap list through `App`: an unreachable entry is retried with
//! back-off while the next one is dialled, and the counters say so.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bootstrap_peer_does_not_stop_the_next() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = start_node(&test_config(da.path())).await;
        // A loopback port nothing listens on.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut config = test_config(db.path());
        config.bootstrap = vec![
            format!("/ip4/127.0.0.1/tcp/{dead}").parse().unwrap(),
            tcp_addr(&a),
        ];
        config.min_connected = 1;
        let b = start_node(&config).await;
        let a_id = a.peer_id();
        eventually(|| {
            let node = b.node().clone();
            async move {
                node.peers()
                    .await
                    .ok()
                    .filter(|p| p.iter().any(|i| i.peer_id == a_id))
            }
        })
        .await;
        let metrics = http(b.api_addr(), "GET", "/metrics", None, None).await.body;
        let line = |name: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name} in /metrics"))
                .to_owned()
        };
        assert!(
            line("pqnode_discovery_bootstrap_dials_total{outcome=\"failed\"}").ends_with(" 1"),
            "{metrics}"
        );
        assert!(
            line("pqnode_discovery_bootstrap_dials_total{outcome=\"connected\"}").ends_with(" 1")
        );
        assert!(line("pqnode_discovery_bootstrap_connected").ends_with(" 1"));
        // The DHT view counts it as a bootstrap node (the seed's stats).
        let stats = eventually(|| {
            let api = b.api_addr();
            async move {
                let j = http(api, "GET", "/api/dht/nodes", None, None).await.json();
                (j["stats"]["bootstrapNodes"] == 1).then_some(j["stats"].clone())
            }
        })
        .await;
        assert!(stats["totalNodes"].as_u64().unwrap() >= 1, "{stats}");
        assert!(stats["bucketsUsed"].as_u64().unwrap() >= 1, "{stats}");
        b.shutdown(Duration::from_secs(4)).await.unwrap();
        a.shutdown(Duration::from_secs(4)).await.unwrap();
    })
    .await
    .expect("test exceeded its time bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_node_keeps_no_messages_and_says_so() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (dr, dx) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut rc = test_config(dr.path());
        rc.role = pqnode::config::Role::Bootstrap;
        let r = start_pq_node(&rc).await;
        let mut xc = test_config(dx.path());
        xc.bootstrap = vec![tcp_addr(&r)];
        xc.min_connected = 1;
        let x = start_pq_node(&xc).await;
        x.pq()
            .wait_for_session(&r.peer_id(), Duration::from_secs(10))
            .await
            .expect("PQ session with the bootstrap node");

        // A message to it travels (PQ), is dropped there, counted, and its
        // receipt tells the sender so (rev 4): never reported delivered.
        let tx = x.state().token.expose().to_owned();
        let body = format!(r#"{{"to":"{}","body":"hello bootstrap"}}"#, r.peer_id());
        let sent = http(
            x.api_addr(),
            "POST",
            "/api/messages",
            Some(&tx),
            Some(&body),
        )
        .await;
        assert_eq!(sent.status, 403, "{}", sent.body);
        assert_eq!(sent.json()["error"]["code"], "refused_by_peer");
        let dropped = eventually(|| {
            let n = r.pq().metrics().inbox_dropped.get();
            async move { (n >= 1).then_some(n) }
        })
        .await;
        assert_eq!(dropped, 1);
        assert!(r.pq().inbox().list(None, 0, 10).is_empty());

        // Its API says why, for sending and for reading.
        let tr = r.state().token.expose().to_owned();
        let body = format!(r#"{{"to":"{}","body":"x"}}"#, x.peer_id());
        for (method, path, body) in [
            ("POST", "/api/messages", Some(body.as_str())),
            ("GET", "/api/messages", None),
        ] {
            let resp = http(r.api_addr(), method, path, Some(&tr), body).await;
            assert_eq!(resp.status, 409, "{method} {path}: {}", resp.body);
            assert_eq!(resp.json()["error"]["code"], "bootstrap_role");
            assert!(resp.body.contains("bootstrap node"));
        }
        x.shutdown(Duration::from_secs(4)).await.unwrap();
        r.shutdown(Duration::from_secs(4)).await.unwrap();
    })
    .await
    .expect("test exceeded its time bound");
}
