//! Key fingerprints (PROTOCOL.md §8.3): SHA-256 of a signature public key,
//! displayed as 64 lowercase hex digits in 16 groups of 4.

use std::fmt;
use std::str::FromStr;

use pqnode_crypto::sign::VerifyingKey;
use sha2::{Digest, Sha256};

/// SHA-256 of a suite's signature public key (`sig_pk`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

/// A string that is not a fingerprint in either accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid fingerprint {input:?}: expected 64 hex digits, plain or in 16 groups of 4 \
     separated by single spaces"
)]
pub struct FingerprintParseError {
    /// The rejected input (fingerprints are public, so it may be shown).
    pub input: String,
}

impl Fingerprint {
    /// The fingerprint of an encoded public key.
    pub fn of_bytes(sig_pk: &[u8]) -> Self {
        Fingerprint(Sha256::digest(sig_pk).into())
    }

    /// The fingerprint of a verifying key.
    pub fn of(key: &VerifyingKey) -> Self {
        Self::of_bytes(key.as_bytes())
    }

    /// Wraps 32 raw bytes.
    pub const fn from_array(bytes: [u8; 32]) -> Self {
        Fingerprint(bytes)
    }

    /// The 32 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits without spaces (the form of test vectors).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Fingerprint {
    /// 16 groups of 4 lowercase hex digits separated by single spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.to_hex();
        for (i, group) in hex.as_bytes().chunks(4).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            // hex::encode yields ASCII only.
            f.write_str(std::str::from_utf8(group).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintParseError;

    /// Accepts the §8.3 display form (16 groups of 4 separated by single
    /// spaces) or 64 plain hex digits; either case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || FingerprintParseError {
            input: s.chars().take(100).collect(),
        };
        let plain: String = if s.len() == 64 + 15 {
            let groups: Vec<&str> = s.split(' ').collect();
            if groups.len() != 16 || groups.iter().any(|g| g.len() != 4) {
                return Err(err());
            }
            groups.concat()
        } else if s.len() == 64 {
            s.to_owned()
        } else {
            return Err(err());
        };
        if !plain.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(&plain, &mut out).map_err(|_| err())?;
        Ok(Fingerprint(out))
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_16_groups_of_4_lowercase() {
        let fp = Fingerprint::of_bytes(b"abc");
        let shown = fp.to_string();
        // SHA-256("abc")
        assert_eq!(
            shown,
            "ba78 16bf 8f01 cfea 4141 40de 5dae 2223 b003 61a3 9617 7a9c b410 ff61 f200 15ad"
        );
        assert_eq!(shown.len(), 79);
        assert_eq!(shown.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(fp.to_hex().parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(
            fp.to_hex().to_uppercase().parse::<Fingerprint>().unwrap(),
            fp
        );
    }

    #[test]
    fn malformed_forms_are_refused() {
        let fp = Fingerprint::of_bytes(b"abc").to_string();
        for bad in [
            String::new(),
            fp.replace(' ', "  "),
            fp.replacen(' ', "", 1),
            fp.replace(' ', "-"),
            format!(" {}", &fp[..78]),
            fp.replacen('a', "g", 1),
            "ba78".to_owned(),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn serde_uses_display_form() {
        let fp = Fingerprint::of_bytes(b"x");
        let json = serde_json::to_string(&fp).unwrap();
        assert_eq!(json, format!("\"{fp}\""));
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), fp);
    }
}
