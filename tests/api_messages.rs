//! The message endpoints and the crypto status of two real PQ nodes, over
//! HTTP on 127.0.0.1.

mod common;

use std::time::Duration;

use common::{TEST_TIMEOUT, http, start_pq_node, tcp_addr, test_config};
use pqnode::app::App;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn pq_node(dir: &std::path::Path) -> App {
    start_pq_node(&test_config(dir)).await
}

fn token(node: &App) -> String {
    node.state().token.expose().to_owned()
}

/// Opens `GET /api/messages/stream` on `node` and reads the response head:
/// the handler subscribes before it answers, so from then on no message can
/// be missed. Returns the connection and what was read so far.
async fn follow(node: &App) -> (tokio::net::TcpStream, Vec<u8>) {
    let mut sse = tokio::net::TcpStream::connect(node.api_addr())
        .await
        .expect("connect");
    let req = format!(
        "GET /api/messages/stream HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        node.api_addr(),
        token(node)
    );
    sse.write_all(req.as_bytes()).await.expect("write");
    let mut seen = Vec::new();
    let head = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains("\r\n\r\n") {
            let n = sse.read(&mut buf).await.expect("read");
            assert!(n > 0, "the SSE connection closed");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(head.is_ok(), "no SSE response head");
    assert!(
        String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    (sse, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_travel_over_pq_through_the_api() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (da, db) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let a = pq_node(da.path()).await;
        let b = pq_node(db.path()).await;
        let (ta, tb) = (token(&a), token(&b));
        let connect = format!(r#"{{"address":"{}"}}"#, tcp_addr(&b));
        let r = http(
            a.api_addr(),
            "POST",
            "/api/peers/connect",
            Some(&ta),
            Some(&connect),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let (pa, pb) = (a.pq().clone(), b.pq().clone());
        pa.wait_for_session(&b.node().peer_id(), Duration::from_secs(15))
            .await
            .expect("PQ session");
        pb.wait_for_session(&a.node().peer_id(), Duration::from_secs(15))
            .await
            .expect("PQ session");

        // Status reflects the session.
        let s = http(a.api_addr(), "GET", "/api/crypto/status", None, None)
            .await
            .json();
        assert_eq!(s["initialized"], true);
        assert_eq!(s["mode"], "pq");
        assert_eq!(s["algorithm"], "Kyber1024-Dilithium5");
        assert_eq!(
            (s["kyberKeySize"].as_u64(), s["dilithiumKeySize"].as_u64()),
            (Some(1568), Some(2592))
        );
        assert_eq!(s["keyPairs"], 2);
        assert_eq!(s["production"], true);
        assert_eq!(s["sessions"]["pq"], 1);
        assert_eq!(
            s["identity"]["fingerprints"].as_object().map(|o| o.len()),
            Some(2)
        );

        // Reading and sending need the token.
        let b_id = b.node().peer_id().to_base58();
        let msg = format!(r#"{{"to":"{b_id}","body":"héllo over PQ"}}"#);
        assert_eq!(
            http(a.api_addr(), "POST", "/api/messages", None, Some(&msg))
                .await
                .status,
            401
        );
        assert_eq!(
            http(b.api_addr(), "GET", "/api/messages", None, None)
                .await
                .status,
            401
        );
        assert_eq!(
            http(
                b.api_addr(),
                "GET",
                "/api/messages/stream",
                Some("wrong"),
                None
            )
            .await
            .status,
            401
        );

        // Follow B's messages before sending.
        let (mut sse, mut seen) = follow(&b).await;

        let r = http(a.api_addr(), "POST", "/api/messages", Some(&ta), Some(&msg)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let sent = r.json();
        assert_eq!(
            (sent["security"].as_str(), sent["suite"].as_str()),
            (Some("pq"), Some("kyber1024-dilithium5"))
        );
        // 200 only once B's receipt said it stored the message (rev 4).
        assert_eq!(sent["delivered"], true);
        assert!(sent["messageId"].is_u64(), "{sent}");

        let got_event = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 4096];
            loop {
                let n = sse.read(&mut buf).await.expect("read");
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen);
                if text.contains("event: message") && text.contains("héllo over PQ") {
                    return;
                }
            }
        })
        .await;
        assert!(
            got_event.is_ok(),
            "SSE event: {}",
            String::from_utf8_lossy(&seen)
        );

        // Binary bodies travel as base64.
        let bin = r#"{"to":"TO","body":"/wABAg==","encoding":"base64"}"#.replace("TO", &b_id);
        assert_eq!(
            http(a.api_addr(), "POST", "/api/messages", Some(&ta), Some(&bin))
                .await
                .status,
            200
        );
        // A send returns once the message is on the wire; B stores it when
        // it has read it, so wait for B's event before listing.
        let got_bin = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 4096];
            loop {
                let text = String::from_utf8_lossy(&seen);
                if text.contains("/wABAg==") {
                    return;
                }
                let n = sse.read(&mut buf).await.expect("read");
                assert!(n > 0, "the SSE connection closed");
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(
            got_bin.is_ok(),
            "binary SSE event: {}",
            String::from_utf8_lossy(&seen)
        );
        let list = http(b.api_addr(), "GET", "/api/messages", Some(&tb), None)
            .await
            .json();
        let list = list.as_array().expect("array");
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["body"], "héllo over PQ");
        assert_eq!(list[0]["security"], "pq");
        assert_eq!(list[0]["from"], a.node().peer_id().to_base58());
        assert_eq!(
            (list[1]["encoding"].as_str(), list[1]["body"].as_str()),
            (Some("base64"), Some("/wABAg=="))
        );
        let since = list[0]["id"].as_u64().expect("id");
        let later = http(
            b.api_addr(),
            "GET",
            &format!("/api/messages?since={since}"),
            Some(&tb),
            None,
        )
        .await
        .json();
        assert_eq!(later.as_array().map(|l| l.len()), Some(1));

        // Errors name what was wrong.
        let bad = http(
            a.api_addr(),
            "POST",
            "/api/messages",
            Some(&ta),
            Some(r#"{"to":"nope","body":"x"}"#),
        )
        .await;
        assert_eq!(bad.status, 400);
        assert!(bad.body.contains("`to`"), "{}", bad.body);
        let bad64 = r#"{"to":"TO","body":"***","encoding":"base64"}"#.replace("TO", &b_id);
        assert_eq!(
            http(
                a.api_addr(),
                "POST",
                "/api/messages",
                Some(&ta),
                Some(&bad64)
            )
            .await
            .status,
            400
        );
        let huge = format!(
            r#"{{"to":"{b_id}","body":"{}"}}"#,
            "x".repeat((1 << 20) + 1)
        );
        let r = http(
            a.api_addr(),
            "POST",
            "/api/messages",
            Some(&ta),
            Some(&huge),
        )
        .await;
        assert_eq!(r.status, 413, "{}", r.body);
        assert_eq!(r.json()["error"]["code"], "too_large");

        a.shutdown(Duration::from_secs(4)).await.expect("shutdown");
        b.shutdown(Duration::from_secs(4)).await.expect("shutdown");
    })
    .await
    .expect("test exceeded its time bound");
}

/// `App::shutdown` with a PQ session and a client following the message
/// stream returns within its grace period and ends the stream; the data
/// directory is released at once: a second `App` starts on it, with the
/// same identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_session_and_a_follower_releases_the_data_directory() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (da, db) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let ca = test_config(da.path());
        let a = start_pq_node(&ca).await;
        let a_id = a.peer_id();
        let mut cb = test_config(db.path());
        cb.peers = vec![tcp_addr(&a)];
        let b = start_pq_node(&cb).await;
        a.pq()
            .wait_for_session(&b.peer_id(), Duration::from_secs(15))
            .await
            .expect("PQ session");
        let (mut sse, _) = follow(&a).await;

        let grace = Duration::from_secs(4);
        let t0 = tokio::time::Instant::now();
        a.shutdown(grace)
            .await
            .expect("A stops within its grace period");
        let took = t0.elapsed();
        assert!(took <= grace, "shutdown took {took:?}, grace {grace:?}");
        eprintln!("shutdown with a session and a follower took {took:?}");

        // The follower's stream ended (EOF, or a reset once the socket closed).
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            let mut buf = [0u8; 1024];
            while let Ok(n) = sse.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the SSE stream outlived the shutdown");

        // The lock and the database are released: the same directory starts
        // again, as the same node.
        let again = App::start(&ca, pqnode::app::AppOptions::default())
            .await
            .expect("a second App starts on the released data directory");
        assert_eq!(again.peer_id(), a_id);
        again.shutdown(grace).await.expect("stops");
        b.shutdown(grace).await.expect("stops");
    })
    .await
    .expect("test exceeded its time bound");
}

/// POSTs a body that may be refused before it is all written: a write
/// error after the server answered is not a failure, the answer is what
/// counts.
async fn post_huge(node: &App, body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(node.api_addr())
        .await
        .expect("connect");
    let head = format!(
        "POST /api/messages HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        node.api_addr(),
        token(node),
        body.len()
    );
    s.write_all(head.as_bytes()).await.expect("head");
    let _ = s.write_all(body.as_bytes()).await;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Fault 6 of issue 23: the API's request-body limit follows
/// `limits.max_message_size`, so an 8 MiB message is delivered when 8 MiB
/// is allowed, and anything larger is 413 `too_large`, never 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eight_mib_message_travels_when_allowed_and_a_larger_one_is_413() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        const MAX: usize = 8 * 1024 * 1024;
        let (da, db) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let config = |dir: &std::path::Path| {
            let mut c = test_config(dir);
            c.limits.max_message_size = MAX;
            c
        };
        let a = start_pq_node(&config(da.path())).await;
        let b = start_pq_node(&config(db.path())).await;
        a.node().dial(tcp_addr(&b)).await.expect("dial");
        a.pq()
            .wait_for_session(&b.peer_id(), Duration::from_secs(15))
            .await
            .expect("session");
        let b_id = b.peer_id().to_base58();

        let text = "a".repeat(MAX);
        let msg = format!(r#"{{"to":"{b_id}","body":"{text}"}}"#);
        let (status, body) = post_huge(&a, &msg).await;
        assert_eq!(status, 200, "{body}");
        let got = b.pq().inbox().list(None, 0, 10);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body.len(), MAX);

        // One byte more than allowed: 413 from the size check.
        let msg = format!(r#"{{"to":"{b_id}","body":"{text}a"}}"#);
        let (status, body) = post_huge(&a, &msg).await;
        assert_eq!(status, 413, "{body}");
        assert!(body.contains("too_large"), "{body}");

        // A body no message of 8 MiB could be, even escaped: 413 as well,
        // before the body is read.
        let msg = format!(
            r#"{{"to":"{b_id}","body":"{}"}}"#,
            "\\u0000".repeat(MAX + 20_000)
        );
        let (status, body) = post_huge(&a, &msg).await;
        assert_eq!(status, 413, "{body}");
        assert!(body.contains("too_large"), "{body}");
        assert_eq!(b.pq().inbox().list(None, 0, 10).len(), 1);
    })
    .await
    .expect("test timed out");
}

/// A metric's value from `/metrics` (0 when not exported yet).
async fn metric(node: &App, name: &str) -> i64 {
    let body = http(node.api_addr(), "GET", "/metrics", None, None)
        .await
        .body;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Issue 23, fault 7: a follower that reads nothing while 1,000 messages of
/// 64 KiB (62.5 MiB) arrive holds at most its queue's budget, is dropped
/// with a last `event: lagged` naming where to resume, and a follower that
/// keeps up meanwhile gets every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_reads_nothing_is_bounded_and_told_it_lagged() {
    const COUNT: usize = 1000;
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (da, db) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let a = pq_node(da.path()).await;
        let b = pq_node(db.path()).await;
        let b_id = b.node().peer_id();
        a.node().dial(tcp_addr(&b)).await.expect("dial");
        a.pq()
            .wait_for_session(&b_id, Duration::from_secs(15))
            .await
            .expect("PQ session");
        let budget = pqnode::pq::followers::budget(1 << 20) as i64;

        let (mut slow, _) = follow(&b).await;
        let (mut fast, head) = follow(&b).await;
        assert_eq!(metric(&b, "pqnode_pq_followers").await, 2);
        // The fast follower counts the messages it is given, in order.
        let reader = tokio::spawn(async move {
            let mut pending = head;
            let mut buf = vec![0u8; 256 * 1024];
            let (mut messages, mut lagged) = (0usize, false);
            while messages < COUNT && !lagged {
                let n = fast.read(&mut buf).await.expect("read");
                assert!(n > 0, "the fast follower's stream ended");
                pending.extend_from_slice(&buf[..n]);
                // Count whole events; keep the unfinished tail.
                while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                    let event = String::from_utf8_lossy(&pending[..end]).into_owned();
                    messages += event.matches("event: message").count();
                    lagged |= event.contains("event: lagged");
                    pending.drain(..end + 2);
                }
            }
            (messages, lagged, fast)
        });

        let body = vec![b'x'; 64 * 1024];
        let mut most = 0;
        for i in 0..COUNT {
            a.pq().send(b_id, body.clone()).await.expect("delivered");
            if i % 50 == 0 {
                most = most.max(metric(&b, "pqnode_pq_follower_queued_bytes").await);
            }
        }
        // Two followers, each within its budget.
        assert!(most <= 2 * budget, "{most} bytes queued, budget {budget}");
        let (messages, fast_lagged, _fast) = reader.await.expect("reader");
        assert_eq!((messages, fast_lagged), (COUNT, false));
        common::eventually(|| async {
            (metric(&b, "pqnode_pq_followers_lagged_total").await == 1).then_some(())
        })
        .await;
        assert_eq!(metric(&b, "pqnode_pq_followers").await, 1);

        // The slow follower now reads: what was written before it was
        // dropped, then `lagged`, then the end of the response.
        let mut seen = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(30), async {
            let mut buf = vec![0u8; 256 * 1024];
            while !seen.ends_with(b"0\r\n\r\n") {
                let n = slow.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(ended.is_ok(), "the slow follower's stream did not end");
        let text = String::from_utf8_lossy(&seen);
        let given = text.matches("event: message").count();
        assert!(given < COUNT / 2, "{given} messages reached the slow follower");
        let lagged = text
            .split("event: lagged\ndata: ")
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .expect("a last `event: lagged`");
        let lagged: serde_json::Value = serde_json::from_str(lagged).expect("lagged JSON");
        let since = lagged["since"].as_u64().expect("since");
        eprintln!(
            "slow follower: {given} messages, then lagged {lagged}; most queued {most} B (budget {budget} B each)"
        );
        assert!(lagged["missed"].as_u64().expect("missed") > 0, "{lagged}");
        // It resumes from there with the listing.
        let later = http(
            b.api_addr(),
            "GET",
            &format!("/api/messages?since={since}&limit=5"),
            Some(&token(&b)),
            None,
        )
        .await;
        assert_eq!(later.status, 200);
        // More follow: the answer says where the next page starts.
        assert!(
            later
                .headers
                .to_ascii_lowercase()
                .contains("link: </api/messages?since="),
            "{}",
            later.headers
        );
        let later = later.json();
        let ids: Vec<u64> = later
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|m| m["id"].as_u64())
            .collect();
        assert_eq!(ids.len(), 5);
        assert!(ids.iter().all(|id| *id > since), "{ids:?} after {since}");
        assert_eq!(metric(&b, "pqnode_pq_follower_queued_bytes").await, 0);
        let _ = a.shutdown(Duration::from_secs(4)).await;
        let _ = b.shutdown(Duration::from_secs(4)).await;
    })
    .await
    .expect("test timed out");
}
