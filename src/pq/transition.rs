//! The transitions of a peer's PQ status, as one pure function.
//!
//! ```text
//! unknown ◀─────ended─────── negotiating
//!    │ ──handshake started──▶    │
//!    ├────────────┬──────────────┴──▶ pq session ──ended──▶ unknown
//!    │            └─────────────────▶ classical (reason) ──session──▶ pq
//!    └──────── any but refused ─────▶ refused (reason)      (final while connected)
//! ```
//!
//! [`PeerTable::apply`](super::state::PeerTable::apply) runs every status
//! change through [`next`] under the table's one lock, so a check and the
//! change it allows can never be separated by another task's change: a
//! handshake starting cannot overwrite a session that was just
//! established, a late session cannot revive a refused peer, and a peer
//! with a PQ session is never labelled classical.

use super::SessionInfo;
use super::policy::{ClassicalReason, RefuseReason};
use super::state::PqStatus;

/// What happened to a peer, as its status sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A handshake with it started (either side).
    HandshakeStarted,
    /// Its last handshake in flight ended without settling anything.
    HandshakesEnded,
    /// A PQ session with it was established (or replaced its session).
    SessionEstablished(SessionInfo),
    /// Its PQ session ended and none replaced it.
    SessionEnded,
    /// It has no PQ session, and the policy keeps it classically (§8.1).
    NoPq(ClassicalReason),
    /// It is refused (§8.1, §8.3, §9); its connections are being closed.
    Refused(RefuseReason),
}

/// The status after `event`, or `None` when `event` leaves `current` as it
/// is: it changes nothing, or the change is not allowed from `current`.
pub fn next(current: &PqStatus, event: &Event) -> Option<PqStatus> {
    use PqStatus as S;
    let to = match (current, event) {
        // Refused is final while the peer stays connected: nothing revives
        // it, and its first reason stays.
        (S::Refused(_), _) => return None,
        (_, Event::Refused(r)) => S::Refused(*r),

        (S::Unknown, Event::HandshakeStarted) => S::Negotiating,
        // A handshake toward a settled peer (a re-handshake, or a late one
        // from a classical peer) leaves its status until it settles.
        (_, Event::HandshakeStarted) => return None,

        (S::Negotiating, Event::HandshakesEnded) => S::Unknown,
        (_, Event::HandshakesEnded) => return None,

        (_, Event::SessionEstablished(info)) => S::Pq(info.clone()),

        (S::Pq(_), Event::SessionEnded) => S::Unknown,
        (_, Event::SessionEnded) => return None,

        // Never classical while a PQ session exists.
        (S::Pq(_), Event::NoPq(_)) => return None,
        (_, Event::NoPq(r)) => S::Classical(*r),
    };
    (to != *current).then_some(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pqnode_crypto::Suite;

    fn info(id: &str) -> SessionInfo {
        SessionInfo {
            suite: Suite::Kyber1024Dilithium5,
            local_initiated: true,
            since: std::time::SystemTime::UNIX_EPOCH,
            id: id.to_owned(),
            peer_key: pqnode_keys::Fingerprint::from_array([7; 32]),
        }
    }

    fn statuses() -> Vec<PqStatus> {
        vec![
            PqStatus::Unknown,
            PqStatus::Negotiating,
            PqStatus::Pq(info("a")),
            PqStatus::Classical(ClassicalReason::NoPqProtocol),
            PqStatus::Refused(RefuseReason::Policy),
        ]
    }

    fn events() -> Vec<Event> {
        vec![
            Event::HandshakeStarted,
            Event::HandshakesEnded,
            Event::SessionEstablished(info("b")),
            Event::SessionEnded,
            Event::NoPq(ClassicalReason::NoPqProtocol),
            Event::Refused(RefuseReason::KeyMismatch),
        ]
    }

    /// Every status × event, against a table written out by hand (`-` for
    /// no change; rows are statuses, columns events, in the order above).
    #[test]
    fn every_status_and_event() {
        let n = PqStatus::Negotiating;
        let u = PqStatus::Unknown;
        let pq = PqStatus::Pq(info("b"));
        let cl = PqStatus::Classical(ClassicalReason::NoPqProtocol);
        let rf = PqStatus::Refused(RefuseReason::KeyMismatch);
        #[rustfmt::skip]
        let expected: [[Option<PqStatus>; 6]; 5] = [
            //            started    ended      session          sess-ended  no-pq        refused
            /* unknown */ [Some(n),  None,      Some(pq.clone()), None,      Some(cl.clone()), Some(rf.clone())],
            /* negot.  */ [None,     Some(u.clone()), Some(pq.clone()), None, Some(cl.clone()), Some(rf.clone())],
            /* pq      */ [None,     None,      Some(pq.clone()), Some(u),   None,        Some(rf.clone())],
            /* classic */ [None,     None,      Some(pq),         None,      None,        Some(rf)],
            /* refused */ [None,     None,      None,             None,      None,        None],
        ];
        for (s, status) in statuses().iter().enumerate() {
            for (e, event) in events().iter().enumerate() {
                assert_eq!(
                    next(status, event),
                    expected[s][e],
                    "{status:?} on {event:?}"
                );
            }
        }
    }

    #[test]
    fn a_classical_reason_may_change_and_a_session_may_be_replaced() {
        let cl = PqStatus::Classical(ClassicalReason::NoPqProtocol);
        assert_eq!(
            next(&cl, &Event::NoPq(ClassicalReason::Disabled)),
            Some(PqStatus::Classical(ClassicalReason::Disabled))
        );
        let pq = PqStatus::Pq(info("a"));
        assert_eq!(next(&pq, &Event::SessionEstablished(info("a"))), None);
        assert_eq!(
            next(&pq, &Event::SessionEstablished(info("c"))),
            Some(PqStatus::Pq(info("c")))
        );
    }
}
