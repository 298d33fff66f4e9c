//! One remote peer that sends 10,000 malformed messages: the node, run as
//! `pqnode run` runs, writes a handful of log lines about it, counts every
//! message exactly, and keeps serving (issue 17, PROTOCOL.md §9 rev 3).

mod common;
mod pqsupport;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, http};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use pqnode::pq::CLASSICAL_PROTOCOL;
use pqsupport::{TEST_TIMEOUT, raw_peer};

const BIN: &str = env!("CARGO_BIN_EXE_pqnode");
const MESSAGES: u64 = 10_000;
/// Streams in flight at once. One: libp2p-stream hands the node one new
/// inbound stream at a time per connection and drops (resets) any that
/// arrives while one waits to be taken, before pqnode sees it; a parallel
/// sender would have some of its messages dropped uncounted, not miscounted.
const IN_FLIGHT: usize = 1;

/// `pqnode run` on loopback; every stderr line kept. Its log filter is
/// `warn`, or `NODE_LOG` when set (to debug this test).
struct Node {
    child: Child,
    peer_id: PeerId,
    listen: Multiaddr,
    api: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn start(dir: &std::path::Path) -> Node {
        let mut child = Command::new(BIN)
            .args(["run", "--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(["--api", "127.0.0.1:0", "--mdns", "false", "--data-dir"])
            .arg(dir)
            .env(
                "RUST_LOG",
                std::env::var("NODE_LOG").unwrap_or("warn".into()),
            )
            .env_remove("PQNODE_KEY_PASSPHRASE")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pqnode");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (out, err) = (
            child.stdout.take().expect("stdout"),
            child.stderr.take().expect("stderr"),
        );
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("lines").push(line);
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let (mut peer_id, mut listen, mut api) = (None, None, None);
        let mut seen = Vec::new();
        while api.is_none() {
            let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                let _ = child.kill();
                panic!(
                    "no API line; stdout {seen:?}, stderr {:?}",
                    stderr.lock().expect("lines")
                );
            };
            if let Some(id) = line.strip_prefix("PeerId: ") {
                peer_id = Some(id.parse::<PeerId>().expect("PeerId"));
            } else if let Some(addr) = line.strip_prefix("Listening on ") {
                listen.get_or_insert(addr.parse::<Multiaddr>().expect("address"));
            } else if let Some(addr) = line.strip_prefix("API: http://") {
                api = Some(addr.parse::<SocketAddr>().expect("API address"));
            }
            seen.push(line);
        }
        Node {
            child,
            peer_id: peer_id.expect("a PeerId line"),
            listen: listen.expect("a Listening line"),
            api: api.expect("API"),
            stderr,
        }
    }

    fn lines_with(&self, needle: &str) -> Vec<String> {
        self.stderr
            .lock()
            .expect("lines")
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    async fn metric(&self, name: &str) -> u64 {
        let body = http(self.api, "GET", "/metrics", None, None).await.body;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_malformed_messages_from_one_peer_give_a_handful_of_lines_and_an_exact_count()
{
    tokio::time::timeout(TEST_TIMEOUT, async {
        let dir = pqsupport::tempdir();
        let path = dir.path().to_owned();
        let node = tokio::task::spawn_blocking(move || Node::start(&path))
            .await
            .expect("start");

        // A peer without the PQ protocol: classical under `preferred`.
        let peer = raw_peer(Keypair::generate_ed25519(), node.listen.clone()).await;
        eventually(|| async {
            (node.metric("pqnode_pq_classical_sessions_total").await == 1).then_some(())
        })
        .await;

        // 10,000 classical message streams, each carrying one frame whose
        // length is out of range; the node closes each one.
        let target = node.peer_id;
        let control = peer.control.clone().expect("raw peer");
        let started = Instant::now();
        let stderr = node.stderr.clone();
        let node_log = move || stderr.lock().expect("lines").join("\n");
        let mut sends = futures::stream::iter(0..MESSAGES)
            .map(|i| {
                let mut control = control.clone();
                let node_log = node_log.clone();
                async move {
                    let mut stream = control
                        .open_stream(target, CLASSICAL_PROTOCOL)
                        .await
                        .unwrap_or_else(|e| panic!("stream {i}: {e}; node log:\n{}", node_log()));
                    stream
                        .write_all(&[0xff, 0xff, 0xff, 0xff])
                        .await
                        .unwrap_or_else(|e| panic!("stream {i}: {e}; node log:\n{}", node_log()));
                    let mut rest = Vec::new();
                    // The node closes the stream once it has read the header.
                    let _ = stream.read_to_end(&mut rest).await;
                    assert!(rest.is_empty(), "stream {i}: the node answered");
                }
            })
            .buffer_unordered(IN_FLIGHT);
        while sends.next().await.is_some() {}
        let took = started.elapsed();

        let counted = "pqnode_pq_malformed_messages_total{reason=\"frame\"}";
        eventually(|| async { (node.metric(counted).await == MESSAGES).then_some(()) }).await;
        // Every one counted once; each was either logged or suppressed.
        let logged = eventually(|| async {
            let logged = node.lines_with("bad classical message frame").len() as u64;
            let suppressed = node.metric("pqnode_pq_log_suppressed_total").await;
            (logged + suppressed == MESSAGES).then_some(logged)
        })
        .await;
        let about_peer = node.lines_with(&peer.peer_id.to_string());
        println!(
            "{MESSAGES} malformed messages in {took:?}: {logged} lines logged, {} about the peer",
            about_peer.len()
        );
        // One line per 10 s per peer and kind: a handful at most.
        let handful = 1 + took.as_secs() / 10 + 1;
        assert!(
            (1..=handful).contains(&logged),
            "{logged} lines for {MESSAGES} malformed messages in {took:?}: {about_peer:#?}"
        );
        assert!(
            about_peer.len() as u64 <= handful + 2,
            "lines about the peer: {about_peer:#?}"
        );

        // Still serving: the API answers and the peer is still connected.
        assert!(peer.is_connected(), "the flooding peer stays connected");
        let health = http(node.api, "GET", "/api/health", None, None).await;
        assert_eq!(health.status, 200, "{}", health.body);
    })
    .await
    .expect("test timed out");
}
