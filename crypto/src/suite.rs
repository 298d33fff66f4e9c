//! The cipher suites of PROTOCOL.md §3: ids, names and sizes.

use std::fmt;
use std::str::FromStr;

/// Size of a KEM public key (Kyber1024 and ML-KEM-1024), in bytes.
pub const KEM_PUBLIC_KEY_LEN: usize = 1568;
/// Size of a KEM secret key (Kyber1024 and ML-KEM-1024), in bytes.
pub const KEM_SECRET_KEY_LEN: usize = 3168;
/// Size of a KEM ciphertext (Kyber1024 and ML-KEM-1024), in bytes.
pub const KEM_CIPHERTEXT_LEN: usize = 1568;
/// Size of a KEM shared secret, in bytes.
pub const KEM_SHARED_SECRET_LEN: usize = 32;
/// Size of a signature public key (Dilithium5 and ML-DSA-87), in bytes.
pub const SIG_PUBLIC_KEY_LEN: usize = 2592;
/// Size of a signature secret key (Dilithium5 and ML-DSA-87), in bytes.
pub const SIG_SECRET_KEY_LEN: usize = 4896;
/// Size of a signature (Dilithium5 and ML-DSA-87), in bytes.
pub const SIGNATURE_LEN: usize = 4627;

/// A hybrid suite: X25519 plus one KEM, one signature scheme. Fixed by the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Suite {
    /// 0x0001 `kyber1024-dilithium5`: pqcrypto-kyber 0.8 and pqcrypto-dilithium 0.5
    /// (the FIPS 203 and FIPS 204 drafts as PQClean last shipped them).
    Kyber1024Dilithium5,
    /// 0x0002 `mlkem1024-mldsa87`: ML-KEM-1024 (FIPS 203) and ML-DSA-87
    /// (FIPS 204, pure, empty context).
    Mlkem1024Mldsa87,
}

/// Returned when a suite name or id is not one this protocol defines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown suite {0:?} (known: kyber1024-dilithium5, mlkem1024-mldsa87)")]
pub struct UnknownSuite(pub String);

impl Suite {
    /// Every suite, in the default preference order.
    pub const ALL: [Suite; 2] = [Suite::Kyber1024Dilithium5, Suite::Mlkem1024Mldsa87];

    /// The default preference order (PROTOCOL.md §3).
    pub const DEFAULT_PREFERENCE: [Suite; 2] = Self::ALL;

    /// The suite's wire id.
    pub const fn id(self) -> u16 {
        match self {
            Suite::Kyber1024Dilithium5 => 0x0001,
            Suite::Mlkem1024Mldsa87 => 0x0002,
        }
    }

    /// The suite with this wire id, if the protocol defines one.
    pub const fn from_id(id: u16) -> Option<Suite> {
        match id {
            0x0001 => Some(Suite::Kyber1024Dilithium5),
            0x0002 => Some(Suite::Mlkem1024Mldsa87),
            _ => None,
        }
    }

    /// The name used in configuration files and the API.
    pub const fn name(self) -> &'static str {
        match self {
            Suite::Kyber1024Dilithium5 => "kyber1024-dilithium5",
            Suite::Mlkem1024Mldsa87 => "mlkem1024-mldsa87",
        }
    }

    /// A human display name, e.g. `Kyber1024-Dilithium5`.
    pub const fn display_name(self) -> &'static str {
        match self {
            Suite::Kyber1024Dilithium5 => "Kyber1024-Dilithium5",
            Suite::Mlkem1024Mldsa87 => "ML-KEM-1024-ML-DSA-87",
        }
    }

    /// The KEM's name.
    pub const fn kem_name(self) -> &'static str {
        match self {
            Suite::Kyber1024Dilithium5 => "Kyber1024",
            Suite::Mlkem1024Mldsa87 => "ML-KEM-1024",
        }
    }

    /// The signature scheme's name.
    pub const fn sig_name(self) -> &'static str {
        match self {
            Suite::Kyber1024Dilithium5 => "Dilithium5",
            Suite::Mlkem1024Mldsa87 => "ML-DSA-87",
        }
    }

    /// KEM public key size in bytes.
    pub const fn kem_public_key_len(self) -> usize {
        KEM_PUBLIC_KEY_LEN
    }
    /// KEM secret key size in bytes.
    pub const fn kem_secret_key_len(self) -> usize {
        KEM_SECRET_KEY_LEN
    }
    /// KEM ciphertext size in bytes.
    pub const fn kem_ciphertext_len(self) -> usize {
        KEM_CIPHERTEXT_LEN
    }
    /// Signature public key size in bytes.
    pub const fn sig_public_key_len(self) -> usize {
        SIG_PUBLIC_KEY_LEN
    }
    /// Signature secret key size in bytes.
    pub const fn sig_secret_key_len(self) -> usize {
        SIG_SECRET_KEY_LEN
    }
    /// Signature size in bytes.
    pub const fn signature_len(self) -> usize {
        SIGNATURE_LEN
    }
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Suite {
    type Err = UnknownSuite;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Suite::ALL
            .into_iter()
            .find(|suite| suite.name() == s)
            .ok_or_else(|| UnknownSuite(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_round_trip() {
        for suite in Suite::ALL {
            assert_eq!(Suite::from_id(suite.id()), Some(suite));
            assert_eq!(suite.name().parse::<Suite>(), Ok(suite));
        }
        assert_eq!(Suite::from_id(0), None);
        assert_eq!(Suite::from_id(3), None);
        assert!("kyber".parse::<Suite>().is_err());
    }

    #[cfg(feature = "pqc")]
    #[test]
    fn sizes_match_the_crates_constants() {
        use pqcrypto_dilithium::dilithium5;
        use pqcrypto_kyber::kyber1024;
        use pqcrypto_mldsa::mldsa87;
        use pqcrypto_mlkem::mlkem1024;
        for suite in Suite::ALL {
            let (kpk, ksk, kct, kss, spk, ssk, sig) = match suite {
                Suite::Kyber1024Dilithium5 => (
                    kyber1024::public_key_bytes(),
                    kyber1024::secret_key_bytes(),
                    kyber1024::ciphertext_bytes(),
                    kyber1024::shared_secret_bytes(),
                    dilithium5::public_key_bytes(),
                    dilithium5::secret_key_bytes(),
                    dilithium5::signature_bytes(),
                ),
                Suite::Mlkem1024Mldsa87 => (
                    mlkem1024::public_key_bytes(),
                    mlkem1024::secret_key_bytes(),
                    mlkem1024::ciphertext_bytes(),
                    mlkem1024::shared_secret_bytes(),
                    mldsa87::public_key_bytes(),
                    mldsa87::secret_key_bytes(),
                    mldsa87::signature_bytes(),
                ),
            };
            assert_eq!(suite.kem_public_key_len(), kpk);
            assert_eq!(suite.kem_secret_key_len(), ksk);
            assert_eq!(suite.kem_ciphertext_len(), kct);
            assert_eq!(KEM_SHARED_SECRET_LEN, kss);
            assert_eq!(suite.sig_public_key_len(), spk);
            assert_eq!(suite.sig_secret_key_len(), ssk);
            assert_eq!(suite.signature_len(), sig);
        }
        // The literal numbers of PROTOCOL.md §3.
        assert_eq!(
            (KEM_PUBLIC_KEY_LEN, KEM_SECRET_KEY_LEN, KEM_CIPHERTEXT_LEN),
            (1568, 3168, 1568)
        );
        assert_eq!(
            (SIG_PUBLIC_KEY_LEN, SIG_SECRET_KEY_LEN, SIGNATURE_LEN),
            (2592, 4896, 4627)
        );
    }
}
