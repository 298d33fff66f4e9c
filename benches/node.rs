//! Two real pqnodes on 127.0.0.1, started through `pqnode run`'s library
//! path: the time from dial to an established PQ session (TCP, Noise, Yamux,
//! the PQ handshake with record verification on both sides), and the time to
//! deliver one message through a PQ session (fragmentation, sealing, the
//! stream, opening, reassembly, the inbox).
//!
//! Completion is observed by polling (see `support`).

mod support;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use libp2p::PeerId;
use pqnode::pq::followers::Next as FollowNext;
use support::{LIMIT, dial_addr, dial_to_session, node};

/// Yields until `done`, failing the run after [`LIMIT`].
async fn spin_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "benchmark step did not finish within {LIMIT:?}"
        );
        tokio::task::yield_now().await;
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (da, db) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let (a, b) = rt.block_on(async { (node(da.path()).await, node(db.path()).await) });
    let (pa, pb) = (a.pq().clone(), b.pq().clone());
    let b_id: PeerId = b.node().peer_id();
    let a_id: PeerId = a.node().peer_id();
    let b_addr = dial_addr(&b);

    let mut g = c.benchmark_group("node/dial-to-pq-session");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));
    let mut retries = 0u32;
    g.bench_function("kyber1024-dilithium5 over TCP loopback", |bench| {
        bench.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += dial_to_session(&a, &b, &mut retries).await;
                }
                total
            })
        })
    });
    g.finish();
    println!("node/dial-to-pq-session: {retries} refused dials retried (not timed)");

    let mut g = c.benchmark_group("node/message-through-pq-session");
    g.sample_size(20);
    for size in [64usize, 64 * 1024, 1 << 20] {
        g.throughput(Throughput::Bytes(size as u64));
        let body = vec![0x42u8; size];
        g.bench_with_input(BenchmarkId::from_parameter(size), &body, |bench, body| {
            bench.iter_custom(|iters| {
                rt.block_on(async {
                    if pa.session(&b_id).is_none() {
                        a.node().dial(b_addr.clone()).await.expect("dial");
                        spin_until(|| pa.session(&b_id).is_some() && pb.session(&a_id).is_some())
                            .await;
                    }
                    let mut total = Duration::ZERO;
                    // B's deliveries, awaited (not polled, which would take
                    // a core from the nodes on this 2-core machine).
                    let mut delivered = pb.inbox().follow().expect("follow B's inbox");
                    for _ in 0..iters {
                        let t = Instant::now();
                        pa.send(b_id, body.clone()).await.expect("send");
                        loop {
                            match tokio::time::timeout(LIMIT, delivered.next()).await {
                                Ok(FollowNext::Message(m)) if m.from == a_id => break,
                                Ok(FollowNext::Message(_)) => {}
                                Ok(e) => panic!("B's inbox: {e:?}"),
                                Err(_) => panic!("no delivery within {LIMIT:?}"),
                            }
                        }
                        total += t.elapsed();
                    }
                    total
                })
            })
        });
    }
    g.finish();
    rt.block_on(async {
        let _ = a.shutdown(Duration::from_secs(4)).await;
        let _ = b.shutdown(Duration::from_secs(4)).await;
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
