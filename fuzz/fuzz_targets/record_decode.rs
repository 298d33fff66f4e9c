//! PROTOCOL.md §4: decoding and verifying arbitrary bytes as a signed PQ
//! peer record must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pqnode_crypto::Suite;
use pqnode_keys::record::{self, VerifyContext};

fuzz_target!(|data: &[u8]| {
    let decoded = record::decode(data, &Suite::ALL);
    if let Ok(d) = &decoded {
        // A decoded body re-encodes to exactly the bytes it came from.
        let again = d.body().encode();
        assert_eq!(again.as_deref().ok(), Some(d.body_bytes()));
    }
    // Verify at a fixed time, and, for a record that decodes, inside its own
    // validity window, so the later steps (PQ signature, rotation statement)
    // are reached too.
    let mut times = vec![1_800_000_000];
    if let Ok(d) = &decoded {
        times.push(d.body().issued_at.saturating_add(1));
    }
    for now in times {
        let ctx = VerifyContext::new(now, &Suite::ALL);
        std::hint::black_box(record::verify(data, &ctx).is_ok());
    }
});
