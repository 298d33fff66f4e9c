//! The hybrid key schedule of PROTOCOL.md §5: X25519 and KEM secrets into
//! HKDF-SHA512, salted with the transcript hash TH1.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;

use crate::error::CryptoError;
use crate::kem::SharedSecret;
use crate::secret::Secret;

/// Length of an X25519 key or shared secret.
pub const X25519_LEN: usize = 32;
/// Length of the HKDF-SHA512 pseudorandom key and of traffic secrets.
pub const PRK_LEN: usize = 64;
/// Length of confirmation and AEAD keys.
pub const KEY_LEN: usize = 32;

/// An X25519 secret (the 32 raw bytes before clamping).
pub type X25519Secret = Secret<X25519_LEN>;

/// The X25519 public key of `secret`.
pub fn x25519_public(secret: &X25519Secret) -> [u8; X25519_LEN] {
    let sk = x25519_dalek::StaticSecret::from(*secret.expose());
    x25519_dalek::PublicKey::from(&sk).to_bytes()
}

/// X25519(`secret`, `peer_public`); an all-zero result (a low-order point) is
/// an error, as §5 requires.
pub fn x25519(
    secret: &X25519Secret,
    peer_public: &[u8; X25519_LEN],
) -> Result<Secret<X25519_LEN>, CryptoError> {
    let sk = x25519_dalek::StaticSecret::from(*secret.expose());
    let shared = sk.diffie_hellman(&x25519_dalek::PublicKey::from(*peer_public));
    if !shared.was_contributory() {
        return Err(CryptoError::X25519AllZero);
    }
    Secret::from_slice(shared.as_bytes()).ok_or(CryptoError::Primitive("X25519"))
}

/// HKDF-SHA512 extract.
pub fn hkdf_extract(salt: &[u8], ikm: &[u8]) -> Secret<PRK_LEN> {
    let (mut prk, _) = Hkdf::<Sha512>::extract(Some(salt), ikm);
    let mut out = Secret::<PRK_LEN>::zero();
    out.expose_mut().copy_from_slice(&prk);
    // The library's copy of the PRK is plain bytes: wipe it. Its HMAC
    // states wipe themselves (the `zeroize` feature of `hmac`/`sha2`).
    zeroize::Zeroize::zeroize(&mut prk[..]);
    out
}

/// HKDF-SHA512 expand (RFC 5869 §2.3) of `prk` with the concatenation of
/// `info` parts into `okm`. Written out rather than taken from the `hkdf`
/// crate, whose expand keeps each block T(i) — key material — in a buffer it
/// never wipes: here every T(i) and HMAC output is wiped after use, and the
/// HMAC states wipe themselves (the `zeroize` feature of `hmac`/`sha2`).
/// Checked against the `hkdf` crate and Wycheproof's HKDF-SHA512 vectors.
pub fn hkdf_expand(prk: &[u8], info: &[&[u8]], okm: &mut [u8]) -> Result<(), CryptoError> {
    const HASH_LEN: usize = 64;
    if prk.len() < HASH_LEN {
        return Err(CryptoError::Primitive("HKDF (short PRK)"));
    }
    if okm.len() > 255 * HASH_LEN {
        return Err(CryptoError::Primitive("HKDF (output too long)"));
    }
    let keyed = <Hmac<Sha512> as KeyInit>::new_from_slice(prk)
        .map_err(|_| CryptoError::Primitive("HKDF (PRK)"))?;
    let mut previous = zeroize::Zeroizing::new([0u8; HASH_LEN]);
    for (i, chunk) in okm.chunks_mut(HASH_LEN).enumerate() {
        let mut mac = keyed.clone();
        if i > 0 {
            mac.update(&previous[..]);
        }
        for part in info {
            mac.update(part);
        }
        // At most 255 blocks (checked above).
        mac.update(&[(i + 1) as u8]);
        let mut block = mac.finalize().into_bytes();
        previous.copy_from_slice(&block);
        chunk.copy_from_slice(&block[..chunk.len()]);
        zeroize::Zeroize::zeroize(&mut block[..]);
    }
    Ok(())
}

fn expand<const N: usize>(prk: &[u8], info: &[&[u8]]) -> Result<Secret<N>, CryptoError> {
    let mut out = Secret::<N>::zero();
    hkdf_expand(prk, info, out.expose_mut())?;
    Ok(out)
}

/// HMAC-SHA512-256: the first 32 bytes of HMAC-SHA512(`key`, `msg`).
pub fn hmac_sha512_256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match <Hmac<Sha512> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable_hmac(),
    };
    mac.update(msg);
    let full = mac.finalize().into_bytes();
    let mut out = [0u8; 32];
    out.copy_from_slice(&full[..32]);
    out
}

#[cold]
fn unreachable_hmac() -> ! {
    // HMAC's key length is unrestricted; reaching this is a bug in the hmac crate.
    panic!("HMAC-SHA512 rejected a key")
}

/// The pseudorandom key `prk` and what §5 derives from it.
pub struct KeySchedule {
    prk: Secret<PRK_LEN>,
}

impl KeySchedule {
    /// `prk = HKDF-Extract(salt = TH1, ikm = ss_kem ‖ ss_x)`.
    pub fn new(th1: &[u8; 64], ss_kem: &SharedSecret, ss_x: &Secret<X25519_LEN>) -> Self {
        let mut ikm = Secret::<64>::zero();
        ikm.expose_mut()[..32].copy_from_slice(ss_kem.expose());
        ikm.expose_mut()[32..].copy_from_slice(ss_x.expose());
        KeySchedule {
            prk: hkdf_extract(th1, ikm.expose()),
        }
    }

    /// The pseudorandom key (test vectors only).
    pub fn prk(&self) -> &Secret<PRK_LEN> {
        &self.prk
    }

    /// `k_conf_r = HKDF-Expand(prk, "pqnode v1 conf r", 32)`.
    pub fn conf_r(&self) -> Result<Secret<KEY_LEN>, CryptoError> {
        expand(self.prk.expose(), &[b"pqnode v1 conf r"])
    }

    /// `k_conf_i = HKDF-Expand(prk, "pqnode v1 conf i", 32)`.
    pub fn conf_i(&self) -> Result<Secret<KEY_LEN>, CryptoError> {
        expand(self.prk.expose(), &[b"pqnode v1 conf i"])
    }

    /// `(ts_i2r, ts_r2i)`, both bound to TH4. Consumes the schedule: `prk` is
    /// zeroized when this returns.
    pub fn traffic_secrets(
        self,
        th4: &[u8; 64],
    ) -> Result<(Secret<PRK_LEN>, Secret<PRK_LEN>), CryptoError> {
        let i2r = expand(self.prk.expose(), &[b"pqnode v1 i2r", th4])?;
        let r2i = expand(self.prk.expose(), &[b"pqnode v1 r2i", th4])?;
        Ok((i2r, r2i))
    }
}

/// `key(ts) = HKDF-Expand(ts, "pqnode v1 key", 32)`.
pub fn traffic_key(ts: &Secret<PRK_LEN>) -> Result<Secret<KEY_LEN>, CryptoError> {
    expand(ts.expose(), &[b"pqnode v1 key"])
}

/// `ts' = HKDF-Expand(ts, "pqnode v1 ku", 64)`.
pub fn next_traffic_secret(ts: &Secret<PRK_LEN>) -> Result<Secret<PRK_LEN>, CryptoError> {
    expand(ts.expose(), &[b"pqnode v1 ku"])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every type that holds a secret of the key schedule or the record
    /// layer, and how it is wiped:
    /// - HMAC-SHA512 (our HKDF expand, HMAC-SHA512-256): its keyed state is
    ///   two SHA-512 cores, `ZeroizeOnDrop` with the `zeroize` feature of
    ///   `sha2` (asserted here); our expand wipes each output block itself;
    /// - the HKDF-Extract PRK: `hkdf`'s copy is wiped in `hkdf_extract`, ours
    ///   is a [`Secret`] (`ZeroizeOnDrop`, asserted);
    /// - X25519: `StaticSecret` and `SharedSecret` (asserted);
    /// - ChaCha20-Poly1305: the cipher holding the key (asserted, the
    ///   `zeroize` feature of `chacha20poly1305`).
    #[test]
    fn secret_holding_states_wipe_themselves() {
        fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>() {}
        zeroized_on_drop::<sha2::block_api::Sha512VarCore>();
        zeroized_on_drop::<Secret<PRK_LEN>>();
        zeroized_on_drop::<x25519_dalek::StaticSecret>();
        zeroized_on_drop::<x25519_dalek::SharedSecret>();
        zeroized_on_drop::<chacha20poly1305::ChaCha20Poly1305>();
    }

    #[test]
    fn hkdf_expand_agrees_with_the_hkdf_crate() {
        let prk = hkdf_extract(b"salt", b"input keying material");
        for len in [0usize, 1, 32, 63, 64, 65, 128, 200, 255 * 64] {
            let mut ours = vec![0u8; len];
            hkdf_expand(prk.expose(), &[b"pq", b"node"], &mut ours).unwrap();
            let mut theirs = vec![0u8; len];
            Hkdf::<Sha512>::from_prk(prk.expose())
                .unwrap()
                .expand_multi_info(&[b"pq", b"node"], &mut theirs)
                .unwrap();
            assert_eq!(ours, theirs, "{len} bytes");
        }
        let mut too_long = vec![0u8; 255 * 64 + 1];
        assert!(hkdf_expand(prk.expose(), &[], &mut too_long).is_err());
        assert!(hkdf_expand(&[0u8; 63], &[], &mut [0u8; 8]).is_err());
    }

    #[test]
    fn x25519_agrees_and_rejects_low_order_points() {
        let a = Secret::from_slice(&[1u8; 32]).unwrap();
        let b = Secret::from_slice(&[2u8; 32]).unwrap();
        let ab = x25519(&a, &x25519_public(&b)).unwrap();
        let ba = x25519(&b, &x25519_public(&a)).unwrap();
        assert!(ab.ct_eq(&ba));
        // The identity point and a point of order 8 give an all-zero secret.
        assert_eq!(
            x25519(&a, &[0u8; 32]).unwrap_err(),
            CryptoError::X25519AllZero
        );
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(x25519(&a, &one).unwrap_err(), CryptoError::X25519AllZero);
    }

    #[test]
    fn schedule_is_deterministic_and_separated() {
        let th = [7u8; 64];
        let ss = Secret::from_slice(&[3u8; 32]).unwrap();
        let sx = Secret::from_slice(&[4u8; 32]).unwrap();
        let k1 = KeySchedule::new(&th, &ss, &sx);
        let k2 = KeySchedule::new(&th, &ss, &sx);
        assert!(k1.prk().ct_eq(k2.prk()));
        assert!(!k1.conf_r().unwrap().ct_eq(&k1.conf_i().unwrap()));
        let (i2r, r2i) = k1.traffic_secrets(&[9u8; 64]).unwrap();
        assert!(!i2r.ct_eq(&r2i));
        let (i2r_other, _) = k2.traffic_secrets(&[8u8; 64]).unwrap();
        assert!(!i2r.ct_eq(&i2r_other), "traffic secrets depend on TH4");
        let next = next_traffic_secret(&i2r).unwrap();
        assert!(
            !traffic_key(&i2r)
                .unwrap()
                .ct_eq(&traffic_key(&next).unwrap())
        );
    }

    #[test]
    fn hmac_is_truncated_sha512() {
        // RFC 4231 test case 2 (HMAC-SHA-512, key "Jefe"), first 32 bytes.
        let mac = hmac_sha512_256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(mac[..8], [0x16, 0x4b, 0x7a, 0x7b, 0xfc, 0xf8, 0x19, 0xe2]);
    }
}
