//! One prometheus-client registry for the whole node, libp2p's metrics
//! included.
//!
//! Build it with [`new_registry`], let each part register its metrics
//! (the node with [`NodeMetrics::register`], the PQ layer with its own
//! `register(registry.sub_registry_with_prefix("pq"))`), then share it as a
//! [`SharedRegistry`] with the API, which serves it at `GET /metrics`.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::registry::Registry;

/// The registry shared with the API. Register metrics before serving; the
/// lock is held only while registering or encoding.
pub type SharedRegistry = Arc<Mutex<Registry>>;

/// A fresh registry with the `pqnode` prefix.
pub fn new_registry() -> Registry {
    Registry::with_prefix("pqnode")
}

/// Wraps a registry for sharing.
pub fn share(registry: Registry) -> SharedRegistry {
    Arc::new(Mutex::new(registry))
}

/// Encodes the registry in the OpenMetrics text format.
pub fn encode(registry: &SharedRegistry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    let guard = registry.lock().unwrap_or_else(PoisonError::into_inner);
    prometheus_client::encoding::text::encode(&mut out, &guard)?;
    Ok(out)
}

/// Why an inbound connection was denied by the per-IP limits.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IpDenyLabels {
    /// `concurrent` or `rate`.
    pub reason: &'static str,
}

/// The scope of an address this node would not dial or keep.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScopeLabels {
    /// `loopback`, `private`, `link-local` or `unroutable`.
    pub scope: &'static str,
}

/// The node's own metrics (besides libp2p's).
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    /// Connected peers.
    pub connected_peers: Gauge,
    /// Inbound connections denied by the per-IP limits, by reason.
    pub ip_limit_denied: Family<IpDenyLabels, Counter>,
    /// IPs forgotten by the full per-IP rate table (least recently seen).
    pub ip_limit_evicted: Counter,
    /// Incoming DHT records rejected by validation.
    pub dht_records_rejected: Counter,
    /// Incoming DHT records validated and stored.
    pub dht_records_stored: Counter,
    /// Incoming DHT records byte-identical to the stored one, accepted
    /// without verifying them again (also counted as stored).
    pub dht_records_identical: Counter,
    /// Incoming DHT records refused because their source (peer or
    /// network) holds its share of records for others.
    pub dht_records_over_quota: Counter,
    /// Dials refused by the address policy (an address a remote chose), by
    /// scope.
    pub dials_denied: Family<ScopeLabels, Counter>,
    /// Addresses from remote peers (identify, records) not kept, by scope.
    pub addrs_dropped: Family<ScopeLabels, Counter>,
}

impl NodeMetrics {
    /// Creates the metrics and registers them (under `node_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = NodeMetrics {
            connected_peers: Gauge::default(),
            ip_limit_denied: Family::default(),
            ip_limit_evicted: Counter::default(),
            dht_records_rejected: Counter::default(),
            dht_records_stored: Counter::default(),
            dht_records_identical: Counter::default(),
            dht_records_over_quota: Counter::default(),
            dials_denied: Family::default(),
            addrs_dropped: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("node");
        r.register(
            "connected_peers",
            "Peers with at least one established connection",
            m.connected_peers.clone(),
        );
        r.register(
            "ip_limit_denied",
            "Inbound connections denied by the per-IP limits",
            m.ip_limit_denied.clone(),
        );
        r.register(
            "ip_limit_evicted",
            "IPs forgotten by the full per-IP rate table, least recently seen first",
            m.ip_limit_evicted.clone(),
        );
        r.register(
            "dht_records_rejected",
            "Incoming DHT records rejected by validation",
            m.dht_records_rejected.clone(),
        );
        r.register(
            "dht_records_stored",
            "Incoming DHT records validated and stored",
            m.dht_records_stored.clone(),
        );
        r.register(
            "dht_records_identical",
            "Incoming DHT records identical to the stored one, stored without verifying again",
            m.dht_records_identical.clone(),
        );
        r.register(
            "dht_records_over_quota",
            "Incoming DHT records of other authors refused: their source peer or network holds its share (also counted as rejected)",
            m.dht_records_over_quota.clone(),
        );
        r.register(
            "dials_denied",
            "Dials refused by the address policy: loopback, private or unroutable addresses a remote peer gave",
            m.dials_denied.clone(),
        );
        r.register(
            "addrs_dropped",
            "Addresses from remote peers (identify, records) not kept under the address policy",
            m.addrs_dropped.clone(),
        );
        m
    }
}
