//! PROTOCOL.md Appendix A.1: handshake replay vectors.
//!
//! pqcrypto cannot be seeded, so a vector records the secrets each side used
//! and every byte sent; `check` re-derives everything deterministic from
//! them — KEM and X25519 secrets, every transcript hash, key and MAC, both
//! records and transcript signatures, and every frame, re-sealed byte for
//! byte. The files live in `crypto/tests/vectors/`; they were produced once
//! by the ignored `generate_vectors` test (run it with `--ignored` to make
//! new ones; the checker must pass on old and new alike).

use std::path::PathBuf;
use std::sync::Arc;

use libp2p::PeerId;
use pqnode_crypto::Secret;
use pqnode_crypto::Suite;
use pqnode_crypto::channel::{Inbound, KeyUpdatePolicy, Opener, Sealer, split_frames};
use pqnode_crypto::handshake::messages::{FirstToResponder, SecondToResponder, ToInitiator};
use pqnode_crypto::handshake::{
    Credential, Ephemeral, HandshakeConfig, Initiator, InitiatorStep, RecordRejected,
    RecordVerifier, Responder, ResponderStep, Transcript, prologue, prologue_after_retry,
};
use pqnode_crypto::hybrid::{self, KeySchedule, X25519Secret};
use pqnode_crypto::kem::{KemCiphertext, KemSecretKey};
use pqnode_crypto::receipt::{Receipt, ReceiptStatus};
use pqnode_crypto::sign::{SigningKey, VerifyingKey};
use pqnode_keys::record::{self, VerifyContext};
use pqnode_keys::store::{KeyStore, StoreOptions};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng, TryCryptoRng, TryRng};
use serde_json::{Value, json};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("crypto/tests/vectors")
}

fn h(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn unhex(v: &Value, path: &str) -> Vec<u8> {
    let mut cur = v;
    for part in path.split('.') {
        cur = &cur[part];
    }
    hex::decode(cur.as_str().unwrap_or_else(|| panic!("{path} missing")))
        .unwrap_or_else(|_| panic!("{path} not hex"))
}

/// Verifies records as a node would in a handshake, at the vector's `now`.
struct AtTime(u64);

impl RecordVerifier for AtTime {
    fn verify_record(
        &self,
        bytes: &[u8],
        peer: &[u8],
        suite: Suite,
    ) -> Result<VerifyingKey, RecordRejected> {
        let mut ctx = VerifyContext::new(self.0, &Suite::ALL);
        ctx.expected_peer = PeerId::from_bytes(peer).ok();
        ctx.negotiated_suite = Some(suite);
        record::verify(bytes, &ctx)
            .map(|r| r.sig_pk().clone())
            .map_err(|e| RecordRejected {
                reason: e.name().into(),
            })
    }
}

/// Records every byte it hands out, so the generator can write down the
/// secrets the state machines drew.
struct Recording {
    inner: ChaCha20Rng,
    out: Vec<u8>,
}

impl TryRng for Recording {
    type Error = std::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        let mut b = [0u8; 4];
        self.try_fill_bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut b = [0u8; 8];
        self.try_fill_bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.inner.fill_bytes(dst);
        self.out.extend_from_slice(dst);
        Ok(())
    }
}

impl TryCryptoRng for Recording {}

fn copy_key(store: &KeyStore, suite: Suite) -> SigningKey {
    let k = store.signing_key(suite).expect("key");
    SigningKey::from_bytes(suite, k.expose_secret(), k.verifying_key().as_bytes()).expect("copy")
}

fn config(
    store: &mut KeyStore,
    suites: &[Suite],
    now: u64,
) -> (Arc<HandshakeConfig>, Vec<(Suite, Vec<u8>)>) {
    let mut creds = Vec::new();
    let mut records = Vec::new();
    for &s in suites {
        let rec = store
            .build_record(s, &[], now, 86_400)
            .expect("record")
            .envelope_bytes()
            .to_vec();
        records.push((s, rec.clone()));
        creds.push(Credential {
            signing_key: Arc::new(copy_key(store, s)),
            record: rec,
        });
    }
    let cfg = HandshakeConfig {
        local_peer_id: store.peer_id().to_bytes(),
        credentials: creds,
        key_update: KeyUpdatePolicy {
            max_frames: u64::MAX,
            max_bytes: u64::MAX,
            max_age_ms: u64::MAX,
        },
    };
    (Arc::new(cfg), records)
}

/// Which frames a vector carries after its handshake.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Frames {
    /// Data both ways, then a close.
    Plain,
    /// Data with a key update in each direction.
    KeyUpdate,
    /// Data answered by receipts (kind 4, rev 4), then both closes.
    Receipts,
}

fn receipt(id: u64, status: ReceiptStatus) -> Vec<u8> {
    Receipt {
        message_id: id,
        status,
    }
    .encode()
    .to_vec()
}

/// Produces one vector: `retry` makes the responder lack the initiator's
/// first suite; `plan` says which frames follow the handshake.
fn generate(suite: Suite, retry: bool, plan: Frames, seed: u64) -> Value {
    let now = 1_790_000_000u64;
    let (di, dr) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let mut si = KeyStore::open_or_create(di.path(), StoreOptions::default()).expect("store");
    let mut sr = KeyStore::open_or_create(dr.path(), StoreOptions::default()).expect("store");
    let (i_id, r_id) = (si.peer_id().to_bytes(), sr.peer_id().to_bytes());
    let i_suites: Vec<Suite> = if retry {
        vec![Suite::Kyber1024Dilithium5, suite]
    } else {
        vec![suite]
    };
    let (cfg_i, recs_i) = config(&mut si, &i_suites, now);
    let (cfg_r, recs_r) = config(&mut sr, &[suite], now);
    let mut rng_i = Recording {
        inner: ChaCha20Rng::seed_from_u64(seed),
        out: Vec::new(),
    };
    let mut rng_r = Recording {
        inner: ChaCha20Rng::seed_from_u64(seed + 1),
        out: Vec::new(),
    };

    let eph = Ephemeral::generate(i_suites[0], &mut rng_i).expect("ephemeral");
    let (mut state, init) = Initiator::start_with(cfg_i, &r_id, eph).expect("start");
    let mut messages = serde_json::Map::new();
    let responder = Responder::start(cfg_r, &i_id).expect("responder");
    let (r_fin_state, resp, init_final) = match responder.handle(&init, &mut rng_r).expect("init") {
        ResponderStep::Resp { state: s, resp } => (s, resp, init),
        ResponderStep::Retry {
            state: rs,
            retry: retry_msg,
        } => {
            let InitiatorStep::Retry {
                state: next,
                init: init2,
            } = state
                .handle(&retry_msg, &AtTime(now), &mut rng_i)
                .expect("retry")
            else {
                panic!("expected Retry")
            };
            state = next;
            messages.insert("firstInit".into(), json!(h(&init)));
            messages.insert("retry".into(), json!(h(&retry_msg)));
            rng_r.out.clear();
            let ResponderStep::Resp { state: s, resp } =
                rs.handle(&init2, &mut rng_r).expect("init2")
            else {
                panic!("second Retry")
            };
            (s, resp, init2)
        }
    };
    let eph = state.ephemeral_for_test_vectors();
    let (x_sk_i, kem_sk_i, nonce_i) = (
        eph.x_sk.expose().to_vec(),
        eph.kem_sk.expose_secret().to_vec(),
        eph.nonce.to_vec(),
    );
    let (x_sk_r, nonce_r) = (rng_r.out[..32].to_vec(), rng_r.out[32..64].to_vec());
    let InitiatorStep::Done {
        fin,
        session: si_box,
    } = state.handle(&resp, &AtTime(now), &mut rng_i).expect("resp")
    else {
        panic!("expected Done")
    };
    let mut si_sess = *si_box;
    let mut sr_sess = r_fin_state.handle(&fin, &AtTime(now)).expect("fin");
    messages.insert("init".into(), json!(h(&init_final)));
    messages.insert("resp".into(), json!(h(&resp)));
    messages.insert("fin".into(), json!(h(&fin)));

    // Frames after the handshake (`plan`). A data frame's message id is
    // its index + 1; a receipt answers the data frame it names.
    let mut frames = Vec::new();
    let bodies: Vec<(&str, u8, Vec<u8>)> = match plan {
        Frames::KeyUpdate => vec![
            ("i2r", 1, b"first".to_vec()),
            ("r2i", 1, b"reply".to_vec()),
            ("i2r", 2, Vec::new()),
            ("i2r", 1, b"after update".to_vec()),
            ("r2i", 2, Vec::new()),
            ("r2i", 1, Vec::new()),
        ],
        Frames::Plain => vec![
            ("i2r", 1, b"hello".to_vec()),
            ("r2i", 1, b"hello back".to_vec()),
            ("i2r", 3, Vec::new()),
        ],
        Frames::Receipts => vec![
            ("i2r", 1, b"first".to_vec()),
            ("r2i", 4, receipt(1, ReceiptStatus::Stored)),
            ("i2r", 1, b"second".to_vec()),
            ("r2i", 4, receipt(3, ReceiptStatus::InboxFull)),
            ("r2i", 1, b"reply".to_vec()),
            ("i2r", 4, receipt(5, ReceiptStatus::Stored)),
            ("i2r", 3, Vec::new()),
            ("r2i", 3, Vec::new()),
        ],
    };
    for (n, (dir, kind, text)) in bodies.iter().enumerate() {
        let body: Vec<u8> = match kind {
            1 => pqnode::pq::fragment::fragments(n as u64 + 1, text)
                .next()
                .expect("fragment"),
            4 => text.clone(),
            _ => Vec::new(),
        };
        let (from, to) = if *dir == "i2r" {
            (&mut si_sess, &mut sr_sess)
        } else {
            (&mut sr_sess, &mut si_sess)
        };
        let key = from.channel.sealer.current_key().expose().to_vec();
        let seq = from.channel.sealer.next_seq();
        let mut out = Vec::new();
        seal(&mut from.channel.sealer, u64::from(*kind), &body, &mut out);
        let opened = to.channel.opener.open(&out[4..]).expect("open");
        assert!(matches!(
            (kind, &opened),
            (1, Inbound::Data(_))
                | (2, Inbound::KeyUpdate)
                | (3, Inbound::Close)
                | (4, Inbound::Receipt(_))
        ));
        frames.push(json!({"dir": dir, "seq": seq, "kind": kind, "body": h(&body), "key": h(&key), "frame": h(&out)}));
    }
    let rec = |recs: &Vec<(Suite, Vec<u8>)>| {
        recs.iter()
            .find(|(s, _)| *s == suite)
            .map(|(_, r)| h(r))
            .expect("record")
    };
    let mut v = json!({
        "format": 1,
        "suite": suite.name(),
        "now": now,
        "initiatorPeerId": h(&i_id),
        "responderPeerId": h(&r_id),
        "initiator": {"record": rec(&recs_i), "xSk": h(&x_sk_i), "kemSk": h(&kem_sk_i), "nonce": h(&nonce_i)},
        "responder": {"record": rec(&recs_r), "xSk": h(&x_sk_r), "nonce": h(&nonce_r)},
        "messages": messages,
        "frames": frames,
    });
    v["derived"] = derive(&v);
    v
}

/// Re-derives the `derived` section from secrets and messages.
fn derive(v: &Value) -> Value {
    let suite: Suite = v["suite"]
        .as_str()
        .expect("suite")
        .parse()
        .expect("known suite");
    let (i_id, r_id) = (unhex(v, "initiatorPeerId"), unhex(v, "responderPeerId"));
    let mut p = prologue(&i_id, &r_id).expect("prologue");
    if v["messages"].get("retry").is_some() {
        p = prologue_after_retry(
            &p,
            &unhex(v, "messages.firstInit"),
            &unhex(v, "messages.retry"),
        );
    }
    let (init, resp, fin) = (
        unhex(v, "messages.init"),
        unhex(v, "messages.resp"),
        unhex(v, "messages.fin"),
    );
    let FirstToResponder::Init(init_msg) = FirstToResponder::decode(&init).expect("Init parses")
    else {
        panic!("not an Init")
    };
    let ToInitiator::Resp(resp_msg) = ToInitiator::decode(&resp).expect("Resp parses") else {
        panic!("not a Resp")
    };
    let SecondToResponder::Fin(fin_msg) =
        SecondToResponder::decode(&fin, suite).expect("Fin parses")
    else {
        panic!("not a Fin")
    };
    assert_eq!(init_msg.suite, suite.id());
    assert_eq!(resp_msg.suite, suite);
    // KEM: decapsulate with the initiator's secret key.
    let kem_sk = KemSecretKey::from_bytes(suite, &unhex(v, "initiator.kemSk")).expect("kemSk");
    let ct = KemCiphertext::from_bytes(suite, &resp_msg.kem_ct).expect("kem_ct");
    let ss_kem = kem_sk.decapsulate(&ct).expect("decapsulate");
    // X25519 from both sides; the public keys in the messages must match.
    let x_i = X25519Secret::from_slice(&unhex(v, "initiator.xSk")).expect("xSk");
    let x_r = X25519Secret::from_slice(&unhex(v, "responder.xSk")).expect("xSk");
    assert_eq!(hybrid::x25519_public(&x_i), init_msg.x_pk, "initiator x_pk");
    assert_eq!(hybrid::x25519_public(&x_r), resp_msg.x_pk, "responder x_pk");
    assert_eq!(
        unhex(v, "initiator.nonce"),
        init_msg.nonce,
        "initiator nonce"
    );
    assert_eq!(
        unhex(v, "responder.nonce"),
        resp_msg.nonce,
        "responder nonce"
    );
    let ss_x = hybrid::x25519(&x_i, &resp_msg.x_pk).expect("X25519");
    assert!(
        ss_x.ct_eq(&hybrid::x25519(&x_r, &init_msg.x_pk).expect("X25519")),
        "both sides agree"
    );
    // Transcript and key schedule.
    let mut t = Transcript::new(&p);
    let th1 = t.th1(&init, &resp[..resp_msg.th1_len()]);
    let th2 = t.th2(&resp[resp_msg.th1_len()..resp.len() - 32]);
    let th3 = t.th3(&resp_msg.mac, &fin[..fin_msg.th3_len()]);
    let th4 = t.th4(&fin[fin_msg.th3_len()..fin.len() - 32]);
    let ks = KeySchedule::new(&th1, &ss_kem, &ss_x);
    let prk = ks.prk().expose().to_vec();
    let (conf_r, conf_i) = (ks.conf_r().expect("k"), ks.conf_i().expect("k"));
    assert_eq!(
        hybrid::hmac_sha512_256(conf_r.expose(), &th2),
        resp_msg.mac,
        "mac_r"
    );
    assert_eq!(
        hybrid::hmac_sha512_256(conf_i.expose(), &th4),
        fin_msg.mac,
        "mac_i"
    );
    // Records at `now`, and the transcript signatures under their keys.
    let now = v["now"].as_u64().expect("now");
    assert_eq!(resp_msg.record, unhex(v, "responder.record"));
    assert_eq!(fin_msg.record, unhex(v, "initiator.record"));
    let r_key = AtTime(now)
        .verify_record(&resp_msg.record, &r_id, suite)
        .expect("responder record verifies");
    let i_key = AtTime(now)
        .verify_record(&fin_msg.record, &i_id, suite)
        .expect("initiator record verifies");
    let signed = |label: &[u8], th: &[u8; 64]| [label, &th[..]].concat();
    r_key
        .verify(&signed(b"pqnode-hs-resp-v1", &th1), &resp_msg.sig)
        .expect("sig_r");
    i_key
        .verify(&signed(b"pqnode-hs-fin-v1", &th3), &fin_msg.sig)
        .expect("sig_i");
    let (ts_i2r, ts_r2i) = ks.traffic_secrets(&th4).expect("traffic secrets");
    let (k_i2r, k_r2i) = (
        hybrid::traffic_key(&ts_i2r).expect("k"),
        hybrid::traffic_key(&ts_r2i).expect("k"),
    );
    json!({
        "prologue": h(&p), "th1": h(&th1), "th2": h(&th2), "th3": h(&th3), "th4": h(&th4),
        "ssKem": h(ss_kem.expose()), "ssX": h(ss_x.expose()), "prk": h(&prk),
        "kConfR": h(conf_r.expose()), "kConfI": h(conf_i.expose()),
        "tsI2r": h(ts_i2r.expose()), "tsR2i": h(ts_r2i.expose()),
        "kI2r": h(k_i2r.expose()), "kR2i": h(k_r2i.expose()),
    })
}

/// Seals one frame of `kind` (§6) carrying `body`.
fn seal(sealer: &mut Sealer, kind: u64, body: &[u8], out: &mut Vec<u8>) {
    match kind {
        1 => sealer.seal_data(body, 0, out).expect("seal"),
        2 => sealer.seal_key_update(0, out).expect("seal"),
        3 => sealer.seal_close(out).expect("seal"),
        4 => {
            let r = Receipt::decode(body).expect("a 9-byte receipt");
            sealer.seal_receipt(&r, 0, out).expect("seal")
        }
        other => panic!("kind {other}"),
    }
}

/// The full Appendix A check of one vector.
fn check(v: &Value) {
    assert_eq!(v["format"], 1);
    let derived = derive(v);
    assert_eq!(derived, v["derived"], "derived values differ");
    // Re-seal every frame, following key updates, to the exact bytes.
    let no_auto = KeyUpdatePolicy {
        max_frames: u64::MAX,
        max_bytes: u64::MAX,
        max_age_ms: u64::MAX,
    };
    let ts =
        |name: &str| Secret::<64>::from_slice(&unhex(v, &format!("derived.{name}"))).expect("ts");
    let mut sealers = [
        ("i2r", Sealer::new(ts("tsI2r"), no_auto).expect("s")),
        ("r2i", Sealer::new(ts("tsR2i"), no_auto).expect("s")),
    ];
    let mut openers = [
        ("i2r", Opener::new(ts("tsI2r")).expect("o")),
        ("r2i", Opener::new(ts("tsR2i")).expect("o")),
    ];
    let frames = v["frames"].as_array().expect("frames");
    assert!(!frames.is_empty());
    for f in frames {
        let dir = f["dir"].as_str().expect("dir");
        let idx = usize::from(dir == "r2i");
        let sealer = &mut sealers[idx].1;
        assert_eq!(sealer.next_seq(), f["seq"].as_u64().expect("seq"), "seq");
        assert_eq!(
            h(sealer.current_key().expose()),
            f["key"].as_str().expect("key"),
            "frame key"
        );
        let body = unhex(f, "body");
        let mut out = Vec::new();
        seal(sealer, f["kind"].as_u64().expect("kind"), &body, &mut out);
        assert_eq!(
            h(&out),
            f["frame"].as_str().expect("frame"),
            "frame re-seals byte for byte"
        );
        let frame = unhex(f, "frame");
        let parts = split_frames(&frame).expect("framing");
        let opened = openers[idx].1.open(parts[0]).expect("frame opens");
        match opened {
            Inbound::Data(d) => assert_eq!(d, body),
            Inbound::Receipt(r) => assert_eq!(r.encode().to_vec(), body),
            Inbound::KeyUpdate | Inbound::Close => assert!(body.is_empty()),
        }
    }
    // The first-suite Init of a Retry vector parses, and the Retry is valid.
    if v["messages"].get("retry").is_some() {
        let FirstToResponder::Init(first) =
            FirstToResponder::decode(&unhex(v, "messages.firstInit")).expect("parses")
        else {
            panic!()
        };
        let ToInitiator::Retry(r) =
            ToInitiator::decode(&unhex(v, "messages.retry")).expect("parses")
        else {
            panic!()
        };
        assert!(first.suites.contains(&r.suite) && first.suite != r.suite);
    }
}

/// Every committed vector: its file, and how it was generated.
const VECTORS: [(&str, Suite, bool, Frames, u64); 7] = [
    (
        "kyber1024-dilithium5-plain.json",
        Suite::Kyber1024Dilithium5,
        false,
        Frames::Plain,
        1,
    ),
    (
        "kyber1024-dilithium5-key-update.json",
        Suite::Kyber1024Dilithium5,
        false,
        Frames::KeyUpdate,
        2,
    ),
    (
        "mlkem1024-mldsa87-plain.json",
        Suite::Mlkem1024Mldsa87,
        false,
        Frames::Plain,
        3,
    ),
    (
        "mlkem1024-mldsa87-key-update.json",
        Suite::Mlkem1024Mldsa87,
        false,
        Frames::KeyUpdate,
        4,
    ),
    (
        "mlkem1024-mldsa87-retry.json",
        Suite::Mlkem1024Mldsa87,
        true,
        Frames::Plain,
        5,
    ),
    // Rev 4: receipts among the frames.
    (
        "kyber1024-dilithium5-receipts.json",
        Suite::Kyber1024Dilithium5,
        false,
        Frames::Receipts,
        6,
    ),
    (
        "mlkem1024-mldsa87-receipts.json",
        Suite::Mlkem1024Mldsa87,
        false,
        Frames::Receipts,
        7,
    ),
];

#[test]
fn every_handshake_vector_replays_byte_for_byte() {
    for (name, ..) in VECTORS {
        let text =
            std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let v: Value = serde_json::from_str(&text).expect("JSON");
        check(&v);
    }
}

#[test]
fn a_tampered_vector_fails_the_check() {
    let text = std::fs::read_to_string(dir().join(VECTORS[0].0)).expect("vector");
    let mut v: Value = serde_json::from_str(&text).expect("JSON");
    let mut resp = unhex(&v, "messages.resp");
    let last = resp.len() - 1;
    resp[last] ^= 1;
    v["messages"]["resp"] = json!(h(&resp));
    assert!(std::panic::catch_unwind(|| check(&v)).is_err());
}

#[test]
fn a_vector_with_a_changed_receipt_fails_the_check() {
    let name = "mlkem1024-mldsa87-receipts.json";
    let text = std::fs::read_to_string(dir().join(name)).expect("vector");
    let mut v: Value = serde_json::from_str(&text).expect("JSON");
    let frames = v["frames"].as_array_mut().expect("frames");
    let f = frames
        .iter_mut()
        .find(|f| f["kind"] == 4)
        .expect("a receipt frame");
    let mut body = unhex(f, "body");
    body[8] = 3;
    f["body"] = json!(h(&body));
    assert!(std::panic::catch_unwind(|| check(&v)).is_err());
}

/// Writes the vector files that are missing (committed ones are replay
/// vectors and never change; `PQNODE_REGENERATE_VECTORS=1` rewrites all).
/// Run by hand: `cargo test --test handshake_vectors -- --ignored`.
#[test]
#[ignore]
fn generate_vectors() {
    std::fs::create_dir_all(dir()).expect("dir");
    let all = std::env::var_os("PQNODE_REGENERATE_VECTORS").is_some();
    for (name, suite, retry, plan, seed) in VECTORS {
        let path = dir().join(name);
        if path.exists() && !all {
            continue;
        }
        let v = generate(suite, retry, plan, seed);
        check(&v);
        std::fs::write(path, serde_json::to_string_pretty(&v).expect("json")).expect("write");
    }
}
