//! `GET /api/peers`, `GET /api/peers/{peer_id}` and `POST /api/peers/connect`.

use axum::Json;
use axum::extract::{Path, State};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use super::{AppError, AppState, Authorized};
use crate::node::configured::ConfiguredPeer;
use crate::node::{DialOutcome, PeerInfo, RoutingEntry};
use crate::pq::PqStatus;

/// One connected peer with its PQ state.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerView {
    /// What the swarm knows.
    #[serde(flatten)]
    pub info: PeerInfo,
    /// `pq`, `classical`, `unknown` (nothing known yet: nothing is sent),
    /// `negotiating` (a handshake in flight) or `refused`.
    pub security: &'static str,
    /// Why it is classical or refused.
    pub reason: Option<&'static str>,
    /// The negotiated suite of a PQ session.
    pub suite: Option<&'static str>,
    /// The PQ session's id (the first 8 bytes of its transcript hash).
    pub session_id: Option<String>,
    /// Seconds since the PQ session was established.
    pub session_age_secs: Option<u64>,
    /// Record-layer bytes sent through the PQ session.
    pub session_bytes_sent: Option<u64>,
    /// Record-layer bytes received through the PQ session.
    pub session_bytes_received: Option<u64>,
    /// Sessions with this peer replaced by a re-handshake (§5.1) since it
    /// connected.
    pub rehandshakes: u32,
    /// A re-handshake is pending or in flight beside the current PQ
    /// session, which carries the messages until it is replaced.
    pub rehandshaking: bool,
    /// Whether a PQ key is pinned for this peer (under any suite).
    pub pinned: bool,
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
    /// Peers in the peer cache (usable, not connected), most useful first:
    /// a message to one of them dials it first.
    pub cached: Vec<CachedView>,
    /// Peers refused in the last 10 minutes and no longer connected, most
    /// recent first (at most 1024): why they are not in `peers`.
    pub refused: Vec<RefusedView>,
    /// The configured `peers`, in their order: redial state and PQ outcome.
    pub configured: Vec<ConfiguredView>,
}

/// A configured peer: how its redials stand, and what its PQ status is
/// while connected or recently refused.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfiguredView {
    /// Address, PeerId, `state` (`connected` / `dialing` / `waiting`),
    /// `failures`, `lastError`, `nextRetrySecs`.
    #[serde(flatten)]
    pub redial: ConfiguredPeer,
    /// Its PQ status (`pq`, `classical`, `refused`, …), when known.
    pub security: Option<&'static str>,
    /// Why it is classical or refused.
    pub reason: Option<&'static str>,
}

/// A peer refused recently (its connections were closed).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedView {
    /// The peer.
    pub peer_id: String,
    /// Why: `policy`, `downgrade`, `key-mismatch`, `abusive`, …
    pub reason: &'static str,
    /// Seconds since the refusal.
    pub seconds_ago: u64,
}

/// One peer of the peer cache.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedView {
    /// The peer.
    pub peer_id: String,
    /// Its addresses, most useful first.
    pub addresses: Vec<String>,
    /// The suite of its last PQ session with us.
    pub suite: Option<&'static str>,
    /// Whether a PQ key is pinned for it.
    pub pinned: bool,
    /// Successes over attempts (connections, dials).
    pub success_rate: f64,
    /// What ranks it: `pinned`, `pq-proven` (it held a PQ session with
    /// this node), `connected` or `learned` (a record named it).
    pub evidence: &'static str,
    /// When it was last seen connected (or its record learned), unix seconds.
    pub last_seen: u64,
    /// How we first learned of it (`bootstrap`, `cache`, `mdns`, `dht`,
    /// `gossip`, `manual`, `inbound`).
    pub source: &'static str,
    /// Whether it is connected: always false here (connected peers are
    /// listed under `peers`).
    pub connected: bool,
}

impl CachedView {
    fn of(c: pqnode_keys::peercache::CachedPeer, pinned: bool) -> CachedView {
        CachedView {
            peer_id: c.peer.to_base58(),
            addresses: c
                .addrs
                .iter()
                .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
                .map(|a| a.to_string())
                .collect(),
            suite: c.suite.map(|s| s.name()),
            pinned,
            success_rate: c.success_rate(),
            evidence: c.evidence(pinned).as_str(),
            last_seen: c.last_seen,
            source: c.source.as_str(),
            connected: false,
        }
    }
}

/// A verified PQ record of a peer (learned from gossip or the DHT; not a pin).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordView {
    /// Its suite.
    pub suite: &'static str,
    /// Its sequence number.
    pub seq: u64,
    /// Fingerprint of the PQ signing key it names.
    pub fingerprint: String,
    /// Issued, unix seconds.
    pub issued_at: u64,
    /// Expires, unix seconds.
    pub expires_at: u64,
    /// Addresses it names (none for a private node).
    pub addresses: Vec<String>,
    /// `gossip` or `dht`.
    pub source: &'static str,
}

impl From<crate::node::LearnedRecord> for RecordView {
    fn from(r: crate::node::LearnedRecord) -> Self {
        RecordView {
            suite: r.suite.name(),
            seq: r.seq,
            fingerprint: r.fingerprint,
            issued_at: r.issued_at,
            expires_at: r.expires_at,
            addresses: r.addrs.iter().map(|a| a.to_string()).collect(),
            source: r.source.as_str(),
        }
    }
}

/// The body of `GET /api/peers/{peer_id}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerDetail {
    /// The peer.
    pub peer_id: String,
    /// Whether it is connected.
    pub connected: bool,
    /// Its connection and PQ state, when connected.
    pub peer: Option<PeerView>,
    /// Its peer-cache entry.
    pub cached: Option<CachedView>,
    /// Its verified record: learned, or looked up in the DHT for this request.
    pub record: Option<RecordView>,
    /// Whether a PQ key is pinned for it.
    pub pinned: bool,
}

/// `GET /api/peers`.
pub async fn list(State(state): State<AppState>) -> Result<Json<PeersResponse>, AppError> {
    let peers = state.node_query(|n| async move { n.peers().await }).await?;
    let known: Vec<RoutingEntry> = state
        .node_query(|n| async move { n.routing_table().await })
        .await?
        .nodes
        .into_iter()
        .filter(|n| !peers.iter().any(|p| p.peer_id == n.peer_id))
        .collect();
    // The cache and the pins are database reads: off the async threads.
    let (cache, pq) = (state.peer_cache.clone(), state.pq.clone());
    let connected: Vec<libp2p::PeerId> = peers.iter().map(|p| p.peer_id).collect();
    let cached = tokio::task::spawn_blocking(move || {
        let best = cache.best(
            pqnode_keys::time::unix_now(),
            pqnode_keys::peercache::MAX_PEERS,
        )?;
        Ok::<_, pqnode_keys::db::DbError>(
            best.into_iter()
                .filter(|c| !connected.contains(&c.peer))
                .map(|c| {
                    let pinned = pq.is_pinned(&c.peer);
                    CachedView::of(c, pinned)
                })
                .collect::<Vec<_>>(),
        )
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))?
    .map_err(|e| AppError::Unavailable(format!("peer cache: {e}")))?;
    let peers: Vec<PeerView> = peers.into_iter().map(|info| view(&state, info)).collect();
    let mut refused = state.pq.recent_refusals();
    refused.sort_by_key(|(_, _, ago)| *ago);
    let refused = refused
        .into_iter()
        .map(|(peer, reason, ago)| RefusedView {
            peer_id: peer.to_base58(),
            reason: reason.as_str(),
            seconds_ago: ago.as_secs(),
        })
        .collect();
    let stats = state.node_query(|n| async move { n.stats().await }).await?;
    let configured = stats
        .configured
        .into_iter()
        .map(|redial| {
            let status = redial.peer_id.and_then(|id| {
                state
                    .pq
                    .peer(&id)
                    .map(|p| p.status)
                    .or_else(|| state.pq.outcome(&id))
            });
            ConfiguredView {
                security: status.as_ref().map(PqStatus::name),
                reason: status.as_ref().and_then(PqStatus::reason),
                redial,
            }
        })
        .collect();
    Ok(Json(PeersResponse {
        connected: peers.len(),
        peers,
        known,
        cached,
        refused,
        configured,
    }))
}

fn view(state: &AppState, info: PeerInfo) -> PeerView {
    let snapshot = state.pq.peer(&info.peer_id);
    let (status, bytes, rehandshakes, rehandshaking) = match snapshot {
        Some(p) => (p.status, p.session_bytes, p.rehandshakes, p.rehandshaking),
        None => (PqStatus::Unknown, None, 0, false),
    };
    let session_age_secs = match &status {
        PqStatus::Pq(s) => Some(
            std::time::SystemTime::now()
                .duration_since(s.since)
                .unwrap_or_default()
                .as_secs(),
        ),
        _ => None,
    };
    PeerView {
        session_age_secs,
        session_bytes_sent: bytes.map(|(sent, _)| sent),
        session_bytes_received: bytes.map(|(_, received)| received),
        rehandshakes,
        rehandshaking,
        security: status.name(),
        reason: status.reason(),
        suite: status.suite().map(|s| s.name()),
        session_id: match &status {
            PqStatus::Pq(s) => Some(s.id.clone()),
            _ => None,
        },
        pinned: state.pq.is_pinned(&info.peer_id),
        info,
    }
}

/// `GET /api/peers/{peer_id}`: what is known of one peer. A record the
/// node lacks is looked up in the DHT (bounded, 10 s) and verified; 404
/// `unknown_peer` when nothing at all is known.
pub async fn get_one(
    State(state): State<AppState>,
    Path(peer_id): Path<String>,
) -> Result<Json<PeerDetail>, AppError> {
    let peer: libp2p::PeerId = peer_id
        .parse()
        .map_err(|e| AppError::BadRequest(format!("`{peer_id}` is not a PeerId: {e}")))?;
    let _permit = state.node_permit().await?;
    let connected = state
        .node
        .peers()
        .await?
        .into_iter()
        .find(|p| p.peer_id == peer)
        .map(|info| view(&state, info));
    let cache = state.peer_cache.clone();
    let cached = tokio::task::spawn_blocking(move || cache.get(&peer))
        .await
        .map_err(|e| AppError::Internal(e.to_string()))?
        .map_err(|e| AppError::Unavailable(format!("peer cache: {e}")))?;
    let pinned = state.pq.is_pinned(&peer);
    let mut record = state.records.get(&peer);
    if record.is_none() && peer != state.node.peer_id() {
        let mut suites = state.pq.suites();
        if suites.is_empty() {
            suites = pqnode_crypto::Suite::ALL.to_vec();
        }
        record = crate::discovery::book::fetch_record(
            &state.node,
            &state.records,
            &state.peer_cache,
            peer,
            &suites,
        )
        .await
        .map_err(|crate::discovery::book::FetchError::Node(e)| AppError::Node(e))?;
    }
    if connected.is_none() && cached.is_none() && record.is_none() {
        return Err(crate::discovery::ConnectError::Unknown(peer).into());
    }
    Ok(Json(PeerDetail {
        peer_id: peer.to_base58(),
        connected: connected.is_some(),
        peer: connected,
        cached: cached.map(|c| CachedView::of(c, pinned)),
        record: record.map(RecordView::from),
        pinned,
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
    let _permit = state.node_write_permit().await?;
    Ok(Json(state.node.dial(addr).await?))
}
