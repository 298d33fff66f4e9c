//! The HTTP API of a real node on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_has_the_documented_shape() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let node = start_node(&test_config(dir.path())).await;
        let api = node.api_addr();

        let r = http(api, "GET", "/api/health", None, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let j = r.json();
        // PQ is unavailable in this test node, so crypto and the whole are degraded.
        assert_eq!(j["status"], "degraded");
        assert_eq!(j["components"]["crypto"]["status"], "degraded");
        for c in ["p2p", "dht", "storage"] {
            assert_eq!(j["components"][c]["status"], "ok", "{c}: {j}");
            assert!(j["components"][c]["detail"].is_string());
        }
        let ts = j["timestamp"].as_str().unwrap();
        assert!(
            ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{ts}"
        );
        assert!(j["uptime"].is_u64());
        assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));

        assert_eq!(
            http(api, "GET", "/api/health/live", None, None)
                .await
                .status,
            200
        );
        let ready = http(api, "GET", "/api/health/ready", None, None).await;
        assert_eq!(
            ready.status, 200,
            "alone by design is ready: {}",
            ready.body
        );

        let c = http(api, "GET", "/api/crypto/status", None, None)
            .await
            .json();
        assert_eq!(c["initialized"], false);
        assert_eq!(c["mode"], "classical-fallback");
        assert_eq!(c["unavailableReason"], "not exercised by this test");
        assert_eq!(c["algorithm"], "Kyber1024-Dilithium5");
        assert_eq!(c["kyberKeySize"], 1568);
        assert_eq!(c["dilithiumKeySize"], 2592);
        assert_eq!(c["production"], false);
        assert_eq!(c["policy"], "preferred");
        assert_eq!(
            c["supportedSuites"],
            serde_json::json!(["kyber1024-dilithium5", "mlkem1024-mldsa87"])
        );
        assert_eq!(c["selfTest"]["ran"], false);
        assert_eq!(
            c["sessions"],
            serde_json::json!({"pq": 0, "classical": 0, "refused": 0})
        );
        assert_eq!(c["identity"]["peerId"], node.node().peer_id().to_string());

        let m = http(api, "GET", "/metrics", None, None).await;
        assert_eq!(m.status, 200);
        assert!(
            m.headers
                .to_ascii_lowercase()
                .contains("application/openmetrics-text")
        );
        assert!(
            m.body.contains("pqnode_libp2p_swarm"),
            "libp2p metrics included"
        );
        assert!(m.body.contains("pqnode_node_connected_peers"));
        assert!(m.body.trim_end().ends_with("# EOF"));

        // Without its data directory the node reports an error, with 503.
        std::fs::remove_dir_all(dir.path()).unwrap();
        let r = http(api, "GET", "/api/health", None, None).await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.json()["status"], "error");
        assert_eq!(r.json()["components"]["storage"]["status"], "error");

        node.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_requires_the_bearer_token() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = start_node(&test_config(da.path())).await;
        let b = start_node(&test_config(db.path())).await;
        let body = format!("{{\"address\": \"{}\"}}", tcp_addr(&b));

        let r = http(
            a.api_addr(),
            "POST",
            "/api/peers/connect",
            None,
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.json()["error"]["code"], "unauthorized");
        assert!(
            r.headers
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer")
        );
        let r = http(
            a.api_addr(),
            "POST",
            "/api/peers/connect",
            Some("wrong"),
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 401);

        // The token file was created at first start, private.
        let path = da.path().join(pqnode::api::auth::TOKEN_FILE);
        let token = std::fs::read_to_string(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let token = token.trim();
        let r = http(
            a.api_addr(),
            "POST",
            "/api/peers/connect",
            Some(token),
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["peerId"], b.node().peer_id().to_string());
        assert_eq!(a.node().peers().await.unwrap().len(), 1);

        let r = http(
            a.api_addr(),
            "POST",
            "/api/peers/connect",
            Some(token),
            Some("{\"address\": \"nonsense\"}"),
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.json()["error"]["code"], "bad_request");

        a.shutdown(Duration::from_secs(5)).await.unwrap();
        b.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .expect("test timed out");
}
