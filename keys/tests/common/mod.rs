//! Helpers shared by the integration tests: records with arbitrary (even
//! invalid) fields, signed correctly where the test wants them to be.
#![allow(dead_code)]

use libp2p::core::SignedEnvelope;
use libp2p::identity::{Keypair, PeerId};
use pqnode_crypto::Suite;
use pqnode_crypto::sign::SigningKey;
use pqnode_keys::record::{
    self, DOMAIN, PAYLOAD_TYPE, RECORD_SIG_LABEL, RecordBody, RotationStatement,
};

/// A fixed clock for the tests (2027-01-15).
pub const NOW: u64 = 1_800_000_000;

/// A body for `identity` and `key`, valid at [`NOW`].
pub fn body(identity: &Keypair, key: &SigningKey, seq: u64) -> RecordBody {
    RecordBody {
        suite: key.suite(),
        peer_id: identity.public().to_peer_id(),
        sig_pk: key.verifying_key().clone(),
        seq,
        issued_at: NOW - 60,
        expires_at: NOW - 60 + record::DEFAULT_VALIDITY_SECS,
        addrs: vec!["/ip4/192.0.2.7/tcp/4001".parse().unwrap()],
        rotation: None,
    }
}

/// `body || u16 len || sig`, the PQ signature made by `signer`.
pub fn pq_record(body_bytes: &[u8], signer: &SigningKey) -> Vec<u8> {
    let mut msg = RECORD_SIG_LABEL.to_vec();
    msg.extend_from_slice(body_bytes);
    let sig = signer.sign(&msg).unwrap();
    let mut out = body_bytes.to_vec();
    out.extend_from_slice(&(sig.len() as u16).to_be_bytes());
    out.extend_from_slice(&sig);
    out
}

/// Wraps a payload in an envelope signed by `identity` under `domain`.
pub fn envelope_with_domain(identity: &Keypair, domain: &str, payload: Vec<u8>) -> Vec<u8> {
    SignedEnvelope::new(identity, domain.to_owned(), PAYLOAD_TYPE.to_vec(), payload)
        .unwrap()
        .into_protobuf_encoding()
}

/// Wraps a payload in a correct envelope signed by `identity`.
pub fn envelope(identity: &Keypair, payload: Vec<u8>) -> Vec<u8> {
    envelope_with_domain(identity, DOMAIN, payload)
}

/// A complete record: `body` signed by `signer`, enveloped by `identity`.
pub fn forge(identity: &Keypair, signer: &SigningKey, body: &RecordBody) -> Vec<u8> {
    envelope(identity, pq_record(&body.encode().unwrap(), signer))
}

/// A rotation statement for `body` signed by `old_signer`, claiming `old_pk`.
pub fn rotation(
    body: &RecordBody,
    old_pk: &SigningKey,
    old_signer: &SigningKey,
) -> RotationStatement {
    let msg = record::rotation_message(&body.peer_id, body.suite, body.sig_pk.as_bytes(), body.seq);
    RotationStatement {
        old_sig_pk: old_pk.verifying_key().clone(),
        signature: old_signer.sign(&msg).unwrap(),
    }
}

/// The other suite.
pub fn other(suite: Suite) -> Suite {
    if suite == Suite::Kyber1024Dilithium5 {
        Suite::Mlkem1024Mldsa87
    } else {
        Suite::Kyber1024Dilithium5
    }
}

/// A PeerId that is not `identity`'s.
pub fn stranger() -> PeerId {
    Keypair::generate_ed25519().public().to_peer_id()
}
