//! `GET /api/dht/nodes`: the Kademlia routing table and its stats.

use axum::Json;
use axum::extract::State;

use super::{AppError, AppState};
use crate::node::RoutingTable;

/// `GET /api/dht/nodes` → `{nodes: [{peerId, addresses, connected, bucket}],
/// buckets, records, mode, protocol}`.
pub async fn nodes(State(state): State<AppState>) -> Result<Json<RoutingTable>, AppError> {
    Ok(Json(
        state
            .node_query(|n| async move { n.routing_table().await })
            .await?,
    ))
}
