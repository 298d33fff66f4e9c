//! Helpers shared by the integration tests: nodes on 127.0.0.1 (port 0,
//! mDNS off) started through `App` exactly like `pqnode run`, a minimal
//! HTTP client, stock libp2p swarms.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Multiaddr, Swarm, SwarmBuilder, noise, tcp, yamux};
use pqnode::app::{App, AppOptions};
use pqnode::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every test is bounded by this.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A configuration for a test node in `dir`: loopback only, port 0, no mDNS.
pub fn test_config(dir: &std::path::Path) -> Config {
    Config::from_toml_str(&format!(
        r#"
        data_dir = "{}"
        listen = ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]
        api = "127.0.0.1:0"
        mdns = false
        "#,
        dir.display()
    ))
    .unwrap()
}

/// The options of test nodes that do not exercise PQ: they run as a
/// binary without PQ would (classical-fallback, §8.4), which skips the
/// self-test's cost.
pub fn no_pq() -> AppOptions {
    AppOptions {
        simulate_pq_unavailable: Some("not exercised by this test".to_owned()),
        ..AppOptions::default()
    }
}

/// Starts a node (without PQ) through `App`.
pub async fn start_node(config: &Config) -> App {
    App::start(config, no_pq()).await.unwrap()
}

/// Starts a node with PQ through `App`, exactly as `pqnode run` does.
pub async fn start_pq_node(config: &Config) -> App {
    App::start(config, AppOptions::default()).await.unwrap()
}

/// Creates the key store in `dir` now and returns its PeerId (a node
/// started later on `dir` has this identity).
pub fn identity_in(dir: &std::path::Path) -> libp2p::PeerId {
    pqnode_keys::store::KeyStore::open_or_create(dir, pqnode_keys::store::StoreOptions::default())
        .unwrap()
        .peer_id()
}

/// The node's TCP listen address with `/p2p/<PeerId>`.
pub fn tcp_addr(node: &App) -> Multiaddr {
    node.dial_addr("tcp").unwrap()
}

/// A response: status and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Response {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    http_raw(addr, &req).await
}

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) as is.
pub async fn http_raw(addr: SocketAddr, request: &str) -> Response {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    Response {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
    }
}

/// A stock rust-libp2p swarm over TCP (Noise + Yamux) with `behaviour`.
pub fn stock_swarm<B: NetworkBehaviour>(behaviour: impl FnOnce(&Keypair) -> B) -> Swarm<B> {
    SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|k| behaviour(k))
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// Polls `check` every 100 ms until it returns `Some`.
pub async fn eventually<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    loop {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs test `name` of this test binary again inside a network namespace
/// of its own (`unshare --net`; as a user namespace's root when not run as
/// root), bounded by `timeout`. Returns `true` inside it (the test goes on
/// there), `false` outside once the run inside has passed.
pub fn in_own_netns(name: &str, timeout: Duration) -> bool {
    const INSIDE: &str = "PQNODE_TEST_INSIDE_NETNS";
    if std::env::var_os(INSIDE).is_some() {
        return true;
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    let mut cmd = std::process::Command::new("timeout");
    cmd.args([
        "--kill-after=5",
        &(timeout.as_secs() + 30).to_string(),
        "unshare",
    ]);
    if !root {
        cmd.args(["--user", "--map-root-user"]);
    }
    let out = cmd
        .arg("--net")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("run `timeout` and `unshare` (coreutils, util-linux)");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the test in its network namespace: {}\n{stdout}\n{stderr}",
        out.status
    );
    false
}

/// Runs `ip args` (iproute2); fails the test with its error.
pub fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("run `ip` (iproute2)");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
