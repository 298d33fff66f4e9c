//! The local HTTP API (axum): one file per resource.
//!
//! [`create_app`] builds the router over an [`AppState`]; [`serve`] runs it
//! until a shutdown future completes. JSON field names are camelCase. Read
//! endpoints need no token; endpoints that change state need
//! `Authorization: Bearer <token>` ([`auth`]). In front of every route,
//! [`guard`] answers 421 to a foreign `Host` (DNS rebinding) and, when the
//! API is exposed with `api_allow_remote`, requires the token everywhere.
//! Requests that ask the swarm something share [`MAX_NODE_QUERIES`]
//! permits, so a flood of reads cannot fill the node's command channel
//! (the PQ layer uses it too); beyond them a request gets 503 `busy`.
//!
//! | route | file |
//! |---|---|
//! | `GET /api/health`, `/api/health/live`, `/api/health/ready` | [`health`] |
//! | `GET /api/crypto/status` | [`crypto`] |
//! | `GET /api/peers`, `POST /api/peers/connect` | [`peers`] |
//! | `GET /api/dht/nodes` | [`dht`] |
//! | `POST /api/messages`, `GET /api/messages`, `GET /api/messages/stream` | [`messages`] |
//! | `GET /api/pins`, `POST /api/pins`, `DELETE /api/pins/{peerId}` | [`pins`] |
//! | `GET /metrics` | [`metrics`] |

pub mod auth;
pub mod crypto;
pub mod dht;
pub mod error;
pub mod guard;
pub mod health;
pub mod messages;
pub mod metrics;
pub mod peers;
pub mod pins;
pub mod sent;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::trace::TraceLayer;

pub use auth::{ApiToken, Authorized};
pub use error::AppError;
pub use guard::Exposure;

use crate::metrics::SharedRegistry;
use crate::node::{NodeError, NodeHandle};
use crate::pq::PqLayer;
use crate::status::SharedCryptoStatus;

/// Everything the handlers read. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The running node.
    pub node: NodeHandle,
    /// The PQ layer's status snapshot.
    pub crypto: SharedCryptoStatus,
    /// The metrics registry served at `/metrics`.
    pub registry: SharedRegistry,
    /// The bearer token.
    pub token: Arc<ApiToken>,
    /// When the node started.
    pub started: Instant,
    /// The data directory (checked by the health endpoint).
    pub data_dir: PathBuf,
    /// True when no peers are configured: being alone is then not a fault,
    /// and readiness does not wait for a peer's PQ outcome.
    pub alone_by_design: bool,
    /// The PQ layer: every peer's PQ state, messages, pins.
    pub pq: PqLayer,
    /// Where the API listens and whether it is exposed remotely.
    pub exposure: Exposure,
    /// Permits for requests that query the swarm ([`MAX_NODE_QUERIES`]).
    pub node_queries: Arc<Semaphore>,
    /// The [`MAX_NODE_WRITES`] permits of requests that change state.
    pub node_writes: Arc<Semaphore>,
    /// The peer cache (to reach known peers that are not connected).
    pub peer_cache: pqnode_keys::peercache::PeerCache,
    /// Records of other peers learned from gossip and the DHT.
    pub records: crate::discovery::book::RecordBook,
    /// Sends that did not wait, and their outcomes.
    pub sent: Arc<sent::SentLog>,
}

/// API reads that may wait on the swarm at once: with
/// [`MAX_NODE_WRITES`], well below the node's command channel
/// ([`crate::node::COMMAND_CAPACITY`]), so the PQ layer's own commands
/// always find room.
pub const MAX_NODE_QUERIES: usize = 32;
/// Authenticated requests that change state (dial a peer, send to a peer
/// that must be dialled first) have permits of their own: a flood of
/// unauthenticated reads cannot starve them.
pub const MAX_NODE_WRITES: usize = 8;
/// How long a request waits for a permit before it is answered `busy`.
const NODE_QUERY_WAIT: Duration = Duration::from_secs(1);

impl AppState {
    /// One of the [`MAX_NODE_QUERIES`] permits, for a request that talks to
    /// the node several times; `Busy` when none frees up in 1 s.
    pub async fn node_permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, NodeError> {
        tokio::time::timeout(NODE_QUERY_WAIT, self.node_queries.acquire())
            .await
            .map_err(|_| NodeError::Busy)?
            .map_err(|_| NodeError::Stopped)
    }

    /// One of the [`MAX_NODE_WRITES`] permits, for an authenticated request
    /// that changes state; `Busy` when none frees up in 1 s.
    pub async fn node_write_permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, NodeError> {
        tokio::time::timeout(NODE_QUERY_WAIT, self.node_writes.acquire())
            .await
            .map_err(|_| NodeError::Busy)?
            .map_err(|_| NodeError::Stopped)
    }

    /// Runs `query` against the node while holding one of the
    /// [`MAX_NODE_QUERIES`] permits; `Busy` when none frees up in 1 s.
    pub async fn node_query<T, F, Fut>(&self, query: F) -> Result<T, NodeError>
    where
        F: FnOnce(NodeHandle) -> Fut,
        Fut: Future<Output = Result<T, NodeError>>,
    {
        let _permit = tokio::time::timeout(NODE_QUERY_WAIT, self.node_queries.acquire())
            .await
            .map_err(|_| NodeError::Busy)?
            .map_err(|_| NodeError::Stopped)?;
        query(self.node.clone()).await
    }
}

/// Builds the router with a `TraceLayer`.
pub fn create_app(state: AppState) -> Router {
    Router::new()
        .route("/api/health", get(health::health))
        .route("/api/health/live", get(health::live))
        .route("/api/health/ready", get(health::ready))
        .route("/api/crypto/status", get(crypto::status))
        .route("/api/peers", get(peers::list))
        .route("/api/peers/connect", post(peers::connect))
        .route("/api/peers/{peer_id}", get(peers::get_one))
        .route("/api/dht/nodes", get(dht::nodes))
        .route(
            "/api/messages",
            get(messages::list)
                .post(messages::send)
                .layer(axum::extract::DefaultBodyLimit::max(messages::body_limit(
                    state.pq.max_message_size(),
                ))),
        )
        .route("/api/messages/stream", get(messages::stream))
        .route("/api/messages/sent/{id}", get(messages::sent))
        .route("/api/pins", get(pins::list).post(pins::add))
        .route("/api/pins/{peer_id}", axum::routing::delete(pins::remove))
        .route("/metrics", get(metrics::metrics))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
