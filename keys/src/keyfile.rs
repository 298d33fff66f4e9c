//! The on-disk container of every key-store file, and passphrase protection.
//!
//! ```text
//! magic        8   "PQNODEKF"
//! version      u8  = 1
//! kind         u8  1 identity, 2 signing key, 3 record state
//! protection   u8  0 none, 1 Argon2id + XChaCha20-Poly1305
//! [protection 1:
//!   m_cost     u32 (KiB)   t_cost u32   p_cost u32
//!   salt       16
//!   nonce      24 ]
//! payload_len  u32
//! payload      plaintext, or ciphertext || 16-byte tag (AAD = every byte before the payload)
//! [protection 0: SHA-256 of every byte before it, 32]
//! ```
//!
//! Big-endian integers; nothing may follow. A plain file carries a checksum
//! so corruption is reported as such; an encrypted one is authenticated by
//! its tag (a wrong passphrase and corruption are then indistinguishable).

use std::fmt;
use std::path::Path;

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::AeadInOut;
use chacha20poly1305::{KeyInit, Tag, XChaCha20Poly1305, XNonce};
use pqnode_crypto::codec::{ByteReader, Truncated};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::fsutil::{self, FsError};

/// File magic.
pub const MAGIC: [u8; 8] = *b"PQNODEKF";
/// Container version this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Environment variable holding the key passphrase.
pub const ENV_PASSPHRASE: &str = "PQNODE_KEY_PASSPHRASE";

const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const CHECKSUM_LEN: usize = 32;
const KEY_LEN: usize = 32;

/// What a file holds; a file of another kind is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileKind {
    /// The libp2p Ed25519 identity.
    Identity,
    /// A suite's PQ signing key pair.
    SigningKey,
    /// The persisted record `seq` (not secret, never encrypted).
    RecordState,
}

impl FileKind {
    fn code(self) -> u8 {
        match self {
            FileKind::Identity => 1,
            FileKind::SigningKey => 2,
            FileKind::RecordState => 3,
        }
    }
}

/// A malformed, undecryptable or unprotectable file (the store adds its path).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// Not a pqnode key file.
    #[error("not a pqnode key file (bad magic)")]
    BadMagic,
    /// A container version this build does not read.
    #[error("unsupported key file version {0} (this build reads version 1)")]
    UnsupportedVersion(u8),
    /// The file holds another kind of data.
    #[error("wrong kind of key file (kind {got}, expected {expected})")]
    WrongKind {
        /// The kind expected here.
        expected: u8,
        /// The kind found.
        got: u8,
    },
    /// Unknown protection scheme.
    #[error("unknown protection scheme {0}")]
    UnknownProtection(u8),
    /// The file ends early.
    #[error("truncated (at {0})")]
    Truncated(&'static str),
    /// Bytes follow the last field.
    #[error("{0} unexpected trailing bytes")]
    TrailingBytes(usize),
    /// A plain file whose checksum does not match: it was corrupted.
    #[error("checksum mismatch: the file is corrupted")]
    Checksum,
    /// The payload does not have the layout its kind requires.
    #[error("malformed contents: {0}")]
    Payload(&'static str),
    /// Argon2 parameters out of the accepted bounds.
    #[error(
        "Argon2 parameters out of bounds (m_cost {m_cost} KiB, t_cost {t_cost}, p_cost {p_cost})"
    )]
    KdfParams {
        /// Memory in KiB.
        m_cost: u32,
        /// Iterations.
        t_cost: u32,
        /// Lanes.
        p_cost: u32,
    },
    /// The file is encrypted and no passphrase was given.
    #[error(
        "the file is encrypted: give the passphrase in {ENV_PASSPHRASE} or with --passphrase-file"
    )]
    PassphraseRequired,
    /// Authentication failed.
    #[error("cannot decrypt: wrong passphrase, or the file is corrupted")]
    Decrypt,
    /// Key derivation failed.
    #[error("key derivation failed: {0}")]
    Kdf(String),
    /// Encryption failed.
    #[error("encryption failed")]
    Encrypt,
    /// No randomness for the salt or nonce.
    #[error("the operating system's random generator failed: {0}")]
    Random(String),
}

/// A passphrase: zeroized on drop, never printed.
pub struct Passphrase(Zeroizing<String>);

/// Why a passphrase could not be obtained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PassphraseError {
    /// The environment variable is not valid UTF-8.
    #[error("{ENV_PASSPHRASE} is not valid UTF-8")]
    NotUnicode,
    /// The passphrase is empty.
    #[error("the passphrase from {0} is empty")]
    Empty(String),
    /// The passphrase file could not be read.
    #[error("passphrase file: {0}")]
    File(#[from] FsError),
    /// The passphrase file is not UTF-8.
    #[error("passphrase file {0} is not valid UTF-8")]
    FileNotUnicode(String),
}

impl Passphrase {
    /// Wraps a passphrase (taking ownership so no copy is left behind).
    pub fn new(passphrase: String) -> Self {
        Passphrase(Zeroizing::new(passphrase))
    }

    /// The passphrase from `PQNODE_KEY_PASSPHRASE`, if set.
    pub fn from_env() -> Result<Option<Self>, PassphraseError> {
        match std::env::var_os(ENV_PASSPHRASE) {
            None => Ok(None),
            Some(value) => {
                let s = Zeroizing::new(
                    value
                        .into_string()
                        .map_err(|_| PassphraseError::NotUnicode)?,
                );
                if s.is_empty() {
                    return Err(PassphraseError::Empty(ENV_PASSPHRASE.to_owned()));
                }
                Ok(Some(Passphrase(s)))
            }
        }
    }

    /// The passphrase stored in a file (one trailing newline is dropped).
    /// The file must be private like a key file, unless `insecure`.
    pub fn from_file(path: &Path, insecure: bool) -> Result<Self, PassphraseError> {
        let shown = path.display().to_string();
        let bytes = Zeroizing::new(fsutil::read_private(path, insecure)?.ok_or_else(|| {
            PassphraseError::File(FsError::Io {
                op: "open",
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
        })?);
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| PassphraseError::FileNotUnicode(shown.clone()))?;
        let text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        if text.is_empty() {
            return Err(PassphraseError::Empty(shown));
        }
        Ok(Passphrase::new(text.to_owned()))
    }

    fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

/// Argon2id cost parameters, stored in each encrypted file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Iterations.
    pub t_cost: u32,
    /// Parallelism (lanes).
    pub p_cost: u32,
}

impl KdfParams {
    /// Largest memory cost accepted when reading a file (4 GiB), so a
    /// crafted file cannot make us allocate without bound.
    pub const MAX_M_COST: u32 = 4 * 1024 * 1024;
    /// Largest iteration count accepted when reading a file.
    pub const MAX_T_COST: u32 = 64;
    /// Largest lane count accepted when reading a file.
    pub const MAX_P_COST: u32 = 16;

    /// Cheap parameters, for tests only: they give no protection.
    pub const INSECURE_FOR_TESTS: KdfParams = KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };

    fn check(self) -> Result<Params, KeyFileError> {
        let bad = || KeyFileError::KdfParams {
            m_cost: self.m_cost,
            t_cost: self.t_cost,
            p_cost: self.p_cost,
        };
        if self.m_cost > Self::MAX_M_COST
            || self.t_cost > Self::MAX_T_COST
            || self.p_cost > Self::MAX_P_COST
        {
            return Err(bad());
        }
        Params::new(self.m_cost, self.t_cost, self.p_cost, Some(KEY_LEN)).map_err(|_| bad())
    }
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane (OWASP's Argon2id recommendation range).
    fn default() -> Self {
        KdfParams {
            m_cost: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

fn derive_key(
    passphrase: &Passphrase,
    salt: &[u8],
    params: KdfParams,
) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyFileError> {
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.check()?);
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    argon
        .hash_password_into(passphrase.expose(), salt, &mut key[..])
        .map_err(|e| KeyFileError::Kdf(e.to_string()))?;
    Ok(key)
}

fn random<const N: usize>() -> Result<[u8; N], KeyFileError> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| KeyFileError::Random(e.to_string()))?;
    Ok(out)
}

fn payload_len_u32(len: usize) -> Result<u32, KeyFileError> {
    u32::try_from(len).map_err(|_| KeyFileError::Payload("too large"))
}

/// Wraps `plaintext` in the container, encrypted when `protect` is given.
pub fn seal(
    kind: FileKind,
    plaintext: &[u8],
    protect: Option<(&Passphrase, KdfParams)>,
) -> Result<Vec<u8>, KeyFileError> {
    let mut out = Vec::with_capacity(plaintext.len() + 128);
    out.extend_from_slice(&MAGIC);
    out.push(FORMAT_VERSION);
    out.push(kind.code());
    match protect {
        None => {
            out.push(0);
            out.extend_from_slice(&payload_len_u32(plaintext.len())?.to_be_bytes());
            out.extend_from_slice(plaintext);
            let sum = Sha256::digest(&out);
            out.extend_from_slice(&sum);
        }
        Some((passphrase, params)) => {
            let salt: [u8; SALT_LEN] = random()?;
            let nonce: [u8; NONCE_LEN] = random()?;
            out.push(1);
            out.extend_from_slice(&params.m_cost.to_be_bytes());
            out.extend_from_slice(&params.t_cost.to_be_bytes());
            out.extend_from_slice(&params.p_cost.to_be_bytes());
            out.extend_from_slice(&salt);
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&payload_len_u32(plaintext.len() + TAG_LEN)?.to_be_bytes());
            let key = derive_key(passphrase, &salt, params)?;
            let cipher =
                XChaCha20Poly1305::new_from_slice(&key[..]).map_err(|_| KeyFileError::Encrypt)?;
            let nonce = XNonce::try_from(&nonce[..]).map_err(|_| KeyFileError::Encrypt)?;
            let mut buf = Zeroizing::new(plaintext.to_vec());
            let tag = cipher
                .encrypt_inout_detached(&nonce, &out, buf.as_mut_slice().into())
                .map_err(|_| KeyFileError::Encrypt)?;
            out.extend_from_slice(&buf);
            out.extend_from_slice(&tag);
        }
    }
    Ok(out)
}

impl From<Truncated> for KeyFileError {
    fn from(Truncated(what): Truncated) -> Self {
        KeyFileError::Truncated(what)
    }
}

/// An opened container: the plaintext and whether it was encrypted.
pub struct Opened {
    /// The plaintext payload (zeroized on drop).
    pub plaintext: Zeroizing<Vec<u8>>,
    /// Whether the file was passphrase-protected.
    pub encrypted: bool,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field(
                "plaintext",
                &format_args!("<{} bytes redacted>", self.plaintext.len()),
            )
            .field("encrypted", &self.encrypted)
            .finish()
    }
}

/// Whether a container is passphrase-protected, read from its header only:
/// nothing is decrypted or verified (for reporting and for refusing a store
/// that mixes protected and plain files before any passphrase is tried).
pub fn is_encrypted(bytes: &[u8]) -> Result<bool, KeyFileError> {
    let mut c = ByteReader::new(bytes);
    if c.take(MAGIC.len(), "magic")
        .map_err(|_| KeyFileError::BadMagic)?
        != MAGIC
    {
        return Err(KeyFileError::BadMagic);
    }
    let version = c.u8("version")?;
    if version != FORMAT_VERSION {
        return Err(KeyFileError::UnsupportedVersion(version));
    }
    let _kind = c.u8("kind")?;
    match c.u8("protection")? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(KeyFileError::UnknownProtection(other)),
    }
}

/// Parses a container of `kind` and returns its plaintext, decrypting with
/// `passphrase` when the file is encrypted.
pub fn open(
    kind: FileKind,
    bytes: &[u8],
    passphrase: Option<&Passphrase>,
) -> Result<Opened, KeyFileError> {
    let mut c = ByteReader::new(bytes);
    if c.take(MAGIC.len(), "magic")
        .map_err(|_| KeyFileError::BadMagic)?
        != MAGIC
    {
        return Err(KeyFileError::BadMagic);
    }
    let version = c.u8("version")?;
    if version != FORMAT_VERSION {
        return Err(KeyFileError::UnsupportedVersion(version));
    }
    let got = c.u8("kind")?;
    if got != kind.code() {
        return Err(KeyFileError::WrongKind {
            expected: kind.code(),
            got,
        });
    }
    match c.u8("protection")? {
        0 => {
            let len = c.u32("payload length")? as usize;
            let payload = c.take(len, "payload")?;
            let header_and_payload = c.position();
            let sum = c.take(CHECKSUM_LEN, "checksum")?;
            if c.position() != bytes.len() {
                return Err(KeyFileError::TrailingBytes(bytes.len() - c.position()));
            }
            let expected = Sha256::digest(&bytes[..header_and_payload]);
            if expected.as_slice() != sum {
                return Err(KeyFileError::Checksum);
            }
            Ok(Opened {
                plaintext: Zeroizing::new(payload.to_vec()),
                encrypted: false,
            })
        }
        1 => {
            let params = KdfParams {
                m_cost: c.u32("m_cost")?,
                t_cost: c.u32("t_cost")?,
                p_cost: c.u32("p_cost")?,
            };
            params.check()?;
            let salt = c.take(SALT_LEN, "salt")?;
            let nonce = c.take(NONCE_LEN, "nonce")?;
            let len = c.u32("payload length")? as usize;
            if len < TAG_LEN {
                return Err(KeyFileError::Truncated("tag"));
            }
            let aad_end = c.position();
            let sealed = c.take(len, "ciphertext")?;
            if c.position() != bytes.len() {
                return Err(KeyFileError::TrailingBytes(bytes.len() - c.position()));
            }
            let passphrase = passphrase.ok_or(KeyFileError::PassphraseRequired)?;
            let (ciphertext, tag) = sealed.split_at(len - TAG_LEN);
            let key = derive_key(passphrase, salt, params)?;
            let cipher =
                XChaCha20Poly1305::new_from_slice(&key[..]).map_err(|_| KeyFileError::Decrypt)?;
            let nonce = XNonce::try_from(nonce).map_err(|_| KeyFileError::Decrypt)?;
            let tag = Tag::try_from(tag).map_err(|_| KeyFileError::Decrypt)?;
            let mut buf = Zeroizing::new(ciphertext.to_vec());
            cipher
                .decrypt_inout_detached(&nonce, &bytes[..aad_end], buf.as_mut_slice().into(), &tag)
                .map_err(|_| KeyFileError::Decrypt)?;
            Ok(Opened {
                plaintext: buf,
                encrypted: true,
            })
        }
        other => Err(KeyFileError::UnknownProtection(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(s: &str) -> Passphrase {
        Passphrase::new(s.to_owned())
    }

    #[test]
    fn plain_round_trip_and_checksum() {
        let sealed = seal(FileKind::Identity, b"secret bytes", None).unwrap();
        let opened = open(FileKind::Identity, &sealed, None).unwrap();
        assert_eq!(&opened.plaintext[..], b"secret bytes");
        assert!(!opened.encrypted);
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(matches!(
            open(FileKind::Identity, &bad, None),
            Err(KeyFileError::Checksum)
        ));
        assert!(matches!(
            open(FileKind::SigningKey, &sealed, None),
            Err(KeyFileError::WrongKind {
                expected: 2,
                got: 1
            })
        ));
        assert!(matches!(
            open(FileKind::Identity, &sealed[..sealed.len() - 1], None),
            Err(KeyFileError::Truncated(_))
        ));
        let mut long = sealed.clone();
        long.push(0);
        assert!(matches!(
            open(FileKind::Identity, &long, None),
            Err(KeyFileError::TrailingBytes(1))
        ));
        assert!(matches!(
            open(FileKind::Identity, b"garbage", None),
            Err(KeyFileError::BadMagic)
        ));
        let mut v2 = sealed;
        v2[8] = 2;
        assert!(matches!(
            open(FileKind::Identity, &v2, None),
            Err(KeyFileError::UnsupportedVersion(2))
        ));
    }

    #[test]
    fn protection_is_read_from_the_header_alone() {
        let plain = seal(FileKind::SigningKey, b"k", None).unwrap();
        assert!(!is_encrypted(&plain).unwrap());
        let p = pass("correct horse");
        let sealed = seal(
            FileKind::SigningKey,
            b"k",
            Some((&p, KdfParams::INSECURE_FOR_TESTS)),
        )
        .unwrap();
        assert!(is_encrypted(&sealed).unwrap());
        assert!(matches!(is_encrypted(b"nope"), Err(KeyFileError::BadMagic)));
    }

    #[test]
    fn encrypted_round_trip_and_failures() {
        let p = pass("correct horse");
        let sealed = seal(
            FileKind::SigningKey,
            b"pq secret",
            Some((&p, KdfParams::INSECURE_FOR_TESTS)),
        )
        .unwrap();
        assert!(!sealed.windows(9).any(|w| w == b"pq secret"));
        let opened = open(FileKind::SigningKey, &sealed, Some(&p)).unwrap();
        assert_eq!(&opened.plaintext[..], b"pq secret");
        assert!(opened.encrypted);
        assert!(matches!(
            open(FileKind::SigningKey, &sealed, Some(&pass("wrong"))),
            Err(KeyFileError::Decrypt)
        ));
        assert!(matches!(
            open(FileKind::SigningKey, &sealed, None),
            Err(KeyFileError::PassphraseRequired)
        ));
        // the header is authenticated too
        let mut bad = sealed.clone();
        bad[13] ^= 1; // m_cost
        assert!(open(FileKind::SigningKey, &bad, Some(&p)).is_err());
        let mut bad = sealed;
        let n = bad.len();
        bad[n - 1] ^= 1;
        assert!(matches!(
            open(FileKind::SigningKey, &bad, Some(&p)),
            Err(KeyFileError::Decrypt)
        ));
    }

    #[test]
    fn absurd_kdf_params_are_refused_before_any_work() {
        let p = pass("x");
        let mut sealed = seal(
            FileKind::Identity,
            b"k",
            Some((&p, KdfParams::INSECURE_FOR_TESTS)),
        )
        .unwrap();
        sealed[11..15].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            open(FileKind::Identity, &sealed, Some(&p)),
            Err(KeyFileError::KdfParams { .. })
        ));
    }

    #[test]
    fn passphrase_debug_is_redacted_and_file_is_read() {
        let p = pass("hunter2");
        assert!(!format!("{p:?}").contains("hunter2"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass");
        fsutil::write_atomic(&path, b"hunter2\n").unwrap();
        assert_eq!(
            Passphrase::from_file(&path, false).unwrap().expose(),
            b"hunter2"
        );
        fsutil::write_atomic(&path, b"\n").unwrap();
        assert!(matches!(
            Passphrase::from_file(&path, false),
            Err(PassphraseError::Empty(_))
        ));
    }
}
