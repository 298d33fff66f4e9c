//! Cross-checks of our wrappers (over the pqcrypto C code) against
//! independent pure-Rust implementations from crates.io:
//!
//! | suite | ours (pqcrypto) | independent crate |
//! |---|---|---|
//! | 0x0001 | Kyber1024 (FIPS 203 initial public draft) | `fips203` 0.2.1 (the draft), RustCrypto `ml-kem` 0.3 (final; encapsulation and decapsulation are the same as the draft's) |
//! | 0x0001 | Dilithium5 (FIPS 204 initial public draft) | `fips204` 0.2.2 (the draft) |
//! | 0x0002 | ML-KEM-1024 (FIPS 203) | RustCrypto `ml-kem` 0.3 |
//! | 0x0002 | ML-DSA-87 (FIPS 204) | RustCrypto `ml-dsa` 0.1 |
//!
//! Both directions every time: keys, ciphertexts and signatures made by our
//! wrappers are accepted by the independent crate and the other way round,
//! and both sides agree on every shared secret. For the deterministic
//! Dilithium5 the signatures must even be byte-identical.
#![cfg(feature = "pqc")]

use pqnode_crypto::Suite;
use pqnode_crypto::kem::{KemCiphertext, KemPublicKey, KemSecretKey, generate_keypair};
use pqnode_crypto::sign::{SigningKey, VerifyingKey};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// Key pairs per check (the pure-Rust crates are slow in debug builds).
const ROUNDS: usize = 4;

const KYBER: Suite = Suite::Kyber1024Dilithium5;
const FIPS: Suite = Suite::Mlkem1024Mldsa87;

/// Messages of a few lengths, the empty one included.
fn messages(rng: &mut ChaCha20Rng) -> Vec<Vec<u8>> {
    [0usize, 1, 64, 1000]
        .iter()
        .map(|&len| {
            let mut m = vec![0u8; len];
            rng.fill_bytes(&mut m);
            m
        })
        .collect()
}

fn arr<const N: usize>(bytes: &[u8]) -> [u8; N] {
    match bytes.try_into() {
        Ok(a) => a,
        Err(_) => panic!("expected {N} bytes, got {}", bytes.len()),
    }
}

// ---------------------------------------------------------------------------
// Kyber1024 ↔ fips203 0.2.1 (FIPS 203 initial public draft)
// ---------------------------------------------------------------------------

mod fips203_draft {
    pub use fips203::ml_kem_1024::{CipherText, DecapsKey, EncapsKey, KG};
    pub use fips203::traits::{Decaps, Encaps, KeyGen, SerDes};
}

/// Encapsulates with fips203 to `pk`, decapsulates with ours, and the other
/// way round; both must give the same secret.
fn kyber_vs_fips203(suite: Suite, pk: &KemPublicKey, sk: &KemSecretKey) {
    use fips203_draft::*;
    // fips203 encapsulates, we decapsulate
    let ek = match EncapsKey::try_from_bytes(arr(pk.as_bytes())) {
        Ok(ek) => ek,
        Err(e) => panic!("{suite}: fips203 refused our public key: {e}"),
    };
    let (their_ss, their_ct) = match ek.try_encaps() {
        Ok(v) => v,
        Err(e) => panic!("{suite}: fips203 encapsulation failed: {e}"),
    };
    let ct = KemCiphertext::from_bytes(suite, &their_ct.into_bytes());
    let ours = ct.and_then(|ct| sk.decapsulate(&ct));
    assert!(
        ours.is_ok_and(|ss| ss.expose()[..] == their_ss.clone().into_bytes()[..]),
        "{suite}: our decapsulation of fips203's ciphertext differs"
    );
    // we encapsulate, fips203 decapsulates
    let (ct, ss) = match pk.encapsulate() {
        Ok(v) => v,
        Err(e) => panic!("{suite}: our encapsulation failed: {e}"),
    };
    let dk = match DecapsKey::try_from_bytes(arr(sk.expose_secret())) {
        Ok(dk) => dk,
        Err(e) => panic!("{suite}: fips203 refused our secret key: {e}"),
    };
    let their_ct = match CipherText::try_from_bytes(arr(ct.as_bytes())) {
        Ok(ct) => ct,
        Err(e) => panic!("{suite}: fips203 refused our ciphertext: {e}"),
    };
    match dk.try_decaps(&their_ct) {
        Ok(their_ss) => assert_eq!(
            their_ss.into_bytes()[..],
            ss.expose()[..],
            "{suite}: fips203's decapsulation of our ciphertext differs"
        ),
        Err(e) => panic!("{suite}: fips203 decapsulation failed: {e}"),
    }
}

#[test]
fn kyber1024_our_keys_work_in_fips203_draft() {
    for _ in 0..ROUNDS {
        let (pk, sk) = match generate_keypair(KYBER) {
            Ok(kp) => kp,
            Err(e) => panic!("keygen: {e}"),
        };
        // fips203's own consistency check of a serialized key pair
        assert!(
            <fips203_draft::KG as fips203_draft::KeyGen>::validate_keypair_vartime(
                &arr(pk.as_bytes()),
                &arr(sk.expose_secret())
            ),
            "fips203 finds our Kyber1024 key pair inconsistent"
        );
        kyber_vs_fips203(KYBER, &pk, &sk);
    }
}

#[test]
fn kyber1024_fips203_draft_keys_work_in_ours() {
    use fips203_draft::*;
    for _ in 0..ROUNDS {
        let (ek, dk) = match KG::try_keygen() {
            Ok(kp) => kp,
            Err(e) => panic!("fips203 keygen: {e}"),
        };
        let pk = KemPublicKey::from_bytes(KYBER, &ek.into_bytes());
        let sk = KemSecretKey::from_bytes(KYBER, &dk.into_bytes());
        let (Ok(pk), Ok(sk)) = (pk, sk) else {
            panic!("our wrapper refused fips203's key pair");
        };
        kyber_vs_fips203(KYBER, &pk, &sk);
    }
}

// ---------------------------------------------------------------------------
// Kyber1024 and ML-KEM-1024 ↔ RustCrypto ml-kem (final FIPS 203)
// ---------------------------------------------------------------------------

/// Both directions of encapsulation between ours and RustCrypto `ml-kem`
/// for one key pair given as bytes.
fn kem_vs_ml_kem(suite: Suite, pk: &KemPublicKey, sk: &KemSecretKey, rng: &mut ChaCha20Rng) {
    #[allow(deprecated)] // the expanded form is the one pqcrypto uses
    use ml_kem::ExpandedKeyEncoding as _;
    use ml_kem::{Decapsulate as _, Encapsulate as _, KeyExport as _, MlKem1024};
    // ml-kem encapsulates, we decapsulate
    let ek_bytes = match ml_kem::Key::<ml_kem::EncapsulationKey<MlKem1024>>::try_from(pk.as_bytes())
    {
        Ok(b) => b,
        Err(e) => panic!("{suite}: public key length: {e}"),
    };
    let ek = match ml_kem::EncapsulationKey::<MlKem1024>::new(&ek_bytes) {
        Ok(ek) => ek,
        Err(e) => panic!("{suite}: ml-kem refused our public key: {e:?}"),
    };
    let (their_ct, their_ss) = ek.encapsulate_with_rng(rng);
    let ours = KemCiphertext::from_bytes(suite, &their_ct).and_then(|ct| sk.decapsulate(&ct));
    assert!(
        ours.is_ok_and(|ss| ss.expose()[..] == their_ss[..]),
        "{suite}: our decapsulation of ml-kem's ciphertext differs"
    );
    // we encapsulate, ml-kem decapsulates with our expanded secret key
    let (ct, ss) = match pk.encapsulate() {
        Ok(v) => v,
        Err(e) => panic!("{suite}: our encapsulation failed: {e}"),
    };
    let expanded = match ml_kem::ExpandedDecapsulationKey::<MlKem1024>::try_from(sk.expose_secret())
    {
        Ok(x) => x,
        Err(e) => panic!("{suite}: secret key length: {e}"),
    };
    #[allow(deprecated)]
    let dk = match ml_kem::DecapsulationKey::<MlKem1024>::from_expanded_bytes(&expanded) {
        Ok(dk) => dk,
        Err(e) => panic!("{suite}: ml-kem refused our expanded secret key: {e:?}"),
    };
    assert_eq!(
        dk.encapsulation_key().to_bytes()[..],
        pk.as_bytes()[..],
        "{suite}: the public key inside our secret key differs"
    );
    let their_ss = match dk.decapsulate_slice(ct.as_bytes()) {
        Ok(ss) => ss,
        Err(e) => panic!("{suite}: ciphertext length: {e}"),
    };
    assert_eq!(
        their_ss[..],
        ss.expose()[..],
        "{suite}: ml-kem's decapsulation of our ciphertext differs"
    );
}

#[test]
fn kem_our_keys_work_in_ml_kem() {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    // Kyber1024's key generation is the draft's, but its keys are ordinary
    // ML-KEM-1024 keys and its encapsulation and decapsulation are the final ones.
    for suite in [FIPS, KYBER] {
        for _ in 0..ROUNDS {
            let (pk, sk) = match generate_keypair(suite) {
                Ok(kp) => kp,
                Err(e) => panic!("{suite} keygen: {e}"),
            };
            kem_vs_ml_kem(suite, &pk, &sk, &mut rng);
        }
    }
}

#[test]
fn kem_ml_kem_keys_work_in_ours() {
    #[allow(deprecated)]
    use ml_kem::ExpandedKeyEncoding as _;
    use ml_kem::{KeyExport as _, MlKem1024};
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    for suite in [FIPS, KYBER] {
        for _ in 0..ROUNDS {
            let mut seed = ml_kem::Seed::default();
            rng.fill_bytes(&mut seed);
            let dk = ml_kem::DecapsulationKey::<MlKem1024>::from_seed(seed);
            #[allow(deprecated)]
            let expanded = dk.to_expanded_bytes();
            let pk = KemPublicKey::from_bytes(suite, &dk.encapsulation_key().to_bytes());
            let sk = KemSecretKey::from_bytes(suite, &expanded);
            let (Ok(pk), Ok(sk)) = (pk, sk) else {
                panic!("{suite}: our wrapper refused ml-kem's key pair");
            };
            kem_vs_ml_kem(suite, &pk, &sk, &mut rng);
        }
    }
}

// ---------------------------------------------------------------------------
// Dilithium5 ↔ fips204 0.2.2 (FIPS 204 initial public draft)
// ---------------------------------------------------------------------------

/// The deterministic variant of the FIPS 204 draft signs with `rnd = 0^256`;
/// fips204 takes `rnd` from an RNG, so this one yields zeros.
struct ZeroRng;

impl fips204::RngCore for ZeroRng {
    fn next_u32(&mut self) -> u32 {
        0
    }
    fn next_u64(&mut self) -> u64 {
        0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(0);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), fips204::RngError> {
        dest.fill(0);
        Ok(())
    }
}

impl fips204::CryptoRng for ZeroRng {}

mod fips204_draft {
    pub use fips204::ml_dsa_87::{KG, PrivateKey, PublicKey};
    pub use fips204::traits::{KeyGen, SerDes, Signer, Verifier};
}

fn fips204_sign_deterministic(sk: &fips204_draft::PrivateKey, msg: &[u8]) -> Vec<u8> {
    use fips204_draft::Signer as _;
    match sk.try_sign_with_rng(&mut ZeroRng, msg) {
        Ok(sig) => sig.to_vec(),
        Err(e) => panic!("fips204 signing failed: {e}"),
    }
}

fn fips204_verifies(pk: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    use fips204_draft::{PublicKey, SerDes as _, Verifier as _};
    match PublicKey::try_from_bytes(arr(pk)) {
        Ok(pk) => pk.verify(msg, &arr(sig)),
        Err(e) => panic!("fips204 refused a public key: {e}"),
    }
}

#[test]
fn dilithium5_our_signatures_match_fips204_draft() {
    use fips204_draft::{PrivateKey, SerDes as _};
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    for _ in 0..ROUNDS {
        let key = match SigningKey::generate(KYBER) {
            Ok(k) => k,
            Err(e) => panic!("keygen: {e}"),
        };
        let pk = key.verifying_key().as_bytes();
        let their_sk = match PrivateKey::try_from_bytes(arr(key.expose_secret())) {
            Ok(sk) => sk,
            Err(e) => panic!("fips204 refused our secret key: {e}"),
        };
        for msg in messages(&mut rng) {
            let sig = match key.sign(&msg) {
                Ok(s) => s,
                Err(e) => panic!("sign: {e}"),
            };
            assert!(
                fips204_verifies(pk, &msg, &sig),
                "fips204 rejects our Dilithium5 signature ({} B message)",
                msg.len()
            );
            assert_eq!(
                fips204_sign_deterministic(&their_sk, &msg),
                sig,
                "deterministic signatures differ ({} B message)",
                msg.len()
            );
            let mut other = msg.clone();
            other.push(1);
            assert!(
                !fips204_verifies(pk, &other, &sig),
                "fips204 accepts a signature over another message"
            );
        }
    }
}

#[test]
fn dilithium5_fips204_draft_keys_and_signatures_work_in_ours() {
    use fips204_draft::{KG, KeyGen as _, SerDes as _, Signer as _};
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    for _ in 0..ROUNDS {
        let (their_pk, their_sk) = match KG::try_keygen() {
            Ok(kp) => kp,
            Err(e) => panic!("fips204 keygen: {e}"),
        };
        let pk_bytes = their_pk.into_bytes();
        let sk_bytes = their_sk.clone().into_bytes();
        // our import runs a sign-and-verify consistency check of its own
        let key = match SigningKey::from_bytes(KYBER, &sk_bytes, &pk_bytes) {
            Ok(k) => k,
            Err(e) => panic!("our wrapper refused fips204's key pair: {e}"),
        };
        let vk = key.verifying_key();
        for msg in messages(&mut rng) {
            // a hedged (random rnd) signature of theirs verifies in ours
            let hedged = match their_sk.try_sign(&msg) {
                Ok(s) => s,
                Err(e) => panic!("fips204 signing failed: {e}"),
            };
            assert!(
                vk.verify(&msg, &hedged).is_ok(),
                "we reject fips204's hedged signature"
            );
            // their deterministic signature is exactly ours
            let det = fips204_sign_deterministic(&their_sk, &msg);
            assert!(
                vk.verify(&msg, &det).is_ok(),
                "we reject fips204's deterministic signature"
            );
            match key.sign(&msg) {
                Ok(ours) => assert_eq!(ours, det, "deterministic signatures differ"),
                Err(e) => panic!("sign: {e}"),
            }
            let mut other = msg.clone();
            other.push(1);
            assert!(
                vk.verify(&other, &det).is_err(),
                "we accept a signature over another message"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// ML-DSA-87 ↔ RustCrypto ml-dsa (final FIPS 204)
// ---------------------------------------------------------------------------

fn ml_dsa_vk(pk: &[u8]) -> ml_dsa::VerifyingKey<ml_dsa::MlDsa87> {
    match ml_dsa::EncodedVerifyingKey::<ml_dsa::MlDsa87>::try_from(pk) {
        Ok(enc) => ml_dsa::VerifyingKey::decode(&enc),
        Err(e) => panic!("public key length: {e}"),
    }
}

/// ml-dsa's verdict on `sig` over `msg` with the empty context.
fn ml_dsa_verifies(pk: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let Ok(enc) = ml_dsa::EncodedSignature::<ml_dsa::MlDsa87>::try_from(sig) else {
        return false;
    };
    ml_dsa::Signature::decode(&enc)
        .is_some_and(|sig| ml_dsa_vk(pk).verify_with_context(msg, &[], &sig))
}

#[test]
fn mldsa87_our_keys_and_signatures_work_in_ml_dsa() {
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    for _ in 0..ROUNDS {
        let key = match SigningKey::generate(FIPS) {
            Ok(k) => k,
            Err(e) => panic!("keygen: {e}"),
        };
        let pk = key.verifying_key().as_bytes();
        let expanded =
            match ml_dsa::ExpandedSigningKeyBytes::<ml_dsa::MlDsa87>::try_from(key.expose_secret())
            {
                Ok(x) => x,
                Err(e) => panic!("secret key length: {e}"),
            };
        #[allow(deprecated)] // the expanded form is the one pqcrypto uses
        let their_sk = ml_dsa::ExpandedSigningKey::<ml_dsa::MlDsa87>::from_expanded(&expanded);
        assert_eq!(
            their_sk.verifying_key().encode()[..],
            pk[..],
            "ml-dsa derives another public key from our secret key"
        );
        for msg in messages(&mut rng) {
            let sig = match key.sign(&msg) {
                Ok(s) => s,
                Err(e) => panic!("sign: {e}"),
            };
            assert!(
                ml_dsa_verifies(pk, &msg, &sig),
                "ml-dsa rejects our signature ({} B)",
                msg.len()
            );
            let mut other = msg.clone();
            other.push(1);
            assert!(
                !ml_dsa_verifies(pk, &other, &sig),
                "ml-dsa accepts a signature over another message"
            );
            // ml-dsa signing with our secret key verifies in ours
            match their_sk.sign_deterministic(&msg, &[]) {
                Ok(theirs) => assert!(
                    key.verifying_key().verify(&msg, &theirs.encode()).is_ok(),
                    "we reject ml-dsa's signature made with our key"
                ),
                Err(e) => panic!("ml-dsa signing failed: {e}"),
            }
        }
    }
}

#[test]
fn mldsa87_ml_dsa_keys_and_signatures_work_in_ours() {
    let mut rng = ChaCha20Rng::from_seed([6; 32]);
    for _ in 0..ROUNDS {
        let mut seed = ml_dsa::Seed::default();
        rng.fill_bytes(&mut seed);
        let their_sk = ml_dsa::ExpandedSigningKey::<ml_dsa::MlDsa87>::from_seed(&seed);
        let pk = their_sk.verifying_key().encode();
        #[allow(deprecated)]
        let sk = their_sk.to_expanded();
        let key = match SigningKey::from_bytes(FIPS, &sk, &pk) {
            Ok(k) => k,
            Err(e) => panic!("our wrapper refused ml-dsa's key pair: {e}"),
        };
        let vk = match VerifyingKey::from_bytes(FIPS, &pk) {
            Ok(vk) => vk,
            Err(e) => panic!("our wrapper refused ml-dsa's public key: {e}"),
        };
        for msg in messages(&mut rng) {
            match their_sk.sign_deterministic(&msg, &[]) {
                Ok(theirs) => assert!(
                    vk.verify(&msg, &theirs.encode()).is_ok(),
                    "we reject ml-dsa's signature"
                ),
                Err(e) => panic!("ml-dsa signing failed: {e}"),
            }
            match key.sign(&msg) {
                Ok(ours) => assert!(
                    ml_dsa_verifies(&pk, &msg, &ours),
                    "ml-dsa rejects our signature with its key"
                ),
                Err(e) => panic!("sign: {e}"),
            }
        }
    }
}

/// The two suites never mix: a draft (Dilithium5) signature does not verify
/// as ML-DSA-87 in the independent final implementation either.
#[test]
fn dilithium5_signatures_are_not_ml_dsa_87() {
    let key = match SigningKey::generate(KYBER) {
        Ok(k) => k,
        Err(e) => panic!("keygen: {e}"),
    };
    let msg = b"pqnode";
    let sig = match key.sign(msg) {
        Ok(s) => s,
        Err(e) => panic!("sign: {e}"),
    };
    assert!(fips204_verifies(key.verifying_key().as_bytes(), msg, &sig));
    assert!(!ml_dsa_verifies(key.verifying_key().as_bytes(), msg, &sig));
}
