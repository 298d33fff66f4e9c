//! The local HTTP API (axum): one file per resource.
//!
//! [`create_app`] builds the router over an [`AppState`]; [`serve`] runs it
//! until a shutdown future completes. JSON field names are camelCase. Read
//! endpoints need no token; endpoints that change state need
//! `Authorization: Bearer <token>` ([`auth`]).
//!
//! | route | file |
//! |---|---|
//! | `GET /api/health`, `/api/health/live`, `/api/health/ready` | [`health`] |
//! | `GET /api/crypto/status` | [`crypto`] |
//! | `GET /api/peers`, `POST /api/peers/connect` | [`peers`] |
//! | `GET /api/dht/nodes` | [`dht`] |
//! | `GET /metrics` | [`metrics`] |

pub mod auth;
pub mod crypto;
pub mod dht;
pub mod error;
pub mod health;
pub mod messages;
pub mod metrics;
pub mod peers;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

pub use auth::{ApiToken, Authorized};
pub use error::AppError;

use crate::metrics::SharedRegistry;
use crate::node::NodeHandle;
use crate::pq::PqLayer;
use crate::status::{PeerSecurityTable, SharedCryptoStatus};

/// Everything the handlers read. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The running node.
    pub node: NodeHandle,
    /// The PQ layer's status snapshot.
    pub crypto: SharedCryptoStatus,
    /// The PQ layer's per-peer session security.
    pub peer_security: PeerSecurityTable,
    /// The metrics registry served at `/metrics`.
    pub registry: SharedRegistry,
    /// The bearer token.
    pub token: Arc<ApiToken>,
    /// When the node started.
    pub started: Instant,
    /// The data directory (checked by the health endpoint).
    pub data_dir: PathBuf,
    /// True when no peers are configured: being alone is then not a fault.
    pub alone_by_design: bool,
    /// The PQ layer, when running (for the message endpoints).
    pub pq: Option<PqLayer>,
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
        .route("/api/dht/nodes", get(dht::nodes))
        .route("/api/messages", get(messages::list).post(messages::send))
        .route("/api/messages/stream", get(messages::stream))
        .route("/metrics", get(metrics::metrics))
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
