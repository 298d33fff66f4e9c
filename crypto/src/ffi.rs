//! The only `unsafe` code of the workspace: calls into the pqcrypto crates' C
//! functions, writing secret keys and shared secrets straight into caller
//! buffers (which are [`crate::Secret`]s), instead of the safe API's `Copy`
//! arrays that can never be wiped.
//!
//! The implementation is chosen at run time exactly as the safe API does it:
//! AVX2 on x86_64 Linux-like targets when the CPU has it, NEON on aarch64, the
//! portable ("clean") C code otherwise. Every buffer is a fixed-size array
//! reference, so the lengths the C code relies on are checked by the compiler.
#![allow(unsafe_code)]

use crate::suite::{
    KEM_CIPHERTEXT_LEN, KEM_PUBLIC_KEY_LEN, KEM_SECRET_KEY_LEN, KEM_SHARED_SECRET_LEN,
    SIG_PUBLIC_KEY_LEN, SIG_SECRET_KEY_LEN, SIGNATURE_LEN, Suite,
};

use pqcrypto_dilithium::ffi as dil;
use pqcrypto_kyber::ffi as kyb;
use pqcrypto_mldsa::ffi as mldsa;
use pqcrypto_mlkem::ffi as mlkem;

/// A C function returned a non-zero status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FfiFailure;

fn status(code: std::os::raw::c_int) -> Result<(), FfiFailure> {
    if code == 0 { Ok(()) } else { Err(FfiFailure) }
}

/// Calls the AVX2, NEON or clean variant of a PQClean function, as the safe
/// API of the pqcrypto crates does (same conditions as their build scripts).
macro_rules! dispatch {
    ($module:ident, $avx2:ident, $neon:ident, $clean:ident, ($($arg:expr),*)) => {{
        #[cfg(all(target_arch = "x86_64", not(target_os = "windows"), not(target_os = "macos")))]
        {
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: see the caller; the AVX2 variant has the same contract and is
                // only called on a CPU that has AVX2.
                return status(unsafe { $module::$avx2($($arg),*) });
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            // SAFETY: see the caller; the NEON variant has the same contract.
            return status(unsafe { $module::$neon($($arg),*) });
        }
        #[allow(unreachable_code)]
        // SAFETY: see the caller.
        status(unsafe { $module::$clean($($arg),*) })
    }};
}

/// Generates a KEM key pair into `pk` and `sk`.
pub(crate) fn kem_keypair(
    suite: Suite,
    pk: &mut [u8; KEM_PUBLIC_KEY_LEN],
    sk: &mut [u8; KEM_SECRET_KEY_LEN],
) -> Result<(), FfiFailure> {
    let (pk, sk) = (pk.as_mut_ptr(), sk.as_mut_ptr());
    // SAFETY (for every variant): `pk` and `sk` point to writable buffers of exactly
    // the sizes the C function writes (PUBLICKEYBYTES, SECRETKEYBYTES), checked by
    // the array types and by the size test in `suite`.
    match suite {
        Suite::Kyber1024Dilithium5 => dispatch!(
            kyb,
            PQCLEAN_KYBER1024_AVX2_crypto_kem_keypair,
            PQCLEAN_KYBER1024_AARCH64_crypto_kem_keypair,
            PQCLEAN_KYBER1024_CLEAN_crypto_kem_keypair,
            (pk, sk)
        ),
        Suite::Mlkem1024Mldsa87 => dispatch!(
            mlkem,
            PQCLEAN_MLKEM1024_AVX2_crypto_kem_keypair,
            PQCLEAN_MLKEM1024_AARCH64_crypto_kem_keypair,
            PQCLEAN_MLKEM1024_CLEAN_crypto_kem_keypair,
            (pk, sk)
        ),
    }
}

/// Encapsulates to `pk`, writing the ciphertext and the shared secret.
pub(crate) fn kem_encapsulate(
    suite: Suite,
    pk: &[u8; KEM_PUBLIC_KEY_LEN],
    ct: &mut [u8; KEM_CIPHERTEXT_LEN],
    ss: &mut [u8; KEM_SHARED_SECRET_LEN],
) -> Result<(), FfiFailure> {
    let (ct, ss, pk) = (ct.as_mut_ptr(), ss.as_mut_ptr(), pk.as_ptr());
    // SAFETY (for every variant): `ct` and `ss` are writable buffers of CIPHERTEXTBYTES
    // and BYTES; `pk` is a readable buffer of PUBLICKEYBYTES (array types).
    match suite {
        Suite::Kyber1024Dilithium5 => dispatch!(
            kyb,
            PQCLEAN_KYBER1024_AVX2_crypto_kem_enc,
            PQCLEAN_KYBER1024_AARCH64_crypto_kem_enc,
            PQCLEAN_KYBER1024_CLEAN_crypto_kem_enc,
            (ct, ss, pk)
        ),
        Suite::Mlkem1024Mldsa87 => dispatch!(
            mlkem,
            PQCLEAN_MLKEM1024_AVX2_crypto_kem_enc,
            PQCLEAN_MLKEM1024_AARCH64_crypto_kem_enc,
            PQCLEAN_MLKEM1024_CLEAN_crypto_kem_enc,
            (ct, ss, pk)
        ),
    }
}

/// Decapsulates `ct` with `sk`, writing the shared secret (implicit rejection:
/// an invalid ciphertext yields a pseudorandom secret, not an error).
pub(crate) fn kem_decapsulate(
    suite: Suite,
    ct: &[u8; KEM_CIPHERTEXT_LEN],
    sk: &[u8; KEM_SECRET_KEY_LEN],
    ss: &mut [u8; KEM_SHARED_SECRET_LEN],
) -> Result<(), FfiFailure> {
    let (ss, ct, sk) = (ss.as_mut_ptr(), ct.as_ptr(), sk.as_ptr());
    // SAFETY (for every variant): `ss` is a writable buffer of BYTES; `ct` and `sk` are
    // readable buffers of CIPHERTEXTBYTES and SECRETKEYBYTES (array types).
    match suite {
        Suite::Kyber1024Dilithium5 => dispatch!(
            kyb,
            PQCLEAN_KYBER1024_AVX2_crypto_kem_dec,
            PQCLEAN_KYBER1024_AARCH64_crypto_kem_dec,
            PQCLEAN_KYBER1024_CLEAN_crypto_kem_dec,
            (ss, ct, sk)
        ),
        Suite::Mlkem1024Mldsa87 => dispatch!(
            mlkem,
            PQCLEAN_MLKEM1024_AVX2_crypto_kem_dec,
            PQCLEAN_MLKEM1024_AARCH64_crypto_kem_dec,
            PQCLEAN_MLKEM1024_CLEAN_crypto_kem_dec,
            (ss, ct, sk)
        ),
    }
}

/// Generates a signature key pair into `pk` and `sk`.
pub(crate) fn sign_keypair(
    suite: Suite,
    pk: &mut [u8; SIG_PUBLIC_KEY_LEN],
    sk: &mut [u8; SIG_SECRET_KEY_LEN],
) -> Result<(), FfiFailure> {
    let (pk, sk) = (pk.as_mut_ptr(), sk.as_mut_ptr());
    // SAFETY (for every variant): `pk` and `sk` are writable buffers of exactly
    // PUBLICKEYBYTES and SECRETKEYBYTES (array types).
    match suite {
        Suite::Kyber1024Dilithium5 => dispatch!(
            dil,
            PQCLEAN_DILITHIUM5_AVX2_crypto_sign_keypair,
            PQCLEAN_DILITHIUM5_AARCH64_crypto_sign_keypair,
            PQCLEAN_DILITHIUM5_CLEAN_crypto_sign_keypair,
            (pk, sk)
        ),
        Suite::Mlkem1024Mldsa87 => dispatch!(
            mldsa,
            PQCLEAN_MLDSA87_AVX2_crypto_sign_keypair,
            PQCLEAN_MLDSA87_AARCH64_crypto_sign_keypair,
            PQCLEAN_MLDSA87_CLEAN_crypto_sign_keypair,
            (pk, sk)
        ),
    }
}

/// Signs `msg` with `sk` into `sig` (detached). ML-DSA-87 signs in pure mode
/// with an empty context (the non-`_ctx` C entry points do not link).
pub(crate) fn sign(
    suite: Suite,
    msg: &[u8],
    sk: &[u8; SIG_SECRET_KEY_LEN],
    sig: &mut [u8; SIGNATURE_LEN],
) -> Result<(), FfiFailure> {
    let mut sig_len: usize = 0;
    let (sig_ptr, len_ptr) = (sig.as_mut_ptr(), &mut sig_len as *mut usize);
    let (m, mlen, sk) = (msg.as_ptr(), msg.len(), sk.as_ptr());
    let ctx: &[u8] = &[];
    let (ctx, ctxlen) = (ctx.as_ptr(), 0usize);
    // SAFETY (for every variant): `sig_ptr` is a writable buffer of CRYPTO_BYTES, the
    // maximum the C code writes; `len_ptr` points to a live usize; `m`/`mlen` describe
    // the readable slice `msg`; `ctx` has length 0 and is never read; `sk` is a
    // readable buffer of SECRETKEYBYTES (array types).
    let result = match suite {
        Suite::Kyber1024Dilithium5 => (|| {
            dispatch!(
                dil,
                PQCLEAN_DILITHIUM5_AVX2_crypto_sign_signature,
                PQCLEAN_DILITHIUM5_AARCH64_crypto_sign_signature,
                PQCLEAN_DILITHIUM5_CLEAN_crypto_sign_signature,
                (sig_ptr, len_ptr, m, mlen, sk)
            )
        })(),
        Suite::Mlkem1024Mldsa87 => (|| {
            dispatch!(
                mldsa,
                PQCLEAN_MLDSA87_AVX2_crypto_sign_signature_ctx,
                PQCLEAN_MLDSA87_AARCH64_crypto_sign_signature_ctx,
                PQCLEAN_MLDSA87_CLEAN_crypto_sign_signature_ctx,
                (sig_ptr, len_ptr, m, mlen, ctx, ctxlen, sk)
            )
        })(),
    };
    result?;
    // Both schemes produce fixed-length signatures; anything else is a failure.
    if sig_len == SIGNATURE_LEN {
        Ok(())
    } else {
        Err(FfiFailure)
    }
}

/// Verifies a detached signature with PQClean's portable ("clean") code
/// only, for both suites and on every CPU.
///
/// Why not the AVX2 code the safe API picks: PQClean's AVX2 verifiers of
/// ML-DSA-87 (pqcrypto-mldsa 0.1.2) and Dilithium5 (pqcrypto-dilithium 0.5)
/// never check that the response vector `z` is short (‖z‖∞ < γ1 − β), so
/// they accept signatures FIPS 204 rejects: 49 of Wycheproof's
/// `mldsa_87_verify` cases on this machine. The clean code checks it. A
/// verification costs a few times more; a handshake does two per side.
pub(crate) fn verify(
    suite: Suite,
    msg: &[u8],
    sig: &[u8; SIGNATURE_LEN],
    pk: &[u8; SIG_PUBLIC_KEY_LEN],
) -> bool {
    let (s, slen, m, mlen, pk) = (
        sig.as_ptr(),
        SIGNATURE_LEN,
        msg.as_ptr(),
        msg.len(),
        pk.as_ptr(),
    );
    let ctx: &[u8] = &[];
    // SAFETY: `s`/`slen` describe the readable signature array, `m`/`mlen` the
    // readable slice `msg`, `pk` a readable buffer of PUBLICKEYBYTES (array
    // types); the ML-DSA context has length 0 and is never read. The C code
    // only reads these buffers.
    let code = unsafe {
        match suite {
            Suite::Kyber1024Dilithium5 => {
                dil::PQCLEAN_DILITHIUM5_CLEAN_crypto_sign_verify(s, slen, m, mlen, pk)
            }
            Suite::Mlkem1024Mldsa87 => mldsa::PQCLEAN_MLDSA87_CLEAN_crypto_sign_verify_ctx(
                s,
                slen,
                m,
                mlen,
                ctx.as_ptr(),
                0,
                pk,
            ),
        }
    };
    code == 0
}
