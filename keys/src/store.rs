//! The key directory: the libp2p Ed25519 identity, one PQ signing key pair
//! per enabled suite (with creation times), and the persisted record `seq`.
//!
//! Files (each in the [`crate::keyfile`] container, mode 0600, in a 0700
//! directory, written atomically):
//!
//! | file | holds |
//! |---|---|
//! | `identity.key` | created_at u64, Ed25519 key pair (64 bytes) |
//! | `sig-<suite name>.key` | the suite's current key pair and, after a rotation, the previous one |
//! | `record-seq` | the last record `seq` handed out (never encrypted) |
//!
//! A file that exists but cannot be read, decrypted or parsed is an error
//! naming the file and the cause; it is never overwritten or repaired.
//!
//! A store is wholly encrypted or wholly plain: a store that mixes the two is
//! refused, and every file written into an existing store gets the
//! protection of the files already there. Every operation first opens and
//! authenticates what exists, then writes; a failure leaves the directory as
//! it was.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use libp2p::Multiaddr;
use libp2p::identity::{Keypair, PeerId};
use pqnode_crypto::Suite;
use pqnode_crypto::sign::SigningKey;
use zeroize::Zeroizing;

use crate::fingerprint::Fingerprint;
use crate::fsutil::{self, FsError};
use crate::keyfile::{self, FileKind, KdfParams, KeyFileError, Passphrase};
use crate::record::{self, BuildError, RecordParams, SignedRecord};
use crate::time;

mod payload;

use payload::{Retired, SuiteKeys, decode_identity, decode_suite, encode_identity, encode_suite};

/// File name of the libp2p identity.
pub const IDENTITY_FILE: &str = "identity.key";
/// File name of the persisted record `seq`.
pub const RECORD_STATE_FILE: &str = "record-seq";
/// How long after a rotation records keep carrying the rotation statement
/// (and the previous key is kept to sign it): the longest record validity,
/// so every verifier that may still hold a record with the old key sees one.
pub const ROTATION_GRACE_SECS: u64 = record::MAX_VALIDITY_SECS;

/// File name of a suite's signing key.
pub fn suite_file_name(suite: Suite) -> String {
    format!("sig-{}.key", suite.name())
}

/// The suites that have a key file in `dir`, in [`Suite::ALL`] order.
pub fn present_suites(dir: &Path) -> Result<Vec<Suite>, StoreError> {
    let mut out = Vec::new();
    for suite in Suite::ALL {
        if fsutil::exists(&dir.join(suite_file_name(suite)))? {
            out.push(suite);
        }
    }
    Ok(out)
}

/// How each key file in `dir` is protected, read from the file headers only
/// (nothing is decrypted): the identity first, then the suites in
/// [`Suite::ALL`] order; `true` = passphrase-protected. Files that do not
/// exist are left out.
pub fn file_protection(dir: &Path, insecure: bool) -> Result<Vec<(PathBuf, bool)>, StoreError> {
    let mut out = Vec::new();
    for name in key_file_names() {
        let path = dir.join(name);
        let Some(bytes) = fsutil::read_private(&path, insecure)? else {
            continue;
        };
        let encrypted = keyfile::is_encrypted(&bytes).map_err(|source| StoreError::File {
            path: path.clone(),
            source,
        })?;
        out.push((path, encrypted));
    }
    Ok(out)
}

/// The protection of the store in `dir` (`None`: no key files), refusing a
/// store whose files are not all protected the same way.
fn uniform_protection(dir: &Path, insecure: bool) -> Result<Option<bool>, StoreError> {
    let files = file_protection(dir, insecure)?;
    let (encrypted, plain): (Vec<_>, Vec<_>) = files.iter().partition(|(_, e)| *e);
    if !encrypted.is_empty() && !plain.is_empty() {
        let names = |v: Vec<&(PathBuf, bool)>| {
            v.iter()
                .map(|(p, _)| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(StoreError::MixedProtection {
            dir: dir.to_path_buf(),
            encrypted: names(encrypted),
            plain: names(plain),
        });
    }
    Ok(files.first().map(|(_, e)| *e))
}

/// A key-store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file-system operation failed (the path is in the message).
    #[error(transparent)]
    Fs(#[from] FsError),
    /// A key file exists but cannot be used.
    #[error("key file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: KeyFileError,
    },
    /// A key file's contents are inconsistent (e.g. a key pair whose halves
    /// do not match).
    #[error("key file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// No keys in this directory.
    #[error("no keys in {dir} (create them with `pqnode keys generate --data-dir {dir}`)")]
    NotInitialized {
        /// The data directory.
        dir: PathBuf,
    },
    /// Keys exist where new ones were to be generated.
    #[error(
        "keys already exist in {dir} ({files}); use --force to replace them (a backup is kept)"
    )]
    KeysExist {
        /// The data directory.
        dir: PathBuf,
        /// The existing files.
        files: String,
    },
    /// Some key files exist but the identity does not.
    #[error(
        "{dir} has signing keys but no {IDENTITY_FILE}: refusing to create a new identity beside \
         them (restore the file, or move the directory away)"
    )]
    MissingIdentity {
        /// The data directory.
        dir: PathBuf,
    },
    /// Some key files are encrypted and others are not.
    #[error(
        "{dir} mixes encrypted and unencrypted key files (encrypted: {encrypted}; not encrypted: \
         {plain}): a key store is wholly encrypted or wholly plain. Move the unencrypted file(s) \
         out of the directory, treating their keys as exposed, and start with the passphrase to \
         create new ones (peers that pinned them must pin again), or restore the originals from \
         a backup-* directory"
    )]
    MixedProtection {
        /// The data directory.
        dir: PathBuf,
        /// The encrypted files.
        encrypted: String,
        /// The unencrypted files.
        plain: String,
    },
    /// A forced regeneration limited to some suites would leave the keys of
    /// the others paired with the new identity.
    #[error(
        "regenerating the identity would leave the keys of {suites} ({files}) paired with the new \
         PeerId: regenerate every suite together (leave out --suites), or move those files away \
         first"
    )]
    OtherSuitesPresent {
        /// The suites that would be left.
        suites: String,
        /// Their files.
        files: String,
    },
    /// An enabled suite has no key file.
    #[error("no key for suite {suite} ({path} is missing)")]
    MissingSuiteKey {
        /// The suite.
        suite: Suite,
        /// The missing file.
        path: PathBuf,
    },
    /// A suite that is not loaded.
    #[error("suite {0} is not enabled in this key store")]
    SuiteNotLoaded(Suite),
    /// Key generation failed.
    #[error("key generation: {0}")]
    Crypto(#[from] pqnode_crypto::CryptoError),
    /// Protecting a file failed.
    #[error("protecting {path}: {source}")]
    Seal {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: KeyFileError,
    },
    /// The record `seq` would overflow.
    #[error("record seq exhausted")]
    SeqExhausted,
    /// Building a record failed.
    #[error("building the record: {0}")]
    Record(#[from] BuildError),
}

/// How to open or create a key store.
#[derive(Debug)]
pub struct StoreOptions {
    /// The suites whose keys are loaded (and generated).
    pub suites: Vec<Suite>,
    /// Encrypt new files with it / decrypt encrypted files with it.
    pub passphrase: Option<Passphrase>,
    /// Argon2id costs for files written with a passphrase.
    pub kdf: KdfParams,
    /// Load files that group or others may access (the operator asked for it).
    pub insecure_permissions: bool,
}

impl Default for StoreOptions {
    /// Every suite, no passphrase, default Argon2id costs, strict permissions.
    fn default() -> Self {
        StoreOptions {
            suites: Suite::ALL.to_vec(),
            passphrase: None,
            kdf: KdfParams::default(),
            insecure_permissions: false,
        }
    }
}

/// Public facts about one suite's key, for `keys show` and the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The suite.
    pub suite: Suite,
    /// SHA-256 of the current public key.
    pub fingerprint: Fingerprint,
    /// When the current key was created (unix seconds).
    pub created_at: u64,
    /// The key file.
    pub path: PathBuf,
    /// The fingerprint of the retired key still used to sign rotation
    /// statements, and when it was retired.
    pub previous: Option<(Fingerprint, u64)>,
}

/// An opened key directory.
pub struct KeyStore {
    dir: PathBuf,
    identity: Keypair,
    identity_created_at: u64,
    suites: BTreeMap<Suite, SuiteKeys>,
    last_seq: u64,
    options: StoreOptions,
    encrypted: bool,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("dir", &self.dir)
            .field("peer_id", &self.peer_id())
            .field("suites", &self.suites.keys().collect::<Vec<_>>())
            .field("last_seq", &self.last_seq)
            .field("encrypted", &self.encrypted)
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// Opens the keys in `dir`. Every enabled suite must have a key, and
    /// the files must all be encrypted or all plain.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let suites = options.suites.clone();
        Self::load(dir, options, &suites)
    }

    /// Opens the identity and the keys of `suites` (each must exist),
    /// after checking that the store's files are uniformly protected.
    fn load(dir: &Path, options: StoreOptions, suites: &[Suite]) -> Result<Self, StoreError> {
        fsutil::check_dir(dir, options.insecure_permissions)?;
        uniform_protection(dir, options.insecure_permissions)?;
        let id_path = dir.join(IDENTITY_FILE);
        let Some(opened) = read_file(&id_path, FileKind::Identity, &options)? else {
            if any_suite_file(dir)? {
                return Err(StoreError::MissingIdentity {
                    dir: dir.to_path_buf(),
                });
            }
            return Err(StoreError::NotInitialized {
                dir: dir.to_path_buf(),
            });
        };
        // Uniform: the identity's protection is the store's.
        let encrypted = opened.encrypted;
        let (identity_created_at, identity) = decode_identity(&id_path, &opened.plaintext)?;
        drop(opened);
        let mut loaded = BTreeMap::new();
        for &suite in suites {
            let path = dir.join(suite_file_name(suite));
            let opened = read_file(&path, FileKind::SigningKey, &options)?.ok_or_else(|| {
                StoreError::MissingSuiteKey {
                    suite,
                    path: path.clone(),
                }
            })?;
            loaded.insert(suite, decode_suite(&path, suite, &opened.plaintext)?);
        }
        let last_seq = read_seq(dir, &options)?;
        Ok(KeyStore {
            dir: dir.to_path_buf(),
            identity,
            identity_created_at,
            suites: loaded,
            last_seq,
            options,
            encrypted,
        })
    }

    /// Creates new keys in `dir` (created 0700 if missing). Refuses if any
    /// key file already exists.
    pub fn generate(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        fsutil::ensure_private_dir(dir, options.insecure_permissions)?;
        let existing = existing_key_files(dir)?;
        if !existing.is_empty() {
            return Err(StoreError::KeysExist {
                dir: dir.to_path_buf(),
                files: join_names(&existing),
            });
        }
        Self::write_new(dir, options, Write::CreateNew)
    }

    /// Like [`KeyStore::generate`], but existing key files are first copied
    /// into a new `backup-<UTC time>` directory (returned), then replaced.
    pub fn generate_replacing(
        dir: &Path,
        options: StoreOptions,
    ) -> Result<(Self, Option<PathBuf>), StoreError> {
        fsutil::ensure_private_dir(dir, options.insecure_permissions)?;
        let others: Vec<Suite> = present_suites(dir)?
            .into_iter()
            .filter(|s| !options.suites.contains(s))
            .collect();
        if !others.is_empty() {
            return Err(StoreError::OtherSuitesPresent {
                suites: others
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                files: others
                    .iter()
                    .map(|&s| dir.join(suite_file_name(s)).display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let insecure = options.insecure_permissions;
        let before = existing_key_files(dir)?;
        let backup = backup(dir, insecure)?;
        match Self::write_new(dir, options, Write::Replace) {
            Ok(store) => Ok((store, backup)),
            Err(e) => {
                // Never a new identity beside old keys (or the reverse): put
                // the old files back and remove the new ones.
                if let Err(restore) = restore(dir, backup.as_deref(), &before, insecure) {
                    tracing::error!(dir = %dir.display(), error = %restore, "regeneration failed and the old keys could not all be put back: copy them from the backup directory");
                }
                Err(e)
            }
        }
    }

    /// Opens the keys in `dir`, creating what is missing: everything in an
    /// empty directory, or the key of a newly enabled suite. Never replaces
    /// an existing file, and never creates an identity beside existing keys.
    ///
    /// All or nothing: the identity and every existing key file are opened
    /// with the given passphrase first; only then are the missing keys
    /// written, with the protection of the files already there; a failure
    /// removes what this call wrote, leaving the directory as it was.
    pub fn open_or_create(dir: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        fsutil::ensure_private_dir(dir, options.insecure_permissions)?;
        if !fsutil::exists(&dir.join(IDENTITY_FILE))? {
            if any_suite_file(dir)? {
                return Err(StoreError::MissingIdentity {
                    dir: dir.to_path_buf(),
                });
            }
            return Self::write_new(dir, options, Write::CreateNew);
        }
        let mut present = Vec::new();
        let mut missing = Vec::new();
        for &suite in &options.suites {
            if fsutil::exists(&dir.join(suite_file_name(suite)))? {
                present.push(suite);
            } else {
                missing.push(suite);
            }
        }
        if missing.is_empty() {
            return Self::open(dir, options);
        }
        // Authenticate what exists before writing anything.
        let mut store = Self::load(dir, options, &present)?;
        for suite in present_suites(dir)? {
            if !store.options.suites.contains(&suite) {
                read_file(
                    &dir.join(suite_file_name(suite)),
                    FileKind::SigningKey,
                    &store.options,
                )?;
            }
        }
        if !store.encrypted && store.options.passphrase.is_some() {
            tracing::warn!(dir = %dir.display(), "the key store is not encrypted: the new key is written unencrypted like the rest, although a passphrase was given");
        }
        let mut created: Vec<PathBuf> = Vec::new();
        for suite in missing {
            let path = dir.join(suite_file_name(suite));
            let written = SigningKey::generate(suite)
                .map_err(StoreError::from)
                .and_then(|key| {
                    let keys = SuiteKeys {
                        current: Arc::new(key),
                        created_at: time::unix_now(),
                        previous: None,
                    };
                    write_suite(&path, suite, &keys, store.protection(), Write::CreateNew)?;
                    Ok(keys)
                });
            match written {
                Ok(keys) => {
                    tracing::info!(suite = %suite, path = %path.display(), encrypted = store.encrypted, "created the signing key of a newly enabled suite");
                    created.push(path);
                    store.suites.insert(suite, keys);
                }
                Err(e) => {
                    for path in &created {
                        if let Err(rm) = std::fs::remove_file(path) {
                            tracing::error!(path = %path.display(), error = %rm, "could not remove a key file written before the failure");
                        }
                    }
                    let _ = fsutil::sync_dir(dir);
                    return Err(e);
                }
            }
        }
        Ok(store)
    }

    /// How files written into this store are sealed: like the ones there.
    fn protection(&self) -> Option<(&Passphrase, KdfParams)> {
        if self.encrypted {
            protection_of(&self.options)
        } else {
            None
        }
    }

    fn write_new(dir: &Path, options: StoreOptions, mode: Write) -> Result<Self, StoreError> {
        let now = time::unix_now();
        let identity = Keypair::generate_ed25519();
        let mut suites = BTreeMap::new();
        for &suite in &options.suites {
            suites.insert(
                suite,
                SuiteKeys {
                    current: Arc::new(SigningKey::generate(suite)?),
                    created_at: now,
                    previous: None,
                },
            );
        }
        // The identity first: if we crash before the suite files are written,
        // `open_or_create` completes the directory instead of refusing it.
        let id_path = dir.join(IDENTITY_FILE);
        write_file(
            &id_path,
            FileKind::Identity,
            &encode_identity(now, &identity)?,
            protection_of(&options),
            mode,
        )?;
        for (&suite, keys) in &suites {
            write_suite(
                &dir.join(suite_file_name(suite)),
                suite,
                keys,
                protection_of(&options),
                mode,
            )?;
        }
        let last_seq = read_seq(dir, &options)?;
        let encrypted = options.passphrase.is_some();
        Ok(KeyStore {
            dir: dir.to_path_buf(),
            identity,
            identity_created_at: now,
            suites,
            last_seq,
            options,
            encrypted,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The libp2p identity key pair.
    pub fn identity(&self) -> &Keypair {
        &self.identity
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.identity.public().to_peer_id()
    }

    /// When the identity was created (unix seconds).
    pub fn identity_created_at(&self) -> u64 {
        self.identity_created_at
    }

    /// Whether the store's files are passphrase-protected (they all are, or
    /// none is).
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// The loaded suites.
    pub fn suites(&self) -> Vec<Suite> {
        self.suites.keys().copied().collect()
    }

    /// A suite's current signing key.
    pub fn signing_key(&self, suite: Suite) -> Option<&SigningKey> {
        self.suites.get(&suite).map(|k| k.current.as_ref())
    }

    /// A suite's current signing key, shared (for the handshake's
    /// credentials) without copying the secret. After [`KeyStore::rotate`]
    /// the store holds the new key; holders of this one keep the old.
    pub fn shared_signing_key(&self, suite: Suite) -> Option<Arc<SigningKey>> {
        self.suites.get(&suite).map(|k| Arc::clone(&k.current))
    }

    /// Public facts about every loaded suite key.
    pub fn key_info(&self) -> Vec<KeyInfo> {
        self.suites
            .iter()
            .map(|(&suite, keys)| KeyInfo {
                suite,
                fingerprint: Fingerprint::of(keys.current.verifying_key()),
                created_at: keys.created_at,
                path: self.dir.join(suite_file_name(suite)),
                previous: keys
                    .previous
                    .as_ref()
                    .map(|p| (Fingerprint::of(p.key.verifying_key()), p.retired_at)),
            })
            .collect()
    }

    /// The files of this store (identity, suite keys, record state if present).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.dir.join(IDENTITY_FILE)];
        files.extend(
            self.suites
                .keys()
                .map(|&s| self.dir.join(suite_file_name(s))),
        );
        let state = self.dir.join(RECORD_STATE_FILE);
        if state.exists() {
            files.push(state);
        }
        files
    }

    /// The last record `seq` handed out (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Reserves the next record `seq` — `max(last + 1, now)`, so it also
    /// keeps increasing if the state file is lost or an older backup is
    /// restored — and persists it before returning it.
    pub fn next_seq(&mut self, now: u64) -> Result<u64, StoreError> {
        let next = self
            .last_seq
            .checked_add(1)
            .ok_or(StoreError::SeqExhausted)?
            .max(now);
        let plain = next.to_be_bytes();
        let sealed = keyfile::seal(FileKind::RecordState, &plain, None).map_err(|source| {
            StoreError::Seal {
                path: self.dir.join(RECORD_STATE_FILE),
                source,
            }
        })?;
        fsutil::write_atomic(&self.dir.join(RECORD_STATE_FILE), &sealed)?;
        self.last_seq = next;
        Ok(next)
    }

    /// Builds the next signed record for `suite`, valid from `now` for
    /// `validity_secs`. While a rotation is recent
    /// ([`ROTATION_GRACE_SECS`]), the record carries the rotation statement;
    /// after that the retired key is erased.
    pub fn build_record(
        &mut self,
        suite: Suite,
        addrs: &[Multiaddr],
        now: u64,
        validity_secs: u64,
    ) -> Result<SignedRecord, StoreError> {
        if !self.suites.contains_key(&suite) {
            return Err(StoreError::SuiteNotLoaded(suite));
        }
        self.expire_retired(suite, now)?;
        let seq = self.next_seq(now)?;
        let keys = self
            .suites
            .get(&suite)
            .ok_or(StoreError::SuiteNotLoaded(suite))?;
        let params = RecordParams {
            seq,
            issued_at: now,
            expires_at: now.saturating_add(validity_secs),
            addrs,
        };
        Ok(record::build(
            &self.identity,
            &keys.current,
            keys.previous.as_ref().map(|p| &p.key),
            &params,
        )?)
    }

    fn expire_retired(&mut self, suite: Suite, now: u64) -> Result<(), StoreError> {
        let path = self.dir.join(suite_file_name(suite));
        let Some(keys) = self.suites.get_mut(&suite) else {
            return Ok(());
        };
        let expired = keys
            .previous
            .as_ref()
            .is_some_and(|p| now >= p.retired_at.saturating_add(ROTATION_GRACE_SECS));
        if expired {
            let retired = keys.previous.take();
            let protect = if self.encrypted {
                protection_of(&self.options)
            } else {
                None
            };
            if let Err(e) = write_suite(&path, suite, keys, protect, Write::Replace) {
                keys.previous = retired;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Replaces `suite`'s signing key with a new one and returns the new
    /// fingerprint. The old key is kept to sign the rotation statement of
    /// the following records (for [`ROTATION_GRACE_SECS`]); a key retired
    /// earlier is erased. `now` (unix seconds) is the retirement time that
    /// starts the grace period; pass the clock used for
    /// [`KeyStore::build_record`].
    pub fn rotate(&mut self, suite: Suite, now: u64) -> Result<Fingerprint, StoreError> {
        let path = self.dir.join(suite_file_name(suite));
        let old = self
            .suites
            .get(&suite)
            .ok_or(StoreError::SuiteNotLoaded(suite))?;
        let fresh = SuiteKeys {
            current: Arc::new(SigningKey::generate(suite)?),
            created_at: now,
            previous: None,
        };
        // Re-import the old key pair for the new file's "previous" slot
        // (SigningKey is deliberately not Clone).
        let old_copy = SigningKey::from_bytes(
            suite,
            old.current.expose_secret(),
            old.current.verifying_key().as_bytes(),
        )?;
        let fresh = SuiteKeys {
            previous: Some(Retired {
                key: old_copy,
                created_at: old.created_at,
                retired_at: now,
            }),
            ..fresh
        };
        write_suite(&path, suite, &fresh, self.protection(), Write::Replace)?;
        let fingerprint = Fingerprint::of(fresh.current.verifying_key());
        self.suites.insert(suite, fresh);
        Ok(fingerprint)
    }
}

fn read_file(
    path: &Path,
    kind: FileKind,
    options: &StoreOptions,
) -> Result<Option<keyfile::Opened>, StoreError> {
    let Some(bytes) = fsutil::read_private(path, options.insecure_permissions)? else {
        return Ok(None);
    };
    // A plain key file holds secrets in the clear: wipe the buffer after use.
    let bytes = Zeroizing::new(bytes);
    let opened = keyfile::open(kind, &bytes, options.passphrase.as_ref()).map_err(|source| {
        StoreError::File {
            path: path.to_path_buf(),
            source,
        }
    })?;
    if !opened.encrypted && options.passphrase.is_some() {
        tracing::warn!(path = %path.display(), "key file is not encrypted although a passphrase was given");
    }
    Ok(Some(opened))
}

/// Whether a write may replace an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    /// Replace it (rotation, `--force`).
    Replace,
    /// Fail if it exists, even if it appeared concurrently.
    CreateNew,
}

/// The passphrase protection `options` ask for (a new store's).
fn protection_of(options: &StoreOptions) -> Option<(&Passphrase, KdfParams)> {
    options.passphrase.as_ref().map(|p| (p, options.kdf))
}

fn write_file(
    path: &Path,
    kind: FileKind,
    plain: &[u8],
    protect: Option<(&Passphrase, KdfParams)>,
    mode: Write,
) -> Result<(), StoreError> {
    let sealed =
        Zeroizing::new(
            keyfile::seal(kind, plain, protect).map_err(|source| StoreError::Seal {
                path: path.to_path_buf(),
                source,
            })?,
        );
    match mode {
        Write::Replace => Ok(fsutil::write_atomic(path, &sealed)?),
        Write::CreateNew => {
            if fsutil::write_new_atomic(path, &sealed)? {
                Ok(())
            } else {
                Err(StoreError::KeysExist {
                    dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
                    files: path.display().to_string(),
                })
            }
        }
    }
}

fn write_suite(
    path: &Path,
    suite: Suite,
    keys: &SuiteKeys,
    protect: Option<(&Passphrase, KdfParams)>,
    mode: Write,
) -> Result<(), StoreError> {
    write_file(
        path,
        FileKind::SigningKey,
        &encode_suite(suite, keys),
        protect,
        mode,
    )
}

fn read_seq(dir: &Path, options: &StoreOptions) -> Result<u64, StoreError> {
    let path = dir.join(RECORD_STATE_FILE);
    let Some(bytes) = fsutil::read_private(&path, options.insecure_permissions)? else {
        return Ok(0);
    };
    let opened =
        keyfile::open(FileKind::RecordState, &bytes, None).map_err(|source| StoreError::File {
            path: path.clone(),
            source,
        })?;
    let plain: [u8; 8] = opened.plaintext[..]
        .try_into()
        .map_err(|_| StoreError::Invalid {
            path,
            reason: "record state has the wrong length".into(),
        })?;
    Ok(u64::from_be_bytes(plain))
}

/// Every key file name this crate may write.
fn key_file_names() -> Vec<String> {
    let mut names = vec![IDENTITY_FILE.to_owned()];
    names.extend(Suite::ALL.iter().map(|&s| suite_file_name(s)));
    names
}

fn existing_key_files(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut out = Vec::new();
    for name in key_file_names() {
        let path = dir.join(name);
        if fsutil::exists(&path)? {
            out.push(path);
        }
    }
    Ok(out)
}

fn any_suite_file(dir: &Path) -> Result<bool, StoreError> {
    for suite in Suite::ALL {
        if fsutil::exists(&dir.join(suite_file_name(suite)))? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn join_names(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Undoes a failed regeneration: every key file that existed (`before`) is
/// copied back from `backup`, every other key file is removed.
fn restore(
    dir: &Path,
    backup: Option<&Path>,
    before: &[PathBuf],
    insecure: bool,
) -> Result<(), StoreError> {
    for path in existing_key_files(dir)? {
        if !before.contains(&path) {
            std::fs::remove_file(&path).map_err(fsutil::io_err("removing", &path))?;
        }
    }
    if let Some(backup) = backup {
        for path in before {
            let Some(name) = path.file_name() else {
                continue;
            };
            if let Some(bytes) = fsutil::read_private(&backup.join(name), insecure)? {
                fsutil::write_atomic(path, &Zeroizing::new(bytes))?;
            }
        }
    }
    fsutil::sync_dir(dir)?;
    Ok(())
}

/// Copies every existing key file and the record state, byte for byte, into
/// a new `backup-<UTC time>` directory (mode 0700) inside `dir`. Returns
/// `None` when there was nothing to back up.
pub fn backup(dir: &Path, insecure: bool) -> Result<Option<PathBuf>, StoreError> {
    let mut names = key_file_names();
    names.push(RECORD_STATE_FILE.to_owned());
    let mut files = Vec::new();
    for name in names {
        if let Some(bytes) = fsutil::read_private(&dir.join(&name), insecure)? {
            files.push((name, Zeroizing::new(bytes)));
        }
    }
    if files.is_empty() {
        return Ok(None);
    }
    let stamp = time::compact(time::unix_now());
    let mut target = dir.join(format!("backup-{stamp}"));
    let mut n = 1;
    while fsutil::exists(&target)? {
        n += 1;
        target = dir.join(format!("backup-{stamp}-{n}"));
    }
    fsutil::ensure_private_dir(&target, false)?;
    for (name, bytes) in &files {
        fsutil::write_atomic(&target.join(name), bytes)?;
    }
    fsutil::sync_dir(dir)?;
    Ok(Some(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| {
                (
                    e.file_name().into_string().unwrap(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    /// A regeneration that fails half-way is undone: the old files come
    /// back from the backup and a file the old store did not have goes.
    #[test]
    fn a_failed_regeneration_is_undone_from_the_backup() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let only_one = StoreOptions {
            suites: vec![Suite::Kyber1024Dilithium5],
            ..StoreOptions::default()
        };
        KeyStore::generate(&dir, only_one).unwrap();
        let before_files = existing_key_files(&dir).unwrap();
        let before = snapshot(&dir);
        let saved = backup(&dir, false).unwrap();
        // What a half-done regeneration leaves: a new identity, old suite
        // key, a key for a suite the store did not have.
        let other = KeyStore::generate(&tmp.path().join("other"), StoreOptions::default()).unwrap();
        for name in [
            IDENTITY_FILE.to_owned(),
            suite_file_name(Suite::Mlkem1024Mldsa87),
        ] {
            std::fs::copy(other.dir().join(&name), dir.join(&name)).unwrap();
        }
        restore(&dir, saved.as_deref(), &before_files, false).unwrap();
        let after: Vec<_> = snapshot(&dir);
        assert_eq!(after, before);
    }
}
