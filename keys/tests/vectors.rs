//! PROTOCOL.md Appendix A.2 record vectors.
//!
//! pqcrypto cannot be seeded, so the vectors are generated once by the
//! ignored `generate_vectors` test
//! (`cargo test -p pqnode-keys --test vectors -- --ignored generate_vectors`)
//! and committed under `tests/vectors/`; `committed_vectors` checks them all.
//! `fresh_cases` builds the same cases anew on every run.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::*;
use libp2p::identity::Keypair;
use pqnode_crypto::Suite;
use pqnode_crypto::sign::SigningKey;
use pqnode_keys::Fingerprint;
use pqnode_keys::record::{self, CachedRecord, PinCheck, RecordError, VerifyContext};
use serde::{Deserialize, Serialize};

/// One A.2 vector, field for field.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Vector {
    format: u32,
    record: String,
    now: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enabled_suites: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    negotiated_suite: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cached: Option<Cached>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pinned_fingerprint: Option<String>,
    /// rev 3: suites other than the record's under which this peer is pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pinned_other_suites: Option<Vec<String>>,
    expect: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cached {
    seq: u64,
    body: String,
}

impl Vector {
    fn new(record: &[u8], now: u64, expect: &str) -> Self {
        Vector {
            format: 1,
            record: hex::encode(record),
            now,
            enabled_suites: None,
            negotiated_suite: None,
            cached: None,
            pinned_fingerprint: None,
            pinned_other_suites: None,
            expect: expect.to_owned(),
        }
    }
    fn pinned(mut self, key: &SigningKey) -> Self {
        self.pinned_fingerprint = Some(Fingerprint::of(key.verifying_key()).to_hex());
        self
    }
}

/// Runs a vector; `Err` explains a mismatch.
fn check(v: &Vector) -> Result<(), String> {
    if v.format != 1 {
        return Err(format!("unknown format {}", v.format));
    }
    let record = hex::decode(&v.record).map_err(|e| e.to_string())?;
    let enabled: Vec<Suite> = match &v.enabled_suites {
        None => Suite::ALL.to_vec(),
        Some(names) => names.iter().map(|n| n.parse().unwrap()).collect(),
    };
    let cached_body = v.cached.as_ref().map(|c| hex::decode(&c.body).unwrap());
    let mut ctx = VerifyContext::new(v.now, &enabled);
    ctx.negotiated_suite = v.negotiated_suite.as_ref().map(|n| n.parse().unwrap());
    ctx.cached = v.cached.as_ref().map(|c| CachedRecord {
        seq: c.seq,
        body: cached_body.as_deref().unwrap(),
    });
    ctx.pinned = v.pinned_fingerprint.as_ref().map(|f| f.parse().unwrap());
    if let Some(others) = &v.pinned_other_suites {
        let others: Vec<Suite> = others.iter().map(|n| n.parse().unwrap()).collect();
        // The record's suite, from a verification without this field.
        let record_suite = record::verify(&record, &ctx).ok().map(|r| r.suite());
        if record_suite.is_some_and(|s| others.contains(&s)) {
            return Err("pinnedOtherSuites names the record's own suite".into());
        }
        ctx.pinned_other_suites = !others.is_empty();
    }
    match (record::verify(&record, &ctx), v.expect.as_str()) {
        (Ok(verified), "ok") => {
            // A pin that is not the record's key must have been moved by
            // the rotation statement.
            match ctx.pinned {
                Some(pin) if pin != verified.fingerprint() => {
                    if verified.pin() != (PinCheck::Rotated { from: pin }) {
                        return Err(format!(
                            "accepted without moving the pin: {:?}",
                            verified.pin()
                        ));
                    }
                }
                Some(_) => assert_eq!(verified.pin(), PinCheck::Matched),
                None => assert_eq!(verified.pin(), PinCheck::Unpinned),
            }
            Ok(())
        }
        (Ok(_), want) => Err(format!("accepted, expected {want}")),
        (Err(e), want) if e.name() == want => Ok(()),
        (Err(e), want) => Err(format!("got {} ({e}), expected {want}", e.name())),
    }
}

/// Every case for one suite: (file stem, vector).
fn cases(suite: Suite) -> Vec<(String, Vector)> {
    let id = Keypair::generate_ed25519();
    let key = SigningKey::generate(suite).unwrap();
    let other_key = SigningKey::generate(suite).unwrap();
    let seq = 10;
    let base = body(&id, &key, seq);
    let good = forge(&id, &key, &base);
    let mut out = Vec::new();
    let mut add = |case: &str, v: Vector| out.push((format!("{}-{case}", suite.name()), v));

    add("ok", Vector::new(&good, NOW, "ok"));
    add("ok-pinned", Vector::new(&good, NOW, "ok").pinned(&key));
    let mut v = Vector::new(&good, NOW, "ok");
    v.cached = Some(Cached {
        seq,
        body: hex::encode(base.encode().unwrap()),
    });
    add("ok-same-seq-same-body", v);

    // 1. decode: a byte after the signature, in a correctly signed envelope
    let mut payload = pq_record(&base.encode().unwrap(), &key);
    payload.push(0);
    add(
        "decode",
        Vector::new(&envelope(&id, payload), NOW, "decode"),
    );

    // 1. unsupported-suite: the verifier enables only the other suite
    let mut v = Vector::new(&good, NOW, "unsupported-suite");
    v.enabled_suites = Some(vec![other(suite).name().to_owned()]);
    add("unsupported-suite", v);

    // 2. envelope-signature: signed for another domain
    let wrong_domain = envelope_with_domain(
        &id,
        "libp2p-peer-record",
        pq_record(&base.encode().unwrap(), &key),
    );
    add(
        "envelope-signature",
        Vector::new(&wrong_domain, NOW, "envelope-signature"),
    );

    // 2. peer-id-mismatch: the body names another peer than the envelope key
    let mut b = base.clone();
    b.peer_id = stranger();
    add(
        "peer-id-mismatch",
        Vector::new(&forge(&id, &key, &b), NOW, "peer-id-mismatch"),
    );

    // 3. suite-mismatch
    let mut v = Vector::new(&good, NOW, "suite-mismatch");
    v.negotiated_suite = Some(other(suite).name().to_owned());
    add("suite-mismatch", v);

    // 4. freshness
    add("expired", Vector::new(&good, base.expires_at, "expired"));
    add(
        "not-yet-valid",
        Vector::new(
            &good,
            base.issued_at - record::MAX_FUTURE_SKEW_SECS - 1,
            "not-yet-valid",
        ),
    );
    let mut b = base.clone();
    b.expires_at = b.issued_at + record::MAX_VALIDITY_SECS + 1;
    add(
        "bad-validity-window",
        Vector::new(&forge(&id, &key, &b), NOW, "bad-validity-window"),
    );

    // 5. pq-signature: signed by another key than sig_pk
    let forged = envelope(&id, pq_record(&base.encode().unwrap(), &other_key));
    add("pq-signature", Vector::new(&forged, NOW, "pq-signature"));

    // 6. rotation-signature: the statement claims `key` but `other_key` signed it
    let new_key = SigningKey::generate(suite).unwrap();
    let mut b = body(&id, &new_key, seq + 1);
    b.rotation = Some(rotation(&b, &key, &other_key));
    add(
        "rotation-signature",
        Vector::new(&forge(&id, &new_key, &b), NOW, "rotation-signature").pinned(&key),
    );

    // 7. seq against the cache
    let mut v = Vector::new(&good, NOW, "stale-seq");
    v.cached = Some(Cached {
        seq: seq + 1,
        body: hex::encode(body(&id, &key, seq + 1).encode().unwrap()),
    });
    add("stale-seq", v);
    let mut conflicting = base.clone();
    conflicting.addrs = vec!["/ip4/198.51.100.1/tcp/4001".parse().unwrap()];
    let mut v = Vector::new(&good, NOW, "conflicting-record");
    v.cached = Some(Cached {
        seq,
        body: hex::encode(conflicting.encode().unwrap()),
    });
    add("conflicting-record", v);

    // 8. pinning: another key, no rotation statement
    add(
        "key-mismatch",
        Vector::new(&good, NOW, "key-mismatch").pinned(&other_key),
    );

    // 8, rev 3: pinned only under the other suite, no pin for this one: a
    // holder of the Ed25519 key cannot bring a fresh key for another suite.
    let mut v = Vector::new(&good, NOW, "key-mismatch");
    v.pinned_other_suites = Some(vec![other(suite).name().to_owned()]);
    add("pinned-other-suites", v);

    // rotation: a verified statement from the pinned key moves the pin ...
    let mut b = body(&id, &new_key, seq + 1);
    b.rotation = Some(rotation(&b, &key, &key));
    let rotated = forge(&id, &new_key, &b);
    add("rotation-ok", Vector::new(&rotated, NOW, "ok").pinned(&key));
    // ... but not a pin on a third key
    add(
        "rotation-key-mismatch",
        Vector::new(&rotated, NOW, "key-mismatch").pinned(&other_key),
    );
    out
}

fn vector_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

#[test]
#[ignore = "writes tests/vectors/; run once and commit the files"]
fn generate_vectors() {
    std::fs::create_dir_all(vector_dir()).unwrap();
    for suite in Suite::ALL {
        for (stem, v) in cases(suite) {
            check(&v).unwrap_or_else(|e| panic!("{stem}: {e}"));
            // Committed vectors stay as they are: only new cases are written.
            if vector_dir().join(format!("{stem}.json")).exists() {
                continue;
            }
            let mut json = serde_json::to_string_pretty(&v).unwrap();
            json.push('\n');
            std::fs::write(vector_dir().join(format!("{stem}.json")), json).unwrap();
        }
    }
}

#[test]
fn committed_vectors() {
    let mut seen = BTreeSet::new();
    let mut other_suites = BTreeSet::new();
    let mut count = 0;
    for entry in std::fs::read_dir(vector_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let v: Vector = serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check(&v).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let suite = Suite::ALL
            .into_iter()
            .find(|s| stem.starts_with(s.name()))
            .unwrap_or_else(|| panic!("{stem}: no suite in the name"));
        seen.insert((suite, v.expect.clone(), stem.ends_with("rotation-ok")));
        if v.pinned_other_suites.is_some() {
            other_suites.insert(suite);
        }
        count += 1;
    }
    // one vector per §4 error name and per suite, plus the rotations
    for suite in Suite::ALL {
        for name in RecordError::NAMES {
            assert!(
                seen.iter().any(|(s, e, _)| *s == suite && e == name),
                "no {name} vector for {suite}"
            );
        }
        assert!(
            seen.contains(&(suite, "ok".to_owned(), true)),
            "no rotation vector for {suite}"
        );
        assert!(
            other_suites.contains(&suite),
            "no rev 3 pinnedOtherSuites vector for {suite}"
        );
    }
    assert!(
        count >= 2 * (RecordError::NAMES.len() + 2),
        "only {count} vectors"
    );
}

#[test]
fn fresh_cases() {
    for suite in Suite::ALL {
        for (stem, v) in cases(suite) {
            check(&v).unwrap_or_else(|e| panic!("{stem}: {e}"));
        }
    }
}
