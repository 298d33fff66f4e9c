//! Fixed-size secret buffers: heap-allocated, zeroized on drop, never printed.

use std::fmt;

use rand_core::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// `N` secret bytes on the heap (so moves never leave copies behind).
///
/// Zeroized on drop; `Debug` prints only the length; no `Clone`, `Copy` or
/// `Serialize`. Compare with [`Secret::ct_eq`], which runs in constant time.
pub struct Secret<const N: usize>(Box<[u8; N]>);

impl<const N: usize> Secret<N> {
    /// All zero bytes, to be filled in place.
    pub fn zero() -> Self {
        Secret(Box::new([0u8; N]))
    }

    /// Copies `bytes` into a new secret; `None` unless exactly `N` bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != N {
            return None;
        }
        let mut secret = Self::zero();
        secret.0.copy_from_slice(bytes);
        Some(secret)
    }

    /// Fresh random bytes from `rng`.
    pub fn random<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut secret = Self::zero();
        rng.fill_bytes(&mut secret.0[..]);
        secret
    }

    /// The secret bytes. Callers must not copy them into unprotected memory.
    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }

    /// Mutable access, to fill the buffer in place.
    pub fn expose_mut(&mut self) -> &mut [u8; N] {
        &mut self.0
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0[..].ct_eq(&other.0[..]).into()
    }
}

impl<const N: usize> Drop for Secret<N> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<const N: usize> ZeroizeOnDrop for Secret<N> {}

impl<const N: usize> fmt::Debug for Secret<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret<{N}>(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::<4>::from_slice(&[0xde, 0xad, 0xbe, 0xef]).unwrap();
        let printed = format!("{s:?}");
        assert_eq!(printed, "Secret<4>(<redacted>)");
        assert!(!printed.to_lowercase().contains("de"));
    }

    #[test]
    fn from_slice_checks_length() {
        assert!(Secret::<4>::from_slice(&[1, 2, 3]).is_none());
        assert!(Secret::<4>::from_slice(&[1, 2, 3, 4, 5]).is_none());
        let a = Secret::<4>::from_slice(&[1, 2, 3, 4]).unwrap();
        let b = Secret::<4>::from_slice(&[1, 2, 3, 4]).unwrap();
        let c = Secret::<4>::from_slice(&[1, 2, 3, 5]).unwrap();
        assert!(a.ct_eq(&b));
        assert!(!a.ct_eq(&c));
    }
}
