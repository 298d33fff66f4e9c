//! Metrics of the PQ layer: every handshake outcome, every refusal, every
//! message, registered under `pqnode_pq_`.

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::policy::RefuseReason;
use super::reasons::{HandshakeFailure, Malformed, SessionError, Undelivered};

/// A reason label, typed ([`super::reasons`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ReasonLabels<R> {
    /// The reason, encoded as its stable name.
    pub reason: R,
}

impl<R: EncodeLabelValue + Copy> EncodeLabelSet for ReasonLabels<R> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabel::encode(&("reason", self.reason), encoder.encode_label())
    }
}

/// A refusal's reason label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// Why the peer was refused.
    pub reason: RefuseReason,
}

/// A security-level label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SecurityLabels {
    /// `pq` or `classical`.
    pub security: super::inbox::SecurityLevel,
}

/// A suite label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SuiteLabels {
    /// The suite's configuration name.
    pub suite: &'static str,
}

/// The PQ layer's metrics.
#[derive(Clone, Debug)]
pub struct PqMetrics {
    /// PQ sessions established, by suite.
    pub pq_sessions: Family<SuiteLabels, Counter>,
    /// Peers labelled classical (no PQ, under `preferred`/`disabled`).
    pub classical_sessions: Counter,
    /// Peers refused, by reason (`policy`, `downgrade`, `key-mismatch`, ...).
    pub refused: Family<RefusedLabels, Counter>,
    /// Inbound classical message streams refused: the peer is pinned, has a
    /// PQ session, or its PQ status is open (§8.2).
    pub classical_streams_refused: Counter,
    /// Inbound classical message streams holding a slot now (§9: 64).
    pub classical_streams_open: Gauge,
    /// Pinned peers that came back without PQ.
    pub downgrade_refused: Counter,
    /// Peers refused as `key-mismatch` (§8.3): a key other than the pinned
    /// one, or a pinned peer met under a suite it has no pin for.
    pub key_mismatch: Counter,
    /// Handshakes started (either side).
    pub handshakes_started: Counter,
    /// Failed handshakes, by reason.
    pub handshake_failures: Family<ReasonLabels<HandshakeFailure>, Counter>,
    /// Failed handshakes, all reasons (not exported: the family above is;
    /// this total feeds the periodic summary line).
    pub handshake_failures_all: Counter,
    /// Handshake duration in seconds (successful ones).
    pub handshake_duration: Histogram,
    /// Open PQ sessions.
    pub open_sessions: Gauge,
    /// Handshakes in progress (both sides).
    pub handshakes_in_progress: Gauge,
    /// Responder handshakes in progress: the slots of
    /// `limits.max_concurrent_handshakes` in use.
    pub inbound_handshakes_in_progress: Gauge,
    /// Sessions ended by an error, by reason.
    pub session_errors: Family<ReasonLabels<SessionError>, Counter>,
    /// Messages sent, by security level.
    pub messages_sent: Family<SecurityLabels, Counter>,
    /// Messages received, by security level.
    pub messages_received: Family<SecurityLabels, Counter>,
    /// Inbound messages dropped because a peer's inbox was full.
    pub inbox_dropped: Counter,
    /// Followers of `GET /api/messages/stream` now.
    pub followers: Gauge,
    /// Bytes queued for those followers (bodies and per-message overhead).
    pub follower_queued_bytes: Gauge,
    /// Followers dropped for falling behind by more than their queue holds.
    pub followers_lagged: Counter,
    /// Sessions that proceeded unpinned because the first-use pin limit
    /// was reached (§8.3 rev 3).
    pub pins_full: Counter,
    /// Sessions left unpinned because their network made its share of
    /// first-use pins this hour.
    pub pins_source_limited: Counter,
    /// Re-handshakes that replaced a session (§5.1).
    pub rehandshakes: Counter,
    /// Re-handshakes that failed while the old session went on (§5.1).
    pub rehandshake_failures: Counter,
    /// Outbound handshakes held back to stay under the peer's per-minute
    /// limit (§9 rev 3).
    pub handshakes_paced: Counter,
    /// Receipts for no message in flight, ignored (§7 rev 4).
    pub receipts_unmatched: Counter,
    /// Receipts this node owed but could not send (no session, or its
    /// writer too far behind).
    pub receipts_dropped: Counter,
    /// Handshake responses made: each one KEM encapsulation and one
    /// signature (the responder's PQ work per Init).
    pub responses_signed: Counter,
    /// Messages sent but not delivered, by what the receipt said or
    /// `no-receipt` (§7 rev 4).
    pub messages_undelivered: Family<ReasonLabels<Undelivered>, Counter>,
    /// Identical log lines about one peer suppressed (§9 rev 3).
    pub log_suppressed: Counter,
    /// Malformed inbound messages dropped, by what was wrong (`frame`: a
    /// length outside the allowed range; `fragment`: a bad fragment header
    /// or sequence).
    pub malformed_messages: Family<ReasonLabels<Malformed>, Counter>,
}

impl PqMetrics {
    /// Creates and registers the metrics (under `pq_` in `registry`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = PqMetrics {
            pq_sessions: Family::default(),
            classical_sessions: Counter::default(),
            refused: Family::default(),
            classical_streams_refused: Counter::default(),
            classical_streams_open: Gauge::default(),
            downgrade_refused: Counter::default(),
            key_mismatch: Counter::default(),
            handshakes_started: Counter::default(),
            handshake_failures: Family::default(),
            handshake_failures_all: Counter::default(),
            handshake_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            open_sessions: Gauge::default(),
            handshakes_in_progress: Gauge::default(),
            inbound_handshakes_in_progress: Gauge::default(),
            session_errors: Family::default(),
            messages_sent: Family::default(),
            messages_received: Family::default(),
            inbox_dropped: Counter::default(),
            followers: Gauge::default(),
            follower_queued_bytes: Gauge::default(),
            followers_lagged: Counter::default(),
            pins_full: Counter::default(),
            pins_source_limited: Counter::default(),
            rehandshakes: Counter::default(),
            rehandshake_failures: Counter::default(),
            handshakes_paced: Counter::default(),
            receipts_unmatched: Counter::default(),
            receipts_dropped: Counter::default(),
            responses_signed: Counter::default(),
            messages_undelivered: Family::default(),
            log_suppressed: Counter::default(),
            malformed_messages: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("pq");
        r.register("sessions", "PQ sessions established", m.pq_sessions.clone());
        r.register(
            "classical_sessions",
            "Peers labelled classical",
            m.classical_sessions.clone(),
        );
        r.register("refused", "Peers refused, by reason", m.refused.clone());
        r.register(
            "classical_streams_refused",
            "Inbound classical message streams refused (pinned peer, PQ session, or PQ status open)",
            m.classical_streams_refused.clone(),
        );
        r.register(
            "classical_streams_open",
            "Inbound classical message streams holding a slot",
            m.classical_streams_open.clone(),
        );
        r.register(
            "downgrade_refused",
            "Pinned peers refused for offering no PQ session",
            m.downgrade_refused.clone(),
        );
        r.register(
            "key_mismatch",
            "Peers refused because their PQ key or suite does not match their pins",
            m.key_mismatch.clone(),
        );
        r.register(
            "handshakes_started",
            "PQ handshakes started, either side",
            m.handshakes_started.clone(),
        );
        r.register(
            "handshake_failures",
            "Failed PQ handshakes, by reason",
            m.handshake_failures.clone(),
        );
        r.register(
            "handshake_duration_seconds",
            "Duration of successful PQ handshakes",
            m.handshake_duration.clone(),
        );
        r.register("open_sessions", "Open PQ sessions", m.open_sessions.clone());
        r.register(
            "handshakes_in_progress",
            "PQ handshakes in progress",
            m.handshakes_in_progress.clone(),
        );
        r.register(
            "inbound_handshakes_in_progress",
            "PQ responder handshakes in progress (the concurrent-handshake slots in use)",
            m.inbound_handshakes_in_progress.clone(),
        );
        r.register(
            "session_errors",
            "PQ sessions ended by an error, by reason",
            m.session_errors.clone(),
        );
        r.register(
            "messages_sent",
            "Application messages sent, by security level",
            m.messages_sent.clone(),
        );
        r.register(
            "messages_received",
            "Application messages received, by security level",
            m.messages_received.clone(),
        );
        r.register(
            "inbox_dropped",
            "Inbound messages dropped because an inbox was full",
            m.inbox_dropped.clone(),
        );
        r.register(
            "followers",
            "Followers of GET /api/messages/stream",
            m.followers.clone(),
        );
        r.register(
            "follower_queued_bytes",
            "Bytes queued for message stream followers",
            m.follower_queued_bytes.clone(),
        );
        r.register(
            "followers_lagged",
            "Message stream followers dropped for falling too far behind",
            m.followers_lagged.clone(),
        );
        r.register(
            "pins_full",
            "Sessions left unpinned because the first-use pin limit was reached",
            m.pins_full.clone(),
        );
        r.register(
            "pins_source_limited",
            "Sessions left unpinned because their network (IPv4 /24, IPv6 /64) made its first-use pins for the hour",
            m.pins_source_limited.clone(),
        );
        r.register(
            "rehandshakes",
            "Sessions replaced by a re-handshake",
            m.rehandshakes.clone(),
        );
        r.register(
            "rehandshake_failures",
            "Re-handshakes that failed while the old session went on",
            m.rehandshake_failures.clone(),
        );
        r.register(
            "handshakes_paced",
            "Outbound handshakes held back to stay under the peer's per-minute limit",
            m.handshakes_paced.clone(),
        );
        r.register(
            "receipts_unmatched",
            "Receipts for no message in flight, ignored",
            m.receipts_unmatched.clone(),
        );
        r.register(
            "receipts_dropped",
            "Receipts owed to a peer that could not be sent",
            m.receipts_dropped.clone(),
        );
        r.register(
            "responses_signed",
            "Handshake responses made, each one KEM encapsulation and one signature",
            m.responses_signed.clone(),
        );
        r.register(
            "messages_undelivered",
            "Messages sent but not stored by the peer, by its receipt's status or no-receipt",
            m.messages_undelivered.clone(),
        );
        r.register(
            "log_suppressed",
            "Repeated log lines about one peer that were not written",
            m.log_suppressed.clone(),
        );
        r.register(
            "malformed_messages",
            "Malformed inbound messages dropped, by what was wrong",
            m.malformed_messages.clone(),
        );
        m
    }

    /// Counts a malformed inbound message.
    pub fn malformed(&self, reason: Malformed) {
        self.malformed_messages
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a session ended by an error.
    pub fn session_error(&self, reason: SessionError) {
        self.session_errors
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Reads a session-error counter (tests, API).
    pub fn session_error_count(&self, reason: SessionError) -> u64 {
        self.session_errors
            .get_or_create(&ReasonLabels { reason })
            .get()
    }

    /// Counts a message sent but not delivered.
    pub fn undelivered(&self, reason: Undelivered) {
        self.messages_undelivered
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Reads an undelivered-message counter (tests, API).
    pub fn undelivered_count(&self, reason: Undelivered) -> u64 {
        self.messages_undelivered
            .get_or_create(&ReasonLabels { reason })
            .get()
    }

    /// Counts a refusal.
    pub fn refuse(&self, reason: RefuseReason) {
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    /// Counts a failed handshake.
    pub fn handshake_failed(&self, reason: HandshakeFailure) {
        self.handshake_failures_all.inc();
        self.handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Reads a refusal counter (tests, API).
    pub fn refused_count(&self, reason: RefuseReason) -> u64 {
        self.refused.get_or_create(&RefusedLabels { reason }).get()
    }

    /// Reads a handshake-failure counter (tests, API).
    pub fn handshake_failure_count(&self, reason: HandshakeFailure) -> u64 {
        self.handshake_failures
            .get_or_create(&ReasonLabels { reason })
            .get()
    }
}
