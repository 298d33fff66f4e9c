//! Handshake tests: full runs for both suites, Retry, Reject, and every way
//! a peer can lie or a message can be damaged.

use super::*;
use crate::channel::{Inbound, split_frames};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const ALICE: &[u8] = b"\x00\x24alice-peer-id-bytes-for-tests-0000000";
const BOB: &[u8] = b"\x00\x24bob-peer-id-bytes-for-tests-00000000";

/// Test records: `u8 len || peer_id || u16 suite || sig_pk`. The real format
/// (PROTOCOL.md §4) lives in pqnode-keys; here records are opaque.
fn test_record(peer: &[u8], key: &SigningKey) -> Vec<u8> {
    let mut r = vec![peer.len() as u8];
    r.extend_from_slice(peer);
    r.extend_from_slice(&key.suite().id().to_be_bytes());
    r.extend_from_slice(key.verifying_key().as_bytes());
    r
}

struct TestVerifier;

impl RecordVerifier for TestVerifier {
    fn verify_record(
        &self,
        record: &[u8],
        peer_id: &[u8],
        suite: Suite,
    ) -> Result<VerifyingKey, RecordRejected> {
        let bad = |reason: &str| RecordRejected {
            reason: reason.into(),
        };
        let len = *record.first().ok_or_else(|| bad("decode"))? as usize;
        let id = record.get(1..1 + len).ok_or_else(|| bad("decode"))?;
        if id != peer_id {
            return Err(bad("peer-id-mismatch"));
        }
        let rest = &record[1 + len..];
        if rest.len() < 2 || u16::from_be_bytes([rest[0], rest[1]]) != suite.id() {
            return Err(bad("suite-mismatch"));
        }
        VerifyingKey::from_bytes(suite, &rest[2..]).map_err(|_| bad("decode"))
    }
}

struct RefusingVerifier;

impl RecordVerifier for RefusingVerifier {
    fn verify_record(&self, _: &[u8], _: &[u8], _: Suite) -> Result<VerifyingKey, RecordRejected> {
        Err(RecordRejected {
            reason: "expired".into(),
        })
    }
}

fn config(peer: &[u8], suites: &[Suite], policy: KeyUpdatePolicy) -> Arc<HandshakeConfig> {
    let credentials = suites
        .iter()
        .map(|&s| {
            let key = SigningKey::generate(s).unwrap();
            let record = test_record(peer, &key);
            Credential {
                signing_key: Arc::new(key),
                record,
            }
        })
        .collect();
    Arc::new(HandshakeConfig {
        local_peer_id: peer.to_vec(),
        credentials,
        key_update: policy,
    })
}

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Which message a test tampers with, and how.
type Tamper<'a> = &'a dyn Fn(&str, &mut Vec<u8>);

fn no_tamper(_: &str, _: &mut Vec<u8>) {}

/// Runs a whole handshake in memory; `tamper` may change any message in
/// flight (named "init", "retry", "init2", "resp", "fin").
fn run(
    i_cfg: Arc<HandshakeConfig>,
    r_cfg: Arc<HandshakeConfig>,
    tamper: Tamper<'_>,
) -> Result<(Established, Established), (&'static str, HandshakeError)> {
    let mut rng = rng(7);
    let (i_state, mut init) = Initiator::start(i_cfg, BOB, &mut rng).map_err(|e| ("i-start", e))?;
    tamper("init", &mut init);
    let r_state = Responder::start(r_cfg, ALICE).map_err(|e| ("r-new", e))?;
    let (i_state, r_state, resp) =
        match r_state.handle(&init, &mut rng).map_err(|e| ("r-init", e))? {
            ResponderStep::Resp { state, resp } => (i_state, state, resp),
            ResponderStep::Retry { state, mut retry } => {
                tamper("retry", &mut retry);
                let (i_state, mut init2) = match i_state
                    .handle(&retry, &TestVerifier, &mut rng)
                    .map_err(|e| ("i-retry", e))?
                {
                    InitiatorStep::Retry { state, init } => (state, init),
                    InitiatorStep::Done { .. } => panic!("Retry finished the handshake"),
                };
                tamper("init2", &mut init2);
                match state.handle(&init2, &mut rng).map_err(|e| ("r-init2", e))? {
                    ResponderStep::Resp { state, resp } => (i_state, state, resp),
                    ResponderStep::Retry { .. } => {
                        return Err(("r-init2", HandshakeError::Protocol("second Retry")));
                    }
                }
            }
        };
    let mut resp = resp;
    tamper("resp", &mut resp);
    let (mut fin, i_session) = match i_state
        .handle(&resp, &TestVerifier, &mut rng)
        .map_err(|e| ("i-resp", e))?
    {
        InitiatorStep::Done { fin, session } => (fin, session),
        InitiatorStep::Retry { .. } => {
            return Err(("i-resp", HandshakeError::Protocol("unexpected Retry")));
        }
    };
    tamper("fin", &mut fin);
    let r_session = r_state
        .handle(&fin, &TestVerifier)
        .map_err(|e| ("r-fin", e))?;
    Ok((*i_session, r_session))
}

fn exchange(a: &mut Established, b: &mut Established, body: &[u8], now_ms: u64) -> Vec<Inbound> {
    let mut out = Vec::new();
    a.channel.sealer.seal_data(body, now_ms, &mut out).unwrap();
    split_frames(&out)
        .unwrap()
        .into_iter()
        .map(|f| b.channel.opener.open(f).unwrap())
        .collect()
}

#[test]
fn full_handshake_both_suites_with_traffic_and_key_update() {
    for suite in Suite::ALL {
        let policy = KeyUpdatePolicy {
            max_frames: 5,
            ..Default::default()
        };
        let (i_cfg, r_cfg) = (
            config(ALICE, &[suite], policy),
            config(BOB, &[suite], policy),
        );
        let (mut i, mut r) = run(i_cfg.clone(), r_cfg.clone(), &no_tamper).unwrap();
        assert_eq!((i.suite, r.suite), (suite, suite));
        assert_eq!(i.transcript_hash, r.transcript_hash);
        // Each side learned the other's signing key and record.
        assert_eq!(
            &i.peer_key,
            r_cfg.credentials[0].signing_key.verifying_key()
        );
        assert_eq!(
            &r.peer_key,
            i_cfg.credentials[0].signing_key.verifying_key()
        );
        assert_eq!(i.peer_record, r_cfg.credentials[0].record);
        assert_eq!(r.peer_record, i_cfg.credentials[0].record);
        let mut updates = 0;
        for n in 0..20u32 {
            let body = n.to_be_bytes();
            let got = exchange(&mut i, &mut r, &body, 0);
            updates += got.iter().filter(|g| **g == Inbound::KeyUpdate).count();
            assert_eq!(got.last(), Some(&Inbound::Data(body.to_vec())));
            let got = exchange(&mut r, &mut i, &body, 0);
            updates += got.iter().filter(|g| **g == Inbound::KeyUpdate).count();
            assert_eq!(got.last(), Some(&Inbound::Data(body.to_vec())));
        }
        assert!(updates >= 6, "{suite}: {updates} key updates");
        // Close one direction; the other still works.
        let mut out = Vec::new();
        i.channel.sealer.seal_close(&mut out).unwrap();
        assert_eq!(r.channel.opener.open(&out[4..]).unwrap(), Inbound::Close);
        assert_eq!(
            exchange(&mut r, &mut i, b"still", 0).last(),
            Some(&Inbound::Data(b"still".to_vec()))
        );
    }
}

#[test]
fn retry_when_the_responder_lacks_the_first_suite() {
    let i_cfg = config(
        ALICE,
        &[Suite::Kyber1024Dilithium5, Suite::Mlkem1024Mldsa87],
        KeyUpdatePolicy::default(),
    );
    let r_cfg = config(BOB, &[Suite::Mlkem1024Mldsa87], KeyUpdatePolicy::default());
    let seen = std::cell::RefCell::new(Vec::new());
    let record = |name: &str, _: &mut Vec<u8>| seen.borrow_mut().push(name.to_owned());
    let (mut i, mut r) = run(i_cfg, r_cfg, &record).unwrap();
    assert_eq!(*seen.borrow(), ["init", "retry", "init2", "resp", "fin"]);
    assert_eq!(i.suite, Suite::Mlkem1024Mldsa87);
    assert_eq!(r.suite, Suite::Mlkem1024Mldsa87);
    assert_eq!(
        exchange(&mut i, &mut r, b"after retry", 0),
        vec![Inbound::Data(b"after retry".to_vec())]
    );
}

#[test]
fn a_forged_retry_breaks_the_handshake() {
    let i_cfg = config(
        ALICE,
        &[Suite::Kyber1024Dilithium5, Suite::Mlkem1024Mldsa87],
        KeyUpdatePolicy::default(),
    );
    let r_cfg = config(
        BOB,
        &[Suite::Kyber1024Dilithium5, Suite::Mlkem1024Mldsa87],
        KeyUpdatePolicy::default(),
    );
    // An attacker cannot inject a Retry the responder did not send: model it
    // by replacing the responder's view of the Init with one naming suite 2
    // while the initiator believes it sent suite 1 — the prologues differ.
    let err = run(i_cfg, r_cfg, &|name, msg| {
        if name == "init" {
            // suites = [2, 1], suite = 2 is not a valid encoding of what I
            // sent; a tampered list is a protocol error or a MAC failure.
            msg[3..5].copy_from_slice(&2u16.to_be_bytes());
            msg[5..7].copy_from_slice(&1u16.to_be_bytes());
        }
    })
    .unwrap_err();
    assert!(
        matches!(err.1, HandshakeError::Protocol(_) | HandshakeError::BadMac),
        "{err:?}"
    );
}

#[test]
fn retry_rules_are_enforced_by_the_initiator() {
    let i_cfg = config(
        ALICE,
        &[Suite::Kyber1024Dilithium5, Suite::Mlkem1024Mldsa87],
        KeyUpdatePolicy::default(),
    );
    let mut rng = rng(1);
    // Retry naming the suite already tried.
    let (state, _) = Initiator::start(i_cfg.clone(), BOB, &mut rng).unwrap();
    let retry = Retry { suite: 1 }.encode();
    assert!(matches!(
        state.handle(&retry, &TestVerifier, &mut rng),
        Err(HandshakeError::Protocol(_))
    ));
    // Retry naming a suite not offered.
    let (state, _) = Initiator::start(i_cfg.clone(), BOB, &mut rng).unwrap();
    let retry = Retry { suite: 0x0303 }.encode();
    assert!(matches!(
        state.handle(&retry, &TestVerifier, &mut rng),
        Err(HandshakeError::Protocol(_))
    ));
    // A second Retry.
    let (state, _) = Initiator::start(i_cfg, BOB, &mut rng).unwrap();
    let Ok(InitiatorStep::Retry { state, .. }) =
        state.handle(&Retry { suite: 2 }.encode(), &TestVerifier, &mut rng)
    else {
        panic!("first Retry must be followed");
    };
    assert_eq!(state.suite(), Suite::Mlkem1024Mldsa87);
    let err = state
        .handle(&Retry { suite: 1 }.encode(), &TestVerifier, &mut rng)
        .err()
        .unwrap();
    assert!(matches!(err, HandshakeError::Protocol("second Retry")));
    assert_eq!(err.reject_reason(), Some(RejectReason::BadMessage));
}

#[test]
fn no_common_suite_is_rejected_with_reason_1() {
    let i_cfg = config(
        ALICE,
        &[Suite::Kyber1024Dilithium5],
        KeyUpdatePolicy::default(),
    );
    let r_cfg = config(BOB, &[Suite::Mlkem1024Mldsa87], KeyUpdatePolicy::default());
    let (stage, err) = run(i_cfg.clone(), r_cfg, &no_tamper).unwrap_err();
    assert_eq!(stage, "r-init");
    assert!(matches!(&err, HandshakeError::NoCommonSuite { offered } if offered == &[1]));
    let reason = err.reject_reason().unwrap();
    assert_eq!(reason, RejectReason::NoCommonSuite);
    // The initiator reads the Reject as a typed error.
    let mut rng = rng(2);
    let (state, _) = Initiator::start(i_cfg, BOB, &mut rng).unwrap();
    let err = state
        .handle(&reject_message(reason), &TestVerifier, &mut rng)
        .err()
        .unwrap();
    assert!(matches!(
        err,
        HandshakeError::Rejected(RejectReason::NoCommonSuite)
    ));
    assert_eq!(
        err.reject_reason(),
        None,
        "never answer a Reject with a Reject"
    );
}

#[test]
fn a_different_peer_id_in_one_prologue_fails() {
    for suite in Suite::ALL {
        let i_cfg = config(ALICE, &[suite], KeyUpdatePolicy::default());
        let r_cfg = config(BOB, &[suite], KeyUpdatePolicy::default());
        let mut rng = rng(3);
        // The initiator thinks it talks to BOB; the responder believes the
        // initiator is someone else (a relayed or spliced connection).
        let (i_state, init) = Initiator::start(i_cfg, BOB, &mut rng).unwrap();
        let r_state = Responder::start(r_cfg, b"mallory").unwrap();
        let Ok(ResponderStep::Resp { resp, .. }) = r_state.handle(&init, &mut rng) else {
            panic!()
        };
        let err = i_state
            .handle(&resp, &TestVerifier, &mut rng)
            .err()
            .unwrap();
        assert!(matches!(err, HandshakeError::BadMac), "{err:?}");
        assert_eq!(err.reject_reason(), Some(RejectReason::AuthFailed));
    }
}

#[test]
fn a_record_for_another_peer_or_a_refusing_verifier_fails() {
    let suite = Suite::Mlkem1024Mldsa87;
    // Responder publishes a record naming another PeerId.
    let key = SigningKey::generate(suite).unwrap();
    let record = test_record(b"someone-else", &key);
    let r_cfg = Arc::new(HandshakeConfig {
        local_peer_id: BOB.to_vec(),
        credentials: vec![Credential {
            signing_key: Arc::new(key),
            record,
        }],
        key_update: KeyUpdatePolicy::default(),
    });
    let (stage, err) = run(
        config(ALICE, &[suite], KeyUpdatePolicy::default()),
        r_cfg,
        &no_tamper,
    )
    .unwrap_err();
    assert_eq!(stage, "i-resp");
    assert!(
        matches!(&err, HandshakeError::Record(r) if r.reason == "peer-id-mismatch"),
        "{err:?}"
    );

    // The verifier refuses outright, on either side.
    let mut rng = rng(4);
    let (i_state, init) = Initiator::start(
        config(ALICE, &[suite], KeyUpdatePolicy::default()),
        BOB,
        &mut rng,
    )
    .unwrap();
    let r_state =
        Responder::start(config(BOB, &[suite], KeyUpdatePolicy::default()), ALICE).unwrap();
    let Ok(ResponderStep::Resp {
        resp,
        state: r_state,
    }) = r_state.handle(&init, &mut rng)
    else {
        panic!()
    };
    let err = i_state
        .handle(&resp, &RefusingVerifier, &mut rng)
        .err()
        .unwrap();
    assert!(matches!(&err, HandshakeError::Record(r) if r.reason == "expired"));
    assert_eq!(err.reject_reason(), Some(RejectReason::AuthFailed));

    let (i_state, init) = Initiator::start(
        config(ALICE, &[suite], KeyUpdatePolicy::default()),
        BOB,
        &mut rng,
    )
    .unwrap();
    drop(r_state);
    let r_state =
        Responder::start(config(BOB, &[suite], KeyUpdatePolicy::default()), ALICE).unwrap();
    let Ok(ResponderStep::Resp {
        resp,
        state: r_state,
    }) = r_state.handle(&init, &mut rng)
    else {
        panic!()
    };
    let Ok(InitiatorStep::Done { fin, .. }) = i_state.handle(&resp, &TestVerifier, &mut rng) else {
        panic!()
    };
    let err = r_state.handle(&fin, &RefusingVerifier).unwrap_err();
    assert!(matches!(&err, HandshakeError::Record(r) if r.reason == "expired"));
}

/// A responder that signs the wrong transcript but computes a correct MAC:
/// only the signature check can catch it.
#[test]
fn a_signature_over_the_wrong_transcript_fails() {
    for suite in Suite::ALL {
        let mut rng = rng(5);
        let i_cfg = config(ALICE, &[suite], KeyUpdatePolicy::default());
        let (i_state, init_bytes) = Initiator::start(i_cfg, BOB, &mut rng).unwrap();
        let FirstToResponder::Init(init) = FirstToResponder::decode(&init_bytes).unwrap() else {
            panic!()
        };

        let key = SigningKey::generate(suite).unwrap();
        let kem_pk = KemPublicKey::from_bytes(suite, &init.kem_pk).unwrap();
        let x_sk = X25519Secret::random(&mut rng);
        let ss_x = hybrid::x25519(&x_sk, &init.x_pk).unwrap();
        let (ct, ss_kem) = kem_pk.encapsulate().unwrap();
        let mut resp = Resp {
            suite,
            x_pk: hybrid::x25519_public(&x_sk),
            kem_ct: ct.as_bytes().to_vec(),
            nonce: [0; 32],
            record: test_record(BOB, &key),
            sig: Vec::new(),
            mac: [0; 32],
        };
        let mut t = Transcript::new(&prologue(ALICE, BOB).unwrap());
        let th1 = t.th1(&init_bytes, &resp.encode()[..resp.th1_len()]);
        let schedule = KeySchedule::new(&th1, &ss_kem, &ss_x);
        let mut wrong = th1;
        wrong[0] ^= 1;
        resp.sig = key.sign(&signed_message(LABEL_RESP, &wrong)).unwrap();
        let enc = resp.encode();
        let th2 = t.th2(&enc[resp.th1_len()..enc.len() - 32]);
        resp.mac = hybrid::hmac_sha512_256(schedule.conf_r().unwrap().expose(), &th2);
        let err = i_state
            .handle(&resp.encode(), &TestVerifier, &mut rng)
            .err()
            .unwrap();
        assert!(
            matches!(err, HandshakeError::BadSignature),
            "{suite}: {err:?}"
        );

        // The same with the right transcript succeeds (the forgery was the only fault).
        let (i_state, init_bytes) = Initiator::start(
            config(ALICE, &[suite], KeyUpdatePolicy::default()),
            BOB,
            &mut rng,
        )
        .unwrap();
        let FirstToResponder::Init(init) = FirstToResponder::decode(&init_bytes).unwrap() else {
            panic!()
        };
        let kem_pk = KemPublicKey::from_bytes(suite, &init.kem_pk).unwrap();
        let ss_x = hybrid::x25519(&x_sk, &init.x_pk).unwrap();
        let (ct, ss_kem) = kem_pk.encapsulate().unwrap();
        resp.kem_ct = ct.as_bytes().to_vec();
        resp.sig = Vec::new();
        let mut t = Transcript::new(&prologue(ALICE, BOB).unwrap());
        let th1 = t.th1(&init_bytes, &resp.encode()[..resp.th1_len()]);
        let schedule = KeySchedule::new(&th1, &ss_kem, &ss_x);
        resp.sig = key.sign(&signed_message(LABEL_RESP, &th1)).unwrap();
        let enc = resp.encode();
        let th2 = t.th2(&enc[resp.th1_len()..enc.len() - 32]);
        resp.mac = hybrid::hmac_sha512_256(schedule.conf_r().unwrap().expose(), &th2);
        assert!(matches!(
            i_state.handle(&resp.encode(), &TestVerifier, &mut rng),
            Ok(InitiatorStep::Done { .. })
        ));
    }
}

/// An initiator that signs the wrong transcript in Fin but MACs correctly.
#[test]
fn a_fin_signature_over_the_wrong_transcript_fails() {
    let suite = Suite::Kyber1024Dilithium5;
    let mut rng = rng(6);
    let i_cfg = config(ALICE, &[suite], KeyUpdatePolicy::default());
    let (i_state, init) = Initiator::start(i_cfg.clone(), BOB, &mut rng).unwrap();
    let r_state =
        Responder::start(config(BOB, &[suite], KeyUpdatePolicy::default()), ALICE).unwrap();
    let Ok(ResponderStep::Resp {
        resp,
        state: r_state,
    }) = r_state.handle(&init, &mut rng)
    else {
        panic!()
    };
    // Rebuild the initiator's view by hand.
    let mut t = Transcript::new(&prologue(ALICE, BOB).unwrap());
    let ToInitiator::Resp(parsed) = ToInitiator::decode(&resp).unwrap() else {
        panic!()
    };
    let th1 = t.th1(&init, &resp[..parsed.th1_len()]);
    let ct = KemCiphertext::from_bytes(suite, &parsed.kem_ct).unwrap();
    let ss_kem = i_state.ephemeral.kem_sk.decapsulate(&ct).unwrap();
    let ss_x = hybrid::x25519(&i_state.ephemeral.x_sk, &parsed.x_pk).unwrap();
    let schedule = KeySchedule::new(&th1, &ss_kem, &ss_x);
    t.th2(&resp[parsed.th1_len()..resp.len() - 32]);
    let cred = &i_cfg.credentials[0];
    let mut fin = Fin {
        record: cred.record.clone(),
        sig: Vec::new(),
        mac: [0; 32],
    };
    let th3 = t.th3(&parsed.mac, &fin.encode()[..fin.th3_len()]);
    let mut wrong = th3;
    wrong[63] ^= 0x80;
    fin.sig = cred
        .signing_key
        .sign(&signed_message(LABEL_FIN, &wrong))
        .unwrap();
    let enc = fin.encode();
    let th4 = t.th4(&enc[fin.th3_len()..enc.len() - 32]);
    fin.mac = hybrid::hmac_sha512_256(schedule.conf_i().unwrap().expose(), &th4);
    let err = r_state.handle(&fin.encode(), &TestVerifier).unwrap_err();
    assert!(matches!(err, HandshakeError::BadSignature), "{err:?}");
}

/// Positions to flip in a message: every byte near a field boundary, and a
/// stride through the large fields, so every field of every message is hit.
fn flip_positions(len: usize, boundaries: &[usize]) -> Vec<usize> {
    let mut pos: Vec<usize> = (0..len).step_by(61).collect();
    for &b in boundaries {
        for p in b.saturating_sub(2)..(b + 3).min(len) {
            pos.push(p);
        }
    }
    pos.push(len - 1);
    pos.sort_unstable();
    pos.dedup();
    pos
}

#[test]
fn a_bit_flip_anywhere_in_any_message_fails_the_handshake() {
    for suite in Suite::ALL {
        let policy = KeyUpdatePolicy::default();
        let i_cfg = config(ALICE, &[suite], policy);
        let r_cfg = config(BOB, &[suite], policy);
        // Learn the message sizes from a clean run.
        let sizes = std::cell::RefCell::new(std::collections::HashMap::new());
        run(i_cfg.clone(), r_cfg.clone(), &|name, msg| {
            sizes.borrow_mut().insert(name.to_owned(), msg.len());
        })
        .unwrap();
        let sizes = sizes.into_inner();
        let rec = i_cfg.credentials[0].record.len();
        let kem = suite.kem_public_key_len();
        let sig = suite.signature_len();
        let ct = suite.kem_ciphertext_len();
        let fields = [
            ("init", vec![0, 1, 2, 3, 5, 7, 39, 41, 41 + kem]),
            (
                "resp",
                vec![
                    0,
                    1,
                    3,
                    35,
                    35 + ct,
                    67 + ct,
                    71 + ct,
                    71 + ct + rec,
                    73 + ct + rec,
                    73 + ct + rec + sig,
                ],
            ),
            ("fin", vec![0, 1, 5, 5 + rec, 7 + rec, 7 + rec + sig]),
        ];
        let mut flips = 0;
        for (name, boundaries) in fields {
            for pos in flip_positions(sizes[name], &boundaries) {
                for bit in [0x01u8, 0x80] {
                    let result = run(i_cfg.clone(), r_cfg.clone(), &|n, msg| {
                        if n == name {
                            msg[pos] ^= bit;
                        }
                    });
                    assert!(
                        result.is_err(),
                        "{suite}: flip {bit:#x} at {name}[{pos}] went unnoticed"
                    );
                    flips += 1;
                }
            }
        }
        assert!(flips > 300, "{flips}");
    }
}

#[test]
fn truncation_at_every_offset_fails_the_handshake() {
    let suite = Suite::Mlkem1024Mldsa87;
    let i_cfg = config(ALICE, &[suite], KeyUpdatePolicy::default());
    let r_cfg = config(BOB, &[suite], KeyUpdatePolicy::default());
    for name in ["init", "resp", "fin"] {
        let len = std::cell::Cell::new(0);
        run(i_cfg.clone(), r_cfg.clone(), &|n, msg| {
            if n == name {
                len.set(msg.len());
            }
        })
        .unwrap();
        // Every offset of the decoder is covered by the codec tests; here a
        // stride plus the last 40 offsets exercise the full state machines.
        let offsets = (0..len.get())
            .step_by(97)
            .chain(len.get().saturating_sub(40)..len.get());
        for cut in offsets {
            let result = run(i_cfg.clone(), r_cfg.clone(), &|n, msg| {
                if n == name {
                    msg.truncate(cut);
                }
            });
            let (_, err) = result
                .err()
                .unwrap_or_else(|| panic!("{name} cut at {cut} accepted"));
            assert!(
                matches!(err, HandshakeError::Decode(_)),
                "{name} cut at {cut}: {err:?}"
            );
        }
    }
}

#[test]
fn wrong_type_oversized_and_reordered_messages_are_decode_errors() {
    let suite = Suite::Kyber1024Dilithium5;
    let mut rng = rng(8);
    let (i_state, init) = Initiator::start(
        config(ALICE, &[suite], KeyUpdatePolicy::default()),
        BOB,
        &mut rng,
    )
    .unwrap();
    // The responder receives a Fin first.
    let r_state =
        Responder::start(config(BOB, &[suite], KeyUpdatePolicy::default()), ALICE).unwrap();
    let err = r_state.handle(&[3, 0, 0, 0, 0], &mut rng).err().unwrap();
    assert!(matches!(
        err,
        HandshakeError::Decode(DecodeError::UnexpectedType { got: 3, .. })
    ));
    // The initiator receives its own Init back.
    let err = i_state
        .handle(&init, &TestVerifier, &mut rng)
        .err()
        .unwrap();
    assert!(matches!(
        err,
        HandshakeError::Decode(DecodeError::UnexpectedType { got: 1, .. })
    ));
    // Oversized.
    let r_state =
        Responder::start(config(BOB, &[suite], KeyUpdatePolicy::default()), ALICE).unwrap();
    let mut big = init.clone();
    big.resize(messages::MAX_MESSAGE_LEN + 1, 0);
    let err = r_state.handle(&big, &mut rng).err().unwrap();
    assert!(matches!(
        err,
        HandshakeError::Decode(DecodeError::TooLong(_))
    ));
    assert_eq!(err.reject_reason(), Some(RejectReason::BadMessage));
}

#[test]
fn low_order_x25519_keys_are_refused() {
    let suite = Suite::Kyber1024Dilithium5;
    let mut rng = rng(9);
    let (_, init) = Initiator::start(
        config(ALICE, &[suite], KeyUpdatePolicy::default()),
        BOB,
        &mut rng,
    )
    .unwrap();
    let mut bad = init.clone();
    bad[7..39].copy_from_slice(&[0u8; 32]); // x_pk = 0 (suites list has one entry)
    let r_state =
        Responder::start(config(BOB, &[suite], KeyUpdatePolicy::default()), ALICE).unwrap();
    let err = r_state.handle(&bad, &mut rng).err().unwrap();
    assert!(matches!(err, HandshakeError::LowOrderKey), "{err:?}");
}

#[test]
fn replayed_reordered_and_duplicated_frames_end_the_session() {
    let suite = Suite::Mlkem1024Mldsa87;
    let policy = KeyUpdatePolicy::default();
    let (mut i, mut r) = run(
        config(ALICE, &[suite], policy),
        config(BOB, &[suite], policy),
        &no_tamper,
    )
    .unwrap();
    let mut out = Vec::new();
    for body in [b"one", b"two", b"thr"] {
        i.channel.sealer.seal_data(body, 0, &mut out).unwrap();
    }
    let frames = split_frames(&out).unwrap();
    assert_eq!(
        r.channel.opener.open(frames[0]).unwrap(),
        Inbound::Data(b"one".to_vec())
    );
    // duplicate
    assert!(matches!(
        r.channel.opener.open(frames[0]),
        Err(crate::channel::ChannelError::UnexpectedSeq { .. })
    ));
    // the session is dead for everything after
    assert!(r.channel.opener.open(frames[1]).is_err());

    let (mut i, mut r) = run(
        config(ALICE, &[suite], policy),
        config(BOB, &[suite], policy),
        &no_tamper,
    )
    .unwrap();
    let mut out = Vec::new();
    for body in [b"one", b"two"] {
        i.channel.sealer.seal_data(body, 0, &mut out).unwrap();
    }
    let frames = split_frames(&out).unwrap();
    // reordered
    assert!(r.channel.opener.open(frames[1]).is_err());
    // frames of one direction do not open in the other
    let (mut i, _) = run(
        config(ALICE, &[suite], policy),
        config(BOB, &[suite], policy),
        &no_tamper,
    )
    .unwrap();
    let mut out = Vec::new();
    i.channel
        .sealer
        .seal_data(b"reflected", 0, &mut out)
        .unwrap();
    assert!(matches!(
        i.channel.opener.open(&out[4..]),
        Err(crate::channel::ChannelError::Forged)
    ));
}

#[test]
fn sessions_are_independent() {
    let suite = Suite::Kyber1024Dilithium5;
    let policy = KeyUpdatePolicy::default();
    let i_cfg = config(ALICE, &[suite], policy);
    let r_cfg = config(BOB, &[suite], policy);
    let (mut i1, _) = run(i_cfg.clone(), r_cfg.clone(), &no_tamper).unwrap();
    let (_, mut r2) = run(i_cfg, r_cfg, &no_tamper).unwrap();
    let mut out = Vec::new();
    i1.channel.sealer.seal_data(b"x", 0, &mut out).unwrap();
    assert!(matches!(
        r2.channel.opener.open(&out[4..]),
        Err(crate::channel::ChannelError::Forged)
    ));
}

/// PROTOCOL.md §5 rev 3: toward a pinned peer the initiator offers only its
/// pinned suites, and a responder treats a pinned initiator's unpinned
/// suites as not enabled — so no Retry can move a pinned peer to a suite it
/// has no pin for.
#[test]
fn suites_toward_a_pinned_peer_are_only_the_pinned_ones() {
    let both = [Suite::Kyber1024Dilithium5, Suite::Mlkem1024Mldsa87];
    let i_cfg = config(ALICE, &both, KeyUpdatePolicy::default());
    let r_cfg = config(BOB, &both, KeyUpdatePolicy::default());
    let mut rng = rng(7);

    // The initiator offers only the pinned suite, in its own order.
    let (state, init) =
        Initiator::start_offering(i_cfg.clone(), BOB, &[Suite::Mlkem1024Mldsa87], &mut rng)
            .unwrap();
    assert_eq!(state.suite(), Suite::Mlkem1024Mldsa87);
    let FirstToResponder::Init(parsed) = FirstToResponder::decode(&init).unwrap() else {
        panic!("an Init");
    };
    assert_eq!(parsed.suites, vec![Suite::Mlkem1024Mldsa87.id()]);
    // A Retry to the unpinned suite (enabled here) is `key-mismatch`, and
    // answered with Reject 5 (auth-failed).
    let err = state
        .handle(&Retry { suite: 1 }.encode(), &TestVerifier, &mut rng)
        .err()
        .unwrap();
    assert!(
        matches!(err, HandshakeError::UnpinnedSuite { suite: 1 }),
        "{err:?}"
    );
    assert_eq!(err.reject_reason(), Some(RejectReason::AuthFailed));
    // A Retry to a suite this node does not enable stays a protocol error.
    let (state, _) =
        Initiator::start_offering(i_cfg.clone(), BOB, &[Suite::Mlkem1024Mldsa87], &mut rng)
            .unwrap();
    let err = state
        .handle(&Retry { suite: 0x0303 }.encode(), &TestVerifier, &mut rng)
        .err()
        .unwrap();
    assert!(matches!(err, HandshakeError::Protocol(_)), "{err:?}");
    // Nothing to offer is an error, not an empty Init.
    assert!(Initiator::start_offering(i_cfg.clone(), BOB, &[], &mut rng).is_err());

    // A responder allowing only suite 2 answers a first Init for suite 1
    // with a Retry to suite 2 ...
    let (_, init) = Initiator::start(i_cfg.clone(), BOB, &mut rng).unwrap();
    let r = Responder::start_allowing(r_cfg.clone(), ALICE, Some(vec![Suite::Mlkem1024Mldsa87]))
        .unwrap();
    let Ok(ResponderStep::Retry { retry, .. }) = r.handle(&init, &mut rng) else {
        panic!("Retry expected");
    };
    assert_eq!(retry, Retry { suite: 2 }.encode());
    // ... and an initiator offering only suite 1 with Reject 1.
    let (_, init) =
        Initiator::start_offering(i_cfg, BOB, &[Suite::Kyber1024Dilithium5], &mut rng).unwrap();
    let r = Responder::start_allowing(r_cfg, ALICE, Some(vec![Suite::Mlkem1024Mldsa87])).unwrap();
    let err = r.handle(&init, &mut rng).err().unwrap();
    assert!(
        matches!(err, HandshakeError::NoCommonSuite { .. }),
        "{err:?}"
    );
}
