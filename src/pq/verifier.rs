//! The record verifier the handshake calls: PROTOCOL.md §4 verification (in
//! pqnode-keys) plus this node's record cache (step 7) and pins (§8.3).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use libp2p::PeerId;
use pqnode_crypto::Suite;
use pqnode_crypto::handshake::{RecordRejected, RecordVerifier};
use pqnode_crypto::sign::VerifyingKey;
use pqnode_keys::pins::{PinError, PinStore, PinUpdate};
use pqnode_keys::record::{self, CachedRecord, RecordError, VerifyContext};
use pqnode_keys::time::unix_now;

use super::metrics::PqMetrics;

/// Records cached per (peer, suite); bounded.
pub const MAX_CACHED_RECORDS: usize = 4096;

/// (peer, suite) → the last accepted record's seq and body (§4 step 7).
type RecordCache = HashMap<(PeerId, Suite), (u64, Vec<u8>)>;

/// Verifies peer records against the cache and the pins, and pins keys on
/// first use. Shared by every handshake (internally locked, never across I/O).
pub struct PeerVerifier {
    enabled: Vec<Suite>,
    allow_unpinned: bool,
    pins: Mutex<PinStore>,
    cache: Mutex<RecordCache>,
    metrics: PqMetrics,
}

impl std::fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl PeerVerifier {
    /// A verifier for the `enabled` suites with these pins.
    pub fn new(
        enabled: Vec<Suite>,
        allow_unpinned: bool,
        pins: PinStore,
        metrics: PqMetrics,
    ) -> Arc<Self> {
        Arc::new(PeerVerifier {
            enabled,
            allow_unpinned,
            pins: Mutex::new(pins),
            cache: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// Whether `peer` has any pin (so it must never be served classically).
    pub fn is_pinned(&self, peer: &PeerId) -> bool {
        let pins = self.pins.lock().unwrap_or_else(PoisonError::into_inner);
        pins.iter().any(|(p, _, _)| p == peer)
    }

    /// Number of pins.
    pub fn pin_count(&self) -> usize {
        self.pins
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Verifies `bytes` as `peer`'s record for `suite` at `now`, then
    /// applies the pins. The error's text is the §4 name.
    pub fn verify(
        &self,
        bytes: &[u8],
        peer: PeerId,
        suite: Suite,
        now: u64,
    ) -> Result<VerifyingKey, RecordRejected> {
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.get(&(peer, suite)).cloned()
        };
        let pinned = {
            let pins = self.pins.lock().unwrap_or_else(PoisonError::into_inner);
            pins.pinned(&peer, suite)
        };
        if pinned.is_none() && !self.allow_unpinned {
            self.metrics.refuse("unpinned");
            return Err(RecordRejected {
                reason: "unpinned-peer".into(),
            });
        }
        let ctx = VerifyContext {
            now,
            enabled_suites: &self.enabled,
            expected_peer: Some(peer),
            negotiated_suite: Some(suite),
            cached: cached
                .as_ref()
                .map(|(seq, body)| CachedRecord { seq: *seq, body }),
            pinned,
        };
        let verified = record::verify(bytes, &ctx).map_err(|e| {
            if matches!(e, RecordError::KeyMismatch { .. }) {
                self.metrics.key_mismatch.inc();
            }
            RecordRejected {
                reason: e.name().to_owned(),
            }
        })?;
        {
            let mut pins = self.pins.lock().unwrap_or_else(PoisonError::into_inner);
            match pins.record_verified(&verified, now) {
                Ok(PinUpdate::Pinned) => {
                    tracing::info!(peer = %peer, suite = %suite, fingerprint = %verified.fingerprint(), "pinned PQ key on first use")
                }
                Ok(PinUpdate::Moved { from, to }) => {
                    tracing::info!(peer = %peer, suite = %suite, %from, %to, "pin moved by a verified rotation")
                }
                Ok(_) => {}
                Err(PinError::KeyMismatch { .. }) => {
                    self.metrics.key_mismatch.inc();
                    return Err(RecordRejected {
                        reason: "key-mismatch".into(),
                    });
                }
                Err(e) => {
                    // The pin could not be persisted: refuse rather than run unpinned.
                    tracing::error!(peer = %peer, error = %e, "cannot persist pin");
                    return Err(RecordRejected {
                        reason: "pin-store".into(),
                    });
                }
            }
        }
        {
            let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= MAX_CACHED_RECORDS
                && !cache.contains_key(&(peer, suite))
                && let Some(k) = cache.keys().next().copied()
            {
                cache.remove(&k);
            }
            cache.insert((peer, suite), (verified.seq(), verified.body().to_vec()));
        }
        Ok(verified.sig_pk().clone())
    }
}

impl RecordVerifier for PeerVerifier {
    fn verify_record(
        &self,
        record: &[u8],
        peer_id: &[u8],
        suite: Suite,
    ) -> Result<VerifyingKey, RecordRejected> {
        let peer = PeerId::from_bytes(peer_id).map_err(|_| RecordRejected {
            reason: "decode".into(),
        })?;
        self.verify(record, peer, suite, unix_now())
    }
}
