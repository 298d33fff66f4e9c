//! Decoding never panics, whatever the bytes; any change to a valid record
//! is rejected.

mod common;

use std::sync::OnceLock;

use libp2p::identity::Keypair;
use pqnode_crypto::Suite;
use pqnode_crypto::sign::SigningKey;
use pqnode_keys::record::{self, VerifyContext};
use proptest::prelude::*;

fn valid_records() -> &'static Vec<Vec<u8>> {
    static RECORDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        Suite::ALL
            .into_iter()
            .map(|suite| {
                let id = Keypair::generate_ed25519();
                let key = SigningKey::generate(suite).unwrap();
                common::forge(&id, &key, &common::body(&id, &key, 1))
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..20_000)) {
        let _ = record::decode(&bytes, &Suite::ALL);
        let _ = record::verify(&bytes, &VerifyContext::new(common::NOW, &Suite::ALL));
    }

    #[test]
    fn arbitrary_payload_in_a_valid_envelope_never_panics(
        payload in proptest::collection::vec(any::<u8>(), 0..8_000),
        prefix in prop_oneof![Just(vec![1u8, 0, 1]), Just(vec![1u8, 0, 2]), Just(vec![])],
    ) {
        let id = Keypair::generate_ed25519();
        let mut p = prefix;
        p.extend_from_slice(&payload);
        let bytes = common::envelope(&id, p);
        let result = record::verify(&bytes, &VerifyContext::new(common::NOW, &Suite::ALL));
        prop_assert!(result.is_err());
    }

    #[test]
    fn any_single_byte_change_is_rejected(which in 0usize..2, pos in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let mut bytes = valid_records()[which].clone();
        let at = pos.index(bytes.len());
        bytes[at] ^= xor;
        let result = record::verify(&bytes, &VerifyContext::new(common::NOW, &Suite::ALL));
        prop_assert!(result.is_err(), "byte {} ^ {:#x} accepted", at, xor);
    }

    #[test]
    fn truncation_is_rejected(which in 0usize..2, cut in any::<prop::sample::Index>()) {
        let bytes = &valid_records()[which];
        let at = cut.index(bytes.len());
        prop_assert!(record::verify(&bytes[..at], &VerifyContext::new(common::NOW, &Suite::ALL)).is_err());
    }
}
