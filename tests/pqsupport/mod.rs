//! Test harness: real pqnodes on 127.0.0.1 (port 0), started through `App`
//! exactly as `pqnode run` starts them,
//! plus hostile and stock libp2p peers built from plain rust-libp2p.
#![allow(dead_code, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identify, kad, noise, ping, tcp, yamux};
use libp2p_stream::IncomingStreams;
use pqnode::app::{App, AppOptions};
use pqnode::config::{Config, PqPolicy};
use pqnode::node::NodeHandle;
use pqnode::pq::PqLayer;
use pqnode::status::SharedCryptoStatus;
use pqnode_crypto::Suite;
use pqnode_crypto::handshake::{RecordRejected, RecordVerifier};
use pqnode_crypto::sign::VerifyingKey;
use pqnode_keys::record::{self, VerifyContext};
use pqnode_keys::store::{KeyStore, StoreOptions};
use tokio::task::JoinHandle;

/// Every test's overall bound.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Clone, Debug)]
pub struct Opts {
    pub policy: PqPolicy,
    pub suites: Vec<Suite>,
    /// Simulates a binary without PQ (§8.4) when false.
    pub pq_available: bool,
    pub max_handshakes: u32,
    pub handshake_timeout: Duration,
    pub allow_unpinned: bool,
    pub listener_open_delay: Duration,
    pub rehandshake_after: Duration,
    pub rehandshake_bytes: u64,
    /// `limits.max_connections_per_ip` (every test peer is on 127.0.0.1).
    pub max_connections_per_ip: u32,
    /// `limits.partial_message_timeout_secs`.
    pub partial_message_timeout: Duration,
    /// `limits.delivery_timeout_secs`.
    pub delivery_timeout: Duration,
    /// `limits.max_message_size`.
    pub max_message_size: usize,
    /// New first-use pins per source network an hour (`AppOptions`).
    pub first_use_per_network_per_hour: u32,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            policy: PqPolicy::Preferred,
            suites: Suite::DEFAULT_PREFERENCE.to_vec(),
            pq_available: true,
            max_handshakes: 64,
            handshake_timeout: Duration::from_secs(10),
            allow_unpinned: true,
            listener_open_delay: Duration::from_secs(5),
            rehandshake_after: Duration::from_secs(3600),
            rehandshake_bytes: 4 << 30,
            max_connections_per_ip: 100,
            partial_message_timeout: Duration::from_secs(30),
            delivery_timeout: Duration::from_secs(10),
            max_message_size: 1 << 20,
            first_use_per_network_per_hour: 100,
        }
    }
}

pub struct TestNode {
    pub dir: PathBuf,
    pub peer_id: PeerId,
    pub handle: NodeHandle,
    pub pq: PqLayer,
    pub addr: Multiaddr,
    pub crypto: SharedCryptoStatus,
    pub app: App,
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("pqnode-test-")
        .tempdir()
        .expect("tempdir")
}

/// Logs to the test's output when `RUST_LOG` is set (e.g.
/// `RUST_LOG=pqnode=debug,libp2p_stream=debug cargo test --test pq_layer`).
pub fn init_test_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The configuration of a test node in `dir` with `opts`.
pub fn config(dir: &Path, opts: &Opts) -> Config {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        api: "127.0.0.1:0".parse().expect("api addr"),
        mdns: false,
        ..Config::default()
    };
    config.pq.policy = opts.policy;
    config.pq.suites = opts.suites.clone();
    config.pq.allow_unpinned = opts.allow_unpinned;
    config.pq.rehandshake_after = opts.rehandshake_after;
    config.pq.rehandshake_bytes = opts.rehandshake_bytes;
    config.limits.max_concurrent_handshakes = opts.max_handshakes;
    config.limits.handshake_timeout = opts.handshake_timeout;
    config.limits.max_new_connections_per_ip_per_minute = 1000;
    config.limits.max_connections_per_ip = opts.max_connections_per_ip;
    config.limits.partial_message_timeout = opts.partial_message_timeout;
    config.limits.delivery_timeout = opts.delivery_timeout;
    config.limits.max_message_size = opts.max_message_size;
    config.limits.max_established_per_peer = 4;
    config
}

/// Starts a node through `App`, exactly as `pqnode run` does (key store
/// with keys for every suite, so that a test may switch suites later).
pub async fn start(dir: &Path, opts: Opts) -> TestNode {
    let config = config(dir, &opts);
    start_with(dir, config, &opts).await
}

/// [`start`] with `config` (made by [`config`] and changed by the test).
pub async fn start_with(dir: &Path, config: Config, opts: &Opts) -> TestNode {
    init_test_logging();
    // Keys for every suite exist, whatever this run enables.
    drop(
        KeyStore::open_or_create(
            dir,
            StoreOptions {
                suites: Suite::ALL.to_vec(),
                ..Default::default()
            },
        )
        .expect("key store"),
    );
    let options = AppOptions {
        simulate_pq_unavailable: (!opts.pq_available)
            .then(|| "built without pqc (simulated by the test)".to_owned()),
        listener_open_delay: opts.listener_open_delay,
        first_use_pins_per_network_per_hour: opts.first_use_per_network_per_hour,
        ..AppOptions::default()
    };
    let app = App::start(&config, options).await.expect("node starts");
    let addr = app.listen_addrs().first().cloned().expect("listen address");
    TestNode {
        dir: dir.to_path_buf(),
        peer_id: app.peer_id(),
        handle: app.node().clone(),
        pq: app.pq().clone(),
        addr,
        crypto: app.state().crypto.clone(),
        app,
    }
}

impl TestNode {
    pub fn full_addr(&self) -> Multiaddr {
        self.addr
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(self.peer_id))
    }

    pub async fn connect(&self, other: &TestNode) {
        self.handle.dial(other.full_addr()).await.expect("dial");
    }

    /// `peer`'s PQ status name (`pq`, `classical`, `unknown`, ...).
    pub fn level(&self, peer: &PeerId) -> Option<&'static str> {
        self.pq.peer(peer).map(|p| p.status.name())
    }

    /// Waits until `f` holds, at most `timeout`.
    pub async fn until(&self, timeout: Duration, mut f: impl FnMut(&TestNode) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if f(self) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        f(self)
    }

    pub async fn stop(self) {
        let _ = self.app.shutdown(Duration::from_secs(5)).await;
    }
}

/// Waits for a message from `from` in `node`'s inbox.
pub async fn recv(
    node: &TestNode,
    from: PeerId,
    since: u64,
    timeout: Duration,
) -> Option<pqnode::pq::InboundMessage> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(m) = node
            .pq
            .inbox()
            .list(Some(from), since, 1)
            .into_iter()
            .next()
        {
            return Some(m);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A peer with only libp2p-stream, identify and ping: used to speak the PQ
/// protocol badly on purpose.
#[derive(NetworkBehaviour)]
pub struct RawBehaviour {
    pub stream: libp2p_stream::Behaviour,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
}

/// A stock rust-libp2p peer: identify, ping and Kademlia, no PQ protocol.
#[derive(NetworkBehaviour)]
pub struct StockBehaviour {
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
}

fn swarm_with<B: NetworkBehaviour>(key: Keypair, make: impl FnOnce(&Keypair) -> B) -> Swarm<B> {
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|k| make(k))
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

pub struct Peer {
    pub peer_id: PeerId,
    pub control: Option<libp2p_stream::Control>,
    pub connected: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn drive<B: NetworkBehaviour + Send + 'static>(
    mut swarm: Swarm<B>,
    target: Multiaddr,
    connected: Arc<std::sync::atomic::AtomicUsize>,
) -> JoinHandle<()>
where
    B::ToSwarm: Send,
{
    // Listen too, so identify tells the other side where to reach us.
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .expect("listen");
    // From a new port, not the listening one: a dial from a reused port
    // can find its address pair taken on a busy loopback (EADDRINUSE), and
    // so would every retry.
    let dial = move |swarm: &mut Swarm<B>| {
        swarm.dial(
            libp2p::swarm::dial_opts::DialOpts::unknown_peer_id()
                .address(target.clone())
                .allocate_new_port()
                .build(),
        )
    };
    dial(&mut swarm).expect("dial");
    tokio::spawn(async move {
        // A dial that fails before any connection (a loaded machine) is
        // retried a few times; every failure is printed, so a test that
        // still finds no connection says why.
        let mut redials = 3;
        let mut ever_connected = false;
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { .. } => {
                    ever_connected = true;
                    connected.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                SwarmEvent::ConnectionClosed {
                    num_established,
                    cause,
                    ..
                } => {
                    eprintln!("test peer: connection closed ({cause:?})");
                    if num_established == 0 {
                        connected.store(0, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    eprintln!("test peer: dial failed: {error}");
                    if !ever_connected && redials > 0 {
                        redials -= 1;
                        let _ = dial(&mut swarm);
                    }
                }
                _ => {}
            }
        }
    })
}

/// A raw peer connected to `target` (it dials).
pub async fn raw_peer(key: Keypair, target: Multiaddr) -> Peer {
    let peer_id = key.public().to_peer_id();
    let swarm = swarm_with(key, |k| RawBehaviour {
        stream: libp2p_stream::Behaviour::new(),
        identify: identify::Behaviour::new(identify::Config::new(
            "/ipfs/id/1.0.0".into(),
            k.public(),
        )),
        ping: ping::Behaviour::default(),
    });
    let control = swarm.behaviour().stream.new_control();
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let task = drive(swarm, target, connected.clone()).await;
    Peer {
        peer_id,
        control: Some(control),
        connected,
        task,
    }
}

/// A raw peer that also accepts `/pqnode/pq/1.0.0` (and never reads what
/// arrives there), so identify lists the protocol from the first exchange.
/// The node then waits its listener delay (5 s) before it probes the peer
/// itself, instead of probing at once: a test that speaks the protocol by
/// hand as a pinned peer is not raced by the node's probe finding no PQ and
/// refusing it as a downgrade.
pub async fn raw_peer_listing_pq(key: Keypair, target: Multiaddr) -> (Peer, IncomingStreams) {
    let peer_id = key.public().to_peer_id();
    let swarm = swarm_with(key, |k| RawBehaviour {
        stream: libp2p_stream::Behaviour::new(),
        identify: identify::Behaviour::new(identify::Config::new(
            "/ipfs/id/1.0.0".into(),
            k.public(),
        )),
        ping: ping::Behaviour::default(),
    });
    let mut control = swarm.behaviour().stream.new_control();
    let incoming = control
        .accept(pqnode::pq::PQ_PROTOCOL)
        .expect("accept the PQ protocol");
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let task = drive(swarm, target, connected.clone()).await;
    (
        Peer {
            peer_id,
            control: Some(control),
            connected,
            task,
        },
        incoming,
    )
}

/// A stock peer connected to `target` (it dials).
pub async fn stock_peer(target: Multiaddr) -> Peer {
    let key = Keypair::generate_ed25519();
    let peer_id = key.public().to_peer_id();
    let swarm = swarm_with(key, |k| {
        let id = k.public().to_peer_id();
        let cfg = kad::Config::new(StreamProtocol::new("/pqnode/kad/1.0.0"));
        StockBehaviour {
            identify: identify::Behaviour::new(identify::Config::new(
                "/ipfs/id/1.0.0".into(),
                k.public(),
            )),
            ping: ping::Behaviour::default(),
            kad: kad::Behaviour::with_config(id, kad::store::MemoryStore::new(id), cfg),
        }
    });
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let task = drive(swarm, target, connected.clone()).await;
    Peer {
        peer_id,
        control: None,
        connected,
        task,
    }
}

impl Peer {
    pub fn is_connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    pub async fn until_disconnected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if !self.is_connected() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.is_connected() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// A record verifier for hand-built peers: accepts any record whose
/// envelope and PQ signature verify for the expected PeerId and suite, with
/// no pins (the hostile side does not care who it talks to).
pub struct Permissive;

impl RecordVerifier for Permissive {
    fn verify_record(
        &self,
        bytes: &[u8],
        peer: &[u8],
        suite: Suite,
    ) -> Result<VerifyingKey, RecordRejected> {
        let mut ctx = VerifyContext::new(pqnode_keys::time::unix_now(), &Suite::ALL);
        ctx.expected_peer = PeerId::from_bytes(peer).ok();
        ctx.negotiated_suite = Some(suite);
        record::verify(bytes, &ctx)
            .map(|r| r.sig_pk().clone())
            .map_err(|e| RecordRejected {
                reason: e.name().into(),
            })
    }
}

/// A hostile peer's handshake credentials: its own identity, and a record
/// from `record_store` (another identity's, for the PeerId test), optionally
/// bit-flipped.
pub fn hostile_config(
    own: &KeyStore,
    record_store: &mut KeyStore,
    flip: bool,
) -> Arc<pqnode_crypto::handshake::HandshakeConfig> {
    let suite = Suite::Kyber1024Dilithium5;
    let key = record_store.signing_key(suite).expect("key");
    let key = pqnode_crypto::sign::SigningKey::from_bytes(
        suite,
        key.expose_secret(),
        key.verifying_key().as_bytes(),
    )
    .expect("copy");
    let mut rec = record_store
        .build_record(suite, &[], pqnode_keys::time::unix_now(), 3600)
        .expect("record")
        .envelope_bytes()
        .to_vec();
    if flip {
        let n = rec.len() / 2;
        rec[n] ^= 0x04;
    }
    Arc::new(pqnode_crypto::handshake::HandshakeConfig {
        local_peer_id: own.peer_id().to_bytes(),
        credentials: vec![pqnode_crypto::handshake::Credential {
            signing_key: Arc::new(key),
            record: rec,
        }],
        key_update: pqnode_crypto::channel::KeyUpdatePolicy::default(),
    })
}
