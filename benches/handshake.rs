//! The full in-memory PQ handshake per suite, beside the sum of the
//! primitives it calls, so the state machine's own cost is visible.
//!
//! Records are opaque to the handshake; this benchmark uses a verifier that
//! only parses a minimal record (PeerId, suite, key), so it measures the
//! handshake itself. Record verification (an Ed25519 envelope and one more
//! PQ verify per side) is measured separately in the node.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use pqnode_crypto::Suite;
use pqnode_crypto::channel::KeyUpdatePolicy;
use pqnode_crypto::handshake::{
    Credential, HandshakeConfig, Initiator, InitiatorStep, RecordRejected, RecordVerifier,
    Responder, ResponderStep,
};
use pqnode_crypto::hybrid::{self, X25519Secret};
use pqnode_crypto::kem;
use pqnode_crypto::rng::system_rng;
use pqnode_crypto::sign::{SigningKey, VerifyingKey};

const ALICE: &[u8] = b"alice-peer-id";
const BOB: &[u8] = b"bob-peer-id";

fn record(peer: &[u8], key: &SigningKey) -> Vec<u8> {
    let mut r = vec![peer.len() as u8];
    r.extend_from_slice(peer);
    r.extend_from_slice(key.verifying_key().as_bytes());
    r
}

struct MinimalVerifier;

impl RecordVerifier for MinimalVerifier {
    fn verify_record(
        &self,
        record: &[u8],
        peer_id: &[u8],
        suite: Suite,
    ) -> Result<VerifyingKey, RecordRejected> {
        let bad = || RecordRejected {
            reason: "decode".into(),
        };
        let len = *record.first().ok_or_else(bad)? as usize;
        if record.get(1..1 + len) != Some(peer_id) {
            return Err(RecordRejected {
                reason: "peer-id-mismatch".into(),
            });
        }
        VerifyingKey::from_bytes(suite, &record[1 + len..]).map_err(|_| bad())
    }
}

fn config(peer: &[u8], suite: Suite) -> Arc<HandshakeConfig> {
    let key = SigningKey::generate(suite).expect("keygen");
    let record = record(peer, &key);
    Arc::new(HandshakeConfig {
        local_peer_id: peer.to_vec(),
        credentials: vec![Credential {
            signing_key: Arc::new(key),
            record,
        }],
        key_update: KeyUpdatePolicy::default(),
    })
}

fn handshake(i_cfg: &Arc<HandshakeConfig>, r_cfg: &Arc<HandshakeConfig>) {
    let mut rng = system_rng();
    let (i, init) = Initiator::start(i_cfg.clone(), BOB, &mut rng).expect("start");
    let r = Responder::start(r_cfg.clone(), ALICE).expect("responder");
    let ResponderStep::Resp { state, resp } = r.handle(&init, &mut rng).expect("init") else {
        panic!("unexpected Retry")
    };
    let InitiatorStep::Done { fin, session } =
        i.handle(&resp, &MinimalVerifier, &mut rng).expect("resp")
    else {
        panic!("unexpected Retry")
    };
    let r_session = state.handle(&fin, &MinimalVerifier).expect("fin");
    black_box((session, r_session));
}

/// The byte counts one handshake feeds to SHA-512, per side (TH1..TH4 as
/// PROTOCOL.md §5 defines them), from the real message sizes.
struct Sizes {
    th: [usize; 4],
}

fn sizes(i_cfg: &Arc<HandshakeConfig>, r_cfg: &Arc<HandshakeConfig>, suite: Suite) -> Sizes {
    let mut rng = system_rng();
    let (i, init) = Initiator::start(i_cfg.clone(), BOB, &mut rng).expect("start");
    let r = Responder::start(r_cfg.clone(), ALICE).expect("responder");
    let ResponderStep::Resp { resp, .. } = r.handle(&init, &mut rng).expect("init") else {
        panic!("unexpected Retry")
    };
    let InitiatorStep::Done { fin, .. } =
        i.handle(&resp, &MinimalVerifier, &mut rng).expect("resp")
    else {
        panic!("unexpected Retry")
    };
    let sig = 2 + suite.signature_len();
    let prologue = 11 + 2 + ALICE.len() + BOB.len();
    Sizes {
        th: [
            prologue + init.len() + resp.len() - sig - 32,
            64 + sig,
            64 + 32 + fin.len() - sig - 32,
            64 + sig,
        ],
    }
}

/// Every primitive call of one handshake, both sides: KEM keygen, encaps and
/// decaps; two signatures and two verifications; X25519 (two public keys,
/// two agreements); SHA-512 over the transcript (TH1..TH4, each side); the
/// HKDF extract and expansions (confirmation, traffic and record keys, each
/// side) and four HMACs.
fn primitives(
    suite: Suite,
    signer_i: &SigningKey,
    signer_r: &SigningKey,
    sizes: &Sizes,
    buf: &[u8],
) {
    use sha2::{Digest, Sha512};
    let mut rng = system_rng();
    let (pk, sk) = kem::generate_keypair(suite).expect("kem keygen");
    let (ct, ss) = pk.encapsulate().expect("encaps");
    let ss2 = sk.decapsulate(&ct).expect("decaps");
    let xi = X25519Secret::random(&mut rng);
    let xr = X25519Secret::random(&mut rng);
    let (pi, pr) = (hybrid::x25519_public(&xi), hybrid::x25519_public(&xr));
    let d1 = hybrid::x25519(&xi, &pr).expect("dh");
    let d2 = hybrid::x25519(&xr, &pi).expect("dh");
    let msg = [7u8; 81];
    let s1 = signer_r.sign(&msg).expect("sign");
    let s2 = signer_i.sign(&msg).expect("sign");
    signer_r.verifying_key().verify(&msg, &s1).expect("verify");
    signer_i.verifying_key().verify(&msg, &s2).expect("verify");
    for _side in 0..2 {
        for &n in &sizes.th {
            black_box(Sha512::digest(&buf[..n]));
        }
        let prk = hybrid::hkdf_extract(&[1u8; 64], &[2u8; 64]);
        let mut out = [0u8; 64];
        for (info, len) in [(&b"c1"[..], 32), (b"c2", 32), (b"t1", 64), (b"t2", 64)] {
            hybrid::hkdf_expand(prk.expose(), &[info], &mut out[..len]).expect("expand");
        }
        for _ in 0..2 {
            hybrid::hkdf_expand(&out, &[b"k"], &mut [0u8; 32]).expect("expand");
            black_box(hybrid::hmac_sha512_256(&out[..32], &out));
        }
    }
    black_box((ss, ss2, d1, d2));
}

fn bench(c: &mut Criterion) {
    for suite in Suite::ALL {
        let mut group = c.benchmark_group(format!("handshake/{}", suite.name()));
        group.sample_size(40);
        let (i_cfg, r_cfg) = (config(ALICE, suite), config(BOB, suite));
        group.bench_function("full in-memory handshake", |b| {
            b.iter(|| handshake(&i_cfg, &r_cfg))
        });
        let (ki, kr) = (
            SigningKey::generate(suite).expect("keygen"),
            SigningKey::generate(suite).expect("keygen"),
        );
        let sizes = sizes(&i_cfg, &r_cfg, suite);
        let buf = vec![0x5au8; sizes.th.iter().copied().max().unwrap_or(0)];
        group.bench_function("sum of its primitives", |b| {
            b.iter(|| primitives(suite, &ki, &kr, &sizes, &buf))
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
