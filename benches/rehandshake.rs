//! What a re-handshake (PROTOCOL.md §5.1) costs a busy session: two pairs of
//! real pqnodes on 127.0.0.1 (started through `App`) deliver 64 KiB
//! messages one after another, one pair re-handshaking every 8 s (7.5 a
//! minute, within the 10 inbound handshakes a minute a peer may start), the
//! other never. The difference in time per message, times the messages per
//! second, is the throughput lost to re-handshakes; each run prints how many
//! re-handshakes its measurement saw.
//!
//! `cargo bench --bench rehandshake`.

mod support;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pqnode::app::App;
use support::{LIMIT, dial_to_session, node_with};

const SIZE: usize = 64 * 1024;

/// Sends one message from `a` to `b` and waits for it in `b`'s inbox.
async fn deliver(a: &App, b: &App, body: &[u8]) -> Duration {
    let (a_id, b_id) = (a.node().peer_id(), b.node().peer_id());
    let since = b
        .pq()
        .inbox()
        .list(Some(a_id), 0, usize::MAX)
        .last()
        .map(|m| m.seq)
        .unwrap_or(0);
    let t = Instant::now();
    // A send caught between two sessions waits for the new one.
    a.pq().send(b_id, body.to_vec()).await.expect("send");
    let deadline = t + LIMIT;
    while b.pq().inbox().list(Some(a_id), since, 1).is_empty() {
        assert!(Instant::now() < deadline, "a message was not delivered");
        tokio::task::yield_now().await;
    }
    t.elapsed()
}

fn bench(c: &mut Criterion) {
    // RUST_LOG=pqnode=info shows the nodes' logs.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().expect("dir")).collect();
    let pair = |every: Option<u64>, da: &std::path::Path, db: &std::path::Path| {
        rt.block_on(async {
            let mut ca = support::config(da);
            let mut cb = support::config(db);
            // "never": neither by time nor by bytes (4 GiB would be
            // reached within the measurement).
            let (after, bytes) = match every {
                Some(secs) => (Duration::from_secs(secs), 1 << 50),
                None => (Duration::from_secs(7 * 86_400), 1 << 50),
            };
            for c in [&mut ca, &mut cb] {
                c.pq.rehandshake_after = after;
                c.pq.rehandshake_bytes = bytes;
            }
            let (a, b) = (node_with(&ca).await, node_with(&cb).await);
            let mut retries = 0;
            dial_to_session(&a, &b, &mut retries).await;
            (a, b)
        })
    };
    let pairs = [
        ("never", pair(None, dirs[0].path(), dirs[1].path())),
        ("every-8s", pair(Some(8), dirs[2].path(), dirs[3].path())),
    ];

    let body = vec![0x42u8; SIZE];
    let mut g = c.benchmark_group("rehandshake/64KiB-message");
    g.sample_size(50).measurement_time(Duration::from_secs(40));
    g.throughput(Throughput::Bytes(SIZE as u64));
    for (label, (a, b)) in &pairs {
        let before = a.pq().metrics().rehandshakes.get() + b.pq().metrics().rehandshakes.get();
        // The slowest single message: a re-handshake shows as a stall there
        // long before it moves the mean.
        let mut slowest = Duration::ZERO;
        let mut messages = 0u64;
        g.bench_function(BenchmarkId::from_parameter(label), |bench| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let took = deliver(a, b, &body).await;
                        slowest = slowest.max(took);
                        messages += 1;
                        total += took;
                    }
                    total
                })
            })
        });
        let after = a.pq().metrics().rehandshakes.get() + b.pq().metrics().rehandshakes.get();
        println!(
            "rehandshake/64KiB-message/{label}: {} re-handshakes (counted by the initiators) \
             over {messages} messages; slowest message {slowest:?}",
            after - before
        );
    }
    g.finish();
    rt.block_on(async {
        for (_, (a, b)) in pairs {
            let _ = a.shutdown(Duration::from_secs(4)).await;
            let _ = b.shutdown(Duration::from_secs(4)).await;
        }
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
