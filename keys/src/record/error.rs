//! The errors of building, decoding and verifying records.

use libp2p::identity::PeerId;
use pqnode_crypto::Suite;

use crate::fingerprint::Fingerprint;

/// Why bytes are not a well-formed record (§4 error name `decode`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input exceeds [`MAX_ENVELOPE_LEN`].
    #[error("envelope is {len} bytes, at most {max} accepted")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The protobuf envelope is malformed.
    #[error("malformed envelope: {0}")]
    Envelope(&'static str),
    /// The envelope does not re-encode to the bytes received.
    #[error("envelope encoding is not canonical")]
    NonCanonical,
    /// The envelope's key is not an Ed25519 libp2p key.
    #[error("envelope key is not Ed25519")]
    KeyNotEd25519,
    /// The envelope's payload type is not [`PAYLOAD_TYPE`].
    #[error("envelope payload type is not /pqnode/record/1")]
    PayloadType,
    /// An unknown body version.
    #[error("unsupported record version {0}")]
    Version(u8),
    /// The input ended inside a field.
    #[error("truncated at {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// A length field differs from the size its suite fixes.
    #[error("{field} length {got}, the suite requires {expected}")]
    Length {
        /// The field.
        field: &'static str,
        /// The suite's size.
        expected: usize,
        /// The length found.
        got: usize,
    },
    /// `peer_id` is not a canonical libp2p PeerId.
    #[error("peer_id is not a valid PeerId")]
    PeerId,
    /// The rotation flag is neither 0 nor 1.
    #[error("rotation flag {0} (must be 0 or 1)")]
    RotationFlag(u8),
    /// Bytes follow the signature.
    #[error("{0} trailing bytes after the signature")]
    TrailingBytes(usize),
    /// More than [`MAX_ADDRS`] addresses.
    #[error("{0} addresses, at most 16")]
    TooManyAddrs(usize),
    /// An address outside 1–128 bytes.
    #[error("address {index} is {len} bytes (must be 1-128)")]
    AddrLength {
        /// Position in the list.
        index: usize,
        /// Its length.
        len: usize,
    },
    /// An address that is not a canonical binary multiaddr.
    #[error("address {index} is not a valid binary multiaddr")]
    AddrParse {
        /// Position in the list.
        index: usize,
    },
    /// An address ending in /p2p of another peer.
    #[error("address {index} ends with /p2p of another peer")]
    AddrPeerId {
        /// Position in the list.
        index: usize,
    },
    /// Two byte-identical addresses.
    #[error("address {index} repeats an earlier one")]
    DuplicateAddr {
        /// Position in the list.
        index: usize,
    },
}

/// A record that failed verification: one variant per §4 step. The fixed
/// §4 name (for logs, metrics and test vectors) is [`RecordError::name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Step 1: malformed bytes.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// Step 1: a suite this verifier does not enable (or does not know).
    #[error("unsupported-suite: suite {id:#06x} is not enabled")]
    UnsupportedSuite {
        /// The record's suite id.
        id: u16,
    },
    /// Step 2: the envelope signature does not verify (or was made for
    /// another domain).
    #[error("envelope-signature: the libp2p envelope signature does not verify")]
    EnvelopeSignature,
    /// Step 2: the record's PeerId is not the envelope key's, or not the
    /// Noise-authenticated one.
    #[error("peer-id-mismatch: record names {record}, but the {what} is {expected}")]
    PeerIdMismatch {
        /// `body.peer_id` (boxed: PeerIds are large).
        record: Box<PeerId>,
        /// What it was compared with.
        what: &'static str,
        /// That PeerId.
        expected: Box<PeerId>,
    },
    /// Step 3: not the suite negotiated in the handshake.
    #[error("suite-mismatch: record is for {record}, the handshake negotiated {negotiated}")]
    SuiteMismatch {
        /// The record's suite.
        record: Suite,
        /// The negotiated suite.
        negotiated: Suite,
    },
    /// Step 4: `now ≥ expires_at`.
    #[error("expired: record expired at {expires_at}, now is {now}")]
    Expired {
        /// `expires_at`.
        expires_at: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// Step 4: `issued_at > now + 300`.
    #[error("not-yet-valid: record issued at {issued_at}, now is {now}")]
    NotYetValid {
        /// `issued_at`.
        issued_at: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// Step 4: not `0 < expires_at − issued_at ≤ 604800`.
    #[error("bad-validity-window: issued at {issued_at}, expires at {expires_at}")]
    BadValidityWindow {
        /// `issued_at`.
        issued_at: u64,
        /// `expires_at`.
        expires_at: u64,
    },
    /// Step 5: the PQ signature does not verify under `sig_pk`.
    #[error("pq-signature: the post-quantum record signature does not verify")]
    PqSignature,
    /// Step 6: the rotation statement does not verify under `old_sig_pk`.
    #[error("rotation-signature: the rotation statement does not verify under the old key")]
    RotationSignature,
    /// Step 7: lower `seq` than the cached record's.
    #[error("stale-seq: record seq {seq} is below the cached {cached}")]
    StaleSeq {
        /// The record's seq.
        seq: u64,
        /// The cached record's seq.
        cached: u64,
    },
    /// Step 7: same `seq` as the cached record, different body.
    #[error("conflicting-record: seq {seq} equals the cached record's but the bodies differ")]
    ConflictingRecord {
        /// The shared seq.
        seq: u64,
    },
    /// Step 8: a key other than the pinned one, without a rotation
    /// statement from the pinned key.
    #[error("key-mismatch: pinned key {pinned}, record key {record}")]
    KeyMismatch {
        /// The pinned fingerprint.
        pinned: Fingerprint,
        /// The record key's fingerprint.
        record: Fingerprint,
    },
    /// Step 8 (rev 3): the peer is pinned under other suites, not this one.
    #[error("key-mismatch: the peer is pinned under other suites only; record key {record}")]
    PinnedOtherSuites {
        /// The record key's fingerprint.
        record: Fingerprint,
    },
}

impl RecordError {
    /// The fixed §4 name of the failing step (`decode`, `unsupported-suite`,
    /// `envelope-signature`, …).
    pub fn name(&self) -> &'static str {
        match self {
            RecordError::Decode(_) => "decode",
            RecordError::UnsupportedSuite { .. } => "unsupported-suite",
            RecordError::EnvelopeSignature => "envelope-signature",
            RecordError::PeerIdMismatch { .. } => "peer-id-mismatch",
            RecordError::SuiteMismatch { .. } => "suite-mismatch",
            RecordError::Expired { .. } => "expired",
            RecordError::NotYetValid { .. } => "not-yet-valid",
            RecordError::BadValidityWindow { .. } => "bad-validity-window",
            RecordError::PqSignature => "pq-signature",
            RecordError::RotationSignature => "rotation-signature",
            RecordError::StaleSeq { .. } => "stale-seq",
            RecordError::ConflictingRecord { .. } => "conflicting-record",
            RecordError::KeyMismatch { .. } | RecordError::PinnedOtherSuites { .. } => {
                "key-mismatch"
            }
        }
    }

    /// Every §4 error name, in step order.
    pub const NAMES: [&'static str; 13] = [
        "decode",
        "unsupported-suite",
        "envelope-signature",
        "peer-id-mismatch",
        "suite-mismatch",
        "expired",
        "not-yet-valid",
        "bad-validity-window",
        "pq-signature",
        "rotation-signature",
        "stale-seq",
        "conflicting-record",
        "key-mismatch",
    ];
}

/// Why a record could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The fields would not pass our own decoder (too many addresses, an
    /// address of the wrong size, …).
    #[error("invalid record field: {0}")]
    Invalid(#[from] DecodeError),
    /// `expires_at` is not within (issued_at, issued_at + 7 days].
    #[error("validity window issued {issued_at} / expires {expires_at} is not 1 s to 7 days")]
    ValidityWindow {
        /// `issued_at`.
        issued_at: u64,
        /// `expires_at`.
        expires_at: u64,
    },
    /// The identity key is not Ed25519.
    #[error("the libp2p identity key must be Ed25519")]
    IdentityNotEd25519,
    /// The previous key of a rotation is of another suite or the same key.
    #[error("rotation: the previous key must be another key of the same suite")]
    BadRotationKey,
    /// A PQ signature failed.
    #[error("signing the record: {0}")]
    Sign(#[from] pqnode_crypto::CryptoError),
    /// The envelope signature failed.
    #[error("signing the envelope: {0}")]
    Envelope(String),
    /// The freshly built record failed our own verification (a bug).
    #[error("the built record does not verify: {0}")]
    SelfCheck(RecordError),
}
