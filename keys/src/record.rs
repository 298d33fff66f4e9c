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

use libp2p::Multiaddr;
use libp2p::core::SignedEnvelope;
use libp2p::identity::{KeyType, Keypair, PeerId, PublicKey};
use libp2p::multiaddr::Protocol;
use pqnode_crypto::Suite;
use pqnode_crypto::sign::{SigningKey, VerifyingKey};

use crate::fingerprint::Fingerprint;

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
            RecordError::KeyMismatch { .. } => "key-mismatch",
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

/// A rotation statement: the previous key vouches for this record's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationStatement {
    /// The previous signature public key.
    pub old_sig_pk: VerifyingKey,
    /// `SIG.sign(old sig_sk, "pqnode-key-rotation-v1" || u8 len || peer_id || u16 suite || sig_pk || u64 seq)`.
    pub signature: Vec<u8>,
}

/// The fields of a record body (§4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBody {
    /// The suite of `sig_pk`.
    pub suite: Suite,
    /// The issuing peer.
    pub peer_id: PeerId,
    /// The PQ signature public key.
    pub sig_pk: VerifyingKey,
    /// Sequence number, increased for every new record.
    pub seq: u64,
    /// Unix seconds.
    pub issued_at: u64,
    /// Unix seconds.
    pub expires_at: u64,
    /// Where the peer can be reached (empty in private mode).
    pub addrs: Vec<Multiaddr>,
    /// A rotation statement, if the key was just rotated.
    pub rotation: Option<RotationStatement>,
}

impl RecordBody {
    /// Encodes the body; fails if a field breaks a §4 rule.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let peer = self.peer_id.to_bytes();
        let peer_len = u8::try_from(peer.len()).map_err(|_| DecodeError::PeerId)?;
        let raw_addrs: Vec<Vec<u8>> = self.addrs.iter().map(|a| a.to_vec()).collect();
        let slices: Vec<&[u8]> = raw_addrs.iter().map(Vec::as_slice).collect();
        check_addrs(&slices, &self.peer_id)?;
        let count =
            u8::try_from(slices.len()).map_err(|_| DecodeError::TooManyAddrs(slices.len()))?;
        let mut out = Vec::with_capacity(64 + 2 * self.suite.sig_public_key_len());
        out.push(VERSION);
        out.extend_from_slice(&self.suite.id().to_be_bytes());
        out.push(peer_len);
        out.extend_from_slice(&peer);
        expect_len(
            "sig_pk",
            self.suite.sig_public_key_len(),
            self.sig_pk.as_bytes().len(),
        )?;
        out.extend_from_slice(self.sig_pk.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.issued_at.to_be_bytes());
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out.push(count);
        for addr in &slices {
            // check_addrs bounded every length to 1..=128.
            let len = u16::try_from(addr.len()).map_err(|_| DecodeError::AddrLength {
                index: 0,
                len: addr.len(),
            })?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(addr);
        }
        match &self.rotation {
            None => out.push(0),
            Some(rot) => {
                expect_len(
                    "old_sig_pk",
                    self.suite.sig_public_key_len(),
                    rot.old_sig_pk.as_bytes().len(),
                )?;
                expect_len("rot_sig", self.suite.signature_len(), rot.signature.len())?;
                out.push(1);
                out.extend_from_slice(rot.old_sig_pk.as_bytes());
                out.extend_from_slice(&sig_len_u16(self.suite)?.to_be_bytes());
                out.extend_from_slice(&rot.signature);
            }
        }
        Ok(out)
    }
}

fn expect_len(field: &'static str, expected: usize, got: usize) -> Result<(), DecodeError> {
    if expected == got {
        Ok(())
    } else {
        Err(DecodeError::Length {
            field,
            expected,
            got,
        })
    }
}

fn sig_len_u16(suite: Suite) -> Result<u16, DecodeError> {
    u16::try_from(suite.signature_len()).map_err(|_| DecodeError::Length {
        field: "signature",
        expected: usize::from(u16::MAX),
        got: suite.signature_len(),
    })
}

/// The message the previous key signs in a rotation statement.
pub fn rotation_message(peer_id: &PeerId, suite: Suite, sig_pk: &[u8], seq: u64) -> Vec<u8> {
    let peer = peer_id.to_bytes();
    let mut msg =
        Vec::with_capacity(ROTATION_SIG_LABEL.len() + 1 + peer.len() + 2 + sig_pk.len() + 8);
    msg.extend_from_slice(ROTATION_SIG_LABEL);
    // A PeerId's multihash is far below 256 bytes; encode() refuses longer.
    msg.push(u8::try_from(peer.len()).unwrap_or(u8::MAX));
    msg.extend_from_slice(&peer);
    msg.extend_from_slice(&suite.id().to_be_bytes());
    msg.extend_from_slice(sig_pk);
    msg.extend_from_slice(&seq.to_be_bytes());
    msg
}

fn record_sig_message(body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(RECORD_SIG_LABEL.len() + body.len());
    msg.extend_from_slice(RECORD_SIG_LABEL);
    msg.extend_from_slice(body);
    msg
}

/// The Kademlia key of a record (§4):
/// `/pqnode/record/<suite id, 4 lowercase hex digits>/<PeerId base58btc>`.
pub fn dht_key(suite: Suite, peer_id: &PeerId) -> Vec<u8> {
    format!("/pqnode/record/{:04x}/{}", suite.id(), peer_id.to_base58()).into_bytes()
}

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

/// A record that passed step 1 (decoding) only: its signatures are not
/// checked. Use [`verify`] for anything but inspection.
#[derive(Debug, Clone)]
pub struct DecodedRecord {
    body: RecordBody,
    body_bytes: Vec<u8>,
    pq_signature: Vec<u8>,
    envelope: SignedEnvelope,
    envelope_key: PublicKey,
}

impl DecodedRecord {
    /// The decoded, *unverified* body.
    pub fn body(&self) -> &RecordBody {
        &self.body
    }
    /// The encoded body.
    pub fn body_bytes(&self) -> &[u8] {
        &self.body_bytes
    }
    /// The envelope's (unverified) libp2p key.
    pub fn envelope_key(&self) -> &PublicKey {
        &self.envelope_key
    }
}

/// The fields of a protobuf envelope (field numbers of rust-libp2p's
/// `envelope.proto`).
struct RawEnvelope<'a> {
    public_key: &'a [u8],
    payload_type: &'a [u8],
    payload: &'a [u8],
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let byte = *buf
            .get(*pos)
            .ok_or(DecodeError::Envelope("truncated varint"))?;
        *pos += 1;
        if i == 9 && byte > 1 {
            return Err(DecodeError::Envelope("varint overflow"));
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::Envelope("varint overflow"))
}

/// Strict protobuf parse: only fields 1, 2, 3, 5, each a byte string, each
/// at most once, in increasing order.
fn parse_envelope(bytes: &[u8]) -> Result<RawEnvelope<'_>, DecodeError> {
    let mut pos = 0;
    let mut last_field = 0u64;
    let mut fields: [Option<&[u8]>; 4] = [None; 4];
    while pos < bytes.len() {
        let tag = read_varint(bytes, &mut pos)?;
        let (field, wire_type) = (tag >> 3, tag & 7);
        if wire_type != 2 {
            return Err(DecodeError::Envelope("unexpected wire type"));
        }
        let slot = match field {
            1 => 0,
            2 => 1,
            3 => 2,
            5 => 3,
            _ => return Err(DecodeError::Envelope("unknown field")),
        };
        if field <= last_field {
            return Err(DecodeError::Envelope("repeated or out-of-order field"));
        }
        last_field = field;
        let len = usize::try_from(read_varint(bytes, &mut pos)?)
            .map_err(|_| DecodeError::Envelope("field too long"))?;
        let end = pos
            .checked_add(len)
            .filter(|&end| end <= bytes.len())
            .ok_or(DecodeError::Envelope("truncated field"))?;
        fields[slot] = bytes.get(pos..end);
        pos = end;
    }
    // proto3: an absent byte field is empty (prost omits empty ones); the
    // key and the signature are never empty.
    match fields {
        [Some(public_key), payload_type, payload, Some(_signature)] => Ok(RawEnvelope {
            public_key,
            payload_type: payload_type.unwrap_or_default(),
            payload: payload.unwrap_or_default(),
        }),
        _ => Err(DecodeError::Envelope("missing key or signature")),
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(DecodeError::Truncated { field })?;
        let out = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated { field })?;
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

/// The §4 address rules: ≤ 16 entries of 1–128 bytes, each a canonical
/// binary multiaddr; one that ends in /p2p names `peer_id`; no duplicates.
fn check_addrs(raw: &[&[u8]], peer_id: &PeerId) -> Result<Vec<Multiaddr>, DecodeError> {
    if raw.len() > MAX_ADDRS {
        return Err(DecodeError::TooManyAddrs(raw.len()));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (index, bytes) in raw.iter().enumerate() {
        if bytes.is_empty() || bytes.len() > MAX_ADDR_LEN {
            return Err(DecodeError::AddrLength {
                index,
                len: bytes.len(),
            });
        }
        if raw[..index].contains(bytes) {
            return Err(DecodeError::DuplicateAddr { index });
        }
        let addr =
            Multiaddr::try_from(bytes.to_vec()).map_err(|_| DecodeError::AddrParse { index })?;
        if addr.as_ref() != *bytes {
            return Err(DecodeError::AddrParse { index });
        }
        // Only the last /p2p names the record's peer; an earlier one (before
        // /p2p-circuit) names a relay.
        if let Some(Protocol::P2p(last)) = addr.iter().last() {
            if last != *peer_id {
                return Err(DecodeError::AddrPeerId { index });
            }
        }
        out.push(addr);
    }
    Ok(out)
}

/// Step 1 of §4: strict decoding, outside in. `enabled` are the suites this
/// node enables (a record of another suite is `unsupported-suite`).
/// Signatures are *not* checked.
pub fn decode(bytes: &[u8], enabled: &[Suite]) -> Result<DecodedRecord, RecordError> {
    if bytes.len() > MAX_ENVELOPE_LEN {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_ENVELOPE_LEN,
        }
        .into());
    }
    let raw = parse_envelope(bytes)?;
    let envelope_key = PublicKey::try_decode_protobuf(raw.public_key)
        .map_err(|_| DecodeError::Envelope("invalid public key"))?;
    if envelope_key.key_type() != KeyType::Ed25519 {
        return Err(DecodeError::KeyNotEd25519.into());
    }
    if raw.payload_type != PAYLOAD_TYPE {
        return Err(DecodeError::PayloadType.into());
    }
    let envelope = SignedEnvelope::from_protobuf_encoding(bytes)
        .map_err(|_| DecodeError::Envelope("rejected by libp2p"))?;
    if envelope.clone().into_protobuf_encoding() != bytes {
        return Err(DecodeError::NonCanonical.into());
    }

    let payload = raw.payload;
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let version = r.u8("version")?;
    if version != VERSION {
        return Err(DecodeError::Version(version).into());
    }
    let suite_id = r.u16("suite")?;
    let suite = Suite::from_id(suite_id)
        .filter(|s| enabled.contains(s))
        .ok_or(RecordError::UnsupportedSuite { id: suite_id })?;
    let pk_len = suite.sig_public_key_len();
    let sig_len = suite.signature_len();

    let peer_len = r.u8("peer_id length")?;
    let peer_bytes = r.take(usize::from(peer_len), "peer_id")?;
    let peer_id = PeerId::from_bytes(peer_bytes).map_err(|_| DecodeError::PeerId)?;
    if peer_id.to_bytes() != peer_bytes {
        return Err(DecodeError::PeerId.into());
    }
    let sig_pk = VerifyingKey::from_bytes(suite, r.take(pk_len, "sig_pk")?).map_err(|_| {
        DecodeError::Length {
            field: "sig_pk",
            expected: pk_len,
            got: 0,
        }
    })?;
    let seq = r.u64("seq")?;
    let issued_at = r.u64("issued_at")?;
    let expires_at = r.u64("expires_at")?;
    let count = usize::from(r.u8("addrs count")?);
    if count > MAX_ADDRS {
        return Err(DecodeError::TooManyAddrs(count).into());
    }
    let mut raw_addrs = Vec::with_capacity(count);
    for _ in 0..count {
        let len = r.u16("address length")?;
        raw_addrs.push(r.take(usize::from(len), "address")?);
    }
    let rotation = match r.u8("rotation flag")? {
        0 => None,
        1 => {
            let old = r.take(pk_len, "old_sig_pk")?;
            let old_sig_pk =
                VerifyingKey::from_bytes(suite, old).map_err(|_| DecodeError::Length {
                    field: "old_sig_pk",
                    expected: pk_len,
                    got: old.len(),
                })?;
            let len = usize::from(r.u16("rot_sig length")?);
            expect_len("rot_sig", sig_len, len)?;
            let signature = r.take(len, "rot_sig")?.to_vec();
            Some(RotationStatement {
                old_sig_pk,
                signature,
            })
        }
        flag => return Err(DecodeError::RotationFlag(flag).into()),
    };
    let body_end = r.pos;
    let len = usize::from(r.u16("signature length")?);
    expect_len("signature", sig_len, len)?;
    let pq_signature = r.take(len, "signature")?.to_vec();
    let trailing = payload.len() - r.pos;
    if trailing != 0 {
        return Err(DecodeError::TrailingBytes(trailing).into());
    }
    let addrs = check_addrs(&raw_addrs, &peer_id)?;
    let body_bytes = payload
        .get(..body_end)
        .ok_or(DecodeError::Truncated { field: "body" })?
        .to_vec();
    Ok(DecodedRecord {
        body: RecordBody {
            suite,
            peer_id,
            sig_pk,
            seq,
            issued_at,
            expires_at,
            addrs,
            rotation,
        },
        body_bytes,
        pq_signature,
        envelope,
        envelope_key,
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
        }
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
    if let Some(expected) = ctx.expected_peer {
        if expected != body.peer_id {
            return Err(RecordError::PeerIdMismatch {
                record: Box::new(body.peer_id),
                what: "Noise-authenticated PeerId",
                expected: Box::new(expected),
            });
        }
    }

    // 3. negotiated suite
    if let Some(negotiated) = ctx.negotiated_suite {
        if negotiated != body.suite {
            return Err(RecordError::SuiteMismatch {
                record: body.suite,
                negotiated,
            });
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn fixture(suite: Suite) -> (Keypair, SigningKey) {
        (
            Keypair::generate_ed25519(),
            SigningKey::generate(suite).unwrap(),
        )
    }

    fn params(addrs: &[Multiaddr]) -> RecordParams<'_> {
        RecordParams {
            seq: 7,
            issued_at: NOW,
            expires_at: NOW + DEFAULT_VALIDITY_SECS,
            addrs,
        }
    }

    /// Wraps an arbitrary payload in a correctly signed envelope.
    fn envelope(identity: &Keypair, payload: Vec<u8>) -> Vec<u8> {
        SignedEnvelope::new(identity, DOMAIN.to_owned(), PAYLOAD_TYPE.to_vec(), payload)
            .unwrap()
            .into_protobuf_encoding()
    }

    fn payload_of(bytes: &[u8]) -> Vec<u8> {
        parse_envelope(bytes).unwrap().payload.to_vec()
    }

    fn decode_err(bytes: &[u8]) -> DecodeError {
        match decode(bytes, &Suite::ALL) {
            Err(RecordError::Decode(e)) => e,
            other => panic!("expected a decode error, got {other:?}"),
        }
    }

    #[test]
    fn build_verify_round_trip_every_suite() {
        for suite in Suite::ALL {
            let (id, key) = fixture(suite);
            let peer = id.public().to_peer_id();
            let addrs: Vec<Multiaddr> = vec![
                "/ip4/127.0.0.1/tcp/4001".parse().unwrap(),
                format!("/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{peer}")
                    .parse()
                    .unwrap(),
            ];
            let rec = build(&id, &key, None, &params(&addrs)).unwrap();
            let v = verify(rec.envelope_bytes(), &VerifyContext::new(NOW, &Suite::ALL)).unwrap();
            assert_eq!(v.peer_id(), &peer);
            assert_eq!(v.suite(), suite);
            assert_eq!(v.sig_pk(), key.verifying_key());
            assert_eq!(
                (v.seq(), v.issued_at(), v.expires_at()),
                (7, NOW, NOW + 86_400)
            );
            assert_eq!(v.addrs(), &addrs[..]);
            assert_eq!(v.body(), rec.body_bytes());
            assert_eq!(v.envelope(), rec.envelope_bytes());
            assert_eq!(v.rotated_from(), None);
            assert_eq!(v.pin(), PinCheck::Unpinned);
            // re-encoding the decoded body gives the received bytes
            let d = decode(rec.envelope_bytes(), &Suite::ALL).unwrap();
            assert_eq!(d.body().encode().unwrap(), d.body_bytes());
            assert_eq!(d.body_bytes(), rec.body_bytes());
        }
    }

    #[test]
    fn rotation_statement_round_trips() {
        let suite = Suite::Mlkem1024Mldsa87;
        let (id, old) = fixture(suite);
        let new = SigningKey::generate(suite).unwrap();
        let rec = build(&id, &new, Some(&old), &params(&[])).unwrap();
        let mut ctx = VerifyContext::new(NOW, &Suite::ALL);
        ctx.pinned = Some(Fingerprint::of(old.verifying_key()));
        let v = verify(rec.envelope_bytes(), &ctx).unwrap();
        assert_eq!(v.rotated_from(), Some(Fingerprint::of(old.verifying_key())));
        assert_eq!(
            v.pin(),
            PinCheck::Rotated {
                from: Fingerprint::of(old.verifying_key())
            }
        );
        // rotating to the same key, or across suites, is refused
        assert!(matches!(
            build(&id, &new, Some(&new), &params(&[])),
            Err(BuildError::BadRotationKey)
        ));
        let other_suite = SigningKey::generate(Suite::Kyber1024Dilithium5).unwrap();
        assert!(matches!(
            build(&id, &new, Some(&other_suite), &params(&[])),
            Err(BuildError::BadRotationKey)
        ));
    }

    #[test]
    fn builder_refuses_what_the_decoder_would() {
        let (id, key) = fixture(Suite::Kyber1024Dilithium5);
        let mut p = params(&[]);
        p.expires_at = p.issued_at;
        assert!(matches!(
            build(&id, &key, None, &p),
            Err(BuildError::ValidityWindow { .. })
        ));
        p.expires_at = p.issued_at + MAX_VALIDITY_SECS + 1;
        assert!(matches!(
            build(&id, &key, None, &p),
            Err(BuildError::ValidityWindow { .. })
        ));
        let many: Vec<Multiaddr> = (0..17)
            .map(|i| format!("/ip4/10.0.0.1/tcp/{}", 1000 + i).parse().unwrap())
            .collect();
        assert!(matches!(
            build(&id, &key, None, &params(&many)),
            Err(BuildError::Invalid(DecodeError::TooManyAddrs(17)))
        ));
        let dup: Vec<Multiaddr> = vec!["/ip4/10.0.0.1/tcp/1".parse().unwrap(); 2];
        assert!(matches!(
            build(&id, &key, None, &params(&dup)),
            Err(BuildError::Invalid(DecodeError::DuplicateAddr { index: 1 }))
        ));
        let stranger = PeerId::random();
        let foreign: Vec<Multiaddr> = vec![
            format!("/ip4/10.0.0.1/tcp/1/p2p/{stranger}")
                .parse()
                .unwrap(),
        ];
        assert!(matches!(
            build(&id, &key, None, &params(&foreign)),
            Err(BuildError::Invalid(DecodeError::AddrPeerId { index: 0 }))
        ));
        // a /p2p naming a relay before /p2p-circuit is fine
        let me = id.public().to_peer_id();
        let relayed: Vec<Multiaddr> = vec![
            format!("/ip4/10.0.0.1/tcp/1/p2p/{stranger}/p2p-circuit/p2p/{me}")
                .parse()
                .unwrap(),
        ];
        build(&id, &key, None, &params(&relayed)).unwrap();
        let long: Vec<Multiaddr> = vec![
            format!("/dns/{}.example/tcp/1", "a".repeat(120))
                .parse()
                .unwrap(),
        ];
        assert!(matches!(
            build(&id, &key, None, &params(&long)),
            Err(BuildError::Invalid(DecodeError::AddrLength {
                index: 0,
                ..
            }))
        ));
    }

    #[test]
    fn strict_decoding_of_the_payload() {
        let suite = Suite::Kyber1024Dilithium5;
        let (id, key) = fixture(suite);
        let rec = build(&id, &key, None, &params(&[])).unwrap();
        let payload = payload_of(rec.envelope_bytes());
        let body_len = rec.body_bytes().len();

        let mut p = payload.clone();
        p.push(0);
        assert_eq!(decode_err(&envelope(&id, p)), DecodeError::TrailingBytes(1));

        let mut p = payload.clone();
        p.pop();
        assert!(matches!(
            decode_err(&envelope(&id, p)),
            DecodeError::Truncated { .. }
        ));

        let mut p = payload.clone();
        p[0] = 2;
        assert_eq!(decode_err(&envelope(&id, p)), DecodeError::Version(2));

        let mut p = payload.clone();
        p[body_len - 1] = 2; // rotation flag
        assert_eq!(decode_err(&envelope(&id, p)), DecodeError::RotationFlag(2));

        let mut p = payload.clone();
        p[body_len..body_len + 2].copy_from_slice(&4626u16.to_be_bytes());
        assert!(matches!(
            decode_err(&envelope(&id, p)),
            DecodeError::Length {
                field: "signature",
                expected: 4627,
                got: 4626
            }
        ));

        for unknown in [0u16, 3, 0xffff] {
            let mut p = payload.clone();
            p[1..3].copy_from_slice(&unknown.to_be_bytes());
            assert_eq!(
                decode(&envelope(&id, p), &Suite::ALL).unwrap_err(),
                RecordError::UnsupportedSuite { id: unknown }
            );
        }
        // a known suite this node does not enable
        assert_eq!(
            decode(rec.envelope_bytes(), &[Suite::Mlkem1024Mldsa87])
                .unwrap_err()
                .name(),
            "unsupported-suite"
        );

        // peer id garbage
        let mut p = payload.clone();
        p[4] ^= 0xff;
        assert!(decode(&envelope(&id, p), &Suite::ALL).is_err());

        assert!(matches!(
            decode_err(&envelope(&id, Vec::new())),
            DecodeError::Truncated { .. }
        ));
    }

    #[test]
    fn strict_decoding_of_the_envelope() {
        let (id, key) = fixture(Suite::Mlkem1024Mldsa87);
        let rec = build(&id, &key, None, &params(&[])).unwrap();
        let bytes = rec.envelope_bytes();
        // another payload type
        let other = SignedEnvelope::new(
            &id,
            DOMAIN.to_owned(),
            b"/other/1".to_vec(),
            payload_of(bytes),
        )
        .unwrap()
        .into_protobuf_encoding();
        assert_eq!(decode_err(&other), DecodeError::PayloadType);
        // an unknown trailing field
        let mut extra = bytes.to_vec();
        extra.extend_from_slice(&[0x32, 0x01, 0x00]); // field 6, 1 byte
        assert!(matches!(decode_err(&extra), DecodeError::Envelope(_)));
        // a repeated field
        let mut repeated = bytes.to_vec();
        repeated.extend_from_slice(&[0x2a, 0x00]); // field 5 again, empty
        assert!(matches!(decode_err(&repeated), DecodeError::Envelope(_)));
        // non-minimal length varint in the first field
        assert_eq!(bytes[0], 0x0a);
        let len = bytes[1];
        assert!(len < 0x80);
        let mut padded = vec![0x0a, len | 0x80, 0x00];
        padded.extend_from_slice(&bytes[2..]);
        assert_eq!(decode_err(&padded), DecodeError::NonCanonical);
        // truncation anywhere is an error, never a panic
        for cut in [0, 1, 2, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut], &Suite::ALL).is_err(), "cut at {cut}");
        }
        // oversized input is refused before parsing
        let huge = vec![0u8; MAX_ENVELOPE_LEN + 1];
        assert!(matches!(decode_err(&huge), DecodeError::TooLarge { .. }));
    }

    #[test]
    fn address_rules_on_decode() {
        let suite = Suite::Kyber1024Dilithium5;
        let (id, key) = fixture(suite);
        let peer = id.public().to_peer_id();
        // Rebuild the body with raw address bytes, sign the payload properly.
        let with_addrs = |addrs: &[&[u8]]| -> Vec<u8> {
            let body = RecordBody {
                suite,
                peer_id: peer,
                sig_pk: key.verifying_key().clone(),
                seq: 1,
                issued_at: NOW,
                expires_at: NOW + 10,
                addrs: vec![],
                rotation: None,
            };
            let mut b = body.encode().unwrap();
            let count_at = b.len() - 2; // count byte, then rotation flag
            b.truncate(count_at);
            b.push(addrs.len() as u8);
            for a in addrs {
                b.extend_from_slice(&(a.len() as u16).to_be_bytes());
                b.extend_from_slice(a);
            }
            b.push(0);
            let sig = key.sign(&record_sig_message(&b)).unwrap();
            b.extend_from_slice(&(sig.len() as u16).to_be_bytes());
            b.extend_from_slice(&sig);
            envelope(&id, b)
        };
        let good: Multiaddr = "/ip4/1.2.3.4/tcp/5".parse().unwrap();
        let good = good.to_vec();
        verify(&with_addrs(&[&good]), &VerifyContext::new(NOW, &Suite::ALL)).unwrap();
        assert_eq!(
            decode_err(&with_addrs(&[&[]])),
            DecodeError::AddrLength { index: 0, len: 0 }
        );
        assert_eq!(
            decode_err(&with_addrs(&[&good, &[0xff, 0xff, 0xff]])),
            DecodeError::AddrParse { index: 1 }
        );
        assert_eq!(
            decode_err(&with_addrs(&[&good, &good])),
            DecodeError::DuplicateAddr { index: 1 }
        );
        let big = vec![0x04u8; 129];
        assert_eq!(
            decode_err(&with_addrs(&[&big])),
            DecodeError::AddrLength { index: 0, len: 129 }
        );
        let many: Vec<&[u8]> = vec![&good; 17];
        assert_eq!(
            decode_err(&with_addrs(&many)),
            DecodeError::TooManyAddrs(17)
        );
        // a multiaddr that parses but is followed by garbage within its entry
        let mut tail = good.clone();
        tail.push(0x00);
        assert!(matches!(
            decode_err(&with_addrs(&[&tail])),
            DecodeError::AddrParse { index: 0 }
        ));
    }

    #[test]
    fn error_names_are_the_fixed_ones() {
        let errors = [
            RecordError::Decode(DecodeError::PayloadType),
            RecordError::UnsupportedSuite { id: 9 },
            RecordError::EnvelopeSignature,
            RecordError::PeerIdMismatch {
                record: Box::new(PeerId::random()),
                what: "x",
                expected: Box::new(PeerId::random()),
            },
            RecordError::SuiteMismatch {
                record: Suite::Kyber1024Dilithium5,
                negotiated: Suite::Mlkem1024Mldsa87,
            },
            RecordError::Expired {
                expires_at: 1,
                now: 2,
            },
            RecordError::NotYetValid {
                issued_at: 1,
                now: 2,
            },
            RecordError::BadValidityWindow {
                issued_at: 1,
                expires_at: 1,
            },
            RecordError::PqSignature,
            RecordError::RotationSignature,
            RecordError::StaleSeq { seq: 1, cached: 2 },
            RecordError::ConflictingRecord { seq: 1 },
            RecordError::KeyMismatch {
                pinned: Fingerprint::of_bytes(b"a"),
                record: Fingerprint::of_bytes(b"b"),
            },
        ];
        let names: Vec<&str> = errors.iter().map(RecordError::name).collect();
        assert_eq!(names, RecordError::NAMES);
        for e in &errors {
            assert!(e.to_string().starts_with(e.name()), "{e}");
        }
    }

    #[test]
    fn dht_key_format() {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        assert_eq!(
            dht_key(Suite::Kyber1024Dilithium5, &peer),
            format!("/pqnode/record/0001/{}", peer.to_base58()).into_bytes()
        );
        assert!(
            String::from_utf8(dht_key(Suite::Mlkem1024Mldsa87, &peer))
                .unwrap()
                .starts_with("/pqnode/record/0002/12D3KooW")
        );
    }
}
