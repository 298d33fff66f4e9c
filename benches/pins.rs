//! The pin database (`state.redb`) with 1,000,000 pins beside one holding
//! a single pin: what a handshake and a start ask of it must not slow down
//! measurably as it grows (issue 7, PROTOCOL.md §8.3 rev 3).
//!
//! Per database, the work of one handshake and of one start:
//!
//! - `suite_rule`: which suites a peer is pinned under (read, before a
//!   handshake starts) — `pins_of` of a pinned peer and of an unknown one;
//! - `record_pin`: the pin that applies to a record's suite (read, during
//!   record verification) — `pinned`;
//! - `commit_first_use`: the pin written after a whole handshake (one write
//!   transaction, fsync included) for a new peer;
//! - `open`: `StateDb::open` plus `counts()` on an existing database, as
//!   `App::start` does.
//!
//!
//! And the same through a whole node started as `pqnode run` starts it, on an
//! empty data directory and on the one holding the million pins:
//!
//! - `node-start`: `App::start` until it returns (listening, API bound);
//! - `node-handshake`: that node dials another, from no connection to a PQ
//!   session on both sides.
//!
//! `cargo bench --bench pins`. The million-pin database is built first
//! (operator pins in batches of 100,000) in the system's temporary
//! directory, and removed at the end.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use libp2p::PeerId;
use pqnode_crypto::Suite;
use pqnode_keys::Fingerprint;
use pqnode_keys::db::{PinDb, StateDb};

/// Pins in the large database.
const LARGE: usize = 1_000_000;
/// Pins written per transaction while building it.
const BATCH: usize = 100_000;
/// First-use pin limit (the node's default).
const FIRST_USE_LIMIT: u64 = 100_000;

struct Fixture {
    label: &'static str,
    _dir: tempfile::TempDir,
    db: StateDb,
    pins: PinDb,
    /// Pinned peers to look up, spread over the whole key space.
    known: Vec<PeerId>,
}

fn fingerprint(i: usize) -> Fingerprint {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&(i as u64).to_le_bytes());
    bytes[31] = 0xa5;
    Fingerprint::from_array(bytes)
}

fn fixture(label: &'static str, count: usize) -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let db = StateDb::open(dir.path(), false).expect("open database");
    let pins = db.pins(FIRST_USE_LIMIT);
    let mut known = Vec::new();
    let mut written = 0;
    while written < count {
        let n = BATCH.min(count - written);
        let batch: Vec<_> = (0..n)
            .map(|i| {
                let peer = PeerId::random();
                if (written + i) % (count / 64).max(1) == 0 {
                    known.push(peer);
                }
                (
                    peer,
                    Some(Suite::Kyber1024Dilithium5),
                    fingerprint(written + i),
                )
            })
            .collect();
        pins.add_operator_batch(batch, 1_800_000_000)
            .expect("write pins");
        written += n;
    }
    assert_eq!(pins.counts().expect("counts").total, count as u64);
    Fixture {
        label,
        _dir: dir,
        db,
        pins,
        known,
    }
}

fn bench_pins(c: &mut Criterion) {
    let fixtures = [fixture("1-pin", 1), fixture("1M-pins", LARGE)];

    let mut g = c.benchmark_group("pins/suite_rule");
    for f in &fixtures {
        let mut i = 0;
        g.bench_function(BenchmarkId::new("pinned-peer", f.label), |b| {
            b.iter(|| {
                i = (i + 1) % f.known.len();
                black_box(f.pins.pins_of(&f.known[i]).expect("read"))
            })
        });
        let unknown = PeerId::random();
        g.bench_function(BenchmarkId::new("unknown-peer", f.label), |b| {
            b.iter(|| black_box(f.pins.pins_of(&unknown).expect("read")))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("pins/record_pin");
    for f in &fixtures {
        let mut i = 0;
        g.bench_function(BenchmarkId::from_parameter(f.label), |b| {
            b.iter(|| {
                i = (i + 1) % f.known.len();
                black_box(
                    f.pins
                        .pinned(&f.known[i], Suite::Kyber1024Dilithium5)
                        .expect("read"),
                )
            })
        });
    }
    g.finish();

    // Writes fsync: fewer samples, longer measurement.
    let mut g = c.benchmark_group("pins/commit_first_use");
    g.sample_size(30).measurement_time(Duration::from_secs(10));
    for f in &fixtures {
        let mut n = 0usize;
        g.bench_function(BenchmarkId::from_parameter(f.label), |b| {
            b.iter(|| {
                n += 1;
                black_box(
                    f.pins
                        .commit_handshake(
                            &PeerId::random(),
                            Suite::Mlkem1024Mldsa87,
                            fingerprint(usize::MAX - n),
                            None,
                            1_800_000_000,
                        )
                        .expect("commit"),
                )
            })
        });
    }
    g.finish();

    // A start: the database is closed and opened again.
    let mut g = c.benchmark_group("pins/open");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    let mut dirs = Vec::new();
    for f in fixtures {
        let Fixture {
            label,
            _dir: dir,
            db,
            pins,
            ..
        } = f;
        drop(pins);
        drop(db);
        g.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                let db = StateDb::open(dir.path(), false).expect("reopen");
                black_box(db.pins(FIRST_USE_LIMIT).counts().expect("counts"))
            })
        });
        dirs.push((label, dir));
    }
    g.finish();

    // The same through a whole node: an empty data directory against the
    // one holding a million pins.
    let empty = tempfile::tempdir().expect("temporary directory");
    let million = &dirs[1].1;
    let nodes = [("0-pins", empty.path()), ("1M-pins", million.path())];
    bench_nodes(c, &nodes);
}

/// `App::start` on each data directory, and a dial to an established PQ
/// session on both sides by a node on it.
fn bench_nodes(c: &mut Criterion, dirs: &[(&'static str, &std::path::Path)]) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    // Start: self-test, keys, the database, the swarm listening, the API
    // bound. Each node is shut down again, untimed.
    let mut g = c.benchmark_group("pins/node-start");
    g.sample_size(10).measurement_time(Duration::from_secs(15));
    for (label, dir) in dirs {
        g.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let app = support::node(dir).await;
                        total += t.elapsed();
                        app.shutdown(Duration::from_secs(4)).await.expect("stop");
                    }
                    total
                })
            })
        });
    }
    g.finish();

    // Handshake: the node on `dir` dials a node on an empty directory, from
    // no connection to a PQ session on both sides (TCP, Noise, Yamux, the PQ
    // handshake, pin lookups on both sides). The first-use pin is written
    // by the first dial; later ones look it up.
    let mut g = c.benchmark_group("pins/node-handshake");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    let mut retries = 0u32;
    for (label, dir) in dirs {
        let other = tempfile::tempdir().expect("temporary directory");
        let (a, b) =
            rt.block_on(async { (support::node(dir).await, support::node(other.path()).await) });
        g.bench_function(BenchmarkId::from_parameter(label), |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += support::dial_to_session(&a, &b, &mut retries).await;
                    }
                    total
                })
            })
        });
        rt.block_on(async {
            let _ = a.shutdown(Duration::from_secs(4)).await;
            let _ = b.shutdown(Duration::from_secs(4)).await;
        });
    }
    g.finish();
    println!("pins/node-handshake: {retries} refused dials retried (not timed)");
}

criterion_group!(benches, bench_pins);
criterion_main!(benches);
