//! The peer table's tests.

use super::*;

fn table() -> PeerTable {
    PeerTable::new(2, PeerLimits::default())
}

#[test]
fn one_inbound_handshake_per_peer_at_a_time_and_ten_a_minute() {
    let mut t = table();
    let p = PeerId::random();
    let now = Instant::now();
    assert_eq!(t.admit_inbound(&p, now), Admission::Busy, "not connected");
    assert!(t.connected(p, false));
    assert_eq!(t.admit_inbound(&p, now), Admission::Admitted);
    assert_eq!(t.admit_inbound(&p, now), Admission::Busy, "one in flight");
    t.inbound_done(&p);
    for _ in 1..10 {
        assert_eq!(t.admit_inbound(&p, now), Admission::Admitted);
        t.inbound_done(&p);
    }
    assert_eq!(
        t.admit_inbound(&p, now),
        Admission::Busy,
        "11th in a minute"
    );
    let later = now + Duration::from_secs(61);
    assert_eq!(t.admit_inbound(&p, later), Admission::Admitted);
}

#[test]
fn busy_counts_as_a_failure_only_for_a_peer_without_a_session() {
    let mut t = table();
    let (p, q) = (PeerId::random(), PeerId::random());
    t.connected(p, false);
    t.connected(q, false);
    let now = Instant::now();
    assert!(!t.rejected_busy(&p, now));
    assert!(!t.rejected_busy(&p, now));
    assert!(t.rejected_busy(&p, now), "third busy without a session");
    let (tx, _rx) = mpsc::channel(1);
    let (_done_tx, done_rx) = watch::channel(false);
    t.get_mut(&q).unwrap().session = Some(Session {
        id: 1,
        info: SessionInfo {
            suite: Suite::Kyber1024Dilithium5,
            local_initiated: false,
            since: SystemTime::now(),
            id: "00".into(),
            peer_key: pqnode_keys::Fingerprint::from_array([1; 32]),
        },
        tx,
        receipts: mpsc::channel(1).0,
        reader_done: done_rx,
        stats: Default::default(),
    });
    for _ in 0..10 {
        assert!(!t.rejected_busy(&q, now), "a re-handshake told to wait");
    }
    // A handshake beside a session is a re-handshake, either way; one
    // without a session is not.
    assert!(!t.snapshot(&q).unwrap().rehandshaking);
    assert!(t.begin_outbound(&q));
    assert!(t.snapshot(&q).unwrap().rehandshaking);
    t.outbound_done(&q);
    assert_eq!(t.admit_inbound(&q, now), Admission::Admitted);
    assert!(t.snapshot(&q).unwrap().rehandshaking);
    t.inbound_done(&q);
    assert!(!t.snapshot(&q).unwrap().rehandshaking);
    assert!(t.begin_outbound(&p));
    assert!(
        !t.snapshot(&p).unwrap().rehandshaking,
        "no session: negotiating"
    );
}

#[test]
fn outbound_handshakes_stay_under_what_the_peer_admits() {
    let mut t = table();
    let p = PeerId::random();
    let now = Instant::now();
    assert_eq!(t.pace_outbound(&p, now), Pace::Gone);
    t.connected(p, true);
    for i in 0..9 {
        let at = now + Duration::from_secs(i);
        assert_eq!(t.pace_outbound(&p, at), Pace::Now, "start {i}");
    }
    let tenth = now + Duration::from_secs(9);
    assert_eq!(
        t.pace_outbound(&p, tenth),
        Pace::Wait(Duration::from_secs(51)),
        "the tenth waits for the first to leave the window"
    );
    assert_eq!(
        t.pace_outbound(&p, now + Duration::from_secs(60)),
        Pace::Now
    );
    // Whatever the timing, the peer's own admission never says busy.
    let mut peer_side = table();
    let q = PeerId::random();
    peer_side.connected(q, false);
    let mut at = now;
    for _ in 0..40 {
        match t.pace_outbound(&p, at) {
            Pace::Now => {
                assert_eq!(peer_side.admit_inbound(&q, at), Admission::Admitted);
                peer_side.inbound_done(&q);
            }
            Pace::Wait(d) => at += d,
            Pace::Gone => unreachable!(),
        }
    }
}

#[test]
fn three_failures_in_a_window_make_a_peer_abusive() {
    let mut t = table();
    let p = PeerId::random();
    let now = Instant::now();
    t.connected(p, false);
    assert!(!t.handshake_failed(&p, now));
    assert!(!t.handshake_failed(&p, now));
    assert!(t.handshake_failed(&p, now));
    assert_eq!(t.admit_inbound(&p, now), Admission::Abusive);
    assert_eq!(
        t.admit_inbound(&p, now + Duration::from_secs(61)),
        Admission::Admitted,
        "failures age out"
    );
}

#[test]
fn remembered_refusals_are_bounded() {
    let mut t = table();
    let now = Instant::now();
    let first = PeerId::random();
    t.remember_refusal(first, RefuseReason::Abusive, now);
    for i in 1..=RECENT_REFUSALS {
        t.remember_refusal(
            PeerId::random(),
            RefuseReason::Abusive,
            now + Duration::from_millis(i as u64),
        );
    }
    assert_eq!(t.recent_refusals.len(), RECENT_REFUSALS);
    assert_eq!(t.recent_refusal(&first), None, "the oldest is evicted");
}

#[test]
fn the_table_is_bounded_and_forgets_disconnected_peers() {
    let mut t = table();
    let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
    assert!(t.connected(a, true));
    assert!(t.connected(b, false));
    assert!(!t.connected(c, false), "full");
    assert!(t.connected(a, false), "known peers may add connections");
    assert!(t.connection_closed(&a, 1).is_none());
    assert!(t.connection_closed(&a, 0).is_some());
    assert!(t.connected(c, false));
}

#[test]
fn status_changes_are_published_and_refusals_counted_once() {
    let mut t = table();
    let p = PeerId::random();
    t.connected(p, true);
    let rx = t.watch(&p).unwrap();
    assert_eq!(*rx.borrow(), PqStatus::Unknown);
    t.apply(&p, &Event::HandshakeStarted);
    assert_eq!(*rx.borrow(), PqStatus::Negotiating);
    t.apply(&p, &Event::Refused(RefuseReason::Policy));
    assert_eq!(
        t.apply(&p, &Event::Refused(RefuseReason::KeyMismatch)),
        None,
        "refused once, for its first reason"
    );
    assert_eq!(*rx.borrow(), PqStatus::Refused(RefuseReason::Policy));
    assert_eq!(t.counts().refused_total, 1);
    t.connection_closed(&p, 0);
    assert!(rx.has_changed().is_err(), "sender gone with the peer");
    assert_eq!(
        t.recent_refusal(&p),
        Some(RefuseReason::Policy),
        "the refusal outlives the disconnect"
    );
    t.connected(p, false);
    assert_eq!(
        t.recent_refusal(&p),
        Some(RefuseReason::Policy),
        "still named while it reconnects without settling otherwise"
    );
    assert!(t.recent_refusals().is_empty(), "listed only while gone");
    t.apply(
        &p,
        &Event::NoPq(crate::pq::policy::ClassicalReason::NoPqProtocol),
    );
    assert_eq!(t.recent_refusal(&p), None, "forgotten once it settles");
}

#[test]
fn a_peer_that_reconnects_keeps_its_handshake_budget_for_the_window() {
    let mut t = table();
    let p = PeerId::random();
    let now = Instant::now();
    assert!(t.connected(p, false));
    assert!(!t.handshake_failed(&p, now));
    assert!(!t.handshake_failed(&p, now));
    assert!(t.connection_closed(&p, 0).is_some());
    assert!(t.connected(p, false));
    assert!(
        t.handshake_failed(&p, now),
        "the third failure in a minute, across a reconnect"
    );
    assert_eq!(t.admit_inbound(&p, now), Admission::Abusive);
    // A minute later it starts afresh.
    let later = now + Duration::from_secs(61);
    assert_eq!(t.admit_inbound(&p, later), Admission::Admitted);
}

#[test]
fn budgets_of_departed_peers_are_bounded() {
    let n = MAX_DEPARTED + 100;
    let mut t = PeerTable::new(n, PeerLimits::default());
    for _ in 0..n {
        let p = PeerId::random();
        t.connected(p, false);
        t.handshake_failed(&p, Instant::now());
        t.connection_closed(&p, 0);
    }
    assert_eq!(t.departed.len(), MAX_DEPARTED);
    // A peer that left with nothing in its budget is not remembered.
    let quiet = PeerId::random();
    t.connected(quiet, false);
    t.connection_closed(&quiet, 0);
    assert!(t.departed.take(&quiet).is_none());
}
