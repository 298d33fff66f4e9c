//! Round trips and replay known answers for the PQ primitives.

use crate::kem::{self, KemCiphertext, KemSecretKey};
use crate::sign::{SigningKey, VerifyingKey};
use crate::suite::{
    KEM_CIPHERTEXT_LEN, KEM_SECRET_KEY_LEN, SIG_PUBLIC_KEY_LEN, SIGNATURE_LEN, Suite,
};

use super::KAT_MESSAGE;

const KYBER1024: &[u8] = include_bytes!("kat/kyber1024.bin");
const MLKEM1024: &[u8] = include_bytes!("kat/mlkem1024.bin");
const DILITHIUM5: &[u8] = include_bytes!("kat/dilithium5.bin");
const MLDSA87: &[u8] = include_bytes!("kat/mldsa87.bin");

pub(super) fn kem_round_trip(suite: Suite) -> Result<(), String> {
    let (pk, sk) = kem::generate_keypair(suite).map_err(|e| format!("KEM key generation: {e}"))?;
    let (ct, ss) = pk
        .encapsulate()
        .map_err(|e| format!("KEM encapsulation: {e}"))?;
    let ss2 = sk
        .decapsulate(&ct)
        .map_err(|e| format!("KEM decapsulation: {e}"))?;
    if !ss.ct_eq(&ss2) {
        return Err("KEM round trip: shared secrets differ".into());
    }
    let mut bad = ct.as_bytes().to_vec();
    bad[0] ^= 1;
    let bad = KemCiphertext::from_bytes(suite, &bad).map_err(|e| e.to_string())?;
    let ss3 = sk
        .decapsulate(&bad)
        .map_err(|e| format!("KEM decapsulation: {e}"))?;
    if ss.ct_eq(&ss3) {
        return Err("KEM round trip: a modified ciphertext gave the same secret".into());
    }
    Ok(())
}

pub(super) fn kem_known_answer(suite: Suite) -> Result<(), String> {
    let kat = match suite {
        Suite::Kyber1024Dilithium5 => KYBER1024,
        Suite::Mlkem1024Mldsa87 => MLKEM1024,
    };
    let (sk, rest) = kat.split_at(KEM_SECRET_KEY_LEN);
    let (ct, ss) = rest.split_at(KEM_CIPHERTEXT_LEN);
    let sk = KemSecretKey::from_bytes(suite, sk).map_err(|e| e.to_string())?;
    let ct = KemCiphertext::from_bytes(suite, ct).map_err(|e| e.to_string())?;
    let got = sk
        .decapsulate(&ct)
        .map_err(|e| format!("KEM known answer: {e}"))?;
    if got.expose()[..] != ss[..] {
        return Err("KEM known answer: shared secret differs".into());
    }
    Ok(())
}

pub(super) fn sig_round_trip(suite: Suite) -> Result<(), String> {
    let key = SigningKey::generate(suite).map_err(|e| format!("signature key generation: {e}"))?;
    let sig = key
        .sign(b"pqnode self-test")
        .map_err(|e| format!("signing: {e}"))?;
    key.verifying_key()
        .verify(b"pqnode self-test", &sig)
        .map_err(|e| format!("signature round trip: {e}"))?;
    if key
        .verifying_key()
        .verify(b"pqnode self-tesT", &sig)
        .is_ok()
    {
        return Err("signature round trip: a modified message verified".into());
    }
    Ok(())
}

pub(super) fn sig_known_answer(suite: Suite) -> Result<(), String> {
    let kat = match suite {
        Suite::Kyber1024Dilithium5 => DILITHIUM5,
        Suite::Mlkem1024Mldsa87 => MLDSA87,
    };
    let (pk, rest) = kat.split_at(SIG_PUBLIC_KEY_LEN);
    let (sig, sk) = rest.split_at(SIGNATURE_LEN);
    let vk = VerifyingKey::from_bytes(suite, pk).map_err(|e| e.to_string())?;
    vk.verify(KAT_MESSAGE, sig)
        .map_err(|e| format!("signature known answer: {e}"))?;
    if suite == Suite::Kyber1024Dilithium5 {
        // Dilithium5 (FIPS 204 draft) signs deterministically: same bytes again.
        let key = SigningKey::from_bytes(suite, sk, pk).map_err(|e| e.to_string())?;
        let again = key.sign(KAT_MESSAGE).map_err(|e| format!("signing: {e}"))?;
        if again != sig {
            return Err("signature known answer: deterministic signature differs".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the known-answer files. Run once, by hand, and commit them:
    /// `cargo test -p pqnode-crypto -- --ignored generate_known_answers`.
    #[test]
    #[ignore]
    fn generate_known_answers() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/selftest/kat");
        std::fs::create_dir_all(&dir).unwrap();
        for (suite, name) in [
            (Suite::Kyber1024Dilithium5, "kyber1024"),
            (Suite::Mlkem1024Mldsa87, "mlkem1024"),
        ] {
            let (pk, sk) = kem::generate_keypair(suite).unwrap();
            let (ct, ss) = pk.encapsulate().unwrap();
            let mut out = sk.expose_secret().to_vec();
            out.extend_from_slice(ct.as_bytes());
            out.extend_from_slice(ss.expose());
            std::fs::write(dir.join(format!("{name}.bin")), out).unwrap();
        }
        for (suite, name) in [
            (Suite::Kyber1024Dilithium5, "dilithium5"),
            (Suite::Mlkem1024Mldsa87, "mldsa87"),
        ] {
            let key = SigningKey::generate(suite).unwrap();
            let sig = key.sign(KAT_MESSAGE).unwrap();
            let mut out = key.verifying_key().as_bytes().to_vec();
            out.extend_from_slice(&sig);
            if suite == Suite::Kyber1024Dilithium5 {
                out.extend_from_slice(key.expose_secret());
            }
            std::fs::write(dir.join(format!("{name}.bin")), out).unwrap();
        }
    }

    #[test]
    fn a_corrupted_known_answer_is_detected() {
        let mut kat = DILITHIUM5.to_vec();
        kat[SIG_PUBLIC_KEY_LEN + 10] ^= 1;
        let vk = VerifyingKey::from_bytes(Suite::Kyber1024Dilithium5, &kat[..SIG_PUBLIC_KEY_LEN])
            .unwrap();
        assert!(
            vk.verify(
                KAT_MESSAGE,
                &kat[SIG_PUBLIC_KEY_LEN..SIG_PUBLIC_KEY_LEN + SIGNATURE_LEN]
            )
            .is_err()
        );
    }

    #[test]
    fn signing_determinism_as_documented() {
        let d = SigningKey::generate(Suite::Kyber1024Dilithium5).unwrap();
        assert_eq!(
            d.sign(b"m").unwrap(),
            d.sign(b"m").unwrap(),
            "Dilithium5 is deterministic"
        );
    }
}
