//! The §8 decisions, table by table.

use super::*;
use PqPolicy::{Disabled, Preferred, Required};

#[test]
fn connection_table() {
    use ConnectionAction::*;
    let rows = [
        // policy, local pq, pinned, we dialled → action
        (
            Disabled,
            true,
            false,
            true,
            LabelClassical(ClassicalReason::Disabled),
        ),
        (
            Disabled,
            true,
            true,
            false,
            LabelClassical(ClassicalReason::Disabled),
        ),
        (
            Disabled,
            false,
            true,
            true,
            LabelClassical(ClassicalReason::Disabled),
        ),
        (Preferred, true, false, true, Initiate),
        (Preferred, true, true, true, Initiate),
        (Preferred, true, false, false, AwaitInitiator),
        (Required, true, false, false, AwaitInitiator),
        (Required, true, true, true, Initiate),
        (
            Preferred,
            false,
            false,
            true,
            LabelClassical(ClassicalReason::LocalUnavailable),
        ),
        (
            Preferred,
            false,
            false,
            false,
            LabelClassical(ClassicalReason::LocalUnavailable),
        ),
        (
            Preferred,
            false,
            true,
            false,
            Refuse(RefuseReason::Downgrade),
        ),
        (Required, false, true, true, Refuse(RefuseReason::Downgrade)),
        (Required, false, false, true, Refuse(RefuseReason::Policy)),
    ];
    for (policy, local, pinned, dialled, want) in rows {
        assert_eq!(
            on_connection(policy, local, pinned, dialled),
            want,
            "{policy:?} local_pq={local} pinned={pinned} dialled={dialled}"
        );
    }
}

#[test]
fn no_pq_table() {
    use NoPqAction::*;
    let rows = [
        (
            Preferred,
            false,
            NoPq::ProtocolUnsupported,
            LabelClassical(ClassicalReason::NoPqProtocol),
        ),
        (
            Preferred,
            false,
            NoPq::NoCommonSuite,
            LabelClassical(ClassicalReason::NoCommonSuite),
        ),
        (
            Required,
            false,
            NoPq::ProtocolUnsupported,
            Refuse(RefuseReason::Policy),
        ),
        (
            Required,
            false,
            NoPq::NoCommonSuite,
            Refuse(RefuseReason::Policy),
        ),
        (
            Preferred,
            true,
            NoPq::ProtocolUnsupported,
            Refuse(RefuseReason::Downgrade),
        ),
        (
            Required,
            true,
            NoPq::ProtocolUnsupported,
            Refuse(RefuseReason::Downgrade),
        ),
        (
            Preferred,
            true,
            NoPq::NoCommonSuite,
            Refuse(RefuseReason::KeyMismatch),
        ),
        (
            Required,
            true,
            NoPq::NoCommonSuite,
            Refuse(RefuseReason::KeyMismatch),
        ),
    ];
    for (policy, pinned, why, want) in rows {
        assert_eq!(
            on_no_pq(policy, pinned, why),
            want,
            "{policy:?} {pinned} {why:?}"
        );
    }
}

#[test]
fn handshake_failure_table() {
    use FailureAction as F;
    use HandshakeOutcome as H;
    let rows = [
        (
            Preferred,
            false,
            H::NoCommonSuite,
            F::NoPq(NoPqAction::LabelClassical(ClassicalReason::NoCommonSuite)),
        ),
        (
            Preferred,
            true,
            H::NoCommonSuite,
            F::NoPq(NoPqAction::Refuse(RefuseReason::KeyMismatch)),
        ),
        (
            Required,
            false,
            H::NoCommonSuite,
            F::NoPq(NoPqAction::Refuse(RefuseReason::Policy)),
        ),
        (
            Preferred,
            false,
            H::KeyMismatch,
            F::Refuse(RefuseReason::KeyMismatch),
        ),
        (
            Preferred,
            false,
            H::Unpinned,
            F::Refuse(RefuseReason::Unpinned),
        ),
        (
            Preferred,
            true,
            H::AuthFailed,
            F::Refuse(RefuseReason::AuthFailed),
        ),
        (
            Preferred,
            false,
            H::BadMessage,
            F::Refuse(RefuseReason::BadHandshake),
        ),
        (
            Preferred,
            false,
            H::RejectedByPeer,
            F::Refuse(RefuseReason::RejectedByPeer),
        ),
        (Preferred, true, H::PeerBusy, F::RetryLater),
        (Required, false, H::Transient, F::RetryLater),
        (Preferred, false, H::Local, F::RetryLater),
    ];
    for (policy, pinned, outcome, want) in rows {
        assert_eq!(
            on_handshake_failure(policy, pinned, outcome),
            want,
            "{policy:?} {pinned} {outcome:?}"
        );
    }
}

#[test]
fn send_table() {
    use SendDecision as D;
    use StatusKind as S;
    let classical = S::Classical(ClassicalReason::NoPqProtocol);
    let rows = [
        // policy, connected, pinned, status → decision
        (Preferred, true, false, S::Pq, D::Pq),
        (Preferred, true, true, S::Pq, D::Pq),
        (Required, true, false, S::Pq, D::Pq),
        (Preferred, true, false, S::Unknown, D::Wait),
        (Preferred, true, false, S::Negotiating, D::Wait),
        (Preferred, true, true, S::Unknown, D::Wait),
        (
            Preferred,
            true,
            false,
            classical,
            D::Classical(ClassicalReason::NoPqProtocol),
        ),
        (
            Disabled,
            true,
            false,
            S::Classical(ClassicalReason::Disabled),
            D::Classical(ClassicalReason::Disabled),
        ),
        (
            Preferred,
            true,
            true,
            classical,
            D::Refuse(SendRefusal::PinnedWithoutSession),
        ),
        (
            Disabled,
            true,
            true,
            S::Classical(ClassicalReason::Disabled),
            D::Refuse(SendRefusal::PinnedWithoutSession),
        ),
        (
            Required,
            true,
            false,
            classical,
            D::Refuse(SendRefusal::PqRequired),
        ),
        (
            Preferred,
            false,
            false,
            S::Unknown,
            D::Refuse(SendRefusal::NotConnected),
        ),
        (
            Preferred,
            false,
            false,
            classical,
            D::Refuse(SendRefusal::NotConnected),
        ),
        (
            Preferred,
            true,
            false,
            S::Refused(RefuseReason::Policy),
            D::Refuse(SendRefusal::PqRequired),
        ),
        (
            Preferred,
            false,
            false,
            S::Refused(RefuseReason::KeyMismatch),
            D::Refuse(SendRefusal::Refused(RefuseReason::KeyMismatch)),
        ),
    ];
    for (policy, connected, pinned, status, want) in rows {
        assert_eq!(
            send_decision(policy, connected, pinned, status),
            want,
            "{policy:?} connected={connected} pinned={pinned} {status:?}"
        );
    }
}

#[test]
fn classical_stream_table() {
    use ClassicalStream::*;
    let classical = StatusKind::Classical(ClassicalReason::NoPqProtocol);
    let rows = [
        (
            Preferred,
            false,
            classical,
            Accept(ClassicalReason::NoPqProtocol),
        ),
        (
            Disabled,
            false,
            StatusKind::Classical(ClassicalReason::Disabled),
            Accept(ClassicalReason::Disabled),
        ),
        (Preferred, true, classical, Refuse),
        (Preferred, true, StatusKind::Unknown, Refuse),
        (Required, false, classical, Refuse),
        (Preferred, false, StatusKind::Pq, Refuse),
        (
            Preferred,
            false,
            StatusKind::Refused(RefuseReason::Policy),
            Refuse,
        ),
        (Preferred, false, StatusKind::Unknown, Wait),
        (Preferred, false, StatusKind::Negotiating, Wait),
    ];
    for (policy, pinned, status, want) in rows {
        assert_eq!(
            classical_stream(policy, pinned, status),
            want,
            "{policy:?} {pinned} {status:?}"
        );
    }
}

#[test]
fn suites_to_offer_table() {
    use SuiteRule::*;
    use pqnode_crypto::Suite::{Kyber1024Dilithium5 as Kd, Mlkem1024Mldsa87 as Mm};
    /// Enabled suites, in our order; the suites of the peer's pins.
    type Row<'a> = (&'a [Suite], &'a [Option<Suite>], SuiteRule);
    let rows: [Row; 9] = [
        // enabled (our order), pins → offered
        (&[Kd, Mm], &[], Any),
        (&[Mm, Kd], &[], Any),
        (&[Kd, Mm], &[Some(Kd)], Pinned(vec![Kd])),
        (&[Kd, Mm], &[Some(Mm)], Pinned(vec![Mm])),
        (&[Mm, Kd], &[Some(Kd), Some(Mm)], Pinned(vec![Mm, Kd])),
        // A suite-less operator pin: every enabled suite.
        (&[Kd, Mm], &[None], Pinned(vec![Kd, Mm])),
        (&[Mm], &[None, Some(Kd)], Pinned(vec![Mm])),
        // Pinned only under a suite we do not enable: nothing to offer.
        (&[Kd], &[Some(Mm)], Pinned(vec![])),
        (&[], &[Some(Kd)], Pinned(vec![])),
    ];
    for (enabled, pins, offered) in rows {
        assert_eq!(
            suites_to_offer(enabled, pins),
            offered,
            "enabled {enabled:?}, pins {pins:?}"
        );
    }
}
