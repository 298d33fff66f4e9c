//! `POST /api/messages`, `GET /api/messages`, `GET /api/messages/stream`.
//!
//! Message bodies are private: every route here needs the bearer token,
//! reading included. Bodies travel as UTF-8 text or, for binary data,
//! base64 (`"encoding": "base64"`). Each message says how it travelled:
//! `"security": "pq"` (with its suite) or `"classical"` (PROTOCOL.md §8.2).

use std::convert::Infallible;
use std::time::{Duration, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::Stream;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::{AppError, AppState, Authorized, sent};
use crate::pq::followers::Next;
use crate::pq::{InboundMessage, PqLayer};

/// Most messages one `GET /api/messages` returns.
pub const MAX_LIST: usize = 1000;

/// How a body is written in JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// UTF-8 text.
    #[default]
    Utf8,
    /// Standard base64.
    Base64,
}

/// `POST /api/messages` request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendRequest {
    /// The recipient's PeerId.
    pub to: String,
    /// The body, as `encoding` says.
    pub body: String,
    /// `utf8` (default) or `base64`.
    #[serde(default)]
    pub encoding: Encoding,
    /// `true` (default): answer once the receipt came. `false`: answer 202
    /// with an id at once; `GET /api/messages/sent/{id}` tells the outcome.
    #[serde(default = "yes")]
    pub wait: bool,
}

fn yes() -> bool {
    true
}

/// `POST /api/messages` answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SendResponse {
    /// The recipient.
    pub to: String,
    /// `pq` or `classical`.
    pub security: &'static str,
    /// The suite, for PQ.
    pub suite: Option<&'static str>,
    /// Why classically (`no-pq-protocol`, `no-common-suite`,
    /// `local-pq-unavailable`, `pq-disabled`), for classical.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Bytes sent.
    pub size: usize,
    /// Always true: the peer's receipt said it stored the message (§7 rev
    /// 4); anything else is an error response.
    pub delivered: bool,
    /// The message id it travelled with.
    pub message_id: u64,
}

/// A delivered message as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageJson {
    /// Local, increasing id (use it as `since`).
    pub id: u64,
    /// The sender.
    pub from: String,
    /// `pq` or `classical`.
    pub security: &'static str,
    /// The suite, for PQ.
    pub suite: Option<&'static str>,
    /// Why classically, for classical (as in [`SendResponse`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Unix milliseconds of delivery.
    pub received_at: u64,
    /// `utf8` when the body is valid UTF-8, else `base64`.
    pub encoding: Encoding,
    /// The body.
    pub body: String,
    /// Its size in bytes.
    pub size: usize,
}

impl From<&InboundMessage> for MessageJson {
    fn from(m: &InboundMessage) -> Self {
        let (encoding, body) = match std::str::from_utf8(&m.body) {
            Ok(text) => (Encoding::Utf8, text.to_owned()),
            Err(_) => (Encoding::Base64, B64.encode(&m.body[..])),
        };
        MessageJson {
            id: m.seq,
            from: m.from.to_base58(),
            security: m.security.as_str(),
            suite: m.security.suite().map(|s| s.name()),
            reason: m.security.classical_reason().map(|r| r.as_str()),
            received_at: m
                .received_at
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            encoding,
            body,
            size: m.body.len(),
        }
    }
}

/// `GET /api/messages` query.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    /// Only from this PeerId.
    pub from: Option<String>,
    /// Only messages with a larger id.
    #[serde(default)]
    pub since: u64,
    /// At most this many (default and maximum 1000).
    pub limit: Option<usize>,
}

use crate::discovery;
use crate::pq::{Delivery, SendError};

/// How long a message to a PeerId that is neither connected nor cached
/// waits for it to connect (a dial may be in flight) before the 404.
const UNKNOWN_PEER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The PQ layer, for message endpoints: refused on a bootstrap node.
fn layer(state: &AppState) -> Result<&PqLayer, AppError> {
    if !state.pq.inbox().is_accepting() {
        return Err(AppError::BootstrapRole);
    }
    Ok(&state.pq)
}

fn peer(s: &str, what: &str) -> Result<PeerId, AppError> {
    s.parse()
        .map_err(|_| AppError::BadRequest(format!("`{what}` is not a PeerId: {s:?}")))
}

/// The largest request body of `POST /api/messages`: a message of `max`
/// bytes as a JSON string, where escaping can make one byte six (`\u0000`;
/// base64 makes it 4/3), plus room for the other fields. Only read after
/// the token was checked.
pub fn body_limit(max: usize) -> usize {
    max.saturating_mul(6).saturating_add(64 * 1024)
}

/// Sends a message: answers once the receiver's receipt came, or (with
/// `"wait": false`) 202 at once with the id to ask about it later.
pub async fn send(
    _auth: Authorized,
    State(state): State<AppState>,
    body: Result<Json<SendRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, AppError> {
    let Json(req) = body.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            let max = state.pq.max_message_size();
            AppError::BodyTooLarge {
                limit: body_limit(max),
                max,
            }
        } else {
            AppError::BadRequest(e.body_text())
        }
    })?;
    let to = peer(&req.to, "to")?;
    let bytes = match req.encoding {
        Encoding::Utf8 => req.body.into_bytes(),
        Encoding::Base64 => B64
            .decode(req.body.as_bytes())
            .map_err(|e| AppError::BadRequest(format!("`body` is not base64: {e}")))?,
    };
    let size = bytes.len();
    let pq = layer(&state)?;
    if size > pq.max_message_size() {
        return Err(SendError::TooLarge {
            size,
            max: pq.max_message_size(),
        }
        .into());
    }
    if !req.wait {
        let Some((id, permit)) = state.sent.begin(to, size) else {
            return Err(AppError::Node(crate::node::NodeError::Busy));
        };
        let st = state.clone();
        tokio::spawn(async move {
            let outcome = match deliver(&st, to, bytes).await {
                Ok(d) => sent::Outcome::Delivered(d),
                Err(e) => {
                    let (status, code) = e.status_and_code();
                    sent::Outcome::Failed {
                        status: status.as_u16(),
                        code,
                        message: e.to_string(),
                    }
                }
            };
            st.sent.finish(id, outcome);
            drop(permit);
        });
        let location = format!("/api/messages/sent/{id}");
        let body = serde_json::json!({
            "id": id,
            "to": to.to_base58(),
            "size": size,
            "state": "pending",
            "location": location,
        });
        return Ok((
            StatusCode::ACCEPTED,
            [(axum::http::header::LOCATION, location)],
            Json(body),
        )
            .into_response());
    }
    let delivery = deliver(&state, to, bytes).await?;
    Ok(Json(SendResponse {
        to: to.to_base58(),
        security: delivery.security.as_str(),
        suite: delivery.security.suite().map(|s| s.name()),
        reason: delivery.security.classical_reason().map(|r| r.as_str()),
        size,
        delivered: true,
        message_id: delivery.message_id,
    })
    .into_response())
}

/// Sends `bytes` to `to` until its receipt: a peer that is known but not
/// connected is dialled from the peer cache first (its PQ session waited
/// for, 10 s at most in all).
async fn deliver(state: &AppState, to: PeerId, bytes: Vec<u8>) -> Result<Delivery, AppError> {
    let pq = layer(state)?;
    match pq.send(to, bytes.clone()).await {
        Err(SendError::NotConnected { .. }) => {
            let _permit = state.node_write_permit().await?;
            match discovery::connect_known(&state.node, &state.peer_cache, &state.records, pq, to)
                .await
            {
                // Not in the cache: it may be connecting right now (a
                // dial in flight); give it a moment before calling it unknown.
                Err(e @ discovery::ConnectError::Unknown(_)) => {
                    let _ = pq.wait_for_session(&to, UNKNOWN_PEER_WAIT).await;
                    match pq.send(to, bytes).await {
                        Err(SendError::NotConnected { .. }) => Err(e.into()),
                        r => Ok(r?),
                    }
                }
                Err(e) => Err(e.into()),
                Ok(()) => Ok(pq.send(to, bytes).await?),
            }
        }
        r => Ok(r?),
    }
}

/// `GET /api/messages/sent/{id}`: what became of a send made with
/// `"wait": false`.
pub async fn sent(
    _auth: Authorized,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    let id: u64 = id
        .parse()
        .map_err(|_| AppError::BadRequest(format!("`{id}` is not a send id")))?;
    state
        .sent
        .json(id)
        .map(Json)
        .ok_or(AppError::UnknownSend(id))
}

/// Lists delivered messages, oldest first, a page at a time: when more
/// follow, a `Link: <…?since=N…>; rel="next"` header says where the next
/// page starts.
pub async fn list(
    _auth: Authorized,
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let Query(q) = query.map_err(|e| AppError::BadRequest(e.body_text()))?;
    let from = q.from.as_deref().map(|f| peer(f, "from")).transpose()?;
    let limit = q.limit.unwrap_or(MAX_LIST).min(MAX_LIST);
    let (messages, more) = layer(&state)?.inbox().page(from, q.since, limit);
    let next = match (more, messages.last()) {
        (true, Some(last)) => {
            let from = from.map(|p| format!("&from={}", p.to_base58()));
            Some(format!(
                "</api/messages?since={}&limit={limit}{}>; rel=\"next\"",
                last.seq,
                from.unwrap_or_default()
            ))
        }
        _ => None,
    };
    let body = Json(messages.iter().map(MessageJson::from).collect::<Vec<_>>());
    Ok(match next {
        Some(link) => ([(axum::http::header::LINK, link)], body).into_response(),
        None => body.into_response(),
    })
}

/// Follows new messages as Server-Sent Events (`event: message`, JSON data)
/// until the node stops. Each follower has a bounded queue
/// ([`crate::pq::followers`]); one that falls further behind gets a last
/// `event: lagged` (`{"missed": n, "since": id}`: resume with
/// `GET /api/messages?since=id`) and the stream ends.
pub async fn stream(
    _auth: Authorized,
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, AppError> {
    let layer = layer(&state)?;
    let follower = layer.inbox().follow()?;
    let stop = layer.shutdown_signal();
    let events = futures::stream::unfold(Some(follower), |follower| async move {
        let mut follower = follower?;
        let event = match follower.next().await {
            Next::Message(m) => {
                let data = serde_json::to_string(&MessageJson::from(&m)).unwrap_or_default();
                Event::default().event("message").data(data)
            }
            Next::Lagged { missed, since } => {
                let data = serde_json::json!({ "missed": missed, "since": since });
                // The last event: the follower is no longer queued for.
                return Some((
                    Ok(Event::default().event("lagged").data(data.to_string())),
                    None,
                ));
            }
            Next::Closed => return None,
        };
        Some((Ok(event), Some(follower)))
    });
    // The stream ends when the node shuts down, so it never holds up exit.
    let events = futures::StreamExt::take_until(events, stop);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
