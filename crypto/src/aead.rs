//! ChaCha20-Poly1305 (RFC 8439) with detached tags, as the record layer uses it.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Tag};

use crate::error::CryptoError;

/// Length of the authentication tag.
pub const TAG_LEN: usize = 16;
/// Length of the nonce.
pub const NONCE_LEN: usize = 12;

/// Encrypts `buf` in place and returns the tag.
pub fn seal_in_place(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; TAG_LEN], CryptoError> {
    let key: &Key = key.into();
    let cipher = ChaCha20Poly1305::new(key);
    let tag = cipher
        .encrypt_inout_detached(nonce.into(), aad, buf.into())
        .map_err(|_| CryptoError::Primitive("ChaCha20-Poly1305 seal"))?;
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&tag);
    Ok(out)
}

/// Decrypts `buf` in place if `tag` authenticates it (and `aad`); on failure
/// `buf` is left unchanged.
pub fn open_in_place(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8],
) -> Result<(), CryptoError> {
    if tag.len() != TAG_LEN {
        return Err(CryptoError::Length {
            what: "AEAD tag",
            expected: TAG_LEN,
            got: tag.len(),
        });
    }
    let key: &Key = key.into();
    let tag: &Tag = tag
        .try_into()
        .map_err(|_| CryptoError::Primitive("AEAD tag"))?;
    let cipher = ChaCha20Poly1305::new(key);
    cipher
        .decrypt_inout_detached(nonce.into(), aad, buf.into(), tag)
        .map_err(|_| CryptoError::BadSignature)
}
