//! The API's error type: every failure becomes a JSON body
//! `{"error": {"code": "...", "message": "..."}}` with a fitting status.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::node::NodeError;
use crate::pq::SendError;
use pqnode_crypto::receipt::ReceiptStatus;

/// An error answered by the API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// No or a wrong bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The request's `Host` is not this API's (DNS rebinding defence).
    #[error("Host {0:?} is not this API's address; use 127.0.0.1, [::1] or localhost")]
    MisdirectedHost(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// No send with this id is remembered.
    #[error(
        "no send {0} is known (ids come from POST /api/messages with \"wait\": false; the last 4096 are kept)"
    )]
    UnknownSend(u64),
    /// The request body is larger than any message it could carry.
    #[error(
        "request body over {limit} bytes: larger than any message of limits.max_message_size ({max} bytes) can be, encoded"
    )]
    BodyTooLarge {
        /// The body limit.
        limit: usize,
        /// `limits.max_message_size`.
        max: usize,
    },
    /// The node did not do what was asked.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A message could not be sent.
    #[error(transparent)]
    Send(#[from] SendError),
    /// Sending to a peer that is not connected: it could not be reached.
    #[error(transparent)]
    Connect(#[from] crate::discovery::ConnectError),
    /// As many followers of the message stream as allowed already.
    #[error(transparent)]
    TooManyFollowers(#[from] crate::pq::TooManyFollowers),
    /// `role = "bootstrap"`: no application messages here.
    #[error(
        "this node runs as a bootstrap node (role = \"bootstrap\"): it neither sends, \
         stores nor delivers application messages"
    )]
    BootstrapRole,
    /// A part of the node is not running.
    #[error("{0}")]
    Unavailable(String),
    /// Something that should not happen.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    pub(crate) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AppError::MisdirectedHost(_) => (StatusCode::MISDIRECTED_REQUEST, "misdirected_host"),
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AppError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            AppError::UnknownSend(_) => (StatusCode::NOT_FOUND, "unknown_send"),
            AppError::Node(NodeError::Dial(_)) => (StatusCode::BAD_GATEWAY, "dial_failed"),
            AppError::Node(NodeError::Timeout(_)) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            AppError::Node(NodeError::Busy) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            AppError::Node(NodeError::Stopped) => (StatusCode::SERVICE_UNAVAILABLE, "node_stopped"),
            AppError::Node(_) => (StatusCode::INTERNAL_SERVER_ERROR, "node_error"),
            AppError::Send(SendError::TooLarge { .. }) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
            }
            AppError::Send(SendError::PqRequired { .. }) => (StatusCode::CONFLICT, "pq_required"),
            AppError::Send(SendError::PinnedWithoutSession { .. }) => {
                (StatusCode::CONFLICT, "pinned_without_session")
            }
            AppError::Send(SendError::StatusPending { .. }) => {
                (StatusCode::CONFLICT, "pq_status_pending")
            }
            AppError::Send(SendError::Refused { .. }) => (StatusCode::CONFLICT, "peer_refused"),
            AppError::Send(SendError::NotConnected { .. }) => {
                (StatusCode::CONFLICT, "not_connected")
            }
            AppError::Send(SendError::Unreachable { .. }) => {
                (StatusCode::BAD_GATEWAY, "unreachable")
            }
            AppError::Send(SendError::Busy { .. }) => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            AppError::Send(SendError::ShuttingDown) => {
                (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
            }
            AppError::Send(SendError::NotDelivered { status, .. }) => match status {
                ReceiptStatus::InboxFull => (StatusCode::SERVICE_UNAVAILABLE, "inbox_full"),
                ReceiptStatus::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large_for_peer"),
                ReceiptStatus::Refused => (StatusCode::FORBIDDEN, "refused_by_peer"),
                ReceiptStatus::Incomplete => (StatusCode::BAD_GATEWAY, "incomplete"),
                _ => (StatusCode::BAD_GATEWAY, "not_delivered"),
            },
            AppError::Send(SendError::NoReceipt { .. }) => {
                (StatusCode::GATEWAY_TIMEOUT, "no_receipt")
            }
            AppError::Send(_) => (StatusCode::BAD_GATEWAY, "session_ended"),
            AppError::Connect(crate::discovery::ConnectError::Unknown(_)) => {
                (StatusCode::NOT_FOUND, "unknown_peer")
            }
            AppError::Connect(crate::discovery::ConnectError::Unreachable { .. }) => {
                (StatusCode::BAD_GATEWAY, "unreachable")
            }
            AppError::Connect(_) => (StatusCode::INTERNAL_SERVER_ERROR, "peer_cache"),
            AppError::TooManyFollowers(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "too_many_followers")
            }
            AppError::BootstrapRole => (StatusCode::CONFLICT, "bootstrap_role"),
            AppError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // A busy node under a request flood would log every refusal.
        if status.is_server_error() && code != "busy" {
            tracing::warn!(error = %self, "API request failed");
        }
        let body = Json(json!({ "error": { "code": code, "message": self.to_string() } }));
        let mut response = (status, body).into_response();
        if matches!(self, AppError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if code == "busy" {
            // A retry-later, never a failure: tell clients when.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
