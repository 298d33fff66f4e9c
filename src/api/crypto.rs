//! `GET /api/crypto/status`: the PQ layer's [`CryptoStatus`] snapshot, as
//! the PQ layer and the start-up self-test filled it.

use axum::Json;
use axum::extract::State;

use super::AppState;
use crate::status::CryptoStatus;

/// `GET /api/crypto/status`.
pub async fn status(State(state): State<AppState>) -> Json<CryptoStatus> {
    Json(state.crypto.snapshot())
}
