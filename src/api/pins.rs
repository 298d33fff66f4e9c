//! `GET /api/pins`, `POST /api/pins`, `DELETE /api/pins/{peerId}` (bearer
//! token): the pins of PROTOCOL.md §8.3 in the node's database, listed in
//! pages, added and removed while the node runs. Database work runs on the
//! blocking pool.

use axum::Json;
use axum::extract::{Path, Query, State};
use libp2p::PeerId;
use pqnode_crypto::Suite;
use pqnode_keys::Fingerprint;
use pqnode_keys::db::PinRow;
use pqnode_keys::pins::PinSource;
use pqnode_keys::time::unix_now;
use serde::{Deserialize, Serialize};

use super::{AppError, AppState, Authorized};

/// Most pins one page lists.
pub const MAX_PAGE: usize = 1000;

/// One pin.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PinJson {
    /// The peer.
    pub peer_id: String,
    /// The suite, or `null` for an operator pin that applies to every suite.
    pub suite: Option<String>,
    /// SHA-256 of the pinned key, in the display form.
    pub fingerprint: String,
    /// `first-use`, `trusted` or `rotation`.
    pub source: PinSource,
    /// When it was pinned (unix seconds).
    pub pinned_at: u64,
}

impl From<&PinRow> for PinJson {
    fn from(r: &PinRow) -> Self {
        PinJson {
            peer_id: r.peer.to_base58(),
            suite: r.suite.map(|s| s.name().to_owned()),
            fingerprint: r.pin.fingerprint.to_string(),
            source: r.pin.source,
            pinned_at: r.pin.pinned_at,
        }
    }
}

/// The body of `GET /api/pins`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PinsResponse {
    /// This page.
    pub pins: Vec<PinJson>,
    /// Pass as `after` for the next page; `null` on the last one.
    pub next: Option<String>,
    /// First-use pins (limited, §9).
    pub first_use: u64,
    /// All pins.
    pub total: u64,
}

/// `GET /api/pins` query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    /// Only pins of peers after this PeerId (pagination).
    pub after: Option<String>,
    /// At most this many (default and maximum 1000).
    pub limit: Option<usize>,
    /// Only this peer's pins.
    pub peer: Option<String>,
}

/// The body of `POST /api/pins`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddPin {
    /// The peer.
    pub peer_id: String,
    /// SHA-256 of its PQ signing key: 64 hex digits, spaces allowed.
    pub fingerprint: String,
    /// The suite; every suite without a pin of its own when absent.
    pub suite: Option<String>,
}

/// `DELETE /api/pins/{peerId}` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    /// Only this suite's pin (`suite=any` for the suite-less one).
    pub suite: Option<String>,
}

/// The body of `DELETE /api/pins/{peerId}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    /// How many pins were removed.
    pub removed: usize,
}

fn peer(s: &str, what: &str) -> Result<PeerId, AppError> {
    s.parse()
        .map_err(|_| AppError::BadRequest(format!("`{what}` is not a PeerId: {s:?}")))
}

fn suite(s: &str) -> Result<Suite, AppError> {
    s.parse()
        .map_err(|e| AppError::BadRequest(format!("`suite`: {e}")))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
}

fn db_err(e: impl std::fmt::Display) -> AppError {
    AppError::Internal(format!("pin database: {e}"))
}

/// `GET /api/pins`.
pub async fn list(
    _auth: Authorized,
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<PinsResponse>, AppError> {
    let Query(q) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let after = q.after.as_deref().map(|a| peer(a, "after")).transpose()?;
    let only = q.peer.as_deref().map(|p| peer(p, "peer")).transpose()?;
    let limit = q.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let pins = state.pq.pins().clone();
    blocking(move || {
        let counts = pins.counts().map_err(db_err)?;
        let rows: Vec<PinRow> = match only {
            Some(p) => pins
                .pins_of(&p)
                .map_err(db_err)?
                .into_iter()
                .map(|(suite, pin)| PinRow {
                    peer: p,
                    suite,
                    pin,
                })
                .collect(),
            None => pins.list(after.as_ref(), limit).map_err(db_err)?,
        };
        let next = (only.is_none() && rows.len() == limit)
            .then(|| rows.last().map(|r| r.peer.to_base58()))
            .flatten();
        Ok(Json(PinsResponse {
            pins: rows.iter().map(PinJson::from).collect(),
            next,
            first_use: counts.first_use,
            total: counts.total,
        }))
    })
    .await
}

/// `POST /api/pins`: an operator pin (never limited or evicted).
pub async fn add(
    _auth: Authorized,
    State(state): State<AppState>,
    body: Result<Json<AddPin>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<PinJson>, AppError> {
    let Json(req) = body.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let p = peer(&req.peer_id, "peerId")?;
    let fingerprint: Fingerprint = req
        .fingerprint
        .parse()
        .map_err(|e| AppError::BadRequest(format!("`fingerprint`: {e}")))?;
    let s = req.suite.as_deref().map(suite).transpose()?;
    let pins = state.pq.pins().clone();
    let added = blocking(move || {
        let now = unix_now();
        pins.add_operator(&p, s, fingerprint, now).map_err(db_err)?;
        tracing::info!(peer = %p, suite = s.map(|s| s.name()).unwrap_or("any"), %fingerprint, "operator pin added through the API");
        Ok(Json(PinJson {
            peer_id: p.to_base58(),
            suite: s.map(|s| s.name().to_owned()),
            fingerprint: fingerprint.to_string(),
            source: PinSource::Trusted,
            pinned_at: now,
        }))
    })
    .await?;
    // A connected peer whose session key the new pin does not allow is
    // disconnected now, not at its next handshake.
    state.pq.enforce_pins(p).await;
    Ok(added)
}

/// `DELETE /api/pins/{peerId}[?suite=S]`.
pub async fn remove(
    _auth: Authorized,
    State(state): State<AppState>,
    Path(peer_id): Path<String>,
    query: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Removed>, AppError> {
    let Query(q) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let p = peer(&peer_id, "peerId")?;
    let s = q.suite.as_deref().map(suite).transpose()?;
    let pins = state.pq.pins().clone();
    blocking(move || {
        let removed = pins.remove(&p, s).map_err(db_err)?;
        tracing::info!(peer = %p, suite = s.map(|s| s.name()).unwrap_or("all"), removed, "pins removed through the API");
        Ok(Json(Removed { removed }))
    })
    .await
}
