//! Known answers from the RFCs for the classical primitives.

use crate::aead;
use crate::hybrid;
use crate::secret::Secret;

fn unhex<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = s.get(2 * i..2 * i + 2).unwrap_or("00");
        *byte = u8::from_str_radix(pair, 16).unwrap_or(0);
    }
    out
}

pub(super) fn check() -> Result<(), String> {
    // RFC 7748 §6.1.
    let a = Secret::from_slice(&unhex::<32>(
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    ))
    .ok_or("X25519 known answer: bad key")?;
    let b_pub = unhex::<32>("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    let expected = unhex::<32>("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    if hybrid::x25519_public(&a)
        != unhex::<32>("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    {
        return Err("X25519 known answer: public key differs".into());
    }
    let shared = hybrid::x25519(&a, &b_pub).map_err(|e| format!("X25519 known answer: {e}"))?;
    if shared.expose() != &expected {
        return Err("X25519 known answer: shared secret differs".into());
    }

    // RFC 8439 §2.8.2.
    let key = unhex::<32>("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce = unhex::<12>("070000004041424344454647");
    let aad = unhex::<12>("50515253c0c1c2c3c4c5c6c7");
    let mut buf = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".to_vec();
    let tag = aead::seal_in_place(&key, &nonce, &aad, &mut buf)
        .map_err(|e| format!("ChaCha20-Poly1305 known answer: {e}"))?;
    if tag != unhex::<16>("1ae10b594f09e26a7e902ecbd0600691")
        || buf[..4] != [0xd3, 0x1a, 0x8d, 0x34]
    {
        return Err("ChaCha20-Poly1305 known answer differs".into());
    }
    aead::open_in_place(&key, &nonce, &aad, &mut buf, &tag)
        .map_err(|_| "ChaCha20-Poly1305 known answer does not open")?;

    // RFC 4231 test case 2, HMAC-SHA-512 (first 32 bytes).
    let mac = hybrid::hmac_sha512_256(b"Jefe", b"what do ya want for nothing?");
    if mac != unhex::<32>("164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554") {
        return Err("HMAC-SHA512 known answer differs".into());
    }
    Ok(())
}
