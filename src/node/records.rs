//! Validation of incoming Kademlia records before they are stored.
//!
//! Records under [`RECORD_PREFIX`] are signed PQ peer records (PROTOCOL.md
//! §4) under the key `/pqnode/record/<suite id, 4 lowercase hex>/<PeerId
//! base58>`. Kademlia runs with `StoreInserts::FilterBoth`, so nothing is
//! stored unless the event loop stores it, after [`validate_dht_record`]:
//! the key must be well formed, and the value must verify with
//! `pqnode_keys::record::verify` (envelope, PeerId = the key's PeerId,
//! suite = the key's suite, freshness, PQ signature, rotation) and must not
//! be older than, or conflict with, the record already stored under the key.
//! A key outside the prefix is not stored at all ([`DhtRecordError::ForeignKey`]):
//! this DHT is no general-purpose store for whoever asks.
//! Pinning is not applied here: storing a record for others is not trusting it.

use std::str::FromStr;

use libp2p::PeerId;
use pqnode_crypto::Suite;
use pqnode_keys::record::{self, CachedRecord, RecordError, VerifyContext};

/// The key prefix of signed PQ peer records in the DHT.
pub const RECORD_PREFIX: &str = "/pqnode/record/";

/// Why an incoming DHT record was rejected.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DhtRecordError {
    /// The key is not under `/pqnode/record/`: this DHT stores nothing else.
    #[error("record key is not under {RECORD_PREFIX}: not stored")]
    ForeignKey,
    /// The key is under `/pqnode/record/` but is not `<suite hex4>/<PeerId>`.
    #[error("malformed record key: {0}")]
    MalformedKey(&'static str),
    /// The suite id in the key is not a suite of this protocol.
    #[error("unknown suite id in record key")]
    UnknownSuite,
    /// The value is not a valid record for its key.
    #[error("invalid record: {}", .0.name())]
    Record(Box<RecordError>),
}

impl From<RecordError> for DhtRecordError {
    fn from(e: RecordError) -> Self {
        DhtRecordError::Record(Box::new(e))
    }
}

/// A parsed record key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordKey {
    /// The suite.
    pub suite: Suite,
    /// The peer whose record it is.
    pub peer_id: PeerId,
}

/// Parses a key under [`RECORD_PREFIX`]; `None` if the key is not under it.
pub fn parse_record_key(key: &[u8]) -> Option<Result<RecordKey, DhtRecordError>> {
    let rest = key.strip_prefix(RECORD_PREFIX.as_bytes())?;
    Some(parse_rest(rest))
}

fn parse_rest(rest: &[u8]) -> Result<RecordKey, DhtRecordError> {
    let rest = std::str::from_utf8(rest).map_err(|_| DhtRecordError::MalformedKey("not UTF-8"))?;
    let (suite_hex, peer) = rest
        .split_once('/')
        .ok_or(DhtRecordError::MalformedKey("missing PeerId"))?;
    if suite_hex.len() != 4
        || !suite_hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(DhtRecordError::MalformedKey(
            "suite id is not 4 lowercase hex digits",
        ));
    }
    let id = u16::from_str_radix(suite_hex, 16)
        .map_err(|_| DhtRecordError::MalformedKey("suite id is not hex"))?;
    let suite = Suite::from_id(id).ok_or(DhtRecordError::UnknownSuite)?;
    let peer_id = PeerId::from_str(peer).map_err(|_| DhtRecordError::MalformedKey("bad PeerId"))?;
    // Only the canonical spelling is accepted, so one peer has one key per suite.
    if peer_id.to_base58() != peer {
        return Err(DhtRecordError::MalformedKey(
            "PeerId not in canonical base58",
        ));
    }
    Ok(RecordKey { suite, peer_id })
}

/// Decides whether an incoming record may be stored. `existing` is the value
/// already stored under the key, if any; `now` is unix seconds. Keys
/// outside [`RECORD_PREFIX`] are refused (`ForeignKey`, PROTOCOL.md §9 rev
/// 3): this DHT stores PQ peer records only. A record that may be stored
/// comes back with its signed expiry (`expires_at`, Unix seconds).
pub fn validate_dht_record(
    key: &[u8],
    value: &[u8],
    existing: Option<&[u8]>,
    now: u64,
) -> Result<u64, DhtRecordError> {
    let Some(parsed) = parse_record_key(key) else {
        return Err(DhtRecordError::ForeignKey);
    };
    let RecordKey { suite, peer_id } = parsed?;
    let enabled = [suite];
    // The stored value was verified when it was stored; an undecodable one
    // (impossible unless the store was filled otherwise) is simply replaced.
    let cached_decoded = existing.and_then(|bytes| record::decode(bytes, &enabled).ok());
    let mut ctx = VerifyContext::new(now, &enabled);
    ctx.expected_peer = Some(peer_id);
    ctx.negotiated_suite = Some(suite);
    ctx.cached = cached_decoded.as_ref().map(|d| CachedRecord {
        seq: d.body().seq,
        body: d.body_bytes(),
    });
    Ok(record::verify(value, &ctx)?.expires_at())
}

/// The signed expiry (`expires_at`, Unix seconds) of a value stored under
/// `key`, read without verifying it again: it was verified when it was
/// stored. `None` when the key is not a record key or the value does not
/// decode.
pub fn stored_expiry(key: &[u8], value: &[u8]) -> Option<u64> {
    let RecordKey { suite, .. } = parse_record_key(key)?.ok()?;
    record::decode(value, &[suite])
        .ok()
        .map(|d| d.body().expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;
    use pqnode_crypto::sign::SigningKey;
    use pqnode_keys::record::{RecordParams, build, dht_key};

    const PEER: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
    const NOW: u64 = 1_800_000_000;

    fn signed(identity: &Keypair, key: &SigningKey, seq: u64) -> Vec<u8> {
        build(
            identity,
            key,
            None,
            &RecordParams {
                seq,
                issued_at: NOW,
                expires_at: NOW + 3600,
                addrs: &[],
            },
        )
        .unwrap()
        .envelope_bytes()
        .to_vec()
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for key in [
            "/pqnode/record/0001".to_owned(),
            format!("/pqnode/record/001/{PEER}"),
            format!("/pqnode/record/000A/{PEER}"),
            format!("/pqnode/record/0003/{PEER}"),
            format!("/pqnode/record/0001/{PEER}/extra"),
            "/pqnode/record/0001/notapeer".to_owned(),
        ] {
            assert!(
                validate_dht_record(key.as_bytes(), b"x", None, NOW).is_err(),
                "{key}"
            );
        }
        let key = format!("/pqnode/record/0001/{PEER}");
        assert!(validate_dht_record(key.as_bytes(), b"", None, NOW).is_err());
        assert!(validate_dht_record(key.as_bytes(), b"garbage", None, NOW).is_err());
    }

    #[test]
    fn other_keys_are_not_stored() {
        for key in [
            &b"/other/key"[..],
            b"",
            b"/pqnode/recor",
            b"pqnode/record/0001",
        ] {
            assert!(matches!(
                validate_dht_record(key, b"v", None, NOW),
                Err(DhtRecordError::ForeignKey)
            ));
        }
    }

    #[cfg(feature = "pqc")]
    #[test]
    fn records_are_verified_against_their_key() {
        let suite = Suite::Mlkem1024Mldsa87;
        let identity = Keypair::generate_ed25519();
        let peer = identity.public().to_peer_id();
        let key = SigningKey::generate(suite).unwrap();
        let v1 = signed(&identity, &key, 1);
        let v2 = signed(&identity, &key, 2);
        let k = dht_key(suite, &peer);
        assert!(validate_dht_record(&k, &v1, None, NOW).is_ok());
        assert!(validate_dht_record(&k, &v2, Some(&v1), NOW).is_ok());
        // Older than the stored one.
        assert!(validate_dht_record(&k, &v1, Some(&v2), NOW).is_err());
        // Expired.
        assert!(validate_dht_record(&k, &v1, None, NOW + 7200).is_err());
        // Under another peer's key, or another suite's.
        let other = Keypair::generate_ed25519().public().to_peer_id();
        assert!(validate_dht_record(&dht_key(suite, &other), &v1, None, NOW).is_err());
        assert!(
            validate_dht_record(&dht_key(Suite::Kyber1024Dilithium5, &peer), &v1, None, NOW)
                .is_err()
        );
        // A flipped bit.
        let mut bad = v1.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(validate_dht_record(&k, &bad, None, NOW).is_err());
    }
}
