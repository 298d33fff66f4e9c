//! Gossip announcements of PQ peer records on topic [`TOPIC`].
//!
//! - Strict signing: every message is signed by its author's libp2p key and
//!   unsigned ones are dropped by gossipsub itself.
//! - Message id = SHA-256 of the data, so one record announced twice is one
//!   message.
//! - Messages are validated by us ([`gossipsub::ConfigBuilder::validate_messages`]):
//!   the event loop checks the cheap things (size, author present), then
//!   the §4 record checks run on the blocking pool, bounded, with the
//!   author as the expected PeerId; the verdict goes back to gossipsub
//!   (`Accept`, or `Reject`, which stops propagation and lowers the
//!   sender's score: [`score_params`]).
//! - [`Announcer`] (sans-IO) decides when we announce: at start, as soon as
//!   a peer shares the topic, then every [`ANNOUNCE_EVERY`]. A private node
//!   announces nothing.

use std::time::{Duration, Instant};

use libp2p::gossipsub;
use sha2::Digest;

/// The topic of PQ record announcements.
pub const TOPIC: &str = "pqnode/peers/1";
/// We announce our records this often.
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(30 * 60);
/// While nobody shares the topic, we try again this often.
pub const ANNOUNCE_RETRY: Duration = Duration::from_secs(2);
/// Largest announcement (a record is about 7.5 KiB with Dilithium5).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Announcements being verified at once; beyond, they are ignored (not
/// propagated, no penalty) and counted.
pub const MAX_VERIFYING: usize = 8;

/// The topic.
pub fn topic() -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(TOPIC)
}

/// The gossipsub configuration: strict signing, our validation, message id
/// = SHA-256 of the data.
pub fn config() -> Result<gossipsub::Config, String> {
    gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(MAX_MESSAGE)
        .message_id_fn(|m: &gossipsub::Message| {
            gossipsub::MessageId::from(sha2::Sha256::digest(&m.data).to_vec())
        })
        .build()
        .map_err(|e| e.to_string())
}

/// Peer scoring for [`TOPIC`]: an invalid announcement costs its sender
/// 100 points (one takes it below the graylist threshold, -80: its
/// messages are ignored until the penalty decays). The topic is quiet by
/// design, so mesh delivery deficits are not penalised.
pub fn score_params() -> (gossipsub::PeerScoreParams, gossipsub::PeerScoreThresholds) {
    let params_for_topic = gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -100.0,
        invalid_message_deliveries_decay: 0.9,
        ..gossipsub::TopicScoreParams::default()
    };
    let mut params = gossipsub::PeerScoreParams::default();
    params.topics.insert(topic().hash(), params_for_topic);
    (params, gossipsub::PeerScoreThresholds::default())
}

/// When to announce, sans-IO.
#[derive(Debug)]
pub struct Announcer {
    enabled: bool,
    next: Instant,
}

impl Announcer {
    /// An announcer; `enabled` is false for a private node.
    pub fn new(enabled: bool, now: Instant) -> Announcer {
        Announcer { enabled, next: now }
    }

    /// Whether to announce now, given whether any peer shares the topic
    /// and whether we have records.
    pub fn due(&self, now: Instant, topic_peers: usize, have_records: bool) -> bool {
        self.enabled && have_records && topic_peers > 0 && now >= self.next
    }

    /// The announcement went out (or gossipsub already had it).
    pub fn published(&mut self, now: Instant) {
        self.next = now + ANNOUNCE_EVERY;
    }

    /// Nobody could take it: try again shortly.
    pub fn failed(&mut self, now: Instant) {
        self.next = now + ANNOUNCE_RETRY;
    }

    /// Our records changed: announce them as soon as possible.
    pub fn changed(&mut self, now: Instant) {
        self.next = self.next.min(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announces_once_a_peer_shares_the_topic_then_every_half_hour() {
        let t0 = Instant::now();
        let mut a = Announcer::new(true, t0);
        assert!(!a.due(t0, 0, true), "nobody to tell");
        assert!(!a.due(t0, 1, false), "nothing to tell");
        assert!(a.due(t0, 1, true));
        a.failed(t0);
        assert!(!a.due(t0 + Duration::from_secs(1), 1, true));
        assert!(a.due(t0 + ANNOUNCE_RETRY, 1, true));
        a.published(t0 + ANNOUNCE_RETRY);
        assert!(!a.due(t0 + ANNOUNCE_RETRY + Duration::from_secs(60), 5, true));
        assert!(a.due(t0 + ANNOUNCE_RETRY + ANNOUNCE_EVERY, 5, true));
        a.published(t0);
        a.changed(t0 + Duration::from_secs(10));
        assert!(a.due(t0 + Duration::from_secs(10), 1, true));
    }

    #[test]
    fn a_private_node_never_announces() {
        let t0 = Instant::now();
        let a = Announcer::new(false, t0);
        assert!(!a.due(t0 + ANNOUNCE_EVERY, 10, true));
    }

    #[test]
    fn the_configuration_is_valid_and_ids_are_content_hashes() {
        assert!(config().is_ok());
        let (params, thresholds) = score_params();
        assert!(params.validate().is_ok());
        assert!(thresholds.validate().is_ok());
        let id = |data: &[u8]| sha2::Sha256::digest(data).to_vec();
        assert_eq!(id(b"a"), id(b"a"));
        assert_ne!(id(b"a"), id(b"b"));
    }
}
