//! Key pinning (PROTOCOL.md §8.3): `(PeerId, suite) → SHA-256(sig_pk)`,
//! pinned on first verified use, preloadable by the operator, moved by a
//! verified rotation statement, persisted atomically in `pins.json`.
//!
//! A preload may name no suite: it then applies to every suite of that peer
//! that has no suite-specific pin (config `trusted_peers` gives a PeerId and
//! a fingerprint only).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use libp2p::identity::PeerId;
use pqnode_crypto::Suite;
use serde::{Deserialize, Serialize};

use crate::fingerprint::Fingerprint;
use crate::fsutil::{self, FsError};
use crate::record::VerifiedRecord;

/// File name of the pin store in the data directory.
pub const PINS_FILE: &str = "pins.json";
/// Version of the pins file format.
pub const PINS_FORMAT: u32 = 1;

/// How a pin came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PinSource {
    /// The first verified record of the peer (trust on first use).
    FirstUse,
    /// Preloaded by the operator.
    Trusted,
    /// Moved by a verified rotation statement.
    Rotation,
}

/// One pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    /// The pinned key's fingerprint.
    pub fingerprint: Fingerprint,
    /// How it was pinned.
    pub source: PinSource,
    /// When (unix seconds).
    pub pinned_at: u64,
}

/// What [`PinStore::record_verified`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinUpdate {
    /// The key was unpinned and is now pinned.
    Pinned,
    /// The key was already the pinned one.
    Unchanged,
    /// A rotation statement moved the pin.
    Moved {
        /// The old fingerprint.
        from: Fingerprint,
        /// The new fingerprint.
        to: Fingerprint,
    },
    /// The first-use limit is reached: nothing was pinned (§9 rev 3).
    PinsFull,
    /// The peer's network made its share of first-use pins for now:
    /// nothing was pinned.
    SourceLimited,
}

/// A pin-store failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// Reading or writing the file failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The state database failed.
    #[error(transparent)]
    Db(Box<crate::db::DbError>),
    /// The file is not a valid pins file (it is left untouched).
    #[error("pins file {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The record's key differs from the pin and carries no rotation
    /// statement from the pinned key.
    #[error("key-mismatch: {peer} ({suite}) is pinned to {pinned}, the record has {record}")]
    KeyMismatch {
        /// The peer (boxed: PeerIds are large).
        peer: Box<PeerId>,
        /// The suite.
        suite: Suite,
        /// The pinned fingerprint.
        pinned: Fingerprint,
        /// The record key's fingerprint.
        record: Fingerprint,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinsFile {
    format: u32,
    pins: Vec<PinEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PinEntry {
    peer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    suite: Option<String>,
    fingerprint: Fingerprint,
    source: PinSource,
    pinned_at: u64,
}

type PinKey = (PeerId, Option<Suite>);

/// The pins of this node, persisted when `path` is set.
#[derive(Debug, Clone, Default)]
pub struct PinStore {
    path: Option<PathBuf>,
    pins: BTreeMap<PinKey, Pin>,
}

impl PinStore {
    /// A store that is never persisted (tests, `verify-record`).
    pub fn in_memory() -> Self {
        PinStore::default()
    }

    /// Opens `path` (usually `<data dir>/pins.json`); a missing file is an
    /// empty store. A file that cannot be parsed is an error and is never
    /// overwritten.
    pub fn open(path: &Path, insecure_permissions: bool) -> Result<Self, PinError> {
        let mut store = PinStore {
            path: Some(path.to_path_buf()),
            pins: BTreeMap::new(),
        };
        let Some(bytes) = fsutil::read_private(path, insecure_permissions)? else {
            return Ok(store);
        };
        let parse_err = |reason: String| PinError::Parse {
            path: path.to_path_buf(),
            reason,
        };
        let file: PinsFile =
            serde_json::from_slice(&bytes).map_err(|e| parse_err(e.to_string()))?;
        if file.format != PINS_FORMAT {
            return Err(parse_err(format!(
                "unsupported format {} (this build reads 1)",
                file.format
            )));
        }
        for entry in file.pins {
            let peer = PeerId::from_str(&entry.peer_id)
                .map_err(|e| parse_err(format!("peer {:?}: {e}", entry.peer_id)))?;
            let suite = entry
                .suite
                .as_deref()
                .map(Suite::from_str)
                .transpose()
                .map_err(|e| parse_err(e.to_string()))?;
            let pin = Pin {
                fingerprint: entry.fingerprint,
                source: entry.source,
                pinned_at: entry.pinned_at,
            };
            if store.pins.insert((peer, suite), pin).is_some() {
                return Err(parse_err(format!(
                    "{peer} is pinned twice for the same suite"
                )));
            }
        }
        Ok(store)
    }

    /// Where the store is persisted, if anywhere.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The pin that applies to `(peer, suite)`: the suite's own, else a
    /// suite-less preload.
    pub fn get(&self, peer: &PeerId, suite: Suite) -> Option<&Pin> {
        self.pins
            .get(&(*peer, Some(suite)))
            .or_else(|| self.pins.get(&(*peer, None)))
    }

    /// The pinned fingerprint for `(peer, suite)`, to put in
    /// [`crate::record::VerifyContext::pinned`].
    pub fn pinned(&self, peer: &PeerId, suite: Suite) -> Option<Fingerprint> {
        self.get(peer, suite).map(|p| p.fingerprint)
    }

    /// Every pin, in a stable order.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, Option<Suite>, &Pin)> {
        self.pins
            .iter()
            .map(|((peer, suite), pin)| (peer, *suite, pin))
    }

    /// Number of pins.
    pub fn len(&self) -> usize {
        self.pins.len()
    }

    /// Whether there are no pins.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }

    /// Preloads a trusted pin (operator's `trusted_peers`); `suite: None`
    /// applies to every suite without a pin of its own. Replaces an
    /// existing pin of the same key and persists.
    pub fn preload(
        &mut self,
        peer: PeerId,
        suite: Option<Suite>,
        fingerprint: Fingerprint,
        now: u64,
    ) -> Result<(), PinError> {
        let pin = Pin {
            fingerprint,
            source: PinSource::Trusted,
            pinned_at: now,
        };
        if self.pins.get(&(peer, suite)) == Some(&pin) {
            return Ok(());
        }
        let previous = self.pins.insert((peer, suite), pin);
        self.persist_or_restore((peer, suite), previous)
    }

    /// Removes the pin of `(peer, suite)`, or every pin of `peer` when
    /// `suite` is `None`. Returns whether anything was removed.
    pub fn unpin(&mut self, peer: &PeerId, suite: Option<Suite>) -> Result<bool, PinError> {
        let before = self.pins.clone();
        match suite {
            Some(s) => {
                self.pins.remove(&(*peer, Some(s)));
            }
            None => self.pins.retain(|(p, _), _| p != peer),
        }
        if self.pins.len() == before.len() {
            return Ok(false);
        }
        if let Err(e) = self.persist() {
            self.pins = before;
            return Err(e);
        }
        Ok(true)
    }

    /// Applies §8.3 to a verified record: pins its key on first use, moves
    /// the pin when the record carries a rotation statement from the pinned
    /// key, refuses any other key. Decides from this store's own pins, not
    /// from what the caller passed to `verify`.
    pub fn record_verified(
        &mut self,
        record: &VerifiedRecord,
        now: u64,
    ) -> Result<PinUpdate, PinError> {
        let peer = *record.peer_id();
        let suite = record.suite();
        let fingerprint = record.fingerprint();
        match self.pinned(&peer, suite) {
            None => {
                let pin = Pin {
                    fingerprint,
                    source: PinSource::FirstUse,
                    pinned_at: now,
                };
                let previous = self.pins.insert((peer, Some(suite)), pin);
                self.persist_or_restore((peer, Some(suite)), previous)?;
                Ok(PinUpdate::Pinned)
            }
            Some(pinned) if pinned == fingerprint => Ok(PinUpdate::Unchanged),
            Some(pinned) if record.rotated_from() == Some(pinned) => {
                let pin = Pin {
                    fingerprint,
                    source: PinSource::Rotation,
                    pinned_at: now,
                };
                let previous = self.pins.insert((peer, Some(suite)), pin);
                self.persist_or_restore((peer, Some(suite)), previous)?;
                tracing::info!(peer = %peer, suite = %suite, from = %pinned, to = %fingerprint, "pin moved by a rotation statement");
                Ok(PinUpdate::Moved {
                    from: pinned,
                    to: fingerprint,
                })
            }
            Some(pinned) => Err(PinError::KeyMismatch {
                peer: Box::new(peer),
                suite,
                pinned,
                record: fingerprint,
            }),
        }
    }

    fn persist_or_restore(&mut self, key: PinKey, previous: Option<Pin>) -> Result<(), PinError> {
        if let Err(e) = self.persist() {
            match previous {
                Some(pin) => self.pins.insert(key, pin),
                None => self.pins.remove(&key),
            };
            return Err(e);
        }
        Ok(())
    }

    fn persist(&self) -> Result<(), PinError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let file = PinsFile {
            format: PINS_FORMAT,
            pins: self
                .pins
                .iter()
                .map(|((peer, suite), pin)| PinEntry {
                    peer_id: peer.to_base58(),
                    suite: suite.map(|s| s.name().to_owned()),
                    fingerprint: pin.fingerprint,
                    source: pin.source,
                    pinned_at: pin.pinned_at,
                })
                .collect(),
        };
        let mut json = serde_json::to_vec_pretty(&file).map_err(|e| PinError::Parse {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        json.push(b'\n');
        Ok(fsutil::write_atomic(path, &json)?)
    }
}
