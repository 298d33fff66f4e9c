//! The record verifier the handshake calls: PROTOCOL.md §4 verification (in
//! pqnode-keys) against this node's record cache (step 7) and pins (step 8,
//! rev 3: across suites).
//!
//! Verification never writes: a handshake's [`HandshakeVerifier`] keeps what
//! it verified, and only after the whole handshake succeeded on this side
//! does [`PeerVerifier::commit`] pin the key (first use, or a verified
//! rotation) and cache the record (§8.3 rev 3).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use libp2p::PeerId;
use pqnode_crypto::Suite;
use pqnode_crypto::handshake::{RecordRejected, RecordVerifier};
use pqnode_crypto::sign::VerifyingKey;
use pqnode_keys::Fingerprint;
use pqnode_keys::db::PinDb;
use pqnode_keys::pins::{PinError, PinUpdate};
use pqnode_keys::record::{self, CachedRecord, RecordError, VerifyContext};
use pqnode_keys::time::unix_now;

use super::metrics::PqMetrics;
use super::policy::SuiteRule;

/// Records cached per (peer, suite); bounded.
pub const MAX_CACHED_RECORDS: usize = 4096;

/// (peer, suite) → the last accepted record's seq and body (§4 step 7).
type RecordCache = HashMap<(PeerId, Suite), (u64, Vec<u8>)>;

/// What one handshake verified of the peer's record, to commit once the
/// handshake has succeeded.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The peer.
    pub peer: PeerId,
    /// The negotiated suite.
    pub suite: Suite,
    /// SHA-256 of the record's key.
    pub fingerprint: Fingerprint,
    /// The pinned fingerprint a verified rotation statement moves away from.
    pub rotated_from: Option<Fingerprint>,
    seq: u64,
    body: Vec<u8>,
}

/// Verifies peer records against the cache and the pins; commits pins after
/// whole handshakes. Shared by every handshake (internally locked, never
/// across I/O; the pin database is read and written on blocking threads).
pub struct PeerVerifier {
    enabled: Vec<Suite>,
    allow_unpinned: bool,
    pins: PinDb,
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
        pins: PinDb,
        metrics: PqMetrics,
    ) -> Arc<Self> {
        Arc::new(PeerVerifier {
            enabled,
            allow_unpinned,
            pins,
            cache: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// The pin database.
    pub fn pins(&self) -> &PinDb {
        &self.pins
    }

    /// Whether `peer` is refused before any handshake work: it has no pin
    /// and `pq.allow_unpinned` is false (§8.3). Its PeerId is known from
    /// Noise, so neither side encapsulates or signs for it.
    pub fn refuses_unpinned(&self, peer: &PeerId) -> bool {
        !self.allow_unpinned && !self.is_pinned(peer)
    }

    /// Whether `peer` has any pin (so it must never be served classically).
    /// A database that cannot be read counts as pinned: the safe side.
    pub fn is_pinned(&self, peer: &PeerId) -> bool {
        match self.pins.is_pinned(peer) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(peer = %peer, error = %e, "cannot read pins; treating the peer as pinned");
                true
            }
        }
    }

    /// The suites `peer` may use in a handshake with us (§5 rev 3).
    pub fn suite_rule(&self, peer: &PeerId) -> Result<SuiteRule, RecordRejected> {
        let pins = self.pins.pins_of(peer).map_err(|e| {
            tracing::error!(peer = %peer, error = %e, "cannot read pins");
            RecordRejected {
                reason: "pin-store".into(),
            }
        })?;
        let pinned: Vec<Option<Suite>> = pins.iter().map(|(suite, _)| *suite).collect();
        Ok(super::policy::suites_to_offer(&self.enabled, &pinned))
    }

    /// A verifier for one handshake with `peer`.
    pub fn for_handshake(self: &Arc<Self>) -> HandshakeVerifier {
        HandshakeVerifier {
            shared: self.clone(),
            verified: Mutex::new(None),
        }
    }

    /// Verifies `bytes` as `peer`'s record for `suite` at `now` (§4 steps
    /// 1–8). Writes nothing.
    pub fn verify(
        &self,
        bytes: &[u8],
        peer: PeerId,
        suite: Suite,
        now: u64,
    ) -> Result<(VerifyingKey, Verified), RecordRejected> {
        let store_error = |e: &dyn std::fmt::Display| {
            tracing::error!(peer = %peer, error = %e, "cannot read pins");
            RecordRejected {
                reason: "pin-store".into(),
            }
        };
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            cache.get(&(peer, suite)).cloned()
        };
        let pinned = self
            .pins
            .pinned(&peer, suite)
            .map_err(|e| store_error(&e))?
            .map(|p| p.fingerprint);
        let pinned_other_suites =
            pinned.is_none() && self.pins.is_pinned(&peer).map_err(|e| store_error(&e))?;
        if pinned.is_none() && !pinned_other_suites && !self.allow_unpinned {
            return Err(RecordRejected {
                reason: "unpinned-peer".into(),
            });
        }
        let mut ctx = VerifyContext::new(now, &self.enabled)
            .in_handshake(peer, suite)
            .with_cached(
                cached
                    .as_ref()
                    .map(|(seq, body)| CachedRecord { seq: *seq, body }),
            )
            .with_pinned(pinned);
        ctx.pinned_other_suites = pinned_other_suites;
        let verified = record::verify(bytes, &ctx).map_err(|e| {
            let _: &RecordError = &e;
            RecordRejected {
                reason: e.name().to_owned(),
            }
        })?;
        let outcome = Verified {
            peer,
            suite,
            fingerprint: verified.fingerprint(),
            rotated_from: verified.rotated_from(),
            seq: verified.seq(),
            body: verified.body().to_vec(),
        };
        Ok((verified.sig_pk().clone(), outcome))
    }

    /// After a whole handshake: pins the key on first use (within the
    /// first-use limit) or moves the pin by a verified rotation, in one
    /// transaction that also re-checks the pin (two racing handshakes
    /// cannot both win), then caches the record. Blocking: call it on the
    /// blocking pool.
    /// `admit_first_use` is asked before a new first-use pin is made.
    pub fn commit(
        &self,
        v: &Verified,
        now: u64,
        admit_first_use: &mut dyn FnMut() -> bool,
    ) -> Result<PinUpdate, PinError> {
        let update = self.pins.commit_handshake_admitting(
            &v.peer,
            v.suite,
            v.fingerprint,
            v.rotated_from,
            now,
            admit_first_use,
        )?;
        match update {
            PinUpdate::Pinned => {
                tracing::info!(peer = %v.peer, suite = %v.suite, fingerprint = %v.fingerprint, "pinned PQ key on first use")
            }
            PinUpdate::Moved { from, to } => {
                tracing::info!(peer = %v.peer, suite = %v.suite, %from, %to, "pin moved by a verified rotation")
            }
            // Logged by the caller, within the per-peer log limit.
            PinUpdate::PinsFull => {
                self.metrics.pins_full.inc();
            }
            PinUpdate::SourceLimited => {
                self.metrics.pins_source_limited.inc();
            }
            _ => {}
        }
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_CACHED_RECORDS
            && !cache.contains_key(&(v.peer, v.suite))
            && let Some(k) = cache.keys().next().copied()
        {
            cache.remove(&k);
        }
        cache.insert((v.peer, v.suite), (v.seq, v.body.clone()));
        Ok(update)
    }
}

/// The verifier of one handshake: verifies through [`PeerVerifier`] and
/// keeps what it verified for [`PeerVerifier::commit`].
pub struct HandshakeVerifier {
    shared: Arc<PeerVerifier>,
    verified: Mutex<Option<Verified>>,
}

impl HandshakeVerifier {
    /// What the handshake verified, once the record passed.
    pub fn take(&self) -> Option<Verified> {
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl RecordVerifier for HandshakeVerifier {
    fn verify_record(
        &self,
        record: &[u8],
        peer_id: &[u8],
        suite: Suite,
    ) -> Result<VerifyingKey, RecordRejected> {
        let peer = PeerId::from_bytes(peer_id).map_err(|_| RecordRejected {
            reason: "decode".into(),
        })?;
        let (key, verified) = self.shared.verify(record, peer, suite, unix_now())?;
        *self.verified.lock().unwrap_or_else(PoisonError::into_inner) = Some(verified);
        Ok(key)
    }
}
