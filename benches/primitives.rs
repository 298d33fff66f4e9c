//! Every primitive of both suites, our wrapper beside the raw call.
//!
//! One criterion group per primitive and suite; inside each group `wrapper`
//! is pqnode-crypto's API and `raw` the pqcrypto safe API (or the RustCrypto
//! crate underneath, for X25519, HKDF and ChaCha20-Poly1305) doing the same
//! work, so the wrapper's overhead is the difference of the two medians.
//!
//! `cargo bench --bench primitives`; results in `benches/RESULTS-primitives.md`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pqcrypto_traits::kem::{Ciphertext as _, PublicKey as _, SecretKey as _};
use pqcrypto_traits::sign::{
    DetachedSignature as _, PublicKey as SigPublicKey, SecretKey as SigSecretKey,
};
use pqnode_crypto::kem;
use pqnode_crypto::sign::SigningKey;
use pqnode_crypto::{Secret, Suite, aead, hybrid};

/// The message signed in the signature benches: a label and a 64-byte
/// transcript hash, like the handshake's (`"pqnode-hs-resp-v1" || TH1`).
const SIGNED: &[u8; 81] = &{
    let label = b"pqnode-hs-resp-v1";
    let mut m = [0x5a; 81];
    let mut i = 0;
    while i < label.len() {
        m[i] = label[i];
        i += 1;
    }
    m
};

/// AEAD message sizes (bytes).
const AEAD_SIZES: [usize; 3] = [64, 1024, 64 * 1024];

/// KEM keygen, encapsulation and decapsulation, wrapper beside raw.
macro_rules! kem_benches {
    ($c:expr, $suite:expr, $m:path) => {{
        use $m as m;
        let suite: Suite = $suite;
        let name = suite.kem_name();

        let mut g = $c.benchmark_group(format!("{name}/keygen"));
        g.bench_function("wrapper", |b| {
            b.iter(|| black_box(kem::generate_keypair(suite)))
        });
        g.bench_function("raw", |b| b.iter(|| black_box(m::keypair())));
        g.finish();

        let (pk, sk) = match kem::generate_keypair(suite) {
            Ok(kp) => kp,
            Err(e) => panic!("{suite}: keygen: {e}"),
        };
        let raw_pk = match m::PublicKey::from_bytes(pk.as_bytes()) {
            Ok(pk) => pk,
            Err(e) => panic!("{suite}: {e}"),
        };
        let raw_sk = match m::SecretKey::from_bytes(sk.expose_secret()) {
            Ok(sk) => sk,
            Err(e) => panic!("{suite}: {e}"),
        };

        let mut g = $c.benchmark_group(format!("{name}/encaps"));
        g.bench_function("wrapper", |b| {
            b.iter(|| black_box(black_box(&pk).encapsulate()))
        });
        g.bench_function("raw", |b| {
            b.iter(|| black_box(m::encapsulate(black_box(&raw_pk))))
        });
        g.finish();

        let (ct, _ss) = match pk.encapsulate() {
            Ok(v) => v,
            Err(e) => panic!("{suite}: encaps: {e}"),
        };
        let raw_ct = match m::Ciphertext::from_bytes(ct.as_bytes()) {
            Ok(ct) => ct,
            Err(e) => panic!("{suite}: {e}"),
        };
        let mut g = $c.benchmark_group(format!("{name}/decaps"));
        g.bench_function("wrapper", |b| {
            b.iter(|| black_box(black_box(&sk).decapsulate(black_box(&ct))))
        });
        g.bench_function("raw", |b| {
            b.iter(|| black_box(m::decapsulate(black_box(&raw_ct), black_box(&raw_sk))))
        });
        g.finish();
    }};
}

/// Signature keygen, signing and verification, wrapper beside raw. `$sign`
/// and `$verify` are the raw calls (ML-DSA needs the `_ctx` variants).
macro_rules! sig_benches {
    ($c:expr, $suite:expr, $m:path, $sign:expr, $verify:expr) => {{
        use $m as m;
        let suite: Suite = $suite;
        let name = suite.sig_name();

        let mut g = $c.benchmark_group(format!("{name}/keygen"));
        g.bench_function("wrapper", |b| {
            b.iter(|| black_box(SigningKey::generate(suite)))
        });
        g.bench_function("raw", |b| b.iter(|| black_box(m::keypair())));
        g.finish();

        let key = match SigningKey::generate(suite) {
            Ok(k) => k,
            Err(e) => panic!("{suite}: keygen: {e}"),
        };
        let raw_sk = match <m::SecretKey as SigSecretKey>::from_bytes(key.expose_secret()) {
            Ok(sk) => sk,
            Err(e) => panic!("{suite}: {e}"),
        };
        let raw_pk =
            match <m::PublicKey as SigPublicKey>::from_bytes(key.verifying_key().as_bytes()) {
                Ok(pk) => pk,
                Err(e) => panic!("{suite}: {e}"),
            };

        let mut g = $c.benchmark_group(format!("{name}/sign"));
        g.bench_function("wrapper", |b| {
            b.iter(|| black_box(black_box(&key).sign(black_box(SIGNED))))
        });
        g.bench_function("raw", |b| {
            b.iter(|| black_box($sign(black_box(SIGNED), black_box(&raw_sk))))
        });
        g.finish();

        let sig = match key.sign(SIGNED) {
            Ok(s) => s,
            Err(e) => panic!("{suite}: sign: {e}"),
        };
        let raw_sig = match m::DetachedSignature::from_bytes(&sig) {
            Ok(s) => s,
            Err(e) => panic!("{suite}: {e}"),
        };
        let vk = key.verifying_key();
        let mut g = $c.benchmark_group(format!("{name}/verify"));
        g.bench_function("wrapper", |b| {
            b.iter(|| black_box(black_box(vk).verify(black_box(SIGNED), black_box(&sig))))
        });
        g.bench_function("raw", |b| {
            b.iter(|| {
                black_box($verify(
                    black_box(&raw_sig),
                    black_box(SIGNED),
                    black_box(&raw_pk),
                ))
            })
        });
        g.finish();
    }};
}

fn kem_and_sig(c: &mut Criterion) {
    kem_benches!(c, Suite::Kyber1024Dilithium5, pqcrypto_kyber::kyber1024);
    kem_benches!(c, Suite::Mlkem1024Mldsa87, pqcrypto_mlkem::mlkem1024);
    sig_benches!(
        c,
        Suite::Kyber1024Dilithium5,
        pqcrypto_dilithium::dilithium5,
        |msg: &[u8], sk| pqcrypto_dilithium::dilithium5::detached_sign(msg, sk),
        |sig, msg: &[u8], pk| pqcrypto_dilithium::dilithium5::verify_detached_signature(
            sig, msg, pk
        )
    );
    sig_benches!(
        c,
        Suite::Mlkem1024Mldsa87,
        pqcrypto_mldsa::mldsa87,
        |msg: &[u8], sk| pqcrypto_mldsa::mldsa87::detached_sign_ctx(msg, &[], sk),
        |sig, msg: &[u8], pk| pqcrypto_mldsa::mldsa87::verify_detached_signature_ctx(
            sig,
            msg,
            &[],
            pk
        )
    );
}

fn x25519(c: &mut Criterion) {
    let a = match Secret::<32>::from_slice(&[0x11; 32]) {
        Some(s) => s,
        None => unreachable!(),
    };
    let b_pub = match Secret::<32>::from_slice(&[0x22; 32]) {
        Some(s) => hybrid::x25519_public(&s),
        None => unreachable!(),
    };
    let raw_sk = x25519_dalek::StaticSecret::from([0x11; 32]);
    let raw_pub = x25519_dalek::PublicKey::from(b_pub);
    let mut g = c.benchmark_group("X25519/agree");
    g.bench_function("wrapper", |b| {
        b.iter(|| black_box(hybrid::x25519(black_box(&a), black_box(&b_pub))))
    });
    g.bench_function("raw", |b| {
        b.iter(|| black_box(black_box(&raw_sk).diffie_hellman(black_box(&raw_pub))))
    });
    g.finish();
}

fn hkdf(c: &mut Criterion) {
    use hkdf::Hkdf;
    use sha2::Sha512;
    // The key schedule's shape: extract with a 64-byte salt (TH1) from
    // ss_kem || ss_x, then expand one 32-byte key.
    let salt = [7u8; 64];
    let ikm = [9u8; 64];
    let label: &[u8] = b"pqnode v1 conf r";
    let mut g = c.benchmark_group("HKDF-SHA512/extract+expand32");
    g.bench_function("wrapper", |b| {
        b.iter(|| {
            let prk = hybrid::hkdf_extract(black_box(&salt), black_box(&ikm));
            let mut okm = Secret::<32>::zero();
            let r = hybrid::hkdf_expand(prk.expose(), &[label], okm.expose_mut());
            black_box((r, okm))
        })
    });
    g.bench_function("raw", |b| {
        b.iter(|| {
            let hk = Hkdf::<Sha512>::new(Some(black_box(&salt)), black_box(&ikm));
            let mut okm = [0u8; 32];
            let r = hk.expand(label, &mut okm);
            black_box((r.is_ok(), okm))
        })
    });
    g.finish();
}

fn chacha20poly1305(c: &mut Criterion) {
    use chacha20poly1305::aead::{AeadInOut, KeyInit};
    use chacha20poly1305::{ChaCha20Poly1305, Key, Tag};
    let key = [0x42u8; 32];
    let nonce = [0u8; 12];
    let aad = b"pqnode rec v1\0\0\0\0\0\0\0\0";
    let raw_key: &Key = (&key).into();

    let mut g = c.benchmark_group("ChaCha20-Poly1305/seal");
    for size in AEAD_SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0xabu8; size];
        g.bench_with_input(BenchmarkId::new("wrapper", size), &size, |b, _| {
            b.iter(|| black_box(aead::seal_in_place(&key, &nonce, aad, black_box(&mut buf))))
        });
        g.bench_with_input(BenchmarkId::new("raw", size), &size, |b, _| {
            b.iter(|| {
                let cipher = ChaCha20Poly1305::new(raw_key);
                black_box(cipher.encrypt_inout_detached(
                    (&nonce).into(),
                    aad,
                    black_box(&mut buf[..]).into(),
                ))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("ChaCha20-Poly1305/open");
    for size in AEAD_SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut ct = vec![0xabu8; size];
        let tag = match aead::seal_in_place(&key, &nonce, aad, &mut ct) {
            Ok(t) => t,
            Err(e) => panic!("seal: {e}"),
        };
        let raw_tag: &Tag = (&tag).into();
        // every iteration opens a fresh copy of the ciphertext (the copy is
        // not measured), so a successful open is what is timed
        g.bench_with_input(BenchmarkId::new("wrapper", size), &size, |b, _| {
            b.iter_batched_ref(
                || ct.clone(),
                |buf| {
                    let r = aead::open_in_place(&key, &nonce, aad, buf, &tag);
                    assert!(r.is_ok());
                },
                BatchSize::LargeInput,
            )
        });
        g.bench_with_input(BenchmarkId::new("raw", size), &size, |b, _| {
            b.iter_batched_ref(
                || ct.clone(),
                |buf| {
                    let cipher = ChaCha20Poly1305::new(raw_key);
                    let r = cipher.decrypt_inout_detached(
                        (&nonce).into(),
                        aad,
                        buf.as_mut_slice().into(),
                        raw_tag,
                    );
                    assert!(r.is_ok());
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = kem_and_sig, x25519, hkdf, chacha20poly1305
}
criterion_main!(benches);
