//! Signatures (Dilithium5, ML-DSA-87), dispatched by suite.
//!
//! Signing keys live in [`Secret`] buffers filled by [`crate::ffi`]; signing
//! goes through the FFI too so the secret key is never copied into the safe
//! API's `Copy` type. Verification calls PQClean's portable C code through
//! the FFI as well: the AVX2 verifiers skip a check FIPS 204 requires.

use std::fmt;

use crate::error::{CryptoError, check_len};
use crate::secret::Secret;
use crate::suite::{SIG_PUBLIC_KEY_LEN, SIG_SECRET_KEY_LEN, SIGNATURE_LEN, Suite};

/// A signature verification key of one suite.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VerifyingKey {
    suite: Suite,
    bytes: Vec<u8>,
}

/// A signing key pair of one suite: the secret half is zeroized on drop and
/// never printed. Not `Clone`: share it behind an `Arc`.
pub struct SigningKey {
    secret: Secret<SIG_SECRET_KEY_LEN>,
    public: VerifyingKey,
}

impl VerifyingKey {
    /// Parses a verification key; only the length can be checked.
    pub fn from_bytes(suite: Suite, bytes: &[u8]) -> Result<Self, CryptoError> {
        check_len("signature public key", SIG_PUBLIC_KEY_LEN, bytes.len())?;
        Ok(VerifyingKey {
            suite,
            bytes: bytes.to_vec(),
        })
    }

    /// The key's suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The encoded key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Verifies a detached signature over `msg`.
    pub fn verify(&self, msg: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
        check_len("signature", SIGNATURE_LEN, signature.len())?;
        #[cfg(feature = "pqc")]
        {
            // Portable C code on purpose: see `ffi::verify` (the AVX2 code
            // accepts signatures whose `z` is not short).
            let sig: &[u8; SIGNATURE_LEN] = signature
                .try_into()
                .map_err(|_| CryptoError::BadSignature)?;
            let pk: &[u8; SIG_PUBLIC_KEY_LEN] = self
                .bytes
                .as_slice()
                .try_into()
                .map_err(|_| CryptoError::BadSignature)?;
            if crate::ffi::verify(self.suite, msg, sig, pk) {
                Ok(())
            } else {
                Err(CryptoError::BadSignature)
            }
        }
        #[cfg(not(feature = "pqc"))]
        {
            let _ = msg;
            Err(CryptoError::PqUnavailable)
        }
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("suite", &self.suite)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl SigningKey {
    /// Generates a new signing key pair.
    pub fn generate(suite: Suite) -> Result<Self, CryptoError> {
        #[cfg(feature = "pqc")]
        {
            let mut pk = vec![0u8; SIG_PUBLIC_KEY_LEN];
            let mut secret = Secret::<SIG_SECRET_KEY_LEN>::zero();
            let pk_arr: &mut [u8; SIG_PUBLIC_KEY_LEN] = pk
                .as_mut_slice()
                .try_into()
                .map_err(|_| CryptoError::Primitive("signature key generation"))?;
            crate::ffi::sign_keypair(suite, pk_arr, secret.expose_mut())
                .map_err(|_| CryptoError::Primitive("signature key generation"))?;
            Ok(SigningKey {
                secret,
                public: VerifyingKey { suite, bytes: pk },
            })
        }
        #[cfg(not(feature = "pqc"))]
        {
            let _ = suite;
            Err(CryptoError::PqUnavailable)
        }
    }

    /// Imports a stored key pair and checks that its halves belong together
    /// (one sign-and-verify), so a corrupt key file cannot go unnoticed.
    pub fn from_bytes(suite: Suite, secret: &[u8], public: &[u8]) -> Result<Self, CryptoError> {
        check_len("signature secret key", SIG_SECRET_KEY_LEN, secret.len())?;
        let public = VerifyingKey::from_bytes(suite, public)?;
        let secret =
            Secret::from_slice(secret).ok_or(CryptoError::Primitive("signature key import"))?;
        let key = SigningKey { secret, public };
        let probe = b"pqnode key pair consistency check";
        let sig = key.sign(probe)?;
        key.public
            .verify(probe, &sig)
            .map_err(|_| CryptoError::InconsistentKeyPair)?;
        Ok(key)
    }

    /// The key's suite.
    pub fn suite(&self) -> Suite {
        self.public.suite
    }

    /// The public half.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The secret bytes, for the key store only.
    pub fn expose_secret(&self) -> &[u8] {
        &self.secret.expose()[..]
    }

    /// Signs `msg` (detached; ML-DSA-87 in pure mode with an empty context).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        #[cfg(feature = "pqc")]
        {
            let mut sig = vec![0u8; SIGNATURE_LEN];
            let arr: &mut [u8; SIGNATURE_LEN] = sig
                .as_mut_slice()
                .try_into()
                .map_err(|_| CryptoError::Primitive("signing"))?;
            crate::ffi::sign(self.suite(), msg, self.secret.expose(), arr)
                .map_err(|_| CryptoError::Primitive("signing"))?;
            Ok(sig)
        }
        #[cfg(not(feature = "pqc"))]
        {
            let _ = msg;
            Err(CryptoError::PqUnavailable)
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("suite", &self.suite())
            .field("secret", &self.secret)
            .finish()
    }
}

#[cfg(all(test, feature = "pqc"))]
mod tests {
    use super::*;
    use pqcrypto_traits::sign::{DetachedSignature as _, PublicKey as _, SecretKey as _};

    #[test]
    fn round_trip_every_suite() {
        for suite in Suite::ALL {
            let key = SigningKey::generate(suite).unwrap();
            let sig = key.sign(b"hello").unwrap();
            assert_eq!(sig.len(), suite.signature_len());
            key.verifying_key().verify(b"hello", &sig).unwrap();
            assert_eq!(
                key.verifying_key().verify(b"hellp", &sig),
                Err(CryptoError::BadSignature)
            );
            let mut bad = sig.clone();
            bad[100] ^= 1;
            assert_eq!(
                key.verifying_key().verify(b"hello", &bad),
                Err(CryptoError::BadSignature)
            );
            assert!(matches!(
                key.verifying_key().verify(b"hello", &sig[1..]),
                Err(CryptoError::Length { .. })
            ));
            // import round trip, and a mismatched pair is refused
            let again =
                SigningKey::from_bytes(suite, key.expose_secret(), key.verifying_key().as_bytes())
                    .unwrap();
            again
                .verifying_key()
                .verify(b"x", &again.sign(b"x").unwrap())
                .unwrap();
            let other = SigningKey::generate(suite).unwrap();
            assert_eq!(
                SigningKey::from_bytes(
                    suite,
                    key.expose_secret(),
                    other.verifying_key().as_bytes()
                )
                .unwrap_err(),
                CryptoError::InconsistentKeyPair
            );
        }
    }

    #[test]
    fn the_two_suites_never_mix() {
        let dil = SigningKey::generate(Suite::Kyber1024Dilithium5).unwrap();
        let sig = dil.sign(b"m").unwrap();
        let as_mldsa =
            VerifyingKey::from_bytes(Suite::Mlkem1024Mldsa87, dil.verifying_key().as_bytes())
                .unwrap();
        assert_eq!(as_mldsa.verify(b"m", &sig), Err(CryptoError::BadSignature));
    }

    /// Signatures and keys of our FFI path are accepted by the crates' safe
    /// API and the other way round.
    #[test]
    fn interop_with_the_safe_api() {
        // Dilithium5
        {
            use pqcrypto_dilithium::dilithium5 as m;
            let suite = Suite::Kyber1024Dilithium5;
            let key = SigningKey::generate(suite).unwrap();
            let sig = key.sign(b"ours").unwrap();
            let pk = m::PublicKey::from_bytes(key.verifying_key().as_bytes()).unwrap();
            let dsig = m::DetachedSignature::from_bytes(&sig).unwrap();
            m::verify_detached_signature(&dsig, b"ours", &pk).unwrap();
            let safe_sk = m::SecretKey::from_bytes(key.expose_secret()).unwrap();
            let safe_sig = m::detached_sign(b"theirs", &safe_sk);
            key.verifying_key()
                .verify(b"theirs", safe_sig.as_bytes())
                .unwrap();
            let (spk, ssk) = m::keypair();
            let imported = SigningKey::from_bytes(suite, ssk.as_bytes(), spk.as_bytes()).unwrap();
            let sig = imported.sign(b"x").unwrap();
            m::verify_detached_signature(
                &m::DetachedSignature::from_bytes(&sig).unwrap(),
                b"x",
                &spk,
            )
            .unwrap();
        }
        // ML-DSA-87 (pure, empty context)
        {
            use pqcrypto_mldsa::mldsa87 as m;
            let suite = Suite::Mlkem1024Mldsa87;
            let key = SigningKey::generate(suite).unwrap();
            let sig = key.sign(b"ours").unwrap();
            let pk = m::PublicKey::from_bytes(key.verifying_key().as_bytes()).unwrap();
            let dsig = m::DetachedSignature::from_bytes(&sig).unwrap();
            m::verify_detached_signature_ctx(&dsig, b"ours", &[], &pk).unwrap();
            let safe_sk = m::SecretKey::from_bytes(key.expose_secret()).unwrap();
            let safe_sig = m::detached_sign_ctx(b"theirs", &[], &safe_sk);
            key.verifying_key()
                .verify(b"theirs", safe_sig.as_bytes())
                .unwrap();
            let (spk, ssk) = m::keypair();
            let imported = SigningKey::from_bytes(suite, ssk.as_bytes(), spk.as_bytes()).unwrap();
            let sig = imported.sign(b"x").unwrap();
            m::verify_detached_signature_ctx(
                &m::DetachedSignature::from_bytes(&sig).unwrap(),
                b"x",
                &[],
                &spk,
            )
            .unwrap();
        }
    }

    #[test]
    fn debug_is_redacted() {
        let key = SigningKey::generate(Suite::Mlkem1024Mldsa87).unwrap();
        let printed = format!("{key:?}");
        assert!(
            printed.contains("redacted") && printed.len() < 150,
            "{printed}"
        );
    }
}
