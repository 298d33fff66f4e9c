//! The key store on a real file system: round trips, permissions, crash
//! safety, corrupt and encrypted files, seq persistence, rotation, pins.

mod common;

use std::fs;
use std::path::Path;

use pqnode_crypto::Suite;
use pqnode_crypto::sign::SigningKey;
use pqnode_keys::keyfile::{KdfParams, KeyFileError, Passphrase};
use pqnode_keys::pins::{PINS_FILE, PinError, PinStore, PinUpdate};
use pqnode_keys::record::{self, PinCheck, RecordParams, VerifyContext};
use pqnode_keys::store::{
    IDENTITY_FILE, KeyStore, RECORD_STATE_FILE, ROTATION_GRACE_SECS, StoreError, StoreOptions,
    file_protection, suite_file_name,
};
use pqnode_keys::{Fingerprint, fsutil::FsError};

fn opts() -> StoreOptions {
    StoreOptions::default()
}

fn encrypted_opts(pass: &str) -> StoreOptions {
    StoreOptions {
        passphrase: Some(Passphrase::new(pass.to_owned())),
        kdf: KdfParams::INSECURE_FOR_TESTS,
        ..StoreOptions::default()
    }
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn generate_then_open_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let created = KeyStore::generate(&dir, opts()).unwrap();
    let opened = KeyStore::open(&dir, opts()).unwrap();
    assert_eq!(created.peer_id(), opened.peer_id());
    assert_eq!(created.identity_created_at(), opened.identity_created_at());
    assert_eq!(created.key_info(), opened.key_info());
    assert_eq!(opened.suites(), Suite::ALL.to_vec());
    for suite in Suite::ALL {
        let a = created.signing_key(suite).unwrap();
        let b = opened.signing_key(suite).unwrap();
        assert_eq!(a.verifying_key(), b.verifying_key());
        // the loaded key signs what the created key's public half verifies
        a.verifying_key()
            .verify(b"m", &b.sign(b"m").unwrap())
            .unwrap();
        let shared = opened.shared_signing_key(suite).unwrap();
        assert_eq!(shared.verifying_key(), b.verifying_key());
    }
    assert!(!opened.is_encrypted());
    // Debug never shows key bytes
    let dbg = format!("{opened:?}");
    assert!(dbg.contains("peer_id") && dbg.len() < 400, "{dbg}");
}

#[cfg(unix)]
#[test]
fn files_are_0600_in_a_0700_dir() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut ks = KeyStore::generate(&dir, opts()).unwrap();
    ks.build_record(Suite::Kyber1024Dilithium5, &[], common::NOW, 3600)
        .unwrap();
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for f in ks.files() {
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            f.display()
        );
    }
    assert_eq!(ks.files().len(), 4);
}

#[cfg(unix)]
#[test]
fn loose_permissions_are_refused_with_the_chmod_fix() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    KeyStore::generate(&dir, opts()).unwrap();
    let file = dir.join(suite_file_name(Suite::Mlkem1024Mldsa87));
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let err = KeyStore::open(&dir, opts()).unwrap_err();
    assert!(
        matches!(err, StoreError::Fs(FsError::InsecureFile { ref path, mode: 0o644 }) if *path == file)
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("chmod 600 {}", file.display())),
        "{msg}"
    );
    // the explicit override loads it
    let insecure = StoreOptions {
        insecure_permissions: true,
        ..opts()
    };
    KeyStore::open(&dir, insecure).unwrap();
    // a group-writable directory is refused too
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o770)).unwrap();
    let err = KeyStore::open(&dir, opts()).unwrap_err();
    assert!(err.to_string().contains("chmod 700"), "{err}");
}

#[test]
fn generate_refuses_existing_keys_and_force_keeps_a_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let first = KeyStore::generate(&dir, opts()).unwrap();
    let before = snapshot(&dir);
    let err = KeyStore::generate(&dir, opts()).unwrap_err();
    assert!(matches!(err, StoreError::KeysExist { .. }), "{err}");
    assert!(err.to_string().contains("--force"));
    assert_eq!(snapshot(&dir), before, "a refused generate changed files");

    let (second, backup) = KeyStore::generate_replacing(&dir, opts()).unwrap();
    assert_ne!(first.peer_id(), second.peer_id());
    let backup = backup.unwrap();
    assert!(
        backup
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("backup-")
    );
    assert_eq!(snapshot(&backup), before, "backup is not byte-identical");
    assert_eq!(
        KeyStore::open(&dir, opts()).unwrap().peer_id(),
        second.peer_id()
    );
    // the backup opens as the old store
    assert_eq!(
        KeyStore::open(&backup, opts()).unwrap().peer_id(),
        first.peer_id()
    );
}

#[test]
fn crash_mid_write_leaves_the_real_file_and_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let ks = KeyStore::generate(&dir, opts()).unwrap();
    let peer = ks.peer_id();
    let before = snapshot(&dir);
    // What a crash between "write temp" and "rename" leaves behind: a
    // half-written temporary file next to the intact real one.
    let id_bytes = fs::read(dir.join(IDENTITY_FILE)).unwrap();
    let leftover = dir.join(format!(".tmp-{IDENTITY_FILE}.0123456789abcdef"));
    fs::write(&leftover, &id_bytes[..id_bytes.len() / 2]).unwrap();
    let reopened = KeyStore::open(&dir, opts()).unwrap();
    assert_eq!(reopened.peer_id(), peer);
    let mut expected = before.clone();
    expected.insert(
        0,
        (
            leftover.file_name().unwrap().to_str().unwrap().to_owned(),
            id_bytes[..id_bytes.len() / 2].to_vec(),
        ),
    );
    expected.sort();
    assert_eq!(snapshot(&dir), expected);
    // and open_or_create neither replaces nor repairs anything
    assert_eq!(
        KeyStore::open_or_create(&dir, opts()).unwrap().peer_id(),
        peer
    );
    assert_eq!(snapshot(&dir), expected);
}

fn assert_fails_untouched(
    dir: &Path,
    file: &Path,
    options: impl Fn() -> StoreOptions,
    check: impl Fn(&KeyFileError) -> bool,
) {
    let before = snapshot(dir);
    for err in [
        KeyStore::open(dir, options()).unwrap_err(),
        KeyStore::open_or_create(dir, options()).unwrap_err(),
    ] {
        match &err {
            StoreError::File { path, source } => {
                assert_eq!(path, file);
                assert!(check(source), "unexpected cause: {source}");
                assert!(
                    err.to_string().contains(&file.display().to_string()),
                    "{err}"
                );
            }
            other => panic!("expected a file error, got {other}"),
        }
    }
    assert_eq!(snapshot(dir), before, "a failed open changed files");
}

#[test]
fn corrupt_and_truncated_files_are_errors_and_stay_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    KeyStore::generate(&dir, opts()).unwrap();
    let file = dir.join(suite_file_name(Suite::Kyber1024Dilithium5));
    let original = fs::read(&file).unwrap();

    let mut corrupt = original.clone();
    corrupt[100] ^= 0x01;
    fs::write(&file, &corrupt).unwrap();
    assert_fails_untouched(&dir, &file, opts, |e| matches!(e, KeyFileError::Checksum));

    fs::write(&file, &original[..original.len() - 40]).unwrap();
    assert_fails_untouched(&dir, &file, opts, |e| {
        matches!(e, KeyFileError::Truncated(_))
    });

    fs::write(&file, b"").unwrap();
    assert_fails_untouched(&dir, &file, opts, |e| matches!(e, KeyFileError::BadMagic));

    // a key file of another kind in its place
    fs::write(&file, fs::read(dir.join(IDENTITY_FILE)).unwrap()).unwrap();
    assert_fails_untouched(&dir, &file, opts, |e| {
        matches!(e, KeyFileError::WrongKind { .. })
    });

    // the other suite's (valid) file under this suite's name
    fs::write(
        &file,
        fs::read(dir.join(suite_file_name(Suite::Mlkem1024Mldsa87))).unwrap(),
    )
    .unwrap();
    let err = KeyStore::open(&dir, opts()).unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid { ref path, .. } if *path == file),
        "{err}"
    );

    fs::write(&file, &original).unwrap();
    KeyStore::open(&dir, opts()).unwrap();
}

#[test]
fn encrypted_store_round_trip_and_wrong_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let ks = KeyStore::generate(&dir, encrypted_opts("correct horse battery staple")).unwrap();
    assert!(ks.is_encrypted());
    // no secret bytes in the clear on disk
    let secret = ks
        .signing_key(Suite::Mlkem1024Mldsa87)
        .unwrap()
        .expose_secret()[..32]
        .to_vec();
    for (_, bytes) in snapshot(&dir) {
        assert!(!bytes.windows(32).any(|w| w == secret));
    }
    let opened = KeyStore::open(&dir, encrypted_opts("correct horse battery staple")).unwrap();
    assert_eq!(opened.peer_id(), ks.peer_id());
    assert!(opened.is_encrypted());

    let id = dir.join(IDENTITY_FILE);
    assert_fails_untouched(
        &dir,
        &id,
        || encrypted_opts("wrong"),
        |e| matches!(e, KeyFileError::Decrypt),
    );
    assert_fails_untouched(&dir, &id, opts, |e| {
        matches!(e, KeyFileError::PassphraseRequired)
    });
    let msg = KeyStore::open(&dir, opts()).unwrap_err().to_string();
    assert!(msg.contains("PQNODE_KEY_PASSPHRASE"), "{msg}");
}

#[test]
fn seq_strictly_increases_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let mut ks = KeyStore::generate(&dir, opts()).unwrap();
    let a = ks
        .build_record(Suite::Kyber1024Dilithium5, &[], 100, 3600)
        .unwrap();
    let b = ks
        .build_record(Suite::Mlkem1024Mldsa87, &[], 100, 3600)
        .unwrap();
    assert!(b.seq() > a.seq());
    drop(ks);
    let mut ks = KeyStore::open(&dir, opts()).unwrap();
    assert_eq!(ks.last_seq(), b.seq());
    // even with the clock going backwards
    let c = ks
        .build_record(Suite::Kyber1024Dilithium5, &[], 50, 3600)
        .unwrap();
    assert_eq!(c.seq(), b.seq() + 1);
    // a record built with a real clock gets a seq >= now, so a lost state
    // file cannot make seq go back
    fs::remove_file(dir.join(RECORD_STATE_FILE)).unwrap();
    let mut ks = KeyStore::open(&dir, opts()).unwrap();
    let d = ks
        .build_record(Suite::Kyber1024Dilithium5, &[], common::NOW, 3600)
        .unwrap();
    assert!(d.seq() >= common::NOW);
    // the record verifies and carries what the store said
    let v = record::verify(
        d.envelope_bytes(),
        &VerifyContext::new(common::NOW, &Suite::ALL),
    )
    .unwrap();
    assert_eq!(v.seq(), d.seq());
    assert_eq!(v.peer_id(), &ks.peer_id());
    assert_eq!(v.expires_at(), common::NOW + 3600);
}

#[test]
fn rotation_is_accepted_by_a_pinning_verifier_and_a_foreign_key_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let suite = Suite::Kyber1024Dilithium5;
    let now = common::NOW;
    let mut ks = KeyStore::generate(&dir, opts()).unwrap();
    let mut pins = PinStore::open(&tmp.path().join(PINS_FILE), false).unwrap();
    let enabled = Suite::ALL;

    let verify = |bytes: &[u8], pins: &PinStore, peer| {
        let ctx = VerifyContext::new(now, &enabled)
            .in_handshake(peer, suite)
            .with_pinned(pins.pinned(&peer, suite));
        record::verify(bytes, &ctx)
    };

    // first use pins the key
    let r1 = ks.build_record(suite, &[], now, 3600).unwrap();
    let v1 = verify(r1.envelope_bytes(), &pins, ks.peer_id()).unwrap();
    assert_eq!(v1.pin(), PinCheck::Unpinned);
    assert_eq!(pins.record_verified(&v1, now).unwrap(), PinUpdate::Pinned);
    let old_fp = v1.fingerprint();

    // rotate: the next record carries the statement; the pin moves
    let new_fp = ks.rotate(suite, now).unwrap();
    assert_ne!(new_fp, old_fp);
    let r2 = ks.build_record(suite, &[], now, 3600).unwrap();
    assert_eq!(r2.seq(), r1.seq() + 1);
    let v2 = verify(r2.envelope_bytes(), &pins, ks.peer_id()).unwrap();
    assert_eq!(v2.pin(), PinCheck::Rotated { from: old_fp });
    assert_eq!(v2.rotated_from(), Some(old_fp));
    assert_eq!(
        pins.record_verified(&v2, now).unwrap(),
        PinUpdate::Moved {
            from: old_fp,
            to: new_fp
        }
    );
    assert_eq!(pins.pinned(&ks.peer_id(), suite), Some(new_fp));
    // persisted
    let reopened = PinStore::open(&tmp.path().join(PINS_FILE), false).unwrap();
    assert_eq!(reopened.pinned(&ks.peer_id(), suite), Some(new_fp));

    // the rotation survives a restart of the issuer
    drop(ks);
    let mut ks = KeyStore::open(&dir, opts()).unwrap();
    let info = ks
        .key_info()
        .into_iter()
        .find(|i| i.suite == suite)
        .unwrap();
    assert_eq!(info.fingerprint, new_fp);
    assert_eq!(info.previous.map(|p| p.0), Some(old_fp));

    // a foreign key for the same PeerId, without a statement: key-mismatch
    let foreign = SigningKey::generate(suite).unwrap();
    let params = RecordParams {
        seq: ks.last_seq() + 1,
        issued_at: now,
        expires_at: now + 3600,
        addrs: &[],
    };
    let forged = record::build(ks.identity(), &foreign, None, &params).unwrap();
    let err = verify(forged.envelope_bytes(), &pins, ks.peer_id()).unwrap_err();
    assert_eq!(err.name(), "key-mismatch");
    // and the pin store refuses it even if a caller forgot the pin
    let unpinned =
        record::verify(forged.envelope_bytes(), &VerifyContext::new(now, &enabled)).unwrap();
    assert!(matches!(
        pins.record_verified(&unpinned, now),
        Err(PinError::KeyMismatch { .. })
    ));
    // a foreign key with a statement from *another* foreign key: key-mismatch
    let foreign_old = SigningKey::generate(suite).unwrap();
    let forged = record::build(ks.identity(), &foreign, Some(&foreign_old), &params).unwrap();
    assert_eq!(
        verify(forged.envelope_bytes(), &pins, ks.peer_id())
            .unwrap_err()
            .name(),
        "key-mismatch"
    );

    // after the grace period the statement is dropped and the old key erased
    let later = now + ROTATION_GRACE_SECS + 1;
    let r3 = ks.build_record(suite, &[], later, 3600).unwrap();
    let v3 = record::verify(r3.envelope_bytes(), &VerifyContext::new(later, &enabled)).unwrap();
    assert_eq!(v3.rotated_from(), None);
    let info = KeyStore::open(&dir, opts())
        .unwrap()
        .key_info()
        .into_iter()
        .find(|i| i.suite == suite)
        .unwrap();
    assert_eq!(info.previous, None);

    // unpin, then the next record pins afresh
    assert!(pins.unpin(&ks.peer_id(), Some(suite)).unwrap());
    assert_eq!(pins.pinned(&ks.peer_id(), suite), None);
}

#[test]
fn open_or_create_completes_but_never_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    // empty → everything
    let only_one = StoreOptions {
        suites: vec![Suite::Kyber1024Dilithium5],
        ..opts()
    };
    let ks = KeyStore::open_or_create(&dir, only_one).unwrap();
    assert_eq!(ks.suites(), vec![Suite::Kyber1024Dilithium5]);
    let peer = ks.peer_id();
    // a newly enabled suite gets a key; the identity stays
    let ks = KeyStore::open_or_create(&dir, opts()).unwrap();
    assert_eq!(ks.peer_id(), peer);
    assert_eq!(ks.suites(), Suite::ALL.to_vec());
    // open (not create) with a missing suite file is an error naming it
    fs::remove_file(dir.join(suite_file_name(Suite::Mlkem1024Mldsa87))).unwrap();
    assert!(matches!(
        KeyStore::open(&dir, opts()),
        Err(StoreError::MissingSuiteKey { .. })
    ));
    // signing keys without the identity: refuse to invent a new PeerId
    fs::remove_file(dir.join(IDENTITY_FILE)).unwrap();
    let before = snapshot(&dir);
    assert!(matches!(
        KeyStore::open_or_create(&dir, opts()),
        Err(StoreError::MissingIdentity { .. })
    ));
    assert_eq!(snapshot(&dir), before);
    // a directory with nothing in it is "not initialized" for open
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    assert!(matches!(
        KeyStore::open(&empty, opts()),
        Err(StoreError::NotInitialized { .. })
    ));
}

#[test]
fn pins_persist_preload_and_refuse_a_corrupt_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(PINS_FILE);
    let peer = common::stranger();
    let fp = Fingerprint::of_bytes(b"some key");
    let mut pins = PinStore::open(&path, false).unwrap();
    assert!(pins.is_empty());
    // a suite-less trusted preload applies to every suite
    pins.preload(peer, None, fp, 5).unwrap();
    assert_eq!(pins.pinned(&peer, Suite::Kyber1024Dilithium5), Some(fp));
    assert_eq!(pins.pinned(&peer, Suite::Mlkem1024Mldsa87), Some(fp));
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(&fp.to_string()), "{text}");
    assert!(text.contains("trusted"));
    let reopened = PinStore::open(&path, false).unwrap();
    assert_eq!(reopened.len(), 1);
    assert_eq!(reopened.pinned(&peer, Suite::Mlkem1024Mldsa87), Some(fp));
    // unpin everything of the peer
    pins.unpin(&peer, None).unwrap();
    assert!(PinStore::open(&path, false).unwrap().is_empty());
    // a corrupt file is an error and is left as it is
    fs::write(&path, b"{\"format\": 1, \"pins\": [").unwrap();
    let err = PinStore::open(&path, false).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(fs::read(&path).unwrap(), b"{\"format\": 1, \"pins\": [");
}

#[test]
fn rotation_and_new_suites_stay_encrypted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let only_one = || StoreOptions {
        suites: vec![Suite::Mlkem1024Mldsa87],
        ..encrypted_opts("pw")
    };
    let mut ks = KeyStore::generate(&dir, only_one()).unwrap();
    let new_fp = ks.rotate(Suite::Mlkem1024Mldsa87, common::NOW).unwrap();
    // a suite enabled later gets an encrypted file too
    KeyStore::open_or_create(&dir, encrypted_opts("pw")).unwrap();
    assert!(matches!(
        KeyStore::open(&dir, opts()),
        Err(StoreError::File {
            source: KeyFileError::PassphraseRequired,
            ..
        })
    ));
    for suite in Suite::ALL {
        let file = dir.join(suite_file_name(suite));
        // byte 10 of the container is the protection scheme
        assert_eq!(
            fs::read(&file).unwrap()[10],
            1,
            "{} is not encrypted",
            file.display()
        );
    }
    let reopened = KeyStore::open(&dir, encrypted_opts("pw")).unwrap();
    let info = reopened
        .key_info()
        .into_iter()
        .find(|i| i.suite == Suite::Mlkem1024Mldsa87)
        .unwrap();
    assert_eq!(info.fingerprint, new_fp);
    assert!(info.previous.is_some());
}

/// Issue 22: an encrypted one-suite store opened with two suites. Without
/// the passphrase, or with a wrong one, nothing is written; with the right
/// one the second key is created encrypted like the first.
#[test]
fn a_failed_open_or_create_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    KeyStore::generate(
        &dir,
        StoreOptions {
            suites: vec![Suite::Mlkem1024Mldsa87],
            ..encrypted_opts("pw")
        },
    )
    .unwrap();
    let before = snapshot(&dir);

    // (a) no passphrase
    let err = KeyStore::open_or_create(&dir, opts()).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::File {
                source: KeyFileError::PassphraseRequired,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(snapshot(&dir), before, "a failed start wrote a file");
    // (b) a wrong passphrase
    let err = KeyStore::open_or_create(&dir, encrypted_opts("wrong")).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::File {
                source: KeyFileError::Decrypt,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(snapshot(&dir), before, "a failed start wrote a file");
    // (c) the right one: the new key is encrypted too.
    let ks = KeyStore::open_or_create(&dir, encrypted_opts("pw")).unwrap();
    assert_eq!(ks.suites(), Suite::ALL.to_vec());
    assert!(ks.is_encrypted());
    let protection = file_protection(&dir, false).unwrap();
    assert_eq!(protection.len(), 3, "{protection:?}");
    assert!(protection.iter().all(|(_, e)| *e), "{protection:?}");
    let reopened = KeyStore::open(&dir, encrypted_opts("pw")).unwrap();
    assert_eq!(reopened.suites(), Suite::ALL.to_vec());
}

/// A plain store stays plain: a key created for a newly enabled suite gets
/// the store's protection, even when a passphrase is given.
#[test]
fn a_new_key_gets_the_protection_of_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    KeyStore::generate(
        &dir,
        StoreOptions {
            suites: vec![Suite::Kyber1024Dilithium5],
            ..opts()
        },
    )
    .unwrap();
    let ks = KeyStore::open_or_create(&dir, encrypted_opts("pw")).unwrap();
    assert!(!ks.is_encrypted());
    assert!(
        file_protection(&dir, false)
            .unwrap()
            .iter()
            .all(|(_, e)| !*e)
    );
    KeyStore::open(&dir, opts()).unwrap();
}

/// One plaintext key among encrypted ones: refused by every way of opening,
/// naming the files, and reported per file.
#[test]
fn a_mixed_store_is_refused_and_reported_per_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let plain_dir = tmp.path().join("plain");
    KeyStore::generate(&dir, encrypted_opts("pw")).unwrap();
    KeyStore::generate(&plain_dir, opts()).unwrap();
    let name = suite_file_name(Suite::Kyber1024Dilithium5);
    fs::write(dir.join(&name), fs::read(plain_dir.join(&name)).unwrap()).unwrap();
    let before = snapshot(&dir);
    for err in [
        KeyStore::open(&dir, encrypted_opts("pw")).unwrap_err(),
        KeyStore::open_or_create(&dir, encrypted_opts("pw")).unwrap_err(),
        KeyStore::open(&dir, opts()).unwrap_err(),
    ] {
        match &err {
            StoreError::MixedProtection {
                plain, encrypted, ..
            } => {
                assert!(plain.contains(&name), "{err}");
                assert!(encrypted.contains(IDENTITY_FILE), "{err}");
            }
            other => panic!("expected MixedProtection, got {other}"),
        }
    }
    assert_eq!(snapshot(&dir), before);
    let report = file_protection(&dir, false).unwrap();
    let of = |n: &str| report.iter().find(|(p, _)| p.ends_with(n)).map(|(_, e)| *e);
    assert_eq!(of(IDENTITY_FILE), Some(true));
    assert_eq!(of(&name), Some(false));
    assert_eq!(of(&suite_file_name(Suite::Mlkem1024Mldsa87)), Some(true));
}

/// `--force` regenerates the identity and every suite together; limited to
/// some suites it is refused while others exist, naming them.
#[test]
fn a_forced_regeneration_replaces_every_key_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let old = KeyStore::generate(&dir, opts()).unwrap();
    let old_fps: Vec<_> = old.key_info().into_iter().map(|i| i.fingerprint).collect();
    let before = snapshot(&dir);

    let only_one = StoreOptions {
        suites: vec![Suite::Kyber1024Dilithium5],
        ..opts()
    };
    let err = KeyStore::generate_replacing(&dir, only_one).unwrap_err();
    assert!(
        matches!(&err, StoreError::OtherSuitesPresent { suites, .. } if suites == "mlkem1024-mldsa87"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&suite_file_name(Suite::Mlkem1024Mldsa87)),
        "{err}"
    );
    assert_eq!(snapshot(&dir), before, "a refused --force changed files");

    let (new, backup) = KeyStore::generate_replacing(&dir, opts()).unwrap();
    assert_ne!(new.peer_id(), old.peer_id());
    for info in new.key_info() {
        assert!(
            !old_fps.contains(&info.fingerprint),
            "{} kept its key",
            info.suite
        );
    }
    let backup = backup.expect("a backup");
    for (name, bytes) in &before {
        assert_eq!(
            &fs::read(backup.join(name)).unwrap(),
            bytes,
            "{name} backed up"
        );
    }
}
