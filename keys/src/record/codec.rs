//! The byte layout of §4: the body, the PQ record around it and the strict
//! outside-in decoder (envelope first, then version, suite, fields).

use libp2p::Multiaddr;
use libp2p::core::SignedEnvelope;
use libp2p::identity::{KeyType, PeerId, PublicKey};
use libp2p::multiaddr::Protocol;
use pqnode_crypto::Suite;
use pqnode_crypto::codec::{ByteReader, Truncated};
use pqnode_crypto::sign::VerifyingKey;

use super::error::{DecodeError, RecordError};
use super::{
    MAX_ADDR_LEN, MAX_ADDRS, MAX_ENVELOPE_LEN, PAYLOAD_TYPE, RECORD_SIG_LABEL, ROTATION_SIG_LABEL,
    VERSION,
};

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

pub(super) fn sig_len_u16(suite: Suite) -> Result<u16, DecodeError> {
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

pub(super) fn record_sig_message(body: &[u8]) -> Vec<u8> {
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

/// A record that passed step 1 (decoding) only: its signatures are not
/// checked. Use [`verify`] for anything but inspection.
#[derive(Debug, Clone)]
pub struct DecodedRecord {
    pub(super) body: RecordBody,
    pub(super) body_bytes: Vec<u8>,
    pub(super) pq_signature: Vec<u8>,
    pub(super) envelope: SignedEnvelope,
    pub(super) envelope_key: PublicKey,
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
pub(super) struct RawEnvelope<'a> {
    pub(super) public_key: &'a [u8],
    pub(super) payload_type: &'a [u8],
    pub(super) payload: &'a [u8],
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
pub(super) fn parse_envelope(bytes: &[u8]) -> Result<RawEnvelope<'_>, DecodeError> {
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

impl From<Truncated> for DecodeError {
    fn from(Truncated(field): Truncated) -> Self {
        DecodeError::Truncated { field }
    }
}

impl From<Truncated> for RecordError {
    fn from(t: Truncated) -> Self {
        RecordError::Decode(t.into())
    }
}

/// The §4 address rules: ≤ 16 entries of 1–128 bytes, each a canonical
/// binary multiaddr; one that ends in /p2p names `peer_id`; no duplicates.
pub(super) fn check_addrs(raw: &[&[u8]], peer_id: &PeerId) -> Result<Vec<Multiaddr>, DecodeError> {
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
        if let Some(Protocol::P2p(last)) = addr.iter().last()
            && last != *peer_id
        {
            return Err(DecodeError::AddrPeerId { index });
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
    let mut r = ByteReader::new(payload);
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
    let body_end = r.position();
    let len = usize::from(r.u16("signature length")?);
    expect_len("signature", sig_len, len)?;
    let pq_signature = r.take(len, "signature")?.to_vec();
    let trailing = payload.len().saturating_sub(r.position());
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
