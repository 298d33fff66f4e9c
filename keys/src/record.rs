//! The signed PQ peer record of PROTOCOL.md §4: build, encode, strict decode
//! and verification in the order §4 fixes, with one typed error per step.
//!
//! ```text
//! envelope = SignedEnvelope(identity key, "pqnode-peer-record", "/pqnode/record/1",
//!                           body || u16 len || SIG.sign(sig_sk, "pqnode-peer-record-v1" || body))
//! ```
//!
//! Callers only ever get a [`VerifiedRecord`] out of [`verify`]; nothing here
//! hands out unverified fields except [`decode`], which exists for tooling
//! and fuzzing.

mod codec;
mod error;
#[cfg(test)]
mod tests;

use libp2p::Multiaddr;
use libp2p::core::SignedEnvelope;
use libp2p::identity::{KeyType, Keypair, PeerId};
use pqnode_crypto::Suite;
use pqnode_crypto::sign::{SigningKey, VerifyingKey};

use crate::fingerprint::Fingerprint;

pub use codec::{DecodedRecord, RecordBody, RotationStatement, decode, dht_key, rotation_message};
#[cfg(test)]
use codec::{check_addrs, parse_envelope};
use codec::{record_sig_message, sig_len_u16};
pub use error::{BuildError, DecodeError, RecordError};

/// Domain-separation string of the libp2p envelope.
pub const DOMAIN: &str = "pqnode-peer-record";
/// Payload type of the libp2p envelope.
pub const PAYLOAD_TYPE: &[u8] = b"/pqnode/record/1";
/// Label prefixed to the body under the PQ record signature.
pub const RECORD_SIG_LABEL: &[u8] = b"pqnode-peer-record-v1";
/// Label of the rotation statement signed by the previous key.
pub const ROTATION_SIG_LABEL: &[u8] = b"pqnode-key-rotation-v1";
/// The body `version` this code speaks.
pub const VERSION: u8 = 1;
/// Default lifetime of a record: 24 h.
pub const DEFAULT_VALIDITY_SECS: u64 = 24 * 60 * 60;
/// Longest accepted `expires_at − issued_at` (fixed by §4): 7 days.
pub const MAX_VALIDITY_SECS: u64 = 604_800;
/// How far in the future `issued_at` may be (clock skew), in seconds.
pub const MAX_FUTURE_SKEW_SECS: u64 = 300;
/// At most this many addresses in a record.
pub const MAX_ADDRS: usize = 16;
/// Largest encoded multiaddr in a record, in bytes.
pub const MAX_ADDR_LEN: usize = 128;
/// Largest envelope accepted before any parsing (the handshake message
/// limit; a maximal record is about 18 KiB).
pub const MAX_ENVELOPE_LEN: usize = 32_768;

/// What to put in a new record.
#[derive(Debug, Clone)]
pub struct RecordParams<'a> {
    /// Sequence number (the key store hands out increasing ones).
    pub seq: u64,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds; usually `issued_at + DEFAULT_VALIDITY_SECS`.
    pub expires_at: u64,
    /// Addresses to publish.
    pub addrs: &'a [Multiaddr],
}

/// A freshly built record: the envelope bytes to send, and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord {
    envelope: Vec<u8>,
    body: Vec<u8>,
    suite: Suite,
    seq: u64,
    expires_at: u64,
}

impl SignedRecord {
    /// The envelope bytes (what goes on the wire, in the DHT, in files).
    pub fn envelope_bytes(&self) -> &[u8] {
        &self.envelope
    }
    /// The encoded body (what a verifier caches).
    pub fn body_bytes(&self) -> &[u8] {
        &self.body
    }
    /// The record's suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }
    /// The record's seq.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// When it expires (unix seconds).
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

/// Builds and signs a record for `identity` (Ed25519) and `key`; with
/// `previous`, the record carries a rotation statement signed by it. The
/// result is checked with [`verify`] before it is returned.
pub fn build(
    identity: &Keypair,
    key: &SigningKey,
    previous: Option<&SigningKey>,
    params: &RecordParams<'_>,
) -> Result<SignedRecord, BuildError> {
    if identity.key_type() != KeyType::Ed25519 {
        return Err(BuildError::IdentityNotEd25519);
    }
    let window = params.expires_at.checked_sub(params.issued_at);
    if !matches!(window, Some(w) if w > 0 && w <= MAX_VALIDITY_SECS) {
        return Err(BuildError::ValidityWindow {
            issued_at: params.issued_at,
            expires_at: params.expires_at,
        });
    }
    let suite = key.suite();
    let peer_id = identity.public().to_peer_id();
    let rotation = match previous {
        None => None,
        Some(old) => {
            if old.suite() != suite || old.verifying_key() == key.verifying_key() {
                return Err(BuildError::BadRotationKey);
            }
            let msg = rotation_message(&peer_id, suite, key.verifying_key().as_bytes(), params.seq);
            Some(RotationStatement {
                old_sig_pk: old.verifying_key().clone(),
                signature: old.sign(&msg)?,
            })
        }
    };
    let body = RecordBody {
        suite,
        peer_id,
        sig_pk: key.verifying_key().clone(),
        seq: params.seq,
        issued_at: params.issued_at,
        expires_at: params.expires_at,
        addrs: params.addrs.to_vec(),
        rotation,
    };
    let body_bytes = body.encode()?;
    let pq_sig = key.sign(&record_sig_message(&body_bytes))?;
    let mut payload = Vec::with_capacity(body_bytes.len() + 2 + pq_sig.len());
    payload.extend_from_slice(&body_bytes);
    payload.extend_from_slice(&sig_len_u16(suite)?.to_be_bytes());
    payload.extend_from_slice(&pq_sig);
    let envelope = SignedEnvelope::new(identity, DOMAIN.to_owned(), PAYLOAD_TYPE.to_vec(), payload)
        .map_err(|e| BuildError::Envelope(e.to_string()))?
        .into_protobuf_encoding();
    // Never publish a record we would refuse ourselves.
    let enabled = [suite];
    let ctx = VerifyContext::new(params.issued_at, &enabled);
    verify(&envelope, &ctx).map_err(BuildError::SelfCheck)?;
    Ok(SignedRecord {
        envelope,
        body: body_bytes,
        suite,
        seq: params.seq,
        expires_at: params.expires_at,
    })
}

/// The verifier's cached record of the same peer and suite (§4 step 7).
#[derive(Debug, Clone, Copy)]
pub struct CachedRecord<'a> {
    /// Its seq.
    pub seq: u64,
    /// Its encoded body.
    pub body: &'a [u8],
}

/// Everything verification depends on besides the record.
#[derive(Debug, Clone)]
pub struct VerifyContext<'a> {
    /// The verifier's clock, unix seconds.
    pub now: u64,
    /// The suites this node enables.
    pub enabled_suites: &'a [Suite],
    /// In a handshake, the Noise-authenticated PeerId of the remote.
    pub expected_peer: Option<PeerId>,
    /// In a handshake, the negotiated suite.
    pub negotiated_suite: Option<Suite>,
    /// The cached record of that peer and suite, if any.
    pub cached: Option<CachedRecord<'a>>,
    /// The pinned fingerprint of that peer and suite, if any.
    pub pinned: Option<Fingerprint>,
    /// Rev 3: the verifier pins this peer under suites other than the
    /// record's (and not under the record's): step 8 fails `key-mismatch`.
    pub pinned_other_suites: bool,
}

impl<'a> VerifyContext<'a> {
    /// A context with only a clock and the enabled suites.
    pub fn new(now: u64, enabled_suites: &'a [Suite]) -> Self {
        VerifyContext {
            now,
            enabled_suites,
            expected_peer: None,
            negotiated_suite: None,
            cached: None,
            pinned: None,
            pinned_other_suites: false,
        }
    }

    /// For a record received in a handshake: the Noise-authenticated
    /// PeerId and the negotiated suite must match.
    pub fn in_handshake(mut self, peer: PeerId, negotiated: Suite) -> Self {
        self.expected_peer = Some(peer);
        self.negotiated_suite = Some(negotiated);
        self
    }

    /// Sets the cached record of that peer and suite (step 7).
    pub fn with_cached(mut self, cached: Option<CachedRecord<'a>>) -> Self {
        self.cached = cached;
        self
    }

    /// Sets the pinned fingerprint of that peer and suite (step 8).
    pub fn with_pinned(mut self, pinned: Option<Fingerprint>) -> Self {
        self.pinned = pinned;
        self
    }

    /// Says whether the peer is pinned under other suites only (step 8,
    /// rev 3).
    pub fn with_pinned_other_suites(mut self, other: bool) -> Self {
        self.pinned_other_suites = other;
        self
    }
}

/// How the record's key relates to the pin (§8.3), once verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinCheck {
    /// No pin was given: the caller pins the key on first use (or refuses
    /// it when unpinned peers are not allowed).
    Unpinned,
    /// The key is the pinned one.
    Matched,
    /// A verified rotation statement from the pinned key: the pin moves to
    /// [`VerifiedRecord::fingerprint`].
    Rotated {
        /// The previously pinned fingerprint.
        from: Fingerprint,
    },
}

/// A record that passed every §4 step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedRecord {
    peer_id: PeerId,
    suite: Suite,
    sig_pk: VerifyingKey,
    seq: u64,
    issued_at: u64,
    expires_at: u64,
    addrs: Vec<Multiaddr>,
    body: Vec<u8>,
    envelope: Vec<u8>,
    rotated_from: Option<Fingerprint>,
    pin: PinCheck,
}

impl VerifiedRecord {
    /// The peer the record is about (equal to the envelope key's PeerId).
    pub fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }
    /// Its suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }
    /// The PQ signature verifying key the peer uses.
    pub fn sig_pk(&self) -> &VerifyingKey {
        &self.sig_pk
    }
    /// SHA-256 of `sig_pk`.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(&self.sig_pk)
    }
    /// Its seq.
    pub fn seq(&self) -> u64 {
        self.seq
    }
    /// Unix seconds.
    pub fn issued_at(&self) -> u64 {
        self.issued_at
    }
    /// Unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.expires_at
    }
    /// The published addresses.
    pub fn addrs(&self) -> &[Multiaddr] {
        &self.addrs
    }
    /// The encoded body (to cache for step 7 next time).
    pub fn body(&self) -> &[u8] {
        &self.body
    }
    /// The envelope bytes as received.
    pub fn envelope(&self) -> &[u8] {
        &self.envelope
    }
    /// Fingerprint of the rotation statement's `old_sig_pk`, if the record
    /// carries a (verified) one.
    pub fn rotated_from(&self) -> Option<Fingerprint> {
        self.rotated_from
    }
    /// Outcome of the pin check (step 8).
    pub fn pin(&self) -> PinCheck {
        self.pin
    }
}

/// Decodes and verifies envelope bytes in the order of §4; the first failing
/// step is the error. This is the verifier the handshake, the DHT validator
/// and `pqnode keys verify-record` call.
pub fn verify(bytes: &[u8], ctx: &VerifyContext<'_>) -> Result<VerifiedRecord, RecordError> {
    // 1. decode
    let decoded = decode(bytes, ctx.enabled_suites)?;
    let body = &decoded.body;

    // 2. envelope signature, PeerIds
    if !decoded.envelope.verify(DOMAIN.to_owned()) {
        return Err(RecordError::EnvelopeSignature);
    }
    let key_peer = decoded.envelope_key.to_peer_id();
    if key_peer != body.peer_id {
        return Err(RecordError::PeerIdMismatch {
            record: Box::new(body.peer_id),
            what: "envelope key's PeerId",
            expected: Box::new(key_peer),
        });
    }
    if let Some(expected) = ctx.expected_peer
        && expected != body.peer_id
    {
        return Err(RecordError::PeerIdMismatch {
            record: Box::new(body.peer_id),
            what: "Noise-authenticated PeerId",
            expected: Box::new(expected),
        });
    }

    // 3. negotiated suite
    if let Some(negotiated) = ctx.negotiated_suite
        && negotiated != body.suite
    {
        return Err(RecordError::SuiteMismatch {
            record: body.suite,
            negotiated,
        });
    }

    // 4. freshness
    if ctx.now >= body.expires_at {
        return Err(RecordError::Expired {
            expires_at: body.expires_at,
            now: ctx.now,
        });
    }
    if body.issued_at > ctx.now.saturating_add(MAX_FUTURE_SKEW_SECS) {
        return Err(RecordError::NotYetValid {
            issued_at: body.issued_at,
            now: ctx.now,
        });
    }
    match body.expires_at.checked_sub(body.issued_at) {
        Some(w) if w > 0 && w <= MAX_VALIDITY_SECS => {}
        _ => {
            return Err(RecordError::BadValidityWindow {
                issued_at: body.issued_at,
                expires_at: body.expires_at,
            });
        }
    }

    // 5. PQ signature
    body.sig_pk
        .verify(
            &record_sig_message(&decoded.body_bytes),
            &decoded.pq_signature,
        )
        .map_err(|_| RecordError::PqSignature)?;

    // 6. rotation statement
    if let Some(rot) = &body.rotation {
        let msg = rotation_message(&body.peer_id, body.suite, body.sig_pk.as_bytes(), body.seq);
        rot.old_sig_pk
            .verify(&msg, &rot.signature)
            .map_err(|_| RecordError::RotationSignature)?;
    }

    // 7. seq against the cached record
    if let Some(cached) = ctx.cached {
        if body.seq < cached.seq {
            return Err(RecordError::StaleSeq {
                seq: body.seq,
                cached: cached.seq,
            });
        }
        if body.seq == cached.seq && decoded.body_bytes != cached.body {
            return Err(RecordError::ConflictingRecord { seq: body.seq });
        }
    }

    // 8. pinning
    let fingerprint = Fingerprint::of(&body.sig_pk);
    let rotated_from = body
        .rotation
        .as_ref()
        .map(|r| Fingerprint::of(&r.old_sig_pk));
    let pin = match ctx.pinned {
        None if ctx.pinned_other_suites => {
            return Err(RecordError::PinnedOtherSuites {
                record: fingerprint,
            });
        }
        None => PinCheck::Unpinned,
        Some(pinned) if pinned == fingerprint => PinCheck::Matched,
        Some(pinned) if rotated_from == Some(pinned) => PinCheck::Rotated { from: pinned },
        Some(pinned) => {
            return Err(RecordError::KeyMismatch {
                pinned,
                record: fingerprint,
            });
        }
    };

    let DecodedRecord {
        body, body_bytes, ..
    } = decoded;
    Ok(VerifiedRecord {
        peer_id: body.peer_id,
        suite: body.suite,
        sig_pk: body.sig_pk,
        seq: body.seq,
        issued_at: body.issued_at,
        expires_at: body.expires_at,
        addrs: body.addrs,
        body: body_bytes,
        envelope: bytes.to_vec(),
        rotated_from,
        pin,
    })
}
