//! The key-file container: parsing arbitrary bytes (plain or claiming
//! encryption) must never panic or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pqnode_keys::keyfile::{self, FileKind, Passphrase};

fuzz_target!(|data: &[u8]| {
    let pass = Passphrase::new("fuzz".to_owned());
    for kind in [
        FileKind::Identity,
        FileKind::SigningKey,
        FileKind::RecordState,
    ] {
        std::hint::black_box(keyfile::open(kind, data, None).is_ok());
    }
    // Only small Argon2 costs are worth running under the fuzzer.
    if data.len() > 23 && data[11..15] == [0, 0, 0, 8] && data[15..19] == [0, 0, 0, 1] {
        std::hint::black_box(keyfile::open(FileKind::Identity, data, Some(&pass)).is_ok());
    }
});
