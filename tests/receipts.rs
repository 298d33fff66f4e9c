//! Delivery receipts (PROTOCOL.md §7, §8.2, rev 4) between real nodes
//! started through `App`: a message is reported delivered only when the
//! receiver's receipt says it stored it; a refusal or no receipt at all is
//! an error naming what happened, never a "sent".

mod common;
mod pqsupport;

use std::time::Duration;

use common::{eventually, http};
use futures::{AsyncReadExt, StreamExt};
use libp2p::identity::Keypair;
use pqnode::config::PqPolicy;
use pqnode::pq::fragment::fragments;
use pqnode::pq::framing::{read_frame, write_frame};
use pqnode::pq::policy::ClassicalReason;
use pqnode::pq::reasons::Undelivered;
use pqnode::pq::{CLASSICAL_PROTOCOL, Security, SendError};
use pqnode_crypto::receipt::{Receipt, ReceiptStatus};
use pqsupport::{Opts, TEST_TIMEOUT, TestNode, raw_peer, start, tempdir};

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out");
}

fn token(node: &TestNode) -> String {
    node.app.state().token.expose().to_owned()
}

async fn post(from: &TestNode, to: libp2p::PeerId, text: &str) -> common::Response {
    let body = format!(r#"{{"to":"{to}","body":"{text}"}}"#);
    http(
        from.app.api_addr(),
        "POST",
        "/api/messages",
        Some(&token(from)),
        Some(&body),
    )
    .await
}

/// `GET /api/messages/sent/{id}` on `node` once the send is no longer
/// pending.
async fn until_settled(node: &TestNode, id: u64) -> serde_json::Value {
    let path = format!("/api/messages/sent/{id}");
    eventually(|| async {
        let r = http(node.app.api_addr(), "GET", &path, Some(&token(node)), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        (v["state"] != "pending").then_some(v)
    })
    .await
}

/// Two PQ nodes, A connected to B, with a session on both sides.
async fn pq_pair(da: &std::path::Path, db: &std::path::Path) -> (TestNode, TestNode) {
    let a = start(da, Opts::default()).await;
    let b = start(db, Opts::default()).await;
    a.connect(&b).await;
    for (x, y) in [(&a, &b), (&b, &a)] {
        x.pq.wait_for_session(&y.peer_id, Duration::from_secs(15))
            .await
            .expect("session");
    }
    (a, b)
}

/// Sends message `id` over a new classical stream by hand, as a buggy or
/// hostile peer would, and reads the receipt it gets; the stream stays
/// open for the caller.
async fn classical_by_hand(
    mut control: libp2p_stream::Control,
    to: libp2p::PeerId,
    id: u64,
    body: &[u8],
) -> (Receipt, libp2p::Stream) {
    let mut stream = control
        .open_stream(to, CLASSICAL_PROTOCOL)
        .await
        .expect("stream");
    for frag in fragments(id, body) {
        write_frame(&mut stream, &frag).await.expect("write");
    }
    let answer = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut stream, 9, 9))
        .await
        .expect("an answer in time")
        .expect("a receipt frame");
    (Receipt::decode(&answer).expect("9 bytes"), stream)
}

/// Messages `node` sent that were not delivered, for `reason`.
fn undelivered(node: &TestNode, reason: Undelivered) -> u64 {
    node.pq.metrics().undelivered_count(reason)
}

/// Waits until `node` labels `peer` `level`.
async fn until_level(node: &TestNode, peer: libp2p::PeerId, level: &'static str) {
    eventually(|| async { (node.level(&peer) == Some(level)).then_some(()) }).await;
}

/// Opens classical streams from `hog` to `r`, each confirmed held by `r`
/// before the next (libp2p-stream hands a node one new inbound stream at a
/// time and resets one that arrives meanwhile; a reset one is replaced),
/// until `r` holds `until` in all.
async fn hold_streams(hog: &pqsupport::Peer, r: &TestNode, until: i64) -> Vec<libp2p::Stream> {
    let mut control = hog.control.clone().expect("raw peer");
    let open = || r.pq.metrics().classical_streams_open.get();
    let mut held = Vec::new();
    let mut attempts = 0;
    while open() < until {
        attempts += 1;
        assert!(
            attempts <= 20,
            "the node holds {} streams, not {until}",
            open()
        );
        let before = open();
        let stream = control
            .open_stream(r.peer_id, CLASSICAL_PROTOCOL)
            .await
            .expect("classical stream");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while open() == before && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        held.push(stream);
    }
    held
}

/// A receiver and a sender without PQ (so their messages go classically),
/// both labelled classical on each side.
async fn classical_pair(dr: &std::path::Path, ds: &std::path::Path) -> (TestNode, TestNode) {
    let r = start(dr, Opts::default()).await;
    let s = start(
        ds,
        Opts {
            policy: PqPolicy::Disabled,
            ..Opts::default()
        },
    )
    .await;
    s.connect(&r).await;
    until_level(&r, s.peer_id, "classical").await;
    until_level(&s, r.peer_id, "classical").await;
    (r, s)
}

/// Fault 1 of issue 23: every classical slot of the receiver is held (16
/// peers, 4 each), so it cannot take the message. The sender's API answers
/// 503 `inbox_full` (the receipt's status) and nothing is delivered; once
/// the slots are free, the same send is `200 {"delivered": true}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classical_message_the_receiver_cannot_take_is_not_reported_sent() {
    bounded(async {
        let (dr, ds) = (tempdir(), tempdir());
        let (r, s) = classical_pair(dr.path(), ds.path()).await;
        let mut hogs = Vec::new();
        for i in 1..=16 {
            let hog = raw_peer(Keypair::generate_ed25519(), r.full_addr()).await;
            until_level(&r, hog.peer_id, "classical").await;
            let held = hold_streams(&hog, &r, 4 * i).await;
            hogs.push((hog, held));
        }
        assert_eq!(r.pq.metrics().classical_streams_open.get(), 64);

        let refused = post(&s, r.peer_id, "no room").await;
        assert_eq!(refused.status, 503, "{}", refused.body);
        let err = refused.json();
        assert_eq!(err["error"]["code"], "inbox_full", "{err}");
        assert!(
            err["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("inbox-full")),
            "{err}"
        );
        assert!(r.pq.inbox().list(None, 0, 10).is_empty(), "nothing stored");
        assert_eq!(undelivered(&s, Undelivered::InboxFull), 1);

        // The slots free up: the same message is delivered, and says so.
        drop(hogs);
        eventually(|| async { (r.pq.metrics().classical_streams_open.get() == 0).then_some(()) })
            .await;
        let sent = post(&s, r.peer_id, "room now").await;
        assert_eq!(sent.status, 200, "{}", sent.body);
        let sent = sent.json();
        assert_eq!(sent["delivered"], true);
        assert_eq!(sent["security"], "classical");
        // Why classically, as each side sees it: S has PQ off; R sees a
        // peer without the PQ protocol.
        assert_eq!(sent["reason"], "pq-disabled", "{sent}");
        let got = r.pq.inbox().list(Some(s.peer_id), 0, 10);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body.as_slice(), b"room now");
        assert_eq!(
            got[0].security,
            Security::Classical {
                reason: ClassicalReason::NoPqProtocol
            }
        );
        let listed = http(
            r.app.api_addr(),
            "GET",
            "/api/messages",
            Some(r.app.state().token.expose()),
            None,
        )
        .await
        .json();
        assert_eq!(
            (listed[0]["security"].as_str(), listed[0]["reason"].as_str()),
            (Some("classical"), Some("no-pq-protocol")),
            "{listed}"
        );
        s.stop().await;
        r.stop().await;
    })
    .await;
}

/// Fault 2 of issue 23: a peer holding classical streams gets 4 of the 64
/// (§9 rev 4); its fifth is answered inbox-full, and another peer's
/// classical message is still delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_holding_classical_streams_cannot_silence_another() {
    bounded(async {
        let (dr, ds) = (tempdir(), tempdir());
        let (r, s) = classical_pair(dr.path(), ds.path()).await;
        let hog = raw_peer(Keypair::generate_ed25519(), r.full_addr()).await;
        until_level(&r, hog.peer_id, "classical").await;
        let _held = hold_streams(&hog, &r, 4).await;

        // Its fifth stream gets status 1 for its message.
        let control = hog.control.clone().expect("raw peer");
        assert_eq!(
            classical_by_hand(control, r.peer_id, 7, b"one more")
                .await
                .0,
            Receipt {
                message_id: 7,
                status: ReceiptStatus::InboxFull
            }
        );
        assert_eq!(r.pq.metrics().classical_streams_open.get(), 4);

        // Another peer's message is delivered all the same.
        let sent = post(&s, r.peer_id, "still heard").await;
        assert_eq!(sent.status, 200, "{}", sent.body);
        assert_eq!(sent.json()["delivered"], true);
        let got = r.pq.inbox().list(Some(s.peer_id), 0, 10);
        assert_eq!(got.len(), 1);
        s.stop().await;
        r.stop().await;
    })
    .await;
}

/// A classical stream from a peer that has a PQ session is refused (§8.2),
/// no longer closed unread: its message gets receipt status 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_classical_stream_is_answered_with_status_refused() {
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let (a, b) = pq_pair(da.path(), db.path()).await;

        // A speaks the classical protocol by hand, as a buggy or hostile
        // sender would.
        let control = a.handle.stream_control();
        let (receipt, mut stream) =
            classical_by_hand(control, b.peer_id, 42, b"over Noise only").await;
        assert_eq!(
            receipt,
            Receipt {
                message_id: 42,
                status: ReceiptStatus::Refused
            }
        );
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "then the stream closes");
        assert!(b.pq.inbox().list(None, 0, 10).is_empty());
        assert_eq!(b.pq.metrics().classical_streams_refused.get(), 1);
        b.stop().await;
        a.stop().await;
    })
    .await;
}

/// A receiver that reads the message but never answers: after
/// `limits.delivery_timeout_secs` the API says 504 `no_receipt`, and the
/// message is counted undelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_receipt_in_time_is_504_never_delivered() {
    bounded(async {
        let dr = tempdir();
        let r = start(
            dr.path(),
            Opts {
                delivery_timeout: Duration::from_secs(1),
                ..Opts::default()
            },
        )
        .await;
        let silent = raw_peer(Keypair::generate_ed25519(), r.full_addr()).await;
        let mut incoming = silent
            .control
            .clone()
            .expect("raw peer")
            .accept(CLASSICAL_PROTOCOL)
            .expect("accept");
        let (got_tx, mut got_rx) = tokio::sync::mpsc::channel(4);
        let reader = tokio::spawn(async move {
            // Reads every message to its end, answers nothing and keeps
            // the stream open.
            let mut held = Vec::new();
            while let Some((_, mut stream)) = incoming.next().await {
                let mut buf = Vec::new();
                let _ = stream.read_to_end(&mut buf).await;
                let _ = got_tx.send(buf).await;
                held.push(stream);
            }
        });
        until_level(&r, silent.peer_id, "classical").await;

        let started = std::time::Instant::now();
        let sent = post(&r, silent.peer_id, "anyone there").await;
        assert_eq!(sent.status, 504, "{}", sent.body);
        assert_eq!(sent.json()["error"]["code"], "no_receipt");
        assert!(started.elapsed() >= Duration::from_secs(1));
        let got = got_rx
            .try_recv()
            .expect("the message did arrive, unanswered");
        assert!(!got.is_empty());
        assert_eq!(undelivered(&r, Undelivered::NoReceipt), 1);

        // Without waiting: 202 and an id at once; the outcome follows.
        let body = format!(
            r#"{{"to":"{}","body":"later","wait":false}}"#,
            silent.peer_id
        );
        let accepted = http(
            r.app.api_addr(),
            "POST",
            "/api/messages",
            Some(&token(&r)),
            Some(&body),
        )
        .await;
        assert_eq!(accepted.status, 202, "{}", accepted.body);
        let id = accepted.json()["id"].as_u64().expect("an id");
        assert!(
            accepted
                .headers
                .contains(&format!("/api/messages/sent/{id}"))
        );
        let outcome = until_settled(&r, id).await;
        assert_eq!(outcome["state"], "failed", "{outcome}");
        assert_eq!(outcome["delivered"], false);
        assert_eq!(outcome["error"]["code"], "no_receipt");
        assert_eq!(outcome["error"]["status"], 504);

        // The same through the layer: the error says what happened.
        let err =
            r.pq.send(silent.peer_id, b"again".to_vec())
                .await
                .expect_err("no receipt");
        assert!(matches!(err, SendError::NoReceipt { .. }), "{err}");
        reader.abort();
        r.stop().await;
    })
    .await;
}

/// Fault 5 of issue 23: 260 × 1 MiB from one peer (over its 32 MiB share
/// of the 256 MiB inbox, §9 rev 4) cost only that peer's own oldest
/// messages: another peer's earlier message stays, and every one of the
/// flood is still reported delivered (each was stored on arrival).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_peer_leaves_another_peers_earlier_message() {
    bounded(async {
        let (dr, da, db) = (tempdir(), tempdir(), tempdir());
        let r = start(dr.path(), Opts::default()).await;
        let a = start(da.path(), Opts::default()).await;
        let b = start(db.path(), Opts::default()).await;
        for n in [&a, &b] {
            n.connect(&r).await;
            n.pq.wait_for_session(&r.peer_id, Duration::from_secs(15))
                .await
                .expect("session");
        }
        b.pq.send(r.peer_id, b"earlier".to_vec())
            .await
            .expect("delivered");
        let started = std::time::Instant::now();
        let body = vec![0x5a; 1 << 20];
        for i in 0..260 {
            a.pq.send(r.peer_id, body.clone())
                .await
                .unwrap_or_else(|e| panic!("message {i}: {e}"));
        }
        println!("260 MiB delivered in {:?}", started.elapsed());
        let from_b = r.pq.inbox().list(Some(b.peer_id), 0, 10);
        assert_eq!(from_b.len(), 1);
        assert_eq!(from_b[0].body.as_slice(), b"earlier");
        let from_a = r.pq.inbox().list(Some(a.peer_id), 0, 1000);
        // Its newest 32 MiB: 31 messages of 1 MiB with their overhead.
        assert_eq!(from_a.len(), 31, "A keeps its newest 32 MiB");
        for n in [a, b, r] {
            n.stop().await;
        }
    })
    .await;
}

/// `"wait": false`: 202 with an id at once; `GET /api/messages/sent/{id}`
/// then says delivered, with the message id, once the receipt came. An
/// id never handed out is 404, one that is not a number 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_does_not_wait_reports_its_receipt_later() {
    bounded(async {
        let (da, db) = (tempdir(), tempdir());
        let (a, b) = pq_pair(da.path(), db.path()).await;
        let body = format!(r#"{{"to":"{}","body":"no hurry","wait":false}}"#, b.peer_id);
        let accepted = http(
            a.app.api_addr(),
            "POST",
            "/api/messages",
            Some(&token(&a)),
            Some(&body),
        )
        .await;
        assert_eq!(accepted.status, 202, "{}", accepted.body);
        let id = accepted.json()["id"].as_u64().expect("an id");
        let outcome = until_settled(&a, id).await;
        assert_eq!(outcome["state"], "delivered", "{outcome}");
        assert_eq!(outcome["security"], "pq");
        assert!(outcome["messageId"].is_u64(), "{outcome}");
        let got = b.pq.inbox().list(Some(a.peer_id), 0, 10);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body.as_slice(), b"no hurry");

        let unknown = http(
            a.app.api_addr(),
            "GET",
            "/api/messages/sent/999999",
            Some(&token(&a)),
            None,
        )
        .await;
        assert_eq!(unknown.status, 404, "{}", unknown.body);
        assert_eq!(unknown.json()["error"]["code"], "unknown_send");
        let bad = http(
            a.app.api_addr(),
            "GET",
            "/api/messages/sent/abc",
            Some(&token(&a)),
            None,
        )
        .await;
        assert_eq!(bad.status, 400, "{}", bad.body);
        let anonymous = http(
            a.app.api_addr(),
            "GET",
            &format!("/api/messages/sent/{id}"),
            None,
            None,
        )
        .await;
        assert_eq!(anonymous.status, 401);
        b.stop().await;
        a.stop().await;
    })
    .await;
}

/// §7 rev 4: a message larger than the receiver's maximum is refused at its
/// first fragment with receipt status 2; its rest is read and skipped, and
/// the session goes on (no session error, the next message delivered on the
/// same session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_receivers_maximum_gets_too_large_and_the_session_goes_on() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (da, db) = (tempdir(), tempdir());
        let a = start(
            da.path(),
            Opts {
                max_message_size: 4 << 20,
                ..Opts::default()
            },
        )
        .await;
        let b = start(db.path(), Opts::default()).await;
        a.connect(&b).await;
        for (x, y) in [(&a, &b), (&b, &a)] {
            x.pq.wait_for_session(&y.peer_id, Duration::from_secs(15))
                .await
                .expect("session");
        }
        let session = a.pq.session(&b.peer_id).expect("session").id;

        let refused = a.pq.send(b.peer_id, vec![7; 2 << 20]).await;
        assert!(
            matches!(
                refused,
                Err(SendError::NotDelivered {
                    status: ReceiptStatus::TooLarge,
                    ..
                })
            ),
            "{refused:?}"
        );
        assert_eq!(undelivered(&a, Undelivered::TooLarge), 1);
        let after = a.pq.send(b.peer_id, b"after".to_vec()).await;
        assert!(after.is_ok(), "{after:?}");
        assert_eq!(
            a.pq.session(&b.peer_id).map(|s| s.id),
            Some(session),
            "the same session"
        );
        let got = b.pq.inbox().list(Some(a.peer_id), 0, 10);
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].body[..], b"after");
        let errors = http(b.app.api_addr(), "GET", "/metrics", None, None)
            .await
            .body;
        assert!(
            !errors.contains("pqnode_pq_session_errors_total{"),
            "no session error: {errors}"
        );
        a.stop().await;
        b.stop().await;
    })
    .await
    .expect("test timed out");
}

/// Issue 29, item 3: classical slots follow the partial-message rules of
/// the PQ path. A peer trickling one byte of a message every 300 ms on each
/// of its 4 streams held them forever (the idle timer restarted on every
/// frame); now each message must be whole within
/// `limits.partial_message_timeout_secs`: it gets receipt status 4
/// (incomplete), the stream closes and its slot is free. A stream whose
/// message is answered is closed too, so a slot is held for one message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_trickling_classical_fragments_holds_no_slot_past_the_partial_timeout() {
    bounded(async {
        let dr = tempdir();
        let partial = Duration::from_secs(2);
        let r = start(
            dr.path(),
            Opts {
                partial_message_timeout: partial,
                ..Opts::default()
            },
        )
        .await;
        let hog = raw_peer(Keypair::generate_ed25519(), r.full_addr()).await;
        until_level(&r, hog.peer_id, "classical").await;
        let held = hold_streams(&hog, &r, 4).await;
        let started = tokio::time::Instant::now();
        let mut answers = Vec::new();
        for (i, stream) in held.into_iter().enumerate() {
            let id = 100 + i as u64;
            let (mut rd, mut wr) = stream.split();
            // One byte of a 1000-byte message every 300 ms, until the
            // stream is closed on it.
            let trickle = tokio::spawn(async move {
                for offset in 0u32..1000 {
                    let mut frag = id.to_be_bytes().to_vec();
                    frag.extend_from_slice(&1000u32.to_be_bytes());
                    frag.extend_from_slice(&offset.to_be_bytes());
                    frag.push(b'x');
                    if write_frame(&mut wr, &frag).await.is_err() {
                        return offset;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                1000
            });
            answers.push((id, trickle, async move {
                tokio::time::timeout(partial * 5, read_frame(&mut rd, 9, 9)).await
            }));
        }
        for (id, trickle, answer) in answers {
            let frame = answer
                .await
                .expect("the trickled message is answered within 5 × the partial timeout")
                .expect("a receipt frame");
            assert_eq!(
                Receipt::decode(&frame).expect("9 bytes"),
                Receipt {
                    message_id: id,
                    status: ReceiptStatus::Incomplete
                }
            );
            trickle.abort();
        }
        eventually(|| async { (r.pq.metrics().classical_streams_open.get() == 0).then_some(()) })
            .await;
        let took = started.elapsed();
        assert!(took < partial * 5, "slots held for {took:?}");
        assert!(r.pq.inbox().list(None, 0, 10).is_empty());

        // A whole message is stored and answered, and its stream closes:
        // the slot is back at once.
        let control = hog.control.clone().expect("raw peer");
        let (receipt, mut stream) = classical_by_hand(control, r.peer_id, 7, b"whole").await;
        assert_eq!(
            receipt,
            Receipt {
                message_id: 7,
                status: ReceiptStatus::Stored
            }
        );
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(partial, stream.read_to_end(&mut rest)).await;
        assert!(rest.is_empty());
        eventually(|| async { (r.pq.metrics().classical_streams_open.get() == 0).then_some(()) })
            .await;
        assert_eq!(r.pq.inbox().list(Some(hog.peer_id), 0, 10).len(), 1);
        r.stop().await;
    })
    .await;
}

/// Issue 29, item 5: the inbox kept messages of at most `max_established`
/// peers and made room for a new one by dropping every message of the peer
/// heard from longest ago, receipted ones included. With
/// `limits.max_established = 4`, a message answered `delivered: true` was
/// gone after four one-shot peers each sent one; now it stays (a new peer
/// that found no room would get status 1 instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipted_message_stays_when_other_peers_come_and_go() {
    bounded(async {
        let (dr, ds) = (tempdir(), tempdir());
        let opts = Opts::default();
        let mut config = pqsupport::config(dr.path(), &opts);
        config.limits.max_established = 4;
        let r = pqsupport::start_with(dr.path(), config, &opts).await;
        let s = start(ds.path(), Opts::default()).await;
        s.connect(&r).await;
        s.pq.wait_for_session(&r.peer_id, Duration::from_secs(15))
            .await
            .expect("session");
        let sent = post(&s, r.peer_id, "keep me").await;
        assert_eq!(sent.status, 200, "{}", sent.body);
        assert_eq!(sent.json()["delivered"], true);

        for i in 0..5u64 {
            let hog = raw_peer(Keypair::generate_ed25519(), r.full_addr()).await;
            until_level(&r, hog.peer_id, "classical").await;
            let control = hog.control.clone().expect("raw peer");
            let (receipt, _stream) =
                classical_by_hand(control, r.peer_id, i + 1, b"one-shot").await;
            assert_eq!(receipt.status, ReceiptStatus::Stored, "peer {i}");
            let gone = hog.peer_id;
            drop(hog);
            eventually(|| async { r.pq.peer(&gone).is_none().then_some(()) }).await;
        }
        let kept = r.pq.inbox().list(Some(s.peer_id), 0, 10);
        assert_eq!(kept.len(), 1, "the receipted message is still there");
        assert_eq!(kept[0].body.as_slice(), b"keep me");
        assert_eq!(r.pq.inbox().list(None, 0, 100).len(), 6);
        s.stop().await;
        r.stop().await;
    })
    .await;
}
