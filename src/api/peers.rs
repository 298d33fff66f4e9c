//! `GET /api/peers` and `POST /api/peers/connect`.

use axum::Json;
use axum::extract::State;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use super::{AppError, AppState, Authorized};
use crate::node::{DialOutcome, PeerInfo, RoutingEntry};
use crate::status::SecurityLevel;

/// One connected peer with its session security.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerView {
    /// What the swarm knows.
    #[serde(flatten)]
    pub info: PeerInfo,
    /// `pq`, `classical`, or `none` while no session exists.
    pub security: &'static str,
    /// The negotiated suite of a PQ session.
    pub suite: Option<&'static str>,
}

/// The body of `GET /api/peers`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeersResponse {
    /// Connected peers.
    pub peers: Vec<PeerView>,
    /// How many are connected.
    pub connected: usize,
    /// Peers known from the Kademlia routing table but not connected.
    pub known: Vec<RoutingEntry>,
}

/// `GET /api/peers`.
pub async fn list(State(state): State<AppState>) -> Result<Json<PeersResponse>, AppError> {
    let peers = state.node.peers().await?;
    let known: Vec<RoutingEntry> = state
        .node
        .routing_table()
        .await?
        .nodes
        .into_iter()
        .filter(|n| !peers.iter().any(|p| p.peer_id == n.peer_id))
        .collect();
    let peers: Vec<PeerView> = peers
        .into_iter()
        .map(|info| {
            let sec = state.peer_security.get(&info.peer_id);
            PeerView {
                security: match sec.as_ref().map(|s| s.level) {
                    Some(SecurityLevel::Pq) => "pq",
                    Some(SecurityLevel::Classical) => "classical",
                    None => "none",
                },
                suite: sec.and_then(|s| s.suite).map(|s| s.name()),
                info,
            }
        })
        .collect();
    Ok(Json(PeersResponse {
        connected: peers.len(),
        peers,
        known,
    }))
}

/// The body of `POST /api/peers/connect`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectRequest {
    /// The multiaddr to dial, e.g. `/ip4/192.0.2.1/tcp/4001/p2p/12D3KooW…`.
    pub address: String,
}

/// `POST /api/peers/connect` (bearer token): dials and waits for the outcome.
pub async fn connect(
    _auth: Authorized,
    State(state): State<AppState>,
    body: Result<Json<ConnectRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<DialOutcome>, AppError> {
    let Json(req) = body.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let addr: Multiaddr = req
        .address
        .parse()
        .map_err(|e| AppError::BadRequest(format!("address: not a multiaddr: {e}")))?;
    Ok(Json(state.node.dial(addr).await?))
}
