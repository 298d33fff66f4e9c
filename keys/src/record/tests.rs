//! Unit tests of the record codec and verifier.

use super::*;

const NOW: u64 = 1_800_000_000;

fn fixture(suite: Suite) -> (Keypair, SigningKey) {
    (
        Keypair::generate_ed25519(),
        SigningKey::generate(suite).unwrap(),
    )
}

fn params(addrs: &[Multiaddr]) -> RecordParams<'_> {
    RecordParams {
        seq: 7,
        issued_at: NOW,
        expires_at: NOW + DEFAULT_VALIDITY_SECS,
        addrs,
    }
}

/// Wraps an arbitrary payload in a correctly signed envelope.
fn envelope(identity: &Keypair, payload: Vec<u8>) -> Vec<u8> {
    SignedEnvelope::new(identity, DOMAIN.to_owned(), PAYLOAD_TYPE.to_vec(), payload)
        .unwrap()
        .into_protobuf_encoding()
}

fn payload_of(bytes: &[u8]) -> Vec<u8> {
    parse_envelope(bytes).unwrap().payload.to_vec()
}

fn decode_err(bytes: &[u8]) -> DecodeError {
    match decode(bytes, &Suite::ALL) {
        Err(RecordError::Decode(e)) => e,
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[test]
fn build_verify_round_trip_every_suite() {
    for suite in Suite::ALL {
        let (id, key) = fixture(suite);
        let peer = id.public().to_peer_id();
        let addrs: Vec<Multiaddr> = vec![
            "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
            format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{peer}")
                .parse()
                .unwrap(),
        ];
        let rec = build(&id, &key, None, &params(&addrs)).unwrap();
        let v = verify(rec.envelope_bytes(), &VerifyContext::new(NOW, &Suite::ALL)).unwrap();
        assert_eq!(v.peer_id(), &peer);
        assert_eq!(v.suite(), suite);
        assert_eq!(v.sig_pk(), key.verifying_key());
        assert_eq!(
            (v.seq(), v.issued_at(), v.expires_at()),
            (7, NOW, NOW + 86_400)
        );
        assert_eq!(v.addrs(), &addrs[..]);
        assert_eq!(v.body(), rec.body_bytes());
        assert_eq!(v.envelope(), rec.envelope_bytes());
        assert_eq!(v.rotated_from(), None);
        assert_eq!(v.pin(), PinCheck::Unpinned);
        // re-encoding the decoded body gives the received bytes
        let d = decode(rec.envelope_bytes(), &Suite::ALL).unwrap();
        assert_eq!(d.body().encode().unwrap(), d.body_bytes());
        assert_eq!(d.body_bytes(), rec.body_bytes());
    }
}

#[test]
fn rotation_statement_round_trips() {
    let suite = Suite::Mlkem1024Mldsa87;
    let (id, old) = fixture(suite);
    let new = SigningKey::generate(suite).unwrap();
    let rec = build(&id, &new, Some(&old), &params(&[])).unwrap();
    let mut ctx = VerifyContext::new(NOW, &Suite::ALL);
    ctx.pinned = Some(Fingerprint::of(old.verifying_key()));
    let v = verify(rec.envelope_bytes(), &ctx).unwrap();
    assert_eq!(v.rotated_from(), Some(Fingerprint::of(old.verifying_key())));
    assert_eq!(
        v.pin(),
        PinCheck::Rotated {
            from: Fingerprint::of(old.verifying_key())
        }
    );
    // rotating to the same key, or across suites, is refused
    assert!(matches!(
        build(&id, &new, Some(&new), &params(&[])),
        Err(BuildError::BadRotationKey)
    ));
    let other_suite = SigningKey::generate(Suite::Kyber1024Dilithium5).unwrap();
    assert!(matches!(
        build(&id, &new, Some(&other_suite), &params(&[])),
        Err(BuildError::BadRotationKey)
    ));
}

#[test]
fn builder_refuses_what_the_decoder_would() {
    let (id, key) = fixture(Suite::Kyber1024Dilithium5);
    let mut p = params(&[]);
    p.expires_at = p.issued_at;
    assert!(matches!(
        build(&id, &key, None, &p),
        Err(BuildError::ValidityWindow { .. })
    ));
    p.expires_at = p.issued_at + MAX_VALIDITY_SECS + 1;
    assert!(matches!(
        build(&id, &key, None, &p),
        Err(BuildError::ValidityWindow { .. })
    ));
    let many: Vec<Multiaddr> = (0..17)
        .map(|i| format!("/ip4/10.0.0.1/tcp/{}", 1000 + i).parse().unwrap())
        .collect();
    assert!(matches!(
        build(&id, &key, None, &params(&many)),
        Err(BuildError::Invalid(DecodeError::TooManyAddrs(17)))
    ));
    let dup: Vec<Multiaddr> = vec!["/ip4/10.0.0.1/tcp/1".parse().unwrap(); 2];
    assert!(matches!(
        build(&id, &key, None, &params(&dup)),
        Err(BuildError::Invalid(DecodeError::DuplicateAddr { index: 1 }))
    ));
    let stranger = PeerId::random();
    let foreign: Vec<Multiaddr> = vec![
        format!("/ip4/10.0.0.1/tcp/1/p2p/{stranger}")
            .parse()
            .unwrap(),
    ];
    assert!(matches!(
        build(&id, &key, None, &params(&foreign)),
        Err(BuildError::Invalid(DecodeError::AddrPeerId { index: 0 }))
    ));
    // a /p2p naming a relay before /p2p-circuit is fine
    let me = id.public().to_peer_id();
    let relayed: Vec<Multiaddr> = vec![
        format!("/ip4/10.0.0.1/tcp/1/p2p/{stranger}/p2p-circuit/p2p/{me}")
            .parse()
            .unwrap(),
    ];
    build(&id, &key, None, &params(&relayed)).unwrap();
    let long: Vec<Multiaddr> = vec![
        format!("/dns/{}.example/tcp/1", "a".repeat(120))
            .parse()
            .unwrap(),
    ];
    assert!(matches!(
        build(&id, &key, None, &params(&long)),
        Err(BuildError::Invalid(DecodeError::AddrLength {
            index: 0,
            ..
        }))
    ));
}

#[test]
fn strict_decoding_of_the_payload() {
    let suite = Suite::Kyber1024Dilithium5;
    let (id, key) = fixture(suite);
    let rec = build(&id, &key, None, &params(&[])).unwrap();
    let payload = payload_of(rec.envelope_bytes());
    let body_len = rec.body_bytes().len();

    let mut p = payload.clone();
    p.push(0);
    assert_eq!(decode_err(&envelope(&id, p)), DecodeError::TrailingBytes(1));

    let mut p = payload.clone();
    p.pop();
    assert!(matches!(
        decode_err(&envelope(&id, p)),
        DecodeError::Truncated { .. }
    ));

    let mut p = payload.clone();
    p[0] = 2;
    assert_eq!(decode_err(&envelope(&id, p)), DecodeError::Version(2));

    let mut p = payload.clone();
    p[body_len - 1] = 2; // rotation flag
    assert_eq!(decode_err(&envelope(&id, p)), DecodeError::RotationFlag(2));

    let mut p = payload.clone();
    p[body_len..body_len + 2].copy_from_slice(&4626u16.to_be_bytes());
    assert!(matches!(
        decode_err(&envelope(&id, p)),
        DecodeError::Length {
            field: "signature",
            expected: 4627,
            got: 4626
        }
    ));

    for unknown in [0u16, 3, 0xffff] {
        let mut p = payload.clone();
        p[1..3].copy_from_slice(&unknown.to_be_bytes());
        assert_eq!(
            decode(&envelope(&id, p), &Suite::ALL).unwrap_err(),
            RecordError::UnsupportedSuite { id: unknown }
        );
    }
    // a known suite this node does not enable
    assert_eq!(
        decode(rec.envelope_bytes(), &[Suite::Mlkem1024Mldsa87])
            .unwrap_err()
            .name(),
        "unsupported-suite"
    );

    // peer id garbage
    let mut p = payload.clone();
    p[4] ^= 0xff;
    assert!(decode(&envelope(&id, p), &Suite::ALL).is_err());

    assert!(matches!(
        decode_err(&envelope(&id, Vec::new())),
        DecodeError::Truncated { .. }
    ));
}

#[test]
fn strict_decoding_of_the_envelope() {
    let (id, key) = fixture(Suite::Mlkem1024Mldsa87);
    let rec = build(&id, &key, None, &params(&[])).unwrap();
    let bytes = rec.envelope_bytes();
    // another payload type
    let other = SignedEnvelope::new(
        &id,
        DOMAIN.to_owned(),
        b"/other/1".to_vec(),
        payload_of(bytes),
    )
    .unwrap()
    .into_protobuf_encoding();
    assert_eq!(decode_err(&other), DecodeError::PayloadType);
    // an unknown trailing field
    let mut extra = bytes.to_vec();
    extra.extend_from_slice(&[0x32, 0x01, 0x00]); // field 6, 1 byte
    assert!(matches!(decode_err(&extra), DecodeError::Envelope(_)));
    // a repeated field
    let mut repeated = bytes.to_vec();
    repeated.extend_from_slice(&[0x2a, 0x00]); // field 5 again, empty
    assert!(matches!(decode_err(&repeated), DecodeError::Envelope(_)));
    // non-minimal length varint in the first field
    assert_eq!(bytes[0], 0x0a);
    let len = bytes[1];
    assert!(len < 0x80);
    let mut padded = vec![0x0a, len | 0x80, 0x00];
    padded.extend_from_slice(&bytes[2..]);
    assert_eq!(decode_err(&padded), DecodeError::NonCanonical);
    // truncation anywhere is an error, never a panic
    for cut in [0, 1, 2, 10, bytes.len() / 2, bytes.len() - 1] {
        assert!(decode(&bytes[..cut], &Suite::ALL).is_err(), "cut at {cut}");
    }
    // oversized input is refused before parsing
    let huge = vec![0u8; MAX_ENVELOPE_LEN + 1];
    assert!(matches!(decode_err(&huge), DecodeError::TooLarge { .. }));
}

#[test]
fn address_rules_on_decode() {
    let suite = Suite::Kyber1024Dilithium5;
    let (id, key) = fixture(suite);
    let peer = id.public().to_peer_id();
    // Rebuild the body with raw address bytes, sign the payload properly.
    let with_addrs = |addrs: &[&[u8]]| -> Vec<u8> {
        let body = RecordBody {
            suite,
            peer_id: peer,
            sig_pk: key.verifying_key().clone(),
            seq: 1,
            issued_at: NOW,
            expires_at: NOW + 10,
            addrs: vec![],
            rotation: None,
        };
        let mut b = body.encode().unwrap();
        let count_at = b.len() - 2; // count byte, then rotation flag
        b.truncate(count_at);
        b.push(addrs.len() as u8);
        for a in addrs {
            b.extend_from_slice(&(a.len() as u16).to_be_bytes());
            b.extend_from_slice(a);
        }
        b.push(0);
        let sig = key.sign(&record_sig_message(&b)).unwrap();
        b.extend_from_slice(&(sig.len() as u16).to_be_bytes());
        b.extend_from_slice(&sig);
        envelope(&id, b)
    };
    let good: Multiaddr = "/ip4/1.2.3.4/tcp/5".parse().unwrap();
    let good = good.to_vec();
    verify(&with_addrs(&[&good]), &VerifyContext::new(NOW, &Suite::ALL)).unwrap();
    assert_eq!(
        decode_err(&with_addrs(&[&[]])),
        DecodeError::AddrLength { index: 0, len: 0 }
    );
    assert_eq!(
        decode_err(&with_addrs(&[&good, &[0xff, 0xff, 0xff]])),
        DecodeError::AddrParse { index: 1 }
    );
    assert_eq!(
        decode_err(&with_addrs(&[&good, &good])),
        DecodeError::DuplicateAddr { index: 1 }
    );
    let big = vec![0x04u8; 129];
    assert_eq!(
        decode_err(&with_addrs(&[&big])),
        DecodeError::AddrLength { index: 0, len: 129 }
    );
    let many: Vec<&[u8]> = vec![&good; 17];
    assert_eq!(
        decode_err(&with_addrs(&many)),
        DecodeError::TooManyAddrs(17)
    );
    // a multiaddr that parses but is followed by garbage within its entry
    let mut tail = good.clone();
    tail.push(0x00);
    assert!(matches!(
        decode_err(&with_addrs(&[&tail])),
        DecodeError::AddrParse { index: 0 }
    ));
}

#[test]
fn error_names_are_the_fixed_ones() {
    let errors = [
        RecordError::Decode(DecodeError::PayloadType),
        RecordError::UnsupportedSuite { id: 9 },
        RecordError::EnvelopeSignature,
        RecordError::PeerIdMismatch {
            record: Box::new(PeerId::random()),
            what: "x",
            expected: Box::new(PeerId::random()),
        },
        RecordError::SuiteMismatch {
            record: Suite::Kyber1024Dilithium5,
            negotiated: Suite::Mlkem1024Mldsa87,
        },
        RecordError::Expired {
            expires_at: 1,
            now: 2,
        },
        RecordError::NotYetValid {
            issued_at: 1,
            now: 2,
        },
        RecordError::BadValidityWindow {
            issued_at: 1,
            expires_at: 1,
        },
        RecordError::PqSignature,
        RecordError::RotationSignature,
        RecordError::StaleSeq { seq: 1, cached: 2 },
        RecordError::ConflictingRecord { seq: 1 },
        RecordError::KeyMismatch {
            pinned: Fingerprint::of_bytes(b"a"),
            record: Fingerprint::of_bytes(b"b"),
        },
    ];
    let names: Vec<&str> = errors.iter().map(RecordError::name).collect();
    assert_eq!(names, RecordError::NAMES);
    for e in &errors {
        assert!(e.to_string().starts_with(e.name()), "{e}");
    }
}

#[test]
fn dht_key_format() {
    let peer = Keypair::generate_ed25519().public().to_peer_id();
    assert_eq!(
        dht_key(Suite::Kyber1024Dilithium5, &peer),
        format!("/pqnode/record/0001/{}", peer.to_base58()).into_bytes()
    );
    assert!(
        String::from_utf8(dht_key(Suite::Mlkem1024Mldsa87, &peer))
            .unwrap()
            .starts_with("/pqnode/record/0002/12D3KooW")
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

    /// The multiaddr rules never panic, whatever an address entry holds
    /// (including entries that start like real protocols).
    #[test]
    fn address_checks_never_panic(
        prefix in proptest::sample::select(vec![vec![], vec![0x04], vec![0x29], vec![0xa5, 0x03], vec![0x38], vec![0x06], vec![0x91, 0x02]]),
        tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..140),
    ) {
        let peer = PeerId::random();
        let mut bytes = prefix;
        bytes.extend_from_slice(&tail);
        if let Ok(addrs) = check_addrs(&[&bytes], &peer) {
            // accepted entries are canonical
            proptest::prop_assert_eq!(addrs[0].to_vec(), bytes);
        }
    }
}

#[test]
fn handshake_context_checks_the_noise_peer_and_suite() {
    let suite = Suite::Kyber1024Dilithium5;
    let (id, key) = fixture(suite);
    let me = id.public().to_peer_id();
    let rec = build(&id, &key, None, &params(&[])).unwrap();
    let bytes = rec.envelope_bytes();
    verify(
        bytes,
        &VerifyContext::new(NOW, &Suite::ALL).in_handshake(me, suite),
    )
    .unwrap();
    let stranger = Keypair::generate_ed25519().public().to_peer_id();
    let err = verify(
        bytes,
        &VerifyContext::new(NOW, &Suite::ALL).in_handshake(stranger, suite),
    )
    .unwrap_err();
    assert_eq!(err.name(), "peer-id-mismatch");
    assert!(err.to_string().contains("Noise-authenticated"), "{err}");
    let err = verify(
        bytes,
        &VerifyContext::new(NOW, &Suite::ALL).in_handshake(me, Suite::Mlkem1024Mldsa87),
    )
    .unwrap_err();
    assert_eq!(err.name(), "suite-mismatch");
    // the PeerId check comes before the suite check (step 2 before step 3)
    let err = verify(
        bytes,
        &VerifyContext::new(NOW, &Suite::ALL).in_handshake(stranger, Suite::Mlkem1024Mldsa87),
    )
    .unwrap_err();
    assert_eq!(err.name(), "peer-id-mismatch");
}

#[test]
fn freshness_boundaries() {
    let (id, key) = fixture(Suite::Mlkem1024Mldsa87);
    let rec = build(&id, &key, None, &params(&[])).unwrap();
    let at = |now| verify(rec.envelope_bytes(), &VerifyContext::new(now, &Suite::ALL)).map(|_| ());
    let expires = NOW + DEFAULT_VALIDITY_SECS;
    assert_eq!(at(expires - 1), Ok(()));
    assert_eq!(at(expires).unwrap_err().name(), "expired");
    assert_eq!(at(NOW - MAX_FUTURE_SKEW_SECS), Ok(()));
    assert_eq!(
        at(NOW - MAX_FUTURE_SKEW_SECS - 1).unwrap_err().name(),
        "not-yet-valid"
    );
    // the clock at its maximum never overflows
    assert_eq!(at(u64::MAX).unwrap_err().name(), "expired");
}
