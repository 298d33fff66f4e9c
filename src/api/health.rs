//! `GET /api/health`, `/api/health/live`, `/api/health/ready`.
//!
//! `/api/health` answers
//! `{status, timestamp, uptime, version, components: {crypto, p2p, dht, storage}}`
//! where `status` and each component's `status` are `ok | degraded | error`,
//! each component also carrying a `detail` string; `timestamp` is RFC 3339
//! (UTC) and `uptime` whole seconds. HTTP 200 for ok and degraded, 503 for
//! error. The overall status is the worst component's.

use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::AppState;
use crate::node::NodeStats;
use crate::status::{CryptoMode, CryptoStatus};

/// A health level. Ordered: `Ok < Degraded < Error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Working as intended.
    Ok,
    /// Working, but with a reduced guarantee (e.g. PQ unavailable locally).
    Degraded,
    /// Not working.
    Error,
}

/// One component's health.
#[derive(Clone, Debug, Serialize)]
pub struct Component {
    /// The level.
    pub status: Level,
    /// A short explanation.
    pub detail: String,
}

impl Component {
    fn new(status: Level, detail: impl Into<String>) -> Self {
        Component {
            status,
            detail: detail.into(),
        }
    }
}

/// The components.
#[derive(Clone, Debug, Serialize)]
pub struct Components {
    /// The PQ layer.
    pub crypto: Component,
    /// The swarm: listening and connected.
    pub p2p: Component,
    /// The Kademlia routing table.
    pub dht: Component,
    /// The data directory.
    pub storage: Component,
}

/// The body of `GET /api/health`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// The worst component's level.
    pub status: Level,
    /// Now, RFC 3339 UTC.
    pub timestamp: String,
    /// Seconds since start.
    pub uptime: u64,
    /// pqnode's version.
    pub version: &'static str,
    /// Per component.
    pub components: Components,
}

fn crypto_component(c: &CryptoStatus) -> Component {
    match c.mode {
        CryptoMode::Disabled => Component::new(Level::Ok, "PQ disabled by policy"),
        CryptoMode::ClassicalFallback => Component::new(
            Level::Degraded,
            format!(
                "PQ unavailable locally: {}",
                c.unavailable_reason
                    .as_deref()
                    .map_or_else(|| "unknown reason".to_owned(), crate::status::public_reason)
            ),
        ),
        CryptoMode::Pq if !c.initialized => {
            Component::new(Level::Degraded, "PQ layer not initialized")
        }
        CryptoMode::Pq => Component::new(Level::Ok, format!("PQ active ({})", c.algorithm)),
    }
}

fn p2p_component(stats: &Result<NodeStats, crate::node::NodeError>, alone: bool) -> Component {
    match stats {
        Err(e) => Component::new(Level::Error, format!("swarm not answering: {e}")),
        Ok(s) if s.listen_addrs.is_empty() => Component::new(Level::Error, "not listening"),
        Ok(s) if s.connected_peers == 0 && !alone => {
            Component::new(Level::Degraded, "no connected peers")
        }
        Ok(s) => Component::new(
            Level::Ok,
            format!(
                "{} peers, {} listen addresses",
                s.connected_peers,
                s.listen_addrs.len()
            ),
        ),
    }
}

fn dht_component(stats: &Result<NodeStats, crate::node::NodeError>, alone: bool) -> Component {
    match stats {
        Err(_) => Component::new(Level::Error, "swarm not answering"),
        Ok(s) if s.routing_table_size == 0 && !alone => {
            Component::new(Level::Degraded, "routing table empty")
        }
        Ok(s) => Component::new(
            Level::Ok,
            format!(
                "{} peers in the routing table, mode {}",
                s.routing_table_size, s.kad_mode
            ),
        ),
    }
}

fn storage_component(state: &AppState) -> Component {
    match std::fs::metadata(&state.data_dir) {
        Ok(m) if m.is_dir() && !m.permissions().readonly() => {
            Component::new(Level::Ok, "data directory writable")
        }
        Ok(_) => Component::new(Level::Error, "data directory not a writable directory"),
        Err(e) => Component::new(Level::Error, format!("data directory: {}", e.kind())),
    }
}

/// Computes the health report.
pub async fn report(state: &AppState) -> Health {
    let stats = state.node_query(|n| async move { n.stats().await }).await;
    let components = Components {
        crypto: crypto_component(&state.crypto.snapshot()),
        p2p: p2p_component(&stats, state.alone_by_design),
        dht: dht_component(&stats, state.alone_by_design),
        storage: storage_component(state),
    };
    let status = [
        components.crypto.status,
        components.p2p.status,
        components.dht.status,
        components.storage.status,
    ]
    .into_iter()
    .max()
    .unwrap_or(Level::Error);
    Health {
        status,
        timestamp: pqnode_keys::time::rfc3339_millis(SystemTime::now()),
        uptime: state.started.elapsed().as_secs(),
        version: env!("CARGO_PKG_VERSION"),
        components,
    }
}

/// `GET /api/health`.
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let health = report(&state).await;
    let code = match health.status {
        Level::Ok | Level::Degraded => StatusCode::OK,
        Level::Error => StatusCode::SERVICE_UNAVAILABLE,
    };
    (code, Json(health))
}

/// Readiness of a node with configured peers: the first configured peer
/// (in the order of `peers`) whose PQ status has settled, one it can talk
/// to before one it refused (which is named, with why).
fn configured_peer_outcome(state: &AppState, stats: &NodeStats) -> (bool, String) {
    let mut connected = false;
    let mut refused = None;
    for peer in &stats.configured_peers {
        if let Some(status) = state.pq.outcome(peer) {
            let detail = match status.reason() {
                Some(reason) => format!("{} ({reason})", status.name()),
                None => status.name().to_owned(),
            };
            let outcome = format!("configured peer {peer}: {detail}");
            if matches!(status, crate::pq::PqStatus::Refused(_)) {
                refused.get_or_insert(outcome);
                continue;
            }
            return (true, outcome);
        }
        connected |= state.pq.peer(peer).is_some();
    }
    if let Some(outcome) = refused {
        return (true, outcome);
    }
    let reason = if connected {
        "waiting for the PQ outcome of a configured peer"
    } else {
        "no configured peer connected yet"
    };
    (false, reason.to_owned())
}

/// `GET /api/health/live`: the process answers.
pub async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /api/health/ready`: listening and then
/// - with configured `peers`: one of them has a settled PQ outcome (a
///   session, `classical` or `refused`): until then a message to it would
///   wait or be refused, so the node is not ready for its operator yet;
/// - without (alone by design): nothing more.
///
/// 200 when ready, 503 otherwise; `reason` says which condition holds.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    let stats = state.node_query(|n| async move { n.stats().await }).await;
    let (ready, reason) = match &stats {
        Err(e) => (false, format!("swarm not answering: {e}")),
        Ok(s) if s.listen_addrs.is_empty() => (false, "not listening".to_owned()),
        Ok(s) if !state.alone_by_design => configured_peer_outcome(&state, s),
        Ok(_) => (true, "ready".to_owned()),
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(serde_json::json!({
            "status": if ready { "ok" } else { "not_ready" },
            "reason": reason,
        })),
    )
}
