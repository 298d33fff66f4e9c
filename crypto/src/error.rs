//! Errors of the primitives (the handshake and record layer have their own).

/// A failure of a primitive or of its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The crate was built without the `pqc` feature.
    #[error("post-quantum cryptography unavailable: built without pqc")]
    PqUnavailable,
    /// An input had the wrong length for its suite.
    #[error("{what}: expected {expected} bytes, got {got}")]
    Length {
        /// What the input was.
        what: &'static str,
        /// The length the suite requires.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// A key is not a valid encoding (e.g. a coefficient out of range).
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// A C primitive reported failure.
    #[error("{0} failed")]
    Primitive(&'static str),
    /// A signature did not verify.
    #[error("signature verification failed")]
    BadSignature,
    /// A signing key's public half does not match its secret half.
    #[error("signing key pair is inconsistent: its public key does not verify its signatures")]
    InconsistentKeyPair,
    /// The X25519 shared secret was all zero (a low-order public key).
    #[error("X25519 shared secret is all zero")]
    X25519AllZero,
}

pub(crate) fn check_len(
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), CryptoError> {
    if expected == got {
        Ok(())
    } else {
        Err(CryptoError::Length {
            what,
            expected,
            got,
        })
    }
}
