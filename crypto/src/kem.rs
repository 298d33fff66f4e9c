//! Key encapsulation (Kyber1024, ML-KEM-1024), dispatched by suite.
//!
//! Secret keys and shared secrets are produced by [`crate::ffi`] straight into
//! [`Secret`] buffers; public keys and ciphertexts are plain bytes.

use std::fmt;

use crate::error::{CryptoError, check_len};
use crate::secret::Secret;
use crate::suite::{
    KEM_CIPHERTEXT_LEN, KEM_PUBLIC_KEY_LEN, KEM_SECRET_KEY_LEN, KEM_SHARED_SECRET_LEN, Suite,
};

/// A KEM shared secret.
pub type SharedSecret = Secret<KEM_SHARED_SECRET_LEN>;

/// A KEM public key of one suite.
#[derive(Clone, PartialEq, Eq)]
pub struct KemPublicKey {
    suite: Suite,
    bytes: Box<[u8; KEM_PUBLIC_KEY_LEN]>,
}

/// A KEM secret key of one suite: zeroized on drop, never printed.
pub struct KemSecretKey {
    suite: Suite,
    secret: Secret<KEM_SECRET_KEY_LEN>,
}

/// A KEM ciphertext of one suite.
#[derive(Clone, PartialEq, Eq)]
pub struct KemCiphertext {
    suite: Suite,
    bytes: Box<[u8; KEM_CIPHERTEXT_LEN]>,
}

fn boxed<const N: usize>(what: &'static str, bytes: &[u8]) -> Result<Box<[u8; N]>, CryptoError> {
    check_len(what, N, bytes.len())?;
    let mut out = Box::new([0u8; N]);
    out.copy_from_slice(bytes);
    Ok(out)
}

/// Generates an ephemeral KEM key pair.
pub fn generate_keypair(suite: Suite) -> Result<(KemPublicKey, KemSecretKey), CryptoError> {
    #[cfg(feature = "pqc")]
    {
        let mut pk = Box::new([0u8; KEM_PUBLIC_KEY_LEN]);
        let mut secret = Secret::<KEM_SECRET_KEY_LEN>::zero();
        crate::ffi::kem_keypair(suite, &mut pk, secret.expose_mut())
            .map_err(|_| CryptoError::Primitive("KEM key generation"))?;
        Ok((
            KemPublicKey { suite, bytes: pk },
            KemSecretKey { suite, secret },
        ))
    }
    #[cfg(not(feature = "pqc"))]
    {
        let _ = suite;
        Err(CryptoError::PqUnavailable)
    }
}

/// FIPS 203 §7.2 modulus check (the draft that Kyber1024 follows has it
/// too): every 12-bit coefficient of the encoded vector t̂ (all but the last
/// 32 bytes, which are the seed ρ) must be below q = 3329, or the key is not
/// the encoding of any valid key.
fn modulus_check(bytes: &[u8; KEM_PUBLIC_KEY_LEN]) -> bool {
    const Q: u16 = 3329;
    bytes[..KEM_PUBLIC_KEY_LEN - 32].chunks_exact(3).all(|c| {
        let (b0, b1, b2) = (u16::from(c[0]), u16::from(c[1]), u16::from(c[2]));
        let d0 = b0 | ((b1 & 0x0f) << 8);
        let d1 = (b1 >> 4) | (b2 << 4);
        d0 < Q && d1 < Q
    })
}

impl KemPublicKey {
    /// Parses a public key: its length, and the FIPS 203 §7.2 modulus check.
    pub fn from_bytes(suite: Suite, bytes: &[u8]) -> Result<Self, CryptoError> {
        let bytes = boxed("KEM public key", bytes)?;
        if !modulus_check(&bytes) {
            return Err(CryptoError::InvalidKey(
                "KEM public key coefficient out of range (FIPS 203 §7.2)",
            ));
        }
        Ok(KemPublicKey { suite, bytes })
    }

    /// The key's suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..]
    }

    /// Encapsulates a fresh shared secret to this key.
    pub fn encapsulate(&self) -> Result<(KemCiphertext, SharedSecret), CryptoError> {
        #[cfg(feature = "pqc")]
        {
            let mut ct = Box::new([0u8; KEM_CIPHERTEXT_LEN]);
            let mut ss = SharedSecret::zero();
            crate::ffi::kem_encapsulate(self.suite, &self.bytes, &mut ct, ss.expose_mut())
                .map_err(|_| CryptoError::Primitive("KEM encapsulation"))?;
            Ok((
                KemCiphertext {
                    suite: self.suite,
                    bytes: ct,
                },
                ss,
            ))
        }
        #[cfg(not(feature = "pqc"))]
        Err(CryptoError::PqUnavailable)
    }
}

impl fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KemPublicKey")
            .field("suite", &self.suite)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl KemSecretKey {
    /// Imports a secret key (replay test vectors); only the length is checked.
    pub fn from_bytes(suite: Suite, bytes: &[u8]) -> Result<Self, CryptoError> {
        check_len("KEM secret key", KEM_SECRET_KEY_LEN, bytes.len())?;
        let secret =
            Secret::from_slice(bytes).ok_or(CryptoError::Primitive("KEM secret key import"))?;
        Ok(KemSecretKey { suite, secret })
    }

    /// The key's suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The secret bytes (for test vectors and interop tests only).
    pub fn expose_secret(&self) -> &[u8] {
        &self.secret.expose()[..]
    }

    /// Decapsulates `ct`. An invalid ciphertext of the right length yields an
    /// unrelated secret (implicit rejection), never an error.
    pub fn decapsulate(&self, ct: &KemCiphertext) -> Result<SharedSecret, CryptoError> {
        if ct.suite != self.suite {
            return Err(CryptoError::Primitive("KEM decapsulation (suite mismatch)"));
        }
        #[cfg(feature = "pqc")]
        {
            let mut ss = SharedSecret::zero();
            crate::ffi::kem_decapsulate(
                self.suite,
                &ct.bytes,
                self.secret.expose(),
                ss.expose_mut(),
            )
            .map_err(|_| CryptoError::Primitive("KEM decapsulation"))?;
            Ok(ss)
        }
        #[cfg(not(feature = "pqc"))]
        Err(CryptoError::PqUnavailable)
    }
}

impl fmt::Debug for KemSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KemSecretKey")
            .field("suite", &self.suite)
            .field("secret", &self.secret)
            .finish()
    }
}

impl KemCiphertext {
    /// Parses a ciphertext; only the length can be checked.
    pub fn from_bytes(suite: Suite, bytes: &[u8]) -> Result<Self, CryptoError> {
        Ok(KemCiphertext {
            suite,
            bytes: boxed("KEM ciphertext", bytes)?,
        })
    }

    /// The ciphertext's suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The encoded ciphertext.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..]
    }
}

impl fmt::Debug for KemCiphertext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KemCiphertext")
            .field("suite", &self.suite)
            .field("len", &self.bytes.len())
            .finish()
    }
}

#[cfg(all(test, feature = "pqc"))]
mod tests {
    use super::*;
    use pqcrypto_traits::kem::{
        Ciphertext as _, PublicKey as _, SecretKey as _, SharedSecret as _,
    };

    #[test]
    fn round_trip_every_suite() {
        for suite in Suite::ALL {
            let (pk, sk) = generate_keypair(suite).unwrap();
            let (ct, ss1) = pk.encapsulate().unwrap();
            let ss2 = sk.decapsulate(&ct).unwrap();
            assert!(ss1.ct_eq(&ss2), "{suite}");
            assert_ne!(ss1.expose(), &[0u8; 32]);
        }
    }

    /// Keys and ciphertexts of our FFI path are accepted by the crates' safe
    /// API and the other way round.
    #[test]
    fn interop_with_the_safe_api() {
        macro_rules! check {
            ($suite:expr, $m:path) => {{
                use $m as m;
                // ours → safe API
                let (pk, sk) = generate_keypair($suite).unwrap();
                let safe_pk = m::PublicKey::from_bytes(pk.as_bytes()).unwrap();
                let (safe_ss, safe_ct) = m::encapsulate(&safe_pk);
                let ct = KemCiphertext::from_bytes($suite, safe_ct.as_bytes()).unwrap();
                assert_eq!(sk.decapsulate(&ct).unwrap().expose(), safe_ss.as_bytes());
                let (ct, ss) = pk.encapsulate().unwrap();
                let safe_sk = m::SecretKey::from_bytes(sk.expose_secret()).unwrap();
                let safe_ct = m::Ciphertext::from_bytes(ct.as_bytes()).unwrap();
                assert_eq!(m::decapsulate(&safe_ct, &safe_sk).as_bytes(), ss.expose());
                // safe API → ours
                let (safe_pk, safe_sk) = m::keypair();
                let pk = KemPublicKey::from_bytes($suite, safe_pk.as_bytes()).unwrap();
                let sk = KemSecretKey::from_bytes($suite, safe_sk.as_bytes()).unwrap();
                let (ct, ss) = pk.encapsulate().unwrap();
                let safe_ct = m::Ciphertext::from_bytes(ct.as_bytes()).unwrap();
                assert_eq!(m::decapsulate(&safe_ct, &safe_sk).as_bytes(), ss.expose());
                let (safe_ss, safe_ct) = m::encapsulate(&safe_pk);
                let ct = KemCiphertext::from_bytes($suite, safe_ct.as_bytes()).unwrap();
                assert_eq!(sk.decapsulate(&ct).unwrap().expose(), safe_ss.as_bytes());
            }};
        }
        check!(Suite::Kyber1024Dilithium5, pqcrypto_kyber::kyber1024);
        check!(Suite::Mlkem1024Mldsa87, pqcrypto_mlkem::mlkem1024);
    }

    #[test]
    fn out_of_range_public_keys_are_refused() {
        for suite in Suite::ALL {
            let (pk, _) = generate_keypair(suite).unwrap();
            assert!(KemPublicKey::from_bytes(suite, pk.as_bytes()).is_ok());
            let mut bad = pk.as_bytes().to_vec();
            // First coefficient := 4095 (>= q).
            bad[0] = 0xff;
            bad[1] |= 0x0f;
            assert!(matches!(
                KemPublicKey::from_bytes(suite, &bad),
                Err(CryptoError::InvalidKey(_))
            ));
            // The last 32 bytes (rho) are not coefficients.
            let mut rho = pk.as_bytes().to_vec();
            let n = rho.len();
            rho[n - 1] = 0xff;
            rho[n - 2] = 0xff;
            assert!(KemPublicKey::from_bytes(suite, &rho).is_ok());
        }
    }

    #[test]
    fn wrong_lengths_are_typed_errors() {
        let err = KemPublicKey::from_bytes(Suite::Mlkem1024Mldsa87, &[0u8; 10]).unwrap_err();
        assert_eq!(
            err,
            CryptoError::Length {
                what: "KEM public key",
                expected: 1568,
                got: 10
            }
        );
        assert!(KemCiphertext::from_bytes(Suite::Mlkem1024Mldsa87, &[0u8; 1569]).is_err());
        assert!(KemSecretKey::from_bytes(Suite::Mlkem1024Mldsa87, &[0u8; 3167]).is_err());
    }

    #[test]
    fn debug_never_prints_secret_bytes() {
        let (_, sk) = generate_keypair(Suite::Kyber1024Dilithium5).unwrap();
        let printed = format!("{sk:?}");
        assert!(printed.contains("redacted"), "{printed}");
        // 3168 secret bytes cannot fit in a short line.
        assert!(printed.len() < 120, "{printed}");
    }
}
