//! What the node-level benchmarks share: a node started the way `pqnode run`
//! starts it (through `App`), on 127.0.0.1, and the timed dial from no
//! connection to an established PQ session on both sides.
//!
//! A session is awaited through the PQ layer's status `watch` (no polling:
//! a poller would contend for the layer's one peer-table lock and slow what
//! it measures); a message's arrival is still observed by polling the inbox
//! with `yield_now`, which adds at most a few microseconds, never a timer
//! tick.

// Each bench includes this module and uses part of it.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use pqnode::app::{App, AppOptions};
use pqnode::config::Config;

/// How long any one benchmark step may take before the run fails.
pub const LIMIT: Duration = Duration::from_secs(20);

/// The configuration of a benchmark node with its data in `dir`.
pub fn config(dir: &Path) -> Config {
    Config::from_toml_str(&format!(
        r#"
        data_dir = "{}"
        listen = ["/ip4/127.0.0.1/tcp/0"]
        api = "127.0.0.1:0"
        mdns = false
        [limits]
        max_new_connections_per_ip_per_minute = 100000
        max_connections_per_ip = 1000
        "#,
        dir.display()
    ))
    .expect("config")
}

/// Starts a node on `dir`, as `pqnode run` would.
pub async fn node(dir: &Path) -> App {
    node_with(&config(dir)).await
}

/// Starts a node with `config`, as `pqnode run` would.
pub async fn node_with(config: &Config) -> App {
    App::start(config, AppOptions::default())
        .await
        .expect("node")
}

/// `b`'s first listen address with its PeerId.
pub fn dial_addr(b: &App) -> Multiaddr {
    b.listen_addrs()[0]
        .clone()
        .with(Protocol::P2p(b.node().peer_id()))
}

/// Disconnects `a` and `b` until neither has seen the other, nor held a PQ
/// session with it, for 50 ms in a row (AutoNAT dial-backs may reconnect
/// them).
async fn disconnect_quietly(a: &App, b: &App) {
    let (a_id, b_id) = (a.node().peer_id(), b.node().peer_id());
    let deadline = Instant::now() + LIMIT;
    let mut quiet_since: Option<Instant> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "the nodes never stayed disconnected"
        );
        if sees(a, b_id).await
            || sees(b, a_id).await
            || a.pq().session(&b_id).is_some()
            || b.pq().session(&a_id).is_some()
        {
            let _ = a.node().disconnect(b_id).await;
            let _ = b.node().disconnect(a_id).await;
            quiet_since = None;
        } else if quiet_since.get_or_insert_with(Instant::now).elapsed()
            >= Duration::from_millis(50)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Whether `app`'s node has a connection to `other`.
async fn sees(app: &App, other: PeerId) -> bool {
    app.node()
        .peers()
        .await
        .expect("peers")
        .iter()
        .any(|p| p.peer_id == other)
}

/// From no connection at all to a PQ session on both sides: `a` dials `b`.
/// A dial refused by the limits right after a close, or overtaken by a
/// dial-back, is not timed; it is retried and counted in `retries`.
pub async fn dial_to_session(a: &App, b: &App, retries: &mut u32) -> Duration {
    let (a_id, b_id) = (a.node().peer_id(), b.node().peer_id());
    let addr = dial_addr(b);
    let t = loop {
        disconnect_quietly(a, b).await;
        let t = Instant::now();
        match a.node().dial(addr.clone()).await {
            Ok(outcome) if !outcome.already_connected => break t,
            _ => {
                *retries += 1;
                assert!(*retries < 1000, "dials keep failing");
            }
        }
    };
    // Woken by each side's status change (a `watch`), not by polling: a
    // poller would contend for the PQ layer's one peer-table lock.
    let (on_a, on_b) = tokio::join!(
        a.pq().wait_for_session(&b_id, LIMIT),
        b.pq().wait_for_session(&a_id, LIMIT)
    );
    assert!(
        on_a.is_some() && on_b.is_some(),
        "no PQ session on both sides within {LIMIT:?}"
    );
    t.elapsed()
}
