//! Kill -9 during pin and peer-cache writes (issues 7 and 8): a child
//! process (this test binary again) commits pins and peer-cache entries as
//! fast as it can and reports each commit on stdout after it returned; the
//! parent SIGKILLs it at a different moment each of 20 rounds, then opens
//! the database and checks that every pin reported committed is there with
//! its fingerprint, and every cache entry with its address.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use libp2p::identity::PeerId;
use pqnode_crypto::Suite;
use pqnode_keys::Fingerprint;
use pqnode_keys::db::StateDb;
use pqnode_keys::peercache::{Outcome, PeerCache};

const CHILD_ENV: &str = "PQNODE_DB_CRASH_CHILD_DIR";
const ROUNDS: usize = 20;

/// The writer, run only as the child of `pins_survive_kill_9`.
#[test]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return; // not the child: nothing to do
    };
    let db = StateDb::open(Path::new(&dir), false).expect("open");
    let pins = db.pins(pqnode_keys::db::DEFAULT_FIRST_USE_LIMIT);
    let cache = PeerCache::new(db.clone());
    for i in 0u64.. {
        let peer = PeerId::random();
        let mut fp = [0u8; 32];
        fp[..8].copy_from_slice(&i.to_be_bytes());
        fp[8..16].copy_from_slice(&std::process::id().to_be_bytes().repeat(2));
        let fp = Fingerprint::from_array(fp);
        let detail = match i % 3 {
            0 => {
                pins.commit_handshake(&peer, Suite::Kyber1024Dilithium5, fp, None, i)
                    .expect("commit");
                fp.to_hex()
            }
            1 => {
                pins.add_operator(&peer, Some(Suite::Mlkem1024Mldsa87), fp, i)
                    .expect("operator pin");
                fp.to_hex()
            }
            _ => {
                let addr = format!("/ip4/127.0.0.1/tcp/{}", 1 + i % 60_000);
                let bytes = libp2p::Multiaddr::from_str(&addr).expect("addr").to_vec();
                cache
                    .record(
                        &[(
                            peer,
                            Outcome::Connected {
                                addrs: vec![bytes.clone()],
                                suite: Some(Suite::Kyber1024Dilithium5),
                                source: pqnode_keys::peercache::Source::Inbound,
                            },
                        )],
                        1_800_000_000,
                    )
                    .expect("cache record");
                hex::encode(bytes)
            }
        };
        // Reported only once the commit has returned.
        println!("committed {peer} {} {detail}", i % 3);
    }
}

#[test]
fn pins_survive_kill_9() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut committed: Vec<(PeerId, Option<Suite>, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    for round in 0..ROUNDS {
        assert!(Instant::now() < deadline, "the crash test ran too long");
        let mut child = Command::new(&exe)
            .args([
                "crash_child_writer",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the writer");
        let stdout = child.stdout.take().expect("stdout");
        // Should an assertion fail before the kill, the writer dies with us.
        struct KillOnDrop(std::process::Child);
        impl Drop for KillOnDrop {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut child = KillOnDrop(child);
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a different number of commits each round: 1, 4, 7, ...
        let kill_after = 1 + 3 * round;
        let mut seen = 0;
        let mut parse = |line: &str| {
            let mut it = line.split_whitespace();
            if it.next() != Some("committed") {
                return false;
            }
            let (Some(peer), Some(kind), Some(fp)) = (it.next(), it.next(), it.next()) else {
                return false;
            };
            let peer = PeerId::from_str(peer).expect("peer id");
            let suite = match kind {
                "0" => Some(Suite::Kyber1024Dilithium5),
                "1" => Some(Suite::Mlkem1024Mldsa87),
                // A peer-cache entry.
                _ => None,
            };
            committed.push((peer, suite, fp.to_owned()));
            true
        };
        while seen < kill_after {
            let line = lines.next().expect("the writer ended early").expect("read");
            if parse(&line) {
                seen += 1;
            }
        }
        child.0.kill().expect("SIGKILL");
        // Lines already written before the kill were committed too.
        for line in lines.map_while(Result::ok) {
            parse(&line);
        }
        let _ = child.0.wait();
        drop(child);

        let db = StateDb::open(dir.path(), false)
            .unwrap_or_else(|e| panic!("round {round}: the database does not open: {e}"));
        let pins = db.pins(pqnode_keys::db::DEFAULT_FIRST_USE_LIMIT);
        let cache = PeerCache::new(db.clone());
        let mut pinned = 0u64;
        for (peer, suite, detail) in &committed {
            match suite {
                Some(suite) => {
                    let pin = pins.pinned(peer, *suite).expect("read").unwrap_or_else(|| {
                        panic!("round {round}: a committed pin of {peer} is lost")
                    });
                    assert_eq!(&pin.fingerprint.to_hex(), detail, "round {round}: {peer}");
                    pinned += 1;
                }
                None => {
                    let entry = cache.get(peer).expect("read").unwrap_or_else(|| {
                        panic!("round {round}: a committed cache entry of {peer} is lost")
                    });
                    assert_eq!(
                        hex::encode(&entry.addrs[0]),
                        *detail,
                        "round {round}: {peer}"
                    );
                }
            }
        }
        let counts = pins.counts().expect("counts");
        assert!(counts.total >= pinned);
        drop(cache);
        drop(db);
    }
    assert!(committed.len() >= (1..=ROUNDS).map(|r| 1 + 3 * (r - 1)).sum::<usize>());
    let cache_entries = committed.iter().filter(|(_, s, _)| s.is_none()).count();
    assert!(
        cache_entries >= 100,
        "only {cache_entries} cache entries checked"
    );
}
