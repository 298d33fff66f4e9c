//! The node's state database: one redb file (`state.redb`, mode 0600) in
//! the data directory, written transactionally. It holds the pins of
//! PROTOCOL.md §8.3 (rev 3: per PeerId across suites) and the peer cache,
//! and will hold Kademlia records; key files stay files.
//!
//! Tables (versioned names, so a later layout can live beside this one):
//!
//! - `pins_v1`: `u8 len || PeerId bytes || u16 suite id` (0 = a suite-less
//!   operator pin) → `fingerprint (32) || source u8 || pinned_at u64`. All
//!   pins of one peer are one range scan; nothing is ever loaded whole.
//! - `meta_v1`: `schema`, `first_use` (pins subject to the first-use limit,
//!   kept in the same transaction as the pins), `pins_json_imported`.
//! - `peers_v1`: the peer cache ([`crate::peercache`]).
//!
//! On first open an existing `pins.json` (the earlier store) is imported
//! once, in one transaction, and then renamed `pins.json.imported` (its
//! bytes untouched); a corrupt one stops the open, naming it, and is left
//! as it is.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use libp2p::identity::PeerId;
use pqnode_crypto::Suite;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::fingerprint::Fingerprint;
use crate::fsutil::{self, FsError};
use crate::pins::{PINS_FILE, Pin, PinError, PinSource, PinStore, PinUpdate};

/// File name of the database in the data directory.
pub const DB_FILE: &str = "state.redb";
/// What an imported `pins.json` is renamed to.
pub const PINS_IMPORTED_FILE: &str = "pins.json.imported";
/// First-use pins kept at most (PROTOCOL.md §9 rev 3).
pub const DEFAULT_FIRST_USE_LIMIT: u64 = 100_000;
/// Schema version written in `meta_v1`.
pub const SCHEMA: u64 = 1;

const PINS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("pins_v1");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta_v1");
const META_SCHEMA: &str = "schema";
const META_FIRST_USE: &str = "first_use";
const META_IMPORTED: &str = "pins_json_imported";
const VALUE_LEN: usize = 32 + 1 + 8;

/// A database failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The file could not be used (permissions, symlink, I/O).
    #[error(transparent)]
    Fs(#[from] FsError),
    /// redb refused an operation.
    #[error("database {path}: {reason}")]
    Redb {
        /// The file.
        path: PathBuf,
        /// What redb said.
        reason: String,
    },
    /// A row could not be decoded (the file is left untouched).
    #[error("database {path}: corrupt row in table {table}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// Why.
        reason: String,
    },
    /// Written by a newer pqnode.
    #[error("database {path} has schema {found}; this build reads {SCHEMA}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// The schema found.
        found: u64,
    },
    /// The earlier `pins.json` could not be imported (it is left untouched).
    #[error("cannot import {path}: {reason}")]
    Import {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl From<DbError> for PinError {
    fn from(e: DbError) -> Self {
        PinError::Db(Box::new(e))
    }
}

struct Shared {
    db: Database,
    path: PathBuf,
}

/// The open database. Cheap to clone.
#[derive(Clone)]
pub struct StateDb {
    inner: Arc<Shared>,
}

impl std::fmt::Debug for StateDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDb")
            .field("path", &self.inner.path)
            .finish()
    }
}

fn redb_err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> DbError + '_ {
    move |e| DbError::Redb {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Creates `path` empty with mode 0600, or checks an existing one: a
/// regular file (never a symlink) that group and others cannot access.
fn prepare_file(path: &Path, insecure: bool) -> Result<(), DbError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.file_type().is_file() {
                return Err(FsError::NotRegularFile {
                    path: path.to_path_buf(),
                }
                .into());
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 && !insecure {
                    return Err(FsError::InsecureFile {
                        path: path.to_path_buf(),
                        mode,
                    }
                    .into());
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut o = std::fs::OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.mode(0o600);
            }
            o.open(path).map_err(|source| FsError::Io {
                op: "create",
                path: path.to_path_buf(),
                source,
            })?;
            Ok(())
        }
        Err(source) => Err(FsError::Io {
            op: "stat",
            path: path.to_path_buf(),
            source,
        }
        .into()),
    }
}

impl StateDb {
    /// Opens or creates `<data_dir>/state.redb`; imports `pins.json` once.
    pub fn open(data_dir: &Path, insecure_permissions: bool) -> Result<StateDb, DbError> {
        fsutil::ensure_private_dir(data_dir, insecure_permissions)?;
        let path = data_dir.join(DB_FILE);
        prepare_file(&path, insecure_permissions)?;
        let err = redb_err(&path);
        // `create` opens an existing database or initialises an empty file.
        let db = Database::create(&path).map_err(|e| err(&e))?;
        // A newer schema is refused before any write transaction touches
        // the file.
        {
            let txn = db.begin_read().map_err(|e| err(&e))?;
            let found = match txn.open_table(META) {
                Ok(meta) => meta
                    .get(META_SCHEMA)
                    .map_err(|e| err(&e))?
                    .map(|v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(err(&e)),
            };
            if let Some(found) = found.filter(|f| *f > SCHEMA) {
                return Err(DbError::Schema {
                    path: path.clone(),
                    found,
                });
            }
        }
        let txn = db.begin_write().map_err(|e| err(&e))?;
        let imported;
        {
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            txn.open_table(PINS).map_err(|e| err(&e))?;
            let schema = meta
                .get(META_SCHEMA)
                .map_err(|e| err(&e))?
                .map(|v| v.value());
            match schema {
                None => {
                    meta.insert(META_SCHEMA, SCHEMA).map_err(|e| err(&e))?;
                }
                Some(SCHEMA) => {}
                Some(found) => {
                    return Err(DbError::Schema {
                        path: path.clone(),
                        found,
                    });
                }
            }
            imported = meta.get(META_IMPORTED).map_err(|e| err(&e))?.is_some();
        }
        txn.commit().map_err(|e| err(&e))?;
        let state = StateDb {
            inner: Arc::new(Shared {
                db,
                path: path.clone(),
            }),
        };
        let json = data_dir.join(PINS_FILE);
        if !imported {
            state.import_pins_json(&json, insecure_permissions)?;
        }
        // Also after an import that a crash interrupted before the rename.
        set_aside_imported(&json)?;
        Ok(state)
    }

    /// The redb database, for the other tables' modules.
    pub(crate) fn database(&self) -> &Database {
        &self.inner.db
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The pins, with at most `first_use_limit` first-use pins.
    /// The pin store over this database.
    pub fn pins(&self, first_use_limit: u64) -> PinDb {
        PinDb {
            db: self.clone(),
            first_use_limit,
        }
    }

    fn import_pins_json(&self, json: &Path, insecure: bool) -> Result<(), DbError> {
        let exists = json.exists();
        let old = if exists {
            Some(PinStore::open(json, insecure).map_err(|e| DbError::Import {
                path: json.to_path_buf(),
                reason: e.to_string(),
            })?)
        } else {
            None
        };
        let path = &self.inner.path;
        let err = redb_err(path);
        let txn = self.inner.db.begin_write().map_err(|e| err(&e))?;
        let mut count = 0u64;
        {
            let mut pins = txn.open_table(PINS).map_err(|e| err(&e))?;
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            if let Some(old) = &old {
                for (peer, suite, pin) in old.iter() {
                    pins.insert(&key(peer, suite)[..], &value(pin)[..])
                        .map_err(|e| err(&e))?;
                    if pin.source != PinSource::Trusted {
                        count += 1;
                    }
                }
            }
            let before = meta
                .get(META_FIRST_USE)
                .map_err(|e| err(&e))?
                .map(|v| v.value())
                .unwrap_or(0);
            meta.insert(META_FIRST_USE, before + count)
                .map_err(|e| err(&e))?;
            meta.insert(META_IMPORTED, 1).map_err(|e| err(&e))?;
        }
        txn.commit().map_err(|e| err(&e))?;
        if let Some(old) = old {
            tracing::info!(pins = old.len(), file = %json.display(), "imported pins.json into the state database");
        }
        Ok(())
    }
}

/// Renames an imported `pins.json` to `pins.json.imported` (or
/// `pins.json.imported.N` if that exists: nothing is overwritten).
fn set_aside_imported(json: &Path) -> Result<(), DbError> {
    if !fsutil::exists(json)? {
        return Ok(());
    }
    let dir = json.parent().unwrap_or(Path::new("."));
    let mut target = dir.join(PINS_IMPORTED_FILE);
    let mut n = 1;
    while fsutil::exists(&target)? {
        n += 1;
        target = dir.join(format!("{PINS_IMPORTED_FILE}.{n}"));
    }
    std::fs::rename(json, &target).map_err(fsutil::io_err("renaming", json))?;
    fsutil::sync_dir(dir)?;
    tracing::info!(from = %json.display(), to = %target.display(), "the imported pins.json was set aside");
    Ok(())
}

/// One pin, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRow {
    /// The peer.
    pub peer: PeerId,
    /// The suite (`None`: an operator pin for every suite without its own).
    pub suite: Option<Suite>,
    /// The pin.
    pub pin: Pin,
}

/// Pin counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinCounts {
    /// Pins subject to the first-use limit (first use, and rotations of them).
    pub first_use: u64,
    /// Operator pins (never limited).
    pub operator: u64,
    /// All pins.
    pub total: u64,
}

/// The pins in the database. Cheap to clone; every call is one transaction.
#[derive(Clone, Debug)]
pub struct PinDb {
    db: StateDb,
    first_use_limit: u64,
}

fn peer_prefix(peer: &PeerId) -> Vec<u8> {
    let bytes = peer.to_bytes();
    let mut k = Vec::with_capacity(bytes.len() + 3);
    // PeerId bytes are at most 42 bytes (an identity multihash of an
    // Ed25519 key is 38): the length fits one byte.
    k.push(bytes.len().min(255) as u8);
    k.extend_from_slice(&bytes);
    k
}

fn key(peer: &PeerId, suite: Option<Suite>) -> Vec<u8> {
    let mut k = peer_prefix(peer);
    k.extend_from_slice(&suite.map(Suite::id).unwrap_or(0).to_be_bytes());
    k
}

fn value(pin: &Pin) -> [u8; VALUE_LEN] {
    let mut v = [0u8; VALUE_LEN];
    v[..32].copy_from_slice(pin.fingerprint.as_bytes());
    v[32] = match pin.source {
        PinSource::FirstUse => 1,
        PinSource::Trusted => 2,
        PinSource::Rotation => 3,
    };
    v[33..].copy_from_slice(&pin.pinned_at.to_be_bytes());
    v
}

fn corrupt(path: &Path, reason: impl Into<String>) -> DbError {
    DbError::Corrupt {
        path: path.to_path_buf(),
        table: "pins_v1",
        reason: reason.into(),
    }
}

fn decode_value(path: &Path, v: &[u8]) -> Result<Pin, DbError> {
    if v.len() != VALUE_LEN {
        return Err(corrupt(path, format!("value of {} bytes", v.len())));
    }
    let mut fp = [0u8; 32];
    fp.copy_from_slice(&v[..32]);
    let source = match v[32] {
        1 => PinSource::FirstUse,
        2 => PinSource::Trusted,
        3 => PinSource::Rotation,
        other => return Err(corrupt(path, format!("unknown pin source {other}"))),
    };
    let mut at = [0u8; 8];
    at.copy_from_slice(&v[33..]);
    Ok(Pin {
        fingerprint: Fingerprint::from_array(fp),
        source,
        pinned_at: u64::from_be_bytes(at),
    })
}

fn decode_key(path: &Path, k: &[u8]) -> Result<(PeerId, Option<Suite>), DbError> {
    let len = *k.first().ok_or_else(|| corrupt(path, "empty key"))? as usize;
    if k.len() != 1 + len + 2 {
        return Err(corrupt(path, format!("key of {} bytes", k.len())));
    }
    let peer = PeerId::from_bytes(&k[1..1 + len]).map_err(|e| corrupt(path, e.to_string()))?;
    let id = u16::from_be_bytes([k[1 + len], k[2 + len]]);
    let suite = match id {
        0 => None,
        id => Some(
            Suite::from_id(id).ok_or_else(|| corrupt(path, format!("unknown suite id {id}")))?,
        ),
    };
    Ok((peer, suite))
}

/// Whether the pin counts against the first-use limit.
fn limited(pin: &Pin) -> bool {
    pin.source != PinSource::Trusted
}

fn read_pins_of(
    path: &Path,
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    peer: &PeerId,
) -> Result<Vec<(Option<Suite>, Pin)>, DbError> {
    let err = redb_err(path);
    let mut lo = peer_prefix(peer);
    let mut hi = lo.clone();
    lo.extend_from_slice(&[0, 0]);
    hi.extend_from_slice(&[0xff, 0xff]);
    let mut out = Vec::new();
    for row in table
        .range::<&[u8]>(&lo[..]..=&hi[..])
        .map_err(|e| err(&e))?
    {
        let (k, v) = row.map_err(|e| err(&e))?;
        let (_, suite) = decode_key(path, k.value())?;
        out.push((suite, decode_value(path, v.value())?));
    }
    Ok(out)
}

impl PinDb {
    fn path(&self) -> &Path {
        &self.db.inner.path
    }

    /// Every pin of `peer` (suite `None` = suite-less operator pin), in
    /// suite order.
    pub fn pins_of(&self, peer: &PeerId) -> Result<Vec<(Option<Suite>, Pin)>, DbError> {
        let path = self.path();
        let err = redb_err(path);
        let txn = self.db.inner.db.begin_read().map_err(|e| err(&e))?;
        let table = txn.open_table(PINS).map_err(|e| err(&e))?;
        read_pins_of(path, &table, peer)
    }

    /// The pin that applies to (peer, suite): the suite's own, else a
    /// suite-less operator pin.
    pub fn pinned(&self, peer: &PeerId, suite: Suite) -> Result<Option<Pin>, DbError> {
        let pins = self.pins_of(peer)?;
        Ok(applying(&pins, suite))
    }

    /// Whether `peer` has at least one pin (rev 3: pinned across suites).
    pub fn is_pinned(&self, peer: &PeerId) -> Result<bool, DbError> {
        Ok(!self.pins_of(peer)?.is_empty())
    }

    /// After a *whole* handshake succeeded (never from a record alone): in
    /// one write transaction, pins on first use (within the limit), moves a
    /// pin by a verified rotation, or refuses another key or an unpinned
    /// suite of a pinned peer (§8.3 rev 3).
    pub fn commit_handshake(
        &self,
        peer: &PeerId,
        suite: Suite,
        fingerprint: Fingerprint,
        rotated_from: Option<Fingerprint>,
        now: u64,
    ) -> Result<PinUpdate, PinError> {
        self.commit_handshake_admitting(peer, suite, fingerprint, rotated_from, now, &mut || true)
    }

    /// [`PinDb::commit_handshake`], asking `admit_first_use` (only when a
    /// new first-use pin would be made, within the limit) whether it may
    /// be: a `false` pins nothing ([`PinUpdate::SourceLimited`]).
    pub fn commit_handshake_admitting(
        &self,
        peer: &PeerId,
        suite: Suite,
        fingerprint: Fingerprint,
        rotated_from: Option<Fingerprint>,
        now: u64,
        admit_first_use: &mut dyn FnMut() -> bool,
    ) -> Result<PinUpdate, PinError> {
        let path = self.path().to_path_buf();
        let err = redb_err(&path);
        let txn = self.db.inner.db.begin_write().map_err(|e| err(&e))?;
        let update;
        {
            let mut table = txn.open_table(PINS).map_err(|e| err(&e))?;
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            let pins = read_pins_of(&path, &table, peer)?;
            let mismatch = |pinned: Fingerprint| PinError::KeyMismatch {
                peer: Box::new(*peer),
                suite,
                pinned,
                record: fingerprint,
            };
            match applying(&pins, suite) {
                Some(p) if p.fingerprint == fingerprint => return Ok(PinUpdate::Unchanged),
                Some(p) if rotated_from == Some(p.fingerprint) => {
                    let pin = Pin {
                        fingerprint,
                        source: PinSource::Rotation,
                        pinned_at: now,
                    };
                    table
                        .insert(&key(peer, Some(suite))[..], &value(&pin)[..])
                        .map_err(|e| err(&e))?;
                    if !pins.iter().any(|(s, _)| *s == Some(suite)) {
                        // A suite-less operator pin moved for this suite: a
                        // new limited pin.
                        let n = first_use(&meta, &path)?;
                        meta.insert(META_FIRST_USE, n + 1).map_err(|e| err(&e))?;
                    }
                    update = PinUpdate::Moved {
                        from: p.fingerprint,
                        to: fingerprint,
                    };
                }
                Some(p) => return Err(mismatch(p.fingerprint)),
                None if !pins.is_empty() => {
                    // Pinned under other suites only (rev 3).
                    return Err(mismatch(pins[0].1.fingerprint));
                }
                None => {
                    let n = first_use(&meta, &path)?;
                    if n >= self.first_use_limit {
                        return Ok(PinUpdate::PinsFull);
                    }
                    if !admit_first_use() {
                        return Ok(PinUpdate::SourceLimited);
                    }
                    let pin = Pin {
                        fingerprint,
                        source: PinSource::FirstUse,
                        pinned_at: now,
                    };
                    table
                        .insert(&key(peer, Some(suite))[..], &value(&pin)[..])
                        .map_err(|e| err(&e))?;
                    meta.insert(META_FIRST_USE, n + 1).map_err(|e| err(&e))?;
                    update = PinUpdate::Pinned;
                }
            }
        }
        txn.commit().map_err(|e| err(&e))?;
        Ok(update)
    }

    /// First-use pins carried over from elsewhere (an older store, a
    /// backup), many at once in one write transaction: counted against the
    /// first-use limit like any first-use pin, but never refused by it (the
    /// limit only stops *new* pins). An existing pin of the same (peer,
    /// suite) is replaced. Returns how many were written.
    pub fn import_first_use_batch(
        &self,
        pins: impl IntoIterator<Item = (PeerId, Suite, Fingerprint)>,
        now: u64,
    ) -> Result<usize, PinError> {
        let path = self.path().to_path_buf();
        let err = redb_err(&path);
        let txn = self.db.inner.db.begin_write().map_err(|e| err(&e))?;
        let mut written = 0usize;
        {
            let mut table = txn.open_table(PINS).map_err(|e| err(&e))?;
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            let mut added = 0u64;
            for (peer, suite, fingerprint) in pins {
                let pin = Pin {
                    fingerprint,
                    source: PinSource::FirstUse,
                    pinned_at: now,
                };
                let old = table
                    .insert(&key(&peer, Some(suite))[..], &value(&pin)[..])
                    .map_err(|e| err(&e))?
                    .map(|v| decode_value(&path, v.value()))
                    .transpose()?;
                if !old.as_ref().is_some_and(limited) {
                    added += 1;
                }
                written += 1;
            }
            let n = first_use(&meta, &path)?;
            meta.insert(META_FIRST_USE, n.saturating_add(added))
                .map_err(|e| err(&e))?;
        }
        txn.commit().map_err(|e| err(&e))?;
        Ok(written)
    }

    /// An operator pin (config `trusted_peers`, `pqnode pins add`): never
    /// limited or evicted; replaces the pin of the same (peer, suite).
    pub fn add_operator(
        &self,
        peer: &PeerId,
        suite: Option<Suite>,
        fingerprint: Fingerprint,
        now: u64,
    ) -> Result<(), PinError> {
        self.add_operator_batch([(*peer, suite, fingerprint)], now)
            .map(|_| ())
    }

    /// Operator pins, many at once, in one write transaction (all or
    /// none): the configured `trusted_peers` at start, bulk imports.
    /// Returns how many were written.
    pub fn add_operator_batch(
        &self,
        pins: impl IntoIterator<Item = (PeerId, Option<Suite>, Fingerprint)>,
        now: u64,
    ) -> Result<usize, PinError> {
        let path = self.path().to_path_buf();
        let err = redb_err(&path);
        let txn = self.db.inner.db.begin_write().map_err(|e| err(&e))?;
        let mut written = 0;
        {
            let mut table = txn.open_table(PINS).map_err(|e| err(&e))?;
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            let mut freed = 0u64;
            for (peer, suite, fingerprint) in pins {
                let pin = Pin {
                    fingerprint,
                    source: PinSource::Trusted,
                    pinned_at: now,
                };
                let old = table
                    .insert(&key(&peer, suite)[..], &value(&pin)[..])
                    .map_err(|e| err(&e))?
                    .map(|v| decode_value(&path, v.value()))
                    .transpose()?;
                if old.as_ref().is_some_and(limited) {
                    freed += 1;
                }
                written += 1;
            }
            if freed > 0 {
                let n = first_use(&meta, &path)?;
                meta.insert(META_FIRST_USE, n.saturating_sub(freed))
                    .map_err(|e| err(&e))?;
            }
        }
        txn.commit().map_err(|e| err(&e))?;
        Ok(written)
    }

    /// Removes (peer, suite), or every pin of `peer` when `suite` is `None`.
    /// Returns how many were removed.
    pub fn remove(&self, peer: &PeerId, suite: Option<Suite>) -> Result<usize, PinError> {
        let path = self.path().to_path_buf();
        let err = redb_err(&path);
        let txn = self.db.inner.db.begin_write().map_err(|e| err(&e))?;
        let removed;
        {
            let mut table = txn.open_table(PINS).map_err(|e| err(&e))?;
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            let pins = read_pins_of(&path, &table, peer)?;
            let doomed: Vec<(Option<Suite>, Pin)> = pins
                .into_iter()
                .filter(|(s, _)| suite.is_none() || *s == suite)
                .collect();
            let mut limited_gone = 0;
            for (s, pin) in &doomed {
                table.remove(&key(peer, *s)[..]).map_err(|e| err(&e))?;
                if limited(pin) {
                    limited_gone += 1;
                }
            }
            if limited_gone > 0 {
                let n = first_use(&meta, &path)?;
                meta.insert(META_FIRST_USE, n.saturating_sub(limited_gone))
                    .map_err(|e| err(&e))?;
            }
            removed = doomed.len();
        }
        txn.commit().map_err(|e| err(&e))?;
        Ok(removed)
    }

    /// Pins of whole peers in key order, starting after peer `after`: at
    /// least `limit` rows unless the end is reached (a peer's pins are
    /// never split across pages, so a page may hold a few more).
    pub fn list(&self, after: Option<&PeerId>, limit: usize) -> Result<Vec<PinRow>, DbError> {
        let path = self.path();
        let err = redb_err(path);
        let txn = self.db.inner.db.begin_read().map_err(|e| err(&e))?;
        let table = txn.open_table(PINS).map_err(|e| err(&e))?;
        let start = after.map(|p| {
            let mut k = peer_prefix(p);
            k.extend_from_slice(&[0xff, 0xff]);
            k
        });
        let range = match &start {
            Some(s) => table.range::<&[u8]>((
                std::ops::Bound::Excluded(&s[..]),
                std::ops::Bound::Unbounded,
            )),
            None => table.range::<&[u8]>(..),
        }
        .map_err(|e| err(&e))?;
        let mut out: Vec<PinRow> = Vec::new();
        for row in range {
            let (k, v) = row.map_err(|e| err(&e))?;
            let (peer, suite) = decode_key(path, k.value())?;
            if out.len() >= limit && out.last().is_some_and(|r| r.peer != peer) {
                break;
            }
            out.push(PinRow {
                peer,
                suite,
                pin: decode_value(path, v.value())?,
            });
        }
        Ok(out)
    }

    /// Pin counts (without scanning the pins).
    pub fn counts(&self) -> Result<PinCounts, DbError> {
        let path = self.path();
        let err = redb_err(path);
        let txn = self.db.inner.db.begin_read().map_err(|e| err(&e))?;
        let table = txn.open_table(PINS).map_err(|e| err(&e))?;
        let meta = txn.open_table(META).map_err(|e| err(&e))?;
        let total = table.len().map_err(|e| err(&e))?;
        let first_use = first_use(&meta, path)?.min(total);
        Ok(PinCounts {
            first_use,
            operator: total - first_use,
            total,
        })
    }
}

fn first_use(meta: &impl ReadableTable<&'static str, u64>, path: &Path) -> Result<u64, DbError> {
    Ok(meta
        .get(META_FIRST_USE)
        .map_err(|e| redb_err(path)(&e))?
        .map(|v| v.value())
        .unwrap_or(0))
}

fn applying(pins: &[(Option<Suite>, Pin)], suite: Suite) -> Option<Pin> {
    pins.iter()
        .find(|(s, _)| *s == Some(suite))
        .or_else(|| pins.iter().find(|(s, _)| s.is_none()))
        .map(|(_, p)| *p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(b: u8) -> Fingerprint {
        Fingerprint::from_array([b; 32])
    }

    const K: Suite = Suite::Kyber1024Dilithium5;
    const M: Suite = Suite::Mlkem1024Mldsa87;

    fn db(limit: u64) -> (tempfile::TempDir, PinDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(dir.path(), false).unwrap();
        (dir, db.pins(limit))
    }

    #[test]
    fn first_use_then_unchanged_then_mismatch_and_cross_suite_mismatch() {
        let (_d, pins) = db(10);
        let p = PeerId::random();
        assert!(!pins.is_pinned(&p).unwrap());
        assert_eq!(
            pins.commit_handshake(&p, K, fp(1), None, 5).unwrap(),
            PinUpdate::Pinned
        );
        assert!(pins.is_pinned(&p).unwrap());
        assert_eq!(
            pins.commit_handshake(&p, K, fp(1), None, 6).unwrap(),
            PinUpdate::Unchanged
        );
        assert!(matches!(
            pins.commit_handshake(&p, K, fp(2), None, 6),
            Err(PinError::KeyMismatch { .. })
        ));
        // Rev 3: a pinned peer under a suite it has no pin for.
        assert!(matches!(
            pins.commit_handshake(&p, M, fp(3), None, 6),
            Err(PinError::KeyMismatch { .. })
        ));
        assert_eq!(pins.pins_of(&p).unwrap().len(), 1);
        assert_eq!(pins.pinned(&p, K).unwrap().unwrap().fingerprint, fp(1));
        assert_eq!(pins.counts().unwrap().first_use, 1);
    }

    #[test]
    fn operator_batch_writes_all_and_frees_replaced_first_use_pins() {
        let (_d, pins) = db(10);
        let a = PeerId::random();
        pins.commit_handshake(&a, K, fp(1), None, 1).unwrap();
        assert_eq!(pins.counts().unwrap().first_use, 1);
        let others: Vec<_> = (0..50).map(|_| PeerId::random()).collect();
        let batch =
            std::iter::once((a, Some(K), fp(7))).chain(others.iter().map(|p| (*p, None, fp(8))));
        assert_eq!(pins.add_operator_batch(batch, 2).unwrap(), 51);
        let c = pins.counts().unwrap();
        assert_eq!((c.first_use, c.operator, c.total), (0, 51, 51));
        let pin = pins.pinned(&a, K).unwrap().unwrap();
        assert_eq!((pin.fingerprint, pin.source), (fp(7), PinSource::Trusted));
        assert_eq!(
            pins.pinned(&others[9], M).unwrap().unwrap().fingerprint,
            fp(8)
        );
    }

    #[test]
    fn rotation_moves_the_pin_only_from_the_pinned_key() {
        let (_d, pins) = db(10);
        let p = PeerId::random();
        pins.commit_handshake(&p, K, fp(1), None, 1).unwrap();
        assert!(matches!(
            pins.commit_handshake(&p, K, fp(2), Some(fp(9)), 2),
            Err(PinError::KeyMismatch { .. })
        ));
        assert_eq!(
            pins.commit_handshake(&p, K, fp(2), Some(fp(1)), 2).unwrap(),
            PinUpdate::Moved {
                from: fp(1),
                to: fp(2)
            }
        );
        let pin = pins.pinned(&p, K).unwrap().unwrap();
        assert_eq!((pin.fingerprint, pin.source), (fp(2), PinSource::Rotation));
        assert_eq!(pins.counts().unwrap().first_use, 1);
    }

    #[test]
    fn the_first_use_limit_leaves_sessions_unpinned_but_not_operator_pins() {
        let (_d, pins) = db(2);
        for _ in 0..2 {
            assert_eq!(
                pins.commit_handshake(&PeerId::random(), K, fp(1), None, 1)
                    .unwrap(),
                PinUpdate::Pinned
            );
        }
        let late = PeerId::random();
        assert_eq!(
            pins.commit_handshake(&late, K, fp(1), None, 1).unwrap(),
            PinUpdate::PinsFull
        );
        assert!(!pins.is_pinned(&late).unwrap());
        for _ in 0..5 {
            pins.add_operator(&PeerId::random(), None, fp(4), 1)
                .unwrap();
        }
        let c = pins.counts().unwrap();
        assert_eq!((c.first_use, c.operator, c.total), (2, 5, 7));
    }

    #[test]
    fn suite_less_operator_pins_apply_to_every_suite_and_remove_counts() {
        let (_d, pins) = db(10);
        let p = PeerId::random();
        pins.add_operator(&p, None, fp(7), 1).unwrap();
        assert_eq!(pins.pinned(&p, K).unwrap().unwrap().fingerprint, fp(7));
        assert_eq!(pins.pinned(&p, M).unwrap().unwrap().fingerprint, fp(7));
        assert_eq!(
            pins.commit_handshake(&p, M, fp(7), None, 2).unwrap(),
            PinUpdate::Unchanged
        );
        assert!(pins.commit_handshake(&p, M, fp(8), None, 2).is_err());
        pins.commit_handshake(&PeerId::random(), K, fp(1), None, 1)
            .unwrap();
        assert_eq!(pins.remove(&p, Some(K)).unwrap(), 0);
        assert_eq!(pins.remove(&p, None).unwrap(), 1);
        assert!(!pins.is_pinned(&p).unwrap());
        assert_eq!(pins.counts().unwrap().total, 1);
    }

    #[test]
    fn pages_never_split_a_peer_and_cover_everything() {
        let (_d, pins) = db(1000);
        for _ in 0..25 {
            let p = PeerId::random();
            pins.add_operator(&p, Some(K), fp(1), 1).unwrap();
            pins.add_operator(&p, Some(M), fp(2), 1).unwrap();
        }
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = pins.list(after.as_ref(), 7).unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() >= 7 || page.len() % 2 == 0);
            after = page.last().map(|r| r.peer);
            all.extend(page);
        }
        assert_eq!(all.len(), 50);
    }

    #[test]
    fn pins_json_is_imported_once_then_set_aside_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = PeerId::random();
        {
            let mut old = PinStore::open(&dir.path().join(PINS_FILE), false).unwrap();
            old.preload(p, Some(K), fp(3), 1).unwrap();
        }
        let original = std::fs::read(dir.path().join(PINS_FILE)).unwrap();
        let db = StateDb::open(dir.path(), false).unwrap();
        let pins = db.pins(10);
        assert_eq!(pins.pinned(&p, K).unwrap().unwrap().fingerprint, fp(3));
        pins.remove(&p, None).unwrap();
        drop((pins, db));
        assert!(!dir.path().join(PINS_FILE).exists(), "set aside");
        assert_eq!(
            std::fs::read(dir.path().join(PINS_IMPORTED_FILE)).unwrap(),
            original,
            "renamed, bytes untouched"
        );
        // A pins.json that reappears (a crash between the import and the
        // rename, a restored backup) is not imported again, only set aside,
        // and the earlier one is not overwritten.
        std::fs::write(dir.path().join(PINS_FILE), &original).unwrap();
        let db = StateDb::open(dir.path(), false).unwrap();
        assert!(!db.pins(10).is_pinned(&p).unwrap(), "not imported again");
        assert!(!dir.path().join(PINS_FILE).exists());
        assert!(dir.path().join(format!("{PINS_IMPORTED_FILE}.2")).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(db.path()).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn an_open_or_linked_database_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        drop(StateDb::open(dir.path(), false).unwrap());
        let path = dir.path().join(DB_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = StateDb::open(dir.path(), false).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        let other = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&path, other.path().join(DB_FILE)).unwrap();
        let e = StateDb::open(other.path(), false).unwrap_err();
        assert!(e.to_string().contains("symbolic links"), "{e}");
    }

    #[test]
    fn a_corrupt_pins_json_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        fsutil::write_atomic(&dir.path().join(PINS_FILE), b"{nope").unwrap();
        let e = StateDb::open(dir.path(), false).unwrap_err();
        assert!(e.to_string().contains("pins.json"), "{e}");
        assert_eq!(
            std::fs::read(dir.path().join(PINS_FILE)).unwrap(),
            b"{nope",
            "left as it was"
        );
        assert!(!dir.path().join(PINS_IMPORTED_FILE).exists());
    }

    #[test]
    fn a_database_of_a_newer_schema_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        drop(StateDb::open(dir.path(), false).unwrap());
        let path = dir.path().join(DB_FILE);
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(META_SCHEMA, SCHEMA + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let e = StateDb::open(dir.path(), false).unwrap_err();
        assert!(
            matches!(e, DbError::Schema { found, .. } if found == SCHEMA + 1),
            "{e}"
        );
        assert!(e.to_string().contains("this build reads 1"), "{e}");
        // Not migrated or reset: the newer schema is still recorded.
        let db = Database::create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let schema = txn
            .open_table(META)
            .unwrap()
            .get(META_SCHEMA)
            .unwrap()
            .map(|v| v.value());
        assert_eq!(schema, Some(SCHEMA + 1));
    }
}
