//! `GET /metrics`: the registry in the OpenMetrics text format.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;

use super::{AppError, AppState};

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, AppError> {
    let body = crate::metrics::encode(&state.registry)
        .map_err(|_| AppError::Internal("metrics encoding failed".to_owned()))?;
    Ok(([(CONTENT_TYPE, CONTENT_TYPE_OPENMETRICS)], body))
}
