//! The decisions of PROTOCOL.md §8 as pure functions returning enums: may a
//! message go classically, is a connection refused, and why. No I/O, no
//! locks; the PQ layer (`connection.rs`, `send.rs`, `handshake_io.rs`, the
//! verifier) calls them with what it knows and acts on the answer. Tested
//! table by table in `policy/tests.rs`.

use pqnode_crypto::Suite;

use crate::config::PqPolicy;

/// Why a peer is served classically (PROTOCOL.md §8.1, §8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassicalReason {
    /// Negotiating `/pqnode/pq/1.0.0` failed: the remote does not speak PQ.
    /// Rev 3: the only signal that a remote lacks PQ.
    NoPqProtocol,
    /// The remote speaks PQ but shares no suite with us.
    NoCommonSuite,
    /// PQ is unavailable locally (§8.4).
    LocalUnavailable,
    /// The operator disabled PQ.
    Disabled,
}

impl ClassicalReason {
    /// A stable name for logs, metrics and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClassicalReason::NoPqProtocol => "no-pq-protocol",
            ClassicalReason::NoCommonSuite => "no-common-suite",
            ClassicalReason::LocalUnavailable => "local-pq-unavailable",
            ClassicalReason::Disabled => "pq-disabled",
        }
    }
}

/// Why a peer was refused (its connections closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefuseReason {
    /// No PQ session under `required`.
    Policy,
    /// A pinned peer offered no PQ session (§8.3 `downgrade_refused`).
    Downgrade,
    /// A pinned peer showed another key, or a suite it has no pin for.
    KeyMismatch,
    /// Its record, transcript signature or MAC failed.
    AuthFailed,
    /// It sent malformed handshake messages.
    BadHandshake,
    /// `pq.allow_unpinned = false` and it has no pin.
    Unpinned,
    /// It exceeded the per-peer handshake limits of §9 (rev 3).
    Abusive,
    /// Its session broke the record layer's rules (§6, §7).
    SessionError,
    /// It rejected our handshake (policy, authentication, bad message).
    RejectedByPeer,
    /// The PQ layer's peer table was full (`limits.max_established`).
    TableFull,
}

impl RefuseReason {
    /// A stable name for logs, metrics (`refused{reason}`) and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefuseReason::Policy => "policy",
            RefuseReason::Downgrade => "downgrade",
            RefuseReason::KeyMismatch => "key-mismatch",
            RefuseReason::AuthFailed => "auth-failed",
            RefuseReason::BadHandshake => "bad-handshake",
            RefuseReason::Unpinned => "unpinned",
            RefuseReason::Abusive => "abusive",
            RefuseReason::SessionError => "session-error",
            RefuseReason::RejectedByPeer => "rejected-by-peer",
            RefuseReason::TableFull => "table-full",
        }
    }
}

impl std::fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The metric label is the reason's stable name (`key-mismatch`, …).
impl prometheus_client::encoding::EncodeLabelValue for RefuseReason {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// The PQ status of a peer, as far as the decisions need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusKind {
    /// Connected, nothing known yet.
    Unknown,
    /// A handshake is in flight.
    Negotiating,
    /// A PQ session exists.
    Pq,
    /// Known to lack PQ (or PQ is off here).
    Classical(ClassicalReason),
    /// Refused.
    Refused(RefuseReason),
}

/// What to do when a connection to a peer is established.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionAction {
    /// Open the PQ stream now (we dialled, §5).
    Initiate,
    /// Wait for the dialler to open it (and for identify).
    AwaitInitiator,
    /// No PQ handshake here: label the peer classical.
    LabelClassical(ClassicalReason),
    /// Close its connections.
    Refuse(RefuseReason),
}

/// §5 and §8.1/§8.3/§8.4 on a new connection.
pub fn on_connection(
    policy: PqPolicy,
    local_pq: bool,
    pinned: bool,
    we_dialled: bool,
) -> ConnectionAction {
    match (policy, local_pq) {
        (PqPolicy::Disabled, _) => ConnectionAction::LabelClassical(ClassicalReason::Disabled),
        // A pinned peer is never served classically, even when PQ is
        // unavailable here (§8.3).
        (_, false) if pinned => ConnectionAction::Refuse(RefuseReason::Downgrade),
        // The node refuses to start in this case; refuse to be safe.
        (PqPolicy::Required, false) => ConnectionAction::Refuse(RefuseReason::Policy),
        (PqPolicy::Preferred, false) => {
            ConnectionAction::LabelClassical(ClassicalReason::LocalUnavailable)
        }
        (_, true) if we_dialled => ConnectionAction::Initiate,
        (_, true) => ConnectionAction::AwaitInitiator,
    }
}

/// How a remote turned out to lack a PQ session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoPq {
    /// Negotiation of `/pqnode/pq/1.0.0` failed.
    ProtocolUnsupported,
    /// No common suite (Reject 1, either way).
    NoCommonSuite,
}

/// What to do with a peer that has no PQ session to offer (§8.1, §8.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoPqAction {
    /// Keep it for DHT, identify, ping; messages go classically.
    LabelClassical(ClassicalReason),
    /// Close its connections.
    Refuse(RefuseReason),
}

/// §8.1 and §8.3 when a remote offers no PQ session.
pub fn on_no_pq(policy: PqPolicy, pinned: bool, why: NoPq) -> NoPqAction {
    let reason = match why {
        NoPq::ProtocolUnsupported => ClassicalReason::NoPqProtocol,
        NoPq::NoCommonSuite => ClassicalReason::NoCommonSuite,
    };
    match (pinned, why, policy) {
        // Rev 3: the suite rules of §5 restrict a pinned peer to its pinned
        // suites, so "no common suite" means it shows none of them.
        (true, NoPq::NoCommonSuite, _) => NoPqAction::Refuse(RefuseReason::KeyMismatch),
        (true, NoPq::ProtocolUnsupported, _) => NoPqAction::Refuse(RefuseReason::Downgrade),
        (false, _, PqPolicy::Required) => NoPqAction::Refuse(RefuseReason::Policy),
        (false, _, PqPolicy::Preferred | PqPolicy::Disabled) => NoPqAction::LabelClassical(reason),
    }
}

/// What a failed handshake means for the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeOutcome {
    /// No common suite.
    NoCommonSuite,
    /// The record was refused as `key-mismatch`, or the pin moved under us.
    KeyMismatch,
    /// The peer is unpinned and unpinned peers are not allowed.
    Unpinned,
    /// Record, signature or MAC failed.
    AuthFailed,
    /// Malformed or out-of-order messages.
    BadMessage,
    /// The peer rejected us as busy.
    PeerBusy,
    /// The peer rejected us for another reason.
    RejectedByPeer,
    /// Timeout, stream closed or reset, I/O: nothing proven either way.
    Transient,
    /// A local failure (pin store, blocking pool).
    Local,
}

/// What to do after a failed handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureAction {
    /// Apply [`on_no_pq`].
    NoPq(NoPqAction),
    /// Close its connections.
    Refuse(RefuseReason),
    /// Keep the connection; the status stays open (never classical) and the
    /// handshake may be retried with back-off.
    RetryLater,
}

/// §5 and §8 after a failed handshake.
pub fn on_handshake_failure(
    policy: PqPolicy,
    pinned: bool,
    outcome: HandshakeOutcome,
) -> FailureAction {
    match outcome {
        HandshakeOutcome::NoCommonSuite => {
            FailureAction::NoPq(on_no_pq(policy, pinned, NoPq::NoCommonSuite))
        }
        HandshakeOutcome::KeyMismatch => FailureAction::Refuse(RefuseReason::KeyMismatch),
        HandshakeOutcome::Unpinned => FailureAction::Refuse(RefuseReason::Unpinned),
        HandshakeOutcome::AuthFailed => FailureAction::Refuse(RefuseReason::AuthFailed),
        HandshakeOutcome::BadMessage => FailureAction::Refuse(RefuseReason::BadHandshake),
        HandshakeOutcome::RejectedByPeer => FailureAction::Refuse(RefuseReason::RejectedByPeer),
        HandshakeOutcome::PeerBusy | HandshakeOutcome::Transient | HandshakeOutcome::Local => {
            FailureAction::RetryLater
        }
    }
}

/// Why a message is not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendRefusal {
    /// Not connected.
    NotConnected,
    /// No PQ session and the policy is `required`.
    PqRequired,
    /// The peer is pinned but has no PQ session.
    PinnedWithoutSession,
    /// The peer's PQ status is still open (handshake in flight).
    StatusUnknown,
    /// The peer was refused.
    Refused(RefuseReason),
}

/// How a message may travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendDecision {
    /// Over the PQ session.
    Pq,
    /// Over `/pqnode/msg-classical/1.0.0` (§8.2), for this reason.
    Classical(ClassicalReason),
    /// Not yet decidable: wait for the status to change (bounded).
    Wait,
    /// Not at all.
    Refuse(SendRefusal),
}

/// §8.2: may a message to this peer go, and how. Rev 3: never classically
/// while the status is open, never classically to a pinned peer.
pub fn send_decision(
    policy: PqPolicy,
    connected: bool,
    pinned: bool,
    status: StatusKind,
) -> SendDecision {
    match status {
        StatusKind::Pq => SendDecision::Pq,
        // A refusal is remembered for a while after the disconnect it
        // causes, so the sender learns why rather than "not connected".
        StatusKind::Refused(RefuseReason::Policy) => SendDecision::Refuse(SendRefusal::PqRequired),
        StatusKind::Refused(r) => SendDecision::Refuse(SendRefusal::Refused(r)),
        _ if !connected => SendDecision::Refuse(SendRefusal::NotConnected),
        StatusKind::Unknown | StatusKind::Negotiating => SendDecision::Wait,
        StatusKind::Classical(_) if pinned => {
            SendDecision::Refuse(SendRefusal::PinnedWithoutSession)
        }
        StatusKind::Classical(_) if policy == PqPolicy::Required => {
            SendDecision::Refuse(SendRefusal::PqRequired)
        }
        StatusKind::Classical(r) => SendDecision::Classical(r),
    }
}

/// What to do with an inbound classical message stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassicalStream {
    /// Read its messages (labelled `classical`, for this reason).
    Accept(ClassicalReason),
    /// Close it unread.
    Refuse,
    /// The peer's status is open: hold the stream (unread, bounded) until
    /// it settles, then decide again.
    Wait,
}

/// §8.2 for an inbound classical message stream: never from a pinned peer
/// or one with a PQ session, never under `required`, and nothing read
/// while the status is open.
pub fn classical_stream(policy: PqPolicy, pinned: bool, status: StatusKind) -> ClassicalStream {
    match status {
        _ if policy == PqPolicy::Required || pinned => ClassicalStream::Refuse,
        StatusKind::Classical(r) => ClassicalStream::Accept(r),
        StatusKind::Unknown | StatusKind::Negotiating => ClassicalStream::Wait,
        StatusKind::Pq | StatusKind::Refused(_) => ClassicalStream::Refuse,
    }
}

/// Which suites a peer may use with us, and which we offer it (§5 rev 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SuiteRule {
    /// Not pinned: every enabled suite.
    Any,
    /// Pinned: only these (pinned ∩ enabled, in our order; may be empty,
    /// and then no handshake can succeed: the peer is refused).
    Pinned(Vec<Suite>),
}

/// The suites to offer `peer` (and accept from it), from our `enabled`
/// suites in preference order and the suites of its pins (`None`: an
/// operator pin for every suite). A pinned peer gets only suites it is
/// pinned under, so a thief of its identity cannot switch to a suite
/// without a pin (§5, §8.3 rev 3).
pub fn suites_to_offer(enabled: &[Suite], pins: &[Option<Suite>]) -> SuiteRule {
    if pins.is_empty() {
        return SuiteRule::Any;
    }
    if pins.contains(&None) {
        return SuiteRule::Pinned(enabled.to_vec());
    }
    SuiteRule::Pinned(
        enabled
            .iter()
            .copied()
            .filter(|s| pins.contains(&Some(*s)))
            .collect(),
    )
}

#[cfg(test)]
mod tests;
