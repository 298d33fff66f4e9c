//! The plaintext payloads of the identity and signing-key files.
//!
//! ```text
//! identity:    created_at u64 || Ed25519 key pair (secret || public, 64)
//! signing key: suite u16 || created_at u64 || sk || pk
//!              || 0                                              (no retired key)
//!              || 1 || created_at u64 || retired_at u64 || sk || pk   (the retired key)
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use libp2p::identity::Keypair;
use pqnode_crypto::Suite;
use pqnode_crypto::sign::SigningKey;
use zeroize::Zeroizing;

use super::{IDENTITY_FILE, StoreError};

/// A key retired by a rotation, kept to sign rotation statements.
pub(super) struct Retired {
    pub(super) key: SigningKey,
    pub(super) created_at: u64,
    pub(super) retired_at: u64,
}

/// One suite's keys.
pub(super) struct SuiteKeys {
    /// Shared with the PQ layer (see [`super::KeyStore::shared_signing_key`]).
    pub(super) current: Arc<SigningKey>,
    pub(super) created_at: u64,
    pub(super) previous: Option<Retired>,
}

pub(super) fn encode_identity(
    created_at: u64,
    identity: &Keypair,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let ed = identity
        .clone()
        .try_into_ed25519()
        .map_err(|_| StoreError::Invalid {
            path: PathBuf::from(IDENTITY_FILE),
            reason: "the identity is not Ed25519".into(),
        })?;
    let bytes = Zeroizing::new(ed.to_bytes());
    let mut out = Zeroizing::new(Vec::with_capacity(8 + 64));
    out.extend_from_slice(&created_at.to_be_bytes());
    out.extend_from_slice(&bytes[..]);
    Ok(out)
}

pub(super) fn decode_identity(path: &Path, plain: &[u8]) -> Result<(u64, Keypair), StoreError> {
    let invalid = |reason: &str| StoreError::Invalid {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    if plain.len() != 8 + 64 {
        return Err(invalid("identity payload has the wrong length"));
    }
    let created_at = u64_at(plain, 0);
    let mut kp = Zeroizing::new([0u8; 64]);
    kp.copy_from_slice(&plain[8..]);
    let ed = libp2p::identity::ed25519::Keypair::try_from_bytes(&mut kp[..])
        .map_err(|_| invalid("the Ed25519 key pair is inconsistent"))?;
    Ok((created_at, Keypair::from(ed)))
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

pub(super) fn encode_suite(suite: Suite, keys: &SuiteKeys) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(2 * (8 + 4896 + 2592) + 32));
    out.extend_from_slice(&suite.id().to_be_bytes());
    out.extend_from_slice(&keys.created_at.to_be_bytes());
    out.extend_from_slice(keys.current.expose_secret());
    out.extend_from_slice(keys.current.verifying_key().as_bytes());
    match &keys.previous {
        None => out.push(0),
        Some(prev) => {
            out.push(1);
            out.extend_from_slice(&prev.created_at.to_be_bytes());
            out.extend_from_slice(&prev.retired_at.to_be_bytes());
            out.extend_from_slice(prev.key.expose_secret());
            out.extend_from_slice(prev.key.verifying_key().as_bytes());
        }
    }
    out
}

pub(super) fn decode_suite(
    path: &Path,
    expected: Suite,
    plain: &[u8],
) -> Result<SuiteKeys, StoreError> {
    let invalid = |reason: String| StoreError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let sk_len = expected.sig_secret_key_len();
    let pk_len = expected.sig_public_key_len();
    let base = 2 + 8 + sk_len + pk_len + 1;
    if plain.len() < base {
        return Err(invalid("signing key payload is too short".into()));
    }
    let id = u16::from_be_bytes([plain[0], plain[1]]);
    if id != expected.id() {
        return Err(invalid(format!(
            "holds a key of suite {id:#06x}, expected {expected}"
        )));
    }
    let created_at = u64_at(plain, 2);
    let key_at = |at: usize| -> Result<SigningKey, StoreError> {
        SigningKey::from_bytes(
            expected,
            &plain[at..at + sk_len],
            &plain[at + sk_len..at + sk_len + pk_len],
        )
        .map_err(|e| invalid(format!("signing key pair rejected: {e}")))
    };
    let current = Arc::new(key_at(10)?);
    let previous = match plain[base - 1] {
        0 if plain.len() == base => None,
        1 if plain.len() == base + 16 + sk_len + pk_len => Some(Retired {
            created_at: u64_at(plain, base),
            retired_at: u64_at(plain, base + 8),
            key: key_at(base + 16)?,
        }),
        _ => return Err(invalid("signing key payload has the wrong layout".into())),
    };
    Ok(SuiteKeys {
        current,
        created_at,
        previous,
    })
}
