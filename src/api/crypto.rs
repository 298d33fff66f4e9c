//! `GET /api/crypto/status`: the PQ layer's [`CryptoStatus`] snapshot, as
//! the PQ layer and the start-up self-test filled it.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;

use super::AppState;
use super::auth::bearer_matches;
use crate::status::CryptoStatus;

/// `GET /api/crypto/status`. Without the token, reasons are shown without
/// file paths or OS error text; with it, in full.
pub async fn status(State(state): State<AppState>, headers: HeaderMap) -> Json<CryptoStatus> {
    let status = state.crypto.snapshot();
    if bearer_matches(&headers, &state.token) {
        Json(status)
    } else {
        Json(status.public())
    }
}
