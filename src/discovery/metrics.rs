//! Counters of discovery, `pqnode_discovery_*`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Counters of discovery: the bootstrap list, trimming, DHT records, gossip
/// and the fallback chain.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    /// Bootstrap dials by outcome (`connected`, `failed`).
    pub dials: Family<OutcomeLabels, Counter>,
    /// Bootstrap peers connected now.
    pub connected: Gauge,
    /// Peers closed by connection trimming.
    pub trimmed: Counter,
    /// Our records put into the DHT, by outcome (`stored`, `failed`).
    pub dht_puts: Family<OutcomeLabels, Counter>,
    /// Records looked up in the DHT, by outcome (`found`, `invalid`,
    /// `not_found`).
    pub dht_gets: Family<OutcomeLabels, Counter>,
    /// Kademlia bootstrap queries started.
    pub kad_bootstraps: Counter,
    /// Our gossip announcements published.
    pub gossip_published: Counter,
    /// Gossip announcements received, by outcome (`accepted`, `rejected`,
    /// `ignored`: not checked, e.g. too many in flight).
    pub gossip_received: Family<OutcomeLabels, Counter>,
    /// Steps of the fallback chain entered (`cache`, `bootstrap`, `mdns`,
    /// `manual`).
    pub fallback: Family<StepLabels, Counter>,
}

/// An outcome label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The outcome.
    pub outcome: &'static str,
}

/// The label of [`Metrics::fallback`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// The step.
    pub step: &'static str,
}

impl Metrics {
    /// Creates and registers them under `discovery_`.
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> Metrics {
        let m = Metrics::default();
        let r = registry.sub_registry_with_prefix("discovery");
        r.register(
            "bootstrap_dials",
            "Dials of bootstrap peers, by outcome",
            m.dials.clone(),
        );
        r.register(
            "bootstrap_connected",
            "Bootstrap peers connected now",
            m.connected.clone(),
        );
        r.register(
            "connections_trimmed",
            "Peers closed by connection trimming (above high water)",
            m.trimmed.clone(),
        );
        r.register(
            "dht_puts",
            "Our PQ records put into the DHT, by outcome",
            m.dht_puts.clone(),
        );
        r.register(
            "dht_gets",
            "PQ records looked up in the DHT, by outcome",
            m.dht_gets.clone(),
        );
        r.register(
            "kad_bootstraps",
            "Kademlia bootstrap queries started",
            m.kad_bootstraps.clone(),
        );
        r.register(
            "gossip_published",
            "Our PQ record announcements published on gossip",
            m.gossip_published.clone(),
        );
        r.register(
            "gossip_received",
            "PQ record announcements received on gossip, by outcome",
            m.gossip_received.clone(),
        );
        r.register(
            "fallback_steps",
            "Steps of the fallback chain entered (too few peers connected)",
            m.fallback.clone(),
        );
        m
    }

    /// Counts a DHT put.
    pub fn put(&self, outcome: &'static str) {
        self.dht_puts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts a DHT lookup.
    pub fn get(&self, outcome: &'static str) {
        self.dht_gets
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Counts a received announcement.
    pub fn gossip(&self, outcome: &'static str) {
        self.gossip_received
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The count of DHT lookups with `outcome`.
    pub fn get_count(&self, outcome: &'static str) -> u64 {
        self.dht_gets
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }

    /// The count of received announcements with `outcome`.
    pub fn gossip_count(&self, outcome: &'static str) -> u64 {
        self.gossip_received
            .get_or_create(&OutcomeLabels { outcome })
            .get()
    }
}
