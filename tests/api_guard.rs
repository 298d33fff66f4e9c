//! The API's guards on a real node on 127.0.0.1: the `Host` check (DNS
//! rebinding), the remote mode (token on every endpoint), the token file's
//! rules, and the bound on requests waiting for the swarm.

mod common;

use std::time::Duration;

use common::*;
use pqnode::app::{App, AppError};

fn get(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_host_gets_421() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let node = start_node(&test_config(dir.path())).await;
        let api = node.api_addr();
        let port = api.port();

        // What a DNS-rebinding page makes a browser send.
        for host in [
            format!("attacker.example:{port}"),
            "attacker.example".to_owned(),
            format!("localhost.attacker.example:{port}"),
            format!("192.0.2.1:{port}"),
        ] {
            for path in [
                "/api/health",
                "/api/peers",
                "/api/crypto/status",
                "/metrics",
            ] {
                let r = http_raw(api, &get(path, &host)).await;
                assert_eq!(r.status, 421, "{host} {path}: {}", r.body);
                assert_eq!(r.json()["error"]["code"], "misdirected_host");
            }
        }
        // A missing Host is refused too.
        let r = http_raw(api, "GET /api/health HTTP/1.0\r\nConnection: close\r\n\r\n").await;
        assert_eq!(r.status, 421, "{}", r.body);

        // The bind address, localhost and loopback addresses are served.
        for host in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            "localhost".to_owned(),
            format!("127.0.0.2:{port}"),
            format!("[::1]:{port}"),
        ] {
            let r = http_raw(api, &get("/api/health", &host)).await;
            assert_eq!(r.status, 200, "{host}: {}", r.body);
        }
        node.shutdown(Duration::from_secs(4)).await.unwrap();
    })
    .await
    .expect("test exceeded its time bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_mode_needs_the_token_on_every_endpoint() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.api_allow_remote = true;
        config.api_allowed_hosts = vec!["node.example.org".to_owned()];
        let node = start_node(&config).await;
        let api = node.api_addr();
        let token = node.state().token.expose().to_owned();
        // The configured public name is accepted; any other name still gets
        // 421, the token notwithstanding (DNS rebinding).
        for (host, status) in [("node.example.org", 200), ("attacker.example", 421)] {
            let r = http_raw(
                api,
                &format!(
                    "GET /api/health HTTP/1.1\r\nHost: {host}:{}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
                    api.port()
                ),
            )
            .await;
            assert_eq!(r.status, status, "Host {host}: {}", r.body);
        }
        for path in [
            "/api/health",
            "/api/health/live",
            "/api/crypto/status",
            "/api/peers",
            "/api/dht/nodes",
            "/api/pins",
            "/metrics",
        ] {
            let r = http(api, "GET", path, None, None).await;
            assert_eq!(r.status, 401, "{path} without the token: {}", r.body);
            assert_eq!(r.json()["error"]["code"], "unauthorized");
            let r = http(api, "GET", path, Some("0".repeat(64).as_str()), None).await;
            assert_eq!(r.status, 401, "{path} with a wrong token");
            let r = http(api, "GET", path, Some(&token), None).await;
            assert_eq!(r.status, 200, "{path} with the token: {}", r.body);
        }
        node.shutdown(Duration::from_secs(4)).await.unwrap();

        // Without the flag a non-loopback address does not start.
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        config.api = "0.0.0.0:0".parse().unwrap();
        match App::start(&config, no_pq()).await {
            Err(e @ AppError::ApiNotLoopback(_)) => {
                assert!(e.to_string().contains("--api-allow-remote"), "{e}")
            }
            other => panic!("expected ApiNotLoopback, got {other:?}"),
        }
    })
    .await
    .expect("test exceeded its time bound");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_others_can_read_stops_the_start() {
    use std::os::unix::fs::PermissionsExt;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(dir.path());
        let node = start_node(&config).await;
        node.shutdown(Duration::from_secs(4)).await.unwrap();
        let path = dir.path().join(pqnode::api::auth::TOKEN_FILE);
        let before = std::fs::read(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = App::start(&config, no_pq()).await.unwrap_err();
        assert!(matches!(err, AppError::Token { .. }), "{err:?}");
        assert!(err.to_string().contains("api-token"), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "left untouched");
    })
    .await
    .expect("test exceeded its time bound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_cannot_fill_the_node_command_channel() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let node = start_node(&test_config(dir.path())).await;
        let state = node.state().clone();
        // Requests whose answer never comes hold their permits...
        let mut stuck = Vec::new();
        for _ in 0..pqnode::api::MAX_NODE_QUERIES {
            let s = state.clone();
            stuck.push(tokio::spawn(async move {
                s.node_query(|_| std::future::pending::<Result<(), _>>())
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // ...so the next one is answered busy instead of queueing on the
        // node, over HTTP too.
        let r = state
            .node_query(|n| async move { n.peers().await })
            .await
            .unwrap_err();
        assert!(matches!(r, pqnode::node::NodeError::Busy), "{r:?}");
        let r = http(node.api_addr(), "GET", "/api/peers", None, None).await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.json()["error"]["code"], "busy");
        assert!(
            r.headers
                .to_ascii_lowercase()
                .contains("\r\nretry-after: 1"),
            "{}",
            r.headers
        );
        // Writes have permits of their own: an authenticated dial goes
        // through while every read permit is held.
        let other_dir = tempfile::tempdir().unwrap();
        let other = start_node(&test_config(other_dir.path())).await;
        let token = node.state().token.expose().to_owned();
        let body = format!(r#"{{"address":"{}"}}"#, tcp_addr(&other));
        let r = http(
            node.api_addr(),
            "POST",
            "/api/peers/connect",
            Some(&token),
            Some(&body),
        )
        .await;
        assert_eq!(r.status, 200, "a dial while reads are stuck: {}", r.body);
        other.shutdown(Duration::from_secs(4)).await.unwrap();
        // Health still answers (p2p reported as not answering).
        let r = http(node.api_addr(), "GET", "/api/health", None, None).await;
        assert!(r.status == 200 || r.status == 503, "{}", r.body);
        // The node's own users are unaffected: the channel has room.
        for _ in 0..300 {
            node.node()
                .peers()
                .await
                .expect("the node answers its own users");
        }
        for t in &stuck {
            t.abort();
        }
        for t in stuck {
            let _ = t.await;
        }
        drop(state);
        // Permits come back when requests end.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = http(node.api_addr(), "GET", "/api/peers", None, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        node.shutdown(Duration::from_secs(4)).await.unwrap();
    })
    .await
    .expect("test exceeded its time bound");
}

/// The soft limit of open files of this process (from /proc; 1024 when it
/// cannot be read).
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(1024)
}

/// 1,000 concurrent unauthenticated reads leave an authenticated
/// `POST /api/messages` answering promptly (issue 17: within 1 s; asserted
/// with 5x margin, the measured time is printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_reads_does_not_delay_an_authenticated_send() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = start_pq_node(&test_config(da.path())).await;
        let mut cb = test_config(db.path());
        cb.peers = vec![tcp_addr(&a)];
        let b = start_pq_node(&cb).await;
        a.pq()
            .wait_for_session(&b.peer_id(), Duration::from_secs(15))
            .await
            .expect("PQ session");
        // Each read costs two descriptors here (client and server side).
        let readers = 1000.min(open_files_limit().saturating_sub(300) / 2);
        eprintln!("{readers} concurrent reads");
        let api = a.api_addr();
        let flood: Vec<_> = (0..readers)
            .map(|_| {
                tokio::spawn(async move { http(api, "GET", "/api/peers", None, None).await.status })
            })
            .collect();
        let token = a.state().token.expose().to_owned();
        let body =
            serde_json::json!({ "to": b.peer_id().to_base58(), "body": "through the flood" })
                .to_string();
        let t0 = std::time::Instant::now();
        let r = http(api, "POST", "/api/messages", Some(&token), Some(&body)).await;
        let took = t0.elapsed();
        eprintln!("POST /api/messages during the flood answered in {took:?}");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["security"], "pq");
        assert!(took < Duration::from_secs(5), "took {took:?}");
        let mut busy = 0;
        for f in flood {
            match f.await.unwrap() {
                200 => {}
                503 => busy += 1,
                other => panic!("a read answered {other}"),
            }
        }
        eprintln!("{busy} of {readers} reads answered 503 busy");
        a.shutdown(Duration::from_secs(4)).await.unwrap();
        b.shutdown(Duration::from_secs(4)).await.unwrap();
    })
    .await
    .expect("test exceeded its time bound");
}

/// Issue 23, fault 7: the endpoints anyone local may read give why PQ is
/// unavailable without the key file's path or the OS error; the token shows
/// it in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reasons_without_the_token_carry_no_paths() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = tempfile::tempdir().unwrap();
        let secret = "PQ keys could not be loaded: /home/op/.pqnode/keys/kyber1024-dilithium5.key: Permission denied (os error 13)";
        let node = App::start(
            &test_config(dir.path()),
            pqnode::app::AppOptions {
                simulate_pq_unavailable: Some(secret.to_owned()),
                ..pqnode::app::AppOptions::default()
            },
        )
        .await
        .unwrap();
        let token = node.state().token.expose().to_owned();
        for path in ["/api/health", "/api/crypto/status"] {
            let r = http(node.api_addr(), "GET", path, None, None).await;
            assert!(r.body.contains("PQ keys could not be loaded"), "{path}: {}", r.body);
            assert!(!r.body.contains("/home/op"), "{path}: {}", r.body);
            assert!(!r.body.contains("os error"), "{path}: {}", r.body);
        }
        let full = http(node.api_addr(), "GET", "/api/crypto/status", Some(&token), None).await;
        assert_eq!(full.json()["unavailableReason"], secret);
        node.shutdown(Duration::from_secs(5)).await.unwrap();
    })
    .await
    .unwrap();
}
